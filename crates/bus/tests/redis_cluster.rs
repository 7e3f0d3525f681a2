//! The Redis bus on a Redis Cluster (`redis+cluster://…`): three private
//! `redis-server --cluster-enabled yes` nodes on free ports, joined with
//! `redis-cli --cluster create`, run the whole conformance suite; each topic's keys
//! live on one node (their hash tag). The nodes are killed at the end, even on panic.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tempfile::TempDir;
use vigia_bus::conformance::{run_all, sample_batch, BusHarness};
use vigia_bus::redis::{RedisBus, RedisConfig};
use vigia_bus::{readings, Bus, Capacity, OpenContext, Topic};

const NODES: usize = 3;

fn installed(test: &str) -> bool {
    let found = ["redis-server", "redis-cli"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    found
        || vigia_core::services::skip_or_fail(
            test,
            "`redis-server` or `redis-cli` is not installed",
        )
}

/// A port that is free, and whose cluster bus port (port + 10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding port 0");
        let port = listener.local_addr().unwrap().port();
        if port > 55_000 || taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Three cluster nodes, killed when dropped.
struct Cluster {
    ports: Vec<u16>,
    children: Vec<Child>,
    dir: TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    fn start() -> Cluster {
        // Built first, so that a failure half-way still kills what was started.
        let mut cluster = Cluster {
            ports: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        let dir = cluster.dir.path().to_path_buf();
        for _ in 0..NODES {
            let port = free_cluster_port(&cluster.ports);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(dir.join(format!("nodes-{port}.conf")))
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting redis-server");
            cluster.ports.push(port);
            cluster.children.push(child);
        }
        for &port in &cluster.ports {
            wait_until(&format!("node {port} answers"), || {
                cli(port, &["PING"]).trim() == "PONG"
            });
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        for &port in &cluster.ports {
            wait_until(&format!("node {port} reports cluster_state:ok"), || {
                cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        cluster
    }

    fn url(&self, query: &str) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}?{query}", nodes.join(","))
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn context(capacity: Capacity) -> OpenContext {
    let mut context = OpenContext::new(std::env::temp_dir());
    context.capacity = capacity;
    context
}

struct ClusterHarness<'a> {
    cluster: &'a Cluster,
    next: AtomicU64,
    capacities: Mutex<HashMap<String, Capacity>>,
}

#[async_trait]
impl BusHarness for ClusterHarness<'_> {
    type Bus = RedisBus;

    async fn fresh(&self, capacity: Capacity) -> RedisBus {
        let prefix = format!("c{}", self.next.fetch_add(1, Ordering::SeqCst));
        self.capacities
            .lock()
            .unwrap()
            .insert(prefix.clone(), capacity);
        let url = self
            .cluster
            .url(&format!("prefix={prefix}&consumer=w-{prefix}"));
        let config = RedisConfig::parse(&url).unwrap();
        RedisBus::open(config, &context(capacity))
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"))
    }

    async fn reopen(&self, old: RedisBus) -> RedisBus {
        let config = old.config().clone();
        drop(old);
        let capacity = self.capacities.lock().unwrap()[&config.prefix];
        RedisBus::open(config, &context(capacity))
            .await
            .expect("reopening")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_a_three_node_cluster() {
    if !installed("the_conformance_suite_passes_on_a_three_node_cluster") {
        return;
    }
    let cluster = Cluster::start();
    run_all(&ClusterHarness {
        cluster: &cluster,
        next: AtomicU64::new(0),
        capacities: Mutex::default(),
    })
    .await;

    // Each topic's keys are on one node, and the bus checked that node's persistence.
    let config = RedisConfig::parse(&cluster.url("prefix=placed")).unwrap();
    let bus = RedisBus::open(config, &context(Capacity::default()))
        .await
        .unwrap();
    assert!(bus.config().cluster);
    assert_eq!(bus.persistence().len(), Topic::ALL.len());
    for topic in Topic::ALL {
        let message = vigia_bus::Message::from_bytes(&b"x"[..], 1);
        bus.publish(topic, message).await.unwrap();
    }
    // Settle so that every kind of key exists: acked counters, and dead letters.
    let reads = bus.receive(Topic::READINGS, 10).await.unwrap();
    bus.ack(reads.iter().map(|d| d.token.clone()).collect())
        .await
        .unwrap();
    let junk = bus.receive(Topic::EVENTS, 10).await.unwrap();
    bus.reject(junk[0].token.clone(), "junk".into())
        .await
        .unwrap();
    readings::publish(&bus, sample_batch(1, 1)).await.unwrap();
    for (topic, kinds) in [(Topic::READINGS, 3), (Topic::EVENTS, 4)] {
        let pattern = format!("{{placed:{}}}:*", topic.name());
        let holders: Vec<(u16, usize)> = cluster
            .ports
            .iter()
            .map(|&port| {
                let keys = cli(port, &["--raw", "KEYS", &pattern]);
                (port, keys.lines().filter(|l| !l.is_empty()).count())
            })
            .filter(|(_, keys)| *keys > 0)
            .collect();
        assert_eq!(holders.len(), 1, "{topic}'s keys are spread: {holders:?}");
        assert_eq!(
            holders[0].1, kinds,
            "{topic}'s keys on one node: {holders:?}"
        );
    }
    assert_eq!(bus.lag(Topic::READINGS).await.unwrap(), 1);
    assert_eq!(bus.lag(Topic::EVENTS).await.unwrap(), 0);
    assert_eq!(bus.dead_letters(Topic::EVENTS, 10).await.unwrap().len(), 1);
}
