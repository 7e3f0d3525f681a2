//! Sensor affinity across worker processes (issue 13): each readings partition is owned by
//! one worker process at a time, so one process judges all of a sensor's readings (rate
//! windows, resolve holds, duration totals and silences need them in one place).
//!
//! # How ownership is decided
//!
//! Every worker process renews a *member* lease (`workers/member/<member>`) in the store
//! every `lease / 5`. The live members, read back in one call
//! ([`vigia_store::LeaseRepo::holders`]), decide who should own each partition by
//! rendezvous hashing ([`vigia_core::partition::member_weight`]): partition `p` goes to the
//! member with the highest weight for `p`. Every member computes the same answer from the
//! same list, and a member joining or leaving moves only the partitions it wins or held.
//!
//! A member then holds a *partition* lease (`workers/partition/<p>`) for each partition
//! it should own, renewed on the same tick. It starts consuming a partition only once it
//! holds that lease: a partition lease is free only when its owner released it or died
//! and its lease expired, so two live processes never own one partition. On a rebalance
//! the old owner stops its consumer between two batches, drops those sensors' state and
//! releases the lease; the new owner takes it on its next tick and rebuilds those sensors'
//! rule state from the store, which is the truth, before its first batch.
//!
//! # A dead owner
//!
//! A SIGKILLed owner stops renewing: its member lease and its partition leases expire
//! after `lease` (10 s by default), the next tick of the survivors gives them its
//! partitions, and what it had received but not acked is redelivered by the bus
//! (`claim_idle` on Redis, `ack_wait` on NATS), marked redelivered; the store absorbs the
//! repeat (idempotent readings, one open alert per sensor and rule). A process stalled
//! past its lease (a long GC-like pause) finds on its next tick that its renewal failed
//! and stops consuming at once; a batch it was committing meanwhile is idempotent too.
//!
//! Not a store or Redis round trip per sensor or batch: two lease calls per owned
//! partition and one holders read per tick, whatever the traffic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use vigia_bus::Topic;
use vigia_core::Timestamp;
use vigia_store::StoreError;

use crate::Pipeline;

/// Lease names of live worker processes: this prefix and the member name.
pub const MEMBER_LEASE_PREFIX: &str = "workers/member/";
/// Lease names of partition owners: this prefix and the partition number.
pub const PARTITION_LEASE_PREFIX: &str = "workers/partition/";

/// The smallest lease accepted: the tick is a fifth of it, and a store round trip must
/// fit in a tick many times over.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// Who this process is among the worker processes, and how long its leases last.
#[derive(Debug, Clone)]
pub struct AffinityConfig {
    /// Unique among the processes sharing the bus, stable for this process's life.
    pub member: String,
    /// How long a dead owner keeps its partitions (`workers.partition_lease`); leases
    /// are renewed every fifth of it.
    pub lease: Duration,
}

impl Default for AffinityConfig {
    fn default() -> Self {
        Self {
            member: default_member_name(),
            lease: Duration::from_secs(10),
        }
    }
}

/// `host-pid-nanos`: unique per process, readable in `GET /api/v1/jobs`-like listings and
/// logs (which process owns what).
pub fn default_member_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// The partitions a pool owns, as a bit set readable without a lock (the silence sweep
/// asks per sensor).
#[derive(Debug, Default)]
pub struct OwnedPartitions(AtomicU32);

const _: () = assert!(vigia_bus::MAX_READINGS_PARTITIONS <= 32);

impl OwnedPartitions {
    pub fn contains(&self, partition: usize) -> bool {
        partition < 32 && self.0.load(Ordering::Acquire) & (1 << partition) != 0
    }

    pub fn insert(&self, partition: usize) {
        self.0.fetch_or(1 << partition, Ordering::AcqRel);
    }

    pub fn remove(&self, partition: usize) {
        self.0.fetch_and(!(1 << partition), Ordering::AcqRel);
    }

    pub fn list(&self) -> Vec<usize> {
        let bits = self.0.load(Ordering::Acquire);
        (0..32).filter(|p| bits & (1 << p) != 0).collect()
    }
}

/// The partitions (of `partitions`) that `me` should own among the live `members`, by
/// rendezvous hashing; empty when `me` is not among them.
pub fn assignment(members: &[String], me: &str, partitions: usize) -> Vec<usize> {
    (0..partitions)
        .filter(|&p| owner(members, p) == Some(me))
        .collect()
}

