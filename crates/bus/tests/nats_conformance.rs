//! The NATS JetStream bus against the shared conformance suite on the shared NATS
//! (127.0.0.1:4222), each bus under a stream prefix of its own, plus what only it can
//! show: handles on one prefix share it as processes share a broker, a dead consumer's
//! deliveries come back after `ack_wait` (and a live holder never hands one out
//! twice), a closing handle drains only up to its fence, rejected messages keep their
//! reason, a stream at its byte limit answers `Full`. Every stream a test made is
//! deleted at its end, even when it fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use vigia_bus::conformance::{run_all, sample_batch, tag_of, BusHarness};
use vigia_bus::nats::{NatsBus, NatsConfig};
use vigia_bus::{readings, Bus, BusError, Capacity, Message, OpenContext, Topic};

const ADDR: &str = "127.0.0.1:4222";

fn nats_up(test: &str) -> bool {
    vigia_core::services::service_available(&format!("nats ({test})"), ADDR)
}

/// Stream prefixes unique to this run; deletes every stream under them when dropped.
struct Prefixes {
    run: String,
    next: AtomicU64,
}

impl Prefixes {
    fn new(test: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Self {
            run: format!("vt-{test}-{}-{nanos:x}", std::process::id()),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!("{}-{}", self.run, self.next.fetch_add(1, Ordering::SeqCst))
    }
}

impl Drop for Prefixes {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be gone: a runtime of its own.
        let run = self.run.clone();
        let deleted = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup")
                .block_on(delete_streams(&run))
        })
        .join();
        match deleted {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("could not delete the test streams of {}: {e}", self.run),
            Err(_) => eprintln!("the cleanup of {} panicked", self.run),
        }
    }
}

/// Deletes the streams whose names start with `run` on the shared NATS.
async fn delete_streams(run: &str) -> Result<usize, async_nats::Error> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(ADDR)
        .await?;
    let js = async_nats::jetstream::new(client);
    let mut names = js.stream_names();
    let mut mine = Vec::new();
    while let Some(name) = names.next().await {
        let name = name?;
        if name.starts_with(run) {
            mine.push(name);
        }
    }
    for name in &mine {
        js.delete_stream(name).await?;
    }
    Ok(mine.len())
}

fn context(capacity: Capacity, claim_idle: Duration) -> OpenContext {
    let mut context = OpenContext::new(std::env::temp_dir());
    context.capacity = capacity;
    context.claim_idle = claim_idle;
    context
}

