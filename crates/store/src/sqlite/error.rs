//! Maps SQLite and channel failures onto [`StoreError`].

use rusqlite::ErrorCode;

use crate::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
                // Another process holds the lock past busy_timeout, or the disk or
                // file system failed: the caller may retry later.
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::FileLockingProtocolFailed => StoreError::Unavailable(e.to_string()),
                ErrorCode::ConstraintViolation => StoreError::Conflict(e.to_string()),
                _ => StoreError::Internal(e.to_string()),
            },
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

/// The writer thread is gone (closed, or stopped by a bug): nothing can be written.
pub(crate) fn writer_gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped (store closed)".into())
}

/// A copy of an error, for replying the same failure to every job of a group.
pub(crate) fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Config(m) => StoreError::Config(m.clone()),
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("x".into()))
    }

    #[test]
    fn maps_sqlite_codes_to_store_errors() {
        use rusqlite::ffi;
        let cases: &[(i32, &str)] = &[
            (ffi::SQLITE_BUSY, "unavailable"),
            (ffi::SQLITE_LOCKED, "unavailable"),
            (ffi::SQLITE_IOERR, "unavailable"),
            (ffi::SQLITE_FULL, "unavailable"),
            (ffi::SQLITE_CANTOPEN, "unavailable"),
            (ffi::SQLITE_CONSTRAINT_UNIQUE, "conflict"),
            (ffi::SQLITE_CONSTRAINT_FOREIGNKEY, "conflict"),
            (ffi::SQLITE_CORRUPT, "internal"),
            (ffi::SQLITE_ERROR, "internal"),
        ];
        for &(code, want) in cases {
            let got = match StoreError::from(failure(code)) {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Conflict(_) => "conflict",
                StoreError::Internal(_) => "internal",
                StoreError::NotFound => "not found",
                StoreError::Config(_) => "config",
            };
            assert_eq!(got, want, "code {code}");
        }
        assert!(matches!(
            StoreError::from(rusqlite::Error::QueryReturnedNoRows),
            StoreError::NotFound
        ));
    }

    #[test]
    fn duplicate_keeps_variant_and_message() {
        let e = duplicate(&StoreError::Conflict("taken".into()));
        assert!(matches!(e, StoreError::Conflict(m) if m == "taken"));
    }
}
