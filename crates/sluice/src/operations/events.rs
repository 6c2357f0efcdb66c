//! Events: ingest one or a batch, list with filters, count by state, one event, its attempts.

use crate::error::{ApiError, ApiResult};
use crate::error::{ErrorBody, ErrorName};
use crate::event_types::check_data;
use crate::ingest::IngestError;
use crate::operations::query::{parse_date_range, parse_page, text_param, QueryErrors};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_core::action::Action;
use sluice_core::event::{AttemptStatus, EventState, ExecutionResult, NewEvent, Trigger};
use sluice_core::FieldError;
use sluice_store::{
    Attempt, Event, EventFilter, EventHeader, EventStats, EventSummary, IngestOutcome, Page,
    RuleExecution,
};
use utoipa::{IntoParams, ToSchema};

/// Most events one `POST /events/batch` may carry.
pub const MAX_BATCH: usize = 1000;
/// Payload bytes one page of events may carry; a page of large events holds fewer than its
/// `limit` and `next_cursor` continues it.
pub const MAX_PAGE_BYTES: i64 = 4 * 1024 * 1024;

/// An event as `GET /events/{id}` and listings show it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventOut {
    pub id: i64,
    /// The producer's id (the dedupe key).
    pub external_id: String,
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub event_type: String,
    /// The event's `data`, as submitted.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub state: EventState,
    /// How many times this id and payload were submitted.
    pub received_count: i64,
    /// Attempts run so far.
    pub attempts: i64,
    /// When a pending event is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// For an event stored with `process_at` or `delay_ms` that has not come due yet: when
    /// it will be processed (it can still be cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub replayed_at: Option<DateTime<Utc>>,
    /// Events with the same key are processed one at a time, lowest id first.
    pub ordering_key: Option<String>,
    /// What a pending event waits for: a receiver that is down, paused or busy (only on
    /// `GET /events/{id}`; absent when it waits for nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingOut>,
}

/// A receiver an event waits for.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WaitingOut {
    /// `scheme://host:port`, as `GET /targets` lists it.
    pub target: String,
    pub since: DateTime<Utc>,
}

impl From<Event> for EventOut {
    fn from(event: Event) -> Self {
        EventOut {
            id: event.id,
            external_id: event.external_id,
            event_type: event.event_type,
            payload: event.payload,
            state: event.state,
            received_count: event.received_count,
            attempts: event.attempts,
            next_attempt_at: event.next_attempt_at,
            scheduled_for: scheduled_for(event.state, event.attempts, event.next_attempt_at),
            last_error: event.last_error,
            created_at: event.created_at,
            updated_at: event.updated_at,
            processed_at: event.processed_at,
            replayed_at: event.replayed_at,
            ordering_key: event.ordering_key,
            waiting: None,
        }
    }
}

/// When a pending event that never ran comes due, if that is still ahead: it was scheduled.
fn scheduled_for(
    state: EventState,
    attempts: i64,
    due: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    due.filter(|at| state == EventState::Pending && attempts == 0 && *at > Utc::now())
}

/// What ingest says about an event it stored or found.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventSummaryOut {
    pub id: i64,
    pub external_id: String,
    #[serde(rename = "type")]
    #[schema(rename = "type")]
    pub event_type: String,
    pub state: EventState,
    pub received_count: i64,
    pub created_at: DateTime<Utc>,
    /// Set when this submission stored the event scheduled (`process_at` or `delay_ms`): it
    /// is not processed before then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_at: Option<DateTime<Utc>>,
}

impl EventSummaryOut {
    fn created(event: EventSummary, process_at: Option<DateTime<Utc>>) -> Self {
        EventSummaryOut {
            process_at: process_at.filter(|at| *at > event.created_at),
            ..event.into()
        }
    }
}

impl From<EventSummary> for EventSummaryOut {
    fn from(event: EventSummary) -> Self {
        EventSummaryOut {
            id: event.id,
            external_id: event.external_id,
            event_type: event.event_type,
            state: event.state,
            received_count: event.received_count,
            created_at: event.created_at,
            process_at: None,
        }
    }
}

/// The answer to `POST /events`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct IngestedOut {
    #[serde(flatten)]
    pub event: EventSummaryOut,
    /// True when this id and payload were already stored (header `Idempotent-Replayed: true`).
    pub duplicate: bool,
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

