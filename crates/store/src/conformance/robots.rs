//! Conformance checks for the robots port: creates (idempotent, tenant-scoped), the
//! claim order and its exclusivity under racing claimers, leases, fencing, retries,
//! cancels, paging, cleanup, modules and instances.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::json;
use vigia_core::{
    BreakerPosition, ExecutionStatus, InstanceHealth, Module, ModuleInstance, Robot, RobotId,
    RobotStatus, TenantId, Timestamp,
};

use super::{assert_not_found, T0};
use crate::robots::{MAX_IDEMPOTENCY_KEY_CHARS, MAX_STEP_CHARS};
use crate::{
    AttemptEnd, Claim, Heartbeat, Idempotency, NewRobot, RobotError, RobotFilter, RobotResult,
    Store, StoreError,
};

/// The lease every claim here grants, in ms.
const LEASE_MS: i64 = 30_000;

fn at(ms: i64) -> Timestamp {
    Timestamp(T0 + ms)
}

fn new_robot(tenant: TenantId, module: &str, priority: i32) -> NewRobot {
    NewRobot {
        tenant,
        module: module.to_string(),
        input: json!({"text": "hola", "n": [1, 2, 3]}),
        priority,
        timeout_s: Some(60),
        idempotency: None,
    }
}

async fn create(store: &dyn Store, robot: NewRobot, offset: i64) -> Robot {
    store
        .robots()
        .create(&robot, at(offset))
        .await
        .expect("create robot")
        .robot
}

async fn claim(store: &dyn Store, worker: &str, limit: usize, offset: i64) -> Vec<Robot> {
    store
        .robots()
        .claim(&Claim {
            worker: worker.to_string(),
            limit,
            now: at(offset),
            lease_until: at(offset + LEASE_MS),
        })
        .await
        .expect("claim")
}

fn beat(robot: &Robot, progress: Option<u8>, offset: i64) -> Heartbeat {
    Heartbeat {
        robot: robot.id,
        attempt: robot.attempt,
        progress,
        step: Some(format!("step at {offset}")),
        now: at(offset),
        lease_until: at(offset + LEASE_MS),
    }
}

fn success() -> AttemptEnd {
    AttemptEnd::Succeeded {
        result: json!({"ok": true}),
    }
}

async fn two_tenants(store: &dyn Store) -> (TenantId, TenantId) {
    let a = store
        .catalog()
        .default_tenant()
        .await
        .expect("default tenant");
    let b = store
        .catalog()
        .create_tenant("robots-b", "B")
        .await
        .expect("tenant b");
    (a.id, b.id)
}

#[track_caller]
fn assert_stale<T: std::fmt::Debug>(result: RobotResult<T>, live: Option<u32>, what: &str) {
    assert!(
        matches!(&result, Err(RobotError::Stale { live: l }) if *l == live),
        "{what}: expected Stale {{ live: {live:?} }}, got {result:?}"
    );
}

#[track_caller]
fn assert_finished<T: std::fmt::Debug>(result: RobotResult<T>, status: RobotStatus, what: &str) {
    assert!(
        matches!(&result, Err(RobotError::Finished { status: s }) if *s == status),
        "{what}: expected Finished {{ {status} }}, got {result:?}"
    );
}

fn store_not_found<T: std::fmt::Debug>(result: RobotResult<T>, what: &str) {
    assert_not_found(
        result.map_err(|e| match e {
            RobotError::Store(e) => e,
            other => StoreError::Internal(other.to_string()),
        }),
        what,
    );
}

