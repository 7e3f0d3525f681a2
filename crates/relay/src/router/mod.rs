//! The router core: the live control channels of connectors, per (tenant, connector id),
//! and the transfers between them and clients. [`Relay`] is the one type the web layer
//! mounts: its client side ([`Relay::buffer`], [`Relay::stream`], [`Relay::offload`],
//! [`Relay::list_datasets`], [`Relay::connectors`]) backs the client routes, its connector
//! side ([`Relay::serve_channel`] through [`websocket`], [`Relay::accept_result`],
//! [`Relay::accept_stream`], [`Relay::accept_complete`], [`Relay::accept_fail`]) backs the
//! connector routes; every error is a [`RelayError`] with its HTTP status.
//!
//! Every transfer starts with a `stat` on the control channel, so a missing or refused
//! dataset is answered (404, 400) before any byte moves and sizes are checked (413, 416)
//! up front. Timeouts: `request_timeout` bounds each control round trip and every stretch
//! of a transfer without progress (not the whole transfer: a large dataset to a slow
//! client takes as long as it takes, as long as bytes keep moving).

mod client;
mod directory;
mod session;
mod spool;
mod transfer;
mod upload;
pub mod websocket;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vigia_core::TenantId;
use vigia_objects::Objects;

pub use client::StreamTransfer;
pub use directory::{ConnectorDirectory, MemoryDirectory};
pub use session::{Inbound, Outbound};
pub use spool::{Buffered, BufferedBody, MemoryGauge};
pub use transfer::{BufferedTransfer, Offloaded, TransferSummary};
pub use upload::ConnectorCredentials;

use crate::protocol::{encode, DatasetInfo, Message, OFFLINE_AFTER};
use crate::RelayError;
use transfer::Slot;

/// S3's largest single PUT. Offloading a larger dataset is refused (413) rather than
/// split into a multipart upload: the connector would need one presigned URL per part
/// and the router to complete the upload, and a dataset that large streams instead.
pub const MAX_OFFLOAD_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// How the router runs (`[relay]` in the configuration).
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// `relay.request_timeout`: a control round trip, and the longest stretch of a
    /// transfer without progress.
    pub request_timeout: Duration,
    /// Silence after which a connector is offline and its channel dropped (45 s).
    pub offline_after: Duration,
    /// The heartbeat interval told to connectors (15 s).
    pub heartbeat_interval: Duration,
    /// `relay.buffer_memory_bytes`: the memory ALL buffered transfers of this router share
    /// (8 MiB); a transfer that would go past it spills to a file in `spill_dir`.
    pub buffer_memory_bytes: usize,
    /// `relay.max_buffered_bytes`: the largest dataset buffered at all (1 GiB); above it, 413.
    pub max_buffered_bytes: u64,
    /// Bytes queued between connector and client per streamed transfer (2 MiB).
    pub stream_buffer_bytes: usize,
    /// Where buffered transfers spill (the data dir).
    pub spill_dir: PathBuf,
    /// Validity of an offload's upload and download URLs.
    pub offload_expiry: Duration,
    /// The `Retry-After` of an offline connector's 503, and what a shutting-down router
    /// tells its connectors.
    pub retry_after: Duration,
    /// Transfers in flight at once over all connectors; more are 503.
    pub max_transfers: usize,
}

impl RelayConfig {
    /// The defaults, spilling under `spill_dir`.
    pub fn new(spill_dir: impl Into<PathBuf>) -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            offline_after: OFFLINE_AFTER,
            heartbeat_interval: crate::protocol::HEARTBEAT_INTERVAL,
            buffer_memory_bytes: 8 * 1024 * 1024,
            max_buffered_bytes: 1024 * 1024 * 1024,
            stream_buffer_bytes: 2 * 1024 * 1024,
            spill_dir: spill_dir.into(),
            offload_expiry: Duration::from_secs(15 * 60),
            retry_after: Duration::from_secs(15),
            max_transfers: 1024,
        }
    }
}

/// A connector as the router knows it: tenant and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectorKey {
    pub tenant: TenantId,
    pub id: String,
}

/// What a client may ask for besides the dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferOptions {
    /// zstd between connector and router (buffer and stream).
    pub zstd: bool,
}

/// A connector's state, for `GET /api/v1/connectors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorStatus {
    pub id: String,
    pub online: bool,
    /// The last message heard on its channel; `None` if never seen by this process.
    pub last_seen: Option<SystemTime>,
    pub in_flight: Vec<TransferSummary>,
}

