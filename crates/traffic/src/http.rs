//! A lean HTTP/1.1 client shared by the simulator and the benchmark: one keep-alive
//! connection per [`Connection`], a timeout on every request, and a transparent
//! reconnect when the server has closed the connection in between.
//!
//! The benchmark needs a client that costs the machine as little as possible (it runs
//! on the same two cores as the server it measures), so this is hyper's bare
//! `client::conn::http1` over a tokio `TcpStream`, without pools or TLS.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a request may take, connect included, unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest `Retry-After` honoured; a larger value is clamped so that a confused server
/// cannot park a client for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server URL cannot be used.
    #[error("invalid server URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The token cannot be sent in an `Authorization` header.
    #[error("invalid token: it must be printable ASCII")]
    InvalidToken,
    /// The request itself could not be built (a path the client composed is invalid).
    #[error("invalid request to `{path}`: {reason}")]
    InvalidRequest {
        /// The path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No TCP connection: the server is down, restarting, or the address is wrong.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The connection broke before a complete answer arrived.
    #[error("{method} {path} failed: {source}")]
    Exchange {
        /// The request's method.
        method: Method,
        /// The request's path.
        path: String,
        /// hyper's reason.
        source: hyper::Error,
    },
    /// No complete answer within the timeout; the connection is dropped.
    #[error("no answer from the server within {0:?}")]
    Timeout(Duration),
}

impl HttpError {
    /// A short name for the kind of failure, for counting failures by class
    /// (`connect`, `timeout`, `connection lost`; `client` for requests that could not
    /// be made at all).
    pub fn class(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "connect",
            Self::Timeout(_) => "timeout",
            Self::Exchange { .. } => "connection lost",
            Self::InvalidUrl { .. } | Self::InvalidToken | Self::InvalidRequest { .. } => "client",
        }
    }
}

/// Where a Vigía server listens, parsed from `http://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
    prefix: String,
}

impl Target {
    /// Parses a server URL. Only plain `http://` is supported: Vigía listens on plain
    /// HTTP and TLS belongs to a proxy in front of it.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let invalid = |reason| HttpError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let trimmed = url.trim();
        let scheme_end = trimmed
            .find("://")
            .ok_or_else(|| invalid("it must start with http://"))?;
        match trimmed[..scheme_end].to_ascii_lowercase().as_str() {
            "http" => {}
            "https" => return Err(invalid("https is not supported here; use http://")),
            _ => return Err(invalid("it must start with http://")),
        }
        let rest = &trimmed[scheme_end + 3..];
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(invalid("it must not have a query or fragment"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials belong in --token, not in the URL"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| invalid("unclosed `[`"))?;
            match after {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        after
                            .strip_prefix(':')
                            .ok_or_else(|| invalid("junk after `]`"))?,
                    ),
                ),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("it has no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse()
                .map_err(|_| invalid("the port must be a number from 1 to 65535"))?,
        };
        if port == 0 {
            return Err(invalid("the port must be a number from 1 to 65535"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// `host:port` as the `Host` header wants it (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL back, normalised (`http://host:port/prefix`).
    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.prefix)
    }

    fn path(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }
}

/// A complete HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// The `Retry-After` header in seconds, when present and numeric (clamped to
    /// [`MAX_RETRY_AFTER`]).
    pub retry_after: Option<Duration>,
    /// The whole body.
    pub body: Bytes,
}

impl Response {
    /// Whether the server asks us to slow down and resend (503 or 429).
    pub fn is_backpressure(&self) -> bool {
        matches!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        )
    }

    /// The body as text for messages, cut to a readable length.
    pub fn body_text(&self) -> String {
        const LIMIT: usize = 500;
        let text = String::from_utf8_lossy(&self.body);
        match text.char_indices().nth(LIMIT) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.into_owned(),
        }
    }
}