/// The member that should own `partition`: the highest weight, ties to the smaller name.
pub fn owner(members: &[String], partition: usize) -> Option<&str> {
    members
        .iter()
        .map(|m| (vigia_core::partition::member_weight(m, partition), m))
        .max_by(|(wa, ma), (wb, mb)| wa.cmp(wb).then_with(|| mb.cmp(ma)))
        .map(|(_, m)| m.as_str())
}

fn partition_lease(partition: usize) -> String {
    format!("{PARTITION_LEASE_PREFIX}{partition}")
}

/// A running consumer of one partition; aborted if dropped while running (the owner's
/// task was aborted), so no consumer outlives its owner.
struct Consumer {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<bool>>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The partition owner of one pool: runs until [`Pipeline::close`] (then hands every
/// partition back after its current batch) or until a consumer finds the bus closed and
/// drained.
pub(crate) async fn run(pipeline: Arc<Pipeline>) {
    let config = pipeline.config().clone();
    let lease = config.affinity.lease.max(MIN_LEASE);
    let member = config.affinity.member.clone();
    let mut owner = Owner {
        pipeline: pipeline.clone(),
        member: member.clone(),
        member_lease: format!("{MEMBER_LEASE_PREFIX}{member}"),
        lease,
        partitions: config.partitions,
        consumers: BTreeMap::new(),
        bus_closed: false,
    };
    info!(member = %member, partitions = config.partitions, lease = ?lease,
        "taking part in partition ownership");
    let mut closing = pipeline.closing();
    let mut tick = tokio::time::interval(lease / 5);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = closing.wait_for(|c| *c) => break,
        }
        owner.reap().await;
        if owner.bus_closed {
            break;
        }
        if let Err(e) = owner.step().await {
            warn!(error = %e, "partition ownership: the store did not answer; keeping what is held until the leases say otherwise");
        }
    }
    owner.shut_down().await;
}

struct Owner {
    pipeline: Arc<Pipeline>,
    member: String,
    member_lease: String,
    lease: Duration,
    partitions: usize,
    consumers: BTreeMap<usize, Consumer>,
    bus_closed: bool,
}

impl Owner {
    /// One tick: renew, read who is alive, give up what another should own, keep what
    /// is still ours, take what has become free.
    async fn step(&mut self) -> Result<(), StoreError> {
        let pipeline = self.pipeline.clone();
        let leases = pipeline.store().leases();
        let now = Timestamp::now();
        if !leases
            .try_acquire(&self.member_lease, &self.member, self.lease, now)
            .await?
        {
            // Only this process renews this name: the store holds another holder's
            // lease only if two processes were started with one member name.
            warn!(member = %self.member, "another process holds this member name; give each worker process its own");
            return Ok(());
        }
        let members: Vec<String> = leases
            .holders(MEMBER_LEASE_PREFIX, now)
            .await?
            .into_iter()
            .map(|(_, holder)| holder)
            .collect();
        let wanted = assignment(&members, &self.member, self.partitions);

        // Give up what another member should own now, after its last batch.
        let leaving: Vec<usize> = self
            .consumers
            .keys()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect();
        if !leaving.is_empty() {
            self.hand_back(&leaving).await;
        }

        // Renew what we keep; a renewal refused means the lease expired and another
        // process took it while this one was stalled: stop at once, release nothing.
        let kept: Vec<usize> = self.consumers.keys().copied().collect();
        for p in kept {
            if !leases
                .try_acquire(&partition_lease(p), &self.member, self.lease, now)
                .await?
            {
                warn!(
                    partition = p,
                    "lost a partition lease (this process stalled past it): stopping its consumer"
                );
                self.stop(&[p]).await;
                self.pipeline.forget_partitions(&[p]);
            }
        }

        // Take what we should own and is free; the previous owner may still be
        // handing it back, so a refusal is retried on the next tick.
        let mut taken = Vec::new();
        for &p in &wanted {
            if self.consumers.contains_key(&p) {
                continue;
            }
            if leases
                .try_acquire(&partition_lease(p), &self.member, self.lease, now)
                .await?
            {
                taken.push(p);
            }
        }
        if taken.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.pipeline.rebuild_partitions(&taken).await {
            // Without its state a partition would be judged wrong: hand the leases back
            // and try again on the next tick.
            for &p in &taken {
                let _ = leases.release(&partition_lease(p), &self.member).await;
            }
            return Err(e);
        }
        for p in taken {
            self.start(p);
        }
        info!(owned = ?self.pipeline.owned_partitions(), members = members.len(), "partitions taken");
        Ok(())
    }