/// A 400 for `data` that does not match its type's schema: one detail per violation, each
/// at its JSON pointer into `data` (`""` for `data` itself).
fn schema_violation(event: &NewEvent, violations: Vec<FieldError>) -> ApiError {
    let message = match violations.as_slice() {
        [one] if one.path.is_empty() => one.message.clone(),
        [one] => format!("{} at {}", one.message, one.path),
        many => format!("{} violations (see details)", many.len()),
    };
    ApiError::validation(format!(
        "data does not match the schema of event type '{}': {message}",
        event.event_type.as_str()
    ))
    .with_details(violations)
}

fn count_ingested(outcome: &'static str, n: usize) {
    metrics::counter!("sluice_events_ingested_total", "outcome" => outcome).increment(n as u64);
}

/// Stores one event (group commit: concurrent calls share a transaction). A duplicate (same
/// id and payload) is an answer, not an error; a different payload under a stored id is a 409.
pub async fn ingest(state: &AppState, event: NewEvent) -> ApiResult<IngestedOut> {
    let catalog = state.event_types.current().await?;
    if let Some(schema) = catalog.schema(event.event_type.as_str()) {
        if let Err(violations) = check_data(schema, event.data()).await {
            count_ingested("invalid", 1);
            return Err(schema_violation(&event, violations));
        }
    }
    let process_at = event.process_at;
    let outcome = state.ingestor.submit(event).await.map_err(|e| match e {
        IngestError::Store(error) => ApiError::from_store(&error),
        IngestError::Closed => {
            ApiError::new(ErrorName::ServiceUnavailable, "sluice is shutting down")
        }
    })?;
    match outcome {
        IngestOutcome::Created(event) => {
            count_ingested("created", 1);
            Ok(IngestedOut {
                event: EventSummaryOut::created(event, process_at),
                duplicate: false,
            })
        }
        IngestOutcome::Duplicate(event) => {
            count_ingested("duplicate", 1);
            Ok(IngestedOut {
                event: event.into(),
                duplicate: true,
            })
        }
        IngestOutcome::Conflict {
            existing_id,
            external_id,
        } => {
            count_ingested("conflict", 1);
            Err(conflict(existing_id, &external_id))
        }
    }
}

/// What became of one item of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    Created,
    Duplicate,
    Conflict,
    Invalid,
}

/// One line of the answer to `POST /events/batch`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchItemOut {
    pub index: usize,
    pub status: BatchStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<EventSummaryOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The answer to `POST /events/batch`: one result per submitted event, in order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchOut {
    pub results: Vec<BatchItemOut>,
}

/// Stores the valid items of a batch in one transaction; each item's answer says what
/// happened to it (an invalid item carries its validation error, paths prefixed
/// `events[i]`).
pub async fn ingest_batch(
    state: &AppState,
    items: Vec<Result<NewEvent, Vec<FieldError>>>,
) -> ApiResult<BatchOut> {
    let mut results: Vec<Option<BatchItemOut>> = Vec::with_capacity(items.len());
    let mut valid = Vec::new();
    let mut valid_index = Vec::new();
    let catalog = state.event_types.current().await?;
    for (index, item) in items.into_iter().enumerate() {
        let item = match item {
            Ok(event) => match catalog.schema(event.event_type.as_str()) {
                Some(schema) => match check_data(schema, event.data()).await {
                    Ok(()) => Ok(event),
                    Err(violations) => Err(schema_violation(&event, violations)),
                },
                None => Ok(event),
            },
            Err(details) => Err(ApiError::invalid(prefix_paths(details, index))),
        };
        match item {
            Ok(event) => {
                valid.push(event);
                valid_index.push(index);
                results.push(None);
            }
            Err(error) => {
                count_ingested("invalid", 1);
                results.push(Some(BatchItemOut {
                    index,
                    status: BatchStatus::Invalid,
                    event: None,
                    error: Some(error.into_body()),
                }))
            }
        }
    }
    if !valid.is_empty() {
        let outcomes = state.ingestor.store_batch(&mut valid).await?;
        for ((index, outcome), submitted) in valid_index.into_iter().zip(outcomes).zip(&valid) {
            let (status, event, error) = match outcome {
                IngestOutcome::Created(event) => (
                    BatchStatus::Created,
                    Some(EventSummaryOut::created(event, submitted.process_at)),
                    None,
                ),
                IngestOutcome::Duplicate(event) => {
                    (BatchStatus::Duplicate, Some(event.into()), None)
                }
                IngestOutcome::Conflict {
                    existing_id,
                    external_id,
                } => (
                    BatchStatus::Conflict,
                    None,
                    Some(conflict(existing_id, &external_id).into_body()),
                ),
            };
            results[index] = Some(BatchItemOut {
                index,
                status,
                event,
                error,
            });
        }
    }
    Ok(BatchOut {
        results: results.into_iter().flatten().collect(),
    })
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

/// The filters of `GET /events` (and of the console's events page), as sent: every parameter
/// is text until [`EventsQuery::parse`] checks them all, so one answer lists every problem.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// pending | processing | processed | failed
    #[param(value_type = Option<EventState>)]
    pub state: Option<String>,
    /// Event type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// The producer's id.
    pub external_id: Option<String>,
    /// `YYYY-MM-DD` or RFC 3339; inclusive.
    pub start_date: Option<String>,
    /// `YYYY-MM-DD` (the end of that day) or RFC 3339; inclusive.
    pub end_date: Option<String>,
    /// 1..500, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// Default 0.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Option<String>,
    /// A page's `next_cursor`: continues that listing, at a cost that does not grow with depth.
    pub cursor: Option<String>,
}

