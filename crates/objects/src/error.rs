//! What can go wrong with an object, in words a user can act on. A route maps each
//! variant to one HTTP status (see [`ObjectError::http_status`]).

use std::time::SystemTime;

/// Why a signed URL was refused (every reason answers 403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The signature is valid but its expiry has passed.
    Expired {
        /// When it stopped being valid.
        at: SystemTime,
    },
    /// The signature is missing, malformed, or does not match the method, key, expiry
    /// (or length) it claims: the URL was made up or altered.
    Forged,
    /// A PUT sends a body of another length than the signed one.
    LengthMismatch { signed: u64, sent: Option<u64> },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Expired { at } => {
                let ago = SystemTime::now().duration_since(*at).unwrap_or_default();
                write!(
                    f,
                    "the signed URL expired {} s ago; ask for a new one",
                    ago.as_secs()
                )
            }
            Refusal::Forged => f.write_str("the URL's signature is missing or does not match it"),
            Refusal::LengthMismatch {
                signed,
                sent: Some(sent),
            } => write!(
                f,
                "the signed URL allows a body of exactly {signed} bytes, not {sent}"
            ),
            Refusal::LengthMismatch { signed, sent: None } => write!(
                f,
                "the signed URL allows a body of exactly {signed} bytes; send Content-Length"
            ),
        }
    }
}

/// Errors of every object storage operation.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("object `{key}` does not exist")]
    NotFound { key: String },
    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("range not satisfiable: object has {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("forbidden: {0}")]
    Forbidden(Refusal),
    #[error(
        "upload of `{key}` has {actual} bytes where {expected} were announced; nothing was stored"
    )]
    SizeMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("the body of `{key}` could not be read: {source}")]
    Body {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object storage ({backend}) is unavailable: {message}")]
    Unavailable {
        backend: &'static str,
        message: String,
    },
    #[error("object storage configuration: {0}")]
    Config(String),
    #[error("not supported by the {backend} object store: {what}")]
    Unsupported {
        backend: &'static str,
        what: &'static str,
    },
}

/// Result of an object storage operation.
pub type ObjectResult<T> = Result<T, ObjectError>;

impl ObjectError {
    /// The HTTP status a route answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            ObjectError::NotFound { .. } => 404,
            ObjectError::InvalidKey { .. } => 400,
            ObjectError::RangeNotSatisfiable { .. } => 416,
            ObjectError::Forbidden(_) => 403,
            ObjectError::SizeMismatch { .. } | ObjectError::Body { .. } => 400,
            ObjectError::Unavailable { .. } => 503,
            ObjectError::Config(_) | ObjectError::Unsupported { .. } => 500,
        }
    }

    /// Maps an `object_store` error for `key` on `backend`.
    pub(crate) fn from_store(backend: &'static str, key: &str, err: object_store::Error) -> Self {
        use object_store::Error as E;
        match err {
            E::NotFound { .. } => ObjectError::NotFound {
                key: key.to_owned(),
            },
            E::InvalidPath { .. } => ObjectError::InvalidKey {
                key: key.to_owned(),
                reason: "the backend cannot store this path",
            },
            E::NotSupported { .. } | E::NotImplemented { .. } => ObjectError::Unsupported {
                backend,
                what: "this operation",
            },
            other => ObjectError::Unavailable {
                backend,
                message: other.to_string(),
            },
        }
    }
}
