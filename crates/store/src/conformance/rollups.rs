//! The rollups port's checks (issue 14): exact summaries of closed ranges, the open range
//! untouched, late readings fixing their buckets, idempotent re-runs, the row budget,
//! tenant isolation, chunked retention that keeps sensors with an unresolved alert.
use vigia_core::{RuleKind, Severity, DEFAULT_METRIC};

use vigia_core::{SensorId, TenantId, Timestamp};

use crate::{
    AlertTransition, NewAlert, Resolution, RetentionScope, RollupPoint, RollupQuery, SensorReading,
    Store, StoreError, WriteBatch,
};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// An hour boundary well inside every backend's range.
const T0: i64 = 1_699_999_200_000;

fn reading(sensor: SensorId, ts: i64, value: f64) -> SensorReading {
    SensorReading {
        sensor,
        metric: DEFAULT_METRIC.into(),
        ts: Timestamp(ts),
        value,
    }
}

async fn write<S: Store>(store: &S, readings: Vec<SensorReading>) {
    store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings,
            alerts: Vec::new(),
        })
        .await
        .expect("write batch");
}

async fn setup<S: Store>(store: &S, keys: &[&str]) -> (TenantId, Vec<SensorId>) {
    let tenant = store.catalog().default_tenant().await.expect("tenant").id;
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let sensors = store
        .catalog()
        .provision_sensors(tenant, &keys)
        .await
        .expect("provision");
    (tenant, sensors.iter().map(|s| s.id).collect())
}

fn query(resolution: Resolution, from: i64, to: i64) -> RollupQuery {
    RollupQuery {
        metric: DEFAULT_METRIC.into(),
        from: Timestamp(from),
        to: Timestamp(to),
        resolution,
        limit: 10_000,
    }
}

async fn series<S: Store>(
    store: &S,
    tenant: TenantId,
    key: &str,
    q: &RollupQuery,
) -> Vec<RollupPoint> {
    store
        .rollups()
        .series(tenant, key, q)
        .await
        .expect("series")
}

pub async fn closed_ranges_roll_up_exactly_and_the_open_range_waits<S: Store>(store: &S) {
    let (tenant, sensors) = setup(store, &["a"]).await;
    // Minute 0: 1, 5, 3; minute 1: 10; minute 2 (open): 7.
    write(
        store,
        vec![
            reading(sensors[0], T0 + 1_000, 1.0),
            reading(sensors[0], T0 + 20_000, 5.0),
            reading(sensors[0], T0 + 59_999, 3.0),
            reading(sensors[0], T0 + MIN, 10.0),
            reading(sensors[0], T0 + 2 * MIN + 5, 7.0),
        ],
    )
    .await;
    let report = store
        .rollups()
        .roll_up(Timestamp(T0 + 2 * MIN + 30_000), 1_000)
        .await
        .expect("roll up");
    assert_eq!(report.watermark, Some(Timestamp(T0 + 2 * MIN)));
    let points = series(
        store,
        tenant,
        "a",
        &query(Resolution::Minute, T0, T0 + HOUR),
    )
    .await;
    let summary: Vec<_> = points
        .iter()
        .map(|p| (p.ts.0 - T0, p.count, p.min, p.max, p.sum, p.last))
        .collect();
    assert_eq!(
        summary,
        [(0, 3, 1.0, 5.0, 9.0, 3.0), (MIN, 1, 10.0, 10.0, 10.0, 10.0)],
        "minute rollups of the closed range only"
    );
    // The hour holding `closed_before` is still open.
    assert!(
        series(store, tenant, "a", &query(Resolution::Hour, T0, T0 + HOUR))
            .await
            .is_empty()
    );

    // Idempotent: the same run again changes nothing.
    let again = store
        .rollups()
        .roll_up(Timestamp(T0 + 2 * MIN + 30_000), 1_000)
        .await
        .expect("roll up");
    assert_eq!(again.buckets_written, 0);
    assert_eq!(
        series(
            store,
            tenant,
            "a",
            &query(Resolution::Minute, T0, T0 + HOUR)
        )
        .await,
        points
    );

    // The hour closes: one bucket of all five readings.
    store
        .rollups()
        .roll_up(Timestamp(T0 + HOUR), 1_000)
        .await
        .expect("roll up");
    let hour = series(store, tenant, "a", &query(Resolution::Hour, T0, T0 + HOUR)).await;
    assert_eq!(hour.len(), 1);
    assert_eq!((hour[0].count, hour[0].sum, hour[0].last), (5, 26.0, 7.0));
}

