//! InfluxDB-compatible writes, so Telegraf and InfluxDB client libraries send to Vigía
//! unchanged: `POST /api/v2/write` (v2) and `POST /write` (v1). The body is line protocol
//! (optionally gzip), handed to the same ingest service as JSON; 204 once durable, as
//! InfluxDB answers.
//!
//! The key may come as InfluxDB clients send it: `Authorization: Token <key>` (v2),
//! `Bearer`, `Basic` with the key as password, `X-API-Key`, or v1's `p` parameter. The
//! tenant is the key's; `org`, `bucket`, `db`, `rp` and `u` are accepted and ignored.

use std::io::Read;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use vigia_ingest::decode::Precision;

use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::routes::readings::read_body;
use crate::AppState;

/// Bodies larger than this (compressed) are inflated off the async runtime.
const INLINE_INFLATE_LIMIT: usize = 64 * 1024;

/// The caller of an InfluxDB-style write, authenticated from any of the places
/// InfluxDB clients put the key.
pub struct InfluxCaller(pub crate::Caller);

impl axum::extract::FromRequestParts<AppState> for InfluxCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(key) = influx_key(parts) else {
            return Err(ApiError::unauthorized(
                "missing API key: send `Authorization: Token <key>` (or `Bearer <key>`, \
                 Basic with the key as password, `X-API-Key`, or the v1 `p` parameter)",
            ));
        };
        crate::auth::verify(parts, state, &key)
            .await
            .map(InfluxCaller)
    }
}

/// The key of an InfluxDB-style request, from the first place that holds one.
fn influx_key(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
            return (!rest.is_empty()).then(|| rest.to_string());
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            let (_user, password) = text.split_once(':')?;
            return (!password.is_empty()).then(|| password.to_string());
        }
        return None;
    }
    if let Some(key) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(key.trim().to_string());
    }
    // v1 clients may put the key in the `p` parameter (percent-decoded here).
    let Query(params) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).ok()?;
    params
        .into_iter()
        .find(|(k, v)| k == "p" && !v.is_empty())
        .map(|(_, v)| v)
}

/// Query parameters of `POST /api/v2/write`. Others are refused (400) rather than
/// silently ignored, so a misspelt `precison` cannot shift every timestamp.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteV2Params {
    /// Accepted and ignored: the tenant is the key's.
    pub org: Option<String>,
    /// Accepted and ignored.
    #[serde(rename = "orgID")]
    #[param(rename = "orgID")]
    pub org_id: Option<String>,
    /// Accepted and ignored: every reading goes to the key's tenant.
    pub bucket: Option<String>,
    /// Units of the line timestamps: `ns` (default), `us`, `ms` or `s`.
    #[param(value_type = Option<String>, pattern = "^(ns|us|ms|s)$")]
    pub precision: Option<String>,
}

/// Query parameters of `POST /write` (InfluxDB 1.x); others are refused (400).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteV1Params {
    /// Accepted and ignored: the tenant is the key's.
    pub db: Option<String>,
    /// Accepted and ignored.
    pub rp: Option<String>,
    /// Accepted and ignored (the key is the password).
    pub u: Option<String>,
    /// The API key, when not sent in a header.
    pub p: Option<String>,
    /// Units of the line timestamps: `n`/`ns` (default), `u`/`us`, `ms`, `s`, `m`
    /// (minutes) or `h`.
    #[param(value_type = Option<String>, pattern = "^(ns?|us?|ms|s|m|h)$")]
    pub precision: Option<String>,
    /// Accepted and ignored: every write is durable before the answer.
    pub consistency: Option<String>,
}

/// Line protocol, as text. Documentation only: the decoder parses the body itself.
pub struct LineProtocolBody;

impl utoipa::PartialSchema for LineProtocolBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .description(Some(
                "InfluxDB line protocol, one reading line per line: \
                 `measurement,sensor=<key>[,tag=value…] field=value[,…] [timestamp]`. \
                 Blank lines and `#` comments are skipped; at least one line is needed.",
            ))
            .examples([serde_json::json!(
                "temperature,sensor=CF-1 value=-18.5 1795428000000000000\nroom,sensor=REF-3 humidity=81i,door=false"
            )])
            .into()
    }
}

impl ToSchema for LineProtocolBody {}

/// Write readings as InfluxDB line protocol (InfluxDB 2.x API).
///
/// The `sensor` tag (setting `ingest.line_protocol_sensor_tag`) names the sensor; each
/// numeric or boolean field is a metric (a field called `value` takes the measurement's
/// name). A body with any bad line is refused whole; the problem lists every bad line.
/// 204 only once the readings are durable. `Content-Encoding: gzip` is accepted.
#[utoipa::path(
    post,
    path = "/api/v2/write",
    tag = "readings",
    params(WriteV2Params),
    request_body(content = LineProtocolBody, content_type = "text/plain"),
    responses(
        (status = 204, description = "Durable and queued"),
        (status = 400, description = "Bad lines (each listed with its line number), bad precision, empty body or corrupt gzip", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role cannot post readings", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body (inflated) or reading count over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A Content-Encoding other than gzip or identity", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Queue full or shutting down; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []), ("influx_token" = [])),
    extensions(("x-vigia-permission" = json!("ingest")))
)]
pub async fn write_v2(
    State(state): State<AppState>,
    caller: InfluxCaller,
    ApiQuery(params): ApiQuery<WriteV2Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    write(state, caller, params.precision.as_deref(), headers, body).await
}

