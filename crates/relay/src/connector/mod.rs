//! The connector: runs on premises next to the data, opens ONE outbound control channel to
//! the router (no inbound port), and serves the regular files under its root.
//!
//! [`run`] is all the `vigia connector` subcommand calls. It connects, says `hello` with its
//! id and token, heartbeats every [`HEARTBEAT_INTERVAL`], answers listings and stats, and
//! serves each transfer as its own HTTP request (`transfer.rs`). When the channel drops it
//! reconnects after a delay drawn by [`backoff`] (full jitter, capped at 60 s, never before
//! the router's retry-after), for ever: only `shutdown` or a bad configuration ends it.
//! Transfers in flight when the channel drops are abandoned — the router fails them for
//! their clients, who resume.

pub mod backoff;
pub mod datasets;
mod transfer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::protocol::{
    self, check_connector_id, decode, encode, paths, ErrorCode, Message, TransferId,
    TransferRequest, HEARTBEAT_INTERVAL, MAX_MESSAGE_BYTES, OFFLINE_AFTER,
};
use crate::safe_path;
use backoff::{Backoff, BackoffPolicy};
use datasets::HashCache;
use transfer::Failure;

/// Bytes the control channel may queue unsent before writes fail (bounded, as STYLE asks).
const CHANNEL_WRITE_BUFFER_BYTES: usize = 2 * MAX_MESSAGE_BYTES;

/// Control messages queued by tasks (listings, stats) for the channel.
const OUTBOX_MESSAGES: usize = 64;

/// How a connector runs.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The router's base URL, `http://host:port` (the control channel goes to its `ws://`
    /// form). This build has no TLS client: `https://` is refused at start.
    pub router_url: String,
    /// The connector's id: a MAC address or a node name.
    pub id: String,
    /// The token the router issued for this id.
    pub token: String,
    /// The directory whose regular files are served.
    pub root: PathBuf,
    pub heartbeat_interval: Duration,
    /// The router's silence after which the channel is given up and reopened.
    pub silence_limit: Duration,
    pub backoff: BackoffPolicy,
    /// Timeout of connecting, of the handshake and of every small request (complete, fail).
    pub request_timeout: Duration,
    /// Transfers served at once; more are refused as `busy`.
    pub max_concurrent_transfers: usize,
}

