//! Properties of the readings decoder: it never panics, good readings round-trip, and
//! the error listing names exactly the rows that are bad.

use proptest::prelude::*;
use serde_json::{json, Value};
use vigia_core::{Reading, Timestamp};
use vigia_ingest::decode::{decode_readings, DecodeError, DecodeLimits, MAX_LISTED_ERRORS};

const NOW: Timestamp = Timestamp(1_795_428_000_000);

/// Every outcome must be self-consistent, whatever the input.
fn check_outcome(result: &Result<Vec<Reading>, DecodeError>) {
    match result {
        Ok(readings) => {
            assert!(!readings.is_empty());
            for r in readings {
                assert!(r.value.is_finite(), "{r:?}");
                assert!(
                    r.ts.0 - NOW.0 <= DecodeLimits::default().max_future_ms,
                    "{r:?}"
                );
            }
        }
        Err(DecodeError::Invalid {
            errors,
            rows_with_errors,
        }) => {
            assert!(!errors.is_empty() && errors.len() <= MAX_LISTED_ERRORS);
            assert!(*rows_with_errors >= 1);
            for e in errors {
                assert!(
                    !e.message.starts_with("could not be read"),
                    "the two paths disagree: {e}"
                );
            }
        }
        Err(DecodeError::Malformed { line, .. }) => assert!(*line >= 1),
        Err(DecodeError::TooManyRows { rows, max }) => assert!(rows > max),
        Err(DecodeError::Empty) => {}
    }
}

/// Keys drawn from printable text, including quotes and backslashes that need escaping.
fn sensor_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 \\-_.:\"\\\\ñé€😀]{1,20}"
}

fn timestamp() -> impl Strategy<Value = Option<(i64, bool)>> {
    // (ms, as RFC 3339 text?) between 1970 and a day ahead of NOW.
    proptest::option::of((0i64..NOW.0 + 86_400_000, any::<bool>()))
}

fn row() -> impl Strategy<Value = (String, Option<String>, Option<(i64, bool)>, f64)> {
    (
        sensor_key(),
        proptest::option::of("[a-z_]{1,20}"),
        timestamp(),
        prop_oneof![
            -1e6f64..1e6,
            any::<f64>().prop_filter("finite", |v| v.is_finite())
        ],
    )
}

fn to_json(row: &(String, Option<String>, Option<(i64, bool)>, f64)) -> Value {
    let (sensor, metric, ts, value) = row;
    let mut obj = json!({ "sensor": sensor, "value": value });
    if let Some(m) = metric {
        obj["metric"] = json!(m);
    }
    if let Some((ms, as_text)) = ts {
        obj["ts"] = if *as_text {
            json!(Timestamp(*ms).to_rfc3339())
        } else {
            json!(ms)
        };
    }
    obj
}

/// Rows that are each wrong in a known way.
const BAD_ROWS: &[&str] = &[
    r#"{"value":1}"#,
    r#"{"sensor":"a"}"#,
    r#"{"sensor":5,"value":1}"#,
    r#"{"sensor":"a","value":"hot"}"#,
    r#"{"sensor":"a","valeu":1}"#,
    r#"{"sensor":"a","value":1e999}"#,
    r#"{"sensor":"a","value":1,"ts":"nope"}"#,
    r#"{"sensor":"a","value":1,"ts":2.5}"#,
    r#"{"sensor":"a","value":1,"ts":9999999999999999}"#,
    r#"{"sensor":"","value":1}"#,
    r#"{"sensor":"a","metric":"","value":1}"#,
    r#"{"sensor":"a","value":1,"value":1}"#,
    r#"{"sensor":"a","value":[1]}"#,
    r#"7"#,
    r#"[]"#,
];

/// JSON snippets of every type, including the awkward numbers.
const SNIPPETS: &[&str] = &[
    r#""CF-1""#,
    r#""""#,
    r#""a/b""#,
    r#""2026-11-23T09:00:00Z""#,
    r#""2026-11-23T10:00:00.5+01:00""#,
    r#""x\u0000""#,
    r#""\"\\""#,
    "1",
    "-0",
    "1.5",
    "1e3",
    "1795428000000",
    "1795428000000.0",
    "1e999",
    "-1e999",
    "1e-400",
    "99999999999999999999",
    "-99999999999999999999",
    "1.7e308",
    "9007199254740993",
    "null",
    "true",
    "false",
    "[]",
    "[1,[2]]",
    "{}",
    r#"{"a":"}"}"#,
];
const KEYS: &[&str] = &[
    "sensor",
    "metric",
    "ts",
    "value",
    "valeu",
    "Sensor",
    "sens\\u006fr",
];

