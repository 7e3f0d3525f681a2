//! The HTTP/1.1 listener: our own accept loop over hyper, because `axum::serve` exposes
//! none of the limits a server facing plants' networks needs (#12, "abuse limits").
//!
//! - **Connection cap** ([`ServerLimits::max_connections`]): each accepted socket holds a
//!   permit until the socket itself closes — after a WebSocket upgrade too, since the
//!   upgraded stream owns the socket. Past the cap the client gets a complete
//!   `503 Service Unavailable` problem with `Retry-After`, written straight on the socket,
//!   instead of a reset or a hang; connections already open do not notice.
//! - **Header read timeout** ([`ServerLimits::header_read_timeout`]): a client must send a
//!   request's whole head within it. hyper arms the same timer while a keep-alive
//!   connection waits for its next request, so it is also the idle timeout: an idle or
//!   slowloris client cannot hold a permit for long.
//! - **Body read timeout** ([`ServerLimits::body_read_timeout`]): every request body is
//!   wrapped in tower-http's `TimeoutBody`, which fails when no chunk arrives within it;
//!   the handler reading the body answers 408 (`routes::readings::read_body`).
//!
//! Shutdown: stop accepting, ask every connection to finish its in-flight request
//! (`graceful_shutdown`), and return when all have closed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;
use tracing::{debug, warn};

/// Counter: connections refused because `http.max_connections` were open.
pub const CONNECTIONS_REFUSED: &str = "vigia_http_connections_refused_total";
/// Gauge: HTTP connections open now (upgraded WebSockets included).
pub const CONNECTIONS_OPEN: &str = "vigia_http_connections_open";

/// The listener's limits (config `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// The longest pause between two chunks of a request body; past it the handler
    /// reading the body answers 408 (see `routes::readings::read_body`).
    pub body_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Every connection task holds a receiver; `closed()` on the sender tells when all
    // of them are gone. A send asks them to shut down gracefully.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE/ENFILE and aborted handshakes: back off briefly rather
                    // than spin; the listener itself stays usable.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Without TCP_NODELAY, Nagle's algorithm held the second live frame on a fresh
        // WebSocket for ~40 ms waiting on the client's delayed ACK (`vigia bench alerts`).
        let _ = tcp.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let app = app.clone();
                let stop_rx = stop_rx.clone();
                tokio::spawn(serve_connection(
                    CountedStream::new(tcp, permit),
                    remote,
                    app,
                    limits,
                    stop_rx,
                ));
            }
            Err(_) => {
                metrics::counter!(CONNECTIONS_REFUSED).increment(1);
                tokio::spawn(refuse(tcp, limits.max_connections));
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
}

async fn serve_connection(
    io: CountedStream,
    remote: SocketAddr,
    app: Router,
    limits: ServerLimits,
    mut stop_rx: watch::Receiver<bool>,
) {
    let service = app.map_request(move |req: hyper::Request<Incoming>| {
        let mut req =
            req.map(|body| axum::body::Body::new(TimeoutBody::new(limits.body_read_timeout, body)));
        req.extensions_mut().insert(ConnectInfo(remote));
        req
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(%remote, error = %e, "connection ended with an error");
                }
                break;
            }
            changed = stop_rx.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Answers a connection past the cap with a whole HTTP response, then closes it.
async fn refuse(mut tcp: TcpStream, max_connections: usize) {
    let problem = crate::ApiError::unavailable(
        format!(
            "this server holds its limit of {max_connections} connections \
             (http.max_connections); retry later"
        ),
        1,
    );
    let body = serde_json::to_string(&*problem.problem).unwrap_or_default();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Bounded: a client that does not read cannot hold this task.
    let write = async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await
    };
    if tokio::time::timeout(Duration::from_secs(1), write)
        .await
        .is_err()
    {
        warn!("a refused client did not take its 503 within 1s");
    }
}

/// A socket that holds its connection permit (and the open-connections gauge) for as
/// long as it lives, whoever owns it: hyper's connection or, after an upgrade, the
/// WebSocket.
struct CountedStream {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl CountedStream {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(CONNECTIONS_OPEN).increment(1.0);
        Self {
            tcp,
            _permit: permit,
        }
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        metrics::gauge!(CONNECTIONS_OPEN).decrement(1.0);
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