/// Write readings as InfluxDB line protocol (InfluxDB 1.x API).
///
/// As `POST /api/v2/write`; the key may also come as Basic auth's password or the `p`
/// parameter, and the v1 precisions `n`, `u`, `m` (minutes) and `h` are accepted.
#[utoipa::path(
    post,
    path = "/write",
    tag = "readings",
    params(WriteV1Params),
    request_body(content = LineProtocolBody, content_type = "text/plain"),
    responses(
        (status = 204, description = "Durable and queued"),
        (status = 400, description = "Bad lines (each listed with its line number), bad precision, empty body or corrupt gzip", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role cannot post readings", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body (inflated) or reading count over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A Content-Encoding other than gzip or identity", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Queue full or shutting down; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = []), ("influx_token" = []), ("basic" = [])),
    extensions(("x-vigia-permission" = json!("ingest")))
)]
pub async fn write_v1(
    State(state): State<AppState>,
    caller: InfluxCaller,
    ApiQuery(params): ApiQuery<WriteV1Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    write(state, caller, params.precision.as_deref(), headers, body).await
}

async fn write(
    state: AppState,
    InfluxCaller(caller): InfluxCaller,
    precision: Option<&str>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let Some(ingest) = &state.ingest else {
        return Err(ApiError::not_found(
            "this process does not have the `ingest` role",
        ));
    };
    let precision = match precision {
        None => Precision::Nanoseconds,
        Some(p) => Precision::parse(p).ok_or_else(|| {
            ApiError::bad_request(format!(
                "precision `{p}` is not one of ns, us, ms, s (v1 also n, u, m, h)"
            ))
        })?,
    };
    crate::ratelimit::check_ingest_rate(&state.ingest_rate, caller.key_id)?;
    let limit = ingest.limits().max_body_bytes;
    let gzip = content_is_gzip(&headers)?;
    let bytes = read_body(body, &headers, limit).await?;
    let bytes = if gzip {
        if bytes.len() <= INLINE_INFLATE_LIMIT {
            inflate(&bytes, limit)?
        } else {
            tokio::task::spawn_blocking(move || inflate(&bytes, limit))
                .await
                .map_err(|e| ApiError::unavailable(format!("inflating failed: {e}"), 1))??
        }
    } else {
        bytes
    };
    ingest
        .ingest_line_protocol(&caller, bytes, precision)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `true` for gzip, `false` for none or identity; 415 for anything else.
fn content_is_gzip(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(false);
    };
    let encoding = value.to_str().unwrap_or("").trim();
    if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip") {
        Ok(true)
    } else if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        Ok(false)
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("Content-Encoding `{encoding}` is not supported; send gzip or nothing"),
        ))
    }
}

/// Inflates a gzip body (several members allowed, as `gzip` writes them when appending)
/// up to `limit` bytes: a small body that inflates past the limit is refused like a big
/// one (a gzip bomb gets 413, not our memory).
fn inflate(compressed: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::with_capacity((compressed.len() * 4).min(limit));
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("the gzip body is corrupt: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::too_large(format!(
            "the body inflates to more than the limit of {limit} bytes; split the batch"
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parts(headers: &[(&str, &str)], uri: &str) -> Parts {
        let mut request = axum::http::Request::builder().uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn finds_the_key_wherever_influx_clients_put_it() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("telegraf:k3")
        );
        let cases = [
            (
                vec![("authorization", "Token k1")],
                "/api/v2/write",
                Some("k1"),
            ),
            (
                vec![("authorization", "token  k1 ")],
                "/api/v2/write",
                Some("k1"),
            ),
            (
                vec![("authorization", "Bearer k2")],
                "/api/v2/write",
                Some("k2"),
            ),
            (
                vec![("authorization", basic.as_str())],
                "/write",
                Some("k3"),
            ),
            (vec![("x-api-key", "k4")], "/write", Some("k4")),
            (vec![], "/write?db=x&u=me&p=k%2B5", Some("k+5")),
            (vec![], "/write?db=x&p=", None),
            (vec![("authorization", "Digest abc")], "/write?p=k6", None),
            (vec![("authorization", "Token")], "/api/v2/write", None),
            (vec![], "/api/v2/write", None),
        ];
        for (headers, uri, want) in cases {
            assert_eq!(
                influx_key(&parts(&headers, uri)).as_deref(),
                want,
                "{headers:?} {uri}"
            );
        }
    }

    #[test]
    fn inflates_within_the_limit_and_refuses_bombs_and_garbage() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![b'a'; 10_000]).unwrap();
        let body = gz.finish().unwrap();
        assert_eq!(inflate(&body, 10_000).unwrap().len(), 10_000);
        assert_eq!(
            inflate(&body, 9_999).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            inflate(b"not gzip", 100).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        // Two members, as `cat a.gz b.gz` makes.
        let twice = [body.clone(), body].concat();
        assert_eq!(inflate(&twice, 20_000).unwrap().len(), 20_000);
    }

    #[test]
    fn content_encodings() {
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_ENCODING, v.parse().unwrap());
            h
        };
        assert!(!content_is_gzip(&HeaderMap::new()).unwrap());
        assert!(content_is_gzip(&headers("gzip")).unwrap());
        assert!(!content_is_gzip(&headers("identity")).unwrap());
        assert_eq!(
            content_is_gzip(&headers("br")).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
