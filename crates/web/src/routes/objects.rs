//! `GET|HEAD|PUT /objects/{key}`: the local object store's signed, expiring URLs, which
//! Vigía serves itself (an S3 backend's URLs point at the S3 server instead).
//!
//! The URL is the credential: no API key; the signature (`vigia_objects::UrlSigner`,
//! HMAC-SHA256 under `objects.signing_key`) names the method, the key, the expiry and, for
//! a PUT, the exact body length. Reads support `Range` (one range; 206 or 416),
//! `If-None-Match` (304) and send the object's `ETag`. Writes stream the body to the store
//! without holding it in memory, up to `objects.max_put_bytes`, and store nothing unless
//! the whole signed length arrived.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::TryStreamExt;
use serde::Serialize;
use utoipa::ToSchema;
use vigia_objects::{parse_range, unsatisfied_content_range, ObjectError, Objects};

use crate::error::{ApiError, Problem};
use crate::AppState;

/// Object storage as the routes see it.
#[derive(Debug, Clone)]
pub struct ObjectRoutes {
    pub store: Arc<dyn Objects>,
    /// `objects.max_put_bytes`: the largest body a signed PUT may carry.
    pub max_put_bytes: u64,
}

/// A stored object.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredObject {
    pub key: String,
    /// Bytes stored.
    pub size: u64,
    /// The object's entity tag, also in the `ETag` header.
    pub etag: Option<String>,
}

fn routes(state: &AppState) -> Result<&ObjectRoutes, ApiError> {
    state.objects.as_ref().ok_or_else(|| {
        ApiError::not_found("this process serves no object storage (role `api` serves it)")
    })
}

/// Download an object through a signed URL (also `HEAD`).
#[utoipa::path(
    get,
    path = "/objects/{*key}",
    tag = "objects",
    params(
        ("key" = String, Path, description = "Object key: segments separated by `/`"),
        ("expires" = u64, Query, description = "Unix seconds the URL is valid until (signed)"),
        ("sig" = String, Query, description = "The URL's signature"),
    ),
    responses(
        (status = 200, description = "The object", content_type = "application/octet-stream",
            headers(("etag" = String, description = "Entity tag"), ("accept-ranges" = String, description = "`bytes`"))),
        (status = 206, description = "The requested range", content_type = "application/octet-stream",
            headers(("content-range" = String, description = "`bytes start-end/size`"))),
        (status = 304, description = "`If-None-Match` names the current tag"),
        (status = 403, description = "Forged, altered or expired URL (a URL naming an invalid key was never signed)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such object", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range starts past the end", body = Problem, content_type = "application/problem+json",
            headers(("content-range" = String, description = "`bytes */size`"))),
        (status = 503, description = "Object storage unavailable; retry later", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_object(
    State(state): State<AppState>,
    method: Method,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let objects = routes(&state)?;
    let method_name = if method == Method::HEAD {
        "HEAD"
    } else {
        "GET"
    };
    let grant = objects
        .store
        .verify_signed(method_name, &key, query.as_deref().unwrap_or(""))?;
    let meta = objects.store.head(&grant.key).await?;
    let etag = meta.etag.as_ref().map(|tag| tag.header_value());
    let not_modified = meta.etag.as_ref().is_some_and(|tag| {
        headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|h| tag.matches_header(h))
    });
    if not_modified {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        set_etag(&mut response, etag.as_deref());
        return Ok(response);
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(h) => match parse_range(h, meta.size) {
            Ok(range) => range,
            Err(e @ ObjectError::RangeNotSatisfiable { size }) => {
                let mut response = ApiError::from(e).into_response();
                insert(
                    &mut response,
                    header::CONTENT_RANGE,
                    &unsatisfied_content_range(size),
                );
                return Ok(response);
            }
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    let body = objects.store.get(&grant.key, range).await?;
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let length = body.range.end - body.range.start;
    let mut response = if method == Method::HEAD {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from_stream(
            body.stream.map_err(std::io::Error::other),
        ))
    };
    *response.status_mut() = status;
    insert(
        &mut response,
        header::CONTENT_TYPE,
        "application/octet-stream",
    );
    insert(&mut response, header::CONTENT_LENGTH, &length.to_string());
    insert(&mut response, header::ACCEPT_RANGES, "bytes");
    if let Some(range) = range {
        insert(
            &mut response,
            header::CONTENT_RANGE,
            &range.content_range(meta.size),
        );
    }
    set_etag(&mut response, etag.as_deref());
    Ok(response)
}

/// Upload an object through a signed URL: the body must be exactly the signed length.
#[utoipa::path(
    put,
    path = "/objects/{*key}",
    tag = "objects",
    params(
        ("key" = String, Path, description = "Object key: segments separated by `/`"),
        ("expires" = u64, Query, description = "Unix seconds the URL is valid until (signed)"),
        ("len" = u64, Query, description = "The body's exact length in bytes (signed)"),
        ("sig" = String, Query, description = "The URL's signature"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored, replacing any object under the key", body = StoredObject,
            headers(("etag" = String, description = "Entity tag"))),
        (status = 400, description = "The body was cut short (nothing stored)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Forged, altered or expired URL, or a body of another length than signed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than `objects.max_put_bytes`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Object storage unavailable; retry later", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_object(
    State(state): State<AppState>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let objects = routes(&state)?;
    let grant = objects
        .store
        .verify_signed("PUT", &key, query.as_deref().unwrap_or(""))?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    grant.check_content_length(length)?;
    let length = length.unwrap_or(0);
    if length > objects.max_put_bytes {
        return Err(ApiError::too_large(format!(
            "the body has {length} bytes; `objects.max_put_bytes` allows {}",
            objects.max_put_bytes
        )));
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let stored = objects
        .store
        .put(&grant.key, Box::pin(stream), Some(length))
        .await?;
    let etag = stored.etag.as_ref().map(|tag| tag.header_value());
    let mut response = Json(StoredObject {
        key: grant.key.as_str().to_owned(),
        size: stored.size,
        etag: stored.etag.map(|tag| tag.as_str().to_owned()),
    })
    .into_response();
    set_etag(&mut response, etag.as_deref());
    Ok(response)
}

fn insert(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn set_etag(response: &mut Response, etag: Option<&str>) {
    if let Some(etag) = etag {
        insert(response, header::ETAG, etag);
    }
}
