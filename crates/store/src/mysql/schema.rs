//! Migrations: numbered SQL files under `migrations/mysql`, compiled in, applied at open
//! on ONE connection that holds the named lock `vigia_migrate` meanwhile, so two processes
//! opening a fresh database at once migrate one after the other (the second finds the
//! versions recorded and skips). MariaDB commits each DDL statement by itself, so a
//! migration is not one transaction: the files are written to be re-run (see
//! `0001_init.sql`), and a version is recorded only after its whole file succeeded.

use sqlx::{Executor, MySqlConnection, MySqlPool};
use vigia_core::Timestamp;

use super::error::MyResultExt;
use crate::{StoreError, StoreResult};

/// Every migration, in order; version N is `MIGRATIONS[N - 1]`. Append-only.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/mysql/0001_init.sql"),
    include_str!("../../migrations/mysql/0002_rollups.sql"),
    include_str!("../../migrations/mysql/0003_rollup_watermarks.sql"),
    include_str!("../../migrations/mysql/0004_dead_letters.sql"),
    include_str!("../../migrations/mysql/0005_robots.sql"),
    include_str!("../../migrations/mysql/0006_products_prices.sql"),
    include_str!("../../migrations/mysql/0007_alert_details.sql"),
    include_str!("../../migrations/mysql/0008_excursions.sql"),
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Named lock of migrations. Names are per server, so the database name is part of it.
const MIGRATION_LOCK: &str = "vigia_migrate";

/// How long an open waits for another process's migration before giving up.
const MIGRATION_LOCK_WAIT_S: i64 = 60;

/// Applies the missing migrations. With `must_exist`, a database without a Vigía schema
/// is refused (`Config`) instead of being given one. A schema newer than this build is
/// refused (`Internal`): guessing at it could corrupt it.
pub(crate) async fn migrate(pool: &MySqlPool, must_exist: bool) -> StoreResult<()> {
    let mut conn = pool.acquire().await.my()?;
    let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(CONCAT(?, '.', DATABASE()), ?)")
        .bind(MIGRATION_LOCK)
        .bind(MIGRATION_LOCK_WAIT_S)
        .fetch_one(&mut *conn)
        .await
        .my()?;
    if got != Some(1) {
        return Err(StoreError::Unavailable(format!(
            "another process held the migration lock for {MIGRATION_LOCK_WAIT_S} s"
        )));
    }
    let result = migrate_locked(&mut conn, must_exist).await;
    // A session lock: released here, or by the server when this connection closes.
    let released = sqlx::query("SELECT RELEASE_LOCK(CONCAT(?, '.', DATABASE()))")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .my();
    result.and(released.map(|_| ()))
}

async fn migrate_locked(conn: &mut MySqlConnection, must_exist: bool) -> StoreResult<()> {
    let database: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut *conn)
        .await
        .my()?;
    if database.is_none() {
        return Err(StoreError::Config(
            "the store URL names no database: use mysql://user:password@host:3306/database".into(),
        ));
    }
    let exists: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'",
    )
    .fetch_one(&mut *conn)
    .await
    .my()?;
    if exists == 0 && must_exist {
        return Err(StoreError::Config(
            "no Vigía store in this MariaDB database (no schema_migrations table)".into(),
        ));
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT NOT NULL PRIMARY KEY,
             applied_at BIGINT NOT NULL
         ) ENGINE = InnoDB",
    )
    .execute(&mut *conn)
    .await
    .my()?;
    let current = version(conn).await?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::Internal(format!(
            "the database schema is version {current}, newer than this build of Vigía \
             understands (at most {SCHEMA_VERSION}); run a newer Vigía or use another database"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = index as i64 + 1;
        if version <= current {
            continue;
        }
        // The whole file as one multi-statement text query: one round trip.
        // A `&str` runs as a text query: the file's statements in one round trip.
        let sql: &str = sql;
        (&mut *conn).execute(sql).await.map_err(|e| {
            StoreError::Internal(format!("MariaDB migration {version} failed: {e}"))
        })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
            .bind(version)
            .bind(Timestamp::now().0)
            .execute(&mut *conn)
            .await
            .my()?;
        tracing::info!(version, "applied MariaDB migration");
    }
    Ok(())
}

async fn version(conn: &mut MySqlConnection) -> StoreResult<i64> {
    // COALESCE(max(...)) of a BIGINT column is a BIGINT: decodes as i64.
    sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .my()
}

/// The highest version recorded.
pub(crate) async fn schema_version(pool: &MySqlPool) -> StoreResult<i64> {
    version(&mut *pool.acquire().await.my()?).await
}
