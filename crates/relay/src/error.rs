//! The router's errors, each with the HTTP status the web layer answers with
//! (`application/problem+json`), so the mapping lives in one place.

use std::time::Duration;

use crate::protocol::ProtocolError;
use crate::safe_path::PathRefusal;

/// What can go wrong serving a client's or a connector's relay request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("no connector `{connector}`")]
    UnknownConnector { connector: String },
    #[error("connector `{connector}` is offline")]
    Offline {
        connector: String,
        retry_after: Duration,
    },
    #[error("the router carries {limit} transfers already")]
    Busy { limit: usize, retry_after: Duration },
    #[error("dataset `{dataset}`: {reason}")]
    DatasetMissing { dataset: String, reason: String },
    #[error("dataset `{dataset}` refused: {reason}")]
    Traversal { dataset: String, reason: String },
    #[error("dataset of {size} bytes is over the limit of {limit} bytes for {what}")]
    TooBig {
        size: u64,
        limit: u64,
        what: &'static str,
    },
    #[error("offset {offset} lies past the end of the {size}-byte dataset")]
    BadOffset { offset: u64, size: u64 },
    #[error("wrong or revoked connector token")]
    Unauthorized,
    #[error("`{field}`: {message}")]
    BadRequest {
        field: &'static str,
        message: String,
    },
    #[error("no transfer `{transfer}` in flight")]
    UnknownTransfer { transfer: String },
    #[error("transfer conflict: {0}")]
    Conflict(String),
    #[error("the connector did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("the connector went away: {0}")]
    ConnectorGone(String),
    #[error("the connector failed the transfer: {0}")]
    ConnectorFailed(String),
    #[error("integrity check failed: {0}")]
    Integrity(String),
    #[error("the transfer was cancelled: {0}")]
    Cancelled(String),
    #[error("object storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Internal(String),
}

impl RelayError {
    /// The HTTP status the web layer answers with.
    pub fn status(&self) -> u16 {
        match self {
            RelayError::UnknownConnector { .. }
            | RelayError::DatasetMissing { .. }
            | RelayError::UnknownTransfer { .. } => 404,
            RelayError::Offline { .. } | RelayError::Busy { .. } => 503,
            RelayError::Traversal { .. } | RelayError::BadRequest { .. } => 400,
            RelayError::TooBig { .. } => 413,
            RelayError::BadOffset { .. } => 416,
            RelayError::Unauthorized => 401,
            RelayError::Conflict(_) | RelayError::Cancelled(_) => 409,
            RelayError::TimedOut(_) => 504,
            RelayError::ConnectorGone(_)
            | RelayError::ConnectorFailed(_)
            | RelayError::Integrity(_)
            | RelayError::Storage(_) => 502,
            RelayError::Internal(_) => 500,
        }
    }

    /// The `Retry-After` to send with the answer, when there is one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RelayError::Offline { retry_after, .. } | RelayError::Busy { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// A short stable name, for metrics' `outcome` label and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RelayError::UnknownConnector { .. } => "unknown_connector",
            RelayError::Offline { .. } => "offline",
            RelayError::Busy { .. } => "busy",
            RelayError::DatasetMissing { .. } => "dataset_missing",
            RelayError::Traversal { .. } => "traversal",
            RelayError::TooBig { .. } => "too_big",
            RelayError::BadOffset { .. } => "bad_offset",
            RelayError::Unauthorized => "unauthorized",
            RelayError::BadRequest { .. } => "bad_request",
            RelayError::UnknownTransfer { .. } => "unknown_transfer",
            RelayError::Conflict(_) => "conflict",
            RelayError::TimedOut(_) => "timed_out",
            RelayError::ConnectorGone(_) => "connector_gone",
            RelayError::ConnectorFailed(_) => "connector_failed",
            RelayError::Integrity(_) => "integrity",
            RelayError::Cancelled(_) => "cancelled",
            RelayError::Storage(_) => "storage",
            RelayError::Internal(_) => "internal",
        }
    }

    /// The error for dataset `dataset` refused by the connector's path check.
    pub fn from_refusal(dataset: &str, refusal: &PathRefusal) -> Self {
        if refusal.is_traversal() {
            RelayError::Traversal {
                dataset: dataset.to_owned(),
                reason: refusal.to_string(),
            }
        } else {
            RelayError::DatasetMissing {
                dataset: dataset.to_owned(),
                reason: refusal.to_string(),
            }
        }
    }
}

impl From<ProtocolError> for RelayError {
    fn from(err: ProtocolError) -> Self {
        let field = match &err {
            ProtocolError::Field { field, .. } => field,
            _ => "body",
        };
        RelayError::BadRequest {
            field,
            message: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_as_data() {
        let gone = || "x".to_owned();
        let cases: Vec<(RelayError, u16)> = vec![
            (RelayError::UnknownConnector { connector: gone() }, 404),
            (
                RelayError::Offline {
                    connector: gone(),
                    retry_after: Duration::from_secs(5),
                },
                503,
            ),
            (
                RelayError::DatasetMissing {
                    dataset: gone(),
                    reason: gone(),
                },
                404,
            ),
            (
                RelayError::from_refusal("../x", &PathRefusal::DotComponent),
                400,
            ),
            (RelayError::from_refusal("x", &PathRefusal::Missing), 404),
            (
                RelayError::TooBig {
                    size: 2,
                    limit: 1,
                    what: "buffering",
                },
                413,
            ),
            (RelayError::BadOffset { offset: 9, size: 1 }, 416),
            (RelayError::Unauthorized, 401),
            (RelayError::TimedOut(Duration::from_secs(1)), 504),
            (RelayError::ConnectorGone(gone()), 502),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err}");
        }
        let offline = RelayError::Offline {
            connector: gone(),
            retry_after: Duration::from_secs(5),
        };
        assert_eq!(offline.retry_after(), Some(Duration::from_secs(5)));
        assert_eq!(RelayError::Unauthorized.retry_after(), None);
    }
}
