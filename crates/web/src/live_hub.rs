//! This process's end of the live feed: subscriptions come from the fan-out (fed by the
//! workers of any process), and a closing signal ends every stream at shutdown.
//!
//! Subscribers are bounded: in all (`live.max_subscribers`, past it 503) and per API key
//! (`live.max_subscribers_per_key`, past it 429), so one client opening streams in a loop
//! cannot take the memory every other client needs. A [`Subscription`] holds its place
//! and gives it back when dropped, however the stream ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use vigia_core::{ApiKeyId, LiveEvent};
use vigia_fanout::Fanout;

/// Limits of the live feed (see `docs/configuration.md`, `live.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveLimits {
    /// Open WebSocket and SSE streams of this process.
    pub max_subscribers: usize,
    /// Open streams of one API key.
    pub max_subscribers_per_key: usize,
    /// How long one frame may take to reach a client before the stream is closed.
    pub send_timeout: Duration,
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            max_subscribers: 10_000,
            max_subscribers_per_key: 100,
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("this server holds its most live streams ({0}); retry later")]
    Full(usize),
    #[error("this API key holds its most live streams ({0}); close one first")]
    KeyFull(usize),
}

/// Live subscriptions of WebSocket and SSE clients.
#[derive(Clone)]
pub struct LiveHub {
    fanout: Arc<dyn Fanout>,
    closing: watch::Sender<bool>,
    limits: LiveLimits,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_key: HashMap<ApiKeyId, usize>,
}

/// One live stream's place; released when dropped.
pub struct Subscription {
    pub events: broadcast::Receiver<LiveEvent>,
    key: ApiKeyId,
    open: Arc<Mutex<Open>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.per_key.remove(&self.key);
            }
        }
    }
}

impl LiveHub {
    pub fn new(fanout: Arc<dyn Fanout>, limits: LiveLimits) -> Self {
        let (closing, _) = watch::channel(false);
        Self {
            fanout,
            closing,
            limits,
            open: Arc::default(),
        }
    }

    pub fn limits(&self) -> LiveLimits {
        self.limits
    }

    /// A new stream for `key`, within the limits. A subscriber that falls too far behind
    /// gets `Lagged(n)` and is told so.
    pub fn subscribe(&self, key: ApiKeyId) -> Result<Subscription, SubscribeError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.max_subscribers {
            return Err(SubscribeError::Full(self.limits.max_subscribers));
        }
        let of_key = open.per_key.entry(key).or_insert(0);
        if *of_key >= self.limits.max_subscribers_per_key {
            return Err(SubscribeError::KeyFull(self.limits.max_subscribers_per_key));
        }
        *of_key += 1;
        open.total += 1;
        drop(open);
        Ok(Subscription {
            events: self.fanout.subscribe_live(),
            key,
            open: self.open.clone(),
        })
    }

    /// Open streams of this process.
    pub fn open_subscribers(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
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

#[cfg(test)]
mod tests {
    use super::*;
    use vigia_fanout::InProcessFanout;

    #[test]
    fn subscribers_are_bounded_in_all_and_per_key_and_places_come_back() {
        let hub = LiveHub::new(
            Arc::new(InProcessFanout::new(16)),
            LiveLimits {
                max_subscribers: 3,
                max_subscribers_per_key: 2,
                ..LiveLimits::default()
            },
        );
        let (a, b) = (ApiKeyId(1), ApiKeyId(2));
        let first = hub.subscribe(a).unwrap();
        let _second = hub.subscribe(a).unwrap();
        assert_eq!(hub.subscribe(a).err(), Some(SubscribeError::KeyFull(2)));
        let _third = hub.subscribe(b).unwrap();
        assert_eq!(hub.subscribe(b).err(), Some(SubscribeError::Full(3)));
        drop(first);
        assert_eq!(hub.open_subscribers(), 2);
        let _again = hub.subscribe(a).unwrap();
        assert_eq!(hub.open_subscribers(), 3);
    }
}
