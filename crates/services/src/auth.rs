//! API keys: generation, hashing, the bootstrap key, and the [`Authenticator`] that turns
//! a presented key into a [`Caller`] (tenant, key and role).
//!
//! Keys are 40 random base-62 characters (≈238 bits), so a single SHA-256 is enough to
//! store them safely: unlike passwords they cannot be guessed, and a slow hash (argon2)
//! on every request would cap ingest at a few hundred requests per second. Only the
//! hash reaches the store. Verified keys are cached in memory by hash; unknown keys are
//! not cached, so garbage keys cannot grow the cache; a revoked key leaves every
//! process's cache through the `KeyRevoked` control message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rand::Rng;
use sha2::{Digest, Sha256};
use vigia_core::{ApiKeyId, ApiKeyRecord, Control, Permission, Role, TenantId};
use vigia_fanout::Fanout;
use vigia_store::{NewApiKey, Store, StoreError};

use crate::ServiceError;

/// Most verified keys kept in memory.
const CACHE_LIMIT: usize = 10_000;

/// A new random API key, `vg_` followed by 40 base-62 characters.
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("vg_{body}")
}

/// The stored form of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Who is calling: the tenant every query of the request is scoped to, and the role
/// that decides what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub tenant: TenantId,
    pub key_id: ApiKeyId,
    /// The key's name, recorded as `acked_by` / `resolved_by`.
    pub key_name: String,
    pub role: Role,
}

impl Caller {
    /// `Forbidden` unless the caller's role grants `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ServiceError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ServiceError::Forbidden {
                role: self.role,
                needed: permission,
            })
        }
    }

    /// How the audit log names this caller.
    pub fn actor(&self) -> String {
        format!("key:{}:{}", self.key_id, self.key_name)
    }
}

impl From<ApiKeyRecord> for Caller {
    fn from(record: ApiKeyRecord) -> Self {
        Caller {
            tenant: record.tenant,
            key_id: record.id,
            key_name: record.name,
            role: record.role,
        }
    }
}

/// Why a key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown, revoked or malformed key.
    #[error("the API key is not valid")]
    InvalidKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verifies keys against the store, with a cache of verified ones.
pub struct Authenticator {
    store: Arc<dyn Store>,
    verified: RwLock<HashMap<[u8; 32], ApiKeyRecord>>,
}

impl Authenticator {
    /// An authenticator that drops revoked keys when the fan-out says so.
    pub fn new(store: Arc<dyn Store>, fanout: &dyn Fanout) -> Arc<Self> {
        let auth = Arc::new(Self {
            store,
            verified: RwLock::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&auth);
        fanout.on_control(Arc::new(move |message: &Control| {
            if let (Control::KeyRevoked { hash }, Some(auth)) = (message, weak.upgrade()) {
                auth.forget(hash);
            }
        }));
        auth
    }

    /// Whether `key` is in the cache of verified keys (no store round trip needed).
    pub fn is_cached(&self, key: &str) -> bool {
        let hash = hash_key(key);
        self.verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&hash)
    }

    /// The caller a presented key stands for.
    pub async fn verify(&self, key: &str) -> Result<Caller, AuthError> {
        if key.is_empty() || key.len() > 256 {
            return Err(AuthError::InvalidKey);
        }
        let hash = hash_key(key);
        let cached = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        if let Some(record) = cached {
            return Ok(record.into());
        }
        let record = self
            .store
            .catalog()
            .find_api_key(hash)
            .await?
            .ok_or(AuthError::InvalidKey)?;
        let mut cache = self.verified.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(hash, record.clone());
        Ok(record.into())
    }

    /// Drops a key from the cache (it was revoked).
    pub fn forget(&self, hash: &[u8; 32]) {
        self.verified
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(hash);
    }

    /// Drops every verified key, so each is checked against the store again on its next
    /// use: how a cache fed by a cross-process fan-out heals a lost `KeyRevoked`.
    pub fn forget_all(&self) {
        self.verified
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// What happened at first start.
#[derive(Debug, Clone, PartialEq)]
pub enum Bootstrap {
    /// Keys already existed; nothing was created.
    AlreadyDone,
    /// `VIGIA_BOOTSTRAP_TOKEN` became the default tenant's admin key.
    FromEnv,
    /// A key was generated, written to this file (mode 0600); print it once.
    Generated { key: String, file: PathBuf },
}

/// First start: when no API key exists, make the default tenant's admin key from
/// `env_token`, or generate one and write it to `<data_dir>/bootstrap-token`.
pub async fn bootstrap(
    store: &dyn Store,
    data_dir: &Path,
    env_token: Option<&str>,
) -> Result<Bootstrap, BootstrapError> {
    let catalog = store.catalog();
    let tenant = catalog.default_tenant().await?;
    if catalog.count_api_keys().await? > 0 {
        return Ok(Bootstrap::AlreadyDone);
    }
    let admin = |key: &str| NewApiKey {
        tenant: tenant.id,
        name: "bootstrap".into(),
        role: Role::Admin,
        hash: hash_key(key),
    };
    if let Some(token) = env_token {
        if token.len() < 8 || token.len() > 256 || token.chars().any(char::is_whitespace) {
            return Err(BootstrapError::WeakToken);
        }
        catalog.insert_api_key(&admin(token)).await?;
        return Ok(Bootstrap::FromEnv);
    }
    let key = generate_key();
    let file = data_dir.join("bootstrap-token");
    write_private(&file, &key)?;
    catalog.insert_api_key(&admin(&key)).await?;
    Ok(Bootstrap::Generated { key, file })
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// Why the first-start bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("VIGIA_BOOTSTRAP_TOKEN must be 8 to 256 characters without spaces")]
    WeakToken,
    #[error("could not write the bootstrap token file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hash_stably() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.starts_with("vg_"));
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
    }

    #[test]
    fn roles_gate_permissions() {
        let caller = |role| Caller {
            tenant: TenantId(1),
            key_id: ApiKeyId(2),
            key_name: "k".into(),
            role,
        };
        assert!(caller(Role::Device).require(Permission::Ingest).is_ok());
        let err = caller(Role::Device).require(Permission::Read).unwrap_err();
        assert!(
            err.to_string().contains("`device` role") && err.to_string().contains("`read`"),
            "{err}"
        );
        assert_eq!(caller(Role::Viewer).actor(), "key:2:k");
    }
}