/// The router's counters, for tests and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    pub channels: usize,
    pub transfers_in_flight: usize,
    pub malformed_messages: u64,
    pub buffered_memory_bytes: u64,
}

/// The router: clone it freely, every clone is the same router.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("stats", &self.stats())
            .finish()
    }
}

pub(crate) struct Inner {
    config: RelayConfig,
    directory: Arc<dyn ConnectorDirectory>,
    objects: Option<Arc<dyn Objects>>,
    channels: Mutex<HashMap<ConnectorKey, Channel>>,
    /// When each connector was last heard, kept after its channel closes.
    last_seen: Mutex<HashMap<ConnectorKey, SystemTime>>,
    transfers: Mutex<HashMap<crate::protocol::TransferId, Arc<Slot>>>,
    next_id: AtomicU64,
    malformed: AtomicU64,
    gauge: Arc<MemoryGauge>,
    /// Set by [`Relay::shutdown`]: new channels are refused with this retry-after.
    shutting_down: Mutex<Option<Duration>>,
}

/// One live control channel.
struct Channel {
    session: u64,
    outbox: mpsc::Sender<Outbound>,
    last_heard: Instant,
    pending: HashMap<u64, oneshot::Sender<Result<Message, RelayError>>>,
    /// Fired to make the session close with `close_reason`.
    close: CancellationToken,
    close_reason: Arc<Mutex<(String, Option<Duration>)>>,
}

impl Relay {
    /// A router over `directory`, offloading to `objects` when given.
    pub fn new(
        config: RelayConfig,
        directory: Arc<dyn ConnectorDirectory>,
        objects: Option<Arc<dyn Objects>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                directory,
                objects,
                channels: Mutex::new(HashMap::new()),
                last_seen: Mutex::new(HashMap::new()),
                transfers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                malformed: AtomicU64::new(0),
                gauge: Arc::new(MemoryGauge::default()),
                shutting_down: Mutex::new(None),
            }),
        }
    }

    pub fn config(&self) -> &RelayConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> RelayStats {
        RelayStats {
            channels: self.inner.lock_channels().len(),
            transfers_in_flight: self.inner.lock_transfers().len(),
            malformed_messages: self.inner.malformed.load(Ordering::Relaxed),
            buffered_memory_bytes: self.inner.gauge.get(),
        }
    }

    /// The datasets connector `id` of `tenant` serves.
    pub async fn list_datasets(
        &self,
        tenant: TenantId,
        id: &str,
    ) -> Result<(Vec<DatasetInfo>, bool), RelayError> {
        let key = self.inner.live_key(tenant, id).await?;
        match self
            .inner
            .ask(&key, |request| Message::ListDatasets { request })
            .await?
        {
            Message::Datasets {
                datasets,
                truncated,
                ..
            } => Ok((datasets, truncated)),
            other => Err(unexpected(&other)),
        }
    }

    /// The state of `tenant`'s connectors among `ids` (the registered ones, from the
    /// store), in that order.
    pub fn connectors(&self, tenant: TenantId, ids: &[String]) -> Vec<ConnectorStatus> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let channels = self.inner.lock_channels();
        let last_seen = self.inner.last_seen.lock().expect("never poisoned");
        let transfers = self.inner.lock_transfers();
        ids.iter()
            .map(|id| {
                let key = ConnectorKey {
                    tenant,
                    id: id.clone(),
                };
                let channel = channels.get(&key);
                let online =
                    channel.is_some_and(|c| now - c.last_heard < self.inner.config.offline_after);
                let heard = channel.map(|c| wall - (now - c.last_heard));
                let mut in_flight: Vec<TransferSummary> = transfers
                    .values()
                    .filter(|slot| slot.key == key)
                    .map(|slot| slot.summary())
                    .collect();
                in_flight.sort_by(|a, b| a.transfer.cmp(&b.transfer));
                ConnectorStatus {
                    id: id.clone(),
                    online,
                    last_seen: heard.or_else(|| last_seen.get(&key).copied()),
                    in_flight,
                }
            })
            .collect()
    }

    /// Closes connector `id`'s channel (its token was revoked): in-flight transfers fail.
    pub fn disconnect(&self, tenant: TenantId, id: &str, reason: &str) -> bool {
        let key = ConnectorKey {
            tenant,
            id: id.to_owned(),
        };
        let channels = self.inner.lock_channels();
        match channels.get(&key) {
            Some(channel) => {
                channel.request_close(reason, None);
                true
            }
            None => false,
        }
    }

    /// Closes every channel telling connectors to come back after `retry_after` (spread
    /// by their jitter), and refuses new ones until the process ends.
    pub fn shutdown(&self, retry_after: Duration) {
        *self.inner.shutting_down.lock().expect("never poisoned") = Some(retry_after);
        for channel in self.inner.lock_channels().values() {
            channel.request_close("the router is restarting", Some(retry_after));
        }
    }
}

