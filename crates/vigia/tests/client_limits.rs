//! Per-client limits: live-feed streams (`live.max_subscribers`,
//! `live.max_subscribers_per_key`) and the ingest rate per key
//! (`ingest.max_requests_per_second_per_key`). Past a limit the client gets a clear problem
//! with `Retry-After`; other clients and open streams do not notice.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Error as WsError;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(server: &TestServer, token: &str) -> String {
    format!(
        "{}/api/v1/ws?access_token={token}",
        server.base.replacen("http://", "ws://", 1)
    )
}

async fn open(server: &TestServer, token: &str) -> Result<Socket, (u16, String, Option<String>)> {
    match tokio_tungstenite::connect_async(ws_url(server, token)).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(res)) => Err((
            res.status().as_u16(),
            String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned(),
            res.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
        )),
        Err(e) => panic!("ws connect: {e}"),
    }
}

async fn sse_status(server: &TestServer, token: &str) -> (u16, Option<String>) {
    let res = client()
        .get(server.url("/api/v1/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (res.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limits_are_refused_and_others_go_on() {
    let server = TestServer::start(Options {
        env: vec![
            ("VIGIA_LIVE__MAX_SUBSCRIBERS".into(), "3".into()),
            ("VIGIA_LIVE__MAX_SUBSCRIBERS_PER_KEY".into(), "2".into()),
        ],
        ..Options::default()
    });
    let other = new_key(server.data_dir(), "default", "second-screen");

    let mut first = open(&server, TOKEN).await.expect("first stream");
    let second = open(&server, TOKEN).await.expect("second stream");
    // The key's third: 429, before any upgrade.
    let (status, body, retry) = open(&server, TOKEN).await.expect_err("refused");
    assert_eq!(status, 429, "{body}");
    assert!(
        body.contains("live.max") || body.contains("most live streams"),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(sse_status(&server, TOKEN).await, (429, Some("5".into())));

    // Another key fills the server: then 503 for anyone.
    let _third = open(&server, &other).await.expect("another key's stream");
    let (status, body, retry) = open(&server, &other).await.expect_err("refused");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("most live streams"), "{body}");
    assert_eq!(retry.as_deref(), Some("5"));

    // Open streams are not disturbed: a reading reaches the first.
    let res = post_json(
        &server.url("/api/v1/readings"),
        &json!({"sensor": "LIVE-1", "value": 1.5}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let frame = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = first.next().await {
            if let Ok(text) = msg.to_text() {
                if let Ok(v) = serde_json::from_str::<Value>(text) {
                    if v["type"] == "readings" {
                        return v;
                    }
                }
            }
        }
        panic!("the stream ended")
    })
    .await
    .expect("a readings frame on the open stream");
    assert!(frame.to_string().contains("LIVE-1"), "{frame}");

    // A closed stream gives its place back.
    drop(second);
    eventually(
        Duration::from_secs(10),
        "the place to come back",
        || async { open(&server, TOKEN).await.ok() },
    )
    .await;
}

/// `ingest.max_requests_per_second_per_key`: a key past its rate gets 429 with
/// `Retry-After` on JSON and line protocol alike, while another key is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_flood_of_one_key_does_not_reach_other_keys() {
    let server = TestServer::start(Options {
        env: vec![(
            "VIGIA_INGEST__MAX_REQUESTS_PER_SECOND_PER_KEY".into(),
            "5".into(),
        )],
        ..Options::default()
    });
    let other = new_key(server.data_dir(), "default", "other-device");
    let post = |token: String, i: usize| {
        let url = server.url("/api/v1/readings");
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&json!({"sensor": "RATE-1", "value": i}))
                .send()
                .await
                .unwrap()
        }
    };
    let mut refused = 0;
    for i in 0..20 {
        let res = post(TOKEN.to_string(), i).await;
        match res.status().as_u16() {
            202 => {}
            429 => {
                refused += 1;
                let retry: u64 = res.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=2).contains(&retry), "{retry}");
                let body = res.text().await.unwrap();
                assert!(body.contains("max_requests_per_second_per_key"), "{body}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(refused >= 10, "only {refused} of 20 refused");
    // The line protocol endpoint counts against the same key: a burst of ten is mostly
    // refused (the bucket refills one place every 200 ms, so a slow run may let one or
    // two through; a single request could find a fresh place).
    let mut lp_refused = 0;
    for _ in 0..10 {
        let lp = client()
            .post(server.url("/api/v2/write"))
            .header("Authorization", format!("Token {TOKEN}"))
            .body("m,sensor=RATE-1 value=1")
            .send()
            .await
            .unwrap();
        match lp.status().as_u16() {
            429 => lp_refused += 1,
            204 => {}
            other => panic!("line protocol: unexpected {other}"),
        }
    }
    assert!(
        lp_refused >= 5,
        "only {lp_refused} of 10 line protocol writes refused"
    );
    // ...and another key is served meanwhile.
    for i in 0..5 {
        assert_eq!(post(other.clone(), i).await.status(), 202);
    }
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) from a raw socket,
/// or what arrived before the server closed it; "" when it closed without a byte.
async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                return text;
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&buf).into_owned(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "no answer within 10s; got so far: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
}

