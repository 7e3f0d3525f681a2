//! The Redis Streams bus (`redis://…`, `redis+cluster://…`): processes share the
//! topics through one Redis server or Redis Cluster, each topic a stream read by one
//! consumer group, each bus handle one consumer of it.
//!
//! # URLs
//!
//! - `redis://[USER:PASSWORD@]HOST[:PORT][/DB][?PARAMS]`: one server (port 6379 and
//!   database 0 unless given). IPv6 addresses go in brackets: `redis://[::1]:6379`.
//! - `redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT,…[?PARAMS]`: a Redis Cluster,
//!   from any of its nodes (the client discovers the rest); database 0 only.
//! - `rediss://` (TLS) is refused: this build has no TLS support. Use a trusted network
//!   or a TLS tunnel.
//!
//! Query parameters (all optional):
//!
//! | parameter | default | meaning |
//! | --- | --- | --- |
//! | `prefix` | `vigia` | every key starts with `{PREFIX:`; buses with different prefixes on one Redis are independent |
//! | `group` | `vigia` | the consumer group of every topic's stream |
//! | `consumer` | unique per handle (`HOST-PID-N-RANDOM`) | this handle's name in the group; see *Redelivery* |
//! | `timeout_ms` | `2000` | connect timeout, and the longest any command may take before the operation answers `Unavailable` |
//!
//! How long an unacked delivery waits before another consumer takes it over is
//! [`OpenContext::claim_idle`] (`bus.claim_idle`), not a URL parameter.
//!
//! The bus needs Redis 6.2 or later (`XAUTOCLAIM`); it is tested with Redis 7.
//!
//! # Keys
//!
//! For topic `T` under prefix `P`: `{P:T}:stream` (the stream: only entries not yet acked,
//! since an ack deletes its entry), `{P:T}:lag` (weight published and not acked or
//! rejected), `{P:T}:acked` (weight ever acked, for the retry hint) and `{P:T}:dead` (dead
//! letters). The `{P:T}` hash tag puts a topic's keys and its consumer group on one Redis
//! Cluster node, so the Lua scripts that keep them in step run atomically there.
//!
//! # What a publish guarantees
//!
//! `publish` returns once a Lua script has admitted the message against the topic's lag
//! and `XADD`ed it, i.e. once it is in Redis's memory. What that survives depends on
//! the server's persistence, which the bus reads at open (`CONFIG GET appendonly`,
//! `appendfsync`) and reports with [`RedisBus::persistence`]:
//!
//! - `appendonly no` (as Redis runs on these machines): the message survives `kill -9` of any
//!   Vigía process, but **not** a restart or crash of Redis: a 202 is only as durable as
//!   Redis's memory. The bus logs a warning at open.
//! - `appendonly yes`, `appendfsync everysec` (Redis's AOF default): it also survives a
//!   Redis restart or crash; power loss or an OS crash may lose about the last second of
//!   publishes. With [`Durability::Full`] the bus warns about that second.
//! - `appendonly yes`, `appendfsync always`: Redis fsyncs the AOF before answering, so a
//!   publish survives power loss, like the embedded bus with [`Durability::Full`].
//!
//! Replication to Redis replicas is asynchronous: a failover may lose the last
//! publishes whatever the AOF says (the bus does not `WAIT` for replicas).
//!
//! # Capacity, acks and redelivery
//!
//! - Lag is weight, counted server-side: the publish script refuses with `Full` when the
//!   lag is positive and the message would pass the capacity, so the bound holds for
//!   every process on the bus at once. (Each publish is measured against the capacity
//!   of the handle that publishes: the processes of one bus should share one setting.)
//!   Topic streams are never trimmed (`MAXLEN` would drop unacknowledged entries): an
//!   entry leaves its stream only when acked, rejected or handed back.
//! - `ack` (after the store commit) `XACK`s and deletes the entries; only an entry the
//!   ack removes from the group's pending list counts, so a double ack, or an ack of an
//!   entry another consumer has claimed and acked, leaves the lag exact.
//! - `nack` re-adds the entry at the end of the stream (any consumer may take it, marked
//!   redelivered) and deletes the old one; the lag is unchanged.
//! - `reject` moves the entry to the topic's dead-letter stream with the reason and takes
//!   its weight off the lag. The dead-letter stream is the one stream that is trimmed
//!   (to about [`DEAD_LETTERS_KEPT`] entries), so it cannot grow without bound.
//!
//! # Redelivery
//!
//! A delivery not acked within `claim_idle` is presumed to belong to a dead consumer: live
//! handles sweep the group with `XAUTOCLAIM` (every half `claim_idle`, at most every 5 s)
//! and hand such entries out again, marked redelivered. A handle never hands out twice
//! what it holds itself. A handle opened with the same `consumer` name as an earlier one
//! (a restarted process with a stable name) first re-reads that consumer's pending
//! entries, so they come back at once instead of after `claim_idle`; a `consumer` name
//! must therefore name one live handle at a time. A consumer that holds a delivery
//! longer than `claim_idle` (a store commit slower than that) is taken for dead too: its
//! delivery goes to another consumer as well, which at-least-once delivery allows.
//!
//! # Receiving and closing
//!
//! `receive` reads with `XREADGROUP … BLOCK` (200 ms at a time, on a connection of its
//! own so the blocking read never stalls publishes and acks), after the consumer's own
//! earlier pending entries and any due claims. It reads a few entries ahead (sized from
//! the weights seen) and hands them out within `max_weight`. After `close`, publishes
//! answer `Closed` and `receive` drains what the stream held when the handle first
//! drained (its last id then is the fence), then answers `Closed`; entries published
//! later by other processes are left to the other consumers.
//!
//! The publisher's in-process value ([`crate::Local`]) does not travel through Redis:
//! consumers always decode the payload.
//!
//! # Failures
//!
//! Commands use a reconnecting multiplexed connection (`ConnectionManager`, or the
//! cluster client). While Redis is away every operation answers
//! [`BusError::Unavailable`] within `timeout_ms` (at once when the connection is
//! refused) and never hangs; when Redis is back the same handle works again. If Redis
//! came back empty (no persistence), the bus recreates its consumer groups and warns
//! that unacked messages were lost.

