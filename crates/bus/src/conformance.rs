//! The conformance suite every [`Bus`] backend must pass (embedded now, Redis Streams and
//! NATS JetStream later), so backends cannot drift apart on the contract in the crate docs.
//!
//! A backend's test implements [`BusHarness`] (how to make a fresh bus and how to restart
//! one) and calls [`run_all`]. Every check gets a fresh bus and runs under a time limit;
//! `run_all` runs them all, then panics listing every check that failed.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use vigia_core::{IngestBatch, Reading, TenantId, Timestamp};

use crate::{Bus, BusError, Delivery, DeliveryId};

/// How a backend's test makes buses for the suite.
#[async_trait]
pub trait BusHarness: Send + Sync {
    /// The backend under test.
    type Bus: Bus;

    /// A new, empty bus that answers `Full` past `capacity_readings` unacked readings.
    async fn fresh(&self, capacity_readings: u64) -> Self::Bus;

    /// Stops `old` the way a process exit would (nothing more is acked) and opens the same
    /// bus again, with the same capacity, as a restarted process would.
    async fn reopen(&self, old: Self::Bus) -> Self::Bus;
}

/// What a failed check says.
pub type CheckResult = Result<(), String>;

/// Generous: a check that needs longer than this is hung, not slow.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// One `receive` that should find something waiting.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// "Fails fast": `Full` and `Closed` must come back at least this quickly.
const FAST: Duration = Duration::from_millis(500);
const ROOMY: u64 = 1_000_000;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Runs every check, each on a fresh bus, and panics listing the ones that failed.
pub async fn run_all<H: BusHarness>(harness: &H) {
    let mut failures = Vec::new();
    macro_rules! run {
        ($($check:ident),+ $(,)?) => {
            $( run_check(stringify!($check), $check(harness), &mut failures).await; )+
        };
    }
    run!(
        round_trip_preserves_content,
        fifo_order,
        receive_respects_max_readings,
        unacked_redelivered_after_reopen,
        acked_not_redelivered_after_reopen,
        nack_redelivers,
        full_fails_fast_and_recovers_after_acks,
        close_refuses_publishes_and_drains,
        depth_tracks_unacked_readings,
        concurrent_publishers_are_durable_and_delivered_once,
        receive_waits_for_publish_and_for_close,
        unknown_ids_are_harmless,
        ping_answers,
    );
    assert!(
        failures.is_empty(),
        "{} bus conformance check(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

async fn run_check(
    name: &str,
    check: impl Future<Output = CheckResult>,
    failures: &mut Vec<String>,
) {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("did not finish within {CHECK_TIMEOUT:?}")),
    };
    match outcome {
        Ok(()) => println!("bus conformance: {name} ok ({:?})", started.elapsed()),
        Err(why) => {
            println!("bus conformance: {name} FAILED: {why}");
            failures.push(format!("{name}: {why}"));
        }
    }
}

/// A deterministic batch identified by `tag` (its `received_ms`), with `readings`
/// readings whose content varies enough to catch encoding slips.
pub fn sample_batch(tag: u64, readings: usize) -> IngestBatch {
    let base = 1_700_000_000_000 + tag as i64 * 1000;
    IngestBatch {
        tenant: TenantId((tag % 5) as i64 + 1),
        received_ms: tag as i64,
        readings: (0..readings)
            .map(|i| Reading {
                sensor: match i % 3 {
                    0 => format!("CF-{tag}"),
                    1 => format!("cámara-ñ-{i}"),
                    _ => String::new(),
                },
                metric: if i % 2 == 0 {
                    "temperature"
                } else {
                    "humidity"
                }
                .into(),
                ts: Timestamp(if i % 4 == 3 {
                    -(i as i64)
                } else {
                    base + i as i64
                }),
                value: match i % 5 {
                    0 => -19.75 - tag as f64,
                    1 => f64::MAX,
                    2 => f64::MIN_POSITIVE,
                    3 => 0.0,
                    _ => i as f64 * 0.125,
                },
            })
            .collect(),
    }
}

/// The tag of a batch made by [`sample_batch`].
pub fn tag_of(batch: &IngestBatch) -> u64 {
    batch.received_ms as u64
}

