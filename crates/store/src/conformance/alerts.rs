//! Conformance checks for alerts: one unresolved per (sensor, rule), transitions,
//! listing and tenant isolation.

use vigia_core::{
    Alert, AlertChange, AlertId, AlertState, RuleKind, SensorId, Severity, TenantId, Timestamp,
};

use super::{assert_conflict, assert_not_found, reading, setup, T0};
use crate::{AlertFilter, AlertTransition, NewAlert, Store, WriteBatch};

fn open(tenant: TenantId, sensor: SensorId, rule: &str, offset: i64) -> AlertTransition {
    AlertTransition::Open(NewAlert {
        tenant,
        sensor,
        rule: rule.to_string(),
        kind: RuleKind::Threshold,
        severity: Severity::Critical,
        metric: "temperature".into(),
        value: -16.0,
        message: "above -18 °C".into(),
        opened_at: Timestamp(T0 + offset),
        details: None,
    })
}

fn resolve(tenant: TenantId, sensor: SensorId, rule: &str, offset: i64) -> AlertTransition {
    AlertTransition::Resolve {
        tenant,
        sensor,
        rule: rule.to_string(),
        at: Timestamp(T0 + offset),
    }
}

fn alerts_batch(alerts: Vec<AlertTransition>) -> WriteBatch {
    WriteBatch {
        excursions: Vec::new(),
        readings: Vec::new(),
        alerts,
    }
}

async fn unresolved_for(store: &dyn Store, sensor: SensorId, rule: &str) -> Vec<Alert> {
    let all = store
        .alerts()
        .unresolved()
        .await
        .expect("unresolved alerts");
    all.into_iter()
        .filter(|a| a.sensor_id == sensor && a.rule == rule)
        .collect()
}

/// Two `Open`s of one (sensor, rule) in one batch open one alert; the opened alert
/// carries everything the transition said, plus the sensor key.
pub async fn one_open_alert_per_rule_in_one_batch(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let batch = WriteBatch {
        excursions: Vec::new(),
        readings: vec![reading(s, 0, -16.0)],
        alerts: vec![
            open(tenant.id, s, "high", 0),
            open(tenant.id, s, "high", 5),
            open(tenant.id, s, "rate", 0),
        ],
    };
    let outcome = store.write_batch(batch).await.expect("write");
    assert_eq!(
        outcome.readings_written, 1,
        "readings and alerts commit together"
    );
    let opened: Vec<&str> = outcome
        .alerts
        .iter()
        .map(|(_, a)| a.rule.as_str())
        .collect();
    assert_eq!(
        opened,
        ["high", "rate"],
        "the duplicate Open is absent from the outcome"
    );
    let (change, alert) = &outcome.alerts[0];
    assert_eq!(*change, AlertChange::Opened);
    assert_eq!(alert.state, AlertState::Open);
    assert_eq!(
        (alert.tenant, alert.sensor_id, alert.sensor.as_str()),
        (tenant.id, s, "CF-1")
    );
    assert_eq!(
        (alert.kind, alert.severity),
        (RuleKind::Threshold, Severity::Critical)
    );
    assert_eq!((alert.metric.as_str(), alert.value), ("temperature", -16.0));
    assert_eq!(alert.message, "above -18 °C");
    assert_eq!(alert.opened_at, Timestamp(T0));
    assert_eq!((alert.acked_at, alert.resolved_at), (None, None));
    assert_eq!(
        store.alerts().get(tenant.id, alert.id).await.expect("get"),
        *alert
    );
    assert_eq!(unresolved_for(store, s, "high").await.len(), 1);

    // An acked alert still blocks a new one.
    store
        .alerts()
        .ack(tenant.id, alert.id, "ana", Timestamp(T0 + 10))
        .await
        .expect("ack");
    let again = store
        .write_batch(alerts_batch(vec![open(tenant.id, s, "high", 20)]))
        .await
        .expect("reopen");
    assert!(
        again.alerts.is_empty(),
        "acked alert blocks a duplicate: {:?}",
        again.alerts
    );
}

