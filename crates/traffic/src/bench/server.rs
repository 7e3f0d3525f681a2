//! Which server a benchmark measures: one named by `--url`/`--token`, or (`--spawn`) a
//! fresh one of its own on a free loopback port with a throwaway data dir, so that a
//! benchmark never measures (or pollutes) a server that holds real data. Shared by
//! `vigia bench ingest` and `vigia bench alerts`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::StatusCode;
use tokio::process::{Child, Command};

use crate::http::{Connection, Target};

/// How long a fresh server may take to answer 200 on `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The server to measure when none is spawned: the first flags of every benchmark.
#[derive(clap::Args, Clone)]
pub struct TargetArgs {
    /// Server to measure (ignored with --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key sent as `Authorization: Bearer …` (not needed with --spawn).
    #[arg(long, env = "VIGIA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl std::fmt::Debug for TargetArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetArgs")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `--spawn` and the flags that go with it.
#[derive(clap::Args, Debug, Clone)]
pub struct SpawnArgs {
    /// With --spawn: the store every spawned process uses (`VIGIA_STORE`), e.g.
    /// `postgres://postgres@127.0.0.1/bench`; default: each process's embedded SQLite.
    #[arg(long, requires = "spawn", value_name = "URL")]
    pub store: Option<String>,
    /// With --spawn: the bus every spawned process uses (`VIGIA_BUS`), e.g. `redis://127.0.0.1`.
    #[arg(long, requires = "spawn", value_name = "URL")]
    pub bus: Option<String>,
    /// With --spawn: the fan-out every spawned process uses (`VIGIA_FANOUT`).
    #[arg(long, requires = "spawn", value_name = "URL")]
    pub fanout: Option<String>,
    /// With --spawn: the processes to start, separated by spaces, each a comma-separated
    /// role list, e.g. "ingest,api worker worker". Load goes to the first process with
    /// `ingest`; commits are summed over every process. More than one process needs a
    /// shared --store and --bus.
    #[arg(long, requires = "spawn", default_value = "all", value_name = "LIST")]
    pub processes: String,
    /// Start a fresh server (this binary's `serve`) on a free port with a temporary
    /// data dir, measure it, then stop it with SIGTERM.
    #[arg(long)]
    pub spawn: bool,
    /// With --spawn: keep the temporary data dir and server log afterwards.
    #[arg(long, requires = "spawn")]
    pub keep_data: bool,
    /// With --spawn: the server binary to start (default: this executable), e.g. the
    /// previous build, to compare two builds in the same run.
    #[arg(long, alias = "binary", requires = "spawn", value_name = "PATH")]
    pub server_bin: Option<PathBuf>,
    /// Settings a benchmark needs its spawned servers to have (e.g. a retention long
    /// enough for the history it seeds); not a flag.
    #[arg(skip)]
    pub settings: Vec<(String, String)>,
}

/// The server a measurement runs against.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Where readings are posted (the process with the `ingest` role).
    pub target: Target,
    /// Where reads and the live feed are served (the process with the `api` role; the same
    /// as `target` for a single process).
    pub api: Target,
    /// Every process of the deployment, for metrics summed or compared across processes:
    /// its roles and where it listens. Just `target` for a server named by `--url`.
    pub processes: Vec<(String, Target)>,
    /// The API key to send.
    pub token: String,
    /// Its data dir, when the benchmark spawned it (and so it holds nothing else).
    pub data_dir: Option<PathBuf>,
}