/// Where a page ends, as `next_cursor` carries it: the `(created_at, id)` of its last event.
pub fn encode_cursor(created_at: DateTime<Utc>, id: i64) -> String {
    format!("{}_{id}", created_at.timestamp_micros())
}

/// A cursor this server gave out, or `None`.
pub fn decode_cursor(text: &str) -> Option<(DateTime<Utc>, i64)> {
    let (micros, id) = text.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, id.parse().ok()?))
}

/// The filters of `GET /events/stats`: a type and a date range.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Event type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// `YYYY-MM-DD` or RFC 3339; inclusive.
    pub start_date: Option<String>,
    /// `YYYY-MM-DD` (the end of that day) or RFC 3339; inclusive.
    pub end_date: Option<String>,
}

impl StatsQuery {
    /// The filter these parameters ask for, or a 400 listing every bad one.
    pub fn parse(self) -> ApiResult<EventFilter> {
        EventsQuery {
            event_type: self.event_type,
            start_date: self.start_date,
            end_date: self.end_date,
            ..EventsQuery::default()
        }
        .parse_filter()
    }
}

impl EventsQuery {
    /// The filter and page these parameters ask for, or a 400 listing every bad one.
    pub fn parse(&self) -> ApiResult<(EventFilter, Page)> {
        let mut errors = QueryErrors::default();
        let filter = self.filter(&mut errors);
        let page = parse_page(self.limit.as_deref(), self.offset.as_deref(), &mut errors);
        if filter.before.is_some() && page.offset > 0 {
            // A cursor says where the page starts; an offset on top would skip events.
            errors.push("offset", "cannot be combined with cursor");
        }
        errors.into_result()?;
        Ok((filter, page))
    }

    /// The filter alone, or a 400.
    pub fn parse_filter(&self) -> ApiResult<EventFilter> {
        let mut errors = QueryErrors::default();
        let filter = self.filter(&mut errors);
        errors.into_result()?;
        Ok(filter)
    }

    fn filter(&self, errors: &mut QueryErrors) -> EventFilter {
        let state = match self.state.as_deref() {
            None | Some("") => None,
            Some(text) => text
                .parse::<EventState>()
                .map_err(|_| {
                    errors.push(
                        "state",
                        format!(
                            "must be one of pending, processing, processed, failed; got '{text}'"
                        ),
                    )
                })
                .ok(),
        };
        let (start, end) =
            parse_date_range(self.start_date.as_deref(), self.end_date.as_deref(), errors);
        let before = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => decode_cursor(text).or_else(|| {
                errors.push("cursor", "is not a cursor this server gave out");
                None
            }),
        };
        EventFilter {
            state,
            event_type: text_param("type", self.event_type.as_deref(), errors),
            external_id: text_param("external_id", self.external_id.as_deref(), errors),
            start,
            end,
            before,
        }
    }
}