fn grammar_row() -> impl Strategy<Value = String> {
    proptest::collection::vec((0..KEYS.len(), 0..SNIPPETS.len()), 0..6).prop_map(|fields| {
        let inner: Vec<String> = fields
            .iter()
            .map(|&(k, v)| format!(r#""{}":{}"#, KEYS[k], SNIPPETS[v]))
            .collect();
        format!("{{{}}}", inner.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Fields of every type in every combination: the fast path accepts exactly what the
    /// slow path finds nothing wrong with, and every refused row is named.
    #[test]
    fn both_paths_agree_on_any_mix_of_fields(rows in proptest::collection::vec(grammar_row(), 1..8), single in any::<bool>()) {
        let body = if single { rows[0].clone() } else { format!("[{}]", rows.join(",")) };
        let result = decode_readings(body.as_bytes(), NOW, &DecodeLimits::default());
        check_outcome(&result);
        match result {
            Ok(readings) => prop_assert_eq!(readings.len(), if single { 1 } else { rows.len() }),
            Err(DecodeError::Invalid { errors, .. }) => {
                for e in &errors {
                    prop_assert_eq!(e.row.is_none(), single, "{}", e);
                    prop_assert!(!e.field.is_empty(), "{}", e);
                }
            }
            Err(other) => return Err(TestCaseError::fail(format!("{body}: {other:?}"))),
        }
    }

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_outcome(&decode_readings(&body, NOW, &DecodeLimits::default()));
    }

    #[test]
    fn json_ish_text_never_panics(body in "[\\[\\]{}\":,0-9a-z.eE+\\- \\\\]{0,80}") {
        check_outcome(&decode_readings(body.as_bytes(), NOW, &DecodeLimits::default()));
    }

    /// Mutations of a valid body hit the slow path in every way it can be entered.
    #[test]
    fn mutated_bodies_never_panic(
        rows in proptest::collection::vec(row(), 1..6),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let mut body = serde_json::to_vec(&Value::Array(rows.iter().map(to_json).collect())).unwrap();
        for (at, byte, op) in edits {
            let i = at.index(body.len() + 1);
            match op {
                0 => body.insert(i, byte),
                1 if i < body.len() => { body.remove(i); }
                _ if i < body.len() => body[i] = byte,
                _ => {}
            }
        }
        check_outcome(&decode_readings(&body, NOW, &DecodeLimits::default()));
    }

    #[test]
    fn well_formed_readings_round_trip(rows in proptest::collection::vec(row(), 1..50), single in any::<bool>()) {
        let body = if single {
            to_json(&rows[0])
        } else {
            Value::Array(rows.iter().map(to_json).collect())
        };
        let bytes = serde_json::to_vec_pretty(&body).unwrap();
        let readings = decode_readings(&bytes, NOW, &DecodeLimits::default()).unwrap();
        let expected = if single { &rows[..1] } else { &rows[..] };
        prop_assert_eq!(readings.len(), expected.len());
        // Without `ts`, each further reading of a (sensor, metric) takes the next ms.
        let mut defaulted: std::collections::HashMap<(String, String), i64> = Default::default();
        for (got, (sensor, metric, ts, value)) in readings.iter().zip(expected) {
            let metric_name = metric.as_deref().unwrap_or("temperature");
            prop_assert_eq!(&got.sensor, sensor);
            prop_assert_eq!(got.metric.as_str(), metric_name);
            let want = match ts {
                Some((ms, _)) => *ms,
                None => {
                    let k = defaulted.entry((sensor.clone(), metric_name.to_string())).or_insert(-1);
                    *k += 1;
                    NOW.0 + *k
                }
            };
            prop_assert_eq!(got.ts.0, want);
            // serde_json's default float parser (without `float_roundtrip`) may be a few
            // ULPs off for extreme exponents; sensor values never carry that precision.
            let tolerance = 4.0 * f64::EPSILON * value.abs() + 1e-320; // subnormals too
            prop_assert!((got.value - value).abs() <= tolerance, "{} vs {}", got.value, value);
        }
    }

    /// Bad rows scattered through a batch are listed by exactly their indexes.
    #[test]
    fn bad_rows_are_listed_exactly(
        good in proptest::collection::vec(row(), 0..60),
        bad in proptest::collection::vec((any::<prop::sample::Index>(), 0..BAD_ROWS.len()), 1..8),
    ) {
        let mut rows: Vec<String> = good.iter().map(|r| to_json(r).to_string()).collect();
        for (at, which) in bad {
            let i = at.index(rows.len() + 1);
            rows.insert(i, BAD_ROWS[which].to_string());
        }
        let bad_indexes: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| BAD_ROWS.contains(&r.as_str()))
            .map(|(i, _)| i)
            .collect();
        let body = format!("[{}]", rows.join(","));
        let result = decode_readings(body.as_bytes(), NOW, &DecodeLimits::default());
        check_outcome(&result);
        let Err(DecodeError::Invalid { errors, rows_with_errors }) = result else {
            return Err(TestCaseError::fail(format!("expected Invalid for {body}")));
        };
        prop_assert_eq!(rows_with_errors, bad_indexes.len());
        let mut listed: Vec<usize> = errors.iter().map(|e| e.row.expect("batch rows are indexed")).collect();
        listed.dedup();
        prop_assert_eq!(listed, bad_indexes);
    }
}
