//! Extractors that report their failures as problem+json instead of axum's plain text.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ProblemField};

/// `Json<T>` whose rejections are problem+json: 400 for syntax, 422 for schema
/// (naming the field serde complained about), 415 for a wrong content type.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => {
            let detail = e.body_text();
            ApiError::invalid(
                "the body does not match the expected schema",
                vec![ProblemField {
                    line: None,
                    row: None,
                    field: field_from_serde(&detail),
                    message: detail,
                }],
            )
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("malformed JSON: {}", e.body_text()))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as `Content-Type: application/json`",
        ),
        JsonRejection::BytesRejection(e) => ApiError::too_large(e.body_text()),
        other => ApiError::bad_request(other.body_text()),
    }
}

/// axum's data errors read like "Failed to deserialize the JSON body into the target
/// type: rules[0].max: invalid type…"; the path before the last ": " names the field.
fn field_from_serde(text: &str) -> String {
    let tail = text.split("target type: ").nth(1).unwrap_or(text);
    match tail.split_once(": ") {
        Some((path, _)) if !path.contains(' ') => path.to_string(),
        _ => {
            // "missing field `x`" / "unknown field `x`" name it in backticks.
            tail.split('`').nth(1).unwrap_or("body").to_string()
        }
    }
}

/// `Query<T>` whose rejections are 400 problem+json naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                let detail = e.body_text();
                let mut err = ApiError::bad_request(format!("invalid query string: {detail}"));
                err.problem.errors.push(ProblemField {
                    line: None,
                    row: None,
                    field: field_from_serde(&detail),
                    message: detail,
                });
                Err(err)
            }
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::field_from_serde;

    #[test]
    fn names_the_field_from_serde_messages() {
        let cases = [
            ("Failed to deserialize the JSON body into the target type: rules[0].max: invalid type: string \"x\", expected f64 at line 1 column 30", "rules[0].max"),
            ("Failed to deserialize the JSON body into the target type: missing field `severity` at line 1 column 3", "severity"),
            ("Failed to deserialize the JSON body into the target type: unknown field `colour`, expected one of …", "colour"),
        ];
        for (text, want) in cases {
            assert_eq!(field_from_serde(text), want, "{text}");
        }
    }
}

/// Integer body fields as JSON Schema sees them: `61.0` is the integer 61 (a schema's
/// `integer` accepts it, so the server must too); a fraction or a value outside the target
/// type is refused naming the field (422). Use with `#[serde(deserialize_with = …)]`
/// (and `default` on an `Option`).
pub mod integer {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    fn whole<E: Error>(n: &serde_json::Number) -> Result<i64, E> {
        if let Some(v) = n.as_i64() {
            return Ok(v);
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
            _ => Err(E::custom(format!("`{n}` is not an integer in range"))),
        }
    }

    pub fn required<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        let n = serde_json::Number::deserialize(d)?;
        T::try_from(whole(&n)?).map_err(|_| D::Error::custom(format!("`{n}` is out of range")))
    }

    pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        match Option::<serde_json::Number>::deserialize(d)? {
            None => Ok(None),
            Some(n) => T::try_from(whole(&n)?)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("`{n}` is out of range"))),
        }
    }
}
