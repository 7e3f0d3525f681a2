//! The embedded bus against the shared conformance suite, plus what only it can show:
//! a real `kill -9` loses no acknowledged publish, payloads beyond the memory budget are
//! read back from disk, a second opener is refused, damaged rows are quarantined, a
//! failing disk surfaces as `Unavailable` without corrupting the accounting, and a log
//! written by the first release (before topics) opens and replays.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tempfile::TempDir;
use vigia_bus::conformance::{run_all, sample_batch, tag_of, BusHarness};
use vigia_bus::{
    readings, Bus, BusError, Capacity, Delivery, DeliveryToken, Durability, EmbeddedBus,
    EmbeddedBusOptions, Topic,
};
use vigia_core::IngestBatch;

/// Makes every bus in its own directory under one temporary root.
struct EmbeddedHarness {
    root: TempDir,
    next: AtomicU64,
    durability: Durability,
    memory_budget_bytes: usize,
}

impl EmbeddedHarness {
    fn new(durability: Durability, memory_budget_bytes: usize) -> Self {
        Self {
            root: tempfile::tempdir().expect("temp dir"),
            next: AtomicU64::new(0),
            durability,
            memory_budget_bytes,
        }
    }
}

async fn open(options: EmbeddedBusOptions) -> EmbeddedBus {
    tokio::task::spawn_blocking(move || EmbeddedBus::open(options))
        .await
        .expect("open task")
        .expect("open bus")
}

#[async_trait]
impl BusHarness for EmbeddedHarness {
    type Bus = EmbeddedBus;

    async fn fresh(&self, capacity: Capacity) -> EmbeddedBus {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let mut options =
            EmbeddedBusOptions::new(self.root.path().join(format!("bus-{n}/bus.sqlite3")));
        options.durability = self.durability;
        options.capacity = capacity;
        options.memory_budget_bytes = self.memory_budget_bytes;
        open(options).await
    }

    async fn reopen(&self, old: EmbeddedBus) -> EmbeddedBus {
        let options = old.options().clone();
        // Dropping joins the writer thread (it writes pending acks first): keep that
        // off the runtime's threads.
        tokio::task::spawn_blocking(move || drop(old))
            .await
            .expect("drop task");
        open(options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_full_durability() {
    run_all(&EmbeddedHarness::new(
        Durability::Full,
        EmbeddedBusOptions::DEFAULT_MEMORY_BUDGET_BYTES,
    ))
    .await;
}

/// With no memory budget every payload takes the read-back-from-disk path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_os_durability_payloads_on_disk() {
    run_all(&EmbeddedHarness::new(Durability::Os, 0)).await;
}

fn options_in(dir: &Path) -> EmbeddedBusOptions {
    EmbeddedBusOptions::new(dir.join("bus.sqlite3"))
}

async fn drain(bus: &EmbeddedBus) -> Vec<Delivery> {
    bus.close();
    let mut all = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), bus.receive(Topic::READINGS, 500)).await
        {
            Ok(Ok(deliveries)) => all.extend(deliveries),
            Ok(Err(BusError::Closed)) => return all,
            Ok(Err(e)) => panic!("drain: {e}"),
            Err(_) => panic!("drain: a closed bus never reported Closed"),
        }
    }
}

/// The batch a delivery carries (the test fails if it does not decode).
fn batch(d: &Delivery) -> IngestBatch {
    (*readings::batch(d).expect("a readings delivery decodes")).clone()
}

fn tag(d: &Delivery) -> u64 {
    tag_of(&batch(d))
}

fn tokens(deliveries: &[Delivery]) -> Vec<DeliveryToken> {
    deliveries.iter().map(|d| d.token.clone()).collect()
}

async fn publish(bus: &EmbeddedBus, batch: IngestBatch) -> Result<(), BusError> {
    readings::publish(bus, batch).await
}

