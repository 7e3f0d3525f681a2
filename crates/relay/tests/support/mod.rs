//! A router on a real socket for the relay tests: an axum server mounting the router
//! core's connector endpoints (control channel, result, stream, complete, fail), the local
//! object store's signed `PUT|GET /objects/{key}`, and one client route streaming a
//! transfer over HTTP; plus real connectors over temporary directories.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigia_core::TenantId;
use vigia_objects::{Objects, OpenContext};
use vigia_relay::connector::backoff::BackoffPolicy;
use vigia_relay::connector::{self, ConnectorConfig};
use vigia_relay::protocol::{CompleteReport, FailReport};
use vigia_relay::router::{websocket, ConnectorCredentials, MemoryDirectory, TransferOptions};
use vigia_relay::{Relay, RelayConfig, RelayError};

pub const TENANT: TenantId = TenantId(1);
pub const OTHER_TENANT: TenantId = TenantId(2);
pub const SIGNING_KEY: &[u8] = b"relay-test-signing-key-32-bytes!";

/// A router serving on a real port.
pub struct Router {
    pub relay: Relay,
    pub addr: SocketAddr,
    pub url: String,
    pub directory: Arc<MemoryDirectory>,
    pub objects: Arc<dyn Objects>,
    server: JoinHandle<()>,
    _data: Arc<tempfile::TempDir>,
}

#[derive(Clone)]
struct AppState {
    relay: Relay,
    objects: Arc<dyn Objects>,
}

/// The router's error as an HTTP answer (what the web layer's problem+json will carry).
struct Problem(RelayError);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status()).expect("valid status");
        (status, self.0.to_string()).into_response()
    }
}

type Answer = Result<StatusCode, Problem>;

fn credentials(headers: &HeaderMap) -> Result<ConnectorCredentials, Problem> {
    ConnectorCredentials::from_headers(headers).map_err(Problem)
}

fn zstd(headers: &HeaderMap) -> bool {
    headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"zstd"))
}

async fn channel(State(app): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    websocket::upgrade(app.relay, upgrade)
}

