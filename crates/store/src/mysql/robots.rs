//! The robots port on MariaDB (10.6+ for `SKIP LOCKED`), for several `robots` processes
//! sharing one queue.
//!
//! A claim is one transaction in two steps. First a plain (non-locking, READ COMMITTED)
//! read ranks the claimable robots in dispatch order (see `crate::robots`) and keeps a
//! few more candidates than asked. Then those candidates are locked by primary key with
//! `FOR UPDATE SKIP LOCKED`, re-checking that they are still claimable on the newest
//! committed version, and the first `limit` of them in dispatch order are claimed.
//! Locking by primary key matters on InnoDB: a locking read with `ORDER BY … LIMIT`
//! locks every row it sorts, so one claimer would hide the whole queue from the others.
//! The turns are stamped in tenant order, so two claims never wait on each other in
//! opposite orders. Every other transition locks its robot row (`FOR UPDATE`) before the
//! fencing check. MariaDB has no `UPDATE … RETURNING`: a changed robot is read back in
//! its transaction.

use async_trait::async_trait;
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{MySql, MySqlConnection, Row, Transaction};
use vigia_core::{
    Execution, ExecutionStatus, Module, ModuleInstance, Robot, RobotId, RobotStatus, TenantId,
    Timestamp,
};

use super::error::{error_number, MyResultExt, DUPLICATE_ENTRY};
use super::queries::placeholders;
use super::MysqlStore;
use crate::robots::rows::{
    self, json_text, Columns, EndRow, EXECUTION_COLUMNS, INSTANCE_COLUMNS, MODULE_COLUMNS,
    ROBOT_COLUMNS,
};
use crate::robots::{
    capped, check_heartbeat, check_instance, check_name, check_new, fence, records_stale,
    sql_limit, swept_status, truncate, LEASE_EXPIRED, MAX_CLAIM, MAX_PAGE, MAX_STEP_CHARS,
};
use crate::{
    AttemptEnd, Claim, Created, Heartbeat, NewRobot, RobotError, RobotFilter, RobotRepo,
    RobotResult, StoreError, StoreResult,
};

/// Candidates read beyond the claim's limit, for those another claimer locks meanwhile.
const EXTRA_CANDIDATES: usize = 16;

impl Columns for MySqlRow {
    fn int(&self, name: &str) -> StoreResult<Option<i64>> {
        self.try_get(name).my()
    }
    /// Text columns of binary collation decode as bytes only (see `queries.rs`).
    fn text(&self, name: &str) -> StoreResult<Option<String>> {
        let bytes: Option<Vec<u8>> = self.try_get(name).my()?;
        bytes.map(utf8).transpose()
    }
    fn float(&self, name: &str) -> StoreResult<Option<f64>> {
        self.try_get(name).my()
    }
}

/// Commits a transaction whose outcome is not a store error (a refusal commits its
/// record), rolls it back otherwise.
async fn settle<T>(tx: Transaction<'_, MySql>, outcome: RobotResult<T>) -> RobotResult<T> {
    match outcome {
        Err(RobotError::Store(e)) => {
            let _ = tx.rollback().await;
            Err(RobotError::Store(e))
        }
        outcome => {
            tx.commit().await.my()?;
            outcome
        }
    }
}

fn utf8(bytes: Vec<u8>) -> StoreResult<String> {
    String::from_utf8(bytes)
        .map_err(|_| StoreError::Internal("a robots table holds text that is not UTF-8".into()))
}

async fn get(
    conn: &mut MySqlConnection,
    tenant: Option<TenantId>,
    id: RobotId,
    lock: &str,
) -> StoreResult<Robot> {
    let sql = format!(
        "SELECT {ROBOT_COLUMNS} FROM robots WHERE id = ? AND (? IS NULL OR tenant_id = ?) {lock}"
    );
    let tenant = tenant.map(|t| t.0);
    let row = sqlx::query(&sql)
        .bind(id.0)
        .bind(tenant)
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await
        .my()?
        .ok_or(StoreError::NotFound)?;
    rows::robot_from(&row)
}

/// Runs an UPDATE of robot `id` and reads the robot back.
async fn update_robot<'q>(
    conn: &mut MySqlConnection,
    query: Query<'q, MySql, MySqlArguments>,
    id: RobotId,
) -> StoreResult<Robot> {
    query.execute(&mut *conn).await.my()?;
    get(conn, None, id, "").await
}

