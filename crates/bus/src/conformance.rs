//! The conformance suite every [`Bus`] backend must pass (embedded and volatile now,
//! Redis Streams and NATS JetStream later), so backends cannot drift apart on the
//! contract in the crate docs.
//!
//! A backend's test implements [`BusHarness`] (how to make a fresh bus and how to restart
//! one) and calls [`run_all`]. Every check gets fresh buses and runs under a time limit;
//! `run_all` runs them all, then panics listing every check that failed.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use vigia_core::{
    Alert, AlertChange, AlertId, AlertState, DomainEvent, IngestBatch, Reading, RuleKind, SensorId,
    Severity, TenantId, Timestamp,
};

use crate::{events, readings, Bus, BusError, Capacity, Delivery, Message, Topic};

/// How a backend's test makes buses for the suite.
#[async_trait]
pub trait BusHarness: Send + Sync {
    /// The backend under test.
    type Bus: Bus;

    /// A new, empty bus that answers `Full` past `capacity` (lag per topic).
    async fn fresh(&self, capacity: Capacity) -> Self::Bus;

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

fn roomy() -> Capacity {
    Capacity::uniform(ROOMY)
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Runs every check, each on fresh buses, and panics listing the ones that failed.
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
        receive_respects_max_weight,
        unacked_redelivered_after_reopen,
        acked_not_redelivered_after_reopen,
        nack_redelivers,
        full_fails_fast_and_recovers_after_acks,
        close_refuses_publishes_and_drains,
        lag_tracks_unacked_weight,
        concurrent_publishers_are_durable_and_delivered_once,
        receive_waits_for_publish_and_for_close,
        foreign_tokens_are_harmless,
        topics_are_independent,
        local_and_byte_paths_agree,
        events_round_trip_and_survive_reopen,
        rejected_messages_are_not_redelivered,
        undecodable_payloads_are_rejected_not_redelivered,
        ping_answers,
        readings_partitions_keep_their_own_order,
        a_partition_changes_hands_with_what_was_in_flight,
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

/// A deterministic event identified by `tag` (its alert id).
pub fn sample_event(tag: u64) -> DomainEvent {
    let tenant = TenantId((tag % 3) as i64 + 1);
    DomainEvent::AlertChanged {
        tenant,
        change: if tag.is_multiple_of(2) {
            AlertChange::Opened
        } else {
            AlertChange::Resolved
        },
        alert: Alert {
            id: AlertId(tag as i64),
            tenant,
            sensor_id: SensorId(tag as i64 * 10),
            sensor: format!("cámara-{tag}"),
            rule: "threshold-critical".into(),
            kind: RuleKind::Threshold,
            severity: Severity::Critical,
            state: if tag.is_multiple_of(2) {
                AlertState::Open
            } else {
                AlertState::Resolved
            },
            metric: "temperature".into(),
            value: -12.5 - tag as f64,
            message: format!("above -18 °C ({tag})"),
            opened_at: Timestamp(1_700_000_000_000 + tag as i64),
            acked_at: None,
            acked_by: None,
            resolved_at: (tag % 2 == 1).then_some(Timestamp(1_700_000_100_000)),
            resolved_by: (tag % 2 == 1).then(|| "auto".to_string()),
            details: None,
        },
    }
}

/// The tag of an event made by [`sample_event`].
pub fn event_tag(event: &DomainEvent) -> u64 {
    match event {
        DomainEvent::AlertChanged { alert, .. } => alert.id.0 as u64,
    }
}

fn batch_of(d: &Delivery) -> Result<Arc<IngestBatch>, String> {
    readings::batch(d).map_err(|e| format!("delivery {:?}: {e}", d.token))
}

fn tags(deliveries: &[Delivery]) -> Result<Vec<u64>, String> {
    deliveries
        .iter()
        .map(|d| batch_of(d).map(|b| tag_of(&b)))
        .collect()
}

fn event_tags(deliveries: &[Delivery]) -> Result<Vec<u64>, String> {
    deliveries
        .iter()
        .map(|d| {
            events::event(d)
                .map(|e| event_tag(&e))
                .map_err(|e| format!("delivery {:?}: {e}", d.token))
        })
        .collect()
}

fn sorted(mut tags: Vec<u64>) -> Vec<u64> {
    tags.sort_unstable();
    tags
}

/// Checks each delivery carries exactly the batch its tag was published with, both
/// through the in-process value (if any) and decoded from its bytes.
fn check_content(deliveries: &[Delivery], readings_of: impl Fn(u64) -> usize) -> CheckResult {
    for d in deliveries {
        let batch = batch_of(d)?;
        let tag = tag_of(&batch);
        let expected = sample_batch(tag, readings_of(tag));
        ensure!(
            *batch == expected,
            "delivery {:?} (tag {tag}) differs from what was published",
            d.token
        );
        let decoded = batch_of(&d.clone().without_local())?;
        ensure!(
            *decoded == expected,
            "the bytes of delivery {:?} (tag {tag}) differ from what was published",
            d.token
        );
        ensure!(
            d.weight as usize == expected.readings.len(),
            "delivery {:?} weighs {}, published {}",
            d.token,
            d.weight,
            expected.readings.len()
        );
    }
    Ok(())
}

async fn publish<B: Bus>(bus: &B, tag: u64, readings: usize) -> CheckResult {
    readings::publish(bus, sample_batch(tag, readings))
        .await
        .map_err(|e| format!("publish of tag {tag} failed: {e}"))
}

async fn publish_event<B: Bus>(bus: &B, tag: u64) -> CheckResult {
    events::publish(bus, sample_event(tag))
        .await
        .map_err(|e| format!("publish of event {tag} failed: {e}"))
}

async fn receive<B: Bus>(bus: &B, topic: Topic, max: usize) -> Result<Vec<Delivery>, String> {
    match tokio::time::timeout(RECEIVE_TIMEOUT, bus.receive(topic, max)).await {
        Ok(Ok(deliveries)) if deliveries.is_empty() => Err("receive returned nothing".into()),
        Ok(Ok(deliveries)) => {
            for d in &deliveries {
                ensure!(
                    d.token.topic() == topic,
                    "receive({topic}) handed out a {} delivery",
                    d.token.topic()
                );
            }
            Ok(deliveries)
        }
        Ok(Err(e)) => Err(format!("receive({topic}) failed: {e}")),
        Err(_) => Err(format!(
            "receive({topic}) found nothing within {RECEIVE_TIMEOUT:?}"
        )),
    }
}

/// Receives until `count` deliveries have arrived.
async fn receive_count<B: Bus>(
    bus: &B,
    topic: Topic,
    count: usize,
    max: usize,
) -> Result<Vec<Delivery>, String> {
    let mut all = Vec::with_capacity(count);
    while all.len() < count {
        let got = receive(bus, topic, max)
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

/// Closes the bus and receives everything left on `topic` until `Closed`.
async fn drain_closed<B: Bus>(bus: &B, topic: Topic) -> Result<Vec<Delivery>, String> {
    bus.close();
    let mut all = Vec::new();
    loop {
        match tokio::time::timeout(RECEIVE_TIMEOUT, bus.receive(topic, 1000)).await {
            Ok(Ok(deliveries)) => all.extend(deliveries),
            Ok(Err(BusError::Closed)) => return Ok(all),
            Ok(Err(e)) => return Err(format!("draining a closed bus: {e}")),
            Err(_) => return Err("a closed bus never reported Closed".into()),
        }
    }
}

fn tokens(deliveries: &[Delivery]) -> Vec<crate::DeliveryToken> {
    deliveries.iter().map(|d| d.token.clone()).collect()
}

async fn ack<B: Bus>(bus: &B, deliveries: &[Delivery]) -> CheckResult {
    bus.ack(tokens(deliveries))
        .await
        .map_err(|e| format!("ack failed: {e}"))
}

async fn nack<B: Bus>(bus: &B, deliveries: &[Delivery]) -> CheckResult {
    bus.nack(tokens(deliveries))
        .await
        .map_err(|e| format!("nack failed: {e}"))
}

async fn expect_lag<B: Bus>(bus: &B, topic: Topic, expected: u64, when: &str) -> CheckResult {
    let lag = bus
        .lag(topic)
        .await
        .map_err(|e| format!("lag({topic}) {when}: {e}"))?;
    ensure!(
        lag == expected,
        "{topic} lag {when}: expected {expected}, got {lag}"
    );
    Ok(())
}

/// Published content comes back identical, from one reading to thousands.
pub async fn round_trip_preserves_content<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    let sizes = [1usize, 25, 0, 5000];
    for (tag, &size) in sizes.iter().enumerate() {
        publish(&bus, tag as u64, size).await?;
    }
    let got = receive_count(&bus, Topic::READINGS, sizes.len(), 100_000).await?;
    check_content(&got, |tag| sizes[tag as usize])?;
    ensure!(tags(&got)? == [0, 1, 2, 3], "order {:?}", tags(&got)?);
    ensure!(
        got.iter().all(|d| !d.redelivered),
        "first deliveries marked redelivered"
    );
    ack(&bus, &got).await?;
    expect_lag(&bus, Topic::READINGS, 0, "after acking everything").await
}

/// One publisher's messages come out in the order they went in.
pub async fn fifo_order<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    for tag in 0..100 {
        publish(&bus, tag, 1).await?;
    }
    let got = receive_count(&bus, Topic::READINGS, 100, 7).await?;
    ensure!(
        tags(&got)? == (0..100).collect::<Vec<_>>(),
        "order {:?}",
        tags(&got)?
    );
    ack(&bus, &got).await
}

/// `receive` stays within `max_weight` unless one delivery alone exceeds it.
pub async fn receive_respects_max_weight<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    let sizes = [3usize, 3, 3, 10, 1, 1];
    for (tag, &size) in sizes.iter().enumerate() {
        publish(&bus, tag as u64, size).await?;
    }
    let mut seen = Vec::new();
    for max in [5usize, 6, 1, 0, 100] {
        let got = receive(&bus, Topic::READINGS, max).await?;
        let weight: usize = got.iter().map(|d| d.weight as usize).sum();
        ensure!(
            got.len() == 1 || weight <= max,
            "receive({max}) returned {} deliveries weighing {weight}",
            got.len()
        );
        seen.extend(got);
        if seen.len() == sizes.len() {
            break;
        }
    }
    if seen.len() < sizes.len() {
        seen.extend(receive_count(&bus, Topic::READINGS, sizes.len() - seen.len(), 100).await?);
    }
    ensure!(
        tags(&seen)? == [0, 1, 2, 3, 4, 5],
        "order {:?}",
        tags(&seen)?
    );
    check_content(&seen, |tag| sizes[tag as usize])?;
    ack(&bus, &seen).await
}

/// What was received but not acked comes back after a restart, marked redelivered,
/// with the lag; the old handle's tokens settle nothing on the new one.
pub async fn unacked_redelivered_after_reopen<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    for tag in 0..6 {
        publish(&bus, tag, tag as usize + 1).await?;
    }
    let got = receive_count(&bus, Topic::READINGS, 6, 1000).await?;
    let mut acked = Vec::new();
    let mut unacked = Vec::new();
    for d in got {
        if tag_of(&*batch_of(&d)?).is_multiple_of(2) {
            acked.push(d);
        } else {
            unacked.push(d);
        }
    }
    ack(&bus, &acked).await?;
    let bus = h.reopen(bus).await;
    expect_lag(&bus, Topic::READINGS, 2 + 4 + 6, "after reopening").await?;
    ack(&bus, &unacked).await?;
    expect_lag(
        &bus,
        Topic::READINGS,
        12,
        "after acking the old run's tokens",
    )
    .await?;
    let again = drain_closed(&bus, Topic::READINGS).await?;
    let again_tags = sorted(tags(&again)?);
    ensure!(
        again_tags == [1, 3, 5],
        "redelivered {again_tags:?}, expected [1, 3, 5]"
    );
    ensure!(
        again.iter().all(|d| d.redelivered),
        "deliveries after a restart are not marked redelivered"
    );
    check_content(&again, |tag| tag as usize + 1)
}

