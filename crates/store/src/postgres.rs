//! The PostgreSQL backend (`postgres://…`, `postgresql://…`), on sqlx, for running
//! several Vigía processes against one database.
//!
//! # Guarantees
//!
//! The same as every backend (the conformance suites check them): readings unique on
//! (sensor, metric, ts); one open-or-acked alert per (sensor, rule), enforced by the
//! partial unique index `alerts_one_unresolved`, whatever the number of processes;
//! [`Store::write_batch`] is ONE transaction with its readings, latest values, alert
//! transitions and their outbox events (see `batch.rs`); every tenant-scoped read filters
//! by tenant.
//!
//! # Schema
//!
//! `migrations/postgres/NNNN_*.sql`, applied at open under an advisory lock (`schema.rs`).
//! `readings` is range-partitioned on `ts` by UTC day, with a DEFAULT partition so no
//! reading is ever refused; partitions are created ahead at open and by `housekeep()`
//! (`partitions.rs`, which says why daily). TimescaleDB is not used: no target machine
//! has it, and plain declarative partitioning gives the retention and pruning we need.
//!
//! # Connections
//!
//! `max_connections` is the TOTAL this store opens (seed 004 §1.2: Vigía works within 5),
//! at least 2. Without a replica, one pool of that size serves everything. With
//! `read_url`, a quarter (at least 1) goes to a read pool on the replica and the rest to
//! the primary: 5 → 4 primary + 1 replica; 10 → 8 + 2; 2 → 1 + 1. No operation ever holds
//! two connections at once, so even pools of one connection cannot deadlock. Acquiring
//! waits at most `acquire_timeout` (then `Unavailable`), which also bounds how long an
//! unreachable server can stall a call.
//!
//! # Read replica
//!
//! Reads that tolerate lag go to `read_url`: series, latest values of a tenant, lists of
//! sensors and alerts, unresolved counts, the audit list, outbox reads (a consumer just
//! sees an event later). Everything else stays on the primary: writes, authentication
//! (`find_api_key`, `count_api_keys`, `list_api_keys`), tenants, `get_sensor` and
//! `all_sensors` (a sensor just created must resolve), single alerts (re-read after an
//! ack), the rule-state rebuild (`unresolved`, `all_latest`, `recent`) and outbox cursors.
//! Replica connections are opened with `default_transaction_read_only = on`.
//!
//! # Durability
//!
//! `Durability::Full` → `synchronous_commit = on` (a commit returns once its WAL is
//! flushed on the server). `Durability::Os` → `synchronous_commit = off`: a commit returns
//! before the flush, so a crash of the PostgreSQL SERVER (not of Vigía: a `kill -9` of a
//! Vigía process loses nothing committed) may lose the last few hundred milliseconds of
//! commits, never corrupting or half-applying one. It is set per connection, at connect.

mod batch;
mod dead_letters;
mod error;
mod excursions;
pub mod partitions;
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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use vigia_core::{
    Alert, AlertId, ApiKeyId, ApiKeyInfo, ApiKeyRecord, Sensor, SensorId, SensorSpec, Tenant,
    TenantId, Timestamp,
};

pub use partitions::{PartitionReport, DEFAULT_PARTITIONS_AHEAD, PARTITION_WIDTH_MS};
/// The transaction-scoped advisory lock every outbox-writing transaction takes before it
/// touches an alert row (so outbox ids commit in order; see `queries::lock_outbox`).
pub use queries::OUTBOX_LOCK as OUTBOX_LOCK_KEY;
pub use schema::SCHEMA_VERSION;

use crate::registry::scheme_of;
use crate::{
    AlertFilter, AlertRepo, AuditEvent, AuditRecord, AuditRepo, CatalogRepo, DeadLetter,
    DeadLetterRepo, DeadLetterSummary, Durability, LatestReading, LeaseRepo, NewApiKey,
    NewDeadLetter, OpenContext, OutboxEntry, OutboxRepo, Point, ReadingQuery, ReadingRepo,
    RollupRepo, SensorPut, SensorReading, SensorScope, Store, StoreError, StoreFactory,
    StoreResult, WriteBatch, WriteOutcome,
};
use error::PgResultExt;

/// The URL schemes this backend opens.
pub const SCHEMES: &[&str] = &["postgres", "postgresql"];

/// Sensors (and metric names) remembered at most; past it the cache starts over. Both
/// facts never change once committed, so a cache can only be incomplete, never wrong.
const CACHE_LIMIT: usize = 1_000_000;

