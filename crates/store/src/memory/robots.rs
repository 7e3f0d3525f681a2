//! Robots, executions, modules and instances in memory, and the robots port over them.
//! One `Mutex` of their own: robots change nothing else, and a claim is one critical
//! section, so two claimers can never take one robot.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use vigia_core::{
    Execution, ExecutionStatus, Module, ModuleInstance, Robot, RobotId, RobotStatus, TenantId,
    Timestamp,
};

use super::VolatileStore;
use crate::robots::{
    capped, check_heartbeat, check_instance, check_name, check_new, fence, records_stale,
    swept_status, truncate, LEASE_EXPIRED, MAX_CLAIM, MAX_PAGE, MAX_STEP_CHARS,
};
use crate::{
    AttemptEnd, Claim, Created, Heartbeat, NewRobot, RobotError, RobotFilter, RobotRepo,
    RobotResult, StoreError,
};

/// Everything of the robots port.
#[derive(Default)]
pub(super) struct Robots {
    last_id: i64,
    robots: BTreeMap<RobotId, Robot>,
    /// (tenant, key) → (robot, body hash).
    idempotency: HashMap<(TenantId, String), (RobotId, Vec<u8>)>,
    executions: BTreeMap<(RobotId, u32), Execution>,
    /// Tenant → the claim sequence number that last served it (round-robin turns).
    turns: HashMap<TenantId, i64>,
    last_claim: i64,
    modules: BTreeMap<String, Module>,
    instances: BTreeMap<(String, String), ModuleInstance>,
}

impl Robots {
    fn create(&mut self, new: &NewRobot, at: Timestamp) -> RobotResult<Created> {
        check_new(new)?;
        if let Some(idem) = &new.idempotency {
            if let Some((id, hash)) = self.idempotency.get(&(new.tenant, idem.key.clone())) {
                if *hash != idem.body_hash {
                    return Err(RobotError::IdempotencyMismatch { robot: *id });
                }
                let robot = self.robots.get(id).cloned().ok_or(StoreError::NotFound)?;
                return Ok(Created {
                    robot,
                    created: false,
                });
            }
        }
        self.last_id += 1;
        let id = RobotId(self.last_id);
        let robot = Robot {
            id,
            tenant: new.tenant,
            module: new.module.clone(),
            input: new.input.clone(),
            priority: new.priority,
            status: RobotStatus::Queued,
            attempt: 0,
            progress: 0,
            step: None,
            result: None,
            error: None,
            timeout_s: new.timeout_s,
            idempotency_key: new.idempotency.as_ref().map(|i| i.key.clone()),
            not_before: at,
            worker: None,
            lease_expires_at: None,
            last_progress_at: None,
            cancel_requested_at: None,
            created_at: at,
            updated_at: at,
            finished_at: None,
        };
        if let Some(idem) = &new.idempotency {
            self.idempotency
                .insert((new.tenant, idem.key.clone()), (id, idem.body_hash.clone()));
        }
        self.robots.insert(id, robot.clone());
        Ok(Created {
            robot,
            created: true,
        })
    }

    fn get(&self, tenant: TenantId, id: RobotId) -> RobotResult<&Robot> {
        self.robots
            .get(&id)
            .filter(|r| r.tenant == tenant)
            .ok_or(RobotError::Store(StoreError::NotFound))
    }

    fn list(&self, tenant: TenantId, filter: &RobotFilter) -> Vec<Robot> {
        let upper = filter.before.unwrap_or(RobotId(i64::MAX));
        self.robots
            .range(..upper)
            .rev()
            .map(|(_, r)| r)
            .filter(|r| r.tenant == tenant)
            .filter(|r| filter.status.is_none_or(|s| r.status == s))
            .filter(|r| filter.module.as_ref().is_none_or(|m| &r.module == m))
            .take(capped(filter.limit, MAX_PAGE))
            .cloned()
            .collect()
    }

