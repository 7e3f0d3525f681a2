//! Each alert action and each sensor PUT is all-or-nothing: a failure injected inside the
//! store transaction (a SQLite trigger that aborts the alert update, standing in for a
//! disk or constraint failure half-way) leaves the sensor, its alerts and every other
//! process's caches exactly as they were.

use std::sync::{Arc, Mutex};

use vigia_core::{
    AlertState, ApiKeyId, Control, LiveEvent, Role, Rule, RuleKind, SensorSpec, Severity, TenantId,
    Timestamp,
};
use vigia_fanout::{Fanout, InProcessFanout};
use vigia_services::{AlertService, Caller, SensorService, ServiceError};
use vigia_store::{AlertTransition, NewAlert, OpenContext, Store, WriteBatch};

struct Fixture {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    store: Arc<dyn Store>,
    fanout: Arc<InProcessFanout>,
    controls: Arc<Mutex<Vec<Control>>>,
    caller: Caller,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = vigia_store::open("sqlite", &OpenContext::new(dir.path()))
        .await
        .unwrap();
    let tenant = store.catalog().default_tenant().await.unwrap().id;
    let fanout = Arc::new(InProcessFanout::new(64));
    let controls = Arc::new(Mutex::new(Vec::new()));
    let seen = controls.clone();
    fanout.on_control(Arc::new(move |m: &Control| {
        seen.lock().unwrap().push(m.clone())
    }));
    Fixture {
        db: dir.path().join("vigia.sqlite3"),
        _dir: dir,
        store,
        fanout,
        controls,
        caller: Caller {
            tenant,
            key_id: ApiKeyId(1),
            key_name: "ops".into(),
            role: Role::Operator,
        },
    }
}

fn two_rules() -> SensorSpec {
    SensorSpec {
        rules: vec![
            Rule::threshold(Severity::Critical, None, Some(-18.0)),
            Rule::threshold(Severity::Warning, None, Some(-20.0)),
        ],
        ..SensorSpec::default()
    }
}

/// CF-1 with two rules, each with an open alert.
async fn sensor_with_two_alerts(f: &Fixture, sensors: &SensorService) -> Vec<i64> {
    let (view, _) = sensors.put(&f.caller, "CF-1", two_rules()).await.unwrap();
    let alerts = view
        .sensor
        .rules
        .iter()
        .map(|rule| {
            AlertTransition::Open(NewAlert {
                tenant: f.caller.tenant,
                sensor: view.sensor.id,
                rule: rule.name.clone(),
                kind: RuleKind::Threshold,
                severity: Severity::Critical,
                metric: "temperature".into(),
                value: -5.0,
                message: "warm".into(),
                opened_at: Timestamp::now(),
                details: None,
            })
        })
        .collect();
    let outcome = f
        .store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: Vec::new(),
            alerts,
        })
        .await
        .unwrap();
    f.controls.lock().unwrap().clear();
    outcome.alerts.iter().map(|(_, a)| a.id.0).collect()
}

/// Makes every alert state change fail inside its transaction.
fn break_alert_updates(db: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER injected_failure BEFORE UPDATE OF state ON alerts
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .unwrap();
    conn
}

fn heal(conn: &rusqlite::Connection) {
    conn.execute_batch("DROP TRIGGER injected_failure").unwrap();
}

