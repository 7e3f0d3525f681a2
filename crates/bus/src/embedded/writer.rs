//! The committer of the embedded bus: the only code that writes the log, run on a
//! `vigia_groupcommit::Writer` thread.
//!
//! Group commit: the writer thread blocks for the first job, takes whatever else is
//! queued (up to the configured cap), lingers briefly for the publishers the last commit
//! just answered when recent groups were bigger ([`LogWriter::linger`]), and hands the
//! group here to be committed in one transaction, so one fsync serves many publishers.
//! Acks and rejections are coalesced: they ride along with the next publish group, or
//! are flushed on their own after [`ACK_DELAY`] when no publish comes (the writer's
//! deadline). An ack only has to be durable eventually; until it is, a restart merely
//! redelivers the message.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;
use vigia_groupcommit::Committer;

use super::{lock, log, Shared};
use crate::metrics::{BUS_COMMIT_SECONDS, BUS_GROUP_PUBLISHES};
use crate::{BusError, Local, Topic, TOPIC_COUNT};

/// How long acks wait for a publish group to ride along with before committing alone.
const ACK_DELAY: Duration = Duration::from_millis(20);
/// Past this many pending acks they are flushed at once, which also bounds their memory.
const ACK_FLUSH_COUNT: usize = 65_536;
/// The longest a group waits for more publishers (see [`LogWriter::linger`]); it never
/// waits longer than half the last commit took, so fast (`Durability::Os`) commits
/// barely wait.
const MAX_LINGER: Duration = Duration::from_millis(2);
/// After a failed commit, pending acks are retried this much later instead of in a loop.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Work for the writer thread.
pub(crate) enum Job {
    /// Append one message and answer when it is durable.
    Publish(Publish),
    /// Delete acked messages (already settled in memory).
    Ack(Vec<u64>),
    /// Move a rejected message to `dead_letters` (already settled in memory).
    Reject { id: u64, reason: String },
}

/// One message waiting to be appended.
pub(crate) struct Publish {
    pub topic: Topic,
    pub payload: Bytes,
    pub weight: u64,
    pub local: Option<Local>,
    pub reply: oneshot::Sender<Result<(), BusError>>,
}

/// State owned by the writer thread.
pub(crate) struct LogWriter {
    conn: Connection,
    shared: Arc<Shared>,
    next_id: u64,
    acks: Vec<u64>,
    rejected: Vec<(u64, String)>,
    /// When pending acks and rejections must be committed even if no publish comes;
    /// set exactly while some are pending.
    flush_at: Option<Instant>,
    /// Recent largest group (decaying): how many publishers to wait for.
    expected_group: usize,
    /// How long the last commit took.
    last_commit: Duration,
}

impl LogWriter {
    /// A writer that appends from `next_id` on.
    pub fn new(conn: Connection, shared: Arc<Shared>, next_id: u64) -> Self {
        Self {
            conn,
            shared,
            next_id,
            acks: Vec::new(),
            rejected: Vec::new(),
            flush_at: None,
            expected_group: 0,
            last_commit: Duration::ZERO,
        }
    }

    fn has_settlements(&self) -> bool {
        !self.acks.is_empty() || !self.rejected.is_empty()
    }

    fn settlements_due(&self) -> bool {
        self.has_settlements()
            && (self.acks.len() >= ACK_FLUSH_COUNT
                || self.flush_at.is_some_and(|at| at <= Instant::now()))
    }

    /// Commits the publishes plus every pending settlement in a single transaction, then
    /// hands the new messages to receivers and answers the publishers.
    fn write_group(&mut self, group: Vec<Publish>) {
        let first_id = self.next_id;
        let started = Instant::now();
        let written = self.write(first_id, &group);
        self.last_commit = started.elapsed();
        match written {
            Ok(()) => {
                metrics::histogram!(BUS_COMMIT_SECONDS).record(self.last_commit.as_secs_f64());
                if !group.is_empty() {
                    metrics::histogram!(BUS_GROUP_PUBLISHES).record(group.len() as f64);
                }
                self.acks.clear();
                self.rejected.clear();
                self.flush_at = None;
                self.next_id += group.len() as u64;
                *lock(&self.shared.health) = None;
                self.deliver(first_id, group);
            }
            Err(error) => {
                let cause = format!("bus log write failed: {error}");
                tracing::error!(%error, publishes = group.len(), "bus log write failed");
                *lock(&self.shared.health) = Some(cause.clone());
                if self.has_settlements() {
                    self.flush_at = Some(Instant::now() + RETRY_DELAY);
                }
                let mut failed = [0u64; TOPIC_COUNT];
                let mut replies = Vec::with_capacity(group.len());
                for publish in group {
                    let topic = self.shared.topic(publish.topic);
                    topic.lag.fetch_sub(publish.weight, Ordering::SeqCst);
                    failed[publish.topic.index()] += 1;
                    replies.push(publish.reply);
                }
                self.release(failed);
                for reply in replies {
                    let _ = reply.send(Err(BusError::Unavailable(cause.clone())));
                }
            }
        }
    }

