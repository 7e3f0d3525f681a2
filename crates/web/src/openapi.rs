//! The OpenAPI document's frame: metadata, tags, security schemes and shared schemas.
//! Paths are added by `routes::router()`, next to each handler.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{Problem, ProblemField};
use crate::routes::page::AssetFile;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vigía API",
        description = "Industrial telemetry: ingest readings, watch sensors, handle alerts. \
Errors are `application/problem+json` (RFC 9457) with the failing fields and, for batches, row indexes.",
    ),
    modifiers(&Security),
    components(schemas(Problem, ProblemField, AssetFile)),
    tags(
        (name = "readings", description = "Ingest"),
        (name = "sensors", description = "Sensors and their series"),
        (name = "alerts", description = "Alerts raised by the rules"),
        (name = "keys", description = "API keys and their roles (admin only)"),
        (name = "products", description = "Products and their cold-chain limits"),
        (name = "prices", description = "Market prices per kg, imported from CSV"),
        (name = "robots", description = "Robots (jobs for a module), modules and their instances"),
        (name = "jobs", description = "Background jobs of the scheduler (admin only)"),
        (name = "live", description = "Live push of readings and alert changes"),
        (name = "operations", description = "Health, readiness, metrics"),
        (name = "page", description = "The web page"),
        (name = "objects", description = "Objects behind signed, expiring URLs (the URL is the credential)"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        // InfluxDB clients send `Authorization: Token <key>`, or (v1) Basic auth with the
        // key as password; OpenAPI has no `Token` HTTP scheme, so it is an API key header.
        components.add_security_scheme(
            "influx_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Token <key>`, as InfluxDB clients send it",
            ))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "any user name, the API key as password (InfluxDB 1.x clients)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The complete document: the frame above plus every route's operation.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = crate::routes::router().split_for_parts().1;
        document_rate_limit(&mut doc);
        document_wildcards(&mut doc);
        doc
    })
}

/// axum's catch-all segments (`{*key}`, several path segments) are plain parameters in
/// OpenAPI (`{key}`, documented as holding `/`).
fn document_wildcards(doc: &mut utoipa::openapi::OpenApi) {
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
}

/// The failed-authentication limit is a layer in front of every route, so every
/// operation can answer 429 (with `Retry-After`); stated once here rather than in each
/// route's annotation.
fn document_rate_limit(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::Header;
    use utoipa::openapi::path::Operation;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{Content, Ref, ResponseBuilder};

    let response = ResponseBuilder::new()
        .description(
            "Too many failed authentications from this address (`auth.max_failures_per_second`); \
             retry after `Retry-After` seconds",
        )
        .header(
            "Retry-After",
            Header::new(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            ),
        )
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .build();
    for item in doc.paths.paths.values_mut() {
        let operations: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("429".to_string())
                .or_insert_with(|| response.clone().into());
        }
    }
}
