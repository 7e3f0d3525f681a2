//! The `Leases` conformance suite against `MemoryLeases`, one test per rule, on paused
//! time (the expiry checks' sleeps take no real time).

use std::time::Duration;

use vigia_scheduler::conformance;
use vigia_scheduler::MemoryLeases;

const TTL: Duration = Duration::from_secs(30);

macro_rules! conformance_tests {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $check() {
            conformance::$check(&MemoryLeases::new(), TTL).await;
        }
    )*};
}

vigia_scheduler::for_each_lease_check!(conformance_tests);

#[tokio::test(start_paused = true)]
async fn run_all_on_one_shared_backend() {
    // The checks use names of their own, so one backend serves them all.
    conformance::run_all(&MemoryLeases::new(), TTL).await;
}

#[tokio::test]
async fn run_all_on_real_time() {
    // Real sleeps, as against a database: the suite must not depend on paused time.
    // A second of TTL leaves the expiry checks a third of a second of margin against
    // late timers on a loaded machine.
    conformance::run_all(&MemoryLeases::new(), Duration::from_secs(1)).await;
}

/// Backends that break one rule each, to show the suite catches them.
mod broken {
    use std::time::Duration;

    use async_trait::async_trait;
    use vigia_scheduler::{LeaseError, Leases, MemoryLeases};

    /// Grants every request: two leaders.
    pub struct AlwaysGrants;

    #[async_trait]
    impl Leases for AlwaysGrants {
        async fn try_acquire(&self, _: &str, _: &str, _: Duration) -> Result<bool, LeaseError> {
            Ok(true)
        }
        async fn release(&self, _: &str, _: &str) -> Result<(), LeaseError> {
            Ok(())
        }
    }

    /// Leases never expire: a dead leader is never replaced.
    pub struct NeverExpires(pub MemoryLeases);

    #[async_trait]
    impl Leases for NeverExpires {
        async fn try_acquire(&self, n: &str, h: &str, _: Duration) -> Result<bool, LeaseError> {
            self.0.try_acquire(n, h, Duration::from_secs(1 << 40)).await
        }
        async fn release(&self, n: &str, h: &str) -> Result<(), LeaseError> {
            self.0.release(n, h).await
        }
    }

    /// Release does nothing: a stopping leader makes the others wait a full TTL.
    pub struct IgnoresRelease(pub MemoryLeases);

    #[async_trait]
    impl Leases for IgnoresRelease {
        async fn try_acquire(&self, n: &str, h: &str, t: Duration) -> Result<bool, LeaseError> {
            self.0.try_acquire(n, h, t).await
        }
        async fn release(&self, _: &str, _: &str) -> Result<(), LeaseError> {
            Ok(())
        }
    }

    /// Renewal keeps the first expiry.
    pub struct RenewDoesNotExtend(
        pub std::sync::Mutex<std::collections::HashMap<String, (String, tokio::time::Instant)>>,
    );

    #[async_trait]
    impl Leases for RenewDoesNotExtend {
        async fn try_acquire(&self, n: &str, h: &str, t: Duration) -> Result<bool, LeaseError> {
            let now = tokio::time::Instant::now();
            let mut held = self.0.lock().expect("lock");
            match held.get(n) {
                Some((holder, expires)) if *expires > now => Ok(holder == h),
                _ => {
                    held.insert(n.to_owned(), (h.to_owned(), now + t));
                    Ok(true)
                }
            }
        }
        async fn release(&self, n: &str, h: &str) -> Result<(), LeaseError> {
            let mut held = self.0.lock().expect("lock");
            if held.get(n).is_some_and(|(holder, _)| holder == h) {
                held.remove(n);
            }
            Ok(())
        }
    }

    /// Fails every call.
    pub struct Down;

    #[async_trait]
    impl Leases for Down {
        async fn try_acquire(&self, _: &str, _: &str, _: Duration) -> Result<bool, LeaseError> {
            Err(LeaseError::Unavailable("connection refused".into()))
        }
        async fn release(&self, _: &str, _: &str) -> Result<(), LeaseError> {
            Err(LeaseError::Unavailable("connection refused".into()))
        }
    }
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "a lease held by a must be refused to b")]
async fn suite_catches_a_backend_that_grants_everything() {
    conformance::refuse_held(&broken::AlwaysGrants, TTL).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "b must take over a lease a let expire")]
async fn suite_catches_leases_that_never_expire() {
    conformance::take_over_after_expiry(&broken::NeverExpires(MemoryLeases::new()), TTL).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "without waiting for expiry")]
async fn suite_catches_a_release_that_does_nothing() {
    conformance::release_frees_at_once(&broken::IgnoresRelease(MemoryLeases::new()), TTL).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "a renewal must extend the lease")]
async fn suite_catches_a_renewal_that_does_not_extend() {
    conformance::renew_own_extends(&broken::RenewDoesNotExtend(Default::default()), TTL).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "connection refused")]
async fn suite_reports_backend_errors() {
    conformance::acquire_free(&broken::Down, TTL).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "exactly one of 8 concurrent acquirers must win")]
async fn suite_catches_two_winners() {
    conformance::one_winner_among_concurrent_acquirers(&broken::AlwaysGrants, TTL).await;
}
