//! Excursions of one sensor as the API shows them: each time it left a rule's limits,
//! read from the excursions table (never from raw readings, which may have expired).

use serde::Serialize;
use utoipa::ToSchema;
use vigia_core::{Permission, Timestamp};
use vigia_store::{Excursion, ExcursionQuery};

use crate::sensors::no_sensor;
use crate::{Caller, Page, SensorService, ServiceError};

/// One excursion past a rule's limits.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ExcursionView {
    /// The rule whose limits were left.
    pub rule: String,
    pub metric: String,
    /// Event time of the first out-of-range reading.
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    /// Event time of the first in-range reading after it; null while it goes on.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub end: Option<Timestamp>,
    /// Event time of the newest reading counted (the closing one once ended).
    #[schema(value_type = String, format = DateTime)]
    pub last: Timestamp,
    /// Whether it is still going on.
    pub ongoing: bool,
    /// The reading farthest past the limits.
    pub peak: f64,
    /// Time out of range, seconds: from `start` to `end` (or `last` while ongoing); a
    /// silence inside counts as out of range.
    pub seconds_out: f64,
    /// Silences inside it (a spacing over twice the sensor's usual one).
    pub gaps: i64,
    /// Their total length, seconds.
    pub gap_seconds: f64,
}

impl From<Excursion> for ExcursionView {
    fn from(e: Excursion) -> Self {
        ExcursionView {
            ongoing: e.end.is_none(),
            rule: e.rule,
            metric: e.metric,
            start: e.start,
            end: e.end,
            last: e.last,
            peak: e.peak,
            seconds_out: e.out_ms as f64 / 1000.0,
            gaps: e.gaps,
            gap_seconds: e.gap_ms as f64 / 1000.0,
        }
    }
}

/// Which excursions of a sensor to list.
#[derive(Debug, Clone, PartialEq)]
pub struct ExcursionRequest {
    /// Those overlapping `[from, to)`.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Only after this (start, rule): the next page.
    pub after: Option<(Timestamp, String)>,
    pub limit: usize,
}

impl SensorService {
    /// A page of the sensor's excursions overlapping the request's range, oldest first by
    /// (start, rule); `NotFound` for an unknown sensor.
    pub async fn excursions(
        &self,
        caller: &Caller,
        key: &str,
        request: &ExcursionRequest,
    ) -> Result<Page<ExcursionView>, ServiceError> {
        caller.require(Permission::Read)?;
        let sensor = self
            .store()
            .catalog()
            .get_sensor(caller.tenant, key)
            .await?
            .ok_or_else(|| no_sensor(key))?;
        // One more than asked tells whether another page follows.
        let mut items = self
            .store()
            .excursions()
            .list(&ExcursionQuery {
                tenant: caller.tenant,
                sensor: sensor.id,
                from: request.from,
                to: request.to,
                after: request.after.clone(),
                limit: request.limit.saturating_add(1),
            })
            .await?;
        let has_more = items.len() > request.limit;
        items.truncate(request.limit);
        Ok(Page {
            items: items.into_iter().map(ExcursionView::from).collect(),
            has_more,
        })
    }
}
