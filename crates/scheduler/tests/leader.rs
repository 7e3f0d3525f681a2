//! Two schedulers sharing one lease store, as two replicas of the service would: only
//! the leader runs jobs, and the other takes over when the leader stops, when its lease
//! lapses because the store is unreachable, or when the store says someone else holds it.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::{scheduler_on, RunLog};
use tokio::time::sleep;
use vigia_scheduler::{
    JobOptions, LeaseError, Leases, MemoryLeases, Outcome, Schedule, SchedulerHandle,
};

/// The TTL `scheduler_on` gives every scheduler (renewed every second).
const TTL: Duration = Duration::from_secs(3);

/// How the faulty store answers one holder.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// The store is unreachable for this holder.
    Unreachable,
    /// The store claims someone else holds every lease.
    HeldElsewhere,
}

/// [`MemoryLeases`] with faults injected per holder.
#[derive(Default)]
struct FaultyLeases {
    inner: MemoryLeases,
    faults: Mutex<HashMap<String, Fault>>,
}

impl FaultyLeases {
    fn set(&self, holder: &str, fault: Fault) {
        self.faults
            .lock()
            .expect("faults lock")
            .insert(holder.to_owned(), fault);
    }

    fn fault(&self, holder: &str) -> Option<Fault> {
        self.faults
            .lock()
            .expect("faults lock")
            .get(holder)
            .copied()
    }
}

#[async_trait]
impl Leases for FaultyLeases {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, LeaseError> {
        match self.fault(holder) {
            Some(Fault::Unreachable) => Err(LeaseError::Unavailable("connection refused".into())),
            Some(Fault::HeldElsewhere) => Ok(false),
            None => self.inner.try_acquire(name, holder, ttl).await,
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        match self.fault(holder) {
            Some(Fault::Unreachable) => Err(LeaseError::Unavailable("connection refused".into())),
            _ => self.inner.release(name, holder).await,
        }
    }
}

/// Starts a replica that runs "tick" every second, logging into `log`.
fn replica(leases: Arc<dyn Leases>, holder: &str, log: &RunLog) -> SchedulerHandle {
    let mut s = scheduler_on(leases, holder);
    s.register(
        "tick",
        Schedule::Every(Duration::from_secs(1)),
        log.job(Duration::from_millis(100)),
        JobOptions::default(),
    )
    .expect("register");
    s.start()
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_runs_and_the_other_takes_over_when_it_stops() {
    let leases = Arc::new(MemoryLeases::new());
    let (log_a, log_b) = (RunLog::new(), RunLog::new());
    let a = replica(leases.clone(), "a", &log_a);
    sleep(Duration::from_millis(10)).await;
    let b = replica(leases.clone(), "b", &log_b);

    // Long past several TTLs: the leader renews, the follower never runs.
    sleep(Duration::from_secs(10)).await;
    assert_eq!(log_a.starts().len(), 10);
    assert!(log_b.starts().is_empty(), "{:?}", log_b.starts());
    assert!(a.is_leader() && !b.is_leader());
    assert_eq!(leases.holder("scheduler").as_deref(), Some("a"));
    let follower = &b.status()[0];
    assert!(!follower.leader && follower.next_run.is_some() && follower.runs == 0);

    let stopped_at = log_a.elapsed();
    a.stop(Duration::from_secs(1)).await;
    assert_eq!(leases.holder("scheduler"), None, "a released its lease");

    sleep(Duration::from_secs(5)).await;
    let first_b = *log_b.starts().first().expect("b took over");
    assert!(
        first_b > stopped_at && first_b - stopped_at <= TTL,
        "b's first run {first_b:?}, a stopped at {stopped_at:?}"
    );
    assert!(b.is_leader());
    assert!(log_b.starts().len() >= 3);
    assert!(log_a.starts().iter().all(|t| *t < first_b));
    b.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_the_store_steps_down_before_the_other_takes_over() {
    let leases = Arc::new(FaultyLeases::default());
    let (log_a, log_b) = (RunLog::new(), RunLog::new());
    let a = replica(leases.clone(), "a", &log_a);
    sleep(Duration::from_millis(10)).await;
    let b = replica(leases.clone(), "b", &log_b);
    sleep(Duration::from_millis(4500)).await;
    assert!(a.is_leader());

    // The store stops answering a; a's last granted renewal was at 4 s.
    let cut_at = log_a.elapsed();
    leases.set("a", Fault::Unreachable);
    sleep(Duration::from_secs(10)).await;

    assert!(
        !a.is_leader(),
        "a must step down once its lease may have lapsed"
    );
    assert!(b.is_leader());
    let last_a = *log_a.starts().last().expect("a ran");
    let first_b = *log_b.starts().first().expect("b took over");
    assert!(
        last_a < first_b,
        "no overlap: a ran at {last_a:?}, b from {first_b:?}"
    );
    assert!(
        first_b - cut_at <= TTL,
        "b took over {:?} after a was cut off",
        first_b - cut_at
    );
    // a kept running while its lease was surely still valid, and not after.
    assert!(
        last_a >= cut_at,
        "a should have led until its lease ran out"
    );
    assert!(last_a < cut_at + TTL);

    // a cannot release the lease it can no longer reach; stopping still completes.
    a.stop(Duration::from_secs(1)).await;
    b.stop(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_told_someone_else_holds_the_lease_cancels_its_running_jobs() {
    let leases = Arc::new(FaultyLeases::default());
    let log = RunLog::new();
    let mut s = scheduler_on(leases.clone(), "a");
    s.register(
        "long",
        Schedule::Every(Duration::from_secs(3600)),
        log.job_until_cancelled(),
        JobOptions {
            run_at_start: true,
            ..JobOptions::default()
        },
    )
    .expect("register");
    let a = s.start();
    sleep(Duration::from_secs(2)).await;
    assert!(a.is_leader());
    assert!(a.status()[0].running);

    let told_at = log.elapsed();
    leases.set("a", Fault::HeldElsewhere);
    sleep(Duration::from_secs(2)).await;
    assert!(!a.is_leader());
    let status = &a.status()[0];
    assert!(!status.running && !status.leader);
    let last = status.last_run.clone().expect("ended");
    assert_eq!(last.outcome, Outcome::Cancelled);
    // Noticed at the next renewal, a third of the TTL at most.
    let ended = log.ends()[0];
    assert!(
        ended - told_at <= TTL / 3,
        "ended {ended:?}, told at {told_at:?}"
    );

    // Leadership comes back when the store grants the lease again.
    leases.faults.lock().expect("faults lock").clear();
    sleep(Duration::from_secs(2)).await;
    assert!(a.is_leader());
    a.stop(Duration::from_secs(1)).await;
}
