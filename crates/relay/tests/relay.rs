//! The relay end to end over real sockets: an axum router in the test process, real
//! connector tasks over temporary directories, real HTTP and WebSocket between them.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message as Frame;
use vigia_relay::protocol::{decode, encode, paths, CompleteReport, Message};
use vigia_relay::router::{BufferedBody, ConnectorCredentials, StreamTransfer, TransferOptions};
use vigia_relay::RelayError;

use support::*;

const MIB: usize = 1024 * 1024;
const ONLINE: Duration = Duration::from_secs(10);

async fn read_all(transfer: &mut StreamTransfer) -> Result<Vec<u8>, RelayError> {
    let mut out = Vec::new();
    while let Some(chunk) = transfer.next_chunk().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

async fn buffered_bytes(body: &mut BufferedBody) -> Vec<u8> {
    match body {
        BufferedBody::Memory(bytes) => bytes.to_vec(),
        BufferedBody::File { file, .. } => {
            let mut out = Vec::new();
            file.read_to_end(&mut out).await.unwrap();
            out
        }
    }
}

/// Buffer (spilling past 8 MiB), stream and offload of a random 24 MiB file, with and
/// without zstd: byte-exact, with the file's SHA-256; the second read of the file has its
/// hash announced up front from the connector's cache.
#[tokio::test]
async fn every_mode_moves_a_file_byte_exact() {
    let router = Router::start(|_| {}).await;
    router.directory.register(TENANT, "node-a", "vg_token_a");
    let (root, bytes) = dataset_dir("big.bin", 24 * MIB, 1);
    let sha = sha256_hex(&bytes);
    let _connector = Connector::start(&router.url, "node-a", "vg_token_a", root.path());
    router.wait_online("node-a", ONLINE).await;
    let relay = &router.relay;

    for zstd in [false, true] {
        let options = TransferOptions { zstd };
        let mut buffered = relay
            .buffer(TENANT, "node-a", "big.bin", options)
            .await
            .unwrap();
        assert_eq!(
            (buffered.size, buffered.sha256.as_str()),
            (bytes.len() as u64, sha.as_str())
        );
        assert!(
            matches!(buffered.body.body, BufferedBody::File { .. }),
            "24 MiB is past the 8 MiB held in memory: spilled"
        );
        assert_eq!(
            relay.stats().buffered_memory_bytes,
            0,
            "a spilled body holds no memory"
        );
        assert!(
            buffered_bytes(&mut buffered.body.body).await == bytes,
            "buffer, zstd {zstd}"
        );

        let mut stream = relay
            .stream(TENANT, "node-a", "big.bin", 0, options)
            .await
            .unwrap();
        assert_eq!(
            stream.announced_sha256.as_deref(),
            Some(sha.as_str()),
            "cached after the first read"
        );
        let got = read_all(&mut stream).await.unwrap();
        assert!(got == bytes, "stream, zstd {zstd}");
        assert_eq!(stream.sha256(), Some(sha.as_str()));
    }

    let offloaded = relay
        .offload(TENANT, "node-a", "big.bin", TransferOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (offloaded.size, offloaded.sha256.as_str()),
        (bytes.len() as u64, sha.as_str())
    );
    assert!(
        offloaded.key.as_str().ends_with("/big.bin"),
        "{}",
        offloaded.key
    );
    let http = reqwest::Client::new();
    let download = http.get(&offloaded.download_url).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert!(download.bytes().await.unwrap() == bytes, "offload");
    // A cut download resumes with Range on the object.
    let half = bytes.len() / 2;
    let rest = http
        .get(&offloaded.download_url)
        .header("range", format!("bytes={half}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 206);
    assert!(
        rest.bytes().await.unwrap() == bytes[half..],
        "offload resumed by Range"
    );

    // Small datasets stay in memory, and give it back when dropped.
    std::fs::write(root.path().join("small.csv"), b"t,v\n1,2\n").unwrap();
    let small = relay
        .buffer(TENANT, "node-a", "small.csv", TransferOptions::default())
        .await
        .unwrap();
    assert!(matches!(&small.body.body, BufferedBody::Memory(b) if &b[..] == b"t,v\n1,2\n"));
    assert_eq!(relay.stats().buffered_memory_bytes, 8);
    drop(small);
    assert_eq!(relay.stats().buffered_memory_bytes, 0);
    router.wait_idle(Duration::from_secs(5)).await;
}

/// A stream resumed from an offset carries only the rest, and the SHA-256 reported is the
/// whole file's, so the client verifies its `.part` plus the rest.
#[tokio::test]
async fn a_stream_resumes_from_an_offset() {
    let router = Router::start(|_| {}).await;
    router.directory.register(TENANT, "node-a", "vg_token_a");
    let (root, bytes) = dataset_dir("data.bin", 5 * MIB + 123, 2);
    let _connector = Connector::start(&router.url, "node-a", "vg_token_a", root.path());
    router.wait_online("node-a", ONLINE).await;
    for (offset, zstd) in [(bytes.len() / 2, false), (1, true), (bytes.len(), false)] {
        let mut stream = router
            .relay
            .stream(
                TENANT,
                "node-a",
                "data.bin",
                offset as u64,
                TransferOptions { zstd },
            )
            .await
            .unwrap();
        let rest = read_all(&mut stream).await.unwrap();
        assert!(rest == bytes[offset..], "from {offset}");
        let mut whole = bytes[..offset].to_vec();
        whole.extend_from_slice(&rest);
        assert_eq!(
            stream.sha256(),
            Some(sha256_hex(&whole).as_str()),
            "from {offset}"
        );
    }
    let past = router
        .relay
        .stream(
            TENANT,
            "node-a",
            "data.bin",
            bytes.len() as u64 + 1,
            TransferOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(past.status(), 416, "{past}");
    router.wait_idle(Duration::from_secs(5)).await;
}

/// Every refusal with its status, and nothing served for a traversal.
#[tokio::test]
async fn bad_requests_get_their_errors() {
    let router = Router::start(|config| config.max_buffered_bytes = 1024).await;
    router.directory.register(TENANT, "node-a", "vg_token_a");
    router
        .directory
        .register(TENANT, "node-offline", "vg_token_b");
    router
        .directory
        .register(OTHER_TENANT, "node-other", "vg_token_c");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    let (root, _) = dataset_dir("big.bin", 4096, 3);
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link_out"))
        .unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    let _a = Connector::start(&router.url, "node-a", "vg_token_a", root.path());
    let _other = Connector::start(&router.url, "node-other", "vg_token_c", root.path());
    router.wait_online("node-a", ONLINE).await;
    let relay = &router.relay;
    let none = TransferOptions::default();

    let cases: Vec<(&str, &str, u16)> = vec![
        ("node-a", "../etc/passwd", 400),
        ("node-a", "/etc/passwd", 400),
        ("node-a", "%2e%2e/%2e%2e/etc/passwd", 400),
        ("node-a", "sub/..%2f..%2fetc/passwd", 400),
        ("node-a", "link_out", 400),
        ("node-a", "missing.csv", 404),
        ("node-a", "sub", 404),
        ("node-nobody", "big.bin", 404),
        ("node-other", "big.bin", 404),
        ("node-offline", "big.bin", 503),
    ];
    for (connector, dataset, status) in cases {
        let err = relay
            .stream(TENANT, connector, dataset, 0, none)
            .await
            .unwrap_err();
        assert_eq!(err.status(), status, "{connector} {dataset}: {err}");
        if status == 503 {
            assert_eq!(err.retry_after(), Some(relay.config().retry_after));
        }
    }
    let too_big = relay
        .buffer(TENANT, "node-a", "big.bin", none)
        .await
        .unwrap_err();
    assert_eq!(too_big.status(), 413, "{too_big}");
    let zstd_offload = relay
        .offload(TENANT, "node-a", "big.bin", TransferOptions { zstd: true })
        .await
        .unwrap_err();
    assert_eq!(zstd_offload.status(), 400, "{zstd_offload}");
    assert_eq!(
        relay
            .list_datasets(OTHER_TENANT, "node-a")
            .await
            .unwrap_err()
            .status(),
        404
    );
    let (listed, _) = relay.list_datasets(TENANT, "node-a").await.unwrap();
    let names: Vec<&str> = listed.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["big.bin"],
        "symlinks out and directories are not listed"
    );

    // Data requests with wrong credentials are 401; a stranger's transfer id is 404.
    let report = CompleteReport {
        size: 1,
        sha256: "0".repeat(64),
        sent_sha256: "0".repeat(64),
    };
    let wrong = ConnectorCredentials {
        id: "node-a".into(),
        token: "vg_wrong".into(),
    };
    let id = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        relay
            .accept_complete(&wrong, id, report.clone())
            .await
            .unwrap_err()
            .status(),
        401
    );
    let right = ConnectorCredentials {
        id: "node-a".into(),
        token: "vg_token_a".into(),
    };
    assert_eq!(
        relay
            .accept_complete(&right, id, report.clone())
            .await
            .unwrap_err()
            .status(),
        404
    );
    let http = reqwest::Client::new();
    let status = http
        .post(format!(
            "{}{}",
            router.url, "/api/v1/transfers/0123456789abcdef0123456789abcdef/complete"
        ))
        .json(&report)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401, "no credentials at all");

    // A connector with a wrong token never comes online.
    let _bad = Connector::start(&router.url, "node-offline", "vg_wrong", root.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!relay.connectors(TENANT, &["node-offline".into()])[0].online);
    router.wait_idle(Duration::from_secs(5)).await;
}

/// Raw WebSocket clients: a malformed message, a binary frame, a message only the router
/// may send, and a bad token each close the channel with a reason; the first three count.
#[tokio::test]
async fn malformed_control_messages_close_the_channel() {
    let router = Router::start(|_| {}).await;
    router.directory.register(TENANT, "node-raw", "vg_raw");
    let url = format!("ws://{}{}", router.addr, paths::CHANNEL);
    let hello = |token: &str| {
        encode(&Message::Hello {
            connector: "node-raw".into(),
            token: token.into(),
            agent: "test".into(),
        })
    };
    let bad_frames = [
        Frame::text("{not json"),
        Frame::binary(vec![1, 2, 3]),
        Frame::text(r#"{"v":1,"type":"list_datasets","request":1}"#),
        Frame::text(r#"{"v":9,"type":"heartbeat"}"#),
    ];
    for (i, bad) in bad_frames.into_iter().enumerate() {
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        socket.send(Frame::text(hello("vg_raw"))).await.unwrap();
        let welcome = socket.next().await.unwrap().unwrap();
        assert!(matches!(
            decode(welcome.to_text().unwrap()).unwrap(),
            Message::Welcome { .. }
        ));
        socket.send(bad).await.unwrap();
        let mut saw_close_message = false;
        while let Some(Ok(frame)) = socket.next().await {
            if let Frame::Text(text) = frame {
                if let Ok(Message::Close { reason, .. }) = decode(&text) {
                    assert!(!reason.is_empty());
                    saw_close_message = true;
                }
            }
        }
        assert!(
            saw_close_message,
            "case {i}: the router names why it closes"
        );
        assert_eq!(router.relay.stats().malformed_messages, i as u64 + 1);
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    socket.send(Frame::text(hello("vg_wrong"))).await.unwrap();
    let first = socket.next().await.unwrap().unwrap();
    match decode(first.to_text().unwrap()).unwrap() {
        Message::Close { reason, .. } => assert!(reason.contains("token"), "{reason}"),
        other => panic!("expected close, got {other:?}"),
    }
    assert_eq!(router.relay.stats().channels, 0);
}

/// A connector killed in the middle of a stream: the client gets an error well within the
/// timeout, the router holds nothing of the transfer, and the restarted connector comes
/// back online by itself. A client that goes away frees the transfer too.
#[tokio::test]
async fn a_connector_killed_mid_transfer_fails_the_client_fast() {
    let router = Router::start(|config| config.request_timeout = Duration::from_secs(5)).await;
    router.directory.register(TENANT, "node-a", "vg_token_a");
    let (root, bytes) = dataset_dir("big.bin", 32 * MIB, 4);
    let connector = Connector::start(&router.url, "node-a", "vg_token_a", root.path());
    router.wait_online("node-a", ONLINE).await;

    let mut stream = router
        .relay
        .stream(TENANT, "node-a", "big.bin", 0, TransferOptions::default())
        .await
        .unwrap();
    let first = stream.next_chunk().await.unwrap().unwrap();
    assert!(first[..] == bytes[..first.len()]);
    assert_eq!(router.relay.stats().transfers_in_flight, 1);
    let killed = Instant::now();
    connector.kill().await;
    let err = loop {
        match stream.next_chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("a killed connector cannot finish a 32 MiB stream"),
            Err(err) => break err,
        }
    };
    let after = killed.elapsed();
    assert!(after < Duration::from_secs(5), "error after {after:?}");
    assert!(matches!(err, RelayError::ConnectorGone(_)), "{err}");
    assert_eq!(router.relay.stats().transfers_in_flight, 0);
    drop(stream);
    eprintln!("killed connector: client error after {after:?}");

    let _again = Connector::start(&router.url, "node-a", "vg_token_a", root.path());
    router.wait_online("node-a", ONLINE).await;
    // The client going away: the transfer is freed at once and the connector told.
    let mut stream = router
        .relay
        .stream(TENANT, "node-a", "big.bin", 0, TransferOptions::default())
        .await
        .unwrap();
    stream.next_chunk().await.unwrap().unwrap();
    drop(stream);
    assert_eq!(router.relay.stats().transfers_in_flight, 0);
    // And the connector serves the next one normally.
    let mut stream = router
        .relay
        .stream(TENANT, "node-a", "big.bin", 0, TransferOptions::default())
        .await
        .unwrap();
    assert!(read_all(&mut stream).await.unwrap() == bytes);
    router.wait_idle(Duration::from_secs(5)).await;
}

/// Two streams of one connector: the first is not read at all while the second runs to
/// the end; the first's queue holds at most its 2 MiB bound; then, though its client
/// paused longer than the request timeout, it completes too (a slow client is not a silent
/// connector).
#[tokio::test]
async fn a_slow_reader_does_not_stall_another_transfer() {
    let router = Router::start(|config| config.request_timeout = Duration::from_secs(1)).await;
    router.directory.register(TENANT, "node-a", "vg_token_a");
    let (root, bytes) = dataset_dir("big.bin", 16 * MIB, 5);
    let _connector = Connector::start(&router.url, "node-a", "vg_token_a", root.path());
    router.wait_online("node-a", ONLINE).await;
    let relay = &router.relay;

    let mut slow = relay
        .stream(TENANT, "node-a", "big.bin", 0, TransferOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let mut fast = relay
        .stream(TENANT, "node-a", "big.bin", 0, TransferOptions::default())
        .await
        .unwrap();
    assert!(read_all(&mut fast).await.unwrap() == bytes);
    let fast_took = started.elapsed();
    let status = &relay.connectors(TENANT, &["node-a".into()])[0];
    assert!(status.online);
    assert_eq!(status.in_flight.len(), 1, "only the slow one is left");
    let queued = status.in_flight[0].bytes;
    assert!(
        queued <= relay.config().stream_buffer_bytes as u64 + 64 * 1024,
        "the slow transfer holds {queued} bytes"
    );
    eprintln!("fast stream of 16 MiB beside an unread one: {fast_took:?}; the unread one holds {queued} bytes");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(read_all(&mut slow).await.unwrap() == bytes);
    router.wait_idle(Duration::from_secs(5)).await;
}

/// A router restart with 200 connectors: it tells them to come back after a retry-after;
/// all do, none sooner, spread over the jitter window after it rather than at once, and
/// the new router serves them.
#[tokio::test]
async fn connectors_reconnect_after_a_router_restart() {
    const CONNECTORS: usize = 200;
    let router = Router::start(|_| {}).await;
    let ids: Vec<String> = (0..CONNECTORS).map(|i| format!("node-{i}")).collect();
    for id in &ids {
        router.directory.register(TENANT, id, &format!("vg_{id}"));
    }
    let (root, _) = dataset_dir("a.bin", 10, 6);
    let _connectors: Vec<Connector> = ids
        .iter()
        .map(|id| Connector::start(&router.url, id, &format!("vg_{id}"), root.path()))
        .collect();
    let start = Instant::now();
    while router
        .relay
        .connectors(TENANT, &ids)
        .iter()
        .any(|c| !c.online)
    {
        assert!(start.elapsed() < ONLINE, "not all {CONNECTORS} came online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retry_after = Duration::from_secs(1);
    router.relay.shutdown(retry_after);
    let closed = Instant::now();
    let old_relay = router.relay.clone();
    let (addr, directory) = router.stop().await;
    while old_relay.stats().channels > 0 {
        assert!(
            closed.elapsed() < Duration::from_secs(5),
            "channels not closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let router = Router::restart_on(addr, directory).await;
    let mut back: Vec<Option<Duration>> = vec![None; ids.len()];
    while back.iter().any(Option::is_none) {
        assert!(closed.elapsed() < ONLINE, "not all came back: {back:?}");
        for (i, status) in router.relay.connectors(TENANT, &ids).iter().enumerate() {
            if status.online && back[i].is_none() {
                back[i] = Some(closed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let back: Vec<Duration> = back.into_iter().flatten().collect();
    let first = *back.iter().min().unwrap();
    let last = *back.iter().max().unwrap();
    assert!(
        first >= retry_after,
        "a connector came back after {first:?}, before the retry-after"
    );
    // Arrivals per 100 ms over the window [1 s, 2 s): spread, not one burst.
    let mut tenths = [0usize; 12];
    for at in &back {
        let tenth = ((at.as_secs_f64() - 1.0) * 10.0) as usize;
        tenths[tenth.min(11)] += 1;
    }
    let busiest = *tenths.iter().max().unwrap();
    assert!(
        busiest <= CONNECTORS / 3,
        "a burst of {busiest} in 100 ms: {tenths:?}"
    );
    eprintln!(
        "restart with {CONNECTORS} connectors, retry-after {retry_after:?}: back from {first:?} to {last:?}, per 100 ms {tenths:?}"
    );
    let (listed, _) = router.relay.list_datasets(TENANT, "node-0").await.unwrap();
    assert_eq!(listed.len(), 1);
}

/// A connector that takes a transfer and never sends: the client gets a timeout after
/// `request_timeout` without progress, the connector is told to cancel, nothing is left;
/// then its silence past `offline_after` closes the channel and marks it offline.
#[tokio::test]
async fn a_silent_connector_times_out_and_goes_offline() {
    let router = Router::start(|config| {
        config.request_timeout = Duration::from_millis(500);
        config.offline_after = Duration::from_millis(1500);
    })
    .await;
    router.directory.register(TENANT, "node-mute", "vg_mute");
    let url = format!("ws://{}{}", router.addr, paths::CHANNEL);
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = Message::Hello {
        connector: "node-mute".into(),
        token: "vg_mute".into(),
        agent: "test".into(),
    };
    socket.send(Frame::text(encode(&hello))).await.unwrap();
    let fake = tokio::spawn(async move {
        let (mut transfer, mut cancelled, mut closed) = (None, None, None);
        while let Some(Ok(frame)) = socket.next().await {
            let Frame::Text(text) = frame else { continue };
            match decode(&text).unwrap() {
                Message::Stat { request, dataset } => {
                    let info = vigia_relay::protocol::DatasetInfo {
                        name: dataset,
                        size: 100,
                        mtime_ms: 0,
                        sha256: None,
                    };
                    let answer = Message::DatasetStat {
                        request,
                        dataset: info,
                    };
                    socket.send(Frame::text(encode(&answer))).await.unwrap();
                }
                Message::Transfer(request) => transfer = Some(request.transfer),
                Message::Cancel { transfer, .. } => cancelled = Some(transfer),
                Message::Close { reason, .. } => closed = Some(reason),
                _ => {}
            }
        }
        (transfer, cancelled, closed)
    });
    router.wait_online("node-mute", ONLINE).await;
    let started = Instant::now();
    let err = router
        .relay
        .buffer(TENANT, "node-mute", "a.bin", TransferOptions::default())
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(matches!(err, RelayError::TimedOut(_)), "{err}");
    assert_eq!(err.status(), 504);
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert_eq!(router.relay.stats().transfers_in_flight, 0);
    let (transfer, cancelled, closed) = tokio::time::timeout(Duration::from_secs(5), fake)
        .await
        .unwrap()
        .unwrap();
    assert!(
        transfer.is_some() && transfer == cancelled,
        "{transfer:?} {cancelled:?}"
    );
    assert!(closed.unwrap().contains("silent"));
    let status = &router.relay.connectors(TENANT, &["node-mute".into()])[0];
    assert!(!status.online && status.last_seen.is_some(), "{status:?}");
    let offline = router
        .relay
        .stream(TENANT, "node-mute", "a.bin", 0, TransferOptions::default())
        .await
        .unwrap_err();
    assert_eq!(offline.status(), 503);
}

/// A connector that misbehaves on the data requests: every lie is caught, answered with
/// its status, and turned into the client's error; nothing is left in flight.
#[tokio::test]
async fn a_lying_connector_is_caught() {
    let router = Router::start(|_| {}).await;
    router.directory.register(TENANT, "node-fake", "vg_fake");
    let mut fake = FakeConnector::start(&router, "node-fake", "vg_fake", 1000).await;
    router.wait_online("node-fake", ONLINE).await;
    let bytes = random_bytes(1001, 8);
    let sha = sha256_hex(&bytes[..1000]);
    let start_stream = |offset: u64| {
        let relay = router.relay.clone();
        tokio::spawn(async move {
            let mut stream = relay
                .stream(
                    TENANT,
                    "node-fake",
                    "a.bin",
                    offset,
                    TransferOptions::default(),
                )
                .await?;
            read_all(&mut stream)
                .await
                .map(|got| (got, stream.sha256().map(str::to_owned)))
        })
    };
    let complete = |sent: &str| CompleteReport {
        size: 1000,
        sha256: sha.clone(),
        sent_sha256: sent.to_owned(),
    };
    let status = |response: reqwest::Response| response.status().as_u16();

    // (body length, reported sent hash, status of the upload, status of complete)
    let lies: [(usize, String, u16, Option<u16>); 3] = [
        (1000, "0".repeat(64), 204, Some(502)),
        (1001, sha.clone(), 502, None),
        (999, sha.clone(), 502, None),
    ];
    for (len, sent, upload_status, complete_status) in lies {
        let client = start_stream(0);
        let request = fake.transfers.recv().await.unwrap();
        let upload = fake
            .post(&router, &paths::stream(&request.transfer, 0))
            .body(bytes[..len].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(status(upload), upload_status, "body of {len}");
        if let Some(expected) = complete_status {
            let done = fake
                .post(&router, &paths::complete(&request.transfer))
                .json(&complete(&sent))
                .send()
                .await
                .unwrap();
            assert_eq!(status(done), expected);
        }
        let err = client.await.unwrap().unwrap_err();
        assert!(
            matches!(err, RelayError::Integrity(_)),
            "body of {len}: {err}"
        );
        router.wait_idle(Duration::from_secs(2)).await;
    }

    // Wrong offset 416, wrong endpoint 409, then the honest upload; a second one is 409.
    let client = start_stream(0);
    let request = fake.transfers.recv().await.unwrap();
    let id = &request.transfer;
    let upload = |path: String| {
        fake.post(&router, &path)
            .body(bytes[..1000].to_vec())
            .send()
    };
    assert_eq!(status(upload(paths::stream(id, 5)).await.unwrap()), 416);
    assert_eq!(status(upload(paths::result(id)).await.unwrap()), 409);
    assert_eq!(status(upload(paths::stream(id, 0)).await.unwrap()), 204);
    assert_eq!(status(upload(paths::stream(id, 0)).await.unwrap()), 409);
    let done = fake
        .post(&router, &paths::complete(id))
        .json(&complete(&sha))
        .send()
        .await
        .unwrap();
    assert_eq!(status(done), 204);
    let (got, got_sha) = client.await.unwrap().unwrap();
    assert!(got == bytes[..1000]);
    assert_eq!(got_sha.as_deref(), Some(sha.as_str()));

    // A connector's `fail` reaches the client with its meaning.
    let client = start_stream(0);
    let request = fake.transfers.recv().await.unwrap();
    let failed = fake
        .post(&router, &paths::fail(&request.transfer))
        .json(&vigia_relay::protocol::FailReport {
            code: vigia_relay::protocol::ErrorCode::DatasetMissing,
            message: "deleted meanwhile".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(status(failed), 204);
    assert_eq!(client.await.unwrap().unwrap_err().status(), 404);
    router.wait_idle(Duration::from_secs(2)).await;
}

/// Heartbeats keep an idle connector online past the silence limit; revoking it closes
/// its channel, and its old token no longer opens one.
#[tokio::test]
async fn heartbeats_keep_a_connector_online_until_revoked() {
    let router = Router::start(|config| {
        config.heartbeat_interval = Duration::from_secs(1);
        config.offline_after = Duration::from_millis(2500);
    })
    .await;
    router.directory.register(TENANT, "node-a", "vg_token_a");
    let (root, _) = dataset_dir("a.bin", 10, 9);
    let _connector = Connector::start(&router.url, "node-a", "vg_token_a", root.path());
    router.wait_online("node-a", ONLINE).await;
    let ids = ["node-a".to_owned()];
    let seen_first = router.relay.connectors(TENANT, &ids)[0].last_seen.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = &router.relay.connectors(TENANT, &ids)[0];
    assert!(
        status.online,
        "idle for 4 s with a 2.5 s silence limit, yet heartbeats: {status:?}"
    );
    assert!(status.last_seen.unwrap() > seen_first);
    assert_eq!(router.relay.stats().malformed_messages, 0);

    router.directory.revoke("node-a");
    assert!(router.relay.disconnect(TENANT, "node-a", "token revoked"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!router.relay.connectors(TENANT, &ids)[0].online);
    assert_eq!(
        router.relay.stats().channels,
        0,
        "the reconnection is refused"
    );
}

/// The loopback figure: a 64 MiB stream connector → router → HTTP client, debug build.
#[tokio::test]
async fn stream_throughput_over_loopback() {
    let router = Router::start(|_| {}).await;
    router.directory.register(TENANT, "node-a", "vg_token_a");
    let (root, bytes) = dataset_dir("big.bin", 64 * MIB, 7);
    let _connector = Connector::start(&router.url, "node-a", "vg_token_a", root.path());
    router.wait_online("node-a", ONLINE).await;
    let started = Instant::now();
    let response = reqwest::get(format!("{}/client/stream/big.bin", router.url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut first_byte = None;
    let mut received = Vec::with_capacity(bytes.len());
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        first_byte.get_or_insert_with(|| started.elapsed());
        received.extend_from_slice(&chunk.unwrap());
    }
    let took = started.elapsed();
    assert!(received == bytes);
    let mb_s = bytes.len() as f64 / 1e6 / took.as_secs_f64();
    eprintln!(
        "FIGURE (debug build, loopback, one stream of 64 MiB via HTTP client route): {mb_s:.0} MB/s, first byte {:?}",
        first_byte.unwrap()
    );
}
