//! Request extractors that turn every client mistake into a problem naming the field: malformed
//! or wrongly typed JSON and query strings are 400 `VALIDATION_FAILED`, a body over 1 MiB is 413,
//! a body that is not JSON is 415.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use erp_platform::error::{ApiError, ErrorCode, FieldError};
use serde::de::DeserializeOwned;

use crate::problem::Problem;

pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON request body.
pub(crate) struct JsonBody<T>(pub T);

/// The field a serde error is about: its path, plus the missing field's name when serde says
/// "missing field `x`".
fn field_of(path: &str, message: &str) -> String {
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let unknown_variant = message.starts_with("unknown variant");
    let path = if path == "." { "" } else { path };
    match missing {
        Some(name) if path.is_empty() => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None if path.is_empty() && !unknown_variant => "body".to_owned(),
        None => path.to_owned(),
    }
}

/// Parses `bytes` as `T`, naming the offending field on failure.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Every body of this API is an object (serde would otherwise read structs from arrays).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Problem(ApiError::validation(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )])));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        let at_a_field = path != "." && !path.is_empty();
        let (field, message) = if inner.is_eof() || (inner.is_syntax() && !at_a_field) {
            ("body".to_owned(), message)
        } else if inner.is_syntax() {
            // serde_json reports a value of the wrong type (`null`, a number) where an enum's
            // name is expected as a syntax error; the path still says which field it was.
            (
                field_of(&path, &message),
                "has the wrong type or is not valid JSON (expected one of the allowed names)"
                    .to_owned(),
            )
        } else {
            (field_of(&path, &message), message)
        };
        // serde's messages mention line/column; keep the part a client can act on.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        Problem(ApiError::validation(vec![FieldError::new(field, message)]))
    })
}

/// Reads a JSON body; an empty one is `empty` (when the route allows leaving the body out).
async fn read_json<S, T>(request: Request, state: &S, empty: Option<T>) -> Result<T, Problem>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    let is_json = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        });
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the body is over {MAX_BODY_BYTES} bytes"),
                ))
            } else {
                Problem(ApiError::validation(vec![FieldError::new(
                    "body",
                    "could not be read",
                )]))
            }
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace)
        && let Some(empty) = empty
    {
        return Ok(empty);
    }
    if is_json != Some(true) {
        return Err(Problem(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the body must be application/json",
        )));
    }
    parse_json(&bytes)
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(request, state, None).await.map(JsonBody)
    }
}

/// Query-string parameters.
pub(crate) struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(QueryParams)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = error.into_inner().to_string();
                let field = match field_of(&path, &message).as_str() {
                    "body" => "query".to_owned(),
                    other => other.to_owned(),
                };
                Problem(ApiError::validation(vec![FieldError::new(field, message)]))
            })
    }
}

/// Path parameters (ids). A segment that is not valid UTF-8 (or otherwise cannot be read) names
/// no resource: 404 problem+json, like any other unknown id.
pub(crate) struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => {
                tracing::debug!(%rejection, "unreadable path parameter");
                Err(Problem(ApiError::new(
                    ErrorCode::NotFound,
                    "no such resource",
                )))
            }
        }
    }
}

/// A JSON body that may be left out entirely (an empty body is `T::default()`).
pub(crate) struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default + Send,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(request, state, Some(T::default()))
            .await
            .map(OptionalJsonBody)
    }
}

/// The bearer token of the `Authorization` header.
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        nested: Option<Nested>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        count: u32,
    }

    fn field(bytes: &str) -> String {
        parse_json::<Body>(bytes.as_bytes()).unwrap_err().0.fields[0]
            .field
            .clone()
    }

    #[test]
    fn problems_name_the_field() {
        assert_eq!(field("{"), "body");
        assert_eq!(field("[1]"), "body");
        assert_eq!(field("{}"), "email");
        assert_eq!(field(r#"{"email": 3}"#), "email");
        assert_eq!(
            field(r#"{"email": "a", "nested": {"count": -1}}"#),
            "nested.count"
        );
        assert_eq!(field(r#"{"email": "a", "nested": {}}"#), "nested.count");
    }
}
