//! The NATS JetStream bus (`nats://…`): processes share the topics through a NATS server
//! or cluster with JetStream enabled, each topic a WorkQueue stream read by one durable
//! pull consumer (the group), each bus handle one puller of it.
//!
//! # URLs
//!
//! `nats://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]…][/][?PARAMS]`: one or more servers of
//! one NATS cluster (port 4222 unless given; the client fails over between them).
//! IPv6 addresses go in brackets. TLS (`tls://`) is not supported by this bus.
//!
//! Query parameters (all optional):
//!
//! | parameter | default | meaning |
//! | --- | --- | --- |
//! | `stream_prefix` | `vigia` | streams are `PREFIX_readings`, `PREFIX_events` and `PREFIX_dead`; buses with different prefixes on one server are independent |
//! | `group` | `vigia` | the durable pull consumer of every topic's stream |
//! | `timeout_ms` | `2000` | connect timeout, and the longest any request (publish acknowledgement included) may take before the operation answers `Unavailable` |
//! | `replicas` | `1` | servers each stream is replicated on, when the bus creates it (1 to 5) |
//! | `max_bytes` | none | bytes each topic's stream may hold; past it publishes answer `Full` |
//! | `max_ack_pending` | `10000` | deliveries the group may hold unacked at once, all its handles together |
//!
//! How long an unacked delivery waits before it is handed out again is
//! [`OpenContext::claim_idle`] (`bus.claim_idle`), the consumer's `ack_wait`.
//!
//! # Streams and subjects
//!
//! Topic `T` under prefix `P` is the stream `P_T`: subjects `P.T.<weight>`, retention
//! WorkQueue (an acked message leaves the stream), file storage, `discard: new` with
//! `max_msgs` = the topic's capacity (and `max_bytes` from the URL), so a stream at its
//! limits refuses a publish (`Full`) and never drops a message it accepted. Its one
//! consumer is the durable pull consumer `group` (explicit acks, `ack_wait` =
//! `claim_idle`, `max_ack_pending` from the URL, unlimited redeliveries). Dead letters go
//! to the stream `P_dead` (subjects `P.dead.T`, limits retention, the newest
//! [`DEAD_LETTERS_KEPT`] per topic), with the reason in the `Vigia-Reason` header. The
//! bus creates what is missing at open and brings `max_msgs`, `max_bytes`, `ack_wait` and
//! `max_ack_pending` in line with its settings (the processes of one bus should share
//! them).
//!
//! The message's weight rides in its subject so that the server itself keeps the lag:
//! the stream holds exactly the messages not yet acked, and its per-subject counts give
//! their weight, for every process at once.
//!
//! # What a publish guarantees
//!
//! `publish` returns once JetStream answered the publish with its acknowledgement
//! (PubAck), i.e. once the stream's leader (and, with `replicas` above 1, a quorum of
//! its replicas) stored the message in its file store. What that survives is JetStream's
//! own fsync policy: the file store writes each message to the operating system before
//! it acknowledges (so it survives `kill -9` of Vigía and of `nats-server`), and fsyncs
//! its files every `sync_interval` of the server configuration (default two minutes):
//! power loss or an OS crash of a single server can lose the publishes since the last
//! sync. NATS 2.10 and later take `sync_interval: always` to fsync before every
//! acknowledgement, or run `replicas=3` so that a quorum of machines holds each message.
//!
//! # Capacity, acks and redelivery
//!
//! - Lag is the weight of the messages in the stream. A handle keeps an estimate (the
//!   last server reading, plus what it published since, plus its publishes in flight);
//!   it reads the exact lag from the server when the estimate is older than
//!   [`LAG_FRESH`] or the publish would pass the capacity, and refuses with `Full` only
//!   on an exact reading. So the bound holds across processes to within what others
//!   publish in [`LAG_FRESH`]; the stream's `max_msgs` (= capacity, as every message
//!   weighs at least one reading except empty batches) is a hard bound the server
//!   enforces regardless.
//! - `ack` (after the store commit) acks each delivery and waits for the server's
//!   confirmation (double ack), so a lag read right after it is exact.
//! - `nack` naks the delivery: it is redelivered at once, to any handle, marked
//!   redelivered; the lag is unchanged.
//! - `reject` publishes the message to the dead letters, then acks it.
//! - A delivery not acked within `ack_wait` is handed out again (its consumer is
//!   presumed dead); a handle that receives again what it holds itself keeps one copy
//!   and never hands it out twice. A handle held past `ack_wait` (a store commit slower
//!   than that) may be handed to another consumer as well, which at-least-once allows.
//!   A dropped handle acks nothing more, like a process exit: what it held comes back
//!   after `ack_wait`.
//!
//! # Receiving and closing
//!
//! `receive` first takes what is waiting (a `no_wait` pull), otherwise waits for one
//! message with a pull request that expires after 200 ms, then takes what else waits.
//! It reads a few messages ahead (sized from the weights seen) and hands them out
//! within `max_weight`. After `close`, publishes answer `Closed` and `receive` drains
//! what the stream held when the handle first drained (its last sequence then is the
//! fence; later messages are naked back for the other consumers), then answers
//! `Closed`.
//!
//! The publisher's in-process value ([`crate::Local`]) does not travel through NATS:
//! consumers always decode the payload.
//!
//! # Failures
//!
//! The client reconnects on its own (every 100 ms at first, then every second, without
//! limit). While NATS is away every operation answers [`BusError::Unavailable`]: at
//! once when the client knows it is disconnected, otherwise within `timeout_ms`; when
//! NATS is back the same handle works again. A publish that timed out may still have
//! been stored (it is then delivered, at least once); one that answered `Ok` is stored.

