//! The conformance suite every [`Leases`] backend must pass (in-memory here; the store's
//! SQLite and PostgreSQL lease tables later), so leader election means the same thing
//! on every backend. Enabled by the `conformance` feature.
//!
//! Each check is a plain `async fn(&dyn Leases, ttl)` that panics with a message naming
//! the broken rule. The checks use lease names of their own, unique to the run, so they
//! can share one backend (even a persistent database) and run in any order.
//!
//! `ttl` is the lease lifetime the checks ask for; the expiry checks sleep for parts of
//! it with `tokio::time::sleep`, so under a paused tokio clock they take no real time,
//! and against a database they take about `2 × ttl` each. Choose it well above the
//! backend's clock resolution (a backend that stores whole seconds needs several seconds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Leases;

/// Calls the macro `$callback` with the name of every check, so a backend's test file
/// can make one test per rule from the same list [`run_all`] uses.
/// Usage: `vigia_scheduler::for_each_lease_check!(my_test_macro);`.
#[macro_export]
macro_rules! for_each_lease_check {
    ($callback:ident) => {
        $callback!(
            acquire_free,
            refuse_held,
            renew_own_extends,
            take_over_after_expiry,
            release_frees_at_once,
            release_leaves_others_alone,
            names_are_independent,
            one_winner_among_concurrent_acquirers,
        );
    };
}

/// Runs every check against `leases`, one after the other.
pub async fn run_all(leases: &dyn Leases, ttl: Duration) {
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            eprintln!("leases conformance: {}", stringify!($check));
            $check(leases, ttl).await;
        )*};
    }
    for_each_lease_check!(run);
}

/// A lease name no other check, run or process uses.
fn fresh_name(check: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "conformance.{check}.{}.{nanos}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn acquire(leases: &dyn Leases, name: &str, holder: &str, ttl: Duration) -> bool {
    leases
        .try_acquire(name, holder, ttl)
        .await
        .unwrap_or_else(|e| panic!("try_acquire({name}, {holder}) failed: {e}"))
}

async fn release(leases: &dyn Leases, name: &str, holder: &str) {
    leases
        .release(name, holder)
        .await
        .unwrap_or_else(|e| panic!("release({name}, {holder}) failed: {e}"));
}

/// A lease nobody holds is granted, and granted again to the same holder.
pub async fn acquire_free(leases: &dyn Leases, ttl: Duration) {
    let name = fresh_name("acquire_free");
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "a free lease must be granted"
    );
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "the holder must be able to acquire its own lease again (renew)"
    );
}

/// A lease held by one holder is refused to another, and the holder keeps it.
pub async fn refuse_held(leases: &dyn Leases, ttl: Duration) {
    let name = fresh_name("refuse_held");
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "a free lease must be granted"
    );
    assert!(
        !acquire(leases, &name, "b", ttl).await,
        "a lease held by a must be refused to b"
    );
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "b's refused attempt must not take the lease away from a"
    );
}

/// Renewing pushes the expiry to `ttl` after the renewal, not after the first acquire.
pub async fn renew_own_extends(leases: &dyn Leases, ttl: Duration) {
    let name = fresh_name("renew_own_extends");
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "a free lease must be granted"
    );
    tokio::time::sleep(ttl * 2 / 3).await;
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "a must renew its unexpired lease"
    );
    // Past the first acquire's expiry, well within the renewal's.
    tokio::time::sleep(ttl * 2 / 3).await;
    assert!(
        !acquire(leases, &name, "b", ttl).await,
        "a renewal must extend the lease: b took it {:?} after a's renewal (ttl {ttl:?})",
        ttl * 2 / 3
    );
}

/// Once the holder stops renewing, another holder gets the lease after `ttl`, and the
/// old holder then finds it lost.
pub async fn take_over_after_expiry(leases: &dyn Leases, ttl: Duration) {
    let name = fresh_name("take_over_after_expiry");
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "a free lease must be granted"
    );
    tokio::time::sleep(ttl * 3 / 2).await;
    assert!(
        acquire(leases, &name, "b", ttl).await,
        "b must take over a lease a let expire"
    );
    assert!(
        !acquire(leases, &name, "a", ttl).await,
        "a must not get back a lease b now holds"
    );
}

/// A released lease can be taken by another holder at once.
pub async fn release_frees_at_once(leases: &dyn Leases, ttl: Duration) {
    let name = fresh_name("release_frees_at_once");
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "a free lease must be granted"
    );
    release(leases, &name, "a").await;
    assert!(
        acquire(leases, &name, "b", ttl).await,
        "b must get a lease a released, without waiting for expiry"
    );
    release(leases, &name, "a").await;
    assert!(
        !acquire(leases, &name, "c", ttl).await,
        "a's second release must not free the lease b holds now"
    );
}

/// Releasing someone else's lease, or a lease nobody holds, changes nothing and is
/// not an error.
pub async fn release_leaves_others_alone(leases: &dyn Leases, ttl: Duration) {
    let name = fresh_name("release_leaves_others_alone");
    release(leases, &name, "a").await;
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "releasing a free lease must leave it free"
    );
    release(leases, &name, "b").await;
    assert!(
        !acquire(leases, &name, "b", ttl).await,
        "b's release of a's lease must not free it"
    );
    assert!(
        acquire(leases, &name, "a", ttl).await,
        "a must still hold its lease after b's release"
    );
}

/// Two names are two leases.
pub async fn names_are_independent(leases: &dyn Leases, ttl: Duration) {
    let first = fresh_name("names_are_independent.1");
    let second = fresh_name("names_are_independent.2");
    assert!(
        acquire(leases, &first, "a", ttl).await,
        "a free lease must be granted"
    );
    assert!(
        acquire(leases, &second, "b", ttl).await,
        "b must get a different lease than the one a holds"
    );
    release(leases, &second, "b").await;
    assert!(
        !acquire(leases, &first, "b", ttl).await,
        "releasing one lease must not free another"
    );
}

/// Many holders racing for one free lease: exactly one wins.
pub async fn one_winner_among_concurrent_acquirers(leases: &dyn Leases, ttl: Duration) {
    let name = fresh_name("one_winner_among_concurrent_acquirers");
    let holders: Vec<String> = (0..8).map(|i| format!("h{i}")).collect();
    let attempts = holders.iter().map(|h| leases.try_acquire(&name, h, ttl));
    let results = futures_util::future::join_all(attempts).await;
    let winners: Vec<&String> = holders
        .iter()
        .zip(&results)
        .filter_map(|(h, r)| match r {
            Ok(true) => Some(h),
            Ok(false) => None,
            Err(e) => panic!("try_acquire({name}, {h}) failed: {e}"),
        })
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of 8 concurrent acquirers must win, got {winners:?}"
    );
}
