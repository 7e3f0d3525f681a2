//! The conformance suite every [`Objects`] backend must pass, so backends cannot drift
//! apart. Enabled by the `conformance` feature.
//!
//! Each check is an `async fn(&Subject)` that panics with a message naming the broken
//! invariant, and expects a FRESH, empty store. [`for_each_objects_check!`] lists them
//! once; a backend's test file runs every one from that list.
//!
//! Signed URLs are exercised as their users will: S3's with real HTTP requests to the S3
//! server; the local backend's through [`Objects::verify_signed`] and then the same
//! calls `GET|PUT /objects/{key}` makes (the routes live in `crates/web`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::signing::percent_decode;
use crate::{
    parse_range, ObjectError, ObjectKey, ObjectMeta, Objects, PresignMethod, PresignedUrl, Refusal,
    UploadStream,
};

/// How a backend's signed URLs are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedUrls {
    /// Served by Vigía: checked with [`Objects::verify_signed`].
    Vigia,
    /// Served by the storage server: checked with HTTP requests.
    Server {
        /// Whether the server refuses expired and altered signatures. moto accepts any
        /// presigned URL (it checks no signature), so there the checks verify what the
        /// URL states and say what went unchecked.
        checks_signatures: bool,
    },
}

/// The store under test.
pub struct Subject {
    pub objects: Arc<dyn Objects>,
    pub signed_urls: SignedUrls,
}

/// Every check, for a backend's test file: `for_each_objects_check!(my_macro)` calls
/// `my_macro!(check, check, …)`.
#[macro_export]
macro_rules! for_each_objects_check {
    ($callback:ident) => {
        $callback!(
            put_get_round_trip_small_and_streamed,
            range_get,
            head_reports_size_and_etag,
            missing_object_is_not_found,
            list_by_prefix,
            delete_is_idempotent,
            put_with_wrong_size_stores_nothing,
            presigned_get_works_and_expires,
            presigned_put_works,
        );
    };
}

fn key(text: &str) -> ObjectKey {
    ObjectKey::new(text).expect("a valid test key")
}

/// Deterministic bytes that do not compress or repeat within parts.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// `data` as an upload stream of `chunk`-byte pieces.
pub fn chunks(data: &[u8], chunk: usize) -> UploadStream {
    let pieces: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(pieces).boxed()
}

async fn put_bytes(objects: &dyn Objects, name: &str, data: &[u8]) -> crate::PutOutcome {
    objects
        .put(&key(name), chunks(data, 64 * 1024), None)
        .await
        .unwrap_or_else(|err| panic!("put {name}: {err}"))
}

async fn read_all(objects: &dyn Objects, name: &str, range: Option<crate::ByteRange>) -> Vec<u8> {
    let body = objects
        .get(&key(name), range)
        .await
        .unwrap_or_else(|err| panic!("get {name}: {err}"));
    let parts: Vec<Bytes> = body.stream.try_collect().await.expect("the body streams");
    parts.concat()
}

pub async fn put_get_round_trip_small_and_streamed(subject: &Subject) {
    let objects = subject.objects.as_ref();
    let small = b"hello, objects".to_vec();
    let outcome = put_bytes(objects, "round/small.txt", &small).await;
    assert_eq!(outcome.size, small.len() as u64);
    assert_eq!(read_all(objects, "round/small.txt", None).await, small);

    // Over two parts, so S3 takes it as a multipart upload.
    let big = pattern(crate::engine::PART_BYTES * 2 + 12_345, 1);
    let outcome = put_bytes(objects, "round/big.bin", &big).await;
    assert_eq!(outcome.size, big.len() as u64);
    assert!(outcome.etag.is_some(), "a put reports the ETag");
    let body = objects.get(&key("round/big.bin"), None).await.unwrap();
    assert_eq!(body.meta.size, big.len() as u64);
    assert_eq!(body.range, 0..big.len() as u64);
    assert_eq!(
        body.meta.etag, outcome.etag,
        "get reports the ETag the put gave"
    );
    let mut hasher = Sha256::new();
    let mut read = 0usize;
    let mut stream = body.stream;
    while let Some(part) = stream.next().await {
        let part = part.expect("the body streams");
        read += part.len();
        hasher.update(&part);
    }
    assert_eq!(read, big.len());
    assert_eq!(
        hasher.finalize().as_slice(),
        Sha256::digest(&big).as_slice(),
        "bytes survive"
    );

    // A put replaces the object whole.
    put_bytes(objects, "round/small.txt", b"v2").await;
    assert_eq!(read_all(objects, "round/small.txt", None).await, b"v2");
}

