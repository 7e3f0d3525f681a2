//! The MQTT front end: devices publish readings on `vigia/{tenant}/{sensor}[/{metric}]`.
//!
//! Two ways in, one path to the bus ([`vigia_services::IngestService::publish`], durable
//! when it returns):
//! - [`broker`]: a subscriber on an external broker (Mosquitto…), QoS 1, persistent
//!   session, shared subscription `$share/{group}/vigia/#`, manual acks sent only after the
//!   readings are durable. The broker's ACLs are the boundary: the tenant comes from the
//!   topic, and only for the tenants this process was told to trust.
//! - [`listener`]: an embedded MQTT 3.1.1 listener whose PUBACK is written only after the
//!   readings are durable; devices sign in with their tenant's slug and a `device` key.
//!
//! Malformed messages (bad topic, bad payload, foreign tenant) are acknowledged so a bad
//! device cannot wedge its session, never stored, counted in
//! `vigia_mqtt_rejected_total{reason}` and listed in the [`RejectionLog`].

pub mod broker;
pub mod listener;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use vigia_bus::BusError;
use vigia_core::{Reading, TenantId, Timestamp};
use vigia_ingest::decode::mqtt::{decode_payload, parse_topic, MqttDecodeError};
use vigia_ingest::decode::DecodeLimits;
use vigia_services::{Caller, IngestError, IngestService, Rejection, RejectionLog};

/// Metric names.
pub mod metrics_names {
    /// Messages refused, by `reason`.
    pub const REJECTED: &str = "vigia_mqtt_rejected_total";
    /// Messages whose readings are durable, by `source` (`broker`, `listener`).
    pub const MESSAGES: &str = "vigia_mqtt_messages_total";
    /// Open connections of the embedded listener.
    pub const CONNECTIONS: &str = "vigia_mqtt_connections";
}

/// Who sent a batch of messages, which decides the tenants its topics may name.
pub enum Sender<'a> {
    /// A device signed in to the embedded listener: only its own tenant.
    Device { caller: &'a Caller, slug: &'a str },
    /// The external broker: the trusted tenants by slug; what names no trusted tenant is
    /// listed under `fallback` (the default tenant, whose operators run the broker).
    Broker {
        tenants: &'a HashMap<String, Caller>,
        fallback: TenantId,
    },
}

/// One message as the protocol delivered it.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// When it arrived: the readings' time when they carry none.
    pub received: Timestamp,
}

/// The readings of a batch still to be published, grouped per tenant.
pub struct Pending {
    groups: Vec<Group>,
}

struct Group {
    caller: Caller,
    readings: Vec<Reading>,
    /// Topics of the messages the readings came from (to list them if refused).
    topics: Vec<String>,
    /// Readings per message, in order, to split the group when one message is refused.
    sizes: Vec<usize>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Why a batch could not be made durable now; nothing of the unsettled part is stored.
#[derive(Debug)]
pub enum NotDurable {
    /// The bus is full: retry after the hint.
    Full(Duration),
    /// The bus is closing or failed.
    Unavailable(BusError),
}

/// Decodes messages, records rejections and publishes the good readings.
pub struct MqttIngest {
    ingest: Arc<IngestService>,
    rejections: Arc<RejectionLog>,
    limits: DecodeLimits,
    source: &'static str,
    /// The default time last given per topic (see `prepare`).
    stamps: Mutex<HashMap<String, Timestamp>>,
}

/// Topics whose last default time is remembered before old ones are dropped.
const MAX_STAMPED_TOPICS: usize = 10_000;

impl MqttIngest {
    pub fn new(
        ingest: Arc<IngestService>,
        rejections: Arc<RejectionLog>,
        source: &'static str,
    ) -> Self {
        let limits = ingest.limits().decode.clone();
        Self {
            ingest,
            rejections,
            limits,
            source,
            stamps: Mutex::new(HashMap::new()),
        }
    }

    /// Decodes every message: refused ones are recorded now (they will be acked), the
    /// rest wait in the returned [`Pending`] for [`MqttIngest::commit`].
    pub fn prepare(&self, sender: &Sender<'_>, messages: &[Message]) -> Pending {
        let mut groups: Vec<Group> = Vec::new();
        // A burst (a backlog the broker delivers after a restart) arrives within one
        // millisecond; bare values of one topic would then share their default time and
        // be stored as one reading. Each gets a later millisecond than the one before,
        // also across batches.
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if stamps.len() > MAX_STAMPED_TOPICS {
            // A topic last stamped before this batch arrived cannot collide any more.
            let oldest = messages.iter().map(|m| m.received).min();
            stamps.retain(|_, last| Some(*last) >= oldest);
        }
        let stamped: Vec<Timestamp> = messages
            .iter()
            .map(|message| {
                let stamp = match stamps.get(&message.topic) {
                    Some(last) => Timestamp(message.received.0.max(last.0 + 1)),
                    None => message.received,
                };
                stamps.insert(message.topic.clone(), stamp);
                stamp
            })
            .collect();
        drop(stamps);
        for (message, stamp) in messages.iter().zip(stamped) {
            match self.decode(sender, message, stamp) {
                Ok((caller, readings)) => {
                    let group = match groups.iter_mut().position(|g| g.caller == *caller) {
                        Some(i) => &mut groups[i],
                        None => {
                            groups.push(Group {
                                caller: caller.clone(),
                                readings: Vec::new(),
                                topics: Vec::new(),
                                sizes: Vec::new(),
                            });
                            groups.last_mut().expect("just pushed")
                        }
                    };
                    group.sizes.push(readings.len());
                    group.readings.extend(readings);
                    group.topics.push(message.topic.clone());
                }
                Err((tenant, reason, detail)) => {
                    self.reject(tenant, &message.topic, reason, detail, message.received)
                }
            }
        }
        Pending { groups }
    }

