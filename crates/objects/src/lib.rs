//! Object storage for Vigía: the [`Objects`] port over the `object_store` crate, its two
//! backends — a local directory (the default, `<data_dir>/objects`) and S3 or any
//! S3-compatible server (MinIO) — signed expiring URLs, and the registry that opens a
//! backend from a URL ([`open`]), as `vigia_store::open` and `vigia_bus::open` do.
//!
//! Signed URLs let a client or a connector move bytes without Vigía's credentials:
//! - S3: presigned by SigV4 for the S3 server itself; a PUT's body length is signed.
//! - Local: Vigía signs `{base_url}/objects/{key}?expires=…&sig=…` with HMAC-SHA256
//!   (`objects.signing_key`) and serves it; [`Objects::verify_signed`], [`parse_range`] and
//!   [`ETag`] are what those routes need.
//!
//! Invariants every backend keeps (the conformance suite checks them): keys are validated
//! ([`ObjectKey`]) before any I/O; a put is atomic (a failed or short upload leaves nothing,
//! a reader sees the old object or the new one); a missing object is
//! [`ObjectError::NotFound`]; delete is idempotent.

mod engine;
mod error;
mod key;
mod local;
mod range;
pub mod registry;
mod s3;
pub mod signing;
mod sigv4;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;

pub use error::{ObjectError, ObjectResult, Refusal};
pub use key::{ObjectKey, MAX_KEY_BYTES};
pub use range::{parse_range, unsatisfied_content_range, ByteRange};
pub use registry::{open, supported_schemes, ObjectsFactory, ObjectsRegistry, OpenContext};
pub use signing::{SignedGrant, UrlSigner};

/// The longest validity of a signed URL: S3's limit for SigV4, kept for local URLs too.
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A body to upload, read as it arrives.
pub type UploadStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// An object's bytes, read as they arrive.
pub type ObjectStream = BoxStream<'static, ObjectResult<Bytes>>;

/// An entity tag (RFC 9110 §8.8.3) as the backend gives it, without quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// From a backend's tag, quoted (S3) or not (the local backend).
    pub fn new(tag: &str) -> Self {
        Self(tag.trim_start_matches("W/").trim_matches('"').to_owned())
    }

    /// The tag without quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value of an `ETag` header: the tag in quotes.
    pub fn header_value(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// Whether an `If-None-Match` (or `If-Match`) header names this tag; `*` names any.
    pub fn matches_header(&self, header: &str) -> bool {
        header
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || ETag::new(tag) == *self)
    }
}

/// What is known of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    pub etag: Option<ETag>,
    pub last_modified: SystemTime,
}

/// The result of a put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// Bytes stored.
    pub size: u64,
    pub etag: Option<ETag>,
}

/// An object being read: its metadata, the part being sent and the bytes.
pub struct ObjectBody {
    pub meta: ObjectMeta,
    /// The bytes `stream` yields, within `0..meta.size`.
    pub range: Range<u64>,
    pub stream: ObjectStream,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// What a signed URL allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignMethod {
    /// Reading the object (and HEAD).
    Get,
    /// Writing the object with a body of exactly `content_length` bytes.
    Put { content_length: u64 },
}

/// A signed, expiring URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    pub url: String,
    pub method: PresignMethod,
    pub expires_at: SystemTime,
}

impl PresignedUrl {
    /// The HTTP method to use with the URL.
    pub fn http_method(&self) -> &'static str {
        match self.method {
            PresignMethod::Get => "GET",
            PresignMethod::Put { .. } => "PUT",
        }
    }

    /// Headers the request must carry as signed: `Content-Length` for a PUT (a chunked
    /// upload is refused).
    pub fn required_headers(&self) -> Vec<(&'static str, String)> {
        match self.method {
            PresignMethod::Get => Vec::new(),
            PresignMethod::Put { content_length } => {
                vec![("content-length", content_length.to_string())]
            }
        }
    }
}

/// An object store: a flat namespace of keys holding immutable byte strings.
#[async_trait]
pub trait Objects: Send + Sync + std::fmt::Debug {
    /// `local` or `s3`, for logs and errors.
    fn backend(&self) -> &'static str;

    /// Stores `body` under `key`, replacing any object there, without holding the body in
    /// memory (large bodies go up in parts). With `expected_size`, a body of another length
    /// fails with [`ObjectError::SizeMismatch`] and nothing is stored.
    async fn put(
        &self,
        key: &ObjectKey,
        body: UploadStream,
        expected_size: Option<u64>,
    ) -> ObjectResult<PutOutcome>;

    /// Reads the object, or the part `range` of it (see [`parse_range`]).
    async fn get(&self, key: &ObjectKey, range: Option<ByteRange>) -> ObjectResult<ObjectBody>;

    /// The object's metadata.
    async fn head(&self, key: &ObjectKey) -> ObjectResult<ObjectMeta>;

    /// Removes the object; removing a missing one succeeds.
    async fn delete(&self, key: &ObjectKey) -> ObjectResult<()>;

    /// The objects under `prefix`, a key's leading segments (`offload/2026` lists
    /// `offload/2026/…`, not `offload/2026x`); empty lists everything. In no set order.
    fn list(&self, prefix: &str) -> ObjectResult<BoxStream<'static, ObjectResult<ObjectMeta>>>;

    /// A URL allowing `method` on `key` for `expires_in` (at most
    /// [`MAX_PRESIGN_EXPIRY`]), used without Vigía's credentials.
    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> ObjectResult<PresignedUrl>;

    /// Checks a request to Vigía's own `/objects/{key}` route: `method` (`GET`, `HEAD`,
    /// `PUT`), the decoded `key` and the raw query string. Only the local backend's URLs
    /// point there; the S3 backend answers [`ObjectError::Unsupported`].
    fn verify_signed(&self, method: &str, key: &str, query: &str) -> ObjectResult<SignedGrant>;

    /// The validity of URLs when the caller names none (`objects.presign_expiry`).
    fn default_expiry(&self) -> Duration;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_compared_without_quotes() {
        let cases = [
            ("\"abc\"", "abc", "\"abc\""),
            ("abc", "abc", "\"abc\""),
            ("W/\"abc\"", "abc", "\"abc\""),
        ];
        for (raw, bare, header) in cases {
            let tag = ETag::new(raw);
            assert_eq!(
                (tag.as_str(), tag.header_value().as_str()),
                (bare, header),
                "{raw}"
            );
        }
        let tag = ETag::new("abc");
        assert!(tag.matches_header("\"abc\""));
        assert!(tag.matches_header("\"x\", \"abc\""));
        assert!(tag.matches_header("*"));
        assert!(!tag.matches_header("\"abcd\""));
    }

    #[test]
    fn a_presigned_put_names_its_length() {
        let url = PresignedUrl {
            url: "http://x/objects/a".into(),
            method: PresignMethod::Put { content_length: 7 },
            expires_at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(url.http_method(), "PUT");
        assert_eq!(
            url.required_headers(),
            vec![("content-length", "7".to_owned())]
        );
    }
}