pub async fn range_get(subject: &Subject) {
    let objects = subject.objects.as_ref();
    let data = pattern(10_000, 2);
    put_bytes(objects, "range/r.bin", &data).await;
    let size = data.len() as u64;
    for (header, expected) in [
        ("bytes=0-99", 0..100),
        ("bytes=9990-", 9990..10_000),
        ("bytes=-10", 9990..10_000),
        ("bytes=5000-99999", 5000..10_000),
    ] {
        let range = parse_range(header, size).unwrap().expect("a range");
        let body = objects.get(&key("range/r.bin"), Some(range)).await.unwrap();
        assert_eq!(
            body.range,
            expected.start as u64..expected.end as u64,
            "{header}"
        );
        assert_eq!(
            body.meta.size, size,
            "{header}: the size is the whole object's"
        );
        let parts: Vec<Bytes> = body.stream.try_collect().await.unwrap();
        assert_eq!(parts.concat(), &data[expected.clone()], "{header}");
    }
    assert!(matches!(
        parse_range("bytes=10000-", size),
        Err(ObjectError::RangeNotSatisfiable { size: 10_000 })
    ));
    // A range computed against an older, longer version of the object.
    let stale = crate::ByteRange {
        start: 20_000,
        end: 20_010,
    };
    match objects.get(&key("range/r.bin"), Some(stale)).await {
        Err(ObjectError::RangeNotSatisfiable { size: 10_000 }) => {}
        other => panic!("a range past the end is 416, got {other:?}"),
    }
}

pub async fn head_reports_size_and_etag(subject: &Subject) {
    let objects = subject.objects.as_ref();
    let before = SystemTime::now() - Duration::from_secs(60);
    let outcome = put_bytes(objects, "head/h.bin", &pattern(4321, 3)).await;
    let meta = objects.head(&key("head/h.bin")).await.unwrap();
    assert_eq!(meta.key.as_str(), "head/h.bin");
    assert_eq!(meta.size, 4321);
    assert_eq!(meta.etag, outcome.etag);
    assert!(
        meta.last_modified > before,
        "last_modified is recent: {:?}",
        meta.last_modified
    );
    let other = put_bytes(objects, "head/h.bin", &pattern(4321, 4)).await;
    assert_ne!(other.etag, outcome.etag, "new content, new ETag");
}

pub async fn missing_object_is_not_found(subject: &Subject) {
    let objects = subject.objects.as_ref();
    let missing = key("nothing/here.bin");
    match objects.get(&missing, None).await {
        Err(ObjectError::NotFound { key }) => assert_eq!(key, "nothing/here.bin"),
        other => panic!("get of a missing object: {other:?}"),
    }
    assert!(matches!(
        objects.head(&missing).await,
        Err(ObjectError::NotFound { .. })
    ));
    let range = crate::ByteRange { start: 0, end: 1 };
    assert!(matches!(
        objects.get(&missing, Some(range)).await,
        Err(ObjectError::NotFound { .. })
    ));
    assert_eq!(
        objects.get(&missing, None).await.unwrap_err().http_status(),
        404
    );
}

async fn listed(objects: &dyn Objects, prefix: &str) -> Vec<(String, u64)> {
    let items: Vec<ObjectMeta> = objects
        .list(prefix)
        .unwrap_or_else(|err| panic!("list {prefix:?}: {err}"))
        .try_collect()
        .await
        .unwrap_or_else(|err| panic!("list {prefix:?}: {err}"));
    let mut items: Vec<_> = items
        .into_iter()
        .map(|m| (m.key.to_string(), m.size))
        .collect();
    items.sort();
    items
}

pub async fn list_by_prefix(subject: &Subject) {
    let objects = subject.objects.as_ref();
    for (name, len) in [("a/1", 1), ("a/2", 2), ("a/b/3", 3), ("ab/4", 4), ("c", 5)] {
        put_bytes(objects, name, &pattern(len, 5)).await;
    }
    let owned = |items: &[(&str, u64)]| {
        items
            .iter()
            .map(|(k, s)| (k.to_string(), *s))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(objects, "a").await,
        owned(&[("a/1", 1), ("a/2", 2), ("a/b/3", 3)])
    );
    assert_eq!(
        listed(objects, "a/").await,
        owned(&[("a/1", 1), ("a/2", 2), ("a/b/3", 3)])
    );
    assert_eq!(listed(objects, "a/b").await, owned(&[("a/b/3", 3)]));
    assert_eq!(listed(objects, "nothing").await, vec![]);
    assert_eq!(listed(objects, "").await.len(), 5);
    assert!(matches!(
        objects.list("../x"),
        Err(ObjectError::InvalidKey { .. })
    ));
}