pub async fn late_readings_fix_their_buckets_and_tenants_stay_apart<S: Store>(store: &S) {
    let (tenant, sensors) = setup(store, &["a"]).await;
    write(store, vec![reading(sensors[0], T0 + 10, 2.0)]).await;
    store
        .rollups()
        .roll_up(Timestamp(T0 + HOUR), 1_000)
        .await
        .expect("roll up");
    // Behind both watermarks: marked dirty, recomputed by the next run.
    write(store, vec![reading(sensors[0], T0 + 20, 4.0)]).await;
    let report = store
        .rollups()
        .roll_up(Timestamp(T0 + HOUR), 1_000)
        .await
        .expect("roll up");
    assert_eq!(report.dirty_recomputed, 2, "one 1m and one 1h bucket");
    for resolution in Resolution::ALL {
        let points = series(store, tenant, "a", &query(resolution, T0, T0 + HOUR)).await;
        assert_eq!(points.len(), 1, "{resolution:?}");
        assert_eq!(
            (points[0].count, points[0].sum, points[0].last),
            (2, 6.0, 4.0)
        );
    }
    let other = store
        .catalog()
        .create_tenant("other", "Other")
        .await
        .expect("tenant");
    assert!(matches!(
        store
            .rollups()
            .series(other.id, "a", &query(Resolution::Minute, T0, T0 + HOUR))
            .await,
        Err(StoreError::NotFound)
    ));
}

pub async fn the_row_budget_stops_at_a_bucket_boundary<S: Store>(store: &S) {
    let (tenant, sensors) = setup(store, &["a"]).await;
    let readings = (0..10)
        .map(|i| reading(sensors[0], T0 + i * MIN, 1.0))
        .collect();
    write(store, readings).await;
    let first = store
        .rollups()
        .roll_up(Timestamp(T0 + HOUR), 3)
        .await
        .expect("roll up");
    assert_eq!(first.watermark, Some(Timestamp(T0 + 3 * MIN)));
    while store
        .rollups()
        .roll_up(Timestamp(T0 + HOUR), 3)
        .await
        .expect("roll up")
        .readings_scanned
        > 0
    {}
    let points = series(
        store,
        tenant,
        "a",
        &query(Resolution::Minute, T0, T0 + HOUR),
    )
    .await;
    assert_eq!(points.len(), 10);
    assert!(points.iter().all(|p| p.count == 1));
}

pub async fn retention_deletes_what_is_older_in_chunks_and_keeps_alerted_sensors<S: Store>(
    store: &S,
) {
    let (tenant, sensors) = setup(store, &["a", "b"]).await;
    let readings = (0..5)
        .flat_map(|i| {
            [
                reading(sensors[0], T0 + i * HOUR, 1.0),
                reading(sensors[1], T0 + i * HOUR, 1.0),
            ]
        })
        .collect();
    write(store, readings).await;
    store
        .rollups()
        .roll_up(Timestamp(T0 + 5 * HOUR), 1_000)
        .await
        .expect("roll up");
    store
        .write_batch(WriteBatch {
            excursions: Vec::new(),
            readings: Vec::new(),
            alerts: vec![AlertTransition::Open(NewAlert {
                tenant,
                sensor: sensors[1],
                rule: "r".into(),
                kind: RuleKind::Threshold,
                severity: Severity::Critical,
                metric: DEFAULT_METRIC.into(),
                value: 1.0,
                message: "m".into(),
                opened_at: Timestamp(T0),
                details: None,
            })],
        })
        .await
        .expect("open alert");
    let before = Timestamp(T0 + 3 * HOUR);
    // Sensor a has 3 raw readings older than 3 h; b has an open alert.
    assert_eq!(
        store
            .rollups()
            .delete_raw_before(RetentionScope::All, before, 2)
            .await
            .expect("delete"),
        2
    );
    assert_eq!(
        store
            .rollups()
            .delete_raw_before(RetentionScope::All, before, 2)
            .await
            .expect("delete"),
        1
    );
    assert_eq!(
        store
            .rollups()
            .delete_raw_before(RetentionScope::All, before, 2)
            .await
            .expect("delete"),
        0
    );
    // 1m and 1h rollups of a older than 3 h: 3 + 3.
    assert_eq!(
        store
            .rollups()
            .delete_rollups_before(RetentionScope::Tenant(tenant), before, 100)
            .await
            .expect("delete"),
        6
    );
    let a = series(
        store,
        tenant,
        "a",
        &query(Resolution::Hour, T0, T0 + 5 * HOUR),
    )
    .await;
    assert_eq!(
        a.iter().map(|p| p.ts.0 - T0).collect::<Vec<_>>(),
        [3 * HOUR, 4 * HOUR]
    );
    let b = series(
        store,
        tenant,
        "b",
        &query(Resolution::Hour, T0, T0 + 5 * HOUR),
    )
    .await;
    assert_eq!(b.len(), 5, "a sensor with an open alert keeps its rollups");
    let raw = store
        .readings()
        .recent(Timestamp(0), 100)
        .await
        .expect("recent");
    assert_eq!(raw.iter().filter(|r| r.sensor == sensors[0]).count(), 2);
    assert_eq!(raw.iter().filter(|r| r.sensor == sensors[1]).count(), 5);
}
