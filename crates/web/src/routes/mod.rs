//! Route handlers, one module per resource. `router()` is the single list of routes.

pub mod alerts;
pub mod audit;
pub mod dead_letters;
pub mod excursions;
pub mod influx;
pub mod jobs;
pub mod keys;
pub mod live;
pub mod modules;
pub mod objects;
pub mod ops;
pub mod page;
pub mod prices;
pub mod products;
pub mod readings;
pub mod rejections;
pub mod robots;
pub mod sensors;

use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::openapi::ApiDoc;
use crate::{AppState, Surfaces};

/// Every route of the application with its OpenAPI operation.
pub fn router() -> OpenApiRouter<AppState> {
    router_for(Surfaces::ALL)
}

/// The routes of the given surfaces, plus the operations endpoints every process serves.
pub fn router_for(surfaces: Surfaces) -> OpenApiRouter<AppState> {
    let mut router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(ops::openapi_json));
    if surfaces.ingest {
        router = router
            .routes(routes!(readings::post_readings))
            .routes(routes!(influx::write_v2))
            .routes(routes!(influx::write_v1))
            .routes(routes!(rejections::list_rejections));
    }
    if surfaces.api {
        router = router
            .routes(routes!(sensors::list_sensors))
            .routes(routes!(sensors::get_sensor, sensors::put_sensor))
            .routes(routes!(sensors::sensor_readings))
            .routes(routes!(excursions::sensor_excursions))
            .routes(routes!(alerts::list_alerts))
            .routes(routes!(alerts::get_alert))
            .routes(routes!(alerts::ack_alert))
            .routes(routes!(alerts::resolve_alert))
            .routes(routes!(keys::create_key, keys::list_keys))
            .routes(routes!(keys::revoke_key))
            .routes(routes!(dead_letters::list_dead_letters))
            .routes(routes!(
                dead_letters::get_dead_letter,
                dead_letters::delete_dead_letter
            ))
            .routes(routes!(dead_letters::replay_dead_letter))
            .routes(routes!(products::list_products))
            .routes(routes!(
                products::get_product,
                products::put_product,
                products::delete_product
            ))
            .routes(routes!(prices::import_prices))
            .routes(routes!(prices::list_prices))
            .routes(routes!(jobs::list_jobs))
            .routes(routes!(robots::create_robot, robots::list_robots))
            .routes(routes!(robots::get_robot))
            .routes(routes!(robots::robot_executions))
            .routes(routes!(robots::cancel_robot))
            .routes(routes!(robots::retry_robot))
            .routes(routes!(robots::robot_progress))
            .routes(routes!(robots::robot_complete))
            .routes(routes!(robots::robot_fail))
            .routes(routes!(modules::list_modules))
            .routes(routes!(modules::get_module, modules::put_module))
            .routes(routes!(modules::put_instance))
            .routes(routes!(audit::list_audit))
            .routes(routes!(live::websocket))
            .routes(routes!(live::events))
            .routes(routes!(objects::get_object, objects::put_object))
            .routes(routes!(page::index))
            .routes(routes!(page::asset));
    }
    router
}
