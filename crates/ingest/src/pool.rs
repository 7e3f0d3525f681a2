//! The worker pool: bus → rules → store → live feed.
//!
//! Each worker takes deliveries worth about `batch_size` readings, resolves (or
//! auto-provisions) their sensors, evaluates the rules in event-time order under each
//! sensor's state lock, commits readings and alert changes in ONE store transaction,
//! publishes the outcome on the live feed, and only then acks the bus. A crash anywhere
//! before the ack means redelivery, which the store absorbs (idempotent readings,
//! unique open alert per sensor and rule).
//!
//! # Failed commits
//!
//! A commit that fails for a reason that may pass ([`StoreError::is_transient`]: the
//! store is down, locked, full) hands the deliveries back to the bus and retries with
//! backoff, for as long as it takes. A commit the store refuses for good (a constraint,
//! a value it cannot hold) would fail the same way forever and hold up everything
//! delivered with it, so the worker retries each delivery alone: the ones that commit
//! are acked, and one the store refuses again, alone, becomes a dead letter
//! ([`vigia_store::DeadLetterRepo`]: the readings whole, with the store's reason, listed
//! at `GET /api/v1/dead-letters`) and is acked. Every dead letter was refused twice.
//! If even the dead letter cannot be written, the delivery goes back to the bus.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use vigia_bus::{readings, Bus, BusError, Topic};
use vigia_bus::{DeliveryToken, Received};
use vigia_core::{
    AlertChange, Condition, Control, IngestBatch, LiveEvent, Reading, Sensor, SensorId, TenantId,
    Timestamp,
};
use vigia_rules::{EngineConfig, ExcursionRecord, SensorState, Transition};
use vigia_store::{
    AlertTransition, ExcursionUpsert, NewAlert, NewDeadLetter, SensorReading, Store, StoreError,
    WriteBatch,
};

use vigia_fanout::Fanout;

use crate::affinity::{AffinityConfig, OwnedPartitions};
use crate::metrics as m;
use crate::{RuleStates, SensorDirectory};

/// What happens to a reading from a sensor nobody provisioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provisioning {
    /// Create the sensor on its first reading (no rules until someone adds them).
    #[default]
    Auto,
    /// Refuse readings of unknown sensors (422 at ingest).
    Required,
}

/// Tuning of the pool.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Concurrent workers. SQLite has one writer, so more than a few only adds
    /// overlap between rule evaluation and commits.
    pub workers: usize,
    /// Readings a worker takes from the bus at once (whole deliveries, so it may exceed this).
    pub batch_size: usize,
    pub provisioning: Provisioning,
    pub engine: EngineConfig,
    /// First retry delay after a failed commit; doubles up to 5 s.
    pub retry_backoff: Duration,
    /// Readings partitions of the bus (`bus_partitions`, the same in every process). With
    /// one, every worker takes from the one readings topic; with more, this pool takes
    /// only the partitions it owns ([`crate::affinity`]) and `workers` bounds how many
    /// batches it judges and commits at once.
    pub partitions: usize,
    pub affinity: AffinityConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            batch_size: 500,
            provisioning: Provisioning::Auto,
            engine: EngineConfig::default(),
            retry_backoff: Duration::from_millis(100),
            partitions: 1,
            affinity: AffinityConfig::default(),
        }
    }
}

/// The worker pool's shared state: what its workers need to judge and commit readings.
/// Other roles never reach into it; they change what it caches through control messages
/// on the fan-out, which it subscribes to when built.
pub struct Pipeline {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    directory: Arc<SensorDirectory>,
    states: Arc<RuleStates>,
    fanout: Arc<dyn Fanout>,
    config: PipelineConfig,
    /// Sensors whose readings were judged but whose commit failed: their in-memory state
    /// ran ahead of the store (an alert "opened" that was never written). They are
    /// re-read from the store before the next batch, so the redelivery opens it for real.
    stale: Mutex<HashSet<SensorId>>,
    /// The partitions this pool owns now (all of them with one partition).
    owned: OwnedPartitions,
    /// Turns true when the process shuts down: the partition owner stops taking
    /// partitions and hands back the ones it holds once their consumers drained.
    closing: watch::Sender<bool>,
    /// Batches judged and committed at once in partitioned mode (`workers`).
    permits: Semaphore,
    /// When the bus depth gauge was last measured (ms since `UNIX_EPOCH`): at most every
    /// [`DEPTH_EVERY_MS`], since with partitions it is one bus call per partition.
    depth_measured_ms: std::sync::atomic::AtomicI64,
}