impl ConnectorConfig {
    /// The defaults: heartbeat 15 s, silence limit 45 s, backoff 1 s–60 s, request timeout
    /// 30 s, 32 transfers at once.
    pub fn new(
        router_url: impl Into<String>,
        id: impl Into<String>,
        token: impl Into<String>,
        root: impl Into<PathBuf>,
    ) -> Self {
        Self {
            router_url: router_url.into(),
            id: id.into(),
            token: token.into(),
            root: root.into(),
            heartbeat_interval: HEARTBEAT_INTERVAL,
            silence_limit: OFFLINE_AFTER,
            backoff: BackoffPolicy::default(),
            request_timeout: Duration::from_secs(30),
            max_concurrent_transfers: 32,
        }
    }
}

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector configuration `{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
}

/// What every task of a running connector shares.
pub(crate) struct Shared {
    pub config: ConnectorConfig,
    /// The canonical root.
    pub root: PathBuf,
    /// `router_url` without a trailing slash.
    pub base_url: String,
    pub cache: HashCache,
    pub http: reqwest::Client,
}

/// Runs the connector until `shutdown`. Errors only for a bad configuration; every
/// network failure is retried.
pub async fn run(
    config: ConnectorConfig,
    shutdown: CancellationToken,
) -> Result<(), ConnectorError> {
    let shared = Arc::new(prepare(config)?);
    let span = tracing::info_span!("connector", connector = %shared.config.id);
    reconnect_loop(shared, shutdown).instrument(span).await;
    Ok(())
}

async fn reconnect_loop(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(shared.config.backoff);
    loop {
        let end = tokio::select! {
            end = session(&shared, &shutdown, &mut backoff) => end,
            () = shutdown.cancelled() => return,
        };
        let retry_after = match end {
            SessionEnd::Shutdown => return,
            SessionEnd::Lost {
                reason,
                retry_after,
            } => {
                tracing::warn!(
                    attempt = backoff.attempt(),
                    "control channel lost: {reason}"
                );
                retry_after
            }
        };
        let delay = backoff.next_delay(retry_after, &mut rand::rng());
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting after a delay"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

fn prepare(config: ConnectorConfig) -> Result<Shared, ConnectorError> {
    let bad = |field, message: String| ConnectorError::Config { field, message };
    check_connector_id(&config.id).map_err(|err| bad("id", err.to_string()))?;
    if config.token.is_empty() {
        return Err(bad("token", "is empty".into()));
    }
    let base_url = config.router_url.trim_end_matches('/').to_owned();
    if !base_url.starts_with("http://") {
        return Err(bad(
            "router",
            format!("`{base_url}` must start with http:// (this build has no TLS client)"),
        ));
    }
    let root = safe_path::canonical_root(&config.root)
        .map_err(|err| bad("root", format!("{}: {err}", config.root.display())))?;
    if config.max_concurrent_transfers == 0 {
        return Err(bad("max_concurrent_transfers", "must be at least 1".into()));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(config.request_timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|err| bad("router", err.to_string()))?;
    Ok(Shared {
        config,
        root,
        base_url,
        cache: HashCache::default(),
        http,
    })
}

enum SessionEnd {
    Shutdown,
    Lost {
        reason: String,
        retry_after: Option<Duration>,
    },
}

fn lost(reason: impl Into<String>) -> SessionEnd {
    SessionEnd::Lost {
        reason: reason.into(),
        retry_after: None,
    }
}

/// One control channel, from connecting to its end.
async fn session(
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> SessionEnd {
    let config = &shared.config;
    let url = format!(
        "ws://{}{}",
        &shared.base_url["http://".len()..],
        paths::CHANNEL
    );
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        .max_write_buffer_size(CHANNEL_WRITE_BUFFER_BYTES);
    let connect = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config), true);
    let socket = match tokio::time::timeout(config.request_timeout, connect).await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(err)) => return lost(format!("connecting to {url}: {err}")),
        Err(_) => return lost(format!("connecting to {url} timed out")),
    };
    let (mut sink, mut frames) = socket.split();
    let hello = Message::Hello {
        connector: config.id.clone(),
        token: config.token.clone(),
        agent: concat!("vigia-relay ", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    if let Err(err) = sink.send(Frame::text(encode(&hello))).await {
        return lost(format!("sending hello: {err}"));
    }
    let heartbeat_interval =
        match tokio::time::timeout(config.request_timeout, next_message(&mut frames)).await {
            Ok(Ok(Message::Welcome { heartbeat_secs })) => {
                backoff.reset();
                // The router's pace when it names one, so its silence limit fits ours.
                match heartbeat_secs {
                    0 => config.heartbeat_interval,
                    secs => Duration::from_secs(secs),
                }
            }
            Ok(Ok(Message::Close {
                reason,
                retry_after_secs,
            })) => {
                return SessionEnd::Lost {
                    reason: format!("refused by the router: {reason}"),
                    retry_after: retry_after_secs.map(Duration::from_secs),
                }
            }
            Ok(Ok(other)) => return lost(format!("expected welcome, got `{}`", other.kind())),
            Ok(Err(reason)) => return lost(reason),
            Err(_) => return lost("no welcome within the request timeout"),
        };
    tracing::info!("control channel open");

    let (outbox, mut outgoing) = mpsc::channel::<Message>(OUTBOX_MESSAGES);
    let mut transfers: HashMap<TransferId, CancellationToken> = HashMap::new();
    let mut tasks: JoinSet<Option<TransferId>> = JoinSet::new();
    let mut heartbeat = tokio::time::interval(heartbeat_interval);
    heartbeat.reset();
    let mut last_heard = Instant::now();
    let end = loop {
        tokio::select! {
            () = shutdown.cancelled() => break SessionEnd::Shutdown,
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > config.silence_limit {
                    break lost(format!("the router was silent for {:?}", last_heard.elapsed()));
                }
                if let Err(err) = sink.send(Frame::text(encode(&Message::Heartbeat))).await {
                    break lost(format!("sending a heartbeat: {err}"));
                }
            }
            Some(message) = outgoing.recv() => {
                if let Err(err) = sink.send(Frame::text(encode(&message))).await {
                    break lost(format!("sending `{}`: {err}", message.kind()));
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(Some(id)) = done {
                    transfers.remove(&id);
                }
            }
            message = next_message(&mut frames) => {
                last_heard = Instant::now();
                let message = match message {
                    Ok(message) => message,
                    Err(reason) => break lost(reason),
                };
                match message {
                    Message::Heartbeat => {}
                    Message::ListDatasets { request } => {
                        answer_in_background(&mut tasks, shared, &outbox, request, move |shared| {
                            let (datasets, truncated) = datasets::list(&shared.root, &shared.cache);
                            Ok(Message::Datasets { request, datasets, truncated })
                        });
                    }
                    Message::Stat { request, dataset } => {
                        answer_in_background(&mut tasks, shared, &outbox, request, move |shared| {
                            let info = datasets::stat(&shared.root, &dataset, &shared.cache)
                                .map_err(|refusal| Failure::refused(&refusal))?;
                            Ok(Message::DatasetStat { request, dataset: info })
                        });
                    }
                    Message::Transfer(request) => {
                        start_transfer(shared, request, &mut transfers, &mut tasks, shutdown);
                    }
                    Message::Cancel { transfer, reason } => {
                        if let Some(token) = transfers.get(&transfer) {
                            tracing::info!(%transfer, "router cancelled the transfer: {reason}");
                            token.cancel();
                        }
                    }
                    Message::Close { reason, retry_after_secs } => {
                        break SessionEnd::Lost {
                            reason: format!("closed by the router: {reason}"),
                            retry_after: retry_after_secs.map(Duration::from_secs),
                        };
                    }
                    Message::Error { message, .. } => {
                        tracing::warn!("the router reported an error: {message}");
                    }
                    other @ (Message::Hello { .. }
                    | Message::Welcome { .. }
                    | Message::Datasets { .. }
                    | Message::DatasetStat { .. }) => {
                        let err = protocol::ProtocolError::Direction { sender: "router", kind: other.kind() };
                        let _ = sink.send(Frame::text(encode(&Message::Error {
                            request: None,
                            transfer: None,
                            code: ErrorCode::Malformed,
                            message: err.to_string(),
                        }))).await;
                        break lost(err.to_string());
                    }
                }
            }
        }
    };
    for token in transfers.values() {
        token.cancel();
    }
    let _ = sink.close().await;
    end
}

/// Answers control request `request` with `work`, run on a blocking thread (it reads the
/// disk); a failure is answered as an `error` naming the request.
fn answer_in_background(
    tasks: &mut JoinSet<Option<TransferId>>,
    shared: &Arc<Shared>,
    outbox: &mpsc::Sender<Message>,
    request: u64,
    work: impl FnOnce(&Shared) -> Result<Message, Failure> + Send + 'static,
) {
    let (shared, outbox) = (shared.clone(), outbox.clone());
    tasks.spawn(async move {
        let outcome = tokio::task::spawn_blocking(move || work(&shared))
            .await
            .unwrap_or_else(|err| Err(Failure::new(ErrorCode::Io, err.to_string())));
        let answer = outcome.unwrap_or_else(|failure| Message::Error {
            request: Some(request),
            transfer: None,
            code: failure.code,
            message: failure.message,
        });
        let _ = outbox.send(answer).await;
        None
    });
}

fn start_transfer(
    shared: &Arc<Shared>,
    request: TransferRequest,
    transfers: &mut HashMap<TransferId, CancellationToken>,
    tasks: &mut JoinSet<Option<TransferId>>,
    shutdown: &CancellationToken,
) {
    let shared = shared.clone();
    if transfers.len() >= shared.config.max_concurrent_transfers {
        let failure = Failure::new(
            ErrorCode::Busy,
            format!(
                "this connector serves {} transfers at once already",
                shared.config.max_concurrent_transfers
            ),
        );
        tasks.spawn(async move {
            transfer::report_failure(&shared, &request, failure).await;
            None
        });
        return;
    }
    let token = shutdown.child_token();
    transfers.insert(request.transfer.clone(), token.clone());
    tasks.spawn(async move {
        let id = request.transfer.clone();
        transfer::serve(shared, request, token).await;
        Some(id)
    });
}

/// The next control message, or why the channel is done.
async fn next_message<S>(frames: &mut S) -> Result<Message, String>
where
    S: futures_util::Stream<Item = Result<Frame, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match frames.next().await {
            None => return Err("the router closed the channel".into()),
            Some(Err(err)) => return Err(format!("control channel: {err}")),
            Some(Ok(Frame::Text(text))) => {
                return decode(text.as_str()).map_err(|err| format!("from the router: {err}"))
            }
            Some(Ok(Frame::Close(frame))) => {
                return Err(format!(
                    "the router closed the channel{}",
                    frame.map(|f| format!(": {}", f.reason)).unwrap_or_default()
                ))
            }
            Some(Ok(Frame::Binary(_))) => return Err("the router sent a binary frame".into()),
            Some(Ok(_)) => continue,
        }
    }
}
