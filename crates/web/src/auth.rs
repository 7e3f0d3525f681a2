//! The `Caller` extractor: the presented API key (header, or `access_token` for live
//! routes) verified by the services' [`Authenticator`]; refusals are audited and counted
//! per client address by [`crate::ratelimit`].

use std::net::SocketAddr;
use std::ops::Deref;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use vigia_services::AuthError;
use vigia_store::{AuditEvent, AuditOutcome};

use crate::error::ApiError;
use crate::AppState;

/// The authenticated caller of a request (tenant, key, role).
#[derive(Debug, Clone)]
pub struct Caller(pub vigia_services::Caller);

impl Deref for Caller {
    type Target = vigia_services::Caller;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The key presented in `Authorization: Bearer …` or `X-API-Key: …`.
pub fn presented_key(parts: &Parts) -> Option<&str> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, rest) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The client's address as the server saw it (`unknown` in in-process tests).
pub fn client_address(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string())
}

/// Verifies `key` for the request in `parts`; a refusal is audited (aggregated per
/// client and minute).
pub async fn verify(parts: &Parts, state: &AppState, key: &str) -> Result<Caller, ApiError> {
    match state.auth.verify(key).await {
        Ok(caller) => Ok(Caller(caller)),
        Err(AuthError::InvalidKey) => {
            let target = parts
                .extensions
                .get::<MatchedPath>()
                .map_or("unmatched", |p| p.as_str())
                .to_string();
            state.audit.record(AuditEvent {
                tenant: None,
                actor: "anonymous".into(),
                action: "auth.refused".into(),
                target,
                outcome: AuditOutcome::Refused,
                client: client_address(parts),
            });
            Err(ApiError::unauthorized("the API key is not valid"))
        }
        Err(AuthError::Store(e)) => Err(e.into()),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(key) = presented_key(parts) else {
            return Err(ApiError::unauthorized(
                "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            ));
        };
        let key = key.to_string();
        verify(parts, state, &key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_and_x_api_key() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("authorization", "Bearer abc", Some("abc")),
            ("authorization", "bearer   abc ", Some("abc")),
            ("authorization", "Basic abc", None),
            ("authorization", "Bearer", None),
            ("x-api-key", " k1 ", Some("k1")),
        ];
        for (name, value, want) in cases {
            let req = axum::http::Request::builder()
                .header(*name, *value)
                .body(())
                .unwrap();
            let (parts, _) = req.into_parts();
            assert_eq!(presented_key(&parts), *want, "{name}: {value}");
        }
    }
}
