//! The embedded SQLite backend: one file in WAL mode, one writer thread, a few readers.
//!
//! # Key order of `readings`
//!
//! `readings` is a `WITHOUT ROWID` table keyed `(ts, sensor_id, metric_id)`, time first.
//! Readings arrive with recent timestamps, so with time first every insert lands at the
//! right edge of one B-tree and a commit dirties a handful of pages; with sensor first
//! each sensor's rows live on their own page and a 500-row batch from 500 sensors dirties
//! ~500 pages (DESIGN §7 measured ~820k rows/s against ~50k). The same key is the
//! idempotency guarantee the pipeline needs (one row per sensor, metric and instant;
//! a redelivered reading is `INSERT OR IGNORE`d and not counted). The price is paid by
//! series queries, which scan every sensor's rows in the asked time range; that is cheap
//! for the recent windows dashboards show, and rollups are the answer for long ones.
//!
//! # Writer thread and group commit
//!
//! SQLite allows one writer at a time, so the store has exactly one read-write
//! connection, owned by a dedicated OS thread (`writer.rs`). Async callers send a job over
//! a bounded channel (which is the backpressure) and await a oneshot reply; nothing
//! blocks the runtime. When the thread picks up a `write_batch` it also takes every
//! other `write_batch` already queued, up to `max_group_readings`, and commits them in
//! ONE transaction — one fsync for many callers — each inside its own savepoint, so a
//! batch that fails (an unknown sensor id) is rolled back alone and the others land.
//! `latest_readings` gets one upsert per (sensor, metric) per group, only when newer.
//! The thread caches metric-name ids and sensor tenants, facts that never change once
//! committed. Reads run on a small pool of read-only connections via `spawn_blocking`;
//! WAL lets them read the last commit while the writer works.
//!
//! What the write benchmark (`benches/sqlite_write.rs`) showed mattered, in order:
//! multi-row `INSERT … VALUES (…),(…)` statements of 50 rows (about 3x less writer CPU
//! per reading than one prepared single-row insert: the per-statement bind/step/reset
//! work dominated, not the B-tree), group commit (one fsync for many callers under
//! `Durability::Full`), and a Vec-indexed sensor cache instead of a hash probe per
//! reading. A larger `wal_autocheckpoint` bought ~10% throughput but stretched the
//! longest commit pause from ~25 ms to ~90 ms, so SQLite's default (1,000 pages) stays.
//!
//! Robot creates and transitions (`robots.rs`) join the same groups: each is a closure
//! run in a savepoint of its own inside the group's transaction and answered after the
//! commit, so a create answered is durable and many creates share one fsync; a failing
//! one is rolled back alone, and a refused report (a stale attempt) still commits its
//! record.
//!
//! Unknown sensor ids in a batch are caught by the writer against its cache (falling
//! back to the `sensors` table), not by a foreign key on `readings`: the check has to
//! run anyway to give a clear error, and an FK would add a B-tree probe per row.
//!
//! # Shutdown
//!
//! [`SqliteStore::close`] (or dropping the store) lets the writer finish the jobs already
//! queued, then closes the connection; later calls fail with `Unavailable`.

mod alerts;
mod audit;
mod batch;
mod catalog;
mod dead_letters;
mod error;
mod excursions;
mod outbox;
mod pool;
mod prices;
mod robots;
mod rollups;
mod schema;
mod series;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use vigia_core::{
    Alert, AlertChange, AlertId, ApiKeyId, ApiKeyInfo, ApiKeyRecord, Sensor, SensorId, SensorSpec,
    Tenant, TenantId, Timestamp,
};
use vigia_groupcommit::Writer as GroupWriter;

pub use schema::SCHEMA_VERSION;

