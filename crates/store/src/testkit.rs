//! Store fault injection for tests: [`FaultyStore`] wraps any [`Store`], passes every
//! call through, counts calls per method, and fails or slows the methods a test picks
//! at run time through a shared [`Faults`] handle.
//!
//! An injected failure is `Unavailable("injected: <method> failed")` and happens BEFORE
//! the call reaches the wrapped store, so nothing of it is written: a test can assert
//! all-or-nothing behaviour, and that a retry writes exactly once.
//!
//! Methods are named `port.method` — `store.write_batch`, `catalog.put_sensor`,
//! `alerts.ack`, `audit.list`… — or by the bare method name when only one port has it
//! (`put_sensor`, `ack`, `revoke_api_key`; `list` is ambiguous). A name that matches
//! nothing panics, so a typo cannot make a test pass by injecting nothing.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use vigia_store::memory::VolatileStore;
//! use vigia_store::testkit::FaultyStore;
//! use vigia_store::{Store, StoreError, WriteBatch};
//!
//! let store = FaultyStore::new(Arc::new(VolatileStore::new()));
//! let faults = store.faults();
//! faults.fail_nth_write_batch(2);
//! assert!(store.write_batch(WriteBatch::default()).await.is_ok());
//! assert!(matches!(
//!     store.write_batch(WriteBatch::default()).await,
//!     Err(StoreError::Unavailable(_))
//! ));
//! assert_eq!(faults.calls("write_batch"), 2);
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use vigia_core::{
    Alert, AlertId, ApiKeyId, ApiKeyInfo, ApiKeyRecord, Execution, Module, ModuleInstance, Robot,
    RobotId, Sensor, SensorId, SensorSpec, Tenant, TenantId, Timestamp,
};

use crate::{
    AlertFilter, AlertRepo, AttemptEnd, AuditEvent, AuditRecord, AuditRepo, CatalogRepo, Claim,
    Created, DeadLetter, DeadLetterRepo, DeadLetterSummary, Excursion, ExcursionQuery,
    ExcursionRepo, Heartbeat, LatestReading, LeaseRepo, NewApiKey, NewDeadLetter, NewRobot,
    OutboxEntry, OutboxRepo, Point, ReadingQuery, ReadingRepo, RetentionScope, RobotFilter,
    RobotRepo, RobotResult, RollupPoint, RollupQuery, RollupRepo, RollupReport, SensorPut,
    SensorReading, SensorScope, Store, StoreError, StoreResult, WriteBatch, WriteOutcome,
};

/// Declares [`Method`] and its names from one list, so the two cannot drift apart.
macro_rules! methods {
    ($($variant:ident => $name:literal,)*) => {
        /// Every method of [`Store`] and its ports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Method {
            $($variant,)*
        }

        impl Method {
            const ALL: &'static [Method] = &[$(Method::$variant,)*];

            /// `port.method`.
            fn name(self) -> &'static str {
                match self {
                    $(Method::$variant => $name,)*
                }
            }
        }
    };
}

methods! {
    WriteBatch => "store.write_batch",
    Ping => "store.ping",
    Housekeep => "store.housekeep",
    Close => "store.close",
    DefaultTenant => "catalog.default_tenant",
    TenantBySlug => "catalog.tenant_by_slug",
    CreateTenant => "catalog.create_tenant",
    CountApiKeys => "catalog.count_api_keys",
    InsertApiKey => "catalog.insert_api_key",
    FindApiKey => "catalog.find_api_key",
    ListApiKeys => "catalog.list_api_keys",
    RevokeApiKey => "catalog.revoke_api_key",
    ListSensors => "catalog.list_sensors",
    AllSensors => "catalog.all_sensors",
    GetSensor => "catalog.get_sensor",
    PutSensor => "catalog.put_sensor",
    ProvisionSensors => "catalog.provision_sensors",
    Series => "readings.series",
    Latest => "readings.latest",
    AllLatest => "readings.all_latest",
    Recent => "readings.recent",
    ListAlerts => "alerts.list",
    GetAlert => "alerts.get",
    Ack => "alerts.ack",
    Resolve => "alerts.resolve",
    Unresolved => "alerts.unresolved",
    UnresolvedCounts => "alerts.unresolved_counts",
    Record => "audit.record",
    ListAudit => "audit.list",
    PruneAudit => "audit.prune",
    TryAcquire => "leases.try_acquire",
    ReadOutbox => "outbox.read_after",
    Cursor => "outbox.cursor",
    SaveCursor => "outbox.save_cursor",
    PruneOutbox => "outbox.prune",
    Release => "leases.release",
    LeaseHolders => "leases.holders",
    RollUp => "rollups.roll_up",
    RollupSeries => "rollups.series",
    DeleteRawBefore => "rollups.delete_raw_before",
    DeleteRollupsBefore => "rollups.delete_rollups_before",
    PutDeadLetter => "dead_letters.put",
    ListDeadLetters => "dead_letters.list",
    GetDeadLetter => "dead_letters.get",
    DeleteDeadLetter => "dead_letters.delete",
    CreateRobot => "robots.create",
    GetRobot => "robots.get",
    ListRobots => "robots.list",
    ClaimRobots => "robots.claim",
    HeartbeatRobot => "robots.heartbeat",
    FinishRobot => "robots.finish",
    CancelRobot => "robots.cancel",
    RetryRobot => "robots.retry",
    SweepExpired => "robots.sweep_expired",
    Executions => "robots.executions",
    CleanupRobots => "robots.cleanup",
    PutModule => "robots.put_module",
    GetModule => "robots.module",
    ListModules => "robots.modules",
    PutInstance => "robots.put_instance",
    GetInstance => "robots.instance",
    ListInstances => "robots.instances",
    PutProduct => "products.put",
    GetProduct => "products.get",
    ListProducts => "products.list",
    DeleteProduct => "products.delete",
    ImportPrices => "prices.import",
    ListPrices => "prices.list",
    PriceInForce => "prices.in_force",
    ListExcursions => "excursions.list",
    OngoingExcursions => "excursions.ongoing",
}

