//! Vigía's own signed, expiring URLs for the local backend, which Vigía serves itself at
//! `GET|PUT {base_url}/objects/{key}?expires=…[&len=…]&sig=…`.
//!
//! The signature is HMAC-SHA256 under `objects.signing_key` over a versioned text naming
//! the method, the key, the expiry (Unix seconds) and, for a PUT, the exact body length,
//! so none of them can be changed without the signature failing. The signature is checked
//! before the expiry: an altered URL is `Forged` even when its (altered) expiry has passed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{ObjectError, ObjectKey, ObjectResult, PresignMethod, PresignedUrl, Refusal};

/// Shortest signing key accepted, in bytes.
pub const MIN_SIGNING_KEY_BYTES: usize = 16;

/// The query parameters of a signed URL.
const EXPIRES: &str = "expires";
const LENGTH: &str = "len";
const SIGNATURE: &str = "sig";

/// What a valid signed URL allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedGrant {
    pub method: PresignMethod,
    pub key: ObjectKey,
    pub expires_at: SystemTime,
}

impl SignedGrant {
    /// For a PUT grant: refuses a body whose announced length (`Content-Length`, `None`
    /// when absent or chunked) is not the signed one. A GET grant accepts anything.
    pub fn check_content_length(&self, sent: Option<u64>) -> ObjectResult<()> {
        match self.method {
            PresignMethod::Put { content_length } if sent != Some(content_length) => {
                Err(ObjectError::Forbidden(Refusal::LengthMismatch {
                    signed: content_length,
                    sent,
                }))
            }
            _ => Ok(()),
        }
    }
}

/// Signs and verifies local object URLs.
#[derive(Clone)]
pub struct UrlSigner {
    mac: Hmac<Sha256>,
    base_url: String,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl UrlSigner {
    /// A signer with `signing_key` (`objects.signing_key`, at least
    /// [`MIN_SIGNING_KEY_BYTES`]) for URLs under `base_url` (scheme, host and any path
    /// prefix the server is reached at, e.g. `https://vigia.example.com`).
    pub fn new(signing_key: &[u8], base_url: &str) -> ObjectResult<Self> {
        if signing_key.len() < MIN_SIGNING_KEY_BYTES {
            return Err(ObjectError::Config(format!(
                "objects.signing_key must be at least {MIN_SIGNING_KEY_BYTES} bytes (it has {})",
                signing_key.len()
            )));
        }
        let base_url = base_url.trim_end_matches('/');
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ObjectError::Config(format!(
                "the base URL of signed object URLs must start with http:// or https://, not `{base_url}`"
            )));
        }
        let mac =
            Hmac::<Sha256>::new_from_slice(signing_key).expect("HMAC takes a key of any length");
        Ok(Self {
            mac,
            base_url: base_url.to_owned(),
        })
    }

    /// A URL allowing `method` on `key` until `expires_at` (rounded down to the second).
    pub fn sign(
        &self,
        method: PresignMethod,
        key: &ObjectKey,
        expires_at: SystemTime,
    ) -> PresignedUrl {
        let expires = unix_seconds(expires_at);
        let signature = hex(&self.signature(method, key.as_str(), expires));
        let mut url = format!(
            "{}/objects/{}?{EXPIRES}={expires}",
            self.base_url,
            encode_uri(key.as_str(), false)
        );
        if let PresignMethod::Put { content_length } = method {
            url.push_str(&format!("&{LENGTH}={content_length}"));
        }
        url.push_str(&format!("&{SIGNATURE}={signature}"));
        PresignedUrl {
            url,
            method,
            expires_at: UNIX_EPOCH + Duration::from_secs(expires),
        }
    }

    /// Checks a request for `method` (`GET`, `HEAD` or `PUT`) on `key` (the decoded path
    /// after `/objects/`) with the raw `query` string, at `now`. A `HEAD` is allowed by a
    /// GET signature. The grant of a PUT still needs
    /// [`SignedGrant::check_content_length`] against the request.
    pub fn verify(
        &self,
        method: &str,
        key: &str,
        query: &str,
        now: SystemTime,
    ) -> ObjectResult<SignedGrant> {
        // The signature is checked over the key as sent, before the key itself: Vigía signs
        // only valid keys, so a URL naming an invalid one was not issued here and is as
        // forged as any other (the key rules are not revealed to an unsigned caller).
        let forged = || ObjectError::Forbidden(Refusal::Forged);
        let params = SignedQuery::parse(query).ok_or_else(forged)?;
        let method = match (method.to_ascii_uppercase().as_str(), params.length) {
            ("GET" | "HEAD", None) => PresignMethod::Get,
            ("PUT", Some(content_length)) => PresignMethod::Put { content_length },
            _ => return Err(forged()),
        };
        let claimed = unhex(params.signature).ok_or_else(forged)?;
        let mut mac = self.mac.clone();
        mac.update(message(method, key, params.expires).as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&claimed).map_err(|_| forged())?;
        let key = ObjectKey::new(key)?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(params.expires);
        if now >= expires_at {
            return Err(ObjectError::Forbidden(Refusal::Expired { at: expires_at }));
        }
        Ok(SignedGrant {
            method,
            key,
            expires_at,
        })
    }

    fn signature(&self, method: PresignMethod, key: &str, expires: u64) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(message(method, key, expires).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// What is signed; the version prefix lets a later format never verify as this one.
fn message(method: PresignMethod, key: &str, expires: u64) -> String {
    match method {
        PresignMethod::Get => format!("vigia-objects-v1\nGET\n{key}\n{expires}\n"),
        PresignMethod::Put { content_length } => {
            format!("vigia-objects-v1\nPUT\n{key}\n{expires}\n{content_length}")
        }
    }
}

struct SignedQuery<'a> {
    expires: u64,
    length: Option<u64>,
    signature: &'a str,
}