fn tags(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| tag_of(&d.batch)).collect()
}

fn ids(deliveries: &[Delivery]) -> Vec<DeliveryId> {
    deliveries.iter().map(|d| d.id).collect()
}

/// Checks each delivery carries exactly the batch its tag was published with.
fn check_content(deliveries: &[Delivery], readings_of: impl Fn(u64) -> usize) -> CheckResult {
    for d in deliveries {
        let tag = tag_of(&d.batch);
        ensure!(
            d.batch == sample_batch(tag, readings_of(tag)),
            "delivery {:?} (tag {tag}) differs from what was published",
            d.id
        );
    }
    Ok(())
}

async fn publish<B: Bus>(bus: &B, tag: u64, readings: usize) -> CheckResult {
    bus.publish(sample_batch(tag, readings))
        .await
        .map_err(|e| format!("publish of tag {tag} failed: {e}"))
}

async fn receive<B: Bus>(bus: &B, max_readings: usize) -> Result<Vec<Delivery>, String> {
    match tokio::time::timeout(RECEIVE_TIMEOUT, bus.receive(max_readings)).await {
        Ok(Ok(deliveries)) if deliveries.is_empty() => Err("receive returned nothing".into()),
        Ok(Ok(deliveries)) => Ok(deliveries),
        Ok(Err(e)) => Err(format!("receive failed: {e}")),
        Err(_) => Err(format!("receive found nothing within {RECEIVE_TIMEOUT:?}")),
    }
}

/// Receives until `count` deliveries have arrived.
async fn receive_count<B: Bus>(
    bus: &B,
    count: usize,
    max_readings: usize,
) -> Result<Vec<Delivery>, String> {
    let mut all = Vec::with_capacity(count);
    while all.len() < count {
        let got = receive(bus, max_readings)
            .await
            .map_err(|e| format!("after {} of {count} deliveries: {e}", all.len()))?;
        all.extend(got);
    }
    ensure!(
        all.len() == count,
        "expected {count} deliveries, got {}",
        all.len()
    );
    Ok(all)
}

/// Closes the bus and receives everything left until `Closed`.
async fn drain_closed<B: Bus>(bus: &B) -> Result<Vec<Delivery>, String> {
    bus.close();
    let mut all = Vec::new();
    loop {
        match tokio::time::timeout(RECEIVE_TIMEOUT, bus.receive(1000)).await {
            Ok(Ok(deliveries)) => all.extend(deliveries),
            Ok(Err(BusError::Closed)) => return Ok(all),
            Ok(Err(e)) => return Err(format!("draining a closed bus: {e}")),
            Err(_) => return Err("a closed bus never reported Closed".into()),
        }
    }
}

async fn ack<B: Bus>(bus: &B, deliveries: &[Delivery]) -> CheckResult {
    bus.ack(&ids(deliveries))
        .await
        .map_err(|e| format!("ack failed: {e}"))
}

fn expect_depth<B: Bus>(bus: &B, expected: u64, when: &str) -> CheckResult {
    let depth = bus.depth();
    ensure!(
        depth == expected,
        "depth {when}: expected {expected}, got {depth}"
    );
    Ok(())
}

/// Published content comes back identical, from one reading to thousands.
pub async fn round_trip_preserves_content<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    let sizes = [1usize, 25, 0, 5000];
    for (tag, &size) in sizes.iter().enumerate() {
        publish(&bus, tag as u64, size).await?;
    }
    let got = receive_count(&bus, sizes.len(), 100_000).await?;
    check_content(&got, |tag| sizes[tag as usize])?;
    ensure!(tags(&got) == [0, 1, 2, 3], "order {:?}", tags(&got));
    ack(&bus, &got).await?;
    expect_depth(&bus, 0, "after acking everything")
}

/// One publisher's batches come out in the order they went in.
pub async fn fifo_order<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    for tag in 0..100 {
        publish(&bus, tag, 1).await?;
    }
    let got = receive_count(&bus, 100, 7).await?;
    ensure!(
        tags(&got) == (0..100).collect::<Vec<_>>(),
        "order {:?}",
        tags(&got)
    );
    ack(&bus, &got).await
}