/// Acked messages stay gone after a restart; the reopened bus still works.
pub async fn acked_not_redelivered_after_reopen<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    for tag in 0..3 {
        publish(&bus, tag, 2).await?;
    }
    let got = receive_count(&bus, Topic::READINGS, 3, 1000).await?;
    ack(&bus, &got).await?;
    let bus = h.reopen(bus).await;
    expect_lag(&bus, Topic::READINGS, 0, "after reopening").await?;
    publish(&bus, 10, 2).await?;
    let got = receive(&bus, Topic::READINGS, 1000).await?;
    ensure!(
        tags(&got)? == [10],
        "after reopen received {:?}, expected [10]",
        tags(&got)?
    );
    ack(&bus, &got).await?;
    let rest = drain_closed(&bus, Topic::READINGS).await?;
    ensure!(
        rest.is_empty(),
        "acked messages came back: {:?}",
        tags(&rest)?
    );
    Ok(())
}

/// A nacked delivery is delivered again, marked redelivered; once acked it is not.
pub async fn nack_redelivers<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    for tag in 0..3 {
        publish(&bus, tag, 1).await?;
    }
    let first = receive(&bus, Topic::READINGS, 1).await?;
    ensure!(tags(&first)? == [0], "first receive {:?}", tags(&first)?);
    nack(&bus, &first).await?;
    let all = receive_count(&bus, Topic::READINGS, 3, 1000).await?;
    ensure!(
        sorted(tags(&all)?) == [0, 1, 2],
        "after nack received {:?}",
        tags(&all)?
    );
    for d in &all {
        let tag = tag_of(&*batch_of(d)?);
        ensure!(
            d.redelivered == (tag == 0),
            "tag {tag} redelivered = {}",
            d.redelivered
        );
    }
    check_content(&all, |_| 1)?;
    let (keep, back): (Vec<Delivery>, Vec<Delivery>) = all
        .into_iter()
        .partition(|d| batch_of(d).is_ok_and(|b| tag_of(&b) == 1));
    nack(&bus, &back).await?;
    let again = receive_count(&bus, Topic::READINGS, 2, 1000).await?;
    ensure!(
        sorted(tags(&again)?) == [0, 2],
        "second nack redelivered {:?}",
        tags(&again)?
    );
    ack(&bus, &keep).await?;
    ack(&bus, &again).await?;
    nack(&bus, &again).await?;
    let rest = drain_closed(&bus, Topic::READINGS).await?;
    ensure!(
        rest.is_empty(),
        "nack after ack redelivered {:?}",
        tags(&rest)?
    );
    expect_lag(&bus, Topic::READINGS, 0, "after acking everything").await
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

