//! `GET /targets`, `POST /targets/pause`, `POST /targets/resume`, `PUT /targets/{target}`:
//! delivery targets, their circuit breakers and rate limits. Handlers parse, then call
//! `operations::targets`.

use super::extract::JsonBody;
use super::schema::{TargetChangeIn, TargetIn};
use crate::error::{ApiResult, ErrorBody};
use crate::operations::targets::{self, TargetList, TargetOut};
use crate::state::AppState;
use axum::extract::{Path, State};
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

/// Sets a target's rate limit (`max_per_second`: deliveries a second over every worker
/// process; `0`: none; `null`: back to `TARGET_MAX_PER_SECOND`) and/or pauses or resumes it.
/// The target is URL-encoded in the path: `PUT /targets/https%3A%2F%2Fhooks.example.com%3A443`.
/// Every worker process follows within a second.
#[utoipa::path(put, path = "/targets/{target}", tag = "targets",
    params(("target" = String, Path, description = "scheme://host:port, URL-encoded")),
    request_body(content = TargetChangeIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Changed", body = TargetOut),
        (status = 400, description = "Not scheme://host:port, or a bad limit", body = ErrorBody),
    ))]
pub async fn change_target(
    State(state): State<AppState>,
    Path(target): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<TargetOut>> {
    let target = targets::parse_target_text(&target)?;
    let change = targets::parse_change(&body)?;
    Ok(Json(targets::change(&state, &target, change).await?))
}