mod url;

use std::collections::{HashMap, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, AckPolicy, Consumer, DeliverPolicy};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::{HeaderMap, ServerAddr, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

pub use self::url::{
    NatsConfig, DEFAULT_GROUP, DEFAULT_MAX_ACK_PENDING, DEFAULT_STREAM_PREFIX, DEFAULT_TIMEOUT,
};
use crate::drain::DrainMeter;
use crate::registry::{BusFactory, BusUrl, OpenContext};
use crate::volatile::DeadLetter;
use crate::{Bus, BusError, Capacity, Delivery, DeliveryToken, Message, Topic, TOPIC_COUNT};

/// How many dead letters the dead-letter stream keeps per topic (older ones go).
pub const DEAD_LETTERS_KEPT: i64 = 10_000;
/// How long a lag reading is trusted before a publish reads it again.
pub const LAG_FRESH: Duration = Duration::from_millis(100);
/// How long one blocking pull waits: a closed handle notices within this.
const BLOCK: Duration = Duration::from_millis(200);
/// Messages pulled at once before any weight has been seen.
const FIRST_READ: usize = 16;
/// The most messages pulled ahead at once.
const MAX_READ: usize = 256;
/// The shortest `ack_wait` (JetStream reads zero as its 30 s default).
const MIN_ACK_WAIT: Duration = Duration::from_millis(100);
/// The header carrying a dead letter's reason.
const REASON_HEADER: &str = "Vigia-Reason";
/// What acks a delivery (JetStream's ack protocol).
const ACK: &[u8] = b"+ACK";
/// What hands a delivery back for redelivery at once.
const NAK: &[u8] = b"-NAK";
/// The longest pause between reconnect attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every structure here is updated in steps that leave it consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `future` for at most `limit`; a failure or the timeout is `Unavailable`.
async fn bounded<T, E: Display>(
    what: &str,
    limit: Duration,
    future: impl Future<Output = Result<T, E>>,
) -> Result<T, BusError> {
    match tokio::time::timeout(limit, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(BusError::Unavailable(format!("nats {what}: {e}"))),
        Err(_) => Err(BusError::Unavailable(format!(
            "nats {what}: no answer within {limit:?}"
        ))),
    }
}

/// The JetStream API error inside a client error, if the server answered with one.
fn api_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a jetstream::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(api) = e.downcast_ref::<jetstream::Error>() {
            return Some(api);
        }
        current = e.source();
    }
    None
}

/// Whether a refused publish means the stream is at its limits (`discard: new`).
fn is_stream_full(error: &jetstream::Error) -> bool {
    let text = error.to_string();
    error.error_code() == ErrorCode::STREAM_STORE_FAILED
        && (text.contains("maximum messages") || text.contains("maximum bytes"))
        || error.error_code() == ErrorCode::INSUFFICIENT_RESOURCES
}

/// A message pulled and not handed out yet.
struct Entry {
    sequence: u64,
    payload: Bytes,
    weight: u32,
    redelivered: bool,
}

/// What this handle holds of a topic.
#[derive(Default)]
struct Held {
    /// Pulled (so pending on the consumer), not handed out yet.
    buffer: VecDeque<Entry>,
    /// Handed out and not settled: token sequence number → stream sequence.
    out: HashMap<u64, u64>,
    /// How to settle each message in `buffer` or `out`, by stream sequence: the latest
    /// delivery's ack subject (a message redelivered to its holder replaces the older one).
    ackers: HashMap<u64, Subject>,
}

/// The reading side of a topic, one reader at a time.
#[derive(Default)]
struct Reader {
    /// Mean weight of the messages pulled so far (sizes the read-ahead).
    mean_weight: Option<f64>,
    /// After close: the stream's last sequence when draining began.
    fence: Option<u64>,
    /// After close: everything up to the fence has been pulled.
    fence_reached: bool,
}

impl Reader {
    fn read_count(&self, max_weight: usize) -> usize {
        match self.mean_weight {
            None => max_weight.clamp(1, FIRST_READ),
            Some(mean) => {
                let count = (max_weight as f64 / mean.max(1.0)).ceil();
                (count as usize).clamp(1, MAX_READ)
            }
        }
    }

    fn observe(&mut self, weights: &[u32]) {
        if weights.is_empty() {
            return;
        }
        let mean = weights.iter().map(|w| f64::from(*w)).sum::<f64>() / weights.len() as f64;
        self.mean_weight = Some(match self.mean_weight {
            None => mean,
            Some(old) => 0.7 * old + 0.3 * mean,
        });
    }
}

/// The handle's estimate of a topic's lag, for admitting publishes without a round
/// trip each; see the module documentation.
struct Admission {
    /// The last exact reading from the server, and when it was taken.
    reading: u64,
    read_at: Option<Instant>,
    /// Weight this handle published (acknowledged) since that reading.
    since: u64,
    /// Weight of this handle's publishes admitted and not answered yet.
    in_flight: u64,
    /// Acked weight per second, estimated from successive readings (the retry hint).
    drain: DrainMeter,
}

