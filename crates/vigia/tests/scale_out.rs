//! Scale-out end to end: Vigía as two real processes on shared server backends, process A
//! `--roles ingest,worker,scheduler` and process B `--roles api`, on PostgreSQL + Redis
//! Streams bus + Redis pub/sub fan-out, and on MariaDB + NATS JetStream bus + NATS
//! fan-out. A sensor and its threshold rule provisioned through B reach A's worker; a
//! reading A accepted opens an alert whose frame reaches a WebSocket held by B; resolved
//! by hand through B, the alert reopens on the next excursion posted to A (A's worker
//! heard B's control message).
//!
//! Each test makes its own database and bus/fan-out prefix, removed at its end, so runs in
//! parallel do not meet. Needs the shared services (PostgreSQL 5432, MariaDB 3306, Redis
//! 6379, NATS 4222) and the `psql` and `mariadb`/`mysql` clients to create the databases;
//! skipped with a notice when a service is unreachable, failed under
//! `VIGIA_REQUIRE_SERVICES=1`.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use vigia_bus::nats::{NatsBus, NatsConfig};

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const POSTGRES: &str = "127.0.0.1:5432";
const MARIADB: &str = "127.0.0.1:3306";
const REDIS: &str = "127.0.0.1:6379";
const NATS: &str = "127.0.0.1:4222";

/// The fan-out's cache refresh, far past the test's waits: a reopened alert then proves
/// the control message was heard, not that the timer healed a lost one.
const REFRESH_BEYOND_THE_TEST: &str = "10m";

/// How long a frame may take to cross from A's worker to B's WebSocket.
const FRAME_WAIT: Duration = Duration::from_secs(5);

