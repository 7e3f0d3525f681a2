//! The one pagination convention of every list route.
//!
//! - `limit`: how many items a page holds, with a default and a maximum each route
//!   documents; outside 1..=maximum is a 400 naming `limit`.
//! - `cursor`: opaque; taken from the previous page's `next` link, never built by hand;
//!   absent or empty for the first page.
//!   A cursor another list gave out, or a mangled one, is a 400 naming `cursor`.
//! - The body stays a JSON array of the page's items, so clients that read one page keep
//!   working; when more follow, the answer carries `Link: <…?cursor=…>; rel="next"`
//!   (RFC 8288), the same path and query with the cursor of the last item.
//!
//! Pages are keyset pages (`vigia_services::Page`): following the links from the first
//! page returns every item that existed when the listing began exactly once, whatever is
//! added or removed meanwhile.

use axum::http::{header, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use crate::error::ApiError;

/// The `limit` of a request: `requested`, or `default` when absent; 400 outside 1..=max.
pub fn limit(requested: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = requested.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_parameter(
            "limit",
            format!("must be between 1 and {max}"),
        ));
    }
    Ok(limit)
}

/// Which list a cursor belongs to; a cursor of one list is refused by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorKind {
    /// After a sensor key.
    Sensors,
    /// Before an alert id.
    Alerts,
    /// Before a dead letter id.
    DeadLetters,
    /// After a product code.
    Products,
    /// Before a price id.
    Prices,
    /// After an excursion's (start, rule).
    Excursions,
    /// Before a robot id.
    Robots,
}

impl CursorKind {
    fn tag(self) -> &'static str {
        match self {
            CursorKind::Sensors => "s1",
            CursorKind::Alerts => "a1",
            CursorKind::DeadLetters => "d1",
            CursorKind::Products => "m1",
            CursorKind::Prices => "p1",
            CursorKind::Excursions => "e1",
            CursorKind::Robots => "r1",
        }
    }
}

/// Encodes the position after the last item of a page.
pub fn encode_cursor(kind: CursorKind, position: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{position}", kind.tag()))
}

/// Decodes a cursor of this list; 400 naming `cursor` for anything else.
pub fn decode_cursor(kind: CursorKind, cursor: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::bad_parameter(
            "cursor",
            "not a cursor of this list; follow the `next` link",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let position = text
        .strip_prefix(kind.tag())
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    Ok(position.to_string())
}

/// The position a request's `cursor` holds: `None` for the first page (absent or empty),
/// else the position parsed as `T`; 400 naming `cursor` for anything else.
pub fn position<T: std::str::FromStr>(
    kind: CursorKind,
    cursor: Option<&str>,
) -> Result<Option<T>, ApiError> {
    let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let text = decode_cursor(kind, cursor)?;
    text.parse::<T>().map(Some).map_err(|_| {
        ApiError::bad_parameter(
            "cursor",
            "not a cursor of this list; follow the `next` link",
        )
    })
}

/// A page as an answer: the items as a JSON array and, when more follow, the `next` link.
pub struct Paged<T> {
    pub items: Vec<T>,
    /// The cursor of the next page, when there is one.
    pub next: Option<String>,
    /// The request's URI, which the `next` link repeats with the new cursor.
    pub uri: Uri,
}

impl<T> Paged<T> {
    /// The answer for a service's page: when more follow, the `next` cursor holds the
    /// position of its last item (`position_of`), in the list `kind`.
    pub fn of(
        page: vigia_services::Page<T>,
        kind: CursorKind,
        uri: Uri,
        position_of: impl Fn(&T) -> String,
    ) -> Self {
        let next = page
            .has_more
            .then(|| page.items.last())
            .flatten()
            .map(|last| encode_cursor(kind, &position_of(last)));
        Paged {
            items: page.items,
            next,
            uri,
        }
    }
}

impl<T: Serialize> IntoResponse for Paged<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.items).into_response();
        if let Some(cursor) = self.next {
            let link = format!("<{}>; rel=\"next\"", next_url(&self.uri, &cursor));
            if let Ok(value) = HeaderValue::from_str(&link) {
                response.headers_mut().insert(header::LINK, value);
            }
        }
        response
    }
}

/// The same path and query with `cursor` replaced (cursors are URL-safe base64).
fn next_url(uri: &Uri, cursor: &str) -> String {
    let mut pairs: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("cursor=") && *p != "cursor")
        .collect();
    let cursor = format!("cursor={cursor}");
    pairs.push(&cursor);
    format!("{}?{}", uri.path(), pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_one_list() {
        for key in ["CF-1", "a b", "ä/ß", ""] {
            let c = encode_cursor(CursorKind::Sensors, key);
            assert!(c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(decode_cursor(CursorKind::Sensors, &c).unwrap(), key);
            assert!(decode_cursor(CursorKind::Alerts, &c).is_err());
        }
        for bad in ["", "!!", "czE", "eDE6YQ"] {
            let e = decode_cursor(CursorKind::Sensors, bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
            assert_eq!(e.problem.errors[0].field, "cursor");
        }
    }

    #[test]
    fn the_next_link_keeps_the_query_and_replaces_the_cursor() {
        let cases = [
            ("/api/v1/sensors", "/api/v1/sensors?cursor=XYZ"),
            (
                "/api/v1/sensors?limit=5",
                "/api/v1/sensors?limit=5&cursor=XYZ",
            ),
            (
                "/api/v1/alerts?state=open&cursor=OLD&limit=2",
                "/api/v1/alerts?state=open&limit=2&cursor=XYZ",
            ),
        ];
        for (uri, want) in cases {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(next_url(&uri, "XYZ"), want);
        }
    }

    #[test]
    fn limits_outside_the_range_name_the_parameter() {
        assert_eq!(limit(None, 100, 1000).unwrap(), 100);
        assert_eq!(limit(Some(1000), 100, 1000).unwrap(), 1000);
        for bad in [0, 1001] {
            let e = limit(Some(bad), 100, 1000).unwrap_err();
            assert_eq!(e.problem.errors[0].field, "limit");
        }
    }
}
