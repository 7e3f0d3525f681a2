//! The sensor service: lists and views with latest values and unresolved-alert counts,
//! create-or-replace (PUT) in one transaction, and reading series.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;
use vigia_core::sensor::validate_sensor_key;
use vigia_core::{
    AlertChange, Control, FieldError, LiveEvent, Permission, Sensor, SensorId, SensorSpec,
    Timestamp, DEFAULT_METRIC,
};
use vigia_fanout::Fanout;
use vigia_store::{LatestReading, ReadingQuery, Resolution, SensorScope, Store};

use crate::series::{self, SeriesAnswer, SeriesRequest, SeriesSource};

use crate::{Caller, Page, ServiceError};

/// Latest value of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LatestValue {
    pub metric: String,
    #[schema(value_type = String, format = DateTime)]
    pub ts: Timestamp,
    pub value: f64,
}

/// A sensor with its latest values and how many alerts are unresolved.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SensorView {
    #[serde(flatten)]
    pub sensor: Sensor,
    pub latest: Vec<LatestValue>,
    /// Open plus acknowledged alerts.
    pub open_alerts: usize,
}

/// Sensors of the caller's tenant.
pub struct SensorService {
    store: Arc<dyn Store>,
    fanout: Arc<dyn Fanout>,
}

impl SensorService {
    pub fn new(store: Arc<dyn Store>, fanout: Arc<dyn Fanout>) -> Self {
        Self { store, fanout }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// One page of the tenant's sensors, ordered by key, after the key `after`: three
    /// queries whatever the page size, each reading only the page's sensors.
    pub async fn list(
        &self,
        caller: &Caller,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<SensorView>, ServiceError> {
        caller.require(Permission::Read)?;
        let mut sensors = self
            .store
            .catalog()
            .list_sensors(caller.tenant, after, limit.saturating_add(1))
            .await?;
        let has_more = sensors.len() > limit;
        sensors.truncate(limit);
        let Some(last) = sensors.last() else {
            return Ok(Page {
                items: Vec::new(),
                has_more: false,
            });
        };
        let scope = SensorScope::Keys {
            after: after.map(str::to_string),
            through: last.key.clone(),
        };
        let mut latest: HashMap<SensorId, Vec<LatestReading>> = HashMap::new();
        for l in self.store.readings().latest(caller.tenant, &scope).await? {
            latest.entry(l.sensor).or_default().push(l);
        }
        let counts: HashMap<SensorId, u64> = self
            .store
            .alerts()
            .unresolved_counts(caller.tenant, &scope)
            .await?
            .into_iter()
            .collect();
        let items = sensors
            .into_iter()
            .map(|s| {
                let latest = latest.remove(&s.id).unwrap_or_default();
                let open = counts.get(&s.id).copied().unwrap_or(0);
                view(s, latest, open)
            })
            .collect();
        Ok(Page { items, has_more })
    }

    /// One sensor, reading only that sensor's latest values and counts.
    pub async fn get(&self, caller: &Caller, key: &str) -> Result<SensorView, ServiceError> {
        caller.require(Permission::Read)?;
        let sensor = self
            .store
            .catalog()
            .get_sensor(caller.tenant, key)
            .await?
            .ok_or_else(|| no_sensor(key))?;
        self.single_view(caller, sensor).await
    }

    /// Creates or replaces a sensor (PUT semantics) and, in the same transaction,
    /// resolves the unresolved alerts of rules it no longer has. Returns the view and
    /// whether it was created.
    pub async fn put(
        &self,
        caller: &Caller,
        key: &str,
        mut spec: SensorSpec,
    ) -> Result<(SensorView, bool), ServiceError> {
        caller.require(Permission::Operate)?;
        let mut errors = Vec::new();
        if let Err(message) = validate_sensor_key(key) {
            errors.push(FieldError::new("key", message));
        }
        if let Err(field_errors) = spec.normalise() {
            errors.extend(field_errors);
        }
        if !errors.is_empty() {
            return Err(ServiceError::Invalid {
                detail: "the sensor is invalid; nothing was changed".into(),
                errors,
            });
        }
        let by = format!("{} (rule removed)", caller.key_name);
        let put = self
            .store
            .catalog()
            .put_sensor(caller.tenant, key, &spec, &by, Timestamp::now())
            .await?;
        // Workers and ingest refresh their directory; the removed rules' excursions are
        // forgotten; live subscribers hear of the resolutions.
        self.fanout
            .publish_control(Control::SensorChanged(Arc::new(put.sensor.clone())));
        for alert in put.resolved {
            self.fanout.publish_control(Control::ExcursionForgotten {
                sensor: alert.sensor_id,
                rule: alert.rule.clone(),
            });
            self.fanout.publish_live(LiveEvent::Alert {
                tenant: alert.tenant,
                change: AlertChange::Resolved,
                alert: Box::new(alert),
            });
        }
        let view = self.single_view(caller, put.sensor).await?;
        Ok((view, put.created))
    }

    /// A series of one sensor's metric, from rollups where the step allows (see
    /// [`crate::series`]); `NotFound` for an unknown sensor.
    pub async fn series(
        &self,
        caller: &Caller,
        key: &str,
        request: &SeriesRequest,
    ) -> Result<SeriesAnswer, ServiceError> {
        caller.require(Permission::Read)?;
        let tenant = caller.tenant;
        let readings = self.store.readings();
        let not_found = || ServiceError::not_found_as(no_sensor(key).to_string());
        let raw_query = |step_ms| ReadingQuery {
            metric: request.metric.clone(),
            from: request.from,
            to: request.to,
            limit: request.limit,
            step_ms,
        };
        let step_ms = series::step_of(request);
        let Some((step, resolution)) =
            step_ms.and_then(|step| series::resolution_for(step).map(|r| (step, r)))
        else {
            let points = readings
                .series(tenant, key, &raw_query(step_ms))
                .await
                .map_err(not_found())?;
            return Ok(SeriesAnswer {
                points: points.into_iter().map(Into::into).collect(),
                step_ms,
                source: SeriesSource::Raw,
            });
        };
        let rows = self
            .store
            .rollups()
            .series(
                tenant,
                key,
                &series::rollup_query(request, step, resolution),
            )
            .await
            .map_err(not_found())?;
        let Some(tail_query) = series::tail_query(request, &rows, resolution) else {
            // Nothing rolled up for this sensor (yet): the store averages raw readings.
            let points = readings
                .series(tenant, key, &raw_query(Some(step)))
                .await
                .map_err(not_found())?;
            return Ok(SeriesAnswer {
                points: points.into_iter().map(Into::into).collect(),
                step_ms: Some(step),
                source: SeriesSource::Raw,
            });
        };
        let tail = readings
            .series(tenant, key, &tail_query)
            .await
            .map_err(not_found())?;
        let points = if tail.len() < series::RAW_TAIL_CAP {
            series::merge(&rows, &tail, step, request.limit)
        } else {
            let averaged = series::averaged_tail_query(request, &rows, step, resolution);
            let tail = readings
                .series(tenant, key, &averaged)
                .await
                .map_err(not_found())?;
            series::concat(&rows, tail, step, request.limit, averaged.from)
        };
        Ok(SeriesAnswer {
            points,
            step_ms: Some(step),
            source: match resolution {
                Resolution::Minute => SeriesSource::Minute,
                Resolution::Hour => SeriesSource::Hour,
            },
        })
    }

    async fn single_view(
        &self,
        caller: &Caller,
        sensor: Sensor,
    ) -> Result<SensorView, ServiceError> {
        let latest = self
            .store
            .readings()
            .latest(caller.tenant, &SensorScope::One(sensor.id))
            .await?;
        let open = self
            .store
            .alerts()
            .unresolved_counts(caller.tenant, &SensorScope::One(sensor.id))
            .await?
            .first()
            .map_or(0, |(_, n)| *n);
        Ok(view(sensor, latest, open))
    }
}

pub(crate) fn no_sensor(key: &str) -> ServiceError {
    ServiceError::NotFound(format!("no sensor `{key}` in this tenant"))
}

fn view(sensor: Sensor, latest: Vec<LatestReading>, open_alerts: u64) -> SensorView {
    let mut latest: Vec<LatestValue> = latest
        .into_iter()
        .map(|l| LatestValue {
            metric: l.metric,
            ts: l.ts,
            value: l.value,
        })
        .collect();
    // The main metric first: the page shows it big.
    latest.sort_by_key(|l| (l.metric != DEFAULT_METRIC, l.metric.clone()));
    SensorView {
        sensor,
        latest,
        open_alerts: usize::try_from(open_alerts).unwrap_or(usize::MAX),
    }
}
