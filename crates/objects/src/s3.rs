//! The S3 backend (AWS S3, MinIO, any S3-compatible server): object_store's `AmazonS3`,
//! presigned GETs from its `Signer`, presigned PUTs with the body length signed
//! ([`crate::sigv4`]).
//!
//! URL: `s3://BUCKET?endpoint=http://127.0.0.1:9000&region=us-east-1`, optionally with
//! `access_key_id=…&secret_access_key=…[&session_token=…]`. Without those, credentials and
//! the rest come from what `AmazonS3Builder::from_env` reads (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`, instance
//! and container roles …); the URL's parameters win. An `http://` endpoint is allowed
//! (MinIO on a private network); no endpoint means AWS itself.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::signer::Signer;
use reqwest::Method;

use crate::engine::{StoreObjects, UrlIssuer};
use crate::signing::{percent_decode, unix_seconds};
use crate::sigv4::QueryPresign;
use crate::{
    ObjectError, ObjectKey, ObjectResult, Objects, OpenContext, PresignMethod, PresignedUrl,
    SignedGrant,
};

/// The S3 backend's name in errors and logs.
pub(crate) const BACKEND: &str = "s3";

/// The query parameters an `s3://` URL may carry.
const PARAMS: [&str; 5] = [
    "endpoint",
    "region",
    "access_key_id",
    "secret_access_key",
    "session_token",
];

/// An `s3://` URL, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Url {
    pub bucket: String,
    /// `(name, value)` from [`PARAMS`], decoded.
    pub params: Vec<(&'static str, String)>,
}

impl S3Url {
    pub(crate) fn parse(url: &str) -> ObjectResult<Self> {
        let config = |message: String| {
            ObjectError::Config(format!("objects URL `{}`: {message}", redact(url)))
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| config("an S3 URL starts with s3://".into()))?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() {
            return Err(config("name the bucket: s3://BUCKET?endpoint=…".into()));
        }
        if bucket.contains('/') {
            return Err(config(
                "a key prefix after the bucket is not supported".into(),
            ));
        }
        let mut params = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let Some(name) = PARAMS.iter().copied().find(|known| *known == name) else {
                return Err(config(format!(
                    "unknown parameter `{name}`; known: {}",
                    PARAMS.join(", ")
                )));
            };
            let value = percent_decode(value)
                .ok_or_else(|| config(format!("`{name}` is not valid percent-encoded UTF-8")))?;
            if value.is_empty() {
                return Err(config(format!("`{name}` is empty")));
            }
            if params.iter().any(|(seen, _)| *seen == name) {
                return Err(config(format!("`{name}` is given twice")));
            }
            if name == "endpoint"
                && !(value.starts_with("http://") || value.starts_with("https://"))
            {
                return Err(config(format!(
                    "endpoint must start with http:// or https://, not `{value}`"
                )));
            }
            params.push((name, value));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            params,
        })
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The URL with any secret key replaced, for error messages.
fn redact(url: &str) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name @ ("secret_access_key" | "session_token"), _)) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", pairs.join("&"))
}

#[derive(Debug)]
struct S3Urls {
    s3: Arc<AmazonS3>,
    region: String,
}

#[async_trait]
impl UrlIssuer for S3Urls {
    async fn presign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_in: Duration,
    ) -> ObjectResult<PresignedUrl> {
        let now = SystemTime::now();
        let unavailable =
            |err: object_store::Error| ObjectError::from_store(BACKEND, key.as_str(), err);
        let url = match method {
            PresignMethod::Get => self
                .s3
                .signed_url(Method::GET, &key.to_path(), expires_in)
                .await
                .map_err(unavailable)?
                .to_string(),
            PresignMethod::Put { content_length } => {
                // object_store's URL gives the host and the path exactly as it encodes
                // keys; its query (signing `host` only) is replaced.
                let signed = self
                    .s3
                    .signed_url(Method::PUT, &key.to_path(), expires_in)
                    .await
                    .map_err(unavailable)?;
                let object_url = signed
                    .as_str()
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let credential = self
                    .s3
                    .credentials()
                    .get_credential()
                    .await
                    .map_err(unavailable)?;
                QueryPresign {
                    method: "PUT",
                    url: &object_url,
                    key_id: &credential.key_id,
                    secret_key: &credential.secret_key,
                    session_token: credential.token.as_deref(),
                    region: &self.region,
                    date: now.into(),
                    expires_in_secs: expires_in.as_secs(),
                    content_length: Some(content_length),
                }
                .url()
                .ok_or_else(|| {
                    ObjectError::Config(format!("S3 object URL `{object_url}` cannot be signed"))
                })?
            }
        };
        Ok(PresignedUrl {
            url,
            method,
            expires_at: SystemTime::UNIX_EPOCH
                + Duration::from_secs(unix_seconds(now) + expires_in.as_secs()),
        })
    }

    fn verify(
        &self,
        _method: &str,
        _key: &str,
        _query: &str,
        _now: SystemTime,
    ) -> ObjectResult<SignedGrant> {
        Err(ObjectError::Unsupported {
            backend: BACKEND,
            what: "serving signed URLs (the S3 server checks its own)",
        })
    }
}