pub async fn delete_is_idempotent(subject: &Subject) {
    let objects = subject.objects.as_ref();
    put_bytes(objects, "del/x", b"x").await;
    put_bytes(objects, "del/y", b"y").await;
    objects.delete(&key("del/x")).await.unwrap();
    assert!(matches!(
        objects.head(&key("del/x")).await,
        Err(ObjectError::NotFound { .. })
    ));
    assert_eq!(listed(objects, "del").await, vec![("del/y".to_owned(), 1)]);
    objects
        .delete(&key("del/x"))
        .await
        .expect("deleting a missing object succeeds");
}

pub async fn put_with_wrong_size_stores_nothing(subject: &Subject) {
    let objects = subject.objects.as_ref();
    let data = pattern(1000, 6);
    for (announced, name) in [(999, "size/long"), (1001, "size/short")] {
        match objects
            .put(&key(name), chunks(&data, 100), Some(announced))
            .await
        {
            Err(ObjectError::SizeMismatch { expected, .. }) => assert_eq!(expected, announced),
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            matches!(
                objects.head(&key(name)).await,
                Err(ObjectError::NotFound { .. })
            ),
            "{name} stored"
        );
    }
    // Also past the multipart threshold: the parts already sent are dropped.
    let big = pattern(crate::engine::PART_BYTES + 100, 7);
    let result = objects
        .put(
            &key("size/big"),
            chunks(&big, 64 * 1024),
            Some(big.len() as u64 + 1),
        )
        .await;
    assert!(
        matches!(result, Err(ObjectError::SizeMismatch { .. })),
        "{result:?}"
    );
    assert!(matches!(
        objects.head(&key("size/big")).await,
        Err(ObjectError::NotFound { .. })
    ));
    let ok = objects
        .put(&key("size/ok"), chunks(&data, 100), Some(1000))
        .await
        .unwrap();
    assert_eq!(ok.size, 1000);
    // A body that fails midway stores nothing either.
    let failing: UploadStream = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ])
    .boxed();
    assert!(matches!(
        objects.put(&key("size/cut"), failing, None).await,
        Err(ObjectError::Body { .. })
    ));
    assert!(matches!(
        objects.head(&key("size/cut")).await,
        Err(ObjectError::NotFound { .. })
    ));
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// Sends `request`, expects `status` (naming `what` and the server's answer when it is
/// another) and returns the body.
async fn expect_status(request: reqwest::RequestBuilder, status: u16, what: &str) -> Bytes {
    let answer = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    let got = answer.status().as_u16();
    let body = answer.bytes().await.unwrap_or_default();
    assert_eq!(got, status, "{what}: {}", String::from_utf8_lossy(&body));
    body
}

/// The key and query a local signed URL carries, as the route will see them.
fn route_parts(url: &str) -> (String, String) {
    let (_, rest) = url
        .split_once("/objects/")
        .expect("a local URL has /objects/");
    let (path, query) = rest.split_once('?').expect("a signed URL has a query");
    (
        percent_decode(path).expect("an encoded key"),
        query.to_owned(),
    )
}

/// `X-Amz-Date` + `X-Amz-Expires` of a SigV4 URL, as Unix seconds.
fn sigv4_expiry(url: &str) -> u64 {
    let param = |name: &str| {
        url.split(['?', '&'])
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{name} in {url}"))
            .to_owned()
    };
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let date =
        time::PrimitiveDateTime::parse(&param("X-Amz-Date"), &format).expect("an X-Amz-Date");
    let expires: u64 = param("X-Amz-Expires").parse().expect("an X-Amz-Expires");
    date.assume_utc().unix_timestamp() as u64 + expires
}

fn forge(url: &PresignedUrl) -> String {
    // Flip the signature's last hex digit: same length, wrong value.
    let last = url.url.chars().last().expect("a signature");
    let flipped = if last == '0' { '1' } else { '0' };
    format!("{}{flipped}", &url.url[..url.url.len() - 1])
}

/// Sleeps until `url` has expired by a second.
async fn outlive(url: &PresignedUrl) {
    let wait = url
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(1100)).await;
}

