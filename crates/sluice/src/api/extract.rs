//! Request extractors that turn every kind of bad input into a documented 4xx.

use crate::error::{ApiError, ErrorName};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde_json::Value;

/// Largest request body accepted: 1 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON request body, checked for content type, size and syntax.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let JsonText(bytes) = JsonText::from_request(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON request body's bytes, checked for content type and size, for a handler that reads
/// them into its own shape with [`parse_json_as`].
pub struct JsonText(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonText {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match content_type.as_deref().map(media_type) {
            Some(media) if is_json_media_type(&media) => {}
            Some(media) => {
                return Err(ApiError::new(
                    ErrorName::UnsupportedMediaType,
                    format!("expected Content-Type: application/json, got '{media}'"),
                ))
            }
            None => {
                return Err(ApiError::new(
                    ErrorName::UnsupportedMediaType,
                    "expected Content-Type: application/json",
                ))
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    payload_too_large()
                } else {
                    ApiError::validation(format!("could not read the body: {rejection}"))
                }
            })?;
        Ok(JsonText(bytes))
    }
}

/// An optional JSON body: absent or empty is `None`; present must be valid JSON.
pub struct OptionalJsonBody(pub Option<Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // A declared content type is checked even with an empty body: a body-less form post
        // (which any web page can send) is not a JSON request.
        if let Some(content_type) = request.headers().get(CONTENT_TYPE) {
            let media = media_type(content_type.to_str().unwrap_or_default());
            if !is_json_media_type(&media) {
                return Err(ApiError::new(
                    ErrorName::UnsupportedMediaType,
                    format!("expected Content-Type: application/json, got '{media}'"),
                ));
            }
        }
        let has_body = request
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map(|len| len != "0")
            .unwrap_or_else(|| request.headers().contains_key(CONTENT_TYPE));
        if !has_body {
            return Ok(OptionalJsonBody(None));
        }
        JsonBody::from_request(request, state)
            .await
            .map(|JsonBody(value)| OptionalJsonBody(Some(value)))
    }
}

pub fn payload_too_large() -> ApiError {
    ApiError::new(
        ErrorName::PayloadTooLarge,
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

fn media_type(header: &str) -> String {
    header
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media_type(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Parses JSON with a message that says where it went wrong. serde_json already refuses
/// NaN/Infinity and numbers out of range, so every accepted number is finite.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    parse_json_as(bytes)
}

/// [`parse_json`] into any shape that reads JSON, borrowing from `bytes` where it can.
pub fn parse_json_as<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation(
            "the request body is empty; expected JSON",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.to_string().contains("recursion limit") {
            "JSON nests too deeply".to_owned()
        } else {
            format!("invalid JSON: {e}")
        };
        ApiError::validation(what)
    })
}

/// A numeric id from the path; anything else is a 400 (not a 404).
pub struct IdPath(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::validation(format!("invalid path: {e}")))?;
        parse_id("id", &raw).map(IdPath)
    }
}

/// `/events/{id}/executions/{execution_id}`: both positive integers, else a 400.
#[derive(Debug, Clone, Copy)]
pub struct ExecutionPath {
    pub event_id: i64,
    pub execution_id: i64,
}

impl<S: Send + Sync> FromRequestParts<S> for ExecutionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((event, execution)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::validation(format!("invalid path: {e}")))?;
        Ok(ExecutionPath {
            event_id: parse_id("id", &event)?,
            execution_id: parse_id("execution_id", &execution)?,
        })
    }
}

fn parse_id(name: &str, raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(
            ApiError::validation(format!("{name} must be a positive integer, got '{raw}'"))
                .with_details(vec![sluice_core::FieldError::new(
                    name,
                    "must be a positive integer",
                )]),
        ),
    }
}

/// `/event-types/{event_type}`: a valid event type name (percent-decoded), else a 400.
#[derive(Debug, Clone)]
pub struct EventTypePath(pub sluice_core::event::EventType);

impl<S: Send + Sync> FromRequestParts<S> for EventTypePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::validation(format!("invalid path: {e}")))?;
        crate::event_types::parse_name(&raw)
            .map(EventTypePath)
            .map_err(|e| ApiError::invalid(vec![e]))
    }
}
