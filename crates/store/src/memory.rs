//! The in-memory (`volatile://`) backend: a real store with the same semantics as the
//! SQLite one, kept in B-tree maps and lost on exit. For tests and experiments.
//!
//! # Layout
//!
//! Tenants, keys and sensors (`catalog`), readings and latest values (`readings`) and
//! alerts (`alerts`) share one `RwLock`: the unit of work ([`Store::write_batch`]) and
//! `put_sensor` change several of them at once, and one lock makes those changes atomic
//! to every reader for free (a reader never sees readings without their alerts). The
//! audit log, the leases and the robots (`robots`) are independent of everything else, so each has its own
//! `Mutex` and an audit flood never waits for a commit.
//!
//! Readings live in a `BTreeMap` keyed `(ts, sensor, metric)`, time first, like the
//! SQLite table: the key is the idempotency guarantee, `recent` is one backwards range
//! scan, and a series scans the asked time range (the same cost model as SQLite, so a
//! test on this backend does not hide a query that would be slow there).
//!
//! # Atomicity
//!
//! Every write validates everything it needs first and only then changes anything, all
//! under the write lock, so a failed call leaves no trace (see `batch`).
//!
//! # Shutdown
//!
//! [`Store::close`] waits for the calls in progress, drops the data and makes
//! every later call fail with `Unavailable`.

mod alerts;
mod audit;
mod batch;
mod catalog;
mod dead_letters;
mod excursions;
mod leases;
mod outbox;
mod prices;
mod readings;
mod robots;
mod rollups;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;

use crate::{
    AlertRepo, AuditRepo, CatalogRepo, DeadLetterRepo, ExcursionRepo, LeaseRepo, OpenContext,
    OutboxRepo, ReadingRepo, RobotRepo, RollupRepo, Store, StoreError, StoreFactory, StoreResult,
    WriteBatch, WriteOutcome,
};
use alerts::Alerts;
use audit::AuditLog;
use catalog::Catalog;
use leases::Leases;
use readings::Readings;

/// The aggregates a single call may change together, under one lock.
#[derive(Default)]
struct Data {
    catalog: Catalog,
    readings: Readings,
    alerts: Alerts,
    outbox: outbox::Outbox,
    rollups: rollups::Rollups,
    excursions: excursions::Excursions,
}

/// The in-memory implementation of [`Store`]. See the module docs for its design.
///
/// Each instance is an independent, initially empty store.
#[derive(Default)]
pub struct VolatileStore {
    /// Set by `close`, while holding every lock; checked after taking a lock, so no call
    /// that starts after `close` can touch the (dropped) data.
    closed: AtomicBool,
    data: RwLock<Data>,
    audit: Mutex<AuditLog>,
    leases: Mutex<Leases>,
    dead_letters: Mutex<dead_letters::DeadLetters>,
    robots: Mutex<robots::Robots>,
    prices: Mutex<prices::Prices>,
}

/// The error of every call after [`VolatileStore::close`].
fn closed() -> StoreError {
    StoreError::Unavailable("the volatile store is closed".into())
}

/// A panic while a lock was held may have left the maps half-changed: refuse to go on.
fn poisoned<T>(_: PoisonError<T>) -> StoreError {
    StoreError::Internal("a panic while writing left the volatile store inconsistent".into())
}

impl VolatileStore {
    /// A new, empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`Store::close`]: waits for the calls in progress, drops every row, and makes
    /// later calls fail with `Unavailable`. Idempotent.
    fn shut_down(&self) {
        // Each lock is taken in turn (never two at once, like every other call), so a
        // call in progress finishes first; once the flag is set under the lock, a call
        // that takes the lock afterwards sees it. A poisoned lock is cleared all the same:
        // its contents are being thrown away.
        {
            let mut data = self.data.write().unwrap_or_else(PoisonError::into_inner);
            self.closed.store(true, Ordering::Release);
            *data = Data::default();
        }
        *self.audit.lock().unwrap_or_else(PoisonError::into_inner) = AuditLog::default();
        *self.leases.lock().unwrap_or_else(PoisonError::into_inner) = Leases::default();
        *self
            .dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = dead_letters::DeadLetters::default();
        *self.robots.lock().unwrap_or_else(PoisonError::into_inner) = robots::Robots::default();
        *self.prices.lock().unwrap_or_else(PoisonError::into_inner) = prices::Prices::default();
    }

    fn check_open(&self) -> StoreResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(closed())
        } else {
            Ok(())
        }
    }

    /// Shared access to the catalog, readings and alerts.
    fn read(&self) -> StoreResult<RwLockReadGuard<'_, Data>> {
        let guard = self.data.read().map_err(poisoned)?;
        self.check_open()?;
        Ok(guard)
    }

    /// Exclusive access to the catalog, readings and alerts: one atomic change.
    fn write(&self) -> StoreResult<RwLockWriteGuard<'_, Data>> {
        let guard = self.data.write().map_err(poisoned)?;
        self.check_open()?;
        Ok(guard)
    }

    /// Exclusive access to the audit log or the leases.
    fn lock<'a, T>(&self, table: &'a Mutex<T>) -> StoreResult<MutexGuard<'a, T>> {
        let guard = table.lock().map_err(poisoned)?;
        self.check_open()?;
        Ok(guard)
    }
}

