//! Vigía's HTTP face: the API under `/api/v1`, authentication, the OpenAPI document,
//! live push (WebSocket and SSE), operations endpoints and the web page.
//!
//! Handlers are thin: parse, authorise, call the pipeline or the store, map the result.
//! Every route is declared once, through `utoipa_axum::routes!`, which registers the
//! handler AND its OpenAPI operation together, so the document cannot miss a route.

pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod telemetry;

use std::sync::Arc;

use axum::Router;
use vigia_ingest::decode::DecodeLimits;
use vigia_ingest::Pipeline;

pub use auth::{bootstrap, generate_key, hash_key, Authenticator, Bootstrap, Caller};
pub use error::{ApiError, Problem};

/// Limits applied to `POST /api/v1/readings`.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    pub decode: DecodeLimits,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Arc<Pipeline>,
    pub auth: Arc<Authenticator>,
    pub limits: Arc<IngestLimits>,
    pub metrics: telemetry::Metrics,
}

impl AppState {
    pub fn new(pipeline: Arc<Pipeline>, limits: IngestLimits, metrics: telemetry::Metrics) -> Self {
        Self {
            auth: Arc::new(Authenticator::new(pipeline.store.clone())),
            pipeline,
            limits: Arc::new(limits),
            metrics,
        }
    }
}

/// The whole application: API, docs, live push, operations and the page.
pub fn app(state: AppState) -> Router {
    let (router, _api) = routes::router().split_for_parts();
    router
        .fallback(routes::ops::not_found)
        .layer(axum::middleware::from_fn(telemetry::count_requests))
        .with_state(state)
}
