//! Vigía's HTTP face: the API under `/api/v1`, authentication, the OpenAPI document,
//! live push (WebSocket and SSE), operations endpoints and the web page.
//!
//! Handlers are thin: parse, call one service method (`vigia-services`, which also checks
//! the caller's role), map the answer. Every route is declared once, through
//! `utoipa_axum::routes!`, which registers the handler AND its OpenAPI operation together,
//! so the document cannot miss a route.

pub mod auth;
pub mod error;
pub mod extract;
pub mod live_hub;
pub mod openapi;
pub mod pagination;
pub mod ratelimit;
pub mod routes;
pub mod server;
pub mod telemetry;

use std::sync::Arc;

use axum::Router;
use vigia_bus::Bus;
use vigia_services::{
    AlertService, AuditTrail, Authenticator, IngestService, KeyService, SensorService,
};
use vigia_store::Store;

pub use auth::{presented_key, Caller};
pub use error::{ApiError, Problem};
pub use live_hub::{LiveHub, LiveLimits};
pub use ratelimit::{FailedAuthLimiter, IngestLimiter};

/// Shared state of every handler: one pointer to the [`AppServices`].
///
/// axum clones the state for every request. With the services as a struct of ~15 `Arc`s
/// that clone and its drop took 16 % of the CPU of `GET /healthz` under load (perf, 64
/// connections), two atomic refcount changes per field on cache lines both cores fight
/// over; behind one `Arc` it is one increment and one decrement.
#[derive(Clone)]
pub struct AppState(Arc<AppServices>);

impl AppState {
    pub fn new(services: AppServices) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppServices;

    fn deref(&self) -> &AppServices {
        &self.0
    }
}

/// The services, and what operations endpoints check.
pub struct AppServices {
    /// Present when this process has the `ingest` role.
    pub ingest: Option<Arc<IngestService>>,
    pub sensors: Arc<SensorService>,
    pub alerts: Arc<AlertService>,
    pub keys: Arc<KeyService>,
    pub dead_letters: Arc<vigia_services::DeadLetterService>,
    pub products: Arc<vigia_services::ProductService>,
    pub prices: Arc<vigia_services::PriceService>,
    /// Robots, modules and instances, and the audit log's reads.
    pub robots: Arc<vigia_services::RobotService>,
    pub auth: Arc<Authenticator>,
    pub audit: Arc<AuditTrail>,
    /// Messages the protocol front ends (MQTT) refused lately, per tenant.
    pub rejections: Arc<vigia_services::RejectionLog>,
    pub failed_auth: Arc<FailedAuthLimiter>,
    /// Ingest requests per API key, HTTP JSON and line protocol alike.
    pub ingest_rate: Arc<IngestLimiter>,
    pub live: LiveHub,
    /// The scheduler's jobs, when this process has the `scheduler` role.
    pub jobs: Option<vigia_scheduler::SchedulerHandle>,
    /// Checked by `/readyz`.
    pub store: Arc<dyn Store>,
    /// Checked by `/readyz` and measured for `/metrics` when this process uses the bus.
    pub bus: Option<Arc<dyn Bus>>,
    /// Readings partitions of the bus (`bus_partitions`): the depth is their sum.
    pub readings_partitions: usize,
    pub metrics: telemetry::Metrics,
    /// The object store and its signed routes, when this process serves the API.
    pub objects: Option<routes::objects::ObjectRoutes>,
}

/// Which groups of routes a process serves besides the operations endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Surfaces {
    /// `POST /api/v1/readings` (role `ingest`).
    pub ingest: bool,
    /// Reads, alert and sensor actions, keys, jobs, live push and the page (role `api`).
    pub api: bool,
}

impl Surfaces {
    pub const ALL: Surfaces = Surfaces {
        ingest: true,
        api: true,
    };
}

/// The application for the given surfaces: API, docs, live push, operations and the page.
pub fn app(state: AppState, surfaces: Surfaces) -> Router {
    let (router, _api) = routes::router_for(surfaces).split_for_parts();
    let limiter = state.failed_auth.clone();
    router
        .fallback(routes::ops::not_found)
        .layer(axum::middleware::from_fn_with_state(
            limiter,
            ratelimit::limit_failed_auth,
        ))
        .layer(axum::middleware::from_fn(telemetry::count_requests))
        .with_state(state)
}
