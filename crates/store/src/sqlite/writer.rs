//! The writer thread: owns the only read-write connection and runs jobs one at a
//! time, folding queued `write_batch` calls and robot writes (creates and transitions)
//! into one transaction (group commit), each in its own savepoint, on the workspace's
//! one group-commit primitive (`vigia-groupcommit`, shared with the bus).

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;
use vigia_core::Sensor;
use vigia_groupcommit::{Committer, Options, Writer as GroupWriter};

use super::batch::{self, Caches};
use super::error::duplicate;
use crate::{RobotError, RobotResult, StoreError, StoreResult, WriteBatch, WriteOutcome};

/// State owned by the writer thread.
pub(crate) struct Writer {
    conn: Connection,
    caches: Caches,
}

impl Writer {
    /// Runs `f` in an IMMEDIATE transaction (the write lock is taken up front, so the
    /// transaction never fails half-way for want of it) and commits if it succeeds.
    pub(crate) fn transaction<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// The write connection, for statements that must run outside a transaction (a WAL
    /// checkpoint).
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Records a committed sensor so batches naming it skip the lookup.
    pub(crate) fn remember_sensor(&mut self, sensor: &Sensor) {
        self.caches.remember_sensor(sensor.id, sensor.tenant);
    }
}

/// A write waiting for its group.
pub(crate) enum Job {
    /// A `write_batch`, and where its outcome goes.
    Batch(WriteBatch, Reply),
    /// Any other write that may share a group (robot creates and transitions).
    Grouped(Box<dyn GroupedWrite>),
}

/// A write that runs inside a group's transaction, in a savepoint of its own, and is
/// answered only once the group committed (so an answer means durable).
pub(crate) trait GroupedWrite: Send {
    /// Runs the write; false when it failed and its savepoint must be rolled back.
    fn apply(&mut self, conn: &Connection) -> bool;
    /// Answers the caller: with the write's own outcome when the group committed, with
    /// the group's error otherwise.
    fn answer(self: Box<Self>, group: Result<(), &StoreError>);
}

/// A [`GroupedWrite`] from a closure whose outcome is a [`RobotResult`]: a store error
/// rolls its savepoint back; a refusal (stale attempt, …) commits what the closure wrote
/// (the refusal's record) and is answered as such.
pub(crate) struct RobotWrite<T, F> {
    run: Option<F>,
    outcome: Option<RobotResult<T>>,
    reply: oneshot::Sender<RobotResult<T>>,
}

impl<T, F> RobotWrite<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> RobotResult<T> + Send + 'static,
{
    /// The job, and where its answer arrives.
    pub(crate) fn job(run: F) -> (Job, oneshot::Receiver<RobotResult<T>>) {
        let (reply, answer) = oneshot::channel();
        let write = RobotWrite {
            run: Some(run),
            outcome: None,
            reply,
        };
        (Job::Grouped(Box::new(write)), answer)
    }
}

impl<T, F> GroupedWrite for RobotWrite<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> RobotResult<T> + Send + 'static,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(run) = self.run.take() else {
            return true;
        };
        let outcome = run(conn);
        let keep = !matches!(outcome, Err(RobotError::Store(_)));
        self.outcome = Some(outcome);
        keep
    }

    fn answer(self: Box<Self>, group: Result<(), &StoreError>) {
        let outcome = match (group, self.outcome) {
            (Ok(()), Some(outcome)) => outcome,
            (Err(e), _) => Err(RobotError::Store(duplicate(e))),
            (Ok(()), None) => Err(RobotError::Store(StoreError::Internal(
                "a grouped write was answered without running".into(),
            ))),
        };
        // The caller may have given up waiting; the write is committed anyway.
        let _ = self.reply.send(outcome);
    }
}

/// Starts the writer thread on `conn`: `write_batch` calls queued together are folded
/// into one transaction (up to `max_group_readings` readings), other writes run alone in
/// arrival order ([`GroupWriter::call`]); at most `queue` of them wait.
pub(crate) fn spawn(
    conn: Connection,
    queue: usize,
    max_group_readings: usize,
) -> std::io::Result<GroupWriter<Writer>> {
    GroupWriter::spawn(
        Writer {
            conn,
            caches: Caches::default(),
        },
        Options {
            name: "vigia-sqlite-writer".into(),
            queue,
            max_group_weight: max_group_readings,
        },
    )
}

impl Committer for Writer {
    type Job = Job;

    fn weight(&self, job: &Job) -> usize {
        match job {
            Job::Batch(batch, _) => batch.readings.len().max(1),
            Job::Grouped(_) => 1,
        }
    }

    fn commit(&mut self, group: Vec<Job>) {
        commit(self, group);
    }

    fn finish(&mut self) {
        tracing::debug!("SQLite writer stopped");
    }
}

type Reply = oneshot::Sender<StoreResult<WriteOutcome>>;

fn commit(writer: &mut Writer, group: Vec<Job>) {
    let mut batches = Vec::new();
    let mut writes = Vec::new();
    for job in group {
        match job {
            Job::Batch(batch, reply) => batches.push((batch, reply)),
            Job::Grouped(write) => writes.push(write),
        }
    }
    let result = commit_jobs(writer, &batches, &mut writes);
    if result.is_err() {
        writer.caches.forget_uncommitted();
    }
    match result {
        Ok(outcomes) => {
            for ((_, reply), outcome) in batches.into_iter().zip(outcomes) {
                // The caller may have given up waiting; its batch is committed anyway.
                let _ = reply.send(outcome);
            }
            for write in writes {
                write.answer(Ok(()));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, batches = batches.len(), writes = writes.len(), "SQLite group commit failed");
            for (_, reply) in batches {
                let _ = reply.send(Err(duplicate(&e)));
            }
            for write in writes {
                write.answer(Err(&e));
            }
        }
    }
}

/// One transaction: the batches (each in its savepoint, see `batch::apply_group`), then
/// the other writes, each in a savepoint of its own.
fn commit_jobs(
    writer: &mut Writer,
    batches: &[(WriteBatch, Reply)],
    writes: &mut [Box<dyn GroupedWrite>],
) -> StoreResult<Vec<StoreResult<WriteOutcome>>> {
    let tx = writer
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)?;
    let refs: Vec<&WriteBatch> = batches.iter().map(|(b, _)| b).collect();
    let outcomes = batch::apply_group(&tx, &mut writer.caches, &refs)?;
    for write in writes.iter_mut() {
        tx.execute_batch("SAVEPOINT grouped")?;
        let keep = write.apply(&tx);
        // Some errors (I/O, disk full) make SQLite roll back the whole transaction;
        // carrying on would run later writes outside any transaction.
        if tx.is_autocommit() {
            return Err(StoreError::Unavailable(
                "SQLite rolled the group's transaction back".into(),
            ));
        }
        if keep {
            tx.execute_batch("RELEASE grouped")?;
        } else {
            tx.execute_batch("ROLLBACK TO grouped; RELEASE grouped")?;
        }
    }
    tx.commit()?;
    Ok(outcomes)
}
