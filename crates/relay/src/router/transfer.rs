//! Transfers on the router: starting one for a client, receiving the connector's body
//! (buffered into a [`super::spool`], or piped to the client through a bounded queue),
//! verifying it at `complete`, and freeing everything when either side goes away.
//!
//! A transfer lives in the registry from its start until it finishes — verified, failed,
//! timed out or cancelled — and finishing happens exactly once ([`Slot::finish`]): the
//! client's waiter gets the outcome, an unsuccessful end fires the slot's cancel token so
//! an upload still running stops, and the client's handle going away (dropped) tells the
//! connector to stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_compression::tokio::bufread::ZstdDecoder;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::{ReaderStream, StreamReader};
use tokio_util::sync::CancellationToken;
use vigia_core::TenantId;
use vigia_objects::{ObjectKey, PresignMethod};

use super::session::connector_error;
use super::spool::{Buffered, Spool};
use super::{ConnectorKey, Inner, Relay, TransferOptions, MAX_OFFLOAD_BYTES};
use crate::protocol::{
    hex, CompleteReport, DatasetInfo, FailReport, Message, Mode, TransferId, TransferRequest,
    UploadTarget,
};
use crate::{safe_path, RelayError};

/// Largest piece queued to a streaming client: the queue holds
/// `stream_buffer_bytes / STREAM_PIECE_BYTES` pieces.
const STREAM_PIECE_BYTES: usize = 64 * 1024;

/// A transfer in flight, for `GET /api/v1/connectors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSummary {
    pub transfer: TransferId,
    pub dataset: String,
    pub mode: Mode,
    /// The whole dataset's size.
    pub size: u64,
    pub offset: u64,
    /// Bytes carried so far.
    pub bytes: u64,
    pub started: SystemTime,
}

/// The outcome of a verified transfer.
pub(crate) struct Finished {
    report: CompleteReport,
    buffered: Option<Buffered>,
    offloaded: Option<Offloaded>,
}

/// A dataset offloaded to object storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offloaded {
    pub transfer: TransferId,
    pub key: ObjectKey,
    pub size: u64,
    pub sha256: String,
    pub download_url: String,
    pub expires_at: SystemTime,
}

/// A buffered dataset, verified.
#[derive(Debug)]
pub struct BufferedTransfer {
    pub transfer: TransferId,
    pub size: u64,
    pub sha256: String,
    pub body: Buffered,
}

/// What the upload carried, kept until `complete`.
struct Carried {
    bytes: u64,
    sha256: String,
    buffered: Option<Buffered>,
}

pub(crate) struct Slot {
    pub id: TransferId,
    pub key: ConnectorKey,
    pub session: u64,
    mode: Mode,
    dataset: String,
    offset: u64,
    size: u64,
    zstd: bool,
    announced_sha256: Option<String>,
    offload_key: Option<ObjectKey>,
    started: Instant,
    started_wall: SystemTime,
    /// Fired when the transfer ends without success.
    cancel: CancellationToken,
    bytes: AtomicU64,
    last_progress: Mutex<Instant>,
    first_byte: AtomicBool,
    upload_started: AtomicBool,
    done: Mutex<Option<oneshot::Sender<Result<Finished, RelayError>>>>,
    stream_tx: Mutex<Option<mpsc::Sender<Bytes>>>,
    carried: Mutex<Option<Carried>>,
}

impl Slot {
    pub fn summary(&self) -> TransferSummary {
        TransferSummary {
            transfer: self.id.clone(),
            dataset: self.dataset.clone(),
            mode: self.mode,
            size: self.size,
            offset: self.offset,
            bytes: self.bytes.load(Ordering::Relaxed),
            started: self.started_wall,
        }
    }

