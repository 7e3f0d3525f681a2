//! The unit of work: one `write_batch` is one PostgreSQL transaction holding its
//! readings, the latest values they move and its alert transitions (with their outbox
//! events).
//!
//! Everything that can refuse a batch is checked BEFORE the transaction starts (finite
//! values, known sensors, alert sensors in the named tenant), so a bad batch costs no
//! round trip inside a transaction and writes nothing. Concurrent batches each have their
//! own transaction, so one caller's failure never takes another's readings with it.
//!
//! Readings go in by one multi-row `INSERT … SELECT FROM UNNEST($1::bigint[], …) ON
//! CONFLICT DO NOTHING` (four array parameters, one statement, one round trip, whatever
//! the batch size). `benches/postgres_write.rs` measured it against COPY into a temporary
//! staging table + `INSERT … SELECT … ON CONFLICT DO NOTHING` and kept the faster: UNNEST
//! ~163k vs ~134k readings/s in 1,000-reading batches, level (~290k) at 10,000, one writer,
//! `synchronous_commit = on` (figures in that file). COPY's fixed cost (filling a temporary
//! table, truncating it at commit, a second pass to insert) is not won back by its
//! cheaper parsing at these batch sizes. Rows are sorted by key and de-duplicated (first one wins, as the table
//! keeps the first stored) before they are sent, so concurrent batches that share readings
//! (a redelivery) take their key locks in the same order and cannot deadlock; the latest
//! values are upserted in (sensor, metric) order for the same reason, and only move
//! forward (`WHERE excluded.ts > latest_readings.ts`, re-checked against the committed row
//! when another writer got there first).

use std::collections::BTreeMap;

use sqlx::PgConnection;
use vigia_core::{AlertChange, Timestamp};

use super::error::PgResultExt;
use super::{queries, PostgresStore};
use crate::{AlertTransition, StoreError, StoreResult, WriteBatch, WriteOutcome};

/// Column vectors of readings, one entry per row, ready to bind as arrays.
#[derive(Debug, Default)]
pub(crate) struct Columns {
    pub ts: Vec<i64>,
    pub sensor: Vec<i64>,
    pub metric: Vec<i64>,
    pub value: Vec<f64>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Self {
            ts: Vec::with_capacity(n),
            sensor: Vec::with_capacity(n),
            metric: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, ts: i64, sensor: i64, metric: i64, value: f64) {
        self.ts.push(ts);
        self.sensor.push(sensor);
        self.metric.push(metric);
        self.value.push(value);
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }
}

/// Inserts readings, skipping those already stored; returns how many were new.
pub(crate) async fn insert_readings(conn: &mut PgConnection, rows: &Columns) -> StoreResult<u64> {
    if rows.len() == 0 {
        return Ok(0);
    }
    Ok(sqlx::query(
        "INSERT INTO readings (ts, sensor_id, metric_id, value)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::float8[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&rows.ts)
    .bind(&rows.sensor)
    .bind(&rows.metric)
    .bind(&rows.value)
    .execute(&mut *conn)
    .await
    .pg()?
    .rows_affected())
}

/// Moves each (sensor, metric)'s latest value forward to the given reading when newer.
/// `rows` holds one row per (sensor, metric), in that order.
pub(crate) async fn upsert_latest(conn: &mut PgConnection, rows: &Columns) -> StoreResult<()> {
    if rows.len() == 0 {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO latest_readings (sensor_id, metric_id, ts, value)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::float8[])
         ON CONFLICT (sensor_id, metric_id) DO UPDATE SET ts = excluded.ts, value = excluded.value
         WHERE excluded.ts > latest_readings.ts",
    )
    .bind(&rows.sensor)
    .bind(&rows.metric)
    .bind(&rows.ts)
    .bind(&rows.value)
    .execute(&mut *conn)
    .await
    .pg()?;
    Ok(())
}

/// Readings sorted by key and de-duplicated (first occurrence wins), and the newest
/// reading per (sensor, metric) (strictly newer only: at equal ts the first wins, as in
/// the readings table).
pub(crate) fn prepare(rows: Vec<(i64, i64, i64, f64)>) -> (Columns, Columns) {
    let mut latest: BTreeMap<(i64, i64), (i64, f64)> = BTreeMap::new();
    for &(ts, sensor, metric, value) in &rows {
        let slot = latest.entry((sensor, metric)).or_insert((ts, value));
        if ts > slot.0 {
            *slot = (ts, value);
        }
    }
    let mut rows = rows;
    // Stable: among equal keys the first given stays first, and dedup keeps it.
    rows.sort_by_key(|&(ts, sensor, metric, _)| (ts, sensor, metric));
    rows.dedup_by_key(|&mut (ts, sensor, metric, _)| (ts, sensor, metric));
    let mut readings = Columns::with_capacity(rows.len());
    for (ts, sensor, metric, value) in rows {
        readings.push(ts, sensor, metric, value);
    }
    let mut newest = Columns::with_capacity(latest.len());
    for ((sensor, metric), (ts, value)) in latest {
        newest.push(ts, sensor, metric, value);
    }
    (readings, newest)
}

