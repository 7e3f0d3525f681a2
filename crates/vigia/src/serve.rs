//! `vigia serve`: opens the backends by URL, starts what the process's roles need
//! (`crate::roles`), serves HTTP, and shuts down in order (stop accepting → end live
//! streams → drain the bus → close the store).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tracing::{info, warn};
use vigia_bus::{readings, Bus, Capacity, OpenContext};
use vigia_core::Control;
use vigia_fanout::FanoutOptions;
use vigia_ingest::decode::DecodeLimits;
use vigia_ingest::{Pipeline, PipelineConfig, SensorDirectory};
use vigia_rules::EngineConfig;
use vigia_services::{
    AlertService, AuditTrail, Authenticator, Bootstrap, IngestLimits, IngestService, KeyService,
    RejectionLog, SensorService,
};
use vigia_web::{
    telemetry::Metrics, AppServices, AppState, FailedAuthLimiter, IngestLimiter, LiveHub, Surfaces,
};

use crate::config::Config;
use crate::demo;
use crate::roles::{self, Roles};

/// Live events a subscriber may fall behind before it is told it lagged.
const LIVE_CAPACITY: usize = 1024;

/// Runs the server until SIGTERM or Ctrl-C, then drains.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let roles = roles::parse(&config.roles).map_err(|e| anyhow::anyhow!("roles: {e}"))?;
    if config.demo && !(roles.has("ingest") && roles.has("worker") && roles.has("api")) {
        anyhow::bail!(
            "--demo needs the ingest, worker and api roles (it posts to itself and shows the page)"
        );
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "could not create the data dir {}",
            config.data_dir.display()
        )
    })?;
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    let store = vigia_store::open(&config.store, &config.store_context())
        .await
        .context("could not open the store")?;
    let partitions = config.readings_partitions();
    let bus = if roles.use_bus() {
        Some(open_bus(&config, partitions).await?)
    } else {
        None
    };
    let metrics = Metrics::install();

    let bootstrap = vigia_services::bootstrap(
        store.as_ref(),
        &config.data_dir,
        config.bootstrap_token.as_deref(),
    )
    .await
    .context("bootstrap failed")?;
    let tenant = store.catalog().default_tenant().await?.id;
    if config.demo {
        demo::provision(store.as_ref(), tenant).await?;
    }

    let fanout = vigia_fanout::open(
        &config.fanout,
        &FanoutOptions {
            live_capacity: LIVE_CAPACITY,
            ..FanoutOptions::default()
        },
    )
    .await?;
    let directory = Arc::new(SensorDirectory::new());
    let sensors = directory
        .warm(store.as_ref())
        .await
        .context("could not load the sensors")?;
    let dir = directory.clone();
    fanout.on_control(Arc::new(move |message: &Control| {
        if let Control::SensorChanged(sensor) = message {
            dir.insert(sensor.clone());
        }
    }));

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = None;
    let mut silence_sweep = None;
    let mut pipeline_for_refresh = None;
    let mut pipeline_to_close: Option<Arc<Pipeline>> = None;
    if roles.has("worker") {
        let bus = bus.clone().context("the worker role has no bus")?;
        let pipeline = Pipeline::new(
            store.clone(),
            bus,
            fanout.clone(),
            directory.clone(),
            pipeline_config(&config),
        )
        .await
        .context("could not rebuild rule state from the store")?;
        workers = Some(pipeline.spawn_workers());
        silence_sweep = Some(pipeline.spawn_silence_sweep(
            config.duration(&config.rules.silence_sweep_every),
            stop_rx.clone(),
        ));
        pipeline_for_refresh = Some(pipeline.clone());
        pipeline_to_close = Some(pipeline);
    }
    let ingest = match (&bus, roles.has("ingest")) {
        (Some(bus), true) => Some(Arc::new(
            IngestService::new(
                bus.clone(),
                directory.clone(),
                config.ingest.provisioning,
                ingest_limits(&config),
            )
            .with_line_protocol_sensor_tag(&config.ingest.line_protocol_sensor_tag)
            .with_partitions(partitions),
        )),
        _ => None,
    };

    let scheduler = if roles.has("scheduler") {
        Some(crate::jobs::start(&config, store.clone()).context("could not start the scheduler")?)
    } else {
        None
    };

    let auth = Authenticator::new(store.clone(), fanout.as_ref());
    let cache_refresh = cross_process_fanout(&config.fanout).then(|| {
        tokio::spawn(refresh_caches(
            config.duration(&config.fanout_refresh),
            store.clone(),
            directory.clone(),
            auth.clone(),
            pipeline_for_refresh,
            stop_rx.clone(),
        ))
    });
    let rejections = Arc::new(RejectionLog::new());
    let mqtt = match &ingest {
        Some(ingest) => {
            start_mqtt(
                &config,
                ingest,
                &rejections,
                &auth,
                store.clone(),
                stop_rx.clone(),
            )
            .await?
        }
        None => Vec::new(),
    };

    let audit = AuditTrail::new(store.clone());
    let audit_flusher = audit.spawn_flusher(Duration::from_secs(1), stop_rx.clone());
    let live = LiveHub::new(
        fanout.clone(),
        vigia_web::LiveLimits {
            max_subscribers: config.live.max_subscribers,
            max_subscribers_per_key: config.live.max_subscribers_per_key,
            send_timeout: config.duration(&config.live.send_timeout),
        },
    );
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "could not listen on {} (is another server using it? choose another with --listen)",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let objects = if roles.has("api") {
        Some(open_objects(&config, addr).await?)
    } else {
        None
    };
    let robots = crate::robots::service(&config.robots, store.clone(), audit.clone()).await?;
    let robots_loop = roles.has("robots").then(|| {
        let own_url = format!("http://{addr}");
        crate::robots::start(
            &config.robots,
            store.clone(),
            robots.clone(),
            &own_url,
            stop_rx.clone(),
        )
    });
    let state = AppState::new(AppServices {
        ingest,
        sensors: Arc::new(SensorService::new(store.clone(), fanout.clone())),
        alerts: Arc::new(AlertService::new(store.clone(), fanout.clone())),
        keys: Arc::new(KeyService::new(
            store.clone(),
            fanout.clone(),
            audit.clone(),
        )),
        dead_letters: Arc::new(
            vigia_services::DeadLetterService::new(store.clone(), bus.clone(), audit.clone())
                .with_partitions(partitions),
        ),
        products: Arc::new(vigia_services::ProductService::new(
            store.clone(),
            audit.clone(),
        )),
        prices: Arc::new(vigia_services::PriceService::new(
            store.clone(),
            audit.clone(),
            config.prices.max_import_bytes,
        )),
        robots,
        auth,
        audit,
        rejections,
        failed_auth: Arc::new(FailedAuthLimiter::new(
            std::num::NonZeroU32::new(config.auth.max_failures_per_second)
                .context("auth.max_failures_per_second must be at least 1")?,
        )),
        ingest_rate: Arc::new(IngestLimiter::new(
            std::num::NonZeroU32::new(config.ingest.max_requests_per_second_per_key)
                .context("ingest.max_requests_per_second_per_key must be at least 1")?,
        )),
        live: live.clone(),
        jobs: scheduler.clone(),
        store: store.clone(),
        bus: bus.clone(),
        readings_partitions: partitions,
        metrics,
        objects,
    });
    let surfaces = Surfaces {
        ingest: roles.has("ingest"),
        api: roles.has("api"),
    };
    let app = vigia_web::app(state, surfaces);
    raise_file_limit(config.http.max_connections);
    let base = format!("http://{addr}");
    // Tests and scripts read this exact line to find the port.
    println!("Vigía listening on {base}");
    info!(roles = %roles.describe(), sensors, "serving");
    announce_key(&bootstrap, &config, &base, &roles);

    let simulator = if config.demo {
        let token = demo::simulator_token(store.as_ref(), tenant, &config, &bootstrap).await?;
        println!("Demo: CF-1, CF-2 (freezers, ≤ -18 °C) and REF-3 (fridge, 0–5 °C) every 5 s");
        println!("Open {base}/#token={token}");
        Some(tokio::spawn(demo::run_simulator(
            base.clone(),
            token,
            stop_rx.clone(),
        )))
    } else {
        None
    };

    let closing_live = live.clone();
    let limits = vigia_web::server::ServerLimits {
        max_connections: config.http.max_connections,
        header_read_timeout: config.duration(&config.http.header_read_timeout),
        body_read_timeout: config.duration(&config.http.body_read_timeout),
    };
    vigia_web::server::serve(listener, app, limits, async move {
        shutdown_signal().await;
        info!("shutdown requested: finishing in-flight requests");
        closing_live.close();
        let _ = stop_tx.send(true);
    })
    .await;

    if let Some(sim) = simulator {
        let _ = sim.await;
    }
    // MQTT front ends settle (ack) or leave unacked what they hold before the bus closes.
    for task in mqtt {
        let _ = task.await;
    }
    let _ = audit_flusher.await;
    if let Some(robots_loop) = robots_loop {
        let _ = robots_loop.await;
    }
    if let Some(refresh) = cache_refresh {
        let _ = refresh.await;
    }
    if let Some(sweep) = silence_sweep {
        let _ = sweep.await;
    }
    if let Some(scheduler) = &scheduler {
        let report = scheduler.stop(Duration::from_secs(10)).await;
        if !report.dropped.is_empty() {
            warn!(jobs = ?report.dropped, "jobs still running at shutdown were dropped");
        }
    }
    if let Some(pipeline) = &pipeline_to_close {
        // The partition owner hands its partitions back once they are drained.
        pipeline.close();
    }
    if let Some(bus) = &bus {
        info!(
            depth = readings::lag(&**bus, partitions).await.unwrap_or_default(),
            "draining the bus"
        );
        bus.close();
    }
    if let Some(mut workers) = workers {
        let timeout = config.duration(&config.shutdown_timeout);
        let drained = tokio::time::timeout(timeout, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        match drained {
            Ok(()) => info!("workers drained"),
            Err(_) => {
                let depth = match &bus {
                    Some(bus) => readings::lag(&**bus, partitions).await.unwrap_or_default(),
                    None => 0,
                };
                warn!(
                    depth,
                    "shutdown timeout: leaving the rest on the durable bus for the next start"
                );
                workers.abort_all();
            }
        }
    }
    drop(bus);
    store.close().await;
    info!("stopped");
    Ok(())
}

