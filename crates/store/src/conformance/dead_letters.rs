//! Conformance checks for dead letters: kept whole per tenant, listed newest first in
//! keyset pages, read back exactly, deleted once.

use vigia_core::{Reading, Timestamp};

use super::{setup, T0};
use crate::{NewDeadLetter, Store, StoreError};

fn readings(n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            // Twelve distinct sensors, some repeated: the summary keeps the first ten.
            sensor: format!("CF-{}", i % 12),
            metric: if i % 2 == 0 {
                "temperature"
            } else {
                "humidity"
            }
            .to_string(),
            ts: Timestamp(T0 + i as i64),
            // Values a JSON round trip must keep exactly.
            value: -18.25 + i as f64 * 0.1,
        })
        .collect()
}

/// Letters come back exactly as put (readings, reason, times), newest first, in keyset
/// pages that return each once; another tenant sees none of them; a deleted letter is
/// gone and deleting it again, or another tenant's, is `NotFound`.
pub async fn dead_letters_are_kept_whole_per_tenant(store: &dyn Store) {
    let (tenant, _) = setup(store, &[]).await;
    let other = store
        .catalog()
        .create_tenant("other", "Other")
        .await
        .expect("second tenant");
    let letters = store.dead_letters();
    assert!(letters
        .list(tenant.id, None, 10)
        .await
        .expect("list")
        .is_empty());

    let mut ids = Vec::new();
    for i in 0..5 {
        let letter = NewDeadLetter {
            tenant: tenant.id,
            reason: format!("refused {i}: value out of range"),
            received_at: Timestamp(T0 + i),
            readings: readings(1 + i as usize * 7),
        };
        ids.push(
            letters
                .put(letter, Timestamp(T0 + 1_000 + i))
                .await
                .expect("put"),
        );
    }
    let foreign = letters
        .put(
            NewDeadLetter {
                tenant: other.id,
                reason: "other tenant".into(),
                received_at: Timestamp(T0),
                readings: readings(2),
            },
            Timestamp(T0),
        )
        .await
        .expect("put other");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && foreign > ids[4],
        "ids increase: {ids:?}, {foreign}"
    );

    // One letter read back whole.
    let got = letters.get(tenant.id, ids[4]).await.expect("get");
    assert_eq!(got.readings, readings(29), "readings kept exactly");
    assert_eq!(got.summary.id, ids[4]);
    assert_eq!(got.summary.reason, "refused 4: value out of range");
    assert_eq!(got.summary.received_at, Timestamp(T0 + 4));
    assert_eq!(got.summary.dead_at, Timestamp(T0 + 1_004));
    assert_eq!(got.summary.readings, 29);
    let first_ten: Vec<String> = (0..10).map(|i| format!("CF-{i}")).collect();
    assert_eq!(
        got.summary.sensors, first_ten,
        "the first ten distinct keys"
    );
    assert_eq!(
        letters
            .get(tenant.id, ids[0])
            .await
            .expect("get")
            .summary
            .sensors,
        vec!["CF-0".to_string()]
    );

    // Pages of two, newest first, each letter once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = letters.list(tenant.id, before, 2).await.expect("page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        before = page.last().map(|l| l.id);
        seen.extend(page.into_iter().map(|l| l.id));
    }
    let newest_first: Vec<u64> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first, "each letter once, newest first");
    let summary = &letters.list(tenant.id, None, 1).await.expect("list")[0];
    assert_eq!(summary, &got.summary, "a list row is the letter's summary");

    // Tenants apart.
    let theirs = letters.list(other.id, None, 10).await.expect("list other");
    assert_eq!(
        theirs.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![foreign]
    );
    assert!(matches!(
        letters.get(tenant.id, foreign).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        letters.delete(tenant.id, foreign).await,
        Err(StoreError::NotFound)
    ));
    assert!(letters.get(other.id, foreign).await.is_ok(), "still there");

    // Deletion.
    letters.delete(tenant.id, ids[2]).await.expect("delete");
    assert!(matches!(
        letters.get(tenant.id, ids[2]).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        letters.delete(tenant.id, ids[2]).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        letters.get(tenant.id, u64::MAX).await,
        Err(StoreError::NotFound)
    ));
    let left: Vec<u64> = letters
        .list(tenant.id, None, 10)
        .await
        .expect("list")
        .iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(left, vec![ids[4], ids[3], ids[1], ids[0]]);
}
