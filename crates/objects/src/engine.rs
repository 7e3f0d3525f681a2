//! The one [`Objects`] implementation, over any `object_store` backend: streaming puts
//! (one request when small, bounded multipart when large), ranged gets, listing, and
//! signed URLs from the backend's [`UrlIssuer`]. A backend module only builds the
//! `object_store` and picks its issuer.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::key::prefix_path;
use crate::{
    ByteRange, ETag, ObjectBody, ObjectError, ObjectKey, ObjectMeta, ObjectResult, Objects,
    PresignMethod, PresignedUrl, PutOutcome, SignedGrant, UploadStream, MAX_PRESIGN_EXPIRY,
};

/// Size of an upload part, and the most a put buffers before switching to multipart:
/// S3's smallest part (every part but the last must be at least 5 MiB).
pub(crate) const PART_BYTES: usize = 5 * 1024 * 1024;

/// Parts uploading at once; with [`PART_BYTES`] this bounds a put's memory to about
/// three parts.
const PARTS_IN_FLIGHT: usize = 2;

/// Makes and checks the signed URLs of one backend.
#[async_trait]
pub(crate) trait UrlIssuer: Send + Sync + std::fmt::Debug {
    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> ObjectResult<PresignedUrl>;

    fn verify(
        &self,
        method: &str,
        key: &str,
        query: &str,
        now: SystemTime,
    ) -> ObjectResult<SignedGrant>;
}

/// An `object_store` with Vigía's semantics on top.
#[derive(Debug)]
pub(crate) struct StoreObjects {
    pub store: Arc<dyn ObjectStore>,
    pub backend: &'static str,
    pub urls: Box<dyn UrlIssuer>,
    pub default_expiry: Duration,
}

impl StoreObjects {
    fn error(&self, key: &ObjectKey) -> impl Fn(object_store::Error) -> ObjectError + '_ {
        let key = key.as_str().to_owned();
        move |err| ObjectError::from_store(self.backend, &key, err)
    }

    fn meta(backend: &'static str, meta: object_store::ObjectMeta) -> ObjectResult<ObjectMeta> {
        let key =
            ObjectKey::new(meta.location.as_ref()).map_err(|err| ObjectError::Unavailable {
                backend,
                message: format!("the backend holds an object Vigía cannot name: {err}"),
            })?;
        Ok(ObjectMeta {
            key,
            size: meta.size,
            etag: meta.e_tag.as_deref().map(ETag::new),
            last_modified: meta.last_modified.into(),
        })
    }

    /// Reads `body` into `pending` until it outgrows one part, then into a multipart
    /// upload (started in `upload`). Returns the bytes read.
    async fn feed(
        &self,
        key: &ObjectKey,
        path: &Path,
        body: &mut UploadStream,
        expected_size: Option<u64>,
        pending: &mut Vec<Bytes>,
        upload: &mut Option<WriteMultipart>,
    ) -> ObjectResult<u64> {
        let mut size = 0u64;
        let mut pending_bytes = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| ObjectError::Body {
                key: key.to_string(),
                source,
            })?;
            size += chunk.len() as u64;
            if let Some(expected) = expected_size.filter(|&expected| size > expected) {
                return Err(size_mismatch(key, expected, size));
            }
            match upload {
                Some(upload) => {
                    upload
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(self.error(key))?;
                    upload.put(chunk);
                }
                None => {
                    pending_bytes += chunk.len();
                    pending.push(chunk);
                    if pending_bytes > PART_BYTES {
                        let started = self
                            .store
                            .put_multipart(path)
                            .await
                            .map_err(self.error(key))?;
                        let mut multipart =
                            WriteMultipart::new_with_chunk_size(started, PART_BYTES);
                        for chunk in pending.drain(..) {
                            multipart.put(chunk);
                        }
                        *upload = Some(multipart);
                    }
                }
            }
        }
        match expected_size {
            Some(expected) if expected != size => Err(size_mismatch(key, expected, size)),
            _ => Ok(size),
        }
    }
}

fn size_mismatch(key: &ObjectKey, expected: u64, actual: u64) -> ObjectError {
    ObjectError::SizeMismatch {
        key: key.to_string(),
        expected,
        actual,
    }
}