impl Method {
    /// The method called `name` (`port.method`, or a bare method name only one port
    /// has). Panics otherwise: a misspelt name would silently inject nothing.
    #[track_caller]
    fn named(name: &str) -> Method {
        if let Some(&m) = Method::ALL.iter().find(|m| m.name() == name) {
            return m;
        }
        let bare: Vec<Method> = Method::ALL
            .iter()
            .copied()
            .filter(|m| {
                m.name()
                    .split_once('.')
                    .is_some_and(|(_, method)| method == name)
            })
            .collect();
        match bare.as_slice() {
            [m] => *m,
            [] => panic!(
                "no store method is called `{name}`; known: {}",
                Method::ALL
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            several => panic!(
                "`{name}` is ambiguous; say which: {}",
                several
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// When a method fails.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Failure {
    #[default]
    Never,
    Always,
    /// Once, on the call this many calls from now (1 = the next one).
    Nth(u64),
}

impl Failure {
    /// Whether the current call fails, advancing an `Nth` countdown.
    fn take_turn(&mut self) -> bool {
        match *self {
            Failure::Never => false,
            Failure::Always => true,
            Failure::Nth(n) if n <= 1 => {
                *self = Failure::Never;
                true
            }
            Failure::Nth(n) => {
                *self = Failure::Nth(n - 1);
                false
            }
        }
    }
}

/// The faults planned for one method.
#[derive(Debug, Clone, Copy, Default)]
struct Plan {
    failure: Failure,
    delay: Option<Duration>,
}

/// Which write batches the store refuses for good (see [`Faults::refuse_write_batches`]).
type Refusal = Arc<dyn Fn(&WriteBatch) -> bool + Send + Sync>;

/// What a [`FaultyStore`] and every handle to it share.
struct Shared {
    calls: Vec<AtomicU64>,
    injected: AtomicU64,
    plans: Mutex<Vec<Plan>>,
    refusal: Mutex<Option<Refusal>>,
}

/// The handle that plans faults and reads call counts; clones share everything, so a
/// test keeps one while the store it came from is owned by the code under test.
#[derive(Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                calls: Method::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
                injected: AtomicU64::new(0),
                plans: Mutex::new(vec![Plan::default(); Method::ALL.len()]),
                refusal: Mutex::new(None),
            }),
        }
    }
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("total_calls", &self.total_calls())
            .field("injected", &self.injected())
            .finish_non_exhaustive()
    }
}

impl Faults {
    fn plans(&self) -> MutexGuard<'_, Vec<Plan>> {
        // A plan is plain data, always whole: a panic elsewhere cannot leave it torn.
        self.shared
            .plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[track_caller]
    fn set_failure(&self, method: &str, failure: Failure) {
        let method = Method::named(method);
        assert!(
            method != Method::Close,
            "`store.close` cannot fail (it returns nothing); delay it instead"
        );
        self.plans()[method.index()].failure = failure;
    }

    /// Makes every call of `method` fail from now on, until healed.
    #[track_caller]
    pub fn fail(&self, method: &str) {
        self.set_failure(method, Failure::Always);
    }

    /// Makes the `n`-th call of `method` from now on fail (1 = the next call), once.
    #[track_caller]
    pub fn fail_nth(&self, method: &str, n: u64) {
        assert!(n >= 1, "calls are counted from 1 (the next call)");
        self.set_failure(method, Failure::Nth(n));
    }

    /// Makes every `write_batch` fail from now on, until healed.
    pub fn fail_every_write_batch(&self) {
        self.fail("store.write_batch");
    }

    /// Makes the `n`-th `write_batch` from now on fail (1 = the next one), once.
    #[track_caller]
    pub fn fail_nth_write_batch(&self, n: u64) {
        self.fail_nth("store.write_batch", n);
    }

    /// Makes `write_batch` refuse, for good, every batch `refused` picks (until healed):
    /// it fails with `Conflict("injected: store.write_batch refused the batch")`, as a
    /// backend refuses a row it cannot hold, while other batches commit. Transient
    /// failures ([`Faults::fail`]) are `Unavailable` instead.
    pub fn refuse_write_batches(
        &self,
        refused: impl Fn(&WriteBatch) -> bool + Send + Sync + 'static,
    ) {
        *self.refusal() = Some(Arc::new(refused));
    }

    fn refusal(&self) -> MutexGuard<'_, Option<Refusal>> {
        self.shared
            .refusal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a planned refusal picks `batch` (counted as injected when it does).
    fn refuses(&self, batch: &WriteBatch) -> bool {
        let refused = self
            .refusal()
            .as_ref()
            .is_some_and(|refused| refused(batch));
        if refused {
            self.shared.injected.fetch_add(1, Ordering::SeqCst);
        }
        refused
    }

