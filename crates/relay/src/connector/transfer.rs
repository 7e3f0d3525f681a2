//! Serving one transfer: the file read on a blocking thread (SHA-256 computed while
//! reading), its bytes sent as their own HTTP request — to the router for buffer and
//! stream, to the presigned URL for offload — optionally zstd-compressed, and then the
//! `complete` report with the sizes and hashes (or `fail` with why).

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use async_compression::tokio::bufread::ZstdEncoder;
use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::{ReaderStream, StreamReader};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::datasets::FileVersion;
use super::Shared;
use crate::protocol::{
    hex, paths, CompleteReport, ErrorCode, FailReport, Mode, TransferRequest, CONNECTOR_HEADER,
};
use crate::safe_path::{self, PathRefusal};

/// Bytes read from the file at a time (and so the largest chunk sent).
pub const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Chunks queued between the reading thread and the request body: with
/// [`READ_CHUNK_BYTES`], at most 1 MiB read ahead per transfer.
const READ_AHEAD_CHUNKS: usize = 4;

/// Why a transfer stopped.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn refused(refusal: &PathRefusal) -> Self {
        let code = match refusal {
            PathRefusal::Missing | PathRefusal::NotRegularFile => ErrorCode::DatasetMissing,
            PathRefusal::Io(_) => ErrorCode::Io,
            _ => ErrorCode::Traversal,
        };
        Self::new(code, refusal.to_string())
    }
}

/// The hashes a finished read produced.
struct ReadHashes {
    /// SHA-256 of the whole file.
    whole: String,
    /// SHA-256 of the bytes from the offset to the end.
    sent: String,
}

/// Serves `request` until done, failed (then reported with `POST …/fail`) or `cancel`led
/// (the router asked: nothing to report).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    request: TransferRequest,
    cancel: CancellationToken,
) {
    let span = tracing::info_span!(
        "transfer",
        connector = %shared.config.id,
        transfer = %request.transfer,
        dataset = %request.dataset,
        mode = request.mode.as_str()
    );
    serve_in_span(shared, request, cancel)
        .instrument(span)
        .await
}

async fn serve_in_span(shared: Arc<Shared>, request: TransferRequest, cancel: CancellationToken) {
    let outcome = tokio::select! {
        outcome = send(&shared, &request) => outcome,
        () = cancel.cancelled() => {
            tracing::info!(transfer = %request.transfer, "transfer cancelled by the router");
            return;
        }
    };
    if let Err(failure) = outcome {
        tracing::warn!(transfer = %request.transfer, code = ?failure.code, "transfer failed: {}", failure.message);
        report_failure(&shared, &request, failure).await;
    }
}

/// Best effort: the router also fails the transfer by its own timeout if this is lost.
pub(crate) async fn report_failure(shared: &Shared, request: &TransferRequest, failure: Failure) {
    let report = FailReport {
        code: failure.code,
        message: failure.message,
    };
    let sent = shared
        .authorised(
            shared
                .http
                .post(shared.url(&paths::fail(&request.transfer))),
        )
        .timeout(shared.config.request_timeout)
        .json(&report)
        .send()
        .await;
    if let Err(err) = sent {
        tracing::warn!(transfer = %request.transfer, "could not report the failure: {err}");
    }
}

async fn send(shared: &Arc<Shared>, request: &TransferRequest) -> Result<(), Failure> {
    let root = shared.root.clone();
    let dataset = request.dataset.clone();
    let (file, path, meta) = tokio::task::spawn_blocking(move || {
        let path = safe_path::resolve(&root, &dataset)?;
        let file = safe_path::open_regular(&path)?;
        let meta = file
            .metadata()
            .map_err(|err| PathRefusal::Io(err.to_string()))?;
        Ok::<_, PathRefusal>((file, path, meta))
    })
    .await
    .map_err(|err| Failure::new(ErrorCode::Io, format!("reader thread: {err}")))?
    .map_err(|refusal| Failure::refused(&refusal))?;
    let version = FileVersion::of(&path, &meta);
    if request.offset > version.size {
        return Err(Failure::new(
            ErrorCode::BadOffset,
            format!(
                "offset {} is past the end ({} bytes)",
                request.offset, version.size
            ),
        ));
    }
    if let Some(upload) = &request.upload {
        if upload.content_length != version.size {
            return Err(Failure::new(
                ErrorCode::Io,
                format!(
                    "the file is {} bytes now, not the {} the upload was signed for",
                    version.size, upload.content_length
                ),
            ));
        }
    }
    let known = shared.cache.get(&version);
    let (chunks, hashes) = spawn_reader(
        shared.clone(),
        file,
        path,
        version.clone(),
        request.offset,
        known,
    );
    let body = chunk_stream(chunks);
    let response = match request.mode {
        Mode::Buffer | Mode::Stream => {
            let target = if request.mode == Mode::Buffer {
                paths::result(&request.transfer)
            } else {
                paths::stream(&request.transfer, request.offset)
            };
            let mut builder = shared.authorised(shared.http.post(shared.url(&target)));
            builder = builder.header("x-vigia-size", version.size.to_string());
            let body = if request.zstd {
                builder = builder.header("content-encoding", "zstd");
                reqwest::Body::wrap_stream(compress(body))
            } else {
                reqwest::Body::wrap_stream(body)
            };
            builder.body(body).send().await
        }
        Mode::Offload => {
            let upload = request
                .upload
                .as_ref()
                .expect("checked on decode: offload has a target");
            shared
                .http
                .put(&upload.url)
                .header("content-length", upload.content_length.to_string())
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
        }
    };
    let response =
        response.map_err(|err| Failure::new(ErrorCode::Io, format!("sending the body: {err}")))?;
    check_status(response, "the body").await?;
    let hashes = hashes
        .await
        .map_err(|_| Failure::new(ErrorCode::Io, "the reader stopped before the end"))??;
    let report = CompleteReport {
        size: version.size,
        sha256: hashes.whole,
        sent_sha256: hashes.sent,
    };
    let response = shared
        .authorised(
            shared
                .http
                .post(shared.url(&paths::complete(&request.transfer))),
        )
        .timeout(shared.config.request_timeout)
        .json(&report)
        .send()
        .await
        .map_err(|err| Failure::new(ErrorCode::Io, format!("reporting completion: {err}")))?;
    check_status(response, "the completion").await
}

