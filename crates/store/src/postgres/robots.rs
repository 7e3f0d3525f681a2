//! The robots port on PostgreSQL, for several `robots` processes sharing one queue.
//!
//! A claim is ONE statement: it ranks the claimable robots in dispatch order (see
//! `crate::robots`), locks the first `limit` of them `FOR UPDATE SKIP LOCKED` (rows
//! another claimer holds are passed over, never waited for), starts their next attempt,
//! records the executions and stamps the tenants' turns. The lock re-checks the status
//! on the newest row version, so a robot another claimer just committed is not taken
//! again. Every other transition locks its robot row (`FOR UPDATE`) before the fencing
//! check, so reports of one robot are applied one at a time. The lease sweep and cleanup
//! skip locked rows too. Reads that tolerate lag (lists) go to the read pool; a robot
//! and its executions are read from the primary (a robot just created must be found).

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row, Transaction};
use vigia_core::{
    Execution, ExecutionStatus, Module, ModuleInstance, Robot, RobotId, RobotStatus, TenantId,
    Timestamp,
};

use super::error::PgResultExt;
use super::PostgresStore;
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

impl Columns for PgRow {
    fn int(&self, name: &str) -> StoreResult<Option<i64>> {
        self.try_get(name).pg()
    }
    fn text(&self, name: &str) -> StoreResult<Option<String>> {
        self.try_get(name).pg()
    }
    fn float(&self, name: &str) -> StoreResult<Option<f64>> {
        self.try_get(name).pg()
    }
}

/// Commits a transaction whose outcome is not a store error (a refusal commits its
/// record), rolls it back otherwise.
async fn settle<T>(tx: Transaction<'_, Postgres>, outcome: RobotResult<T>) -> RobotResult<T> {
    match outcome {
        Err(RobotError::Store(e)) => {
            // Dropping the transaction rolls it back; say so explicitly and keep the
            // first error.
            let _ = tx.rollback().await;
            Err(RobotError::Store(e))
        }
        outcome => {
            tx.commit().await.pg()?;
            outcome
        }
    }
}

