//! A transfer on the router: its state in the registry ([`Slot`]) and what it ends with.
//! The client's side (starting, waiting, reading, cancelling) is `client.rs`; the
//! connector's data requests (buffered into a spool, or piped to the client through a
//! bounded queue) and their verification at `complete` are `upload.rs`.
//!
//! A transfer lives in the registry from its start until it finishes — verified, failed,
//! timed out or cancelled — and finishing happens exactly once ([`Slot::finish`]): the
//! client's waiter gets the outcome, an unsuccessful end fires the slot's cancel token so
//! an upload still running stops, and the client's handle going away (dropped) tells the
//! connector to stop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use vigia_objects::ObjectKey;

use super::spool::Buffered;
use super::{ConnectorKey, Inner};
use crate::protocol::{CompleteReport, Mode, TransferId};
use crate::RelayError;

/// Largest piece queued to a streaming client: the queue holds
/// `stream_buffer_bytes / STREAM_PIECE_BYTES` pieces.
pub(super) const STREAM_PIECE_BYTES: usize = 64 * 1024;

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
    pub(super) report: CompleteReport,
    pub(super) buffered: Option<Buffered>,
    pub(super) offloaded: Option<Offloaded>,
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
pub(super) struct Carried {
    pub(super) bytes: u64,
    pub(super) sha256: String,
    pub(super) buffered: Option<Buffered>,
}

pub(crate) struct Slot {
    pub id: TransferId,
    pub key: ConnectorKey,
    pub session: u64,
    pub(super) mode: Mode,
    pub(super) dataset: String,
    pub(super) offset: u64,
    pub(super) size: u64,
    pub(super) zstd: bool,
    pub(super) announced_sha256: Option<String>,
    pub(super) offload_key: Option<ObjectKey>,
    pub(super) started: Instant,
    pub(super) started_wall: SystemTime,
    /// Fired when the transfer ends without success.
    pub(super) cancel: CancellationToken,
    pub(super) bytes: AtomicU64,
    pub(super) last_progress: Mutex<Instant>,
    pub(super) first_byte: AtomicBool,
    pub(super) upload_started: AtomicBool,
    pub(super) done: Mutex<Option<oneshot::Sender<Result<Finished, RelayError>>>>,
    pub(super) stream_tx: Mutex<Option<mpsc::Sender<Bytes>>>,
    pub(super) carried: Mutex<Option<Carried>>,
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

    pub(super) fn progressed(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        *self.last_progress.lock().expect("never poisoned") = Instant::now();
        metrics::counter!("vigia_relay_bytes_total", "mode" => self.mode.as_str())
            .increment(n as u64);
        if !self.first_byte.swap(true, Ordering::Relaxed) {
            metrics::histogram!("vigia_relay_first_byte_seconds", "mode" => self.mode.as_str())
                .record(self.started.elapsed().as_secs_f64());
        }
    }

    pub(super) fn idle_for(&self) -> Duration {
        self.last_progress.lock().expect("never poisoned").elapsed()
    }

    pub(super) fn expected_bytes(&self) -> u64 {
        self.size - self.offset
    }
}
