//! What the broker-backed fan-outs share: local delivery, the bounded outgoing queues
//! and the task that drains them, decoding what arrives (own echoes and bad messages
//! skipped), the presence flag behind `live_is_idle`, and the counters. A backend only
//! moves bytes: it implements [`WireSender`] and feeds [`Engine::receive`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch, Notify};
use tracing::{debug, info, warn};
use vigia_core::{Control, FanoutEnvelope, FanoutMessage, LiveEvent};

use crate::{ControlHandler, FanoutOptions, FanoutStats, MIN_LIVE_CAPACITY};

/// The most readings one outgoing message carries: a bigger live readings event is split
/// into several messages (subscribers see several events), so that one ingest request's
/// batch stays well under NATS's default 1 MiB payload limit.
pub const READINGS_PER_MESSAGE: usize = 1000;

/// The first pause before a control message the broker refused is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between two tries.
const RETRY_MAX: Duration = Duration::from_secs(1);

/// Which channel (Redis) or subject (NATS) a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Live,
    Control,
}

/// Sends encoded messages to the broker.
pub(crate) trait WireSender: Send + Sync + 'static {
    /// Publishes `payload` on `channel`; the error says why it did not go.
    fn send(
        &self,
        channel: Channel,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Indexes into [`Engine::counters`].
#[derive(Clone, Copy)]
enum Counter {
    LiveDropped,
    ControlDropped,
    Oversized,
    BadMessages,
    Reconnects,
}

impl Counter {
    fn metric(self) -> &'static str {
        match self {
            Counter::LiveDropped => "vigia_fanout_live_dropped_total",
            Counter::ControlDropped => "vigia_fanout_control_dropped_total",
            Counter::Oversized => "vigia_fanout_oversized_total",
            Counter::BadMessages => "vigia_fanout_bad_messages_total",
            Counter::Reconnects => "vigia_fanout_reconnects_total",
        }
    }
}

/// One fan-out handle's state, shared by the handle and its tasks.
pub(crate) struct Engine {
    backend: &'static str,
    origin: u64,
    live: broadcast::Sender<LiveEvent>,
    handlers: RwLock<Vec<ControlHandler>>,
    live_out: mpsc::Sender<LiveEvent>,
    control_out: mpsc::Sender<Control>,
    /// Whether another process may have live subscribers (true until known otherwise).
    remote_listeners: AtomicBool,
    /// Woken when this process gains live subscribers, so presence is announced at once.
    presence_wanted: Notify,
    max_message_bytes: AtomicUsize,
    counters: [AtomicU64; 5],
}

/// The receiving ends of an engine's outgoing queues, for [`run_writer`].
pub(crate) struct Outbox {
    live: mpsc::Receiver<LiveEvent>,
    control: mpsc::Receiver<Control>,
}

impl Engine {
    /// An engine for `backend` (a name for logs and metrics) with a random origin id.
    pub fn new(backend: &'static str, options: &FanoutOptions) -> (Arc<Engine>, Outbox) {
        let (live, _) = broadcast::channel(options.live_capacity.max(MIN_LIVE_CAPACITY));
        let queue = options.queue_capacity.max(1);
        let (live_out, live_rx) = mpsc::channel(queue);
        let (control_out, control_rx) = mpsc::channel(queue);
        let engine = Engine {
            backend,
            origin: random_origin(),
            live,
            handlers: RwLock::new(Vec::new()),
            live_out,
            control_out,
            remote_listeners: AtomicBool::new(true),
            presence_wanted: Notify::new(),
            max_message_bytes: AtomicUsize::new(options.max_message_bytes.max(1024)),
            counters: Default::default(),
        };
        let outbox = Outbox {
            live: live_rx,
            control: control_rx,
        };
        (Arc::new(engine), outbox)
    }

    /// This handle's origin id (in every envelope it sends).
    pub fn origin(&self) -> u64 {
        self.origin
    }

