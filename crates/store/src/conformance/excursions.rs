//! Conformance checks for excursions: written with the readings in one unit of work,
//! upserted by (sensor, rule, start) with absolute values, never moved back, listed by
//! range with keyset pages, refused whole with the batch when wrong.

use vigia_core::{SensorId, TenantId, Timestamp};

use super::{provision, reading, setup, T0};
use crate::{Excursion, ExcursionQuery, ExcursionUpsert, Store, StoreError, WriteBatch};

const MIN: i64 = 60_000;

/// An excursion of `rule` from `T0 + start` (minutes), last seen at `T0 + last`, ended
/// there when `closed`; out of range all along.
fn excursion(
    tenant: TenantId,
    sensor: SensorId,
    rule: &str,
    start: i64,
    last: i64,
    closed: bool,
) -> ExcursionUpsert {
    ExcursionUpsert {
        tenant,
        sensor,
        rule: rule.to_string(),
        metric: "temperature".into(),
        start: Timestamp(T0 + start * MIN),
        end: closed.then_some(Timestamp(T0 + last * MIN)),
        last: Timestamp(T0 + last * MIN),
        peak: -12.5 - last as f64,
        out_ms: (last - start) * MIN,
        gaps: last / 10,
        gap_ms: (last / 10) * 3 * MIN,
    }
}

fn batch(readings: Vec<crate::SensorReading>, excursions: Vec<ExcursionUpsert>) -> WriteBatch {
    WriteBatch {
        readings,
        alerts: Vec::new(),
        excursions,
    }
}

fn query(tenant: TenantId, sensor: SensorId, from: i64, to: i64) -> ExcursionQuery {
    ExcursionQuery {
        tenant,
        sensor,
        from: Timestamp(T0 + from * MIN),
        to: Timestamp(T0 + to * MIN),
        after: None,
        limit: 100,
    }
}

async fn list(store: &dyn Store, q: &ExcursionQuery) -> Vec<Excursion> {
    store.excursions().list(q).await.expect("list excursions")
}

/// An excursion opens, is extended and closes through batches with their readings; the
/// stored row always holds the latest absolute values, and `ongoing` holds it only
/// while it has no end.
pub async fn excursions_open_extend_and_close(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let (t, s) = (tenant.id, sensors[0].id);
    let everything = query(t, s, -10_000, 10_000);

    let opened = excursion(t, s, "high", 0, 0, false);
    let outcome = store
        .write_batch(batch(vec![reading(s, 0, -12.5)], vec![opened.clone()]))
        .await
        .expect("open");
    assert_eq!(outcome.readings_written, 1, "the readings commit with it");
    assert_eq!(list(store, &everything).await, [Excursion::from(opened)]);

    let extended = excursion(t, s, "high", 0, 30, false);
    store
        .write_batch(batch(
            vec![reading(s, 30 * MIN, -42.5)],
            vec![extended.clone()],
        ))
        .await
        .expect("extend");
    assert_eq!(
        list(store, &everything).await,
        [Excursion::from(extended.clone())],
        "one row, replaced whole"
    );
    assert_eq!(
        store.excursions().ongoing().await.expect("ongoing"),
        [Excursion::from(extended)]
    );

    let closed = excursion(t, s, "high", 0, 45, true);
    store
        .write_batch(batch(
            vec![reading(s, 45 * MIN, -20.0)],
            vec![closed.clone()],
        ))
        .await
        .expect("close");
    assert_eq!(list(store, &everything).await, [Excursion::from(closed)]);
    assert!(
        store
            .excursions()
            .ongoing()
            .await
            .expect("ongoing")
            .is_empty(),
        "a closed excursion is not ongoing"
    );
}

/// The same batch delivered again writes the same row (no time counted twice), and an
/// older view of an excursion committed after a newer one changes nothing.
pub async fn excursions_are_idempotent_and_never_move_back(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let (t, s) = (tenant.id, sensors[0].id);
    let everything = query(t, s, -10_000, 10_000);
    let newer = excursion(t, s, "high", 0, 60, false);
    let same = batch(
        vec![reading(s, 0, -12.0), reading(s, 60 * MIN, -11.0)],
        vec![newer.clone()],
    );
    store.write_batch(same.clone()).await.expect("first");
    let again = store.write_batch(same).await.expect("redelivered");
    assert_eq!(again.readings_written, 0);
    assert_eq!(
        list(store, &everything).await,
        [Excursion::from(newer.clone())]
    );

    let older = excursion(t, s, "high", 0, 20, false);
    store
        .write_batch(batch(Vec::new(), vec![older]))
        .await
        .expect("older view");
    assert_eq!(
        list(store, &everything).await,
        [Excursion::from(newer)],
        "an older view never moves the excursion back"
    );

    // Two views of one excursion in one batch: the newer one stands, whatever the order.
    let a = excursion(t, s, "low", 100, 130, true);
    let b = excursion(t, s, "low", 100, 110, false);
    store
        .write_batch(batch(Vec::new(), vec![a.clone(), b]))
        .await
        .expect("two views");
    let low: Vec<Excursion> = list(store, &everything)
        .await
        .into_iter()
        .filter(|e| e.rule == "low")
        .collect();
    assert_eq!(low, [Excursion::from(a)]);
}