/// A page of events: `{data, count, limit, offset}`, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventList {
    pub data: Vec<EventOut>,
    /// Rows in this page.
    pub count: usize,
    pub limit: i64,
    pub offset: i64,
    /// Continues this listing with `?cursor=` (and the same filters); `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Headers of the next `n` events of a listing, and whether more follow.
async fn headers_and_more(
    state: &AppState,
    filter: &EventFilter,
    page: Page,
) -> ApiResult<(Vec<EventHeader>, bool)> {
    let mut headers = state
        .store
        .list_event_headers(
            filter,
            Page {
                limit: page.limit.saturating_add(1),
                offset: page.offset,
            },
        )
        .await?;
    let more = headers.len() as i64 > page.limit;
    headers.truncate(usize::try_from(page.limit).unwrap_or(usize::MAX));
    Ok((headers, more))
}

/// How many of `headers`, from the first, fit `budget` bytes of payload (always at least one,
/// and one event is at most the ingest body limit).
pub fn fitting(headers: &[EventHeader], budget: i64) -> usize {
    let mut total = 0i64;
    headers
        .iter()
        .take_while(|h| {
            total = total.saturating_add(h.payload_bytes);
            total <= budget
        })
        .count()
        .max(headers.len().min(1))
}

/// Events matching the filter, newest first: at most `limit`, and at most
/// [`MAX_PAGE_BYTES`] of payloads (`next_cursor` continues either way). Payloads are fetched
/// only for the events the page holds.
pub async fn list_events(
    state: &AppState,
    filter: &EventFilter,
    page: Page,
) -> ApiResult<EventList> {
    let (mut headers, mut more) = headers_and_more(state, filter, page).await?;
    let fit = fitting(&headers, MAX_PAGE_BYTES);
    if fit < headers.len() {
        headers.truncate(fit);
        more = true;
    }
    let next_cursor = headers
        .last()
        .filter(|_| more)
        .map(|last| encode_cursor(last.created_at, last.id));
    let ids: Vec<i64> = headers.iter().map(|h| h.id).collect();
    let mut payloads = state.store.event_payloads(&ids).await?;
    let data: Vec<EventOut> = headers
        .into_iter()
        .filter_map(|h| {
            let payload = payloads.remove(&h.id)?;
            Some(EventOut::from(h.with_payload(payload)))
        })
        .collect();
    Ok(EventList {
        count: data.len(),
        data,
        limit: page.limit,
        offset: page.offset,
        next_cursor,
    })
}

/// An event in a list, without its payload: what the console's lists show.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBrief {
    pub id: i64,
    pub external_id: String,
    pub event_type: String,
    pub state: EventState,
    pub received_count: i64,
    pub attempts: i64,
    /// See [`EventOut::scheduled_for`].
    pub scheduled_for: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<EventHeader> for EventBrief {
    fn from(h: EventHeader) -> Self {
        EventBrief {
            id: h.id,
            external_id: h.external_id,
            event_type: h.event_type,
            state: h.state,
            received_count: h.received_count,
            attempts: h.attempts,
            scheduled_for: scheduled_for(h.state, h.attempts, h.next_attempt_at),
            last_error: h.last_error,
            created_at: h.created_at,
            updated_at: h.updated_at,
        }
    }
}

/// A page of events without payloads, newest first, and whether more follow.
pub async fn browse_events(
    state: &AppState,
    filter: &EventFilter,
    page: Page,
) -> ApiResult<(Vec<EventBrief>, bool)> {
    let (headers, more) = headers_and_more(state, filter, page).await?;
    Ok((headers.into_iter().map(Into::into).collect(), more))
}

/// Counts of `GET /events/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatsOut {
    pub total: i64,
    pub pending: i64,
    pub processing: i64,
    pub processed: i64,
    pub failed: i64,
    pub failed_last_24h: i64,
    /// Pending events that already ran at least once (waiting for a retry).
    pub retrying: i64,
}

impl From<EventStats> for StatsOut {
    fn from(stats: EventStats) -> Self {
        StatsOut {
            total: stats.total,
            pending: stats.pending,
            processing: stats.processing,
            processed: stats.processed,
            failed: stats.failed,
            failed_last_24h: stats.failed_last_24h,
            retrying: stats.retrying,
        }
    }
}