/// `receive` stays within `max_readings` unless one delivery alone exceeds it.
pub async fn receive_respects_max_readings<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    let sizes = [3usize, 3, 3, 10, 1, 1];
    for (tag, &size) in sizes.iter().enumerate() {
        publish(&bus, tag as u64, size).await?;
    }
    let mut seen = Vec::new();
    for max in [5usize, 6, 1, 0, 100] {
        let got = receive(&bus, max).await?;
        let readings: usize = got.iter().map(|d| d.batch.readings.len()).sum();
        ensure!(
            got.len() == 1 || readings <= max,
            "receive({max}) returned {} deliveries holding {readings} readings",
            got.len()
        );
        seen.extend(got);
        if seen.len() == sizes.len() {
            break;
        }
    }
    if seen.len() < sizes.len() {
        seen.extend(receive_count(&bus, sizes.len() - seen.len(), 100).await?);
    }
    ensure!(tags(&seen) == [0, 1, 2, 3, 4, 5], "order {:?}", tags(&seen));
    check_content(&seen, |tag| sizes[tag as usize])?;
    ack(&bus, &seen).await
}

/// What was received but not acked comes back after a restart, with the depth.
pub async fn unacked_redelivered_after_reopen<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    for tag in 0..6 {
        publish(&bus, tag, tag as usize + 1).await?;
    }
    let got = receive_count(&bus, 6, 1000).await?;
    let acked: Vec<Delivery> = got
        .into_iter()
        .filter(|d| tag_of(&d.batch).is_multiple_of(2))
        .collect();
    ack(&bus, &acked).await?;
    let bus = h.reopen(bus).await;
    expect_depth(&bus, 2 + 4 + 6, "after reopening")?;
    let again = drain_closed(&bus).await?;
    let mut again_tags = tags(&again);
    again_tags.sort_unstable();
    ensure!(
        again_tags == [1, 3, 5],
        "redelivered {again_tags:?}, expected [1, 3, 5]"
    );
    check_content(&again, |tag| tag as usize + 1)
}

/// Acked messages stay gone after a restart; the reopened bus still works.
pub async fn acked_not_redelivered_after_reopen<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    for tag in 0..3 {
        publish(&bus, tag, 2).await?;
    }
    let got = receive_count(&bus, 3, 1000).await?;
    ack(&bus, &got).await?;
    let bus = h.reopen(bus).await;
    expect_depth(&bus, 0, "after reopening")?;
    publish(&bus, 10, 2).await?;
    let got = receive(&bus, 1000).await?;
    ensure!(
        tags(&got) == [10],
        "after reopen received {:?}, expected [10]",
        tags(&got)
    );
    ack(&bus, &got).await?;
    let rest = drain_closed(&bus).await?;
    ensure!(
        rest.is_empty(),
        "acked messages came back: {:?}",
        tags(&rest)
    );
    Ok(())
}

/// A nacked delivery is delivered again; once acked it is not.
pub async fn nack_redelivers<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    for tag in 0..3 {
        publish(&bus, tag, 1).await?;
    }
    let first = receive(&bus, 1).await?;
    ensure!(tags(&first) == [0], "first receive {:?}", tags(&first));
    bus.nack(&ids(&first))
        .await
        .map_err(|e| format!("nack: {e}"))?;
    let all = receive_count(&bus, 3, 1000).await?;
    let mut all_tags = tags(&all);
    all_tags.sort_unstable();
    ensure!(all_tags == [0, 1, 2], "after nack received {all_tags:?}");
    check_content(&all, |_| 1)?;
    let (keep, back): (Vec<Delivery>, Vec<Delivery>) =
        all.into_iter().partition(|d| tag_of(&d.batch) == 1);
    bus.nack(&ids(&back))
        .await
        .map_err(|e| format!("nack: {e}"))?;
    let again = receive_count(&bus, 2, 1000).await?;
    let mut again_tags = tags(&again);
    again_tags.sort_unstable();
    ensure!(
        again_tags == [0, 2],
        "second nack redelivered {again_tags:?}"
    );
    ack(&bus, &keep).await?;
    ack(&bus, &again).await?;
    bus.nack(&ids(&again))
        .await
        .map_err(|e| format!("nack after ack: {e}"))?;
    let rest = drain_closed(&bus).await?;
    ensure!(
        rest.is_empty(),
        "nack after ack redelivered {:?}",
        tags(&rest)
    );
    expect_depth(&bus, 0, "after acking everything")
}

