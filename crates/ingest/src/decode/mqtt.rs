//! The MQTT message decoder: a topic `vigia/{tenant}/{sensor}/{metric}` (metric optional,
//! `temperature` when absent) and a payload that is a JSON number, `{"value", "ts"?}` or
//! an array of those. `ts` is RFC 3339 or epoch milliseconds, as in the JSON API, and
//! defaults to the arrival time; values must be finite and event times not too far ahead
//! (the JSON API's checks, shared with it).
//!
//! The decoder knows nothing about who sent the message: the front end decides whether
//! the topic's tenant is one the sender may publish for.

use serde::de::Error as _;
use serde::Deserialize;
use vigia_core::sensor::validate_sensor_key;
use vigia_core::{Reading, Timestamp, DEFAULT_METRIC};

use super::{check_metric, check_ts, check_value, DecodeLimits};

/// The first level of every ingest topic.
pub const TOPIC_ROOT: &str = "vigia";

/// What a topic names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MqttTopic<'a> {
    /// The tenant's slug.
    pub tenant: &'a str,
    pub sensor: &'a str,
    pub metric: &'a str,
}

/// Why a message was refused; nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttDecodeError {
    /// The topic is not `vigia/{tenant}/{sensor}[/{metric}]` with valid parts.
    #[error("bad topic: {0}")]
    Topic(String),
    /// The payload is not a number, a reading object or an array of them, or holds a bad
    /// value.
    #[error("bad payload: {0}")]
    Payload(String),
}

impl MqttDecodeError {
    /// A short label for metrics (`vigia_mqtt_rejected_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            MqttDecodeError::Topic(_) => "bad_topic",
            MqttDecodeError::Payload(_) => "bad_payload",
        }
    }
}

/// Splits and checks a topic.
pub fn parse_topic(topic: &str) -> Result<MqttTopic<'_>, MqttDecodeError> {
    let bad = |why: String| Err(MqttDecodeError::Topic(why));
    let mut parts = topic.split('/');
    if parts.next() != Some(TOPIC_ROOT) {
        return bad(format!(
            "`{topic}` must start with `{TOPIC_ROOT}/` (vigia/{{tenant}}/{{sensor}}/{{metric}})"
        ));
    }
    let parts: Vec<&str> = parts.collect();
    let (tenant, sensor, metric) = match parts.as_slice() {
        [tenant, sensor] => (*tenant, *sensor, DEFAULT_METRIC),
        [tenant, sensor, metric] => (*tenant, *sensor, *metric),
        _ => {
            return bad(format!(
                "`{topic}` must have 3 or 4 levels: vigia/{{tenant}}/{{sensor}}[/{{metric}}]"
            ))
        }
    };
    if tenant.is_empty() {
        return bad("the tenant level is empty".into());
    }
    if let Err(why) = validate_sensor_key(sensor) {
        return bad(format!("sensor `{sensor}` {why}"));
    }
    if let Err(why) = check_metric(metric) {
        return bad(format!("metric `{metric}` {why}"));
    }
    Ok(MqttTopic {
        tenant,
        sensor,
        metric,
    })
}

/// One reading of a payload object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireValue {
    value: f64,
    #[serde(default)]
    ts: Option<Timestamp>,
}

