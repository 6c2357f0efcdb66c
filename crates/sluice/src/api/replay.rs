//! The replay API: one event (or a dry run of it), a batch by ids or filter, and
//! requeue-stuck. Handlers parse the body, then call `operations::replay`.

use super::extract::{IdPath, JsonBody, OptionalJsonBody};
use super::schema::{ReplayBatchIn, ReplayIn, RequeueIn};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::operations::query::{parse_date_range, QueryErrors};
use crate::operations::replay::{
    self, CancelOut, ReplayBatchOut, ReplayOut, ReplaySelection, RequeueOut,
    DEFAULT_REPLAY_FILTER_LIMIT, DEFAULT_STUCK_SECONDS, MAX_REPLAY_FILTER_LIMIT, MAX_REPLAY_IDS,
    MAX_STUCK_SECONDS,
};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{Map, Value};
use sluice_core::event::{json_kind, EventState, ReplayRules};
use sluice_core::FieldError;
use sluice_store::EventFilter;

fn parse_rules(object: &Map<String, Value>, errors: &mut Vec<FieldError>) -> ReplayRules {
    match object.get("rules") {
        None | Some(Value::Null) => ReplayRules::Current,
        Some(Value::String(text)) => text.parse().unwrap_or_else(|_| {
            errors.push(FieldError::new(
                "rules",
                format!("unknown replay rules '{text}' (expected current or original)"),
            ));
            ReplayRules::Current
        }),
        Some(other) => {
            errors.push(FieldError::new(
                "rules",
                format!(
                    "must be \"current\" or \"original\", got {}",
                    json_kind(other)
                ),
            ));
            ReplayRules::Current
        }
    }
}

fn body_object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| {
        ApiError::invalid(vec![FieldError::new(
            "",
            format!("body must be a JSON object, got {}", json_kind(body)),
        )])
    })
}

/// Cancels a pending event that waits: scheduled (`process_at`, `delay_ms`), or for a retry
/// or a receiver. It ends `failed`, saying it was cancelled; a replay can still run it.
#[utoipa::path(post, path = "/events/{id}/cancel", tag = "replay",
    params(("id" = i64, Path, description = "Event id", minimum = 1)),
    responses(
        (status = 200, description = "Cancelled", body = CancelOut),
        (status = 400, description = "Bad id", body = ErrorBody),
        (status = 404, description = "Unknown event", body = ErrorBody),
        (status = 409, description = "The event is being processed or already settled", body = ErrorBody),
    ))]
pub async fn cancel_event(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> ApiResult<Json<CancelOut>> {
    Ok(Json(replay::cancel(&state, id, caller.name()).await?))
}

/// Replays a processed or failed event, or (`dry_run`) says what a replay would do.
#[utoipa::path(post, path = "/events/{id}/replay", tag = "replay",
    params(("id" = i64, Path, description = "Event id", minimum = 1)),
    request_body(content = Option<ReplayIn>, content_type = "application/json"),
    responses(
        (status = 200, description = "Queued for replay (or, with dry_run, what would happen)", body = ReplayOut),
        (status = 400, description = "Bad id or options", body = ErrorBody),
        (status = 404, description = "Unknown event", body = ErrorBody),
        (status = 409, description = "The event is not processed or failed", body = ErrorBody),
    ))]
pub async fn replay_event(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Json<ReplayOut>> {
    let body = body.unwrap_or_else(|| Value::Object(Map::new()));
    let object = body_object(&body)?;
    let mut errors = Vec::new();
    let rules = parse_rules(object, &mut errors);
    let dry_run = match object.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            errors.push(FieldError::new(
                "dry_run",
                format!("must be true or false, got {}", json_kind(other)),
            ));
            false
        }
    };
    for key in object.keys() {
        if !matches!(key.as_str(), "rules" | "dry_run") {
            errors.push(FieldError::new(
                key.as_str(),
                "is not a replay option (expected rules, dry_run)",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let answer = if dry_run {
        replay::dry_run(&state, id, rules).await?
    } else {
        replay::replay(&state, id, rules, caller.name()).await?
    };
    Ok(Json(answer))
}

/// Replays events by ids, or by filter.
#[utoipa::path(post, path = "/events/replay-batch", tag = "replay",
    request_body(content = ReplayBatchIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Processed or failed events among those asked for are queued", body = ReplayBatchOut),
        (status = 400, description = "Neither or both of event_ids and filter, or bad values", body = ErrorBody),
    ))]
pub async fn replay_batch(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<ReplayBatchOut>> {
    let object = body_object(&body)?;
    let mut errors = Vec::new();
    let rules = parse_rules(object, &mut errors);
    let selection = match (object.get("event_ids"), object.get("filter")) {
        (Some(ids), None) => ReplaySelection::Ids(parse_ids(ids, &mut errors)),
        (None, Some(filter)) => {
            let filter = parse_replay_filter(filter, &mut errors);
            let limit = match object.get("limit") {
                None => DEFAULT_REPLAY_FILTER_LIMIT,
                Some(value) => match value.as_i64() {
                    Some(n) if (1..=MAX_REPLAY_FILTER_LIMIT).contains(&n) => n,
                    _ => {
                        errors.push(FieldError::new(
                            "limit",
                            format!("must be an integer from 1 to {MAX_REPLAY_FILTER_LIMIT}"),
                        ));
                        0
                    }
                },
            };
            ReplaySelection::Matching { filter, limit }
        }
        _ => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "",
                "send either event_ids (1..100 ids) or filter (with an optional limit)",
            )]))
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    Ok(Json(
        replay::replay_batch(&state, &selection, rules, caller.name()).await?,
    ))
}

