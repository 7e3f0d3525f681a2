//! Live push: committed readings and alert changes of the caller's tenant, over
//! WebSocket (`/api/v1/ws`) or Server-Sent Events (`/api/v1/events`).
//!
//! Browsers cannot set headers on WebSocket or EventSource requests, so these two
//! routes also accept the key as the `access_token` query parameter.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::Stream;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use vigia_core::{LiveEvent, Permission, TenantId};

use crate::auth::presented_key;
use crate::error::{ApiError, Problem};
use crate::live_hub::{SubscribeError, Subscription};
use crate::{AppState, Caller};

#[derive(serde::Deserialize)]
struct AccessToken {
    access_token: Option<String>,
}

/// A caller authenticated by header or by `access_token` query parameter.
pub struct LiveCaller(pub Caller);

impl FromRequestParts<AppState> for LiveCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Percent-decoded like any query parameter, so keys with reserved characters work.
        let from_query = axum::extract::Query::<AccessToken>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| q.0.access_token);
        let key =
            match (presented_key(parts), from_query) {
                (Some(k), _) => k.to_string(),
                (None, Some(k)) => k,
                (None, None) => return Err(ApiError::unauthorized(
                    "missing API key: send `Authorization: Bearer <key>` or `?access_token=<key>`",
                )),
            };
        let caller = crate::auth::verify(parts, state, &key).await?;
        caller.require(Permission::Read)?;
        Ok(LiveCaller(caller))
    }
}

/// What a subscriber receives for one hub event; `None` when it is another tenant's.
fn frame(event: &LiveEvent, tenant: TenantId) -> Option<(&'static str, String)> {
    if event.tenant() != tenant {
        return None;
    }
    let kind = match event {
        LiveEvent::Readings { .. } => "readings",
        LiveEvent::Alert { .. } => "alert",
    };
    serde_json::to_string(event).ok().map(|json| (kind, json))
}

/// The refusal of a stream past the live limits: 503 when the server is full, 429 when
/// the key holds its most streams (both with `Retry-After`).
fn refused(error: SubscribeError) -> ApiError {
    match error {
        SubscribeError::Full(_) => ApiError::unavailable(error.to_string(), 5),
        SubscribeError::KeyFull(_) => {
            crate::ratelimit::too_many(error.to_string(), Duration::from_secs(5))
        }
    }
}

fn lagged(missed: u64) -> String {
    format!(r#"{{"type":"lagged","missed":{missed}}}"#)
}

/// The headers of a WebSocket opening handshake (RFC 6455 §4.1), which the route
/// requires: without them it answers 400. Documentation only.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // documentation only
pub struct UpgradeHeaders {
    /// Must list the `upgrade` token.
    #[param(required = true, rename = "Connection", schema_with = connection_schema)]
    connection: String,
    /// `websocket`.
    #[param(required = true, rename = "Upgrade", schema_with = upgrade_schema)]
    upgrade: String,
    /// `13`.
    #[param(required = true, rename = "Sec-WebSocket-Version", schema_with = version_schema)]
    version: String,
    /// The client's nonce, echoed hashed in `Sec-WebSocket-Accept`.
    #[param(required = true, rename = "Sec-WebSocket-Key")]
    key: String,
}

fn one_string(value: &'static str) -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some([value]))
        .build()
}

fn connection_schema() -> utoipa::openapi::schema::Object {
    one_string("Upgrade")
}

fn upgrade_schema() -> utoipa::openapi::schema::Object {
    one_string("websocket")
}

fn version_schema() -> utoipa::openapi::schema::Object {
    one_string("13")
}

/// Live feed over WebSocket: one JSON text frame per event
/// (`{"type":"readings",…}`, `{"type":"alert","change":…,"alert":{…}}`, or
/// `{"type":"lagged","missed":N}` when the client fell behind and should refetch).
#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "live",
    params(
        ("access_token" = Option<String>, Query, description = "API key, for clients that cannot set headers"),
        UpgradeHeaders,
    ),
    responses(
        (status = 101, description = "Switching to WebSocket"),
        (status = 400, description = "Not a WebSocket upgrade request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role cannot read", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This key holds its most live streams (`live.max_subscribers_per_key`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server holds its most live streams (`live.max_subscribers`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn websocket(
    State(state): State<AppState>,
    LiveCaller(caller): LiveCaller,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    // Taken before the upgrade, so a refusal is a plain HTTP answer.
    let subscription = match state.live.subscribe(caller.key_id) {
        Ok(s) => s,
        Err(e) => return refused(e).into_response(),
    };
    upgrade
        // Bound what a slow client can make us buffer.
        .max_write_buffer_size(4 * 1024 * 1024)
        .on_upgrade(move |socket| serve_socket(socket, state, caller.tenant, subscription))
}

async fn serve_socket(
    socket: WebSocket,
    state: AppState,
    tenant: TenantId,
    mut subscription: Subscription,
) {
    let (mut tx, mut rx) = socket.split();
    let events = &mut subscription.events;
    let send_timeout = state.live.limits().send_timeout;
    let mut closing = state.live.closing();
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            event = events.recv() => {
                let text = match event {
                    Ok(event) => match frame(&event, tenant) {
                        Some((_, json)) => json,
                        None => continue,
                    },
                    Err(RecvError::Lagged(n)) => lagged(n),
                    Err(RecvError::Closed) => break,
                };
                // A client that does not read holds its frames in our buffers: past the
                // timeout it is closed with a reason and its memory freed.
                match tokio::time::timeout(send_timeout, tx.send(Message::Text(text.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        let reason = axum::extract::ws::CloseFrame {
                            code: axum::extract::ws::close_code::POLICY,
                            reason: "too slow: frames not read within live.send_timeout".into(),
                        };
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            tx.send(Message::Close(Some(reason))),
                        )
                        .await;
                        break;
                    }
                }
            }
            incoming = rx.next() => match incoming {
                // Clients have nothing to say; we only watch for them going away.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            _ = closing.changed() => {
                let _ = tx.send(Message::Close(None)).await;
                break;
            }
        }
    }
}

/// Live feed over Server-Sent Events: event names `readings` and `alert` (and
/// `lagged`), each with the same JSON as the WebSocket frames.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "live",
    params(("access_token" = Option<String>, Query, description = "API key, for clients that cannot set headers")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 401, description = "Missing or wrong API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key's role cannot read", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This key holds its most live streams (`live.max_subscribers_per_key`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This server holds its most live streams (`live.max_subscribers`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("api_key" = [])),
    extensions(("x-vigia-permission" = json!("read")))
)]
pub async fn events(
    State(state): State<AppState>,
    LiveCaller(caller): LiveCaller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant = caller.tenant;
    let subscription = state.live.subscribe(caller.key_id).map_err(refused)?;
    let mut closing = state.live.closing();
    // The subscription travels with the stream: its place is given back when the
    // client goes away and the stream is dropped.
    let stream = futures_util::stream::unfold(subscription, move |mut sub| async move {
        loop {
            match sub.events.recv().await {
                Ok(event) => {
                    if let Some((kind, json)) = frame(&event, tenant) {
                        return Some((Ok(Event::default().event(kind).data(json)), sub));
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    return Some((Ok(Event::default().event("lagged").data(lagged(n))), sub))
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    // End the stream at shutdown so graceful shutdown does not wait on it forever.
    let stream = stream.take_until(async move {
        let _ = closing.wait_for(|closed| *closed).await;
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
