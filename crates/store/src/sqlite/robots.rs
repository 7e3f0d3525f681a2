//! The robots port on SQLite. Writes are grouped jobs of the writer thread
//! (`writer::RobotWrite`): many creates and transitions share one transaction and one
//! fsync, each in a savepoint of its own, and every caller is answered after the commit.
//! The writer is the only writer, so a claim needs no row locks: selecting the dispatch
//! order and updating the rows happen in one transaction nobody else can interleave.
//! Reads go to the read pool.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use vigia_core::{
    Execution, ExecutionStatus, Module, ModuleInstance, Robot, RobotId, RobotStatus, TenantId,
    Timestamp,
};

use super::error::writer_gone;
use super::writer::RobotWrite;
use super::SqliteStore;
use crate::robots::rows::{
    self, json_text, Columns, EndRow, EXECUTION_COLUMNS, INSTANCE_COLUMNS, MODULE_COLUMNS,
    ROBOT_COLUMNS,
};
use crate::robots::{
    check_heartbeat, check_instance, check_name, check_new, fence, records_stale, sql_limit,
    swept_status, truncate, LEASE_EXPIRED, MAX_CLAIM, MAX_PAGE, MAX_STEP_CHARS,
};
use crate::{
    AttemptEnd, Claim, Created, Heartbeat, NewRobot, RobotError, RobotFilter, RobotRepo,
    RobotResult, StoreError, StoreResult,
};

impl Columns for Row<'_> {
    fn int(&self, name: &str) -> StoreResult<Option<i64>> {
        Ok(self.get(name)?)
    }
    fn text(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(self.get(name)?)
    }
    fn float(&self, name: &str) -> StoreResult<Option<f64>> {
        Ok(self.get(name)?)
    }
}

impl From<rusqlite::Error> for RobotError {
    fn from(e: rusqlite::Error) -> Self {
        RobotError::Store(e.into())
    }
}

/// Runs `sql` (which selects [`ROBOT_COLUMNS`] or returns them) for one robot.
fn one_robot(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> StoreResult<Robot> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(args)?;
    match rows.next()? {
        Some(row) => rows::robot_from(row),
        None => Err(StoreError::NotFound),
    }
}

fn all<T>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    from: impl Fn(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(args)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from(row)?);
    }
    Ok(out)
}

fn get(conn: &Connection, tenant: TenantId, id: RobotId) -> StoreResult<Robot> {
    one_robot(
        conn,
        &format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE id = ?1 AND tenant_id = ?2"),
        params![id.0, tenant.0],
    )
}