    /// Ends the transfer with `outcome`, once: `false` if it had already ended.
    pub fn finish(&self, inner: &Inner, outcome: Result<Finished, RelayError>) -> bool {
        let Some(done) = self.done.lock().expect("never poisoned").take() else {
            return false;
        };
        inner.lock_transfers().remove(&self.id);
        let label = match &outcome {
            Ok(_) => "ok",
            Err(err) => {
                self.cancel.cancel();
                err.kind()
            }
        };
        // Drop what an unfinished upload left behind (a spool, the client's queue).
        self.stream_tx.lock().expect("never poisoned").take();
        self.carried.lock().expect("never poisoned").take();
        metrics::counter!("vigia_relay_transfers_total", "mode" => self.mode.as_str(), "outcome" => label)
            .increment(1);
        metrics::histogram!("vigia_relay_transfer_seconds", "mode" => self.mode.as_str())
            .record(self.started.elapsed().as_secs_f64());
        tracing::info!(transfer = %self.id, connector = %self.key.id, outcome = label, "transfer finished");
        let _ = done.send(outcome);
        true
    }

    fn progressed(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        *self.last_progress.lock().expect("never poisoned") = Instant::now();
        metrics::counter!("vigia_relay_bytes_total", "mode" => self.mode.as_str())
            .increment(n as u64);
        if !self.first_byte.swap(true, Ordering::Relaxed) {
            metrics::histogram!("vigia_relay_first_byte_seconds", "mode" => self.mode.as_str())
                .record(self.started.elapsed().as_secs_f64());
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_progress.lock().expect("never poisoned").elapsed()
    }

    fn expected_bytes(&self) -> u64 {
        self.size - self.offset
    }
}

/// The client's hold on a transfer: dropping it before the end cancels the transfer and
/// tells the connector to stop.
struct ClientGuard {
    inner: Arc<Inner>,
    slot: Arc<Slot>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let reason = "the client went away";
        if self
            .slot
            .finish(&self.inner, Err(RelayError::Cancelled(reason.into())))
        {
            let cancel = Message::Cancel {
                transfer: self.slot.id.clone(),
                reason: reason.into(),
            };
            self.inner.send_now(&self.slot.key, &cancel);
        }
    }
}

impl ClientGuard {
    /// Waits for the outcome, failing the transfer after `request_timeout` without
    /// progress. An offload's bytes bypass the router, which sees no progress: its limit
    /// is the upload URL's validity, after which the upload cannot succeed anyway.
    async fn wait(
        &self,
        done: &mut oneshot::Receiver<Result<Finished, RelayError>>,
    ) -> Result<Finished, RelayError> {
        let timeout = self.idle_limit();
        loop {
            // `timeout` polls `done` first, so an outcome already there always wins.
            let wait = timeout.saturating_sub(self.slot.idle_for());
            match tokio::time::timeout(wait, &mut *done).await {
                Ok(Ok(outcome)) => return outcome,
                Ok(Err(_)) => {
                    return Err(RelayError::Internal(
                        "the transfer ended without an outcome".into(),
                    ))
                }
                Err(_) if self.slot.idle_for() >= timeout => return Err(self.time_out()),
                Err(_) => continue,
            }
        }
    }

    fn idle_limit(&self) -> Duration {
        match self.slot.mode {
            Mode::Offload => self.inner.config.offload_expiry,
            Mode::Buffer | Mode::Stream => self.inner.config.request_timeout,
        }
    }

    fn time_out(&self) -> RelayError {
        let err = RelayError::TimedOut(self.idle_limit());
        if self.slot.finish(&self.inner, Err(err.clone())) {
            let cancel = Message::Cancel {
                transfer: self.slot.id.clone(),
                reason: "timed out".into(),
            };
            self.inner.send_now(&self.slot.key, &cancel);
        }
        err
    }
}

/// A streamed transfer as the client reads it: [`StreamTransfer::next_chunk`] until
/// `None`, which comes only once the connector's SHA-256 report has been verified. Dropping
/// it cancels the transfer.
pub struct StreamTransfer {
    pub transfer: TransferId,
    /// The whole dataset's size.
    pub size: u64,
    /// The first byte sent.
    pub offset: u64,
    /// The SHA-256 known before any byte moved (the connector had it cached).
    pub announced_sha256: Option<String>,
    chunks: mpsc::Receiver<Bytes>,
    done: oneshot::Receiver<Result<Finished, RelayError>>,
    sha256: Option<String>,
    guard: ClientGuard,
}

