//! Runs the object store conformance suite against the S3 backend, on a real
//! S3-compatible server started here on a free loopback port and killed at the end; every
//! check gets a bucket of its own.
//!
//! - moto (`tests/s3/run.sh`, pinned, installed by `.ci/run`): always. Without it the test
//!   is skipped with a notice, unless `VIGIA_REQUIRE_SERVICES=1`, where it fails. moto
//!   checks no presigned signature, so expiry and the signed PUT length are checked from
//!   the URL there.
//! - s3s-fs (the `s3s-fs` crate's server, which checks SigV4 signatures, expiry and signed
//!   headers): when built (`bash tests/s3/run.sh install-s3s`, or `VIGIA_S3S_FS` naming the
//!   binary); the refusals are then checked by the server. Optional: skipped with a notice.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigia_objects::conformance::{self, SignedUrls, Subject};
use vigia_objects::{open, ObjectError, ObjectKey, OpenContext};

const ACCESS_KEY: &str = "vigia";
const SECRET_KEY: &str = "vigia-secret";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/s3/run.sh")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An S3 server on a free port, killed when dropped (a failed check unwinds through it).
struct S3Server {
    child: Child,
    port: u16,
    /// Logs, and s3s-fs's buckets (`data/`).
    dir: tempfile::TempDir,
    /// moto creates buckets over HTTP; s3s-fs's are directories.
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Moto,
    S3sFs,
}

impl S3Server {
    fn start(kind: Kind, s3s_binary: Option<&str>) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut command = match kind {
            Kind::Moto => {
                let mut command = Command::new("bash");
                command.arg(script()).arg("serve").arg(port.to_string());
                command
            }
            Kind::S3sFs => {
                let data = dir.path().join("data");
                std::fs::create_dir(&data).unwrap();
                let mut command = Command::new(s3s_binary.expect("the s3s-fs binary"));
                command
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(&data);
                command
            }
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the S3 server");
        let mut server = S3Server {
            child,
            port,
            dir,
            kind,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the S3 server exited with {status}: {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "no S3 server on {port} within 60 s: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` and opens it.
    async fn bucket(&self, bucket: &str) -> Subject {
        match self.kind {
            Kind::Moto => {
                // moto takes an unsigned CreateBucket.
                let created = reqwest::Client::new()
                    .put(format!("{}/{bucket}", self.endpoint()))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .expect("moto answers");
                assert!(
                    created.status().is_success(),
                    "create bucket {bucket}: {}",
                    created.status()
                );
            }
            Kind::S3sFs => std::fs::create_dir(self.dir.path().join("data").join(bucket)).unwrap(),
        }
        let url = format!(
            "s3://{bucket}?endpoint={}&region=us-east-1&access_key_id={ACCESS_KEY}&secret_access_key={SECRET_KEY}",
            self.endpoint()
        );
        let objects = open(&url, &OpenContext::new("/unused"))
            .await
            .expect("open the bucket");
        assert_eq!(objects.backend(), "s3");
        Subject {
            objects,
            signed_urls: SignedUrls::Server {
                checks_signatures: self.kind == Kind::S3sFs,
            },
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

macro_rules! run_checks {
    ($($check:ident),+ $(,)?) => {
        async fn run_all(server: &S3Server) {
            $(
                let bucket = stringify!($check).replace('_', "-");
                eprintln!("s3 conformance: {}", stringify!($check));
                conformance::$check(&server.bucket(&bucket).await).await;
            )+
        }
    };
}

vigia_objects::for_each_objects_check!(run_checks);

/// One server for all checks (moto takes about a second to start), each check in its own
/// bucket, in sequence so the server is killed when the last one ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_passes_the_conformance_suite_on_moto() {
    let installed = Command::new("bash")
        .arg(script())
        .arg("check")
        .stdout(Stdio::null())
        .status()
        .expect("run tests/s3/run.sh check");
    if !installed.success()
        && !vigia_core::services::skip_or_fail(
            "s3_conformance",
            "moto is not installed (bash tests/s3/run.sh install)",
        )
    {
        return;
    }
    run_all(&S3Server::start(Kind::Moto, None)).await;
}

/// The same suite where the server itself refuses expired, forged and wrong-length
/// presigned requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_passes_the_conformance_suite_on_s3s_fs() {
    let binary = std::env::var("VIGIA_S3S_FS").unwrap_or_else(|_| {
        let root = std::env::var("VIGIA_S3S_ROOT").unwrap_or_else(|_| "/var/tmp/vigia-s3s".into());
        format!("{root}/bin/s3s-fs")
    });
    if !std::path::Path::new(&binary).is_file() {
        eprintln!("SKIPPED s3s-fs conformance: no {binary} (bash tests/s3/run.sh install-s3s)");
        return;
    }
    run_all(&S3Server::start(Kind::S3sFs, Some(&binary))).await;
}

/// An unreachable server is "unavailable" (503), not "not found".
#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let url = format!(
        "s3://b?endpoint=http://127.0.0.1:{}&access_key_id=a&secret_access_key=b",
        free_port()
    );
    let objects = open(&url, &OpenContext::new("/unused")).await.unwrap();
    match objects.head(&ObjectKey::new("k").unwrap()).await {
        Err(err @ ObjectError::Unavailable { .. }) => assert_eq!(err.http_status(), 503),
        other => panic!("a closed port: {other:?}"),
    }
}