/// A created robot is queued with what it was given; its tenant sees it, another tenant
/// gets `NotFound` for it (get, executions, cancel, retry) and never lists it.
pub async fn robots_create_get_and_tenant_isolation(store: &dyn Store) {
    let (a, b) = two_tenants(store).await;
    let created = store
        .robots()
        .create(&new_robot(a, "echo", 3), at(0))
        .await
        .expect("create");
    assert!(created.created);
    let robot = created.robot;
    assert_eq!(
        (
            robot.tenant,
            robot.module.as_str(),
            robot.priority,
            robot.status
        ),
        (a, "echo", 3, RobotStatus::Queued)
    );
    assert_eq!(robot.input, json!({"text": "hola", "n": [1, 2, 3]}));
    assert_eq!(
        (robot.attempt, robot.progress, robot.timeout_s),
        (0, 0, Some(60))
    );
    assert_eq!((robot.created_at, robot.not_before), (at(0), at(0)));
    assert_eq!(robot.finished_at, None);
    let got = store.robots().get(a, robot.id).await.expect("get");
    assert_eq!(got, robot, "get returns what create returned");

    store_not_found(
        store.robots().get(b, robot.id).await,
        "another tenant's get",
    );
    store_not_found(
        store.robots().executions(b, robot.id).await,
        "another tenant's executions",
    );
    store_not_found(
        store.robots().cancel(b, robot.id, at(1)).await,
        "another tenant's cancel",
    );
    store_not_found(
        store.robots().retry(b, robot.id, at(1)).await,
        "another tenant's retry",
    );
    store_not_found(
        store.robots().get(a, RobotId(i64::MAX - 3)).await,
        "an unknown robot",
    );
    let listed = store
        .robots()
        .list(
            b,
            &RobotFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list b");
    assert!(listed.is_empty(), "tenant b lists nothing of a: {listed:?}");
    let orphan = store
        .robots()
        .create(&new_robot(TenantId(i64::MAX - 5), "echo", 0), at(2))
        .await;
    assert!(
        matches!(&orphan, Err(RobotError::Store(StoreError::Conflict(_)))),
        "a robot of an unknown tenant: {orphan:?}"
    );
    let still = store.robots().get(a, robot.id).await.expect("get again");
    assert_eq!(
        still.status,
        RobotStatus::Queued,
        "another tenant's cancel changed nothing"
    );
}

/// The same key and body returns the original robot; the same key with another body is
/// `IdempotencyMismatch`; the same key in another tenant is another robot.
pub async fn robots_idempotent_create(store: &dyn Store) {
    let (a, b) = two_tenants(store).await;
    let keyed = |tenant, hash: &[u8]| NewRobot {
        idempotency: Some(Idempotency {
            key: "order-42".into(),
            body_hash: hash.to_vec(),
        }),
        ..new_robot(tenant, "echo", 0)
    };
    let first = store
        .robots()
        .create(&keyed(a, b"h1"), at(0))
        .await
        .expect("first");
    assert!(first.created);
    assert_eq!(first.robot.idempotency_key.as_deref(), Some("order-42"));
    let again = store
        .robots()
        .create(&keyed(a, b"h1"), at(5))
        .await
        .expect("repeat");
    assert!(!again.created, "a repeat creates nothing");
    assert_eq!(again.robot, first.robot, "a repeat returns the original");
    let other = store.robots().create(&keyed(a, b"h2"), at(6)).await;
    assert!(
        matches!(&other, Err(RobotError::IdempotencyMismatch { robot }) if *robot == first.robot.id),
        "another body: {other:?}"
    );
    let in_b = store
        .robots()
        .create(&keyed(b, b"h2"), at(7))
        .await
        .expect("tenant b");
    assert!(in_b.created, "keys are per tenant");
    assert_ne!(in_b.robot.id, first.robot.id);
    let unkeyed = create(store, new_robot(a, "echo", 0), 8).await;
    let unkeyed2 = create(store, new_robot(a, "echo", 0), 8).await;
    assert_ne!(unkeyed.id, unkeyed2.id, "robots without a key never fold");
    let page = store
        .robots()
        .list(
            a,
            &RobotFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(page.len(), 3, "the refused create left nothing: {page:?}");

    let long_key = NewRobot {
        idempotency: Some(Idempotency {
            key: "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS + 1),
            body_hash: vec![1],
        }),
        ..new_robot(a, "echo", 0)
    };
    let refused = store.robots().create(&long_key, at(9)).await;
    assert!(
        matches!(
            &refused,
            Err(RobotError::Invalid {
                field: "idempotency_key",
                ..
            })
        ),
        "{refused:?}"
    );
    let no_module = store.robots().create(&new_robot(a, "", 0), at(9)).await;
    assert!(
        matches!(
            &no_module,
            Err(RobotError::Invalid {
                field: "module",
                ..
            })
        ),
        "{no_module:?}"
    );
}

/// Higher priority first; within a priority tenants take turns, so tenant B's single
/// robot is among the first two claims while tenant A has many queued, even one claim at
/// a time; each claim starts attempt 1 under a lease and records its execution.
pub async fn robots_claim_order_priority_then_tenants(store: &dyn Store) {
    let (a, b) = two_tenants(store).await;
    let mut a_robots = Vec::new();
    for i in 0..30 {
        a_robots.push(create(store, new_robot(a, "echo", 0), i).await.id);
    }
    let b_robot = create(store, new_robot(b, "echo", 0), 100).await.id;
    let urgent = create(store, new_robot(a, "echo", 9), 200).await.id;

    let first = claim(store, "w1", 1, 1_000).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].id, urgent, "priority goes first");
    let first = &first[0];
    assert_eq!(
        (first.status, first.attempt, first.worker.as_deref()),
        (RobotStatus::Running, 1, Some("w1"))
    );
    assert_eq!(first.lease_expires_at, Some(at(1_000 + LEASE_MS)));
    assert_eq!(first.last_progress_at, Some(at(1_000)));

    // One robot a claim: A was just served, so B's turn comes next, whatever A's backlog.
    let mut order = Vec::new();
    for step in 0..3 {
        order.push(claim(store, "w1", 1, 1_001 + step).await[0].id);
    }
    assert!(
        order[..2].contains(&b_robot),
        "tenant B's robot must be among the next two claims, got {order:?} (b = {b_robot})"
    );
    let a_order: Vec<RobotId> = order.iter().copied().filter(|&id| id != b_robot).collect();
    assert_eq!(a_order, a_robots[..2], "a tenant's robots go oldest first");

    // A bigger claim: the rest of A in id order.
    let rest = claim(store, "w2", 100, 2_000).await;
    let rest_ids: Vec<RobotId> = rest.iter().map(|r| r.id).collect();
    assert_eq!(
        rest_ids,
        a_robots[2..],
        "claims come back in dispatch order"
    );
    assert!(
        claim(store, "w2", 100, 2_001).await.is_empty(),
        "nothing left"
    );

    let executions = store
        .robots()
        .executions(a, urgent)
        .await
        .expect("executions");
    assert_eq!(executions.len(), 1);
    let e = &executions[0];
    assert_eq!(
        (
            e.attempt,
            e.worker.as_str(),
            e.status,
            e.started_at,
            e.ended_at
        ),
        (1, "w1", ExecutionStatus::Running, at(1_000), None)
    );

    // Round-robin within one claim: with three tenants queued, the first three claimed
    // are one of each.
    let c = store
        .catalog()
        .create_tenant("robots-c", "C")
        .await
        .expect("c")
        .id;
    for i in 0..5 {
        create(store, new_robot(a, "echo", 0), 3_000 + i).await;
        create(store, new_robot(c, "echo", 0), 3_100 + i).await;
    }
    create(store, new_robot(b, "echo", 0), 3_200).await;
    let batch = claim(store, "w3", 3, 4_000).await;
    let tenants: HashSet<TenantId> = batch.iter().map(|r| r.tenant).collect();
    assert_eq!(
        tenants.len(),
        3,
        "one robot of each tenant first: {batch:?}"
    );
}