pub(crate) async fn write_batch(
    store: &PostgresStore,
    batch: WriteBatch,
) -> StoreResult<WriteOutcome> {
    for r in &batch.readings {
        if !r.value.is_finite() {
            return Err(StoreError::Conflict(format!(
                "reading of sensor id {} at {} is not a finite number",
                r.sensor, r.ts.0
            )));
        }
    }
    let mut wanted: Vec<i64> = batch.readings.iter().map(|r| r.sensor.0).collect();
    for t in &batch.alerts {
        wanted.push(match t {
            AlertTransition::Open(new) => new.sensor.0,
            AlertTransition::Resolve { sensor, .. } => sensor.0,
        });
    }
    wanted.extend(batch.excursions.iter().map(|e| e.sensor.0));
    let tenants = store.sensor_tenants(wanted).await?;
    if let Some(r) = batch
        .readings
        .iter()
        .find(|r| !tenants.contains_key(&r.sensor.0))
    {
        return Err(StoreError::Conflict(format!(
            "reading for unknown sensor id {}",
            r.sensor
        )));
    }
    for t in &batch.alerts {
        let (sensor, tenant) = match t {
            AlertTransition::Open(new) => (new.sensor, new.tenant),
            AlertTransition::Resolve { sensor, tenant, .. } => (*sensor, *tenant),
        };
        if tenants.get(&sensor.0) != Some(&tenant.0) {
            return Err(StoreError::Conflict(format!(
                "alert for sensor id {sensor}, which is not a sensor of tenant {tenant}"
            )));
        }
    }
    for e in &batch.excursions {
        if tenants.get(&e.sensor.0) != Some(&e.tenant.0) {
            return Err(crate::excursions::not_in_tenant(e));
        }
        crate::excursions::check(e)?;
    }
    // In key order, so concurrent batches that share excursions (a redelivery) lock
    // their rows in the same order and cannot deadlock.
    let mut excursions: Vec<&crate::ExcursionUpsert> = batch.excursions.iter().collect();
    excursions.sort_by(|a, b| (a.sensor, a.start, &a.rule).cmp(&(b.sensor, b.start, &b.rule)));
    let metrics = store
        .metric_ids(batch.readings.iter().map(|r| r.metric.as_str()))
        .await?;
    let rows = batch
        .readings
        .iter()
        .map(|r| (r.ts.0, r.sensor.0, metrics[r.metric.as_str()], r.value))
        .collect();
    let (readings, newest) = prepare(rows);

    let mut tx = store.write.begin().await.pg()?;
    // Read once per batch, FOR SHARE: a roll-up cannot move them until this commits.
    let watermarks = super::rollups::watermarks(&mut tx, "FOR SHARE").await?;
    let written = insert_readings(&mut tx, &readings).await?;
    let keys: Vec<(i64, i64, i64)> = (0..readings.len())
        .map(|i| (readings.ts[i], readings.sensor[i], readings.metric[i]))
        .collect();
    super::rollups::mark_late(&mut tx, &watermarks, &keys).await?;
    upsert_latest(&mut tx, &newest).await?;
    if !batch.alerts.is_empty() {
        // After the readings (which never wait on it), before any alert row.
        queries::lock_outbox(&mut tx).await?;
    }
    let mut changed = Vec::new();
    for transition in &batch.alerts {
        match transition {
            AlertTransition::Open(new) => {
                if let Some(alert) = queries::open_alert(&mut tx, new).await? {
                    queries::alert_changed(&mut tx, AlertChange::Opened, &alert, Timestamp::now())
                        .await?;
                    changed.push((AlertChange::Opened, alert));
                }
            }
            AlertTransition::Resolve {
                tenant,
                sensor,
                rule,
                at,
            } => {
                if let Some(alert) =
                    queries::auto_resolve(&mut tx, *tenant, *sensor, rule, *at).await?
                {
                    queries::alert_changed(
                        &mut tx,
                        AlertChange::Resolved,
                        &alert,
                        Timestamp::now(),
                    )
                    .await?;
                    changed.push((AlertChange::Resolved, alert));
                }
            }
        }
    }
    for e in excursions {
        super::excursions::upsert(&mut tx, e).await?;
    }
    tx.commit().await.pg()?;
    Ok(WriteOutcome {
        readings_written: written as usize,
        alerts: changed,
    })
}

/// Metric name → id, creating missing names. Runs outside the batch's transaction, in
/// autocommit: an interned name is harmless if the batch later fails, and interning
/// inside would hold the new name's key lock until that batch commits.
pub(crate) async fn intern_metrics(
    conn: &mut PgConnection,
    names: &[&str],
) -> StoreResult<Vec<(i64, String)>> {
    sqlx::query(
        "INSERT INTO metrics (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
    )
    .bind(names)
    .execute(&mut *conn)
    .await
    .pg()?;
    sqlx::query_as("SELECT id, name FROM metrics WHERE name = ANY($1)")
        .bind(names)
        .fetch_all(&mut *conn)
        .await
        .pg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_sorts_dedups_and_keeps_the_first() {
        let (readings, newest) = prepare(vec![
            (30, 1, 1, 3.0),
            (10, 1, 1, 1.0),
            (30, 1, 1, 99.0),
            (5, 2, 1, 5.0),
            (10, 1, 2, 7.0),
        ]);
        assert_eq!(readings.ts, [5, 10, 10, 30]);
        assert_eq!(readings.sensor, [2, 1, 1, 1]);
        assert_eq!(readings.metric, [1, 1, 2, 1]);
        assert_eq!(
            readings.value,
            [5.0, 1.0, 7.0, 3.0],
            "the first of duplicates wins"
        );
        assert_eq!(newest.sensor, [1, 1, 2]);
        assert_eq!(newest.metric, [1, 2, 1]);
        assert_eq!(newest.ts, [30, 10, 5]);
        assert_eq!(newest.value, [3.0, 7.0, 5.0]);
    }
}