/// Refuses a second `vigia serve` on the same data dir: its embedded store, bus and
/// bootstrap token belong to one process (processes of a scaled-out deployment each get
/// their own data dir). The OS drops the lock when the process ends, even on `kill -9`.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("could not open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `vigia serve` is running on the data dir {}: one process per data dir \
             (the embedded store and bus are not shared between processes); stop it, or give \
             this process its own --data-dir",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("could not lock {}", path.display()))
        }
    }
}

/// Whether `url` carries the fan-out between processes (anything but in process).
fn cross_process_fanout(url: &str) -> bool {
    let scheme = url.trim().split("://").next().unwrap_or("");
    !(scheme.is_empty() || scheme.eq_ignore_ascii_case("memory"))
}

/// With a cross-process fan-out a control message can be lost (a broker outage, a
/// process that was reconnecting): every `every` the caches it feeds reload from the
/// store, so a lost `SensorChanged`, `KeyRevoked` or `ExcursionForgotten` heals within
/// `fanout_refresh`.
async fn refresh_caches(
    every: Duration,
    store: Arc<dyn vigia_store::Store>,
    directory: Arc<SensorDirectory>,
    auth: Arc<Authenticator>,
    pipeline: Option<Arc<Pipeline>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and the caches were just loaded.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        auth.forget_all();
        if let Err(e) = directory.warm(store.as_ref()).await {
            warn!(error = %e, "could not reload the sensors; retrying next refresh");
        }
        if let Some(pipeline) = &pipeline {
            match pipeline.forget_resolved_excursions().await {
                Ok(0) => {}
                Ok(forgotten) => info!(
                    forgotten,
                    "forgot excursions whose alerts were resolved elsewhere"
                ),
                Err(e) => {
                    warn!(error = %e, "could not compare rule state with the store's alerts; retrying next refresh")
                }
            }
        }
    }
}

