//! The embedded bus: in-process, bounded, and durable across `kill -9`.
//!
//! Published batches are appended to a SQLite file (WAL mode) by one writer thread that
//! group-commits whatever is queued, so one fsync serves many publishers. Committed
//! messages are also kept in an in-memory FIFO that receivers pop from; payloads beyond
//! the memory budget are read back from the file. An ack deletes the row (eventually);
//! whatever is still in the file at open is delivered again.

mod drain;
mod file_lock;
mod log;
mod queue;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{oneshot, Notify, Semaphore};
use vigia_core::IngestBatch;

use self::drain::DrainMeter;
use self::file_lock::FileLock;
use self::queue::{Entry, Queue};
use self::writer::{Job, Publish, Writer};
use crate::{Bus, BusError, Delivery, DeliveryId, Durability};

/// Settings of an [`EmbeddedBus`]; [`EmbeddedBusOptions::new`] fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedBusOptions {
    /// The SQLite file holding the log, e.g. `<data-dir>/bus.sqlite3`. Its directory is
    /// created if missing; a `<file>.lock` beside it keeps a second process out.
    pub path: PathBuf,
    /// Whether a publish waits for an fsync ([`Durability::Full`]) or only for the OS.
    pub durability: Durability,
    /// Readings published and not yet acked beyond which `publish` answers `Full`.
    pub capacity_readings: u64,
    /// Bytes of waiting payloads kept in memory; the rest are read back from the file.
    pub memory_budget_bytes: usize,
    /// The most jobs (publishes and acks) the writer commits in one transaction.
    pub max_commit_batches: usize,
}

impl EmbeddedBusOptions {
    /// Default capacity: one million readings waiting.
    pub const DEFAULT_CAPACITY_READINGS: u64 = 1_000_000;
    /// Default memory budget for waiting payloads: 32 MiB.
    pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 32 * 1024 * 1024;
    /// Default group-commit cap.
    pub const DEFAULT_MAX_COMMIT_BATCHES: usize = 4096;

    /// Options for a bus stored at `path`, with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            capacity_readings: Self::DEFAULT_CAPACITY_READINGS,
            memory_budget_bytes: Self::DEFAULT_MEMORY_BUDGET_BYTES,
            max_commit_batches: Self::DEFAULT_MAX_COMMIT_BATCHES,
        }
    }
}

/// State shared by the bus handle, its writer thread and its payload reads.
struct Shared {
    queue: Mutex<Queue>,
    /// Woken whenever messages become receivable or the bus closes.
    ready: Notify,
    /// Readings published (or being published) and not yet acked.
    depth: AtomicU64,
    closed: AtomicBool,
    /// Publishes admitted and not yet committed or failed; `receive` only reports
    /// `Closed` once this is zero, so nothing published before `close` is stranded.
    in_writer: AtomicU64,
    /// Why the last commit failed, until one succeeds (reported by `ping`).
    health: Mutex<Option<String>>,
    drain: Mutex<DrainMeter>,
}

/// Locks a mutex even if a panicking thread poisoned it: every structure guarded here
/// is updated in steps that leave it consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The embedded [`Bus`] backend. See the module documentation for how it works.
///
/// Dropping it waits for the writer thread to write pending acks and exit, which takes
/// at most one commit.
pub struct EmbeddedBus {
    options: EmbeddedBusOptions,
    shared: Arc<Shared>,
    /// `None` only while dropping, so the writer sees the channel close.
    jobs: Option<mpsc::Sender<Job>>,
    permits: Arc<Semaphore>,
    reader: Arc<Mutex<Connection>>,
    writer: Option<JoinHandle<()>>,
    /// Declared last: released only after the writer and the reader are done.
    _lock: FileLock,
}