fn parse_ids(value: &Value, errors: &mut Vec<FieldError>) -> Vec<i64> {
    let Some(items) = value.as_array() else {
        errors.push(FieldError::new(
            "event_ids",
            "must be an array of event ids",
        ));
        return Vec::new();
    };
    if items.is_empty() || items.len() > MAX_REPLAY_IDS {
        errors.push(FieldError::new(
            "event_ids",
            format!("must hold 1 to {MAX_REPLAY_IDS} ids, got {}", items.len()),
        ));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_i64() {
            Some(id) if id > 0 => ids.push(id),
            _ => errors.push(FieldError::new(
                format!("event_ids[{i}]"),
                "must be a positive integer",
            )),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn parse_replay_filter(value: &Value, errors: &mut Vec<FieldError>) -> EventFilter {
    let Some(object) = value.as_object() else {
        errors.push(FieldError::new(
            "filter",
            "must be an object {state?, type?, start_date?, end_date?}",
        ));
        return EventFilter::default();
    };
    let text = |key: &str, errors: &mut Vec<FieldError>| match object.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.contains('\0') => {
            errors.push(FieldError::new(
                format!("filter.{key}"),
                "must not contain U+0000 (NUL)",
            ));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errors.push(FieldError::new(
                format!("filter.{key}"),
                format!("must be a string, got {}", json_kind(other)),
            ));
            None
        }
    };
    let state = text("state", errors).and_then(|s| match s.parse::<EventState>() {
        Ok(state) if state.is_terminal() => Some(state),
        _ => {
            errors.push(FieldError::new(
                "filter.state",
                "must be processed or failed (only those can be replayed)",
            ));
            None
        }
    });
    let event_type = text("type", errors);
    let start = text("start_date", errors);
    let end = text("end_date", errors);
    let mut date_errors = QueryErrors::default();
    let (start, end) = parse_date_range(start.as_deref(), end.as_deref(), &mut date_errors);
    errors.extend(
        date_errors
            .0
            .into_iter()
            .map(|e| FieldError::new(format!("filter.{}", e.path), e.message)),
    );
    for key in object.keys() {
        if !matches!(key.as_str(), "state" | "type" | "start_date" | "end_date") {
            errors.push(FieldError::new(
                format!("filter.{key}"),
                "is not a filter (expected state, type, start_date, end_date)",
            ));
        }
    }
    EventFilter {
        state,
        event_type,
        external_id: None,
        start,
        end,
        before: None,
    }
}

/// Gives back `processing` events untouched for a while.
#[utoipa::path(post, path = "/events/requeue-stuck", tag = "replay",
    request_body(content = Option<RequeueIn>, content_type = "application/json"),
    responses(
        (status = 200, description = "Processing events given back to the queue", body = RequeueOut),
        (status = 400, description = "Bad value", body = ErrorBody),
    ))]
pub async fn requeue_stuck(
    State(state): State<AppState>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Json<RequeueOut>> {
    let body = body.unwrap_or_else(|| Value::Object(Map::new()));
    let object = body_object(&body)?;
    let seconds = match object.get("older_than_seconds") {
        None | Some(Value::Null) => DEFAULT_STUCK_SECONDS,
        Some(value) => match value.as_i64() {
            Some(n) if (1..=MAX_STUCK_SECONDS).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(vec![FieldError::new(
                    "older_than_seconds",
                    format!("must be an integer from 1 to {MAX_STUCK_SECONDS} (a year)"),
                )]))
            }
        },
    };
    Ok(Json(replay::requeue_stuck(&state, seconds).await?))
}
