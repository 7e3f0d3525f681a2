//! What travels on the bus: topics, published messages, deliveries and the opaque
//! tokens that settle them.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

/// Most partitions the readings topic can be split into (`bus.partitions`).
pub const MAX_READINGS_PARTITIONS: usize = 16;

/// How many topics exist; arrays indexed by [`Topic`] have this length: the events topic
/// and every readings partition.
pub const TOPIC_COUNT: usize = 1 + MAX_READINGS_PARTITIONS;

/// A named stream of messages with its own consumers, lag and capacity.
///
/// The set is closed (only this crate defines topics) so every backend can create and
/// check them all up front: a Redis stream or JetStream subject per topic, a topic
/// column in the embedded log.
///
/// Readings are one topic family split into partitions (sensor affinity, DESIGN §4):
/// partition 0 is [`Topic::READINGS`] itself, named `readings` as before partitions
/// existed, so a bus written by an older build and a one-partition deployment are the
/// same thing; partition `p > 0` is `readings-p`. Each partition is an ordinary topic
/// with its own order, consumers, lag and capacity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic {
    index: usize,
    name: &'static str,
}

/// Names of readings partitions 1 and up (partition 0 is `readings`).
const PARTITION_NAMES: [&str; MAX_READINGS_PARTITIONS] = [
    "readings",
    "readings-1",
    "readings-2",
    "readings-3",
    "readings-4",
    "readings-5",
    "readings-6",
    "readings-7",
    "readings-8",
    "readings-9",
    "readings-10",
    "readings-11",
    "readings-12",
    "readings-13",
    "readings-14",
    "readings-15",
];

impl Topic {
    /// Accepted readings (`vigia_core::IngestBatch`); weight = readings. Partition 0 of
    /// the readings family, and all of it when the bus is not partitioned.
    pub const READINGS: Topic = Topic {
        index: 0,
        name: "readings",
    };
    /// Domain events (`vigia_core::DomainEvent`, fed from the store's outbox); weight 1.
    pub const EVENTS: Topic = Topic {
        index: 1,
        name: "events",
    };
    /// Every topic, in index order: readings, events, then readings partitions 1 and up.
    pub const ALL: [Topic; TOPIC_COUNT] = {
        let mut all = [Topic::READINGS; TOPIC_COUNT];
        all[1] = Topic::EVENTS;
        let mut p = 1;
        while p < MAX_READINGS_PARTITIONS {
            all[p + 1] = Topic {
                index: p + 1,
                name: PARTITION_NAMES[p],
            };
            p += 1;
        }
        all
    };

    /// Readings partition `partition`; `None` past [`MAX_READINGS_PARTITIONS`].
    pub fn readings(partition: usize) -> Option<Topic> {
        match partition {
            0 => Some(Topic::READINGS),
            p if p < MAX_READINGS_PARTITIONS => Some(Topic::ALL[p + 1]),
            _ => None,
        }
    }

    /// The first `count` readings partitions (at least partition 0).
    pub fn readings_partitions(count: usize) -> impl Iterator<Item = Topic> {
        (0..count.clamp(1, MAX_READINGS_PARTITIONS)).filter_map(Topic::readings)
    }

    /// Which readings partition this is; `None` for topics outside the readings family.
    pub fn readings_partition(self) -> Option<usize> {
        match self.index {
            0 => Some(0),
            1 => None,
            i => Some(i - 1),
        }
    }

    /// The topic's stable name, as stored in logs and used for broker streams.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// The topic called `name`, if this build knows it.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name == name)
    }

    /// Position in [`Topic::ALL`], for per-topic arrays.
    pub fn index(self) -> usize {
        self.index
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// The publisher's own value riding beside the encoded bytes, so a consumer in the same
/// process skips decoding what was just encoded. Built only by the typed helpers
/// ([`crate::readings`], [`crate::events`]), which also read it back: callers never see
/// `Any`.
#[derive(Clone)]
pub struct Local {
    value: Arc<dyn Any + Send + Sync>,
    bytes: usize,
}

impl Local {
    /// Wraps `value`, which holds about `bytes` bytes of memory (counted against the
    /// memory budget of backends that keep waiting messages in memory).
    pub(crate) fn new<T: Any + Send + Sync>(value: Arc<T>, bytes: usize) -> Self {
        Self { value, bytes }
    }

    /// The value, if it is a `T`.
    pub(crate) fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        Arc::clone(&self.value).downcast::<T>().ok()
    }

    /// About how much memory the value holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl fmt::Debug for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Local({} bytes)", self.bytes)
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// The encoded value: what is made durable and what another process decodes.
    pub payload: Bytes,
    /// What the message counts for in lag and capacity (readings for
    /// [`Topic::READINGS`], 1 per event).
    pub weight: u32,
    /// The publisher's value, for a consumer in the same process (see [`Local`]).
    pub local: Option<Local>,
}

