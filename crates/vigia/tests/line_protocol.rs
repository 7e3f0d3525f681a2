//! InfluxDB line protocol writes end to end, as Telegraf and InfluxDB clients send them:
//! a Telegraf-shaped fixture through `/api/v2/write` (gzip, ns) lands the expected sensors
//! and metrics; v1 `/write` with its `p` and Basic keys and precisions; a body with bad
//! lines names every one and writes nothing; refusals answer their documented statuses.

mod common;

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use common::*;
use serde_json::Value;

const MINUTE_NS: i64 = 60_000_000_000;

/// A sensor, a metric and the (epoch ms, value) points it must hold.
type ExpectedSeries<'a> = (&'a str, &'a str, &'a [(i64, f64)]);

type Headers = Vec<(&'static str, String)>;

/// A refusal case: name, headers, URL, body, status, problem type.
type Refusal = (&'static str, Headers, String, Vec<u8>, u16, &'static str);

fn now_ns() -> i64 {
    vigia_core::Timestamp::now().0 * 1_000_000
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body).unwrap();
    gz.finish().unwrap()
}

/// The series of one sensor's metric over the last hour, as (epoch ms, value).
async fn series(server: &TestServer, sensor: &str, metric: &str) -> Vec<(i64, f64)> {
    let sensor = sensor.replace(',', "%2C");
    let body = get_json(&server.url(&format!(
        "/api/v1/sensors/{sensor}/readings?metric={metric}"
    )))
    .await;
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let ts: vigia_core::Timestamp = serde_json::from_value(p["ts"].clone()).unwrap();
            (ts.0, p["value"].as_f64().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_telegraf_flush_lands_every_sensor_and_metric() {
    let server = TestServer::start(Options::default());
    let t0 = now_ns() - 10 * MINUTE_NS + 123_456; // sub-millisecond digits are cut
    let t1 = t0 + MINUTE_NS;
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/telegraf.lp"
    ))
    .unwrap()
    .replace("{T0}", &t0.to_string())
    .replace("{T1}", &t1.to_string());
    let res = client()
        .post(server.url("/api/v2/write?org=plant&bucket=telegraf&precision=ns"))
        .header("Authorization", format!("Token {TOKEN}"))
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Content-Encoding", "gzip")
        .body(gzip(fixture.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    drained(&server).await;

    let (m0, m1) = (t0.div_euclid(1_000_000), t1.div_euclid(1_000_000));
    let expected: &[ExpectedSeries] = &[
        ("CF-1", "temperature", &[(m0, -18.25), (m1, -18.0)]),
        ("CF-2", "temperature", &[(m0, -19.5), (m1, -19.75)]),
        ("REF-3", "temperature", &[(m0, 3.75), (m1, 4.0)]),
        ("CF-1", "humidity", &[(m0, 71.0), (m1, 70.0)]),
        ("CF-1", "door_open", &[(m0, 0.0), (m1, 0.0)]),
        ("CF-1", "compressor_amps", &[(m0, 4.2), (m1, 4.1)]),
        ("REF-3", "humidity", &[(m0, 88.0), (m1, 87.0)]),
        ("REF-3", "door_open", &[(m0, 1.0), (m1, 0.0)]),
        ("REF-3", "compressor_amps", &[(m0, 2.95), (m1, 3.0)]),
        ("LINE,A", "kwh", &[(m1, 1_234_567.0)]),
        ("LINE,A", "voltage", &[(m1, 229.8)]),
    ];
    for (sensor, metric, points) in expected {
        assert_eq!(
            series(&server, sensor, metric).await,
            points.to_vec(),
            "{sensor} {metric}"
        );
    }
    let sensors = get_json(&server.url("/api/v1/sensors")).await;
    let mut keys: Vec<&str> = sensors
        .as_array()
        .or_else(|| sensors["sensors"].as_array())
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["CF-1", "CF-2", "LINE,A", "REF-3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn v1_writes_take_the_key_as_p_or_basic_and_v1_precisions() {
    let server = TestServer::start(Options::default());
    let now_s = vigia_core::Timestamp::now().0 / 1000;
    let res = client()
        .post(server.url(&format!("/write?db=plant&u=telegraf&p={TOKEN}&precision=s")))
        .body(format!(
            "temperature,sensor=V1-S value=-20 {}\n",
            now_s - 120
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("telegraf:{TOKEN}"));
    let now_min = now_s / 60;
    let res = client()
        .post(server.url("/write?db=plant&precision=m"))
        .header("Authorization", format!("Basic {basic}"))
        .body(format!(
            "temperature,sensor=V1-M value=-21 {}\n",
            now_min - 2
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());
    drained(&server).await;
    assert_eq!(
        series(&server, "V1-S", "temperature").await,
        vec![((now_s - 120) * 1000, -20.0)]
    );
    assert_eq!(
        series(&server, "V1-M", "temperature").await,
        vec![((now_min - 2) * 60_000, -21.0)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_with_bad_lines_names_them_and_writes_nothing() {
    let server = TestServer::start(Options::default());
    let t = now_ns() - MINUTE_NS;
    let body = format!(
        "temperature,sensor=BAD-LP value=-18 {t}\n\
         temperature value=-18 {t}\n\
         status,sensor=BAD-LP state=\"running\" {t}\n\
         temperature,sensor=BAD-LP value=-17 {}\n\
         temperature,sensor=BAD-LP value=warm {t}\n",
        t + 1_000_000
    );
    let res = client()
        .post(server.url("/api/v2/write"))
        .header("Authorization", format!("Token {TOKEN}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "https://vigia.dev/problems/line-protocol");
    assert_eq!(problem["rows_with_errors"], 3);
    let lines: Vec<(i64, &str)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_i64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        lines,
        [(2, "tag sensor"), (3, "field state"), (5, "field value")]
    );
    // The good lines of the refused body were not written either, and nothing else is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drained(&server).await;
    let res = client()
        .get(server.url("/api/v1/sensors/BAD-LP"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        404,
        "the sensor of the refused body was not even created"
    );
    assert_eq!(metric(&server, "vigia_ingest_readings_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_answer_their_documented_statuses() {
    let server = TestServer::start(Options {
        env: vec![("VIGIA_INGEST__MAX_BODY_BYTES".into(), "4096".into())],
        ..Options::default()
    });
    let url = server.url("/api/v2/write");
    let good = "temperature,sensor=R value=1\n";
    let post = |headers: Headers, uri: String, body: Vec<u8>| {
        let mut req = client().post(uri).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let kind = res
                .json::<Value>()
                .await
                .ok()
                .and_then(|p| p["type"].as_str().map(str::to_string));
            (status, kind)
        }
    };
    let token = || vec![("Authorization", format!("Token {TOKEN}"))];
    let cases: Vec<Refusal> = vec![
        (
            "no key",
            vec![],
            url.clone(),
            good.into(),
            401,
            "unauthorized",
        ),
        (
            "wrong key",
            vec![("Authorization", "Token nope-nope-nope".into())],
            url.clone(),
            good.into(),
            401,
            "unauthorized",
        ),
        (
            "bad precision",
            token(),
            format!("{url}?precision=fortnight"),
            good.into(),
            400,
            "bad-request",
        ),
        (
            "empty body",
            token(),
            url.clone(),
            Vec::new(),
            400,
            "bad-request",
        ),
        (
            "brotli",
            [token(), vec![("Content-Encoding", "br".into())]].concat(),
            url.clone(),
            good.into(),
            415,
            "unsupported-media-type",
        ),
        (
            "corrupt gzip",
            [token(), vec![("Content-Encoding", "gzip".into())]].concat(),
            url.clone(),
            b"\x1f\x8bnot really".to_vec(),
            400,
            "bad-request",
        ),
        (
            "too large",
            token(),
            url.clone(),
            good.repeat(200).into_bytes(),
            413,
            "payload-too-large",
        ),
        (
            "gzip bomb",
            [token(), vec![("Content-Encoding", "gzip".into())]].concat(),
            url.clone(),
            gzip(&b"#".repeat(1 << 20)),
            413,
            "payload-too-large",
        ),
    ];
    for (name, headers, uri, body, status, kind) in cases {
        let (got, got_kind) = post(headers, uri, body).await;
        assert_eq!(got, status, "{name}");
        assert_eq!(
            got_kind.as_deref(),
            Some(format!("https://vigia.dev/problems/{kind}").as_str()),
            "{name}"
        );
    }
    // A viewer key may not write.
    let res = post_json(
        &server.url("/api/v1/keys"),
        &serde_json::json!({"name": "ro", "role": "viewer"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    let viewer: Value = res.json().await.unwrap();
    let (status, _) = post(
        vec![(
            "Authorization",
            format!("Token {}", viewer["key"].as_str().unwrap()),
        )],
        url.clone(),
        good.into(),
    )
    .await;
    assert_eq!(status, 403);
    // None of it was written; the good body still is.
    assert_eq!(metric(&server, "vigia_ingest_readings_total").await, 0.0);
    let (status, _) = post(token(), url, good.into()).await;
    assert_eq!(status, 204);
}
