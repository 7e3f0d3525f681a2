//! Opening SQLite connections with Vigía's pragmas, and the versioned migrations.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::SqliteStoreOptions;
use crate::{Durability, StoreError, StoreResult};

/// The migrations, in order; migration `i` (0-based) brings the schema to version `i + 1`.
/// A new migration is a new file appended here, never an edit of a shipped one.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_roles_audit_leases_outbox.sql"),
    include_str!("../../migrations/sqlite/0003_rollups.sql"),
    include_str!("../../migrations/sqlite/0004_dead_letters.sql"),
    include_str!("../../migrations/sqlite/0005_robots.sql"),
    include_str!("../../migrations/sqlite/0006_products_prices.sql"),
    include_str!("../../migrations/sqlite/0007_alert_details.sql"),
    include_str!("../../migrations/sqlite/0008_excursions.sql"),
];

/// The schema version this build creates and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// WAL size past which SQLite truncates it after a checkpoint, so a burst does not leave
/// a huge file behind.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Opens the one read-write connection, creating the file and its parent directory,
/// switches to WAL and brings the schema up to date.
pub(crate) fn open_writer(options: &SqliteStoreOptions) -> StoreResult<Connection> {
    if let Some(dir) = options.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    let mut conn = Connection::open_with_flags(
        &options.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_error(&options.path, e))?;
    common_pragmas(&conn, options, options.cache_mib)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Internal(format!(
            "{} refused WAL mode (got `{mode}`)",
            options.path.display()
        )));
    }
    let synchronous = match options.durability {
        Durability::Full => "FULL",
        Durability::Os => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens a read-only connection; WAL lets it read while the writer commits.
pub(crate) fn open_reader(options: &SqliteStoreOptions) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        &options.path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_error(&options.path, e))?;
    // Readers share the page cache budget: each gets a quarter of the writer's.
    common_pragmas(&conn, options, (options.cache_mib / 4).max(2))?;
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(conn)
}

fn common_pragmas(
    conn: &Connection,
    options: &SqliteStoreOptions,
    cache_mib: usize,
) -> StoreResult<()> {
    conn.busy_timeout(options.busy_timeout)?;
    // A negative cache_size is in KiB.
    let cache_kib = i64::try_from(cache_mib.saturating_mul(1024)).unwrap_or(i64::MAX);
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
}

/// The schema version recorded in the database file.
pub(crate) fn schema_version(conn: &Connection) -> StoreResult<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

/// Applies every migration newer than the file's version, each in its own transaction
/// together with the version bump, so a crash leaves the file at a whole version.
/// Refuses a file written by a newer build: guessing at an unknown schema could corrupt it.
pub(crate) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    check_version(schema_version(conn)?)?;
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let target = index as i64 + 1;
        // IMMEDIATE takes the write lock first, so two processes opening a fresh file
        // migrate one after the other; the second sees the bumped version and skips.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = schema_version(&tx)?;
        check_version(current)?;
        if current >= target {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Internal(format!("SQLite migration {target} failed: {e}")))?;
        tx.pragma_update(None, "user_version", target)?;
        tx.commit()?;
        tracing::info!(version = target, "applied SQLite migration");
    }
    Ok(())
}

fn check_version(found: i64) -> StoreResult<()> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::Internal(format!(
            "the database schema is version {found}, newer than this build of Vigía understands \
             (at most {SCHEMA_VERSION}); run a newer Vigía or point it at another data directory"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_a_fresh_database_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
        // Running again is a no-op, not a "table exists" error.
        migrate(&mut conn).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN
                 ('tenants','api_keys','metrics','sensors','readings','latest_readings','alerts')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 7);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(
            matches!(&err, StoreError::Internal(m) if m.contains("newer than this build")),
            "{err:?}"
        );
    }

    /// The hot queries use the index meant for them (a table scan here would pass every
    /// functional test and still fall over on a real database).
    #[test]
    fn hot_queries_use_their_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let cases = [
            (
                "UPDATE alerts SET state = 'resolved'
                 WHERE sensor_id = 1 AND rule = 'r' AND state IN ('open', 'acked')",
                "alerts_one_unresolved",
            ),
            (
                "SELECT ts, value FROM readings
                 WHERE ts BETWEEN 1 AND 2 AND sensor_id = 3 AND metric_id = 4 ORDER BY ts LIMIT 5",
                "PRIMARY KEY (ts>? AND ts<?)",
            ),
            (
                "SELECT id FROM alerts WHERE tenant_id = 1 AND state = 'open' ORDER BY id DESC LIMIT 5",
                "alerts_by_tenant_state",
            ),
            (
                "SELECT ts FROM latest_readings WHERE sensor_id = 1 AND metric_id = 2",
                "PRIMARY KEY (sensor_id=? AND metric_id=?)",
            ),
        ];
        for (sql, index) in cases {
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().any(|step| step.contains(index)),
                "{sql}: {plan:?}"
            );
        }
    }
}
