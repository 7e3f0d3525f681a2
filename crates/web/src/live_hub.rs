//! This process's end of the live feed: subscriptions come from the fan-out (fed by the
//! workers of any process), and a closing signal ends every stream at shutdown.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};
use vigia_core::LiveEvent;
use vigia_fanout::Fanout;

/// Live subscriptions of WebSocket and SSE clients.
#[derive(Clone)]
pub struct LiveHub {
    fanout: Arc<dyn Fanout>,
    closing: watch::Sender<bool>,
}

impl LiveHub {
    pub fn new(fanout: Arc<dyn Fanout>) -> Self {
        let (closing, _) = watch::channel(false);
        Self { fanout, closing }
    }

    /// A subscriber that falls too far behind gets `Lagged(n)` and is told so.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.fanout.subscribe_live()
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
