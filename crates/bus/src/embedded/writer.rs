//! The writer thread of the embedded bus: the only code that writes the log.
//!
//! Group commit: it blocks for the first job, drains whatever else is queued (up to the
//! configured cap), waits briefly for publishers it has just answered when recent groups
//! were bigger, and commits it all in one transaction, so one fsync serves many
//! publishers. Acks are coalesced: they ride along with the next publish group, or are
//! flushed on their own after [`ACK_DELAY`] when no publish comes. An ack only has to be
//! durable eventually; until it is, a restart merely redelivers the message.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{oneshot, Semaphore};

use super::{lock, log, Shared};
use crate::metrics::{BUS_COMMIT_SECONDS, BUS_GROUP_PUBLISHES};
use crate::BusError;

/// How long acks wait for a publish group to ride along with before committing alone.
const ACK_DELAY: Duration = Duration::from_millis(20);
/// Past this many pending acks they are flushed at once, which also bounds their memory.
const ACK_FLUSH_COUNT: usize = 65_536;
/// The longest a group waits for more publishers (see [`Writer::gather`]); it never waits
/// longer than half the last commit took, so fast (`Durability::Os`) commits barely wait.
const MAX_LINGER: Duration = Duration::from_millis(2);
/// After a failed commit, pending acks are retried this much later instead of in a loop.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Work for the writer thread.
pub(crate) enum Job {
    /// Append one encoded batch and answer when it is durable.
    Publish(Publish),
    /// Delete acked messages (already settled in memory).
    Ack(Vec<u64>),
    /// Move an undeliverable message to `dead_letters` (already settled in memory).
    Quarantine { id: u64, reason: String },
}

/// One batch waiting to be appended.
pub(crate) struct Publish {
    pub payload: Vec<u8>,
    pub readings: u64,
    pub reply: oneshot::Sender<Result<(), BusError>>,
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    conn: Connection,
    jobs: Receiver<Job>,
    shared: Arc<Shared>,
    /// Publishers hold a permit while their job sits in the channel; the writer hands
    /// permits back as it takes jobs, which bounds the channel.
    permits: Arc<Semaphore>,
    next_id: u64,
    max_group: usize,
    acks: Vec<u64>,
    quarantined: Vec<(u64, String)>,
    /// When pending acks must be committed even if no publish comes.
    flush_at: Option<Instant>,
    /// Recent largest group of publishes (decaying): how many publishers to wait for.
    expected_group: usize,
    /// How long the last commit took.
    last_commit: Duration,
}

impl Writer {
    /// A writer that appends from `next_id` on and commits at most `max_group` jobs at once.
    pub fn new(
        conn: Connection,
        jobs: Receiver<Job>,
        shared: Arc<Shared>,
        permits: Arc<Semaphore>,
        next_id: u64,
        max_group: usize,
    ) -> Self {
        Self {
            conn,
            jobs,
            shared,
            permits,
            next_id,
            max_group: max_group.max(1),
            acks: Vec::new(),
            quarantined: Vec::new(),
            flush_at: None,
            expected_group: 0,
            last_commit: Duration::ZERO,
        }
    }

    /// Runs until every sender is gone, then makes the last acks durable and returns.
    pub fn run(mut self) {
        loop {
            let first = match self.flush_at {
                None => match self.jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => break,
                },
                Some(at) => match self
                    .jobs
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(job) => Some(job),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let group = match first {
                Some(job) => self.gather(job),
                None => Vec::new(),
            };
            self.permits.add_permits(group.len());
            if !group.is_empty() || self.settlements_due() {
                self.commit(group);
            }
        }
        if self.has_settlements() {
            self.commit(Vec::new());
            if self.has_settlements() {
                tracing::warn!(
                    acks = self.acks.len(),
                    "bus closed with acks not written; those messages will be delivered again"
                );
            }
        }
    }