async fn states(f: &Fixture) -> Vec<AlertState> {
    let all = f
        .store
        .alerts()
        .list(
            f.caller.tenant,
            &vigia_store::AlertFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut all: Vec<_> = all.into_iter().map(|a| (a.id, a.state)).collect();
    all.sort_by_key(|(id, _)| *id);
    all.into_iter().map(|(_, s)| s).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_put_that_fails_half_way_changes_nothing() {
    let f = fixture().await;
    let sensors = SensorService::new(f.store.clone(), f.fanout.clone());
    sensor_with_two_alerts(&f, &sensors).await;
    let mut live = f.fanout.subscribe_live();

    let trigger = break_alert_updates(&f.db);
    let mut one_rule = two_rules();
    one_rule.rules.truncate(1);
    let err = sensors
        .put(&f.caller, "CF-1", one_rule.clone())
        .await
        .expect_err("the injected failure aborts the PUT");
    assert!(matches!(err, ServiceError::Store(_)), "{err:?}");

    let stored = f
        .store
        .catalog()
        .get_sensor(f.caller.tenant, "CF-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.rules.len(), 2, "the rules are as before the PUT");
    assert_eq!(states(&f).await, [AlertState::Open, AlertState::Open]);
    assert!(
        f.controls.lock().unwrap().is_empty(),
        "no cache was told anything"
    );
    assert!(live.try_recv().is_err(), "no live event");

    heal(&trigger);
    let (view, created) = sensors.put(&f.caller, "CF-1", one_rule).await.unwrap();
    assert!(!created);
    assert_eq!(view.sensor.rules.len(), 1);
    assert_eq!(view.open_alerts, 1);
    assert_eq!(states(&f).await, [AlertState::Open, AlertState::Resolved]);
    let controls = f.controls.lock().unwrap().clone();
    assert!(
        matches!(controls[0], Control::SensorChanged(_)),
        "{controls:?}"
    );
    assert!(
        matches!(&controls[1], Control::ExcursionForgotten { rule, .. } if rule == "threshold-warning"),
        "{controls:?}"
    );
    assert!(matches!(live.try_recv(), Ok(LiveEvent::Alert { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_actions_that_fail_change_nothing() {
    let f = fixture().await;
    let sensors = SensorService::new(f.store.clone(), f.fanout.clone());
    let alerts = AlertService::new(f.store.clone(), f.fanout.clone());
    let ids = sensor_with_two_alerts(&f, &sensors).await;
    let mut live = f.fanout.subscribe_live();

    let trigger = break_alert_updates(&f.db);
    for id in &ids {
        let id = vigia_core::AlertId(*id);
        alerts.ack(&f.caller, id).await.expect_err("ack fails");
        alerts
            .resolve(&f.caller, id)
            .await
            .expect_err("resolve fails");
    }
    assert_eq!(states(&f).await, [AlertState::Open, AlertState::Open]);
    assert!(
        f.controls.lock().unwrap().is_empty(),
        "no excursion forgotten"
    );
    assert!(live.try_recv().is_err(), "no live event");

    heal(&trigger);
    let id = vigia_core::AlertId(ids[0]);
    assert_eq!(
        alerts.ack(&f.caller, id).await.unwrap().state,
        AlertState::Acked
    );
    assert_eq!(
        alerts.resolve(&f.caller, id).await.unwrap().state,
        AlertState::Resolved
    );
    assert_eq!(states(&f).await, [AlertState::Resolved, AlertState::Open]);
    assert_eq!(
        f.controls.lock().unwrap().len(),
        1,
        "the resolve forgot its excursion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_tenants_are_enforced_by_the_services() {
    let f = fixture().await;
    let sensors = SensorService::new(f.store.clone(), f.fanout.clone());
    let alerts = AlertService::new(f.store.clone(), f.fanout.clone());
    let ids = sensor_with_two_alerts(&f, &sensors).await;
    let viewer = Caller {
        role: Role::Viewer,
        ..f.caller.clone()
    };
    let err = sensors.put(&viewer, "CF-1", two_rules()).await.unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden { .. }), "{err:?}");
    let err = alerts
        .resolve(&viewer, vigia_core::AlertId(ids[0]))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden { .. }), "{err:?}");
    assert_eq!(
        sensors.list(&viewer, None, 100).await.unwrap().items.len(),
        1
    );

    let stranger = Caller {
        tenant: TenantId(f.caller.tenant.0 + 1000),
        ..f.caller.clone()
    };
    let err = alerts
        .ack(&stranger, vigia_core::AlertId(ids[0]))
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::NotFound(_)), "{err:?}");
    assert!(sensors
        .list(&stranger, None, 100)
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_an_action_announces_nothing() {
    use vigia_store::testkit::FaultyStore;
    let f = fixture().await;
    let faulty = Arc::new(FaultyStore::new(f.store.clone()));
    let faults = faulty.faults();
    let sensors = SensorService::new(faulty.clone(), f.fanout.clone());
    let alerts = AlertService::new(faulty.clone(), f.fanout.clone());
    let ids = sensor_with_two_alerts(&f, &sensors).await;
    let mut live = f.fanout.subscribe_live();

    faults.fail("resolve");
    faults.fail("put_sensor");
    let id = vigia_core::AlertId(ids[0]);
    alerts.resolve(&f.caller, id).await.expect_err("store down");
    sensors
        .put(&f.caller, "CF-1", SensorSpec::default())
        .await
        .expect_err("store down");
    assert!(f.controls.lock().unwrap().is_empty());
    assert!(live.try_recv().is_err());
    assert_eq!(states(&f).await, [AlertState::Open, AlertState::Open]);

    faults.heal_all();
    alerts.resolve(&f.caller, id).await.expect("healed");
    assert_eq!(
        faults.calls("resolve"),
        2,
        "one store call per action, retried once"
    );
    assert_eq!(f.controls.lock().unwrap().len(), 1);
}
