//! Conformance checks for the outbox: one event per real alert change, written with the
//! change (never for a rolled-back one), read in order after a cursor.

use vigia_core::{AlertChange, DomainEvent, Rule, RuleKind, SensorSpec, Severity, Timestamp};

use super::MISSING_SENSOR;
use super::{setup, T0};
use crate::{AlertTransition, NewAlert, Store, WriteBatch};

fn changes(entries: &[crate::OutboxEntry]) -> Vec<(AlertChange, String)> {
    entries
        .iter()
        .map(|e| match &e.event {
            DomainEvent::AlertChanged { change, alert, .. } => (*change, alert.rule.clone()),
        })
        .collect()
}

/// Every real alert change (opened by a batch, acked, resolved by hand or by a rule's
/// removal) has exactly one event; repeated or failed changes have none.
pub async fn outbox_has_one_event_per_alert_change(store: &dyn Store) {
    let (tenant, _) = setup(store, &[]).await;
    let mut spec = SensorSpec {
        rules: vec![
            Rule::threshold(Severity::Critical, None, Some(-18.0)),
            Rule::threshold(Severity::Warning, None, Some(-20.0)),
        ],
        ..SensorSpec::default()
    };
    spec.normalise().expect("valid spec");
    let sensor = store
        .catalog()
        .put_sensor(tenant.id, "CF-1", &spec, "test", Timestamp(T0))
        .await
        .expect("put")
        .sensor;
    let open = |rule: &str| {
        AlertTransition::Open(NewAlert {
            tenant: tenant.id,
            sensor: sensor.id,
            rule: rule.to_string(),
            kind: RuleKind::Threshold,
            severity: Severity::Critical,
            metric: "temperature".into(),
            value: -5.0,
            message: "warm".into(),
            opened_at: Timestamp(T0),
            details: None,
        })
    };
    let outcome = store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: Vec::new(),
            alerts: vec![
                open("threshold-critical"),
                open("threshold-critical"),
                open("threshold-warning"),
            ],
        })
        .await
        .expect("open two");
    let first = outcome.alerts[0].1.id;
    // A batch that fails (an alert of a sensor that does not exist) leaves no event.
    let failed = store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: Vec::new(),
            alerts: vec![AlertTransition::Open(NewAlert {
                sensor: MISSING_SENSOR,
                ..match open("x") {
                    AlertTransition::Open(new) => new,
                    AlertTransition::Resolve { .. } => unreachable!("built as an Open"),
                }
            })],
        })
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let alerts = store.alerts();
    alerts
        .ack(tenant.id, first, "ops", Timestamp(T0 + 1))
        .await
        .expect("ack");
    alerts
        .ack(tenant.id, first, "ops", Timestamp(T0 + 2))
        .await
        .expect("ack again");
    alerts
        .resolve(tenant.id, first, "ops", Timestamp(T0 + 3))
        .await
        .expect("resolve");
    alerts
        .resolve(tenant.id, first, "ops", Timestamp(T0 + 4))
        .await
        .expect("again");
    spec.rules.truncate(1);
    store
        .catalog()
        .put_sensor(tenant.id, "CF-1", &spec, "test", Timestamp(T0 + 5))
        .await
        .expect("drop the warning rule");

    let outbox = store.outbox();
    let all = outbox.read_after(0, 100).await.expect("read");
    use AlertChange::*;
    assert_eq!(
        changes(&all),
        [
            (Opened, "threshold-critical".to_string()),
            (Opened, "threshold-warning".to_string()),
            (Acked, "threshold-critical".to_string()),
            (Resolved, "threshold-critical".to_string()),
            (Resolved, "threshold-warning".to_string()),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    match &all[0].event {
        DomainEvent::AlertChanged {
            tenant: t, alert, ..
        } => {
            assert_eq!((*t, alert.sensor.as_str()), (tenant.id, "CF-1"));
        }
    }

    // Cursors: read after one, never move back; a new consumer starts at 0.
    assert_eq!(outbox.cursor("notifier").await.expect("cursor"), 0);
    outbox
        .save_cursor("notifier", all[1].id)
        .await
        .expect("save");
    outbox
        .save_cursor("notifier", all[0].id)
        .await
        .expect("save older");
    let at = outbox.cursor("notifier").await.expect("cursor");
    assert_eq!(at, all[1].id, "a cursor never moves back");
    assert_eq!(
        outbox.read_after(at, 2).await.expect("read").len(),
        2,
        "limit"
    );
    assert_eq!(outbox.read_after(at, 100).await.expect("read").len(), 3);
    assert_eq!(outbox.cursor("other").await.expect("cursor"), 0);

    // Retention.
    let far = Timestamp(Timestamp::now().0 + 3_600_000);
    assert_eq!(outbox.prune(far).await.expect("prune"), 5);
    assert!(outbox.read_after(0, 100).await.expect("read").is_empty());
}