/// Listing: only the sensor's excursions that overlap `[from, to)`, oldest first by
/// (start, rule), in keyset pages that return each once; other tenants' never.
pub async fn excursions_list_by_range_in_pages(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1", "CF-2"]).await;
    let (t, s, other_sensor) = (tenant.id, sensors[0].id, sensors[1].id);
    let rows = vec![
        excursion(t, s, "high", 0, 10, true),
        excursion(t, s, "high", 20, 30, true),
        excursion(t, s, "duration-warning", 20, 30, true),
        excursion(t, s, "high", 40, 55, false),
        excursion(t, other_sensor, "high", 0, 100, true),
    ];
    store
        .write_batch(batch(Vec::new(), rows.clone()))
        .await
        .expect("write");
    let starts = |found: Vec<Excursion>| -> Vec<(i64, String)> {
        found
            .into_iter()
            .map(|e| ((e.start.0 - T0) / MIN, e.rule))
            .collect()
    };
    /// `[from, to)` in minutes, and the (start minute, rule) listed.
    type Case = (i64, i64, &'static [(i64, &'static str)]);
    let cases: &[Case] = &[
        (
            -100,
            100,
            &[
                (0, "high"),
                (20, "duration-warning"),
                (20, "high"),
                (40, "high"),
            ],
        ),
        // An excursion ending exactly at `from` overlaps it; one starting at `to` does not.
        (10, 20, &[(0, "high")]),
        (11, 20, &[]),
        (25, 26, &[(20, "duration-warning"), (20, "high")]),
        // An ongoing one overlaps up to its last reading.
        (55, 1000, &[(40, "high")]),
        (56, 1000, &[]),
    ];
    for &(from, to, want) in cases {
        let got = starts(list(store, &query(t, s, from, to)).await);
        let want: Vec<(i64, String)> = want.iter().map(|&(m, r)| (m, r.to_string())).collect();
        assert_eq!(got, want, "[{from}, {to}) min");
    }

    let mut paged = Vec::new();
    let mut q = ExcursionQuery {
        limit: 1,
        ..query(t, s, -100, 100)
    };
    loop {
        let page = list(store, &q).await;
        assert!(page.len() <= 1, "a page holds at most `limit`");
        let Some(last) = page.last() else { break };
        q.after = Some((last.start, last.rule.clone()));
        paged.extend(page);
        assert!(paged.len() <= 4, "pages repeat items: {paged:?}");
    }
    assert_eq!(
        starts(paged),
        starts(list(store, &query(t, s, -100, 100)).await)
    );

    let stranger = store
        .catalog()
        .create_tenant("otro", "Otro")
        .await
        .expect("tenant");
    assert!(
        list(store, &query(stranger.id, s, -100, 100))
            .await
            .is_empty(),
        "another tenant sees none of them"
    );
}

/// A batch with a wrong excursion (a sensor of another tenant, an unknown sensor, a
/// non-finite peak, an end that is not its last reading) is refused whole: none of its
/// readings nor excursions are stored.
pub async fn excursions_refuse_the_whole_batch_when_wrong(store: &dyn Store) {
    let (tenant, sensors) = setup(store, &["CF-1"]).await;
    let (t, s) = (tenant.id, sensors[0].id);
    let other = store
        .catalog()
        .create_tenant("ajeno", "Ajeno")
        .await
        .expect("tenant");
    let foreign = provision(store, &other, &["X-1"]).await[0].id;
    let mut bad_peak = excursion(t, s, "high", 0, 5, false);
    bad_peak.peak = f64::NAN;
    let mut bad_end = excursion(t, s, "high", 0, 5, true);
    bad_end.end = Some(Timestamp(T0 + 3 * MIN));
    let cases = [
        (
            "a sensor of another tenant",
            excursion(t, foreign, "high", 0, 5, false),
        ),
        (
            "an unknown sensor",
            excursion(t, super::MISSING_SENSOR, "high", 0, 5, false),
        ),
        ("a NaN peak", bad_peak),
        ("an end that is not its last reading", bad_end),
    ];
    for (what, wrong) in cases {
        let good = excursion(t, s, "low", 0, 5, false);
        let result = store
            .write_batch(batch(vec![reading(s, 7 * MIN, 1.0)], vec![good, wrong]))
            .await;
        assert!(
            matches!(result, Err(StoreError::Conflict(_))),
            "{what}: expected Conflict, got {result:?}"
        );
    }
    assert!(
        list(store, &query(t, s, -100, 100)).await.is_empty(),
        "nothing of a refused batch is stored"
    );
    let latest = store.readings().all_latest().await.expect("latest");
    assert!(latest.is_empty(), "nor its readings: {latest:?}");
}