/// Decodes a payload into readings of the topic's sensor and metric. `now` is the arrival
/// time: the default `ts` and the reference for the future limit.
pub fn decode_payload(
    topic: &MqttTopic<'_>,
    payload: &[u8],
    now: Timestamp,
    limits: &DecodeLimits,
) -> Result<Vec<Reading>, MqttDecodeError> {
    let bad = |why: String| MqttDecodeError::Payload(why);
    let payload = payload.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(payload);
    let first = payload.iter().copied().find(|b| !b.is_ascii_whitespace());
    let values: Vec<WireValue> = match first {
        None => return Err(bad("empty payload".into())),
        Some(b'[') => {
            let values: Vec<WireValue> =
                serde_json::from_slice(payload).map_err(|e| bad(json_error(e)))?;
            if values.is_empty() {
                return Err(bad("the array is empty".into()));
            }
            if values.len() > limits.max_rows {
                return Err(bad(format!(
                    "{} readings in one message; at most {} are accepted",
                    values.len(),
                    limits.max_rows
                )));
            }
            values
        }
        Some(b'{') => vec![serde_json::from_slice(payload).map_err(|e| bad(json_error(e)))?],
        Some(_) => {
            let value = serde_json::from_slice::<f64>(payload)
                .map_err(|e| match std::str::from_utf8(payload) {
                    // serde_json reads 1e999 as an error; say what is wrong with it.
                    Ok(text) if text.trim().parse::<f64>().is_ok() => {
                        serde_json::Error::custom("must be a finite number")
                    }
                    _ => e,
                })
                .map_err(|e| {
                    bad(format!(
                        "expected a number, {{\"value\": …, \"ts\"?: …}} or an array of them: {}",
                        json_error(e)
                    ))
                })?;
            vec![WireValue { value, ts: None }]
        }
    };
    let single = values.len() == 1 && first != Some(b'[');
    values
        .into_iter()
        .enumerate()
        .map(|(i, wire)| {
            let at = |field: &str| {
                if single {
                    field.to_string()
                } else {
                    format!("[{i}].{field}")
                }
            };
            check_value(wire.value).map_err(|why| bad(format!("{}: {why}", at("value"))))?;
            let ts = wire.ts.unwrap_or(now);
            check_ts(ts, now, limits).map_err(|why| bad(format!("{}: {why}", at("ts"))))?;
            Ok(Reading {
                sensor: topic.sensor.to_string(),
                metric: topic.metric.to_string(),
                ts,
                value: wire.value,
            })
        })
        .collect()
}

fn json_error(e: serde_json::Error) -> String {
    e.to_string()
}