/// Concurrent batches opening the same (sensor, rule) open exactly one alert.
pub async fn one_open_alert_per_rule_across_concurrent_batches(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let batch = |offset| alerts_batch(vec![open(tenant.id, s, "high", offset)]);
    let (a, b, c, d) = tokio::join!(
        store.write_batch(batch(0)),
        store.write_batch(batch(1)),
        store.write_batch(batch(2)),
        store.write_batch(batch(3))
    );
    let opened: usize = [a, b, c, d]
        .into_iter()
        .map(|o| o.expect("write").alerts.len())
        .sum();
    assert_eq!(
        opened, 1,
        "exactly one of the concurrent Opens opened an alert"
    );
    assert_eq!(unresolved_for(store, s, "high").await.len(), 1);
}

/// `Resolve` closes the unresolved alert as `auto`; the next `Open` is a new alert;
/// `Resolve` with nothing open changes nothing.
pub async fn auto_resolve_then_reopen_creates_new_alert(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let nothing = store
        .write_batch(alerts_batch(vec![resolve(tenant.id, s, "high", 0)]))
        .await
        .expect("noop");
    assert!(nothing.alerts.is_empty(), "nothing to resolve");

    let first = store
        .write_batch(alerts_batch(vec![open(tenant.id, s, "high", 0)]))
        .await
        .expect("open");
    let first = first.alerts[0].1.clone();
    // Resolve and re-open in one batch: applied in order.
    let outcome = store
        .write_batch(alerts_batch(vec![
            resolve(tenant.id, s, "high", 100),
            open(tenant.id, s, "high", 200),
        ]))
        .await
        .expect("resolve and reopen");
    let changes: Vec<AlertChange> = outcome.alerts.iter().map(|(c, _)| *c).collect();
    assert_eq!(changes, [AlertChange::Resolved, AlertChange::Opened]);
    let resolved = &outcome.alerts[0].1;
    assert_eq!(resolved.id, first.id);
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(resolved.resolved_by.as_deref(), Some("auto"));
    assert_eq!(resolved.resolved_at, Some(Timestamp(T0 + 100)));
    let reopened = &outcome.alerts[1].1;
    assert_ne!(reopened.id, first.id, "re-opening creates a new alert");
    assert_eq!(reopened.opened_at, Timestamp(T0 + 200));
    let stored = store
        .alerts()
        .get(tenant.id, first.id)
        .await
        .expect("get first");
    assert_eq!(
        stored.state,
        AlertState::Resolved,
        "the old alert stays resolved"
    );
}