    fn claim(&mut self, claim: &Claim) -> Vec<Robot> {
        // Rank within (tenant, priority) by id, as the SQL backends' row_number().
        let mut ranks: HashMap<(TenantId, i32), u64> = HashMap::new();
        let mut candidates: Vec<(i32, u64, i64, RobotId)> = self
            .robots
            .values()
            .filter(|r| r.status.is_claimable() && r.not_before <= claim.now)
            .map(|r| {
                let rank = ranks.entry((r.tenant, r.priority)).or_insert(0);
                *rank += 1;
                let served = self.turns.get(&r.tenant).copied().unwrap_or(0);
                (r.priority, *rank, served, r.id)
            })
            .collect();
        candidates.sort_by_key(|&(priority, rank, served, id)| {
            (std::cmp::Reverse(priority), rank, served, id)
        });
        candidates.truncate(capped(claim.limit, MAX_CLAIM));
        if candidates.is_empty() {
            return Vec::new();
        }
        self.last_claim += 1;
        let mut claimed = Vec::with_capacity(candidates.len());
        for (_, _, _, id) in candidates {
            let robot = self.robots.get_mut(&id).expect("a candidate was just read");
            robot.status = RobotStatus::Running;
            robot.attempt += 1;
            robot.progress = 0;
            robot.worker = Some(claim.worker.clone());
            robot.lease_expires_at = Some(claim.lease_until);
            robot.last_progress_at = Some(claim.now);
            robot.cancel_requested_at = None;
            robot.updated_at = claim.now;
            self.turns.insert(robot.tenant, self.last_claim);
            self.executions.insert(
                (id, robot.attempt),
                Execution {
                    robot: id,
                    attempt: robot.attempt,
                    worker: claim.worker.clone(),
                    status: ExecutionStatus::Running,
                    started_at: claim.now,
                    ended_at: None,
                    error: None,
                    stale_reports: 0,
                },
            );
            claimed.push(robot.clone());
        }
        claimed
    }

    /// The robot if `attempt` is its live one; a refusal is counted on that execution.
    fn live(&mut self, id: RobotId, attempt: u32) -> RobotResult<&mut Robot> {
        let robot = self.robots.get(&id).ok_or(StoreError::NotFound)?;
        if let Err(refusal) = fence(robot.status, robot.attempt, attempt) {
            if records_stale(&refusal) {
                if let Some(execution) = self.executions.get_mut(&(id, attempt)) {
                    execution.stale_reports += 1;
                }
            }
            return Err(refusal);
        }
        Ok(self.robots.get_mut(&id).expect("just read"))
    }

    fn heartbeat(&mut self, beat: &Heartbeat) -> RobotResult<Robot> {
        check_heartbeat(beat)?;
        let robot = self.live(beat.robot, beat.attempt)?;
        let expires = robot.lease_expires_at.unwrap_or(beat.lease_until);
        robot.lease_expires_at = Some(expires.max(beat.lease_until));
        if let Some(progress) = beat.progress {
            robot.progress = progress;
            robot.last_progress_at = Some(robot.last_progress_at.unwrap_or(beat.now).max(beat.now));
        }
        if let Some(step) = &beat.step {
            robot.step = Some(truncate(step, MAX_STEP_CHARS));
        }
        robot.updated_at = beat.now;
        Ok(robot.clone())
    }

    fn finish(
        &mut self,
        id: RobotId,
        attempt: u32,
        end: &AttemptEnd,
        now: Timestamp,
    ) -> RobotResult<Robot> {
        let robot = self.live(id, attempt)?;
        let (status, execution_status) = end.statuses();
        end_attempt(robot, status, end.error(), end.not_before(), now);
        if let Some(result) = end.result() {
            robot.result = Some(result.clone());
            robot.progress = 100;
        }
        let robot = robot.clone();
        self.end_execution(id, attempt, execution_status, end.error(), now);
        Ok(robot)
    }

