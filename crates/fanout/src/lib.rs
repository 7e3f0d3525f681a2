//! Fan-out: messages every process of a deployment must hear, as opposed to the bus,
//! where each message goes to one consumer.
//!
//! Two kinds travel here. **Live events** (committed readings, alert changes) go from
//! the workers that commit them to the processes that hold WebSocket/SSE subscribers;
//! they are lossy by design — a subscriber that falls behind gets a `Lagged` count and
//! the client refetches. **Control messages** ([`Control`]: a sensor changed, an
//! excursion was forgotten, a key was revoked) go from the process that made a change
//! to every process that caches the thing changed; handlers are registered at start by
//! each role and must be quick and non-blocking.
//!
//! This crate is not durable: what must not be lost goes through the bus's `events`
//! topic. [`open`] makes one from its URL (`fanout` / `VIGIA_FANOUT`).
//!
//! # Backends
//!
//! - `memory://` (or an empty URL): [`InProcessFanout`], one process. Control handlers
//!   run synchronously inside [`Fanout::publish_control`], so a change is applied
//!   everywhere before the request that made it is answered.
//! - `redis://…`: [`RedisFanout`], Redis pub/sub channels `PREFIX:live` and
//!   `PREFIX:control` (see [`redis`]).
//! - `nats://…`: [`NatsFanout`], core NATS subjects `PREFIX.live` and `PREFIX.control`,
//!   not JetStream (see [`nats`]).
//!
//! # Semantics across processes
//!
//! Both broker backends share one engine, so they behave alike:
//!
//! - Messages travel as [`vigia_core::fanout_wire`] says: a versioned JSON envelope with
//!   the sending handle's origin id. A handle skips its own messages when the broker
//!   echoes them, so nothing is applied twice.
//! - [`Fanout::publish_live`] never blocks: it hands the event to the local subscribers
//!   at once and puts it on a bounded outgoing queue ([`FanoutOptions::queue_capacity`]
//!   events); when the queue is full, or the broker refuses the publish, the event is
//!   dropped and counted ([`FanoutStats::live_dropped`]). When the handle knows that no
//!   other process listens, nothing is sent at all.
//! - [`Fanout::publish_control`] runs this process's handlers at once, like the
//!   in-process fan-out, then queues the message for the others (its own bounded queue of
//!   [`FanoutOptions::queue_capacity`] messages, so a flood of live events never crowds
//!   it out). While the broker is away the message at the head of the queue is retried
//!   (every 100 ms to 1 s) until it goes; a message that finds the queue full is dropped
//!   and counted ([`FanoutStats::control_dropped`]). Other processes run their handlers
//!   as the message arrives, on the handle's reader task. Caches fed by control messages
//!   also refresh on a timer in cross-process deployments, so a lost message heals.
//! - Subscribers get a bounded broadcast receiver ([`FanoutOptions::live_capacity`]
//!   events): one that falls behind gets `Lagged(n)`, never unbounded memory. Incoming
//!   messages larger than [`FanoutOptions::max_message_bytes`], undecodable ones
//!   (garbage published by someone else, a newer wire version) and ones on the wrong
//!   channel are ignored and counted ([`FanoutStats::bad_messages`]); they never reach a
//!   subscriber or a handler. Outgoing readings events are split into messages of at most
//!   [`READINGS_PER_MESSAGE`] readings; a message still larger than the limit is dropped
//!   and counted ([`FanoutStats::oversized`]).
//! - [`Fanout::live_is_idle`]: true when this process has no live subscriber and the
//!   handle knows that no other process has one. Every handle with live subscribers
//!   holds a presence subscription (`PREFIX:live:listeners` / `PREFIX.live.listeners`);
//!   every [`FanoutOptions::presence_every`] a handle checks whether anyone else holds
//!   one (Redis: `PUBSUB NUMSUB`; NATS: a request that the holders answer, or "no
//!   responders"). Until the first answer, and whenever the broker does not answer, the
//!   handle assumes listeners (not idle). So a new subscriber in another process is
//!   seen within about two `presence_every`, and events published before that may not
//!   reach it (it is told nothing: the live feed starts when it starts).
//! - Reconnects are automatic: the handle logs when it loses the broker and when it is
//!   back ([`FanoutStats::reconnects`]). What was published while it was away is lost
//!   for live events (lossy by design) and retried for control messages.

mod engine;
pub mod nats;
pub mod redis;
mod registry;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;
use vigia_core::{Control, LiveEvent};

pub use engine::READINGS_PER_MESSAGE;
pub use nats::NatsFanout;
pub use redis::RedisFanout;
pub use registry::{open, supported_schemes, validate_url, FanoutOptions, OpenError};

