//! The events API: ingest (single and batch), listing, stats, one event, its attempts. Each
//! handler extracts, calls its operation in `operations::events`, and wraps the answer.

use super::extract::{parse_json_as, ExecutionPath, IdPath, JsonText};
use super::schema::{BatchIn, NewEventIn};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::operations::events::{
    self, AttemptList, BatchOut, EventList, EventOut, EventsQuery, ExplainOut, IngestedOut,
    StatsOut, StatsQuery, MAX_BATCH,
};
use crate::operations::query::{parse_key_cursor, parse_page, PageQuery, QueryErrors};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sluice_core::event::NewEvent;
use sluice_core::json_text::JsonNode;
use sluice_core::FieldError;

static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A query string that does not even deserialize is a 400 like any other bad parameter.
pub fn query_or_400<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::validation(format!("invalid query string: {}", e.body_text())))
}

/// Stores one event, deduplicated by its id.
#[utoipa::path(post, path = "/events", tag = "events",
    request_body(content = NewEventIn, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (or a duplicate of a stored event: duplicate=true, header Idempotent-Replayed: true)", body = IngestedOut),
        (status = 400, description = "Invalid JSON or event", body = ErrorBody),
        (status = 409, description = "Same id already stored with a different payload", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ))]
pub async fn create_event(
    State(state): State<AppState>,
    JsonText(body): JsonText,
) -> ApiResult<Response> {
    let body: JsonNode = parse_json_as(&body)?;
    let event = NewEvent::from_json(&body).map_err(ApiError::invalid)?;
    Ok(stored(events::ingest(&state, event).await?))
}

/// The answer to an event stored: 201, and `Idempotent-Replayed: true` for a duplicate.
pub fn stored(ingested: IngestedOut) -> Response {
    if ingested.duplicate {
        (
            StatusCode::CREATED,
            [(
                IDEMPOTENT_REPLAYED.clone(),
                HeaderValue::from_static("true"),
            )],
            Json(ingested),
        )
            .into_response()
    } else {
        (StatusCode::CREATED, Json(ingested)).into_response()
    }
}

/// Stores up to 1000 events in one transaction; each item is judged on its own.
#[utoipa::path(post, path = "/events/batch", tag = "events",
    request_body(content = BatchIn, content_type = "application/json"),
    responses(
        (status = 200, description = "One result per submitted event, in order", body = BatchOut),
        (status = 400, description = "Not a batch of 1..1000", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Not application/json", body = ErrorBody),
    ))]
pub async fn create_batch(
    State(state): State<AppState>,
    JsonText(body): JsonText,
) -> ApiResult<Json<BatchOut>> {
    let mut body: JsonNode = parse_json_as(&body)?;
    let items = match body.take("events") {
        Some(JsonNode::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "events",
                format!("must be an array, got {}", other.kind()),
            )]))
        }
        None => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "events",
                "is required",
            )]))
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::invalid(vec![FieldError::new(
            "events",
            format!("must hold 1 to {MAX_BATCH} events, got {}", items.len()),
        )]));
    }
    let parsed = items.iter().map(NewEvent::from_json).collect();
    Ok(Json(events::ingest_batch(&state, parsed).await?))
}

/// Events, newest first, filtered.
#[utoipa::path(get, path = "/events", tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "Newest first", body = EventList),
        (status = 400, description = "Bad filter", body = ErrorBody),
    ))]
pub async fn list_events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EventList>> {
    let (filter, page) = query_or_400(query)?.parse()?;
    Ok(Json(events::list_events(&state, &filter, page).await?))
}

/// Counts by state, narrowed by type and dates.
#[utoipa::path(get, path = "/events/stats", tag = "events",
    params(StatsQuery),
    responses(
        (status = 200, description = "Counts by state", body = StatsOut),
        (status = 400, description = "Bad filter", body = ErrorBody),
    ))]
pub async fn event_stats(
    State(state): State<AppState>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<StatsOut>> {
    let filter = query_or_400(query)?.parse()?;
    Ok(Json(events::event_stats(&state, &filter).await?))
}

/// One event.
#[utoipa::path(get, path = "/events/{id}", tag = "events",
    params(("id" = i64, Path, description = "Event id", minimum = 1)),
    responses(
        (status = 200, description = "The event", body = EventOut),
        (status = 400, description = "Id is not a positive integer", body = ErrorBody),
        (status = 404, description = "Unknown event", body = ErrorBody),
    ))]
pub async fn get_event(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Json<EventOut>> {
    Ok(Json(events::event_detail(&state, id).await?))
}

/// Why one of the event's rule executions matched or was skipped: its recorded rule version
/// evaluated again, node by node, against the stored payload.
#[utoipa::path(get, path = "/events/{id}/executions/{execution_id}/explain", tag = "events",
    params(
        ("id" = i64, Path, description = "Event id", minimum = 1),
        ("execution_id" = i64, Path, description = "Rule execution id (from the attempts)", minimum = 1),
    ),
    responses(
        (status = 200, description = "The explanation", body = ExplainOut),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "Unknown event, or no such execution of it", body = ErrorBody),
    ))]
pub async fn explain_execution(
    State(state): State<AppState>,
    path: ExecutionPath,
) -> ApiResult<Json<ExplainOut>> {
    Ok(Json(
        events::explain_execution(&state, path.event_id, path.execution_id).await?,
    ))
}

/// An event's attempts, newest first, with what each rule did.
#[utoipa::path(get, path = "/events/{id}/attempts", tag = "events",
    params(("id" = i64, Path, description = "Event id", minimum = 1), PageQuery),
    responses(
        (status = 200, description = "Attempts, newest first, with rule executions", body = AttemptList),
        (status = 400, description = "Bad id or page", body = ErrorBody),
        (status = 404, description = "Unknown event", body = ErrorBody),
    ))]
pub async fn list_attempts(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AttemptList>> {
    let query = query_or_400(query)?;
    let mut errors = QueryErrors::default();
    let page = parse_page(query.limit.as_deref(), query.offset.as_deref(), &mut errors);
    let before = parse_key_cursor(query.cursor.as_deref(), page, &mut errors);
    errors.into_result()?;
    Ok(Json(events::list_attempts(&state, id, before, page).await?))
}