/// A name unique to this process and test, usable as a database name and a prefix.
fn unique_name(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!(
        "vigia_so_{kind}_{}_{nanos:x}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a database client command, panicking with its stderr when it fails.
fn run_client(mut cmd: Command, what: &str) {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: could not run `{program}` (is the client installed?): {e}")
    });
    assert!(
        out.status.success(),
        "{what}: `{program}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Which server a [`TestDb`] lives on.
#[derive(Clone, Copy)]
enum Server {
    Postgres,
    Mariadb,
}

/// A database of its own on the shared server, dropped when this is dropped (after the
/// processes using it, which are declared later and so dropped first).
struct TestDb {
    server: Server,
    name: String,
}

impl TestDb {
    fn create(server: Server) -> TestDb {
        let db = TestDb {
            server,
            name: unique_name("db"),
        };
        run_client(
            db.sql(&format!("CREATE DATABASE {}", db.name)),
            "create the test database",
        );
        db
    }

    /// The `VIGIA_STORE` URL of this database.
    fn url(&self) -> String {
        match self.server {
            Server::Postgres => format!("postgres://postgres@{POSTGRES}/{}", self.name),
            Server::Mariadb => format!("mysql://root@{MARIADB}/{}", self.name),
        }
    }

    /// A client command running `statement` as the server's administrator.
    fn sql(&self, statement: &str) -> Command {
        match self.server {
            Server::Postgres => {
                let mut cmd = Command::new("psql");
                cmd.args([
                    "--no-psqlrc",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "5432",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    statement,
                ]);
                cmd
            }
            Server::Mariadb => {
                // Debian's MariaDB client is `mariadb`; `mysql` is the older name.
                let program = if which("mariadb") { "mariadb" } else { "mysql" };
                let mut cmd = Command::new(program);
                cmd.args([
                    "-h",
                    "127.0.0.1",
                    "-P",
                    "3306",
                    "-u",
                    "root",
                    "-e",
                    statement,
                ]);
                cmd
            }
        }
    }
}

impl TestDb {
    /// The one value `query` returns, run inside this database.
    fn scalar(&self, query: &str) -> String {
        let mut cmd = match self.server {
            Server::Postgres => {
                let mut cmd = Command::new("psql");
                cmd.args([
                    "--no-psqlrc",
                    "-At",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "5432",
                    "-U",
                    "postgres",
                    "-d",
                    &self.name,
                    "-c",
                    query,
                ]);
                cmd
            }
            Server::Mariadb => {
                let program = if which("mariadb") { "mariadb" } else { "mysql" };
                let mut cmd = Command::new(program);
                cmd.args([
                    "-N",
                    "-B",
                    "-h",
                    "127.0.0.1",
                    "-P",
                    "3306",
                    "-u",
                    "root",
                    &self.name,
                    "-e",
                    query,
                ]);
                cmd
            }
        };
        let out = cmd.output().expect("run the database client");
        assert!(
            out.status.success(),
            "`{query}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let statement = match self.server {
            Server::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            Server::Mariadb => format!("DROP DATABASE IF EXISTS {}", self.name),
        };
        match self.sql(&statement).output() {
            Ok(out) if out.status.success() => {}
            other => eprintln!("could not drop test database {}: {other:?}", self.name),
        }
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The bus and fan-out URLs of one test, under a prefix of its own; what the bus left on
/// the broker is deleted when this is dropped.
enum Broker {
    Redis { prefix: String },
    Nats { prefix: String },
}

impl Broker {
    fn redis() -> Broker {
        Broker::Redis {
            prefix: unique_name("redis"),
        }
    }

    fn nats() -> Broker {
        // NATS subjects and stream names take no dots in a prefix; underscores are fine.
        Broker::Nats {
            prefix: unique_name("nats"),
        }
    }

    fn bus_url(&self) -> String {
        match self {
            Broker::Redis { prefix } => format!("redis://{REDIS}/?prefix={prefix}"),
            Broker::Nats { prefix } => format!("nats://{NATS}/?stream_prefix={prefix}"),
        }
    }

    fn fanout_url(&self) -> String {
        match self {
            Broker::Redis { prefix } => format!("redis://{REDIS}/?prefix={prefix}"),
            Broker::Nats { prefix } => format!("nats://{NATS}/?prefix={prefix}"),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        match self {
            // Stream keys are hash-tagged `{PREFIX:topic}…`; pub/sub leaves no keys.
            Broker::Redis { prefix } => {
                let listed = Command::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", "6379", "--scan", "--pattern"])
                    .arg(format!("{{{prefix}:*"))
                    .output();
                let keys: Vec<String> = match listed {
                    Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect(),
                    other => {
                        eprintln!("could not list the test keys of {prefix}: {other:?}");
                        return;
                    }
                };
                if keys.is_empty() {
                    return;
                }
                let deleted = Command::new("redis-cli")
                    .args(["-h", "127.0.0.1", "-p", "6379", "DEL"])
                    .args(&keys)
                    .output();
                if !matches!(&deleted, Ok(out) if out.status.success()) {
                    eprintln!("could not delete the test keys of {prefix}: {deleted:?}");
                }
            }
            // Core NATS subjects (the fan-out) leave nothing; the bus's streams stay.
            Broker::Nats { .. } => {
                let config = NatsConfig::parse(&self.bus_url()).expect("the test's bus URL");
                let deleted = std::thread::spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the cleanup")
                        .block_on(NatsBus::delete_streams(&config))
                })
                .join();
                if !matches!(deleted, Ok(Ok(_))) {
                    eprintln!("could not delete the test streams: {deleted:?}");
                }
            }
        }
    }
}

/// One Vigía process with these roles on the shared store, bus and fan-out.
fn process(db: &TestDb, broker: &Broker, roles: &str) -> TestServer {
    process_with(db, broker, roles, &[])
}

/// [`process`] with more settings.
fn process_with(
    db: &TestDb,
    broker: &Broker,
    roles: &str,
    settings: &[(&str, &str)],
) -> TestServer {
    let mut env = vec![
        ("VIGIA_STORE".into(), db.url()),
        ("VIGIA_BUS".into(), broker.bus_url()),
        ("VIGIA_FANOUT".into(), broker.fanout_url()),
        (
            "VIGIA_FANOUT_REFRESH".into(),
            REFRESH_BEYOND_THE_TEST.into(),
        ),
    ];
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    TestServer::start(Options {
        env,
        args: vec!["--roles".into(), roles.into()],
        ..Options::default()
    })
}

async fn ws_connect(server: &TestServer) -> WebSocket {
    let url = format!(
        "{}/api/v1/ws?access_token={TOKEN}",
        server.base.replacen("http://", "ws://", 1)
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    ws
}

/// The next frame on `ws` that `wanted` accepts, or None after `timeout`.
async fn next_frame(
    ws: &mut WebSocket,
    timeout: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Option<Value> {
    tokio::time::timeout(timeout, async {
        while let Some(msg) = ws.next().await {
            let msg = msg.expect("the WebSocket failed");
            let Ok(event) = serde_json::from_str::<Value>(msg.to_text().unwrap_or("")) else {
                continue;
            };
            if wanted(&event) {
                return event;
            }
        }
        panic!("the WebSocket closed");
    })
    .await
    .ok()
}

fn is_alert(event: &Value, change: &str, sensor: &str) -> bool {
    event["type"] == "alert" && event["change"] == change && event["alert"]["sensor"] == sensor
}

fn carries_readings_of(event: &Value, sensor: &str) -> bool {
    event["type"] == "readings"
        && event["readings"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["sensor"] == sensor))
}

/// Posts one reading of `sensor` to the ingest process, timed now.
async fn post_reading(ingest: &TestServer, sensor: &str, value: f64) {
    let ts = vigia_core::Timestamp::now().to_rfc3339();
    let res = post_json(
        &ingest.url("/api/v1/readings"),
        &json!({"sensor": sensor, "ts": ts, "value": value}),
    )
    .await;
    assert_eq!(res.status(), 202, "{}", ingest.log());
}

async fn open_alerts(api: &TestServer, sensor: &str) -> Vec<Value> {
    get_json(&api.url(&format!("/api/v1/alerts?sensor={sensor}&state=open")))
        .await
        .as_array()
        .expect("an array of alerts")
        .clone()
}

/// The scenario of issue 13's acceptance, on the store and broker given.
async fn alert_crosses_processes_and_reopens_after_a_manual_resolve(db: TestDb, broker: Broker) {
    let ingest = process(&db, &broker, "ingest,worker,scheduler");
    let api = process(&db, &broker, "api");
    let logs = || {
        format!(
            "--- A (ingest,worker,scheduler):\n{}\n--- B (api):\n{}",
            ingest.log(),
            api.log()
        )
    };
    let sensor = "SO-1";

    let mut ws = ws_connect(&api).await;
    let res = client()
        .put(api.url(&format!("/api/v1/sensors/{sensor}")))
        .bearer_auth(TOKEN)
        .json(&json!({
            "kind": "freezer",
            "unit": "°C",
            "rules": [{"kind": "threshold", "max": -18, "severity": "critical"}]
        }))
        .send()
        .await
        .expect("PUT the sensor");
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    // A skips building live events until it sees B's listener (checked every second):
    // in-range readings until one reaches B's WebSocket show the live path is up, and
    // that A has heard from B over the fan-out since the sensor was provisioned.
    let warm_up = Instant::now();
    loop {
        post_reading(&ingest, sensor, -20.0).await;
        if next_frame(&mut ws, Duration::from_secs(1), |e| {
            carries_readings_of(e, sensor)
        })
        .await
        .is_some()
        {
            break;
        }
        assert!(
            warm_up.elapsed() < Duration::from_secs(20),
            "no readings frame of {sensor} reached B's WebSocket in 20 s\n{}",
            logs()
        );
    }
    println!("live path from A to B up after {:?}", warm_up.elapsed());

    let sent = Instant::now();
    post_reading(&ingest, sensor, -10.0).await;
    let opened = next_frame(&mut ws, FRAME_WAIT, |e| is_alert(e, "opened", sensor))
        .await
        .unwrap_or_else(|| {
            panic!(
                "no `alert opened` frame on B within {FRAME_WAIT:?}\n{}",
                logs()
            )
        });
    println!(
        "alert opened on A reached B's WebSocket after {:?}",
        sent.elapsed()
    );
    assert_eq!(opened["alert"]["kind"], "threshold", "{opened}");
    assert_eq!(opened["alert"]["severity"], "critical", "{opened}");
    assert_eq!(opened["alert"]["state"], "open", "{opened}");
    assert_eq!(opened["alert"]["value"], -10.0, "{opened}");

    let open = open_alerts(&api, sensor).await;
    assert_eq!(open.len(), 1, "{open:?}");
    let first = open[0]["id"].as_i64().expect("an alert id");
    assert_eq!(
        opened["alert"]["id"], first,
        "the frame is the listed alert"
    );

    let resolve = client()
        .post(api.url(&format!("/api/v1/alerts/{first}/resolve")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("resolve");
    assert_eq!(resolve.status(), 200);
    assert_eq!(resolve.json::<Value>().await.unwrap()["state"], "resolved");
    assert!(
        next_frame(&mut ws, FRAME_WAIT, |e| is_alert(e, "resolved", sensor))
            .await
            .is_some(),
        "no `alert resolved` frame on B\n{}",
        logs()
    );
    assert!(open_alerts(&api, sensor).await.is_empty());

    // B's `ExcursionForgotten` and A's next reading travel apart (fan-out, bus): a reading
    // judged before the control message arrived keeps the old excursion, so readings
    // follow each other until one opens the new alert, long before the refresh could.
    let sent = Instant::now();
    let mut posted = 0;
    let reopened = loop {
        post_reading(&ingest, sensor, -9.0).await;
        posted += 1;
        if let Some(frame) = next_frame(&mut ws, Duration::from_millis(500), |e| {
            is_alert(e, "opened", sensor)
        })
        .await
        {
            break frame;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "no new alert within 10 s of the manual resolve ({posted} readings out of range)\n{}",
            logs()
        );
    };
    println!(
        "a new alert opened after {:?} and {posted} reading(s) out of range",
        sent.elapsed()
    );
    let second = reopened["alert"]["id"].as_i64().expect("an alert id");
    assert_ne!(
        second, first,
        "a new alert, not the resolved one: {reopened}"
    );
    drained(&ingest).await;
    let open = open_alerts(&api, sensor).await;
    assert_eq!(
        open.len(),
        1,
        "one open alert for the new excursion: {open:?}"
    );
    assert_eq!(open[0]["id"], second, "{open:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_redis_bus_redis_fanout() {
    if !vigia_core::services::service_available("postgres (scale_out)", POSTGRES)
        || !vigia_core::services::service_available("redis (scale_out)", REDIS)
    {
        return;
    }
    alert_crosses_processes_and_reopens_after_a_manual_resolve(
        TestDb::create(Server::Postgres),
        Broker::redis(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_nats_bus_nats_fanout() {
    if !vigia_core::services::service_available("mariadb (scale_out)", MARIADB)
        || !vigia_core::services::service_available("nats (scale_out)", NATS)
    {
        return;
    }
    alert_crosses_processes_and_reopens_after_a_manual_resolve(
        TestDb::create(Server::Mariadb),
        Broker::nats(),
    )
    .await;
}

/// Readings posted in the partition scenario (`VIGIA_SCALE_OUT_READINGS` overrides it).
fn partition_scenario_readings() -> usize {
    std::env::var("VIGIA_SCALE_OUT_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Sensors the scenario's readings are spread over.
const SCENARIO_SENSORS: usize = 1_000;
const PARTITIONS: &str = "8";
/// A dead worker's partitions must have moved by then (issue 13).
const TAKEOVER_BUDGET: Duration = Duration::from_secs(15);

/// One JSON batch of `count` readings starting at reading `first`: sensor `AF-(i % S)`,
/// event time `base + i` ms, so every reading has its own key; with the rate sensor's
/// `k`-th reading when given (+0.5 every 10 s of event time: 3 per minute).
fn scenario_batch(first: usize, count: usize, base: i64, rise: Option<i64>) -> Vec<u8> {
    let mut body = String::with_capacity(count * 64 + 80);
    body.push('[');
    for i in first..first + count {
        if i > first {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"sensor":"AF-{}","ts":{},"value":-20.5}}"#,
            i % SCENARIO_SENSORS,
            base + i as i64
        ));
    }
    if let Some(k) = rise {
        body.push_str(&format!(
            r#",{{"sensor":"RISE-1","ts":{},"value":{}}}"#,
            base + k * 10_000,
            -20.0 + 0.5 * k as f64
        ));
    }
    body.push(']');
    body.into_bytes()
}

/// Issue 13's acceptance with one ingest and two worker processes: the workers split the
/// partitions; one is SIGKILLed with readings pending and its partitions move to the
/// other within 15 s; every reading lands exactly once; a rate excursion spread over
/// many batches (and over the takeover) opens exactly one alert.
async fn a_dead_workers_partitions_move_and_every_reading_lands_once(db: TestDb, broker: Broker) {
    let settings = [
        ("VIGIA_BUS_PARTITIONS", PARTITIONS),
        ("VIGIA_INGEST__MAX_BATCH_ROWS", "5000"),
    ];
    let ingest = process_with(&db, &broker, "ingest,api,scheduler", &settings);
    let mut first = process_with(&db, &broker, "worker", &settings);
    let second = process_with(&db, &broker, "worker", &settings);
    let logs = |first: &TestServer| {
        format!(
            "--- ingest:\n{}\n--- worker 1:\n{}\n--- worker 2:\n{}",
            ingest.log(),
            first.log(),
            second.log()
        )
    };
    let partitions: f64 = PARTITIONS.parse().unwrap();
    eventually(
        Duration::from_secs(30),
        "the workers to split the partitions",
        || async {
            let (a, b) = (
                metric(&first, "vigia_worker_partitions_owned").await,
                metric(&second, "vigia_worker_partitions_owned").await,
            );
            (a > 0.0 && b > 0.0 && a + b == partitions).then_some(())
        },
    )
    .await;

    let res = client()
        .put(ingest.url("/api/v1/sensors/RISE-1"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "kind": "freezer",
            "rules": [{"kind": "rate", "max_per_min": 1.0, "direction": "rise", "severity": "warning"}]
        }))
        .send()
        .await
        .expect("PUT the rate sensor");
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());

    let total = partition_scenario_readings();
    let per_batch = 1_000;
    let batches = total.div_ceil(per_batch);
    // Event times an hour back, within `ingest.max_age`, ms apart per reading.
    let base = vigia_core::Timestamp::now().0 - 3_600_000;
    // Poster 0 of 4 posts every fourth batch, one rate reading in each of its first 60.
    let rises = 60.min(batches.div_ceil(4)) as i64;
    let started = Instant::now();
    // Four posters; poster 0 carries the rate sensor's readings in event-time order.
    let posted = std::sync::Arc::new(AtomicU64::new(0));
    let kill_after = (batches / 2) as u64;
    let mut posters = tokio::task::JoinSet::new();
    for poster in 0..4usize {
        let ingest_base = ingest.base.clone();
        let posted = posted.clone();
        posters.spawn(async move {
            let mut k = 0i64;
            for batch in (poster..batches).step_by(4) {
                let count = per_batch.min(total - batch * per_batch);
                let rise = (poster == 0 && k < rises).then(|| {
                    k += 1;
                    k - 1
                });
                let body = scenario_batch(batch * per_batch, count, base, rise);
                post_batch_to(&ingest_base, body).await;
                posted.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while posted.load(Ordering::Relaxed) < kill_after {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pending = metric(&ingest, "vigia_bus_depth_readings").await;
    first.kill9();
    let kill = Instant::now();
    println!(
        "worker 1 SIGKILLed after {:?} with {pending} readings pending on the bus",
        started.elapsed()
    );
    let moved = loop {
        if metric(&second, "vigia_worker_partitions_owned").await == partitions {
            break kill.elapsed();
        }
        assert!(
            kill.elapsed() < TAKEOVER_BUDGET,
            "worker 2 did not take worker 1's partitions within {TAKEOVER_BUDGET:?}\n{}",
            logs(&first)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("worker 1's partitions moved to worker 2 in {moved:?}");
    while posters.join_next().await.is_some() {}
    println!("{total} readings accepted in {:?}", started.elapsed());

    let expected = total + rises as usize;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stored: usize = db
            .scalar("SELECT count(*) FROM readings")
            .parse()
            .expect("a count");
        if stored == expected {
            break;
        }
        assert!(
            stored <= expected,
            "{stored} readings stored, {expected} posted"
        );
        assert!(
            Instant::now() < deadline,
            "{stored} of {expected} readings stored after 10 minutes\n{}",
            logs(&first)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "all {expected} readings stored once, {:?} after the first post",
        started.elapsed()
    );
    drained(&ingest).await;
    let alerts = get_json(&ingest.url("/api/v1/alerts?sensor=RISE-1")).await;
    let alerts = alerts.as_array().expect("an array of alerts");
    assert_eq!(
        alerts.len(),
        1,
        "one alert for one rate excursion: {alerts:?}\n{}",
        logs(&first)
    );
    assert_eq!(alerts[0]["kind"], "rate", "{alerts:?}");
}

async fn post_batch_to(base: &str, body: Vec<u8>) {
    loop {
        let res = client()
            .post(format!("{base}/api/v1/readings"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("post a batch");
        match res.status().as_u16() {
            202 => return,
            // Past the bus's capacity: back off as told, as a device would.
            503 | 429 => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("ingest answered {other}: {}", res.text().await.unwrap()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_redis_two_workers_one_sigkilled() {
    if !vigia_core::services::service_available("postgres (scale_out)", POSTGRES)
        || !vigia_core::services::service_available("redis (scale_out)", REDIS)
    {
        return;
    }
    a_dead_workers_partitions_move_and_every_reading_lands_once(
        TestDb::create(Server::Postgres),
        Broker::redis(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_nats_two_workers_one_sigkilled() {
    if !vigia_core::services::service_available("mariadb (scale_out)", MARIADB)
        || !vigia_core::services::service_available("nats (scale_out)", NATS)
    {
        return;
    }
    a_dead_workers_partitions_move_and_every_reading_lands_once(
        TestDb::create(Server::Mariadb),
        Broker::nats(),
    )
    .await;
}