async fn raw_request(stream: &mut tokio::net::TcpStream, request: &str) -> String {
    use tokio::io::AsyncWriteExt;
    stream.write_all(request.as_bytes()).await.expect("write");
    read_response(stream).await
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nhost: vigia\r\n\r\n";

/// `http.max_connections`, `http.header_read_timeout` and `http.body_read_timeout`: past
/// the cap a new connection gets a whole 503 problem; a client that stalls in its head,
/// its body or while idle loses its connection (408 for a body); a well-behaved client
/// on an open connection is served throughout, and the freed places serve new clients.
#[tokio::test]
async fn connection_cap_and_slow_clients_get_clear_answers() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let server = TestServer::start(Options {
        env: vec![
            ("VIGIA_HTTP__MAX_CONNECTIONS".into(), "4".into()),
            ("VIGIA_HTTP__HEADER_READ_TIMEOUT".into(), "1500ms".into()),
            ("VIGIA_HTTP__BODY_READ_TIMEOUT".into(), "1s".into()),
        ],
        ..Default::default()
    });
    let addr = server.base.trim_start_matches("http://").to_string();
    let connect = || TcpStream::connect(addr.clone());

    let mut well_behaved = connect().await.expect("connect");
    assert!(raw_request(&mut well_behaved, HEALTHZ)
        .await
        .starts_with("HTTP/1.1 200"));
    let mut idle = connect().await.expect("connect");
    let mut slow_head = connect().await.expect("connect");
    slow_head
        .write_all(b"POST /api/v1/readings HTTP/1.1\r\nhost: vigia\r\n")
        .await
        .unwrap();
    let mut slow_body = connect().await.expect("connect");
    slow_body
        .write_all(
            format!(
                "POST /api/v1/readings HTTP/1.1\r\nhost: vigia\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n[{{\"sensor\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Let the server accept all four before the fifth knocks.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut fifth = connect()
        .await
        .expect("the kernel still completes the handshake");
    let refused = read_response(&mut fifth).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    let lower = refused.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{refused}");
    assert!(lower.contains("application/problem+json"), "{refused}");
    assert!(refused.contains("http.max_connections"), "{refused}");
    // The open, well-behaved connection does not notice the cap.
    assert!(raw_request(&mut well_behaved, HEALTHZ)
        .await
        .starts_with("HTTP/1.1 200"));

    // The stalled body gets a 408 problem after its pause; nothing of it is stored.
    let timed_out = read_response(&mut slow_body).await;
    assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out}");
    assert!(timed_out.contains("http.body_read_timeout"), "{timed_out}");
    // The stalled head and the idle connection are closed after the header timeout.
    for (name, stream) in [("slow head", &mut slow_head), ("idle", &mut idle)] {
        let answer = read_response(stream).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{name}: {answer}"
        );
    }
    drop(well_behaved);
    // The places are free again: a new client is served.
    let status = eventually(Duration::from_secs(10), "a freed place", || async {
        let Ok(res) = client().get(server.url("/healthz")).send().await else {
            return None;
        };
        (res.status() == 200).then_some(res.status())
    })
    .await;
    assert_eq!(status, 200);
    assert!(metric(&server, "vigia_http_connections_refused_total").await >= 1.0);
    let stored = get_json(&server.url("/api/v1/sensors")).await;
    assert_eq!(stored.as_array().map(Vec::len), Some(0), "{stored}");
}

