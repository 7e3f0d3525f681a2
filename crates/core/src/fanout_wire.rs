//! The fan-out's wire format: how a [`LiveEvent`] or a [`Control`] message travels
//! between processes (Redis pub/sub, NATS subjects), inside an envelope that says which
//! process sent it.
//!
//! # Format
//!
//! One message is one JSON object, the envelope, with short keys because live readings
//! are the busiest traffic between processes:
//!
//! ```json
//! {"v":1,"o":"9f3c…","live":{"type":"readings","tenant":1,"readings":[["CF-1","temperature",1700000000000,-18.5]]}}
//! {"v":1,"o":"9f3c…","live":{"type":"alert","tenant":1,"change":"opened","alert":{…}}}
//! {"v":1,"o":"9f3c…","control":{"type":"sensor_changed","sensor":{…}}}
//! {"v":1,"o":"9f3c…","control":{"type":"excursion_forgotten","sensor":7,"rule":"high"}}
//! {"v":1,"o":"9f3c…","control":{"type":"key_revoked","hash":"<64 hex digits>"}}
//! ```
//!
//! - `v`: the format version, [`FANOUT_WIRE_VERSION`]; decoding refuses any other, so a
//!   process of an incompatible version counts the message as bad instead of misreading it.
//! - `o`: the sending process's origin id (16 hex digits): a process skips its own
//!   messages when the broker echoes them back, having applied them locally already.
//! - exactly one of `live` or `control`, tagged by `type`.
//! - readings are `[sensor, metric, ts_ms, value]` arrays (a third of the size of objects
//!   with keys); an alert is the same record the bus's domain events carry (every field,
//!   times in epoch milliseconds); a sensor carries its tenant and every field, with its
//!   rules as the API writes them; a key hash is lowercase hex.
//!
//! JSON rather than a positional binary format for the reasons the domain events give
//! ([`crate::domain_event`]): fields a newer version adds are ignored by an older one
//! during a rolling upgrade of split processes, and a message seen with `redis-cli
//! SUBSCRIBE` or `nats sub` is readable. The API types are not serialised directly: their
//! JSON hides the tenant and formats times for people, while the wire must carry
//! everything exactly. Unknown fields are ignored except inside a sensor's rules, which
//! are checked as strictly as the API checks them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain_event::WireAlert;
use crate::{Control, LiveEvent, Reading, Rule, Sensor, SensorId, SensorKind, TenantId, Timestamp};

/// The version written into every envelope; decoding refuses others.
pub const FANOUT_WIRE_VERSION: u32 = 1;

/// What one fan-out message carries.
#[derive(Debug, Clone, PartialEq)]
pub enum FanoutMessage {
    /// A live event, for the live subscribers of every process.
    Live(LiveEvent),
    /// A control message, for the handlers of every process.
    Control(Control),
}

/// A fan-out message and the process it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutEnvelope {
    /// The sending process's (fan-out handle's) id.
    pub origin: u64,
    /// What it sent.
    pub message: FanoutMessage,
}

impl FanoutEnvelope {
    /// The JSON wire encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let (live, control) = match &self.message {
            FanoutMessage::Live(event) => (Some(WireLive::from(event)), None),
            FanoutMessage::Control(message) => (None, Some(WireControl::from(message))),
        };
        let wire = WireEnvelope {
            v: FANOUT_WIRE_VERSION,
            o: format!("{:016x}", self.origin),
            live,
            control,
        };
        // Plain structs with string keys; the only numbers that could fail are non-finite
        // floats, which serde_json writes as null (and decoding then refuses).
        serde_json::to_vec(&wire).expect("a fan-out message always serialises to JSON")
    }

    /// Inverse of [`FanoutEnvelope::encode`]; says what is wrong with bytes that are not
    /// a fan-out message of this version.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let wire: WireEnvelope = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if wire.v != FANOUT_WIRE_VERSION {
            return Err(format!(
                "fan-out message version {} (this build reads {FANOUT_WIRE_VERSION})",
                wire.v
            ));
        }
        let origin = u64::from_str_radix(&wire.o, 16)
            .ok()
            .filter(|_| wire.o.len() == 16)
            .ok_or_else(|| format!("origin `{}` is not 16 hex digits", wire.o))?;
        let message = match (wire.live, wire.control) {
            (Some(live), None) => FanoutMessage::Live(live.try_into()?),
            (None, Some(control)) => FanoutMessage::Control(control.try_into()?),
            (Some(_), Some(_)) => return Err("both `live` and `control`".into()),
            (None, None) => return Err("neither `live` nor `control`".into()),
        };
        Ok(Self { origin, message })
    }
}

