//! `vigia bench mqtt`: end-to-end MQTT ingest through an external broker (Mosquitto) —
//! first publish → every reading committed to the store — with N QoS 1 publishers
//! (rumqttc), and the broker's own CPU time over the run (from `/proc/<pid>/stat`).
//!
//! The server must subscribe to the broker (`mqtt.broker`); `--spawn` starts one that
//! does (client id and share group `vigia-bench`). Payloads are generated before the
//! clock starts; commitment is observed through `/metrics`
//! (`vigia_store_readings_written_total`), polled every 5 ms. The publishers keep at most
//! `--window` messages published and not yet committed: a broker's PUBACK to a publisher
//! does not mean the subscriber will get the message (Mosquitto drops past
//! `max_queued_messages` per subscriber), so an unbounded burst would measure the drops.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;

use super::server::{SpawnedServer, TargetArgs};
use crate::http::{Connection, Target};
use crate::prometheus::{MetricsSnapshot, STORE_READINGS_WRITTEN_TOTAL};
use crate::units::parse_count;

/// Flags of `vigia bench mqtt`.
#[derive(clap::Args, Debug)]
pub struct BenchMqttArgs {
    /// The server whose commits are measured (it must subscribe to --broker).
    #[command(flatten)]
    pub target: TargetArgs,
    /// Start a fresh server (this binary's `serve`) subscribed to --broker instead.
    #[arg(long)]
    pub spawn: bool,
    /// With --spawn: the server binary to start (default: this executable).
    #[arg(long, requires = "spawn", value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// The broker publishers connect to (`mqtt://host:port`).
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// Concurrent QoS 1 publishers, one connection each.
    #[arg(long, default_value_t = 10)]
    pub publishers: usize,
    /// Readings published in all (accepts 1_000_000, 1M).
    #[arg(long, default_value = "1000000", value_parser = parse_count)]
    pub readings: u64,
    /// Readings per message (a JSON array; 1 sends a bare number).
    #[arg(long, default_value_t = 100)]
    pub readings_per_message: usize,
    /// Distinct sensors (`bench-mqtt-0000`, …), one topic each.
    #[arg(long, default_value_t = 100)]
    pub sensors: usize,
    /// Tenant slug in the topics (must be in the server's mqtt.broker_tenants).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Most messages published and not yet committed, over all publishers. A broker drops
    /// what it cannot queue for a slow subscriber (Mosquitto: `max_queued_messages`,
    /// 1000 by default), so the publishers hold back past this.
    #[arg(long, default_value_t = 500)]
    pub window: u64,
    /// The broker's process id, for its CPU time (default: /run/mosquitto/mosquitto.pid).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct MqttReport {
    /// Concurrent publishers.
    pub publishers: usize,
    /// Messages published in all.
    pub messages: u64,
    /// Readings published in all.
    pub readings: u64,
    /// Readings in each message.
    pub readings_per_message: usize,
    /// First publish → last PUBACK from the broker.
    pub publish_seconds: f64,
    /// First publish → every reading committed.
    pub end_to_end_seconds: f64,
    /// Readings committed per second, end to end.
    pub readings_per_second: f64,
    /// The broker's user+system CPU over the run, when its pid was known.
    pub broker_cpu_seconds: Option<f64>,
    /// The same as a share of one core over the end-to-end time.
    pub broker_cpu_percent: Option<f64>,
}

