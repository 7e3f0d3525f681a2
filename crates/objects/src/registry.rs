//! Opening an object store from a URL: the scheme picks a registered [`ObjectsFactory`]
//! (as Quickwit's `StorageResolver` does), so callers ask for "the objects at this URL"
//! and never name a backend.
//!
//! | URL | backend |
//! |---|---|
//! | empty | local directory `<data_dir>/objects` |
//! | `file:///var/lib/vigia/objects`, `/var/lib/vigia/objects`, `./objects` | local directory |
//! | `s3://BUCKET?endpoint=…&region=…[&access_key_id=…&secret_access_key=…]` | S3 / MinIO |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use vigia_core::registry::SchemeRegistry;

use crate::{ObjectError, ObjectResult, Objects};

/// The validity of signed URLs when the caller names none.
pub const DEFAULT_PRESIGN_EXPIRY: Duration = Duration::from_secs(15 * 60);

/// What every backend may need besides its URL.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenContext {
    /// The local backend's default directory is `<data_dir>/objects`.
    pub data_dir: PathBuf,
    /// `objects.signing_key`: the HMAC key of the local backend's signed URLs. Without it
    /// the local backend stores and serves objects but signs nothing.
    pub signing_key: Option<Vec<u8>>,
    /// Where the local backend's signed URLs point: the server's public URL, to which
    /// `/objects/{key}` is appended.
    pub base_url: Option<String>,
    /// `objects.presign_expiry`.
    pub presign_expiry: Duration,
}

impl std::fmt::Debug for OpenContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenContext")
            .field("data_dir", &self.data_dir)
            .field("signing_key", &self.signing_key.as_ref().map(|_| "***"))
            .field("base_url", &self.base_url)
            .field("presign_expiry", &self.presign_expiry)
            .finish()
    }
}

impl OpenContext {
    /// Defaults for a store under `data_dir`, signing nothing.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            signing_key: None,
            base_url: None,
            presign_expiry: DEFAULT_PRESIGN_EXPIRY,
        }
    }

    /// Signs local URLs with `signing_key` for a server reached at `base_url`.
    pub fn with_signing(
        mut self,
        signing_key: impl Into<Vec<u8>>,
        base_url: impl Into<String>,
    ) -> Self {
        self.signing_key = Some(signing_key.into());
        self.base_url = Some(base_url.into());
        self
    }
}

/// Opens the backend of one or more URL schemes.
#[async_trait]
pub trait ObjectsFactory: Send + Sync {
    /// The schemes it opens.
    fn schemes(&self) -> &'static [&'static str];
    /// A one-line description of the accepted URLs, for error messages and docs.
    fn usage(&self) -> &'static str;
    /// Checks the URL without opening anything (for configuration validation).
    fn validate(&self, url: &str, ctx: &OpenContext) -> ObjectResult<()>;
    async fn open(&self, url: &str, ctx: &OpenContext) -> ObjectResult<Arc<dyn Objects>>;
}

/// The scheme of an objects URL: the part before `://`; a plain path (or nothing) is
/// `file`.
pub fn scheme_of(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+') =>
        {
            scheme
        }
        _ => "file",
    }
}

impl vigia_core::registry::Schemes for dyn ObjectsFactory {
    fn schemes(&self) -> &'static [&'static str] {
        ObjectsFactory::schemes(self)
    }
    fn usage(&self) -> &'static str {
        ObjectsFactory::usage(self)
    }
}

/// Factories by scheme.
#[derive(Clone, Default)]
pub struct ObjectsRegistry {
    factories: SchemeRegistry<dyn ObjectsFactory>,
}

impl ObjectsRegistry {
    /// A registry with no backends.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The backends built into this crate: `file` (local directory) and `s3`.
    pub fn builtin() -> Self {
        let mut registry = Self::empty();
        registry.register(Arc::new(LocalFactory));
        registry.register(Arc::new(S3Factory));
        registry
    }

    /// Adds a backend; a later registration of the same scheme wins.
    pub fn register(&mut self, factory: Arc<dyn ObjectsFactory>) {
        self.factories.register(factory);
    }

    /// Every scheme that can be opened.
    pub fn schemes(&self) -> Vec<&'static str> {
        self.factories.schemes()
    }

    fn factory(&self, url: &str) -> ObjectResult<&Arc<dyn ObjectsFactory>> {
        let scheme = scheme_of(url);
        self.factories.find(scheme).map_err(|supported| {
            ObjectError::Config(format!(
                "object store `{scheme}` is not available in this build; supported: {supported}"
            ))
        })
    }

    /// Checks that `url` names a known backend and is well formed.
    pub fn validate(&self, url: &str, ctx: &OpenContext) -> ObjectResult<()> {
        self.factory(url)?.validate(url, ctx)
    }

    /// Opens the object store at `url`.
    pub async fn open(&self, url: &str, ctx: &OpenContext) -> ObjectResult<Arc<dyn Objects>> {
        self.factory(url)?.open(url, ctx).await
    }
}

