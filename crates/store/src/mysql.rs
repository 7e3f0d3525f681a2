//! The MySQL/MariaDB backend (`mysql://…`, `mariadb://…`), on sqlx, for running several
//! Vigía processes against one database. Developed and tested against MariaDB 10.11.
//!
//! # Guarantees
//!
//! The same as every backend (the conformance suites check them): readings unique on
//! (sensor, metric, ts); one open-or-acked alert per (sensor, rule), enforced by the
//! unique key `alerts_one_unresolved` on a generated column that is NULL once an alert is
//! resolved (MariaDB has no partial index; see the migration); [`Store::write_batch`] is
//! ONE transaction with its readings, latest values, alert transitions and their outbox
//! events (see `batch.rs`); every tenant-scoped read filters by tenant.
//!
//! # Schema
//!
//! `migrations/mysql/NNNN_*.sql`, applied at open under a named lock (`schema.rs`). InnoDB
//! tables; readings clustered on (ts, sensor, metric) and not partitioned (the PostgreSQL
//! store partitions by day; see the migration for why not here).
//!
//! # Sessions
//!
//! Every connection runs `READ COMMITTED` (each statement sees what is committed; no gap
//! locks on inserts, so fewer lock waits between batches than InnoDB's default
//! REPEATABLE READ) and `STRICT_ALL_TABLES` (a value too long or out of range is an
//! error, never silently truncated). Decisions inside a transaction use locking reads
//! (`FOR UPDATE`). Deadlocks and lock wait timeouts are `Unavailable`: retrying works.
//!
//! # Connections
//!
//! `max_connections` is the TOTAL this store opens (seed 004 §1.2: Vigía works within 5),
//! at least 2, split as in the PostgreSQL store: without a replica one pool of that size;
//! with `read_url` a quarter (at least 1) for the replica. No operation holds two
//! connections at once. Acquiring waits at most `acquire_timeout` (then `Unavailable`).
//!
//! # Read replica
//!
//! The same split as the PostgreSQL store (see `postgres.rs`): lag-tolerant reads on
//! `read_url`, whose sessions are `READ ONLY`; writes, authentication and read-your-writes
//! on the primary.
//!
//! # Durability
//!
//! MariaDB decides it server-wide (`innodb_flush_log_at_trx_commit`, a GLOBAL variable
//! no session may change), so `Durability` cannot be applied per connection as on
//! PostgreSQL. At open the store reads the server's setting and warns when `full` is
//! asked but the server does not flush the log at every commit (a value other than 1):
//! then a crash of the SERVER may lose up to about a second of commits.

mod batch;
mod dead_letters;
mod error;
mod excursions;
mod prices;
mod queries;
mod robots;
mod rollups;
mod schema;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Executor, MySqlPool};
use vigia_core::{
    Alert, AlertId, ApiKeyId, ApiKeyInfo, ApiKeyRecord, Sensor, SensorId, SensorSpec, Tenant,
    TenantId, Timestamp,
};

pub use queries::OUTBOX_LOCK as OUTBOX_LOCK_ROW;
pub use schema::SCHEMA_VERSION;

use crate::registry::scheme_of;
use crate::{
    AlertFilter, AlertRepo, AuditEvent, AuditRecord, AuditRepo, CatalogRepo, DeadLetter,
    DeadLetterRepo, DeadLetterSummary, Durability, LatestReading, LeaseRepo, NewApiKey,
    NewDeadLetter, OpenContext, OutboxEntry, OutboxRepo, Point, ReadingQuery, ReadingRepo,
    RollupRepo, SensorPut, SensorReading, SensorScope, Store, StoreError, StoreFactory,
    StoreResult, WriteBatch, WriteOutcome,
};
use error::MyResultExt;

/// The URL schemes this backend opens.
pub const SCHEMES: &[&str] = &["mysql", "mariadb"];

/// Sensors (and metric names) remembered at most; past it the cache starts over. Both
/// facts never change once committed, so a cache can only be incomplete, never wrong.
const CACHE_LIMIT: usize = 1_000_000;