/// How often a worker refreshes the bus depth gauge, at most.
const DEPTH_EVERY_MS: i64 = 500;

impl Pipeline {
    /// Builds the shared state and rebuilds rule state from the store: the recent
    /// readings of metrics that rate rules watch (so rate windows span the restart), the
    /// latest readings (so older ones count as late) and unresolved alerts (so a restart
    /// does not open a duplicate for an ongoing excursion).
    /// `directory` is this process's sensor directory (warmed and kept current by the
    /// caller, shared with ingest); control messages for rule state are subscribed here.
    pub async fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        fanout: Arc<dyn Fanout>,
        directory: Arc<SensorDirectory>,
        config: PipelineConfig,
    ) -> Result<Arc<Self>, StoreError> {
        let sensors = directory.all().len();
        let states = Arc::new(RuleStates::new());
        if config.partitions <= 1 {
            let rebuilt =
                rebuild_rule_states(store.as_ref(), &directory, &states, &config, None).await?;
            info!(
                sensors,
                replayed = rebuilt.replayed,
                latest = rebuilt.latest,
                unresolved = rebuilt.unresolved,
                "rule state rebuilt"
            );
        } else {
            info!(
                partitions = config.partitions,
                member = %config.affinity.member,
                "rule state is rebuilt partition by partition, as this process takes them"
            );
        }
        let forget = states.clone();
        fanout.on_control(Arc::new(move |message: &Control| {
            if let Control::ExcursionForgotten { sensor, rule } = message {
                forget.forget_excursion(*sensor, rule);
            }
        }));
        let owned = OwnedPartitions::default();
        if config.partitions <= 1 {
            owned.insert(0);
        }
        let permits = Semaphore::new(config.workers.max(1));
        Ok(Arc::new(Self {
            store,
            bus,
            directory,
            states,
            fanout,
            config,
            stale: Mutex::new(HashSet::new()),
            owned,
            closing: watch::channel(false).0,
            permits,
            depth_measured_ms: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    /// Forgets the excursions whose alert the store no longer holds unresolved: the heal
    /// for an `ExcursionForgotten` lost on a cross-process fan-out (its alert was resolved
    /// by hand in another process). Returns how many were forgotten. Only excursions
    /// already active before the store is read are candidates; one whose alert is still
    /// being committed may be forgotten too, which costs nothing: its next breach opens
    /// again, and the store never opens a second alert for an open (sensor, rule).
    pub async fn forget_resolved_excursions(&self) -> Result<usize, StoreError> {
        let active = self.states.open_excursions();
        if active.is_empty() {
            return Ok(0);
        }
        let unresolved: HashSet<(SensorId, String)> = self
            .store
            .alerts()
            .unresolved()
            .await?
            .into_iter()
            .map(|alert| (alert.sensor_id, alert.rule))
            .collect();
        let mut forgotten = 0;
        for (sensor, rule) in active {
            if !unresolved.contains(&(sensor, rule.clone())) {
                self.states.forget_excursion(sensor, &rule);
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// The per-sensor rule state (for tests that look inside the pool).
    pub fn states(&self) -> &RuleStates {
        &self.states
    }

    /// Starts the workers; they run until the bus is closed and drained. With several
    /// partitions, the task started is the partition owner ([`crate::affinity`]), which
    /// runs one consumer per partition it owns until [`Pipeline::close`] (or until the
    /// bus is closed and drained).
    pub fn spawn_workers(self: &Arc<Self>) -> JoinSet<()> {
        let mut set = JoinSet::new();
        if self.config.partitions > 1 {
            let pipeline = self.clone();
            set.spawn(async move { crate::affinity::run(pipeline).await });
            return set;
        }
        for worker in 0..self.config.workers.max(1) {
            let pipeline = self.clone();
            set.spawn(async move {
                pipeline.consume(worker, Topic::READINGS, None).await;
            });
        }
        set
    }

    /// The process is shutting down: the partition owner stops each consumer after its
    /// current batch and releases its partitions, so the other worker processes take
    /// them at once; what waits on them stays on the shared bus. Then the workers' tasks
    /// end. With one partition this does nothing: the workers drain until the bus closes.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub(crate) fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The partitions this pool owns now.
    pub fn owned_partitions(&self) -> Vec<usize> {
        self.owned.list()
    }

    pub(crate) fn owned(&self) -> &OwnedPartitions {
        &self.owned
    }

    /// Takes, judges, commits and acks deliveries from `topic` until the bus is closed
    /// and drained (returns `true`) or `stop` turns true between two batches (`false`).
    /// `stop` is `None` for the one-partition workers, which stop only with the bus.
    pub(crate) async fn consume(
        &self,
        worker: usize,
        topic: Topic,
        mut stop: Option<watch::Receiver<bool>>,
    ) -> bool {
        let mut backoff = self.config.retry_backoff;
        let partitioned = stop.is_some();
        loop {
            let receive = readings::receive_from(&*self.bus, topic, self.config.batch_size);
            let received = match &mut stop {
                None => receive.await,
                Some(stop) => tokio::select! {
                    received = receive => received,
                    _ = stop.wait_for(|s| *s) => return false,
                },
            };
            let received = match received {
                Ok(received) => received,
                Err(BusError::Closed) => break,
                Err(e) => {
                    warn!(worker, %topic, error = %e, "bus receive failed; retrying");
                    if !pause(backoff, &mut stop).await {
                        return false;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // One-partition workers are `workers` tasks already; partition consumers
            // share the pool's permits.
            let _permit = if partitioned {
                self.permits.acquire().await.ok()
            } else {
                None
            };
            let tokens: Vec<_> = received.iter().map(|r| r.token.clone()).collect();
            let batches: Vec<_> = received.iter().map(|r| r.value.clone()).collect();
            let settled = match self.process(&batches).await {
                Ok(()) => {
                    self.ack(worker, tokens).await;
                    true
                }
                Err(e) if e.is_transient() => {
                    warn!(worker, error = %e, "batch failed; handing it back to the bus");
                    self.nack(worker, tokens).await;
                    false
                }
                Err(e) => {
                    warn!(worker, error = %e, deliveries = received.len(),
                        "the store refused a batch; retrying its deliveries one by one");
                    self.settle_one_by_one(worker, received).await
                }
            };
            drop(_permit);
            self.measure_depth().await;
            if settled {
                backoff = self.config.retry_backoff;
            } else {
                metrics::counter!(m::WORKER_RETRIES).increment(1);
                if !pause(backoff, &mut stop).await {
                    return false;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        debug!(worker, %topic, "worker stopped: bus closed and drained");
        true
    }

    /// Sets the bus depth gauge (readings waiting on every partition), at most every
    /// [`DEPTH_EVERY_MS`] across the pool's workers.
    async fn measure_depth(&self) {
        use std::sync::atomic::Ordering;
        let now = Timestamp::now().0;
        let last = self.depth_measured_ms.load(Ordering::Relaxed);
        if now - last < DEPTH_EVERY_MS
            || self
                .depth_measured_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Ok(lag) = readings::lag(&*self.bus, self.config.partitions).await {
            metrics::gauge!(m::BUS_DEPTH).set(lag as f64);
        }
    }

    /// After the store refused a set of deliveries for good: commits each alone, and
    /// puts aside as a dead letter each one the store refuses again (see the module
    /// docs). Returns false when some delivery went back to the bus (a transient
    /// failure), so the caller backs off.
    async fn settle_one_by_one(&self, worker: usize, received: Vec<Received<IngestBatch>>) -> bool {
        let mut settled = true;
        for delivery in received {
            let outcome = match self.process(std::slice::from_ref(&delivery.value)).await {
                Ok(()) => Ok(()),
                Err(e) if e.is_transient() => Err(e),
                Err(refusal) => self.dead_letter(&delivery.value, &refusal).await,
            };
            match outcome {
                Ok(()) => self.ack(worker, vec![delivery.token]).await,
                Err(e) => {
                    warn!(worker, error = %e, "delivery failed; handing it back to the bus");
                    self.nack(worker, vec![delivery.token]).await;
                    settled = false;
                }
            }
        }
        settled
    }

    /// Keeps a delivery the store refused for good, with the store's reason.
    async fn dead_letter(
        &self,
        batch: &IngestBatch,
        refusal: &StoreError,
    ) -> Result<(), StoreError> {
        let letter = NewDeadLetter {
            tenant: batch.tenant,
            reason: refusal.to_string(),
            received_at: Timestamp(batch.received_ms),
            readings: batch.readings.clone(),
        };
        let id = self
            .store
            .dead_letters()
            .put(letter, Timestamp::now())
            .await?;
        metrics::counter!(m::DEAD_LETTERS).increment(1);
        warn!(
            tenant = %batch.tenant,
            dead_letter = id,
            readings = batch.readings.len(),
            reason = %refusal,
            "the store refused a batch again, alone: kept as a dead letter"
        );
        Ok(())
    }

    async fn ack(&self, worker: usize, tokens: Vec<DeliveryToken>) {
        if let Err(e) = self.bus.ack(tokens).await {
            // Not fatal: the batch is committed; a redelivery is idempotent.
            warn!(worker, error = %e, "ack failed; batch may be redelivered");
        }
    }

    async fn nack(&self, worker: usize, tokens: Vec<DeliveryToken>) {
        if let Err(e) = self.bus.nack(tokens).await {
            warn!(worker, error = %e, "nack failed");
        }
    }

    /// Processes the batches of one set of deliveries end to end (everything but the ack).
    pub async fn process(&self, batches: &[Arc<IngestBatch>]) -> Result<(), StoreError> {
        self.resync_stale_states().await?;
        let mut by_tenant: HashMap<TenantId, Vec<&Reading>> = HashMap::new();
        let mut oldest_received = i64::MAX;
        for batch in batches {
            oldest_received = oldest_received.min(batch.received_ms);
            by_tenant
                .entry(batch.tenant)
                .or_default()
                .extend(batch.readings.iter());
        }

        let mut batch = WriteBatch::default();
        let mut judged = Vec::new();
        let mut live_readings: Vec<(TenantId, Vec<Reading>)> = Vec::new();
        let want_live = !self.fanout.live_is_idle();
        let total = by_tenant.values().map(Vec::len).sum::<usize>();
        // Any failure once some sensor has been judged (a later tenant's provisioning, or
        // the commit) leaves that sensor's state ahead of the store.
        let committed: Result<_, StoreError> = async {
            for (tenant, readings) in by_tenant {
                self.evaluate_tenant(tenant, &readings, &mut batch, &mut judged)
                    .await?;
                if want_live {
                    live_readings.push((tenant, readings.into_iter().cloned().collect()));
                }
            }
            let started = Instant::now();
            let outcome = self.store.write_batch(batch).await?;
            Ok((outcome, started.elapsed()))
        }
        .await;
        let (outcome, commit_time) = match committed {
            Ok(done) => done,
            Err(e) => {
                self.mark_stale(judged);
                return Err(e);
            }
        };
        metrics::histogram!(m::STORE_COMMIT_SECONDS).record(commit_time.as_secs_f64());
        metrics::histogram!(m::WORKER_BATCH_READINGS).record(total as f64);
        metrics::counter!(m::STORE_READINGS_WRITTEN).increment(outcome.readings_written as u64);
        if oldest_received != i64::MAX {
            let lag_ms = (Timestamp::now().0 - oldest_received).max(0);
            metrics::histogram!(m::INGEST_TO_COMMIT_SECONDS).record(lag_ms as f64 / 1000.0);
        }

        for (tenant, readings) in live_readings {
            self.fanout.publish_live(LiveEvent::Readings {
                tenant,
                readings: Arc::new(readings),
            });
        }
        self.publish_alert_changes(outcome.alerts);
        Ok(())
    }

    /// Counts, logs and publishes on the live feed the alert changes a commit made.
    fn publish_alert_changes(&self, changes: Vec<(AlertChange, vigia_core::Alert)>) {
        for (change, alert) in changes {
            match change {
                AlertChange::Opened => {
                    metrics::counter!(
                        m::ALERTS_OPENED,
                        "severity" => alert.severity.as_str(),
                        "kind" => alert.kind.as_str()
                    )
                    .increment(1);
                    info!(sensor = %alert.sensor, rule = %alert.rule, alert = %alert.id, "alert opened: {}", alert.message);
                }
                AlertChange::Resolved => {
                    metrics::counter!(m::ALERTS_AUTO_RESOLVED).increment(1);
                    info!(sensor = %alert.sensor, rule = %alert.rule, alert = %alert.id, "alert resolved");
                }
                AlertChange::Acked => {}
            }
            self.fanout.publish_live(LiveEvent::Alert {
                tenant: alert.tenant,
                change,
                alert: Box::new(alert),
            });
        }
    }

    /// Opens the alert of every offline rule whose sensor has been silent for longer than
    /// the rule allows at wall-clock `now` ([`vigia_rules::check_silence`]), and commits
    /// the opens through [`Store::write_batch`] like any alert change; returns how many
    /// opened. Resolving stays with the readings (the rule engine, once data has flowed
    /// for `rules.resolve_hold`). A sensor that never sent a reading is not offline.
    ///
    /// The silence is judged on this process's rule state, which holds every reading this
    /// pool judged and the store's latest values when it took the sensor's partition. With
    /// several partitions each worker process sweeps only the sensors of the partitions it
    /// owns, which no other process judges; with one partition shared by several worker
    /// processes, each sees only part of a sensor's readings, so offline rules then need
    /// a single worker process.
    pub async fn sweep_silence(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut batch = WriteBatch::default();
        let mut transitions = Vec::new();
        let mut judged = Vec::new();
        for sensor in self.directory.all() {
            if !self.owns(&sensor) {
                continue;
            }
            let watches_silence = sensor
                .rules
                .iter()
                .any(|r| matches!(r.condition, Condition::Offline { .. }));
            if !watches_silence {
                continue;
            }
            self.states.with(sensor.id, |state| {
                vigia_rules::check_silence(
                    state,
                    &sensor.key,
                    &sensor.rules,
                    now.0,
                    &mut transitions,
                )
            });
            if !transitions.is_empty() {
                judged.push(sensor.id);
            }
            for t in transitions.drain(..) {
                batch
                    .alerts
                    .push(to_store_transition(sensor.tenant, &sensor, t));
            }
        }
        if batch.alerts.is_empty() {
            return Ok(0);
        }
        match self.store.write_batch(batch).await {
            Ok(outcome) => {
                let opened = outcome.alerts.len();
                self.publish_alert_changes(outcome.alerts);
                Ok(opened)
            }
            Err(e) => {
                // The states opened alerts the store does not hold: re-read them.
                self.mark_stale(judged);
                Err(e)
            }
        }
    }

    /// Runs [`Pipeline::sweep_silence`] every `every` until `stop` turns true.
    pub fn spawn_silence_sweep(
        self: &Arc<Self>,
        every: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let pipeline = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => break,
                }
                if *stop.borrow() {
                    break;
                }
                if let Err(e) = pipeline.sweep_silence(Timestamp::now()).await {
                    warn!(error = %e, "offline sweep failed; retrying at the next tick");
                }
            }
        })
    }

    /// Whether this pool judges `sensor` now (it owns the sensor's partition).
    fn owns(&self, sensor: &Sensor) -> bool {
        self.config.partitions <= 1
            || self.owned.contains(vigia_core::partition::partition_of(
                sensor.tenant,
                &sensor.key,
                self.config.partitions,
            ))
    }

    /// The sensors of the directory whose readings travel on `partitions`.
    pub(crate) fn sensors_of(&self, partitions: &[usize]) -> HashSet<SensorId> {
        self.directory
            .all()
            .into_iter()
            .filter(|s| {
                partitions.contains(&vigia_core::partition::partition_of(
                    s.tenant,
                    &s.key,
                    self.config.partitions,
                ))
            })
            .map(|s| s.id)
            .collect()
    }

    /// Rebuilds, from the store, the rule state of the sensors of partitions this pool
    /// has just taken (whatever it held of them is replaced); returns how many sensors.
    pub(crate) async fn rebuild_partitions(
        &self,
        partitions: &[usize],
    ) -> Result<usize, StoreError> {
        let sensors = self.sensors_of(partitions);
        if sensors.is_empty() {
            return Ok(0);
        }
        let rebuilt = rebuild_rule_states(
            self.store.as_ref(),
            &self.directory,
            &self.states,
            &self.config,
            Some(&sensors),
        )
        .await?;
        info!(
            ?partitions,
            sensors = sensors.len(),
            replayed = rebuilt.replayed,
            unresolved = rebuilt.unresolved,
            "rule state rebuilt for the partitions taken"
        );
        Ok(sensors.len())
    }

    /// Drops the rule state of the sensors of partitions this pool gave up: their next
    /// owner rebuilds it from the store.
    pub(crate) fn forget_partitions(&self, partitions: &[usize]) {
        for sensor in self.sensors_of(partitions) {
            self.states.remove(sensor);
        }
    }

    /// Forgets the state of sensors whose judged readings did not reach the store, and
    /// queues them for a re-read from the store (see the `stale` field).
    fn mark_stale(&self, sensors: Vec<SensorId>) {
        for &sensor in &sensors {
            self.states.remove(sensor);
        }
        lock(&self.stale).extend(sensors);
    }

    /// Rebuilds the state of stale sensors from the store; on failure they stay stale
    /// and the batch is not processed (it goes back to the bus).
    async fn resync_stale_states(&self) -> Result<(), StoreError> {
        let stale = std::mem::take(&mut *lock(&self.stale));
        if stale.is_empty() {
            return Ok(());
        }
        let rebuilt = rebuild_rule_states(
            self.store.as_ref(),
            &self.directory,
            &self.states,
            &self.config,
            Some(&stale),
        )
        .await;
        match rebuilt {
            Ok(rebuilt) => {
                info!(
                    sensors = stale.len(),
                    replayed = rebuilt.replayed,
                    unresolved = rebuilt.unresolved,
                    "rule state re-read from the store after a failed commit"
                );
                Ok(())
            }
            Err(e) => {
                lock(&self.stale).extend(stale);
                Err(e)
            }
        }
    }

    /// Resolves sensors, sorts by event time and runs the rules for one tenant's readings;
    /// `judged` gets every sensor whose rule state moved.
    async fn evaluate_tenant(
        &self,
        tenant: TenantId,
        readings: &[&Reading],
        batch: &mut WriteBatch,
        judged: &mut Vec<SensorId>,
    ) -> Result<(), StoreError> {
        let mut keys: Vec<&str> = readings.iter().map(|r| r.sensor.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        let sensors = self
            .directory
            .resolve_or_provision(self.store.as_ref(), tenant, &keys)
            .await?;
        let by_key: HashMap<&str, &Arc<Sensor>> =
            keys.iter().copied().zip(sensors.iter()).collect();

        // Event-time order per sensor: a backlog replayed at once is judged by when it
        // was measured, not by when it arrived.
        let mut ordered: Vec<(&Arc<Sensor>, &Reading)> = readings
            .iter()
            .map(|r| (by_key[r.sensor.as_str()], *r))
            .collect();
        ordered.sort_by_key(|(s, r)| (s.id, r.ts));

        batch.readings.reserve(ordered.len());
        let mut transitions = Vec::new();
        let mut excursions = Vec::new();
        let mut i = 0;
        while i < ordered.len() {
            let sensor = ordered[i].0;
            let end = ordered[i..]
                .iter()
                .position(|(s, _)| s.id != sensor.id)
                .map_or(ordered.len(), |n| i + n);
            let group = &ordered[i..end];
            if !sensor.rules.is_empty() {
                judged.push(sensor.id);
                transitions.clear();
                self.states.with(sensor.id, |state| {
                    for (_, r) in group {
                        vigia_rules::evaluate_recording(
                            &self.config.engine,
                            state,
                            &sensor.key,
                            &sensor.rules,
                            &r.metric,
                            r.ts.0,
                            r.value,
                            &mut transitions,
                            &mut excursions,
                        );
                    }
                    // Once per sensor and batch: the records carry absolute values, so
                    // the newest view of each open excursion is all the store needs.
                    state.changed_excursions(&mut excursions);
                });
                for t in transitions.drain(..) {
                    batch.alerts.push(to_store_transition(tenant, sensor, t));
                }
                for e in excursions.drain(..) {
                    batch.excursions.push(to_store_excursion(tenant, sensor, e));
                }
            }
            // A sensor without rules keeps no state: its latest value lives in the store.
            for (_, r) in group {
                batch.readings.push(SensorReading {
                    sensor: sensor.id,
                    metric: r.metric.clone(),
                    ts: r.ts,
                    value: r.value,
                });
            }
            i = end;
        }
        Ok(())
    }
}

/// Readings replayed into rate windows, at most: the newest are kept, so a very busy
/// plant rebuilds the most recent part of its windows and bounds start-up memory and time.
const MAX_REPLAYED_READINGS: usize = 500_000;

/// What a rebuild of rule state read back.
struct Rebuilt {
    replayed: usize,
    latest: usize,
    unresolved: usize,
}

/// Sleeps `backoff`, or less when `stop` turns true first; returns whether to go on.
async fn pause(backoff: Duration, stop: &mut Option<watch::Receiver<bool>>) -> bool {
    match stop {
        None => {
            tokio::time::sleep(backoff).await;
            true
        }
        Some(stop) => tokio::select! {
            _ = tokio::time::sleep(backoff) => true,
            _ = stop.wait_for(|s| *s) => false,
        },
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The set stays consistent whatever panicked while holding it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Rebuilds rule state from the store, which is the truth: the readings of the last two
/// rate windows (one for the window, one for the reading before it that anchors the
/// baseline) of every metric a rate rule watches, then the latest reading of every
/// metric (so older ones count as late), then the unresolved alerts (so an ongoing
/// excursion does not open a duplicate). `only` limits it to some sensors, whose
/// previous state is replaced whole.
async fn rebuild_rule_states(
    store: &dyn Store,
    directory: &SensorDirectory,
    states: &RuleStates,
    config: &PipelineConfig,
    only: Option<&HashSet<SensorId>>,
) -> Result<Rebuilt, StoreError> {
    let wanted = |sensor: SensorId| only.is_none_or(|set| set.contains(&sensor));
    let mut fresh: HashMap<SensorId, SensorState> = HashMap::new();
    let mut rebuilt = Rebuilt {
        replayed: 0,
        latest: 0,
        unresolved: 0,
    };

    // Sensor → the metrics its rate rules watch (a sensor has few rules).
    let mut watched: HashMap<SensorId, Vec<String>> = HashMap::new();
    for sensor in directory.all() {
        if !wanted(sensor.id) {
            continue;
        }
        for rule in &sensor.rules {
            if matches!(rule.condition, Condition::Rate { .. }) {
                let metrics = watched.entry(sensor.id).or_default();
                if !metrics.contains(&rule.metric) {
                    metrics.push(rule.metric.clone());
                }
            }
        }
    }
    let window = config.engine.rate_window_ms;
    if !watched.is_empty() && window > 0 {
        let since = Timestamp(Timestamp::now().0.saturating_sub(window.saturating_mul(2)));
        for r in store
            .readings()
            .recent(since, MAX_REPLAYED_READINGS)
            .await?
        {
            if watched
                .get(&r.sensor)
                .is_some_and(|metrics| metrics.contains(&r.metric))
            {
                fresh.entry(r.sensor).or_default().replay(
                    &config.engine,
                    &r.metric,
                    r.ts.0,
                    r.value,
                );
                rebuilt.replayed += 1;
            }
        }
    }
    for l in store.readings().all_latest().await? {
        if wanted(l.sensor) {
            fresh
                .entry(l.sensor)
                .or_default()
                .seed_latest(&l.metric, l.ts.0, l.value);
            rebuilt.latest += 1;
        }
    }
    for alert in store.alerts().unresolved().await? {
        if wanted(alert.sensor_id) {
            fresh
                .entry(alert.sensor_id)
                .or_default()
                .mark_open(&alert.rule);
            rebuilt.unresolved += 1;
        }
    }

    restore_ongoing_excursions(store, directory, &wanted, &mut fresh).await?;

    if let Some(only) = only {
        for &sensor in only {
            if !fresh.contains_key(&sensor) {
                states.remove(sensor);
            }
        }
    }
    for (sensor, state) in fresh {
        states.replace(sensor, state);
    }
    Ok(rebuilt)
}

/// Restores the excursions the store holds as ongoing into the rebuilt states, so the
/// next readings extend them (same start, time counted from it) instead of starting
/// others that would leave the stored one open for ever.
async fn restore_ongoing_excursions(
    store: &dyn Store,
    directory: &SensorDirectory,
    wanted: &impl Fn(SensorId) -> bool,
    fresh: &mut HashMap<SensorId, SensorState>,
) -> Result<(), StoreError> {
    let ongoing = store.excursions().ongoing().await?;
    if ongoing.is_empty() {
        return Ok(());
    }
    let sensors: HashMap<SensorId, Arc<Sensor>> =
        directory.all().into_iter().map(|s| (s.id, s)).collect();
    for e in ongoing {
        let Some(sensor) = sensors.get(&e.sensor).filter(|s| wanted(s.id)) else {
            continue;
        };
        let record = ExcursionRecord {
            rule: e.rule,
            metric: e.metric,
            start: e.start.0,
            end: e.end.map(|t| t.0),
            last: e.last.0,
            peak: e.peak,
            out_ms: e.out_ms,
            gaps: u32::try_from(e.gaps).unwrap_or(u32::MAX),
            gap_ms: e.gap_ms,
        };
        fresh
            .entry(e.sensor)
            .or_default()
            .restore_excursion(&sensor.rules, record);
    }
    Ok(())
}

fn to_store_excursion(tenant: TenantId, sensor: &Sensor, e: ExcursionRecord) -> ExcursionUpsert {
    ExcursionUpsert {
        tenant,
        sensor: sensor.id,
        rule: e.rule,
        metric: e.metric,
        start: Timestamp(e.start),
        end: e.end.map(Timestamp),
        last: Timestamp(e.last),
        peak: e.peak,
        out_ms: e.out_ms,
        gaps: i64::from(e.gaps),
        gap_ms: e.gap_ms,
    }
}

fn to_store_transition(tenant: TenantId, sensor: &Sensor, t: Transition) -> AlertTransition {
    match t {
        Transition::Open {
            rule,
            kind,
            severity,
            metric,
            value,
            ts,
            message,
            details,
        } => AlertTransition::Open(NewAlert {
            tenant,
            sensor: sensor.id,
            rule,
            kind,
            severity,
            metric,
            value,
            message,
            opened_at: Timestamp(ts),
            details,
        }),
        Transition::Resolve { rule, ts } => AlertTransition::Resolve {
            tenant,
            sensor: sensor.id,
            rule,
            at: Timestamp(ts),
        },
    }
}