async fn result(
    State(app): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let creds = credentials(&headers)?;
    app.relay
        .accept_result(&creds, &id, zstd(&headers), body.into_data_stream())
        .await
        .map_err(Problem)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct OffsetQuery {
    offset: u64,
}

async fn stream(
    State(app): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<OffsetQuery>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let creds = credentials(&headers)?;
    app.relay
        .accept_stream(
            &creds,
            &id,
            query.offset,
            zstd(&headers),
            body.into_data_stream(),
        )
        .await
        .map_err(Problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn complete(
    State(app): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Json(report): Json<CompleteReport>,
) -> Answer {
    let creds = credentials(&headers)?;
    app.relay
        .accept_complete(&creds, &id, report)
        .await
        .map_err(Problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn fail(
    State(app): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Json(report): Json<FailReport>,
) -> Answer {
    let creds = credentials(&headers)?;
    app.relay
        .accept_fail(&creds, &id, report)
        .await
        .map_err(Problem)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn put_object(
    State(app): State<AppState>,
    UrlPath(key): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let grant = match app
        .objects
        .verify_signed("PUT", &key, query.as_deref().unwrap_or(""))
    {
        Ok(grant) => grant,
        Err(err) => return (StatusCode::FORBIDDEN, err.to_string()).into_response(),
    };
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Err(err) = grant.check_content_length(length) {
        return (StatusCode::FORBIDDEN, err.to_string()).into_response();
    }
    let upload = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .boxed();
    match app.objects.put(&grant.key, upload, length).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    }
}

async fn get_object(
    State(app): State<AppState>,
    UrlPath(key): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let grant = match app
        .objects
        .verify_signed("GET", &key, query.as_deref().unwrap_or(""))
    {
        Ok(grant) => grant,
        Err(err) => return (StatusCode::FORBIDDEN, err.to_string()).into_response(),
    };
    let meta = match app.objects.head(&grant.key).await {
        Ok(meta) => meta,
        Err(err) => return (StatusCode::NOT_FOUND, err.to_string()).into_response(),
    };
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(|v| vigia_objects::parse_range(v, meta.size));
    let range = match range {
        Some(Ok(range)) => range,
        Some(Err(_)) => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        None => None,
    };
    match app.objects.get(&grant.key, range).await {
        Ok(object) => {
            let status = if range.is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                StatusCode::OK
            };
            let body = Body::from_stream(
                object
                    .stream
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
            (status, body).into_response()
        }
        Err(err) => (StatusCode::NOT_FOUND, err.to_string()).into_response(),
    }
}

/// A client route: a streamed transfer as a chunked HTTP body (for the loopback figure).
async fn client_stream(State(app): State<AppState>, UrlPath(dataset): UrlPath<String>) -> Response {
    match app
        .relay
        .stream(TENANT, "node-a", &dataset, 0, TransferOptions::default())
        .await
    {
        Ok(transfer) => Body::from_stream(transfer.into_stream()).into_response(),
        Err(err) => Problem(err).into_response(),
    }
}

impl Router {
    /// A router on a free port.
    pub async fn start(tweak: impl FnOnce(&mut RelayConfig)) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(MemoryDirectory::default()), tweak).await
    }

    /// A new router on the same port and directory, as after a restart.
    pub async fn restart_on(addr: SocketAddr, directory: Arc<MemoryDirectory>) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, directory, |_| {}).await
    }

    async fn serve(
        listener: tokio::net::TcpListener,
        directory: Arc<MemoryDirectory>,
        tweak: impl FnOnce(&mut RelayConfig),
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let data = Arc::new(tempfile::tempdir().unwrap());
        let objects = vigia_objects::open(
            data.path().join("objects").to_str().unwrap(),
            &OpenContext::new(data.path()).with_signing(SIGNING_KEY, url.clone()),
        )
        .await
        .unwrap();
        let spill = data.path().join("spill");
        std::fs::create_dir_all(&spill).unwrap();
        let mut config = RelayConfig::new(&spill);
        config.request_timeout = Duration::from_secs(5);
        tweak(&mut config);
        let relay = Relay::new(config, directory.clone(), Some(objects.clone()));
        let app = Router::routes(AppState {
            relay: relay.clone(),
            objects: objects.clone(),
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            relay,
            addr,
            url,
            directory,
            objects,
            server,
            _data: data,
        }
    }

    fn routes(state: AppState) -> axum::Router {
        axum::Router::new()
            .route("/api/v1/connectors/channel", get(channel))
            .route("/api/v1/transfers/{id}/result", post(result))
            .route("/api/v1/transfers/{id}/stream", post(stream))
            .route("/api/v1/transfers/{id}/complete", post(complete))
            .route("/api/v1/transfers/{id}/fail", post(fail))
            .route("/objects/{*key}", put(put_object).get(get_object))
            .route("/client/stream/{*dataset}", get(client_stream))
            .with_state(state)
    }

    /// Stops listening (the channels are closed first by `Relay::shutdown`).
    pub async fn stop(self) -> (SocketAddr, Arc<MemoryDirectory>) {
        self.server.abort();
        let _ = self.server.await;
        (self.addr, self.directory)
    }

    /// Waits until `tenant`'s connector `id` is online (or `limit` passes).
    pub async fn wait_online(&self, id: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.relay.connectors(TENANT, &[id.to_owned()])[0].online {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "connector {id} did not come online within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until no transfer is in flight.
    pub async fn wait_idle(&self, limit: Duration) {
        let start = Instant::now();
        while self.relay.stats().transfers_in_flight > 0 {
            assert!(
                start.elapsed() < limit,
                "transfers still in flight: {:?}",
                self.relay.stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A connector task over `root`.
pub struct Connector {
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Connector {
    pub fn start(router: &str, id: &str, token: &str, root: &Path) -> Self {
        let mut config = ConnectorConfig::new(router, id, token, root);
        config.backoff = BackoffPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(5),
        };
        config.request_timeout = Duration::from_secs(5);
        Self::start_with(config)
    }

    pub fn start_with(config: ConnectorConfig) -> Self {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            connector::run(config, token).await.unwrap();
        });
        Self { shutdown, task }
    }

    /// Kills it as a crash would: every socket and task dropped at once.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A root directory with one random file of `len` bytes named `name`.
pub fn dataset_dir(name: &str, len: usize, seed: u64) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = random_bytes(len, seed);
    std::fs::write(dir.path().join(name), &bytes).unwrap();
    (dir, bytes)
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut bytes = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    bytes
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn path_of(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().to_owned()
}

/// A hand-driven connector on a raw WebSocket: it answers every `stat` with `size` bytes
/// and hands each transfer request to the test, which then plays the data requests (well
/// or badly) itself.
pub struct FakeConnector {
    pub transfers: tokio::sync::mpsc::Receiver<vigia_relay::protocol::TransferRequest>,
    pub id: String,
    pub token: String,
    task: JoinHandle<()>,
}

impl FakeConnector {
    pub async fn start(router: &Router, id: &str, token: &str, size: u64) -> Self {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message as Frame;
        use vigia_relay::protocol::{decode, encode, paths, DatasetInfo, Message};
        let url = format!("ws://{}{}", router.addr, paths::CHANNEL);
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let hello = Message::Hello {
            connector: id.into(),
            token: token.into(),
            agent: "fake".into(),
        };
        socket.send(Frame::text(encode(&hello))).await.unwrap();
        let (tx, transfers) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let Frame::Text(text) = frame else { continue };
                match decode(&text).unwrap() {
                    Message::Stat { request, dataset } => {
                        let info = DatasetInfo {
                            name: dataset,
                            size,
                            mtime_ms: 0,
                            sha256: None,
                        };
                        let answer = Message::DatasetStat {
                            request,
                            dataset: info,
                        };
                        socket.send(Frame::text(encode(&answer))).await.unwrap();
                    }
                    Message::Transfer(request) => {
                        let _ = tx.send(request).await;
                    }
                    _ => {}
                }
            }
        });
        Self {
            transfers,
            id: id.into(),
            token: token.into(),
            task,
        }
    }

    /// A data request to the router with this connector's credentials.
    pub fn post(&self, router: &Router, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("{}{path}", router.url))
            .header(vigia_relay::protocol::CONNECTOR_HEADER, &self.id)
            .bearer_auth(&self.token)
    }
}

impl Drop for FakeConnector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
