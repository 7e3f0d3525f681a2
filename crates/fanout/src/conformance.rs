//! The conformance suite every [`Fanout`] backend must pass (in process, Redis pub/sub,
//! NATS subjects), so backends cannot drift apart on the semantics in the crate docs.
//! Enabled by the `conformance` feature.
//!
//! A backend's test implements [`FanoutHarness`] (how to open two handles that stand
//! for two processes of one deployment, and how someone else publishes raw bytes on its
//! channels) and calls [`run_all`]. Every check gets a fresh pair under a prefix of its
//! own and runs under a time limit; `run_all` runs them all, then panics listing every
//! check that failed.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast::error::TryRecvError;
use vigia_core::{
    Control, FanoutEnvelope, FanoutMessage, LiveEvent, Reading, SensorId, TenantId, Timestamp,
};

use crate::{Fanout, FanoutOptions};

/// Two handles of one deployment: in process they may be the same handle.
pub struct Pair {
    /// The first "process".
    pub a: Arc<dyn Fanout>,
    /// The second.
    pub b: Arc<dyn Fanout>,
    /// The channel / subject prefix they share (unique to this pair).
    pub prefix: String,
}

/// Where someone else's raw bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawChannel {
    /// The live channel / subject.
    Live,
    /// The control channel / subject.
    Control,
}

/// How a backend's test makes fan-outs for the suite.
#[async_trait]
pub trait FanoutHarness: Send + Sync {
    /// Two handles opened with `options` that stand for two processes of one
    /// deployment, under a prefix no other pair uses.
    async fn pair(&self, options: &FanoutOptions) -> Pair;

    /// Publishes `bytes` on `channel` of `pair`'s deployment as a foreign client would
    /// (not through a fan-out handle); `false` when the backend has no wire to publish on.
    async fn publish_raw(&self, pair: &Pair, channel: RawChannel, bytes: &[u8]) -> bool;
}

/// What a failed check says.
pub type CheckResult = Result<(), String>;

/// Generous: a check that needs longer than this is hung, not slow.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a message may take to reach another process.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long to watch for a duplicate that should never come.
const SETTLE: Duration = Duration::from_millis(300);
/// The live capacity of the suite's handles.
pub const LIVE_CAPACITY: usize = 16;

/// The options the suite opens its handles with: a small live capacity (lag is easy to
/// provoke) and a fast presence check (idleness is seen quickly).
/// A channel/subject prefix no other test, run or process uses.
pub fn unique_prefix(test: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "vt-{test}-{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn suite_options() -> FanoutOptions {
    FanoutOptions {
        live_capacity: LIVE_CAPACITY,
        presence_every: Duration::from_millis(50),
        ..FanoutOptions::default()
    }
}