async fn check_status(response: reqwest::Response, what: &str) -> Result<(), Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    Err(Failure::new(
        ErrorCode::Io,
        format!(
            "{what} was refused with {status}: {}",
            text.chars().take(300).collect::<String>()
        ),
    ))
}

/// Reads the file from `offset` on a blocking thread, hashing as it goes; chunks arrive on
/// the receiver (the reader stops when it is dropped), hashes on the oneshot at the end.
/// With an offset and no cached hash, the part before the offset is read (not sent) to
/// hash the whole file. The file must still have its version at the end, or the read
/// fails: a file changing under a transfer is not served as if whole.
fn spawn_reader(
    shared: Arc<Shared>,
    mut file: std::fs::File,
    path: PathBuf,
    version: FileVersion,
    offset: u64,
    known_whole: Option<String>,
) -> (
    mpsc::Receiver<std::io::Result<Bytes>>,
    oneshot::Receiver<Result<ReadHashes, Failure>>,
) {
    let (chunk_tx, chunk_rx) = mpsc::channel(READ_AHEAD_CHUNKS);
    let (hash_tx, hash_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<Option<ReadHashes>, Failure> {
            let io = |err: std::io::Error| Failure::new(ErrorCode::Io, err.to_string());
            let mut whole = known_whole.is_none().then(Sha256::new);
            let mut sent = Sha256::new();
            let mut buf = vec![0u8; READ_CHUNK_BYTES];
            if let Some(whole) = whole.as_mut() {
                let mut prefix = (&mut file).take(offset);
                loop {
                    let n = prefix.read(&mut buf).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    whole.update(&buf[..n]);
                }
            }
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
            let mut total = offset;
            loop {
                let n = file.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                sent.update(&buf[..n]);
                if let Some(whole) = whole.as_mut() {
                    whole.update(&buf[..n]);
                }
                if chunk_tx
                    .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                    .is_err()
                {
                    // The request was dropped (cancelled or failed): stop reading.
                    return Ok(None);
                }
            }
            let now = file.metadata().map_err(io)?;
            if total != version.size || FileVersion::of(&path, &now) != version {
                let message = "the file changed while being read";
                let _ = chunk_tx.blocking_send(Err(std::io::Error::other(message)));
                return Err(Failure::new(ErrorCode::Io, message));
            }
            let whole = match whole {
                Some(hasher) => hex(&hasher.finalize()),
                None => known_whole.expect("no hasher runs only when the hash is known"),
            };
            shared.cache.insert(version, whole.clone());
            Ok(Some(ReadHashes {
                whole,
                sent: hex(&sent.finalize()),
            }))
        })();
        match result {
            Ok(Some(hashes)) => {
                let _ = hash_tx.send(Ok(hashes));
            }
            Ok(None) => {}
            Err(failure) => {
                let _ = hash_tx.send(Err(failure));
            }
        }
    });
    (chunk_rx, hash_rx)
}

fn chunk_stream(
    mut chunks: mpsc::Receiver<std::io::Result<Bytes>>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| chunks.poll_recv(cx))
}

/// The zstd form of `body` (level 3: fast, and the uplink is what is short).
fn compress(
    body: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let encoder = ZstdEncoder::new(StreamReader::new(body));
    ReaderStream::with_capacity(encoder, READ_CHUNK_BYTES)
}

impl Shared {
    /// Adds the connector's credentials to a request to the router.
    pub(crate) fn authorised(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        builder
            .header(CONNECTOR_HEADER, &self.config.id)
            .bearer_auth(&self.config.token)
    }

    /// The absolute URL of a router path.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}