async fn robot_row(
    conn: &mut PgConnection,
    sql: &str,
    query: impl FnOnce(
        sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
) -> StoreResult<Robot> {
    let row = query(sqlx::query(sql))
        .fetch_optional(&mut *conn)
        .await
        .pg()?
        .ok_or(StoreError::NotFound)?;
    rows::robot_from(&row)
}

async fn get(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: RobotId,
    lock: &str,
) -> StoreResult<Robot> {
    let sql = format!("SELECT {ROBOT_COLUMNS} FROM robots WHERE id = $1 AND tenant_id = $2 {lock}");
    robot_row(conn, &sql, |q| q.bind(id.0).bind(tenant.0)).await
}

async fn create(conn: &mut PgConnection, new: &NewRobot, at: Timestamp) -> RobotResult<Created> {
    let idem = new.idempotency.as_ref();
    let inserted = sqlx::query(&format!(
        "INSERT INTO robots (tenant_id, module, input, priority, status, timeout_s,
             idempotency_key, body_hash, not_before, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $8, $8)
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING {ROBOT_COLUMNS}"
    ))
    .bind(new.tenant.0)
    .bind(&new.module)
    .bind(json_text(&new.input))
    .bind(i64::from(new.priority))
    .bind(new.timeout_s.map(i64::from))
    .bind(idem.map(|i| &i.key))
    .bind(idem.map(|i| &i.body_hash))
    .bind(at.0)
    .fetch_optional(&mut *conn)
    .await
    .pg()?;
    if let Some(row) = inserted {
        return Ok(Created {
            robot: rows::robot_from(&row)?,
            created: true,
        });
    }
    // Only a key can make the insert do nothing: the original robot holds it.
    let idem =
        idem.ok_or_else(|| StoreError::Internal("an insert without a key did nothing".into()))?;
    let (hash, id): (Option<Vec<u8>>, i64) = sqlx::query_as(
        "SELECT body_hash, id FROM robots WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(new.tenant.0)
    .bind(&idem.key)
    .fetch_one(&mut *conn)
    .await
    .pg()?;
    if hash.as_deref() != Some(idem.body_hash.as_slice()) {
        return Err(RobotError::IdempotencyMismatch { robot: RobotId(id) });
    }
    Ok(Created {
        robot: get(conn, new.tenant, RobotId(id), "").await?,
        created: false,
    })
}

async fn claim(conn: &mut PgConnection, claim: &Claim) -> StoreResult<Vec<Robot>> {
    let rows = sqlx::query(&format!(
        "WITH ranked AS (
             SELECT id, tenant_id, priority,
                    row_number() OVER (PARTITION BY tenant_id, priority ORDER BY id) AS turn
             FROM robots
             WHERE status IN ('queued', 'waiting_for_module') AND not_before <= $1
         ), picked AS (
             SELECT r.id AS pick_id, ranked.turn AS pick_turn,
                    COALESCE(t.served, 0) AS pick_served
             FROM ranked
             JOIN robots AS r ON r.id = ranked.id
             LEFT JOIN robot_turns AS t ON t.tenant_id = ranked.tenant_id
             WHERE r.status IN ('queued', 'waiting_for_module') AND r.not_before <= $1
             ORDER BY ranked.priority DESC, ranked.turn, pick_served, r.id
             LIMIT $2
             FOR UPDATE OF r SKIP LOCKED
         ), claimed AS (
             UPDATE robots SET status = 'running', attempt = attempt + 1, progress = 0,
                 worker = $3, lease_expires_at = $4, last_progress_at = $1,
                 cancel_requested_at = NULL, updated_at = $1
             FROM picked WHERE robots.id = picked.pick_id
             RETURNING {ROBOT_COLUMNS}, pick_turn, pick_served
         ), executions AS (
             INSERT INTO robot_executions (robot_id, attempt, worker, status, started_at)
             SELECT id, attempt, $3, 'running', $1 FROM claimed
         ), turns AS (
             INSERT INTO robot_turns (tenant_id, served)
             SELECT DISTINCT tenant_id,
                    (SELECT COALESCE(max(served), 0) + 1 FROM robot_turns) FROM claimed
             -- In tenant order, so two claims never lock turn rows in opposite orders.
             ORDER BY tenant_id
             ON CONFLICT (tenant_id) DO UPDATE SET served = excluded.served
         )
         SELECT * FROM claimed"
    ))
    .bind(claim.now.0)
    .bind(sql_limit(claim.limit, MAX_CLAIM))
    .bind(&claim.worker)
    .bind(claim.lease_until.0)
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let turn: i64 = row.try_get("pick_turn").pg()?;
        let served: i64 = row.try_get("pick_served").pg()?;
        claimed.push((turn, served, rows::robot_from(row)?));
    }
    // RETURNING has no order: put the claims back in dispatch order.
    claimed.sort_by_key(|(turn, served, r)| (std::cmp::Reverse(r.priority), *turn, *served, r.id));
    Ok(claimed.into_iter().map(|(_, _, r)| r).collect())
}

/// Locks the robot and passes when `attempt` is its live one; a refusal is counted on
/// the reported execution (committed with the refusal).
async fn require_live(conn: &mut PgConnection, id: RobotId, attempt: u32) -> RobotResult<()> {
    let (status, live): (String, i64) =
        sqlx::query_as("SELECT status, attempt FROM robots WHERE id = $1 FOR UPDATE")
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await
            .pg()?
            .ok_or(StoreError::NotFound)?;
    let status = RobotStatus::parse(&status)
        .ok_or_else(|| StoreError::Internal(format!("robot {id} has status `{status}`")))?;
    let live = u32::try_from(live)
        .map_err(|_| StoreError::Internal(format!("robot {id} has attempt {live}")))?;
    let verdict = fence(status, live, attempt);
    if let Err(refusal) = &verdict {
        if records_stale(refusal) {
            sqlx::query(
                "UPDATE robot_executions SET stale_reports = stale_reports + 1
                 WHERE robot_id = $1 AND attempt = $2",
            )
            .bind(id.0)
            .bind(i64::from(attempt))
            .execute(&mut *conn)
            .await
            .pg()?;
        }
    }
    verdict
}