/// Past a topic's capacity (its lag) `publish` fails fast with `Full` and a retry hint;
/// acks make room again; receiving alone does not.
pub async fn full_fails_fast_and_recovers_after_acks<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy().with(Topic::READINGS, 10)).await;
    for tag in 0..4 {
        publish(&bus, tag, 2).await?;
    }
    let started = Instant::now();
    let outcome = readings::publish(&bus, sample_batch(4, 3)).await;
    expect_full(outcome, 8, 10, started.elapsed())?;
    expect_lag(&bus, Topic::READINGS, 8, "after a refused publish").await?;
    publish(&bus, 5, 2).await?;
    let got = receive_count(&bus, Topic::READINGS, 2, 4).await?;
    let started = Instant::now();
    let outcome = readings::publish(&bus, sample_batch(6, 1)).await;
    expect_full(outcome, 10, 10, started.elapsed())?;
    ack(&bus, &got).await?;
    expect_lag(&bus, Topic::READINGS, 6, "after acking two").await?;
    publish(&bus, 7, 3).await?;
    expect_lag(
        &bus,
        Topic::READINGS,
        9,
        "after publishing into the freed room",
    )
    .await?;
    let rest = drain_closed(&bus, Topic::READINGS).await?;
    ensure!(tags(&rest)? == [2, 3, 5, 7], "left {:?}", tags(&rest)?);
    Ok(())
}