    fn count(&self, counter: Counter) -> u64 {
        metrics::counter!(counter.metric(), "backend" => self.backend).increment(1);
        self.counters[counter as usize].fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn stats(&self) -> FanoutStats {
        let get = |c: Counter| self.counters[c as usize].load(Ordering::Relaxed);
        FanoutStats {
            live_dropped: get(Counter::LiveDropped),
            control_dropped: get(Counter::ControlDropped),
            oversized: get(Counter::Oversized),
            bad_messages: get(Counter::BadMessages),
            reconnects: get(Counter::Reconnects),
        }
    }

    /// Lowers the message size limit (a NATS server's `max_payload` may be smaller).
    pub fn limit_message_bytes(&self, limit: usize) {
        self.max_message_bytes.fetch_min(limit, Ordering::Relaxed);
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes.load(Ordering::Relaxed)
    }

    pub fn publish_live(&self, event: LiveEvent) {
        if self.live.receiver_count() > 0 {
            // An error only means the last subscriber just left.
            let _ = self.live.send(event.clone());
        }
        if !self.remote_listeners.load(Ordering::Relaxed) {
            return;
        }
        if self.live_out.try_send(event).is_err() {
            let dropped = self.count(Counter::LiveDropped);
            if dropped.is_power_of_two() {
                warn!(
                    backend = self.backend,
                    dropped, "fan-out: outgoing live queue full, live events dropped"
                );
            }
        }
    }

    pub fn subscribe_live(&self) -> broadcast::Receiver<LiveEvent> {
        let receiver = self.live.subscribe();
        self.presence_wanted.notify_one();
        receiver
    }

    pub fn live_is_idle(&self) -> bool {
        self.live.receiver_count() == 0 && !self.remote_listeners.load(Ordering::Relaxed)
    }

    /// Whether this process has live subscribers, so should hold a presence subscription.
    pub fn wants_presence(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Resolves when this process may have gained live subscribers.
    pub async fn presence_wanted(&self) {
        self.presence_wanted.notified().await;
    }

    /// What the last presence check said: `Some(listeners)`, or `None` when it could not
    /// tell (then listeners are assumed).
    pub fn set_remote_listeners(&self, known: Option<bool>) {
        self.remote_listeners
            .store(known.unwrap_or(true), Ordering::Relaxed);
    }

    pub fn publish_control(&self, message: Control) {
        self.run_handlers(&message);
        if self.control_out.try_send(message).is_err() {
            let dropped = self.count(Counter::ControlDropped);
            warn!(
                backend = self.backend,
                dropped,
                "fan-out: outgoing control queue full, a control message was dropped \
                 (other processes' caches catch up on their refresh timer)"
            );
        }
    }

    pub fn on_control(&self, handler: ControlHandler) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(handler);
    }

    fn run_handlers(&self, message: &Control) {
        let handlers = self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for handler in handlers {
            handler(message);
        }
    }

    /// The handle lost the broker and is connected again.
    pub fn reconnected(&self) {
        let reconnects = self.count(Counter::Reconnects);
        info!(
            backend = self.backend,
            reconnects, "fan-out: connected to the broker again"
        );
    }

    /// Handles one message that arrived on `channel`: decodes it, skips this handle's own
    /// echoes, and delivers it; anything else is counted and ignored.
    pub fn receive(&self, channel: Channel, payload: &[u8]) {
        if channel == Channel::Live && self.live.receiver_count() == 0 {
            // Nobody here to give it to: not even worth decoding.
            return;
        }
        if payload.len() > self.max_message_bytes() {
            self.bad(channel, &format!("{} bytes, over the limit", payload.len()));
            return;
        }
        let envelope = match FanoutEnvelope::decode(payload) {
            Ok(envelope) => envelope,
            Err(why) => {
                self.bad(channel, &why);
                return;
            }
        };
        if envelope.origin == self.origin {
            return;
        }
        match (channel, envelope.message) {
            (Channel::Live, FanoutMessage::Live(event)) => {
                let _ = self.live.send(event);
            }
            (Channel::Control, FanoutMessage::Control(message)) => self.run_handlers(&message),
            (_, _) => self.bad(channel, "a message of the other channel"),
        }
    }

    fn bad(&self, channel: Channel, why: &str) {
        let count = self.count(Counter::BadMessages);
        // Logged at 1, 2, 4, 8…: someone publishing garbage cannot flood the log.
        if count.is_power_of_two() {
            warn!(backend = self.backend, ?channel, count, %why, "fan-out: ignored a message that is not Vigía's");
        } else {
            debug!(backend = self.backend, ?channel, %why, "fan-out: ignored a bad message");
        }
    }

    /// The messages that carry `message`: readings events split by
    /// [`READINGS_PER_MESSAGE`], each checked against the size limit.
    fn encode(&self, message: FanoutMessage) -> Vec<Vec<u8>> {
        let parts = match message {
            FanoutMessage::Live(LiveEvent::Readings { tenant, readings })
                if readings.len() > READINGS_PER_MESSAGE =>
            {
                readings
                    .chunks(READINGS_PER_MESSAGE)
                    .map(|chunk| {
                        FanoutMessage::Live(LiveEvent::Readings {
                            tenant,
                            readings: Arc::new(chunk.to_vec()),
                        })
                    })
                    .collect()
            }
            other => vec![other],
        };
        let limit = self.max_message_bytes();
        parts
            .into_iter()
            .filter_map(|message| {
                let bytes = FanoutEnvelope {
                    origin: self.origin,
                    message,
                }
                .encode();
                if bytes.len() <= limit {
                    return Some(bytes);
                }
                let oversized = self.count(Counter::Oversized);
                warn!(
                    backend = self.backend,
                    bytes = bytes.len(),
                    limit,
                    oversized,
                    "fan-out: a message over the size limit was dropped"
                );
                None
            })
            .collect()
    }
}

/// A random origin id, different for every handle (several per process in tests).
fn random_origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// Drains the outgoing queues into `sender` until `stop` fires or is dropped: control
/// first (a flood of live events never delays a control message), a live event the
/// broker refuses dropped and counted, a control message retried until it goes.
pub(crate) async fn run_writer<S: WireSender>(
    engine: Arc<Engine>,
    mut outbox: Outbox,
    sender: S,
    mut stop: watch::Receiver<bool>,
) {
    let mut down = false;
    loop {
        let (channel, message) = tokio::select! {
            biased;
            _ = stop.changed() => return,
            Some(control) = outbox.control.recv() => (Channel::Control, FanoutMessage::Control(control)),
            Some(live) = outbox.live.recv() => (Channel::Live, FanoutMessage::Live(live)),
            else => return,
        };
        for payload in engine.encode(message) {
            let mut pause = RETRY_FIRST;
            loop {
                match sender.send(channel, payload.clone()).await {
                    Ok(()) => {
                        if down {
                            down = false;
                            info!(backend = engine.backend, "fan-out: publishing again");
                        }
                        break;
                    }
                    Err(why) => {
                        if !down {
                            down = true;
                            warn!(backend = engine.backend, %why, "fan-out: the broker refused a publish; live events are dropped and control messages retried until it is back");
                        }
                        if channel == Channel::Live {
                            engine.count(Counter::LiveDropped);
                            break;
                        }
                        tokio::select! {
                            _ = stop.changed() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                        pause = (pause * 2).min(RETRY_MAX);
                    }
                }
            }
        }
    }
}

/// `impl Fanout` for a handle whose `engine` field does the work (Redis, NATS): the
/// backends differ only in how their writer and reader tasks talk to the broker.
macro_rules! fanout_through_engine {
    ($handle:ty) => {
        impl $crate::Fanout for $handle {
            fn publish_live(&self, event: vigia_core::LiveEvent) {
                self.engine.publish_live(event);
            }

            fn subscribe_live(&self) -> tokio::sync::broadcast::Receiver<vigia_core::LiveEvent> {
                self.engine.subscribe_live()
            }

            fn live_is_idle(&self) -> bool {
                self.engine.live_is_idle()
            }

            fn publish_control(&self, message: vigia_core::Control) {
                self.engine.publish_control(message);
            }

            fn on_control(&self, handler: $crate::ControlHandler) {
                self.engine.on_control(handler);
            }

            fn stats(&self) -> $crate::FanoutStats {
                self.engine.stats()
            }
        }
    };
}
pub(crate) use fanout_through_engine;

#[cfg(test)]
mod tests {
    use vigia_core::{Reading, SensorId, TenantId, Timestamp};

    use super::*;

    fn engine() -> Arc<Engine> {
        Engine::new("test", &FanoutOptions::default()).0
    }

    fn readings(n: usize) -> LiveEvent {
        LiveEvent::Readings {
            tenant: TenantId(1),
            readings: Arc::new(
                (0..n)
                    .map(|i| Reading {
                        sensor: format!("S-{i}"),
                        metric: "temperature".into(),
                        ts: Timestamp(i as i64),
                        value: 1.0,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn big_readings_events_are_split_and_oversized_messages_dropped() {
        let engine = engine();
        let parts = engine.encode(FanoutMessage::Live(readings(2 * READINGS_PER_MESSAGE + 1)));
        let sizes: Vec<usize> = parts
            .iter()
            .map(|p| match FanoutEnvelope::decode(p).unwrap().message {
                FanoutMessage::Live(LiveEvent::Readings { readings, .. }) => readings.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, [READINGS_PER_MESSAGE, READINGS_PER_MESSAGE, 1]);

        engine.limit_message_bytes(2048);
        let long_rule = Control::ExcursionForgotten {
            sensor: SensorId(1),
            rule: "r".repeat(4096),
        };
        assert!(engine.encode(FanoutMessage::Control(long_rule)).is_empty());
        assert_eq!(engine.stats().oversized, 1);
    }

    #[test]
    fn own_echoes_are_skipped_and_foreign_messages_delivered() {
        let engine = engine();
        let mut rx = engine.subscribe_live();
        let own = FanoutEnvelope {
            origin: engine.origin(),
            message: FanoutMessage::Live(readings(1)),
        };
        engine.receive(Channel::Live, &own.encode());
        assert!(rx.try_recv().is_err(), "an echo of our own publish");
        let foreign = FanoutEnvelope {
            origin: engine.origin().wrapping_add(1),
            message: FanoutMessage::Live(readings(2)),
        };
        engine.receive(Channel::Live, &foreign.encode());
        assert_eq!(rx.try_recv().unwrap(), readings(2));
        engine.receive(Channel::Control, &foreign.encode());
        assert_eq!(
            engine.stats().bad_messages,
            1,
            "live on the control channel"
        );
    }

    #[test]
    fn live_is_idle_only_when_known_and_local_subscribers_count() {
        let engine = engine();
        assert!(!engine.live_is_idle(), "unknown: assume listeners");
        engine.set_remote_listeners(Some(false));
        assert!(engine.live_is_idle());
        let rx = engine.subscribe_live();
        assert!(!engine.live_is_idle());
        drop(rx);
        assert!(engine.live_is_idle());
        engine.set_remote_listeners(None);
        assert!(!engine.live_is_idle());
    }

    #[test]
    fn a_full_outgoing_queue_drops_and_counts() {
        let options = FanoutOptions {
            queue_capacity: 2,
            ..FanoutOptions::default()
        };
        let (engine, _outbox) = Engine::new("test", &options);
        for _ in 0..5 {
            engine.publish_live(readings(1));
        }
        engine.publish_control(Control::KeyRevoked { hash: [1; 32] });
        engine.publish_control(Control::KeyRevoked { hash: [2; 32] });
        engine.publish_control(Control::KeyRevoked { hash: [3; 32] });
        let stats = engine.stats();
        assert_eq!((stats.live_dropped, stats.control_dropped), (3, 1));
    }
}