/// How to open a [`PostgresStore`].
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresStoreOptions {
    /// The primary: `postgres://user:password@host:5432/database`.
    pub url: String,
    /// A replica for lag-tolerant reads (see the module docs); `None` reads the primary.
    pub read_url: Option<String>,
    pub durability: Durability,
    /// Connections in all, across both pools; at least 2.
    pub max_connections: u32,
    /// Longest wait for a connection (and so for an unreachable server) before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Days after today whose readings partition is created ahead.
    pub partitions_ahead: u32,
    /// Refuse a database that has no Vigía schema yet (instead of creating it).
    pub must_exist: bool,
}

impl PostgresStoreOptions {
    /// Defaults for the database at `url`: full durability, 10 connections, 5 s to
    /// acquire one, partitions a week ahead.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            read_url: None,
            durability: Durability::Full,
            max_connections: crate::registry::DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: Duration::from_secs(5),
            partitions_ahead: DEFAULT_PARTITIONS_AHEAD,
            must_exist: false,
        }
    }
}

/// (primary, replica) pool sizes for `total` connections; the replica pool is 0 without
/// a replica. See the module docs.
pub fn pool_sizes(total: u32, replica: bool) -> StoreResult<(u32, u32)> {
    if total < 2 {
        return Err(StoreError::Config(format!(
            "store_max_connections is {total}; the PostgreSQL store needs at least 2"
        )));
    }
    if !replica {
        return Ok((total, 0));
    }
    let read = (total / 4).max(1);
    Ok((total - read, read))
}

/// Parses a PostgreSQL URL; `what` names the setting in the message. The URL itself is
/// never echoed: it may hold a password.
fn connect_options(url: &str, what: &str) -> StoreResult<PgConnectOptions> {
    let scheme = scheme_of(url);
    if !SCHEMES.contains(&scheme) || !url[scheme.len()..].starts_with("://") {
        return Err(StoreError::Config(format!(
            "{what} must be a PostgreSQL URL (postgres://user:password@host:5432/database), \
             not a `{scheme}` one"
        )));
    }
    PgConnectOptions::from_str(url).map_err(|e| {
        StoreError::Config(format!(
            "{what} is not a valid PostgreSQL URL ({e}); use \
             postgres://user:password@host:5432/database"
        ))
    })
}

/// `host:port/database` of a URL, for messages (no user, no password).
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

fn pool(options: PgConnectOptions, size: u32, acquire_timeout: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        // A broken connection fails its one call with `Unavailable` and is dropped; a
        // ping before every acquire would cost a round trip per call.
        .test_before_acquire(false)
        .connect_lazy_with(options)
}

/// The PostgreSQL implementation of [`Store`]. See the module docs for its design.
pub struct PostgresStore {
    write: PgPool,
    /// The replica's pool, or a handle on `write` when there is none.
    read: PgPool,
    partitions_ahead: u32,
    /// Sensor id → tenant id, for checking batches without a query.
    sensors: Mutex<HashMap<i64, i64>>,
    /// Metric name → id.
    metrics: Mutex<HashMap<String, i64>>,
}

