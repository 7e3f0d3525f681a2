//! `spawn_app` for end-to-end tests: starts the real `vigia` binary on a free port with
//! a fresh data dir, and talks to it over HTTP as a client would.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "test-bootstrap-token-0123456789";

/// A running server process.
pub struct TestServer {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
    pub output: Arc<Mutex<Vec<String>>>,
    _tmp: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// How to start a server.
#[derive(Default, Clone)]
pub struct Options {
    pub demo: bool,
    /// Extra `VIGIA_*` settings.
    pub env: Vec<(String, String)>,
    /// Reuse this data dir (to restart a killed server on the same data).
    pub data_dir: Option<PathBuf>,
    /// Extra command-line arguments after `serve`.
    pub args: Vec<String>,
}

impl TestServer {
    pub fn start(options: Options) -> TestServer {
        let (tmp, data_dir) = match options.data_dir {
            Some(dir) => (None, dir),
            None => {
                let tmp = tempfile::tempdir().expect("tempdir");
                let dir = tmp.path().join("data");
                (Some(tmp), dir)
            }
        };
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        if options.demo {
            args.push("--demo".into());
        }
        args.extend(options.args);
        let mut env = vec![
            ("VIGIA_BOOTSTRAP_TOKEN".to_string(), TOKEN.to_string()),
            ("RUST_LOG".to_string(), "warn,vigia=info".to_string()),
        ];
        env.extend(options.env);
        let mut server = TestServer {
            child: None,
            base: String::new(),
            data_dir,
            output: Arc::new(Mutex::new(Vec::new())),
            _tmp: tmp,
            env,
            args,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigia"));
        cmd.args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        // A clean slate: no settings leak in from the developer's environment.
        for (k, _) in std::env::vars() {
            if k.starts_with("VIGIA_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start vigia");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for (stream, tx) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)),
            (Box::new(stderr) as Box<dyn std::io::Read + Send>, None),
        ] {
            let output = self.output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(tx) = &tx {
                        if let Some(url) = line.strip_prefix("Vigía listening on ") {
                            let _ = tx.send(url.to_string());
                        }
                    }
                    output.lock().unwrap().push(line);
                }
            });
        }
        let base = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("server did not start:\n{}", self.log()));
        self.base = base;
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no chance to flush or drain anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "server did not stop within 60 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same server again on the same data dir (new port).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP client authenticated as the bootstrap key.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub async fn post_json(url: &str, body: &Value) -> reqwest::Response {
    client()
        .post(url)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("request")
}

pub async fn get_json(url: &str) -> Value {
    let res = client()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    assert!(res.status().is_success(), "GET {url}: {}", res.status());
    res.json().await.expect("json")
}

/// Polls `check` every 50 ms until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of a Prometheus counter or gauge, summed over label sets.
pub async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until every accepted reading has been processed (bus empty).
pub async fn drained(server: &TestServer) {
    eventually(Duration::from_secs(60), "the bus to drain", || async {
        let depth = metric(server, "vigia_bus_depth_readings").await;
        (depth == 0.0).then_some(())
    })
    .await;
}

/// Runs `vigia keys create` with these arguments, with no `VIGIA_*` setting leaking in.
pub fn keys_create(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigia"));
    cmd.args(["keys", "create"]).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("VIGIA_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run vigia keys create")
}

/// A new key of `tenant` on the server's store, as a script would capture it.
/// A new API key of `tenant` (created with the key if missing), made by the CLI on the
/// data dir of a server.
pub fn new_key(data_dir: &Path, tenant: &str, name: &str) -> String {
    let dir = data_dir.display().to_string();
    let out = keys_create(&["--data-dir", &dir, "--tenant", tenant, "--name", name]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "keys create failed: {stderr}");
    assert!(stderr.contains(&format!("tenant `{tenant}`")), "{stderr}");
    let key = stdout
        .lines()
        .last()
        .expect("a line on stdout")
        .trim()
        .to_string();
    assert!(key.starts_with("vg_") && key.len() == 43, "{stdout:?}");
    assert!(!stderr.contains(&key), "the key is printed once, on stdout");
    key
}

/// Settings under which a reading of any year (0000–9999) is accepted and kept: for tests
/// of the document's boundaries rather than of `ingest.max_age` and retention.
pub fn any_history() -> Vec<(String, String)> {
    // 800,000 days reach back past the year 0.
    [
        "VIGIA_INGEST__MAX_AGE",
        "VIGIA_RETENTION__RAW",
        "VIGIA_RETENTION__ROLLUPS",
    ]
    .into_iter()
    .map(|key| (key.to_string(), "800000d".to_string()))
    .collect()
}