    /// Collects one group: everything queued now, then, when recent groups were bigger,
    /// a short wait for the publishers that the last commit just answered. Without that
    /// wait, groups alternate between the few publishers back first and the rest, and
    /// every small group pays a whole fsync.
    fn gather(&mut self, first: Job) -> Vec<Publish> {
        let mut group = Vec::new();
        self.absorb(first, &mut group);
        // Acks count towards the cap too, so a flood of them cannot starve commits.
        let mut taken = 1;
        while taken < self.max_group {
            match self.jobs.try_recv() {
                Ok(job) => self.absorb(job, &mut group),
                Err(_) => break,
            }
            taken += 1;
        }
        if !group.is_empty() && group.len() < self.expected_group {
            let deadline = Instant::now() + (self.last_commit / 2).min(MAX_LINGER);
            while taken < self.max_group && group.len() < self.expected_group {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.jobs.recv_timeout(left) {
                    Ok(job) => self.absorb(job, &mut group),
                    Err(_) => break,
                }
                taken += 1;
            }
        }
        // Decays, so after a burst the wait fades out within a few dozen commits.
        self.expected_group = group
            .len()
            .max(self.expected_group - self.expected_group / 8);
        group
    }

    fn absorb(&mut self, job: Job, group: &mut Vec<Publish>) {
        match job {
            Job::Publish(publish) => group.push(publish),
            Job::Ack(ids) => {
                self.acks.extend(ids);
                self.flush_at
                    .get_or_insert_with(|| Instant::now() + ACK_DELAY);
            }
            Job::Quarantine { id, reason } => {
                self.quarantined.push((id, reason));
                self.flush_at
                    .get_or_insert_with(|| Instant::now() + ACK_DELAY);
            }
        }
    }

    fn has_settlements(&self) -> bool {
        !self.acks.is_empty() || !self.quarantined.is_empty()
    }

    fn settlements_due(&self) -> bool {
        self.has_settlements()
            && (self.acks.len() >= ACK_FLUSH_COUNT
                || self.flush_at.is_some_and(|at| at <= Instant::now()))
    }

    /// Commits one group plus every pending settlement in a single transaction, then
    /// answers the publishers and hands the new messages to receivers.
    fn commit(&mut self, group: Vec<Publish>) {
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
                self.quarantined.clear();
                self.flush_at = None;
                self.next_id += group.len() as u64;
                *lock(&self.shared.health) = None;
                let mut replies = Vec::with_capacity(group.len());
                {
                    let mut queue = lock(&self.shared.queue);
                    for (id, publish) in (first_id..).zip(group) {
                        queue.push_back(id, publish.readings, publish.payload);
                        replies.push(publish.reply);
                    }
                }
                self.shared
                    .in_writer
                    .fetch_sub(replies.len() as u64, Ordering::SeqCst);
                self.shared.ready.notify_waiters();
                for reply in replies {
                    // A publisher that stopped waiting still has its batch published.
                    let _ = reply.send(Ok(()));
                }
            }
            Err(error) => {
                let cause = format!("bus log write failed: {error}");
                tracing::error!(%error, publishes = group.len(), "bus log write failed");
                *lock(&self.shared.health) = Some(cause.clone());
                if self.has_settlements() {
                    self.flush_at = Some(Instant::now() + RETRY_DELAY);
                }
                let failed = group.len() as u64;
                for publish in group {
                    self.shared
                        .depth
                        .fetch_sub(publish.readings, Ordering::SeqCst);
                    let _ = publish
                        .reply
                        .send(Err(BusError::Unavailable(cause.clone())));
                }
                self.shared.in_writer.fetch_sub(failed, Ordering::SeqCst);
                self.shared.ready.notify_waiters();
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
            group.iter().map(|p| (p.readings, p.payload.as_slice())),
        )?;
        log::delete_acked(&tx, &mut self.acks)?;
        for (id, reason) in &self.quarantined {
            log::quarantine(&tx, *id, reason)?;
        }
        tx.commit()
    }
}
