//! Dead letters in memory, under their own lock: they change nothing else.

use std::collections::BTreeMap;

use async_trait::async_trait;
use vigia_core::{TenantId, Timestamp};

use super::VolatileStore;
use crate::dead_letters::summary_sensors;
use crate::{
    DeadLetter, DeadLetterRepo, DeadLetterSummary, NewDeadLetter, StoreError, StoreResult,
};

/// Dead letters by id, with their tenant.
#[derive(Default)]
pub(super) struct DeadLetters {
    letters: BTreeMap<u64, (TenantId, DeadLetter)>,
    /// Ids are never reused, even after deletes (as AUTOINCREMENT).
    last_id: u64,
}

#[async_trait]
impl DeadLetterRepo for VolatileStore {
    async fn put(&self, letter: NewDeadLetter, at: Timestamp) -> StoreResult<u64> {
        let mut table = self.lock(&self.dead_letters)?;
        table.last_id += 1;
        let id = table.last_id;
        let stored = DeadLetter {
            summary: DeadLetterSummary {
                id,
                reason: letter.reason,
                received_at: letter.received_at,
                dead_at: at,
                readings: letter.readings.len() as u64,
                sensors: summary_sensors(&letter.readings),
            },
            readings: letter.readings,
        };
        table.letters.insert(id, (letter.tenant, stored));
        Ok(id)
    }

    async fn list(
        &self,
        tenant: TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetterSummary>> {
        let table = self.lock(&self.dead_letters)?;
        Ok(table
            .letters
            .range(..before.unwrap_or(u64::MAX))
            .rev()
            .filter(|(_, (owner, _))| *owner == tenant)
            .take(limit)
            .map(|(_, (_, letter))| letter.summary.clone())
            .collect())
    }

    async fn get(&self, tenant: TenantId, id: u64) -> StoreResult<DeadLetter> {
        let table = self.lock(&self.dead_letters)?;
        match table.letters.get(&id) {
            Some((owner, letter)) if *owner == tenant => Ok(letter.clone()),
            _ => Err(StoreError::NotFound),
        }
    }

    async fn delete(&self, tenant: TenantId, id: u64) -> StoreResult<()> {
        let mut table = self.lock(&self.dead_letters)?;
        match table.letters.get(&id) {
            Some((owner, _)) if *owner == tenant => {
                table.letters.remove(&id);
                Ok(())
            }
            _ => Err(StoreError::NotFound),
        }
    }
}
