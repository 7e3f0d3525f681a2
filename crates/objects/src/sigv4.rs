//! AWS Signature Version 4 in the query string, for presigned S3 PUTs that fix the body's
//! length. object_store's `Signer` signs the `host` header only, so a URL it makes lets
//! its holder upload any size; listing `content-length` among the signed headers makes S3
//! refuse a body of another length. GETs keep object_store's signer.
//!
//! Reference: "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)"
//! in the Amazon S3 API documentation; the test below is its worked example.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::signing::{encode_uri, hex};

/// The request a presigned URL stands for.
pub(crate) struct QueryPresign<'a> {
    pub method: &'a str,
    /// `scheme://host[:port]/path` as the client will request it, path already encoded
    /// once (as S3's canonical URI wants it), no query.
    pub url: &'a str,
    pub key_id: &'a str,
    pub secret_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub date: OffsetDateTime,
    pub expires_in_secs: u64,
    /// Signed as the `content-length` header when set.
    pub content_length: Option<u64>,
}

impl QueryPresign<'_> {
    /// The presigned URL, or `None` when `url` is not `scheme://host/path`.
    pub(crate) fn url(&self) -> Option<String> {
        let (_, after_scheme) = self.url.split_once("://")?;
        let (host, path) = match after_scheme.find('/') {
            Some(slash) => (&after_scheme[..slash], &after_scheme[slash..]),
            None => (after_scheme, "/"),
        };
        if host.is_empty() || self.url.contains('?') {
            return None;
        }
        let date = self.date.to_offset(time::UtcOffset::UTC);
        let day = format!(
            "{:04}{:02}{:02}",
            date.year(),
            u8::from(date.month()),
            date.day()
        );
        let stamp = format!(
            "{day}T{:02}{:02}{:02}Z",
            date.hour(),
            date.minute(),
            date.second()
        );
        let scope = format!("{day}/{}/s3/aws4_request", self.region);

        let (canonical_headers, signed_headers) = match self.content_length {
            Some(length) => (
                format!("content-length:{length}\nhost:{host}\n"),
                "content-length;host",
            ),
            None => (format!("host:{host}\n"), "host"),
        };
        let mut params = vec![
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_owned()),
            ("X-Amz-Credential", format!("{}/{scope}", self.key_id)),
            ("X-Amz-Date", stamp.clone()),
            ("X-Amz-Expires", self.expires_in_secs.to_string()),
            ("X-Amz-SignedHeaders", signed_headers.to_owned()),
        ];
        if let Some(token) = self.session_token {
            params.push(("X-Amz-Security-Token", token.to_owned()));
        }
        let mut encoded: Vec<(String, String)> = params
            .iter()
            .map(|(name, value)| (encode_uri(name, true), encode_uri(value, true)))
            .collect();
        encoded.sort();
        let canonical_query = encoded
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&");

        let canonical_request = format!(
            "{}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\nUNSIGNED-PAYLOAD",
            self.method
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let mut signing_key = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            day.as_bytes(),
        );
        for part in [self.region, "s3", "aws4_request"] {
            signing_key = hmac(&signing_key, part.as_bytes());
        }
        let signature = hex(&hmac(&signing_key, string_to_sign.as_bytes()));
        Some(format!(
            "{}?{canonical_query}&X-Amz-Signature={signature}",
            self.url
        ))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(content_length: Option<u64>) -> QueryPresign<'static> {
        QueryPresign {
            method: "GET",
            url: "https://examplebucket.s3.amazonaws.com/test.txt",
            key_id: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            session_token: None,
            region: "us-east-1",
            date: time::macros::datetime!(2013-05-24 00:00:00 UTC),
            expires_in_secs: 86400,
            content_length,
        }
    }

    #[test]
    fn the_aws_worked_example() {
        assert_eq!(
            example(None).url().unwrap(),
            "https://examplebucket.s3.amazonaws.com/test.txt?\
             X-Amz-Algorithm=AWS4-HMAC-SHA256&\
             X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&\
             X-Amz-Date=20130524T000000Z&\
             X-Amz-Expires=86400&\
             X-Amz-SignedHeaders=host&\
             X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn the_length_is_a_signed_header() {
        let url = example(Some(10)).url().unwrap();
        assert!(
            url.contains("X-Amz-SignedHeaders=content-length%3Bhost"),
            "{url}"
        );
        // Another length, another signature: S3 recomputes it from the header it receives.
        let other = example(Some(11)).url().unwrap();
        let signature = |u: &str| u.rsplit_once("X-Amz-Signature=").unwrap().1.to_owned();
        assert_ne!(signature(&url), signature(&other));
        assert_ne!(signature(&url), signature(&example(None).url().unwrap()));
    }

    #[test]
    fn a_session_token_travels_in_the_query() {
        let mut presign = example(None);
        presign.session_token = Some("tok/en");
        let url = presign.url().unwrap();
        assert!(url.contains("X-Amz-Security-Token=tok%2Fen"), "{url}");
    }

    #[test]
    fn malformed_urls_are_refused() {
        for url in ["examplebucket/test.txt", "https:///x", "https://h/x?a=b"] {
            let mut presign = example(None);
            presign.url = url;
            assert_eq!(presign.url(), None, "{url}");
        }
    }
}