mod conn;
mod reply;
mod scripts;
mod url;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::{RedisError, Value};
use async_trait::async_trait;
use bytes::Bytes;

use self::conn::{bounded, is_no_group, timed, unavailable, Conn};
use self::reply::{dead_letter, entries_of, flat_entries, read_reply, text, RawEntry, StreamId};
use self::scripts::{LuaScript, Scripts};
pub use self::url::{RedisConfig, DEFAULT_GROUP, DEFAULT_PREFIX, DEFAULT_TIMEOUT};
use crate::drain::DrainMeter;
use crate::registry::{BusFactory, BusUrl, OpenContext};
use crate::volatile::DeadLetter;
use crate::{
    Bus, BusError, Capacity, Delivery, DeliveryToken, Durability, Message, Topic, TOPIC_COUNT,
};

/// About how many dead letters each topic's dead-letter stream keeps (older ones are
/// trimmed; topic streams never are).
pub const DEAD_LETTERS_KEPT: u64 = 10_000;
/// How long one blocking read waits: a closed handle notices within this.
const BLOCK: Duration = Duration::from_millis(200);
/// Entries read at once before any weight has been seen.
const FIRST_READ: usize = 16;
/// The most entries read ahead at once.
const MAX_READ: usize = 256;
/// Entries one `XAUTOCLAIM` claims at most (Redis scans ten times as many).
const CLAIM_COUNT: usize = 100;
/// `XAUTOCLAIM` pages one receive may scan when they claim nothing it can hand out.
const CLAIM_PAGES: usize = 10;
/// The longest pause between two claim sweeps of a topic.
const MAX_CLAIM_EVERY: Duration = Duration::from_secs(5);
/// The shortest one.
const MIN_CLAIM_EVERY: Duration = Duration::from_millis(100);
/// Ids settled by one script call.
const SETTLE_CHUNK: usize = 256;
/// Lua numbers are doubles: capacities above this are sent as this.
const LUA_EXACT: u64 = 1 << 53;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every structure here is updated in steps that leave it consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a Redis node keeps across its own restarts, as `CONFIG GET` said at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// `appendonly no`: only memory (and any RDB snapshot); a Redis restart loses what
    /// was not acked.
    Memory,
    /// `appendonly yes`, with its `appendfsync` policy (`always`, `everysec`, `no`).
    Aof {
        /// The `appendfsync` setting.
        fsync: String,
    },
    /// `CONFIG GET` was refused (e.g. a managed Redis) or answered nothing useful.
    Unknown(String),
}

impl Persistence {
    /// The warning the bus logs at open for this persistence with `durability`, if any.
    pub fn warning(&self, durability: Durability) -> Option<String> {
        match self {
            Persistence::Memory => Some(
                "Redis persists nothing (appendonly is off): a publish, and so a 202, is only \
                 as durable as Redis's memory; a restart or crash of Redis loses every message \
                 not yet acked. Set `appendonly yes` (and `appendfsync always` to survive \
                 power loss)."
                    .into(),
            ),
            Persistence::Aof { fsync } if fsync == "always" => None,
            Persistence::Aof { fsync } if durability == Durability::Full => Some(format!(
                "Redis fsyncs its AOF with `appendfsync {fsync}`, not before each answer: power \
                 loss can lose the last publishes (about a second with everysec) although \
                 durability is full. Set `appendfsync always` for a 202 that survives power loss."
            )),
            Persistence::Aof { .. } | Persistence::Unknown(_) => None,
        }
    }
}

/// An entry read from Redis and not handed out yet.
struct Entry {
    id: String,
    payload: Bytes,
    weight: u32,
    redelivered: bool,
}

/// A topic's keys; see the module documentation.
struct Keys {
    stream: String,
    lag: String,
    acked: String,
    dead: String,
}

