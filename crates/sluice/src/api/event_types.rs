//! `GET /event-types`, `GET /event-types/{type}`, `PUT /event-types/{type}`: event types,
//! their settings and schemas. Handlers parse, then call `operations::event_types`.

use super::extract::{EventTypePath, JsonBody};
use super::schema::EventTypeIn;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::operations::event_types::{self, EventTypeList, EventTypeOut};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;

/// Every event type configured, with events, or with rules, by name, with its event count.
#[utoipa::path(get, path = "/event-types", tag = "event-types",
    responses((status = 200, description = "By name", body = EventTypeList)))]
pub async fn list_event_types(State(state): State<AppState>) -> ApiResult<Json<EventTypeList>> {
    Ok(Json(event_types::list(&state).await?))
}

/// One event type with its settings.
#[utoipa::path(get, path = "/event-types/{event_type}", tag = "event-types",
    params(("event_type" = String, Path, description = "The event type, e.g. order.created")),
    responses(
        (status = 200, description = "The type", body = EventTypeOut),
        (status = 400, description = "Not a valid type name", body = ErrorBody),
        (status = 404, description = "No settings, events or rules", body = ErrorBody),
    ))]
pub async fn get_event_type(
    State(state): State<AppState>,
    EventTypePath(event_type): EventTypePath,
) -> ApiResult<Json<EventTypeOut>> {
    Ok(Json(event_types::get(&state, &event_type).await?))
}

/// Changes a type's settings: only the fields given change, `null` clears one. A schema is
/// checked here (an invalid one is a 400) and applies to events ingested from now on.
#[utoipa::path(put, path = "/event-types/{event_type}", tag = "event-types",
    params(("event_type" = String, Path, description = "The event type, e.g. order.created")),
    request_body(content = EventTypeIn, content_type = "application/json"),
    responses(
        (status = 200, description = "The type as changed", body = EventTypeOut),
        (status = 400, description = "Invalid setting or schema", body = ErrorBody),
    ))]
pub async fn update_event_type(
    State(state): State<AppState>,
    caller: Caller,
    EventTypePath(event_type): EventTypePath,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<EventTypeOut>> {
    let changes = crate::event_types::parse_changes(&body).map_err(ApiError::invalid)?;
    Ok(Json(
        event_types::update(&state, &event_type, changes, caller.name()).await?,
    ))
}