async fn create(conn: &mut MySqlConnection, new: &NewRobot, at: Timestamp) -> RobotResult<Created> {
    let idem = new.idempotency.as_ref();
    let inserted = sqlx::query(
        "INSERT INTO robots (tenant_id, module, input, priority, status, timeout_s,
             idempotency_key, body_hash, not_before, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.tenant.0)
    .bind(&new.module)
    .bind(json_text(&new.input))
    .bind(i64::from(new.priority))
    .bind(new.timeout_s.map(i64::from))
    .bind(idem.map(|i| &i.key))
    .bind(idem.map(|i| &i.body_hash))
    .bind(at.0)
    .bind(at.0)
    .bind(at.0)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(done) => {
            let id = i64::try_from(done.last_insert_id())
                .map_err(|_| StoreError::Internal("robot id out of range".into()))?;
            Ok(Created {
                robot: get(conn, None, RobotId(id), "").await?,
                created: true,
            })
        }
        Err(e) if error_number(&e) == Some(DUPLICATE_ENTRY) && idem.is_some() => {
            let idem = idem.expect("checked in the guard");
            let (hash, id): (Option<Vec<u8>>, i64) = sqlx::query_as(
                "SELECT body_hash, id FROM robots WHERE tenant_id = ? AND idempotency_key = ?",
            )
            .bind(new.tenant.0)
            .bind(&idem.key)
            .fetch_one(&mut *conn)
            .await
            .my()?;
            if hash.as_deref() != Some(idem.body_hash.as_slice()) {
                return Err(RobotError::IdempotencyMismatch { robot: RobotId(id) });
            }
            Ok(Created {
                robot: get(conn, Some(new.tenant), RobotId(id), "").await?,
                created: false,
            })
        }
        Err(e) => Err(e).my().map_err(RobotError::from),
    }
}

async fn claim(conn: &mut MySqlConnection, claim: &Claim) -> StoreResult<Vec<Robot>> {
    let wanted = capped(claim.limit, MAX_CLAIM);
    let candidates: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT ranked.id, ranked.tenant_id FROM (
             SELECT id, tenant_id, priority,
                    ROW_NUMBER() OVER (PARTITION BY tenant_id, priority ORDER BY id) AS turn
             FROM robots
             WHERE status IN ('queued', 'waiting_for_module') AND not_before <= ?
         ) AS ranked LEFT JOIN robot_turns AS t ON t.tenant_id = ranked.tenant_id
         ORDER BY ranked.priority DESC, ranked.turn, COALESCE(t.served, 0), ranked.id
         LIMIT ?",
    )
    .bind(claim.now.0)
    .bind(sql_limit(wanted + EXTRA_CANDIDATES, usize::MAX))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT id FROM robots
         WHERE id IN ({}) AND status IN ('queued', 'waiting_for_module') AND not_before <= ?
         FOR UPDATE SKIP LOCKED",
        placeholders(candidates.len())
    );
    let mut lock = sqlx::query_scalar::<_, i64>(&sql);
    for (id, _) in &candidates {
        lock = lock.bind(id);
    }
    let locked: Vec<i64> = lock.bind(claim.now.0).fetch_all(&mut *conn).await.my()?;
    let picked: Vec<(i64, i64)> = candidates
        .into_iter()
        .filter(|(id, _)| locked.contains(id))
        .take(wanted)
        .collect();
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let ids = placeholders(picked.len());
    let sql = format!(
        "UPDATE robots SET status = 'running', attempt = attempt + 1, progress = 0,
             worker = ?, lease_expires_at = ?, last_progress_at = ?,
             cancel_requested_at = NULL, updated_at = ?
         WHERE id IN ({ids})"
    );
    let mut update = sqlx::query(&sql)
        .bind(&claim.worker)
        .bind(claim.lease_until.0)
        .bind(claim.now.0)
        .bind(claim.now.0);
    for (id, _) in &picked {
        update = update.bind(id);
    }
    update.execute(&mut *conn).await.my()?;
    let sql = format!(
        "INSERT INTO robot_executions (robot_id, attempt, worker, status, started_at)
         SELECT id, attempt, ?, 'running', ? FROM robots WHERE id IN ({ids})"
    );
    let mut executions = sqlx::query(&sql).bind(&claim.worker).bind(claim.now.0);
    for (id, _) in &picked {
        executions = executions.bind(id);
    }
    executions.execute(&mut *conn).await.my()?;
    let served: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(MAX(served), 0) + 1 AS SIGNED) FROM robot_turns")
            .fetch_one(&mut *conn)
            .await
            .my()?;
    let mut tenants: Vec<i64> = picked.iter().map(|&(_, tenant)| tenant).collect();
    tenants.sort_unstable();
    tenants.dedup();
    let sql = format!(
        "INSERT INTO robot_turns (tenant_id, served) VALUES {}
         ON DUPLICATE KEY UPDATE served = VALUES(served)",
        vec!["(?, ?)"; tenants.len()].join(", ")
    );
    let mut turns = sqlx::query(&sql);
    for tenant in &tenants {
        turns = turns.bind(tenant).bind(served);
    }
    turns.execute(&mut *conn).await.my()?;
    let sql = format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE id IN ({ids})");
    let mut read = sqlx::query(&sql);
    for (id, _) in &picked {
        read = read.bind(id);
    }
    let rows = read.fetch_all(&mut *conn).await.my()?;
    let mut robots: Vec<Robot> = rows
        .iter()
        .map(rows::robot_from)
        .collect::<StoreResult<_>>()?;
    // Back in dispatch order (the candidates' order).
    robots.sort_by_key(|r| picked.iter().position(|&(id, _)| id == r.id.0));
    Ok(robots)
}