/// Counts by state of the events the filter's type and dates select (its state and
/// external id are not used).
pub async fn event_stats(state: &AppState, filter: &EventFilter) -> ApiResult<StatsOut> {
    let scoped = EventFilter {
        state: None,
        external_id: None,
        ..filter.clone()
    };
    Ok(state.store.event_stats(&scoped).await?.into())
}

/// Why a stored execution matched or not: its recorded rule version evaluated again against
/// the stored payload (evaluation is pure, so this is what the worker saw).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExplainOut {
    pub execution_id: i64,
    pub rule_id: i64,
    pub rule_version_id: i64,
    /// Whether the condition held (the action was due).
    pub matched: bool,
    /// What the condition evaluated to.
    #[schema(value_type = Object)]
    pub result: Value,
    /// Every node of the condition with its value (see `POST /rules/test` with `explain`);
    /// `null` when the condition could not be evaluated (the summary says why).
    #[schema(value_type = Option<Object>)]
    pub explanation: Option<sluice_core::logic::Explanation>,
    /// One line naming the comparisons that decided, with their values.
    pub summary: String,
    /// When the condition held: what the action sent (or would send), rendered for this
    /// event, with what sluice adds (the idempotency key) and credentials masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub action: Option<Value>,
    /// When the condition held and the action has `{"$logic": …}` transforms: how each was
    /// computed for this event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transforms: Option<Vec<TransformOut>>,
}

/// How one `{"$logic": …}` transform of an action was computed for one event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TransformOut {
    /// Where it is in the action: `action.params.body.total`.
    pub path: String,
    /// What it computed (absent when it failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub value: Option<Value>,
    /// Why it could not be computed (over the rule's budget, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// One line naming what decided its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Every node of its JSONLogic with its value, as a condition's explanation; under
    /// 64 KiB whatever the data.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub explanation: Option<Box<sluice_core::logic::Explanation>>,
}

impl TransformOut {
    /// The transforms explained, or `None` when the action has none.
    pub fn list(explained: Vec<crate::rule_pass::ExplainedTransform>) -> Option<Vec<Self>> {
        if explained.is_empty() {
            return None;
        }
        Some(
            explained
                .into_iter()
                .map(|t| match t.outcome {
                    Ok(explained) => TransformOut {
                        path: t.path,
                        value: Some(explained.result),
                        error: None,
                        summary: Some(explained.summary),
                        explanation: Some(Box::new(explained.tree)),
                    },
                    Err(error) => TransformOut {
                        path: t.path,
                        value: None,
                        error: Some(error),
                        summary: None,
                        explanation: None,
                    },
                })
                .collect(),
        )
    }
}

/// Explains one execution of one event; 404 if either is unknown or the execution belongs
/// to another event.
pub async fn explain_execution(
    state: &AppState,
    event_id: i64,
    execution_id: i64,
) -> ApiResult<ExplainOut> {
    let event = state
        .store
        .get_event(event_id)
        .await?
        .ok_or_else(|| event_not_found(event_id))?;
    let ran = state
        .store
        .execution_condition(event_id, execution_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "event {event_id} has no rule execution {execution_id}"
            ))
        })?;
    let logic = sluice_core::logic::Logic::compile(&ran.condition, &state.settings.rule_limits())
        .map_err(|e| {
        ApiError::conflict(format!(
            "rule version {} cannot be evaluated under today's limits: {e}",
            ran.rule_version_id
        ))
    })?;
    Ok(
        match crate::evaluation::explain(&logic, &event.payload).await {
            Ok(explained) => {
                let (action, transforms) = match Action::parse(&ran.action) {
                    Ok(action) if explained.matched => {
                        let limits = state.settings.rule_limits();
                        let shown =
                            match crate::rule_pass::render(&action, ran.rule_id, &event, &limits)
                                .await
                            {
                                (Ok(rendered), key) => rendered.shown(&key),
                                (Err(error), _) => serde_json::json!({ "error": error }),
                            };
                        let transforms =
                            crate::rule_pass::explain_transforms(&action, &event, &limits).await;
                        (Some(shown), TransformOut::list(transforms))
                    }
                    _ => (None, None),
                };
                ExplainOut {
                    execution_id,
                    rule_id: ran.rule_id,
                    rule_version_id: ran.rule_version_id,
                    action,
                    transforms,
                    matched: explained.matched,
                    result: explained.result,
                    explanation: Some(explained.tree),
                    summary: explained.summary,
                }
            }
            Err(error) => ExplainOut {
                execution_id,
                rule_id: ran.rule_id,
                rule_version_id: ran.rule_version_id,
                matched: false,
                result: Value::Null,
                explanation: None,
                summary: format!("the condition could not be evaluated: {error}"),
                action: None,
                transforms: None,
            },
        },
    )
}

