//! Which connectors exist and what their tokens are: the port the router asks, so the
//! `connectors` store table (later work) plugs in behind it. [`MemoryDirectory`] is the
//! in-process implementation (tokens kept as SHA-256 only, as API keys are), used until
//! that table lands and by tests.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use vigia_core::TenantId;

use crate::RelayError;

/// The registered connectors.
#[async_trait]
pub trait ConnectorDirectory: Send + Sync {
    /// The tenant of connector `id` when `token` is its current token; `None` when the
    /// connector is unknown, the token wrong or revoked.
    async fn authenticate(&self, id: &str, token: &str) -> Result<Option<TenantId>, RelayError>;

    /// Whether `tenant` has a connector `id` (so an absent channel is "offline", not
    /// "unknown").
    async fn exists(&self, tenant: TenantId, id: &str) -> Result<bool, RelayError>;
}

/// Connectors held in memory, tokens by SHA-256.
#[derive(Debug, Default)]
pub struct MemoryDirectory {
    connectors: RwLock<HashMap<String, (TenantId, [u8; 32])>>,
}

impl MemoryDirectory {
    /// Registers (or re-keys) connector `id` of `tenant` with `token`. A connector id is
    /// unique across tenants, as the token lookup needs.
    pub fn register(&self, tenant: TenantId, id: &str, token: &str) {
        let mut connectors = self.connectors.write().expect("never poisoned");
        connectors.insert(
            id.to_owned(),
            (tenant, Sha256::digest(token.as_bytes()).into()),
        );
    }

    /// Forgets connector `id`: its token no longer authenticates.
    pub fn revoke(&self, id: &str) {
        self.connectors.write().expect("never poisoned").remove(id);
    }
}

#[async_trait]
impl ConnectorDirectory for MemoryDirectory {
    async fn authenticate(&self, id: &str, token: &str) -> Result<Option<TenantId>, RelayError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let connectors = self.connectors.read().expect("never poisoned");
        Ok(connectors
            .get(id)
            // Hashes compared, never tokens: equal-length digests leak nothing useful.
            .filter(|(_, stored)| *stored == hash)
            .map(|(tenant, _)| *tenant))
    }

    async fn exists(&self, tenant: TenantId, id: &str) -> Result<bool, RelayError> {
        let connectors = self.connectors.read().expect("never poisoned");
        Ok(connectors
            .get(id)
            .is_some_and(|(owner, _)| *owner == tenant))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_and_tenants_are_checked() {
        let directory = MemoryDirectory::default();
        directory.register(TenantId(1), "cc:28:aa:00:00:01", "vg_right");
        let cases = [
            ("cc:28:aa:00:00:01", "vg_right", Some(TenantId(1))),
            ("cc:28:aa:00:00:01", "vg_wrong", None),
            ("cc:28:aa:00:00:02", "vg_right", None),
        ];
        for (id, token, expected) in cases {
            assert_eq!(
                directory.authenticate(id, token).await.unwrap(),
                expected,
                "{id} {token}"
            );
        }
        assert!(directory
            .exists(TenantId(1), "cc:28:aa:00:00:01")
            .await
            .unwrap());
        assert!(!directory
            .exists(TenantId(2), "cc:28:aa:00:00:01")
            .await
            .unwrap());
        directory.revoke("cc:28:aa:00:00:01");
        assert_eq!(
            directory
                .authenticate("cc:28:aa:00:00:01", "vg_right")
                .await
                .unwrap(),
            None
        );
    }
}
