//! Domain events: what happened, published durably on the bus's events topic (fed from
//! the store's outbox) for every process that reacts to it (live feeds of other
//! processes, notifications, audit).
//!
//! Wire format: JSON, through private wire structs rather than the API types. JSON
//! because events are few (one per alert change, not per reading) so size does not
//! matter; it is self-describing, so a process of a newer version can add fields that an
//! older one ignores during a rolling upgrade of split processes (a positional format
//! such as postcard breaks on any field change); and a dead letter or a broker stream
//! stays readable with `redis-cli` or `nats`. Wire structs because the API's JSON of an
//! [`Alert`] hides the tenant and formats timestamps for people; the event must carry
//! everything, exactly (timestamps as epoch milliseconds).

use serde::{Deserialize, Serialize};

use crate::{
    Alert, AlertChange, AlertDetails, AlertId, AlertState, RuleKind, SensorId, Severity, TenantId,
    Timestamp,
};

/// Something that happened in the domain, published on the bus's events topic.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    /// An alert opened, was acknowledged or resolved.
    AlertChanged {
        /// The tenant the alert belongs to (the same as `alert.tenant`; the wire carries
        /// it once).
        tenant: TenantId,
        /// What happened to it.
        change: AlertChange,
        /// The alert after the change.
        alert: Alert,
    },
}

/// The version written into every event; decoding refuses others.
const VERSION: u32 = 1;

impl DomainEvent {
    /// The tenant the event belongs to.
    pub fn tenant(&self) -> TenantId {
        match self {
            DomainEvent::AlertChanged { tenant, .. } => *tenant,
        }
    }

    /// The JSON wire encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            DomainEvent::AlertChanged {
                tenant,
                change,
                alert,
            } => Wire {
                v: VERSION,
                event: WireEvent::AlertChanged {
                    tenant: *tenant,
                    change: *change,
                    alert: WireAlert::from(alert),
                },
            },
        };
        // Plain structs with string keys and finite numbers (readings are validated
        // finite before an alert can hold one): serde_json cannot fail on them.
        serde_json::to_vec(&wire).expect("a domain event always serialises to JSON")
    }

    /// Inverse of [`DomainEvent::encode`]; says what is wrong with bytes that are not an
    /// event of this version.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if wire.v != VERSION {
            return Err(format!(
                "domain event version {} (this build reads {VERSION})",
                wire.v
            ));
        }
        Ok(match wire.event {
            WireEvent::AlertChanged {
                tenant,
                change,
                alert,
            } => DomainEvent::AlertChanged {
                tenant,
                change,
                alert: alert.into_alert(tenant),
            },
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u32,
    #[serde(flatten)]
    event: WireEvent,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    AlertChanged {
        tenant: TenantId,
        change: AlertChange,
        alert: WireAlert,
    },
}

/// Every field of an [`Alert`] but its tenant (carried by the event), times in epoch
/// milliseconds. The fan-out's live alert events carry the same record.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireAlert {
    id: AlertId,
    sensor_id: SensorId,
    sensor: String,
    rule: String,
    kind: RuleKind,
    severity: Severity,
    state: AlertState,
    metric: String,
    value: f64,
    message: String,
    opened_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acked_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved_by: Option<String>,
    /// Boxed: most alerts have none, and the wire enums stay small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<Box<AlertDetails>>,
}

impl From<&Alert> for WireAlert {
    /// Leaves the tenant out: the event carries it, and the store builds the event from
    /// the alert, so they agree.
    fn from(alert: &Alert) -> Self {
        // Destructured in full: a field added to `Alert` fails to compile here until
        // someone decides how it travels.
        let Alert {
            id,
            tenant: _,
            sensor_id,
            sensor,
            rule,
            kind,
            severity,
            state,
            metric,
            value,
            message,
            opened_at,
            acked_at,
            acked_by,
            resolved_at,
            resolved_by,
            details,
        } = alert;
        WireAlert {
            id: *id,
            sensor_id: *sensor_id,
            sensor: sensor.clone(),
            rule: rule.clone(),
            kind: *kind,
            severity: *severity,
            state: *state,
            metric: metric.clone(),
            value: *value,
            message: message.clone(),
            opened_ms: opened_at.0,
            acked_ms: acked_at.map(|t| t.0),
            acked_by: acked_by.clone(),
            resolved_ms: resolved_at.map(|t| t.0),
            resolved_by: resolved_by.clone(),
            details: details.clone().map(Box::new),
        }
    }
}