/// Builds the client; connects to nothing yet.
pub(crate) fn open(url: &S3Url, ctx: &OpenContext) -> ObjectResult<Arc<dyn Objects>> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&url.bucket);
    for (name, value) in &url.params {
        builder = match *name {
            "endpoint" => builder
                .with_endpoint(value)
                .with_allow_http(value.starts_with("http://")),
            "region" => builder.with_region(value),
            "access_key_id" => builder.with_access_key_id(value),
            "secret_access_key" => builder.with_secret_access_key(value),
            "session_token" => builder.with_token(value),
            _ => unreachable!("S3Url::parse keeps only PARAMS"),
        };
    }
    // What object_store itself defaults to; the PUT signer must use the same.
    let region = url
        .param("region")
        .map(str::to_owned)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Region))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let s3 = Arc::new(builder.build().map_err(|err| {
        ObjectError::Config(format!(
            "objects URL `{}`: {err}",
            redact(&format!("s3://{}", url.bucket))
        ))
    })?);
    Ok(Arc::new(StoreObjects {
        store: s3.clone(),
        backend: BACKEND,
        urls: Box::new(S3Urls { s3, region }),
        default_expiry: ctx.presign_expiry,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_are_read() {
        let url = S3Url::parse("s3://vigia?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1&access_key_id=AK&secret_access_key=s%2Bk%2F").unwrap();
        assert_eq!(url.bucket, "vigia");
        assert_eq!(url.param("endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(url.param("region"), Some("eu-west-1"));
        assert_eq!(url.param("secret_access_key"), Some("s+k/"));
        // AWS secrets hold `+` and `/`: written raw, they are kept as they are.
        let raw = S3Url::parse("s3://b?secret_access_key=a+b/c").unwrap();
        assert_eq!(raw.param("secret_access_key"), Some("a+b/c"));
        assert_eq!(S3Url::parse("s3://b/").unwrap().params, vec![]);
        assert_eq!(
            S3Url::parse("s3://b?endpoint=http://h:9000")
                .unwrap()
                .param("endpoint"),
            Some("http://h:9000")
        );
    }

    #[test]
    fn bad_s3_urls_name_the_problem() {
        let cases = [
            ("s3://", "name the bucket"),
            ("s3://?region=x", "name the bucket"),
            ("s3://b/prefix", "key prefix"),
            ("s3://b?bucket=x", "unknown parameter `bucket`"),
            ("s3://b?region=", "`region` is empty"),
            ("s3://b?region=a&region=b", "`region` is given twice"),
            (
                "s3://b?endpoint=127.0.0.1:9000",
                "endpoint must start with http://",
            ),
            ("s3://b?region=%zz", "not valid percent-encoded"),
        ];
        for (url, part) in cases {
            let err = S3Url::parse(url).unwrap_err().to_string();
            assert!(err.contains(part), "{url}: {err}");
        }
    }

    /// With no length, our PUT signer must sign exactly as object_store does (which real
    /// S3 accepts): same host, same encoded path, same canonical form.
    #[tokio::test]
    async fn the_put_signer_agrees_with_object_stores() {
        let s3 = AmazonS3Builder::new()
            .with_bucket_name("vigia")
            .with_endpoint("http://127.0.0.1:9000")
            .with_allow_http(true)
            .with_region("eu-west-1")
            .with_access_key_id("AKIDEXAMPLE")
            .with_secret_access_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
            .build()
            .unwrap();
        let key = ObjectKey::new("off load/día+1/a%b~c.bin").unwrap();
        let theirs = s3
            .signed_url(Method::PUT, &key.to_path(), Duration::from_secs(600))
            .await
            .unwrap()
            .to_string();
        let (object_url, query) = theirs.split_once('?').unwrap();
        let stamp = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("X-Amz-Date="))
            .unwrap();
        let format =
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let date = time::PrimitiveDateTime::parse(stamp, &format)
            .unwrap()
            .assume_utc();
        let ours = QueryPresign {
            method: "PUT",
            url: object_url,
            key_id: "AKIDEXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "eu-west-1",
            date,
            expires_in_secs: 600,
            content_length: None,
        }
        .url()
        .unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn secrets_stay_out_of_errors() {
        let err = S3Url::parse("s3://b?secret_access_key=TOPSECRET&oops=1")
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("TOPSECRET") && err.contains("secret_access_key=***"),
            "{err}"
        );
    }
}