async fn heartbeat(conn: &mut PgConnection, beat: &Heartbeat) -> RobotResult<Robot> {
    require_live(conn, beat.robot, beat.attempt).await?;
    let sql = format!(
        "UPDATE robots SET
             lease_expires_at = GREATEST(COALESCE(lease_expires_at, $1), $1),
             progress = COALESCE($2, progress),
             last_progress_at = CASE WHEN $2::bigint IS NULL THEN last_progress_at
                                     ELSE GREATEST(COALESCE(last_progress_at, $3), $3) END,
             step = COALESCE($4, step),
             updated_at = $3
         WHERE id = $5 RETURNING {ROBOT_COLUMNS}"
    );
    Ok(robot_row(conn, &sql, |q| {
        q.bind(beat.lease_until.0)
            .bind(beat.progress.map(i64::from))
            .bind(beat.now.0)
            .bind(beat.step.as_deref().map(|s| truncate(s, MAX_STEP_CHARS)))
            .bind(beat.robot.0)
    })
    .await?)
}

async fn end_robot(conn: &mut PgConnection, id: RobotId, end: &EndRow) -> StoreResult<Robot> {
    let sql = format!(
        "UPDATE robots SET status = $1, error = COALESCE($2, error),
             not_before = COALESCE($3, not_before), finished_at = $4,
             result = COALESCE($5, result),
             progress = CASE WHEN $5::text IS NULL THEN progress ELSE 100 END,
             worker = NULL, lease_expires_at = NULL, cancel_requested_at = NULL,
             updated_at = $6
         WHERE id = $7 RETURNING {ROBOT_COLUMNS}"
    );
    robot_row(conn, &sql, |q| {
        q.bind(end.status)
            .bind(end.error.clone())
            .bind(end.not_before)
            .bind(end.finished_at)
            .bind(end.result.clone())
            .bind(end.now)
            .bind(id.0)
    })
    .await
}

async fn end_execution(
    conn: &mut PgConnection,
    id: RobotId,
    attempt: u32,
    status: ExecutionStatus,
    error: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE robot_executions SET status = $1, ended_at = $2, error = $3
         WHERE robot_id = $4 AND attempt = $5",
    )
    .bind(status.as_str())
    .bind(now.0)
    .bind(error)
    .bind(id.0)
    .bind(i64::from(attempt))
    .execute(&mut *conn)
    .await
    .pg()?;
    Ok(())
}

async fn finish(
    conn: &mut PgConnection,
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
    conn: &mut PgConnection,
    tenant: TenantId,
    id: RobotId,
    now: Timestamp,
) -> RobotResult<Robot> {
    let robot = get(conn, tenant, id, "FOR UPDATE").await?;
    match robot.status {
        status if status.is_terminal() => Err(RobotError::Finished { status }),
        RobotStatus::Running => {
            let sql = format!(
                "UPDATE robots SET cancel_requested_at = COALESCE(cancel_requested_at, $1),
                     updated_at = $1
                 WHERE id = $2 RETURNING {ROBOT_COLUMNS}"
            );
            Ok(robot_row(conn, &sql, |q| q.bind(now.0).bind(id.0)).await?)
        }
        _ => {
            let row = EndRow::new(RobotStatus::Cancelled, None, None, None, now);
            Ok(end_robot(conn, id, &row).await?)
        }
    }
}

async fn retry(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: RobotId,
    now: Timestamp,
) -> RobotResult<Robot> {
    let robot = get(conn, tenant, id, "FOR UPDATE").await?;
    if robot.status != RobotStatus::Dead {
        return Err(RobotError::NotDead {
            status: robot.status,
        });
    }
    let sql = format!(
        "UPDATE robots SET status = 'queued', not_before = $1, finished_at = NULL,
             updated_at = $1
         WHERE id = $2 RETURNING {ROBOT_COLUMNS}"
    );
    Ok(robot_row(conn, &sql, |q| q.bind(now.0).bind(id.0)).await?)
}

