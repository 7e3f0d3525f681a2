//! Maps sqlx and PostgreSQL failures onto [`StoreError`], by error kind and SQLSTATE.

use crate::{StoreError, StoreResult};

/// `.pg()?` turns a sqlx result into a store result (a local trait rather than a `From`
/// impl, which another sqlx backend of this crate could not also have).
pub(crate) trait PgResultExt<T> {
    fn pg(self) -> StoreResult<T>;
}

impl<T> PgResultExt<T> for Result<T, sqlx::Error> {
    fn pg(self) -> StoreResult<T> {
        self.map_err(store_error)
    }
}

pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => by_sqlstate(&code, format!("PostgreSQL: {e}")),
            None => StoreError::Internal(format!("PostgreSQL: {e}")),
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(format!("cannot talk to PostgreSQL: {e}"))
        }
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(
            "no PostgreSQL connection within the acquire timeout (server unreachable, or every \
             connection of store_max_connections busy)"
                .into(),
        ),
        sqlx::Error::PoolClosed => StoreError::Unavailable("the PostgreSQL store is closed".into()),
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Configuration(_) => StoreError::Config(format!("PostgreSQL store: {e}")),
        _ => StoreError::Internal(format!("PostgreSQL: {e}")),
    }
}

/// The store error for a PostgreSQL SQLSTATE (Appendix A of the PostgreSQL manual).
pub(crate) fn by_sqlstate(code: &str, message: String) -> StoreError {
    match code {
        // Integrity constraint violations (a unique key, a foreign key, a check), and data
        // exceptions: a value the caller passed that PostgreSQL refuses (a NUL byte in
        // text, which SQLite accepts; a number out of range). The write is refused, the
        // store is fine.
        c if c.starts_with("23") || c.starts_with("22") => StoreError::Conflict(message),
        // Connection exceptions, insufficient resources (too many connections, disk
        // full), shutdown / starting up, serialization failures and deadlocks, lock
        // and statement timeouts: retrying later may work.
        c if c.starts_with("08") || c.starts_with("53") || c.starts_with("40") => {
            StoreError::Unavailable(message)
        }
        "57P01" | "57P02" | "57P03" | "57014" | "55P03" | "58030" => {
            StoreError::Unavailable(message)
        }
        // Wrong password, unknown role or database: the store URL needs changing.
        c if c.starts_with("28") => StoreError::Config(message),
        "3D000" => StoreError::Config(message),
        _ => StoreError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &StoreError) -> &'static str {
        match e {
            StoreError::NotFound => "not found",
            StoreError::Conflict(_) => "conflict",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Config(_) => "config",
            StoreError::Internal(_) => "internal",
        }
    }

    #[test]
    fn maps_sqlstates() {
        let cases = [
            ("23505", "conflict"),    // unique_violation
            ("23503", "conflict"),    // foreign_key_violation
            ("23514", "conflict"),    // check_violation
            ("22021", "conflict"),    // character_not_in_repertoire (NUL in text)
            ("22003", "conflict"),    // numeric_value_out_of_range
            ("08006", "unavailable"), // connection_failure
            ("53300", "unavailable"), // too_many_connections
            ("53100", "unavailable"), // disk_full
            ("40001", "unavailable"), // serialization_failure
            ("40P01", "unavailable"), // deadlock_detected
            ("55P03", "unavailable"), // lock_not_available (lock_timeout)
            ("57014", "unavailable"), // query_canceled (statement_timeout)
            ("57P01", "unavailable"), // admin_shutdown
            ("57P03", "unavailable"), // cannot_connect_now
            ("28P01", "config"),      // invalid_password
            ("3D000", "config"),      // invalid_catalog_name
            ("42P01", "internal"),    // undefined_table: a bug
            ("XX000", "internal"),
        ];
        for (code, want) in cases {
            assert_eq!(kind(&by_sqlstate(code, code.into())), want, "{code}");
        }
    }

    #[test]
    fn maps_driver_errors() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(kind(&store_error(io)), "unavailable");
        assert_eq!(kind(&store_error(sqlx::Error::PoolTimedOut)), "unavailable");
        assert_eq!(kind(&store_error(sqlx::Error::PoolClosed)), "unavailable");
        assert_eq!(kind(&store_error(sqlx::Error::RowNotFound)), "not found");
    }
}