fn expect_full(
    outcome: Result<(), BusError>,
    pending: u64,
    capacity: u64,
    took: Duration,
) -> CheckResult {
    match outcome {
        Err(BusError::Full {
            pending: p,
            capacity: c,
            retry_after,
        }) => {
            ensure!(
                p == pending && c == capacity,
                "Full says {p}/{c}, expected {pending}/{capacity}"
            );
            ensure!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60),
                "retry_after {retry_after:?} is no useful hint"
            );
            ensure!(took <= FAST, "Full took {took:?}");
            Ok(())
        }
        other => Err(format!("expected Full, got {other:?}")),
    }
}

/// Past capacity `publish` fails fast with `Full`; acks make room again.
pub async fn full_fails_fast_and_recovers_after_acks<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(10).await;
    for tag in 0..4 {
        publish(&bus, tag, 2).await?;
    }
    let started = Instant::now();
    let outcome = bus.publish(sample_batch(4, 3)).await;
    expect_full(outcome, 8, 10, started.elapsed())?;
    expect_depth(&bus, 8, "after a refused publish")?;
    publish(&bus, 5, 2).await?;
    let started = Instant::now();
    let outcome = bus.publish(sample_batch(6, 1)).await;
    expect_full(outcome, 10, 10, started.elapsed())?;
    let got = receive_count(&bus, 2, 4).await?;
    ack(&bus, &got).await?;
    expect_depth(&bus, 6, "after acking two")?;
    publish(&bus, 7, 3).await?;
    expect_depth(&bus, 9, "after publishing into the freed room")?;
    let rest = drain_closed(&bus).await?;
    ensure!(tags(&rest) == [2, 3, 5, 7], "left {:?}", tags(&rest));
    Ok(())
}

/// After `close`, publishes get `Closed` and receivers drain what is left, then `Closed`.
pub async fn close_refuses_publishes_and_drains<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    for tag in 0..3 {
        publish(&bus, tag, 1).await?;
    }
    bus.close();
    let started = Instant::now();
    match bus.publish(sample_batch(9, 1)).await {
        Err(BusError::Closed) => {}
        other => {
            return Err(format!(
                "publish after close: expected Closed, got {other:?}"
            ))
        }
    }
    ensure!(
        started.elapsed() <= FAST,
        "Closed took {:?}",
        started.elapsed()
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(receive(&bus, 1).await?);
        if got.len() == 3 {
            break;
        }
    }
    ensure!(tags(&got) == [0, 1, 2], "drained {:?}", tags(&got));
    match tokio::time::timeout(FAST, bus.receive(10)).await {
        Ok(Err(BusError::Closed)) => {}
        Ok(other) => return Err(format!("receive on a drained closed bus: {other:?}")),
        Err(_) => return Err("receive on a drained closed bus hung".into()),
    }
    ack(&bus, &got).await?;
    expect_depth(&bus, 0, "after acking the drained deliveries")
}

/// Depth counts readings published and not acked: receive and nack leave it alone.
pub async fn depth_tracks_unacked_readings<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    expect_depth(&bus, 0, "when fresh")?;
    for (tag, size) in [(0u64, 1usize), (1, 2), (2, 3)] {
        publish(&bus, tag, size).await?;
    }
    expect_depth(&bus, 6, "after publishing 1+2+3")?;
    let got = receive_count(&bus, 3, 1000).await?;
    expect_depth(&bus, 6, "after receiving")?;
    ack(&bus, &got[..1]).await?;
    expect_depth(&bus, 5, "after acking the first")?;
    ack(&bus, &got[..1]).await?;
    expect_depth(&bus, 5, "after acking the first twice")?;
    bus.nack(&ids(&got[1..2]))
        .await
        .map_err(|e| format!("nack: {e}"))?;
    expect_depth(&bus, 5, "after a nack")?;
    let again = receive(&bus, 1000).await?;
    ensure!(tags(&again) == [1], "redelivered {:?}", tags(&again));
    ack(&bus, &again).await?;
    ack(&bus, &got[2..]).await?;
    expect_depth(&bus, 0, "after acking everything")
}