/// Locks the robot and passes when `attempt` is its live one; a refusal is counted on
/// the reported execution (committed with the refusal).
async fn require_live(conn: &mut MySqlConnection, id: RobotId, attempt: u32) -> RobotResult<()> {
    let (status, live): (Vec<u8>, i64) =
        sqlx::query_as("SELECT status, attempt FROM robots WHERE id = ? FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await
            .my()?
            .ok_or(StoreError::NotFound)?;
    let status = utf8(status)?;
    let status = RobotStatus::parse(&status)
        .ok_or_else(|| StoreError::Internal(format!("robot {id} has status `{status}`")))?;
    let live = u32::try_from(live)
        .map_err(|_| StoreError::Internal(format!("robot {id} has attempt {live}")))?;
    let verdict = fence(status, live, attempt);
    if let Err(refusal) = &verdict {
        if records_stale(refusal) {
            sqlx::query(
                "UPDATE robot_executions SET stale_reports = stale_reports + 1
                 WHERE robot_id = ? AND attempt = ?",
            )
            .bind(id.0)
            .bind(i64::from(attempt))
            .execute(&mut *conn)
            .await
            .my()?;
        }
    }
    verdict
}

async fn heartbeat(conn: &mut MySqlConnection, beat: &Heartbeat) -> RobotResult<Robot> {
    require_live(conn, beat.robot, beat.attempt).await?;
    let progress = beat.progress.map(i64::from);
    let query = sqlx::query(
        "UPDATE robots SET
             lease_expires_at = GREATEST(COALESCE(lease_expires_at, ?), ?),
             last_progress_at = CASE WHEN ? IS NULL THEN last_progress_at
                                     ELSE GREATEST(COALESCE(last_progress_at, ?), ?) END,
             progress = COALESCE(?, progress),
             step = COALESCE(?, step),
             updated_at = ?
         WHERE id = ?",
    )
    .bind(beat.lease_until.0)
    .bind(beat.lease_until.0)
    .bind(progress)
    .bind(beat.now.0)
    .bind(beat.now.0)
    .bind(progress)
    .bind(beat.step.as_deref().map(|s| truncate(s, MAX_STEP_CHARS)))
    .bind(beat.now.0)
    .bind(beat.robot.0);
    Ok(update_robot(conn, query, beat.robot).await?)
}

async fn end_robot(conn: &mut MySqlConnection, id: RobotId, end: &EndRow) -> StoreResult<Robot> {
    // MariaDB applies SET assignments left to right, later ones reading earlier ones'
    // new values: every CASE here reads a parameter, never a column this SET changes.
    let query = sqlx::query(
        "UPDATE robots SET
             progress = CASE WHEN ? IS NULL THEN progress ELSE 100 END,
             status = ?, error = COALESCE(?, error),
             not_before = COALESCE(?, not_before), finished_at = ?,
             result = COALESCE(?, result),
             worker = NULL, lease_expires_at = NULL, cancel_requested_at = NULL,
             updated_at = ?
         WHERE id = ?",
    )
    .bind(end.result.clone())
    .bind(end.status)
    .bind(end.error.clone())
    .bind(end.not_before)
    .bind(end.finished_at)
    .bind(end.result.clone())
    .bind(end.now)
    .bind(id.0);
    update_robot(conn, query, id).await
}

async fn end_execution(
    conn: &mut MySqlConnection,
    id: RobotId,
    attempt: u32,
    status: ExecutionStatus,
    error: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE robot_executions SET status = ?, ended_at = ?, error = ?
         WHERE robot_id = ? AND attempt = ?",
    )
    .bind(status.as_str())
    .bind(now.0)
    .bind(error)
    .bind(id.0)
    .bind(i64::from(attempt))
    .execute(&mut *conn)
    .await
    .my()?;
    Ok(())
}