/// After `close`, publishes get `Closed` on every topic and receivers drain what is left,
/// then `Closed`.
pub async fn close_refuses_publishes_and_drains<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    for tag in 0..3 {
        publish(&bus, tag, 1).await?;
    }
    bus.close();
    let started = Instant::now();
    for (topic, outcome) in [
        (
            Topic::READINGS,
            readings::publish(&bus, sample_batch(9, 1)).await,
        ),
        (Topic::EVENTS, events::publish(&bus, sample_event(9)).await),
    ] {
        ensure!(
            matches!(outcome, Err(BusError::Closed)),
            "{topic} publish after close: expected Closed, got {outcome:?}"
        );
    }
    ensure!(
        started.elapsed() <= FAST,
        "Closed took {:?}",
        started.elapsed()
    );
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(receive(&bus, Topic::READINGS, 1).await?);
        if got.len() == 3 {
            break;
        }
    }
    ensure!(tags(&got)? == [0, 1, 2], "drained {:?}", tags(&got)?);
    for topic in Topic::ALL {
        match tokio::time::timeout(FAST, bus.receive(topic, 10)).await {
            Ok(Err(BusError::Closed)) => {}
            Ok(other) => {
                return Err(format!(
                    "receive({topic}) on a drained closed bus: {other:?}"
                ))
            }
            Err(_) => return Err(format!("receive({topic}) on a drained closed bus hung")),
        }
    }
    ack(&bus, &got).await?;
    expect_lag(
        &bus,
        Topic::READINGS,
        0,
        "after acking the drained deliveries",
    )
    .await
}

