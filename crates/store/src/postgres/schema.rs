//! Migrations: numbered SQL files under `migrations/postgres`, compiled in, applied at
//! open in ONE transaction that first takes a transaction-scoped advisory lock, so two
//! processes opening a fresh database at once migrate one after the other (the second
//! finds the versions recorded and skips). `schema_migrations` records each version.

use sqlx::{Executor, PgPool};
use vigia_core::Timestamp;

use super::error::PgResultExt;
use crate::{StoreError, StoreResult};

/// Every migration, in order; version N is `MIGRATIONS[N - 1]`. Append-only.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_rollups.sql"),
    include_str!("../../migrations/postgres/0003_dead_letters.sql"),
    include_str!("../../migrations/postgres/0004_robots.sql"),
    include_str!("../../migrations/postgres/0005_products_prices.sql"),
    include_str!("../../migrations/postgres/0006_alert_details.sql"),
    include_str!("../../migrations/postgres/0007_excursions.sql"),
];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Advisory lock key of migrations ("vigiamig" in ASCII), distinct from the partition lock.
const MIGRATION_LOCK: i64 = 0x7669_6769_616d_6967;

/// Applies the missing migrations. With `must_exist`, a database without a Vigía schema
/// is refused (`Config`) instead of being given one. A schema newer than this build is
/// refused (`Internal`): guessing at it could corrupt it.
pub(crate) async fn migrate(pool: &PgPool, must_exist: bool) -> StoreResult<()> {
    let mut tx = pool.begin().await.pg()?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await
        .pg()?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('schema_migrations') IS NOT NULL")
        .fetch_one(&mut *tx)
        .await
        .pg()?;
    if !exists && must_exist {
        return Err(StoreError::Config(
            "no Vigía store in this PostgreSQL database (no schema_migrations table)".into(),
        ));
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    bigint PRIMARY KEY,
             applied_at bigint NOT NULL
         )",
    )
    .execute(&mut *tx)
    .await
    .pg()?;
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await
            .pg()?;
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
        // A `&str` runs as a simple query: the file's statements in one round trip.
        let sql: &str = sql;
        (&mut *tx).execute(sql).await.map_err(|e| {
            StoreError::Internal(format!("PostgreSQL migration {version} failed: {e}"))
        })?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(Timestamp::now().0)
            .execute(&mut *tx)
            .await
            .pg()?;
        tracing::info!(version, "applied PostgreSQL migration");
    }
    tx.commit().await.pg()
}

/// The highest version recorded.
pub(crate) async fn schema_version(pool: &PgPool) -> StoreResult<i64> {
    sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM schema_migrations")
        .fetch_one(pool)
        .await
        .pg()
}