/// Ack: open → acked, acked unchanged, resolved is a conflict. Resolve: open or acked
/// → resolved by the caller, resolved unchanged. Unknown ids are `NotFound`.
pub async fn ack_and_resolve_semantics(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let outcome = store
        .write_batch(alerts_batch(vec![
            open(tenant.id, s, "a", 0),
            open(tenant.id, s, "b", 0),
        ]))
        .await
        .expect("open");
    let (a, b) = (outcome.alerts[0].1.id, outcome.alerts[1].1.id);

    let acked = store
        .alerts()
        .ack(tenant.id, a, "ana", Timestamp(T0 + 10))
        .await
        .expect("ack");
    assert_eq!(acked.state, AlertState::Acked);
    assert_eq!(
        (acked.acked_by.as_deref(), acked.acked_at),
        (Some("ana"), Some(Timestamp(T0 + 10)))
    );
    let again = store
        .alerts()
        .ack(tenant.id, a, "luis", Timestamp(T0 + 20))
        .await
        .expect("ack again");
    assert_eq!(again, acked, "acking an acked alert returns it unchanged");

    let resolved = store
        .alerts()
        .resolve(tenant.id, a, "luis", Timestamp(T0 + 30))
        .await
        .expect("resolve acked");
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(
        (resolved.resolved_by.as_deref(), resolved.resolved_at),
        (Some("luis"), Some(Timestamp(T0 + 30)))
    );
    assert_eq!(
        resolved.acked_by.as_deref(),
        Some("ana"),
        "ack details kept"
    );
    let again = store
        .alerts()
        .resolve(tenant.id, a, "eva", Timestamp(T0 + 40))
        .await
        .expect("resolve again");
    assert_eq!(
        again, resolved,
        "resolving a resolved alert returns it unchanged"
    );
    assert_conflict(
        store
            .alerts()
            .ack(tenant.id, a, "eva", Timestamp(T0 + 50))
            .await,
        "ack of resolved",
    );

    let direct = store
        .alerts()
        .resolve(tenant.id, b, "eva", Timestamp(T0 + 60))
        .await
        .expect("resolve open");
    assert_eq!(
        (direct.state, direct.acked_at),
        (AlertState::Resolved, None)
    );

    let missing = AlertId(i64::MAX - 5);
    assert_not_found(
        store.alerts().get(tenant.id, missing).await,
        "get unknown alert",
    );
    assert_not_found(
        store
            .alerts()
            .ack(tenant.id, missing, "x", Timestamp(T0))
            .await,
        "ack unknown",
    );
    assert_not_found(
        store
            .alerts()
            .resolve(tenant.id, missing, "x", Timestamp(T0))
            .await,
        "resolve unknown",
    );
    assert!(store
        .alerts()
        .unresolved()
        .await
        .expect("unresolved")
        .is_empty());
}

/// Listing: newest first, by state and by sensor key, at most `limit`.
pub async fn alert_listing_filters(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1", "CF-2"]).await;
    let (s1, s2) = (sensors[0].id, sensors[1].id);
    let t = tenant.id;
    let outcome = store
        .write_batch(alerts_batch(vec![
            open(t, s1, "a", 0),
            open(t, s2, "a", 1),
            open(t, s1, "b", 2),
        ]))
        .await
        .expect("open");
    let ids: Vec<AlertId> = outcome.alerts.iter().map(|(_, a)| a.id).collect();
    store
        .alerts()
        .ack(t, ids[1], "ana", Timestamp(T0 + 5))
        .await
        .expect("ack");
    store
        .alerts()
        .resolve(t, ids[2], "ana", Timestamp(T0 + 6))
        .await
        .expect("resolve");

    let list = |state, sensor: Option<&str>, limit| AlertFilter {
        state,
        sensor: sensor.map(str::to_string),
        limit,
        before: None,
    };
    let before = |id: AlertId, limit| AlertFilter {
        limit,
        before: Some(id),
        ..AlertFilter::default()
    };
    let cases: Vec<(AlertFilter, Vec<AlertId>)> = vec![
        (list(None, None, 100), vec![ids[2], ids[1], ids[0]]),
        (list(None, None, 2), vec![ids[2], ids[1]]),
        (list(None, None, 0), vec![]),
        (list(Some(AlertState::Open), None, 100), vec![ids[0]]),
        (list(Some(AlertState::Acked), None, 100), vec![ids[1]]),
        (list(Some(AlertState::Resolved), None, 100), vec![ids[2]]),
        (list(None, Some("CF-1"), 100), vec![ids[2], ids[0]]),
        (
            list(Some(AlertState::Open), Some("CF-1"), 100),
            vec![ids[0]],
        ),
        (list(None, Some("NOPE"), 100), vec![]),
        // Pages: older than a given alert, newest first.
        (before(ids[2], 1), vec![ids[1]]),
        (before(ids[1], 100), vec![ids[0]]),
        (before(ids[0], 100), vec![]),
    ];
    for (filter, want) in cases {
        let got: Vec<AlertId> = store
            .alerts()
            .list(t, &filter)
            .await
            .expect("list")
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(got, want, "{filter:?}");
    }
    let unresolved: Vec<AlertId> = store
        .alerts()
        .unresolved()
        .await
        .expect("unresolved")
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(unresolved, [ids[0], ids[1]]);
}