/// 200 concurrent publishers: every publish is durable and received exactly once.
pub async fn concurrent_publishers_are_durable_and_delivered_once<H: BusHarness>(
    h: &H,
) -> CheckResult {
    const PUBLISHERS: u64 = 200;
    const EACH: u64 = 5;
    let total = (PUBLISHERS * EACH) as usize;
    let bus = Arc::new(h.fresh(ROOMY).await);
    let mut tasks = tokio::task::JoinSet::new();
    for publisher in 0..PUBLISHERS {
        let bus = Arc::clone(&bus);
        tasks.spawn(async move {
            for i in 0..EACH {
                publish(&*bus, publisher * 1000 + i, 1).await?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| format!("publisher task: {e}"))??;
    }
    expect_depth(&*bus, total as u64, "after all publishes")?;
    let got = receive_count(&*bus, total, 64).await?;
    let unique: HashSet<u64> = tags(&got).into_iter().collect();
    ensure!(
        unique.len() == total,
        "{} duplicates among deliveries",
        total - unique.len()
    );
    for publisher in 0..PUBLISHERS {
        let own: Vec<u64> = tags(&got)
            .into_iter()
            .filter(|t| t / 1000 == publisher)
            .collect();
        ensure!(
            own.windows(2).all(|w| w[0] < w[1]),
            "publisher {publisher} out of order: {own:?}"
        );
    }
    let bus = Arc::try_unwrap(bus)
        .map_err(|_| "bus still shared after the publishers ended".to_string())?;
    let bus = h.reopen(bus).await;
    let again = drain_closed(&bus).await?;
    let again_tags: BTreeSet<u64> = tags(&again).into_iter().collect();
    ensure!(
        again.len() == total && again_tags == unique.into_iter().collect(),
        "after reopen {} deliveries ({} distinct), expected {total}",
        again.len(),
        again_tags.len()
    );
    check_content(&again, |_| 1)?;
    ack(&bus, &again).await?;
    expect_depth(&bus, 0, "after acking everything")
}

/// A waiting `receive` wakes for a publish, and for `close` with `Closed`.
pub async fn receive_waits_for_publish_and_for_close<H: BusHarness>(h: &H) -> CheckResult {
    let bus = Arc::new(h.fresh(ROOMY).await);
    let waiting = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.receive(10).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    ensure!(
        !waiting.is_finished(),
        "receive on an empty bus returned at once"
    );
    publish(&*bus, 1, 1).await?;
    let got = tokio::time::timeout(RECEIVE_TIMEOUT, waiting)
        .await
        .map_err(|_| "a waiting receive missed the publish".to_string())?
        .map_err(|e| format!("receiver task: {e}"))?
        .map_err(|e| format!("waiting receive failed: {e}"))?;
    ensure!(tags(&got) == [1], "waiting receive got {:?}", tags(&got));
    ack(&*bus, &got).await?;
    let waiting = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.receive(10).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.close();
    match tokio::time::timeout(FAST, waiting).await {
        Ok(Ok(Err(BusError::Closed))) => Ok(()),
        Ok(other) => Err(format!("waiting receive after close: {other:?}")),
        Err(_) => Err("close did not wake a waiting receive".into()),
    }
}

/// Acks and nacks of ids the bus never handed out change nothing.
pub async fn unknown_ids_are_harmless<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    publish(&bus, 1, 4).await?;
    let bogus = [DeliveryId(u64::MAX), DeliveryId(0)];
    bus.ack(&bogus)
        .await
        .map_err(|e| format!("ack of unknown ids: {e}"))?;
    bus.nack(&bogus)
        .await
        .map_err(|e| format!("nack of unknown ids: {e}"))?;
    bus.ack(&[]).await.map_err(|e| format!("empty ack: {e}"))?;
    expect_depth(&bus, 4, "after bogus acks")?;
    let got = drain_closed(&bus).await?;
    ensure!(tags(&got) == [1], "received {:?}", tags(&got));
    Ok(())
}

/// `ping` answers on a healthy bus.
pub async fn ping_answers<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(ROOMY).await;
    bus.ping().await.map_err(|e| format!("ping: {e}"))
}