/// Lag counts weight published and not acked: receive and nack leave it alone.
pub async fn lag_tracks_unacked_weight<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    expect_lag(&bus, Topic::READINGS, 0, "when fresh").await?;
    for (tag, size) in [(0u64, 1usize), (1, 2), (2, 3)] {
        publish(&bus, tag, size).await?;
    }
    expect_lag(&bus, Topic::READINGS, 6, "after publishing 1+2+3").await?;
    let got = receive_count(&bus, Topic::READINGS, 3, 1000).await?;
    expect_lag(&bus, Topic::READINGS, 6, "after receiving").await?;
    ack(&bus, &got[..1]).await?;
    expect_lag(&bus, Topic::READINGS, 5, "after acking the first").await?;
    ack(&bus, &got[..1]).await?;
    expect_lag(&bus, Topic::READINGS, 5, "after acking the first twice").await?;
    nack(&bus, &got[1..2]).await?;
    expect_lag(&bus, Topic::READINGS, 5, "after a nack").await?;
    let again = receive(&bus, Topic::READINGS, 1000).await?;
    ensure!(tags(&again)? == [1], "redelivered {:?}", tags(&again)?);
    ack(&bus, &again).await?;
    ack(&bus, &got[2..]).await?;
    expect_lag(&bus, Topic::READINGS, 0, "after acking everything").await
}

