//! Conformance checks for the audit log: aggregation per minute and tenant scoping.

use vigia_core::Timestamp;

use super::T0;
use crate::{AuditEvent, AuditOutcome, Store};

fn refused(client: &str) -> AuditEvent {
    AuditEvent {
        tenant: None,
        actor: "anonymous".into(),
        action: "auth.refused".into(),
        target: "/api/v1/sensors".into(),
        outcome: AuditOutcome::Refused,
        client: client.into(),
    }
}

/// Identical events in one minute add up in one row; a new minute, another client or
/// another outcome is another row; rows of a tenant are listed only for it, and rows of
/// unidentified callers only as `None`.
pub async fn audit_aggregates_per_minute(store: &dyn Store) {
    let tenant = store.catalog().default_tenant().await.expect("tenant");
    let audit = store.audit();
    let minute = T0 - T0.rem_euclid(60_000);
    for i in 0..5 {
        audit
            .record(&[(refused("10.0.0.1"), 3)], Timestamp(minute + i * 1_000))
            .await
            .expect("record");
    }
    audit
        .record(&[(refused("10.0.0.2"), 1)], Timestamp(minute + 59_999))
        .await
        .expect("record other client");
    audit
        .record(&[(refused("10.0.0.1"), 1)], Timestamp(minute + 60_000))
        .await
        .expect("record next minute");
    let created = AuditEvent {
        tenant: Some(tenant.id),
        actor: "key:1:admin".into(),
        action: "key.create".into(),
        target: "key:2".into(),
        outcome: AuditOutcome::Allowed,
        client: "10.0.0.1".into(),
    };
    audit
        .record(&[(created.clone(), 1)], Timestamp(minute + 5))
        .await
        .expect("record key change");

    let anonymous = audit.list(None, 100).await.expect("list");
    let rows: Vec<(i64, &str, u64)> = anonymous
        .iter()
        .map(|r| (r.minute.0 - minute, r.client.as_str(), r.count))
        .collect();
    assert_eq!(
        rows,
        [
            (60_000, "10.0.0.1", 1),
            (0, "10.0.0.2", 1),
            (0, "10.0.0.1", 15)
        ],
        "newest minute first, one counted row per minute and client"
    );
    let first = anonymous.last().expect("a row");
    assert_eq!(
        (first.first_at, first.last_at),
        (Timestamp(minute), Timestamp(minute + 4_000))
    );
    assert_eq!(first.outcome, AuditOutcome::Refused);

    let of_tenant = audit.list(Some(tenant.id), 100).await.expect("list tenant");
    assert_eq!(of_tenant.len(), 1, "{of_tenant:?}");
    assert_eq!(
        (
            of_tenant[0].action.as_str(),
            of_tenant[0].tenant,
            of_tenant[0].count
        ),
        ("key.create", Some(tenant.id), 1)
    );
    let other = store
        .catalog()
        .create_tenant("other", "Other")
        .await
        .expect("tenant");
    assert!(audit
        .list(Some(other.id), 100)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        audit.list(None, 2).await.expect("limit").len(),
        2,
        "limit holds"
    );

    // Retention: rows of minutes before the cut go, the rest stay.
    let pruned = audit
        .prune(Timestamp(minute + 60_000))
        .await
        .expect("prune");
    assert_eq!(pruned, 3, "the first minute's rows of both tenants");
    let left: Vec<i64> = audit
        .list(None, 100)
        .await
        .expect("list")
        .iter()
        .map(|r| r.minute.0 - minute)
        .collect();
    assert_eq!(left, [60_000]);
    assert!(audit
        .list(Some(tenant.id), 100)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        audit.prune(Timestamp(minute)).await.expect("prune again"),
        0
    );
}