async fn finish(
    conn: &mut MySqlConnection,
    id: RobotId,
    attempt: u32,
    end: &AttemptEnd,
    now: Timestamp,
) -> RobotResult<Robot> {
    require_live(conn, id, attempt).await?;
    let (status, execution) = end.statuses();
    let error = end.error();
    let row = EndRow::new(status, error.clone(), end.not_before(), end.result(), now);
    let robot = end_robot(conn, id, &row).await?;
    end_execution(conn, id, attempt, execution, error.as_deref(), now).await?;
    Ok(robot)
}

async fn cancel(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    id: RobotId,
    now: Timestamp,
) -> RobotResult<Robot> {
    let robot = get(conn, Some(tenant), id, "FOR UPDATE").await?;
    match robot.status {
        status if status.is_terminal() => Err(RobotError::Finished { status }),
        RobotStatus::Running => {
            let query = sqlx::query(
                "UPDATE robots SET cancel_requested_at = COALESCE(cancel_requested_at, ?),
                     updated_at = ?
                 WHERE id = ?",
            )
            .bind(now.0)
            .bind(now.0)
            .bind(id.0);
            Ok(update_robot(conn, query, id).await?)
        }
        _ => {
            let row = EndRow::new(RobotStatus::Cancelled, None, None, None, now);
            Ok(end_robot(conn, id, &row).await?)
        }
    }
}

async fn retry(
    conn: &mut MySqlConnection,
    tenant: TenantId,
    id: RobotId,
    now: Timestamp,
) -> RobotResult<Robot> {
    let robot = get(conn, Some(tenant), id, "FOR UPDATE").await?;
    if robot.status != RobotStatus::Dead {
        return Err(RobotError::NotDead {
            status: robot.status,
        });
    }
    let query = sqlx::query(
        "UPDATE robots SET status = 'queued', not_before = ?, finished_at = NULL, updated_at = ?
         WHERE id = ?",
    )
    .bind(now.0)
    .bind(now.0)
    .bind(id.0);
    Ok(update_robot(conn, query, id).await?)
}

async fn sweep_expired(
    conn: &mut MySqlConnection,
    now: Timestamp,
    max_attempts: u32,
    max: usize,
) -> StoreResult<Vec<Robot>> {
    let expired: Vec<(i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, attempt, cancel_requested_at FROM robots
         WHERE status = 'running' AND lease_expires_at <= ?
         ORDER BY lease_expires_at, id LIMIT ?
         FOR UPDATE SKIP LOCKED",
    )
    .bind(now.0)
    .bind(sql_limit(max, MAX_CLAIM))
    .fetch_all(&mut *conn)
    .await
    .my()?;
    let mut swept = Vec::with_capacity(expired.len());
    for (id, attempt, cancel_requested_at) in expired {
        let attempt = u32::try_from(attempt)
            .map_err(|_| StoreError::Internal(format!("robot {id} has attempt {attempt}")))?;
        let status = swept_status(attempt, cancel_requested_at.is_some(), max_attempts);
        let error = (status != RobotStatus::Cancelled).then(|| LEASE_EXPIRED.to_string());
        let not_before = (status == RobotStatus::Queued).then_some(now);
        let id = RobotId(id);
        let row = EndRow::new(status, error, not_before, None, now);
        swept.push(end_robot(conn, id, &row).await?);
        let expired = ExecutionStatus::Expired;
        end_execution(conn, id, attempt, expired, Some(LEASE_EXPIRED), now).await?;
    }
    Ok(swept)
}