async fn open_bus(config: &Config, partitions: usize) -> anyhow::Result<Arc<dyn Bus>> {
    let bus = vigia_bus::open(
        &config.bus,
        &OpenContext {
            data_dir: config.data_dir.clone(),
            durability: config.durability,
            // The bound on waiting readings holds for the whole family of partitions.
            capacity: Capacity::default()
                .with_readings(config.ingest.queue_capacity_readings, partitions),
            // Waiting payloads past this are read back from the bus file (hot in the OS
            // page cache) instead of being held in process memory.
            memory_budget_bytes: 8 * 1024 * 1024,
            ..OpenContext::new(&config.data_dir)
        },
    )
    .await
    .context("could not open the bus")?;
    let depth = readings::lag(&*bus, partitions).await?;
    if depth > 0 {
        info!(depth, "replaying readings left on the bus by the last run");
    }
    Ok(bus)
}

/// Starts the MQTT front ends the configuration asks for (role `ingest`): the broker
/// subscriber (`mqtt.broker`) and the embedded listener (`mqtt.listen`). They stop when
/// `stop` turns true; the returned tasks end once they have settled what they hold.
async fn start_mqtt(
    config: &Config,
    ingest: &Arc<IngestService>,
    rejections: &Arc<RejectionLog>,
    auth: &Arc<Authenticator>,
    store: Arc<dyn vigia_store::Store>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use vigia_mqtt::{broker, listener, MqttIngest};
    let mqtt = &config.mqtt;
    let mut tasks = Vec::new();
    if let Some(url) = &mqtt.broker {
        let mut tenants = std::collections::HashMap::new();
        for slug in mqtt.broker_tenant_slugs() {
            let tenant = store
                .catalog()
                .tenant_by_slug(&slug)
                .await?
                .with_context(|| {
                    format!("mqtt.broker_tenants names `{slug}`, which is not a tenant")
                })?;
            tenants.insert(slug, broker::broker_caller(tenant.id));
        }
        let fallback = store.catalog().default_tenant().await?.id;
        let client_id = mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| broker::default_client_id(&config.data_dir));
        let broker_config = broker::BrokerConfig {
            url: url.clone(),
            client_id: client_id.clone(),
            share_group: mqtt.share_group.clone(),
            keep_alive: config.duration(&mqtt.broker_keep_alive),
            max_packet_bytes: mqtt.max_packet_bytes,
        };
        let core = Arc::new(MqttIngest::new(
            ingest.clone(),
            rejections.clone(),
            "broker",
        ));
        let task = broker::spawn(broker_config, core, tenants, fallback, stop.clone())
            .map_err(|e| anyhow::anyhow!("setting `mqtt.broker`: {e}"))?;
        info!(broker = %url, client_id = %client_id, "MQTT broker subscriber started");
        tasks.push(task);
    }
    if let Some(addr) = mqtt.listen {
        let bound = listener::Listener::bind(addr).await.with_context(|| {
            format!(
                "could not listen for MQTT on {addr} (is another server using it? set mqtt.listen)"
            )
        })?;
        let local = bound.local_addr()?;
        // Tests and scripts read this exact line to find the port.
        println!("Vigía MQTT listening on mqtt://{local}");
        let core = Arc::new(MqttIngest::new(
            ingest.clone(),
            rejections.clone(),
            "listener",
        ));
        tasks.push(bound.spawn(
            core,
            auth.clone(),
            store,
            listener::ListenerConfig {
                max_connections: mqtt.max_connections,
                max_packet_bytes: mqtt.max_packet_bytes,
                max_inflight: mqtt.max_inflight,
                max_keep_alive: config.duration(&mqtt.max_keep_alive),
                connect_timeout: config.duration(&mqtt.connect_timeout),
            },
            stop,
        ));
    }
    Ok(tasks)
}

