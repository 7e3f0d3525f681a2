//! The robots orchestrator (issue #18), the I/O half of the robots: role `robots` runs
//! one per process, and several processes share the queue through the store.
//!
//! Why a crate of its own and not a module of `vigia-robots`: that crate is the pure
//! decision logic (no clock, no I/O, no store or core types) and `vigia-services` depends on
//! it for input checks; the orchestrator needs the store, the services, tokio and an HTTP
//! client. Keeping them apart keeps the rules testable as data tables and keeps `reqwest`
//! and the loop out of every crate that only checks an input.
//!
//! # The loop
//!
//! ```text
//! every robots.poll_every (at once again while claims come back full):
//!   sweep_expired (at most every second): attempts whose lease ran out → queued again,
//!     dead after robots.max_attempts, cancelled when a cancel was pending
//!   claim up to the free slots (robots.concurrency): each robot now running, attempt += 1
//!   per robot, a task:
//!     in_process module (`echo`) → ends the attempt with its result
//!     http module → balancer::choose over the module's instances (health, score,
//!                   breaker, in-flight) ── none → waiting_for_module, retried later
//!        POST {robot, attempt, input, callback} to the instance, heartbeating the lease
//!        while the call is open:
//!          200 → its JSON (`output`, or the whole object) completes the attempt
//!          202 → the worker runs it and reports to `callback` (`…/progress|complete|fail`)
//!          4xx → failed for good (the instance refused this input; it is not unhealthy)
//!          5xx, timeout, connection refused → the instance failed: breaker and retry policy
//! ```
//!
//! Every end goes through `RobotService::end_attempt`/`finish`, the same path a worker's
//! report takes, so a failure is judged by one retry policy and a stale attempt's end is
//! refused (409 for a worker, a debug log here) and recorded by the store.
//!
//! Breakers, success rates, latencies and in-flight counts are this process's (see
//! `vigia_robots::balancer`); each reload of a module's instances (every
//! [`INSTANCE_REFRESH`]) writes them back, so `GET /api/v1/modules` shows them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};
use vigia_core::{BreakerPosition, InstanceHealth, Module, ModuleInstance, Robot, Timestamp};
use vigia_robots::{
    balancer, BalancerConfig, BreakerConfig, BreakerState, Health, Instance, Outcome as Call,
    Permit,
};
use vigia_services::robots::{Outcome, KIND_HTTP, KIND_IN_PROCESS};
use vigia_services::{RobotService, ServiceError};
use vigia_store::{AttemptEnd, Claim, Heartbeat, RobotError, Store};

/// How long a module's instance list is used before it is read from the store again.
pub const INSTANCE_REFRESH: Duration = Duration::from_secs(5);
/// How often expired leases are swept at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Robots one sweep handles.
const SWEEP_LIMIT: usize = 500;

/// Tuning of the orchestrator (`[robots]`).
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// This process's name in leases and executions.
    pub worker: String,
    /// Robots run at once by this process.
    pub concurrency: usize,
    /// How often the queue is polled when it was empty.
    pub poll_every: Duration,
    /// An attempt's lease, extended by each heartbeat, ms.
    pub lease_ms: i64,
    /// Attempts in all before a robot is dead (the sweep's rule; reports use the service's
    /// retry policy, built from the same setting).
    pub max_attempts: u32,
    /// How long a forced cancel waits for the worker, ms.
    pub cancel_grace_ms: i64,
    /// Where workers report: `{callback_base}/api/v1/robots/{id}`.
    pub callback_base: String,
    /// How long a call to an instance may take when the robot sets no `timeout_s`.
    pub call_timeout: Duration,
    /// How long a robot whose module has no usable instance waits before the next try, ms.
    pub wait_for_module_ms: i64,
    pub breaker: BreakerConfig,
    pub balancer: BalancerConfig,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            worker: worker_name(),
            concurrency: 16,
            poll_every: Duration::from_millis(200),
            lease_ms: 30_000,
            max_attempts: 5,
            cancel_grace_ms: 30_000,
            callback_base: "http://127.0.0.1:8080".into(),
            call_timeout: Duration::from_secs(300),
            wait_for_module_ms: 5_000,
            breaker: BreakerConfig::default(),
            balancer: BalancerConfig::default(),
        }
    }
}

