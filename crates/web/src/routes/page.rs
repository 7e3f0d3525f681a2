//! The web page and its assets, embedded in the binary at build time.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse};

use crate::error::{ApiError, Problem};

const INDEX_HTML: &str = include_str!("../../assets/index.html");
const APP_JS: &str = include_str!("../../assets/app.js");
const APP_CSS: &str = include_str!("../../assets/app.css");

/// The live page: one card per sensor, open alerts with Ack buttons.
#[utoipa::path(
    get,
    path = "/",
    tag = "page",
    responses((status = 200, description = "The page", body = String, content_type = "text/html"))
)]
pub async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX_HTML))
}

/// The assets there are, as the `{file}` of `/assets/{file}`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documentation only: the handler matches the name itself
pub enum AssetFile {
    /// The page's script.
    #[schema(rename = "app.js")]
    AppJs,
    /// The page's stylesheet.
    #[schema(rename = "app.css")]
    AppCss,
}

/// The page's script and stylesheet.
#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "page",
    params(("file" = AssetFile, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The asset", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, description = "No such asset", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn asset(Path(file): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let (body, mime) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found(format!("no asset `{file}`"))),
    };
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    ))
}