fn event_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("event {id} not found"))
}

/// One event; 404 if unknown.
pub async fn event_detail(state: &AppState, id: i64) -> ApiResult<EventOut> {
    let event = state
        .store
        .get_event(id)
        .await?
        .ok_or_else(|| event_not_found(id))?;
    let waiting = if event.state == EventState::Pending {
        state.store.event_waiting(id).await?
    } else {
        None
    };
    Ok(EventOut {
        waiting: waiting.map(|w| WaitingOut {
            target: w.target,
            since: w.since,
        }),
        ..EventOut::from(event)
    })
}

/// What one rule (at one version) did with the event in one attempt.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RuleExecutionOut {
    pub id: i64,
    pub rule_id: i64,
    pub rule_name: String,
    pub rule_version_id: i64,
    pub rule_version: i64,
    pub result: ExecutionResult,
    pub error: Option<String>,
    /// Set for actions that run at most once (webhooks, emails).
    pub idempotency_key: Option<String>,
    pub executed_at: DateTime<Utc>,
    pub duration_ms: Option<i64>,
}

impl From<RuleExecution> for RuleExecutionOut {
    fn from(x: RuleExecution) -> Self {
        RuleExecutionOut {
            id: x.id,
            rule_id: x.rule_id,
            rule_name: x.rule_name,
            rule_version_id: x.rule_version_id,
            rule_version: x.rule_version,
            result: x.result,
            error: x.error,
            idempotency_key: x.idempotency_key,
            executed_at: x.executed_at,
            duration_ms: x.duration_ms,
        }
    }
}

/// One processing attempt of an event, with what each rule did in it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AttemptOut {
    pub id: i64,
    pub event_id: i64,
    pub attempt_no: i64,
    pub trigger: Trigger,
    pub status: AttemptStatus,
    pub error: Option<String>,
    /// The worker that ran it (`host:pid:random`).
    pub worker: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// For a replay: the name of the API key that asked for it (`null` without access
    /// control, and for other triggers).
    pub requested_by: Option<String>,
    pub rule_executions: Vec<RuleExecutionOut>,
}

impl From<Attempt> for AttemptOut {
    fn from(a: Attempt) -> Self {
        AttemptOut {
            id: a.id,
            event_id: a.event_id,
            attempt_no: a.attempt_no,
            trigger: a.trigger,
            status: a.status,
            error: a.error,
            worker: a.worker,
            started_at: a.started_at,
            finished_at: a.finished_at,
            duration_ms: a.duration_ms,
            requested_by: a.requested_by,
            rule_executions: a.rule_executions.into_iter().map(Into::into).collect(),
        }
    }
}

/// A page of attempts, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttemptList {
    pub data: Vec<AttemptOut>,
    pub count: usize,
    pub limit: i64,
    pub offset: i64,
    /// Continues with `?cursor=` (`null` on the last page).
    pub next_cursor: Option<String>,
}

/// An event's attempts, newest first (those numbered below `before`, when a cursor says so),
/// each with its rule executions; 404 if the event is unknown.
pub async fn list_attempts(
    state: &AppState,
    id: i64,
    before: Option<i64>,
    page: Page,
) -> ApiResult<AttemptList> {
    if state.store.get_event(id).await?.is_none() {
        return Err(event_not_found(id));
    }
    // One more than the page: whether another page follows.
    let mut attempts = state
        .store
        .list_attempts(id, before, page.plus_one())
        .await?;
    let more = attempts.len() as i64 > page.limit;
    attempts.truncate(page.limit as usize);
    let next_cursor = attempts
        .last()
        .filter(|_| more)
        .map(|a| a.attempt_no.to_string());
    Ok(AttemptList {
        count: attempts.len(),
        data: attempts.into_iter().map(AttemptOut::from).collect(),
        limit: page.limit,
        offset: page.offset,
        next_cursor,
    })
}