impl<'a> SignedQuery<'a> {
    /// `None` when a parameter is missing, repeated or not a number. Other parameters are
    /// ignored: they grant nothing.
    fn parse(query: &'a str) -> Option<Self> {
        let (mut expires, mut length, mut signature) = (None, None, None);
        for pair in query.trim_start_matches('?').split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                EXPIRES => &mut expires,
                LENGTH => &mut length,
                SIGNATURE => &mut signature,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
        let number = |text: &str| {
            (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .then(|| text.parse().ok())
                .flatten()
        };
        Some(Self {
            expires: number(expires?)?,
            length: match length {
                Some(text) => Some(number(text)?),
                None => None,
            },
            signature: signature?,
        })
    }
}

pub(crate) fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Percent-encodes everything but RFC 3986's unreserved characters, and `/` unless
/// `encode_slash`: object keys in URL paths, and SigV4's canonical query.
pub(crate) fn encode_uri(text: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Decodes `%XX` escapes (a `+` stays a `+`: AWS secrets contain it); `None` for a bad
/// escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn signer() -> UrlSigner {
        UrlSigner::new(KEY, "http://127.0.0.1:8080/").unwrap()
    }

    fn split(url: &str) -> (&str, &str) {
        let rest = url.strip_prefix("http://127.0.0.1:8080/objects/").unwrap();
        rest.split_once('?').unwrap()
    }