impl EmbeddedBus {
    /// Opens (or creates) the bus at `options.path` and queues every message still in it
    /// for redelivery: this is the crash-recovery path.
    ///
    /// This blocks on file I/O (reading back what was left in the log): call it at
    /// start-up or from `spawn_blocking`, not from an async task.
    pub fn open(options: EmbeddedBusOptions) -> Result<EmbeddedBus, BusError> {
        if options.capacity_readings == 0 {
            return Err(BusError::Unavailable(
                "invalid bus options: capacity_readings must be at least 1".into(),
            ));
        }
        let path = options.path.as_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| log::unavailable(&format!("creating {}", dir.display()), e))?;
        }
        let file_lock = FileLock::acquire(&lock_path(path))?;
        let conn = log::open_writer(path, options.durability)
            .map_err(|e| log::unavailable(&format!("opening {}", path.display()), e))?;
        let mut queue = Queue::new(options.memory_budget_bytes);
        let recovered = log::recover(&conn, &mut queue)
            .map_err(|e| log::unavailable(&format!("recovering {}", path.display()), e))?;
        let reader = log::open_reader(path)
            .map_err(|e| log::unavailable(&format!("opening {}", path.display()), e))?;
        if recovered.messages > 0 {
            tracing::info!(
                path = %path.display(),
                messages = recovered.messages,
                readings = recovered.readings,
                "bus: redelivering messages left unacked by the previous run"
            );
        }

        let shared = Arc::new(Shared {
            queue: Mutex::new(queue),
            ready: Notify::new(),
            depth: AtomicU64::new(recovered.readings),
            closed: AtomicBool::new(false),
            in_writer: AtomicU64::new(0),
            health: Mutex::new(None),
            drain: Mutex::new(DrainMeter::new(Instant::now())),
        });
        let max_group = options.max_commit_batches.max(1);
        // Room for one group being committed and the next one filling up.
        let permits = Arc::new(Semaphore::new(max_group.saturating_mul(2)));
        let (jobs, job_rx) = mpsc::channel();
        let writer = Writer::new(
            conn,
            job_rx,
            Arc::clone(&shared),
            Arc::clone(&permits),
            recovered.next_id,
            max_group,
        );
        let writer = std::thread::Builder::new()
            .name("vigia-bus-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| log::unavailable("starting the bus writer thread", e))?;

        Ok(EmbeddedBus {
            options,
            shared,
            jobs: Some(jobs),
            permits,
            reader: Arc::new(Mutex::new(reader)),
            writer: Some(writer),
            _lock: file_lock,
        })
    }

    /// The options this bus was opened with.
    pub fn options(&self) -> &EmbeddedBusOptions {
        &self.options
    }

    fn send(&self, job: Job) -> Result<(), BusError> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| BusError::Unavailable("the bus writer thread has stopped".into()))
    }

    /// Counts `readings` into the depth, or refuses them when the bus is full. A batch
    /// larger than the whole capacity is still let into an empty bus, so it can never
    /// be refused forever.
    fn reserve(&self, readings: u64) -> Result<(), BusError> {
        let capacity = self.options.capacity_readings;
        self.shared
            .depth
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |depth| {
                let fits = depth
                    .checked_add(readings)
                    .is_some_and(|after| after <= capacity);
                (depth == 0 || fits).then(|| depth.saturating_add(readings))
            })
            .map(drop)
            .map_err(|pending| {
                let excess = pending.saturating_add(readings) - capacity;
                BusError::Full {
                    pending,
                    capacity,
                    retry_after: lock(&self.shared.drain).retry_after(excess, Instant::now()),
                }
            })
    }

    /// Settles an undeliverable message and moves it aside in the log.
    fn quarantine(&self, id: u64, reason: String) {
        tracing::error!(id, %reason, "bus: moving an undeliverable message to dead_letters");
        let (_, readings) = lock(&self.shared.queue).settle([id]);
        self.shared.depth.fetch_sub(readings, Ordering::SeqCst);
        if let Err(error) = self.send(Job::Quarantine { id, reason }) {
            tracing::warn!(id, %error, "bus: could not record a dead letter");
        }
    }

    /// Turns taken entries into deliveries, reading from the file the payloads that did
    /// not fit in memory. Undecodable payloads are quarantined, not delivered.
    async fn deliver(&self, taken: Vec<Entry>) -> Result<Vec<Delivery>, BusError> {
        let taken = if taken.iter().any(|e| e.payload.is_none()) {
            // If this future is dropped mid-read, the deliveries go back to the queue
            // instead of waiting in flight for a restart.
            let guard = RequeueOnDrop {
                shared: &self.shared,
                ids: taken.iter().map(|e| e.id).collect(),
            };
            let loaded = load_payloads(Arc::clone(&self.reader), taken).await;
            match loaded {
                Ok(loaded) => {
                    guard.disarm();
                    loaded
                }
                Err(error) => return Err(error),
            }
        } else {
            taken
        };
        let mut deliveries = Vec::with_capacity(taken.len());
        for entry in taken {
            match entry.payload.as_deref().map(IngestBatch::decode) {
                Some(Ok(batch)) => deliveries.push(Delivery {
                    id: DeliveryId(entry.id),
                    batch,
                }),
                Some(Err(reason)) => {
                    self.quarantine(entry.id, format!("undecodable payload: {reason}"));
                }
                None => self.quarantine(entry.id, "payload missing from the log".into()),
            }
        }
        Ok(deliveries)
    }
}