use crate::{
    AlertFilter, AlertRepo, AuditEvent, AuditRecord, AuditRepo, CatalogRepo, DeadLetter,
    DeadLetterRepo, DeadLetterSummary, Durability, Excursion, ExcursionQuery, ExcursionRepo,
    LatestReading, LeaseRepo, NewApiKey, NewDeadLetter, OpenContext, OutboxEntry, OutboxRepo,
    Point, ReadingQuery, ReadingRepo, RobotRepo, RollupRepo, SensorPut, SensorReading, SensorScope,
    Store, StoreError, StoreFactory, StoreResult, WriteBatch, WriteOutcome,
};
use error::writer_gone;
use pool::ReadPool;
use writer::Writer;

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteStoreOptions {
    /// The database file; it and its parent directory are created when missing.
    pub path: PathBuf,
    /// `Full` → `synchronous=FULL` (fsync per commit); `Os` → `synchronous=NORMAL`.
    pub durability: Durability,
    /// Read-only connections for concurrent reads (at least one is opened).
    pub read_connections: usize,
    /// Page cache of the writer in MiB; each reader gets a quarter (at least 2 MiB).
    pub cache_mib: usize,
    /// How long a statement waits for a lock held by another process before `Unavailable`.
    pub busy_timeout: Duration,
    /// Jobs that may wait for the writer; callers beyond it wait to enqueue (backpressure).
    pub queue_capacity: usize,
    /// Soft cap on readings folded into one group-commit transaction.
    pub max_group_readings: usize,
}

impl SqliteStoreOptions {
    /// Defaults for a database at `path`: full durability, 4 readers, 32 MiB of cache.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Full,
            read_connections: 4,
            cache_mib: 32,
            busy_timeout: Duration::from_secs(5),
            queue_capacity: 256,
            max_group_readings: 20_000,
        }
    }
}

/// The SQLite implementation of [`Store`]. See the module docs for its design.
pub struct SqliteStore {
    writer: GroupWriter<Writer>,
    reads: Arc<ReadPool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies migrations and starts the writer
    /// thread. The file work runs on the blocking pool, so this needs a Tokio runtime.
    /// Fails with `Internal` when the file's schema is newer than this build knows.
    pub async fn open(options: SqliteStoreOptions) -> StoreResult<SqliteStore> {
        tokio::task::spawn_blocking(move || Self::open_blocking(options))
            .await
            .map_err(|e| StoreError::Internal(format!("opening the store failed: {e}")))?
    }

    fn open_blocking(options: SqliteStoreOptions) -> StoreResult<SqliteStore> {
        let conn = schema::open_writer(&options)?;
        let readers = (0..options.read_connections.max(1))
            .map(|_| schema::open_reader(&options))
            .collect::<StoreResult<Vec<_>>>()?;
        let writer = writer::spawn(
            conn,
            options.queue_capacity.max(1),
            options.max_group_readings.max(1),
        )
        .map_err(|e| StoreError::Internal(format!("cannot start the SQLite writer: {e}")))?;
        tracing::info!(path = %options.path.display(), durability = ?options.durability, "SQLite store open");
        Ok(SqliteStore {
            writer,
            reads: Arc::new(ReadPool::new(readers)),
        })
    }

    /// Finishes the writes already queued, then closes the write connection. Idempotent;
    /// afterwards every write fails with `Unavailable`.
    pub async fn close(&self) {
        self.writer.close().await;
    }

    /// The schema version recorded in the file (equals [`SCHEMA_VERSION`] once open).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        self.reads.run(schema::schema_version).await
    }

    /// Runs `f` alone on the writer thread and waits for its answer.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> StoreResult<T> + Send + 'static,
    {
        self.writer.call(f).await.map_err(|_| writer_gone())?
    }
}

#[async_trait]
impl Store for SqliteStore {
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
    fn robots(&self) -> &dyn RobotRepo {
        self
    }
    fn products(&self) -> &dyn crate::ProductRepo {
        self
    }
    fn prices(&self) -> &dyn crate::PriceRepo {
        self
    }
    fn excursions(&self) -> &dyn ExcursionRepo {
        self
    }