/// Default size bound of one multi-row statement (see [`MysqlStoreOptions::statement_bytes`]).
pub const DEFAULT_STATEMENT_BYTES: usize = 4 << 20;

/// How to open a [`MysqlStore`].
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlStoreOptions {
    /// The primary: `mysql://user:password@host:3306/database`.
    pub url: String,
    /// A replica for lag-tolerant reads (see the module docs); `None` reads the primary.
    pub read_url: Option<String>,
    /// What the caller asks for; MariaDB applies its own server-wide setting (module docs).
    pub durability: Durability,
    /// Connections in all, across both pools; at least 2.
    pub max_connections: u32,
    /// Longest wait for a connection (and so for an unreachable server) before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Largest multi-row INSERT in bytes; at open it is lowered to half the server's
    /// `max_allowed_packet` if that is smaller, so no statement is ever refused for size.
    pub statement_bytes: usize,
    /// Refuse a database that has no Vigía schema yet (instead of creating it).
    pub must_exist: bool,
}

impl MysqlStoreOptions {
    /// Defaults for the database at `url`: 10 connections, 5 s to acquire one, 4 MiB
    /// statements.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_url: None,
            durability: Durability::Full,
            max_connections: crate::registry::DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Duration::from_secs(5),
            statement_bytes: DEFAULT_STATEMENT_BYTES,
            must_exist: false,
        }
    }
}

/// (primary, replica) pool sizes for `total` connections: the PostgreSQL store's split.
pub fn pool_sizes(total: u32, replica: bool) -> StoreResult<(u32, u32)> {
    crate::postgres::pool_sizes(total, replica).map_err(|_| {
        StoreError::Config(format!(
            "store_max_connections is {total}; the MariaDB store needs at least 2"
        ))
    })
}

/// Parses a MySQL/MariaDB URL; `what` names the setting in the message. The URL itself
/// is never echoed: it may hold a password.
fn connect_options(url: &str, what: &str) -> StoreResult<MySqlConnectOptions> {
    let scheme = scheme_of(url);
    if !SCHEMES.contains(&scheme) || !url[scheme.len()..].starts_with("://") {
        return Err(StoreError::Config(format!(
            "{what} must be a MariaDB/MySQL URL (mysql://user:password@host:3306/database), \
             not a `{scheme}` one"
        )));
    }
    // sqlx reads any scheme's URL the same way; it only needs a `mysql` one to parse.
    let normalized = format!("mysql{}", &url[scheme.len()..]);
    let options = MySqlConnectOptions::from_str(&normalized).map_err(|e| {
        StoreError::Config(format!(
            "{what} is not a valid MariaDB URL ({e}); use \
             mysql://user:password@host:3306/database"
        ))
    })?;
    if options.get_database().is_none_or(str::is_empty) {
        return Err(StoreError::Config(format!(
            "{what} names no database; use mysql://user:password@host:3306/database"
        )));
    }
    Ok(options)
}

/// `host:port/database` of a URL, for messages (no user, no password).
fn describe(options: &MySqlConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

/// What every new connection runs first (see "Sessions" in the module docs), in one
/// round trip.
fn session_setup(read_only: bool) -> &'static str {
    if read_only {
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES');
         SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED;
         SET SESSION TRANSACTION READ ONLY"
    } else {
        "SET SESSION sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES');
         SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
    }
}

fn pool(
    options: MySqlConnectOptions,
    size: u32,
    acquire_timeout: Duration,
    read_only: bool,
) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        // A broken connection fails its one call with `Unavailable` and is dropped; a
        // ping before every acquire would cost a round trip per call.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                // A `&str` runs as a text query: its statements in one round trip.
                conn.execute(session_setup(read_only)).await?;
                Ok(())
            })
        })
        .connect_lazy_with(options)
}

/// The MySQL/MariaDB implementation of [`Store`]. See the module docs for its design.
pub struct MysqlStore {
    write: MySqlPool,
    /// The replica's pool, or a handle on `write` when there is none.
    read: MySqlPool,
    /// Largest multi-row statement, in bytes (under the server's max_allowed_packet).
    statement_bytes: usize,
    /// Sensor id → tenant id, for checking batches without a query.
    sensors: Mutex<HashMap<i64, i64>>,
    /// Metric name → id.
    metrics: Mutex<HashMap<String, i64>>,
}