/// Parses the topic and decodes the payload: the tenant slug and the readings.
pub fn decode_message<'t>(
    topic: &'t str,
    payload: &[u8],
    now: Timestamp,
    limits: &DecodeLimits,
) -> Result<(&'t str, Vec<Reading>), MqttDecodeError> {
    let parsed = parse_topic(topic)?;
    let readings = decode_payload(&parsed, payload, now, limits)?;
    Ok((parsed.tenant, readings))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T10:00:00Z, the arrival time in every test.
    const NOW: Timestamp = Timestamp(1_795_428_000_000);

    fn decode(topic: &str, payload: &str) -> Result<(String, Vec<Reading>), MqttDecodeError> {
        decode_message(topic, payload.as_bytes(), NOW, &DecodeLimits::default())
            .map(|(t, r)| (t.to_string(), r))
    }

    fn r(sensor: &str, metric: &str, ts: i64, value: f64) -> Reading {
        Reading {
            sensor: sensor.into(),
            metric: metric.into(),
            ts: Timestamp(ts),
            value,
        }
    }

    #[test]
    fn good_messages() {
        let t = NOW.0;
        let hour = 3_600_000;
        #[rustfmt::skip]
        let cases: Vec<(&str, &str, &str, Vec<Reading>)> = vec![
            ("a bare number, default metric", "vigia/acme/CF-1", "-19.5", vec![r("CF-1", "temperature", t, -19.5)]),
            ("a bare number with spaces and newline", "vigia/acme/CF-1/humidity", " 55\n", vec![r("CF-1", "humidity", t, 55.0)]),
            ("an integer", "vigia/acme/CF-1", "3", vec![r("CF-1", "temperature", t, 3.0)]),
            ("an object, RFC 3339", "vigia/acme/CF-1", r#"{"value":1.5,"ts":"2026-11-23T09:00:00Z"}"#, vec![r("CF-1", "temperature", t - hour, 1.5)]),
            ("an object, epoch ms", "vigia/acme/CF-1/door", r#"{"ts":1795424400000,"value":1}"#, vec![r("CF-1", "door", t - hour, 1.0)]),
            ("an object without ts", "vigia/acme/CF-1", r#"{"value":2}"#, vec![r("CF-1", "temperature", t, 2.0)]),
            ("an object with ts null", "vigia/acme/CF-1", r#"{"value":2,"ts":null}"#, vec![r("CF-1", "temperature", t, 2.0)]),
            ("an array", "vigia/acme/CF-1", r#"[{"value":1,"ts":1},{"value":2,"ts":2}]"#, vec![r("CF-1", "temperature", 1, 1.0), r("CF-1", "temperature", 2, 2.0)]),
            ("a BOM", "vigia/acme/CF-1", "\u{FEFF}7", vec![r("CF-1", "temperature", t, 7.0)]),
            ("unicode sensor and metric", "vigia/acme/Cámara 2/humedad relativa", "1", vec![r("Cámara 2", "humedad relativa", t, 1.0)]),
        ];
        for (what, topic, payload, want) in cases {
            let (tenant, got) = decode(topic, payload).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(tenant, "acme", "{what}");
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn bad_topics() {
        #[rustfmt::skip]
        let cases: Vec<(&str, &str)> = vec![
            ("other/acme/CF-1", "must start with `vigia/`"),
            ("vigia", "3 or 4 levels"),
            ("vigia/acme", "3 or 4 levels"),
            ("vigia/acme/CF-1/t/extra", "3 or 4 levels"),
            ("vigia//CF-1", "tenant level is empty"),
            ("vigia/acme/", "sensor `` must not be empty"),
            ("vigia/acme/CF-1/", "metric `` must be 1 to 64"),
            ("vigia/acme/CF\u{1}1", "control characters"),
            ("Vigia/acme/CF-1", "must start with"),
        ];
        for (topic, needle) in cases {
            let err = decode(topic, "1").unwrap_err();
            assert_eq!(err.reason(), "bad_topic", "{topic}");
            assert!(err.to_string().contains(needle), "{topic}: {err}");
        }
        let long = format!("vigia/acme/{}", "s".repeat(129));
        assert!(decode(&long, "1").unwrap_err().to_string().contains("128"));
        let long = format!("vigia/acme/s/{}", "m".repeat(65));
        assert!(decode(&long, "1")
            .unwrap_err()
            .to_string()
            .contains("1 to 64"));
    }

    #[test]
    fn bad_payloads() {
        let future = NOW.0 + 25 * 3_600_000;
        #[rustfmt::skip]
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty payload"),
            ("   ".into(), "empty payload"),
            ("warm".into(), "expected a number"),
            ("\"21.5\"".into(), "expected a number"),
            ("21.5 22".into(), "expected a number"),
            ("1e999".into(), "finite"),
            ("NaN".into(), "expected a number"),
            ("true".into(), "expected a number"),
            ("[]".into(), "array is empty"),
            ("{}".into(), "missing field `value`"),
            (r#"{"valeu":1}"#.into(), "unknown field `valeu`"),
            (r#"{"value":"1"}"#.into(), "invalid type"),
            (r#"{"value":1,"sensor":"x"}"#.into(), "unknown field `sensor`"),
            (r#"{"value":1,"ts":"yesterday"}"#.into(), "not an RFC 3339 timestamp"),
            (format!(r#"{{"value":1,"ts":{future}}}"#), "ts: is more than 24 h in the future"),
            (format!(r#"[{{"value":1}},{{"value":1,"ts":{future}}}]"#), "[1].ts: is more than 24 h"),
            (r#"[{"value":1},2]"#.into(), "invalid type"),
            (r#"{"value":1"#.into(), "EOF"),
            ("\u{FF}".into(), "expected a number"),
        ];
        for (payload, needle) in cases {
            let err = decode("vigia/acme/CF-1", &payload).unwrap_err();
            assert_eq!(err.reason(), "bad_payload", "{payload:?}");
            assert!(err.to_string().contains(needle), "{payload:?}: {err}");
        }
    }

    #[test]
    fn row_limit_applies_per_message() {
        let limits = DecodeLimits {
            max_rows: 2,
            ..DecodeLimits::default()
        };
        let topic = parse_topic("vigia/acme/CF-1").unwrap();
        let two = br#"[{"value":1,"ts":1},{"value":2,"ts":2}]"#;
        assert_eq!(decode_payload(&topic, two, NOW, &limits).unwrap().len(), 2);
        let three = br#"[{"value":1},{"value":2},{"value":3}]"#;
        let err = decode_payload(&topic, three, NOW, &limits).unwrap_err();
        assert!(
            err.to_string()
                .contains("3 readings in one message; at most 2"),
            "{err}"
        );
    }
}