async fn sweep_expired(
    conn: &mut PgConnection,
    now: Timestamp,
    max_attempts: u32,
    max: usize,
) -> StoreResult<Vec<Robot>> {
    let expired: Vec<(i64, i64, bool)> = sqlx::query_as(
        "SELECT id, attempt, cancel_requested_at IS NOT NULL FROM robots
         WHERE status = 'running' AND lease_expires_at <= $1
         ORDER BY lease_expires_at, id LIMIT $2
         FOR UPDATE SKIP LOCKED",
    )
    .bind(now.0)
    .bind(sql_limit(max, MAX_CLAIM))
    .fetch_all(&mut *conn)
    .await
    .pg()?;
    let mut swept = Vec::with_capacity(expired.len());
    for (id, attempt, cancel_requested) in expired {
        let attempt = u32::try_from(attempt)
            .map_err(|_| StoreError::Internal(format!("robot {id} has attempt {attempt}")))?;
        let status = swept_status(attempt, cancel_requested, max_attempts);
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
impl RobotRepo for PostgresStore {
    async fn create(&self, robot: &NewRobot, at: Timestamp) -> RobotResult<Created> {
        check_new(robot)?;
        let mut tx = self.write.begin().await.pg()?;
        let outcome = create(&mut tx, robot, at).await;
        settle(tx, outcome).await
    }

    async fn get(&self, tenant: TenantId, id: RobotId) -> RobotResult<Robot> {
        Ok(get(&mut *self.primary().await?, tenant, id, "").await?)
    }

    async fn list(&self, tenant: TenantId, filter: &RobotFilter) -> RobotResult<Vec<Robot>> {
        let rows = sqlx::query(&format!(
            "SELECT {ROBOT_COLUMNS} FROM robots
             WHERE tenant_id = $1 AND id < $2 AND ($3::text IS NULL OR status = $3)
               AND ($4::text IS NULL OR module = $4)
             ORDER BY id DESC LIMIT $5"
        ))
        .bind(tenant.0)
        .bind(filter.before.map_or(i64::MAX, |b| b.0))
        .bind(filter.status.map(RobotStatus::as_str))
        .bind(filter.module.as_deref())
        .bind(sql_limit(filter.limit, MAX_PAGE))
        .fetch_all(&mut *self.replica().await?)
        .await
        .pg()?;
        Ok(rows
            .iter()
            .map(rows::robot_from)
            .collect::<StoreResult<_>>()?)
    }

    async fn claim(&self, request: &Claim) -> RobotResult<Vec<Robot>> {
        if request.limit == 0 {
            return Ok(Vec::new());
        }
        // One statement: its own transaction.
        Ok(claim(&mut *self.primary().await?, request).await?)
    }

    async fn heartbeat(&self, beat: &Heartbeat) -> RobotResult<Robot> {
        check_heartbeat(beat)?;
        let mut tx = self.write.begin().await.pg()?;
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
        let mut tx = self.write.begin().await.pg()?;
        let outcome = finish(&mut tx, robot, attempt, end, now).await;
        settle(tx, outcome).await
    }

    async fn cancel(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        let mut tx = self.write.begin().await.pg()?;
        let outcome = cancel(&mut tx, tenant, id, now).await;
        settle(tx, outcome).await
    }

    async fn retry(&self, tenant: TenantId, id: RobotId, now: Timestamp) -> RobotResult<Robot> {
        let mut tx = self.write.begin().await.pg()?;
        let outcome = retry(&mut tx, tenant, id, now).await;
        settle(tx, outcome).await
    }

    async fn sweep_expired(
        &self,
        now: Timestamp,
        max_attempts: u32,
        limit: usize,
    ) -> RobotResult<Vec<Robot>> {
        let mut tx = self.write.begin().await.pg()?;
        let outcome = sweep_expired(&mut tx, now, max_attempts, limit)
            .await
            .map_err(RobotError::from);
        settle(tx, outcome).await
    }

    async fn executions(&self, tenant: TenantId, id: RobotId) -> RobotResult<Vec<Execution>> {
        let mut conn = self.primary().await?;
        get(&mut conn, tenant, id, "").await?;
        let rows = sqlx::query(&format!(
            "SELECT {EXECUTION_COLUMNS} FROM robot_executions WHERE robot_id = $1 ORDER BY attempt"
        ))
        .bind(id.0)
        .fetch_all(&mut *conn)
        .await
        .pg()?;
        Ok(rows
            .iter()
            .map(rows::execution_from)
            .collect::<StoreResult<_>>()?)
    }

    async fn cleanup(&self, before: Timestamp, chunk: usize) -> RobotResult<u64> {
        // Executions go with their robot (ON DELETE CASCADE).
        let done = sqlx::query(
            "DELETE FROM robots WHERE id IN (
                 SELECT id FROM robots WHERE finished_at < $1
                 ORDER BY finished_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before.0)
        .bind(sql_limit(chunk, MAX_CLAIM))
        .execute(&mut *self.primary().await?)
        .await
        .pg()?;
        Ok(done.rows_affected())
    }

    async fn put_module(&self, module: &Module) -> RobotResult<()> {
        check_name("name", &module.name)?;
        sqlx::query(
            "INSERT INTO modules (name, kind, input_schema, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind,
                 input_schema = excluded.input_schema, updated_at = excluded.updated_at",
        )
        .bind(&module.name)
        .bind(&module.kind)
        .bind(module.input_schema.as_ref().map(json_text))
        .bind(module.updated_at.0)
        .execute(&mut *self.primary().await?)
        .await
        .pg()?;
        Ok(())
    }

    async fn module(&self, name: &str) -> RobotResult<Option<Module>> {
        let row = sqlx::query(&format!(
            "SELECT {MODULE_COLUMNS} FROM modules WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&mut *self.primary().await?)
        .await
        .pg()?;
        Ok(row.as_ref().map(rows::module_from).transpose()?)
    }

    async fn modules(&self) -> RobotResult<Vec<Module>> {
        let rows = sqlx::query(&format!(
            "SELECT {MODULE_COLUMNS} FROM modules ORDER BY name"
        ))
        .fetch_all(&mut *self.replica().await?)
        .await
        .pg()?;
        Ok(rows
            .iter()
            .map(rows::module_from)
            .collect::<StoreResult<_>>()?)
    }

    async fn put_instance(&self, i: &ModuleInstance) -> RobotResult<()> {
        check_instance(i)?;
        let done = sqlx::query(
            "INSERT INTO module_instances (module, name, url, weight, capacity, health, score,
                 breaker, in_flight, checked_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
             WHERE EXISTS (SELECT 1 FROM modules WHERE name = $1)
             ON CONFLICT (module, name) DO UPDATE SET url = excluded.url,
                 weight = excluded.weight, capacity = excluded.capacity,
                 health = excluded.health, score = excluded.score, breaker = excluded.breaker,
                 in_flight = excluded.in_flight, checked_at = excluded.checked_at,
                 updated_at = excluded.updated_at",
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
        .execute(&mut *self.primary().await?)
        .await
        .pg()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound.into());
        }
        Ok(())
    }

    async fn instance(&self, module: &str, name: &str) -> RobotResult<Option<ModuleInstance>> {
        let row = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM module_instances WHERE module = $1 AND name = $2"
        ))
        .bind(module)
        .bind(name)
        .fetch_optional(&mut *self.primary().await?)
        .await
        .pg()?;
        Ok(row.as_ref().map(rows::instance_from).transpose()?)
    }

    async fn instances(&self, module: Option<&str>) -> RobotResult<Vec<ModuleInstance>> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM module_instances
             WHERE $1::text IS NULL OR module = $1 ORDER BY module, name"
        ))
        .bind(module)
        .fetch_all(&mut *self.replica().await?)
        .await
        .pg()?;
        Ok(rows
            .iter()
            .map(rows::instance_from)
            .collect::<StoreResult<_>>()?)
    }
}