impl MysqlStore {
    /// Connects and applies migrations. `Unavailable` when the server cannot be reached
    /// within the acquire timeout, `Config` for a bad URL or setting.
    pub async fn open(options: MysqlStoreOptions) -> StoreResult<MysqlStore> {
        let (write_size, read_size) =
            pool_sizes(options.max_connections, options.read_url.is_some())?;
        let primary = connect_options(&options.url, "the store URL (`store`)")?;
        let target = describe(&primary);
        let write = pool(primary, write_size, options.acquire_timeout, false);
        let at = |e: StoreError| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("MariaDB at {target}: {m}"))
            }
            StoreError::Config(m) => StoreError::Config(format!("MariaDB at {target}: {m}")),
            other => other,
        };
        schema::migrate(&write, options.must_exist)
            .await
            .map_err(at)?;
        let (max_packet, flush_at_commit): (i64, i64) = sqlx::query_as(
            "SELECT CAST(@@max_allowed_packet AS SIGNED),
                    CAST(@@innodb_flush_log_at_trx_commit AS SIGNED)",
        )
        .fetch_one(&write)
        .await
        .my()
        .map_err(at)?;
        let statement_bytes = options
            .statement_bytes
            .min(usize::try_from(max_packet / 2).unwrap_or(usize::MAX))
            .max(1024);
        if options.durability == Durability::Full && flush_at_commit != 1 {
            tracing::warn!(
                innodb_flush_log_at_trx_commit = flush_at_commit,
                "durability is `full` but this MariaDB server does not flush its log at every \
                 commit: a crash of the server may lose the last second of commits \
                 (set innodb_flush_log_at_trx_commit = 1 on the server)"
            );
        }
        let read = match &options.read_url {
            None => write.clone(),
            Some(url) => {
                let replica = connect_options(url, "store_read_url")?;
                let replica_target = describe(&replica);
                let read = pool(replica, read_size, options.acquire_timeout, true);
                sqlx::query("SELECT 1")
                    .execute(&read)
                    .await
                    .my()
                    .map_err(|e| match e {
                        StoreError::Unavailable(m) => StoreError::Unavailable(format!(
                            "MariaDB replica at {replica_target}: {m}"
                        )),
                        other => other,
                    })?;
                read
            }
        };
        tracing::info!(
            durability = ?options.durability,
            innodb_flush_log_at_trx_commit = flush_at_commit,
            write_connections = write_size,
            read_connections = read_size,
            replica = options.read_url.is_some(),
            statement_bytes,
            "MariaDB store open"
        );
        Ok(MysqlStore {
            write,
            read,
            statement_bytes,
            sensors: Mutex::new(HashMap::new()),
            metrics: Mutex::new(HashMap::new()),
        })
    }

    /// Closes both pools; later calls fail with `Unavailable`. Idempotent.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    /// The schema version recorded in the database (equals [`SCHEMA_VERSION`] once open).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        schema::schema_version(&self.write).await
    }

    /// The multi-row statement bound in effect (after the server's max_allowed_packet).
    pub fn statement_bytes(&self) -> usize {
        self.statement_bytes
    }

    /// Whether reads answer from a read-only session (true on the replica pool).
    pub async fn reads_are_read_only(&self) -> StoreResult<bool> {
        let read_only: i64 = sqlx::query_scalar("SELECT CAST(@@session.tx_read_only AS SIGNED)")
            .fetch_one(&self.read)
            .await
            .my()?;
        Ok(read_only == 1)
    }

    async fn primary(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::MySql>> {
        self.write.acquire().await.my()
    }

    async fn replica(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::MySql>> {
        self.read.acquire().await.my()
    }

    fn remember_sensors<'a>(&self, sensors: impl IntoIterator<Item = &'a Sensor>) {
        let mut cache = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        for s in sensors {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(s.id.0, s.tenant.0);
        }
    }

    /// Tenant of each of `ids` that exists, from the cache or the primary.
    async fn sensor_tenants(&self, mut ids: Vec<i64>) -> StoreResult<HashMap<i64, i64>> {
        ids.sort_unstable();
        ids.dedup();
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let cache = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
            for id in ids {
                match cache.get(&id) {
                    Some(&tenant) => {
                        found.insert(id, tenant);
                    }
                    None => missing.push(id),
                }
            }
        }
        if !missing.is_empty() {
            let rows = queries::sensor_tenants(&mut *self.primary().await?, &missing).await?;
            let mut cache = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
            for (id, tenant) in rows {
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(id, tenant);
                found.insert(id, tenant);
            }
        }
        Ok(found)
    }

    /// Id of each metric name, interning new ones.
    async fn metric_ids<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
    ) -> StoreResult<HashMap<&'a str, i64>> {
        let mut found = HashMap::new();
        let mut missing: Vec<&str> = Vec::new();
        {
            let cache = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
            for name in names {
                if found.contains_key(name) || missing.contains(&name) {
                    continue;
                }
                match cache.get(name) {
                    Some(&id) => {
                        found.insert(name, id);
                    }
                    None => missing.push(name),
                }
            }
        }
        if !missing.is_empty() {
            let rows = batch::intern_metrics(&mut *self.primary().await?, &missing).await?;
            let mut cache = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
            for (id, name) in rows {
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                if let Some(&key) = missing.iter().find(|m| **m == name) {
                    found.insert(key, id);
                }
                cache.insert(name, id);
            }
            if let Some(name) = missing.iter().find(|m| !found.contains_key(*m)) {
                return Err(StoreError::Internal(format!(
                    "metric `{name}` vanished after interning it"
                )));
            }
        }
        Ok(found)
    }

    async fn put_sensor_once(
        &self,
        tenant: TenantId,
        key: &str,
        spec: &SensorSpec,
        resolved_by: &str,
        at: Timestamp,
    ) -> StoreResult<SensorPut> {
        let mut tx = self.write.begin().await.my()?;
        queries::lock_outbox(&mut tx).await?;
        let (sensor, created) = queries::put_sensor(&mut tx, tenant, key, spec, at).await?;
        // Appends one outbox event per resolved alert, in this transaction.
        let resolved = queries::resolve_removed_rules(&mut tx, &sensor, resolved_by, at).await?;
        tx.commit().await.my()?;
        self.remember_sensors([&sensor]);
        Ok(SensorPut {
            sensor,
            created,
            resolved,
        })
    }
}