    /// Sleeps `delay` at the start of every call of `method` (before delegating), until
    /// healed.
    #[track_caller]
    pub fn delay(&self, method: &str, delay: Duration) {
        self.plans()[Method::named(method).index()].delay = Some(delay);
    }

    /// Makes every commit (`write_batch`) take at least `delay` longer.
    pub fn slow_commits(&self, delay: Duration) {
        self.delay("store.write_batch", delay);
    }

    /// Removes the failure and the delay planned for `method` (and, for
    /// `store.write_batch`, the planned refusal).
    #[track_caller]
    pub fn heal(&self, method: &str) {
        let method = Method::named(method);
        self.plans()[method.index()] = Plan::default();
        if method == Method::WriteBatch {
            *self.refusal() = None;
        }
    }

    /// Removes every planned failure, refusal and delay.
    pub fn heal_all(&self) {
        self.plans().fill(Plan::default());
        *self.refusal() = None;
    }

    /// Calls of `method` so far, failed ones included.
    #[track_caller]
    pub fn calls(&self, method: &str) -> u64 {
        self.shared.calls[Method::named(method).index()].load(Ordering::SeqCst)
    }

    /// Calls of every method so far.
    pub fn total_calls(&self) -> u64 {
        self.shared
            .calls
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    /// Failures injected so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Sets every call count (and the injected count) back to zero.
    pub fn reset_calls(&self) {
        for c in &self.shared.calls {
            c.store(0, Ordering::SeqCst);
        }
        self.shared.injected.store(0, Ordering::SeqCst);
    }

    /// Counts a call, applies its delay, then fails it if planned; `Ok` means delegate.
    async fn enter(&self, method: Method) -> StoreResult<()> {
        self.shared.calls[method.index()].fetch_add(1, Ordering::SeqCst);
        // Decided at entry, so an `Nth` failure hits the n-th call to arrive, not the
        // n-th to finish its delay.
        let (fails, delay) = {
            let mut plans = self.plans();
            let plan = &mut plans[method.index()];
            (plan.failure.take_turn(), plan.delay)
        };
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if fails {
            self.shared.injected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Unavailable(format!(
                "injected: {} failed",
                method.name()
            )));
        }
        Ok(())
    }
}

/// A [`Store`] that delegates to another, with the faults its [`Faults`] handle plans.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    faults: Faults,
}

impl FaultyStore {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            faults: Faults::default(),
        }
    }

    /// The handle that plans this store's faults and reads its call counts.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The wrapped store, to look at what was really written without counting calls
    /// or meeting faults.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }
}

#[async_trait]
impl Store for FaultyStore {
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
        self.faults.enter(Method::WriteBatch).await?;
        if self.faults.refuses(&batch) {
            return Err(StoreError::Conflict(
                "injected: store.write_batch refused the batch".into(),
            ));
        }
        self.inner.write_batch(batch).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.faults.enter(Method::Ping).await?;
        self.inner.ping().await
    }

    async fn housekeep(&self) -> StoreResult<String> {
        self.faults.enter(Method::Housekeep).await?;
        self.inner.housekeep().await
    }

    async fn close(&self) {
        // `close` cannot be planned to fail (set_failure refuses), so this is only the
        // count and the delay.
        if self.faults.enter(Method::Close).await.is_ok() {
            self.inner.close().await;
        }
    }
}

#[async_trait]
impl CatalogRepo for FaultyStore {
    async fn default_tenant(&self) -> StoreResult<Tenant> {
        self.faults.enter(Method::DefaultTenant).await?;
        self.inner.catalog().default_tenant().await
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        self.faults.enter(Method::TenantBySlug).await?;
        self.inner.catalog().tenant_by_slug(slug).await
    }

