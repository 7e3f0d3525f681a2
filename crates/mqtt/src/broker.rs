//! The subscriber on an external broker (`mqtt.broker`).
//!
//! QoS 1 with a persistent session (`clean_session = false`, a stable client id) and a
//! shared subscription `$share/{group}/vigia/#`, so several ingest processes split the
//! topic between them. Acks are manual: a PUBACK goes to the broker only after the
//! message's readings are durable on the bus (or the message was refused for good and
//! listed). While the bus is full nothing is acked and the batch is retried after the
//! bus's hint; the broker's in-flight window holds the rest back. A message unacked when
//! the process stops or dies is redelivered by the broker to the session (or, for a
//! shared subscription, to another member).
//!
//! Trust: the broker's ACLs decide who may publish on which topic. Vigía takes the tenant
//! from the topic only for the tenants in `mqtt.broker_tenants`; any other is refused and
//! listed under the default tenant.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use vigia_core::{ApiKeyId, Role, TenantId, Timestamp};
use vigia_services::Caller;

use crate::{backoff, Message, MqttIngest, NotDurable, Sender};

/// Most messages decoded and published together.
const MAX_BATCH: usize = 1_000;

/// Settings of the broker subscriber.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `mqtt://[user[:password]@]host[:port]` (port 1883 by default).
    pub url: String,
    pub client_id: String,
    /// The shared subscription's group (`$share/{group}/vigia/#`).
    pub share_group: String,
    pub keep_alive: Duration,
    /// Largest packet accepted from the broker.
    pub max_packet_bytes: usize,
}

/// Where a broker URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

/// Parses `mqtt://[user[:password]@]host[:port]`.
pub fn parse_broker_url(url: &str) -> Result<BrokerAddress, String> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("`{url}` must start with mqtt:// (TLS is not supported)"))?;
    let rest = rest.trim_end_matches('/');
    let (credentials, hostport) = match rest.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (Some((user.to_string(), password.to_string())), hostport)
        }
        None => (None, rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| format!("`{url}`: the port `{port}` is not a number"))?,
        ),
        None => (hostport, 1883),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("`{url}` names no host (mqtt://host:port)"));
    }
    Ok(BrokerAddress {
        host: host.to_string(),
        port,
        credentials,
    })
}

/// The default client id: stable for one process on one host and data dir, so the
/// broker keeps its session (and the messages waiting in it) across restarts.
pub fn default_client_id(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(dir.to_string_lossy().as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("vigia-{host}-{hex}")
}

/// The caller readings of a trusted tenant are published as through the broker.
pub fn broker_caller(tenant: TenantId) -> Caller {
    Caller {
        tenant,
        key_id: ApiKeyId(0),
        key_name: "mqtt-broker".into(),
        role: Role::Device,
    }
}

/// Starts the subscriber; it runs until `stop` turns true. Unacked messages then stay
/// with the broker.
pub fn spawn(
    config: BrokerConfig,
    ingest: Arc<MqttIngest>,
    tenants: HashMap<String, Caller>,
    fallback: TenantId,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let address = parse_broker_url(&config.url)?;
    let mut options = MqttOptions::new(config.client_id.clone(), address.host, address.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(config.keep_alive)
        .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes)
        // Room for every ack the processor may owe, so acking never waits on the event
        // loop while the event loop waits on the processor.
        .set_request_channel_capacity(2 * MAX_BATCH + 16);
    if let Some((user, password)) = address.credentials {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 2 * MAX_BATCH + 16);
    let filter = format!("$share/{}/vigia/#", config.share_group);
    let (tx, rx) = mpsc::channel::<(Publish, Timestamp)>(MAX_BATCH);
    let processor = tokio::spawn(process(
        ingest,
        client.clone(),
        rx,
        tenants,
        fallback,
        stop.clone(),
    ));
    let url = config.url.clone();
    let mut stop_loop = stop;
    Ok(tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let event = tokio::select! {
                _ = stop_loop.wait_for(|s| *s) => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    failures = 0;
                    info!(broker = %url, session_present = ack.session_present, "MQTT broker connected");
                    if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                        warn!(error = %e, "could not subscribe on the MQTT broker");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        warn!(filter = %filter, "the MQTT broker refused the subscription (ACLs?)");
                    } else {
                        // Tests wait for this line before publishing.
                        info!(filter = %filter, "MQTT broker subscribed");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if tx.send((publish, Timestamp::now())).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                    if failures == 1 || failures.is_multiple_of(50) {
                        warn!(broker = %url, error = %e, "MQTT broker connection failed; retrying");
                    }
                    tokio::select! {
                        _ = stop_loop.wait_for(|s| *s) => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        drop(tx);
        let _ = processor.await;
        let _ = client.disconnect().await;
        // Let the event loop send the DISCONNECT (and any last acks) before it is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
        info!("MQTT broker subscriber stopped");
    }))
}

async fn process(
    ingest: Arc<MqttIngest>,
    client: AsyncClient,
    mut rx: mpsc::Receiver<(Publish, Timestamp)>,
    tenants: HashMap<String, Caller>,
    fallback: TenantId,
    mut stop: watch::Receiver<bool>,
) {
    let sender = Sender::Broker {
        tenants: &tenants,
        fallback,
    };
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(publish) => batch.push(publish),
                Err(_) => break,
            }
        }
        let messages: Vec<Message> = batch
            .iter()
            .map(|(p, received)| Message {
                topic: p.topic.clone(),
                payload: p.payload.clone(),
                received: *received,
            })
            .collect();
        let now = Timestamp::now();
        let mut pending = ingest.prepare(&sender, &messages);
        loop {
            let wait = match ingest.commit(&mut pending, now).await {
                Ok(()) => break,
                Err(NotDurable::Full(hint)) => backoff(hint),
                Err(NotDurable::Unavailable(e)) => {
                    warn!(error = %e, "bus unavailable; MQTT messages stay unacked at the broker");
                    Duration::from_millis(500)
                }
            };
            tokio::select! {
                // Stopping: leave the batch unacked; the broker redelivers it.
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        for (publish, _) in &batch {
            if client.ack(publish).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let a = parse_broker_url("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.credentials),
            ("127.0.0.1", 1883, None)
        );
        let a = parse_broker_url("mqtt://broker.plant").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("broker.plant", 1883));
        let a = parse_broker_url("mqtt://vigia:s3:cret@broker:1884/").unwrap();
        assert_eq!(
            a.credentials,
            Some(("vigia".to_string(), "s3:cret".to_string()))
        );
        assert_eq!(a.port, 1884);
        for bad in [
            "mqtts://x",
            "http://x",
            "mqtt://",
            "mqtt://x:port",
            "mqtt://:1883",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_client_ids_are_stable_per_data_dir() {
        let a = default_client_id(Path::new("/var/lib/vigia"));
        assert_eq!(a, default_client_id(Path::new("/var/lib/vigia")));
        assert_ne!(a, default_client_id(Path::new("/var/lib/vigia-2")));
        assert!(a.starts_with("vigia-"), "{a}");
    }
}
