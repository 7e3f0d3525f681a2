//! The errors services report; front ends map them to their protocol (problem+json).

use vigia_core::{FieldError, Permission, Role};
use vigia_store::StoreError;

/// Why a service call did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The addressed thing does not exist in the caller's tenant.
    #[error("{0}")]
    NotFound(String),
    /// The input is invalid; nothing was changed.
    #[error("{detail}")]
    Invalid {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// The input is larger than a limit allows (413).
    #[error("{0}")]
    TooLarge(String),
    /// The change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The caller's role does not grant what the call needs.
    #[error("the `{role}` role does not allow this (needs the `{}` permission)", .needed.as_str())]
    Forbidden { role: Role, needed: Permission },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// `Invalid` with one field error.
    pub fn invalid_field(
        detail: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ServiceError::Invalid {
            detail: detail.into(),
            errors: vec![FieldError::new(field, message)],
        }
    }

    /// Maps a store `NotFound` to this service's words for the missing thing.
    pub fn not_found_as(what: impl Into<String>) -> impl FnOnce(StoreError) -> ServiceError {
        move |e| match e {
            StoreError::NotFound => ServiceError::NotFound(what.into()),
            other => ServiceError::Store(other),
        }
    }
}