    async fn write_batch(&self, batch: WriteBatch) -> StoreResult<WriteOutcome> {
        if batch.readings.is_empty() && batch.alerts.is_empty() && batch.excursions.is_empty() {
            return Ok(WriteOutcome::default());
        }
        let (reply, answer) = oneshot::channel();
        self.writer
            .submit(writer::Job::Batch(batch, reply))
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn ping(&self) -> StoreResult<()> {
        if !self.writer.is_running() {
            return Err(writer_gone());
        }
        self.reads
            .run(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn housekeep(&self) -> StoreResult<String> {
        self.write(|w| audit::housekeep(w.connection(), Timestamp::now()))
            .await
    }

    async fn close(&self) {
        SqliteStore::close(self).await
    }
}

#[async_trait]
impl CatalogRepo for SqliteStore {
    async fn default_tenant(&self) -> StoreResult<Tenant> {
        self.write(|w| w.transaction(|tx| catalog::default_tenant(tx, Timestamp::now())))
            .await
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        let slug = slug.to_string();
        self.reads
            .run(move |conn| catalog::tenant_by_slug(conn, &slug))
            .await
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant> {
        let (slug, name) = (slug.to_string(), name.to_string());
        self.write(move |w| {
            w.transaction(|tx| catalog::create_tenant(tx, &slug, &name, Timestamp::now()))
        })
        .await
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        self.reads.run(catalog::count_api_keys).await
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyInfo> {
        let key = key.clone();
        self.write(move |w| w.transaction(|tx| catalog::insert_api_key(tx, &key, Timestamp::now())))
            .await
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
        self.reads
            .run(move |c| catalog::find_api_key(c, &hash))
            .await
    }

    async fn list_api_keys(&self, tenant: TenantId) -> StoreResult<Vec<ApiKeyInfo>> {
        self.reads
            .run(move |c| catalog::list_api_keys(c, tenant))
            .await
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Timestamp,
    ) -> StoreResult<[u8; 32]> {
        self.write(move |w| w.transaction(|tx| catalog::revoke_api_key(tx, tenant, id, at)))
            .await
    }

    async fn list_sensors(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Sensor>> {
        let after = after.map(str::to_string);
        self.reads
            .run(move |c| catalog::list_sensors(c, tenant, after.as_deref(), limit))
            .await
    }

    async fn all_sensors(&self) -> StoreResult<Vec<Sensor>> {
        self.reads.run(catalog::all_sensors).await
    }

    async fn get_sensor(&self, tenant: TenantId, key: &str) -> StoreResult<Option<Sensor>> {
        let key = key.to_string();
        self.reads
            .run(move |c| catalog::get_sensor(c, tenant, &key))
            .await
    }

    async fn put_sensor(
        &self,
        tenant: TenantId,
        key: &str,
        spec: &SensorSpec,
        resolved_by: &str,
        at: Timestamp,
    ) -> StoreResult<SensorPut> {
        let (key, spec, by) = (key.to_string(), spec.clone(), resolved_by.to_string());
        self.write(move |w| {
            let put = w.transaction(|tx| {
                let (sensor, created) = catalog::put_sensor(tx, tenant, &key, &spec, at)?;
                let resolved = alerts::resolve_removed_rules(tx, &sensor, &by, at)?;
                for alert in &resolved {
                    outbox::alert_changed(tx, AlertChange::Resolved, alert, at)?;
                }
                Ok(SensorPut {
                    sensor,
                    created,
                    resolved,
                })
            })?;
            w.remember_sensor(&put.sensor);
            Ok(put)
        })
        .await
    }

    async fn provision_sensors(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<Sensor>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.write(move |w| {
            let sensors = w.transaction(|tx| {
                catalog::provision_sensors(tx, tenant, &keys, Timestamp::now())
            })?;
            for sensor in &sensors {
                w.remember_sensor(sensor);
            }
            Ok(sensors)
        })
        .await
    }
}

#[async_trait]
impl ReadingRepo for SqliteStore {
    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &ReadingQuery,
    ) -> StoreResult<Vec<Point>> {
        let (key, query) = (sensor_key.to_string(), query.clone());
        self.reads
            .run(move |c| series::readings(c, tenant, &key, &query))
            .await
    }

    async fn latest(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<LatestReading>> {
        let scope = scope.clone();
        self.reads
            .run(move |c| series::latest(c, Some(tenant), &scope))
            .await
    }

    async fn all_latest(&self) -> StoreResult<Vec<LatestReading>> {
        self.reads
            .run(|c| series::latest(c, None, &SensorScope::All))
            .await
    }

    async fn recent(&self, since: Timestamp, limit: usize) -> StoreResult<Vec<SensorReading>> {
        self.reads
            .run(move |c| series::recent(c, since, limit))
            .await
    }
}

#[async_trait]
impl AlertRepo for SqliteStore {
    async fn list(&self, tenant: TenantId, filter: &AlertFilter) -> StoreResult<Vec<Alert>> {
        let filter = filter.clone();
        self.reads
            .run(move |c| alerts::list(c, tenant, &filter))
            .await
    }

    async fn get(&self, tenant: TenantId, id: AlertId) -> StoreResult<Alert> {
        self.reads.run(move |c| alerts::get(c, tenant, id)).await
    }

    async fn ack(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        let by = by.to_string();
        self.write(move |w| {
            w.transaction(|tx| {
                let before = alerts::get(tx, tenant, id)?;
                let after = alerts::ack(tx, tenant, id, &by, at)?;
                if after.state != before.state {
                    outbox::alert_changed(tx, AlertChange::Acked, &after, at)?;
                }
                Ok(after)
            })
        })
        .await
    }

    async fn resolve(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        let by = by.to_string();
        self.write(move |w| {
            w.transaction(|tx| {
                let before = alerts::get(tx, tenant, id)?;
                let after = alerts::resolve(tx, tenant, id, &by, at)?;
                if after.state != before.state {
                    outbox::alert_changed(tx, AlertChange::Resolved, &after, at)?;
                }
                Ok(after)
            })
        })
        .await
    }

    async fn unresolved(&self) -> StoreResult<Vec<Alert>> {
        self.reads.run(alerts::unresolved).await
    }

    async fn unresolved_counts(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<(SensorId, u64)>> {
        let scope = scope.clone();
        self.reads
            .run(move |c| alerts::unresolved_counts(c, tenant, &scope))
            .await
    }
}

#[async_trait]
impl AuditRepo for SqliteStore {
    async fn record(&self, events: &[(AuditEvent, u64)], at: Timestamp) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.write(move |w| w.transaction(|tx| audit::record(tx, &events, at)))
            .await
    }

    async fn list(&self, tenant: Option<TenantId>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.reads.run(move |c| audit::list(c, tenant, limit)).await
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |w| w.transaction(|tx| audit::prune(tx, before)))
            .await
    }
}

#[async_trait]
impl LeaseRepo for SqliteStore {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |w| {
            w.transaction(|tx| audit::try_acquire_lease(tx, &name, &holder, ttl, now))
        })
        .await
    }

    async fn release(&self, name: &str, holder: &str) -> StoreResult<()> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |w| w.transaction(|tx| audit::release_lease(tx, &name, &holder)))
            .await
    }

    async fn holders(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<(String, String)>> {
        let prefix = prefix.to_string();
        // From the writer's connection: a member that just renewed must be seen at once
        // (a read-pool snapshot could be older than the last commit).
        self.write(move |w| w.transaction(|tx| audit::lease_holders(tx, &prefix, now)))
            .await
    }
}

#[async_trait]
impl OutboxRepo for SqliteStore {
    async fn read_after(&self, after: u64, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        self.reads
            .run(move |c| outbox::read_after(c, after, limit))
            .await
    }

    async fn cursor(&self, consumer: &str) -> StoreResult<u64> {
        let consumer = consumer.to_string();
        self.reads.run(move |c| outbox::cursor(c, &consumer)).await
    }

    async fn save_cursor(&self, consumer: &str, position: u64) -> StoreResult<()> {
        let consumer = consumer.to_string();
        self.write(move |w| w.transaction(|tx| outbox::save_cursor(tx, &consumer, position)))
            .await
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |w| w.transaction(|tx| outbox::prune(tx, before)))
            .await
    }
}

#[async_trait]
impl crate::ProductRepo for SqliteStore {
    async fn put(
        &self,
        tenant: TenantId,
        put: crate::ProductPut,
        at: Timestamp,
    ) -> StoreResult<(crate::Product, bool)> {
        self.write(move |w| w.transaction(|tx| prices::put_product(tx, tenant, &put, at)))
            .await
    }