pub async fn presigned_get_works_and_expires(subject: &Subject) {
    let objects = subject.objects.as_ref();
    let data = pattern(3000, 8);
    put_bytes(objects, "signed/get.bin", &data).await;
    let k = key("signed/get.bin");
    let url = objects
        .presign(PresignMethod::Get, &k, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(url.http_method(), "GET");
    let remaining = url
        .expires_at
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(
        remaining <= Duration::from_secs(300) && remaining > Duration::from_secs(290),
        "{remaining:?}"
    );
    let short = objects
        .presign(PresignMethod::Get, &k, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        objects
            .presign(PresignMethod::Get, &k, Duration::ZERO)
            .await
            .is_err(),
        "zero expiry refused"
    );

    match subject.signed_urls {
        SignedUrls::Vigia => {
            let (name, query) = route_parts(&url.url);
            let grant = objects
                .verify_signed("GET", &name, &query)
                .expect("a fresh URL verifies");
            assert_eq!(
                (grant.key.as_str(), grant.method),
                ("signed/get.bin", PresignMethod::Get)
            );
            assert_eq!(read_all(objects, grant.key.as_str(), None).await, data);
            let (name, query) = route_parts(&forge(&url));
            assert!(matches!(
                objects.verify_signed("GET", &name, &query),
                Err(ObjectError::Forbidden(Refusal::Forged))
            ));
            assert!(matches!(
                objects.verify_signed("PUT", &name, &route_parts(&url.url).1),
                Err(ObjectError::Forbidden(Refusal::Forged))
            ));
            outlive(&short).await;
            let (name, query) = route_parts(&short.url);
            match objects.verify_signed("GET", &name, &query) {
                Err(err @ ObjectError::Forbidden(Refusal::Expired { .. })) => {
                    assert_eq!(err.http_status(), 403)
                }
                other => panic!("an expired URL verified: {other:?}"),
            }
        }
        SignedUrls::Server { checks_signatures } => {
            let body = expect_status(http().get(&url.url), 200, "presigned GET").await;
            assert_eq!(body.as_ref(), data.as_slice());
            let ranged = http().get(&url.url).header("range", "bytes=10-19");
            let body = expect_status(ranged, 206, "ranged presigned GET").await;
            assert_eq!(body.as_ref(), &data[10..20]);
            assert_eq!(
                sigv4_expiry(&short.url),
                crate::signing::unix_seconds(short.expires_at),
                "the URL says when it expires"
            );
            outlive(&short).await;
            if checks_signatures {
                expect_status(http().get(&short.url), 403, "an expired presigned GET").await;
                expect_status(http().get(forge(&url)), 403, "a forged presigned GET").await;
            } else {
                assert!(sigv4_expiry(&short.url) < crate::signing::unix_seconds(SystemTime::now()));
                eprintln!("NOTE presigned_get_works_and_expires: this S3 server checks no signature; the URL's X-Amz-Date + X-Amz-Expires lie in the past, the server's refusal went unchecked");
            }
        }
    }
}

pub async fn presigned_put_works(subject: &Subject) {
    let objects = subject.objects.as_ref();
    let data = pattern(200_000, 9);
    let k = key("signed/put.bin");
    let method = PresignMethod::Put {
        content_length: data.len() as u64,
    };
    let url = objects
        .presign(method, &k, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(url.http_method(), "PUT");
    assert_eq!(
        url.required_headers(),
        vec![("content-length", data.len().to_string())]
    );

    match subject.signed_urls {
        SignedUrls::Vigia => {
            let (name, query) = route_parts(&url.url);
            let grant = objects
                .verify_signed("PUT", &name, &query)
                .expect("a fresh URL verifies");
            assert_eq!(grant.method, method);
            grant.check_content_length(Some(data.len() as u64)).unwrap();
            assert!(matches!(
                grant.check_content_length(Some(data.len() as u64 + 1)),
                Err(ObjectError::Forbidden(Refusal::LengthMismatch { .. }))
            ));
            assert!(matches!(
                grant.check_content_length(None),
                Err(ObjectError::Forbidden(_))
            ));
            // What the route then does with the request body.
            let stored = objects
                .put(
                    &grant.key,
                    chunks(&data, 16 * 1024),
                    Some(data.len() as u64),
                )
                .await
                .unwrap();
            assert_eq!(stored.size, data.len() as u64);
            let (name, query) = route_parts(&forge(&url));
            assert!(matches!(
                objects.verify_signed("PUT", &name, &query),
                Err(ObjectError::Forbidden(Refusal::Forged))
            ));
        }
        SignedUrls::Server { checks_signatures } => {
            assert!(
                url.url
                    .contains("X-Amz-SignedHeaders=content-length%3Bhost"),
                "the length is signed: {}",
                url.url
            );
            let upload = http().put(&url.url).body(data.clone());
            expect_status(upload, 200, "presigned PUT").await;
            if checks_signatures {
                let other = http().put(&url.url).body(vec![0u8; 10]);
                expect_status(other, 403, "a presigned PUT with another length").await;
            } else {
                eprintln!("NOTE presigned_put_works: this S3 server checks no signature; the refusal of another length went unchecked");
            }
        }
    }
    assert_eq!(
        read_all(objects, "signed/put.bin", None).await,
        data,
        "the uploaded bytes are the object"
    );
    assert_eq!(objects.head(&k).await.unwrap().size, data.len() as u64);
}