impl Admission {
    fn estimate(&self) -> u64 {
        self.reading
            .saturating_add(self.since)
            .saturating_add(self.in_flight)
    }

    fn fresh(&self, now: Instant) -> bool {
        self.read_at
            .is_some_and(|at| now.saturating_duration_since(at) < LAG_FRESH)
    }

    /// Takes an exact reading: what left the stream since the last one counts as drained.
    fn record_reading(&mut self, reading: u64, now: Instant) {
        if self.read_at.is_some() {
            let before = self.reading.saturating_add(self.since);
            self.drain.record(before.saturating_sub(reading), now);
        }
        self.reading = reading;
        self.since = 0;
        self.read_at = Some(now);
    }
}

/// Whether a publish of `weight` fits a lag of `pending` within `capacity` (a message
/// heavier than the whole capacity still goes into an empty topic).
fn fits(pending: u64, weight: u64, capacity: u64) -> bool {
    pending == 0 || pending.saturating_add(weight) <= capacity
}

struct TopicState {
    topic: Topic,
    stream_name: String,
    /// `P.T.`: a message's subject is this and its weight.
    subject_prefix: String,
    /// `P.T.*`: every message of the topic.
    filter: String,
    /// `P.dead.T`.
    dead_subject: String,
    consumer: Consumer<pull::Config>,
    held: Mutex<Held>,
    reader: tokio::sync::Mutex<Reader>,
    admission: Mutex<Admission>,
    /// One exact lag reading at a time; waiters reuse it.
    refresh: tokio::sync::Mutex<()>,
}

impl TopicState {
    fn subject(&self, weight: u32) -> String {
        format!("{}{weight}", self.subject_prefix)
    }

    /// The weight a subject of this topic carries.
    fn weight_of(&self, subject: &str) -> Option<u32> {
        subject.strip_prefix(&self.subject_prefix)?.parse().ok()
    }
}

struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    /// Tells this handle's tokens from other handles'.
    owner: u64,
    next_seq: AtomicU64,
    capacity: Capacity,
    ack_wait: Duration,
    dead_stream: String,
    topics: [TopicState; TOPIC_COUNT],
    closed: AtomicBool,
    /// The handle was dropped: background pulls stop taking messages.
    dropped: AtomicBool,
}

/// The NATS JetStream [`Bus`]; see the module documentation.
pub struct NatsBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// The stream names of a prefix: one per topic, then the dead letters'.
pub fn stream_names(prefix: &str) -> Vec<String> {
    Topic::ALL
        .into_iter()
        .map(|t| format!("{prefix}_{}", t.name()))
        .chain(std::iter::once(format!("{prefix}_dead")))
        .collect()
}