    async fn get(&self, tenant: TenantId, code: &str) -> StoreResult<crate::Product> {
        let code = code.to_string();
        self.reads
            .run(move |c| prices::product(c, tenant, &code))
            .await
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<crate::Product>> {
        let after = after.map(str::to_string);
        self.reads
            .run(move |c| prices::products(c, tenant, after.as_deref(), limit))
            .await
    }

    async fn delete(&self, tenant: TenantId, code: &str) -> StoreResult<()> {
        let code = code.to_string();
        self.write(move |w| w.transaction(|tx| prices::delete_product(tx, tenant, &code)))
            .await
    }
}

#[async_trait]
impl crate::PriceRepo for SqliteStore {
    async fn import(
        &self,
        tenant: TenantId,
        rows: Vec<crate::NewPrice>,
        at: Timestamp,
    ) -> StoreResult<crate::ImportCounts> {
        self.write(move |w| w.transaction(|tx| prices::import(tx, tenant, &rows, at)))
            .await
    }

    async fn list(
        &self,
        tenant: TenantId,
        filter: &crate::PriceFilter,
    ) -> StoreResult<Vec<crate::Price>> {
        let filter = filter.clone();
        self.reads
            .run(move |c| prices::list(c, tenant, &filter))
            .await
    }

    async fn in_force(
        &self,
        tenant: TenantId,
        product: &str,
        currency: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<Option<crate::Price>> {
        let product = product.to_string();
        let currency = currency.map(str::to_string);
        self.reads
            .run(move |c| prices::in_force(c, tenant, &product, currency.as_deref(), at))
            .await
    }
}

#[async_trait]
impl DeadLetterRepo for SqliteStore {
    async fn put(&self, letter: NewDeadLetter, at: Timestamp) -> StoreResult<u64> {
        self.write(move |w| w.transaction(|tx| dead_letters::put(tx, &letter, at)))
            .await
    }

