//! Maps sqlx and MariaDB/MySQL failures onto [`StoreError`], by the server's error number
//! (more precise than its SQLSTATE, which is `HY000` for many unrelated errors).

use sqlx::mysql::MySqlDatabaseError;

use crate::{StoreError, StoreResult};

/// `.my()?` turns a sqlx result into a store result (a local trait, as `PgResultExt`).
pub(crate) trait MyResultExt<T> {
    fn my(self) -> StoreResult<T>;
}

impl<T> MyResultExt<T> for Result<T, sqlx::Error> {
    fn my(self) -> StoreResult<T> {
        self.map_err(store_error)
    }
}

/// ER_DUP_ENTRY: a unique key refused the row.
pub(crate) const DUPLICATE_ENTRY: u16 = 1062;

/// The server's error number of a database error, if it is one.
pub(crate) fn error_number(e: &sqlx::Error) -> Option<u16> {
    match e {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

pub(crate) fn store_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let message = format!("MariaDB: {e}");
            match db.try_downcast_ref::<MySqlDatabaseError>() {
                Some(my) => by_number(my.number(), my.code().unwrap_or(""), message),
                None => StoreError::Internal(message),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(format!("cannot talk to MariaDB: {e}"))
        }
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(
            "no MariaDB connection within the acquire timeout (server unreachable, or every \
             connection of store_max_connections busy)"
                .into(),
        ),
        sqlx::Error::PoolClosed => StoreError::Unavailable("the MariaDB store is closed".into()),
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::Configuration(_) => StoreError::Config(format!("MariaDB store: {e}")),
        _ => StoreError::Internal(format!("MariaDB: {e}")),
    }
}

/// The store error for a server error number (MariaDB's "Error Codes" list), falling
/// back on the SQLSTATE class.
pub(crate) fn by_number(number: u16, sqlstate: &str, message: String) -> StoreError {
    match number {
        // Refused values and rows: a unique or foreign key, a CHECK constraint, NULL into
        // NOT NULL, text too long, a number out of range, text that is not valid in the
        // column's character set. The write is refused, the store is fine.
        1062 | 1586 | 1451 | 1452 | 1216 | 1217 | 4025 | 3819 | 1048 | 1406 | 1264 | 1366
        | 1292 | 1690 => StoreError::Conflict(message),
        // Deadlock, lock wait timeout, too many connections, server shutting down, the
        // connection or query killed, a read-only server (a replica being promoted): retrying
        // later may work.
        1213 | 1205 | 1040 | 1203 | 1053 | 1077 | 1078 | 1079 | 1080 | 1152 | 1153 | 1158
        | 1159 | 1160 | 1161 | 1317 | 1927 | 1290 | 1969 | 3024 | 2002 | 2003 | 2006 | 2013 => {
            StoreError::Unavailable(message)
        }
        // Wrong password or user, no access to the database, unknown database: the store
        // URL needs changing.
        1044 | 1045 | 1049 | 1698 => StoreError::Config(message),
        _ if sqlstate.starts_with("23") || sqlstate.starts_with("22") => {
            StoreError::Conflict(message)
        }
        _ if sqlstate.starts_with("08") || sqlstate.starts_with("40") => {
            StoreError::Unavailable(message)
        }
        _ if sqlstate.starts_with("28") => StoreError::Config(message),
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
    fn maps_error_numbers() {
        let cases = [
            (1062, "23000", "conflict"),    // ER_DUP_ENTRY
            (1452, "23000", "conflict"),    // ER_NO_REFERENCED_ROW_2
            (4025, "23000", "conflict"),    // ER_CONSTRAINT_FAILED (CHECK)
            (1406, "22001", "conflict"),    // ER_DATA_TOO_LONG
            (1366, "22007", "conflict"),    // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
            (1213, "40001", "unavailable"), // ER_LOCK_DEADLOCK
            (1205, "HY000", "unavailable"), // ER_LOCK_WAIT_TIMEOUT
            (1040, "08004", "unavailable"), // ER_CON_COUNT_ERROR
            (1053, "08S01", "unavailable"), // ER_SERVER_SHUTDOWN
            (1927, "70100", "unavailable"), // ER_CONNECTION_KILLED
            (1290, "HY000", "unavailable"), // ER_OPTION_PREVENTS_STATEMENT (read-only)
            (1045, "28000", "config"),      // ER_ACCESS_DENIED_ERROR
            (1049, "42000", "config"),      // ER_BAD_DB_ERROR
            (1146, "42S02", "internal"),    // ER_NO_SUCH_TABLE: a bug
            (1064, "42000", "internal"),    // ER_PARSE_ERROR: a bug
            (9999, "22999", "conflict"),
            (9999, "08999", "unavailable"),
        ];
        for (number, state, want) in cases {
            assert_eq!(
                kind(&by_number(number, state, number.to_string())),
                want,
                "{number}"
            );
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