/// Several claimers racing over one queue: every robot is claimed exactly once, and no
/// robot ever has two live attempts.
pub async fn robots_concurrent_claimers_never_share_a_robot(store: &dyn Store) {
    let (a, b) = two_tenants(store).await;
    let total = 120;
    for i in 0..total {
        let tenant = if i % 3 == 0 { b } else { a };
        create(store, new_robot(tenant, "echo", (i % 2) as i32), i as i64).await;
    }
    async fn drain(store: &dyn Store, worker: &str) -> Vec<Robot> {
        let mut mine = Vec::new();
        loop {
            let got = claim(store, worker, 7, 10_000).await;
            if got.is_empty() {
                return mine;
            }
            mine.extend(got);
            tokio::task::yield_now().await;
        }
    }
    let (w1, w2, w3, w4) = tokio::join!(
        drain(store, "w1"),
        drain(store, "w2"),
        drain(store, "w3"),
        drain(store, "w4")
    );
    let mut seen: HashMap<RobotId, &str> = HashMap::new();
    for (worker, claimed) in [("w1", &w1), ("w2", &w2), ("w3", &w3), ("w4", &w4)] {
        for robot in claimed.iter() {
            assert_eq!(robot.attempt, 1, "{} claimed twice", robot.id);
            if let Some(other) = seen.insert(robot.id, worker) {
                panic!("robot {} claimed by {other} and {worker}", robot.id);
            }
        }
    }
    assert_eq!(seen.len(), total, "every robot claimed once");
    for (&id, &worker) in &seen {
        let tenant = if store.robots().get(a, id).await.is_ok() {
            a
        } else {
            b
        };
        let robot = store.robots().get(tenant, id).await.expect("get");
        assert_eq!(
            (robot.status, robot.worker.as_deref()),
            (RobotStatus::Running, Some(worker))
        );
        let executions = store
            .robots()
            .executions(tenant, id)
            .await
            .expect("executions");
        assert_eq!(executions.len(), 1, "one attempt of {id}");
    }
}