/// A control-message handler; see the crate docs for what it may do.
pub type ControlHandler = Arc<dyn Fn(&Control) + Send + Sync>;

/// Messages to every process.
pub trait Fanout: Send + Sync + 'static {
    /// Sends a live event to every subscriber of every process; never blocks.
    fn publish_live(&self, event: LiveEvent);
    /// A new subscription to live events (tenant filtering is the subscriber's job).
    fn subscribe_live(&self) -> broadcast::Receiver<LiveEvent>;
    /// True when no process listens: producers skip building events then.
    fn live_is_idle(&self) -> bool;
    /// Sends a control message to every process, this one included.
    fn publish_control(&self, message: Control);
    /// Registers a handler for every control message from now on.
    fn on_control(&self, handler: ControlHandler);
    /// What this handle dropped or ignored so far (all zero in process: nothing travels).
    fn stats(&self) -> FanoutStats {
        FanoutStats::default()
    }
}

/// Counts of what a fan-out handle dropped or ignored, since it was opened. Also
/// recorded as the `vigia_fanout_*_total` counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanoutStats {
    /// Live events not sent: the outgoing queue was full or the broker refused them.
    pub live_dropped: u64,
    /// Control messages not sent because the outgoing queue was full.
    pub control_dropped: u64,
    /// Outgoing messages larger than the limit, dropped.
    pub oversized: u64,
    /// Incoming messages ignored: too large, undecodable, or on the wrong channel.
    pub bad_messages: u64,
    /// Times the handle lost the broker and connected again.
    pub reconnects: u64,
}

/// The smallest live capacity any fan-out uses: fewer would make every burst a lag.
pub const MIN_LIVE_CAPACITY: usize = 16;

/// Fan-out within one process: a bounded broadcast channel for live events and direct
/// calls of the registered handlers for control messages.
pub struct InProcessFanout {
    live: broadcast::Sender<LiveEvent>,
    handlers: RwLock<Vec<ControlHandler>>,
}

impl InProcessFanout {
    /// A fan-out whose live subscribers may fall `live_capacity` events behind before
    /// they are told they lagged.
    pub fn new(live_capacity: usize) -> Self {
        let (live, _) = broadcast::channel(live_capacity.max(MIN_LIVE_CAPACITY));
        Self {
            live,
            handlers: RwLock::new(Vec::new()),
        }
    }
}

impl Fanout for InProcessFanout {
    fn publish_live(&self, event: LiveEvent) {
        // An error only means there is no subscriber right now, which is fine.
        let _ = self.live.send(event);
    }

    fn subscribe_live(&self) -> broadcast::Receiver<LiveEvent> {
        self.live.subscribe()
    }

    fn live_is_idle(&self) -> bool {
        self.live.receiver_count() == 0
    }

    fn publish_control(&self, message: Control) {
        let handlers = self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for handler in handlers {
            handler(&message);
        }
    }

    fn on_control(&self, handler: ControlHandler) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(handler);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::broadcast::error::TryRecvError;
    use vigia_core::{Reading, SensorId, TenantId, Timestamp};

    use super::*;

    fn readings(tenant: i64) -> LiveEvent {
        LiveEvent::Readings {
            tenant: TenantId(tenant),
            readings: Arc::new(vec![Reading {
                sensor: "CF-1".into(),
                metric: "temperature".into(),
                ts: Timestamp(0),
                value: 1.0,
            }]),
        }
    }

    #[test]
    fn control_handlers_run_before_publish_returns() {
        let fanout = InProcessFanout::new(16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        for id in 0..2 {
            let seen = seen.clone();
            fanout.on_control(Arc::new(move |m: &Control| {
                seen.lock().unwrap().push((id, m.clone()));
            }));
        }
        let message = Control::ExcursionForgotten {
            sensor: SensorId(3),
            rule: "high".into(),
        };
        fanout.publish_control(message.clone());
        assert_eq!(
            *seen.lock().unwrap(),
            [(0, message.clone()), (1, message)],
            "every handler, in registration order, synchronously"
        );
    }

    #[test]
    fn live_subscribers_are_told_when_they_lag() {
        let fanout = InProcessFanout::new(16);
        assert!(fanout.live_is_idle());
        let mut rx = fanout.subscribe_live();
        assert!(!fanout.live_is_idle());
        for _ in 0..20 {
            fanout.publish_live(readings(1));
        }
        assert!(
            matches!(rx.try_recv(), Err(TryRecvError::Lagged(4))),
            "missed events are counted, never silently skipped"
        );
        assert!(rx.try_recv().is_ok(), "then the newest events follow");
    }
}
