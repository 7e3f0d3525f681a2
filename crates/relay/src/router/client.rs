//! The client's side of a transfer: starting it (a `stat` first, then the request on
//! the control channel), waiting for it with an idle timeout, reading a stream, and
//! cancelling it when the client's handle is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vigia_core::TenantId;
use vigia_objects::{ObjectKey, PresignMethod};

use super::transfer::{BufferedTransfer, Finished, Offloaded, Slot, STREAM_PIECE_BYTES};
use super::{ConnectorKey, Inner, Relay, TransferOptions, MAX_OFFLOAD_BYTES};
use crate::protocol::{DatasetInfo, Message, Mode, TransferId, TransferRequest, UploadTarget};
use crate::{safe_path, RelayError};

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
}

/// `relay/{tenant}/{transfer}/{file name}`: unique per transfer, and the download keeps
/// the dataset's file name.
fn offload_key(tenant: TenantId, id: &TransferId, dataset: &str) -> Result<ObjectKey, RelayError> {
    let name = dataset.rsplit('/').next().unwrap_or(dataset);
    ObjectKey::new(format!("relay/{}/{id}/{name}", tenant.0))
        .or_else(|_| ObjectKey::new(format!("relay/{}/{id}/dataset", tenant.0)))
        .map_err(|err| RelayError::Internal(format!("offload key: {err}")))
}
