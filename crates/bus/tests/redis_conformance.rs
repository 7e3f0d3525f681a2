//! The Redis Streams bus against the shared conformance suite on the shared Redis
//! (127.0.0.1:6379), each bus under a prefix of its own, plus what only it can show:
//! handles on one prefix share it as processes share a broker, a dead consumer's
//! deliveries are claimed after `claim_idle`, `Full` is exact under concurrent
//! publishers of two handles, a closing handle drains only up to its fence, and rejected
//! messages keep their reason. Every key a test made is deleted at its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use vigia_bus::conformance::{run_all, sample_batch, tag_of, BusHarness};
use vigia_bus::redis::{Persistence, RedisBus, RedisConfig};
use vigia_bus::{readings, Bus, BusError, Capacity, Message, OpenContext, Topic};

const ADDR: &str = "127.0.0.1:6379";

fn redis_up(test: &str) -> bool {
    vigia_core::services::service_available(&format!("redis ({test})"), ADDR)
}

/// Prefixes unique to this run, and deletes every key under them when dropped.
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
        let deleted = delete_keys(&format!("{{{}-*", self.run));
        if let Err(e) = deleted {
            eprintln!("could not delete the test keys of {}: {e}", self.run);
        }
    }
}

/// Deletes the keys matching `pattern` on the shared Redis.
fn delete_keys(pattern: &str) -> redis::RedisResult<usize> {
    let client = redis::Client::open(format!("redis://{ADDR}/0"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn)?;
    if !keys.is_empty() {
        redis::cmd("DEL").arg(&keys).exec(&mut conn)?;
    }
    Ok(keys.len())
}

fn context(capacity: Capacity, claim_idle: Duration) -> OpenContext {
    let mut context = OpenContext::new(std::env::temp_dir());
    context.capacity = capacity;
    context.claim_idle = claim_idle;
    context
}

async fn open(url: &str, capacity: Capacity, claim_idle: Duration) -> RedisBus {
    let config = RedisConfig::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    RedisBus::open(config, &context(capacity, claim_idle))
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

/// Each fresh bus gets a new prefix; a reopen drops the handle without acking and opens
/// the same prefix again.
struct RedisHarness {
    prefixes: Prefixes,
    /// A stable `consumer` name per bus (a reopen re-reads its own pending entries);
    /// otherwise each handle has a unique name and a reopen claims the old handle's
    /// entries after `claim_idle`.
    stable_names: bool,
    claim_idle: Duration,
    capacities: Mutex<HashMap<String, Capacity>>,
}

#[async_trait]
impl BusHarness for RedisHarness {
    type Bus = RedisBus;

    async fn fresh(&self, capacity: Capacity) -> RedisBus {
        let prefix = self.prefixes.next();
        let consumer = if self.stable_names {
            format!("&consumer=c-{prefix}")
        } else {
            String::new()
        };
        self.capacities
            .lock()
            .unwrap()
            .insert(prefix.clone(), capacity);
        let url = format!("redis://{ADDR}/0?prefix={prefix}{consumer}");
        open(&url, capacity, self.claim_idle).await
    }

    async fn reopen(&self, old: RedisBus) -> RedisBus {
        let config = old.config().clone();
        drop(old);
        let capacity = self.capacities.lock().unwrap()[&config.prefix];
        RedisBus::open(config, &context(capacity, self.claim_idle))
            .await
            .expect("reopening")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_stable_consumer_names() {
    if !redis_up("conformance_with_stable_consumer_names") {
        return;
    }
    run_all(&RedisHarness {
        prefixes: Prefixes::new("stable"),
        stable_names: true,
        claim_idle: OpenContext::DEFAULT_CLAIM_IDLE,
        capacities: Mutex::default(),
    })
    .await;
}

/// With unique consumer names a restarted handle gets its predecessor's deliveries by
/// claiming them; `claim_idle` zero makes that immediate so the suite's reopen checks
/// exercise the claim path (a handle never claims back what it holds itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_claims() {
    if !redis_up("conformance_with_claims") {
        return;
    }
    run_all(&RedisHarness {
        prefixes: Prefixes::new("claims"),
        stable_names: false,
        claim_idle: Duration::ZERO,
        capacities: Mutex::default(),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_deliveries_are_claimed_after_claim_idle() {
    if !redis_up("a_dead_consumers_deliveries_are_claimed_after_claim_idle") {
        return;
    }
    let prefixes = Prefixes::new("claim");
    let url = format!("redis://{ADDR}/0?prefix={}", prefixes.next());
    let claim_idle = Duration::from_millis(500);
    let survivor = open(&url, Capacity::default(), claim_idle).await;
    let doomed = open(&url, Capacity::default(), claim_idle).await;
    assert_ne!(survivor.consumer(), doomed.consumer());
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
    .expect("the dead consumer's deliveries were never claimed");
    let waited = received_at.elapsed();
    assert!(
        waited >= claim_idle,
        "claimed after {waited:?}, before claim_idle"
    );
    assert!(
        waited < Duration::from_secs(5),
        "claimed only after {waited:?}"
    );
    let mut tags: Vec<u64> = got.iter().map(|r| tag_of(&r.value)).collect();
    tags.sort();
    assert_eq!(tags, [0, 1, 2]);
    assert!(got.iter().all(|r| r.redelivered), "claims are redeliveries");
    assert_eq!(survivor.lag(Topic::READINGS).await.unwrap(), 6);
    survivor
        .ack(got.iter().map(|r| r.token.clone()).collect())
        .await
        .unwrap();
    assert_eq!(survivor.lag(Topic::READINGS).await.unwrap(), 0);

    // A live handle holding deliveries past claim_idle does not hand them out twice.
    readings::publish(&survivor, sample_batch(9, 1))
        .await
        .unwrap();
    let first = survivor.receive(Topic::READINGS, 10).await.unwrap();
    tokio::time::sleep(claim_idle * 3).await;
    let again = tokio::time::timeout(
        Duration::from_millis(300),
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
async fn full_is_exact_under_concurrent_publishers_of_two_handles() {
    if !redis_up("full_is_exact_under_concurrent_publishers_of_two_handles") {
        return;
    }
    const CAPACITY: u64 = 100;
    const WEIGHT: usize = 3;
    let prefixes = Prefixes::new("full");
    let url = format!("redis://{ADDR}/0?prefix={}", prefixes.next());
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
    let fits = CAPACITY / WEIGHT as u64;
    assert_eq!(
        (admitted, refused),
        (fits, 200 - fits),
        "admitted exactly what fits"
    );
    for bus in &handles {
        assert_eq!(
            bus.lag(Topic::READINGS).await.unwrap(),
            fits * WEIGHT as u64
        );
    }
    let mut got = Vec::new();
    while (got.len() as u64) < fits {
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
    if !redis_up("a_closing_handle_drains_up_to_its_fence_and_leaves_the_rest") {
        return;
    }
    let prefixes = Prefixes::new("fence");
    let url = format!("redis://{ADDR}/0?prefix={}", prefixes.next());
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
    assert!(!rest[0].redelivered, "never handed out before");
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
    if !redis_up("rejected_messages_become_dead_letters_with_their_reason") {
        return;
    }
    let prefixes = Prefixes::new("dead");
    let url = format!("redis://{ADDR}/0?prefix={}", prefixes.next());
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
async fn the_registry_opens_redis_urls_and_reports_persistence() {
    if !redis_up("the_registry_opens_redis_urls_and_reports_persistence") {
        return;
    }
    let prefixes = Prefixes::new("registry");
    let prefix = prefixes.next();
    let context = context(Capacity::default(), OpenContext::DEFAULT_CLAIM_IDLE);
    let bus = vigia_bus::open(&format!("redis://{ADDR}?prefix={prefix}"), &context)
        .await
        .unwrap();
    bus.ping().await.unwrap();
    readings::publish(&*bus, sample_batch(1, 4)).await.unwrap();
    assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 4);

    // What the bus read at open is what the server says.
    let direct = open(
        &format!("redis://{ADDR}?prefix={prefix}"),
        Capacity::default(),
        OpenContext::DEFAULT_CLAIM_IDLE,
    )
    .await;
    let client = redis::Client::open(format!("redis://{ADDR}")).unwrap();
    let mut conn = client.get_connection().unwrap();
    let appendonly: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut conn)
        .unwrap();
    let [(node, persistence)] = direct.persistence() else {
        panic!("one server, one persistence: {:?}", direct.persistence());
    };
    assert_eq!(node, ADDR);
    match appendonly[1].as_str() {
        "no" => assert_eq!(*persistence, Persistence::Memory),
        _ => assert!(
            matches!(persistence, Persistence::Aof { .. }),
            "{persistence:?}"
        ),
    }

    let refused = vigia_bus::open("redis://127.0.0.1:1", &context).await;
    let message = refused
        .err()
        .expect("nothing listens on port 1")
        .to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
}
