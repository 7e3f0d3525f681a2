//! `vigia serve`: wires store, bus, worker pool and HTTP app together, runs them, and
//! shuts them down in order (stop accepting → end live streams → drain the bus → close
//! the store).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::sync::watch;
use tracing::{info, warn};
use vigia_bus::{Bus, Capacity, OpenContext, Topic};
use vigia_ingest::decode::DecodeLimits;
use vigia_ingest::{LiveHub, Pipeline, PipelineConfig};
use vigia_rules::EngineConfig;
use vigia_store::{SqliteStore, SqliteStoreOptions, Store};
use vigia_web::{telemetry::Metrics, AppState, Bootstrap, IngestLimits};

use crate::config::Config;
use crate::demo;

/// Runs the server until SIGTERM or Ctrl-C, then drains.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "could not create the data dir {}",
            config.data_dir.display()
        )
    })?;
    let (store, bus) = open_backends(&config).await?;
    let metrics = Metrics::install();

    let bootstrap = vigia_web::bootstrap(
        store.as_ref(),
        &config.data_dir,
        config.bootstrap_token.as_deref(),
    )
    .await
    .context("bootstrap failed")?;
    let tenant = store.default_tenant().await?.id;
    if config.demo {
        demo::provision(store.as_ref(), tenant).await?;
    }

    let live = LiveHub::new(1024);
    let pipeline = Pipeline::new(
        store.clone(),
        bus.clone(),
        live.clone(),
        pipeline_config(&config),
    )
    .await
    .context("could not rebuild rule state from the store")?;
    let mut workers = pipeline.spawn_workers();

    let state = AppState::new(pipeline.clone(), ingest_limits(&config), metrics);
    let app = vigia_web::app(state);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "could not listen on {} (is another server using it? choose another with --listen)",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    // Without TCP_NODELAY, Nagle's algorithm held the second live frame on a fresh
    // WebSocket for ~40 ms waiting on the client's delayed ACK (`vigia bench alerts`).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let base = format!("http://{addr}");
    // Tests and scripts read this exact line to find the port.
    println!("Vigía listening on {base}");
    announce_key(&bootstrap, &config, &base);

    let (stop_tx, stop_rx) = watch::channel(false);
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
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            info!("shutdown requested: finishing in-flight requests");
            closing_live.close();
            let _ = stop_tx.send(true);
        })
        .await
        .context("HTTP server failed")?;

    if let Some(sim) = simulator {
        let _ = sim.await;
    }
    info!(
        depth = bus.lag(Topic::READINGS).await.unwrap_or_default(),
        "draining the bus"
    );
    bus.close();
    let timeout = config.duration(&config.shutdown_timeout);
    let drained = tokio::time::timeout(timeout, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => info!("workers drained"),
        Err(_) => {
            warn!(
                depth = bus.lag(Topic::READINGS).await.unwrap_or_default(),
                "shutdown timeout: leaving the rest on the durable bus for the next start"
            );
            workers.abort_all();
        }
    }
    drop(pipeline);
    drop(bus);
    drop(store);
    info!("stopped");
    Ok(())
}

async fn open_backends(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Bus>)> {
    let store_path = config.store_path()?;
    let store = SqliteStore::open(SqliteStoreOptions {
        durability: config.durability,
        // Measured with `vigia bench ingest --spawn --mode batched`: 8 MiB commits as fast
        // as 16 (readings append at the right edge of the time-first key, so few pages are
        // hot) and cut peak RSS from 100–104 MB to 82–87 MB.
        cache_mib: 8,
        ..SqliteStoreOptions::new(store_path.clone())
    })
    .await
    .with_context(|| format!("could not open the store at {}", store_path.display()))?;
    let bus = vigia_bus::open(
        &config.bus,
        &OpenContext {
            data_dir: config.data_dir.clone(),
            durability: config.durability,
            capacity: Capacity::default()
                .with(Topic::READINGS, config.ingest.queue_capacity_readings),
            // Waiting payloads past this are read back from the bus file (hot in the OS
            // page cache) instead of being held in process memory.
            memory_budget_bytes: 8 * 1024 * 1024,
        },
    )
    .await?;
    let depth = bus.lag(Topic::READINGS).await?;
    if depth > 0 {
        info!(depth, "replaying readings left on the bus by the last run");
    }
    Ok((Arc::new(store), bus))
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
    }
}

fn ingest_limits(config: &Config) -> IngestLimits {
    IngestLimits {
        max_body_bytes: config.ingest.max_body_bytes,
        decode: DecodeLimits {
            max_rows: config.ingest.max_batch_rows,
            max_future_ms: config.millis(&config.ingest.max_future),
        },
    }
}

fn announce_key(bootstrap: &Bootstrap, config: &Config, base: &str) {
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
