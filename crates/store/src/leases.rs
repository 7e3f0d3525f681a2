//! The leases port: named, expiring locks through the store, so one process of several
//! leads (the scheduler) or owns something, and a dead holder loses it after its TTL.

use std::time::Duration;

use async_trait::async_trait;
use vigia_core::Timestamp;

use crate::StoreResult;

/// Named leases.
#[async_trait]
pub trait LeaseRepo: Send + Sync {
    /// Takes the lease `name` for `holder` until `now + ttl` when it is free, expired or
    /// already `holder`'s (a renewal); returns whether `holder` now holds it.
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Gives the lease up if `holder` holds it; otherwise does nothing.
    async fn release(&self, name: &str, holder: &str) -> StoreResult<()>;
    /// The leases whose name starts with `prefix` that have not expired at `now`, as
    /// (name, holder), ordered by name: who is alive (members renewing a lease each) and
    /// who owns what (partitions), in one read.
    async fn holders(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<(String, String)>>;
}