/// Opens the object store at `url` with the built-in backends.
pub async fn open(url: &str, ctx: &OpenContext) -> ObjectResult<Arc<dyn Objects>> {
    ObjectsRegistry::builtin().open(url, ctx).await
}

/// The schemes the built-in backends open.
pub fn supported_schemes() -> Vec<&'static str> {
    ObjectsRegistry::builtin().schemes()
}

struct LocalFactory;

impl LocalFactory {
    fn dir(url: &str, ctx: &OpenContext) -> ObjectResult<PathBuf> {
        let path = match url.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => path,
            Some(_) => {
                return Err(ObjectError::Config(format!(
                    "objects URL `{url}`: a file URL names an absolute directory, as in file:///var/lib/vigia/objects"
                )))
            }
            None => url.trim(),
        };
        Ok(if path.is_empty() {
            ctx.data_dir.join("objects")
        } else {
            PathBuf::from(path)
        })
    }
}

#[async_trait]
impl ObjectsFactory for LocalFactory {
    fn schemes(&self) -> &'static [&'static str] {
        &["file"]
    }

    fn usage(&self) -> &'static str {
        "a directory: file:///path, /path, or empty for <data_dir>/objects"
    }

    fn validate(&self, url: &str, ctx: &OpenContext) -> ObjectResult<()> {
        Self::dir(url, ctx).map(drop)
    }

    async fn open(&self, url: &str, ctx: &OpenContext) -> ObjectResult<Arc<dyn Objects>> {
        let dir = Self::dir(url, ctx)?;
        let ctx = ctx.clone();
        // Creating and canonicalising the directory touches the disk.
        tokio::task::spawn_blocking(move || crate::local::open(&dir, &ctx))
            .await
            .map_err(|err| ObjectError::Config(format!("opening the object directory: {err}")))?
    }
}

struct S3Factory;

#[async_trait]
impl ObjectsFactory for S3Factory {
    fn schemes(&self) -> &'static [&'static str] {
        &["s3"]
    }

    fn usage(&self) -> &'static str {
        "s3://BUCKET?endpoint=URL&region=R[&access_key_id=…&secret_access_key=…] (else AWS_* variables)"
    }

    fn validate(&self, url: &str, _ctx: &OpenContext) -> ObjectResult<()> {
        crate::s3::S3Url::parse(url).map(drop)
    }

    async fn open(&self, url: &str, ctx: &OpenContext) -> ObjectResult<Arc<dyn Objects>> {
        crate::s3::open(&crate::s3::S3Url::parse(url)?, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let cases = [
            ("", "file"),
            ("/var/lib/objects", "file"),
            ("./objects", "file"),
            ("file:///x", "file"),
            ("s3://bucket?endpoint=http://h", "s3"),
            ("gs://bucket", "gs"),
            ("weird path/with://inside", "file"),
        ];
        for (url, scheme) in cases {
            assert_eq!(scheme_of(url), scheme, "{url}");
        }
        assert_eq!(supported_schemes(), vec!["file", "s3"]);
    }

    #[test]
    fn urls_are_validated() {
        let ctx = OpenContext::new("/data");
        let registry = ObjectsRegistry::builtin();
        let err = registry
            .validate("gs://bucket", &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("object store `gs`") && err.contains("s3://BUCKET"),
            "{err}"
        );
        let err = registry
            .validate("file://relative/dir", &ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absolute directory"), "{err}");
        registry.validate("", &ctx).unwrap();
        registry.validate("s3://b?region=x", &ctx).unwrap();
        assert_eq!(
            LocalFactory::dir("", &ctx).unwrap(),
            PathBuf::from("/data/objects")
        );
        assert_eq!(
            LocalFactory::dir("file:///srv/o", &ctx).unwrap(),
            PathBuf::from("/srv/o")
        );
        assert_eq!(
            LocalFactory::dir("rel/o", &ctx).unwrap(),
            PathBuf::from("rel/o")
        );
    }

    #[test]
    fn the_signing_key_stays_out_of_debug_output() {
        let ctx = OpenContext::new("/data").with_signing("0123456789abcdef", "http://h");
        assert!(!format!("{ctx:?}").contains("0123456789abcdef"));
    }

    #[tokio::test]
    async fn opens_the_default_directory() {
        let dir = tempfile::tempdir().unwrap();
        let objects = open("", &OpenContext::new(dir.path())).await.unwrap();
        assert_eq!(objects.backend(), "local");
        assert!(dir.path().join("objects").is_dir());
        let key = crate::ObjectKey::new("k").unwrap();
        let err = objects
            .presign(crate::PresignMethod::Get, &key, objects.default_expiry())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("objects.signing_key is not set"), "{err}");
    }
}