/// Refuses an expiry S3 would refuse, so both backends accept the same.
pub(crate) fn check_expiry(expires_in: Duration) -> ObjectResult<()> {
    if expires_in < Duration::from_secs(1) || expires_in > MAX_PRESIGN_EXPIRY {
        return Err(ObjectError::Config(format!(
            "a signed URL is valid for 1 s to 7 days, not {} s",
            expires_in.as_secs_f64()
        )));
    }
    Ok(())
}

#[async_trait]
impl Objects for StoreObjects {
    fn backend(&self) -> &'static str {
        self.backend
    }

    async fn put(
        &self,
        key: &ObjectKey,
        mut body: UploadStream,
        expected_size: Option<u64>,
    ) -> ObjectResult<PutOutcome> {
        let path = key.to_path();
        let mut pending = Vec::new();
        let mut upload = None;
        let fed = self
            .feed(
                key,
                &path,
                &mut body,
                expected_size,
                &mut pending,
                &mut upload,
            )
            .await;
        let multipart = upload.is_some();
        let (size, result) = match (fed, upload) {
            (Err(err), Some(upload)) => {
                // Best effort: the parts already sent are garbage either way, and the
                // caller needs the first error, not this one.
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(key = %key, error = %abort, "aborting a failed multipart upload");
                }
                return Err(err);
            }
            (Err(err), None) => return Err(err),
            (Ok(size), Some(upload)) => (size, upload.finish().await),
            (Ok(size), None) => (
                size,
                self.store.put(&path, PutPayload::from_iter(pending)).await,
            ),
        };
        let result = result.map_err(self.error(key))?;
        tracing::debug!(backend = self.backend, key = %key, size, multipart, "object stored");
        Ok(PutOutcome {
            size,
            etag: result.e_tag.as_deref().map(ETag::new),
        })
    }

    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> ObjectResult<ObjectBody> {
        let options = GetOptions {
            range: range.map(|r| GetRange::Bounded(r.start..r.end)),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&key.to_path(), options).await {
            Ok(result) => result,
            Err(err) => {
                let err = self.error(key)(err);
                // A range past the end is the backend's generic error; say 416 when it is.
                if let (Some(range), ObjectError::Unavailable { .. }) = (range, &err) {
                    if let Ok(meta) = self.head(key).await {
                        if range.start >= meta.size {
                            return Err(ObjectError::RangeNotSatisfiable { size: meta.size });
                        }
                    }
                }
                return Err(err);
            }
        };
        let meta = Self::meta(self.backend, result.meta.clone())?;
        let range = result.range.clone();
        let (backend, name) = (self.backend, key.to_string());
        let stream = result
            .into_stream()
            .map_err(move |err| ObjectError::from_store(backend, &name, err))
            .boxed();
        Ok(ObjectBody {
            meta,
            range,
            stream,
        })
    }

    async fn head(&self, key: &ObjectKey) -> ObjectResult<ObjectMeta> {
        let meta = self
            .store
            .head(&key.to_path())
            .await
            .map_err(self.error(key))?;
        Self::meta(self.backend, meta)
    }

    async fn delete(&self, key: &ObjectKey) -> ObjectResult<()> {
        match self.store.delete(&key.to_path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(self.error(key)(err)),
        }
    }

    fn list(&self, prefix: &str) -> ObjectResult<BoxStream<'static, ObjectResult<ObjectMeta>>> {
        let path = prefix_path(prefix)?;
        let backend = self.backend;
        let prefix = prefix.to_owned();
        Ok(self
            .store
            .list(path.as_ref())
            .map(move |item| match item {
                Ok(meta) => Self::meta(backend, meta),
                Err(err) => Err(ObjectError::from_store(backend, &prefix, err)),
            })
            .boxed())
    }

    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> ObjectResult<PresignedUrl> {
        check_expiry(expires_in)?;
        self.urls.presign(method, key, expires_in).await
    }

    fn verify_signed(&self, method: &str, key: &str, query: &str) -> ObjectResult<SignedGrant> {
        self.urls.verify(method, key, query, SystemTime::now())
    }

    fn default_expiry(&self) -> Duration {
        self.default_expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_within_s3_limits() {
        for (secs, ok) in [
            (0, false),
            (1, true),
            (3600, true),
            (7 * 24 * 3600, true),
            (7 * 24 * 3600 + 1, false),
        ] {
            assert_eq!(
                check_expiry(Duration::from_secs(secs)).is_ok(),
                ok,
                "{secs}"
            );
        }
        let err = check_expiry(Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("1 s to 7 days"), "{err}");
    }
}