impl WireAlert {
    pub(crate) fn into_alert(self, tenant: TenantId) -> Alert {
        Alert {
            id: self.id,
            tenant,
            sensor_id: self.sensor_id,
            sensor: self.sensor,
            rule: self.rule,
            kind: self.kind,
            severity: self.severity,
            state: self.state,
            metric: self.metric,
            value: self.value,
            message: self.message,
            opened_at: Timestamp(self.opened_ms),
            acked_at: self.acked_ms.map(Timestamp),
            acked_by: self.acked_by,
            resolved_at: self.resolved_ms.map(Timestamp),
            resolved_by: self.resolved_by,
            details: self.details.map(|d| *d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(tenant: i64, acked: bool) -> Alert {
        Alert {
            id: AlertId(41),
            tenant: TenantId(tenant),
            sensor_id: SensorId(9),
            sensor: "cámara-ñ".into(),
            rule: "threshold-critical".into(),
            kind: RuleKind::Threshold,
            severity: Severity::Critical,
            state: if acked {
                AlertState::Acked
            } else {
                AlertState::Open
            },
            metric: "temperature".into(),
            value: -12.125,
            message: "above -18 \"°C\"".into(),
            opened_at: Timestamp(-5),
            acked_at: acked.then_some(Timestamp(i64::MAX)),
            acked_by: acked.then(|| "ops key".to_string()),
            resolved_at: None,
            resolved_by: None,
            details: acked.then_some(AlertDetails::Offline(crate::OfflineDetails {
                silent_ms: 90_000,
                limit_ms: 65_000,
                last_seen: Timestamp(-7),
            })),
        }
    }

    #[test]
    fn events_round_trip_exactly() {
        for (change, acked) in [(AlertChange::Opened, false), (AlertChange::Acked, true)] {
            let event = DomainEvent::AlertChanged {
                tenant: TenantId(3),
                change,
                alert: alert(3, acked),
            };
            assert_eq!(event.tenant(), TenantId(3));
            assert_eq!(DomainEvent::decode(&event.encode()), Ok(event));
        }
    }

    #[test]
    fn the_wire_format_is_versioned_json_with_the_tenant() {
        let event = DomainEvent::AlertChanged {
            tenant: TenantId(3),
            change: AlertChange::Resolved,
            alert: alert(3, false),
        };
        let json: serde_json::Value = serde_json::from_slice(&event.encode()).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["type"], "alert_changed");
        assert_eq!(json["tenant"], 3);
        assert_eq!(json["change"], "resolved");
        assert_eq!(json["alert"]["opened_ms"], -5);
        assert!(json["alert"].get("acked_ms").is_none());
    }

    #[test]
    fn bad_bytes_say_what_is_wrong() {
        let good = String::from_utf8(
            DomainEvent::AlertChanged {
                tenant: TenantId(1),
                change: AlertChange::Opened,
                alert: alert(1, false),
            }
            .encode(),
        )
        .unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "EOF"),
            (vec![0xff, 0x00], "expected value"),
            (b"{\"v\":1,\"type\":\"alarm\"}".to_vec(), "unknown variant"),
            (good.replace("\"v\":1", "\"v\":2").into_bytes(), "version 2"),
            (good.replace("\"tenant\":1,", "").into_bytes(), "tenant"),
            (
                good.replace("\"opened\"", "\"exploded\"").into_bytes(),
                "variant",
            ),
        ];
        for (bytes, expected) in cases {
            match DomainEvent::decode(&bytes) {
                Err(why) => assert!(why.contains(expected), "{expected}: {why}"),
                Ok(event) => panic!("{expected}: decoded {event:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_from_a_newer_version_are_ignored() {
        let event = DomainEvent::AlertChanged {
            tenant: TenantId(2),
            change: AlertChange::Opened,
            alert: alert(2, false),
        };
        let mut json: serde_json::Value = serde_json::from_slice(&event.encode()).unwrap();
        json["alert"]["escalation"] = serde_json::json!({"level": 2});
        json["trace"] = serde_json::json!("abc");
        let bytes = serde_json::to_vec(&json).unwrap();
        assert_eq!(DomainEvent::decode(&bytes), Ok(event));
    }
}
