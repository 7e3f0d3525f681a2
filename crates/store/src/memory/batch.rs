//! The unit of work in memory: a [`WriteBatch`] is checked whole, then applied whole,
//! under the write lock, so it lands completely or not at all and no reader sees half.

use vigia_core::{AlertChange, SensorId, TenantId, Timestamp};

use super::catalog::Catalog;
use super::Data;
use crate::{AlertTransition, StoreError, StoreResult, WriteBatch, WriteOutcome};

impl Data {
    /// Commits `batch` atomically: every check that can fail runs before anything
    /// changes, with SQLite's errors (`Conflict` for an unknown sensor, a non-finite
    /// value or an alert of a sensor outside its tenant).
    pub(super) fn write_batch(&mut self, batch: &WriteBatch) -> StoreResult<WriteOutcome> {
        let Data {
            catalog,
            readings,
            alerts,
            outbox,
            rollups,
            excursions,
        } = self;
        let now = Timestamp::now();
        let sensor_keys = check(catalog, batch)?;

        let mut written = 0;
        for reading in &batch.readings {
            if readings.insert(reading) {
                written += 1;
                // A late reading (behind a watermark) marks its buckets dirty here, in
                // the same change as the reading.
                if let Some(metric) = readings.metric_id(&reading.metric) {
                    rollups.reading_stored(reading.sensor, metric, reading.ts);
                }
            }
        }
        let mut changed = Vec::new();
        for (transition, sensor_key) in batch.alerts.iter().zip(sensor_keys) {
            match transition {
                AlertTransition::Open(new) => {
                    if let Some(alert) = alerts.open(new, sensor_key) {
                        outbox.alert_changed(AlertChange::Opened, &alert, now);
                        changed.push((AlertChange::Opened, alert));
                    }
                }
                AlertTransition::Resolve {
                    tenant,
                    sensor,
                    rule,
                    at,
                } => {
                    if let Some(alert) = alerts.auto_resolve(*tenant, *sensor, rule, *at) {
                        outbox.alert_changed(AlertChange::Resolved, &alert, now);
                        changed.push((AlertChange::Resolved, alert));
                    }
                }
            }
        }
        for excursion in &batch.excursions {
            excursions.upsert(excursion);
        }
        Ok(WriteOutcome {
            readings_written: written,
            alerts: changed,
        })
    }
}

/// Everything about `batch` that could make it fail; returns the sensor key of each
/// alert transition, in order, for the alerts it opens.
fn check<'c>(catalog: &'c Catalog, batch: &WriteBatch) -> StoreResult<Vec<&'c str>> {
    // Readings of a batch come grouped by sensor: look each run's sensor up once.
    let mut last_sensor = None;
    for r in &batch.readings {
        if last_sensor != Some(r.sensor) {
            if catalog.sensor(r.sensor).is_none() {
                return Err(StoreError::Conflict(format!(
                    "reading for unknown sensor id {}",
                    r.sensor
                )));
            }
            last_sensor = Some(r.sensor);
        }
        if !r.value.is_finite() {
            return Err(StoreError::Conflict(format!(
                "reading of sensor id {} at {} is not a finite number",
                r.sensor, r.ts.0
            )));
        }
    }
    for e in &batch.excursions {
        if catalog
            .sensor(e.sensor)
            .is_none_or(|s| s.tenant != e.tenant)
        {
            return Err(crate::excursions::not_in_tenant(e));
        }
        crate::excursions::check(e)?;
    }
    batch
        .alerts
        .iter()
        .map(|transition| match transition {
            AlertTransition::Open(new) => {
                // SQLite stores a NaN as NULL, which the NOT NULL `value` column refuses.
                if new.value.is_nan() {
                    return Err(StoreError::Conflict(format!(
                        "alert for sensor id {} has no value (NaN)",
                        new.sensor
                    )));
                }
                sensor_in_tenant(catalog, new.sensor, new.tenant)
            }
            AlertTransition::Resolve { tenant, sensor, .. } => {
                sensor_in_tenant(catalog, *sensor, *tenant)
            }
        })
        .collect()
}

