//! Readings decoder throughput, against parsing the same bytes into `serde_json::Value`
//! in the same run; and the line protocol decoder against the JSON decoder given the same
//! readings. Prints figures; never fails on a timing.
//! Run with `cargo bench -p vigia-ingest --bench decode`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vigia_core::Timestamp;
use vigia_ingest::decode::{
    decode_line_protocol, decode_readings, DecodeLimits, LineProtocolOptions,
};

const NOW: Timestamp = Timestamp(1_795_428_000_000);

fn body(rows: usize, rfc3339: bool) -> Vec<u8> {
    let rows: Vec<String> = (0..rows)
        .map(|i| {
            let ts = NOW.0 - 5_000 * (rows - i) as i64;
            let ts = if rfc3339 {
                format!("\"{}\"", Timestamp(ts).to_rfc3339())
            } else {
                ts.to_string()
            };
            let value = -20.0 + (i % 17) as f64 * 0.13;
            format!(
                r#"{{"sensor":"CF-{}","ts":{ts},"value":{value:.2}}}"#,
                i % 3 + 1
            )
        })
        .collect();
    if rows.len() == 1 {
        rows[0].clone().into_bytes()
    } else {
        format!("[{}]", rows.join(",")).into_bytes()
    }
}

/// Runs `f` for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..10 {
        f(); // warm caches and the allocator
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < budget {
        for _ in 0..16 {
            f();
        }
        calls += 16;
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let limits = DecodeLimits::default();
    let budget = Duration::from_millis(1500);
    let cases = [
        ("1,000 readings, epoch ms", body(1_000, false), 1_000),
        ("1,000 readings, RFC 3339", body(1_000, true), 1_000),
        ("1 reading, epoch ms", body(1, false), 1),
    ];
    for (name, bytes, rows) in cases {
        assert_eq!(
            decode_readings(&bytes, NOW, &limits)
                .expect("bench bodies are valid")
                .len(),
            rows
        );
        let ours = rate(budget, || {
            black_box(decode_readings(black_box(&bytes), NOW, &limits).expect("valid"));
        }) * rows as f64;
        let baseline = rate(budget, || {
            black_box(
                serde_json::from_slice::<serde_json::Value>(black_box(&bytes)).expect("valid"),
            );
        }) * rows as f64;
        println!(
            "{name:<26} ({:>6} bytes): decode_readings {:>6.2} M readings/s | serde_json::Value {:>6.2} M/s | ratio {:.2}x",
            bytes.len(),
            ours / 1e6,
            baseline / 1e6,
            ours / baseline,
        );
    }
    line_protocol(&limits, budget);
}

/// 5,000 lines as Telegraf sends them (ns timestamps, extra tags), against the JSON
/// decoder given the same readings.
fn line_protocol(limits: &DecodeLimits, budget: Duration) {
    let lines = 5_000;
    let mut lp = String::new();
    let mut json = Vec::new();
    for i in 0..lines {
        let ts = NOW.0 - 5_000 * (lines - i) as i64;
        let value = -20.0 + (i % 17) as f64 * 0.13;
        let sensor = format!("CF-{}", i % 100);
        lp.push_str(&format!(
            "temperature,sensor={sensor},host=gw-1,site=plant-1 value={value:.2} {}\n",
            ts * 1_000_000
        ));
        json.push(format!(
            r#"{{"sensor":"{sensor}","ts":{ts},"value":{value:.2}}}"#
        ));
    }
    let json = format!("[{}]", json.join(",")).into_bytes();
    let options = LineProtocolOptions::default();
    let decoded = decode_line_protocol(lp.as_bytes(), NOW, limits, &options).expect("valid");
    assert_eq!(decoded, decode_readings(&json, NOW, limits).expect("valid"));
    let ours = rate(budget, || {
        black_box(
            decode_line_protocol(black_box(lp.as_bytes()), NOW, limits, &options).expect("valid"),
        );
    }) * lines as f64;
    let baseline = rate(budget, || {
        black_box(decode_readings(black_box(&json), NOW, limits).expect("valid"));
    }) * lines as f64;
    println!(
        "5,000 lines line protocol  ({:>6} bytes): decode_line_protocol {:>6.2} M readings/s | decode_readings (JSON, same readings, {} bytes) {:>6.2} M/s | ratio {:.2}x",
        lp.len(),
        ours / 1e6,
        json.len(),
        baseline / 1e6,
        ours / baseline,
    );
}