    /// Publishes what is pending, group by group. `Ok` when every group is settled
    /// (durable, or refused for good and recorded); on `Err` the unsettled groups stay
    /// pending and nothing of them is stored: call again (after the hint when full).
    pub async fn commit(&self, pending: &mut Pending, now: Timestamp) -> Result<(), NotDurable> {
        while let Some(group) = pending.groups.last() {
            let result = self
                .ingest
                .publish(&group.caller, group.readings.clone(), now)
                .await;
            match result {
                Ok(_) => {
                    let group = pending.groups.pop().expect("checked");
                    metrics::counter!(metrics_names::MESSAGES, "source" => self.source)
                        .increment(group.topics.len() as u64);
                }
                Err(IngestError::Bus(BusError::Full { retry_after, .. })) => {
                    return Err(NotDurable::Full(retry_after))
                }
                Err(IngestError::Bus(e)) => return Err(NotDurable::Unavailable(e)),
                Err(refused) => {
                    let group = pending.groups.pop().expect("checked");
                    if group.topics.len() > 1 {
                        // One message spoiled the group: find which by trying each alone.
                        pending.groups.extend(split(group));
                        continue;
                    }
                    let (reason, detail) = match &refused {
                        IngestError::Unprovisioned { rows, .. } => (
                            "unprovisioned",
                            format!(
                                "sensor `{}` is not provisioned and ingest.provisioning is `required`",
                                rows.first().map(|(_, s)| s.as_str()).unwrap_or("?")
                            ),
                        ),
                        IngestError::Service(e) => ("forbidden", e.to_string()),
                        other => ("refused", other.to_string()),
                    };
                    self.reject(group.caller.tenant, &group.topics[0], reason, detail, now);
                }
            }
        }
        Ok(())
    }

    fn decode<'s>(
        &self,
        sender: &'s Sender<'_>,
        message: &Message,
        received: Timestamp,
    ) -> Result<(&'s Caller, Vec<Reading>), (TenantId, &'static str, String)> {
        let home = match sender {
            Sender::Device { caller, .. } => caller.tenant,
            Sender::Broker { fallback, .. } => *fallback,
        };
        let topic = parse_topic(&message.topic).map_err(|e| decode_error(home, e))?;
        let caller = match sender {
            Sender::Device { caller, slug } if topic.tenant == *slug => *caller,
            Sender::Device { slug, .. } => {
                return Err((
                    home,
                    "foreign_tenant",
                    format!(
                        "this connection publishes for tenant `{slug}` only, not `{}`",
                        topic.tenant
                    ),
                ))
            }
            Sender::Broker { tenants, .. } => tenants.get(topic.tenant).ok_or_else(|| {
                (
                    home,
                    "foreign_tenant",
                    format!(
                        "tenant `{}` is not in mqtt.broker_tenants: through the external broker \
                         only those tenants are taken from the topic",
                        topic.tenant
                    ),
                )
            })?,
        };
        let readings = decode_payload(&topic, &message.payload, received, &self.limits)
            .map_err(|e| decode_error(caller.tenant, e))?;
        Ok((caller, readings))
    }

    fn reject(
        &self,
        tenant: TenantId,
        topic: &str,
        reason: &'static str,
        detail: String,
        now: Timestamp,
    ) {
        metrics::counter!(metrics_names::REJECTED, "reason" => reason).increment(1);
        tracing::debug!(topic, reason, %detail, "MQTT message rejected");
        self.rejections.record(
            tenant,
            Rejection {
                protocol: "mqtt".into(),
                target: topic.to_string(),
                reason: reason.into(),
                detail,
                at: now,
            },
        );
    }
}

fn decode_error(tenant: TenantId, e: MqttDecodeError) -> (TenantId, &'static str, String) {
    (tenant, e.reason(), e.to_string())
}

/// A group as one group per message.
fn split(group: Group) -> Vec<Group> {
    let mut readings = group.readings.into_iter();
    group
        .topics
        .into_iter()
        .zip(group.sizes)
        .map(|(topic, size)| Group {
            caller: group.caller.clone(),
            readings: readings.by_ref().take(size).collect(),
            topics: vec![topic],
            sizes: vec![size],
        })
        .collect()
}

/// How long to wait before retrying a full bus: the bus's hint, within sane bounds.
pub(crate) fn backoff(hint: Duration) -> Duration {
    hint.clamp(Duration::from_millis(10), Duration::from_secs(2))
}
