//! The live feed: committed readings and alert changes, fanned out to WebSocket and
//! SSE subscribers of this process.

use tokio::sync::{broadcast, watch};
use vigia_core::LiveEvent;

/// Bounded fan-out. A subscriber that falls more than `capacity` events behind is told
/// how many it missed (and refetches) rather than slowing ingest down.
#[derive(Clone)]
pub struct LiveHub {
    events: broadcast::Sender<LiveEvent>,
    closing: watch::Sender<bool>,
}

impl LiveHub {
    pub fn new(capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity.max(16));
        let (closing, _) = watch::channel(false);
        Self { events, closing }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.events.subscribe()
    }

    /// True when nobody listens: producers skip building events then.
    pub fn is_idle(&self) -> bool {
        self.events.receiver_count() == 0
    }

    pub fn publish(&self, event: LiveEvent) {
        // An error only means there is no subscriber right now, which is fine.
        let _ = self.events.send(event);
    }

    /// Resolves when the server is shutting down, so long-lived streams can end.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Ends every live stream (graceful shutdown would otherwise wait on them forever).
    pub fn close(&self) {
        let _ = self.closing.send(true);
    }
}
