//! The readings decoder as data: bodies in, readings or precise errors out.

use vigia_core::{Reading, Timestamp};
use vigia_ingest::decode::{
    decode_readings, DecodeError, DecodeLimits, RowError, MAX_LISTED_ERRORS,
};

/// 2026-11-23T10:00:00Z, the arrival time in every test.
const NOW: Timestamp = Timestamp(1_795_428_000_000);
const DAY_MS: i64 = 24 * 3_600_000;

fn decode(body: &str) -> Result<Vec<Reading>, DecodeError> {
    decode_readings(body.as_bytes(), NOW, &DecodeLimits::default())
}

fn reading(sensor: &str, metric: &str, ts: i64, value: f64) -> Reading {
    Reading {
        sensor: sensor.into(),
        metric: metric.into(),
        ts: Timestamp(ts),
        value,
    }
}

#[test]
fn good_bodies() {
    let t = NOW.0;
    let cases: Vec<(&str, String, Vec<Reading>)> = vec![
        ("minimal object: default metric and ts = now", r#"{"sensor":"CF-1","value":-19.5}"#.into(), vec![reading("CF-1", "temperature", t, -19.5)]),
        (
            "every field",
            r#"{"sensor":"CF-1","metric":"humidity","ts":"2026-11-23T09:00:00Z","value":55}"#.into(),
            vec![reading("CF-1", "humidity", t - 3_600_000, 55.0)],
        ),
        ("epoch ms", r#"{"sensor":"CF-1","ts":1795424400000,"value":1}"#.into(), vec![reading("CF-1", "temperature", t - 3_600_000, 1.0)]),
        ("RFC 3339 with an offset", r#"{"sensor":"CF-1","ts":"2026-11-23T10:00:00+01:00","value":1}"#.into(), vec![reading("CF-1", "temperature", t - 3_600_000, 1.0)]),
        ("epoch ms as a whole float", r#"{"sensor":"CF-1","ts":1795424400000.0,"value":1}"#.into(), vec![reading("CF-1", "temperature", t - 3_600_000, 1.0)]),
        ("negative epoch ms", r#"{"sensor":"CF-1","ts":-5,"value":1}"#.into(), vec![reading("CF-1", "temperature", -5, 1.0)]),
        ("the earliest RFC 3339 instant", r#"{"sensor":"CF-1","ts":-62167219200000,"value":1}"#.into(), vec![reading("CF-1", "temperature", -62_167_219_200_000, 1.0)]),
        ("year 0000 as RFC 3339", r#"{"sensor":"CF-1","ts":"0000-01-01T00:00:00Z","value":1}"#.into(), vec![reading("CF-1", "temperature", -62_167_219_200_000, 1.0)]),
        ("null metric and ts mean absent", r#"{"sensor":"CF-1","metric":null,"ts":null,"value":1}"#.into(), vec![reading("CF-1", "temperature", t, 1.0)]),
        ("fields in any order", r#"{"value":2,"ts":0,"sensor":"CF-1"}"#.into(), vec![reading("CF-1", "temperature", 0, 2.0)]),
        ("escapes in strings and keys", r#"{"sens\u006fr":"CF\u002d1 \"a\"","value":1}"#.into(), vec![reading("CF-1 \"a\"", "temperature", t, 1.0)]),
        ("unicode sensor", r#"{"sensor":"cámara ñ","value":1}"#.into(), vec![reading("cámara ñ", "temperature", t, 1.0)]),
        ("whitespace everywhere", " \r\n\t{ \"sensor\" :\n\"CF-1\" ,\t\"value\" : 1 }\n ".into(), vec![reading("CF-1", "temperature", t, 1.0)]),
        ("a byte order mark is ignored", "\u{feff}{\"sensor\":\"CF-1\",\"value\":1}".into(), vec![reading("CF-1", "temperature", t, 1.0)]),
        ("tiny, huge and negative zero values", r#"[{"sensor":"a","value":1e-400},{"sensor":"a","value":1.7e308},{"sensor":"a","value":-0.0}]"#.into(),
            vec![reading("a", "temperature", t, 0.0), reading("a", "temperature", t + 1, 1.7e308), reading("a", "temperature", t + 2, -0.0)]),
        ("an array keeps its order", " [ {\"sensor\":\"b\",\"value\":2} , {\"sensor\":\"a\",\"value\":1} ] ".into(),
            vec![reading("b", "temperature", t, 2.0), reading("a", "temperature", t, 1.0)]),
        ("ts exactly 24 h ahead is accepted", format!(r#"{{"sensor":"a","ts":{},"value":1}}"#, t + DAY_MS), vec![reading("a", "temperature", t + DAY_MS, 1.0)]),
        ("a 64-byte metric", format!(r#"{{"sensor":"a","metric":"{}","value":1}}"#, "m".repeat(64)), vec![reading("a", &"m".repeat(64), t, 1.0)]),
        ("a 128-byte sensor", format!(r#"{{"sensor":"{}","value":1}}"#, "s".repeat(128)), vec![reading(&"s".repeat(128), "temperature", t, 1.0)]),
        // Lengths are characters, as the OpenAPI document's maxLength counts them.
        ("a 128-character, 256-byte sensor", format!(r#"{{"sensor":"{}","value":1}}"#, "é".repeat(128)), vec![reading(&"é".repeat(128), "temperature", t, 1.0)]),
        ("a 64-character, 128-byte metric", format!(r#"{{"sensor":"a","metric":"{}","value":1}}"#, "µ".repeat(64)), vec![reading("a", &"µ".repeat(64), t, 1.0)]),
    ];
    for (name, body, want) in cases {
        assert_eq!(decode(&body), Ok(want), "{name}");
    }
}

#[test]
fn epoch_ms_and_rfc3339_name_the_same_instant() {
    let a = decode(r#"{"sensor":"a","ts":1795428000250,"value":1}"#).unwrap();
    let b = decode(r#"{"sensor":"a","ts":"2026-11-23T10:00:00.250Z","value":1}"#).unwrap();
    let c = decode(r#"{"sensor":"a","ts":"2026-11-23T05:00:00.250-05:00","value":1}"#).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn malformed_bodies_are_400_with_a_position() {
    let cases: &[(&str, &[u8], usize, usize, &str)] = &[
        ("empty body", b"", 1, 0, "EOF"),
        ("only whitespace", b"  \n ", 2, 1, "EOF"),
        (
            "NaN is not JSON",
            br#"{"sensor":"a","value":NaN}"#,
            1,
            23,
            "expected value",
        ),
        (
            "Infinity is not JSON",
            br#"{"sensor":"a","value":Infinity}"#,
            1,
            23,
            "expected value",
        ),
        (
            "trailing comma in an array",
            br#"[{"sensor":"a","value":1},]"#,
            1,
            27,
            "trailing comma",
        ),
        (
            "trailing comma in an object",
            br#"{"sensor":"a","value":1,}"#,
            1,
            25,
            "trailing comma",
        ),
        (
            "two objects",
            br#"{"sensor":"a","value":1}{}"#,
            1,
            25,
            "trailing characters",
        ),
        (
            "missing value after colon",
            b"{\"sensor\":\"a\",\n\"value\":}",
            2,
            9,
            "expected value",
        ),
        (
            "single quotes",
            b"{'sensor':'a'}",
            1,
            2,
            "key must be a string",
        ),
        (
            "unterminated",
            br#"[{"sensor":"a","value":1}"#,
            1,
            25,
            "EOF",
        ),
        ("bare word", b"hello", 1, 1, "expected value"),
        (
            "invalid UTF-8",
            b"{\"sensor\":\"a\xff\",\"value\":1}",
            1,
            13,
            "UTF-8",
        ),
        (
            "a byte order mark in the middle",
            "[\u{feff}]".as_bytes(),
            1,
            2,
            "expected value",
        ),
    ];
    for (name, body, line, column, words) in cases {
        match decode_readings(body, NOW, &DecodeLimits::default()) {
            Err(DecodeError::Malformed {
                message,
                line: l,
                column: c,
            }) => {
                assert_eq!((l, c), (*line, *column), "{name}: {message}");
                assert!(message.contains(words), "{name}: {message}");
                assert!(
                    !message.contains(" at line "),
                    "{name}: the position is separate: {message}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// `(row, field, words in the message)` as a test writes it.
type Expected<'a> = &'a [(Option<usize>, &'a str, &'a str)];

fn assert_invalid(name: &str, got: Result<Vec<Reading>, DecodeError>, want: Expected, rows: usize) {
    let Err(DecodeError::Invalid {
        errors,
        rows_with_errors,
    }) = got
    else {
        panic!("{name}: expected Invalid, got {got:?}");
    };
    assert_eq!(rows_with_errors, rows, "{name}: {errors:?}");
    let brief: Vec<(Option<usize>, &str)> =
        errors.iter().map(|e| (e.row, e.field.as_str())).collect();
    let want_brief: Vec<(Option<usize>, &str)> = want.iter().map(|(r, f, _)| (*r, *f)).collect();
    assert_eq!(brief, want_brief, "{name}: {errors:?}");
    for (e, (_, _, words)) in errors.iter().zip(want) {
        assert!(e.message.contains(words), "{name}: {e} lacks {words:?}");
        assert!(
            !e.message.starts_with("could not be read"),
            "{name}: the paths disagree: {e}"
        );
    }
}

#[test]
fn invalid_single_objects_are_422_naming_the_field() {
    let future = NOW.0 + DAY_MS + 1;
    let cases: Vec<(&str, String, Expected)> = vec![
        (
            "no sensor",
            r#"{"value":1}"#.into(),
            &[(None, "sensor", "is required")],
        ),
        (
            "no value",
            r#"{"sensor":"a"}"#.into(),
            &[(None, "value", "is required")],
        ),
        (
            "sensor is a number",
            r#"{"sensor":5,"value":1}"#.into(),
            &[(None, "sensor", "must be a string, got a number")],
        ),
        (
            "sensor is null",
            r#"{"sensor":null,"value":1}"#.into(),
            &[(None, "sensor", "got null")],
        ),
        (
            "value is text",
            r#"{"sensor":"a","value":"hot"}"#.into(),
            &[(None, "value", "must be a number, got a string")],
        ),
        (
            "value is null",
            r#"{"sensor":"a","value":null}"#.into(),
            &[(None, "value", "got null")],
        ),
        (
            "value is an object",
            r#"{"sensor":"a","value":{"v":1}}"#.into(),
            &[(None, "value", "got an object")],
        ),
        (
            "value overflows",
            r#"{"sensor":"a","value":1e999}"#.into(),
            &[(None, "value", "must be a finite number")],
        ),
        (
            "value overflows negatively",
            r#"{"sensor":"a","value":-1e999}"#.into(),
            &[(None, "value", "must be a finite number")],
        ),
        (
            "a typo is not a default",
            r#"{"sensor":"a","valeu":1}"#.into(),
            &[
                (None, "valeu", "is not a known field"),
                (None, "value", "is required"),
            ],
        ),
        (
            "an unknown field holding brackets",
            r#"{"sensor":"a","value":1,"extra":{"x":[1,"]}",{"y":"{"}]}}"#.into(),
            &[(None, "extra", "is not a known field")],
        ),
        (
            "a field twice",
            r#"{"sensor":"a","value":1,"value":2}"#.into(),
            &[(None, "value", "appears more than once")],
        ),
        (
            "ts is words",
            r#"{"sensor":"a","value":1,"ts":"yesterday"}"#.into(),
            &[(None, "ts", "RFC 3339")],
        ),
        (
            "ts without a zone",
            r#"{"sensor":"a","value":1,"ts":"2026-11-23T10:00:00"}"#.into(),
            &[(None, "ts", "RFC 3339")],
        ),
        (
            "ts is fractional ms",
            r#"{"sensor":"a","value":1,"ts":1.5}"#.into(),
            &[(None, "ts", "whole number")],
        ),
        (
            "ts overflows",
            r#"{"sensor":"a","value":1,"ts":1e999}"#.into(),
            &[(None, "ts", "whole number")],
        ),
        (
            "ts beyond i64",
            r#"{"sensor":"a","value":1,"ts":99999999999999999999}"#.into(),
            &[(None, "ts", "out of range")],
        ),
        (
            "ts before year 0000",
            r#"{"sensor":"a","value":1,"ts":-62167219200001}"#.into(),
            &[(None, "ts", "must be between 0000-01-01T00:00:00Z and 9999")],
        ),
        (
            "ts as RFC 3339 before year 0000 in UTC",
            r#"{"sensor":"a","value":1,"ts":"0000-01-01T00:00:00+00:01"}"#.into(),
            &[(None, "ts", "must be between")],
        ),
        (
            "ts is a boolean",
            r#"{"sensor":"a","value":1,"ts":true}"#.into(),
            &[(None, "ts", "got a boolean")],
        ),
        (
            "ts 1 ms past the limit",
            format!(r#"{{"sensor":"a","value":1,"ts":{future}}}"#),
            &[(None, "ts", "is more than 24 h in the future")],
        ),
        (
            "empty sensor",
            r#"{"sensor":"","value":1}"#.into(),
            &[(None, "sensor", "must not be empty")],
        ),
        (
            "slash in sensor",
            r#"{"sensor":"a/b","value":1}"#.into(),
            &[(None, "sensor", "`/`")],
        ),
        (
            "control character in sensor",
            r#"{"sensor":"a\u0007","value":1}"#.into(),
            &[(None, "sensor", "control")],
        ),
        (
            "129-byte sensor",
            format!(r#"{{"sensor":"{}","value":1}}"#, "s".repeat(129)),
            &[(None, "sensor", "at most 128")],
        ),
        (
            "empty metric",
            r#"{"sensor":"a","metric":"","value":1}"#.into(),
            &[(None, "metric", "1 to 64")],
        ),
        (
            "129-character sensor",
            format!(r#"{{"sensor":"{}","value":1}}"#, "é".repeat(129)),
            &[(None, "sensor", "at most 128")],
        ),
        (
            "65-character metric",
            format!(
                r#"{{"sensor":"a","metric":"{}","value":1}}"#,
                "µ".repeat(65)
            ),
            &[(None, "metric", "1 to 64")],
        ),
        (
            "65-byte metric",
            format!(
                r#"{{"sensor":"a","metric":"{}","value":1}}"#,
                "m".repeat(65)
            ),
            &[(None, "metric", "1 to 64")],
        ),
        (
            "newline in metric",
            r#"{"sensor":"a","metric":"a\nb","value":1}"#.into(),
            &[(None, "metric", "control")],
        ),
        (
            "metric is a number",
            r#"{"sensor":"a","metric":7,"value":1}"#.into(),
            &[(None, "metric", "must be a string")],
        ),
        (
            "every problem of a row is listed",
            r#"{"sensor":5,"metric":"","ts":"soon","value":"x","colour":"red"}"#.into(),
            &[
                (None, "colour", "known"),
                (None, "sensor", "string"),
                (None, "metric", "1 to 64"),
                (None, "ts", "RFC 3339"),
                (None, "value", "number"),
            ],
        ),
        (
            "a number is not a reading",
            "42".into(),
            &[(
                None,
                "",
                "expected a reading object or an array of them, got a number",
            )],
        ),
        (
            "a string is not a reading",
            r#""CF-1""#.into(),
            &[(None, "", "got a string")],
        ),
        (
            "null is not a reading",
            "null".into(),
            &[(None, "", "got null")],
        ),
    ];
    for (name, body, want) in cases {
        assert_invalid(name, decode(&body), want, 1);
    }
}

#[test]
fn invalid_rows_of_a_batch_are_listed_by_index() {
    let cases: Vec<(&str, &str, Expected, usize)> = vec![
        (
            "a non-object and a missing sensor",
            r#"[{"sensor":"a","value":1}, 5, {"value":2}]"#,
            &[
                (
                    Some(1),
                    "",
                    "must be an object with `sensor` and `value`, got a number",
                ),
                (Some(2), "sensor", "is required"),
            ],
            2,
        ),
        (
            "a nested array",
            r#"[[{"sensor":"a","value":1}]]"#,
            &[(Some(0), "", "got an array")],
            1,
        ),
        ("null row", r#"[null]"#, &[(Some(0), "", "got null")], 1),
        (
            "two problems in one row count one row",
            r#"[{"sensor":"a","value":1},{"sensor":5,"value":"x"}]"#,
            &[(Some(1), "sensor", "string"), (Some(1), "value", "number")],
            1,
        ),
        (
            "overflow in a batch",
            r#"[{"sensor":"a","value":1},{"sensor":"a","value":1E400}]"#,
            &[(Some(1), "value", "finite")],
            1,
        ),
    ];
    for (name, body, want, rows) in cases {
        assert_invalid(name, decode(body), want, rows);
    }
}

fn good_row(i: usize) -> String {
    format!(
        r#"{{"sensor":"CF-{}","ts":{},"value":{}}}"#,
        i % 3,
        NOW.0 - 5_000 * i as i64,
        -20.0 + (i % 10) as f64 / 10.0
    )
}

#[test]
fn a_big_batch_with_three_bad_rows_lists_exactly_those() {
    let bad = [17usize, 4242, 9999];
    let rows: Vec<String> = (0..10_000)
        .map(|i| match i {
            17 => r#"{"sensor":"CF-1","value":"hot"}"#.to_string(),
            4242 => r#"{"sensor":"CF-1","valeu":1,"value":1}"#.to_string(),
            9999 => format!(
                r#"{{"sensor":"CF-1","ts":{},"value":1}}"#,
                NOW.0 + 2 * DAY_MS
            ),
            _ => good_row(i),
        })
        .collect();
    let body = format!("[{}]", rows.join(",\n"));
    let Err(DecodeError::Invalid {
        errors,
        rows_with_errors,
    }) = decode(&body)
    else {
        panic!("expected Invalid");
    };
    assert_eq!(rows_with_errors, 3);
    let listed: Vec<Option<usize>> = errors.iter().map(|e| e.row).collect();
    assert_eq!(listed, bad.map(Some));
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["value", "valeu", "ts"]);
    assert_eq!(errors[0].path(), "[17].value");

    // The same batch without the bad rows is accepted whole, in order.
    let good: Vec<String> = (0..10_000)
        .filter(|i| !bad.contains(i))
        .map(good_row)
        .collect();
    let readings = decode(&format!("[{}]", good.join(","))).unwrap();
    assert_eq!(readings.len(), 9_997);
    assert_eq!(readings[0], reading("CF-0", "temperature", NOW.0, -20.0));
}

#[test]
fn listed_errors_are_capped_but_counted() {
    let rows: Vec<String> = (0..1_000)
        .map(|i| {
            if i % 4 == 0 {
                r#"{"value":1}"#.to_string()
            } else {
                good_row(i)
            }
        })
        .collect();
    let Err(DecodeError::Invalid {
        errors,
        rows_with_errors,
    }) = decode(&format!("[{}]", rows.join(",")))
    else {
        panic!("expected Invalid");
    };
    assert_eq!(rows_with_errors, 250);
    assert_eq!(errors.len(), MAX_LISTED_ERRORS);
    assert_eq!(
        errors.last().unwrap().row,
        Some(4 * (MAX_LISTED_ERRORS - 1))
    );
}

#[test]
fn row_limits_and_empty_batches() {
    let limits = DecodeLimits {
        max_rows: 3,
        ..DecodeLimits::default()
    };
    let body = |n: usize, bad_at: Option<usize>| {
        let rows: Vec<String> = (0..n)
            .map(|i| {
                if Some(i) == bad_at {
                    r#"{"x":1}"#.to_string()
                } else {
                    good_row(i)
                }
            })
            .collect();
        format!("[{}]", rows.join(","))
    };
    let run = |b: String| decode_readings(b.as_bytes(), NOW, &limits);
    assert_eq!(run(body(3, None)).map(|r| r.len()), Ok(3));
    assert_eq!(
        run(body(5, None)),
        Err(DecodeError::TooManyRows { rows: 5, max: 3 })
    );
    assert_eq!(
        run(body(5, Some(1))),
        Err(DecodeError::TooManyRows { rows: 5, max: 3 }),
        "413 wins over 422"
    );
    assert_eq!(
        run(body(5, Some(4))),
        Err(DecodeError::TooManyRows { rows: 5, max: 3 })
    );
    assert!(
        matches!(
            run(format!("{},", body(5, None))),
            Err(DecodeError::Malformed { .. })
        ),
        "400 wins over 413"
    );
    for empty in ["[]", " [ \n ] "] {
        assert_eq!(decode(empty), Err(DecodeError::Empty), "{empty:?}");
    }
}

#[test]
fn the_future_limit_follows_the_configuration() {
    let limits = DecodeLimits {
        max_future_ms: 90_000,
        ..DecodeLimits::default()
    };
    let at = |ts: i64| {
        decode_readings(
            format!(r#"{{"sensor":"a","ts":{ts},"value":1}}"#).as_bytes(),
            NOW,
            &limits,
        )
    };
    assert!(at(NOW.0 + 90_000).is_ok());
    let Err(DecodeError::Invalid { errors, .. }) = at(NOW.0 + 90_001) else {
        panic!()
    };
    assert_eq!(errors[0].message, "is more than 90 s in the future");
    // Far past and far future never overflow; both are outside what RFC 3339 can write.
    assert!(at(i64::MIN).is_err());
    assert!(at(i64::MAX).is_err());
}

#[test]
fn errors_render_for_people() {
    let e = RowError {
        row: Some(3),
        field: "value".into(),
        message: "must be a finite number".into(),
    };
    assert_eq!(e.to_string(), "[3].value: must be a finite number");
    let whole = RowError {
        row: Some(3),
        field: String::new(),
        message: "m".into(),
    };
    assert_eq!(whole.path(), "[3]");
    let single = RowError {
        row: None,
        field: "ts".into(),
        message: "m".into(),
    };
    assert_eq!(single.path(), "ts");
    let malformed = decode("{").unwrap_err();
    assert_eq!(
        malformed.to_string(),
        "malformed JSON at line 1, column 1: EOF while parsing an object"
    );
}

/// Readings of one sensor and metric without `ts` in one body are distinct readings: each
/// gets the next millisecond, so the store's (sensor, metric, ts) key folds none of them.
#[test]
fn readings_without_ts_in_one_body_get_successive_milliseconds() {
    let now = Timestamp(1_700_000_000_000);
    let body = br#"[{"sensor":"a","value":1},{"sensor":"a","value":2},
                    {"sensor":"a","metric":"rh","value":3},{"sensor":"b","value":4},
                    {"sensor":"a","value":5,"ts":1700000000000}]"#;
    let readings = decode_readings(body, now, &DecodeLimits::default()).unwrap();
    let times: Vec<(&str, &str, i64)> = readings
        .iter()
        .map(|r| (r.sensor.as_str(), r.metric.as_str(), r.ts.0 - now.0))
        .collect();
    assert_eq!(
        times,
        [
            ("a", "temperature", 0),
            ("a", "temperature", 1),
            ("a", "rh", 0),
            ("b", "temperature", 0),
            // An explicit `ts` is the client's: kept as sent (a resend folds, as it should).
            ("a", "temperature", 0),
        ]
    );
}
