//! Application services: the business rules behind every front end. HTTP handlers (and
//! later MQTT and line protocol) parse, call one service method, and map the answer;
//! each service method that changes something does it in one store transaction and then
//! tells other processes through the fan-out.
//!
//! What this crate is not: it speaks no protocol (no HTTP types here) and names no
//! backend (it sees the store, bus and fan-out ports only).

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod dead_letters;
pub mod error;
pub mod excursions;
pub mod ingest;
pub mod keys;
pub mod prices;
pub mod products;
pub mod rejections;
pub mod robots;
pub mod sensors;
pub mod series;

pub use alerts::AlertService;

/// One page of a list: its items, and whether more follow the last one. Every list
/// route pages this way (keyset pagination: a page never repeats or skips an item that
/// existed when the listing began); the HTTP layer turns the last item into the cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}
pub use audit::AuditTrail;
pub use auth::{
    bootstrap, generate_key, hash_key, AuthError, Authenticator, Bootstrap, BootstrapError, Caller,
};
pub use dead_letters::DeadLetterService;
pub use error::ServiceError;
pub use excursions::{ExcursionRequest, ExcursionView};
pub use ingest::{IngestError, IngestLimits, IngestService};
pub use keys::{KeyService, NewKey};
pub use prices::{CsvRefusal, PriceImportError, PriceService, RowError};
pub use products::{ProductService, ProductSpec, ProductView};
pub use rejections::{Rejection, RejectionLog};
pub use robots::RobotService;
pub use sensors::{LatestValue, SensorService, SensorView};
pub use series::{SeriesAnswer, SeriesPoint, SeriesRequest, SeriesSource, SeriesStep};
