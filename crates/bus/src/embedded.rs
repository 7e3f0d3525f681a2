//! The embedded bus: in-process, bounded, and durable across `kill -9`.
//!
//! Published messages of every topic are appended to one SQLite file (WAL mode) by one
//! writer thread that group-commits whatever is queued (`vigia_groupcommit`), so one
//! fsync serves many publishers. Committed messages are also kept in an in-memory FIFO
//! per topic that receivers pop from, with the publisher's in-process value when the
//! memory budget allows; payloads beyond the budget are read back from the file. An ack
//! deletes the row (eventually); whatever is still in the file at open is delivered
//! again.

mod file_lock;
mod log;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{oneshot, Notify};
use vigia_groupcommit::{Options as WriterOptions, Writer};

use self::file_lock::FileLock;
use self::writer::{Job, LogWriter, Publish};
use crate::drain::{reserve, DrainMeter};
use crate::queue::{Budget, Entry, Queue};
use crate::{
    Bus, BusError, Capacity, Delivery, DeliveryToken, Durability, Message, Topic, TOPIC_COUNT,
};

/// Settings of an [`EmbeddedBus`]; [`EmbeddedBusOptions::new`] fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedBusOptions {
    /// The SQLite file holding the log, e.g. `<data-dir>/bus.sqlite3`. Its directory is
    /// created if missing; a `<file>.lock` beside it keeps a second process out.
    pub path: PathBuf,
    /// Whether a publish waits for an fsync ([`Durability::Full`]) or only for the OS.
    pub durability: Durability,
    /// Per-topic lag beyond which `publish` answers `Full`.
    pub capacity: Capacity,
    /// Bytes of waiting messages (payloads and in-process values) kept in memory, all
    /// topics together; the rest are read back from the file.
    pub memory_budget_bytes: usize,
    /// The most jobs (publishes, acks, rejections) the writer commits in one transaction.
    pub max_commit_batches: usize,
}

impl EmbeddedBusOptions {
    /// Default memory budget for waiting messages: 32 MiB.
    pub const DEFAULT_MEMORY_BUDGET_BYTES: usize = 32 * 1024 * 1024;
    /// Default group-commit cap.
    pub const DEFAULT_MAX_COMMIT_BATCHES: usize = 4096;

    /// Options for a bus stored at `path`, with every other setting at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            capacity: Capacity::default(),
            memory_budget_bytes: Self::DEFAULT_MEMORY_BUDGET_BYTES,
            max_commit_batches: Self::DEFAULT_MAX_COMMIT_BATCHES,
        }
    }
}

/// What the bus handle, its writer and its payload reads share about one topic.
struct TopicShared {
    queue: Mutex<Queue>,
    /// Woken whenever messages become receivable or the bus closes.
    ready: Notify,
    /// Weight published (or being published) and not yet acked or rejected.
    lag: AtomicU64,
    /// Publishes admitted and not yet committed or failed; `receive` only reports
    /// `Closed` once this is zero, so nothing published before `close` is stranded.
    in_writer: AtomicU64,
    drain: Mutex<DrainMeter>,
    capacity: u64,
}

/// State shared by the bus handle, its writer thread and its payload reads.
pub(crate) struct Shared {
    topics: [TopicShared; TOPIC_COUNT],
    closed: AtomicBool,
    /// Why the last commit failed, until one succeeds (reported by `ping`).
    health: Mutex<Option<String>>,
}

impl Shared {
    fn topic(&self, topic: Topic) -> &TopicShared {
        &self.topics[topic.index()]
    }
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
    /// Tells this handle's delivery tokens from any other bus's.
    owner: u64,
    /// Declared before the reader and the lock: dropped (closed, drained, joined) first.
    writer: Writer<LogWriter>,
    reader: Arc<Mutex<Connection>>,
    /// Declared last: released only after the writer and the reader are done.
    _lock: FileLock,
}