    fn start(&mut self, p: usize) {
        let Some(topic) = Topic::readings(p) else {
            return;
        };
        let (stop, stop_rx) = watch::channel(false);
        let pipeline = self.pipeline.clone();
        self.pipeline.owned().insert(p);
        let task = tokio::spawn(async move { pipeline.consume(p, topic, Some(stop_rx)).await });
        self.consumers.insert(
            p,
            Consumer {
                stop,
                task: Some(task),
            },
        );
        metrics::counter!(crate::metrics::PARTITIONS_TAKEN).increment(1);
        self.publish_owned();
    }

    /// Stops the consumers of `partitions` between batches and waits for them.
    async fn stop(&mut self, partitions: &[usize]) {
        let mut stopping = Vec::new();
        for p in partitions {
            if let Some(mut consumer) = self.consumers.remove(p) {
                self.pipeline.owned().remove(*p);
                consumer.stop.send_replace(true);
                stopping.extend(consumer.task.take());
            }
        }
        for task in stopping {
            if let Ok(true) = task.await {
                self.bus_closed = true;
            }
        }
        self.publish_owned();
    }

    fn publish_owned(&self) {
        metrics::gauge!(crate::metrics::PARTITIONS_OWNED).set(self.consumers.len() as f64);
    }

    /// Stops, forgets and releases `partitions`, so their next owner starts at once.
    async fn hand_back(&mut self, partitions: &[usize]) {
        self.stop(partitions).await;
        self.pipeline.forget_partitions(partitions);
        let pipeline = self.pipeline.clone();
        let leases = pipeline.store().leases();
        for &p in partitions {
            if let Err(e) = leases.release(&partition_lease(p), &self.member).await {
                warn!(partition = p, error = %e, "could not release a partition lease; it expires by itself");
            }
        }
        info!(?partitions, "partitions handed back");
    }

    /// Notices consumers that ended by themselves (the bus closed and drained).
    async fn reap(&mut self) {
        let finished: Vec<usize> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.task.as_ref().is_none_or(JoinHandle::is_finished))
            .map(|(p, _)| *p)
            .collect();
        if !finished.is_empty() {
            self.stop(&finished).await;
        }
    }

    /// Shutdown: every consumer stops after its current batch (acked), and every lease
    /// is released, so the surviving processes take over at their next tick instead of
    /// waiting for expiry. What waits on the partitions stays on the shared bus for them.
    async fn shut_down(&mut self) {
        let held: Vec<usize> = self.consumers.keys().copied().collect();
        self.stop(&held).await;
        let pipeline = self.pipeline.clone();
        let leases = pipeline.store().leases();
        for p in held {
            let _ = leases.release(&partition_lease(p), &self.member).await;
        }
        let _ = leases.release(&self.member_lease, &self.member).await;
        info!(member = %self.member, "left partition ownership");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("worker-{i}")).collect()
    }

    #[test]
    fn every_partition_has_exactly_one_owner_among_the_members() {
        for count in 1..=5 {
            let members = names(count);
            let mut owners = vec![0; 16];
            for m in &members {
                for p in assignment(&members, m, 16) {
                    owners[p] += 1;
                }
            }
            assert!(
                owners.iter().all(|&o| o == 1),
                "{count} members: {owners:?}"
            );
        }
        assert!(assignment(&names(3), "stranger", 16).is_empty());
        assert!(assignment(&[], "worker-0", 16).is_empty());
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_partitions() {
        let before = names(3);
        let after: Vec<String> = before
            .iter()
            .filter(|m| *m != "worker-1")
            .cloned()
            .collect();
        for p in 0..16 {
            let was = owner(&before, p).unwrap();
            let is = owner(&after, p).unwrap();
            if was != "worker-1" {
                assert_eq!(was, is, "partition {p} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn partitions_spread_over_the_members() {
        let members = names(2);
        let mine = assignment(&members, "worker-0", 16).len();
        assert!((4..=12).contains(&mine), "worker-0 owns {mine} of 16");
    }

    #[test]
    fn the_owned_set_holds_what_was_inserted() {
        let owned = OwnedPartitions::default();
        owned.insert(3);
        owned.insert(15);
        owned.remove(3);
        assert!(owned.contains(15) && !owned.contains(3) && !owned.contains(40));
        assert_eq!(owned.list(), [15]);
    }
}
