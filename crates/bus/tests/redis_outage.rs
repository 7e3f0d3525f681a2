//! The Redis bus when Redis goes away and comes back, and what it says at open about
//! Redis's persistence, each against private `redis-server` processes on free ports
//! (never the shared one on 6379): kill it and every operation answers `Unavailable`
//! quickly, restart it on the same port and the same handle works again.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vigia_bus::conformance::{sample_batch, tag_of};
use vigia_bus::redis::{Persistence, RedisBus, RedisConfig};
use vigia_bus::{readings, Bus, BusError, Durability, OpenContext, Topic};

/// "Quickly", for an operation against a Redis that is gone.
const QUICK: Duration = Duration::from_secs(2);

fn redis_server_installed(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found || vigia_core::services::skip_or_fail(test, "`redis-server` is not installed")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0");
    listener.local_addr().unwrap().port()
}

/// A private `redis-server`, killed when dropped (even when the test panics).
struct Server {
    port: u16,
    args: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut server = Server {
            port: free_port(),
            args: extra.iter().map(|a| a.to_string()).collect(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self, query: &str) -> String {
        format!("redis://127.0.0.1:{}/0?{query}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        wait_ready(self.port, self.dir.path());
    }

    /// `kill -9`: nothing is flushed.
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

fn wait_ready(port: u16, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let url = format!("redis://127.0.0.1:{port}/0");
    loop {
        let pong = redis::Client::open(url.as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if pong.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} (dir {}) never answered: {pong:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn open(url: &str, durability: Durability) -> RedisBus {
    let mut context = OpenContext::new(std::env::temp_dir());
    context.durability = durability;
    let config = RedisConfig::parse(url).unwrap();
    RedisBus::open(config, &context).await.expect("opening")
}

/// Runs `operation` and checks it answered `Unavailable` within [`QUICK`].
async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    operation: impl std::future::Future<Output = Result<T, BusError>>,
) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(QUICK * 2, operation)
        .await
        .unwrap_or_else(|_| panic!("{what} hung with Redis gone"));
    let took = started.elapsed();
    assert!(
        matches!(outcome, Err(BusError::Unavailable(_))),
        "{what} with Redis gone: {outcome:?}"
    );
    assert!(took < QUICK, "{what} took {took:?} to fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_unavailable_fast_and_the_same_handle_recovers() {
    if !redis_server_installed("a_redis_outage_is_unavailable_fast_and_the_same_handle_recovers") {
        return;
    }
    let mut server = Server::start(&["--appendonly", "no"]);
    let bus = Arc::new(open(&server.url("prefix=outage&timeout_ms=1000"), Durability::Os).await);
    readings::publish(&*bus, sample_batch(1, 2)).await.unwrap();
    let got = readings::receive(&*bus, 10).await.unwrap();
    assert_eq!(tag_of(&got[0].value), 1);
    let stale = vec![got[0].token.clone()];

    // A receive waiting in a blocking read when Redis dies.
    let waiting = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.receive(Topic::READINGS, 10).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.kill();
    let killed = Instant::now();
    let outcome = tokio::time::timeout(QUICK * 2, waiting)
        .await
        .expect("a waiting receive hung with Redis gone")
        .unwrap();
    assert!(
        matches!(outcome, Err(BusError::Unavailable(_))),
        "waiting receive: {outcome:?}"
    );
    assert!(killed.elapsed() < QUICK, "took {:?}", killed.elapsed());

    for _ in 0..3 {
        expect_unavailable("publish", readings::publish(&*bus, sample_batch(2, 1))).await;
        expect_unavailable("receive", bus.receive(Topic::READINGS, 10)).await;
        expect_unavailable("lag", bus.lag(Topic::READINGS)).await;
        expect_unavailable("ping", bus.ping()).await;
        expect_unavailable("ack", bus.ack(stale.clone())).await;
    }

    // Back on the same port, empty (it persisted nothing): the same handle works again.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match readings::publish(&*bus, sample_batch(3, 4)).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet back: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the handle never recovered: {e}"),
        }
    }
    bus.ping().await.unwrap();
    assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 4);
    let got = tokio::time::timeout(Duration::from_secs(10), readings::receive(&*bus, 10))
        .await
        .expect("receive after the restart")
        .unwrap();
    assert_eq!(tag_of(&got[0].value), 3);
    // The token from before the restart settles nothing (its entry died with Redis).
    bus.ack(stale).await.unwrap();
    assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 4);
    bus.ack(vec![got[0].token.clone()]).await.unwrap();
    assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 0);
}

