//! The events API: ingest (single and batch), listing, stats, one event, its attempts.

use super::error::{ApiError, ApiResult};
use super::extract::{IdPath, JsonBody};
use super::query::{parse_date_range, parse_page, QueryErrors};
use crate::app::AppState;
use crate::ingest::IngestError;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::event::{json_kind, EventState, NewEvent};
use sluice_core::FieldError;
use sluice_store::{Attempt, Event, EventFilter, EventStats, EventSummary, IngestOutcome};

/// Most events one `POST /events/batch` may carry.
pub const MAX_BATCH: usize = 1000;

static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The answer to `POST /events`.
#[derive(Serialize)]
pub struct IngestedEvent {
    #[serde(flatten)]
    pub event: EventSummary,
    pub duplicate: bool,
}

/// A page of a listing: `{data, count, limit, offset}`.
#[derive(Serialize)]
pub struct Listing<T> {
    pub data: Vec<T>,
    pub count: usize,
    pub limit: i64,
    pub offset: i64,
}

impl<T> Listing<T> {
    pub fn new(data: Vec<T>, page: sluice_store::Page) -> Self {
        Self {
            count: data.len(),
            data,
            limit: page.limit,
            offset: page.offset,
        }
    }
}

fn conflict(existing_id: i64, external_id: &str) -> ApiError {
    ApiError::conflict(format!(
        "event '{external_id}' already exists (id {existing_id}) with a different payload"
    ))
    .with_details(vec![FieldError::new(
        "id",
        format!("already used by event {existing_id} with a different type or data"),
    )])
}

/// `POST /events`.
pub async fn create_event(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let event = NewEvent::parse(&body).map_err(ApiError::invalid)?;
    let outcome = state.ingestor.submit(event).await.map_err(|e| match e {
        IngestError::Store(error) => ApiError::from_store(&error),
        IngestError::Closed => ApiError::new(
            super::error::ErrorName::ServiceUnavailable,
            "sluice is shutting down",
        ),
    })?;
    match outcome {
        IngestOutcome::Created(event) => {
            metrics::counter!("sluice_events_ingested_total", "outcome" => "created").increment(1);
            state.events_created(&[&event]);
            Ok((
                StatusCode::CREATED,
                Json(IngestedEvent {
                    event,
                    duplicate: false,
                }),
            )
                .into_response())
        }
        IngestOutcome::Duplicate(event) => {
            metrics::counter!("sluice_events_ingested_total", "outcome" => "duplicate")
                .increment(1);
            Ok((
                StatusCode::CREATED,
                [(
                    IDEMPOTENT_REPLAYED.clone(),
                    HeaderValue::from_static("true"),
                )],
                Json(IngestedEvent {
                    event,
                    duplicate: true,
                }),
            )
                .into_response())
        }
        IngestOutcome::Conflict {
            existing_id,
            external_id,
        } => {
            metrics::counter!("sluice_events_ingested_total", "outcome" => "conflict").increment(1);
            Err(conflict(existing_id, &external_id))
        }
    }
}

