//! The broker fan-outs when their broker goes away and comes back, against private
//! `redis-server` and `nats-server` processes on free ports (never the shared ones):
//! while the broker is away publishing never blocks nor fails the caller, and once it is
//! back on the same port both handles reconnect by themselves (and say so) and carry
//! live events and control messages again.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigia_core::{Control, SensorId};
use vigia_fanout::conformance::{suite_options, tag_of, tagged_event};

/// Debian's package puts nats-server here (not on a normal user's PATH).
const NATS_SERVER: &str = "/usr/sbin/nats-server";
const REDIS_SERVER: &str = "redis-server";

fn installed(test: &str, program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found || vigia_core::services::skip_or_fail(test, &format!("`{program}` is not installed"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().unwrap().port()
}

/// A private broker on a free port, killed when dropped (even when the test panics).
struct Server {
    program: &'static str,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Server {
    fn start(program: &'static str) -> Server {
        let mut server = Server {
            program,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    /// Starts the broker (again) on its port and waits until it listens.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let port = self.port.to_string();
        let mut command = Command::new(self.program);
        if self.program == REDIS_SERVER {
            command
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                .arg("--dir")
                .arg(self.dir.path());
        } else {
            command.args(["-a", "127.0.0.1", "-p", &port]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} never listened", self.program);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn eventually(what: &str, limit: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn survives_an_outage(url: String, mut server: Server) {
    let options = suite_options();
    let a = vigia_fanout::open(&url, &options).await.expect("opening a");
    let b = vigia_fanout::open(&url, &options).await.expect("opening b");
    let seen: Arc<Mutex<Vec<Control>>> = Arc::default();
    let sink = seen.clone();
    b.on_control(Arc::new(move |m: &Control| {
        sink.lock().unwrap().push(m.clone())
    }));
    let mut rx = b.subscribe_live();

    server.kill();
    let started = Instant::now();
    for tag in 0..2000 {
        a.publish_live(tagged_event(tag));
    }
    a.publish_control(Control::ExcursionForgotten {
        sensor: SensorId(1),
        rule: "during the outage".into(),
    });
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "publishing blocked the caller for {:?} while the broker was away",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    eventually("both handles reconnected", Duration::from_secs(10), || {
        a.stats().reconnects >= 1 && b.stats().reconnects >= 1
    })
    .await;

    // Presence is learnt again after the reconnect: publish until b hears a.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tag = 10_000;
    let heard = loop {
        a.publish_live(tagged_event(tag));
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Ok(event)) if tag_of(&event).is_some_and(|t| t >= 10_000) => break true,
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "live events never reached b again"
        );
        tag += 1;
    };
    assert!(heard);
    let after = Control::KeyRevoked { hash: [7; 32] };
    a.publish_control(after.clone());
    eventually("control reaches b again", Duration::from_secs(10), || {
        seen.lock().unwrap().contains(&after)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fanout_survives_an_outage() {
    if !installed("redis_fanout_survives_an_outage", REDIS_SERVER) {
        return;
    }
    let server = Server::start(REDIS_SERVER);
    let url = format!("redis://127.0.0.1:{}/0?timeout_ms=500", server.port);
    survives_an_outage(url, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_fanout_survives_an_outage() {
    if !installed("nats_fanout_survives_an_outage", NATS_SERVER) {
        return;
    }
    let server = Server::start(NATS_SERVER);
    let url = format!("nats://127.0.0.1:{}?timeout_ms=500", server.port);
    survives_an_outage(url, server).await;
}
