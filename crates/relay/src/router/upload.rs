//! The connector's side of a transfer: its data requests (`result`, `stream`,
//! `complete`, `fail`), authenticated, checked against what the transfer expects, and
//! verified at `complete` before the client sees success.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_compression::tokio::bufread::ZstdDecoder;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio_util::io::{ReaderStream, StreamReader};
use vigia_objects::PresignMethod;

use super::session::connector_error;
use super::spool::{Buffered, Spool};
use super::transfer::{Carried, Finished, Offloaded, Slot, STREAM_PIECE_BYTES};
use super::Relay;
use crate::protocol::{hex, CompleteReport, FailReport, Mode, TransferId};
use crate::RelayError;

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