/// `live.send_timeout`: a WebSocket client that stops reading is dropped once a frame has
/// waited that long, and its place and buffers are freed (a new stream of the same key
/// fits again under `live.max_subscribers_per_key`); a client that reads is served
/// throughout, before and after. The 1008 close frame is queued behind the unread
/// frames, so such a client usually sees a reset instead of the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_closed_and_others_go_on() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start(Options {
        env: vec![
            ("VIGIA_LIVE__SEND_TIMEOUT".into(), "1s".into()),
            ("VIGIA_LIVE__MAX_SUBSCRIBERS_PER_KEY".into(), "2".into()),
        ],
        ..Options::default()
    });
    // The stalled client: a tiny receive window, and nobody polls the socket after the
    // handshake, so the server's send buffer fills.
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut stalled, _) = tokio_tungstenite::client_async(ws_url(&server, TOKEN), stream)
        .await
        .expect("stalled stream opens");
    let mut reader = open(&server, TOKEN).await.expect("reading stream");
    let reading = tokio::spawn(async move {
        let mut readings = 0usize;
        while let Some(Ok(message)) = reader.next().await {
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["type"] == "readings" {
                    readings += frame["readings"].as_array().map_or(0, Vec::len);
                }
                if frame["readings"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["sensor"] == "after-close"))
                {
                    return (readings, reader);
                }
            }
        }
        panic!("the reading stream ended early after {readings} readings");
    });

    // About 14 MB of frames: far past the 4 MiB write buffer and the kernel's buffers.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    for batch in 0..20 {
        let rows: Vec<Value> = (0..10_000)
            .map(|i| json!({"sensor": format!("flood-{}", i % 50), "ts": base + batch * 10_000 + i, "value": 1.5}))
            .collect();
        let res = post_json(&server.url("/api/v1/readings"), &Value::Array(rows)).await;
        assert_eq!(res.status(), 202);
    }
    drained(&server).await;

    // The stalled stream's place comes back: the key's third stream fits again.
    let third = eventually(
        Duration::from_secs(20),
        "the stalled stream's place",
        || async { open(&server, TOKEN).await.ok() },
    )
    .await;
    drop(third);
    // What the stalled client finds when it finally reads: frames, then the end of the
    // stream. The close frame with its reason (1008, "too slow") is sent when the server
    // gives up, but it sits behind the frames that filled the buffers; when the server
    // drops the connection with data still unsent, the kernel resets it and the client
    // sees a reset instead. Either way the stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(message) = stalled.next().await {
            match message {
                Ok(Message::Close(frame)) => return Ok(frame),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("end of stream".to_string())
    })
    .await
    .expect("the stalled stream ends");
    if let Ok(Some(close)) = &ended {
        assert_eq!(close.code, CloseCode::Policy);
        assert!(close.reason.contains("too slow"), "{}", close.reason);
    } else if let Err(why) = &ended {
        assert!(
            why.contains("reset") || why.contains("end of stream") || why.contains("closed"),
            "the stalled stream ended oddly: {why}"
        );
    }
    let _ = stalled.close(None).await;

    // The reading client was never disturbed and still gets new events.
    let res = post_json(
        &server.url("/api/v1/readings"),
        &json!({"sensor": "after-close", "value": 2.0}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let (readings, _reader) = tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("the reading stream sees the reading sent after the close")
        .unwrap();
    assert!(readings >= 200_000, "the reader got {readings} readings");
}