impl EmbeddedBus {
    /// Opens (or creates, or migrates) the bus at `options.path` and queues every message
    /// still in it for redelivery: this is the crash-recovery path.
    ///
    /// This blocks on file I/O (reading back what was left in the log): call it at
    /// start-up or from `spawn_blocking`, not from an async task.
    pub fn open(options: EmbeddedBusOptions) -> Result<EmbeddedBus, BusError> {
        if let Some(topic) = Topic::ALL
            .into_iter()
            .find(|t| options.capacity.of(*t) == 0)
        {
            return Err(BusError::Unavailable(format!(
                "invalid bus options: the capacity of topic `{topic}` must be at least 1"
            )));
        }
        let path = options.path.as_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| log::unavailable(&format!("creating {}", dir.display()), e))?;
        }
        let file_lock = FileLock::acquire(&lock_path(path))?;
        let conn = log::open_writer(path, options.durability)
            .map_err(|e| log::unavailable(&format!("opening {}", path.display()), e))?;
        let budget = Arc::new(Budget::new(options.memory_budget_bytes));
        let mut queues: [Queue; TOPIC_COUNT] =
            std::array::from_fn(|_| Queue::new(Arc::clone(&budget), false));
        let recovered = log::recover(&conn, &mut queues)
            .map_err(|e| log::unavailable(&format!("recovering {}", path.display()), e))?;
        let reader = log::open_reader(path)
            .map_err(|e| log::unavailable(&format!("opening {}", path.display()), e))?;
        for topic in Topic::ALL {
            let messages = recovered.messages[topic.index()];
            if messages > 0 {
                tracing::info!(
                    path = %path.display(),
                    %topic,
                    messages,
                    weight = recovered.weight[topic.index()],
                    "bus: redelivering messages left unacked by the previous run"
                );
            }
        }
        if recovered.unknown > 0 {
            tracing::warn!(
                path = %path.display(),
                messages = recovered.unknown,
                "bus: leaving messages of topics this build does not know in the log"
            );
        }

        let now = Instant::now();
        let mut queues = queues.into_iter();
        let topics = Topic::ALL.map(|topic| TopicShared {
            queue: Mutex::new(queues.next().expect("one queue per topic")),
            ready: Notify::new(),
            lag: AtomicU64::new(recovered.weight[topic.index()]),
            in_writer: AtomicU64::new(0),
            drain: Mutex::new(DrainMeter::new(now)),
            capacity: options.capacity.of(topic),
        });
        let shared = Arc::new(Shared {
            topics,
            closed: AtomicBool::new(false),
            health: Mutex::new(None),
        });
        let max_group = options.max_commit_batches.max(1);
        let writer = Writer::spawn(
            LogWriter::new(conn, Arc::clone(&shared), recovered.next_id),
            WriterOptions {
                name: "vigia-bus-writer".into(),
                // Room for one group being committed and the next one filling up.
                queue: max_group.saturating_mul(2),
                max_group_weight: max_group,
            },
        )
        .map_err(|e| log::unavailable("starting the bus writer thread", e))?;

        Ok(EmbeddedBus {
            options,
            shared,
            owner: crate::message::next_owner(),
            writer,
            reader: Arc::new(Mutex::new(reader)),
            _lock: file_lock,
        })
    }

    /// The options this bus was opened with.
    pub fn options(&self) -> &EmbeddedBusOptions {
        &self.options
    }

    async fn submit(&self, job: Job) -> Result<(), BusError> {
        self.writer
            .submit(job)
            .await
            .map_err(|_| BusError::Unavailable("the bus writer thread has stopped".into()))
    }

    /// Turns taken entries into deliveries, reading from the file the payloads that did
    /// not fit in memory.
    async fn deliver(&self, topic: Topic, taken: Vec<Entry>) -> Result<Vec<Delivery>, BusError> {
        let taken = if taken.iter().any(|e| e.payload.is_none()) {
            // If this future is dropped mid-read, the deliveries go back to the queue
            // instead of waiting in flight for a restart.
            let guard = RequeueOnDrop {
                topic: self.shared.topic(topic),
                owner: self.owner,
                seqs: taken.iter().map(|e| e.seq).collect(),
            };
            let loaded = load_payloads(Arc::clone(&self.reader), taken).await?;
            guard.disarm();
            loaded
        } else {
            taken
        };
        let mut deliveries = Vec::with_capacity(taken.len());
        for entry in taken {
            let Some(payload) = entry.payload else {
                // Only a damaged file loses a row still in flight: nothing to deliver
                // nor to move aside.
                tracing::error!(%topic, id = entry.seq, "bus: message missing from the log");
                let (_, weight) =
                    lock(&self.shared.topic(topic).queue).settle([entry.seq], self.owner);
                self.shared
                    .topic(topic)
                    .lag
                    .fetch_sub(weight, Ordering::SeqCst);
                continue;
            };
            deliveries.push(Delivery::new(
                DeliveryToken::seq(self.owner, topic, entry.seq),
                payload,
                u32::try_from(entry.weight).unwrap_or(u32::MAX),
                entry.redelivered,
                entry.local,
            ));
        }
        Ok(deliveries)
    }

    /// Settles this bus's tokens for good, per topic; returns the settled ids.
    fn settle(&self, tokens: Vec<DeliveryToken>) -> Vec<u64> {
        let mut per_topic: [Vec<u64>; TOPIC_COUNT] = Default::default();
        for token in tokens {
            if let Some(seq) = token.seq_of(self.owner) {
                per_topic[token.topic().index()].push(seq);
            }
        }
        let mut settled = Vec::new();
        for (topic, seqs) in Topic::ALL.into_iter().zip(per_topic) {
            if seqs.is_empty() {
                continue;
            }
            let state = self.shared.topic(topic);
            let (ids, weight) = lock(&state.queue).settle(seqs, self.owner);
            if !ids.is_empty() {
                state.lag.fetch_sub(weight, Ordering::SeqCst);
                lock(&state.drain).record(weight, Instant::now());
                settled.extend(ids);
            }
        }
        settled
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
            entry.payload = log::read_payload(&conn, entry.seq)
                .map_err(|e| log::unavailable("reading a payload back from the bus log", e))?
                .map(Into::into);
        }
        Ok(taken)
    })
    .await
    .map_err(|e| log::unavailable("reading payloads back", e))?
}