async fn lag(bus: &EmbeddedBus) -> u64 {
    bus.lag(Topic::READINGS).await.expect("lag")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_budget_overflow_still_delivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options_in(dir.path());
    options.memory_budget_bytes = 8 * 1024; // a dozen batches; the rest stay on disk
    let bus = open(options.clone()).await;
    let size = |tag: u64| (tag % 7 + 5) as usize;
    for tag in 0..300 {
        publish(&bus, sample_batch(tag, size(tag))).await.unwrap();
    }
    let first = bus.receive(Topic::READINGS, 100_000).await.unwrap();
    assert_eq!(first.len(), 300);
    // Readings carry no in-process batch (see `readings::message`): every delivery is
    // decoded from bytes, in memory or read back from the file.
    assert!(first.iter().all(|d| !d.has_local()));
    for (tag, d) in (0..).zip(&first) {
        assert_eq!(batch(d), sample_batch(tag, size(tag)), "tag {tag}");
    }
    // Nack half: they come back from disk, and everything survives a restart.
    let odd: Vec<Delivery> = first.into_iter().filter(|d| tag(d) % 2 == 1).collect();
    bus.nack(tokens(&odd)).await.unwrap();
    let again = bus.receive(Topic::READINGS, 100_000).await.unwrap();
    assert_eq!(again.len(), 150);
    assert!(again.iter().all(|d| d.redelivered && !d.has_local()));
    assert!(again
        .iter()
        .all(|d| batch(d) == sample_batch(tag(d), size(tag(d)))));
    let bus = tokio::task::spawn_blocking(move || {
        drop(bus);
        EmbeddedBus::open(options)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        lag(&bus).await,
        (0..300).map(|t| size(t) as u64).sum::<u64>()
    );
    let recovered = drain(&bus).await;
    let tags: Vec<u64> = recovered.iter().map(tag).collect();
    assert_eq!(tags, (0..300).collect::<Vec<_>>());
    assert!(recovered
        .iter()
        .all(|d| batch(d) == sample_batch(tag(d), size(tag(d)))));
}

#[tokio::test]
async fn a_second_opener_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(options_in(dir.path())).await;
    match EmbeddedBus::open(options_in(dir.path())) {
        Err(BusError::Unavailable(why)) => assert!(why.contains("held"), "{why}"),
        Err(other) => panic!("expected Unavailable, got {other}"),
        Ok(_) => panic!("two buses opened the same file"),
    }
    drop(first);
    let second = open(options_in(dir.path())).await;
    second.ping().await.unwrap();
}