/// A batch whose alert names a sensor outside the given tenant (or an unknown one)
/// fails with `Conflict` and writes nothing, readings included.
pub async fn batch_rejects_alert_for_sensor_of_other_tenant(store: &dyn Store) {
    let (a, a_sensors) = setup(store, &["CF-1"]).await;
    let b = store
        .catalog()
        .create_tenant("b", "B")
        .await
        .expect("tenant b");
    let s = a_sensors[0].id;
    let cases = [
        ("Open for another tenant", open(b.id, s, "high", 0)),
        ("Resolve for another tenant", resolve(b.id, s, "high", 0)),
        (
            "Open for an unknown sensor",
            open(a.id, super::MISSING_SENSOR, "high", 0),
        ),
    ];
    for (what, transition) in cases {
        let batch = WriteBatch {
            excursions: Vec::new(),
            readings: vec![reading(s, 0, -16.0)],
            alerts: vec![open(a.id, s, "ok", 0), transition],
        };
        assert_conflict(store.write_batch(batch).await, what);
        assert!(
            store
                .alerts()
                .unresolved()
                .await
                .expect("unresolved")
                .is_empty(),
            "{what}: no alert"
        );
        assert!(
            store
                .readings()
                .latest(a.id, &crate::SensorScope::All)
                .await
                .expect("latest")
                .is_empty(),
            "{what}: no reading"
        );
    }
}

/// One tenant's alerts are invisible and untouchable from another.
pub async fn tenant_isolation_of_alerts(store: &dyn Store) {
    let (a, sensors) = setup(store, &["CF-1"]).await;
    let b = store
        .catalog()
        .create_tenant("b", "B")
        .await
        .expect("tenant b");
    let outcome = store
        .write_batch(alerts_batch(vec![open(a.id, sensors[0].id, "high", 0)]))
        .await
        .expect("open");
    let id = outcome.alerts[0].1.id;
    let everything = AlertFilter {
        limit: 100,
        ..AlertFilter::default()
    };
    assert!(store
        .alerts()
        .list(b.id, &everything)
        .await
        .expect("b's alerts")
        .is_empty());
    assert_not_found(store.alerts().get(b.id, id).await, "get from b");
    assert_not_found(
        store.alerts().ack(b.id, id, "mallory", Timestamp(T0)).await,
        "ack from b",
    );
    assert_not_found(
        store
            .alerts()
            .resolve(b.id, id, "mallory", Timestamp(T0))
            .await,
        "resolve from b",
    );
    let alert = store.alerts().get(a.id, id).await.expect("get from a");
    assert_eq!(
        alert.state,
        AlertState::Open,
        "b's attempts changed nothing"
    );
    assert_eq!(
        store
            .alerts()
            .list(a.id, &everything)
            .await
            .expect("a's alerts")
            .len(),
        1
    );
}

/// Unresolved counts per sensor are exact (open plus acked, never resolved), tenant
/// scoped, and can be asked for one sensor.
pub async fn unresolved_counts_per_sensor(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["A", "B", "C"]).await;
    let (a, b, c) = (sensors[0].id, sensors[1].id, sensors[2].id);
    let mut transitions = Vec::new();
    for i in 0..30 {
        transitions.push(open(tenant.id, a, &format!("r{i}"), i));
    }
    transitions.push(open(tenant.id, b, "high", 0));
    transitions.push(open(tenant.id, c, "high", 0));
    transitions.push(resolve(tenant.id, c, "high", 10));
    let outcome = store
        .write_batch(alerts_batch(transitions))
        .await
        .expect("write");
    let first_of_a = outcome.alerts[0].1.id;
    store
        .alerts()
        .ack(tenant.id, first_of_a, "ops", Timestamp(T0 + 20))
        .await
        .expect("ack");

    let mut counts = store
        .alerts()
        .unresolved_counts(tenant.id, &crate::SensorScope::All)
        .await
        .expect("counts");
    counts.sort();
    assert_eq!(counts, [(a, 30), (b, 1)], "acked counts, resolved does not");
    assert_eq!(
        store
            .alerts()
            .unresolved_counts(tenant.id, &crate::SensorScope::One(b))
            .await
            .expect("counts of B"),
        [(b, 1)]
    );
    let other = store
        .catalog()
        .create_tenant("other", "Other")
        .await
        .expect("tenant");
    assert!(
        store
            .alerts()
            .unresolved_counts(other.id, &crate::SensorScope::All)
            .await
            .expect("counts")
            .is_empty(),
        "another tenant sees no counts"
    );
    assert!(
        store
            .alerts()
            .unresolved_counts(other.id, &crate::SensorScope::One(a))
            .await
            .expect("counts")
            .is_empty(),
        "nor a count of this tenant's sensor"
    );
}