async fn open(url: &str, capacity: Capacity, claim_idle: Duration) -> NatsBus {
    let config = NatsConfig::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    NatsBus::open(config, &context(capacity, claim_idle))
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

/// Each fresh bus gets a new stream prefix. A reopen drops the handle without acking,
/// as a killed process would, and opens the same prefix again once `ack_wait` has
/// passed, so the old handle's deliveries are due for redelivery.
struct NatsHarness {
    prefixes: Prefixes,
    claim_idle: Duration,
    capacities: Mutex<HashMap<String, Capacity>>,
}

#[async_trait]
impl BusHarness for NatsHarness {
    type Bus = NatsBus;

    async fn fresh(&self, capacity: Capacity) -> NatsBus {
        let prefix = self.prefixes.next();
        self.capacities
            .lock()
            .unwrap()
            .insert(prefix.clone(), capacity);
        let url = format!("nats://{ADDR}/?stream_prefix={prefix}");
        open(&url, capacity, self.claim_idle).await
    }

    async fn reopen(&self, old: NatsBus) -> NatsBus {
        let config = old.config().clone();
        let ack_wait = old.ack_wait();
        drop(old);
        // JetStream's redelivery timer fires on its own schedule after ack_wait.
        tokio::time::sleep(ack_wait + Duration::from_millis(600)).await;
        let capacity = self.capacities.lock().unwrap()[&config.stream_prefix];
        NatsBus::open(config, &context(capacity, self.claim_idle))
            .await
            .expect("reopening")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    if !nats_up("conformance") {
        return;
    }
    run_all(&NatsHarness {
        prefixes: Prefixes::new("conf"),
        claim_idle: Duration::from_secs(1),
        capacities: Mutex::default(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_deliveries_come_back_after_ack_wait() {
    if !nats_up("a_dead_consumers_deliveries_come_back_after_ack_wait") {
        return;
    }
    let prefixes = Prefixes::new("ackwait");
    let url = format!("nats://{ADDR}/?stream_prefix={}", prefixes.next());
    let claim_idle = Duration::from_millis(500);
    let survivor = open(&url, Capacity::default(), claim_idle).await;
    let doomed = open(&url, Capacity::default(), claim_idle).await;
    for tag in 0..3 {
        readings::publish(&survivor, sample_batch(tag, 2))
            .await
            .unwrap();
    }
    let held = doomed.receive(Topic::READINGS, 100).await.unwrap();
    let received_at = Instant::now();
    assert_eq!(held.len(), 3);
    assert!(held.iter().all(|d| !d.redelivered));
    drop(doomed);

    let got = tokio::time::timeout(Duration::from_secs(10), async {
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(readings::receive(&survivor, 100).await.unwrap());
        }
        got
    })
    .await
    .expect("the dead consumer's deliveries never came back");
    let waited = received_at.elapsed();
    assert!(
        waited >= claim_idle,
        "redelivered after {waited:?}, before ack_wait"
    );
    assert!(
        waited < Duration::from_secs(5),
        "redelivered only after {waited:?}"
    );
    let mut tags: Vec<u64> = got.iter().map(|r| tag_of(&r.value)).collect();
    tags.sort();
    assert_eq!(tags, [0, 1, 2]);
    assert!(got.iter().all(|r| r.redelivered), "marked redelivered");
    assert_eq!(survivor.lag(Topic::READINGS).await.unwrap(), 6);
    survivor
        .ack(got.iter().map(|r| r.token.clone()).collect())
        .await
        .unwrap();
    assert_eq!(survivor.lag(Topic::READINGS).await.unwrap(), 0);

    // A live handle holding a delivery past ack_wait does not hand it out twice, and
    // its ack still settles it.
    readings::publish(&survivor, sample_batch(9, 1))
        .await
        .unwrap();
    let first = survivor.receive(Topic::READINGS, 10).await.unwrap();
    tokio::time::sleep(claim_idle * 3).await;
    let again = tokio::time::timeout(
        Duration::from_millis(800),
        survivor.receive(Topic::READINGS, 10),
    )
    .await;
    assert!(again.is_err(), "handed out again: {again:?}");
    survivor
        .ack(first.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    assert_eq!(survivor.lag(Topic::READINGS).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_holds_under_concurrent_publishers_of_two_handles() {
    if !nats_up("full_holds_under_concurrent_publishers_of_two_handles") {
        return;
    }
    const CAPACITY: u64 = 100;
    const WEIGHT: usize = 3;
    let prefixes = Prefixes::new("full");
    let url = format!("nats://{ADDR}/?stream_prefix={}", prefixes.next());
    let capacity = Capacity::default().with(Topic::READINGS, CAPACITY);
    let handles = [
        Arc::new(open(&url, capacity, OpenContext::DEFAULT_CLAIM_IDLE).await),
        Arc::new(open(&url, capacity, OpenContext::DEFAULT_CLAIM_IDLE).await),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for publisher in 0..40u64 {
        let bus = Arc::clone(&handles[publisher as usize % 2]);
        tasks.spawn(async move {
            let (mut admitted, mut refused) = (0u64, 0u64);
            for i in 0..5 {
                match readings::publish(&*bus, sample_batch(publisher * 100 + i, WEIGHT)).await {
                    Ok(()) => admitted += 1,
                    Err(BusError::Full {
                        pending,
                        capacity,
                        retry_after,
                    }) => {
                        assert_eq!(capacity, CAPACITY);
                        assert!(pending + WEIGHT as u64 > CAPACITY, "refused at {pending}");
                        assert!(retry_after > Duration::ZERO);
                        refused += 1;
                    }
                    Err(e) => panic!("publish: {e}"),
                }
            }
            (admitted, refused)
        });
    }
    let (mut admitted, mut refused) = (0, 0);
    while let Some(outcome) = tasks.join_next().await {
        let (a, r) = outcome.unwrap();
        admitted += a;
        refused += r;
    }
    assert_eq!(admitted + refused, 200);
    // The stream's max_msgs (= capacity) is the hard bound; the weight bound holds to
    // within the publishes in flight on the other handle.
    let lag = handles[0].lag(Topic::READINGS).await.unwrap();
    assert_eq!(
        lag,
        admitted * WEIGHT as u64,
        "every admitted publish stored"
    );
    assert!(
        lag <= CAPACITY + 40 * WEIGHT as u64,
        "lag {lag} far past the capacity {CAPACITY}"
    );
    assert!(
        admitted >= CAPACITY / WEIGHT as u64 - 2,
        "admitted only {admitted}"
    );
    let mut got = Vec::new();
    while (got.len() as u64) < admitted {
        got.extend(handles[1].receive(Topic::READINGS, 1000).await.unwrap());
    }
    handles[1]
        .ack(got.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    assert_eq!(handles[0].lag(Topic::READINGS).await.unwrap(), 0);
    readings::publish(&*handles[0], sample_batch(1, WEIGHT))
        .await
        .expect("room again after the acks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_handle_drains_up_to_its_fence_and_leaves_the_rest() {
    if !nats_up("a_closing_handle_drains_up_to_its_fence_and_leaves_the_rest") {
        return;
    }
    let prefixes = Prefixes::new("fence");
    let url = format!("nats://{ADDR}/?stream_prefix={}", prefixes.next());
    let idle = OpenContext::DEFAULT_CLAIM_IDLE;
    let closing = open(&url, Capacity::default(), idle).await;
    let other = open(&url, Capacity::default(), idle).await;
    for tag in [1, 2] {
        readings::publish(&other, sample_batch(tag, 1))
            .await
            .unwrap();
    }
    closing.close();
    let first = closing.receive(Topic::READINGS, 1).await.unwrap();
    readings::publish(&other, sample_batch(3, 1)).await.unwrap();
    let mut drained = first;
    loop {
        match closing.receive(Topic::READINGS, 1).await {
            Ok(more) => drained.extend(more),
            Err(BusError::Closed) => break,
            Err(e) => panic!("drain: {e}"),
        }
    }
    let tags: Vec<u64> = drained
        .iter()
        .map(|d| tag_of(&readings::batch(d).unwrap()))
        .collect();
    assert_eq!(tags, [1, 2], "drained past the fence");
    let rest = readings::receive(&other, 10).await.unwrap();
    assert_eq!(tag_of(&rest[0].value), 3);
    closing
        .ack(drained.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    other
        .ack(rest.iter().map(|r| r.token.clone()).collect())
        .await
        .unwrap();
    assert_eq!(other.lag(Topic::READINGS).await.unwrap(), 0);
}

#[tokio::test]
async fn rejected_messages_become_dead_letters_with_their_reason() {
    if !nats_up("rejected_messages_become_dead_letters_with_their_reason") {
        return;
    }
    let prefixes = Prefixes::new("dead");
    let url = format!("nats://{ADDR}/?stream_prefix={}", prefixes.next());
    let bus = open(&url, Capacity::default(), OpenContext::DEFAULT_CLAIM_IDLE).await;
    bus.publish(Topic::EVENTS, Message::from_bytes(&b"nope"[..], 1))
        .await
        .unwrap();
    vigia_bus::events::publish(&bus, vigia_bus::conformance::sample_event(3))
        .await
        .unwrap();
    let got = vigia_bus::events::receive(&bus, 10).await.unwrap();
    assert_eq!(got.len(), 1, "the junk was rejected, the event delivered");
    let dead = bus.dead_letters(Topic::EVENTS, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].topic, &dead[0].payload[..]),
        (Topic::EVENTS, &b"nope"[..])
    );
    assert!(!dead[0].reason.is_empty());
    assert!(bus
        .dead_letters(Topic::READINGS, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(bus.lag(Topic::EVENTS).await.unwrap(), 1);
}

#[tokio::test]
async fn a_stream_at_its_byte_limit_answers_full_and_keeps_what_it_took() {
    if !nats_up("a_stream_at_its_byte_limit_answers_full_and_keeps_what_it_took") {
        return;
    }
    let prefixes = Prefixes::new("bytes");
    let url = format!(
        "nats://{ADDR}/?stream_prefix={}&max_bytes=4096",
        prefixes.next()
    );
    let bus = open(&url, Capacity::default(), OpenContext::DEFAULT_CLAIM_IDLE).await;
    let mut stored = 0u64;
    let full = loop {
        match bus
            .publish(Topic::EVENTS, Message::from_bytes(vec![7u8; 1000], 1))
            .await
        {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 10, "4 KiB took {stored} messages of 1000 bytes");
    };
    match full {
        BusError::Full {
            pending,
            retry_after,
            ..
        } => {
            assert_eq!(pending, stored);
            assert!(retry_after > Duration::ZERO);
        }
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(stored >= 1);
    assert_eq!(bus.lag(Topic::EVENTS).await.unwrap(), stored);
    let got = bus.receive(Topic::EVENTS, 100).await.unwrap();
    assert_eq!(got.len() as u64, stored, "nothing accepted was dropped");
    bus.ack(got.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    bus.publish(Topic::EVENTS, Message::from_bytes(vec![7u8; 1000], 1))
        .await
        .expect("room again after the acks");
}

#[tokio::test]
async fn the_registry_opens_nats_urls() {
    if !nats_up("the_registry_opens_nats_urls") {
        return;
    }
    let prefixes = Prefixes::new("registry");
    let prefix = prefixes.next();
    let context = context(Capacity::default(), OpenContext::DEFAULT_CLAIM_IDLE);
    let bus = vigia_bus::open(&format!("nats://{ADDR}/?stream_prefix={prefix}"), &context)
        .await
        .unwrap();
    bus.ping().await.unwrap();
    readings::publish(&*bus, sample_batch(1, 4)).await.unwrap();
    assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 4);

    // Reopening with another capacity updates the stream's limit in place.
    let smaller = Capacity::default().with(Topic::READINGS, 5);
    let again = vigia_bus::open(
        &format!("nats://{ADDR}/?stream_prefix={prefix}"),
        &OpenContext {
            capacity: smaller,
            ..context.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(again.lag(Topic::READINGS).await.unwrap(), 4);
    assert!(matches!(
        readings::publish(&*again, sample_batch(2, 2)).await,
        Err(BusError::Full { pending: 4, .. })
    ));

    let started = Instant::now();
    let refused = vigia_bus::open("nats://127.0.0.1:1", &context).await;
    let message = refused
        .err()
        .expect("nothing listens on port 1")
        .to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