/// 200 concurrent publishers: every publish is durable and received exactly once.
pub async fn concurrent_publishers_are_durable_and_delivered_once<H: BusHarness>(
    h: &H,
) -> CheckResult {
    const PUBLISHERS: u64 = 200;
    const EACH: u64 = 5;
    let total = (PUBLISHERS * EACH) as usize;
    let bus = Arc::new(h.fresh(roomy()).await);
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
    expect_lag(&*bus, Topic::READINGS, total as u64, "after all publishes").await?;
    let got = receive_count(&*bus, Topic::READINGS, total, 64).await?;
    let got_tags = tags(&got)?;
    let unique: HashSet<u64> = got_tags.iter().copied().collect();
    ensure!(
        unique.len() == total,
        "{} duplicates among deliveries",
        total - unique.len()
    );
    for publisher in 0..PUBLISHERS {
        let own: Vec<u64> = got_tags
            .iter()
            .copied()
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
    let again = drain_closed(&bus, Topic::READINGS).await?;
    let again_tags: BTreeSet<u64> = tags(&again)?.into_iter().collect();
    ensure!(
        again.len() == total && again_tags == unique.into_iter().collect(),
        "after reopen {} deliveries ({} distinct), expected {total}",
        again.len(),
        again_tags.len()
    );
    check_content(&again, |_| 1)?;
    ack(&bus, &again).await?;
    expect_lag(&bus, Topic::READINGS, 0, "after acking everything").await
}

/// A waiting `receive` wakes for a publish on its topic (not another's), and for
/// `close` with `Closed`.
pub async fn receive_waits_for_publish_and_for_close<H: BusHarness>(h: &H) -> CheckResult {
    let bus = Arc::new(h.fresh(roomy()).await);
    let waiting = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.receive(Topic::READINGS, 10).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    ensure!(
        !waiting.is_finished(),
        "receive on an empty bus returned at once"
    );
    publish_event(&*bus, 1).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    ensure!(
        !waiting.is_finished(),
        "a readings receive returned for an event"
    );
    publish(&*bus, 1, 1).await?;
    let got = tokio::time::timeout(RECEIVE_TIMEOUT, waiting)
        .await
        .map_err(|_| "a waiting receive missed the publish".to_string())?
        .map_err(|e| format!("receiver task: {e}"))?
        .map_err(|e| format!("waiting receive failed: {e}"))?;
    ensure!(tags(&got)? == [1], "waiting receive got {:?}", tags(&got)?);
    ack(&*bus, &got).await?;
    let waiting = {
        let bus = Arc::clone(&bus);
        tokio::spawn(async move { bus.receive(Topic::READINGS, 10).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    bus.close();
    match tokio::time::timeout(FAST, waiting).await {
        Ok(Ok(Err(BusError::Closed))) => Ok(()),
        Ok(other) => Err(format!("waiting receive after close: {other:?}")),
        Err(_) => Err("close did not wake a waiting receive".into()),
    }
}

/// Tokens another bus handed out settle nothing here, whatever their topic; an empty
/// ack is fine.
pub async fn foreign_tokens_are_harmless<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    let other = h.fresh(roomy()).await;
    for b in [&bus, &other] {
        publish(b, 1, 4).await?;
        publish_event(b, 1).await?;
    }
    let mut foreign = receive(&other, Topic::READINGS, 100).await?;
    foreign.extend(receive(&other, Topic::EVENTS, 100).await?);
    let mut own = receive(&bus, Topic::READINGS, 100).await?;
    own.extend(receive(&bus, Topic::EVENTS, 100).await?);
    ack(&bus, &foreign).await?;
    nack(&bus, &foreign).await?;
    for d in &foreign {
        bus.reject(d.token.clone(), "not mine".into())
            .await
            .map_err(|e| format!("reject of a foreign token: {e}"))?;
    }
    bus.ack(Vec::new())
        .await
        .map_err(|e| format!("empty ack: {e}"))?;
    expect_lag(&bus, Topic::READINGS, 4, "after foreign acks").await?;
    expect_lag(&bus, Topic::EVENTS, 1, "after foreign acks").await?;
    ack(&other, &own).await?;
    expect_lag(&other, Topic::READINGS, 4, "after foreign acks").await?;
    ack(&bus, &own).await?;
    expect_lag(&bus, Topic::READINGS, 0, "after its own acks").await?;
    expect_lag(&bus, Topic::EVENTS, 0, "after its own acks").await?;
    ack(&other, &foreign).await?;
    expect_lag(&other, Topic::EVENTS, 0, "after its own acks").await
}

/// Topics are independent: receive hands out only its topic, lag and capacity are per
/// topic, and settling one topic's deliveries never touches another's.
pub async fn topics_are_independent<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy().with(Topic::READINGS, 3)).await;
    publish(&bus, 1, 3).await?;
    for tag in [1, 2] {
        publish_event(&bus, tag).await?;
    }
    expect_lag(&bus, Topic::READINGS, 3, "after publishing").await?;
    expect_lag(&bus, Topic::EVENTS, 2, "after publishing").await?;
    let outcome = readings::publish(&bus, sample_batch(2, 1)).await;
    expect_full(outcome, 3, 3, Duration::ZERO)?;
    publish_event(&bus, 3).await?;
    let reads = receive(&bus, Topic::READINGS, 100_000).await?;
    ensure!(
        tags(&reads)? == [1],
        "readings receive got {:?}",
        tags(&reads)?
    );
    let evs = receive_count(&bus, Topic::EVENTS, 3, 100).await?;
    ensure!(
        event_tags(&evs)? == [1, 2, 3],
        "events receive got {:?}",
        event_tags(&evs)?
    );
    ack(&bus, &reads).await?;
    expect_lag(&bus, Topic::READINGS, 0, "after acking readings").await?;
    expect_lag(&bus, Topic::EVENTS, 3, "after acking readings").await?;
    nack(&bus, &evs).await?;
    publish(&bus, 4, 1).await?;
    let reads = receive(&bus, Topic::READINGS, 100).await?;
    ensure!(
        tags(&reads)? == [4],
        "a nack of events changed readings: {:?}",
        tags(&reads)?
    );
    let evs = receive_count(&bus, Topic::EVENTS, 3, 100).await?;
    ack(&bus, &evs).await?;
    expect_lag(&bus, Topic::EVENTS, 0, "after acking events").await?;
    expect_lag(&bus, Topic::READINGS, 1, "after acking events").await?;
    ack(&bus, &reads).await
}

/// A consumer gets the same value through the publisher's in-process value (when the
/// backend carries it) as by decoding the bytes, which another process would do.
pub async fn local_and_byte_paths_agree<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    publish(&bus, 7, 300).await?;
    publish_event(&bus, 7).await?;
    let reads = receive(&bus, Topic::READINGS, 1000).await?;
    let evs = receive(&bus, Topic::EVENTS, 1000).await?;
    check_content(&reads, |_| 300)?;
    for d in &evs {
        let fast = events::event(d).map_err(|e| e.to_string())?;
        let slow = events::event(&d.clone().without_local()).map_err(|e| e.to_string())?;
        ensure!(
            *fast == sample_event(7),
            "event through the fast path differs"
        );
        ensure!(*slow == sample_event(7), "event decoded from bytes differs");
        ensure!(d.weight == 1, "an event weighs {}", d.weight);
    }
    ensure!(
        readings::batch(&evs[0]).is_err() && events::event(&reads[0]).is_err(),
        "a delivery decoded as another topic's type"
    );
    ack(&bus, &reads).await?;
    ack(&bus, &evs).await
}