#[async_trait]
impl Store for MysqlStore {
    fn catalog(&self) -> &dyn CatalogRepo {
        self
    }
    fn readings(&self) -> &dyn ReadingRepo {
        self
    }
    fn alerts(&self) -> &dyn AlertRepo {
        self
    }
    fn audit(&self) -> &dyn AuditRepo {
        self
    }
    fn leases(&self) -> &dyn LeaseRepo {
        self
    }
    fn outbox(&self) -> &dyn OutboxRepo {
        self
    }
    fn rollups(&self) -> &dyn RollupRepo {
        self
    }
    fn dead_letters(&self) -> &dyn DeadLetterRepo {
        self
    }
    fn robots(&self) -> &dyn crate::RobotRepo {
        self
    }
    fn products(&self) -> &dyn crate::ProductRepo {
        self
    }
    fn prices(&self) -> &dyn crate::PriceRepo {
        self
    }
    fn excursions(&self) -> &dyn crate::ExcursionRepo {
        self
    }

    async fn write_batch(&self, batch: WriteBatch) -> StoreResult<WriteOutcome> {
        if batch.readings.is_empty() && batch.alerts.is_empty() && batch.excursions.is_empty() {
            return Ok(WriteOutcome::default());
        }
        batch::write_batch(self, batch).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.write).await.my()?;
        Ok(())
    }

    async fn housekeep(&self) -> StoreResult<String> {
        let stale =
            queries::drop_stale_leases(&mut *self.primary().await?, Timestamp::now()).await?;
        Ok(format!("{stale} stale lease(s) removed"))
    }

    async fn close(&self) {
        MysqlStore::close(self).await
    }
}