/// Parses `Retry-After` as delta-seconds. Fractions are accepted (lenient to servers
/// that send them); the HTTP-date form is not, and yields `None` so the caller's
/// default applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        seconds.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// One keep-alive HTTP/1.1 connection to a server, opened on first use and reopened
/// after the server closes it. Not shared: each concurrent worker owns one.
pub struct Connection {
    target: Target,
    host_header: HeaderValue,
    auth_header: Option<HeaderValue>,
    timeout: Duration,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A connection (not yet opened) that sends `Authorization: Bearer <token>` when a
    /// token is given.
    pub fn new(target: &Target, token: Option<&str>, timeout: Duration) -> Result<Self, HttpError> {
        let host_header =
            HeaderValue::from_str(&target.authority()).map_err(|_| HttpError::InvalidUrl {
                url: target.url(),
                reason: "the host is not a valid Host header",
            })?;
        let auth_header = token
            .map(|t| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                    .map_err(|_| HttpError::InvalidToken)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        Ok(Self {
            target: target.clone(),
            host_header,
            auth_header,
            timeout,
            sender: None,
        })
    }

    /// The server this connection talks to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Opens the connection now if it is not open, so that a measurement that follows
    /// does not include the TCP handshake.
    pub async fn connect(&mut self) -> Result<(), HttpError> {
        match tokio::time::timeout(self.timeout, self.ensure_open()).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(self.timeout)),
        }
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Response, HttpError> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&mut self, path: &str, body: Bytes) -> Result<Response, HttpError> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&mut self, path: &str, body: Bytes) -> Result<Response, HttpError> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// Sends one request and reads the whole answer. A request that fails on a reused
    /// connection is sent once more on a fresh one: the server may have closed an idle
    /// keep-alive connection just as we wrote to it. That resend is safe for Vigía's
    /// API because readings and sensor PUTs are idempotent.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response, HttpError> {
        let reused = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        match self.attempt(&method, path, body.clone()).await {
            Err(HttpError::Exchange { source, .. }) if reused => {
                tracing::debug!(error = %source, "keep-alive connection lost; resending on a new one");
                self.attempt(&method, path, body).await
            }
            other => other,
        }
    }

    async fn attempt(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response, HttpError> {
        let limit = self.timeout;
        let result = match tokio::time::timeout(limit, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(limit)),
        };
        if result.is_err() {
            // Whatever state the connection is in, it cannot be trusted for the next request.
            self.sender = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response, HttpError> {
        let full_path = self.target.path(path);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(full_path.as_str())
            .header(HOST, self.host_header.clone());
        if let Some(auth) = &self.auth_header {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| HttpError::InvalidRequest {
                path: full_path.clone(),
                reason: e.to_string(),
            })?;
        let exchange_error = |source| HttpError::Exchange {
            method: method.clone(),
            path: full_path.clone(),
            source,
        };

        self.ensure_open().await?;
        let sender = self
            .sender
            .as_mut()
            .expect("ensure_open leaves an open connection behind");
        sender.ready().await.map_err(exchange_error)?;
        let response = sender.send_request(request).await.map_err(exchange_error)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(exchange_error)?.to_bytes();
        let retry_after = parts
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        Ok(Response {
            status: parts.status,
            retry_after,
            body,
        })
    }

    async fn ensure_open(&mut self) -> Result<(), HttpError> {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(());
        }
        let addr = self.target.authority();
        let stream = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|source| HttpError::Connect {
                addr: addr.clone(),
                source,
            })?;
        // Small requests back to back: waiting for Nagle would add the latency we measure.
        stream
            .set_nodelay(true)
            .map_err(|source| HttpError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| HttpError::Exchange {
                method: Method::GET,
                path: "(handshake)".into(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
        self.sender = Some(sender);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::{FakeServer, Reply};

    #[test]
    fn parses_targets() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "http://127.0.0.1:8080",
                "127.0.0.1:8080",
                "http://127.0.0.1:8080",
            ),
            (
                "http://127.0.0.1:8080/",
                "127.0.0.1:8080",
                "http://127.0.0.1:8080",
            ),
            ("HTTP://localhost", "localhost:80", "http://localhost:80"),
            (
                "http://[::1]:9000/vigia/",
                "[::1]:9000",
                "http://[::1]:9000/vigia",
            ),
            (
                " http://127.0.0.1:1/a/b ",
                "127.0.0.1:1",
                "http://127.0.0.1:1/a/b",
            ),
        ];
        for (url, authority, normal) in cases {
            let t = Target::parse(url).expect(url);
            assert_eq!(t.authority(), *authority, "{url}");
            assert_eq!(t.url(), *normal, "{url}");
        }
        assert_eq!(
            Target::parse("http://h:1/p")
                .expect("valid")
                .path("/healthz"),
            "/p/healthz"
        );
    }

    #[test]
    fn rejects_bad_targets_with_reasons() {
        let cases: &[(&str, &str)] = &[
            ("127.0.0.1:8080", "http://"),
            ("https://127.0.0.1", "https is not supported"),
            ("ftp://127.0.0.1", "http://"),
            ("http://", "no host"),
            ("http://:80", "no host"),
            ("http://127.0.0.1:0", "port"),
            ("http://127.0.0.1:99999", "port"),
            ("http://127.0.0.1:x", "port"),
            ("http://user:pw@127.0.0.1", "credentials"),
            ("http://127.0.0.1/?a=1", "query"),
            ("http://[::1", "unclosed"),
            ("http://[::1]x", "junk"),
        ];
        for (url, needle) in cases {
            let err = Target::parse(url).expect_err(url).to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn retry_after_values() {
        let cases: &[(&str, Option<u64>)] = &[
            ("1", Some(1_000)),
            (" 2 ", Some(2_000)),
            ("0.25", Some(250)),
            ("0", Some(0)),
            ("99999", Some(300_000)),
            ("-1", None),
            ("soon", None),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_retry_after(text),
                millis.map(Duration::from_millis),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_tokens_that_cannot_be_headers() {
        let t = Target::parse("http://127.0.0.1:1").expect("valid");
        assert!(matches!(
            Connection::new(&t, Some("bad\ntoken"), DEFAULT_TIMEOUT),
            Err(HttpError::InvalidToken)
        ));
    }

    #[tokio::test]
    async fn sends_headers_and_reuses_the_connection() {
        let server = FakeServer::start(|req| {
            Reply::new(202, r#"{"accepted":1}"#)
                .header("Retry-After", if req.path == "/x" { "3" } else { "" })
        })
        .await;
        let target = Target::parse(&server.url).expect("valid");
        let mut conn = Connection::new(&target, Some("s3cret"), DEFAULT_TIMEOUT).expect("conn");
        for _ in 0..3 {
            let r = conn
                .post_json("/api/v1/readings", Bytes::from_static(b"{\"a\":1}"))
                .await
                .expect("answer");
            assert_eq!(r.status, StatusCode::ACCEPTED);
            assert_eq!(r.body_text(), r#"{"accepted":1}"#);
            assert_eq!(r.retry_after, None);
        }
        let r = conn.get("/x").await.expect("answer");
        assert_eq!(r.retry_after, Some(Duration::from_secs(3)));
        assert_eq!(
            server.connections(),
            1,
            "one keep-alive connection for all requests"
        );
        let requests = server.requests();
        assert_eq!(requests.len(), 4);
        let first = &requests[0];
        assert_eq!(first.method, "POST");
        assert_eq!(first.path, "/api/v1/readings");
        assert_eq!(first.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(first.header("content-type"), Some("application/json"));
        assert_eq!(first.header("host"), Some(target.authority().as_str()));
        assert_eq!(first.body, b"{\"a\":1}");
        assert_eq!(requests[3].header("content-type"), None);
    }

    #[tokio::test]
    async fn reconnects_after_the_server_closes() {
        let server = FakeServer::start(|_| Reply::new(200, "ok").close()).await;
        let target = Target::parse(&server.url).expect("valid");
        let mut conn = Connection::new(&target, None, DEFAULT_TIMEOUT).expect("conn");
        for _ in 0..3 {
            let r = conn.get("/healthz").await.expect("answer");
            assert_eq!(r.status, StatusCode::OK);
        }
        assert_eq!(server.requests().len(), 3);
        assert_eq!(server.requests()[0].header("authorization"), None);
        assert!(server.connections() >= 2, "a closed connection is reopened");
    }

    #[tokio::test]
    async fn times_out_and_recovers() {
        let server = FakeServer::start(|req| {
            let reply = Reply::new(200, "ok");
            if req.path == "/slow" {
                reply.delay(Duration::from_millis(500))
            } else {
                reply
            }
        })
        .await;
        let target = Target::parse(&server.url).expect("valid");
        let mut conn = Connection::new(&target, None, Duration::from_millis(100)).expect("conn");
        let err = conn.get("/slow").await.expect_err("must time out");
        assert!(matches!(err, HttpError::Timeout(_)), "{err}");
        let r = conn.get("/fast").await.expect("a new connection works");
        assert_eq!(r.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        let port = crate::test_server::free_port();
        let target = Target::parse(&format!("http://127.0.0.1:{port}")).expect("valid");
        let mut conn = Connection::new(&target, None, DEFAULT_TIMEOUT).expect("conn");
        let err = conn.get("/healthz").await.expect_err("nobody listens");
        assert!(matches!(err, HttpError::Connect { .. }), "{err}");
        assert!(err.to_string().contains(&target.authority()), "{err}");
    }
}