#[async_trait]
impl RobotRepo for MysqlStore {
    async fn create(&self, robot: &NewRobot, at: Timestamp) -> RobotResult<Created> {
        check_new(robot)?;
        let mut tx = self.write.begin().await.my()?;
        let outcome = create(&mut tx, robot, at).await;
        settle(tx, outcome).await
    }

    async fn get(&self, tenant: TenantId, id: RobotId) -> RobotResult<Robot> {
        Ok(get(&mut *self.primary().await?, Some(tenant), id, "").await?)
    }

    async fn list(&self, tenant: TenantId, filter: &RobotFilter) -> RobotResult<Vec<Robot>> {
        let status = filter.status.map(RobotStatus::as_str);
        let module = filter.module.as_deref();
        let rows = sqlx::query(&format!(
            "SELECT {ROBOT_COLUMNS} FROM robots
             WHERE tenant_id = ? AND id < ? AND (? IS NULL OR status = ?)
               AND (? IS NULL OR module = ?)
             ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant.0)
        .bind(filter.before.map_or(i64::MAX, |b| b.0))
        .bind(status)
        .bind(status)
        .bind(module)
        .bind(module)
        .bind(sql_limit(filter.limit, MAX_PAGE))
        .fetch_all(&mut *self.replica().await?)
        .await
        .my()?;
        Ok(rows
            .iter()
            .map(rows::robot_from)
            .collect::<StoreResult<_>>()?)
    }

    async fn claim(&self, request: &Claim) -> RobotResult<Vec<Robot>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.write.begin().await.my()?;
        let outcome = claim(&mut tx, request).await.map_err(RobotError::from);
        settle(tx, outcome).await
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> RobotResult<Robot> {
        check_heartbeat(beat)?;
        let mut tx = self.write.begin().await.my()?;
        let outcome = heartbeat(&mut tx, beat).await;
        settle(tx, outcome).await
    }

    async fn finish(
        &self,
        robot: RobotId,
        attempt: u32,
        end: &AttemptEnd,
        now: Timestamp,
    ) -> RobotResult<Robot> {
        let mut tx = self.write.begin().await.my()?;
        let outcome = finish(&mut tx, robot, attempt, end, now).await;
        settle(tx, outcome).await
    }

    async fn cancel(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        let mut tx = self.write.begin().await.my()?;
        let outcome = cancel(&mut tx, tenant, id, now).await;
        settle(tx, outcome).await
    }

    async fn retry(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        let mut tx = self.write.begin().await.my()?;
        let outcome = retry(&mut tx, tenant, id, now).await;
        settle(tx, outcome).await
    }

    async fn sweep_expired(
        &self,
        now: Timestamp,
        max_attempts: u32,
        limit: usize,
    ) -> RobotResult<Vec<Robot>> {
        let mut tx = self.write.begin().await.my()?;
        let outcome = sweep_expired(&mut tx, now, max_attempts, limit)
            .await
            .map_err(RobotError::from);
        settle(tx, outcome).await
    }

    async fn executions(&self, tenant: TenantId, id: RobotId) -> RobotResult<Vec<Execution>> {
        let mut conn = self.primary().await?;
        get(&mut conn, Some(tenant), id, "").await?;
        let rows = sqlx::query(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM robot_executions WHERE robot_id = ? ORDER BY attempt"
        ))
        .bind(id.0)
        .fetch_all(&mut *conn)
        .await
        .my()?;
        Ok(rows
            .iter()
            .map(rows::execution_from)
            .collect::<StoreResult<_>>()?)
    }

    async fn cleanup(&self, before: Timestamp, chunk: usize) -> RobotResult<u64> {
        // Executions go with their robot (ON DELETE CASCADE). MariaDB refuses LIMIT in an
        // IN subquery, and a multi-table DELETE takes no LIMIT: DELETE … ORDER BY … LIMIT.
        let done = sqlx::query(
            "DELETE FROM robots WHERE finished_at < ? ORDER BY finished_at, id LIMIT ?",
        )
        .bind(before.0)
        .bind(sql_limit(chunk, MAX_CLAIM))
        .execute(&mut *self.primary().await?)
        .await
        .my()?;
        Ok(done.rows_affected())
    }