/// Runs `measure` against the server the flags name: the one at `--url`, or with
/// `--spawn` a fresh one that is stopped afterwards (its folder kept with `--keep-data`,
/// or when the measurement failed, since its `server.log` is what explains it).
/// Progress goes to stderr.
pub async fn on_server<T, F, Fut>(
    target: &TargetArgs,
    spawn: &SpawnArgs,
    measure: F,
) -> anyhow::Result<T>
where
    F: FnOnce(Measured) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    if !spawn.spawn {
        let token = target
            .token
            .clone()
            .context("--token (or VIGIA_TOKEN) is required unless --spawn starts a server")?;
        let target = Target::parse(&target.url)?;
        return measure(Measured {
            api: target.clone(),
            processes: vec![("?".into(), target.clone())],
            target,
            token,
            data_dir: None,
        })
        .await;
    }
    let binary = match &spawn.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this executable to spawn `serve`")?,
    };
    let plan = ProcessPlan::parse(spawn)?;
    let token = format!("{:032x}", rand::random::<u128>());
    let mut servers: Vec<SpawnedServer> = Vec::new();
    // One at a time: the first creates the schema and the bootstrap key the rest find.
    for roles in &plan.roles {
        match SpawnedServer::start_with(&binary, &token, roles, &plan.env).await {
            Ok(server) => {
                eprintln!(
                    "spawned {} serve --roles {roles} at {}, data dir {}",
                    binary.display(),
                    server.url,
                    server.data_dir.display()
                );
                servers.push(server);
            }
            Err(e) => {
                for server in servers {
                    let _ = server.stop(false).await;
                }
                return Err(e);
            }
        }
    }
    let result = async {
        let pick = |role: &str| {
            plan.roles
                .iter()
                .position(|r| r == "all" || r.split(',').any(|x| x == role))
        };
        let ingest = pick("ingest").context("no spawned process has the ingest role")?;
        let api = pick("api").unwrap_or(ingest);
        let processes = plan
            .roles
            .iter()
            .zip(&servers)
            .map(|(roles, s)| Ok((roles.clone(), Target::parse(&s.url)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        measure(Measured {
            target: processes[ingest].1.clone(),
            api: processes[api].1.clone(),
            processes,
            token: token.clone(),
            data_dir: Some(servers[ingest].data_dir.clone()),
        })
        .await
    }
    .await;
    let keep = spawn.keep_data || result.is_err();
    for server in servers {
        let dir = server.dir.clone();
        match server.stop(keep).await {
            Ok(status) if keep => {
                eprintln!("spawned server stopped ({status}); kept {}", dir.display())
            }
            Ok(status) => eprintln!(
                "spawned server stopped ({status}); removed {}",
                dir.display()
            ),
            Err(e) => eprintln!("stopping the spawned server: {e:#}"),
        }
    }
    result
}

/// The processes `--spawn` starts and the backend settings they share.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessPlan {
    /// Each process's `--roles`.
    pub roles: Vec<String>,
    /// `VIGIA_STORE`, `VIGIA_BUS`, `VIGIA_FANOUT` as given.
    pub env: Vec<(String, String)>,
}

impl ProcessPlan {
    /// Checks `--processes` against `--store`/`--bus`: separate processes only share
    /// readings through a server store and a server bus.
    pub fn parse(spawn: &SpawnArgs) -> anyhow::Result<Self> {
        let roles: Vec<String> = spawn
            .processes
            .split_whitespace()
            .map(String::from)
            .collect();
        if roles.is_empty() {
            bail!("--processes needs at least one process, e.g. \"all\" or \"ingest,api worker\"");
        }
        if !roles
            .iter()
            .any(|r| r == "all" || r.split(',').any(|x| x == "ingest"))
        {
            bail!("--processes: no process has the ingest role, so there is nothing to load");
        }
        let embedded = |url: &Option<String>, embedded: &[&str]| {
            url.as_deref().is_none_or(|u| {
                let scheme = u.split(':').next().unwrap_or(u);
                embedded.contains(&scheme)
            })
        };
        if roles.len() > 1 {
            if embedded(&spawn.store, &["sqlite", "volatile"]) {
                bail!("--processes with {} processes needs a shared --store (postgres://… or mysql://…): each process's embedded store is its own", roles.len());
            }
            if embedded(&spawn.bus, &["memory", "embedded", "volatile"]) {
                bail!("--processes with {} processes needs a shared --bus (redis://… or nats://…): each process's embedded bus is its own", roles.len());
            }
        }
        let env = [
            ("VIGIA_STORE", &spawn.store),
            ("VIGIA_BUS", &spawn.bus),
            ("VIGIA_FANOUT", &spawn.fanout),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .chain(spawn.settings.iter().cloned())
        .collect();
        Ok(Self { roles, env })
    }
}

/// Fails unless `target` answers `GET /healthz` with 200, so that a wrong `--url`
/// is reported as such before any load is generated.
pub async fn ensure_vigia(conn: &mut Connection, target: &Target) -> anyhow::Result<()> {
    match conn.get("/healthz").await {
        Ok(r) if r.status == StatusCode::OK => Ok(()),
        Ok(r) => bail!(
            "{}/healthz answered {}: is this a Vigía server?",
            target.url(),
            r.status
        ),
        Err(e) => bail!("no server at {}: {e}", target.url()),
    }
}

/// A server process started by the benchmark.
pub struct SpawnedServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Folder holding the data dir and `server.log`.
    pub dir: PathBuf,
    /// The server's `--data-dir`.
    pub data_dir: PathBuf,
}

impl SpawnedServer {
    /// Starts `binary serve` (every role, embedded defaults unless the environment says
    /// otherwise) on a free port and waits until `/readyz` answers 200.
    #[cfg(test)]
    pub async fn start(binary: &Path) -> anyhow::Result<Self> {
        let token = format!("{:032x}", rand::random::<u128>());
        Self::start_with(binary, &token, "all", &[]).await
    }

    /// Starts `binary serve --roles roles` with `env` on a free port and waits until
    /// `/readyz` answers 200. The child inherits the environment (so `VIGIA_STORE` and
    /// friends select the backends under test; `env` wins) and writes its output to
    /// `<dir>/server.log`.
    pub async fn start_with(
        binary: &Path,
        token: &str,
        roles: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let dir = std::env::temp_dir().join(format!(
            "vigia-bench-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let started = Self::launch(binary, port, token, dir.clone(), roles, env).await;
        if started.is_err() {
            // The error carries the log's tail; a folder per failed start would only pile up.
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    async fn launch(
        binary: &Path,
        port: u16,
        token: &str,
        dir: PathBuf,
        roles: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let data_dir = dir.join("data");
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--roles")
            .arg(roles)
            .env("VIGIA_BOOTSTRAP_TOKEN", token)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} serve", binary.display()))?;
        let mut server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            data_dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let target = Target::parse(&self.url)?;
        let mut conn = Connection::new(&target, None, Duration::from_secs(1))?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "the spawned server exited ({status}) before it was ready; end of {}:\n{}",
                    self.log_path().display(),
                    self.log_tail()
                );
            }
            if let Ok(r) = conn.get("/readyz").await {
                if r.status == StatusCode::OK {
                    return Ok(());
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the spawned server was not ready within {READY_TIMEOUT:?}; end of {}:\n{}",
                    self.log_path().display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's output.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Asks the server to stop (SIGTERM, as an operator would), kills it if it takes
    /// longer than [`STOP_TIMEOUT`], and removes its folder unless `keep`.
    pub async fn stop(mut self, keep: bool) -> anyhow::Result<ExitStatus> {
        terminate(&self.child);
        let status = match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                tracing::warn!("spawned server ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
                self.child.kill().await?;
                self.child.wait().await?
            }
        };
        if !keep {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("removing {}", self.dir.display()))?;
        }
        Ok(status)
    }
}

#[cfg(unix)]
fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory
        // effects; the worst outcome is ESRCH if the child already exited.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) {
    // No SIGTERM: `stop` falls back to killing the process after the timeout.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_binary_that_exits_at_once_is_reported_with_its_output() {
        // `/bin/sh serve …` fails at once (no such script), like a server that cannot start.
        let err = SpawnedServer::start(Path::new("/bin/sh"))
            .await
            .err()
            .expect("sh is no server");
        let text = format!("{err:#}");
        assert!(text.contains("exited") && text.contains("serve"), "{text}");
    }

    fn spawn_args(processes: &str, store: Option<&str>, bus: Option<&str>) -> SpawnArgs {
        SpawnArgs {
            store: store.map(String::from),
            bus: bus.map(String::from),
            fanout: None,
            processes: processes.into(),
            spawn: true,
            keep_data: false,
            server_bin: None,
            settings: Vec::new(),
        }
    }

    #[test]
    fn process_plans_need_shared_backends_and_an_ingest_process() {
        let plan = ProcessPlan::parse(&spawn_args("all", None, None)).unwrap();
        assert_eq!(plan.roles, vec!["all"]);
        assert!(plan.env.is_empty());

        let plan = ProcessPlan::parse(&spawn_args(
            "ingest,api  worker worker",
            Some("postgres://postgres@127.0.0.1/bench"),
            Some("redis://127.0.0.1"),
        ))
        .unwrap();
        assert_eq!(plan.roles, vec!["ingest,api", "worker", "worker"]);
        assert_eq!(
            plan.env,
            vec![
                (
                    "VIGIA_STORE".into(),
                    "postgres://postgres@127.0.0.1/bench".into()
                ),
                ("VIGIA_BUS".into(), "redis://127.0.0.1".into()),
            ]
        );

        let err = |p, s, b| {
            format!(
                "{:#}",
                ProcessPlan::parse(&spawn_args(p, s, b)).unwrap_err()
            )
        };
        assert!(err("", None, None).contains("at least one process"));
        assert!(err("api worker", Some("postgres://x"), Some("redis://x")).contains("ingest role"));
        assert!(err("ingest worker", None, Some("redis://x")).contains("shared --store"));
        assert!(err("ingest worker", Some("sqlite"), Some("redis://x")).contains("shared --store"));
        assert!(err("ingest worker", Some("mysql://x"), Some("memory")).contains("shared --bus"));
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_clear_error() {
        let err = SpawnedServer::start(Path::new("/nonexistent/vigia"))
            .await
            .err()
            .expect("no binary");
        assert!(format!("{err:#}").contains("/nonexistent/vigia"), "{err:#}");
    }
}
