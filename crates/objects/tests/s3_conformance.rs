//! Runs the object store conformance suite against the S3 backend, on a real
//! S3-compatible server: moto (`tests/s3/run.sh`, pinned, installed by `.ci/run`),
//! started here on a free loopback port and killed at the end. Every check gets a bucket
//! of its own. Without moto the test is skipped with a notice, unless
//! `VIGIA_REQUIRE_SERVICES=1`, where it fails.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigia_objects::conformance::{self, SignedUrls, Subject};
use vigia_objects::{open, ObjectError, ObjectKey, OpenContext};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/s3/run.sh")
}

/// A moto server on a free port, killed when dropped (a failed check unwinds through it).
struct Moto {
    child: Child,
    port: u16,
    _log_dir: tempfile::TempDir,
}

impl Moto {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log_dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(log_dir.path().join("moto.log")).unwrap();
        let child = Command::new("bash")
            .arg(script())
            .arg("serve")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start moto");
        let mut moto = Moto {
            child,
            port,
            _log_dir: log_dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited with {status}: {}", moto.log());
            }
            assert!(
                Instant::now() < deadline,
                "moto did not listen on {port} within 60 s: {}",
                moto.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._log_dir.path().join("moto.log")).unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (moto takes an unsigned CreateBucket) and opens it.
    async fn bucket(&self, bucket: &str) -> Subject {
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
        let url = format!(
            "s3://{bucket}?endpoint={}&region=us-east-1&access_key_id=vigia&secret_access_key=vigia-secret",
            self.endpoint()
        );
        let objects = open(&url, &OpenContext::new("/unused"))
            .await
            .expect("open the bucket");
        assert_eq!(objects.backend(), "s3");
        Subject {
            objects,
            // moto checks no signature; an S3 server that does can set this to true.
            signed_urls: SignedUrls::Server {
                checks_signatures: false,
            },
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_installed() -> bool {
    let installed = Command::new("bash")
        .arg(script())
        .arg("check")
        .stdout(Stdio::null())
        .status()
        .expect("run tests/s3/run.sh check");
    installed.success()
        || vigia_core::services::skip_or_fail(
            "s3_conformance",
            "moto is not installed (bash tests/s3/run.sh install)",
        )
}

macro_rules! run_checks {
    ($($check:ident),+ $(,)?) => {
        async fn run_all(moto: &Moto) {
            $(
                let bucket = stringify!($check).replace('_', "-");
                eprintln!("s3 conformance: {}", stringify!($check));
                conformance::$check(&moto.bucket(&bucket).await).await;
            )+
        }
    };
}

vigia_objects::for_each_objects_check!(run_checks);

/// One server for all checks (moto takes about a second to start), each check in its own
/// bucket, in sequence so the server is killed when the last one ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_backend_passes_the_conformance_suite() {
    if !moto_installed() {
        return;
    }
    let moto = Moto::start();
    run_all(&moto).await;

    // An unreachable server is "unavailable", not "not found".
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url =
        format!("s3://b?endpoint=http://127.0.0.1:{closed}&access_key_id=a&secret_access_key=b");
    let objects = open(&url, &OpenContext::new("/unused")).await.unwrap();
    match objects.head(&ObjectKey::new("k").unwrap()).await {
        Err(err @ ObjectError::Unavailable { .. }) => assert_eq!(err.http_status(), 503),
        other => panic!("a closed port: {other:?}"),
    }
}