    fn refusal(result: ObjectResult<SignedGrant>) -> Refusal {
        match result {
            Err(ObjectError::Forbidden(refusal)) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_signed_get_verifies_until_it_expires() {
        let key = ObjectKey::new("reports/día 1.csv").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let url = signer().sign(PresignMethod::Get, &key, now + Duration::from_secs(60));
        assert!(
            url.url.starts_with(
                "http://127.0.0.1:8080/objects/reports/d%C3%ADa%201.csv?expires=1800000060&sig="
            ),
            "{}",
            url.url
        );
        let (_, query) = split(&url.url);
        let grant = signer().verify("GET", key.as_str(), query, now).unwrap();
        assert_eq!(grant.method, PresignMethod::Get);
        assert_eq!(grant.key, key);
        assert_eq!(grant.expires_at, url.expires_at);
        signer().verify("HEAD", key.as_str(), query, now).unwrap();
        let at = now + Duration::from_secs(60);
        assert_eq!(
            refusal(signer().verify("GET", key.as_str(), query, at)),
            Refusal::Expired { at }
        );
    }

    #[test]
    fn anything_altered_is_forged() {
        let key = ObjectKey::new("a/b.bin").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let expires_at = now + Duration::from_secs(60);
        let get = signer().sign(PresignMethod::Get, &key, expires_at);
        let put = signer().sign(PresignMethod::Put { content_length: 10 }, &key, expires_at);
        let (_, get_query) = split(&get.url);
        let (_, put_query) = split(&put.url);
        let ours = signer();
        let other_signer =
            UrlSigner::new(b"another key of 16+ bytes", "http://127.0.0.1:8080").unwrap();
        let cases: Vec<(&str, &str, String, &UrlSigner)> = vec![
            ("GET", "a/c.bin", get_query.to_owned(), &ours),
            ("PUT", "a/b.bin", get_query.to_owned(), &ours),
            (
                "GET",
                "a/b.bin",
                get_query.replace("expires=1800000060", "expires=1900000000"),
                &ours,
            ),
            ("GET", "a/b.bin", put_query.to_owned(), &ours),
            (
                "PUT",
                "a/b.bin",
                put_query.replace("len=10", "len=11"),
                &ours,
            ),
            ("PUT", "a/b.bin", put_query.replace("&len=10", ""), &ours),
            ("GET", "a/b.bin", get_query.replace("sig=", "sig=00"), &ours),
            ("GET", "a/b.bin", get_query.replace("sig=", "sig=zz"), &ours),
            ("GET", "a/b.bin", format!("{get_query}&sig=00"), &ours),
            ("GET", "a/b.bin", "expires=1800000060".into(), &ours),
            ("GET", "a/b.bin", "".into(), &ours),
            ("DELETE", "a/b.bin", get_query.to_owned(), &ours),
            ("GET", "a/b.bin", get_query.to_owned(), &other_signer),
        ];
        for (method, key, query, signer) in cases {
            assert_eq!(
                refusal(signer.verify(method, key, &query, now)),
                Refusal::Forged,
                "{method} {key}?{query}"
            );
        }
        // A forged URL is forged even after its claimed expiry.
        let late = expires_at + Duration::from_secs(3600);
        assert_eq!(
            refusal(signer().verify("GET", "a/c.bin", get_query, late)),
            Refusal::Forged
        );
        // A URL naming an invalid key was not issued here: forged, like any other.
        assert_eq!(
            refusal(signer().verify("GET", "../x", get_query, now)),
            Refusal::Forged
        );
    }

    #[test]
    fn a_put_grant_holds_its_length() {
        let key = ObjectKey::new("up.bin").unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let url = signer().sign(
            PresignMethod::Put { content_length: 10 },
            &key,
            now + Duration::from_secs(5),
        );
        let (_, query) = split(&url.url);
        assert!(query.contains("len=10"), "{query}");
        let grant = signer().verify("PUT", "up.bin", query, now).unwrap();
        grant.check_content_length(Some(10)).unwrap();
        for sent in [Some(9), Some(11), None] {
            let err = grant.check_content_length(sent).unwrap_err();
            assert!(
                matches!(
                    err,
                    ObjectError::Forbidden(Refusal::LengthMismatch { signed: 10, .. })
                ),
                "{sent:?}"
            );
        }
        assert_eq!(
            grant.check_content_length(Some(9)).unwrap_err().to_string(),
            "forbidden: the signed URL allows a body of exactly 10 bytes, not 9"
        );
    }

    #[test]
    fn configuration_is_checked() {
        let short = UrlSigner::new(b"short", "http://x")
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("objects.signing_key must be at least 16 bytes (it has 5)"),
            "{short}"
        );
        let base = UrlSigner::new(KEY, "ftp://x").unwrap_err().to_string();
        assert!(base.contains("http:// or https://"), "{base}");
    }

    #[test]
    fn uri_encoding() {
        assert_eq!(encode_uri("a b/ü~.-_", false), "a%20b/%C3%BC~.-_");
        assert_eq!(encode_uri("a/b=c&d", true), "a%2Fb%3Dc%26d");
        assert_eq!(unhex("0aff"), Some(vec![10, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(hex(&[10, 255]), "0aff");
        let key = "día 1/a+b=c&d%e.csv";
        assert_eq!(
            percent_decode(&encode_uri(key, false)).as_deref(),
            Some(key)
        );
        assert_eq!(percent_decode("a+b%2B").as_deref(), Some("a+b+"));
        for bad in ["%", "%4", "%zz", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
