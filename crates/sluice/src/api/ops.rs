//! Operations endpoints: liveness, readiness, Prometheus metrics.

use super::error::{ApiError, ErrorName};
use crate::app::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use sluice_store::StoreError;

/// `GET /health`: the process answers (seed shape).
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "timestamp": chrono::Utc::now() }))
}

/// `GET /ready`: the database answers and its migrations are current.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    match state.store.ready().await {
        Ok(()) => Ok(Json(json!({
            "status": "ready",
            "database": state.store.backend().as_str(),
            "timestamp": chrono::Utc::now(),
        }))),
        Err(StoreError::Migration(message)) => Err(ApiError::new(
            ErrorName::ServiceUnavailable,
            format!("not ready: {message}"),
        )),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            Err(ApiError::new(
                ErrorName::ServiceUnavailable,
                "not ready: the database is unavailable",
            ))
        }
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
