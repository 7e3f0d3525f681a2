//! Route handlers, one module per resource. `router()` is the single list of routes.

pub mod alerts;
pub mod live;
pub mod ops;
pub mod page;
pub mod readings;
pub mod sensors;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::ApiDoc;
use crate::AppState;

/// Every route of the application with its OpenAPI operation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(readings::post_readings))
        .routes(routes!(sensors::list_sensors))
        .routes(routes!(sensors::get_sensor, sensors::put_sensor))
        .routes(routes!(sensors::sensor_readings))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::get_alert))
        .routes(routes!(alerts::ack_alert))
        .routes(routes!(alerts::resolve_alert))
        .routes(routes!(live::websocket))
        .routes(routes!(live::events))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json))
        .routes(routes!(page::index))
        .routes(routes!(page::asset))
}