impl std::fmt::Debug for StreamTransfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTransfer")
            .field("transfer", &self.transfer)
            .field("size", &self.size)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl StreamTransfer {
    /// The next bytes; `Ok(None)` at the verified end; an error ends the transfer.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, RelayError> {
        if self.sha256.is_some() {
            return Ok(None);
        }
        let timeout = self.guard.inner.config.request_timeout;
        loop {
            let wait = timeout.saturating_sub(self.guard.slot.idle_for());
            // Biased: queued bytes are handed out first, however long this client paused
            // (a slow client is not the connector's silence).
            tokio::select! {
                biased;
                chunk = self.chunks.recv() => match chunk {
                    Some(chunk) => return Ok(Some(chunk)),
                    None => break,
                },
                () = self.guard.slot.cancel.cancelled() => break,
                () = tokio::time::sleep(wait) => {
                    if self.guard.slot.idle_for() >= timeout {
                        return Err(self.guard.time_out());
                    }
                }
            }
        }
        let finished = self.guard.wait(&mut self.done).await?;
        self.sha256 = Some(finished.report.sha256.clone());
        Ok(None)
    }

    /// The whole file's SHA-256, once [`Self::next_chunk`] has returned `None`.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// The chunks as a stream (for a response body); it ends after verification.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, RelayError>> + Send {
        futures_util::stream::try_unfold(self, |mut transfer| async move {
            Ok(transfer.next_chunk().await?.map(|chunk| (chunk, transfer)))
        })
    }
}

/// Who a data request says it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorCredentials {
    pub id: String,
    pub token: String,
}

impl ConnectorCredentials {
    /// From the `x-vigia-connector` and `Authorization: Bearer` headers; `Unauthorized`
    /// when either is missing.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Result<Self, RelayError> {
        let id = headers
            .get(crate::protocol::CONNECTOR_HEADER)
            .and_then(|v| v.to_str().ok());
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match (id, token) {
            (Some(id), Some(token)) => Ok(Self {
                id: id.to_owned(),
                token: token.to_owned(),
            }),
            _ => Err(RelayError::Unauthorized),
        }
    }
}

/// The body as the original bytes: zstd inflated when the transfer asked for it.
fn original_bytes<S, E>(body: S, zstd: bool) -> BoxStream<'static, std::io::Result<Bytes>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display,
{
    let body = body.map_err(|err| std::io::Error::other(err.to_string()));
    if zstd {
        ReaderStream::with_capacity(
            ZstdDecoder::new(StreamReader::new(body)),
            STREAM_PIECE_BYTES,
        )
        .boxed()
    } else {
        body.boxed()
    }
}

impl Relay {
    /// Buffering: the whole dataset gathered (in memory up to `buffer_memory_bytes`, then
    /// spilled), verified, then handed over.
    pub async fn buffer(
        &self,
        tenant: TenantId,
        connector: &str,
        dataset: &str,
        options: TransferOptions,
    ) -> Result<BufferedTransfer, RelayError> {
        let (guard, mut done, _) = self
            .begin(tenant, connector, dataset, Mode::Buffer, 0, options)
            .await?;
        let finished = guard.wait(&mut done).await?;
        Ok(BufferedTransfer {
            transfer: guard.slot.id.clone(),
            size: finished.report.size,
            sha256: finished.report.sha256,
            body: finished.buffered.ok_or_else(|| {
                RelayError::Internal("a buffered transfer without its body".into())
            })?,
        })
    }

    /// Streaming from `offset`: bytes reach the client as the connector sends them.
    pub async fn stream(
        &self,
        tenant: TenantId,
        connector: &str,
        dataset: &str,
        offset: u64,
        options: TransferOptions,
    ) -> Result<StreamTransfer, RelayError> {
        let (guard, done, chunks) = self
            .begin(tenant, connector, dataset, Mode::Stream, offset, options)
            .await?;
        Ok(StreamTransfer {
            transfer: guard.slot.id.clone(),
            size: guard.slot.size,
            offset,
            announced_sha256: guard.slot.announced_sha256.clone(),
            chunks: chunks.expect("a stream transfer has a queue"),
            done,
            sha256: None,
            guard,
        })
    }

