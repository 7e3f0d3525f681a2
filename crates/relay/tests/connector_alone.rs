//! The connector against a hand-driven router: it must refuse what a router asks wrongly,
//! on its own, without relying on the router's checks — no byte of a refused dataset is
//! ever sent.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message as Frame, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Json;
use vigia_relay::protocol::{
    decode, encode, ErrorCode, FailReport, Message, Mode, TransferId, TransferRequest,
};

#[derive(Clone, Default)]
struct Seen {
    fails: Arc<Mutex<Vec<(String, FailReport)>>>,
    bodies: Arc<Mutex<usize>>,
}

/// A router that, once the connector says hello, asks for each of `datasets` at once.
async fn fake_router(datasets: Vec<(TransferId, String, Mode, u64)>) -> (String, Seen) {
    let seen = Seen::default();
    let channel = move |upgrade: WebSocketUpgrade| {
        let datasets = datasets.clone();
        async move {
            upgrade.on_upgrade(move |mut socket| async move {
                let Some(Ok(Frame::Text(hello))) = socket.recv().await else {
                    return;
                };
                assert!(matches!(
                    decode(hello.as_str()).unwrap(),
                    Message::Hello { .. }
                ));
                let welcome = encode(&Message::Welcome { heartbeat_secs: 15 });
                socket.send(Frame::Text(welcome.into())).await.unwrap();
                for (transfer, dataset, mode, offset) in datasets {
                    let request = Message::Transfer(TransferRequest {
                        transfer,
                        dataset,
                        mode,
                        offset,
                        zstd: false,
                        upload: None,
                    });
                    socket
                        .send(Frame::Text(encode(&request).into()))
                        .await
                        .unwrap();
                }
                while let Some(Ok(_)) = socket.recv().await {}
            })
        }
    };
    let fail = |State(seen): State<Seen>,
                UrlPath(id): UrlPath<String>,
                Json(report): Json<FailReport>| async move {
        seen.fails.lock().unwrap().push((id, report));
        StatusCode::NO_CONTENT
    };
    let body = |State(seen): State<Seen>, body: axum::body::Bytes| async move {
        *seen.bodies.lock().unwrap() += body.len();
        StatusCode::NO_CONTENT
    };
    let app = axum::Router::new()
        .route("/api/v1/connectors/channel", get(channel))
        .route("/api/v1/transfers/{id}/fail", post(fail))
        .route("/api/v1/transfers/{id}/result", post(body))
        .route("/api/v1/transfers/{id}/stream", post(body))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn the_connector_refuses_on_its_own() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"secret").unwrap();
    let (root, _) = support::dataset_dir("a.bin", 100, 1);
    std::os::unix::fs::symlink(outside.path().join("secret"), root.path().join("link_out"))
        .unwrap();
    let cases = [
        ("../secret", Mode::Buffer, 0, ErrorCode::Traversal),
        ("/etc/passwd", Mode::Stream, 0, ErrorCode::Traversal),
        ("%2e%2e/secret", Mode::Buffer, 0, ErrorCode::Traversal),
        ("link_out", Mode::Stream, 0, ErrorCode::Traversal),
        ("missing.bin", Mode::Buffer, 0, ErrorCode::DatasetMissing),
        ("a.bin", Mode::Stream, 101, ErrorCode::BadOffset),
    ];
    let requests: Vec<_> = cases
        .iter()
        .map(|(name, mode, offset, _)| (TransferId::random(), name.to_string(), *mode, *offset))
        .collect();
    let (url, seen) = fake_router(requests.clone()).await;
    let connector = support::Connector::start(&url, "node-a", "vg_a", root.path());
    let start = std::time::Instant::now();
    while seen.fails.lock().unwrap().len() < cases.len() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "fails so far: {:?}",
            seen.fails.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fails = seen.fails.lock().unwrap().clone();
    for ((id, name, _, _), (_, _, _, code)) in requests.iter().zip(cases.iter()) {
        let (_, report) = fails
            .iter()
            .find(|(reported, _)| reported == id.as_str())
            .unwrap_or_else(|| panic!("no fail report for {name}"));
        assert_eq!(report.code, *code, "{name}: {}", report.message);
    }
    assert_eq!(
        *seen.bodies.lock().unwrap(),
        0,
        "no byte of a refused dataset was sent"
    );
    connector.kill().await;
}