    async fn list(
        &self,
        tenant: TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetterSummary>> {
        self.reads
            .run(move |c| dead_letters::list(c, tenant, before, limit))
            .await
    }

    async fn get(&self, tenant: TenantId, id: u64) -> StoreResult<DeadLetter> {
        self.reads
            .run(move |c| dead_letters::get(c, tenant, id))
            .await
    }

    async fn delete(&self, tenant: TenantId, id: u64) -> StoreResult<()> {
        self.write(move |w| w.transaction(|tx| dead_letters::delete(tx, tenant, id)))
            .await
    }
}

#[async_trait]
impl ExcursionRepo for SqliteStore {
    async fn list(&self, query: &ExcursionQuery) -> StoreResult<Vec<Excursion>> {
        let query = query.clone();
        self.reads.run(move |c| excursions::list(c, &query)).await
    }

    async fn ongoing(&self) -> StoreResult<Vec<Excursion>> {
        self.reads.run(excursions::ongoing).await
    }
}

/// Opens `sqlite` URLs: `sqlite` (the file `vigia.sqlite3` in the data dir) or
/// `sqlite:///path/to/file.sqlite3`.
pub(crate) struct SqliteFactory;

impl SqliteFactory {
    fn path(url: &str, ctx: &OpenContext) -> StoreResult<PathBuf> {
        match url {
            "sqlite" | "sqlite://" => Ok(ctx.data_dir.join("vigia.sqlite3")),
            s if s.starts_with("sqlite://") => Ok(PathBuf::from(&s["sqlite://".len()..])),
            other => Err(StoreError::Config(format!(
                "store URL `{other}` is not a SQLite URL; use `sqlite` or `sqlite:///path/file.sqlite3`"
            ))),
        }
    }
}

#[async_trait]
impl StoreFactory for SqliteFactory {
    fn schemes(&self) -> &'static [&'static str] {
        &["sqlite"]
    }

    fn usage(&self) -> &'static str {
        "`sqlite` (embedded, in the data dir; the default) or `sqlite:///path/file.sqlite3`"
    }

    fn validate(&self, url: &str, ctx: &OpenContext) -> StoreResult<()> {
        Self::path(url, ctx).map(|_| ())
    }

    async fn open(&self, url: &str, ctx: &OpenContext) -> StoreResult<Arc<dyn Store>> {
        let path = Self::path(url, ctx)?;
        if ctx.must_exist && !path.is_file() {
            return Err(StoreError::Config(format!(
                "no store at {}",
                path.display()
            )));
        }
        let store = SqliteStore::open(SqliteStoreOptions {
            durability: ctx.durability,
            cache_mib: ctx.cache_mib,
            ..SqliteStoreOptions::new(path.clone())
        })
        .await
        .map_err(|e| match e {
            StoreError::Unavailable(m) | StoreError::Internal(m) => StoreError::Unavailable(
                format!("could not open the store at {}: {m}", path.display()),
            ),
            other => other,
        })?;
        Ok(Arc::new(store))
    }
}
