//! Operations endpoints: liveness, readiness, Prometheus metrics.

use crate::error::{ApiError, ErrorBody, ErrorName};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sluice_store::StoreError;
use utoipa::ToSchema;

/// The answer to `GET /health`: `{status: "ok", timestamp}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthOut {
    /// Always `ok`.
    pub status: &'static str,
    pub timestamp: DateTime<Utc>,
}

/// The answer to `GET /ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyOut {
    /// Always `ready`.
    pub status: &'static str,
    /// `postgres` or `sqlite`.
    pub database: &'static str,
    pub timestamp: DateTime<Utc>,
}

/// The process is alive (never blocked by other work).
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive", body = HealthOut)))]
pub async fn health() -> Json<HealthOut> {
    Json(HealthOut {
        status: "ok",
        timestamp: Utc::now(),
    })
}

/// The database answers and its migrations are current.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Database reachable and migrations current", body = ReadyOut),
        (status = 503, description = "Not ready", body = ErrorBody),
    ))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<ReadyOut>, ApiError> {
    match state.store.ready().await {
        Ok(()) => Ok(Json(ReadyOut {
            status: "ready",
            database: state.store.backend().as_str(),
            timestamp: Utc::now(),
        })),
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

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::operations::targets::record_gauges(&state).await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