    async fn create_tenant(&self, slug: &str, name: &str) -> StoreResult<Tenant> {
        self.faults.enter(Method::CreateTenant).await?;
        self.inner.catalog().create_tenant(slug, name).await
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        self.faults.enter(Method::CountApiKeys).await?;
        self.inner.catalog().count_api_keys().await
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> StoreResult<ApiKeyInfo> {
        self.faults.enter(Method::InsertApiKey).await?;
        self.inner.catalog().insert_api_key(key).await
    }

    async fn find_api_key(&self, hash: [u8; 32]) -> StoreResult<Option<ApiKeyRecord>> {
        self.faults.enter(Method::FindApiKey).await?;
        self.inner.catalog().find_api_key(hash).await
    }

    async fn list_api_keys(&self, tenant: TenantId) -> StoreResult<Vec<ApiKeyInfo>> {
        self.faults.enter(Method::ListApiKeys).await?;
        self.inner.catalog().list_api_keys(tenant).await
    }

    async fn revoke_api_key(
        &self,
        tenant: TenantId,
        id: ApiKeyId,
        at: Timestamp,
    ) -> StoreResult<[u8; 32]> {
        self.faults.enter(Method::RevokeApiKey).await?;
        self.inner.catalog().revoke_api_key(tenant, id, at).await
    }

    async fn list_sensors(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Sensor>> {
        self.faults.enter(Method::ListSensors).await?;
        self.inner
            .catalog()
            .list_sensors(tenant, after, limit)
            .await
    }

    async fn all_sensors(&self) -> StoreResult<Vec<Sensor>> {
        self.faults.enter(Method::AllSensors).await?;
        self.inner.catalog().all_sensors().await
    }

    async fn get_sensor(&self, tenant: TenantId, key: &str) -> StoreResult<Option<Sensor>> {
        self.faults.enter(Method::GetSensor).await?;
        self.inner.catalog().get_sensor(tenant, key).await
    }

    async fn put_sensor(
        &self,
        tenant: TenantId,
        key: &str,
        spec: &SensorSpec,
        resolved_by: &str,
        at: Timestamp,
    ) -> StoreResult<SensorPut> {
        self.faults.enter(Method::PutSensor).await?;
        self.inner
            .catalog()
            .put_sensor(tenant, key, spec, resolved_by, at)
            .await
    }

    async fn provision_sensors(
        &self,
        tenant: TenantId,
        keys: &[String],
    ) -> StoreResult<Vec<Sensor>> {
        self.faults.enter(Method::ProvisionSensors).await?;
        self.inner.catalog().provision_sensors(tenant, keys).await
    }
}

#[async_trait]
impl ReadingRepo for FaultyStore {
    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &ReadingQuery,
    ) -> StoreResult<Vec<Point>> {
        self.faults.enter(Method::Series).await?;
        self.inner
            .readings()
            .series(tenant, sensor_key, query)
            .await
    }

    async fn latest(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<LatestReading>> {
        self.faults.enter(Method::Latest).await?;
        self.inner.readings().latest(tenant, scope).await
    }

    async fn all_latest(&self) -> StoreResult<Vec<LatestReading>> {
        self.faults.enter(Method::AllLatest).await?;
        self.inner.readings().all_latest().await
    }

    async fn recent(&self, since: Timestamp, limit: usize) -> StoreResult<Vec<SensorReading>> {
        self.faults.enter(Method::Recent).await?;
        self.inner.readings().recent(since, limit).await
    }
}

#[async_trait]
impl AlertRepo for FaultyStore {
    async fn list(&self, tenant: TenantId, filter: &AlertFilter) -> StoreResult<Vec<Alert>> {
        self.faults.enter(Method::ListAlerts).await?;
        self.inner.alerts().list(tenant, filter).await
    }

    async fn get(&self, tenant: TenantId, id: AlertId) -> StoreResult<Alert> {
        self.faults.enter(Method::GetAlert).await?;
        self.inner.alerts().get(tenant, id).await
    }

    async fn ack(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        self.faults.enter(Method::Ack).await?;
        self.inner.alerts().ack(tenant, id, by, at).await
    }

    async fn resolve(
        &self,
        tenant: TenantId,
        id: AlertId,
        by: &str,
        at: Timestamp,
    ) -> StoreResult<Alert> {
        self.faults.enter(Method::Resolve).await?;
        self.inner.alerts().resolve(tenant, id, by, at).await
    }

    async fn unresolved(&self) -> StoreResult<Vec<Alert>> {
        self.faults.enter(Method::Unresolved).await?;
        self.inner.alerts().unresolved().await
    }

    async fn unresolved_counts(
        &self,
        tenant: TenantId,
        scope: &SensorScope,
    ) -> StoreResult<Vec<(SensorId, u64)>> {
        self.faults.enter(Method::UnresolvedCounts).await?;
        self.inner.alerts().unresolved_counts(tenant, scope).await
    }
}

#[async_trait]
impl AuditRepo for FaultyStore {
    async fn record(&self, events: &[(AuditEvent, u64)], at: Timestamp) -> StoreResult<()> {
        self.faults.enter(Method::Record).await?;
        self.inner.audit().record(events, at).await
    }

    async fn list(&self, tenant: Option<TenantId>, limit: usize) -> StoreResult<Vec<AuditRecord>> {
        self.faults.enter(Method::ListAudit).await?;
        self.inner.audit().list(tenant, limit).await
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        self.faults.enter(Method::PruneAudit).await?;
        self.inner.audit().prune(before).await
    }
}

#[async_trait]
impl LeaseRepo for FaultyStore {
    async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.faults.enter(Method::TryAcquire).await?;
        self.inner
            .leases()
            .try_acquire(name, holder, ttl, now)
            .await
    }

    async fn release(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.faults.enter(Method::Release).await?;
        self.inner.leases().release(name, holder).await
    }

    async fn holders(&self, prefix: &str, now: Timestamp) -> StoreResult<Vec<(String, String)>> {
        self.faults.enter(Method::LeaseHolders).await?;
        self.inner.leases().holders(prefix, now).await
    }
}

#[async_trait]
impl OutboxRepo for FaultyStore {
    async fn read_after(&self, after: u64, limit: usize) -> StoreResult<Vec<OutboxEntry>> {
        self.faults.enter(Method::ReadOutbox).await?;
        self.inner.outbox().read_after(after, limit).await
    }

    async fn cursor(&self, consumer: &str) -> StoreResult<u64> {
        self.faults.enter(Method::Cursor).await?;
        self.inner.outbox().cursor(consumer).await
    }

    async fn save_cursor(&self, consumer: &str, position: u64) -> StoreResult<()> {
        self.faults.enter(Method::SaveCursor).await?;
        self.inner.outbox().save_cursor(consumer, position).await
    }

