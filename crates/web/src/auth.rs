//! API keys: generation, hashing, the bootstrap key, and the `Caller` extractor that
//! turns a presented key into a tenant.
//!
//! Keys are 40 random base-62 characters (≈238 bits), so a single SHA-256 is enough to
//! store them safely: unlike passwords they cannot be guessed, and a slow hash (argon2)
//! on every request would cap ingest at a few hundred requests per second. Only the
//! hash reaches the store. Verified keys are cached in memory by hash; unknown keys
//! are not cached, so garbage keys cannot grow the cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::Rng;
use sha2::{Digest, Sha256};
use vigia_core::{ApiKeyRecord, TenantId};
use vigia_store::Store;

use crate::error::ApiError;
use crate::AppState;

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

/// Who is calling: the tenant every query of this request is scoped to.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    /// The key's name, recorded as `acked_by` / `resolved_by`.
    pub key_name: String,
}

/// Verifies keys against the store, with a cache of verified ones.
pub struct Authenticator {
    store: Arc<dyn Store>,
    verified: RwLock<HashMap<[u8; 32], ApiKeyRecord>>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            verified: RwLock::new(HashMap::new()),
        }
    }

    pub async fn verify(&self, key: &str) -> Result<Caller, ApiError> {
        if key.is_empty() || key.len() > 256 {
            return Err(ApiError::unauthorized("the API key is not valid"));
        }
        let hash = hash_key(key);
        let cached = self
            .verified
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned();
        let record = match cached {
            Some(r) => r,
            None => {
                let found = self.store.find_api_key(hash).await?;
                let Some(record) = found else {
                    return Err(ApiError::unauthorized("the API key is not valid"));
                };
                let mut cache = self.verified.write().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(hash, record.clone());
                record
            }
        };
        Ok(Caller {
            tenant: record.tenant,
            key_name: record.name,
        })
    }
}

/// The key presented in `Authorization: Bearer …` or `X-API-Key: …`.
pub fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(key) = presented_key(parts) else {
            return Err(ApiError::unauthorized(
                "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ));
        };
        state.auth.verify(key).await
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
    let tenant = store.default_tenant().await?;
    if store.count_api_keys().await? > 0 {
        return Ok(Bootstrap::AlreadyDone);
    }
    if let Some(token) = env_token {
        if token.len() < 8 || token.len() > 256 || token.chars().any(char::is_whitespace) {
            return Err(BootstrapError::WeakToken);
        }
        store
            .insert_api_key(tenant.id, "bootstrap", hash_key(token))
            .await?;
        return Ok(Bootstrap::FromEnv);
    }
    let key = generate_key();
    let file = data_dir.join("bootstrap-token");
    write_private(&file, &key)?;
    store
        .insert_api_key(tenant.id, "bootstrap", hash_key(&key))
        .await?;
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

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("VIGIA_BOOTSTRAP_TOKEN must be 8 to 256 characters without spaces")]
    WeakToken,
    #[error("could not write the bootstrap token file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] vigia_store::StoreError),
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
    fn reads_bearer_and_x_api_key() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("authorization", "Bearer abc", Some("abc")),
            ("authorization", "bearer   abc ", Some("abc")),
            ("authorization", "Basic abc", None),
            ("authorization", "Bearer", None),
            ("x-api-key", " k1 ", Some("k1")),
        ];
        for (name, value, want) in cases {
            let req = axum::http::Request::builder()
                .header(*name, *value)
                .body(())
                .unwrap();
            let (parts, _) = req.into_parts();
            assert_eq!(presented_key(&parts), *want, "{name}: {value}");
        }
    }
}
