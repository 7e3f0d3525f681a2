//! Excursions in memory, with the readings under the data lock: the unit of work writes
//! them together.

use std::collections::BTreeMap;

use async_trait::async_trait;
use vigia_core::{SensorId, Timestamp};

use super::VolatileStore;
use crate::excursions::{overlaps, replaces};
use crate::{Excursion, ExcursionQuery, ExcursionRepo, ExcursionUpsert, StoreResult};

/// Excursions keyed (sensor, start, rule): one sensor's are one range, in list order.
#[derive(Default)]
pub(super) struct Excursions {
    rows: BTreeMap<(SensorId, Timestamp, String), Excursion>,
}

impl Excursions {
    /// Inserts or replaces the excursion of (sensor, rule, start), unless the stored one
    /// has seen further.
    pub(super) fn upsert(&mut self, new: &ExcursionUpsert) {
        let key = (new.sensor, new.start, new.rule.clone());
        match self.rows.get_mut(&key) {
            Some(stored) if !replaces(stored, new) => {}
            Some(stored) => *stored = new.clone().into(),
            None => {
                self.rows.insert(key, new.clone().into());
            }
        }
    }
}

#[async_trait]
impl ExcursionRepo for VolatileStore {
    async fn list(&self, query: &ExcursionQuery) -> StoreResult<Vec<Excursion>> {
        let data = self.read()?;
        let rows = &data.excursions.rows;
        let from = match &query.after {
            Some((start, rule)) => std::ops::Bound::Excluded((query.sensor, *start, rule.clone())),
            None => std::ops::Bound::Included((query.sensor, Timestamp(i64::MIN), String::new())),
        };
        let to = std::ops::Bound::Excluded((query.sensor, query.to, String::new()));
        Ok(rows
            .range((from, to))
            .map(|(_, e)| e)
            .filter(|e| e.tenant == query.tenant && overlaps(e, query.from, query.to))
            .take(query.limit)
            .cloned()
            .collect())
    }

    async fn ongoing(&self) -> StoreResult<Vec<Excursion>> {
        let data = self.read()?;
        Ok(data
            .excursions
            .rows
            .values()
            .filter(|e| e.end.is_none())
            .cloned()
            .collect())
    }
}
