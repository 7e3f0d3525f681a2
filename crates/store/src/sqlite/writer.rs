//! The writer thread: owns the only read-write connection and runs jobs one at a
//! time, folding queued `write_batch` calls into one transaction (group commit).

use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use vigia_core::Sensor;

use super::batch::{self, Caches};
use super::error::duplicate;
use crate::{StoreResult, WriteBatch, WriteOutcome};

/// Work sent to the writer thread.
pub(crate) enum Job {
    /// A batch eligible for group commit.
    Write(WriteBatch, oneshot::Sender<StoreResult<WriteOutcome>>),
    /// Any other write, run alone; the closure replies on its own channel.
    Run(Box<dyn FnOnce(&mut Writer) + Send>),
    /// Finish what is queued, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

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

/// Starts the writer thread on `conn`. Dropping every sender makes it finish the
/// queue and exit.
pub(crate) fn spawn(
    conn: Connection,
    jobs: mpsc::Receiver<Job>,
    max_group_readings: usize,
) -> std::io::Result<JoinHandle<()>> {
    let writer = Writer {
        conn,
        caches: Caches::default(),
    };
    std::thread::Builder::new()
        .name("vigia-sqlite-writer".into())
        .spawn(move || run(writer, jobs, max_group_readings))
}

fn run(mut writer: Writer, mut jobs: mpsc::Receiver<Job>, max_group_readings: usize) {
    let mut closers = Vec::new();
    // A non-write job met while gathering a group waits here, keeping arrival order.
    let mut held: Option<Job> = None;
    loop {
        let job = match held.take() {
            Some(job) => job,
            None => match jobs.blocking_recv() {
                Some(job) => job,
                None => break,
            },
        };
        match job {
            Job::Write(batch, reply) => {
                let mut group = vec![(batch, reply)];
                let mut readings = group[0].0.readings.len();
                while readings < max_group_readings {
                    match jobs.try_recv() {
                        Ok(Job::Write(batch, reply)) => {
                            readings += batch.readings.len();
                            group.push((batch, reply));
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                commit(&mut writer, group);
            }
            Job::Run(task) => task(&mut writer),
            Job::Close(done) => {
                // Refuse new jobs but keep draining the ones already queued.
                jobs.close();
                closers.push(done);
            }
        }
    }
    drop(writer);
    for done in closers {
        let _ = done.send(());
    }
    tracing::debug!("SQLite writer stopped");
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