/// The lock file beside the log: `bus.sqlite3` → `bus.sqlite3.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Reads the missing payloads on a blocking thread; entries come back in their order.
async fn load_payloads(
    reader: Arc<Mutex<Connection>>,
    mut taken: Vec<Entry>,
) -> Result<Vec<Entry>, BusError> {
    tokio::task::spawn_blocking(move || {
        let conn = lock(&reader);
        for entry in taken.iter_mut().filter(|e| e.payload.is_none()) {
            entry.payload = log::read_payload(&conn, entry.id)
                .map_err(|e| log::unavailable("reading a payload back from the bus log", e))?;
        }
        Ok(taken)
    })
    .await
    .map_err(|e| log::unavailable("reading payloads back", e))?
}

/// Hands deliveries back to the queue unless disarmed.
struct RequeueOnDrop<'a> {
    shared: &'a Shared,
    ids: Vec<u64>,
}

impl RequeueOnDrop<'_> {
    fn disarm(mut self) {
        self.ids.clear();
    }
}

impl Drop for RequeueOnDrop<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        lock(&self.shared.queue).requeue(self.ids.drain(..));
        self.shared.ready.notify_waiters();
    }
}

/// Undoes a publish's bookkeeping if it stops before its job reaches the writer
/// (closed bus, full bus, cancelled future); once handed over, the writer owns it.
struct Admission<'a> {
    shared: &'a Shared,
    reserved: u64,
    handed_over: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        self.shared.depth.fetch_sub(self.reserved, Ordering::SeqCst);
        self.shared.in_writer.fetch_sub(1, Ordering::SeqCst);
        self.shared.ready.notify_waiters();
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, batch: IngestBatch) -> Result<(), BusError> {
        // Counted before the closed check, so a receiver that sees `closed` and a zero
        // count knows no publish can still land.
        self.shared.in_writer.fetch_add(1, Ordering::SeqCst);
        let mut admission = Admission {
            shared: &self.shared,
            reserved: 0,
            handed_over: false,
        };
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(BusError::Closed);
        }
        let readings = batch.readings.len() as u64;
        self.reserve(readings)?;
        admission.reserved = readings;
        let payload = batch.encode();
        let permit = self.permits.acquire().await.map_err(|_| BusError::Closed)?;
        let (reply, answer) = oneshot::channel();
        self.send(Job::Publish(Publish {
            payload,
            readings,
            reply,
        }))?;
        permit.forget();
        admission.handed_over = true;
        answer.await.map_err(|_| {
            BusError::Unavailable("the bus writer thread stopped before committing".into())
        })?
    }

    async fn receive(&self, max_readings: usize) -> Result<Vec<Delivery>, BusError> {
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so a wake-up between the look and the wait
            // is not lost.
            notified.as_mut().enable();
            let taken = lock(&self.shared.queue).take(max_readings);
            if !taken.is_empty() {
                let deliveries = self.deliver(taken).await?;
                if deliveries.is_empty() {
                    continue; // all of them were quarantined
                }
                return Ok(deliveries);
            }
            if self.shared.closed.load(Ordering::SeqCst)
                && self.shared.in_writer.load(Ordering::SeqCst) == 0
            {
                return Err(BusError::Closed);
            }
            notified.await;
        }
    }

    async fn ack(&self, ids: &[DeliveryId]) -> Result<(), BusError> {
        let (settled, readings) = lock(&self.shared.queue).settle(ids.iter().map(|d| d.0));
        if settled.is_empty() {
            return Ok(());
        }
        self.shared.depth.fetch_sub(readings, Ordering::SeqCst);
        lock(&self.shared.drain).record(readings, Instant::now());
        self.send(Job::Ack(settled))
    }

    async fn nack(&self, ids: &[DeliveryId]) -> Result<(), BusError> {
        let requeued = lock(&self.shared.queue).requeue(ids.iter().map(|d| d.0));
        if requeued > 0 {
            self.shared.ready.notify_waiters();
        }
        Ok(())
    }

    fn depth(&self) -> u64 {
        self.shared.depth.load(Ordering::SeqCst)
    }

    async fn ping(&self) -> Result<(), BusError> {
        if let Some(cause) = lock(&self.shared.health).clone() {
            return Err(BusError::Unavailable(cause));
        }
        if self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(BusError::Unavailable(
                "the bus writer thread has stopped".into(),
            ));
        }
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            lock(&reader)
                .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                .map_err(|e| log::unavailable("bus log ping", e))
        })
        .await
        .map_err(|e| log::unavailable("bus log ping", e))??;
        Ok(())
    }

    fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.ready.notify_waiters();
    }
}

impl Drop for EmbeddedBus {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        // Closing the channel tells the writer to write pending acks and exit.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("bus writer thread panicked");
            }
        }
    }
}