/// One line of the answer to `POST /events/batch`.
#[derive(Serialize)]
pub struct BatchResult {
    pub index: usize,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

fn error_value(error: &ApiError) -> Value {
    serde_json::to_value(error.body()).unwrap_or(Value::Null)
}

/// `POST /events/batch`: each item is validated and stored on its own terms, all in one
/// transaction; the answer says per item what happened.
pub async fn create_batch(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let items = match body.get("events") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "events",
                format!("must be an array, got {}", json_kind(other)),
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
    let mut results: Vec<Option<BatchResult>> = Vec::with_capacity(items.len());
    let mut valid = Vec::new();
    let mut valid_index = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match NewEvent::parse(item) {
            Ok(event) => {
                valid.push(event);
                valid_index.push(index);
                results.push(None);
            }
            Err(details) => {
                let error = ApiError::invalid(prefix_paths(details, index));
                results.push(Some(BatchResult {
                    index,
                    status: "invalid",
                    event: None,
                    error: Some(error_value(&error)),
                }));
            }
        }
    }
    if !valid.is_empty() {
        let outcomes = state.store.ingest(&valid).await?;
        let created: Vec<&EventSummary> = outcomes
            .iter()
            .filter_map(|o| match o {
                IngestOutcome::Created(event) => Some(event),
                _ => None,
            })
            .collect();
        state.events_created(&created);
        for (index, outcome) in valid_index.into_iter().zip(outcomes) {
            results[index] = Some(match outcome {
                IngestOutcome::Created(event) => BatchResult {
                    index,
                    status: "created",
                    event: Some(event),
                    error: None,
                },
                IngestOutcome::Duplicate(event) => BatchResult {
                    index,
                    status: "duplicate",
                    event: Some(event),
                    error: None,
                },
                IngestOutcome::Conflict {
                    existing_id,
                    external_id,
                } => BatchResult {
                    index,
                    status: "conflict",
                    event: None,
                    error: Some(error_value(&conflict(existing_id, &external_id))),
                },
            });
        }
    }
    let results: Vec<BatchResult> = results.into_iter().flatten().collect();
    Ok(Json(serde_json::json!({ "results": results })))
}

fn prefix_paths(details: Vec<FieldError>, index: usize) -> Vec<FieldError> {
    details
        .into_iter()
        .map(|e| {
            let path = if e.path.is_empty() {
                format!("events[{index}]")
            } else {
                format!("events[{index}].{}", e.path)
            };
            FieldError::new(path, e.message)
        })
        .collect()
}

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    pub state: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub external_id: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

fn parse_filter(query: &EventsQuery, errors: &mut QueryErrors) -> EventFilter {
    let state = match query.state.as_deref() {
        None | Some("") => None,
        Some(text) => text
            .parse::<EventState>()
            .map_err(|_| {
                errors.push(
                    "state",
                    format!("must be one of pending, processing, processed, failed; got '{text}'"),
                )
            })
            .ok(),
    };
    let (start, end) = parse_date_range(
        query.start_date.as_deref(),
        query.end_date.as_deref(),
        errors,
    );
    EventFilter {
        state,
        event_type: query.event_type.clone().filter(|t| !t.is_empty()),
        external_id: query.external_id.clone().filter(|t| !t.is_empty()),
        start,
        end,
    }
}

pub fn query_or_400<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<T> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::validation(format!("invalid query string: {}", e.body_text())))
}

/// `GET /events`.
pub async fn list_events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Listing<Event>>> {
    let query = query_or_400(query)?;
    let mut errors = QueryErrors::default();
    let filter = parse_filter(&query, &mut errors);
    let page = parse_page(query.limit.as_deref(), query.offset.as_deref(), &mut errors);
    errors.into_result()?;
    let events = state.store.list_events(&filter, page).await?;
    Ok(Json(Listing::new(events, page)))
}

/// `GET /events/stats`.
pub async fn event_stats(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<EventStats>> {
    let query = query_or_400(query)?;
    let mut errors = QueryErrors::default();
    let filter = parse_filter(
        &EventsQuery {
            state: None,
            external_id: None,
            ..query
        },
        &mut errors,
    );
    errors.into_result()?;
    Ok(Json(state.store.event_stats(&filter).await?))
}

/// `GET /events/{id}`.
pub async fn get_event(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Json<Event>> {
    state
        .store
        .get_event(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("event {id} not found")))
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub limit: Option<String>,
    pub offset: Option<String>,
}

/// `GET /events/{id}/attempts`.
pub async fn list_attempts(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Listing<Attempt>>> {
    let query = query_or_400(query)?;
    let mut errors = QueryErrors::default();
    let page = parse_page(query.limit.as_deref(), query.offset.as_deref(), &mut errors);
    errors.into_result()?;
    if state.store.get_event(id).await?.is_none() {
        return Err(ApiError::not_found(format!("event {id} not found")));
    }
    let attempts = state.store.list_attempts(id, page).await?;
    Ok(Json(Listing::new(attempts, page)))
}