/// Events keep their content through the bus and through a restart.
pub async fn events_round_trip_and_survive_reopen<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    for tag in 0..5 {
        publish_event(&bus, tag).await?;
    }
    let got = events::receive(&bus, 2)
        .await
        .map_err(|e| format!("typed receive: {e}"))?;
    ensure!(got.len() == 2, "receive(2) got {} events", got.len());
    for r in &got {
        ensure!(
            *r.value == sample_event(event_tag(&r.value)),
            "event {} differs",
            event_tag(&r.value)
        );
    }
    bus.ack(got.iter().map(|r| r.token.clone()).collect())
        .await
        .map_err(|e| format!("ack: {e}"))?;
    let bus = h.reopen(bus).await;
    expect_lag(&bus, Topic::EVENTS, 3, "after reopening").await?;
    let again = drain_closed(&bus, Topic::EVENTS).await?;
    ensure!(
        event_tags(&again)? == [2, 3, 4],
        "after reopen got {:?}",
        event_tags(&again)?
    );
    for d in &again {
        let tag = event_tags(std::slice::from_ref(d))?[0];
        let decoded = events::event(&d.clone().without_local()).map_err(|e| e.to_string())?;
        ensure!(
            *decoded == sample_event(tag),
            "event {tag} differs after reopen"
        );
    }
    ack(&bus, &again).await
}

/// A rejected delivery leaves the lag and never comes back, not even after a restart.
pub async fn rejected_messages_are_not_redelivered<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    for tag in 0..3 {
        publish(&bus, tag, 2).await?;
    }
    let got = receive_count(&bus, Topic::READINGS, 3, 1000).await?;
    let mut keep = Vec::new();
    for d in got {
        if tag_of(&*batch_of(&d)?) == 1 {
            bus.reject(d.token.clone(), "rejected by the conformance suite".into())
                .await
                .map_err(|e| format!("reject: {e}"))?;
            bus.reject(d.token, "twice".into())
                .await
                .map_err(|e| format!("second reject: {e}"))?;
        } else {
            keep.push(d);
        }
    }
    expect_lag(&bus, Topic::READINGS, 4, "after rejecting one").await?;
    nack(&bus, &keep).await?;
    let bus = h.reopen(bus).await;
    expect_lag(&bus, Topic::READINGS, 4, "after reopening").await?;
    let again = drain_closed(&bus, Topic::READINGS).await?;
    ensure!(
        sorted(tags(&again)?) == [0, 2],
        "after reject and reopen got {:?}",
        tags(&again)?
    );
    ack(&bus, &again).await?;
    expect_lag(&bus, Topic::READINGS, 0, "after acking the rest").await
}

/// Bytes that are not what a topic carries are rejected by the typed helpers, not handed
/// back forever; the good messages around them flow on.
pub async fn undecodable_payloads_are_rejected_not_redelivered<H: BusHarness>(
    h: &H,
) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    publish(&bus, 1, 2).await?;
    bus.publish(Topic::READINGS, Message::from_bytes(&b"\x01junk"[..], 4))
        .await
        .map_err(|e| format!("publishing junk: {e}"))?;
    publish(&bus, 2, 2).await?;
    publish_event(&bus, 1).await?;
    bus.publish(Topic::EVENTS, Message::from_bytes(&b"{\"v\":1}"[..], 1))
        .await
        .map_err(|e| format!("publishing a junk event: {e}"))?;
    expect_lag(&bus, Topic::READINGS, 8, "with the junk").await?;

    let mut good = Vec::new();
    while good.len() < 2 {
        let got = tokio::time::timeout(RECEIVE_TIMEOUT, readings::receive(&bus, 1))
            .await
            .map_err(|_| "typed receive hung".to_string())?
            .map_err(|e| format!("typed receive: {e}"))?;
        good.extend(got);
    }
    let good_tags: Vec<u64> = good.iter().map(|r| tag_of(&r.value)).collect();
    ensure!(good_tags == [1, 2], "typed receive got {good_tags:?}");
    expect_lag(&bus, Topic::READINGS, 4, "once the junk was rejected").await?;
    let evs = tokio::time::timeout(RECEIVE_TIMEOUT, events::receive(&bus, 10))
        .await
        .map_err(|_| "typed events receive hung".to_string())?
        .map_err(|e| format!("typed events receive: {e}"))?;
    ensure!(
        evs.len() == 1 && event_tag(&evs[0].value) == 1,
        "typed events receive got {} events",
        evs.len()
    );
    let bus = h.reopen(bus).await;
    expect_lag(&bus, Topic::READINGS, 4, "after reopening").await?;
    expect_lag(&bus, Topic::EVENTS, 1, "after reopening").await?;
    let again = drain_closed(&bus, Topic::READINGS).await?;
    ensure!(
        sorted(tags(&again)?) == [1, 2],
        "the junk came back: {} deliveries",
        again.len()
    );
    ack(&bus, &again).await
}

