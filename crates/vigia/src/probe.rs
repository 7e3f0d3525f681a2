//! `vigia probe URL`: one HTTP GET that succeeds on a 2xx answer. The runtime image has no
//! curl or wget (fewer packages, fewer CVEs to patch), so Docker's `HEALTHCHECK` and any
//! exec probe call the binary itself. Plain `http://` only: a probe talks to its own
//! process over loopback, where TLS would add nothing but a dependency.

use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Most of an answer's body read: enough for a problem document's `detail`, bounded so a
/// misbehaving server cannot make a health check hold memory.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest part of a body repeated in the one-line message.
const MAX_DETAIL_CHARS: usize = 200;

/// What a successful probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    pub status: u16,
    /// The first line of the body, shortened.
    pub detail: String,
}

/// GETs `url` within `timeout` (connect, request and body together). `Ok` only on 2xx; any
/// other status, a refused connection or the timeout is an error whose text names the URL
/// and what went wrong, on one line.
pub async fn probe(url: &str, timeout: Duration) -> anyhow::Result<ProbeAnswer> {
    let uri = parse(url)?;
    let answer = tokio::time::timeout(timeout, get(&uri))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer within {}s", timeout.as_secs_f64()))?
        .with_context(|| url.to_string())?;
    if !(200..300).contains(&answer.status) {
        let reason = hyper::StatusCode::from_u16(answer.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        bail!(
            "{url} answered {} {reason}{}{}",
            answer.status,
            if answer.detail.is_empty() { "" } else { ": " },
            answer.detail
        );
    }
    Ok(answer)
}

/// Checks the URL before any connection, so a typo in a health check reads as a typo.
fn parse(url: &str) -> anyhow::Result<Uri> {
    let uri: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("`{url}` is not a URL ({e}); write http://HOST:PORT/PATH"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!(
            "`{url}`: only http:// is supported (got `{other}://`); probe the process on loopback"
        ),
        None => bail!("`{url}` has no scheme; write http://HOST:PORT/PATH"),
    }
    if uri.host().is_none_or(str::is_empty) {
        bail!("`{url}` has no host; write http://HOST:PORT/PATH");
    }
    Ok(uri)
}

async fn get(uri: &Uri) -> anyhow::Result<ProbeAnswer> {
    let host = uri.host().expect("parse() checked the host");
    // `Uri::host` keeps the brackets of an IPv6 literal, which is what a socket address
    // string needs too.
    let port = uri.port_u16().unwrap_or(80);
    let addr = format!("{host}:{port}");
    let stream = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("could not connect to {addr}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake failed")?;
    // The connection future drives the socket; it ends when the exchange is done or the
    // probe gives up (dropping the task with the runtime).
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().expect("parse() checked the host").as_str();
    let request = Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "vigia-probe")
        .body(Empty::<Bytes>::new())
        .context("could not build the request")?;
    let response = sender
        .send_request(request)
        .await
        .context("the request failed")?;
    let status = response.status().as_u16();
    // A body that cannot be read in full still leaves the status to judge by.
    let detail = match Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(body) => first_line(&body.to_bytes()),
        Err(_) => String::new(),
    };
    Ok(ProbeAnswer { status, detail })
}

/// The body's first non-empty line, at most `MAX_DETAIL_CHARS` characters, so the message
/// stays one line (a problem document is one line of JSON).
fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    match line {
        Some(line) if line.chars().count() > MAX_DETAIL_CHARS => {
            let cut: String = line.chars().take(MAX_DETAIL_CHARS).collect();
            format!("{cut}…")
        }
        Some(line) => line.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_say_what_to_write() {
        for (url, needle) in [
            ("https://127.0.0.1:8080/readyz", "only http://"),
            ("127.0.0.1:8080/readyz", "http://HOST:PORT/PATH"),
            ("http://", "not a URL"),
            ("not a url", "not a URL"),
        ] {
            let err = format!("{:#}", parse(url).unwrap_err());
            assert!(err.contains(needle), "{url}: {err}");
        }
        assert_eq!(
            parse("http://[::1]:9/healthz").unwrap().host(),
            Some("[::1]")
        );
    }

    #[test]
    fn details_are_one_short_line() {
        assert_eq!(first_line(b"\n  ready \nmore"), "ready");
        assert_eq!(first_line(b""), "");
        let long = "x".repeat(500);
        let line = first_line(long.as_bytes());
        assert_eq!(line.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(line.ends_with('…'));
    }
}
