//! `vigia`: one binary for the server and its clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigia::config::{Config, ObjectsOverride, Overrides};

/// mimalloc instead of glibc malloc: the ingest profile spent ~7% in glibc's
/// malloc/free/consolidate, and glibc's per-thread arenas inflated peak RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vigia",
    version,
    about = "Vigía: industrial telemetry — ingest, store, alert, show live."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (API, workers, web page) on the embedded defaults or the configured backends.
    Serve(ServeArgs),
    /// Simulate cold rooms posting readings to a server.
    Simulate(vigia_traffic::simulate::SimulateArgs),
    /// Measure a running server.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Issue API keys for tenants, on the store a server uses (it may be running).
    Keys {
        #[command(subcommand)]
        what: vigia::keys::KeysCommand,
    },
    /// Import product prices into the store a server uses (it may be running).
    Prices {
        #[command(subcommand)]
        what: vigia::prices::PricesCommand,
    },
    /// GET a URL and exit 0 on a 2xx answer (health checks in images without curl).
    Probe(ProbeArgs),
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// The URL to GET, e.g. http://127.0.0.1:8080/readyz (plain http only).
    url: String,
    /// Give up after this many seconds (connect, request and body together).
    #[arg(long, default_value_t = 5.0)]
    timeout_s: f64,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// End-to-end ingest throughput, latency and peak RSS.
    Ingest(vigia_traffic::bench::BenchIngestArgs),
    /// Reading accepted → alert on the WebSocket latency, against a readings-frame baseline.
    Alerts(vigia_traffic::bench::alerts::BenchAlertsArgs),
    /// MQTT QoS 1 through an external broker, first publish → every reading committed,
    /// with the broker's CPU.
    Mqtt(vigia_traffic::bench::mqtt::BenchMqttArgs),
    /// A year of hourly points for one sensor among many, from the rollups, against raw
    /// averaging and the `/healthz` floor.
    Series(vigia_traffic::bench::series::BenchSeriesArgs),
    /// A long run at a steady rate, sampled: resident memory, data-dir size, bus depth and
    /// every refusal over time.
    Soak(vigia_traffic::bench::soak::BenchSoakArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file (default: ./vigia.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory [default: ./vigia-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Store URL: `sqlite` (default), `sqlite:///path/file.sqlite3`, `volatile://`,
    /// `postgres://user:password@host:5432/db` or `mysql://user:password@host:3306/db`.
    #[arg(long)]
    store: Option<String>,
    /// Bus URL: `memory` (embedded, durable; default) or `volatile://` (in memory, not durable).
    #[arg(long)]
    bus: Option<String>,
    /// Object store URL: a directory (default: `<data_dir>/objects`), `file:///path`, or
    /// `s3://bucket?endpoint=…&region=…`.
    #[arg(long)]
    objects: Option<String>,
    /// Provision the seed-000 cold rooms and simulate them.
    #[arg(long)]
    demo: bool,
    /// Roles of this process, comma separated: ingest, worker, api, scheduler [default: all].
    #[arg(long)]
    roles: Option<String>,
    /// Load and validate the configuration, print a summary and exit (0 when valid).
    #[arg(long)]
    check: bool,
}

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (the -sys crate names only
/// some options). Purging freed pages at once instead of after 10 ms kept peak RSS
/// under ingest ~15 MB lower at no measurable throughput cost.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // SAFETY: setting an allocator option is allowed at any time; it only changes when
    // freed memory is returned to the OS.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let overrides = Overrides {
                listen: args.listen,
                data_dir: args.data_dir,
                store: args.store,
                bus: args.bus,
                demo: args.demo.then_some(true),
                roles: args.roles,
                objects: args.objects.map(|url| ObjectsOverride { url }),
            };
            let config = Config::load(args.config.as_deref(), &overrides)?;
            if args.check {
                print!("{}", vigia::check::summary(&config));
                return Ok(());
            }
            init_logging(&config.log);
            vigia::serve::serve(config).await
        }
        Command::Simulate(args) => {
            init_logging("info");
            let report = vigia_traffic::simulate::simulate(args, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            println!("{report}");
            Ok(())
        }
        Command::Bench {
            what: BenchCommand::Ingest(args),
        } => {
            init_logging("warn");
            // Prints a table, or JSON with `--json`.
            vigia_traffic::bench::run(args).await
        }
        Command::Bench {
            what: BenchCommand::Alerts(args),
        } => {
            init_logging("warn");
            // Prints a table, or JSON with `--json`; fails when an alert never arrived.
            vigia_traffic::bench::alerts::run(args).await
        }
        Command::Bench {
            what: BenchCommand::Mqtt(args),
        } => {
            init_logging("warn");
            vigia_traffic::bench::mqtt::run(args).await
        }
        Command::Bench {
            what: BenchCommand::Series(args),
        } => {
            init_logging("warn");
            vigia_traffic::bench::series::run(args).await
        }
        Command::Bench {
            what: BenchCommand::Soak(args),
        } => {
            init_logging("warn");
            vigia_traffic::bench::soak::run(args).await
        }
        Command::Keys { what } => {
            init_logging("warn");
            vigia::keys::run(what).await
        }
        Command::Prices { what } => {
            init_logging("warn");
            vigia::prices::run(what).await
        }
        Command::Probe(args) => {
            // A bad timeout is a typo in a health check: say so rather than wait forever.
            if !(args.timeout_s.is_finite() && args.timeout_s > 0.0 && args.timeout_s <= 3600.0) {
                anyhow::bail!(
                    "--timeout-s must be between 0 and 3600 seconds, got {}",
                    args.timeout_s
                );
            }
            let timeout = std::time::Duration::from_secs_f64(args.timeout_s);
            let answer = vigia::probe::probe(&args.url, timeout)
                .await
                .map_err(|e| anyhow::anyhow!("probe: {e:#}"))?;
            println!("{} {}", answer.status, answer.detail);
            Ok(())
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; in a log file they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
