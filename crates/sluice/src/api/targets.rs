//! `GET /targets`, `POST /targets/pause`, `POST /targets/resume`: delivery targets and their
//! circuit breakers. Handlers parse, then call `operations::targets`.

use super::extract::JsonBody;
use super::schema::TargetIn;
use crate::error::{ApiResult, ErrorBody};
use crate::operations::targets::{self, TargetList, TargetOut};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;

/// Every target with its breaker state, what is in flight, recent failures and totals.
#[utoipa::path(get, path = "/targets", tag = "targets",
    responses((status = 200, description = "By name", body = TargetList)))]
pub async fn list_targets(State(state): State<AppState>) -> ApiResult<Json<TargetList>> {
    Ok(Json(targets::list(&state).await?))
}

/// Pauses a target: its deliveries are deferred (not attempted, not counted as attempts)
/// until it is resumed; every worker process honours it within a second.
#[utoipa::path(post, path = "/targets/pause", tag = "targets",
    request_body(content = TargetIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Paused", body = TargetOut),
        (status = 400, description = "Not scheme://host:port", body = ErrorBody),
    ))]
pub async fn pause_target(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<TargetOut>> {
    let target = targets::parse_target(&body)?;
    Ok(Json(targets::set_paused(&state, &target, true).await?))
}

/// Resumes a paused target; deferred deliveries go out when their events come back (within
/// about a second).
#[utoipa::path(post, path = "/targets/resume", tag = "targets",
    request_body(content = TargetIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Resumed", body = TargetOut),
        (status = 400, description = "Not scheme://host:port", body = ErrorBody),
    ))]
pub async fn resume_target(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<TargetOut>> {
    let target = targets::parse_target(&body)?;
    Ok(Json(targets::set_paused(&state, &target, false).await?))
}