/// `ping` answers on a healthy bus.
pub async fn ping_answers<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    bus.ping().await.map_err(|e| format!("ping: {e}"))
}

async fn publish_to<B: Bus>(bus: &B, topic: Topic, tag: u64, readings: usize) -> CheckResult {
    bus.publish(topic, readings::message(sample_batch(tag, readings)))
        .await
        .map_err(|e| format!("publish of tag {tag} on {topic} failed: {e}"))
}

fn partition(p: usize) -> Result<Topic, String> {
    Topic::readings(p).ok_or_else(|| format!("no readings partition {p}"))
}

/// Readings partitions are separate topics: publishes interleaved over three come out
/// of each in its own order and only there, each with its own lag, summed by
/// `readings::lag`; acking one partition leaves the others waiting.
pub async fn readings_partitions_keep_their_own_order<H: BusHarness>(h: &H) -> CheckResult {
    let bus = h.fresh(roomy()).await;
    for tag in 0..60u64 {
        publish_to(&bus, partition((tag % 3) as usize)?, tag, 2).await?;
    }
    for p in 0..3usize {
        expect_lag(&bus, partition(p)?, 40, "after 20 publishes of 2 readings").await?;
    }
    let total = readings::lag(&bus, 3)
        .await
        .map_err(|e| format!("readings::lag: {e}"))?;
    ensure!(total == 120, "readings::lag over 3 partitions: {total}");
    for p in [2usize, 0, 1] {
        let topic = partition(p)?;
        let got = receive_count(&bus, topic, 20, 7).await?;
        let want: Vec<u64> = (0..60).filter(|t| t % 3 == p as u64).collect();
        ensure!(tags(&got)? == want, "{topic}: order {:?}", tags(&got)?);
        check_content(&got, |_| 2)?;
        let decoded = readings::receive_from(&bus, topic, 10);
        ensure!(
            tokio::time::timeout(Duration::from_millis(200), decoded)
                .await
                .is_err(),
            "{topic} handed out more than was published on it"
        );
        ack(&bus, &got).await?;
        expect_lag(&bus, topic, 0, "after acking it").await?;
    }
    expect_lag(&bus, partition(3)?, 0, "never published on").await
}

/// A partition's new owner gets what the old one had in flight: the old owner acks some
/// deliveries of partition 2, dies (a restart of the handle, as a process that lost its
/// lease), and the next handle receives exactly the rest, marked redelivered, while
/// partition 1 — owned elsewhere, never received — keeps all it had, in order.
pub async fn a_partition_changes_hands_with_what_was_in_flight<H: BusHarness>(
    h: &H,
) -> CheckResult {
    let (moving, staying) = (partition(2)?, partition(1)?);
    let bus = h.fresh(roomy()).await;
    for tag in 0..8u64 {
        publish_to(&bus, moving, tag, 3).await?;
    }
    for tag in 100..103u64 {
        publish_to(&bus, staying, tag, 1).await?;
    }
    let got = receive_count(&bus, moving, 8, 1000).await?;
    let (done, in_flight): (Vec<Delivery>, Vec<Delivery>) = got
        .into_iter()
        .partition(|d| batch_of(d).is_ok_and(|b| tag_of(&b) < 5));
    ack(&bus, &done).await?;
    let bus = h.reopen(bus).await;
    expect_lag(&bus, moving, 9, "on the new owner").await?;
    expect_lag(&bus, staying, 3, "of the partition that did not move").await?;
    let again = receive_count(&bus, moving, 3, 1000).await?;
    ensure!(
        sorted(tags(&again)?) == [5, 6, 7],
        "the new owner got {:?}, expected [5, 6, 7]",
        tags(&again)?
    );
    ensure!(
        again.iter().all(|d| d.redelivered),
        "what the old owner had in flight is not marked redelivered"
    );
    drop(in_flight);
    ack(&bus, &again).await?;
    let others = receive_count(&bus, staying, 3, 1000).await?;
    // (A backend may mark them redelivered after a restart: it cannot know they were not.)
    ensure!(
        tags(&others)? == [100, 101, 102],
        "the partition that did not move: {:?}",
        tags(&others)?
    );
    ack(&bus, &others).await?;
    expect_lag(&bus, moving, 0, "after the new owner acked").await
}