impl PostgresStore {
    /// Connects, applies migrations and creates the readings partitions of today and the
    /// days ahead. `Unavailable` when the server cannot be reached within the acquire
    /// timeout, `Config` for a bad URL or setting.
    pub async fn open(options: PostgresStoreOptions) -> StoreResult<PostgresStore> {
        let (write_size, read_size) =
            pool_sizes(options.max_connections, options.read_url.is_some())?;
        let synchronous_commit = match options.durability {
            Durability::Full => "on",
            Durability::Os => "off",
        };
        let primary = connect_options(&options.url, "the store URL (`store`)")?
            .application_name("vigia")
            .options([("synchronous_commit", synchronous_commit)]);
        let target = describe(&primary);
        let write = pool(primary, write_size, options.acquire_timeout);
        let at = |e: StoreError| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("PostgreSQL at {target}: {m}"))
            }
            StoreError::Config(m) => StoreError::Config(format!("PostgreSQL at {target}: {m}")),
            other => other,
        };
        schema::migrate(&write, options.must_exist)
            .await
            .map_err(at)?;
        let read = match &options.read_url {
            None => write.clone(),
            Some(url) => {
                let replica = connect_options(url, "store_read_url")?
                    .application_name("vigia-read")
                    .options([("default_transaction_read_only", "on")]);
                let replica_target = describe(&replica);
                let read = pool(replica, read_size, options.acquire_timeout);
                sqlx::query("SELECT 1")
                    .execute(&read)
                    .await
                    .pg()
                    .map_err(|e| match e {
                        StoreError::Unavailable(m) => StoreError::Unavailable(format!(
                            "PostgreSQL replica at {replica_target}: {m}"
                        )),
                        other => other,
                    })?;
                read
            }
        };
        partitions::ensure(&write, Timestamp::now(), options.partitions_ahead)
            .await
            .map_err(at)?;
        tracing::info!(
            durability = ?options.durability,
            write_connections = write_size,
            read_connections = read_size,
            replica = options.read_url.is_some(),
            "PostgreSQL store open"
        );
        Ok(PostgresStore {
            write,
            read,
            partitions_ahead: options.partitions_ahead,
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

    /// The partitions of `readings` by name (`readings_default` included).
    pub async fn reading_partitions(&self) -> StoreResult<Vec<String>> {
        partitions::list(&self.write).await
    }

    /// Creates the readings partitions from `now`'s day to `partitions_ahead` days after
    /// it, moving rows of their ranges out of the default partition (what `housekeep`
    /// does with the current time).
    pub async fn ensure_partitions(&self, now: Timestamp) -> StoreResult<PartitionReport> {
        partitions::ensure(&self.write, now, self.partitions_ahead).await
    }

    /// `synchronous_commit` as the primary's connections have it (`on` or `off`).
    pub async fn synchronous_commit(&self) -> StoreResult<String> {
        sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
            .fetch_one(&self.write)
            .await
            .pg()
    }

    /// Whether reads of `pool` answer from a read-only session (true on the replica pool).
    pub async fn reads_are_read_only(&self) -> StoreResult<bool> {
        let setting: String =
            sqlx::query_scalar("SELECT current_setting('default_transaction_read_only')")
                .fetch_one(&self.read)
                .await
                .pg()?;
        Ok(setting == "on")
    }

    async fn primary(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.write.acquire().await.pg()
    }

    async fn replica(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.read.acquire().await.pg()
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
}

#[async_trait]
impl Store for PostgresStore {
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
        sqlx::query("SELECT 1").execute(&self.write).await.pg()?;
        Ok(())
    }

    async fn housekeep(&self) -> StoreResult<String> {
        let now = Timestamp::now();
        let report = self.ensure_partitions(now).await?;
        let stale = queries::drop_stale_leases(&mut *self.primary().await?, now).await?;
        Ok(format!(
            "{} readings partition(s) created{}, {} day(s) ahead covered; {stale} stale lease(s) removed",
            report.created.len(),
            if report.moved > 0 {
                format!(" ({} reading(s) moved out of the default partition)", report.moved)
            } else {
                String::new()
            },
            self.partitions_ahead
        ))
    }

    async fn close(&self) {
        PostgresStore::close(self).await
    }
}

#[async_trait]
impl CatalogRepo for PostgresStore {
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
        queries::revoke_api_key(&mut *self.primary().await?, tenant, id, at).await
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
        let mut tx = self.write.begin().await.pg()?;
        queries::lock_outbox(&mut tx).await?;
        let (sensor, created) = queries::put_sensor(&mut tx, tenant, key, spec, at).await?;
        // Appends one outbox event per resolved alert, in this transaction.
        let resolved = queries::resolve_removed_rules(&mut tx, &sensor, resolved_by, at).await?;
        tx.commit().await.pg()?;
        self.remember_sensors([&sensor]);
        Ok(SensorPut {
            sensor,
            created,
            resolved,
        })
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
impl ReadingRepo for PostgresStore {
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
impl AlertRepo for PostgresStore {
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
        let mut tx = self.write.begin().await.pg()?;
        queries::lock_outbox(&mut tx).await?;
        let alert = queries::ack(&mut tx, tenant, id, by, at).await?;
        tx.commit().await.pg()?;
        Ok(alert)
    }

    async fn resolve(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        let mut tx = self.write.begin().await.pg()?;
        queries::lock_outbox(&mut tx).await?;
        let alert = queries::resolve(&mut tx, tenant, id, by, at).await?;
        tx.commit().await.pg()?;
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
impl AuditRepo for PostgresStore {
    async fn record(&self, events: &[(AuditEvent, u64)], at: Timestamp) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await.pg()?;
        queries::record_audit(&mut tx, events, at).await?;
        tx.commit().await.pg()
    }

    async fn list(&self, tenant: Option<TenantId>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        queries::list_audit(&mut *self.replica().await?, tenant, limit).await
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        queries::prune_audit(&mut *self.primary().await?, before).await
    }
}

#[async_trait]
impl LeaseRepo for PostgresStore {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<bool> {
        queries::try_acquire_lease(&mut *self.primary().await?, name, holder, ttl, now).await
    }

    async fn release(&self, name: &str, holder: &str) -> StoreResult<()> {
        queries::release_lease(&mut *self.primary().await?, name, holder).await
    }

    async fn holders(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<(String, String)>> {
        queries::lease_holders(&mut *self.primary().await?, prefix, now).await
    }
}

#[async_trait]
impl OutboxRepo for PostgresStore {
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
impl crate::ProductRepo for PostgresStore {
    async fn put(
        &self,
        tenant: TenantId,
        put: crate::ProductPut,
        at: Timestamp,
    ) -> StoreResult<(crate::Product, bool)> {
        prices::put_product(&mut *self.primary().await?, tenant, &put, at).await
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
impl crate::PriceRepo for PostgresStore {
    async fn import(
        &self,
        tenant: TenantId,
        rows: Vec<crate::NewPrice>,
        at: Timestamp,
    ) -> StoreResult<crate::ImportCounts> {
        let mut tx = self.write.begin().await.pg()?;
        let counts = prices::import(&mut tx, tenant, &rows, at).await?;
        tx.commit().await.pg()?;
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
impl DeadLetterRepo for PostgresStore {
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

/// Opens `postgres://` and `postgresql://` URLs.
pub struct PostgresFactory;

impl PostgresFactory {
    fn options(url: &str, ctx: &OpenContext) -> StoreResult<PostgresStoreOptions> {
        connect_options(url, "the store URL (`store`)")?;
        if let Some(read_url) = &ctx.read_url {
            connect_options(read_url, "store_read_url")?;
        }
        pool_sizes(ctx.max_connections, ctx.read_url.is_some())?;
        Ok(PostgresStoreOptions {
            read_url: ctx.read_url.clone(),
            durability: ctx.durability,
            max_connections: ctx.max_connections,
            must_exist: ctx.must_exist,
            ..PostgresStoreOptions::new(url)
        })
    }
}

#[async_trait]
impl StoreFactory for PostgresFactory {
    fn schemes(&self) -> &'static [&'static str] {
        SCHEMES
    }

    fn usage(&self) -> &'static str {
        "`postgres://user:password@host:5432/database` (PostgreSQL 15+; also `postgresql://`)"
    }

    fn validate(&self, url: &str, ctx: &OpenContext) -> StoreResult<()> {
        Self::options(url, ctx).map(|_| ())
    }

    async fn open(&self, url: &str, ctx: &OpenContext) -> StoreResult<Arc<dyn Store>> {
        Ok(Arc::new(
            PostgresStore::open(Self::options(url, ctx)?).await?,
        ))
    }
}

#[async_trait]
impl crate::ExcursionRepo for PostgresStore {
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
        assert_eq!(pool_sizes(10, true).unwrap(), (8, 2));
        assert_eq!(pool_sizes(2, true).unwrap(), (1, 1));
        for total in 2..64 {
            let (w, r) = pool_sizes(total, true).unwrap();
            assert!(w >= 1 && r >= 1 && w + r == total, "{total}");
        }
        assert!(matches!(pool_sizes(1, false), Err(StoreError::Config(_))));
        assert!(matches!(pool_sizes(0, true), Err(StoreError::Config(_))));
    }

    #[test]
    fn urls_are_checked_without_echoing_secrets() {
        let ctx = OpenContext::new("/tmp/x");
        let f = PostgresFactory;
        f.validate("postgres://u:pw@localhost:5432/db", &ctx)
            .unwrap();
        f.validate("postgresql://localhost/db", &ctx).unwrap();
        for bad in [
            "postgres://u:secret@host:notaport/db",
            "postgres:/nohost",
            "mysql://u:secret@host/db",
        ] {
            let err = f.validate(bad, &ctx).unwrap_err();
            assert!(
                matches!(&err, StoreError::Config(m) if !m.contains("secret")),
                "{bad}: {err:?}"
            );
        }
        let replica = OpenContext {
            read_url: Some("mysql://replica/db".into()),
            ..ctx.clone()
        };
        let err = f.validate("postgres://localhost/db", &replica).unwrap_err();
        assert!(
            matches!(&err, StoreError::Config(m) if m.contains("store_read_url")),
            "{err:?}"
        );
        let tiny = OpenContext {
            max_connections: 1,
            ..ctx
        };
        assert!(matches!(
            f.validate("postgres://localhost/db", &tiny),
            Err(StoreError::Config(_))
        ));
    }
}