/// Long enough for every handle to have run a presence check since a subscriber came.
fn presence_settle(options: &FanoutOptions) -> Duration {
    options.presence_every * 10
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Runs every check, each on a fresh pair, and panics listing the ones that failed.
pub async fn run_all<H: FanoutHarness>(harness: &H) {
    let mut failures = Vec::new();
    macro_rules! run {
        ($($check:ident),+ $(,)?) => {
            $( run_check(stringify!($check), $check(harness), &mut failures).await; )+
        };
    }
    run!(
        live_events_reach_the_subscribers_of_every_process_once,
        control_messages_reach_every_process_exactly_once,
        a_slow_subscriber_lags_and_holds_at_most_the_capacity,
        publishing_with_nobody_listening_is_fine_and_idleness_is_seen,
        bad_wire_messages_are_ignored_and_counted,
    );
    assert!(
        failures.is_empty(),
        "{} fan-out conformance check(s) failed:\n  {}",
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
        Ok(()) => println!("fan-out conformance: {name} ok ({:?})", started.elapsed()),
        Err(why) => {
            println!("fan-out conformance: {name} FAILED: {why}");
            failures.push(format!("{name}: {why}"));
        }
    }
}

/// A live event identified by `tag` (its one reading's timestamp).
pub fn tagged_event(tag: i64) -> LiveEvent {
    LiveEvent::Readings {
        tenant: TenantId(tag % 3 + 1),
        readings: Arc::new(vec![Reading {
            sensor: format!("cámara-{tag}"),
            metric: "temperature".into(),
            ts: Timestamp(tag),
            value: -18.5 - tag as f64,
        }]),
    }
}

/// The tag of an event made by [`tagged_event`].
pub fn tag_of(event: &LiveEvent) -> Option<i64> {
    match event {
        LiveEvent::Readings { readings, .. } => readings.first().map(|r| r.ts.0),
        LiveEvent::Alert { .. } => None,
    }
}

/// Waits until `condition` holds, for at most `limit`.
async fn eventually(what: &str, limit: Duration, condition: impl Fn() -> bool) -> CheckResult {
    let deadline = Instant::now() + limit;
    while !condition() {
        ensure!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The next event of `rx` within [`ARRIVAL`].
async fn next_event(
    rx: &mut tokio::sync::broadcast::Receiver<LiveEvent>,
    what: &str,
) -> Result<LiveEvent, String> {
    match tokio::time::timeout(ARRIVAL, rx.recv()).await {
        Ok(Ok(event)) => Ok(event),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: nothing within {ARRIVAL:?}")),
    }
}

/// Handlers that record what they were called with.
fn recorder(fanout: &dyn Fanout) -> Arc<Mutex<Vec<Control>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    fanout.on_control(Arc::new(move |m: &Control| {
        sink.lock().unwrap().push(m.clone());
    }));
    seen
}

fn count(seen: &Mutex<Vec<Control>>) -> usize {
    seen.lock().unwrap().len()
}

async fn live_events_reach_the_subscribers_of_every_process_once<H: FanoutHarness>(
    harness: &H,
) -> CheckResult {
    let options = suite_options();
    let pair = harness.pair(&options).await;
    let (mut rx_a, mut rx_b) = (pair.a.subscribe_live(), pair.b.subscribe_live());
    tokio::time::sleep(presence_settle(&options)).await;
    pair.a.publish_live(tagged_event(1));
    let got = next_event(&mut rx_b, "b's subscriber, from a").await?;
    ensure!(got == tagged_event(1), "b got {got:?}");
    pair.b.publish_live(tagged_event(2));
    let got = next_event(&mut rx_a, "a's subscriber").await?;
    ensure!(got == tagged_event(1), "a's own event first, got {got:?}");
    let got = next_event(&mut rx_a, "a's subscriber, from b").await?;
    ensure!(got == tagged_event(2), "a got {got:?}");
    let got = next_event(&mut rx_b, "b's subscriber, its own").await?;
    ensure!(got == tagged_event(2), "b got {got:?}");
    tokio::time::sleep(SETTLE).await;
    for (name, rx) in [("a", &mut rx_a), ("b", &mut rx_b)] {
        let more = rx.try_recv();
        ensure!(
            matches!(more, Err(TryRecvError::Empty)),
            "{name}'s subscriber got an event twice: {more:?}"
        );
    }
    Ok(())
}

async fn control_messages_reach_every_process_exactly_once<H: FanoutHarness>(
    harness: &H,
) -> CheckResult {
    let pair = harness.pair(&suite_options()).await;
    let (seen_a, seen_b) = (recorder(pair.a.as_ref()), recorder(pair.b.as_ref()));
    let first = Control::ExcursionForgotten {
        sensor: SensorId(7),
        rule: "threshold-critical".into(),
    };
    pair.a.publish_control(first.clone());
    ensure!(
        count(&seen_a) == 1,
        "the sender's own handlers run before publish_control returns"
    );
    eventually("b's handler called", ARRIVAL, || count(&seen_b) >= 1).await?;
    let second = Control::KeyRevoked { hash: [0x5a; 32] };
    pair.b.publish_control(second.clone());
    eventually("a's handler called for b's message", ARRIVAL, || {
        count(&seen_a) >= 2
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    let expected = vec![first, second];
    for (name, seen) in [("a", &seen_a), ("b", &seen_b)] {
        let seen = seen.lock().unwrap().clone();
        ensure!(
            seen == expected,
            "{name}'s handler saw {seen:?}, expected each message once: {expected:?}"
        );
    }
    Ok(())
}

async fn a_slow_subscriber_lags_and_holds_at_most_the_capacity<H: FanoutHarness>(
    harness: &H,
) -> CheckResult {
    const EVENTS: i64 = 200;
    let options = suite_options();
    let pair = harness.pair(&options).await;
    let mut slow = pair.b.subscribe_live();
    let mut fast = pair.b.subscribe_live();
    tokio::time::sleep(presence_settle(&options)).await;
    let reader = tokio::spawn(async move {
        // Reads until the last event (it may lag too; only the end matters).
        loop {
            match fast.recv().await {
                Ok(event) if tag_of(&event) == Some(EVENTS - 1) => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
    });
    for tag in 0..EVENTS {
        pair.a.publish_live(tagged_event(tag));
    }
    let finished = tokio::time::timeout(ARRIVAL, reader).await;
    ensure!(
        matches!(finished, Ok(Ok(true))),
        "the last event never reached b: {finished:?}"
    );
    let lagged = slow.try_recv();
    ensure!(
        matches!(lagged, Err(TryRecvError::Lagged(n)) if n > 0),
        "the slow subscriber should be told it lagged, got {lagged:?}"
    );
    let mut kept = Vec::new();
    while let Ok(event) = slow.try_recv() {
        kept.push(tag_of(&event));
    }
    // What a receiver can still get is what the channel holds: the memory bound.
    ensure!(
        kept.len() <= LIVE_CAPACITY && kept.last() == Some(&Some(EVENTS - 1)),
        "after the lag the newest events follow, at most the capacity: {kept:?}"
    );
    Ok(())
}

async fn publishing_with_nobody_listening_is_fine_and_idleness_is_seen<H: FanoutHarness>(
    harness: &H,
) -> CheckResult {
    let options = suite_options();
    let pair = harness.pair(&options).await;
    for tag in 0..100 {
        pair.a.publish_live(tagged_event(tag));
    }
    pair.a
        .publish_control(Control::KeyRevoked { hash: [1; 32] });
    let limit = presence_settle(&options) + ARRIVAL;
    eventually("both idle with no subscriber anywhere", limit, || {
        pair.a.live_is_idle() && pair.b.live_is_idle()
    })
    .await?;
    let rx = pair.b.subscribe_live();
    ensure!(!pair.b.live_is_idle(), "b has a subscriber itself");
    eventually("a sees b's subscriber", limit, || !pair.a.live_is_idle()).await?;
    drop(rx);
    eventually("both idle again once it left", limit, || {
        pair.a.live_is_idle() && pair.b.live_is_idle()
    })
    .await
}

async fn bad_wire_messages_are_ignored_and_counted<H: FanoutHarness>(harness: &H) -> CheckResult {
    let options = suite_options();
    let pair = harness.pair(&options).await;
    let mut rx = pair.b.subscribe_live();
    let seen = recorder(pair.b.as_ref());
    tokio::time::sleep(presence_settle(&options)).await;
    let newer = String::from_utf8(
        FanoutEnvelope {
            origin: 1,
            message: FanoutMessage::Live(tagged_event(99)),
        }
        .encode(),
    )
    .expect("JSON")
    .replacen("\"v\":1", "\"v\":99", 1);
    let control_on_live = FanoutEnvelope {
        origin: 1,
        message: FanoutMessage::Control(Control::KeyRevoked { hash: [9; 32] }),
    }
    .encode();
    let garbage: [(RawChannel, &[u8]); 5] = [
        (RawChannel::Live, b"hello"),
        (RawChannel::Live, newer.as_bytes()),
        (RawChannel::Live, &control_on_live),
        (RawChannel::Control, &[0xff, 0xfe, 0x00]),
        (RawChannel::Control, b"{\"v\":1}"),
    ];
    for (channel, bytes) in garbage {
        if !harness.publish_raw(&pair, channel, bytes).await {
            println!(
                "fan-out conformance: no wire to publish garbage on (in process): nothing to check"
            );
            return Ok(());
        }
    }
    eventually("the 5 bad messages counted", ARRIVAL, || {
        pair.b.stats().bad_messages == 5
    })
    .await?;
    pair.a.publish_live(tagged_event(3));
    pair.a
        .publish_control(Control::KeyRevoked { hash: [3; 32] });
    let got = next_event(&mut rx, "the good event after the garbage").await?;
    ensure!(
        got == tagged_event(3),
        "garbage reached a subscriber: {got:?}"
    );
    eventually("the good control message", ARRIVAL, || count(&seen) >= 1).await?;
    tokio::time::sleep(SETTLE).await;
    let seen = seen.lock().unwrap().clone();
    ensure!(
        seen == [Control::KeyRevoked { hash: [3; 32] }],
        "garbage reached a handler: {seen:?}"
    );
    ensure!(
        pair.b.stats().bad_messages == 5,
        "good messages are not bad: {:?}",
        pair.b.stats()
    );
    Ok(())
}
