//! Named, expiring leases in memory, and the leases port over them.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use vigia_core::Timestamp;

use super::VolatileStore;
use crate::{LeaseRepo, StoreResult};

/// Who holds a lease, and until when.
struct Lease {
    holder: String,
    expires_at: Timestamp,
}

/// The leases by name.
#[derive(Default)]
pub(super) struct Leases {
    leases: HashMap<String, Lease>,
}

impl Leases {
    /// Takes or renews the lease; true when `holder` holds it afterwards.
    fn try_acquire(&mut self, name: &str, holder: &str, ttl: Duration, now: Timestamp) -> bool {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = Timestamp(now.0.saturating_add(ttl_ms));
        match self.leases.get_mut(name) {
            // Renewal by its holder, or takeover of an expired lease.
            Some(lease) if lease.holder == holder || lease.expires_at <= now => {
                lease.holder = holder.to_string();
                lease.expires_at = expires_at;
                true
            }
            Some(_) => false,
            None => {
                self.leases.insert(
                    name.to_string(),
                    Lease {
                        holder: holder.to_string(),
                        expires_at,
                    },
                );
                true
            }
        }
    }

    /// Live leases named `prefix…`, by name.
    fn holders(&self, prefix: &str, now: Timestamp) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .leases
            .iter()
            .filter(|(name, lease)| name.starts_with(prefix) && lease.expires_at > now)
            .map(|(name, lease)| (name.clone(), lease.holder.clone()))
            .collect();
        out.sort();
        out
    }

    /// Drops the lease if `holder` holds it.
    fn release(&mut self, name: &str, holder: &str) {
        if self.leases.get(name).is_some_and(|l| l.holder == holder) {
            self.leases.remove(name);
        }
    }
}

#[async_trait]
impl LeaseRepo for VolatileStore {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<bool> {
        Ok(self.lock(&self.leases)?.try_acquire(name, holder, ttl, now))
    }

    async fn release(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.lock(&self.leases)?.release(name, holder);
        Ok(())
    }

    async fn holders(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<(String, String)>> {
        Ok(self.lock(&self.leases)?.holders(prefix, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_ttl_saturates_and_expiry_is_inclusive() {
        let mut leases = Leases::default();
        assert!(leases.try_acquire("l", "a", Duration::MAX, Timestamp(5)));
        assert!(!leases.try_acquire("l", "b", Duration::ZERO, Timestamp(i64::MAX - 1)));
        assert!(
            leases.try_acquire("l", "b", Duration::ZERO, Timestamp(i64::MAX)),
            "expired at the very instant it expires"
        );
        assert!(leases.try_acquire("zero", "a", Duration::ZERO, Timestamp(0)));
        assert!(
            leases.try_acquire("zero", "b", Duration::ZERO, Timestamp(0)),
            "a zero ttl expires at once"
        );
        leases.release("zero", "b");
        assert!(
            !leases.leases.contains_key("zero"),
            "released by its holder"
        );
    }
}