    async fn put_module(&self, module: &Module) -> RobotResult<()> {
        check_name("name", &module.name)?;
        sqlx::query(
            "INSERT INTO modules (name, kind, input_schema, updated_at) VALUES (?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE kind = VALUES(kind), input_schema = VALUES(input_schema),
                 updated_at = VALUES(updated_at)",
        )
        .bind(&module.name)
        .bind(&module.kind)
        .bind(module.input_schema.as_ref().map(json_text))
        .bind(module.updated_at.0)
        .execute(&mut *self.primary().await?)
        .await
        .my()?;
        Ok(())
    }

    async fn module(&self, name: &str) -> RobotResult<Option<Module>> {
        let row = sqlx::query(&format!(
            "SELECT {MODULE_COLUMNS} FROM modules WHERE name = ?"
        ))
        .bind(name)
        .fetch_optional(&mut *self.primary().await?)
        .await
        .my()?;
        Ok(row.as_ref().map(rows::module_from).transpose()?)
    }

    async fn modules(&self) -> RobotResult<Vec<Module>> {
        let rows = sqlx::query(&format!(
            "SELECT {MODULE_COLUMNS} FROM modules ORDER BY name"
        ))
        .fetch_all(&mut *self.replica().await?)
        .await
        .my()?;
        Ok(rows
            .iter()
            .map(rows::module_from)
            .collect::<StoreResult<_>>()?)
    }

    async fn put_instance(&self, i: &ModuleInstance) -> RobotResult<()> {
        check_instance(i)?;
        let mut conn = self.primary().await?;
        let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM modules WHERE name = ?")
            .bind(&i.module)
            .fetch_optional(&mut *conn)
            .await
            .my()?;
        if known.is_none() {
            return Err(StoreError::NotFound.into());
        }
        sqlx::query(
            "INSERT INTO module_instances (module, name, url, weight, capacity, health, score,
                 breaker, in_flight, checked_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON DUPLICATE KEY UPDATE url = VALUES(url), weight = VALUES(weight),
                 capacity = VALUES(capacity), health = VALUES(health), score = VALUES(score),
                 breaker = VALUES(breaker), in_flight = VALUES(in_flight),
                 checked_at = VALUES(checked_at), updated_at = VALUES(updated_at)",
        )
        .bind(&i.module)
        .bind(&i.name)
        .bind(i.url.as_deref())
        .bind(i.weight)
        .bind(i64::from(i.capacity))
        .bind(i.health.as_str())
        .bind(i.score)
        .bind(i.breaker.as_str())
        .bind(i64::from(i.in_flight))
        .bind(i.checked_at.map(|t| t.0))
        .bind(i.updated_at.0)
        .execute(&mut *conn)
        .await
        .map_err(|e| match e {
            // The module went away between the check and the insert.
            e if super::error::error_number(&e) == Some(FOREIGN_KEY_MISSING) => {
                StoreError::NotFound
            }
            e => super::error::store_error(e),
        })?;
        Ok(())
    }

    async fn instance(&self, module: &str, name: &str) -> RobotResult<Option<ModuleInstance>> {
        let row = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM module_instances WHERE module = ? AND name = ?"
        ))
        .bind(module)
        .bind(name)
        .fetch_optional(&mut *self.primary().await?)
        .await
        .my()?;
        Ok(row.as_ref().map(rows::instance_from).transpose()?)
    }

    async fn instances(&self, module: Option<&str>) -> RobotResult<Vec<ModuleInstance>> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM module_instances
             WHERE ? IS NULL OR module = ? ORDER BY module, name"
        ))
        .bind(module)
        .bind(module)
        .fetch_all(&mut *self.replica().await?)
        .await
        .my()?;
        Ok(rows
            .iter()
            .map(rows::instance_from)
            .collect::<StoreResult<_>>()?)
    }
}

/// ER_NO_REFERENCED_ROW_2: a foreign key names a missing row.
const FOREIGN_KEY_MISSING: u16 = 1452;
