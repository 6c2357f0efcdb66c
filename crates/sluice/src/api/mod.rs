//! The HTTP API: handlers by resource, the error type, extractors.

pub mod error;
pub mod event_types;
pub mod events;
pub mod extract;
pub mod keys;
pub mod openapi;
pub mod ops;
pub mod replay;
pub mod rules;
pub mod schema;
pub mod site;
pub mod sources;
pub mod targets;
pub mod ws;

use crate::error::ApiError;

/// Unknown routes answer a JSON 404 like every other error.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}