impl NatsBus {
    /// Connects, creates or updates each topic's stream and consumer and the dead-letter
    /// stream, and returns the handle. Fails with `Unavailable` within about twice
    /// `config.timeout` when NATS does not answer or has no JetStream.
    pub async fn open(config: NatsConfig, context: &OpenContext) -> Result<NatsBus, BusError> {
        if let Some(topic) = Topic::ALL
            .into_iter()
            .find(|t| context.capacity.of(*t) == 0)
        {
            return Err(BusError::Unavailable(format!(
                "invalid bus options: the capacity of topic `{topic}` must be at least 1"
            )));
        }
        let servers = config
            .servers
            .iter()
            .map(|s| {
                format!("nats://{s}")
                    .parse::<ServerAddr>()
                    .map_err(|e| BusError::Unavailable(format!("invalid NATS server `{s}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(BusError::Unavailable(
                "invalid bus options: no NATS server to connect to".into(),
            ));
        }
        let timeout = config.timeout;
        let mut options = async_nats::ConnectOptions::new()
            .name("vigia-bus")
            .connection_timeout(timeout)
            .request_timeout(Some(timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                (Duration::from_millis(100) * attempts.max(1) as u32).min(MAX_RECONNECT_DELAY)
            });
        if let Some((user, password)) = &config.credentials {
            options = options.user_and_password(user.clone(), password.clone());
        }
        let addresses = config.servers.join(",");
        let client = bounded(
            &format!("connecting to {addresses}"),
            timeout * 2,
            options.connect(servers),
        )
        .await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(timeout)
            .backpressure_on_inflight(true)
            .build(client.clone());
        jetstream_info(&client, timeout).await?;

        let ack_wait = context.claim_idle.max(MIN_ACK_WAIT);
        let prefix = &config.stream_prefix;
        let dead_stream = format!("{prefix}_dead");
        ensure_stream(
            &js,
            stream::Config {
                name: dead_stream.clone(),
                subjects: vec![format!("{prefix}.dead.*")],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                discard: DiscardPolicy::Old,
                max_messages_per_subject: DEAD_LETTERS_KEPT,
                num_replicas: config.replicas,
                ..Default::default()
            },
            timeout,
        )
        .await?;
        let mut topics = Vec::with_capacity(TOPIC_COUNT);
        for topic in Topic::ALL {
            let name = topic.name();
            let stream_name = format!("{prefix}_{name}");
            let filter = format!("{prefix}.{name}.*");
            let capacity = i64::try_from(context.capacity.of(topic)).unwrap_or(i64::MAX);
            let stream = ensure_stream(
                &js,
                stream::Config {
                    name: stream_name.clone(),
                    subjects: vec![filter.clone()],
                    retention: RetentionPolicy::WorkQueue,
                    storage: StorageType::File,
                    discard: DiscardPolicy::New,
                    max_messages: capacity,
                    max_bytes: config.max_bytes.unwrap_or(-1),
                    num_replicas: config.replicas,
                    ..Default::default()
                },
                timeout,
            )
            .await?;
            let consumer = ensure_consumer(
                &stream,
                pull::Config {
                    durable_name: Some(config.group.clone()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait,
                    max_ack_pending: config.max_ack_pending,
                    max_deliver: -1,
                    deliver_policy: DeliverPolicy::All,
                    filter_subject: filter.clone(),
                    ..Default::default()
                },
                timeout,
            )
            .await?;
            let now = Instant::now();
            topics.push(TopicState {
                topic,
                stream_name,
                subject_prefix: format!("{prefix}.{name}."),
                filter,
                dead_subject: format!("{prefix}.dead.{name}"),
                consumer,
                held: Mutex::new(Held::default()),
                reader: tokio::sync::Mutex::new(Reader::default()),
                admission: Mutex::new(Admission {
                    reading: 0,
                    read_at: None,
                    since: 0,
                    in_flight: 0,
                    drain: DrainMeter::new(now),
                }),
                refresh: tokio::sync::Mutex::new(()),
            });
        }
        let Ok(topics) = <[TopicState; TOPIC_COUNT]>::try_from(topics) else {
            unreachable!("one state per topic");
        };
        tracing::info!(
            nats = %addresses,
            stream_prefix = %config.stream_prefix,
            group = %config.group,
            ack_wait_ms = ack_wait.as_millis() as u64,
            "bus: NATS JetStream ready; a publish returns once JetStream acknowledged it \
             (file storage: written to the OS, fsynced per the server's sync_interval)"
        );
        Ok(NatsBus {
            inner: Arc::new(Inner {
                config,
                client,
                js,
                owner: crate::message::next_owner(),
                next_seq: AtomicU64::new(1),
                capacity: context.capacity,
                ack_wait,
                dead_stream,
                topics,
                closed: AtomicBool::new(false),
                dropped: AtomicBool::new(false),
            }),
        })
    }

    /// The settings this handle was opened with.
    pub fn config(&self) -> &NatsConfig {
        &self.inner.config
    }

    /// The consumers' `ack_wait` (from `claim_idle`, at least 100 ms).
    pub fn ack_wait(&self) -> Duration {
        self.inner.ack_wait
    }

    /// Deletes the streams of `config`'s prefix (topics and dead letters), with what
    /// they hold: for tests and for retiring a bus. Returns how many existed.
    pub async fn delete_streams(config: &NatsConfig) -> Result<usize, BusError> {
        let bus = NatsBus::open(config.clone(), &OpenContext::new(std::env::temp_dir())).await?;
        let timeout = config.timeout;
        let mut deleted = 0;
        for name in stream_names(&config.stream_prefix) {
            bounded(
                &format!("deleting stream {name}"),
                timeout,
                bus.inner.js.delete_stream(&name),
            )
            .await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Up to `max` of `topic`'s most recent dead letters, oldest first.
    pub async fn dead_letters(
        &self,
        topic: Topic,
        max: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let inner = &self.inner;
        let t = inner.topic(topic);
        let timeout = inner.config.timeout;
        let stream = bounded(
            "opening the dead letters",
            timeout,
            inner.js.get_stream(&inner.dead_stream),
        )
        .await?;
        let state = stream.cached_info().state.clone();
        let mut letters = Vec::new();
        let mut sequence = state.last_sequence;
        // Dead letters of all topics share the stream: scan back a bounded window.
        let window = (max as u64).saturating_mul(TOPIC_COUNT as u64 * 4).max(16);
        while letters.len() < max && sequence >= state.first_sequence.max(1) {
            if state.last_sequence - sequence >= window {
                break;
            }
            match tokio::time::timeout(timeout, stream.get_raw_message(sequence)).await {
                Ok(Ok(raw)) if raw.subject.as_str() == t.dead_subject => {
                    let reason = raw
                        .headers
                        .get(REASON_HEADER)
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_default();
                    letters.push(DeadLetter {
                        topic,
                        payload: raw.payload,
                        reason,
                    });
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(BusError::Unavailable(format!(
                        "nats reading dead letters: no answer within {timeout:?}"
                    )))
                }
            }
            sequence -= 1;
        }
        letters.reverse();
        Ok(letters)
    }
}

/// Asks for the account's JetStream information: `Ok` when JetStream answers. The
/// answer is read loosely (as JSON with or without `error`) because its fields change
/// between server versions.
async fn jetstream_info(client: &async_nats::Client, timeout: Duration) -> Result<(), BusError> {
    let reply = bounded(
        "JetStream account info",
        timeout,
        client.request("$JS.API.INFO", Bytes::new()),
    )
    .await?;
    let answer: serde_json::Value = serde_json::from_slice(&reply.payload).map_err(|e| {
        BusError::Unavailable(format!(
            "nats JetStream account info: unreadable answer: {e}"
        ))
    })?;
    match answer.get("error") {
        None => Ok(()),
        Some(error) => Err(BusError::Unavailable(format!(
            "nats JetStream account info: {error} (is JetStream enabled: `nats-server -js`?)"
        ))),
    }
}

/// Creates the stream `wanted` describes, or brings an existing one's limits in line
/// with it. Refuses a stream of another retention (it cannot be changed in place).
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
    timeout: Duration,
) -> Result<stream::Stream, BusError> {
    let name = wanted.name.clone();
    match tokio::time::timeout(timeout, js.get_stream(&name)).await {
        Err(_) => Err(BusError::Unavailable(format!(
            "nats looking up stream {name}: no answer within {timeout:?}"
        ))),
        Ok(Ok(existing)) => {
            let current = existing.cached_info().config.clone();
            if current.retention != wanted.retention {
                return Err(BusError::Unavailable(format!(
                    "NATS stream {name} exists with retention {:?}, the bus needs {:?}: \
                     delete it or choose another `stream_prefix`",
                    current.retention, wanted.retention
                )));
            }
            let same = current.max_messages == wanted.max_messages
                && current.max_bytes == wanted.max_bytes
                && current.discard == wanted.discard
                && current.max_messages_per_subject == wanted.max_messages_per_subject
                && current.subjects == wanted.subjects;
            if same {
                return Ok(existing);
            }
            let updated = stream::Config {
                max_messages: wanted.max_messages,
                max_bytes: wanted.max_bytes,
                discard: wanted.discard,
                max_messages_per_subject: wanted.max_messages_per_subject,
                subjects: wanted.subjects,
                ..current
            };
            bounded(
                &format!("updating stream {name}"),
                timeout,
                js.update_stream(updated),
            )
            .await?;
            tracing::info!(stream = %name, "bus: updated the NATS stream's limits");
            bounded(
                &format!("looking up stream {name}"),
                timeout,
                js.get_stream(&name),
            )
            .await
        }
        Ok(Err(e)) => {
            let missing = matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(ref api)
                    if api.error_code() == ErrorCode::STREAM_NOT_FOUND
            );
            if !missing {
                return Err(BusError::Unavailable(format!(
                    "nats looking up stream {name}: {e}"
                )));
            }
            bounded(
                &format!("creating stream {name}"),
                timeout,
                js.create_stream(wanted),
            )
            .await
        }
    }
}

/// Creates the durable pull consumer `wanted` describes, or updates its `ack_wait`
/// and `max_ack_pending` (JetStream's create-or-update).
async fn ensure_consumer(
    stream: &stream::Stream,
    wanted: pull::Config,
    timeout: Duration,
) -> Result<Consumer<pull::Config>, BusError> {
    let name = wanted.durable_name.clone().unwrap_or_default();
    let what = format!(
        "creating consumer {name} of {}",
        stream.cached_info().config.name
    );
    bounded(&what, timeout, stream.create_consumer(wanted)).await
}

impl Inner {
    fn topic(&self, topic: Topic) -> &TopicState {
        &self.topics[topic.index()]
    }

    /// `Unavailable` at once when the client knows it has no connection.
    fn connected(&self) -> Result<(), BusError> {
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(BusError::Unavailable(format!(
                "nats: not connected to {} ({state:?}); reconnecting",
                self.config.servers.join(",")
            ))),
        }
    }

    /// The exact lag of `t`: the weight of the messages its stream holds.
    async fn exact_lag(&self, t: &TopicState) -> Result<u64, BusError> {
        self.connected()?;
        let timeout = self.config.timeout;
        let stream = self
            .js
            .get_stream_no_info(&t.stream_name)
            .await
            .map_err(|e| BusError::Unavailable(format!("nats stream {}: {e}", t.stream_name)))?;
        bounded("reading the lag", timeout, async {
            let mut subjects = stream.info_with_subjects(&t.filter).await?;
            let mut lag = 0u64;
            while let Some(item) = subjects.next().await {
                let (subject, count) = item?;
                let weight = t.weight_of(&subject).unwrap_or(0);
                lag = lag.saturating_add(u64::from(weight).saturating_mul(count as u64));
            }
            Ok::<u64, jetstream::stream::InfoError>(lag)
        })
        .await
    }

    /// Reads the exact lag (one reading at a time; a caller that waited for another's
    /// reading taken after it started waiting uses that one) and records it.
    async fn refresh(&self, t: &TopicState) -> Result<(), BusError> {
        let asked = Instant::now();
        let _one_at_a_time = t.refresh.lock().await;
        if lock(&t.admission).read_at.is_some_and(|at| at >= asked) {
            return Ok(());
        }
        let lag = self.exact_lag(t).await?;
        lock(&t.admission).record_reading(lag, Instant::now());
        Ok(())
    }

    /// Admits a publish of `weight` on `t` (counting it in flight) or refuses it with
    /// `Full` on an exact reading.
    async fn admit(&self, t: &TopicState, weight: u64) -> Result<(), BusError> {
        let capacity = self.capacity.of(t.topic);
        {
            let mut admission = lock(&t.admission);
            if admission.fresh(Instant::now()) && fits(admission.estimate(), weight, capacity) {
                admission.in_flight += weight;
                return Ok(());
            }
        }
        self.refresh(t).await?;
        let mut admission = lock(&t.admission);
        let pending = admission.estimate();
        if fits(pending, weight, capacity) {
            admission.in_flight += weight;
            return Ok(());
        }
        let now = Instant::now();
        let excess = pending.saturating_add(weight).saturating_sub(capacity);
        Err(BusError::Full {
            pending,
            capacity,
            retry_after: admission.drain.retry_after(excess.max(1), now),
        })
    }

    /// Hands out buffered messages of `topic` weighing up to `max_weight` (at least one).
    fn take(&self, topic: Topic, max_weight: usize) -> Option<Vec<Delivery>> {
        let mut held = lock(&self.topic(topic).held);
        let mut out = Vec::new();
        let mut weight = 0usize;
        while let Some(front) = held.buffer.front() {
            let w = front.weight as usize;
            if !out.is_empty() && weight.saturating_add(w) > max_weight {
                break;
            }
            let entry = held.buffer.pop_front().expect("front exists");
            weight = weight.saturating_add(w);
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            held.out.insert(seq, entry.sequence);
            out.push(Delivery::new(
                DeliveryToken::seq(self.owner, topic, seq),
                entry.payload,
                entry.weight,
                entry.redelivered,
                None,
            ));
        }
        (!out.is_empty()).then_some(out)
    }

    /// Buffers pulled `messages` (those after `fence` are handed back instead); returns
    /// how many were new to this handle and whether any lay past the fence.
    async fn stash(
        &self,
        t: &TopicState,
        reader: &mut Reader,
        messages: Vec<jetstream::Message>,
        fence: Option<u64>,
    ) -> usize {
        let mut weights = Vec::with_capacity(messages.len());
        let mut beyond = Vec::new();
        let mut stashed = 0;
        {
            let mut held = lock(&t.held);
            for message in messages {
                let Ok(info) = message.info() else {
                    continue;
                };
                let (sequence, delivered) = (info.stream_sequence, info.delivered);
                let message = message.message;
                let Some(acker) = message.reply.clone() else {
                    continue;
                };
                if fence.is_some_and(|f| sequence > f) {
                    beyond.push(acker);
                    continue;
                }
                // Not ours to judge: a foreign subject in our stream weighs nothing.
                let weight = t.weight_of(message.subject.as_str()).unwrap_or(0);
                weights.push(weight);
                if held.ackers.insert(sequence, acker).is_some() {
                    // Redelivered to its holder (held past ack_wait): keep one copy.
                    continue;
                }
                held.buffer.push_back(Entry {
                    sequence,
                    payload: message.payload,
                    weight,
                    redelivered: delivered > 1,
                });
                stashed += 1;
            }
        }
        reader.observe(&weights);
        if !beyond.is_empty() {
            reader.fence_reached = true;
            // Published after this handle began draining: for the other consumers.
            let timeout = self.config.timeout;
            let naks = beyond
                .into_iter()
                .map(|acker| bounded("nak", timeout, self.confirm(acker, NAK)));
            for outcome in futures_util::future::join_all(naks).await {
                if let Err(e) = outcome {
                    tracing::debug!("bus: handing back a message past the fence: {e}");
                }
            }
        }
        stashed
    }

    /// Pulls up to `count` messages of `t`: what waits now, or with `wait` the first
    /// message to arrive within [`BLOCK`] and what waits after it.
    async fn pull(
        &self,
        t: &TopicState,
        count: usize,
        wait: bool,
    ) -> Result<Vec<jetstream::Message>, BusError> {
        let limit = self.config.timeout + BLOCK;
        let waiting = self.pull_batch(t, count, None, limit).await?;
        if !waiting.is_empty() || !wait {
            return Ok(waiting);
        }
        let mut first = self.pull_batch(t, 1, Some(BLOCK), limit).await?;
        if !first.is_empty() && count > 1 {
            first.extend(self.pull_batch(t, count - 1, None, limit).await?);
        }
        Ok(first)
    }

    /// One pull request: `no_wait` without `expires`, else waiting up to `expires`.
    async fn pull_batch(
        &self,
        t: &TopicState,
        count: usize,
        expires: Option<Duration>,
        limit: Duration,
    ) -> Result<Vec<jetstream::Message>, BusError> {
        self.connected()?;
        bounded("receive", limit, async {
            let mut batch = match expires {
                None => t.consumer.fetch().max_messages(count).messages().await?,
                Some(expires) => {
                    t.consumer
                        .batch()
                        .max_messages(count)
                        .expires(expires)
                        .messages()
                        .await?
                }
            };
            let mut messages = Vec::with_capacity(count);
            while let Some(message) = batch.next().await {
                messages.push(message?);
            }
            Ok::<_, async_nats::Error>(messages)
        })
        .await
    }

    /// Pulls more of `topic` into the buffer (one reader at a time); returns how many
    /// messages it added, 0 when a waiting pull expired or, closed, nothing is left.
    async fn fetch(
        self: Arc<Self>,
        topic: Topic,
        max_weight: usize,
        wait: bool,
    ) -> Result<usize, BusError> {
        let t = self.topic(topic);
        let mut reader = t.reader.lock().await;
        if !lock(&t.held).buffer.is_empty() || self.dropped.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let count = reader.read_count(max_weight);
        if wait {
            let messages = self.pull(t, count, true).await?;
            return Ok(self.stash(t, &mut reader, messages, None).await);
        }
        // Closed: drain up to the fence.
        if reader.fence_reached {
            return Ok(0);
        }
        let fence = match reader.fence {
            Some(fence) => fence,
            None => {
                self.connected()?;
                let timeout = self.config.timeout;
                let stream = bounded(
                    "reading the stream's end",
                    timeout,
                    self.js.get_stream(&t.stream_name),
                )
                .await?;
                let fence = stream.cached_info().state.last_sequence;
                reader.fence = Some(fence);
                fence
            }
        };
        let messages = self.pull(t, count, false).await?;
        if messages.is_empty() {
            reader.fence_reached = true;
            return Ok(0);
        }
        Ok(self.stash(t, &mut reader, messages, Some(fence)).await)
    }

    /// Sends `kind` (`+ACK`, `-NAK`) to a delivery's ack subject and waits for the
    /// server's confirmation (JetStream's double ack), so its effect (an acked message
    /// leaving the stream) is visible to the next request.
    async fn confirm(
        &self,
        ack_subject: Subject,
        kind: &'static [u8],
    ) -> Result<(), async_nats::RequestError> {
        self.client
            .request(ack_subject, Bytes::from_static(kind))
            .await
            .map(drop)
    }

    /// Takes this handle's unsettled tokens out of `tokens`, per topic, with their
    /// stream sequences.
    fn own(&self, tokens: Vec<DeliveryToken>) -> [Vec<(u64, u64)>; TOPIC_COUNT] {
        let mut per_topic: [Vec<(u64, u64)>; TOPIC_COUNT] = Default::default();
        for token in tokens {
            let Some(seq) = token.seq_of(self.owner) else {
                continue;
            };
            let topic = token.topic();
            if let Some(sequence) = lock(&self.topic(topic).held).out.remove(&seq) {
                per_topic[topic.index()].push((seq, sequence));
            }
        }
        per_topic
    }

    /// Sends `kind` for each of `items` and waits for the server to confirm them all;
    /// those that failed stay held (their tokens work again), the others are forgotten.
    async fn settle(
        &self,
        topic: Topic,
        items: Vec<(u64, u64)>,
        kind: &'static [u8],
    ) -> Result<(), BusError> {
        if items.is_empty() {
            return Ok(());
        }
        let t = self.topic(topic);
        let ackers: Vec<Option<Subject>> = {
            let held = lock(&t.held);
            items
                .iter()
                .map(|(_, sequence)| held.ackers.get(sequence).cloned())
                .collect()
        };
        self.connected().inspect_err(|_| {
            lock(&t.held).out.extend(items.iter().copied());
        })?;
        let timeout = self.config.timeout;
        let what = if kind == NAK { "nak" } else { "ack" };
        let confirmations = ackers.into_iter().map(|acker| async move {
            match acker {
                Some(acker) => bounded(what, timeout, self.confirm(acker, kind)).await,
                None => Ok(()),
            }
        });
        let outcomes = futures_util::future::join_all(confirmations).await;
        let mut held = lock(&t.held);
        let mut first_error = None;
        for ((seq, sequence), outcome) in items.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    held.ackers.remove(&sequence);
                }
                Err(e) => {
                    held.out.insert(seq, sequence);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(BusError::Closed);
        }
        inner.connected()?;
        let t = inner.topic(topic);
        let weight = u64::from(message.weight);
        inner.admit(t, weight).await?;
        let subject = t.subject(message.weight);
        let outcome = tokio::time::timeout(inner.config.timeout, async {
            inner.js.publish(subject, message.payload).await?.await
        })
        .await;
        {
            let mut admission = lock(&t.admission);
            admission.in_flight = admission.in_flight.saturating_sub(weight);
            if matches!(outcome, Ok(Ok(_))) {
                admission.since = admission.since.saturating_add(weight);
            }
        }
        match outcome {
            Ok(Ok(_ack)) => Ok(()),
            Ok(Err(e)) => match api_error(&e) {
                Some(api) if is_stream_full(api) => {
                    // The stream's own limits (max_msgs, max_bytes) refused it.
                    inner.refresh(t).await?;
                    let mut admission = lock(&t.admission);
                    let pending = admission.estimate();
                    let capacity = inner.capacity.of(topic);
                    Err(BusError::Full {
                        pending,
                        capacity,
                        retry_after: admission.drain.retry_after(weight.max(1), Instant::now()),
                    })
                }
                _ => Err(BusError::Unavailable(format!("nats publish: {e}"))),
            },
            Err(_) => Err(BusError::Unavailable(format!(
                "nats publish: no acknowledgement within {:?}",
                inner.config.timeout
            ))),
        }
    }

    async fn receive(&self, topic: Topic, max_weight: usize) -> Result<Vec<Delivery>, BusError> {
        loop {
            if let Some(deliveries) = self.inner.take(topic, max_weight) {
                return Ok(deliveries);
            }
            let closed = self.inner.closed.load(Ordering::SeqCst);
            // In a task of its own: a caller that gives up on `receive` cannot lose
            // messages pulled half-way; they wait in the buffer.
            let fetch = tokio::spawn(Arc::clone(&self.inner).fetch(topic, max_weight, !closed));
            let stashed = fetch
                .await
                .map_err(|e| BusError::Unavailable(format!("nats receive task: {e}")))??;
            if stashed == 0 && closed && lock(&self.inner.topic(topic).held).buffer.is_empty() {
                return Err(BusError::Closed);
            }
        }
    }

    async fn ack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        let inner = &self.inner;
        for (topic, items) in Topic::ALL.into_iter().zip(inner.own(tokens)) {
            inner.settle(topic, items, ACK).await?;
        }
        Ok(())
    }