impl std::fmt::Display for MqttReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "MQTT QoS 1 through the broker: {} publishers, {} messages × {} readings = {} readings",
            self.publishers, self.messages, self.readings_per_message, self.readings
        )?;
        writeln!(
            f,
            "  publish (last PUBACK)   {:>10.2} s",
            self.publish_seconds
        )?;
        writeln!(
            f,
            "  end to end (committed)  {:>10.2} s",
            self.end_to_end_seconds
        )?;
        writeln!(
            f,
            "  throughput              {:>10.0} readings/s",
            self.readings_per_second
        )?;
        match (self.broker_cpu_seconds, self.broker_cpu_percent) {
            (Some(s), Some(p)) => writeln!(
                f,
                "  broker CPU              {s:>10.2} s ({p:.0} % of one core)"
            ),
            _ => writeln!(
                f,
                "  broker CPU              n/a (no --broker-pid, no pid file)"
            ),
        }
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: BenchMqttArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = bench_mqtt(args).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Runs the benchmark and returns its figures. Progress goes to stderr.
pub async fn bench_mqtt(args: BenchMqttArgs) -> anyhow::Result<MqttReport> {
    if !(1..=1_000).contains(&args.publishers) {
        bail!("--publishers must be between 1 and 1,000");
    }
    if !(1..=10_000).contains(&args.readings_per_message) {
        bail!("--readings-per-message must be between 1 and 10,000");
    }
    if args.sensors == 0 || args.readings == 0 {
        bail!("--sensors and --readings must be at least 1");
    }
    let (host, port) = broker_address(&args.broker)?;
    if !args.spawn {
        let target = Target::parse(&args.target.url)?;
        return measure(&args, &target, &host, port).await;
    }
    let binary = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this executable to spawn `serve`")?,
    };
    let token = format!("{:032x}", rand::random::<u128>());
    // Fixed names: the broker keeps a persistent session per client id, so a new one per
    // run would pile up sessions (each queueing messages) on the broker.
    let env = vec![
        ("VIGIA_MQTT__BROKER".to_string(), args.broker.clone()),
        (
            "VIGIA_MQTT__SHARE_GROUP".to_string(),
            "vigia-bench".to_string(),
        ),
        (
            "VIGIA_MQTT__CLIENT_ID".to_string(),
            "vigia-bench".to_string(),
        ),
    ];
    let server = SpawnedServer::start_with(&binary, &token, "all", &env).await?;
    eprintln!("spawned {} serve at {}", binary.display(), server.url);
    let log = server.dir.join("server.log");
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("MQTT broker subscribed")
    {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = server.stop(true).await;
            bail!(
                "the spawned server did not subscribe to {} within 30 s (see {})",
                args.broker,
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = Target::parse(&server.url)?;
    let result = measure(&args, &target, &host, port).await;
    server.stop(result.is_err()).await?;
    result
}

fn broker_address(url: &str) -> anyhow::Result<(String, u16)> {
    let rest = url
        .strip_prefix("mqtt://")
        .with_context(|| format!("--broker `{url}` must start with mqtt://"))?;
    let rest = rest.trim_end_matches('/');
    Ok(match rest.rsplit_once(':') {
        Some((host, port)) => (host.to_string(), port.parse().context("--broker port")?),
        None => (rest.to_string(), 1883),
    })
}

async fn written(target: &Target) -> anyhow::Result<f64> {
    let mut conn = Connection::new(target, None, Duration::from_secs(10))?;
    let res = conn.get("/metrics").await?;
    Ok(MetricsSnapshot::parse(&res.body_text())
        .get(STORE_READINGS_WRITTEN_TOTAL)
        .unwrap_or(0.0))
}

/// The broker's user + system CPU seconds so far.
fn broker_cpu(pid: Option<u32>) -> Option<f64> {
    let pid = match pid {
        Some(pid) => pid,
        None => std::fs::read_to_string("/run/mosquitto/mosquitto.pid")
            .ok()?
            .trim()
            .parse()
            .ok()?,
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

async fn measure(
    args: &BenchMqttArgs,
    target: &Target,
    host: &str,
    port: u16,
) -> anyhow::Result<MqttReport> {
    let per = args.readings_per_message as u64;
    let messages = args.readings.div_ceil(per);
    let total = messages * per;
    let base = vigia_core::Timestamp::now().0 - 3_600_000;
    // Payloads before the clock: message i goes to sensor i % sensors, and its readings'
    // times are distinct per sensor (the store keys readings by time, sensor, metric).
    let mut plans: Vec<Vec<(String, Vec<u8>)>> = vec![Vec::new(); args.publishers];
    for i in 0..messages {
        let sensor = i % args.sensors as u64;
        let first = base + (i / args.sensors as u64 * per) as i64;
        let payload = if per == 1 {
            format!("{}", first % 1000)
        } else {
            let rows: Vec<String> = (0..per as i64)
                .map(|k| format!(r#"{{"value":{},"ts":{}}}"#, (first + k) % 1000, first + k))
                .collect();
            format!("[{}]", rows.join(","))
        };
        let topic = format!("vigia/{}/bench-mqtt-{sensor:04}", args.tenant);
        plans[(i % args.publishers as u64) as usize].push((topic, payload.into_bytes()));
    }
    let before = written(target).await?;
    let cpu_before = broker_cpu(args.broker_pid);
    eprintln!(
        "publishing {messages} messages ({total} readings) from {} publishers to {host}:{port}",
        args.publishers
    );
    let flow = Arc::new(Flow {
        sent: AtomicU64::new(0),
        committed: AtomicU64::new(0),
        window: args.window.max(1),
        per,
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (n, plan) in plans.into_iter().enumerate() {
        let host = host.to_string();
        let max_packet = plan.iter().map(|(_, p)| p.len()).max().unwrap_or(0) + 1024;
        let flow = flow.clone();
        tasks.push(tokio::spawn(async move {
            publisher(n, host, port, plan, max_packet, flow).await
        }));
    }
    let mut published = None;
    let mut last_progress = (0.0, Instant::now());
    loop {
        let done = written(target).await? - before;
        flow.committed
            .store(done.max(0.0) as u64, Ordering::Relaxed);
        if done >= total as f64 {
            break;
        }
        if published.is_none() && tasks.iter().all(|t| t.is_finished()) {
            for task in tasks.drain(..) {
                task.await.context("publisher task")??;
            }
            published = Some(start.elapsed());
            eprintln!(
                "every PUBACK after {:.2?}; waiting for the commits",
                start.elapsed()
            );
        }
        if done > last_progress.0 {
            last_progress = (done, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(20) {
            bail!(
                "{done} of {total} readings committed and no progress for 20 s: did the broker \
                 drop messages (Mosquitto's max_queued_messages; try a smaller --window), or is \
                 the server not subscribed?"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    for task in tasks {
        task.await.context("publisher task")??;
    }
    let published = published.unwrap_or(elapsed);
    let cpu = match (cpu_before, broker_cpu(args.broker_pid)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(MqttReport {
        publishers: args.publishers,
        messages,
        readings: total,
        readings_per_message: args.readings_per_message,
        publish_seconds: published.as_secs_f64(),
        end_to_end_seconds: elapsed.as_secs_f64(),
        readings_per_second: total as f64 / elapsed.as_secs_f64(),
        broker_cpu_seconds: cpu,
        broker_cpu_percent: cpu.map(|c| 100.0 * c / elapsed.as_secs_f64()),
    })
}

/// Messages sent and readings committed, shared by the publishers and the poller.
struct Flow {
    sent: AtomicU64,
    committed: AtomicU64,
    window: u64,
    per: u64,
}

/// One QoS 1 publisher: sends its messages (up to rumqttc's in-flight window unacked)
/// and returns once the broker acked every one.
async fn publisher(
    n: usize,
    host: String,
    port: u16,
    plan: Vec<(String, Vec<u8>)>,
    max_packet: usize,
    flow: Arc<Flow>,
) -> anyhow::Result<()> {
    let id = format!("vigia-bench-pub-{n}-{:08x}", rand::random::<u32>());
    let mut options = MqttOptions::new(id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100)
        .set_max_packet_size(max_packet, max_packet);
    let count = plan.len();
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let sender = tokio::spawn(async move {
        for (topic, payload) in plan {
            while flow.sent.load(Ordering::Relaxed)
                >= flow.committed.load(Ordering::Relaxed) / flow.per + flow.window
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            flow.sent.fetch_add(1, Ordering::Relaxed);
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0;
    while acked < count {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => bail!("publisher {n}: {e}"),
        }
    }
    let client = sender.await.context("publisher sender")??;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    Ok(())
}
