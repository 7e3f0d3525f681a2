//! MQTT ingest end to end with the real client, `mosquitto_pub -q 1`: through the
//! embedded listener (a free port per server) and through Mosquitto on 127.0.0.1:1883.
//! Readings land and a query returns them; a wrong password is refused at CONNECT;
//! malformed messages are acked, never stored, and listed under
//! `GET /api/v1/ingest/rejections` while the rest lands undisturbed; SIGKILL right after
//! PUBACK loses nothing.
//!
//! Needs `mosquitto_pub` (and, for the broker test, Mosquitto); skipped with a notice when
//! missing unless `VIGIA_REQUIRE_SERVICES=1`, where a missing one fails.

mod common;

use std::net::TcpStream;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";
const BROKER: (&str, u16) = ("127.0.0.1", 1883);

/// A name no other test or run uses (Mosquitto is shared by every run on the machine).
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn required() -> bool {
    std::env::var("VIGIA_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Whether `mosquitto_pub` (and, when `broker`, Mosquitto) is there; prints why not.
fn available(broker: bool) -> bool {
    let mut missing = Vec::new();
    if !std::path::Path::new(MOSQUITTO_PUB).exists() {
        missing.push(format!("{MOSQUITTO_PUB} is not installed"));
    }
    if broker
        && TcpStream::connect_timeout(
            &format!("{}:{}", BROKER.0, BROKER.1).parse().unwrap(),
            Duration::from_secs(2),
        )
        .is_err()
    {
        missing.push(format!(
            "Mosquitto is not reachable on {}:{}",
            BROKER.0, BROKER.1
        ));
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    assert!(!required(), "VIGIA_REQUIRE_SERVICES=1 but {why}");
    eprintln!("skipping: {why} (set VIGIA_REQUIRE_SERVICES=1 to fail instead)");
    false
}

/// `mosquitto_pub -q 1`: returns once the PUBACK came (or the connection was refused).
fn publish(port: u16, login: Option<(&str, &str)>, topic: &str, payload: &str) -> Output {
    let mut cmd = Command::new(MOSQUITTO_PUB);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-i", &unique("pub")])
        .args(["-t", topic, "-m", payload]);
    if let Some((user, password)) = login {
        cmd.args(["-u", user, "-P", password]);
    }
    cmd.output().expect("run mosquitto_pub")
}

fn assert_published(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: mosquitto_pub failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The embedded listener's port, from the line the server prints.
fn mqtt_port(server: &TestServer) -> u16 {
    let log = server.log();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("Vigía MQTT listening on mqtt://"))
        .unwrap_or_else(|| panic!("no MQTT listener line:\n{log}"));
    line.rsplit(':').next().unwrap().trim().parse().unwrap()
}

fn with_listener(data_dir: Option<std::path::PathBuf>) -> TestServer {
    TestServer::start(Options {
        env: vec![("VIGIA_MQTT__LISTEN".into(), "127.0.0.1:0".into())],
        data_dir,
        ..Options::default()
    })
}

/// Every stored reading of `sensor` (metric `temperature` unless given) as (ts, value).
async fn points(server: &TestServer, sensor: &str, metric: &str) -> Vec<(i64, f64)> {
    let res = client()
        .get(server.url(&format!(
            "/api/v1/sensors/{sensor}/readings?metric={metric}&from=0&to=9999999999999&limit=10000"
        )))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    if res.status() == 404 {
        return Vec::new();
    }
    assert!(res.status().is_success(), "{sensor}: {}", res.status());
    let body: Value = res.json().await.expect("json");
    body["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            let ts = vigia_core::Timestamp::parse_rfc3339(p["ts"].as_str().unwrap())
                .unwrap()
                .0;
            (ts, p["value"].as_f64().unwrap())
        })
        .collect()
}

async fn wait_points(server: &TestServer, sensor: &str, metric: &str, n: usize) -> Vec<(i64, f64)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = points(server, sensor, metric).await;
        if got.len() >= n {
            return got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {n} readings of {sensor}/{metric}, got {got:?}; server log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rejections(server: &TestServer, token: &str) -> Vec<Value> {
    let res = client()
        .get(server.url("/api/v1/ingest/rejections"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    body["rejections"].as_array().expect("rejections").clone()
}

async fn api_key(server: &TestServer, role: &str) -> String {
    let res = post_json(
        &server.url("/api/v1/keys"),
        &json!({"name": format!("{role}-mqtt"), "role": role}),
    )
    .await;
    assert_eq!(res.status(), 201, "create {role} key");
    let body: Value = res.json().await.expect("json");
    body["key"].as_str().expect("secret").to_string()
}

fn hour_ago_ms() -> i64 {
    vigia_core::Timestamp::now().0 - 3_600_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_listener_lands_readings_and_refuses_bad_credentials() {
    if !available(false) {
        return;
    }
    let server = with_listener(None);
    let port = mqtt_port(&server);
    let device = api_key(&server, "device").await;
    let viewer = api_key(&server, "viewer").await;
    let t0 = hour_ago_ms();

    let login = Some(("default", device.as_str()));
    let out = publish(port, login, "vigia/default/MQ-L1", "21.5");
    assert_published(&out, "a bare number");
    let out = publish(
        port,
        login,
        "vigia/default/MQ-L1/humidity",
        &format!(
            r#"[{{"value":40,"ts":{t0}}},{{"value":41,"ts":{}}}]"#,
            t0 + 1000
        ),
    );
    assert_published(&out, "an array");
    let out = publish(
        port,
        Some(("default", TOKEN)),
        "vigia/default/MQ-L1",
        &format!(
            r#"{{"value":-3,"ts":"{}"}}"#,
            vigia_core::Timestamp(t0).to_rfc3339()
        ),
    );
    assert_published(&out, "an object, with the admin key");

    let temps = wait_points(&server, "MQ-L1", "temperature", 2).await;
    let mut values: Vec<f64> = temps.iter().map(|p| p.1).collect();
    values.sort_by(f64::total_cmp);
    assert_eq!(values, vec![-3.0, 21.5]);
    assert!(temps.contains(&(t0, -3.0)), "{temps:?}");
    let humidity = wait_points(&server, "MQ-L1", "humidity", 2).await;
    assert_eq!(humidity, vec![(t0, 40.0), (t0 + 1000, 41.0)]);

    // Refused at CONNECT: mosquitto_pub exits non-zero and nothing lands.
    for (what, login) in [
        (
            "a wrong password",
            Some(("default", "vg_wrong-password-000000000000000")),
        ),
        ("no credentials", None),
        (
            "another tenant's slug",
            Some(("no-such-tenant", device.as_str())),
        ),
        ("a viewer key", Some(("default", viewer.as_str()))),
    ] {
        let out = publish(port, login, "vigia/default/MQ-REFUSED", "1");
        assert!(!out.status.success(), "{what} was accepted");
    }
    // A readable refusal, as the client shows it.
    let out = publish(
        port,
        Some(("default", "vg_wrong-password-000000000000000")),
        "vigia/default/MQ-REFUSED",
        "1",
    );
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        said.contains("password") || said.contains("not authori"),
        "mosquitto_pub said: {said}"
    );
    // The server still serves; nothing of the refused publishes was stored.
    let out = publish(port, login, "vigia/default/MQ-L2", "7");
    assert_published(&out, "after refusals");
    wait_points(&server, "MQ-L2", "temperature", 1).await;
    assert!(points(&server, "MQ-REFUSED", "temperature")
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_acked_listed_and_disturb_nothing() {
    if !available(false) {
        return;
    }
    let server = with_listener(None);
    let port = mqtt_port(&server);
    let device = api_key(&server, "device").await;
    let login = Some(("default", device.as_str()));

    let bad: &[(&str, &str, &str)] = &[
        ("vigia/default/MQ-BAD", "warm", "bad_payload"),
        ("vigia/default/MQ-BAD", r#"{"valeu":1}"#, "bad_payload"),
        ("vigia/default/MQ-BAD", "1e999", "bad_payload"),
        ("vigia/default", "1", "bad_topic"),
        ("plant/default/MQ-BAD", "1", "bad_topic"),
        ("vigia/other-tenant/MQ-BAD", "1", "foreign_tenant"),
    ];
    for (i, (topic, payload, _)) in bad.iter().enumerate() {
        // Acked (exit 0): a bad message must not wedge the device's session.
        assert_published(&publish(port, login, topic, payload), topic);
        let good = publish(port, login, "vigia/default/MQ-GOOD", &format!("{i}"));
        assert_published(&good, "a good message between bad ones");
    }
    let good = wait_points(&server, "MQ-GOOD", "temperature", 1).await;
    assert!(!good.is_empty());
    let listed = eventually(Duration::from_secs(10), "the rejections", || async {
        let listed = rejections(&server, TOKEN).await;
        (listed.len() >= bad.len()).then_some(listed)
    })
    .await;
    assert_eq!(listed.len(), bad.len(), "{listed:#?}");
    // Newest first.
    for (entry, (topic, _, reason)) in listed.iter().zip(bad.iter().rev()) {
        assert_eq!(entry["protocol"], "mqtt");
        assert_eq!(entry["target"], *topic, "{entry}");
        assert_eq!(entry["reason"], *reason, "{entry}");
        assert!(!entry["detail"].as_str().unwrap().is_empty());
        assert!(entry["at"].as_str().is_some());
    }
    assert!(listed[bad.len() - 1]["detail"]
        .as_str()
        .unwrap()
        .contains("expected a number"));
    assert!(points(&server, "MQ-BAD", "temperature").await.is_empty());
    assert_eq!(
        metric(&server, "vigia_mqtt_rejected_total").await,
        bad.len() as f64
    );
    // Listing needs `read`: a device key may not.
    let res = client()
        .get(server.url("/api/v1/ingest/rejections"))
        .bearer_auth(&device)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_right_after_puback_loses_nothing() {
    if !available(false) {
        return;
    }
    let mut server = with_listener(None);
    let t0 = hour_ago_ms();
    const MESSAGES: i64 = 12;
    const PER_MESSAGE: i64 = 50;
    let port = mqtt_port(&server);
    for m in 0..MESSAGES {
        let rows: Vec<Value> = (0..PER_MESSAGE)
            .map(|k| {
                let ts = t0 + m * PER_MESSAGE + k;
                json!({"ts": ts, "value": ts as f64})
            })
            .collect();
        let out = publish(
            port,
            Some(("default", TOKEN)),
            "vigia/default/MQ-KILL",
            &Value::Array(rows).to_string(),
        );
        assert_published(&out, "QoS 1 publish");
    }
    // mosquitto_pub exited: its PUBACK came. Kill at once, nothing flushed or drained.
    server.kill9();
    server.restart();
    let want = (MESSAGES * PER_MESSAGE) as usize;
    let got = wait_points(&server, "MQ-KILL", "temperature", want).await;
    assert_eq!(got.len(), want, "every acknowledged reading, once");
    for (i, (ts, value)) in got.iter().enumerate() {
        assert_eq!(*ts, t0 + i as i64);
        assert_eq!(*value, *ts as f64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_to_vigia_lands_readings_and_lists_rejections() {
    if !available(true) {
        return;
    }
    let server = TestServer::start(Options {
        env: vec![
            (
                "VIGIA_MQTT__BROKER".into(),
                format!("mqtt://{}:{}", BROKER.0, BROKER.1),
            ),
            // Fixed, not per run: a persistent session stays on the shared Mosquitto
            // (queueing up to its max_queued_messages while nobody is connected), so one
            // per run would pile up. A share group of its own: no other server takes a
            // share of this test's messages (left-overs of an earlier run are delivered
            // here too; they name other sensors).
            (
                "VIGIA_MQTT__CLIENT_ID".into(),
                "vigia-test-mqtt-broker".into(),
            ),
            ("VIGIA_MQTT__SHARE_GROUP".into(), "vigia-test-mqtt".into()),
        ],
        ..Options::default()
    });
    eventually(
        Duration::from_secs(20),
        "the broker subscription",
        || async {
            server
                .log()
                .contains("MQTT broker subscribed")
                .then_some(())
        },
    )
    .await;
    let sensor = unique("MQB");
    let t0 = hour_ago_ms();
    let topic = format!("vigia/default/{sensor}");
    assert_published(&publish(BROKER.1, None, &topic, "4.5"), "a number");
    assert_published(
        &publish(
            BROKER.1,
            None,
            &format!("{topic}/door"),
            &format!(r#"[{{"value":1,"ts":{t0}}},{{"value":0,"ts":{}}}]"#, t0 + 1),
        ),
        "an array",
    );
    assert_published(&publish(BROKER.1, None, &topic, "not a number"), "bad");
    let foreign = format!("vigia/{}/{sensor}", unique("tenant"));
    assert_published(&publish(BROKER.1, None, &foreign, "1"), "foreign");
    assert_published(
        &publish(BROKER.1, None, &topic, "5.5"),
        "after the bad ones",
    );

    let temps = wait_points(&server, &sensor, "temperature", 2).await;
    let values: Vec<f64> = temps.iter().map(|p| p.1).collect();
    assert!(values.contains(&4.5) && values.contains(&5.5), "{values:?}");
    assert_eq!(temps.len(), 2, "the bad payload was not stored");
    let door = wait_points(&server, &sensor, "door", 2).await;
    assert_eq!(door, vec![(t0, 1.0), (t0 + 1, 0.0)]);

    let listed = eventually(Duration::from_secs(10), "the rejections", || async {
        let listed = rejections(&server, TOKEN).await;
        let mine: Vec<Value> = listed
            .into_iter()
            .filter(|r| r["target"] == topic.as_str() || r["target"] == foreign.as_str())
            .collect();
        (mine.len() >= 2).then_some(mine)
    })
    .await;
    let reasons: Vec<(&str, &str)> = listed
        .iter()
        .map(|r| (r["target"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert!(
        reasons.contains(&(topic.as_str(), "bad_payload")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(foreign.as_str(), "foreign_tenant")),
        "{reasons:?}"
    );
    let foreign_entry = listed
        .iter()
        .find(|r| r["target"] == foreign.as_str())
        .unwrap();
    assert!(foreign_entry["detail"]
        .as_str()
        .unwrap()
        .contains("mqtt.broker_tenants"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_listener_limits_hold() {
    if !available(false) {
        return;
    }
    let server = TestServer::start(Options {
        env: vec![
            ("VIGIA_MQTT__LISTEN".into(), "127.0.0.1:0".into()),
            ("VIGIA_MQTT__MAX_CONNECTIONS".into(), "1".into()),
            ("VIGIA_MQTT__MAX_PACKET_BYTES".into(), "1024".into()),
            ("VIGIA_MQTT__CONNECT_TIMEOUT".into(), "1s".into()),
        ],
        ..Options::default()
    });
    let port = mqtt_port(&server);
    let login = Some(("default", TOKEN));

    // A silent connection takes the only slot: the next client is refused at CONNECT.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = publish(port, login, "vigia/default/MQ-FULL", "1");
    assert!(!out.status.success(), "past mqtt.max_connections");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unavailable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mqtt.connect_timeout closes the silent one, which frees the slot.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = std::io::Read::read(&mut silent, &mut buf).unwrap_or(0);
    assert_eq!(read, 0, "closed without a word");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_published(
        &publish(port, login, "vigia/default/MQ-OK", "1"),
        "slot free",
    );

    // A packet over mqtt.max_packet_bytes closes the connection: no PUBACK, nothing stored.
    let big = format!("[{}]", vec![r#"{"value":1}"#; 200].join(","));
    assert!(!publish(port, login, "vigia/default/MQ-BIG", &big)
        .status
        .success());
    // QoS 2 is not supported: the connection is closed, nothing stored.
    let mut cmd = Command::new(MOSQUITTO_PUB);
    let q2 = cmd
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "2"])
        .args([
            "-u",
            "default",
            "-P",
            TOKEN,
            "-t",
            "vigia/default/MQ-Q2",
            "-m",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!q2.status.success(), "QoS 2 was accepted");
    // SUBSCRIBE is answered with failure codes: this is an ingest endpoint.
    let sub = Command::new("/usr/bin/mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-C",
            "1",
            "-W",
            "5",
        ])
        .args(["-u", "default", "-P", TOKEN, "-t", "vigia/#"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sub.stderr).contains("denied"),
        "{}",
        String::from_utf8_lossy(&sub.stderr)
    );

    wait_points(&server, "MQ-OK", "temperature", 1).await;
    for sensor in ["MQ-FULL", "MQ-BIG", "MQ-Q2"] {
        assert!(
            points(&server, sensor, "temperature").await.is_empty(),
            "{sensor}"
        );
    }
}
