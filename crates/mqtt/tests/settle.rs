//! `MqttIngest` against the real embedded bus: what a batch of messages becomes on the
//! bus, what is refused and listed, and what waits while the bus is full.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use vigia_bus::{Bus, Capacity, OpenContext, Topic};
use vigia_core::{ApiKeyId, Reading, Role, Sensor, SensorId, SensorKind, TenantId, Timestamp};
use vigia_ingest::decode::DecodeLimits;
use vigia_ingest::{Provisioning, SensorDirectory};
use vigia_mqtt::broker::broker_caller;
use vigia_mqtt::{Message, MqttIngest, NotDurable, Sender};
use vigia_services::{Caller, IngestLimits, IngestService, RejectionLog};

const NOW: Timestamp = Timestamp(1_795_428_000_000);

struct Kit {
    bus: Arc<dyn Bus>,
    mqtt: MqttIngest,
    rejections: Arc<RejectionLog>,
    _dir: tempfile::TempDir,
}

async fn kit(provisioning: Provisioning, capacity: u64, directory: SensorDirectory) -> Kit {
    let dir = tempfile::tempdir().unwrap();
    let bus = vigia_bus::open(
        "memory",
        &OpenContext {
            capacity: Capacity::default().with(Topic::READINGS, capacity),
            ..OpenContext::new(dir.path())
        },
    )
    .await
    .unwrap();
    let ingest = Arc::new(IngestService::new(
        bus.clone(),
        Arc::new(directory),
        provisioning,
        IngestLimits {
            max_body_bytes: 1 << 20,
            decode: DecodeLimits::default(),
        },
    ));
    let rejections = Arc::new(RejectionLog::new());
    Kit {
        bus,
        mqtt: MqttIngest::new(ingest, rejections.clone(), "test"),
        rejections,
        _dir: dir,
    }
}

fn message(topic: &str, payload: &str, received: i64) -> Message {
    Message {
        topic: topic.into(),
        payload: Bytes::from(payload.to_string()),
        received: Timestamp(received),
    }
}

fn device(tenant: i64) -> Caller {
    Caller {
        tenant: TenantId(tenant),
        key_id: ApiKeyId(7),
        key_name: "dev".into(),
        role: Role::Device,
    }
}

/// Every batch on the bus, acked, as (tenant, readings).
async fn drain(bus: &dyn Bus) -> Vec<(TenantId, Vec<Reading>)> {
    let mut out = Vec::new();
    while bus.lag(Topic::READINGS).await.unwrap() > 0 {
        for received in vigia_bus::readings::receive(bus, 10_000).await.unwrap() {
            out.push((received.value.tenant, received.value.readings.clone()));
            bus.ack(vec![received.token]).await.unwrap();
        }
    }
    out
}

