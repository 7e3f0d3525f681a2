//! Leases: how several processes agree that exactly one of them runs the jobs. The
//! [`Leases`] port, and [`MemoryLeases`] for one process and for tests.
//!
//! Contract (the conformance suite checks it against every backend):
//! - [`Leases::try_acquire`] gives a free or expired lease to the caller, renews the
//!   caller's own lease, and refuses a lease another holder has not let expire;
//! - a lease expires `ttl` after its last successful acquire or renew, measured by the
//!   backend's own clock;
//! - [`Leases::release`] frees the caller's own lease at once and leaves anyone else's
//!   alone; releasing a lease one does not hold is not an error.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

/// Why a lease backend did not answer; the caller cannot tell who holds the lease.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The backend failed (connection, disk, timeout).
    #[error("lease backend unavailable: {0}")]
    Unavailable(String),
}

/// Named, time-limited leases shared by every process of one deployment.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Makes `holder` hold `name` for `ttl` from now: acquires it if it is free or
    /// expired, renews it if `holder` already holds it. `Ok(true)` if `holder` holds it
    /// now, `Ok(false)` if someone else does.
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, LeaseError>;

    /// Frees `name` if `holder` holds it, so another process need not wait for expiry.
    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError>;
}

/// Leases in this process's memory, timed by tokio's clock (so paused-time tests can
/// expire them). Enough for one process; several processes need a shared backend.
#[derive(Debug, Default)]
pub struct MemoryLeases {
    // One entry per lease name; names come from code and configuration, so the map
    // stays as small as the set of names, and expired entries are dropped as met.
    held: Mutex<HashMap<String, Held>>,
}

#[derive(Debug)]
struct Held {
    holder: String,
    expires: Instant,
}

impl MemoryLeases {
    /// No lease held.
    pub fn new() -> Self {
        MemoryLeases::default()
    }

    /// Who holds `name` now, if anyone (for tests and diagnostics).
    pub fn holder(&self, name: &str) -> Option<String> {
        let held = self.lock();
        held.get(name)
            .filter(|h| h.expires > Instant::now())
            .map(|h| h.holder.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // A panic while holding this lock cannot leave the map half-updated (each
        // operation is one insert or remove), so a poisoned lock is still usable.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Leases for MemoryLeases {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, LeaseError> {
        let now = Instant::now();
        let mut held = self.lock();
        held.retain(|_, h| h.expires > now);
        if let Some(current) = held.get(name) {
            if current.holder != holder {
                return Ok(false);
            }
        }
        held.insert(
            name.to_owned(),
            Held {
                holder: holder.to_owned(),
                expires: now + ttl,
            },
        );
        Ok(true)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), LeaseError> {
        let mut held = self.lock();
        if held.get(name).is_some_and(|h| h.holder == holder) {
            held.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holder_is_reported_until_expiry() {
        let leases = MemoryLeases::new();
        assert_eq!(leases.holder("scheduler"), None);
        assert_eq!(
            leases
                .try_acquire("scheduler", "a", Duration::from_secs(10))
                .await,
            Ok(true)
        );
        assert_eq!(leases.holder("scheduler").as_deref(), Some("a"));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(leases.holder("scheduler"), None);
    }
}