/// An alert's `details` come back exactly as the rule gave them, from every read (the
/// batch outcome, `get`, `list`, `unresolved`), and stay null when it gave none.
pub async fn alert_details_round_trip_and_stay_null_when_absent(store: &dyn Store) {
    use vigia_core::{AlertDetails, AnomalyDetails, AnomalySignal, DurationDetails};

    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let s = sensors[0].id;
    let anomaly = AlertDetails::Anomaly(AnomalyDetails {
        signal: AnomalySignal::Deviation,
        expected_min: -19.25,
        expected_max: -17.5,
        observed: -9.125,
        score: 12.5,
        threshold: 6.0,
    });
    let duration = AlertDetails::Duration(DurationDetails {
        out_of_range_ms: 14_400_000,
        limit_ms: 14_400_000,
        window: "batch".into(),
        batch: Some("lote-ñ \"7\"".into()),
    });
    let with = |rule: &str, details: Option<AlertDetails>| match open(tenant.id, s, rule, 0) {
        AlertTransition::Open(new) => AlertTransition::Open(NewAlert { details, ..new }),
        AlertTransition::Resolve { .. } => unreachable!("built as an Open"),
    };
    let outcome = store
        .write_batch(alerts_batch(vec![
            with("spike", Some(anomaly.clone())),
            with("time-out", Some(duration.clone())),
            with("high", None),
        ]))
        .await
        .expect("write");
    let want = [
        ("spike", Some(anomaly)),
        ("time-out", Some(duration)),
        ("high", None),
    ];
    let got: Vec<_> = outcome
        .alerts
        .iter()
        .map(|(_, a)| (a.rule.as_str(), a.details.clone()))
        .collect();
    assert_eq!(got, want, "the batch outcome carries the details");
    for (_, alert) in &outcome.alerts {
        let read = store.alerts().get(tenant.id, alert.id).await.expect("get");
        assert_eq!(read.details, alert.details, "get of {}", alert.rule);
    }
    let listed = store
        .alerts()
        .list(
            tenant.id,
            &AlertFilter {
                limit: 10,
                ..AlertFilter::default()
            },
        )
        .await
        .expect("list");
    let mut listed: Vec<_> = listed
        .iter()
        .map(|a| (a.rule.as_str(), a.details.clone()))
        .collect();
    listed.reverse();
    assert_eq!(listed, want, "list (newest first) carries the details");
    let unresolved = unresolved_for(store, s, "spike").await;
    assert_eq!(unresolved[0].details, want[0].1, "unresolved carries them");
    // Acking and resolving keep them.
    let id = outcome.alerts[1].1.id;
    store
        .alerts()
        .ack(tenant.id, id, "ana", Timestamp(T0 + 1))
        .await
        .expect("ack");
    let resolved = store
        .alerts()
        .resolve(tenant.id, id, "ana", Timestamp(T0 + 2))
        .await
        .expect("resolve");
    assert_eq!(resolved.details, want[1].1, "resolving keeps them");
}