#[derive(Serialize, Deserialize)]
struct WireEnvelope {
    v: u32,
    o: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    live: Option<WireLive>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    control: Option<WireControl>,
}

/// `[sensor, metric, ts_ms, value]`.
type WireReading = (String, String, i64, f64);

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireLive {
    Readings {
        tenant: TenantId,
        readings: Vec<WireReading>,
    },
    Alert {
        tenant: TenantId,
        change: crate::AlertChange,
        /// Boxed: an alert is far larger than a readings frame's header.
        alert: Box<WireAlert>,
    },
}

impl From<&LiveEvent> for WireLive {
    fn from(event: &LiveEvent) -> Self {
        match event {
            LiveEvent::Readings { tenant, readings } => WireLive::Readings {
                tenant: *tenant,
                readings: readings
                    .iter()
                    .map(|r| (r.sensor.clone(), r.metric.clone(), r.ts.0, r.value))
                    .collect(),
            },
            LiveEvent::Alert {
                tenant,
                change,
                alert,
            } => WireLive::Alert {
                tenant: *tenant,
                change: *change,
                alert: Box::new(WireAlert::from(alert.as_ref())),
            },
        }
    }
}

impl TryFrom<WireLive> for LiveEvent {
    type Error = String;

    fn try_from(wire: WireLive) -> Result<Self, String> {
        Ok(match wire {
            WireLive::Readings { tenant, readings } => LiveEvent::Readings {
                tenant,
                readings: Arc::new(
                    readings
                        .into_iter()
                        .map(|(sensor, metric, ts, value)| Reading {
                            sensor,
                            metric,
                            ts: Timestamp(ts),
                            value,
                        })
                        .collect(),
                ),
            },
            WireLive::Alert {
                tenant,
                change,
                alert,
            } => LiveEvent::Alert {
                tenant,
                change,
                alert: Box::new((*alert).into_alert(tenant)),
            },
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireControl {
    SensorChanged { sensor: WireSensor },
    ExcursionForgotten { sensor: SensorId, rule: String },
    KeyRevoked { hash: String },
}

impl From<&Control> for WireControl {
    fn from(message: &Control) -> Self {
        match message {
            Control::SensorChanged(sensor) => WireControl::SensorChanged {
                sensor: WireSensor::from(sensor.as_ref()),
            },
            Control::ExcursionForgotten { sensor, rule } => WireControl::ExcursionForgotten {
                sensor: *sensor,
                rule: rule.clone(),
            },
            Control::KeyRevoked { hash } => WireControl::KeyRevoked {
                hash: hash.iter().map(|b| format!("{b:02x}")).collect(),
            },
        }
    }
}

impl TryFrom<WireControl> for Control {
    type Error = String;

    fn try_from(wire: WireControl) -> Result<Self, String> {
        Ok(match wire {
            WireControl::SensorChanged { sensor } => {
                Control::SensorChanged(Arc::new(sensor.into_sensor()))
            }
            WireControl::ExcursionForgotten { sensor, rule } => {
                Control::ExcursionForgotten { sensor, rule }
            }
            WireControl::KeyRevoked { hash } => Control::KeyRevoked {
                hash: parse_hash(&hash)?,
            },
        })
    }
}

fn parse_hash(hex: &str) -> Result<[u8; 32], String> {
    let bad = || format!("key hash `{hex}` is not 64 hex digits");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(hash)
}

/// Every field of a [`Sensor`], its tenant included, times in epoch milliseconds.
#[derive(Serialize, Deserialize)]
struct WireSensor {
    id: SensorId,
    tenant: TenantId,
    key: String,
    name: String,
    kind: SensorKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    rules: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stock: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    product: Option<String>,
    created_ms: i64,
}

impl From<&Sensor> for WireSensor {
    fn from(sensor: &Sensor) -> Self {
        // Destructured in full: a field added to `Sensor` fails to compile here until
        // someone decides how it travels.
        let Sensor {
            id,
            tenant,
            key,
            name,
            kind,
            unit,
            rules,
            stock,
            product,
            created_at,
        } = sensor;
        WireSensor {
            id: *id,
            tenant: *tenant,
            key: key.clone(),
            name: name.clone(),
            kind: *kind,
            unit: unit.clone(),
            rules: rules.clone(),
            stock: *stock,
            product: product.clone(),
            created_ms: created_at.0,
        }
    }
}

impl WireSensor {
    fn into_sensor(self) -> Sensor {
        Sensor {
            id: self.id,
            tenant: self.tenant,
            key: self.key,
            name: self.name,
            kind: self.kind,
            unit: self.unit,
            rules: self.rules,
            stock: self.stock,
            product: self.product,
            created_at: Timestamp(self.created_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Alert, AlertChange, AlertId, AlertState, RateDirection, RuleKind, Severity};

    fn sensor() -> Sensor {
        Sensor {
            id: SensorId(7),
            tenant: TenantId(3),
            key: "cámara-ñ-1".into(),
            name: "Cámara \"norte\"".into(),
            kind: SensorKind::Freezer,
            unit: Some("°C".into()),
            rules: vec![
                Rule::threshold(Severity::Critical, None, Some(-18.0)),
                Rule::rate(Severity::Warning, 2.5, RateDirection::Rise),
            ],
            stock: Some(1250.5),
            product: None,
            created_at: Timestamp(-1),
        }
    }

    fn alert() -> Alert {
        Alert {
            id: AlertId(41),
            tenant: TenantId(3),
            sensor_id: SensorId(7),
            sensor: "CF-1".into(),
            rule: "threshold-critical".into(),
            kind: RuleKind::Threshold,
            severity: Severity::Critical,
            state: AlertState::Resolved,
            metric: "temperature".into(),
            value: -12.125,
            message: "above -18 °C".into(),
            opened_at: Timestamp(1_700_000_000_000),
            acked_at: Some(Timestamp(1_700_000_000_500)),
            acked_by: Some("ops".into()),
            resolved_at: Some(Timestamp(i64::MAX)),
            resolved_by: Some("auto".into()),
            details: Some(crate::AlertDetails::Duration(crate::DurationDetails {
                out_of_range_ms: 7_200_000,
                limit_ms: 7_200_000,
                window: "24h".into(),
                batch: Some("L-7".into()),
            })),
        }
    }

    fn every_message() -> Vec<FanoutMessage> {
        vec![
            FanoutMessage::Live(LiveEvent::Readings {
                tenant: TenantId(2),
                readings: Arc::new(vec![
                    Reading {
                        sensor: "CF-1".into(),
                        metric: "temperature".into(),
                        ts: Timestamp(1_700_000_000_123),
                        value: -18.5,
                    },
                    Reading {
                        sensor: "cámara-ñ".into(),
                        metric: "humidity".into(),
                        ts: Timestamp(i64::MIN),
                        value: f64::MAX,
                    },
                ]),
            }),
            FanoutMessage::Live(LiveEvent::Readings {
                tenant: TenantId(2),
                readings: Arc::new(Vec::new()),
            }),
            FanoutMessage::Live(LiveEvent::Alert {
                tenant: TenantId(3),
                change: AlertChange::Resolved,
                alert: Box::new(alert()),
            }),
            FanoutMessage::Control(Control::SensorChanged(Arc::new(sensor()))),
            FanoutMessage::Control(Control::ExcursionForgotten {
                sensor: SensorId(9),
                rule: "rate-warning".into(),
            }),
            FanoutMessage::Control(Control::KeyRevoked {
                hash: std::array::from_fn(|i| (i * 37) as u8),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_exactly() {
        for (i, message) in every_message().into_iter().enumerate() {
            let envelope = FanoutEnvelope {
                origin: u64::MAX - i as u64,
                message,
            };
            let decoded = FanoutEnvelope::decode(&envelope.encode())
                .unwrap_or_else(|e| panic!("{envelope:?}: {e}"));
            assert_eq!(decoded, envelope);
        }
    }

    #[test]
    fn the_envelope_is_versioned_compact_json() {
        let readings = FanoutEnvelope {
            origin: 0xabc,
            message: every_message().remove(0),
        };
        let json: serde_json::Value = serde_json::from_slice(&readings.encode()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["o"], "0000000000000abc");
        assert_eq!(json["live"]["type"], "readings");
        assert_eq!(json["live"]["tenant"], 2);
        assert_eq!(
            json["live"]["readings"][0],
            serde_json::json!(["CF-1", "temperature", 1_700_000_000_123_i64, -18.5])
        );
        assert!(json.get("control").is_none());

        let revoked = FanoutEnvelope {
            origin: 1,
            message: FanoutMessage::Control(Control::KeyRevoked { hash: [0xab; 32] }),
        };
        let json: serde_json::Value = serde_json::from_slice(&revoked.encode()).unwrap();
        assert_eq!(json["control"]["type"], "key_revoked");
        assert_eq!(json["control"]["hash"], "ab".repeat(32));

        let sensor = FanoutEnvelope {
            origin: 1,
            message: FanoutMessage::Control(Control::SensorChanged(Arc::new(sensor()))),
        };
        let json: serde_json::Value = serde_json::from_slice(&sensor.encode()).unwrap();
        assert_eq!(json["control"]["sensor"]["tenant"], 3);
        assert_eq!(json["control"]["sensor"]["created_ms"], -1);
        assert_eq!(json["control"]["sensor"]["rules"][1]["kind"], "rate");
    }

    #[test]
    fn bad_bytes_say_what_is_wrong() {
        let good = String::from_utf8(
            FanoutEnvelope {
                origin: 5,
                message: FanoutMessage::Control(Control::ExcursionForgotten {
                    sensor: SensorId(1),
                    rule: "high".into(),
                }),
            }
            .encode(),
        )
        .unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "EOF"),
            (vec![0xff, 0x00], "expected value"),
            (b"hello".to_vec(), "expected"),
            (good.replace("\"v\":1", "\"v\":2").into_bytes(), "version 2"),
            (
                good.replace("0000000000000005", "5").into_bytes(),
                "16 hex digits",
            ),
            (
                good.replace("excursion_forgotten", "reboot").into_bytes(),
                "unknown variant",
            ),
            (
                br#"{"v":1,"o":"0000000000000001"}"#.to_vec(),
                "neither `live` nor `control`",
            ),
            (
                br#"{"v":1,"o":"0000000000000001","control":{"type":"key_revoked","hash":"zz"}}"#
                    .to_vec(),
                "64 hex digits",
            ),
            (
                br#"{"v":1,"o":"0000000000000001","live":{"type":"readings","tenant":1,"readings":[["a","b",1,null]]}}"#
                    .to_vec(),
                "invalid type",
            ),
        ];
        for (bytes, expected) in cases {
            match FanoutEnvelope::decode(&bytes) {
                Err(why) => assert!(why.contains(expected), "{expected}: {why}"),
                Ok(envelope) => panic!("{expected}: decoded {envelope:?}"),
            }
        }
        let mut both: serde_json::Value = serde_json::from_str(&good).unwrap();
        both["live"] = serde_json::json!({"type": "readings", "tenant": 1, "readings": []});
        let why = FanoutEnvelope::decode(&serde_json::to_vec(&both).unwrap()).unwrap_err();
        assert!(why.contains("both"), "{why}");
    }

    #[test]
    fn unknown_fields_from_a_newer_version_are_ignored() {
        let envelope = FanoutEnvelope {
            origin: 77,
            message: FanoutMessage::Live(LiveEvent::Alert {
                tenant: TenantId(3),
                change: AlertChange::Opened,
                alert: Box::new(alert()),
            }),
        };
        let mut json: serde_json::Value = serde_json::from_slice(&envelope.encode()).unwrap();
        json["trace"] = serde_json::json!("abc");
        json["live"]["priority"] = serde_json::json!(1);
        json["live"]["alert"]["escalation"] = serde_json::json!({"level": 2});
        let decoded = FanoutEnvelope::decode(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(decoded, envelope);
    }
}