    /// Offloading: the connector uploads to object storage through a presigned PUT; the
    /// answer is a download URL. The object holds the original bytes (no zstd), so a cut
    /// download resumes with `Range`. The router checks the object's size; the SHA-256 is
    /// the connector's, for the client to verify (the router never reads the object).
    pub async fn offload(
        &self,
        tenant: TenantId,
        connector: &str,
        dataset: &str,
        options: TransferOptions,
    ) -> Result<Offloaded, RelayError> {
        let (guard, mut done, _) = self
            .begin(tenant, connector, dataset, Mode::Offload, 0, options)
            .await?;
        let finished = guard.wait(&mut done).await?;
        finished
            .offloaded
            .ok_or_else(|| RelayError::Internal("an offload without its object".into()))
    }

    async fn begin(
        &self,
        tenant: TenantId,
        connector: &str,
        dataset: &str,
        mode: Mode,
        offset: u64,
        options: TransferOptions,
    ) -> Result<
        (
            ClientGuard,
            oneshot::Receiver<Result<Finished, RelayError>>,
            Option<mpsc::Receiver<Bytes>>,
        ),
        RelayError,
    > {
        let inner = &self.inner;
        // Refused here already, so a traversal never reaches the connector.
        safe_path::check_name(dataset)
            .map_err(|refusal| RelayError::from_refusal(dataset, &refusal))?;
        if mode == Mode::Offload && options.zstd {
            return Err(RelayError::BadRequest {
                field: "zstd",
                message: "an offloaded object holds the original bytes, so it resumes by Range; zstd applies to buffer and stream".into(),
            });
        }
        if mode != Mode::Stream && offset != 0 {
            return Err(RelayError::BadRequest {
                field: "offset",
                message: "only a stream resumes from an offset (an offloaded object by Range)"
                    .into(),
            });
        }
        if inner.lock_transfers().len() >= inner.config.max_transfers {
            return Err(RelayError::Busy {
                limit: inner.config.max_transfers,
                retry_after: inner.config.retry_after,
            });
        }
        let key = inner.live_key(tenant, connector).await?;
        let info = self.stat(&key, dataset).await?;
        if offset > info.size {
            return Err(RelayError::BadOffset {
                offset,
                size: info.size,
            });
        }
        let limit = match mode {
            Mode::Buffer => Some((inner.config.max_buffered_bytes, "buffering")),
            Mode::Offload => Some((MAX_OFFLOAD_BYTES, "one offload PUT (stream it instead)")),
            Mode::Stream => None,
        };
        if let Some((limit, what)) = limit.filter(|(limit, _)| info.size > *limit) {
            return Err(RelayError::TooBig {
                size: info.size,
                limit,
                what,
            });
        }
        let id = TransferId::random();
        let (offload_key, upload) = match mode {
            Mode::Offload => {
                let objects = inner.objects()?;
                let key = offload_key(tenant, &id, dataset)?;
                let url = objects
                    .presign(
                        PresignMethod::Put {
                            content_length: info.size,
                        },
                        &key,
                        inner.config.offload_expiry,
                    )
                    .await
                    .map_err(|err| RelayError::Storage(err.to_string()))?;
                let target = UploadTarget {
                    url: url.url,
                    content_length: info.size,
                    expires_at: url
                        .expires_at
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                };
                (Some(key), Some(target))
            }
            _ => (None, None),
        };
        let session = inner
            .lock_channels()
            .get(&key)
            .map(|c| c.session)
            .ok_or_else(|| RelayError::ConnectorGone("its control channel closed".into()))?;
        let (done_tx, done_rx) = oneshot::channel();
        let (stream_tx, stream_rx) = match mode {
            Mode::Stream => {
                let pieces = (inner.config.stream_buffer_bytes / STREAM_PIECE_BYTES).max(1);
                let (tx, rx) = mpsc::channel(pieces);
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        let slot = Arc::new(Slot {
            id: id.clone(),
            key: key.clone(),
            session,
            mode,
            dataset: dataset.to_owned(),
            offset,
            size: info.size,
            zstd: options.zstd,
            announced_sha256: info.sha256.clone(),
            offload_key,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            cancel: CancellationToken::new(),
            bytes: AtomicU64::new(0),
            last_progress: Mutex::new(Instant::now()),
            first_byte: AtomicBool::new(false),
            upload_started: AtomicBool::new(false),
            done: Mutex::new(Some(done_tx)),
            stream_tx: Mutex::new(stream_tx),
            carried: Mutex::new(None),
        });
        inner.lock_transfers().insert(id.clone(), slot.clone());
        let guard = ClientGuard {
            inner: inner.clone(),
            slot,
        };
        tracing::info!(transfer = %id, connector, dataset, mode = mode.as_str(), size = info.size, offset, "transfer started");
        let request = Message::Transfer(TransferRequest {
            transfer: id,
            dataset: dataset.to_owned(),
            mode,
            offset,
            zstd: options.zstd,
            upload,
        });
        if let Err(err) = inner.send(&key, &request).await {
            guard.slot.finish(inner, Err(err.clone()));
            return Err(err);
        }
        Ok((guard, done_rx, stream_rx))
    }

    async fn stat(&self, key: &ConnectorKey, dataset: &str) -> Result<DatasetInfo, RelayError> {
        let answer = self
            .inner
            .ask(key, |request| Message::Stat {
                request,
                dataset: dataset.to_owned(),
            })
            .await;
        match answer {
            Ok(Message::DatasetStat { dataset: info, .. }) if info.name == dataset => Ok(info),
            Ok(other) => Err(super::unexpected(&other)),
            Err(RelayError::DatasetMissing { reason, .. }) => Err(RelayError::DatasetMissing {
                dataset: dataset.to_owned(),
                reason,
            }),
            Err(RelayError::Traversal { reason, .. }) => Err(RelayError::Traversal {
                dataset: dataset.to_owned(),
                reason,
            }),
            Err(err) => Err(err),
        }
    }

    /// The slot of `transfer` when `credentials` are its connector's.
    async fn connector_slot(
        &self,
        credentials: &ConnectorCredentials,
        transfer: &str,
    ) -> Result<Arc<Slot>, RelayError> {
        let tenant = self
            .inner
            .directory
            .authenticate(&credentials.id, &credentials.token)
            .await?
            .ok_or(RelayError::Unauthorized)?;
        let unknown = || RelayError::UnknownTransfer {
            transfer: transfer.to_owned(),
        };
        let id = TransferId::parse(transfer).map_err(|_| unknown())?;
        let slot = self
            .inner
            .lock_transfers()
            .get(&id)
            .cloned()
            .ok_or_else(unknown)?;
        if slot.key.tenant != tenant || slot.key.id != credentials.id {
            return Err(unknown());
        }
        Ok(slot)
    }

    fn check_upload(slot: &Slot, mode: Mode, zstd: bool) -> Result<(), RelayError> {
        if slot.mode != mode {
            return Err(RelayError::Conflict(format!(
                "transfer {} is a {} transfer, not {}",
                slot.id,
                slot.mode.as_str(),
                mode.as_str()
            )));
        }
        if slot.zstd != zstd {
            return Err(RelayError::BadRequest {
                field: "content-encoding",
                message: format!("the transfer was asked for with zstd = {}", slot.zstd),
            });
        }
        if slot.upload_started.swap(true, Ordering::AcqRel) {
            return Err(RelayError::Conflict(format!(
                "transfer {} was uploaded already",
                slot.id
            )));
        }
        Ok(())
    }

    /// `POST /api/v1/transfers/{id}/result`: a buffered transfer's whole body.
    /// `zstd` is whether it comes with `Content-Encoding: zstd`.
    pub async fn accept_result<S, E>(
        &self,
        credentials: &ConnectorCredentials,
        transfer: &str,
        zstd: bool,
        body: S,
    ) -> Result<(), RelayError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let slot = self.connector_slot(credentials, transfer).await?;
        Self::check_upload(&slot, Mode::Buffer, zstd)?;
        let inner = &self.inner;
        let mut spool = Spool::new(
            inner.config.buffer_memory_bytes,
            &inner.config.spill_dir,
            inner.gauge.clone(),
        );
        let mut body = original_bytes(body, zstd);
        let mut hasher = Sha256::new();
        let mut carried = 0u64;
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = slot.cancel.cancelled() => return Err(RelayError::Cancelled("the transfer ended".into())),
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|err| self.broke_off(&slot, &err))?;
            carried += chunk.len() as u64;
            self.check_not_longer(&slot, carried)?;
            hasher.update(&chunk);
            if let Err(err) = spool.push(&chunk).await {
                let err = RelayError::Internal(format!("spilling the buffered transfer: {err}"));
                slot.finish(inner, Err(err.clone()));
                return Err(err);
            }
            slot.progressed(chunk.len());
        }
        let buffered = spool.finish().await.map_err(|err| {
            let err = RelayError::Internal(format!("spilling the buffered transfer: {err}"));
            slot.finish(inner, Err(err.clone()));
            err
        })?;
        self.carried(&slot, carried, hex(&hasher.finalize()), Some(buffered))
    }

    /// `POST /api/v1/transfers/{id}/stream?offset=N`: a streamed transfer's body, piped to
    /// the client through a queue of at most `stream_buffer_bytes`; a slow client holds
    /// back only this request. Answers when the body is through (or the transfer ended).
    pub async fn accept_stream<S, E>(
        &self,
        credentials: &ConnectorCredentials,
        transfer: &str,
        offset: u64,
        zstd: bool,
        body: S,
    ) -> Result<(), RelayError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let slot = self.connector_slot(credentials, transfer).await?;
        if offset != slot.offset {
            return Err(RelayError::BadOffset {
                offset,
                size: slot.size,
            });
        }
        Self::check_upload(&slot, Mode::Stream, zstd)?;
        let queue = slot
            .stream_tx
            .lock()
            .expect("never poisoned")
            .take()
            .ok_or_else(|| RelayError::Cancelled("the transfer ended".into()))?;
        let mut body = original_bytes(body, zstd);
        let mut hasher = Sha256::new();
        let mut carried = 0u64;
        let gone = || RelayError::Cancelled("the transfer ended".into());
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                () = slot.cancel.cancelled() => return Err(gone()),
            };
            let Some(chunk) = chunk else { break };
            let mut chunk = chunk.map_err(|err| self.broke_off(&slot, &err))?;
            carried += chunk.len() as u64;
            self.check_not_longer(&slot, carried)?;
            hasher.update(&chunk);
            while !chunk.is_empty() {
                let piece = chunk.split_to(chunk.len().min(STREAM_PIECE_BYTES));
                let len = piece.len();
                tokio::select! {
                    sent = queue.send(piece) => sent.map_err(|_| gone())?,
                    () = slot.cancel.cancelled() => return Err(gone()),
                }
                slot.progressed(len);
            }
        }
        self.carried(&slot, carried, hex(&hasher.finalize()), None)?;
        // The client reads to the end of the queue, then waits for `complete`.
        drop(queue);
        Ok(())
    }

    fn broke_off(&self, slot: &Slot, err: &std::io::Error) -> RelayError {
        let err = RelayError::ConnectorGone(format!("the upload broke off: {err}"));
        slot.finish(&self.inner, Err(err.clone()));
        err
    }

    fn check_not_longer(&self, slot: &Slot, carried: u64) -> Result<(), RelayError> {
        if carried <= slot.expected_bytes() {
            return Ok(());
        }
        let err = RelayError::Integrity(format!(
            "the upload is longer than the {} bytes announced",
            slot.expected_bytes()
        ));
        slot.finish(&self.inner, Err(err.clone()));
        Err(err)
    }

    fn carried(
        &self,
        slot: &Slot,
        bytes: u64,
        sha256: String,
        buffered: Option<Buffered>,
    ) -> Result<(), RelayError> {
        if bytes != slot.expected_bytes() {
            let err = RelayError::Integrity(format!(
                "the upload ended after {bytes} of {} bytes",
                slot.expected_bytes()
            ));
            slot.finish(&self.inner, Err(err.clone()));
            return Err(err);
        }
        *slot.carried.lock().expect("never poisoned") = Some(Carried {
            bytes,
            sha256,
            buffered,
        });
        Ok(())
    }

    /// `POST /api/v1/transfers/{id}/complete`: checks the report against what was carried
    /// (or, for an offload, the stored object's size) and ends the transfer. A mismatch
    /// fails it for the client too.
    pub async fn accept_complete(
        &self,
        credentials: &ConnectorCredentials,
        transfer: &str,
        report: CompleteReport,
    ) -> Result<(), RelayError> {
        let slot = self.connector_slot(credentials, transfer).await?;
        report.check()?;
        let outcome = self.verify(&slot, report).await;
        let result = outcome.as_ref().map(|_| ()).map_err(Clone::clone);
        slot.finish(&self.inner, outcome);
        result
    }

    async fn verify(&self, slot: &Slot, report: CompleteReport) -> Result<Finished, RelayError> {
        let mismatch = |what: String| Err(RelayError::Integrity(what));
        if report.size != slot.size {
            return mismatch(format!(
                "the file is {} bytes now, {} at the start",
                report.size, slot.size
            ));
        }
        if slot.offset == 0 && report.sha256 != report.sent_sha256 {
            return mismatch(
                "from offset 0 the sent bytes are the whole file, yet their hashes differ".into(),
            );
        }
        if let Some(announced) = slot
            .announced_sha256
            .as_ref()
            .filter(|a| **a != report.sha256)
        {
            return mismatch(format!(
                "SHA-256 {} is not the {announced} announced",
                report.sha256
            ));
        }
        if slot.mode == Mode::Offload {
            let objects = self.inner.objects()?;
            let key = slot.offload_key.as_ref().expect("an offload has its key");
            let meta = objects
                .head(key)
                .await
                .map_err(|err| RelayError::Integrity(format!("the uploaded object: {err}")))?;
            if meta.size != slot.size {
                return mismatch(format!(
                    "the object holds {} of {} bytes",
                    meta.size, slot.size
                ));
            }
            let url = objects
                .presign(PresignMethod::Get, key, self.inner.config.offload_expiry)
                .await
                .map_err(|err| RelayError::Storage(err.to_string()))?;
            return Ok(Finished {
                offloaded: Some(Offloaded {
                    transfer: slot.id.clone(),
                    key: key.clone(),
                    size: slot.size,
                    sha256: report.sha256.clone(),
                    download_url: url.url,
                    expires_at: url.expires_at,
                }),
                report,
                buffered: None,
            });
        }
        let carried = slot
            .carried
            .lock()
            .expect("never poisoned")
            .take()
            .ok_or_else(|| RelayError::Conflict("complete before the body".into()))?;
        if carried.sha256 != report.sent_sha256 {
            return mismatch(format!(
                "the router carried bytes hashing to {}, the connector sent {}",
                carried.sha256, report.sent_sha256
            ));
        }
        debug_assert_eq!(carried.bytes, slot.expected_bytes());
        Ok(Finished {
            report,
            buffered: carried.buffered,
            offloaded: None,
        })
    }

    /// `POST /api/v1/transfers/{id}/fail`: the connector gives up; the client gets why.
    pub async fn accept_fail(
        &self,
        credentials: &ConnectorCredentials,
        transfer: &str,
        report: FailReport,
    ) -> Result<(), RelayError> {
        let slot = self.connector_slot(credentials, transfer).await?;
        let err = match connector_error((report.code, report.message)) {
            RelayError::DatasetMissing { reason, .. } => RelayError::DatasetMissing {
                dataset: slot.dataset.clone(),
                reason,
            },
            RelayError::Traversal { reason, .. } => RelayError::Traversal {
                dataset: slot.dataset.clone(),
                reason,
            },
            RelayError::BadRequest {
                field: "offset", ..
            } => RelayError::BadOffset {
                offset: slot.offset,
                size: slot.size,
            },
            other => other,
        };
        slot.finish(&self.inner, Err(err));
        Ok(())
    }
}

/// `relay/{tenant}/{transfer}/{file name}`: unique per transfer, and the download keeps
/// the dataset's file name.
fn offload_key(tenant: TenantId, id: &TransferId, dataset: &str) -> Result<ObjectKey, RelayError> {
    let name = dataset.rsplit('/').next().unwrap_or(dataset);
    ObjectKey::new(format!("relay/{}/{id}/{name}", tenant.0))
        .or_else(|_| ObjectKey::new(format!("relay/{}/{id}/dataset", tenant.0)))
        .map_err(|err| RelayError::Internal(format!("offload key: {err}")))
}