/// A name unique to this process: `robots-<pid>-<random>`.
pub fn worker_name() -> String {
    format!(
        "robots-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The instances of one module as this process balances them.
struct Pool {
    instances: Vec<Instance>,
    /// The instance's URL, by index like `instances`.
    urls: Vec<String>,
    loaded_at: Instant,
}

/// One call dispatched to an instance.
struct Pick {
    name: String,
    url: String,
    permit: Permit,
}

/// Claims and runs robots; see the crate doc.
pub struct Orchestrator {
    store: Arc<dyn Store>,
    robots: Arc<RobotService>,
    config: OrchestratorConfig,
    http: reqwest::Client,
    pools: Mutex<HashMap<String, Pool>>,
    modules: Mutex<HashMap<String, (Instant, Option<Module>)>>,
}

/// What a call to an instance came to.
enum CallEnd {
    /// The attempt is over (the robot is ended as this says).
    Ended(Outcome),
    /// The worker took it and will report by itself.
    Accepted,
    /// Ran past the robot's `timeout_s`.
    TimedOut,
    /// The attempt is no longer ours (stale, finished, or cancelled by force).
    Lost,
}

impl Orchestrator {
    pub fn new(
        store: Arc<dyn Store>,
        robots: Arc<RobotService>,
        config: OrchestratorConfig,
    ) -> Arc<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Arc::new(Self {
            store,
            robots,
            config,
            http,
            pools: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// Runs the loop until `stop` turns true; running robots are then dropped (their leases
    /// expire and another process, or the next start, takes them again).
    pub fn spawn(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            info!(worker = %this.config.worker, concurrency = this.config.concurrency, "robots orchestrator started");
            let slots = Arc::new(Semaphore::new(this.config.concurrency.max(1)));
            let mut tasks = JoinSet::new();
            let mut last_sweep: Option<Instant> = None;
            loop {
                if *stop.borrow() {
                    break;
                }
                while tasks.try_join_next().is_some() {}
                if last_sweep.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) {
                    last_sweep = Some(Instant::now());
                    this.sweep().await;
                }
                let free = slots.available_permits();
                let mut full = false;
                if free > 0 {
                    let now = Timestamp::now();
                    let claim = Claim {
                        worker: this.config.worker.clone(),
                        limit: free,
                        now,
                        lease_until: Timestamp(now.0 + this.config.lease_ms),
                    };
                    match this.store.robots().claim(&claim).await {
                        Ok(claimed) => {
                            full = !claimed.is_empty() && claimed.len() == free;
                            for robot in claimed {
                                let Ok(slot) = slots.clone().acquire_owned().await else {
                                    break;
                                };
                                let me = this.clone();
                                tasks.spawn(async move {
                                    me.run(robot).await;
                                    drop(slot);
                                });
                            }
                        }
                        Err(e) => warn!(error = %e, "could not claim robots; retrying"),
                    }
                }
                if full {
                    // More may be queued: claim again as soon as a slot frees.
                    tokio::select! {
                        _ = tasks.join_next(), if !tasks.is_empty() => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(this.config.poll_every) => {}
                    _ = stop.changed() => {}
                }
            }
            tasks.abort_all();
            info!("robots orchestrator stopped");
        })
    }

    async fn sweep(&self) {
        match self
            .store
            .robots()
            .sweep_expired(Timestamp::now(), self.config.max_attempts, SWEEP_LIMIT)
            .await
        {
            Ok(swept) if !swept.is_empty() => {
                info!(count = swept.len(), "re-queued robots whose lease expired");
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not sweep expired robot leases"),
        }
    }

    /// Runs one claimed robot's attempt to its end (or hands it to a worker).
    async fn run(&self, robot: Robot) {
        let started = Instant::now();
        let module = match self.module(&robot.module).await {
            Ok(module) => module,
            Err(e) => {
                // The store is down: leave the attempt; its lease expires and it is retried.
                warn!(robot = %robot.id, error = %e, "could not read the robot's module");
                return;
            }
        };
        let Some(module) = module else {
            self.end(
                &robot,
                Outcome::Failed {
                    error: format!("module `{}` is no longer registered", robot.module),
                    retryable: false,
                },
            )
            .await;
            return;
        };
        match module.kind.as_str() {
            KIND_IN_PROCESS => self.run_in_process(&robot).await,
            KIND_HTTP => self.run_http(&robot).await,
            other => {
                self.end(
                    &robot,
                    Outcome::Failed {
                        error: format!("module kind `{other}` is not run by this version"),
                        retryable: false,
                    },
                )
                .await
            }
        }
        metrics::histogram!("vigia_robot_execution_seconds", "module" => robot.module.clone())
            .record(started.elapsed().as_secs_f64());
    }

    async fn run_in_process(&self, robot: &Robot) {
        let outcome = match robot.module.as_str() {
            vigia_services::robots::ECHO => Outcome::Completed {
                output: robot.input.clone(),
            },
            other => Outcome::Failed {
                error: format!("no in-process module `{other}` in this build"),
                retryable: false,
            },
        };
        self.end(robot, outcome).await;
    }

    async fn run_http(&self, robot: &Robot) {
        let Some(pick) = self.pick(&robot.module).await else {
            let now = Timestamp::now();
            let end = AttemptEnd::WaitForModule {
                not_before: Timestamp(now.0 + self.config.wait_for_module_ms),
            };
            if let Err(e) = self.robots.finish(robot.id, robot.attempt, &end, now).await {
                debug!(robot = %robot.id, error = %e, "could not park the robot");
            }
            return;
        };
        let started = Instant::now();
        let end = self.call(robot, &pick).await;
        let healthy = match &end {
            CallEnd::Ended(Outcome::Failed { retryable, .. }) => !retryable,
            CallEnd::TimedOut => false,
            _ => true,
        };
        self.release(&robot.module, &pick, healthy, started.elapsed());
        match end {
            CallEnd::Ended(outcome) => self.end(robot, outcome).await,
            CallEnd::TimedOut => {
                let now = Timestamp::now();
                let end = AttemptEnd::TimedOut {
                    error: format!("no answer within {} s", self.timeout_of(robot).as_secs()),
                };
                if let Err(e) = self.robots.finish(robot.id, robot.attempt, &end, now).await {
                    debug!(robot = %robot.id, error = %e, "could not end a timed-out attempt");
                }
            }
            CallEnd::Accepted | CallEnd::Lost => {}
        }
    }

    fn timeout_of(&self, robot: &Robot) -> Duration {
        robot.timeout_s.map_or(self.config.call_timeout, |s| {
            Duration::from_secs(u64::from(s))
        })
    }

    /// POSTs the robot to the instance, heartbeating its lease until the call ends.
    async fn call(&self, robot: &Robot, pick: &Pick) -> CallEnd {
        let body = json!({
            "robot": robot.id,
            "attempt": robot.attempt,
            "input": robot.input,
            "callback": format!("{}/api/v1/robots/{}", self.config.callback_base.trim_end_matches('/'), robot.id),
        });
        let timeout = self.timeout_of(robot);
        let request = self
            .http
            .post(&pick.url)
            .json(&body)
            .timeout(timeout)
            .send();
        tokio::pin!(request);
        let every = Duration::from_millis((self.config.lease_ms / 3).max(100) as u64);
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let response = loop {
            tokio::select! {
                response = &mut request => break response,
                _ = beat.tick() => {
                    if !self.heartbeat(robot).await {
                        return CallEnd::Lost;
                    }
                }
            }
        };
        match response {
            Ok(response) => {
                let status = response.status();
                if status == reqwest::StatusCode::ACCEPTED {
                    return CallEnd::Accepted;
                }
                if status.is_success() {
                    return match response.json::<serde_json::Value>().await {
                        Ok(serde_json::Value::Object(mut object)) => {
                            let output = match object.remove("output") {
                                Some(output @ serde_json::Value::Object(_)) => output,
                                Some(other) => json!({ "output": other }),
                                None => serde_json::Value::Object(object),
                            };
                            CallEnd::Ended(Outcome::Completed { output })
                        }
                        Ok(_) | Err(_) => CallEnd::Ended(Outcome::Failed {
                            error: format!(
                                "instance `{}` answered {status} without a JSON object",
                                pick.name
                            ),
                            retryable: true,
                        }),
                    };
                }
                let text = response.text().await.unwrap_or_default();
                let detail: String = text.chars().take(500).collect();
                let retryable = status.is_server_error()
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                CallEnd::Ended(Outcome::Failed {
                    error: format!("instance `{}` answered {status}: {detail}", pick.name),
                    retryable,
                })
            }
            Err(e) if e.is_timeout() && robot.timeout_s.is_some() => CallEnd::TimedOut,
            Err(e) => CallEnd::Ended(Outcome::Failed {
                error: format!("instance `{}` could not be reached: {e}", pick.name),
                retryable: true,
            }),
        }
    }

    /// Extends the lease; false when the attempt is no longer ours. Enforces an overdue
    /// cancel (the call is dropped and the robot ends `cancelled`).
    async fn heartbeat(&self, robot: &Robot) -> bool {
        let now = Timestamp::now();
        let beat = Heartbeat {
            robot: robot.id,
            attempt: robot.attempt,
            progress: None,
            step: None,
            now,
            lease_until: Timestamp(now.0 + self.config.lease_ms),
        };
        match self.store.robots().heartbeat(&beat).await {
            Ok(current) => match current.cancel_requested_at {
                Some(asked) if now.0 - asked.0 >= self.config.cancel_grace_ms => {
                    let _ = self
                        .robots
                        .finish(robot.id, robot.attempt, &AttemptEnd::Cancelled, now)
                        .await;
                    false
                }
                _ => true,
            },
            Err(RobotError::Stale { .. } | RobotError::Finished { .. }) => false,
            // The store is down: keep the call; the lease may expire meanwhile.
            Err(e) => {
                warn!(robot = %robot.id, error = %e, "heartbeat failed");
                true
            }
        }
    }

    async fn end(&self, robot: &Robot, outcome: Outcome) {
        match self
            .robots
            .end_attempt(robot.id, robot.attempt, outcome)
            .await
        {
            Ok(_) => {}
            Err(ServiceError::Conflict(reason)) => {
                debug!(robot = %robot.id, attempt = robot.attempt, %reason, "attempt already over");
            }
            Err(e) => warn!(robot = %robot.id, error = %e, "could not end the attempt"),
        }
    }

    /// The module, read from the store at most every [`INSTANCE_REFRESH`].
    async fn module(&self, name: &str) -> Result<Option<Module>, RobotError> {
        {
            let modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, module)) = modules.get(name) {
                if at.elapsed() < INSTANCE_REFRESH {
                    return Ok(module.clone());
                }
            }
        }
        let module = self.store.robots().module(name).await?;
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if modules.len() > 10_000 {
            modules.clear();
        }
        modules.insert(name.to_string(), (Instant::now(), module.clone()));
        Ok(module)
    }

    /// Chooses an instance of `module` and takes its breaker permit.
    async fn pick(&self, module: &str) -> Option<Pick> {
        let stale = {
            let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools
                .get(module)
                .is_none_or(|p| p.loaded_at.elapsed() >= INSTANCE_REFRESH)
        };
        if stale {
            self.reload(module).await;
        }
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let pool = pools.get_mut(module)?;
        let now = Timestamp::now().0;
        let dispatch = balancer::choose(&mut pool.instances, &self.config.balancer, now)?;
        Some(Pick {
            name: pool.instances[dispatch.index].name.clone(),
            url: pool.urls[dispatch.index].clone(),
            permit: dispatch.permit,
        })
    }

    /// Feeds a call's outcome to its instance's stats and breaker.
    fn release(&self, module: &str, pick: &Pick, healthy: bool, took: Duration) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pool) = pools.get_mut(module) else {
            return;
        };
        let Some(instance) = pool.instances.iter_mut().find(|i| i.name == pick.name) else {
            return;
        };
        let now = Timestamp::now().0;
        let outcome = if healthy {
            Call::Success
        } else {
            Call::Failure
        };
        instance.finish(
            &self.config.balancer,
            pick.permit,
            outcome,
            took.as_secs_f64() * 1_000.0,
            now,
        );
        let state = instance.breaker.state(now);
        metrics::gauge!("vigia_module_breaker_state", "instance" => format!("{module}/{}", pick.name))
            .set(f64::from(state.gauge()));
    }

    /// Reads the module's instances, keeping what this process learnt of each (breaker,
    /// stats, in-flight), and writes that back so the API shows it.
    async fn reload(&self, module: &str) {
        let stored = match self.store.robots().instances(Some(module)).await {
            Ok(stored) => stored,
            Err(e) => {
                warn!(module, error = %e, "could not read the module's instances");
                return;
            }
        };
        let now = Timestamp::now();
        let mut write_back = Vec::new();
        {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            let mut old: HashMap<String, Instance> = pools
                .remove(module)
                .map(|p| {
                    p.instances
                        .into_iter()
                        .map(|i| (i.name.clone(), i))
                        .collect()
                })
                .unwrap_or_default();
            let mut instances = Vec::with_capacity(stored.len());
            let mut urls = Vec::with_capacity(stored.len());
            for row in stored {
                let Some(url) = row.url.clone() else {
                    continue;
                };
                let mut instance = old.remove(&row.name).unwrap_or_else(|| {
                    Instance::new(
                        row.name.clone(),
                        row.capacity,
                        row.weight,
                        self.config.breaker.clone(),
                    )
                });
                instance.capacity = row.capacity.max(1);
                instance.weight = row.weight;
                instance.health = match row.health {
                    InstanceHealth::Unknown => Health::Unknown,
                    InstanceHealth::Healthy => Health::Healthy,
                    InstanceHealth::Unhealthy => Health::Unhealthy,
                };
                let breaker = match instance.breaker.state(now.0) {
                    BreakerState::Closed => BreakerPosition::Closed,
                    BreakerState::Open => BreakerPosition::Open,
                    BreakerState::HalfOpen => BreakerPosition::HalfOpen,
                };
                let score = instance.score(&self.config.balancer, now.0);
                if row.breaker != breaker
                    || row.in_flight != instance.in_flight
                    || (row.score - score).abs() > 1e-3
                {
                    write_back.push(ModuleInstance {
                        breaker,
                        in_flight: instance.in_flight,
                        score,
                        updated_at: now,
                        ..row
                    });
                }
                instances.push(instance);
                urls.push(url);
            }
            pools.insert(
                module.to_string(),
                Pool {
                    instances,
                    urls,
                    loaded_at: Instant::now(),
                },
            );
        }
        for row in write_back {
            if let Err(e) = self.store.robots().put_instance(&row).await {
                debug!(module, instance = %row.name, error = %e, "could not record the instance's state");
            }
        }
    }

    /// For tests and the page: this process's view of a module's breakers.
    pub fn breaker_states(&self, module: &str) -> Vec<(String, BreakerState)> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let now = Timestamp::now().0;
        pools.get(module).map_or_else(Vec::new, |p| {
            p.instances
                .iter()
                .map(|i| (i.name.clone(), i.breaker.state(now)))
                .collect()
        })
    }
}
