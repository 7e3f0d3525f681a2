//! The writer thread: owns the only read-write connection and runs jobs one at a
//! time, folding queued `write_batch` calls into one transaction (group commit), on the
//! workspace's one group-commit primitive (`vigia-groupcommit`, shared with the bus).

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;
use vigia_core::Sensor;
use vigia_groupcommit::{Committer, Options, Writer as GroupWriter};

use super::batch::{self, Caches};
use super::error::duplicate;
use crate::{StoreResult, WriteBatch, WriteOutcome};

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

/// A `write_batch` waiting for its group, and where its outcome goes.
pub(crate) type BatchJob = (WriteBatch, Reply);

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
    type Job = BatchJob;

    fn weight(&self, (batch, _): &BatchJob) -> usize {
        batch.readings.len().max(1)
    }

    fn commit(&mut self, group: Vec<BatchJob>) {
        commit(self, group);
    }

    fn finish(&mut self) {
        tracing::debug!("SQLite writer stopped");
    }
}

type Reply = oneshot::Sender<StoreResult<WriteOutcome>>;

fn commit(writer: &mut Writer, group: Vec<(WriteBatch, Reply)>) {
    let batches: Vec<&WriteBatch> = group.iter().map(|(b, _)| b).collect();
    let result = batch::commit_group(&mut writer.conn, &mut writer.caches, &batches);
    match result {
        Ok(outcomes) => {
            for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                // The caller may have given up waiting; its batch is committed anyway.
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, batches = group.len(), "SQLite group commit failed");
            for (_, reply) in group {
                let _ = reply.send(Err(duplicate(&e)));
            }
        }
    }
}