/// A heartbeat extends the lease (never shortens it); a lease left to expire is swept:
/// queued again for a new attempt, dead at `max_attempts`, cancelled when a cancel was
/// asked; a live lease is left alone.
pub async fn robots_lease_expiry_requeues(store: &dyn Store) {
    let (a, _) = two_tenants(store).await;
    let r1 = create(store, new_robot(a, "echo", 0), 0).await.id;
    let r2 = create(store, new_robot(a, "echo", 0), 1).await.id;
    let r3 = create(store, new_robot(a, "echo", 0), 2).await.id;
    let claimed = claim(store, "w1", 3, 1_000).await;
    assert_eq!(claimed.len(), 3);
    let by_id: HashMap<RobotId, Robot> = claimed.into_iter().map(|r| (r.id, r)).collect();

    // r1 beats at 20 s (lease to 50 s); a delayed beat from 5 s does not shorten it.
    let beaten = store
        .robots()
        .heartbeat(&beat(&by_id[&r1], Some(40), 20_000))
        .await
        .expect("beat");
    assert_eq!(beaten.lease_expires_at, Some(at(20_000 + LEASE_MS)));
    assert_eq!(
        (beaten.progress, beaten.step.as_deref()),
        (40, Some("step at 20000"))
    );
    assert_eq!(beaten.last_progress_at, Some(at(20_000)));
    let late = store
        .robots()
        .heartbeat(&beat(&by_id[&r1], None, 5_000))
        .await
        .expect("late beat");
    assert_eq!(
        late.lease_expires_at,
        Some(at(20_000 + LEASE_MS)),
        "never shortened"
    );
    assert_eq!(
        (late.progress, late.last_progress_at),
        (40, Some(at(20_000))),
        "a bare beat keeps progress"
    );
    store
        .robots()
        .cancel(a, r3, at(10_000))
        .await
        .expect("cancel request");

    // At 31 s r2 and r3 expired (claimed at 1 s), r1 lives.
    let swept = store
        .robots()
        .sweep_expired(at(31_000), 3, 100)
        .await
        .expect("sweep");
    let swept: HashMap<RobotId, Robot> = swept.into_iter().map(|r| (r.id, r)).collect();
    assert_eq!(swept.len(), 2, "only expired leases: {swept:?}");
    assert_eq!(swept[&r2].status, RobotStatus::Queued);
    assert_eq!(swept[&r2].not_before, at(31_000));
    assert_eq!(
        (swept[&r2].worker.clone(), swept[&r2].lease_expires_at),
        (None, None)
    );
    assert_eq!(
        swept[&r3].status,
        RobotStatus::Cancelled,
        "a cancel wins over a retry"
    );
    assert_eq!(swept[&r3].finished_at, Some(at(31_000)));
    let r2_exec = store.robots().executions(a, r2).await.expect("executions");
    assert_eq!(r2_exec[0].status, ExecutionStatus::Expired);
    assert_eq!(r2_exec[0].ended_at, Some(at(31_000)));
    assert!(store
        .robots()
        .sweep_expired(at(31_000), 3, 100)
        .await
        .expect("again")
        .is_empty());

    // r2's next attempt is 2; attempt 1's report is stale now.
    let again = claim(store, "w2", 10, 31_001).await;
    assert_eq!(
        again.iter().map(|r| (r.id, r.attempt)).collect::<Vec<_>>(),
        [(r2, 2)]
    );
    assert_stale(
        store
            .robots()
            .heartbeat(&beat(&by_id[&r2], Some(10), 31_002))
            .await,
        Some(2),
        "the expired attempt's heartbeat",
    );
    // Attempt 2 of at most 2 expires: dead.
    let dead = store
        .robots()
        .sweep_expired(at(70_000), 2, 100)
        .await
        .expect("sweep");
    let states: HashMap<RobotId, RobotStatus> = dead.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(states.get(&r2), Some(&RobotStatus::Dead), "{dead:?}");
    assert_eq!(
        states.get(&r1),
        Some(&RobotStatus::Queued),
        "r1 expired too by 70 s"
    );
    let limit = store
        .robots()
        .sweep_expired(at(999_000), 2, 100)
        .await
        .expect("sweep");
    assert!(limit.is_empty());
}

