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
//! The in-process implementation calls control handlers synchronously inside
//! [`Fanout::publish_control`], so in one process a change is applied everywhere before
//! the request that made it is answered. Cross-process implementations (Redis pub/sub,
//! NATS subjects: the scale-out issue) deliver asynchronously; caches there also refresh
//! on a timer so a lost message heals. This crate is not durable: what must not be lost
//! goes through the bus's `events` topic.

use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;
use vigia_core::{Control, LiveEvent};

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
}

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
        let (live, _) = broadcast::channel(live_capacity.max(16));
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