#[tokio::test]
async fn opening_against_a_redis_that_is_not_there_fails_fast() {
    let port = free_port();
    let started = Instant::now();
    let config = RedisConfig::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
    let outcome = RedisBus::open(config, &OpenContext::new(std::env::temp_dir())).await;
    assert!(
        matches!(outcome, Err(BusError::Unavailable(_))),
        "{outcome:?}"
    );
    assert!(started.elapsed() < QUICK, "took {:?}", started.elapsed());
}

/// Events at WARN and above, as text.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Warnings {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={value:?} ", field.name());
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        self.0.lock().unwrap().push(text.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Opens a bus on a private server started with `args` under `durability`, returning
/// what it read of the persistence and the warnings it logged.
async fn open_and_listen(args: &[&str], durability: Durability) -> (Persistence, Vec<String>) {
    let server = Server::start(args);
    let warnings = Warnings::default();
    let bus = {
        let _guard = tracing::subscriber::set_default(warnings.clone());
        open(&server.url("prefix=persist"), durability).await
    };
    let [(_, persistence)] = bus.persistence() else {
        panic!("one server: {:?}", bus.persistence());
    };
    let logged = warnings.0.lock().unwrap().clone();
    (persistence.clone(), logged)
}

#[tokio::test]
async fn open_warns_when_a_publish_is_only_as_durable_as_redis_memory() {
    if !redis_server_installed("open_warns_when_a_publish_is_only_as_durable_as_redis_memory") {
        return;
    }
    let (persistence, warnings) = open_and_listen(&["--appendonly", "no"], Durability::Os).await;
    assert_eq!(persistence, Persistence::Memory);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("appendonly is off")
                && w.contains("only as durable as Redis's memory")),
        "{warnings:?}"
    );

    let always = ["--appendonly", "yes", "--appendfsync", "always"];
    let (persistence, warnings) = open_and_listen(&always, Durability::Full).await;
    assert_eq!(
        persistence,
        Persistence::Aof {
            fsync: "always".into()
        }
    );
    assert!(warnings.is_empty(), "{warnings:?}");

    let everysec = ["--appendonly", "yes", "--appendfsync", "everysec"];
    let (_, warnings) = open_and_listen(&everysec, Durability::Os).await;
    assert!(warnings.is_empty(), "Os asks no fsync: {warnings:?}");
    let (persistence, warnings) = open_and_listen(&everysec, Durability::Full).await;
    assert_eq!(
        persistence,
        Persistence::Aof {
            fsync: "everysec".into()
        }
    );
    assert!(
        warnings.iter().any(|w| w.contains("appendfsync always")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_refused_config_get_is_tolerated() {
    if !redis_server_installed("a_refused_config_get_is_tolerated") {
        return;
    }
    // As managed Redis services do: CONFIG is renamed away.
    let server = Server::start(&["--rename-command", "CONFIG", ""]);
    let bus = open(&server.url("prefix=noconfig"), Durability::Full).await;
    let [(_, Persistence::Unknown(why))] = bus.persistence() else {
        panic!("{:?}", bus.persistence());
    };
    assert!(why.contains("CONFIG"), "{why}");
    readings::publish(&bus, sample_batch(1, 1)).await.unwrap();
    assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 1);
}