/// Reports of an attempt that is not the live one are `Stale`, those of a finished robot
/// `Finished`; both change nothing and are counted on the reported execution; the end of
/// the live attempt happens exactly once.
pub async fn robots_stale_attempts_are_refused_and_recorded(store: &dyn Store) {
    let (a, _) = two_tenants(store).await;
    let id = create(store, new_robot(a, "echo", 0), 0).await.id;
    let first = claim(store, "w1", 1, 1_000).await.remove(0);
    store
        .robots()
        .finish(
            id,
            1,
            &AttemptEnd::Retry {
                error: "boom".into(),
                not_before: at(2_000),
            },
            at(1_500),
        )
        .await
        .expect("retry");
    let second = claim(store, "w2", 1, 2_000).await.remove(0);
    assert_eq!(second.attempt, 2);
    assert_stale(
        store
            .robots()
            .heartbeat(&beat(&first, Some(50), 2_100))
            .await,
        Some(2),
        "old heartbeat",
    );
    assert_stale(
        store.robots().finish(id, 1, &success(), at(2_200)).await,
        Some(2),
        "old complete",
    );
    assert_stale(
        store.robots().finish(id, 3, &success(), at(2_200)).await,
        Some(2),
        "future attempt",
    );
    let now = store.robots().get(a, id).await.expect("get");
    assert_eq!(
        (now.status, now.attempt, now.progress),
        (RobotStatus::Running, 2, 0),
        "stale changed nothing"
    );

    let done = store
        .robots()
        .finish(id, 2, &success(), at(2_300))
        .await
        .expect("complete");
    assert_eq!(
        (
            done.status,
            done.result.clone(),
            done.progress,
            done.finished_at
        ),
        (
            RobotStatus::Succeeded,
            Some(json!({"ok": true})),
            100,
            Some(at(2_300))
        )
    );
    assert_eq!(
        done.error.as_deref(),
        Some("boom"),
        "the last failure stays readable"
    );
    assert_finished(
        store.robots().finish(id, 2, &success(), at(2_400)).await,
        RobotStatus::Succeeded,
        "second complete",
    );
    assert_finished(
        store
            .robots()
            .heartbeat(&beat(&second, Some(1), 2_500))
            .await,
        RobotStatus::Succeeded,
        "beat after the end",
    );

    let executions = store.robots().executions(a, id).await.expect("executions");
    let summary: Vec<_> = executions
        .iter()
        .map(|e| {
            (
                e.attempt,
                e.worker.as_str(),
                e.status,
                e.error.as_deref(),
                e.stale_reports,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "w1", ExecutionStatus::Failed, Some("boom"), 2),
            (2, "w2", ExecutionStatus::Succeeded, None, 2),
        ],
        "every refused report is counted on the attempt it named"
    );
    assert_eq!(executions[1].ended_at, Some(at(2_300)));

    // A queued robot has no live attempt at all.
    let queued = create(store, new_robot(a, "echo", 0), 3_000).await;
    assert_stale(
        store
            .robots()
            .finish(queued.id, 0, &success(), at(3_001))
            .await,
        None,
        "queued",
    );
    let bad = Heartbeat {
        progress: Some(101),
        ..beat(&queued, None, 3_002)
    };
    let refused = store.robots().heartbeat(&bad).await;
    assert!(
        matches!(
            &refused,
            Err(RobotError::Invalid {
                field: "progress",
                ..
            })
        ),
        "{refused:?}"
    );
    store_not_found(
        store
            .robots()
            .finish(RobotId(i64::MAX - 9), 1, &success(), at(1))
            .await,
        "unknown robot",
    );
}

/// A retry waits for its `not_before`; a robot parked for want of a module too.
pub async fn robots_not_before_is_respected(store: &dyn Store) {
    let (a, _) = two_tenants(store).await;
    let id = create(store, new_robot(a, "echo", 0), 0).await.id;
    claim(store, "w1", 1, 0).await;
    let queued = store
        .robots()
        .finish(
            id,
            1,
            &AttemptEnd::Retry {
                error: "try later".into(),
                not_before: at(5_000),
            },
            at(100),
        )
        .await
        .expect("retry");
    assert_eq!(
        (queued.status, queued.not_before),
        (RobotStatus::Queued, at(5_000))
    );
    assert_eq!((queued.worker.clone(), queued.finished_at), (None, None));
    assert!(
        claim(store, "w1", 10, 4_999).await.is_empty(),
        "not before 5 s"
    );
    let second = claim(store, "w1", 10, 5_000).await;
    assert_eq!(
        second.iter().map(|r| (r.id, r.attempt)).collect::<Vec<_>>(),
        [(id, 2)]
    );
    let parked = store
        .robots()
        .finish(
            id,
            2,
            &AttemptEnd::WaitForModule {
                not_before: at(9_000),
            },
            at(5_001),
        )
        .await
        .expect("park");
    assert_eq!(parked.status, RobotStatus::WaitingForModule);
    let executions = store.robots().executions(a, id).await.expect("executions");
    assert_eq!(executions[1].status, ExecutionStatus::Abandoned);
    assert!(
        claim(store, "w1", 10, 8_999).await.is_empty(),
        "parked until 9 s"
    );
    assert_eq!(claim(store, "w1", 10, 9_000).await[0].attempt, 3);
}