/// The sensor's key when it belongs to `tenant`; `Conflict` otherwise (or when unknown).
fn sensor_in_tenant(catalog: &Catalog, sensor: SensorId, tenant: TenantId) -> StoreResult<&str> {
    match catalog.sensor(sensor) {
        Some(s) if s.tenant == tenant => Ok(&s.key),
        _ => Err(StoreError::Conflict(format!(
            "alert for sensor id {sensor}, which is not a sensor of tenant {tenant}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use vigia_core::{AlertId, RuleKind, Severity, Timestamp};

    use super::*;
    use crate::memory::VolatileStore;
    use crate::{NewAlert, ReadingQuery, SensorReading, Store};

    fn reading(sensor: SensorId, ts: i64) -> SensorReading {
        SensorReading {
            sensor,
            metric: "humidity".into(),
            ts: Timestamp(ts),
            value: 1.0,
        }
    }

    fn open(tenant: TenantId, sensor: SensorId, rule: &str, value: f64) -> AlertTransition {
        AlertTransition::Open(NewAlert {
            tenant,
            sensor,
            rule: rule.into(),
            kind: RuleKind::Threshold,
            severity: Severity::Critical,
            metric: "humidity".into(),
            value,
            message: "m".into(),
            opened_at: Timestamp(0),
            details: None,
        })
    }

    /// The last transition of a batch failing leaves nothing of what came before it:
    /// no reading, no latest value, no alert, not even a used alert id.
    #[tokio::test]
    async fn a_failure_at_the_end_changes_nothing() {
        let store = VolatileStore::new();
        let tenant = store.catalog().default_tenant().await.expect("tenant").id;
        let other = store
            .catalog()
            .create_tenant("o", "O")
            .await
            .expect("tenant")
            .id;
        let sensor = store
            .catalog()
            .provision_sensors(tenant, &["CF-1".into()])
            .await
            .expect("sensor")[0]
            .id;
        let good = || {
            (
                vec![reading(sensor, 0), reading(sensor, 1)],
                vec![open(tenant, sensor, "a", 1.0)],
            )
        };
        let bad_endings = [
            ("NaN alert value", open(tenant, sensor, "b", f64::NAN)),
            (
                "Resolve in another tenant",
                AlertTransition::Resolve {
                    tenant: other,
                    sensor,
                    rule: "a".into(),
                    at: Timestamp(5),
                },
            ),
        ];
        for (what, bad) in bad_endings {
            let (readings, mut alerts) = good();
            alerts.push(bad);
            let result = store
                .write_batch(WriteBatch {
                    readings,
                    alerts,
                    excursions: Vec::new(),
                })
                .await;
            assert!(
                matches!(result, Err(StoreError::Conflict(_))),
                "{what}: {result:?}"
            );
            let query = ReadingQuery {
                metric: "humidity".into(),
                from: Timestamp(i64::MIN),
                to: Timestamp(i64::MAX),
                limit: usize::MAX,
                step_ms: None,
            };
            let series = store.readings().series(tenant, "CF-1", &query).await;
            assert!(series.expect("series").is_empty(), "{what}: readings");
            assert!(
                store
                    .readings()
                    .all_latest()
                    .await
                    .expect("latest")
                    .is_empty(),
                "{what}"
            );
            assert!(
                store
                    .alerts()
                    .unresolved()
                    .await
                    .expect("alerts")
                    .is_empty(),
                "{what}"
            );
        }
        let (readings, alerts) = good();
        let outcome = store
            .write_batch(WriteBatch {
                readings,
                alerts,
                excursions: Vec::new(),
            })
            .await
            .expect("the good part alone");
        assert_eq!(outcome.readings_written, 2);
        assert_eq!(
            outcome.alerts[0].1.id,
            AlertId(1),
            "failed batches used no id"
        );
        assert_eq!(outcome.alerts[0].1.sensor, "CF-1");
    }
}