fn create(conn: &Connection, new: &NewRobot, at: Timestamp) -> RobotResult<Created> {
    if let Some(idem) = &new.idempotency {
        let found: Option<(Vec<u8>, i64)> = conn
            .prepare_cached(
                "SELECT body_hash, id FROM robots WHERE tenant_id = ?1 AND idempotency_key = ?2",
            )?
            .query_row(params![new.tenant.0, idem.key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        if let Some((hash, id)) = found {
            if hash != idem.body_hash {
                return Err(RobotError::IdempotencyMismatch { robot: RobotId(id) });
            }
            let robot = get(conn, new.tenant, RobotId(id))?;
            return Ok(Created {
                robot,
                created: false,
            });
        }
    }
    let robot = one_robot(
        conn,
        &format!(
            "INSERT INTO robots (tenant_id, module, input, priority, status, timeout_s,
                 idempotency_key, body_hash, not_before, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?8, ?8)
             RETURNING {ROBOT_COLUMNS}"
        ),
        params![
            new.tenant.0,
            new.module,
            json_text(&new.input),
            new.priority,
            new.timeout_s,
            new.idempotency.as_ref().map(|i| &i.key),
            new.idempotency.as_ref().map(|i| &i.body_hash),
            at.0,
        ],
    )?;
    Ok(Created {
        robot,
        created: true,
    })
}

fn claim(conn: &Connection, claim: &Claim) -> StoreResult<Vec<Robot>> {
    let ids: Vec<i64> = {
        let mut statement = conn.prepare_cached(
            "SELECT r.id FROM (
                 SELECT id, tenant_id, priority,
                        row_number() OVER (PARTITION BY tenant_id, priority ORDER BY id) AS turn
                 FROM robots
                 WHERE status IN ('queued', 'waiting_for_module') AND not_before <= ?1
             ) AS r LEFT JOIN robot_turns AS t ON t.tenant_id = r.tenant_id
             ORDER BY r.priority DESC, r.turn, COALESCE(t.served, 0), r.id
             LIMIT ?2",
        )?;
        let rows = statement.query_map(
            params![claim.now.0, sql_limit(claim.limit, MAX_CLAIM)],
            |r| r.get(0),
        )?;
        rows.collect::<Result<_, _>>()?
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let served: i64 = conn.query_row(
        "SELECT COALESCE(MAX(served), 0) + 1 FROM robot_turns",
        [],
        |r| r.get(0),
    )?;
    let update = format!(
        "UPDATE robots SET status = 'running', attempt = attempt + 1, progress = 0,
             worker = ?1, lease_expires_at = ?2, last_progress_at = ?3,
             cancel_requested_at = NULL, updated_at = ?3
         WHERE id = ?4 RETURNING {ROBOT_COLUMNS}"
    );
    let mut claimed = Vec::with_capacity(ids.len());
    for id in ids {
        let robot = one_robot(
            conn,
            &update,
            params![claim.worker, claim.lease_until.0, claim.now.0, id],
        )?;
        conn.prepare_cached(
            "INSERT INTO robot_executions (robot_id, attempt, worker, status, started_at)
             VALUES (?1, ?2, ?3, 'running', ?4)",
        )?
        .execute(params![id, robot.attempt, claim.worker, claim.now.0])?;
        conn.prepare_cached(
            "INSERT INTO robot_turns (tenant_id, served) VALUES (?1, ?2)
             ON CONFLICT (tenant_id) DO UPDATE SET served = excluded.served",
        )?
        .execute(params![robot.tenant.0, served])?;
        claimed.push(robot);
    }
    Ok(claimed)
}

/// Passes when `attempt` is the robot's live one; a refusal is counted on the reported
/// execution (committed with the refusal).
fn require_live(conn: &Connection, id: RobotId, attempt: u32) -> RobotResult<()> {
    let (status, live): (String, u32) = conn
        .prepare_cached("SELECT status, attempt FROM robots WHERE id = ?1")?
        .query_row([id.0], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(StoreError::from)?;
    let status = RobotStatus::parse(&status)
        .ok_or_else(|| StoreError::Internal(format!("robot {id} has status `{status}`")))?;
    let verdict = fence(status, live, attempt);
    if let Err(refusal) = &verdict {
        if records_stale(refusal) {
            conn.prepare_cached(
                "UPDATE robot_executions SET stale_reports = stale_reports + 1
                 WHERE robot_id = ?1 AND attempt = ?2",
            )?
            .execute(params![id.0, attempt])?;
        }
    }
    verdict
}

fn heartbeat(conn: &Connection, beat: &Heartbeat) -> RobotResult<Robot> {
    require_live(conn, beat.robot, beat.attempt)?;
    Ok(one_robot(
        conn,
        &format!(
            "UPDATE robots SET
                 lease_expires_at = MAX(COALESCE(lease_expires_at, ?1), ?1),
                 progress = COALESCE(?2, progress),
                 last_progress_at = CASE WHEN ?2 IS NULL THEN last_progress_at
                                         ELSE MAX(COALESCE(last_progress_at, ?3), ?3) END,
                 step = COALESCE(?4, step),
                 updated_at = ?3
             WHERE id = ?5 RETURNING {ROBOT_COLUMNS}"
        ),
        params![
            beat.lease_until.0,
            beat.progress,
            beat.now.0,
            beat.step.as_deref().map(|s| truncate(s, MAX_STEP_CHARS)),
            beat.robot.0,
        ],
    )?)
}

/// Ends a robot's attempt (or a robot that never ran) as `end` says.
fn end_robot(conn: &Connection, id: RobotId, end: &EndRow) -> StoreResult<Robot> {
    one_robot(
        conn,
        &format!(
            "UPDATE robots SET status = ?1, error = COALESCE(?2, error),
                 not_before = COALESCE(?3, not_before), finished_at = ?4,
                 result = COALESCE(?5, result),
                 progress = CASE WHEN ?5 IS NULL THEN progress ELSE 100 END,
                 worker = NULL, lease_expires_at = NULL, cancel_requested_at = NULL,
                 updated_at = ?6
             WHERE id = ?7 RETURNING {ROBOT_COLUMNS}"
        ),
        params![
            end.status,
            end.error,
            end.not_before,
            end.finished_at,
            end.result,
            end.now,
            id.0
        ],
    )
}

fn end_execution(
    conn: &Connection,
    id: RobotId,
    attempt: u32,
    status: ExecutionStatus,
    error: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE robot_executions SET status = ?1, ended_at = ?2, error = ?3
         WHERE robot_id = ?4 AND attempt = ?5",
    )?
    .execute(params![status.as_str(), now.0, error, id.0, attempt])?;
    Ok(())
}

fn finish(
    conn: &Connection,
    id: RobotId,
    attempt: u32,
    end: &AttemptEnd,
    now: Timestamp,
) -> RobotResult<Robot> {
    require_live(conn, id, attempt)?;
    let (status, execution) = end.statuses();
    let error = end.error();
    let robot = end_robot(
        conn,
        id,
        &EndRow::new(status, error.clone(), end.not_before(), end.result(), now),
    )?;
    end_execution(conn, id, attempt, execution, error.as_deref(), now)?;
    Ok(robot)
}

fn cancel(conn: &Connection, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
    let robot = get(conn, tenant, id)?;
    match robot.status {
        status if status.is_terminal() => Err(RobotError::Finished { status }),
        RobotStatus::Running => Ok(one_robot(
            conn,
            &format!(
                "UPDATE robots SET cancel_requested_at = COALESCE(cancel_requested_at, ?1),
                     updated_at = ?1
                 WHERE id = ?2 RETURNING {ROBOT_COLUMNS}"
            ),
            params![now.0, id.0],
        )?),
        _ => Ok(end_robot(
            conn,
            id,
            &EndRow::new(RobotStatus::Cancelled, None, None, None, now),
        )?),
    }
}

fn retry(conn: &Connection, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
    let robot = get(conn, tenant, id)?;
    if robot.status != RobotStatus::Dead {
        return Err(RobotError::NotDead {
            status: robot.status,
        });
    }
    Ok(one_robot(
        conn,
        &format!(
            "UPDATE robots SET status = 'queued', not_before = ?1, finished_at = NULL,
                 updated_at = ?1
             WHERE id = ?2 RETURNING {ROBOT_COLUMNS}"
        ),
        params![now.0, id.0],
    )?)
}

fn sweep_expired(
    conn: &Connection,
    now: Timestamp,
    max_attempts: u32,
    max: usize,
) -> StoreResult<Vec<Robot>> {
    let expired: Vec<(i64, u32, bool)> = {
        let mut statement = conn.prepare_cached(
            "SELECT id, attempt, cancel_requested_at IS NOT NULL FROM robots
             WHERE status = 'running' AND lease_expires_at <= ?1
             ORDER BY lease_expires_at, id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![now.0, sql_limit(max, MAX_CLAIM)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut swept = Vec::with_capacity(expired.len());
    for (id, attempt, cancel_requested) in expired {
        let status = swept_status(attempt, cancel_requested, max_attempts);
        let error = (status != RobotStatus::Cancelled).then(|| LEASE_EXPIRED.to_string());
        let not_before = (status == RobotStatus::Queued).then_some(now);
        let id = RobotId(id);
        swept.push(end_robot(
            conn,
            id,
            &EndRow::new(status, error, not_before, None, now),
        )?);
        end_execution(
            conn,
            id,
            attempt,
            ExecutionStatus::Expired,
            Some(LEASE_EXPIRED),
            now,
        )?;
    }
    Ok(swept)
}

fn cleanup(conn: &Connection, before: Timestamp, chunk: usize) -> StoreResult<u64> {
    let ids: Vec<i64> = {
        let mut statement = conn.prepare_cached(
            "SELECT id FROM robots WHERE finished_at < ?1 ORDER BY finished_at, id LIMIT ?2",
        )?;
        let rows =
            statement.query_map(params![before.0, sql_limit(chunk, MAX_CLAIM)], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for &id in &ids {
        conn.prepare_cached("DELETE FROM robot_executions WHERE robot_id = ?1")?
            .execute([id])?;
        conn.prepare_cached("DELETE FROM robots WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(ids.len() as u64)
}

fn put_module(conn: &Connection, module: &Module) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO modules (name, kind, input_schema, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET kind = excluded.kind,
             input_schema = excluded.input_schema, updated_at = excluded.updated_at",
    )?
    .execute(params![
        module.name,
        module.kind,
        module.input_schema.as_ref().map(json_text),
        module.updated_at.0
    ])?;
    Ok(())
}

fn put_instance(conn: &Connection, i: &ModuleInstance) -> StoreResult<()> {
    let known: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM modules WHERE name = ?1")?
        .query_row([&i.module], |r| r.get(0))
        .optional()?;
    if known.is_none() {
        return Err(StoreError::NotFound);
    }
    conn.prepare_cached(
        "INSERT INTO module_instances (module, name, url, weight, capacity, health, score,
             breaker, in_flight, checked_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (module, name) DO UPDATE SET url = excluded.url,
             weight = excluded.weight, capacity = excluded.capacity,
             health = excluded.health, score = excluded.score, breaker = excluded.breaker,
             in_flight = excluded.in_flight, checked_at = excluded.checked_at,
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        i.module,
        i.name,
        i.url,
        i.weight,
        i.capacity,
        i.health.as_str(),
        i.score,
        i.breaker.as_str(),
        i.in_flight,
        i.checked_at.map(|t| t.0),
        i.updated_at.0
    ])?;
    Ok(())
}

impl SqliteStore {
    /// Runs `f` as a grouped write of the writer thread and waits for the commit.
    async fn grouped<T, F>(&self, f: F) -> RobotResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> RobotResult<T> + Send + 'static,
    {
        let (job, answer) = RobotWrite::job(f);
        self.writer.submit(job).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn read<T, F>(&self, f: F) -> RobotResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        Ok(self.reads.run(f).await?)
    }
}

#[async_trait]
impl RobotRepo for SqliteStore {
    async fn create(&self, robot: &NewRobot, at: Timestamp) -> RobotResult<Created> {
        check_new(robot)?;
        let robot = robot.clone();
        self.grouped(move |c| create(c, &robot, at)).await
    }

    async fn get(&self, tenant: TenantId, id: RobotId) -> RobotResult<Robot> {
        self.read(move |c| get(c, tenant, id)).await
    }

    async fn list(&self, tenant: TenantId, filter: &RobotFilter) -> RobotResult<Vec<Robot>> {
        let filter = filter.clone();
        self.read(move |c| {
            all(
                c,
                &format!(
                    "SELECT {ROBOT_COLUMNS} FROM robots
                     WHERE tenant_id = ?1 AND id < ?2 AND (?3 IS NULL OR status = ?3)
                       AND (?4 IS NULL OR module = ?4)
                     ORDER BY id DESC LIMIT ?5"
                ),
                params![
                    tenant.0,
                    filter.before.map_or(i64::MAX, |b| b.0),
                    filter.status.map(RobotStatus::as_str),
                    filter.module,
                    sql_limit(filter.limit, MAX_PAGE),
                ],
                |r: &Row<'_>| rows::robot_from(r),
            )
        })
        .await
    }

    async fn claim(&self, request: &Claim) -> RobotResult<Vec<Robot>> {
        let request = request.clone();
        self.grouped(move |c| Ok(claim(c, &request)?)).await
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> RobotResult<Robot> {
        check_heartbeat(beat)?;
        let beat = beat.clone();
        self.grouped(move |c| heartbeat(c, &beat)).await
    }

    async fn finish(
        &self,
        robot: RobotId,
        attempt: u32,
        end: &AttemptEnd,
        now: Timestamp,
    ) -> RobotResult<Robot> {
        let end = end.clone();
        self.grouped(move |c| finish(c, robot, attempt, &end, now))
            .await
    }

    async fn cancel(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        self.grouped(move |c| cancel(c, tenant, id, now)).await
    }

    async fn retry(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        self.grouped(move |c| retry(c, tenant, id, now)).await
    }

    async fn sweep_expired(
        &self,
        now: Timestamp,
        max_attempts: u32,
        limit: usize,
    ) -> RobotResult<Vec<Robot>> {
        self.grouped(move |c| Ok(sweep_expired(c, now, max_attempts, limit)?))
            .await
    }

    async fn executions(&self, tenant: TenantId, id: RobotId) -> RobotResult<Vec<Execution>> {
        self.read(move |c| {
            get(c, tenant, id)?;
            all(
                c,
                &format!(
                    "SELECT {EXECUTION_COLUMNS} FROM robot_executions WHERE robot_id = ?1
                     ORDER BY attempt"
                ),
                [id.0],
                |r: &Row<'_>| rows::execution_from(r),
            )
        })
        .await
    }

    async fn cleanup(&self, before: Timestamp, chunk: usize) -> RobotResult<u64> {
        self.grouped(move |c| Ok(cleanup(c, before, chunk)?)).await
    }

    async fn put_module(&self, module: &Module) -> RobotResult<()> {
        check_name("name", &module.name)?;
        let module = module.clone();
        self.grouped(move |c| Ok(put_module(c, &module)?)).await
    }

    async fn module(&self, name: &str) -> RobotResult<Option<Module>> {
        let name = name.to_string();
        self.read(move |c| {
            let mut found = all(
                c,
                &format!("SELECT {MODULE_COLUMNS} FROM modules WHERE name = ?1"),
                [name],
                |r: &Row<'_>| rows::module_from(r),
            )?;
            Ok(found.pop())
        })
        .await
    }

    async fn modules(&self) -> RobotResult<Vec<Module>> {
        self.read(|c| {
            all(
                c,
                &format!("SELECT {MODULE_COLUMNS} FROM modules ORDER BY name"),
                [],
                |r: &Row<'_>| rows::module_from(r),
            )
        })
        .await
    }

    async fn put_instance(&self, instance: &ModuleInstance) -> RobotResult<()> {
        check_instance(instance)?;
        let instance = instance.clone();
        self.grouped(move |c| Ok(put_instance(c, &instance)?)).await
    }

    async fn instance(&self, module: &str, name: &str) -> RobotResult<Option<ModuleInstance>> {
        let (module, name) = (module.to_string(), name.to_string());
        self.read(move |c| {
            let mut found = all(
                c,
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM module_instances
                     WHERE module = ?1 AND name = ?2"
                ),
                [module, name],
                |r: &Row<'_>| rows::instance_from(r),
            )?;
            Ok(found.pop())
        })
        .await
    }

    async fn instances(&self, module: Option<&str>) -> RobotResult<Vec<ModuleInstance>> {
        let module = module.map(str::to_string);
        self.read(move |c| {
            all(
                c,
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM module_instances
                     WHERE ?1 IS NULL OR module = ?1 ORDER BY module, name"
                ),
                [module],
                |r: &Row<'_>| rows::instance_from(r),
            )
        })
        .await
    }
}