#[async_trait]
impl CatalogRepo for MysqlStore {
    async fn default_tenant(&self) -> StoreResult<Tenant> {
        queries::default_tenant(&mut *self.primary().await?, Timestamp::now()).await
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        queries::tenant_by_slug(&mut *self.primary().await?, slug).await
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant> {
        queries::create_tenant(&mut *self.primary().await?, slug, name, Timestamp::now()).await
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        queries::count_api_keys(&mut *self.primary().await?).await
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyInfo> {
        queries::insert_api_key(&mut *self.primary().await?, key, Timestamp::now()).await
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
        queries::find_api_key(&mut *self.primary().await?, &hash).await
    }

    async fn list_api_keys(&self, tenant: TenantId) -> StoreResult<Vec<ApiKeyInfo>> {
        queries::list_api_keys(&mut *self.primary().await?, tenant).await
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Timestamp,
    ) -> StoreResult<[u8; 32]> {
        let mut tx = self.write.begin().await.my()?;
        let hash = queries::revoke_api_key(&mut tx, tenant, id, at).await?;
        tx.commit().await.my()?;
        Ok(hash)
    }

    async fn list_sensors(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Sensor>> {
        queries::list_sensors(&mut *self.replica().await?, tenant, after, limit).await
    }

    async fn all_sensors(&self) -> StoreResult<Vec<Sensor>> {
        queries::all_sensors(&mut *self.primary().await?).await
    }

    async fn get_sensor(&self, tenant: TenantId, key: &str) -> StoreResult<Option<Sensor>> {
        queries::get_sensor(&mut *self.primary().await?, tenant, key).await
    }

    async fn put_sensor(
        &self,
        tenant: TenantId,
        key: &str,
        spec: &SensorSpec,
        resolved_by: &str,
        at: Timestamp,
    ) -> StoreResult<SensorPut> {
        // Puts serialize on the outbox lock, so only a writer outside this store can
        // create the key between the locking read and the insert: once, then the retry's
        // locking read finds it.
        match self
            .put_sensor_once(tenant, key, spec, resolved_by, at)
            .await
        {
            Err(StoreError::Conflict(m)) if m.contains("was created concurrently") => {
                self.put_sensor_once(tenant, key, spec, resolved_by, at)
                    .await
            }
            other => other,
        }
    }

    async fn provision_sensors(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<Sensor>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let sensors =
            queries::provision_sensors(&mut *self.primary().await?, tenant, keys, Timestamp::now())
                .await?;
        self.remember_sensors(&sensors);
        Ok(sensors)
    }
}

#[async_trait]
impl ReadingRepo for MysqlStore {
    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &ReadingQuery,
    ) -> StoreResult<Vec<Point>> {
        queries::series(&mut *self.replica().await?, tenant, sensor_key, query).await
    }

    async fn latest(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<LatestReading>> {
        queries::latest(&mut *self.replica().await?, Some(tenant), scope).await
    }

    async fn all_latest(&self) -> StoreResult<Vec<LatestReading>> {
        queries::latest(&mut *self.primary().await?, None, &SensorScope::All).await
    }

    async fn recent(&self, since: Timestamp, limit: usize) -> StoreResult<Vec<SensorReading>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        queries::recent(&mut *self.primary().await?, since, limit).await
    }
}

#[async_trait]
impl AlertRepo for MysqlStore {
    async fn list(&self, tenant: TenantId, filter: &AlertFilter) -> StoreResult<Vec<Alert>> {
        queries::list_alerts(&mut *self.replica().await?, tenant, filter).await
    }

    async fn get(&self, tenant: TenantId, id: AlertId) -> StoreResult<Alert> {
        queries::get_alert(&mut *self.primary().await?, tenant, id).await
    }

    async fn ack(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        let mut tx = self.write.begin().await.my()?;
        queries::lock_outbox(&mut tx).await?;
        let alert = queries::ack(&mut tx, tenant, id, by, at).await?;
        tx.commit().await.my()?;
        Ok(alert)
    }

    async fn resolve(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        let mut tx = self.write.begin().await.my()?;
        queries::lock_outbox(&mut tx).await?;
        let alert = queries::resolve(&mut tx, tenant, id, by, at).await?;
        tx.commit().await.my()?;
        Ok(alert)
    }

    async fn unresolved(&self) -> StoreResult<Vec<Alert>> {
        queries::unresolved(&mut *self.primary().await?).await
    }

    async fn unresolved_counts(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<(SensorId, u64)>> {
        queries::unresolved_counts(&mut *self.replica().await?, tenant, scope).await
    }
}

#[async_trait]
impl AuditRepo for MysqlStore {
    async fn record(&self, events: &[(AuditEvent, u64)], at: Timestamp) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await.my()?;
        queries::record_audit(&mut tx, events, at).await?;
        tx.commit().await.my()
    }

    async fn list(&self, tenant: Option<TenantId>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        queries::list_audit(&mut *self.replica().await?, tenant, limit).await
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        queries::prune_audit(&mut *self.primary().await?, before).await
    }
}

#[async_trait]
impl LeaseRepo for MysqlStore {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.write.begin().await.my()?;
        let held = queries::try_acquire_lease(&mut tx, name, holder, ttl, now).await?;
        tx.commit().await.my()?;
        Ok(held)
    }

    async fn release(&self, name: &str, holder: &str) -> StoreResult<()> {
        queries::release_lease(&mut *self.primary().await?, name, holder).await
    }

    async fn holders(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<(String, String)>> {
        queries::lease_holders(&mut *self.primary().await?, prefix, now).await
    }
}

#[async_trait]
impl OutboxRepo for MysqlStore {
    async fn read_after(&self, after: u64, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        queries::read_outbox(&mut *self.replica().await?, after, limit).await
    }

    async fn cursor(&self, consumer: &str) -> StoreResult<u64> {
        queries::cursor(&mut *self.primary().await?, consumer).await
    }

    async fn save_cursor(&self, consumer: &str, position: u64) -> StoreResult<()> {
        queries::save_cursor(&mut *self.primary().await?, consumer, position).await
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        queries::prune_outbox(&mut *self.primary().await?, before).await
    }
}

#[async_trait]
impl crate::ProductRepo for MysqlStore {
    async fn put(
        &self,
        tenant: TenantId,
        put: crate::ProductPut,
        at: Timestamp,
    ) -> StoreResult<(crate::Product, bool)> {
        let mut tx = self.write.begin().await.my()?;
        let stored = prices::put_product(&mut tx, tenant, &put, at).await?;
        tx.commit().await.my()?;
        Ok(stored)
    }

    async fn get(&self, tenant: TenantId, code: &str) -> StoreResult<crate::Product> {
        prices::product(&mut *self.replica().await?, tenant, code).await
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<crate::Product>> {
        prices::products(&mut *self.replica().await?, tenant, after, limit).await
    }

    async fn delete(&self, tenant: TenantId, code: &str) -> StoreResult<()> {
        prices::delete_product(&mut *self.primary().await?, tenant, code).await
    }
}

#[async_trait]
impl crate::PriceRepo for MysqlStore {
    async fn import(
        &self,
        tenant: TenantId,
        rows: Vec<crate::NewPrice>,
        at: Timestamp,
    ) -> StoreResult<crate::ImportCounts> {
        let mut tx = self.write.begin().await.my()?;
        let counts = prices::import(&mut tx, tenant, &rows, at).await?;
        tx.commit().await.my()?;
        Ok(counts)
    }

    async fn list(
        &self,
        tenant: TenantId,
        filter: &crate::PriceFilter,
    ) -> StoreResult<Vec<crate::Price>> {
        prices::list(&mut *self.replica().await?, tenant, filter).await
    }

    async fn in_force(
        &self,
        tenant: TenantId,
        product: &str,
        currency: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<Option<crate::Price>> {
        prices::in_force(&mut *self.replica().await?, tenant, product, currency, at).await
    }
}

#[async_trait]
impl DeadLetterRepo for MysqlStore {
    async fn put(&self, letter: NewDeadLetter, at: Timestamp) -> StoreResult<u64> {
        dead_letters::put(&mut *self.primary().await?, &letter, at).await
    }

    async fn list(
        &self,
        tenant: TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetterSummary>> {
        dead_letters::list(&mut *self.replica().await?, tenant, before, limit).await
    }

    async fn get(&self, tenant: TenantId, id: u64) -> StoreResult<DeadLetter> {
        dead_letters::get(&mut *self.replica().await?, tenant, id).await
    }

    async fn delete(&self, tenant: TenantId, id: u64) -> StoreResult<()> {
        dead_letters::delete(&mut *self.primary().await?, tenant, id).await
    }
}

/// Opens `mysql://` and `mariadb://` URLs.
pub struct MysqlFactory;

impl MysqlFactory {
    fn options(url: &str, ctx: &OpenContext) -> StoreResult<MysqlStoreOptions> {
        connect_options(url, "the store URL (`store`)")?;
        if let Some(read_url) = &ctx.read_url {
            connect_options(read_url, "store_read_url")?;
        }
        pool_sizes(ctx.max_connections, ctx.read_url.is_some())?;
        Ok(MysqlStoreOptions {
            read_url: ctx.read_url.clone(),
            durability: ctx.durability,
            max_connections: ctx.max_connections,
            must_exist: ctx.must_exist,
            ..MysqlStoreOptions::new(url)
        })
    }
}

#[async_trait]
impl StoreFactory for MysqlFactory {
    fn schemes(&self) -> &'static [&'static str] {
        SCHEMES
    }

    fn usage(&self) -> &'static str {
        "`mysql://user:password@host:3306/database` (MariaDB 10.6+; also `mariadb://`)"
    }

    fn validate(&self, url: &str, ctx: &OpenContext) -> StoreResult<()> {
        Self::options(url, ctx).map(|_| ())
    }

    async fn open(&self, url: &str, ctx: &OpenContext) -> StoreResult<Arc<dyn Store>> {
        Ok(Arc::new(MysqlStore::open(Self::options(url, ctx)?).await?))
    }
}

#[async_trait]
impl crate::ExcursionRepo for MysqlStore {
    async fn list(&self, query: &crate::ExcursionQuery) -> StoreResult<Vec<crate::Excursion>> {
        excursions::list(&mut *self.replica().await?, query).await
    }

    /// From the primary: a restart must see every committed excursion.
    async fn ongoing(&self) -> StoreResult<Vec<crate::Excursion>> {
        excursions::ongoing(&mut *self.primary().await?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_split_the_total() {
        assert_eq!(pool_sizes(5, false).unwrap(), (5, 0));
        assert_eq!(pool_sizes(5, true).unwrap(), (4, 1));
        assert!(
            matches!(pool_sizes(1, false), Err(StoreError::Config(m)) if m.contains("MariaDB"))
        );
    }

    #[test]
    fn urls_are_checked_without_echoing_secrets() {
        let ctx = OpenContext::new("/tmp/x");
        let f = MysqlFactory;
        f.validate("mysql://u:pw@localhost:3306/db", &ctx).unwrap();
        f.validate("mariadb://root@127.0.0.1/db", &ctx).unwrap();
        for bad in [
            "mysql://u:secret@host:notaport/db",
            "mysql:/nohost",
            "mysql://u:secret@host:3306",
            "mysql://u:secret@host:3306/",
            "postgres://u:secret@host/db",
        ] {
            let err = f.validate(bad, &ctx).unwrap_err();
            assert!(
                matches!(&err, StoreError::Config(m) if !m.contains("secret")),
                "{bad}: {err:?}"
            );
        }
        let replica = OpenContext {
            read_url: Some("postgres://replica/db".into()),
            ..ctx.clone()
        };
        let err = f.validate("mysql://localhost/db", &replica).unwrap_err();
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("store_read_url")),
            "{err:?}"
        );
        let tiny = OpenContext {
            max_connections: 1,
            ..ctx
        };
        assert!(matches!(
            f.validate("mysql://localhost/db", &tiny),
            Err(StoreError::Config(_))
        ));
    }
}