    fn end_execution(
        &mut self,
        id: RobotId,
        attempt: u32,
        status: ExecutionStatus,
        error: Option<String>,
        now: Timestamp,
    ) {
        if let Some(execution) = self.executions.get_mut(&(id, attempt)) {
            execution.status = status;
            execution.ended_at = Some(now);
            execution.error = error;
        }
    }

    fn cancel(&mut self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        self.get(tenant, id)?;
        let robot = self.robots.get_mut(&id).expect("just read");
        match robot.status {
            s if s.is_terminal() => return Err(RobotError::Finished { status: s }),
            RobotStatus::Running => {
                robot.cancel_requested_at.get_or_insert(now);
            }
            _ => end_attempt(robot, RobotStatus::Cancelled, None, None, now),
        }
        robot.updated_at = now;
        Ok(robot.clone())
    }

    fn retry(&mut self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        self.get(tenant, id)?;
        let robot = self.robots.get_mut(&id).expect("just read");
        if robot.status != RobotStatus::Dead {
            return Err(RobotError::NotDead {
                status: robot.status,
            });
        }
        robot.status = RobotStatus::Queued;
        robot.not_before = now;
        robot.finished_at = None;
        robot.updated_at = now;
        Ok(robot.clone())
    }

    fn sweep_expired(&mut self, now: Timestamp, max_attempts: u32, limit: usize) -> Vec<Robot> {
        let expired: Vec<RobotId> = self
            .robots
            .values()
            .filter(|r| r.status == RobotStatus::Running)
            .filter(|r| r.lease_expires_at.is_some_and(|at| at <= now))
            .map(|r| r.id)
            .take(capped(limit, MAX_CLAIM))
            .collect();
        let mut swept = Vec::with_capacity(expired.len());
        for id in expired {
            let robot = self.robots.get_mut(&id).expect("just read");
            let attempt = robot.attempt;
            let status = swept_status(attempt, robot.cancel_requested_at.is_some(), max_attempts);
            let error = (status != RobotStatus::Cancelled).then(|| LEASE_EXPIRED.to_string());
            let not_before = (status == RobotStatus::Queued).then_some(now);
            end_attempt(robot, status, error.clone(), not_before, now);
            swept.push(robot.clone());
            self.end_execution(
                id,
                attempt,
                ExecutionStatus::Expired,
                Some(LEASE_EXPIRED.into()),
                now,
            );
        }
        swept
    }

    fn cleanup(&mut self, before: Timestamp, chunk: usize) -> u64 {
        let doomed: Vec<RobotId> = self
            .robots
            .values()
            .filter(|r| r.status.is_terminal() && r.finished_at.is_some_and(|at| at < before))
            .map(|r| r.id)
            .take(capped(chunk, MAX_CLAIM))
            .collect();
        for id in &doomed {
            let robot = self.robots.remove(id).expect("just read");
            if let Some(key) = robot.idempotency_key {
                self.idempotency.remove(&(robot.tenant, key));
            }
            let attempts: Vec<_> = self
                .executions
                .range((*id, 0)..=(*id, u32::MAX))
                .map(|(k, _)| *k)
                .collect();
            for key in attempts {
                self.executions.remove(&key);
            }
        }
        doomed.len() as u64
    }
}

/// Applies the end of the live attempt (or of a robot that never ran) to the robot.
fn end_attempt(
    robot: &mut Robot,
    status: RobotStatus,
    error: Option<String>,
    not_before: Option<Timestamp>,
    now: Timestamp,
) {
    robot.status = status;
    if error.is_some() {
        robot.error = error;
    }
    if let Some(at) = not_before {
        robot.not_before = at;
    }
    robot.worker = None;
    robot.lease_expires_at = None;
    robot.cancel_requested_at = None;
    robot.finished_at = status.is_terminal().then_some(now);
    robot.updated_at = now;
}