fn pipeline_config(config: &Config) -> PipelineConfig {
    PipelineConfig {
        workers: config.workers.count,
        batch_size: config.workers.batch_size,
        provisioning: config.ingest.provisioning,
        engine: EngineConfig {
            rate_window_ms: config.millis(&config.rules.rate_window),
            rate_min_interval_ms: config.millis(&config.rules.rate_min_interval),
            resolve_hold_ms: config.millis(&config.rules.resolve_hold),
        },
        retry_backoff: Duration::from_millis(100),
        partitions: config.readings_partitions(),
        affinity: vigia_ingest::affinity::AffinityConfig {
            member: vigia_ingest::affinity::default_member_name(),
            lease: config.duration(&config.workers.partition_lease),
        },
    }
}

fn ingest_limits(config: &Config) -> IngestLimits {
    IngestLimits {
        max_body_bytes: config.ingest.max_body_bytes,
        decode: DecodeLimits {
            max_rows: config.ingest.max_batch_rows,
            max_future_ms: config.millis(&config.ingest.max_future),
            max_age_ms: config.millis(&config.ingest.max_age),
        },
    }
}

fn announce_key(bootstrap: &Bootstrap, config: &Config, base: &str, roles: &Roles) {
    if !roles.has("api") {
        return;
    }
    match bootstrap {
        Bootstrap::Generated { key, file } => {
            println!("Created the admin API key of the default tenant (shown once):");
            println!("  {key}");
            println!("  (also saved to {}, readable only by you)", file.display());
            if !config.demo {
                println!("Open {base}/#token={key}");
            }
        }
        Bootstrap::FromEnv => {
            println!("The admin API key of the default tenant is VIGIA_BOOTSTRAP_TOKEN.")
        }
        Bootstrap::AlreadyDone => {
            if !config.demo {
                println!(
                    "Sign in at {base}/ with your API key ({} holds the first one).",
                    config.data_dir.join("bootstrap-token").display()
                );
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
/// Raises the soft limit on open files towards what `http.max_connections` needs (each
/// connection is a descriptor; the store, bus and logs need some more), and warns when
/// the hard limit is lower, since accepts past it would fail instead of getting a 503.
fn raise_file_limit(max_connections: usize) {
    const HEADROOM: u64 = 512;
    let wanted = max_connections as u64 + HEADROOM;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
    }
    if limit.rlim_cur < wanted {
        warn!(
            open_files = limit.rlim_cur,
            needed = wanted,
            "the open-file limit is below http.max_connections + {HEADROOM}: \
             lower http.max_connections or raise `ulimit -n`"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Reads a key from a file written by an earlier bootstrap, if any.
pub(crate) fn read_token_file(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("bootstrap-token")).ok()?;
    let token = text.trim().to_string();
    (!token.is_empty()).then_some(token)
}

/// Opens the object store and, for the local backend, signs its URLs with
/// `objects.signing_key` or the key kept in the data dir (made at first start).
async fn open_objects(
    config: &Config,
    addr: std::net::SocketAddr,
) -> anyhow::Result<vigia_web::routes::objects::ObjectRoutes> {
    let key = match &config.objects.signing_key {
        Some(key) => key.as_bytes().to_vec(),
        None => stored_signing_key(&config.data_dir)?,
    };
    let base = config
        .objects
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let ctx = config.objects_context().with_signing(key, base);
    let store = vigia_objects::open(&config.objects.url, &ctx)
        .await
        .with_context(|| format!("could not open the object store `{}`", config.objects.url))?;
    Ok(vigia_web::routes::objects::ObjectRoutes {
        store,
        max_put_bytes: config.objects.max_put_bytes,
    })
}

/// The signing key in `<data_dir>/objects-signing.key`: 32 random bytes, hex, readable by
/// the owner only, made when missing. It is written whole to a temporary file and then
/// linked into place, so a process starting at the same time never reads half a key.
fn stored_signing_key(data_dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let path = data_dir.join("objects-signing.key");
    let read = |path: &std::path::Path| -> anyhow::Result<Vec<u8>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        let key = text.trim();
        if key.len() < vigia_objects::signing::MIN_SIGNING_KEY_BYTES {
            anyhow::bail!(
                "{} holds a key shorter than 16 bytes; delete it to make a new one",
                path.display()
            );
        }
        Ok(key.as_bytes().to_vec())
    };
    if path.exists() {
        return read(&path);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("could not create {}", data_dir.display()))?;
    let key: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let temporary = data_dir.join(format!("objects-signing.key.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("could not create {}", temporary.display()))?;
    file.write_all(key.as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&temporary, &path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(key.into_bytes()),
        // Another process sharing the data dir made it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(e).with_context(|| format!("could not create {}", path.display())),
    }
}