impl Keys {
    /// The keys in the order the scripts take them.
    fn all(&self) -> [&str; 4] {
        [&self.stream, &self.lag, &self.acked, &self.dead]
    }

    fn new(prefix: &str, topic: Topic) -> Self {
        let tag = format!("{{{prefix}:{}}}", topic.name());
        Self {
            stream: format!("{tag}:stream"),
            lag: format!("{tag}:lag"),
            acked: format!("{tag}:acked"),
            dead: format!("{tag}:dead"),
        }
    }
}

/// What this handle holds of a topic.
#[derive(Default)]
struct Held {
    /// Read from Redis (so pending under this consumer), not handed out yet.
    buffer: VecDeque<Entry>,
    /// Handed out and not settled: token sequence number → stream id.
    out: HashMap<u64, String>,
    /// The ids in `buffer` or `out` (or being settled): never handed out twice.
    ids: HashSet<String>,
}

/// The reading side of a topic, one reader at a time.
struct Reader {
    /// The connection for blocking reads, made on first use.
    blocking: Option<Conn>,
    /// Where the re-read of this consumer's own pending entries (left by an earlier
    /// handle of the same name) goes on; `None` once done.
    own_from: Option<String>,
    claim_cursor: String,
    next_claim: Instant,
    /// Mean weight of the entries read so far (sizes the read-ahead).
    mean_weight: Option<f64>,
    /// After close: the last id the stream held when draining began.
    fence: Option<StreamId>,
    /// After close: everything up to the fence has been read.
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

    fn observe(&mut self, entries: &[RawEntry]) {
        let weights: Vec<f64> = entries
            .iter()
            .filter_map(|e| e.fields.as_ref().map(|f| f64::from(f.weight)))
            .collect();
        if weights.is_empty() {
            return;
        }
        let mean = weights.iter().sum::<f64>() / weights.len() as f64;
        self.mean_weight = Some(match self.mean_weight {
            None => mean,
            Some(old) => 0.7 * old + 0.3 * mean,
        });
    }
}

/// The drain-rate estimate behind `Full`'s retry hint, from the topic's acked counter.
struct Drain {
    meter: DrainMeter,
    last_acked: Option<u64>,
}

struct TopicState {
    topic: Topic,
    keys: Keys,
    held: Mutex<Held>,
    reader: tokio::sync::Mutex<Reader>,
    drain: Mutex<Drain>,
}

/// Why a read failed: the group is gone (Redis lost it) or anything else.
enum ReadFailure {
    NoGroup,
    Bus(BusError),
}

impl From<BusError> for ReadFailure {
    fn from(error: BusError) -> Self {
        ReadFailure::Bus(error)
    }
}

struct Inner {
    config: RedisConfig,
    consumer: String,
    /// Tells this handle's tokens from other handles'.
    owner: u64,
    next_seq: AtomicU64,
    conn: Conn,
    scripts: Scripts,
    capacity: Capacity,
    claim_idle: Duration,
    claim_every: Duration,
    topics: [TopicState; TOPIC_COUNT],
    closed: AtomicBool,
    /// The handle was dropped: background reads stop taking entries.
    dropped: AtomicBool,
    persistence: Vec<(String, Persistence)>,
}

/// The Redis Streams [`Bus`]; see the module documentation.
pub struct RedisBus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("config", &self.inner.config)
            .field("consumer", &self.inner.consumer)
            .finish()
    }
}

impl RedisBus {
    /// Connects, creates each topic's stream and consumer group if missing, checks the
    /// server's persistence (warning when a publish would be only as durable as Redis's
    /// memory) and returns the handle. Fails with `Unavailable` within about
    /// `config.timeout` when Redis does not answer.
    pub async fn open(config: RedisConfig, context: &OpenContext) -> Result<RedisBus, BusError> {
        if let Some(topic) = Topic::ALL
            .into_iter()
            .find(|t| context.capacity.of(*t) == 0)
        {
            return Err(BusError::Unavailable(format!(
                "invalid bus options: the capacity of topic `{topic}` must be at least 1"
            )));
        }
        if config.nodes.is_empty() {
            return Err(BusError::Unavailable(
                "invalid bus options: no Redis node to connect to".into(),
            ));
        }
        let timeout = config.timeout;
        let addresses = config.addresses.join(",");
        let conn = bounded(
            &format!("connecting to {addresses}"),
            timeout * 2,
            Conn::connect(&config, Duration::ZERO),
        )
        .await?;
        let now = Instant::now();
        let topics = Topic::ALL.map(|topic| TopicState {
            topic,
            keys: Keys::new(&config.prefix, topic),
            held: Mutex::new(Held::default()),
            reader: tokio::sync::Mutex::new(Reader {
                blocking: None,
                own_from: config.consumer.is_some().then(|| "0".to_string()),
                claim_cursor: "0-0".into(),
                next_claim: now,
                mean_weight: None,
                fence: None,
                fence_reached: false,
            }),
            drain: Mutex::new(Drain {
                meter: DrainMeter::new(now),
                last_acked: None,
            }),
        });
        let consumer = config.consumer.clone().unwrap_or_else(unique_consumer);
        let claim_every = (context.claim_idle / 2).clamp(MIN_CLAIM_EVERY, MAX_CLAIM_EVERY);
        let mut inner = Inner {
            config,
            consumer,
            owner: crate::message::next_owner(),
            next_seq: AtomicU64::new(1),
            conn,
            scripts: Scripts::new(),
            capacity: context.capacity,
            claim_idle: context.claim_idle,
            claim_every,
            topics,
            closed: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            persistence: Vec::new(),
        };
        for topic in &inner.topics {
            inner.ensure_group(topic).await?;
        }
        inner.persistence = inner.check_persistence(context.durability).await;
        for topic in &inner.topics {
            inner.prune_consumers(topic).await;
        }
        tracing::info!(
            redis = %addresses,
            cluster = inner.config.cluster,
            prefix = %inner.config.prefix,
            group = %inner.config.group,
            consumer = %inner.consumer,
            "bus: Redis Streams ready"
        );
        Ok(RedisBus {
            inner: Arc::new(inner),
        })
    }