/// Hands deliveries back to the queue unless disarmed.
struct RequeueOnDrop<'a> {
    topic: &'a TopicShared,
    owner: u64,
    seqs: Vec<u64>,
}

impl RequeueOnDrop<'_> {
    fn disarm(mut self) {
        self.seqs.clear();
    }
}

impl Drop for RequeueOnDrop<'_> {
    fn drop(&mut self) {
        if self.seqs.is_empty() {
            return;
        }
        lock(&self.topic.queue).requeue(self.seqs.drain(..), self.owner);
        self.topic.ready.notify_waiters();
    }
}

/// Undoes a publish's bookkeeping if it stops before its job reaches the writer
/// (closed bus, full bus, cancelled future); once handed over, the writer owns it.
struct Admission<'a> {
    topic: &'a TopicShared,
    reserved: u64,
    handed_over: bool,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        self.topic.lag.fetch_sub(self.reserved, Ordering::SeqCst);
        self.topic.in_writer.fetch_sub(1, Ordering::SeqCst);
        self.topic.ready.notify_waiters();
    }
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let state = self.shared.topic(topic);
        // Counted before the closed check, so a receiver that sees `closed` and a zero
        // count knows no publish can still land.
        state.in_writer.fetch_add(1, Ordering::SeqCst);
        let mut admission = Admission {
            topic: state,
            reserved: 0,
            handed_over: false,
        };
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(BusError::Closed);
        }
        let weight = u64::from(message.weight);
        reserve(&state.lag, weight, state.capacity, &state.drain)?;
        admission.reserved = weight;
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Publish(Publish {
            topic,
            payload: message.payload,
            weight,
            local: message.local,
            reply,
        }))
        .await?;
        admission.handed_over = true;
        answer.await.map_err(|_| {
            BusError::Unavailable("the bus writer thread stopped before committing".into())
        })?
    }

    async fn receive(&self, topic: Topic, max_weight: usize) -> Result<Vec<Delivery>, BusError> {
        let state = self.shared.topic(topic);
        loop {
            let notified = state.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so a wake-up between the look and the wait
            // is not lost.
            notified.as_mut().enable();
            let taken = lock(&state.queue).take(max_weight, self.owner);
            if !taken.is_empty() {
                let deliveries = self.deliver(topic, taken).await?;
                if deliveries.is_empty() {
                    continue; // every one of them was missing from the log
                }
                return Ok(deliveries);
            }
            if self.shared.closed.load(Ordering::SeqCst)
                && state.in_writer.load(Ordering::SeqCst) == 0
            {
                return Err(BusError::Closed);
            }
            notified.await;
        }
    }

    async fn ack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        let settled = self.settle(tokens);
        if settled.is_empty() {
            return Ok(());
        }
        self.submit(Job::Ack(settled)).await
    }

    async fn nack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        let mut per_topic: [Vec<u64>; TOPIC_COUNT] = Default::default();
        for token in tokens {
            if let Some(seq) = token.seq_of(self.owner) {
                per_topic[token.topic().index()].push(seq);
            }
        }
        for (topic, seqs) in Topic::ALL.into_iter().zip(per_topic) {
            let state = self.shared.topic(topic);
            if !seqs.is_empty() && lock(&state.queue).requeue(seqs, self.owner) > 0 {
                state.ready.notify_waiters();
            }
        }
        Ok(())
    }

    async fn reject(&self, token: DeliveryToken, reason: String) -> Result<(), BusError> {
        let topic = token.topic();
        let Some(&id) = self.settle(vec![token]).first() else {
            return Ok(());
        };
        tracing::error!(%topic, id, %reason, "bus: moving a message to dead_letters");
        self.submit(Job::Reject { id, reason }).await
    }

    async fn lag(&self, topic: Topic) -> Result<u64, BusError> {
        Ok(self.shared.topic(topic).lag.load(Ordering::SeqCst))
    }

    async fn ping(&self) -> Result<(), BusError> {
        if let Some(cause) = lock(&self.shared.health).clone() {
            return Err(BusError::Unavailable(cause));
        }
        if !self.writer.is_running() {
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
        for topic in &self.shared.topics {
            topic.ready.notify_waiters();
        }
    }
}

impl Drop for EmbeddedBus {
    fn drop(&mut self) {
        // Then the fields drop in order: the writer writes pending acks and exits before
        // the reader and the file lock go.
        self.close();
    }
}