#[test]
fn bad_options_and_paths_are_refused_with_a_cause() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").unwrap();
    std::fs::create_dir(dir.path().join("a-dir")).unwrap();
    let zero_events = EmbeddedBusOptions {
        capacity: Capacity::default().with(Topic::EVENTS, 0),
        ..options_in(dir.path())
    };
    let cases: Vec<(&str, EmbeddedBusOptions, &str)> = vec![
        ("zero capacity", zero_events, "topic `events`"),
        (
            "parent is a file",
            EmbeddedBusOptions::new(file.join("bus.sqlite3")),
            "creating",
        ),
        (
            "path is a directory",
            EmbeddedBusOptions::new(dir.path().join("a-dir")),
            "opening",
        ),
    ];
    for (name, options, cause) in cases {
        match EmbeddedBus::open(options) {
            Err(BusError::Unavailable(why)) => assert!(why.contains(cause), "{name}: {why}"),
            Err(other) => panic!("{name}: expected Unavailable, got {other}"),
            Ok(_) => panic!("{name}: opened"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_quarantined_not_delivered() {
    for budget in [EmbeddedBusOptions::DEFAULT_MEMORY_BUDGET_BYTES, 0] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = options_in(dir.path());
        options.memory_budget_bytes = budget;
        let bus = open(options.clone()).await;
        publish(&bus, sample_batch(1, 2)).await.unwrap();
        publish(&bus, sample_batch(2, 2)).await.unwrap();
        drop(bus);
        let raw = rusqlite::Connection::open(&options.path).unwrap();
        raw.execute(
            "INSERT INTO messages (id, topic, weight, payload) VALUES (1000, 'readings', 3, x'0102')",
            [],
        )
        .unwrap();
        drop(raw);

        let bus = open(options.clone()).await;
        assert_eq!(
            lag(&bus).await,
            7,
            "budget {budget}: the damaged row counts until seen"
        );
        bus.close();
        let mut got = Vec::new();
        loop {
            match readings::receive(&bus, 500).await {
                Ok(received) => got.extend(received),
                Err(BusError::Closed) => break,
                Err(e) => panic!("budget {budget}: {e}"),
            }
        }
        let tags: Vec<u64> = got.iter().map(|r| tag_of(&r.value)).collect();
        assert_eq!(tags, [1, 2], "budget {budget}");
        assert_eq!(
            lag(&bus).await,
            4,
            "budget {budget}: rejected readings leave the lag"
        );
        bus.ack(got.iter().map(|r| r.token.clone()).collect())
            .await
            .unwrap();
        drop(bus);

        let raw = rusqlite::Connection::open(&options.path).unwrap();
        let dead: (i64, String, String) = raw
            .query_row(
                "SELECT message_id, topic, reason FROM dead_letters",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((dead.0, dead.1.as_str()), (1000, "readings"));
        assert!(!dead.2.is_empty(), "the reason is recorded");
        let left: i64 = raw
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "budget {budget}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_is_unavailable_and_undone() {
    let dir = tempfile::tempdir().unwrap();
    let options = options_in(dir.path());
    let bus = open(options.clone()).await;
    publish(&bus, sample_batch(1, 3)).await.unwrap();

    // Another connection holding the write lock past the busy timeout makes commits fail.
    let blocker = rusqlite::Connection::open(&options.path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    match publish(&bus, sample_batch(2, 5)).await {
        Err(BusError::Unavailable(why)) => assert!(why.contains("bus log write failed"), "{why}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(lag(&bus).await, 3, "the failed publish is not counted");
    assert!(matches!(bus.ping().await, Err(BusError::Unavailable(_))));

    blocker.execute_batch("ROLLBACK").unwrap();
    publish(&bus, sample_batch(3, 1)).await.unwrap();
    bus.ping().await.unwrap();
    let tags: Vec<u64> = drain(&bus).await.iter().map(tag).collect();
    assert_eq!(tags, [1, 3]);
}

/// The log exactly as the first release created it: no topics, no schema version.
const FIRST_RELEASE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    readings INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    message_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    quarantined_ms INTEGER NOT NULL,
    payload BLOB NOT NULL
);
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_from_the_first_release_opens_and_replays_its_readings() {
    let dir = tempfile::tempdir().unwrap();
    let options = options_in(dir.path());
    {
        let old = rusqlite::Connection::open(&options.path).unwrap();
        old.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
            .unwrap();
        old.execute_batch(FIRST_RELEASE_SCHEMA).unwrap();
        for id in 1..=3u64 {
            let sample = sample_batch(id, id as usize * 2);
            old.execute(
                "INSERT INTO messages (id, readings, payload) VALUES (?1, ?2, ?3)",
                rusqlite::params![id as i64, sample.readings.len() as i64, sample.encode()],
            )
            .unwrap();
        }
    }
    let bus = open(options.clone()).await;
    assert_eq!(lag(&bus).await, 2 + 4 + 6);
    assert_eq!(bus.lag(Topic::EVENTS).await.unwrap(), 0);
    let got = bus.receive(Topic::READINGS, 100).await.unwrap();
    assert_eq!(got.iter().map(tag).collect::<Vec<_>>(), [1, 2, 3]);
    for d in &got {
        assert!(d.redelivered);
        assert_eq!(batch(d), sample_batch(tag(d), tag(d) as usize * 2));
    }
    // New messages take ids after the old ones, and the migrated file keeps working.
    publish(&bus, sample_batch(4, 1)).await.unwrap();
    bus.ack(tokens(&got[..2])).await.unwrap();
    let bus = tokio::task::spawn_blocking(move || {
        drop(bus);
        EmbeddedBus::open(options)
    })
    .await
    .unwrap()
    .unwrap();
    let rest: Vec<u64> = drain(&bus).await.iter().map(tag).collect();
    assert_eq!(rest, [3, 4]);
}

// ---- kill -9 ----------------------------------------------------------------------

const CRASH_DIR_ENV: &str = "VIGIA_BUS_CRASH_DIR";
const CRASH_CHILD: &str = "crash_child_publishes_until_killed";
const CRASH_PUBLISHERS: u64 = 16;
const TAGS_PER_PUBLISHER: u64 = 1_000_000;

fn crash_batch_size(tag: u64) -> usize {
    (tag % 3 + 1) as usize
}

/// Run by [`kill_9_loses_no_acknowledged_publish`] as a child process: publishes from
/// several tasks and prints `published <tag>` once each publish returned `Ok`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper for kill_9_loses_no_acknowledged_publish, which runs it as a child"]
async fn crash_child_publishes_until_killed() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        eprintln!("{CRASH_DIR_ENV} is not set: nothing to do");
        return;
    };
    let bus = Arc::new(open(options_in(Path::new(&dir))).await);
    let mut tasks = tokio::task::JoinSet::new();
    for publisher in 0..CRASH_PUBLISHERS {
        let bus = Arc::clone(&bus);
        tasks.spawn(async move {
            // Bounded: the parent kills us long before this.
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut seq = 0;
            while Instant::now() < deadline {
                let tag = publisher * TAGS_PER_PUBLISHER + seq;
                match publish(&bus, sample_batch(tag, crash_batch_size(tag))).await {
                    Ok(()) => {
                        println!("published {tag}");
                        seq += 1;
                    }
                    Err(BusError::Full { retry_after, .. }) => {
                        tokio::time::sleep(retry_after).await
                    }
                    Err(e) => panic!("publish failed: {e}"),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("publisher task");
    }
}

#[test]
fn kill_9_loses_no_acknowledged_publish() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            CRASH_CHILD,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(tag) = line.strip_prefix("published ") {
                tx.send(tag.parse().expect("tag"))
                    .expect("parent listening");
            }
        }
    });

    // Kill mid-stream: half a second after the first acknowledged publish, and only
    // once plenty have been acknowledged.
    let mut printed = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut first_at = None;
    while Instant::now() < give_up {
        if let Ok(tag) = rx.recv_timeout(Duration::from_millis(10)) {
            printed.push(tag);
            first_at.get_or_insert_with(Instant::now);
        }
        if first_at.is_some_and(|t| t.elapsed() >= Duration::from_millis(500))
            && printed.len() >= 200
        {
            break;
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(
        !status.success(),
        "the child was supposed to die by SIGKILL, got {status}"
    );
    reader.join().expect("stdout reader");
    printed.extend(rx.try_iter());
    assert!(
        printed.len() >= 200,
        "the child acknowledged only {} publishes",
        printed.len()
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let recovered = runtime.block_on(async {
        let bus = open(options_in(dir.path())).await;
        drain(&bus).await
    });
    check_crash_recovery(&printed, &recovered);
    println!(
        "kill -9: {} publishes acknowledged, {} recovered",
        printed.len(),
        recovered.len()
    );
}

/// Every acknowledged batch is back, intact and once; anything else recovered can only
/// be a publish that committed but was killed before it printed (one per publisher).
fn check_crash_recovery(printed: &[u64], recovered: &[Delivery]) {
    let mut last_printed: BTreeMap<u64, u64> = BTreeMap::new();
    for &tag in printed {
        let entry = last_printed.entry(tag / TAGS_PER_PUBLISHER).or_insert(0);
        *entry = (*entry).max(tag % TAGS_PER_PUBLISHER);
    }
    let mut seen = HashSet::new();
    for d in recovered {
        let tag = tag(d);
        assert!(seen.insert(tag), "tag {tag} recovered twice");
        assert_eq!(
            batch(d),
            sample_batch(tag, crash_batch_size(tag)),
            "tag {tag} damaged"
        );
        let (publisher, seq) = (tag / TAGS_PER_PUBLISHER, tag % TAGS_PER_PUBLISHER);
        let allowed = last_printed.get(&publisher).map_or(0, |last| last + 1);
        assert!(
            publisher < CRASH_PUBLISHERS && seq <= allowed,
            "tag {tag} was never published"
        );
    }
    let missing: Vec<u64> = printed
        .iter()
        .copied()
        .filter(|t| !seen.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged publishes lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