    async fn nack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        let inner = &self.inner;
        for (topic, items) in Topic::ALL.into_iter().zip(inner.own(tokens)) {
            inner.settle(topic, items, NAK).await?;
        }
        Ok(())
    }

    async fn reject(&self, token: DeliveryToken, reason: String) -> Result<(), BusError> {
        let inner = &self.inner;
        let topic = token.topic();
        let items = inner
            .own(vec![token])
            .into_iter()
            .nth(topic.index())
            .unwrap_or_default();
        let Some(&(seq, sequence)) = items.first() else {
            return Ok(());
        };
        let t = inner.topic(topic);
        if !lock(&t.held).ackers.contains_key(&sequence) {
            return Ok(());
        }
        // The payload is not kept after it is handed out: read it back from the stream.
        let timeout = inner.config.timeout;
        let copied = async {
            let stream = bounded(
                "reading the rejected message",
                timeout,
                inner.js.get_stream_no_info(&t.stream_name),
            )
            .await?;
            let raw = bounded(
                "reading the rejected message",
                timeout,
                stream.get_raw_message(sequence),
            )
            .await?;
            let mut headers = HeaderMap::new();
            // Header values are one line: keep the reason readable, not multi-line.
            headers.insert(REASON_HEADER, reason.replace(['\r', '\n'], " ").as_str());
            bounded("publishing a dead letter", timeout, async {
                inner
                    .js
                    .publish_with_headers(t.dead_subject.clone(), headers, raw.payload)
                    .await?
                    .await
            })
            .await
        };
        if let Err(e) = copied.await {
            lock(&t.held).out.insert(seq, sequence);
            return Err(e);
        }
        inner.settle(topic, items, ACK).await
    }

    async fn lag(&self, topic: Topic) -> Result<u64, BusError> {
        let t = self.inner.topic(topic);
        let lag = self.inner.exact_lag(t).await?;
        lock(&t.admission).record_reading(lag, Instant::now());
        Ok(lag)
    }

    async fn ping(&self) -> Result<(), BusError> {
        let inner = &self.inner;
        inner.connected()?;
        jetstream_info(&inner.client, inner.config.timeout).await
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        // As a process exit: what this handle holds stays pending on the consumer and
        // comes back to another puller after ack_wait.
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.dropped.store(true, Ordering::SeqCst);
    }
}