impl Message {
    /// A message of bytes only (no in-process value).
    pub fn from_bytes(payload: impl Into<Bytes>, weight: u32) -> Self {
        Self {
            payload: payload.into(),
            weight,
            local: None,
        }
    }
}

/// Which bus handle handed out a delivery: tokens of one handle mean nothing to another
/// (nor to the same bus after a restart).
pub(crate) fn next_owner() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// What settles a delivery ([`crate::Bus::ack`], [`crate::Bus::nack`],
/// [`crate::Bus::reject`]). Opaque: only the bus handle that handed it out understands
/// it, and it names its topic, so it cannot settle another topic's or bus's message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryToken {
    owner: u64,
    topic: Topic,
    handle: Handle,
}

/// The backend's own reference to a delivery. A sequence number for the embedded and
/// volatile buses; brokers add theirs (a Redis stream id, a JetStream ack subject).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Handle {
    Seq(u64),
}

impl DeliveryToken {
    /// A token for message `seq` of `topic`, handed out by bus handle `owner`.
    pub(crate) fn seq(owner: u64, topic: Topic, seq: u64) -> Self {
        Self {
            owner,
            topic,
            handle: Handle::Seq(seq),
        }
    }

    /// The sequence number, if this token was handed out by `owner`.
    pub(crate) fn seq_of(&self, owner: u64) -> Option<u64> {
        match self.handle {
            Handle::Seq(seq) if self.owner == owner => Some(seq),
            Handle::Seq(_) => None,
        }
    }

    /// The topic of the delivery this token settles.
    pub fn topic(&self) -> Topic {
        self.topic
    }
}

/// A message handed to a consumer; settle its token once its effects are committed.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// What to pass to ack, nack or reject.
    pub token: DeliveryToken,
    /// The message's bytes exactly as published.
    pub payload: Bytes,
    /// The message's weight as published.
    pub weight: u32,
    /// Handed out before (nacked, or unacked when its consumer stopped): its effects may
    /// already be partly applied.
    pub redelivered: bool,
    local: Option<Local>,
}

impl Delivery {
    /// Assembles a delivery (backends only).
    pub(crate) fn new(
        token: DeliveryToken,
        payload: Bytes,
        weight: u32,
        redelivered: bool,
        local: Option<Local>,
    ) -> Self {
        Self {
            token,
            payload,
            weight,
            redelivered,
            local,
        }
    }

    /// Whether the publisher's in-process value came along (so decoding is skipped).
    pub fn has_local(&self) -> bool {
        self.local.is_some()
    }

    /// The same delivery without the in-process value, as another process would get it.
    pub fn without_local(mut self) -> Self {
        self.local = None;
        self
    }

    pub(crate) fn local(&self) -> Option<&Local> {
        self.local.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_their_names_and_index_their_arrays() {
        for (i, topic) in Topic::ALL.into_iter().enumerate() {
            assert_eq!(topic.index(), i);
            assert_eq!(Topic::from_name(topic.name()), Some(topic));
            assert_eq!(topic.to_string(), topic.name());
        }
        assert_eq!(Topic::from_name("Readings"), None, "names are exact");
        assert_eq!(Topic::from_name("readings-16"), None);
        assert_eq!(Topic::from_name(""), None);
    }

    #[test]
    fn readings_partitions_are_a_family_that_starts_with_the_readings_topic() {
        assert_eq!(Topic::readings(0), Some(Topic::READINGS));
        assert_eq!(Topic::readings(3).map(Topic::name), Some("readings-3"));
        assert_eq!(Topic::readings(MAX_READINGS_PARTITIONS), None);
        for p in 0..MAX_READINGS_PARTITIONS {
            let topic = Topic::readings(p).unwrap();
            assert_eq!(topic.readings_partition(), Some(p), "{topic}");
        }
        assert_eq!(Topic::EVENTS.readings_partition(), None);
        let names: Vec<_> = Topic::readings_partitions(3).map(Topic::name).collect();
        assert_eq!(names, ["readings", "readings-1", "readings-2"]);
        assert_eq!(Topic::readings_partitions(0).count(), 1);
        assert_eq!(
            Topic::readings_partitions(99).count(),
            MAX_READINGS_PARTITIONS
        );
    }

    #[test]
    fn a_token_answers_only_its_owner() {
        let token = DeliveryToken::seq(7, Topic::EVENTS, 42);
        assert_eq!(token.seq_of(7), Some(42));
        assert_eq!(token.seq_of(8), None);
        assert_eq!(token.topic(), Topic::EVENTS);
        assert_ne!(token, DeliveryToken::seq(7, Topic::READINGS, 42));
        assert_ne!(next_owner(), next_owner());
    }

    #[test]
    fn local_values_come_back_only_as_their_own_type() {
        let local = Local::new(Arc::new(5u32), 4);
        assert_eq!(local.get::<u32>().as_deref(), Some(&5));
        assert!(local.get::<u64>().is_none());
        assert_eq!(local.bytes(), 4);
    }
}
