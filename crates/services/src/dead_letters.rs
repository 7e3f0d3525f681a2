//! Dead letters as admins handle them: list and read what the store refused for good
//! (see `vigia_ingest::pool`), replay a letter once its cause is fixed, or drop it.
//! Every replay and drop is audited.

use std::sync::Arc;

use vigia_bus::{Bus, BusError};
use vigia_core::{IngestBatch, Permission, Timestamp};
use vigia_store::{AuditEvent, AuditOutcome, DeadLetter, DeadLetterSummary, Store};

use crate::{AuditTrail, Caller, IngestError, Page, ServiceError};

/// The dead letters of the caller's tenant.
pub struct DeadLetterService {
    store: Arc<dyn Store>,
    /// Where replays are published; `None` in a process without a bus (role `api` alone).
    bus: Option<Arc<dyn Bus>>,
    audit: Arc<AuditTrail>,
    /// Readings partitions of the bus: a replay is published like any ingest.
    partitions: usize,
}

impl DeadLetterService {
    pub fn new(store: Arc<dyn Store>, bus: Option<Arc<dyn Bus>>, audit: Arc<AuditTrail>) -> Self {
        Self {
            store,
            bus,
            audit,
            partitions: 1,
        }
    }

    /// Publishes replays over the bus's first `partitions` readings partitions by sensor.
    pub fn with_partitions(mut self, partitions: usize) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// A page of the tenant's dead letters, newest first, with ids below `before`.
    pub async fn list(
        &self,
        caller: &Caller,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Page<DeadLetterSummary>, ServiceError> {
        caller.require(Permission::Administer)?;
        // One more than asked tells whether another page follows.
        let mut items = self
            .store
            .dead_letters()
            .list(caller.tenant, before, limit.saturating_add(1))
            .await?;
        let has_more = items.len() > limit;
        items.truncate(limit);
        Ok(Page { items, has_more })
    }

    /// One dead letter with its readings.
    pub async fn get(&self, caller: &Caller, id: u64) -> Result<DeadLetter, ServiceError> {
        caller.require(Permission::Administer)?;
        self.store
            .dead_letters()
            .get(caller.tenant, id)
            .await
            .map_err(not_found(id))
    }

    /// Publishes the letter's readings on the bus again, as a new batch of the letter's
    /// tenant, then deletes the letter; returns how many readings were published. If the
    /// delete fails after the publish, the letter stays and a second replay publishes the
    /// same readings again, which the store absorbs (readings are idempotent by sensor,
    /// metric and time). A replay the store still refuses becomes a new dead letter.
    pub async fn replay(
        &self,
        caller: &Caller,
        id: u64,
        client: &str,
    ) -> Result<usize, IngestError> {
        let letter = self.get(caller, id).await?;
        let Some(bus) = &self.bus else {
            return Err(IngestError::Bus(BusError::Unavailable(
                "this process has no bus (role `api` alone): replay through a process with the \
                 `ingest` or `worker` role"
                    .into(),
            )));
        };
        let count = letter.readings.len();
        vigia_bus::readings::publish_partitioned(
            &**bus,
            IngestBatch {
                tenant: caller.tenant,
                received_ms: Timestamp::now().0,
                readings: letter.readings,
            },
            self.partitions,
        )
        .await?;
        self.remove(caller, id, "dead_letter.replay", client)
            .await?;
        Ok(count)
    }

    /// Deletes a dead letter without replaying it.
    pub async fn delete(&self, caller: &Caller, id: u64, client: &str) -> Result<(), ServiceError> {
        caller.require(Permission::Administer)?;
        self.remove(caller, id, "dead_letter.delete", client).await
    }

    async fn remove(
        &self,
        caller: &Caller,
        id: u64,
        action: &str,
        client: &str,
    ) -> Result<(), ServiceError> {
        self.store
            .dead_letters()
            .delete(caller.tenant, id)
            .await
            .map_err(not_found(id))?;
        self.audit
            .record_now(AuditEvent {
                tenant: Some(caller.tenant),
                actor: caller.actor(),
                action: action.to_string(),
                target: format!("dead_letter:{id}"),
                outcome: AuditOutcome::Allowed,
                client: client.to_string(),
            })
            .await?;
        Ok(())
    }
}

fn not_found(id: u64) -> impl FnOnce(vigia_store::StoreError) -> ServiceError {
    ServiceError::not_found_as(format!("no dead letter {id} in this tenant"))
}