    async fn prune(&self, before: Timestamp) -> StoreResult<u64> {
        self.faults.enter(Method::PruneOutbox).await?;
        self.inner.outbox().prune(before).await
    }
}

#[async_trait]
impl crate::ProductRepo for FaultyStore {
    async fn put(
        &self,
        tenant: TenantId,
        put: crate::ProductPut,
        at: Timestamp,
    ) -> StoreResult<(crate::Product, bool)> {
        self.faults.enter(Method::PutProduct).await?;
        self.inner.products().put(tenant, put, at).await
    }

    async fn get(&self, tenant: TenantId, code: &str) -> StoreResult<crate::Product> {
        self.faults.enter(Method::GetProduct).await?;
        self.inner.products().get(tenant, code).await
    }

    async fn list(
        &self,
        tenant: TenantId,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<crate::Product>> {
        self.faults.enter(Method::ListProducts).await?;
        self.inner.products().list(tenant, after, limit).await
    }

    async fn delete(&self, tenant: TenantId, code: &str) -> StoreResult<()> {
        self.faults.enter(Method::DeleteProduct).await?;
        self.inner.products().delete(tenant, code).await
    }
}

#[async_trait]
impl crate::PriceRepo for FaultyStore {
    async fn import(
        &self,
        tenant: TenantId,
        prices: Vec<crate::NewPrice>,
        at: Timestamp,
    ) -> StoreResult<crate::ImportCounts> {
        self.faults.enter(Method::ImportPrices).await?;
        self.inner.prices().import(tenant, prices, at).await
    }

    async fn list(
        &self,
        tenant: TenantId,
        filter: &crate::PriceFilter,
    ) -> StoreResult<Vec<crate::Price>> {
        self.faults.enter(Method::ListPrices).await?;
        self.inner.prices().list(tenant, filter).await
    }

    async fn in_force(
        &self,
        tenant: TenantId,
        product: &str,
        currency: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<Option<crate::Price>> {
        self.faults.enter(Method::PriceInForce).await?;
        self.inner
            .prices()
            .in_force(tenant, product, currency, at)
            .await
    }
}

#[async_trait]
impl DeadLetterRepo for FaultyStore {
    async fn put(&self, letter: NewDeadLetter, at: Timestamp) -> StoreResult<u64> {
        self.faults.enter(Method::PutDeadLetter).await?;
        self.inner.dead_letters().put(letter, at).await
    }

    async fn list(
        &self,
        tenant: TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<DeadLetterSummary>> {
        self.faults.enter(Method::ListDeadLetters).await?;
        self.inner.dead_letters().list(tenant, before, limit).await
    }

    async fn get(&self, tenant: TenantId, id: u64) -> StoreResult<DeadLetter> {
        self.faults.enter(Method::GetDeadLetter).await?;
        self.inner.dead_letters().get(tenant, id).await
    }

    async fn delete(&self, tenant: TenantId, id: u64) -> StoreResult<()> {
        self.faults.enter(Method::DeleteDeadLetter).await?;
        self.inner.dead_letters().delete(tenant, id).await
    }
}

#[async_trait]
impl RollupRepo for FaultyStore {
    async fn roll_up(
        &self,
        closed_before: Timestamp,
        max_rows: usize,
    ) -> StoreResult<RollupReport> {
        self.faults.enter(Method::RollUp).await?;
        self.inner.rollups().roll_up(closed_before, max_rows).await
    }

    async fn series(
        &self,
        tenant: TenantId,
        sensor_key: &str,
        query: &RollupQuery,
    ) -> StoreResult<Vec<RollupPoint>> {
        self.faults.enter(Method::RollupSeries).await?;
        self.inner.rollups().series(tenant, sensor_key, query).await
    }

    async fn delete_raw_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        self.faults.enter(Method::DeleteRawBefore).await?;
        self.inner
            .rollups()
            .delete_raw_before(scope, before, chunk)
            .await
    }

    async fn delete_rollups_before(
        &self,
        scope: RetentionScope,
        before: Timestamp,
        chunk: usize,
    ) -> StoreResult<u64> {
        self.faults.enter(Method::DeleteRollupsBefore).await?;
        self.inner
            .rollups()
            .delete_rollups_before(scope, before, chunk)
            .await
    }
}

#[async_trait]
impl ExcursionRepo for FaultyStore {
    async fn list(&self, query: &ExcursionQuery) -> StoreResult<Vec<Excursion>> {
        self.faults.enter(Method::ListExcursions).await?;
        self.inner.excursions().list(query).await
    }

    async fn ongoing(&self) -> StoreResult<Vec<Excursion>> {
        self.faults.enter(Method::OngoingExcursions).await?;
        self.inner.excursions().ongoing().await
    }
}

#[async_trait]
impl RobotRepo for FaultyStore {
    async fn create(&self, robot: &NewRobot, at: Timestamp) -> RobotResult<Created> {
        self.faults.enter(Method::CreateRobot).await?;
        self.inner.robots().create(robot, at).await
    }

    async fn get(&self, tenant: TenantId, id: RobotId) -> RobotResult<Robot> {
        self.faults.enter(Method::GetRobot).await?;
        self.inner.robots().get(tenant, id).await
    }

