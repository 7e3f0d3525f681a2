//! The local-directory backend: object_store's `LocalFileSystem` under one directory
//! (default `<data_dir>/objects`), with URLs Vigía signs itself ([`UrlSigner`]) and
//! serves at `/objects/{key}`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use object_store::local::LocalFileSystem;

use crate::engine::{StoreObjects, UrlIssuer};
use crate::{
    ObjectError, ObjectKey, ObjectResult, Objects, OpenContext, PresignMethod, PresignedUrl,
    Refusal, SignedGrant, UrlSigner,
};

/// The local backend's name in errors and logs.
pub(crate) const BACKEND: &str = "local";

#[derive(Debug)]
struct LocalUrls {
    /// `None` without `objects.signing_key`: nothing can be signed, so nothing verifies.
    signer: Option<UrlSigner>,
}

#[async_trait]
impl UrlIssuer for LocalUrls {
    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> ObjectResult<PresignedUrl> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            ObjectError::Config(
                "objects.signing_key is not set, so the local object store cannot sign URLs".into(),
            )
        })?;
        Ok(signer.sign(method, key, SystemTime::now() + expires_in))
    }

    fn verify(
        &self,
        method: &str,
        key: &str,
        query: &str,
        now: SystemTime,
    ) -> ObjectResult<SignedGrant> {
        match &self.signer {
            Some(signer) => signer.verify(method, key, query, now),
            None => Err(ObjectError::Forbidden(Refusal::Forged)),
        }
    }
}

/// Opens (creating it if needed) the object directory `dir`.
pub(crate) fn open(dir: &Path, ctx: &OpenContext) -> ObjectResult<Arc<dyn Objects>> {
    let signer = match (&ctx.signing_key, &ctx.base_url) {
        (Some(key), Some(base_url)) => Some(UrlSigner::new(key, base_url)?),
        (Some(_), None) => {
            return Err(ObjectError::Config(
                "objects.signing_key is set but not the base URL signed object URLs point at"
                    .into(),
            ))
        }
        (None, _) => None,
    };
    std::fs::create_dir_all(dir).map_err(|err| {
        ObjectError::Config(format!(
            "object directory {} cannot be created: {err}",
            dir.display()
        ))
    })?;
    let store = LocalFileSystem::new_with_prefix(dir)
        .map_err(|err| ObjectError::Config(format!("object directory {}: {err}", dir.display())))?
        // Deleting the last object of a key prefix removes the emptied directories, so a
        // long-running store does not pile up empty ones.
        .with_automatic_cleanup(true);
    Ok(Arc::new(StoreObjects {
        store: Arc::new(store),
        backend: BACKEND,
        urls: Box::new(LocalUrls { signer }),
        default_expiry: ctx.presign_expiry,
    }))
}