impl Channel {
    fn request_close(&self, reason: &str, retry_after: Option<Duration>) {
        *self.close_reason.lock().expect("never poisoned") = (reason.to_owned(), retry_after);
        self.close.cancel();
    }
}

fn unexpected(message: &Message) -> RelayError {
    RelayError::Internal(format!("unexpected answer `{}`", message.kind()))
}

impl Inner {
    fn lock_channels(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectorKey, Channel>> {
        self.channels
            .lock()
            .expect("channel registry lock is never poisoned")
    }

    fn lock_transfers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<crate::protocol::TransferId, Arc<Slot>>> {
        self.transfers
            .lock()
            .expect("transfer registry lock is never poisoned")
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The key of `tenant`'s connector `id` when its channel is live: otherwise 503 when
    /// the connector exists, 404 when it does not (also for another tenant's connector).
    async fn live_key(&self, tenant: TenantId, id: &str) -> Result<ConnectorKey, RelayError> {
        let key = ConnectorKey {
            tenant,
            id: id.to_owned(),
        };
        let live = self
            .lock_channels()
            .get(&key)
            .is_some_and(|c| c.last_heard.elapsed() < self.config.offline_after);
        if live {
            return Ok(key);
        }
        if self.directory.exists(tenant, id).await? {
            Err(RelayError::Offline {
                connector: id.to_owned(),
                retry_after: self.config.retry_after,
            })
        } else {
            Err(RelayError::UnknownConnector {
                connector: id.to_owned(),
            })
        }
    }

    /// Sends `message` to the connector's channel.
    async fn send(&self, key: &ConnectorKey, message: &Message) -> Result<(), RelayError> {
        let outbox = self
            .lock_channels()
            .get(key)
            .map(|c| c.outbox.clone())
            .ok_or_else(|| RelayError::ConnectorGone("its control channel closed".into()))?;
        let send = outbox.send(Outbound::Text(encode(message)));
        match tokio::time::timeout(self.config.request_timeout, send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RelayError::ConnectorGone(
                "its control channel closed".into(),
            )),
            Err(_) => Err(RelayError::TimedOut(self.config.request_timeout)),
        }
    }

    /// Sends without waiting (from `Drop`): a full or closed channel loses the message,
    /// which is fine for a `Cancel` — the connector's upload fails on its own then.
    fn send_now(&self, key: &ConnectorKey, message: &Message) {
        if let Some(channel) = self.lock_channels().get(key) {
            let _ = channel.outbox.try_send(Outbound::Text(encode(message)));
        }
    }

    /// One request/answer round trip on the channel, within `request_timeout`.
    async fn ask(
        &self,
        key: &ConnectorKey,
        build: impl FnOnce(u64) -> Message,
    ) -> Result<Message, RelayError> {
        let request = self.next_id();
        let (answer_tx, answer_rx) = oneshot::channel();
        {
            let mut channels = self.lock_channels();
            let channel = channels
                .get_mut(key)
                .ok_or_else(|| RelayError::ConnectorGone("its control channel closed".into()))?;
            channel.pending.insert(request, answer_tx);
        }
        self.send(key, &build(request)).await?;
        let answer = tokio::time::timeout(self.config.request_timeout, answer_rx).await;
        if answer.is_err() {
            if let Some(channel) = self.lock_channels().get_mut(key) {
                channel.pending.remove(&request);
            }
        }
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RelayError::ConnectorGone(
                "its control channel closed".into(),
            )),
            Err(_) => Err(RelayError::TimedOut(self.config.request_timeout)),
        }
    }

    fn objects(&self) -> Result<&Arc<dyn Objects>, RelayError> {
        self.objects.as_ref().ok_or_else(|| RelayError::BadRequest {
            field: "mode",
            message: "offloading needs object storage, and none is configured".into(),
        })
    }
}