    async fn list(&self, tenant: TenantId, filter: &RobotFilter) -> RobotResult<Vec<Robot>> {
        self.faults.enter(Method::ListRobots).await?;
        self.inner.robots().list(tenant, filter).await
    }

    async fn claim(&self, claim: &Claim) -> RobotResult<Vec<Robot>> {
        self.faults.enter(Method::ClaimRobots).await?;
        self.inner.robots().claim(claim).await
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> RobotResult<Robot> {
        self.faults.enter(Method::HeartbeatRobot).await?;
        self.inner.robots().heartbeat(beat).await
    }

    async fn finish(
        &self,
        robot: RobotId,
        attempt: u32,
        end: &AttemptEnd,
        now: Timestamp,
    ) -> RobotResult<Robot> {
        self.faults.enter(Method::FinishRobot).await?;
        self.inner.robots().finish(robot, attempt, end, now).await
    }

    async fn cancel(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        self.faults.enter(Method::CancelRobot).await?;
        self.inner.robots().cancel(tenant, id, now).await
    }

    async fn retry(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        self.faults.enter(Method::RetryRobot).await?;
        self.inner.robots().retry(tenant, id, now).await
    }

    async fn sweep_expired(
        &self,
        now: Timestamp,
        max_attempts: u32,
        limit: usize,
    ) -> RobotResult<Vec<Robot>> {
        self.faults.enter(Method::SweepExpired).await?;
        self.inner
            .robots()
            .sweep_expired(now, max_attempts, limit)
            .await
    }

    async fn executions(&self, tenant: TenantId, id: RobotId) -> RobotResult<Vec<Execution>> {
        self.faults.enter(Method::Executions).await?;
        self.inner.robots().executions(tenant, id).await
    }

    async fn cleanup(&self, before: Timestamp, chunk: usize) -> RobotResult<u64> {
        self.faults.enter(Method::CleanupRobots).await?;
        self.inner.robots().cleanup(before, chunk).await
    }

    async fn put_module(&self, module: &Module) -> RobotResult<()> {
        self.faults.enter(Method::PutModule).await?;
        self.inner.robots().put_module(module).await
    }

    async fn module(&self, name: &str) -> RobotResult<Option<Module>> {
        self.faults.enter(Method::GetModule).await?;
        self.inner.robots().module(name).await
    }

    async fn modules(&self) -> RobotResult<Vec<Module>> {
        self.faults.enter(Method::ListModules).await?;
        self.inner.robots().modules().await
    }

    async fn put_instance(&self, instance: &ModuleInstance) -> RobotResult<()> {
        self.faults.enter(Method::PutInstance).await?;
        self.inner.robots().put_instance(instance).await
    }

    async fn instance(&self, module: &str, name: &str) -> RobotResult<Option<ModuleInstance>> {
        self.faults.enter(Method::GetInstance).await?;
        self.inner.robots().instance(module, name).await
    }

    async fn instances(&self, module: Option<&str>) -> RobotResult<Vec<ModuleInstance>> {
        self.faults.enter(Method::ListInstances).await?;
        self.inner.robots().instances(module).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use vigia_core::{RuleKind, Severity, DEFAULT_METRIC};

    use super::*;
    use crate::memory::VolatileStore;
    use crate::{AlertTransition, NewAlert};

    fn faulty() -> FaultyStore {
        FaultyStore::new(Arc::new(VolatileStore::new()))
    }

    fn reading(sensor: SensorId, ts: i64) -> SensorReading {
        SensorReading {
            sensor,
            metric: DEFAULT_METRIC.into(),
            ts: Timestamp(ts),
            value: ts as f64,
        }
    }

    /// One batch: two readings and an alert opening, so "nothing written" covers both.
    fn batch(tenant: TenantId, sensor: SensorId, ts: i64) -> WriteBatch {
        WriteBatch {
            excursions: Vec::new(),
            readings: vec![reading(sensor, ts), reading(sensor, ts + 1)],
            alerts: vec![AlertTransition::Open(NewAlert {
                tenant,
                sensor,
                rule: format!("rule-{ts}"),
                kind: RuleKind::Threshold,
                severity: Severity::Warning,
                metric: DEFAULT_METRIC.into(),
                value: 1.0,
                message: "m".into(),
                opened_at: Timestamp(ts),
                details: None,
            })],
        }
    }

    fn all() -> ReadingQuery {
        ReadingQuery {
            metric: DEFAULT_METRIC.into(),
            from: Timestamp(i64::MIN),
            to: Timestamp(i64::MAX),
            limit: usize::MAX,
            step_ms: None,
        }
    }

    /// A tenant and one sensor, made through the inner store so no call is counted.
    async fn setup(store: &FaultyStore) -> (TenantId, SensorId) {
        let inner = store.inner().catalog();
        let tenant = inner.default_tenant().await.expect("tenant").id;
        let sensor = inner
            .provision_sensors(tenant, &["CF-1".into()])
            .await
            .expect("sensor")[0]
            .id;
        (tenant, sensor)
    }

    /// What the inner store really holds: (readings of CF-1, unresolved alerts).
    async fn stored(store: &FaultyStore, tenant: TenantId) -> (usize, usize) {
        let inner = store.inner();
        let readings = inner
            .readings()
            .series(tenant, "CF-1", &all())
            .await
            .expect("series")
            .len();
        let alerts = inner.alerts().unresolved().await.expect("alerts").len();
        (readings, alerts)
    }

    fn injected<T: std::fmt::Debug>(result: StoreResult<T>, method: &str) {
        match result {
            Err(StoreError::Unavailable(m)) => {
                assert_eq!(m, format!("injected: {method} failed"))
            }
            other => panic!("{method}: expected an injected failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn counts_each_call_under_its_own_name() {
        let store = faulty();
        let faults = store.faults();
        let (tenant, _) = setup(&store).await;
        assert_eq!(
            faults.total_calls(),
            0,
            "calls on the inner store are not counted"
        );

        store.ping().await.expect("ping");
        store
            .catalog()
            .get_sensor(tenant, "CF-1")
            .await
            .expect("get");
        store
            .catalog()
            .get_sensor(tenant, "CF-2")
            .await
            .expect("get");
        store
            .alerts()
            .list(tenant, &AlertFilter::default())
            .await
            .expect("alerts");
        store.audit().list(None, 10).await.expect("audit");
        store.audit().list(None, 10).await.expect("audit");
        store
            .write_batch(WriteBatch::default())
            .await
            .expect("write");

        assert_eq!(faults.calls("ping"), 1);
        assert_eq!(faults.calls("get_sensor"), 2);
        assert_eq!(faults.calls("catalog.get_sensor"), 2, "qualified or bare");
        assert_eq!(faults.calls("alerts.list"), 1);
        assert_eq!(
            faults.calls("audit.list"),
            2,
            "the two `list`s are told apart"
        );
        assert_eq!(faults.calls("write_batch"), 1);
        assert_eq!(faults.calls("put_sensor"), 0);
        assert_eq!(faults.total_calls(), 7);
        assert_eq!(faults.injected(), 0);

        faults.reset_calls();
        assert_eq!(faults.total_calls(), 0);
        assert_eq!(faults.calls("get_sensor"), 0);
    }

    #[tokio::test]
    async fn a_failing_method_writes_nothing_until_healed() {
        let store = faulty();
        let faults = store.faults();
        let (tenant, _) = setup(&store).await;
        faults.fail("put_sensor");
        let spec = SensorSpec::default();
        for _ in 0..3 {
            injected(
                store
                    .catalog()
                    .put_sensor(tenant, "NEW", &spec, "x", Timestamp(0))
                    .await,
                "catalog.put_sensor",
            );
        }
        assert_eq!(
            store
                .inner()
                .catalog()
                .get_sensor(tenant, "NEW")
                .await
                .expect("get"),
            None,
            "nothing reached the wrapped store"
        );
        assert!(
            store
                .catalog()
                .get_sensor(tenant, "CF-1")
                .await
                .expect("get")
                .is_some(),
            "other methods are unaffected"
        );
        assert_eq!((faults.calls("put_sensor"), faults.injected()), (3, 3));

        faults.heal("put_sensor");
        let put = store
            .catalog()
            .put_sensor(tenant, "NEW", &spec, "x", Timestamp(0))
            .await
            .expect("healed");
        assert!(put.created);
    }

    #[tokio::test]
    async fn the_nth_write_batch_fails_alone_and_writes_nothing() {
        let store = faulty();
        let faults = store.faults();
        let (tenant, sensor) = setup(&store).await;
        faults.fail_nth_write_batch(2);

        store
            .write_batch(batch(tenant, sensor, 0))
            .await
            .expect("first");
        assert_eq!(stored(&store, tenant).await, (2, 1));
        injected(
            store.write_batch(batch(tenant, sensor, 10)).await,
            "store.write_batch",
        );
        assert_eq!(
            stored(&store, tenant).await,
            (2, 1),
            "second batch left no trace"
        );
        let retry = store
            .write_batch(batch(tenant, sensor, 10))
            .await
            .expect("the retry, third call");
        assert_eq!((retry.readings_written, retry.alerts.len()), (2, 1));
        store
            .write_batch(batch(tenant, sensor, 20))
            .await
            .expect("fourth");
        assert_eq!(stored(&store, tenant).await, (6, 3));
        assert_eq!((faults.calls("write_batch"), faults.injected()), (4, 1));
    }

    #[tokio::test]
    async fn every_write_batch_fails_empty_ones_too() {
        let store = faulty();
        let faults = store.faults();
        let (tenant, sensor) = setup(&store).await;
        faults.fail_every_write_batch();
        injected(
            store.write_batch(WriteBatch::default()).await,
            "store.write_batch",
        );
        for ts in [0, 10, 20] {
            injected(
                store.write_batch(batch(tenant, sensor, ts)).await,
                "store.write_batch",
            );
        }
        assert_eq!(stored(&store, tenant).await, (0, 0));
        faults.heal_all();
        store
            .write_batch(batch(tenant, sensor, 0))
            .await
            .expect("healed");
        assert_eq!(stored(&store, tenant).await, (2, 1));
    }

    #[tokio::test]
    async fn nth_counts_from_when_it_is_planned() {
        let store = faulty();
        let faults = store.faults();
        let (tenant, _) = setup(&store).await;
        for _ in 0..5 {
            store.alerts().unresolved().await.expect("before the plan");
        }
        faults.fail_nth("alerts.unresolved", 3);
        store.alerts().unresolved().await.expect("1st after");
        store.alerts().unresolved().await.expect("2nd after");
        injected(store.alerts().unresolved().await, "alerts.unresolved");
        store.alerts().unresolved().await.expect("only once");
        // Replanning replaces the previous plan of that method.
        faults.fail("ack");
        faults.fail_nth("ack", 2);
        assert!(
            matches!(
                store
                    .alerts()
                    .ack(tenant, AlertId(99), "x", Timestamp(0))
                    .await,
                Err(StoreError::NotFound)
            ),
            "the first ack reaches the store"
        );
        injected(
            store
                .alerts()
                .ack(tenant, AlertId(99), "x", Timestamp(0))
                .await,
            "alerts.ack",
        );
    }

    #[tokio::test]
    async fn slow_commits_delay_only_commits() {
        let store = faulty();
        let faults = store.faults();
        let (tenant, sensor) = setup(&store).await;
        let delay = Duration::from_millis(40);
        faults.slow_commits(delay);
        let started = Instant::now();
        store
            .write_batch(batch(tenant, sensor, 0))
            .await
            .expect("slow write");
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        assert_eq!(
            stored(&store, tenant).await,
            (2, 1),
            "a slow commit still commits"
        );

        // A delayed failure still fails before anything is written.
        faults.fail_nth_write_batch(1);
        let started = Instant::now();
        injected(
            store.write_batch(batch(tenant, sensor, 10)).await,
            "store.write_batch",
        );
        assert!(started.elapsed() >= delay);
        assert_eq!(stored(&store, tenant).await, (2, 1));

        faults.heal("write_batch");
        let started = Instant::now();
        store
            .write_batch(batch(tenant, sensor, 20))
            .await
            .expect("fast again");
        assert!(started.elapsed() < delay, "healed: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn handles_share_one_plan_per_store() {
        let first = faulty();
        let second = faulty();
        let handle = first.faults();
        let clone = handle.clone();
        clone.fail("ping");
        injected(first.ping().await, "store.ping");
        second
            .ping()
            .await
            .expect("another store has its own faults");
        assert_eq!(handle.calls("ping"), 1, "counts are shared by every handle");
        assert_eq!(second.faults().calls("ping"), 1);
    }

    #[tokio::test]
    async fn close_is_counted_delayed_and_delegated() {
        let store = faulty();
        let faults = store.faults();
        faults.delay("close", Duration::from_millis(5));
        store.close().await;
        assert_eq!(faults.calls("close"), 1);
        assert!(
            matches!(
                store.inner().ping().await,
                Err(StoreError::Unavailable(m)) if !m.contains("injected")
            ),
            "the wrapped store was closed"
        );
    }

    /// The robots port goes through the fault plan like every other: an injected claim
    /// failure claims nothing, and the next claim takes the robot.
    #[tokio::test]
    async fn robot_calls_are_counted_and_fail_on_demand() {
        let store = faulty();
        let faults = store.faults();
        let tenant = store.catalog().default_tenant().await.expect("tenant").id;
        let robot = NewRobot {
            tenant,
            module: "echo".into(),
            input: serde_json::json!({}),
            priority: 0,
            timeout_s: None,
            idempotency: None,
        };
        faults.fail_nth("robots.create", 1);
        assert!(matches!(
            store.robots().create(&robot, Timestamp(0)).await,
            Err(crate::RobotError::Store(StoreError::Unavailable(_)))
        ));
        store
            .robots()
            .create(&robot, Timestamp(0))
            .await
            .expect("second create");
        let claim = Claim {
            worker: "w".into(),
            limit: 10,
            now: Timestamp(1),
            lease_until: Timestamp(30_001),
        };
        faults.fail_nth("claim", 1);
        assert!(store.robots().claim(&claim).await.is_err());
        let claimed = store.robots().claim(&claim).await.expect("claim");
        assert_eq!(claimed.len(), 1, "the failed claim took nothing");
        assert_eq!(claimed[0].attempt, 1);
        assert_eq!(
            (faults.calls("robots.create"), faults.calls("claim")),
            (2, 2)
        );
        assert_eq!(faults.injected(), 2);
    }

    #[test]
    #[should_panic(expected = "no store method is called `put_sensors`")]
    fn a_misspelt_method_panics() {
        faulty().faults().fail("put_sensors");
    }

    #[test]
    #[should_panic(
        expected = "`list` is ambiguous; say which: alerts.list, audit.list, dead_letters.list"
    )]
    fn an_ambiguous_method_panics() {
        faulty().faults().calls("list");
    }

    #[test]
    #[should_panic(expected = "`store.close` cannot fail")]
    fn close_cannot_be_made_to_fail() {
        faulty().faults().fail("close");
    }

    #[test]
    #[should_panic(expected = "counted from 1")]
    fn the_zeroth_call_is_refused() {
        faulty().faults().fail_nth_write_batch(0);
    }

    #[test]
    fn every_method_name_resolves_to_itself() {
        for &m in Method::ALL {
            assert_eq!(Method::named(m.name()), m, "{}", m.name());
            assert_eq!(
                m.index(),
                Method::ALL.iter().position(|x| *x == m).expect("listed")
            );
        }
        assert_eq!(Method::named("revoke_api_key"), Method::RevokeApiKey);
        assert_eq!(Method::named("resolve"), Method::Resolve);
    }
}
