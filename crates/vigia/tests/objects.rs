//! The local object store's signed URLs end to end, on the real binary: a PUT of exactly
//! the signed length stores the object; GET serves it whole, by range (206, 416), with
//! its ETag (304) and HEAD; forged, altered and expired URLs are 403 problems; a body past
//! `objects.max_put_bytes` is 413 and stores nothing; the signing key made at first start
//! survives a restart, so URLs handed out before it still work.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;
use vigia_objects::{ObjectKey, PresignMethod, UrlSigner};

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

fn signer(server: &TestServer, key: &[u8]) -> UrlSigner {
    UrlSigner::new(key, &server.base).expect("signer")
}

fn url(signer: &UrlSigner, method: PresignMethod, key: &str, valid_for: Duration) -> String {
    let key = ObjectKey::new(key).expect("key");
    signer.sign(method, &key, SystemTime::now() + valid_for).url
}

async fn put(url: &str, body: Vec<u8>) -> reqwest::Response {
    client().put(url).body(body).send().await.expect("put")
}

async fn problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "errors are problems"
    );
    res.json().await.expect("problem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_store_and_serve_objects_and_refuse_everything_else() {
    let server = TestServer::start(Options {
        env: vec![
            ("VIGIA_OBJECTS__SIGNING_KEY".into(), KEY.into()),
            ("VIGIA_OBJECTS__MAX_PUT_BYTES".into(), "2000000".into()),
        ],
        ..Options::default()
    });
    let signer = signer(&server, KEY.as_bytes());
    let hour = Duration::from_secs(3600);
    let key = "offload/2026/data set ñ.bin";
    let data = random_bytes(1_500_000);

    // Upload: exactly the signed length.
    let put_url = url(
        &signer,
        PresignMethod::Put {
            content_length: data.len() as u64,
        },
        key,
        hour,
    );
    let res = put(&put_url, data.clone()).await;
    assert_eq!(res.status(), 200);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let stored: Value = res.json().await.unwrap();
    assert_eq!(stored["key"], key);
    assert_eq!(stored["size"], data.len() as u64);

    // Download: whole, a range, a suffix, HEAD, and If-None-Match.
    let get_url = url(&signer, PresignMethod::Get, key, hour);
    let res = client().get(&get_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert_eq!(res.bytes().await.unwrap().as_ref(), data.as_slice());
    let res = client()
        .get(&get_url)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes 1000-1999/{}", data.len()).as_str()
    );
    assert_eq!(res.bytes().await.unwrap().as_ref(), &data[1000..2000]);
    let res = client()
        .get(&get_url)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.bytes().await.unwrap().as_ref(),
        &data[data.len() - 10..]
    );
    let res = client()
        .get(&get_url)
        .header("range", format!("bytes={}-", data.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["content-range"],
        format!("bytes */{}", data.len()).as_str()
    );
    problem(res, 416).await;
    let res = client().head(&get_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-length"],
        data.len().to_string().as_str()
    );
    assert!(res.bytes().await.unwrap().is_empty());
    let res = client()
        .get(&get_url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);

    // Refused: altered signature, another key under the same signature, an expired URL,
    // a GET URL used to PUT, a body of another length, no signature at all.
    let forged = format!("{}0", &get_url[..get_url.len() - 1]);
    let forged = if forged == get_url {
        format!("{}1", &get_url[..get_url.len() - 1])
    } else {
        forged
    };
    problem(client().get(&forged).send().await.unwrap(), 403).await;
    let other_key = get_url.replace("data%20set", "data%20sex");
    problem(client().get(&other_key).send().await.unwrap(), 403).await;
    let expired = signer
        .sign(
            PresignMethod::Get,
            &ObjectKey::new(key).unwrap(),
            SystemTime::now() - Duration::from_secs(5),
        )
        .url;
    let refused = problem(client().get(&expired).send().await.unwrap(), 403).await;
    assert!(
        refused["detail"].as_str().unwrap().contains("expired"),
        "{refused}"
    );
    problem(put(&get_url, b"x".to_vec()).await, 403).await;
    problem(put(&put_url, data[..10].to_vec()).await, 403).await;
    problem(
        client()
            .get(server.url("/objects/offload/2026/x"))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    let res = client().get(&get_url).send().await.unwrap();
    assert_eq!(
        res.bytes().await.unwrap().len(),
        data.len(),
        "the refusals changed nothing"
    );

    // A missing object, an invalid key, a body past the limit (nothing stored).
    let missing = url(&signer, PresignMethod::Get, "nothing/here", hour);
    problem(client().get(&missing).send().await.unwrap(), 404).await;
    // An invalid key cannot have been signed here: forged, whatever it names.
    let bad_key = server.url("/objects/a//b?expires=9999999999&sig=00");
    problem(client().get(&bad_key).send().await.unwrap(), 403).await;
    let big = random_bytes(2_000_001);
    let big_url = url(
        &signer,
        PresignMethod::Put {
            content_length: big.len() as u64,
        },
        "too/big",
        hour,
    );
    problem(put(&big_url, big).await, 413).await;
    let big_get = url(&signer, PresignMethod::Get, "too/big", hour);
    problem(client().get(&big_get).send().await.unwrap(), 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signing_key_made_at_first_start_survives_a_restart() {
    let mut server = TestServer::start(Options::default());
    let path = server.data_dir().join("objects-signing.key");
    let key = std::fs::read_to_string(&path).expect("a key made at first start");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "readable by the owner only");
    assert_eq!(key.trim().len(), 64, "32 random bytes, hex");

    let signer = signer(&server, key.trim().as_bytes());
    let data = random_bytes(4096);
    let put_url = url(
        &signer,
        PresignMethod::Put {
            content_length: data.len() as u64,
        },
        "kept",
        Duration::from_secs(3600),
    );
    assert_eq!(put(&put_url, data.clone()).await.status(), 200);

    server.restart();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        key,
        "the same key after a restart"
    );
    // The server has a new port: sign for it with the same key.
    let signer = UrlSigner::new(key.trim().as_bytes(), &server.base).unwrap();
    let get_url = url(
        &signer,
        PresignMethod::Get,
        "kept",
        Duration::from_secs(3600),
    );
    let res = client().get(&get_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), data.as_slice());
}