    /// This handle's consumer name in the topics' consumer group.
    pub fn consumer(&self) -> &str {
        &self.inner.consumer
    }

    /// The settings this handle was opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// What each checked node persists (one entry for a single server; one per topic's
    /// node in a cluster), as read at open.
    pub fn persistence(&self) -> &[(String, Persistence)] {
        &self.inner.persistence
    }

    /// Up to `max` of `topic`'s most recent dead letters, oldest first.
    pub async fn dead_letters(
        &self,
        topic: Topic,
        max: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let inner = &self.inner;
        let mut cmd = ::redis::cmd("XREVRANGE");
        cmd.arg(&inner.topic(topic).keys.dead)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(max.max(1));
        let value: Value = bounded(
            "reading dead letters",
            inner.config.timeout,
            cmd.query_async(&mut inner.conn.clone()),
        )
        .await?;
        let mut letters: Vec<DeadLetter> = flat_entries(value)
            .into_iter()
            .filter_map(|(_, flat)| dead_letter(flat?))
            .collect();
        letters.reverse();
        Ok(letters)
    }
}

impl Inner {
    fn topic(&self, topic: Topic) -> &TopicState {
        &self.topics[topic.index()]
    }

    /// `XGROUP CREATE … 0 MKSTREAM`, tolerating a group that exists.
    async fn ensure_group(&self, t: &TopicState) -> Result<(), BusError> {
        let mut cmd = ::redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(&t.keys.stream)
            .arg(&self.config.group)
            .arg("0")
            .arg("MKSTREAM");
        let what = format!("creating the consumer group of {}", t.keys.stream);
        match timed(
            &what,
            self.config.timeout,
            cmd.query_async::<Value>(&mut self.conn.clone()),
        )
        .await?
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(unavailable(&what, &e)),
        }
    }

    /// Reads `appendonly`/`appendfsync` of each node holding a topic, logging a warning
    /// where a publish would be less durable than asked.
    async fn check_persistence(&self, durability: Durability) -> Vec<(String, Persistence)> {
        let mut found = Vec::new();
        let nodes: Vec<(String, &str)> = if self.config.cluster {
            self.topics
                .iter()
                .map(|t| {
                    (
                        format!("the node of {}", t.keys.stream),
                        t.keys.stream.as_str(),
                    )
                })
                .collect()
        } else {
            vec![(
                self.config.addresses.join(","),
                self.topics[0].keys.stream.as_str(),
            )]
        };
        for (node, key) in nodes {
            let persistence = match self.config_get(key, "appendonly").await {
                Err(why) => Persistence::Unknown(why),
                Ok(None) => Persistence::Unknown("CONFIG GET appendonly answered nothing".into()),
                Ok(Some(v)) if v.eq_ignore_ascii_case("no") => Persistence::Memory,
                Ok(Some(_)) => Persistence::Aof {
                    fsync: self
                        .config_get(key, "appendfsync")
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(|| "everysec".into())
                        .to_ascii_lowercase(),
                },
            };
            match (&persistence, persistence.warning(durability)) {
                (_, Some(warning)) => tracing::warn!(redis = %node, "bus: {warning}"),
                (Persistence::Unknown(why), None) => tracing::info!(
                    redis = %node,
                    "bus: could not check Redis persistence ({why}); a publish is as durable \
                     as that server's AOF settings make it"
                ),
                (p, None) => {
                    tracing::info!(redis = %node, persistence = ?p, "bus: Redis persistence")
                }
            }
            found.push((node, persistence));
        }
        found
    }

    async fn config_get(&self, key: &str, parameter: &str) -> Result<Option<String>, String> {
        let mut cmd = ::redis::cmd("CONFIG");
        cmd.arg("GET").arg(parameter);
        let value = timed(
            "CONFIG GET",
            self.config.timeout,
            self.conn.on_node_of(key, cmd),
        )
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("CONFIG GET {parameter}: {e}"))?;
        let flat: Vec<Value> = match value {
            Value::Array(items) => items,
            Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        };
        Ok(flat
            .chunks(2)
            .find(|kv| kv.len() == 2 && text(&kv[0]).is_some_and(|k| k == parameter))
            .and_then(|kv| text(&kv[1])))
    }

    /// Deletes consumers of the group that hold nothing and were idle for long (left by
    /// handles with unique names that are gone). Best effort: a consumer deleted while
    /// alive is recreated by its next read, and holds nothing to lose.
    async fn prune_consumers(&self, t: &TopicState) {
        let idle_limit = (self.claim_idle * 10).max(Duration::from_secs(600));
        let mut cmd = ::redis::cmd("XINFO");
        cmd.arg("CONSUMERS")
            .arg(&t.keys.stream)
            .arg(&self.config.group);
        let Ok(Ok(Value::Array(consumers))) = timed(
            "XINFO CONSUMERS",
            self.config.timeout,
            cmd.query_async(&mut self.conn.clone()),
        )
        .await
        else {
            return;
        };
        for consumer in consumers {
            let flat: Vec<Value> = match consumer {
                Value::Array(items) => items,
                Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                _ => continue,
            };
            let field = |name: &str| {
                flat.chunks(2)
                    .find(|kv| kv.len() == 2 && text(&kv[0]).is_some_and(|k| k == name))
                    .map(|kv| kv[1].clone())
            };
            let (Some(name), Some(Value::Int(pending)), Some(Value::Int(idle))) = (
                field("name").as_ref().and_then(text),
                field("pending"),
                field("idle"),
            ) else {
                continue;
            };
            if pending == 0 && u128::try_from(idle).unwrap_or(0) > idle_limit.as_millis() {
                let mut del = ::redis::cmd("XGROUP");
                del.arg("DELCONSUMER")
                    .arg(&t.keys.stream)
                    .arg(&self.config.group)
                    .arg(&name);
                let _ = timed(
                    "XGROUP DELCONSUMER",
                    self.config.timeout,
                    del.query_async::<Value>(&mut self.conn.clone()),
                )
                .await;
                tracing::debug!(stream = %t.keys.stream, consumer = %name, "bus: removed an idle consumer");
            }
        }
    }

    /// Hands out buffered entries of `topic` weighing up to `max_weight` (at least one).
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
            held.out.insert(seq, entry.id);
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

    /// Buffers `entries` this handle does not hold yet; returns how many.
    fn stash(&self, t: &TopicState, entries: Vec<RawEntry>, redelivered: bool) -> usize {
        let mut held = lock(&t.held);
        let mut stashed = 0;
        for entry in entries {
            let Some(fields) = entry.fields else { continue };
            if !held.ids.insert(entry.id.clone()) {
                continue;
            }
            held.buffer.push_back(Entry {
                id: entry.id,
                payload: fields.payload,
                weight: fields.weight,
                redelivered: redelivered || fields.handed_back,
            });
            stashed += 1;
        }
        stashed
    }

    /// Reads more of `topic` into the buffer (one reader at a time); returns how many
    /// entries it added, 0 when a blocking read timed out or, closed, nothing is left.
    async fn fetch(
        self: Arc<Self>,
        topic: Topic,
        max_weight: usize,
        block: bool,
    ) -> Result<usize, BusError> {
        let t = self.topic(topic);
        let mut reader = t.reader.lock().await;
        if !lock(&t.held).buffer.is_empty() || self.dropped.load(Ordering::SeqCst) {
            return Ok(0);
        }
        match self
            .fetch_from_sources(t, &mut reader, max_weight, block)
            .await
        {
            Ok(n) => Ok(n),
            Err(ReadFailure::Bus(e)) => Err(e),
            Err(ReadFailure::NoGroup) => {
                tracing::warn!(
                    stream = %t.keys.stream,
                    group = %self.config.group,
                    "bus: the consumer group is gone (Redis restarted without persistence?): \
                     recreating it; messages not acked before were lost"
                );
                self.ensure_group(t).await?;
                reader.own_from = None;
                reader.claim_cursor = "0-0".into();
                Ok(0)
            }
        }
    }

    async fn fetch_from_sources(
        &self,
        t: &TopicState,
        reader: &mut Reader,
        max_weight: usize,
        block: bool,
    ) -> Result<usize, ReadFailure> {
        let count = reader.read_count(max_weight);
        // This consumer's own pending entries, left by an earlier handle of its name.
        while let Some(from) = reader.own_from.clone() {
            let entries = self.read_group(&self.conn, t, &from, count, None).await?;
            reader.own_from = entries.last().map(|e| e.id.clone());
            reader.observe(&entries);
            let stashed = self.stash(t, entries, true);
            if stashed > 0 {
                tracing::info!(stream = %t.keys.stream, consumer = %self.consumer, stashed,
                    "bus: redelivering what this consumer had not acked before");
                return Ok(stashed);
            }
        }
        // Entries idle past claim_idle: their consumer is presumed dead.
        if Instant::now() >= reader.next_claim {
            for _ in 0..CLAIM_PAGES {
                let (cursor, entries) = self.autoclaim(t, &reader.claim_cursor).await?;
                let wrapped = cursor == "0-0" || cursor.is_empty();
                reader.claim_cursor = if wrapped { "0-0".into() } else { cursor };
                if wrapped {
                    reader.next_claim = Instant::now() + self.claim_every;
                }
                let stashed = self.stash(t, entries, true);
                if stashed > 0 {
                    tracing::info!(stream = %t.keys.stream, consumer = %self.consumer, stashed,
                        "bus: claimed deliveries idle past claim_idle from a presumed dead consumer");
                    return Ok(stashed);
                }
                if wrapped {
                    break;
                }
            }
        }
        if block {
            if reader.blocking.is_none() {
                let conn = bounded(
                    "connecting for blocking reads",
                    self.config.timeout * 2,
                    Conn::connect(&self.config, BLOCK),
                )
                .await?;
                reader.blocking = Some(conn);
            }
            let conn = reader.blocking.clone().expect("connected above");
            let entries = self.read_group(&conn, t, ">", count, Some(BLOCK)).await?;
            reader.observe(&entries);
            return Ok(self.stash(t, entries, false));
        }
        // Closed: drain up to the fence.
        if reader.fence_reached {
            return Ok(0);
        }
        let fence = match reader.fence {
            Some(fence) => fence,
            None => {
                let fence = self.last_id(t).await?;
                reader.fence = Some(fence);
                fence
            }
        };
        let entries = self.read_group(&self.conn, t, ">", count, None).await?;
        if entries.is_empty() {
            reader.fence_reached = true;
            return Ok(0);
        }
        let (within, beyond): (Vec<RawEntry>, Vec<RawEntry>) = entries
            .into_iter()
            .partition(|e| StreamId::parse(&e.id).is_some_and(|id| id <= fence));
        if !beyond.is_empty() {
            reader.fence_reached = true;
            let ids: Vec<String> = beyond.into_iter().map(|e| e.id).collect();
            self.hand_back(t, &ids, false).await?;
        }
        Ok(self.stash(t, within, false))
    }

    async fn read_group(
        &self,
        conn: &Conn,
        t: &TopicState,
        from: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<RawEntry>, ReadFailure> {
        let mut cmd = ::redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count);
        let mut limit = self.config.timeout;
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
            limit += block;
        }
        cmd.arg("STREAMS").arg(&t.keys.stream).arg(from);
        match timed(
            "receive",
            limit,
            cmd.query_async::<Value>(&mut conn.clone()),
        )
        .await?
        {
            Ok(value) => Ok(read_reply(value)),
            Err(e) => Err(read_failure("receive", &e)),
        }
    }

    /// One `XAUTOCLAIM` page from `cursor`: the next cursor and the claimed entries.
    async fn autoclaim(
        &self,
        t: &TopicState,
        cursor: &str,
    ) -> Result<(String, Vec<RawEntry>), ReadFailure> {
        let mut cmd = ::redis::cmd("XAUTOCLAIM");
        cmd.arg(&t.keys.stream)
            .arg(&self.config.group)
            .arg(&self.consumer)
            .arg(self.claim_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(CLAIM_COUNT);
        let value = match timed(
            "claiming idle deliveries",
            self.config.timeout,
            cmd.query_async::<Value>(&mut self.conn.clone()),
        )
        .await?
        {
            Ok(value) => value,
            Err(e) => return Err(read_failure("claiming idle deliveries", &e)),
        };
        let Value::Array(mut parts) = value else {
            return Ok(("0-0".into(), Vec::new()));
        };
        if parts.len() < 2 {
            return Ok(("0-0".into(), Vec::new()));
        }
        let entries = entries_of(parts.swap_remove(1));
        let cursor = text(&parts[0]).unwrap_or_else(|| "0-0".into());
        Ok((cursor, entries))
    }

    /// The id of the last entry the stream holds, or zero when it is empty.
    async fn last_id(&self, t: &TopicState) -> Result<StreamId, BusError> {
        let mut cmd = ::redis::cmd("XREVRANGE");
        cmd.arg(&t.keys.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let value: Value = bounded(
            "reading the stream's end",
            self.config.timeout,
            cmd.query_async(&mut self.conn.clone()),
        )
        .await?;
        Ok(entries_of(value)
            .first()
            .and_then(|e| StreamId::parse(&e.id))
            .unwrap_or(StreamId::ZERO))
    }

    /// Runs a settling script on `ids` of `t` with `args` after the group.
    async fn settle_script(
        &self,
        what: &str,
        script: &LuaScript,
        t: &TopicState,
        args: &[&str],
        ids: &[String],
    ) -> Result<i64, BusError> {
        let keys = t.keys.all();
        let argv: Vec<&[u8]> = std::iter::once(self.config.group.as_bytes())
            .chain(args.iter().map(|a| a.as_bytes()))
            .chain(ids.iter().map(|id| id.as_bytes()))
            .collect();
        bounded(
            what,
            self.config.timeout,
            script.run(&self.conn, &keys, &argv),
        )
        .await
    }

    /// Makes `ids` deliverable again (re-added at the stream's end); `counted` marks
    /// their next delivery redelivered.
    async fn hand_back(
        &self,
        t: &TopicState,
        ids: &[String],
        counted: bool,
    ) -> Result<(), BusError> {
        let mark = if counted { "1" } else { "0" };
        for chunk in ids.chunks(SETTLE_CHUNK) {
            self.settle_script("nack", &self.scripts.nack, t, &[mark], chunk)
                .await?;
        }
        Ok(())
    }

    /// Takes this handle's unsettled tokens out of `tokens`, per topic, with their ids.
    fn own(&self, tokens: Vec<DeliveryToken>) -> [Vec<(u64, String)>; TOPIC_COUNT] {
        let mut per_topic: [Vec<(u64, String)>; TOPIC_COUNT] = Default::default();
        for token in tokens {
            let Some(seq) = token.seq_of(self.owner) else {
                continue;
            };
            let topic = token.topic();
            if let Some(id) = lock(&self.topic(topic).held).out.remove(&seq) {
                per_topic[topic.index()].push((seq, id));
            }
        }
        per_topic
    }

    /// Settles `items` of `topic` with `settle` chunk by chunk; what did not settle is
    /// still held (its tokens work again), what did is forgotten.
    async fn settle_all<F, Fut>(
        &self,
        topic: Topic,
        items: Vec<(u64, String)>,
        settle: F,
    ) -> Result<(), BusError>
    where
        F: Fn(Vec<String>) -> Fut,
        Fut: std::future::Future<Output = Result<(), BusError>>,
    {
        let t = self.topic(topic);
        let mut rest = items.as_slice();
        while !rest.is_empty() {
            let (chunk, later) = rest.split_at(rest.len().min(SETTLE_CHUNK));
            let ids: Vec<String> = chunk.iter().map(|(_, id)| id.clone()).collect();
            if let Err(e) = settle(ids.clone()).await {
                let mut held = lock(&t.held);
                held.out.extend(rest.iter().cloned());
                return Err(e);
            }
            let mut held = lock(&t.held);
            for id in &ids {
                held.ids.remove(id);
            }
            rest = later;
        }
        Ok(())
    }

    /// `Full` for a refused publish, with the retry hint from the acked counter.
    fn full(&self, t: &TopicState, pending: u64, weight: u64, acked: u64) -> BusError {
        let capacity = self.capacity.of(t.topic);
        let now = Instant::now();
        let mut drain = lock(&t.drain);
        if let Some(last) = drain.last_acked {
            drain.meter.record(acked.saturating_sub(last), now);
        }
        drain.last_acked = Some(acked);
        let excess = pending.saturating_add(weight).saturating_sub(capacity);
        BusError::Full {
            pending,
            capacity,
            retry_after: drain.meter.retry_after(excess.max(1), now),
        }
    }
}

fn read_failure(what: &str, error: &RedisError) -> ReadFailure {
    if is_no_group(error) {
        ReadFailure::NoGroup
    } else {
        ReadFailure::Bus(unavailable(what, error))
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(BusError::Closed);
        }
        let t = inner.topic(topic);
        let weight = u64::from(message.weight);
        let (weight_arg, capacity_arg) = (
            weight.to_string(),
            inner.capacity.of(topic).min(LUA_EXACT).to_string(),
        );
        let args: [&[u8]; 3] = [
            &message.payload[..],
            weight_arg.as_bytes(),
            capacity_arg.as_bytes(),
        ];
        let reply: Vec<i64> = bounded(
            "publish",
            inner.config.timeout,
            inner.scripts.publish.run(&inner.conn, &t.keys.all(), &args),
        )
        .await?;
        let as_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
        match reply.as_slice() {
            [1, ..] => Ok(()),
            [0, pending, acked] => Err(inner.full(t, as_u64(*pending), weight, as_u64(*acked))),
            other => Err(BusError::Unavailable(format!(
                "redis publish: unexpected reply {other:?}"
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
            // entries read from Redis half-way; they wait in the buffer.
            let fetch = tokio::spawn(Arc::clone(&self.inner).fetch(topic, max_weight, !closed));
            let stashed = fetch
                .await
                .map_err(|e| BusError::Unavailable(format!("redis receive task: {e}")))??;
            if stashed == 0 && closed && lock(&self.inner.topic(topic).held).buffer.is_empty() {
                return Err(BusError::Closed);
            }
        }
    }

    async fn ack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        let inner = &self.inner;
        for (topic, items) in Topic::ALL.into_iter().zip(inner.own(tokens)) {
            if items.is_empty() {
                continue;
            }
            let t = inner.topic(topic);
            inner
                .settle_all(topic, items, |ids| async move {
                    inner
                        .settle_script("ack", &inner.scripts.ack, t, &[], &ids)
                        .await
                        .map(drop)
                })
                .await?;
        }
        Ok(())
    }

    async fn nack(&self, tokens: Vec<DeliveryToken>) -> Result<(), BusError> {
        let inner = &self.inner;
        for (topic, items) in Topic::ALL.into_iter().zip(inner.own(tokens)) {
            if items.is_empty() {
                continue;
            }
            let t = inner.topic(topic);
            inner
                .settle_all(topic, items, |ids| async move {
                    inner.hand_back(t, &ids, true).await
                })
                .await?;
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
        if items.is_empty() {
            return Ok(());
        }
        let t = inner.topic(topic);
        let kept = DEAD_LETTERS_KEPT.to_string();
        let (reason, kept) = (reason.as_str(), kept.as_str());
        inner
            .settle_all(topic, items, |ids| async move {
                for id in &ids {
                    let args = [id.as_str(), reason, topic.name(), kept];
                    inner
                        .settle_script("reject", &inner.scripts.reject, t, &args, &[])
                        .await?;
                }
                Ok(())
            })
            .await
    }

    async fn lag(&self, topic: Topic) -> Result<u64, BusError> {
        let inner = &self.inner;
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(&inner.topic(topic).keys.lag);
        let lag: Option<i64> = bounded(
            "lag",
            inner.config.timeout,
            cmd.query_async(&mut inner.conn.clone()),
        )
        .await?;
        Ok(lag.map_or(0, |l| u64::try_from(l).unwrap_or(0)))
    }

    async fn ping(&self) -> Result<(), BusError> {
        let inner = &self.inner;
        let cmd = ::redis::cmd("PING");
        bounded(
            "ping",
            inner.config.timeout,
            cmd.query_async::<Value>(&mut inner.conn.clone()),
        )
        .await
        .map(drop)
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        // As a process exit: what this handle holds stays pending under its consumer,
        // for a handle of the same name or a claim after claim_idle.
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.dropped.store(true, Ordering::SeqCst);
    }
}

/// A consumer name no other handle has: `HOST-PID-N-RANDOM`.
fn unique_consumer() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let host = if host.is_empty() {
        "host".to_string()
    } else {
        host
    };
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u64(n);
    format!(
        "{host}-{}-{n}-{:08x}",
        std::process::id(),
        hasher.finish() as u32
    )
}

/// `redis://`, `redis+cluster://`, and `rediss://` (refused: no TLS in this build).
pub(crate) struct RedisFactory;

#[async_trait]
impl BusFactory for RedisFactory {
    fn validate(&self, url: &BusUrl) -> Result<(), String> {
        RedisConfig::parse_parts(url.scheme(), url.rest()).map(drop)
    }

    async fn open(&self, url: &BusUrl, context: &OpenContext) -> Result<Arc<dyn Bus>, BusError> {
        let config =
            RedisConfig::parse_parts(url.scheme(), url.rest()).map_err(BusError::Unavailable)?;
        Ok(Arc::new(RedisBus::open(config, context).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag_per_topic() {
        let keys = Keys::new("p", Topic::READINGS);
        for key in [&keys.stream, &keys.lag, &keys.acked, &keys.dead] {
            assert!(key.starts_with("{p:readings}:"), "{key}");
        }
        assert_eq!(Keys::new("p", Topic::EVENTS).stream, "{p:events}:stream");
    }

    #[test]
    fn the_read_ahead_follows_the_weights_seen() {
        let mut reader = Reader {
            blocking: None,
            own_from: None,
            claim_cursor: "0-0".into(),
            next_claim: Instant::now(),
            mean_weight: None,
            fence: None,
            fence_reached: false,
        };
        assert_eq!(reader.read_count(0), 1);
        assert_eq!(reader.read_count(5), 5);
        assert_eq!(reader.read_count(10_000), FIRST_READ);
        reader.mean_weight = Some(100.0);
        assert_eq!(reader.read_count(1000), 10);
        assert_eq!(reader.read_count(1), 1);
        reader.mean_weight = Some(0.0);
        assert_eq!(reader.read_count(1_000_000), MAX_READ);
    }

    #[test]
    fn only_weak_persistence_warns() {
        let aof = |fsync: &str| Persistence::Aof {
            fsync: fsync.into(),
        };
        let memory = Persistence::Memory.warning(Durability::Os).unwrap();
        assert!(
            memory.contains("only as durable as Redis's memory"),
            "{memory}"
        );
        assert!(aof("always").warning(Durability::Full).is_none());
        assert!(aof("everysec").warning(Durability::Os).is_none());
        assert!(aof("everysec")
            .warning(Durability::Full)
            .unwrap()
            .contains("appendfsync always"));
        assert!(Persistence::Unknown("refused".into())
            .warning(Durability::Full)
            .is_none());
    }

    #[test]
    fn unique_consumer_names_differ() {
        let (a, b) = (unique_consumer(), unique_consumer());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }
}