/// `nats://`.
pub(crate) struct NatsFactory;

#[async_trait]
impl BusFactory for NatsFactory {
    fn validate(&self, url: &BusUrl) -> Result<(), String> {
        NatsConfig::parse_parts(url.scheme(), url.rest()).map(drop)
    }

    async fn open(&self, url: &BusUrl, context: &OpenContext) -> Result<Arc<dyn Bus>, BusError> {
        let config =
            NatsConfig::parse_parts(url.scheme(), url.rest()).map_err(BusError::Unavailable)?;
        Ok(Arc::new(NatsBus::open(config, context).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_subjects_follow_the_prefix() {
        let names = stream_names("p");
        assert_eq!(names[..3], ["p_readings", "p_events", "p_readings-1"]);
        assert_eq!(names.len(), TOPIC_COUNT + 1);
        assert_eq!(names.last().map(String::as_str), Some("p_dead"));
    }

    #[test]
    fn the_read_ahead_follows_the_weights_seen() {
        let mut reader = Reader::default();
        assert_eq!(reader.read_count(0), 1);
        assert_eq!(reader.read_count(5), 5);
        assert_eq!(reader.read_count(10_000), FIRST_READ);
        reader.observe(&[100, 100]);
        assert_eq!(reader.read_count(1000), 10);
        assert_eq!(reader.read_count(1), 1);
        reader.mean_weight = Some(0.0);
        assert_eq!(reader.read_count(1_000_000), MAX_READ);
    }

    #[test]
    fn admission_counts_readings_publishes_and_flight() {
        let now = Instant::now();
        let mut admission = Admission {
            reading: 0,
            read_at: None,
            since: 0,
            in_flight: 0,
            drain: DrainMeter::new(now),
        };
        assert!(!admission.fresh(now), "never read");
        admission.record_reading(8, now);
        admission.since = 2;
        admission.in_flight = 1;
        assert_eq!(admission.estimate(), 11);
        assert!(admission.fresh(now));
        assert!(!admission.fresh(now + LAG_FRESH));
        // 11 known, 4 left: 7 drained.
        admission.record_reading(4, now + Duration::from_millis(10));
        assert_eq!((admission.reading, admission.since), (4, 0));
        assert!(fits(0, 50, 10), "an empty topic takes anything");
        assert!(fits(8, 2, 10));
        assert!(!fits(8, 3, 10));
    }
}