/// A dead robot stays dead until retried; a retry queues it at once with its attempt
/// count going on; only dead robots can be retried.
pub async fn robots_dead_then_retry(store: &dyn Store) {
    let (a, _) = two_tenants(store).await;
    let id = create(store, new_robot(a, "echo", 0), 0).await.id;
    claim(store, "w1", 1, 0).await;
    let dead = store
        .robots()
        .finish(
            id,
            1,
            &AttemptEnd::Dead {
                error: "x".repeat(10_000),
            },
            at(10),
        )
        .await
        .expect("dead");
    assert_eq!(
        (dead.status, dead.finished_at),
        (RobotStatus::Dead, Some(at(10)))
    );
    assert!(
        dead.error.as_ref().is_some_and(
            |e| e.chars().count() <= crate::robots::MAX_ERROR_CHARS && e.ends_with('…')
        ),
        "a long error is cut"
    );
    assert!(
        claim(store, "w1", 10, 20).await.is_empty(),
        "a dead robot is not claimed"
    );
    let listed = store
        .robots()
        .list(
            a,
            &RobotFilter {
                status: Some(RobotStatus::Dead),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("dead letters");
    assert_eq!(listed.iter().map(|r| r.id).collect::<Vec<_>>(), [id]);

    let requeued = store.robots().retry(a, id, at(100)).await.expect("retry");
    assert_eq!(
        (requeued.status, requeued.not_before, requeued.finished_at),
        (RobotStatus::Queued, at(100), None)
    );
    let result = store.robots().retry(a, id, at(101)).await;
    assert!(
        matches!(
            &result,
            Err(RobotError::NotDead {
                status: RobotStatus::Queued
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        claim(store, "w1", 10, 100).await[0].attempt,
        2,
        "attempts go on"
    );
    store
        .robots()
        .finish(id, 2, &success(), at(200))
        .await
        .expect("done");
    let result = store.robots().retry(a, id, at(201)).await;
    assert!(
        matches!(
            &result,
            Err(RobotError::NotDead {
                status: RobotStatus::Succeeded
            })
        ),
        "{result:?}"
    );
}

/// Cancel: a queued robot at once, a running one by request (kept from the first
/// request, visible to its heartbeat) until its attempt ends `Cancelled`; a finished
/// one is `Finished`.
pub async fn robots_cancel_rules(store: &dyn Store) {
    let (a, _) = two_tenants(store).await;
    let queued = create(store, new_robot(a, "echo", 0), 0).await.id;
    let running = create(store, new_robot(a, "echo", 0), 1).await.id;
    let cancelled = store
        .robots()
        .cancel(a, queued, at(10))
        .await
        .expect("cancel queued");
    assert_eq!(
        (cancelled.status, cancelled.finished_at),
        (RobotStatus::Cancelled, Some(at(10)))
    );
    let claimed = claim(store, "w1", 10, 20).await;
    assert_eq!(
        claimed.iter().map(|r| r.id).collect::<Vec<_>>(),
        [running],
        "a cancelled robot is not claimed"
    );
    let asked = store
        .robots()
        .cancel(a, running, at(30))
        .await
        .expect("cancel running");
    assert_eq!(
        (asked.status, asked.cancel_requested_at),
        (RobotStatus::Running, Some(at(30)))
    );
    let again = store
        .robots()
        .cancel(a, running, at(40))
        .await
        .expect("cancel again");
    assert_eq!(
        again.cancel_requested_at,
        Some(at(30)),
        "the first request's time is kept"
    );
    let seen = store
        .robots()
        .heartbeat(&beat(&claimed[0], Some(5), 50))
        .await
        .expect("beat");
    assert_eq!(
        seen.cancel_requested_at,
        Some(at(30)),
        "the worker sees the request"
    );
    let ended = store
        .robots()
        .finish(running, 1, &AttemptEnd::Cancelled, at(60))
        .await
        .expect("end");
    assert_eq!(
        (ended.status, ended.cancel_requested_at),
        (RobotStatus::Cancelled, None)
    );
    assert_finished(
        store.robots().cancel(a, running, at(70)).await,
        RobotStatus::Cancelled,
        "cancel a cancelled robot",
    );
    let done = create(store, new_robot(a, "echo", 0), 80).await.id;
    claim(store, "w1", 1, 90).await;
    store
        .robots()
        .finish(done, 1, &success(), at(95))
        .await
        .expect("done");
    assert_finished(
        store.robots().cancel(a, done, at(99)).await,
        RobotStatus::Succeeded,
        "cancel a finished robot",
    );
    let executions = store
        .robots()
        .executions(a, running)
        .await
        .expect("executions");
    assert_eq!(executions[0].status, ExecutionStatus::Cancelled);
}

/// Pages newest first, each robot once, with status and module filters, whatever is
/// created between pages; the step message is cut to its limit.
pub async fn robots_list_pages_once_in_order(store: &dyn Store) {
    let (a, b) = two_tenants(store).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let module = if i % 5 == 0 { "ocr" } else { "echo" };
        ids.push(create(store, new_robot(a, module, 0), i).await.id);
        create(store, new_robot(b, "echo", 0), i).await;
    }
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .robots()
            .list(
                a,
                &RobotFilter {
                    limit: 7,
                    before,
                    ..Default::default()
                },
            )
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        before = page.last().map(|r| r.id);
        if pages.is_empty() {
            // Created between pages: newer than the cursor, so not on later pages.
            create(store, new_robot(a, "echo", 0), 100).await;
        }
        pages.extend(page.into_iter().map(|r| r.id));
    }
    let newest_first: Vec<RobotId> = ids.iter().rev().copied().collect();
    assert_eq!(pages, newest_first, "each robot once, newest first");
    let ocr = store
        .robots()
        .list(
            a,
            &RobotFilter {
                module: Some("ocr".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("ocr");
    assert_eq!(ocr.len(), 5);
    assert!(ocr.iter().all(|r| r.module == "ocr" && r.tenant == a));
    let claimed = claim(store, "w1", 3, 200).await;
    let of_a = claimed.iter().filter(|r| r.tenant == a).count();
    let running = store
        .robots()
        .list(
            a,
            &RobotFilter {
                status: Some(RobotStatus::Running),
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .expect("running");
    assert_eq!(running.len(), of_a, "{running:?}");
    let both = store
        .robots()
        .list(
            a,
            &RobotFilter {
                status: Some(RobotStatus::Running),
                module: Some("ocr".into()),
                limit: 100,
                before: None,
            },
        )
        .await
        .expect("both");
    assert!(both
        .iter()
        .all(|r| r.module == "ocr" && r.status == RobotStatus::Running));
    let long = Heartbeat {
        step: Some("x".repeat(MAX_STEP_CHARS * 3)),
        ..beat(&running[0], Some(1), 300)
    };
    let cut = store.robots().heartbeat(&long).await.expect("beat");
    assert_eq!(
        cut.step.as_ref().map(|s| s.chars().count()),
        Some(MAX_STEP_CHARS)
    );
}

/// Cleanup deletes finished robots (and their executions) past the cutoff, at most a
/// chunk a call, and nothing else: not newer ones, not unfinished ones.
pub async fn robots_cleanup_deletes_only_past_the_cutoff(store: &dyn Store) {
    let (a, _) = two_tenants(store).await;
    let mut old = Vec::new();
    for i in 0..5 {
        old.push(create(store, new_robot(a, "echo", 0), i).await.id);
    }
    let recent = create(store, new_robot(a, "echo", 0), 10).await.id;
    let old_queued = create(store, new_robot(a, "echo", 0), 11).await.id;
    let claimed = claim(store, "w1", 6, 100).await;
    assert_eq!(claimed.len(), 6, "the old five and `recent`");
    for (i, id) in old.iter().enumerate() {
        store
            .robots()
            .finish(*id, 1, &success(), at(1_000 + i as i64))
            .await
            .expect("finish");
    }
    store
        .robots()
        .finish(recent, 1, &success(), at(9_000))
        .await
        .expect("finish");
    store
        .robots()
        .cancel(a, old_queued, at(500))
        .await
        .expect("cancel");
    let still_queued = create(store, new_robot(a, "echo", 0), 12).await.id;

    let cutoff = at(5_000);
    assert_eq!(store.robots().cleanup(cutoff, 4).await.expect("chunk 1"), 4);
    assert_eq!(store.robots().cleanup(cutoff, 4).await.expect("chunk 2"), 2);
    assert_eq!(store.robots().cleanup(cutoff, 4).await.expect("chunk 3"), 0);
    for id in old.iter().chain([&old_queued]) {
        store_not_found(store.robots().get(a, *id).await, "a cleaned robot");
        store_not_found(
            store.robots().executions(a, *id).await,
            "a cleaned robot's executions",
        );
    }
    assert_eq!(
        store
            .robots()
            .executions(a, recent)
            .await
            .expect("kept")
            .len(),
        1
    );
    assert_eq!(
        store
            .robots()
            .get(a, still_queued)
            .await
            .expect("kept")
            .status,
        RobotStatus::Queued
    );
}

fn instance(module: &str, name: &str, score: f64) -> ModuleInstance {
    ModuleInstance {
        module: module.to_string(),
        name: name.to_string(),
        url: Some(format!("http://127.0.0.1:9000/{name}")),
        weight: 1.5,
        capacity: 8,
        health: InstanceHealth::Unknown,
        score,
        breaker: BreakerPosition::Closed,
        in_flight: 0,
        checked_at: None,
        updated_at: at(0),
    }
}

/// Modules and instances are upserted by name and listed in name order; an instance of
/// an unknown module is `NotFound`; bad weights are refused.
pub async fn robots_modules_and_instances(store: &dyn Store) {
    let robots = store.robots();
    let ocr = Module {
        name: "ocr".into(),
        kind: "http".into(),
        input_schema: Some(json!({"type": "object", "required": ["object"]})),
        updated_at: at(0),
    };
    let echo = Module {
        name: "echo".into(),
        kind: "in_process".into(),
        input_schema: None,
        updated_at: at(1),
    };
    robots.put_module(&ocr).await.expect("ocr");
    robots.put_module(&echo).await.expect("echo");
    let changed = Module {
        kind: "in_process".into(),
        updated_at: at(2),
        ..ocr.clone()
    };
    robots.put_module(&changed).await.expect("replace");
    assert_eq!(
        robots.module("ocr").await.expect("get"),
        Some(changed.clone())
    );
    assert_eq!(robots.module("nope").await.expect("get"), None);
    assert_eq!(
        robots.modules().await.expect("list"),
        [echo.clone(), changed]
    );

    robots
        .put_instance(&instance("ocr", "b", 0.5))
        .await
        .expect("b");
    robots
        .put_instance(&instance("ocr", "a", 0.25))
        .await
        .expect("a");
    robots
        .put_instance(&instance("echo", "a", 1.0))
        .await
        .expect("echo a");
    let updated = ModuleInstance {
        health: InstanceHealth::Unhealthy,
        score: 0.125,
        breaker: BreakerPosition::HalfOpen,
        in_flight: 3,
        checked_at: Some(at(50)),
        url: None,
        updated_at: at(60),
        ..instance("ocr", "a", 0.0)
    };
    robots.put_instance(&updated).await.expect("update a");
    assert_eq!(
        robots.instance("ocr", "a").await.expect("get"),
        Some(updated.clone())
    );
    assert_eq!(robots.instance("ocr", "zz").await.expect("get"), None);
    let of_ocr = robots.instances(Some("ocr")).await.expect("ocr instances");
    assert_eq!(of_ocr, [updated, instance("ocr", "b", 0.5)]);
    let all = robots.instances(None).await.expect("all");
    let names: Vec<(&str, &str)> = all
        .iter()
        .map(|i| (i.module.as_str(), i.name.as_str()))
        .collect();
    assert_eq!(names, [("echo", "a"), ("ocr", "a"), ("ocr", "b")]);
    store_not_found(
        robots.put_instance(&instance("missing", "a", 0.0)).await,
        "instance of an unknown module",
    );
    let bad = ModuleInstance {
        weight: f64::NAN,
        ..instance("ocr", "c", 0.0)
    };
    let refused = robots.put_instance(&bad).await;
    assert!(
        matches!(
            &refused,
            Err(RobotError::Invalid {
                field: "weight",
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        robots.instances(Some("ocr")).await.expect("ocr").len(),
        2,
        "nothing stored"
    );
}

/// Claim throughput: 2,000 robots created by 8 concurrent callers, claimed 50 a claim by
/// 4 racing workers, then completed by those workers; every robot claimed and completed
/// exactly once. The rates are printed (run with `--nocapture`), never asserted.
pub async fn robots_claim_throughput_is_reported(store: &dyn Store) {
    const ROBOTS: usize = 2_000;
    const CALLERS: usize = 8;
    let (a, b) = two_tenants(store).await;
    async fn create_share(store: &dyn Store, a: TenantId, b: TenantId, caller: usize) {
        for i in (caller..ROBOTS).step_by(CALLERS) {
            let tenant = if i % 4 == 0 { b } else { a };
            create(store, new_robot(tenant, "echo", 0), i as i64).await;
        }
    }
    async fn claim_all(store: &dyn Store, worker: &str) -> Vec<Robot> {
        let mut mine = Vec::new();
        loop {
            let claimed = claim(store, worker, 50, 10_000).await;
            if claimed.is_empty() {
                return mine;
            }
            mine.extend(claimed);
        }
    }
    async fn complete_all(store: &dyn Store, robots: &[Robot]) {
        for robot in robots {
            store
                .robots()
                .finish(robot.id, robot.attempt, &success(), at(10_001))
                .await
                .expect("complete");
        }
    }
    let started = Instant::now();
    tokio::join!(
        create_share(store, a, b, 0),
        create_share(store, a, b, 1),
        create_share(store, a, b, 2),
        create_share(store, a, b, 3),
        create_share(store, a, b, 4),
        create_share(store, a, b, 5),
        create_share(store, a, b, 6),
        create_share(store, a, b, 7),
    );
    let created_in = started.elapsed();
    let started = Instant::now();
    let (w1, w2, w3, w4) = tokio::join!(
        claim_all(store, "w1"),
        claim_all(store, "w2"),
        claim_all(store, "w3"),
        claim_all(store, "w4"),
    );
    let claimed_in = started.elapsed();
    let ids: HashSet<RobotId> = [&w1, &w2, &w3, &w4]
        .iter()
        .flat_map(|w| w.iter().map(|r| r.id))
        .collect();
    assert_eq!(
        w1.len() + w2.len() + w3.len() + w4.len(),
        ROBOTS,
        "every robot claimed once"
    );
    assert_eq!(ids.len(), ROBOTS, "no robot claimed twice");
    let started = Instant::now();
    tokio::join!(
        complete_all(store, &w1),
        complete_all(store, &w2),
        complete_all(store, &w3),
        complete_all(store, &w4),
    );
    let completed_in = started.elapsed();
    let rate = |d: std::time::Duration| ROBOTS as f64 / d.as_secs_f64().max(1e-9);
    eprintln!(
        "robots throughput ({ROBOTS} robots): {:.0} creates/s ({CALLERS} callers), \
         {:.0} claims/s (50 a claim, 4 racing workers), {:.0} completions/s (4 workers)",
        rate(created_in),
        rate(claimed_in),
        rate(completed_in),
    );
}
