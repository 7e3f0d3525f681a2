//! The NATS bus when NATS goes away and comes back, against a private
//! `nats-server -js` on a free port with a store dir of its own (never the shared one on
//! 4222): killed (`kill -9`) while publishers run, every operation answers
//! `Unavailable` (what the API turns into 503 + `Retry-After`); restarted on the same
//! port and store dir, the same handle publishes again and every publish that was
//! acknowledged before the kill is still there, delivered.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vigia_bus::conformance::{sample_batch, tag_of};
use vigia_bus::nats::{NatsBus, NatsConfig};
use vigia_bus::{readings, Bus, BusError, OpenContext, Topic};

/// Debian's package puts the server here (not on a normal user's PATH).
const NATS_SERVER: &str = "/usr/sbin/nats-server";
/// "Quickly", for an operation against a NATS that is gone.
const QUICK: Duration = Duration::from_secs(2);

fn nats_server_installed(test: &str) -> bool {
    let found = Command::new(NATS_SERVER)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found || vigia_core::services::skip_or_fail(test, &format!("`{NATS_SERVER}` is not installed"))
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().unwrap().port()
}

/// A private `nats-server -js`, killed when dropped (even when the test panics).
struct Server {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Server {
    fn start() -> Server {
        let mut server = Server {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self, query: &str) -> String {
        format!("nats://127.0.0.1:{}/?{query}", self.port)
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("jetstream")
    }

    /// Starts the server (again) on its port and store dir and waits until it listens.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        wait_listening(self.port, self.dir.path());
    }

    /// `kill -9`: the server gets no chance to flush anything.
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

fn wait_listening(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server on port {port} never listened; log: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn open(url: &str) -> NatsBus {
    let mut context = OpenContext::new(std::env::temp_dir());
    context.claim_idle = Duration::from_secs(1);
    let config = NatsConfig::parse(url).unwrap();
    NatsBus::open(config, &context).await.expect("opening")
}

/// Runs `operation` and checks it answered `Unavailable` within [`QUICK`].
async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    operation: impl std::future::Future<Output = Result<T, BusError>>,
) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(QUICK * 2, operation)
        .await
        .unwrap_or_else(|_| panic!("{what} hung with NATS gone"));
    let took = started.elapsed();
    assert!(
        matches!(outcome, Err(BusError::Unavailable(_))),
        "{what} with NATS gone: {outcome:?}"
    );
    assert!(took < QUICK, "{what} took {took:?} to fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_is_unavailable_loses_nothing_acknowledged_and_the_same_handle_recovers() {
    if !nats_server_installed(
        "a_nats_outage_is_unavailable_loses_nothing_acknowledged_and_the_same_handle_recovers",
    ) {
        return;
    }
    let mut server = Server::start();
    let bus = Arc::new(open(&server.url("stream_prefix=outage&timeout_ms=1000")).await);
    readings::publish(&*bus, sample_batch(0, 2)).await.unwrap();
    let got = readings::receive(&*bus, 10).await.unwrap();
    assert_eq!(tag_of(&got[0].value), 0);
    let held = vec![got[0].token.clone()];

    // Publishers run while the server dies: what they were told is stored must be.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = tokio::task::JoinSet::new();
    for publisher in 0..4u64 {
        let (bus, acknowledged, refused, stop) = (
            Arc::clone(&bus),
            Arc::clone(&acknowledged),
            Arc::clone(&refused),
            Arc::clone(&stop),
        );
        publishers.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let tag = 1 + publisher * 1_000_000 + n;
                n += 1;
                match readings::publish(&*bus, sample_batch(tag, 3)).await {
                    Ok(()) => {
                        acknowledged.lock().unwrap().insert(tag);
                    }
                    Err(e) => {
                        refused.lock().unwrap().push(e.to_string());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_kill = acknowledged.lock().unwrap().len();
    assert!(before_kill > 0, "no publish went through before the kill");
    server.kill();
    let killed = Instant::now();
    // Publishes in flight at the kill wait out `timeout_ms`; later ones fail at once.
    while refused.lock().unwrap().is_empty() && killed.elapsed() < QUICK * 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failures = refused.lock().unwrap().clone();
    assert!(
        !failures.is_empty(),
        "no publish failed within {:?} of the kill",
        killed.elapsed()
    );
    assert!(killed.elapsed() < QUICK, "took {:?}", killed.elapsed());
    assert!(
        failures.iter().all(|f| f.contains("unavailable")),
        "{failures:?}"
    );

    for _ in 0..3 {
        expect_unavailable("publish", readings::publish(&*bus, sample_batch(9, 1))).await;
        expect_unavailable("receive", bus.receive(Topic::READINGS, 10)).await;
        expect_unavailable("lag", bus.lag(Topic::READINGS)).await;
        expect_unavailable("ping", bus.ping()).await;
        expect_unavailable("ack", bus.ack(held.clone())).await;
    }

    // Back on the same port and store dir: the same handle works again.
    server.restart();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(15);
    loop {
        match bus.ping().await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet back: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the handle never recovered: {e}"),
        }
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    // The publishers get through again without the bus being reopened.
    let resumed = acknowledged.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(joined) = publishers.join_next().await {
        joined.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > resumed,
        "no publish succeeded after the restart"
    );

    // The delivery held across the outage still acks (JetStream kept it pending).
    bus.ack(held).await.unwrap();
    let lag = bus.lag(Topic::READINGS).await.unwrap();
    assert!(
        lag >= acknowledged.len() as u64 * 3,
        "lag {lag} < {} acknowledged publishes of 3",
        acknowledged.len()
    );
    let mut delivered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !acknowledged.is_subset(&delivered) {
        assert!(
            Instant::now() < deadline,
            "missing after the restart: {:?}",
            acknowledged
                .difference(&delivered)
                .take(10)
                .collect::<Vec<_>>()
        );
        let got = tokio::time::timeout(Duration::from_secs(5), readings::receive(&*bus, 1000))
            .await
            .expect("receive after the restart")
            .unwrap();
        delivered.extend(got.iter().map(|r| tag_of(&r.value)));
        bus.ack(got.iter().map(|r| r.token.clone()).collect())
            .await
            .unwrap();
    }
    eprintln!(
        "{} publishes acknowledged ({before_kill} before the kill), all delivered; \
         {} refused while NATS was down",
        acknowledged.len(),
        failures.len()
    );
}

#[tokio::test]
async fn opening_against_a_nats_that_is_not_there_fails_fast() {
    let port = free_port();
    let started = Instant::now();
    let config = NatsConfig::parse(&format!("nats://127.0.0.1:{port}")).unwrap();
    let outcome = NatsBus::open(config, &OpenContext::new(std::env::temp_dir())).await;
    assert!(
        matches!(outcome, Err(BusError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
}