#[async_trait]
impl RobotRepo for VolatileStore {
    async fn create(&self, robot: &NewRobot, at: Timestamp) -> RobotResult<Created> {
        // Tenants are never deleted: checked under the catalog's lock, then released
        // (never two locks at once). An unknown tenant is a `Conflict`, as the SQL
        // backends' foreign key answers.
        self.read()?
            .catalog
            .require_tenant(robot.tenant)
            .map_err(|_| StoreError::Conflict(format!("tenant {} does not exist", robot.tenant)))?;
        self.lock(&self.robots)?.create(robot, at)
    }

    async fn get(&self, tenant: TenantId, id: RobotId) -> RobotResult<Robot> {
        self.lock(&self.robots)?.get(tenant, id).cloned()
    }

    async fn list(&self, tenant: TenantId, filter: &RobotFilter) -> RobotResult<Vec<Robot>> {
        Ok(self.lock(&self.robots)?.list(tenant, filter))
    }

    async fn claim(&self, claim: &Claim) -> RobotResult<Vec<Robot>> {
        Ok(self.lock(&self.robots)?.claim(claim))
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> RobotResult<Robot> {
        self.lock(&self.robots)?.heartbeat(beat)
    }

    async fn finish(
        &self,
        robot: RobotId,
        attempt: u32,
        end: &AttemptEnd,
        now: Timestamp,
    ) -> RobotResult<Robot> {
        self.lock(&self.robots)?.finish(robot, attempt, end, now)
    }

    async fn cancel(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        self.lock(&self.robots)?.cancel(tenant, id, now)
    }

    async fn retry(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        self.lock(&self.robots)?.retry(tenant, id, now)
    }

    async fn sweep_expired(
        &self,
        now: Timestamp,
        max_attempts: u32,
        limit: usize,
    ) -> RobotResult<Vec<Robot>> {
        Ok(self
            .lock(&self.robots)?
            .sweep_expired(now, max_attempts, limit))
    }

    async fn executions(&self, tenant: TenantId, id: RobotId) -> RobotResult<Vec<Execution>> {
        let robots = self.lock(&self.robots)?;
        robots.get(tenant, id)?;
        Ok(robots
            .executions
            .range((id, 0)..=(id, u32::MAX))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn cleanup(&self, before: Timestamp, chunk: usize) -> RobotResult<u64> {
        Ok(self.lock(&self.robots)?.cleanup(before, chunk))
    }

    async fn put_module(&self, module: &Module) -> RobotResult<()> {
        check_name("name", &module.name)?;
        self.lock(&self.robots)?
            .modules
            .insert(module.name.clone(), module.clone());
        Ok(())
    }

    async fn module(&self, name: &str) -> RobotResult<Option<Module>> {
        Ok(self.lock(&self.robots)?.modules.get(name).cloned())
    }

    async fn modules(&self) -> RobotResult<Vec<Module>> {
        Ok(self.lock(&self.robots)?.modules.values().cloned().collect())
    }

    async fn put_instance(&self, instance: &ModuleInstance) -> RobotResult<()> {
        check_instance(instance)?;
        let mut robots = self.lock(&self.robots)?;
        if !robots.modules.contains_key(&instance.module) {
            return Err(StoreError::NotFound.into());
        }
        robots.instances.insert(
            (instance.module.clone(), instance.name.clone()),
            instance.clone(),
        );
        Ok(())
    }

    async fn instance(&self, module: &str, name: &str) -> RobotResult<Option<ModuleInstance>> {
        Ok(self
            .lock(&self.robots)?
            .instances
            .get(&(module.to_string(), name.to_string()))
            .cloned())
    }

    async fn instances(&self, module: Option<&str>) -> RobotResult<Vec<ModuleInstance>> {
        Ok(self
            .lock(&self.robots)?
            .instances
            .values()
            .filter(|i| module.is_none_or(|m| i.module == m))
            .cloned()
            .collect())
    }
}