#[async_trait]
impl Store for VolatileStore {
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
        self.write()?.write_batch(&batch)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read().map(drop)
    }

    async fn housekeep(&self) -> StoreResult<String> {
        self.read().map(drop)?;
        Ok("nothing to do (in memory)".into())
    }

    async fn close(&self) {
        self.shut_down()
    }
}

/// Opens `volatile` URLs: `volatile` or `volatile://`, each open a new, empty store.
pub(crate) struct VolatileFactory;

impl VolatileFactory {
    fn check(url: &str) -> StoreResult<()> {
        match url {
            "volatile" | "volatile://" => Ok(()),
            other => Err(StoreError::Config(format!(
                "store URL `{other}` is not a volatile URL; use `volatile://` \
                 (an in-memory store takes no path or options)"
            ))),
        }
    }
}

#[async_trait]
impl StoreFactory for VolatileFactory {
    fn schemes(&self) -> &'static [&'static str] {
        &["volatile"]
    }

    fn usage(&self) -> &'static str {
        "`volatile://` (in memory, lost on exit: tests and experiments)"
    }

    fn validate(&self, url: &str, _ctx: &OpenContext) -> StoreResult<()> {
        Self::check(url)
    }

    async fn open(&self, url: &str, _ctx: &OpenContext) -> StoreResult<Arc<dyn Store>> {
        Self::check(url)?;
        tracing::info!("volatile store open: everything it holds is lost on exit");
        Ok(Arc::new(VolatileStore::new()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vigia_core::{AlertId, ApiKeyId, Role, SensorId, SensorSpec, TenantId, Timestamp};

    use super::*;
    use crate::{AlertFilter, AuditEvent, AuditOutcome, NewApiKey, ReadingQuery, SensorReading};

    fn unavailable<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
        assert!(
            matches!(&result, Err(StoreError::Unavailable(m)) if m.contains("closed")),
            "{what}: expected Unavailable after close, got {result:?}"
        );
    }

    #[tokio::test]
    async fn every_call_after_close_is_unavailable() {
        let store = VolatileStore::new();
        let tenant = store.catalog().default_tenant().await.expect("tenant");
        let sensor = store
            .catalog()
            .provision_sensors(tenant.id, &["CF-1".into()])
            .await
            .expect("sensor")[0]
            .id;
        store.close().await;
        store.close().await; // idempotent

        let t = tenant.id;
        let at = Timestamp(0);
        let batch = WriteBatch {
            excursions: Vec::new(),
            readings: vec![SensorReading {
                sensor,
                metric: "temperature".into(),
                ts: at,
                value: 1.0,
            }],
            alerts: vec![],
        };
        unavailable(store.write_batch(batch).await, "write_batch");
        unavailable(
            store.write_batch(WriteBatch::default()).await,
            "empty batch",
        );
        unavailable(store.ping().await, "ping");
        let c = store.catalog();
        unavailable(c.default_tenant().await, "default_tenant");
        unavailable(c.tenant_by_slug("default").await, "tenant_by_slug");
        unavailable(c.create_tenant("x", "X").await, "create_tenant");
        unavailable(c.count_api_keys().await, "count_api_keys");
        let key = NewApiKey {
            tenant: t,
            name: "k".into(),
            role: Role::Admin,
            hash: [1; 32],
        };
        unavailable(c.insert_api_key(&key).await, "insert_api_key");
        unavailable(c.find_api_key([1; 32]).await, "find_api_key");
        unavailable(c.list_api_keys(t).await, "list_api_keys");
        unavailable(c.revoke_api_key(t, ApiKeyId(1), at).await, "revoke_api_key");
        unavailable(c.list_sensors(t, None, 10).await, "list_sensors");
        unavailable(c.all_sensors().await, "all_sensors");
        unavailable(c.get_sensor(t, "CF-1").await, "get_sensor");
        let spec = SensorSpec::default();
        unavailable(c.put_sensor(t, "CF-1", &spec, "x", at).await, "put_sensor");
        unavailable(c.provision_sensors(t, &[]).await, "provision_sensors");
        let r = store.readings();
        let query = ReadingQuery {
            metric: "temperature".into(),
            from: at,
            to: at,
            limit: 10,
            step_ms: None,
        };
        unavailable(r.series(t, "CF-1", &query).await, "series");
        unavailable(r.latest(t, &crate::SensorScope::All).await, "latest");
        unavailable(r.all_latest().await, "all_latest");
        unavailable(r.recent(at, 10).await, "recent");
        let a = store.alerts();
        unavailable(a.list(t, &AlertFilter::default()).await, "alerts.list");
        unavailable(a.get(t, AlertId(1)).await, "alerts.get");
        unavailable(a.ack(t, AlertId(1), "x", at).await, "ack");
        unavailable(a.resolve(t, AlertId(1), "x", at).await, "resolve");
        unavailable(a.unresolved().await, "unresolved");
        unavailable(
            a.unresolved_counts(t, &crate::SensorScope::All).await,
            "unresolved_counts",
        );
        let event = AuditEvent {
            tenant: None,
            actor: "anonymous".into(),
            action: "auth.refused".into(),
            target: "/".into(),
            outcome: AuditOutcome::Refused,
            client: "127.0.0.1".into(),
        };
        unavailable(
            store.audit().record(&[(event, 1)], at).await,
            "audit.record",
        );
        unavailable(store.audit().record(&[], at).await, "empty audit.record");
        unavailable(store.audit().list(None, 10).await, "audit.list");
        let l = store.leases();
        unavailable(
            l.try_acquire("x", "a", Duration::from_secs(1), at).await,
            "try_acquire",
        );
        unavailable(l.release("x", "a").await, "release");
        let r = store.robots();
        let robot = crate::NewRobot {
            tenant: t,
            module: "echo".into(),
            input: serde_json::json!({}),
            priority: 0,
            timeout_s: None,
            idempotency: None,
        };
        let claim = crate::Claim {
            worker: "w".into(),
            limit: 1,
            now: at,
            lease_until: at,
        };
        let robot_unavailable = |result: crate::RobotResult<()>, what: &str| match result {
            Err(crate::RobotError::Store(e)) => unavailable::<()>(Err(e), what),
            other => panic!("{what}: expected Unavailable after close, got {other:?}"),
        };
        robot_unavailable(r.create(&robot, at).await.map(drop), "robots.create");
        robot_unavailable(r.claim(&claim).await.map(drop), "robots.claim");
        let id = vigia_core::RobotId(1);
        robot_unavailable(r.get(t, id).await.map(drop), "robots.get");
        robot_unavailable(r.cancel(t, id, at).await.map(drop), "robots.cancel");
        robot_unavailable(r.sweep_expired(at, 3, 10).await.map(drop), "robots.sweep");
        robot_unavailable(r.modules().await.map(drop), "robots.modules");
    }

    #[tokio::test]
    async fn ids_start_at_one_and_increase() {
        let store = VolatileStore::new();
        let c = store.catalog();
        let default = c.default_tenant().await.expect("default");
        assert_eq!(default.id, TenantId(1));
        assert_eq!(
            (default.slug.as_str(), default.name.as_str()),
            ("default", "Default")
        );
        assert!(c.create_tenant("default", "Again").await.is_err());
        let other = c.create_tenant("b", "B").await.expect("b");
        assert_eq!(other.id, TenantId(2), "a refused insert does not use an id");
        let sensors = c
            .provision_sensors(default.id, &["A".into(), "B".into(), "A".into()])
            .await
            .expect("provision");
        let ids: Vec<SensorId> = sensors.iter().map(|s| s.id).collect();
        assert_eq!(ids, [SensorId(1), SensorId(2), SensorId(1)]);
        let key = c
            .insert_api_key(&NewApiKey {
                tenant: other.id,
                name: "k".into(),
                role: Role::Viewer,
                hash: [5; 32],
            })
            .await
            .expect("key");
        assert_eq!(key.id, ApiKeyId(1));
    }

    #[tokio::test]
    async fn a_tenant_named_default_before_first_use_is_the_default_tenant() {
        let store = VolatileStore::new();
        let made = store
            .catalog()
            .create_tenant("default", "Planta")
            .await
            .expect("create");
        assert_eq!(
            store.catalog().default_tenant().await.expect("default"),
            made
        );
    }

    #[tokio::test]
    async fn factory_accepts_only_bare_volatile_urls() {
        let ctx = OpenContext::new("/nonexistent");
        let factory = VolatileFactory;
        for url in ["volatile", "volatile://"] {
            factory.validate(url, &ctx).expect(url);
            let store = factory.open(url, &ctx).await.expect(url);
            store.ping().await.expect("ping");
        }
        for url in [
            "volatile:///tmp/x",
            "volatile://mem",
            "volatile:",
            "volatil",
        ] {
            let err = factory.validate(url, &ctx).expect_err(url);
            assert!(
                matches!(&err, StoreError::Config(m) if m.contains(url) && m.contains("volatile://")),
                "{url}: {err:?}"
            );
            assert!(
                factory.open(url, &ctx).await.is_err(),
                "{url} must not open"
            );
        }
        assert_eq!(
            factory.usage(),
            "`volatile://` (in memory, lost on exit: tests and experiments)"
        );
    }

    #[tokio::test]
    async fn each_open_is_a_new_empty_store() {
        let ctx = OpenContext::new("/nonexistent");
        let first = crate::open("volatile://", &ctx).await.expect("open");
        first
            .catalog()
            .create_tenant("acme", "Acme")
            .await
            .expect("tenant");
        let second = crate::open("volatile://", &ctx).await.expect("open");
        assert_eq!(
            second
                .catalog()
                .tenant_by_slug("acme")
                .await
                .expect("lookup"),
            None
        );
    }
}