#[tokio::test]
async fn a_burst_of_bare_values_stays_apart_and_bad_messages_are_listed() {
    let kit = kit(Provisioning::Auto, 1_000_000, SensorDirectory::new()).await;
    let caller = device(1);
    let sender = Sender::Device {
        caller: &caller,
        slug: "acme",
    };
    // A backlog delivered within one millisecond.
    let messages = vec![
        message("vigia/acme/CF-1", "1", NOW.0),
        message("vigia/acme/CF-1", "warm", NOW.0),
        message("vigia/acme/CF-1", "2", NOW.0),
        message("vigia/other/CF-1", "9", NOW.0),
        message("vigia/acme/CF-1", "3", NOW.0),
        message("vigia/acme/CF-2", r#"{"value":5,"ts":1000}"#, NOW.0),
    ];
    let mut pending = kit.mqtt.prepare(&sender, &messages);
    kit.mqtt.commit(&mut pending, NOW).await.unwrap();
    assert!(pending.is_empty());
    let batches = drain(&*kit.bus).await;
    assert_eq!(
        batches.len(),
        1,
        "one bus publish for the batch: {batches:?}"
    );
    let (tenant, readings) = &batches[0];
    assert_eq!(*tenant, TenantId(1));
    let cf1: Vec<(i64, f64)> = readings
        .iter()
        .filter(|r| r.sensor == "CF-1")
        .map(|r| (r.ts.0, r.value))
        .collect();
    // Distinct, increasing times in arrival order (the bad message on the same topic
    // took one too; the other tenant's topic is another series).
    assert_eq!(cf1, vec![(NOW.0, 1.0), (NOW.0 + 2, 2.0), (NOW.0 + 3, 3.0)]);
    assert!(readings
        .iter()
        .any(|r| r.sensor == "CF-2" && r.ts.0 == 1000));

    let listed = kit.rejections.of_tenant(TenantId(1));
    let reasons: Vec<(&str, &str)> = listed
        .iter()
        .map(|r| (r.target.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("vigia/other/CF-1", "foreign_tenant"),
            ("vigia/acme/CF-1", "bad_payload")
        ]
    );
    assert!(
        listed[0].detail.contains("`acme` only"),
        "{}",
        listed[0].detail
    );
}

#[tokio::test]
async fn broker_messages_group_per_trusted_tenant_and_list_the_rest_under_the_fallback() {
    let kit = kit(Provisioning::Auto, 1_000_000, SensorDirectory::new()).await;
    let tenants: HashMap<String, Caller> = [
        ("acme".to_string(), broker_caller(TenantId(1))),
        ("globex".to_string(), broker_caller(TenantId(2))),
    ]
    .into();
    let sender = Sender::Broker {
        tenants: &tenants,
        fallback: TenantId(1),
    };
    let messages = vec![
        message("vigia/acme/A", "1", NOW.0),
        message("vigia/globex/G", "2", NOW.0),
        message("vigia/initech/I", "3", NOW.0),
        message("vigia/acme", "4", NOW.0),
    ];
    let mut pending = kit.mqtt.prepare(&sender, &messages);
    kit.mqtt.commit(&mut pending, NOW).await.unwrap();
    let mut batches = drain(&*kit.bus).await;
    batches.sort_by_key(|b| b.0);
    let got: Vec<(TenantId, Vec<String>)> = batches
        .into_iter()
        .map(|(t, r)| (t, r.into_iter().map(|r| r.sensor).collect()))
        .collect();
    assert_eq!(
        got,
        vec![
            (TenantId(1), vec!["A".to_string()]),
            (TenantId(2), vec!["G".to_string()])
        ]
    );
    let reasons: Vec<String> = kit
        .rejections
        .of_tenant(TenantId(1))
        .iter()
        .map(|r| r.reason.clone())
        .collect();
    assert_eq!(reasons, vec!["bad_topic", "foreign_tenant"]);
    assert!(kit.rejections.of_tenant(TenantId(2)).is_empty());
}

#[tokio::test]
async fn a_full_bus_keeps_the_batch_pending_and_stores_nothing_until_there_is_room() {
    let kit = kit(Provisioning::Auto, 2, SensorDirectory::new()).await;
    let caller = device(1);
    let sender = Sender::Device {
        caller: &caller,
        slug: "acme",
    };
    let first = vec![message(
        "vigia/acme/A",
        "[{\"value\":1,\"ts\":1},{\"value\":2,\"ts\":2}]",
        NOW.0,
    )];
    let mut pending = kit.mqtt.prepare(&sender, &first);
    kit.mqtt.commit(&mut pending, NOW).await.unwrap();
    let second = vec![message("vigia/acme/B", "3", NOW.0)];
    let mut pending = kit.mqtt.prepare(&sender, &second);
    match kit.mqtt.commit(&mut pending, NOW).await {
        Err(NotDurable::Full(_)) => {}
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(
        !pending.is_empty(),
        "still pending: the caller must not ack"
    );
    assert_eq!(kit.bus.lag(Topic::READINGS).await.unwrap(), 2);
    // The workers drain the bus; the retry then goes through.
    assert_eq!(drain(&*kit.bus).await.len(), 1);
    kit.mqtt.commit(&mut pending, NOW).await.unwrap();
    assert!(pending.is_empty());
    let batches = drain(&*kit.bus).await;
    assert_eq!(batches[0].1[0].sensor, "B");
}

#[tokio::test]
async fn under_required_provisioning_only_the_unknown_sensors_message_is_refused() {
    let directory = SensorDirectory::new();
    directory.insert(Sensor {
        id: SensorId(1),
        tenant: TenantId(1),
        key: "KNOWN".into(),
        name: "KNOWN".into(),
        kind: SensorKind::Generic,
        unit: None,
        rules: Vec::new(),
        stock: None,
        product: None,
        created_at: NOW,
    });
    let kit = kit(Provisioning::Required, 1_000_000, directory).await;
    let caller = device(1);
    let sender = Sender::Device {
        caller: &caller,
        slug: "acme",
    };
    let messages = vec![
        message("vigia/acme/KNOWN", "1", NOW.0),
        message("vigia/acme/STRANGER", "2", NOW.0),
        message("vigia/acme/KNOWN", "3", NOW.0),
    ];
    let mut pending = kit.mqtt.prepare(&sender, &messages);
    kit.mqtt.commit(&mut pending, NOW).await.unwrap();
    let stored: Vec<f64> = drain(&*kit.bus)
        .await
        .into_iter()
        .flat_map(|(_, r)| r.into_iter().map(|r| r.value))
        .collect();
    let mut stored = stored;
    stored.sort_by(f64::total_cmp);
    assert_eq!(stored, vec![1.0, 3.0]);
    let listed = kit.rejections.of_tenant(TenantId(1));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason, "unprovisioned");
    assert_eq!(listed[0].target, "vigia/acme/STRANGER");
}
