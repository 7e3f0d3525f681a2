//! Properties of the line protocol decoder: it never panics, readings written with any
//! escapable characters round-trip exactly, and the error listing names exactly the bad
//! lines while nothing from a refused body comes back.

use proptest::prelude::*;
use vigia_core::{Reading, Timestamp};
use vigia_ingest::decode::{
    decode_line_protocol, DecodeLimits, LineProtocolError, LineProtocolOptions, Precision,
    MAX_LISTED_ERRORS,
};

const NOW: Timestamp = Timestamp(1_795_428_000_000);

fn decode(body: &[u8], precision: Precision) -> Result<Vec<Reading>, LineProtocolError> {
    decode_line_protocol(
        body,
        NOW,
        &DecodeLimits::default(),
        &LineProtocolOptions {
            precision,
            ..Default::default()
        },
    )
}

/// Escapes what line protocol escapes in tag values and field keys.
fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if matches!(c, ',' | '=' | ' ' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Sensor keys with the characters that need escaping (no `/` or controls: invalid keys).
fn sensor_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ,=\\\\\"\\-_.:ñé€😀]{1,20}"
        .prop_filter("not only escapes at the end", |s| !s.ends_with('\\'))
}

fn metric() -> impl Strategy<Value = String> {
    "[a-z_ ,=]{1,20}".prop_filter("not `value`", |m| m != "value")
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6f64..1e6,
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
        (-1_000_000i64..1_000_000).prop_map(|v| v as f64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode(&body, Precision::Nanoseconds);
    }

    #[test]
    fn line_shaped_noise_never_panics(body in "[a-z0-9,= \\\\\"\\n.\\-ie]{0,200}") {
        match decode(body.as_bytes(), Precision::Milliseconds) {
            Ok(readings) => prop_assert!(readings.iter().all(|r| r.value.is_finite())),
            Err(LineProtocolError::Invalid { errors, lines_with_errors }) => {
                prop_assert!(!errors.is_empty() && errors.len() <= MAX_LISTED_ERRORS);
                prop_assert!(lines_with_errors >= errors.len());
            }
            Err(_) => {}
        }
    }

    #[test]
    fn written_readings_round_trip(
        rows in proptest::collection::vec((sensor_key(), metric(), 0i64..NOW.0, value(), any::<bool>()), 1..40)
    ) {
        // One reading per line; distinct timestamps so no two lines conflict.
        let mut body = String::new();
        let mut expected = Vec::new();
        for (i, (sensor, metric, ts, value, integer)) in rows.iter().enumerate() {
            let ts = ts - i as i64;
            let (text, value) = if *integer {
                let v = value.trunc().clamp(-9e15, 9e15);
                (format!("{}i", v as i64), v as i64 as f64)
            } else {
                (format!("{value:?}"), *value)
            };
            body.push_str(&format!(
                "m,host=x,sensor={} {}={text} {}\n",
                escape(sensor),
                escape(metric),
                ts
            ));
            expected.push(Reading { sensor: sensor.clone(), metric: metric.clone(), ts: Timestamp(ts), value });
        }
        prop_assert_eq!(decode(body.as_bytes(), Precision::Milliseconds).unwrap(), expected);
    }

    #[test]
    fn exactly_the_bad_lines_are_named(
        kinds in proptest::collection::vec(0u8..6, 1..60)
    ) {
        let mut body = String::new();
        let mut bad = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let ts = NOW.0 - 1000 - i as i64;
            let line = match kind {
                0 => format!("t,sensor=S value=-1 {ts}"),
                1 => { bad.push(i + 1); format!("t value=-1 {ts}") }
                2 => { bad.push(i + 1); format!("t,sensor=S value=\"x\" {ts}") }
                3 => { bad.push(i + 1); format!("t,sensor=S value=1 {ts} trailing") }
                4 => "# a comment".to_string(),
                _ => { bad.push(i + 1); format!("t,sensor=S value=nope {ts}") }
            };
            body.push_str(&line);
            body.push('\n');
        }
        let result = decode(body.as_bytes(), Precision::Milliseconds);
        if bad.is_empty() {
            let good = kinds.iter().filter(|k| **k == 0).count();
            match result {
                Ok(readings) => prop_assert_eq!(readings.len(), good),
                Err(e) => prop_assert!(good == 0 && e == LineProtocolError::Empty, "{:?}", e),
            }
        } else {
            match result {
                Err(LineProtocolError::Invalid { errors, lines_with_errors }) => {
                    prop_assert_eq!(lines_with_errors, bad.len());
                    let named: Vec<usize> = errors.iter().map(|e| e.line).collect();
                    prop_assert_eq!(named, bad);
                }
                other => prop_assert!(false, "expected line errors, got {:?}", other),
            }
        }
    }
}