    /// Queues committed messages for receivers (one lock per topic), then answers.
    fn deliver(&mut self, first_id: u64, group: Vec<Publish>) {
        let mut by_topic: [Vec<(u64, Publish)>; TOPIC_COUNT] = Default::default();
        for (id, publish) in (first_id..).zip(group) {
            by_topic[publish.topic.index()].push((id, publish));
        }
        let mut landed = [0u64; TOPIC_COUNT];
        let mut replies = Vec::new();
        for (topic, publishes) in Topic::ALL.into_iter().zip(by_topic) {
            if publishes.is_empty() {
                continue;
            }
            landed[topic.index()] = publishes.len() as u64;
            let mut queue = lock(&self.shared.topic(topic).queue);
            for (id, publish) in publishes {
                queue.push_back(id, publish.weight, publish.payload, publish.local);
                replies.push(publish.reply);
            }
        }
        self.release(landed);
        for reply in replies {
            // A publisher that stopped waiting still has its message published.
            let _ = reply.send(Ok(()));
        }
    }

    /// Counts finished publishes out of the writer, per topic, and wakes receivers.
    fn release(&self, per_topic: [u64; TOPIC_COUNT]) {
        for (topic, count) in Topic::ALL.into_iter().zip(per_topic) {
            if count > 0 {
                let state = self.shared.topic(topic);
                state.in_writer.fetch_sub(count, Ordering::SeqCst);
                state.ready.notify_waiters();
            }
        }
    }

    fn write(&mut self, first_id: u64, group: &[Publish]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        log::append(
            &tx,
            first_id,
            group.iter().map(|p| (p.topic, p.weight, &p.payload[..])),
        )?;
        log::delete_acked(&tx, &mut self.acks)?;
        for (id, reason) in &self.rejected {
            log::quarantine(&tx, *id, reason)?;
        }
        tx.commit()
    }
}

impl Committer for LogWriter {
    type Job = Job;

    /// Publishes go into the transaction; acks and rejections wait for one (or for the
    /// deadline), unless they are due already.
    fn commit(&mut self, group: Vec<Job>) {
        let mut publishes = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Publish(publish) => publishes.push(publish),
                Job::Ack(ids) => {
                    self.acks.extend(ids);
                    self.flush_at
                        .get_or_insert_with(|| Instant::now() + ACK_DELAY);
                }
                Job::Reject { id, reason } => {
                    self.rejected.push((id, reason));
                    self.flush_at
                        .get_or_insert_with(|| Instant::now() + ACK_DELAY);
                }
            }
        }
        // Decays, so after a burst the linger fades out within a few dozen commits.
        self.expected_group = publishes
            .len()
            .max(self.expected_group - self.expected_group / 8);
        if !publishes.is_empty() || self.settlements_due() {
            self.write_group(publishes);
        }
    }

    /// When recent groups were bigger, waits briefly for the publishers the last commit
    /// just answered. Without that wait, groups alternate between the few publishers back
    /// first and the rest, and every small group pays a whole fsync. Acks count as group
    /// members here (there are only as many as workers), which keeps this O(1).
    fn linger(&mut self, group: &[Job]) -> Duration {
        let publishing = group.iter().any(|job| matches!(job, Job::Publish(_)));
        if publishing && group.len() < self.expected_group {
            (self.last_commit / 2).min(MAX_LINGER)
        } else {
            Duration::ZERO
        }
    }

    fn enough(&self, group: &[Job]) -> bool {
        group.len() >= self.expected_group
    }

    fn deadline(&self) -> Option<Instant> {
        self.flush_at
    }

    fn on_deadline(&mut self) {
        if self.has_settlements() {
            self.write_group(Vec::new());
        } else {
            self.flush_at = None;
        }
    }

    /// Makes the last acks durable before the bus closes.
    fn finish(&mut self) {
        if self.has_settlements() {
            self.write_group(Vec::new());
            if self.has_settlements() {
                tracing::warn!(
                    acks = self.acks.len(),
                    "bus closed with acks not written; those messages will be delivered again"
                );
            }
        }
    }
}
