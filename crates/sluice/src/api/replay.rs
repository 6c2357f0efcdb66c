//! Replay: send processed or failed events back through the rules — one, a list, a filter —
//! or preview what a replay would do (`dry_run`). Every replay is a new attempt; history is
//! never rewritten.

use super::error::{ApiError, ApiResult};
use super::extract::{IdPath, JsonBody, OptionalJsonBody};
use super::query::{parse_date_range, QueryErrors};
use crate::app::AppState;
use crate::bus::LiveMessage;
use crate::worker::rules::CompiledRule;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};
use sluice_core::event::{json_kind, EventState, ExecutionResult};
use sluice_core::idempotency::idempotency_key;
use sluice_core::logic::Limits;
use sluice_core::FieldError;
use sluice_store::{Event, EventFilter, Release, ReplayRefusal, ReplayRules};

pub const MAX_REPLAY_IDS: usize = 100;
pub const MAX_REPLAY_FILTER_LIMIT: i64 = 10_000;
/// Default age of `processing` events that `requeue-stuck` gives back.
pub const DEFAULT_STUCK_SECONDS: i64 = 300;

const CURRENT_WARNING: &str = "replays evaluate each rule's current version, so the outcome may differ from the original processing; use \"rules\": \"original\" to re-run the versions first evaluated";

fn parse_rules(object: &Map<String, Value>, errors: &mut Vec<FieldError>) -> ReplayRules {
    match object.get("rules") {
        None | Some(Value::Null) => ReplayRules::Current,
        Some(Value::String(text)) => text.parse().unwrap_or_else(|message: String| {
            errors.push(FieldError::new("rules", message));
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

fn queued(state: &AppState, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    state.bus.publish(
        events
            .iter()
            .map(|e| LiveMessage::EventUpdated {
                event_id: e.id,
                external_id: e.external_id.clone(),
                event_type: e.event_type.clone(),
                state: e.state,
                attempt_id: None,
                status: None,
                finished_at: None,
                duration_ms: None,
            })
            .collect(),
    );
    state.bus.wake_workers();
}

fn refusal(id: i64, refusal: ReplayRefusal) -> ApiError {
    match refusal {
        ReplayRefusal::NotFound => ApiError::not_found(format!("event {id} not found")),
        ReplayRefusal::NotTerminal(state) => ApiError::conflict(format!(
            "event {id} is {state}; only processed or failed events can be replayed"
        )),
    }
}

/// `POST /events/{id}/replay`.
pub async fn replay_event(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Json<Value>> {
    let body = body.unwrap_or_else(|| json!({}));
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
    let warning = (rules == ReplayRules::Current).then_some(CURRENT_WARNING);
    if dry_run {
        let event = state
            .store
            .get_event(id)
            .await?
            .ok_or_else(|| refusal(id, ReplayRefusal::NotFound))?;
        if !event.state.is_terminal() {
            return Err(refusal(id, ReplayRefusal::NotTerminal(event.state)));
        }
        let preview = preview(&state, &event, rules).await?;
        return Ok(Json(json!({
            "message": "Dry run: nothing was changed and no action ran",
            "dry_run": true,
            "rules": rules,
            "event": event,
            "warning": warning,
            "results": preview,
        })));
    }
    let event = state
        .store
        .replay_event(id, rules)
        .await?
        .map_err(|r| refusal(id, r))?;
    queued(&state, std::slice::from_ref(&event));
    metrics::counter!("sluice_replays_total").increment(1);
    Ok(Json(json!({
        "message": "Event queued for replay",
        "rules": rules,
        "event": event,
        "warning": warning,
    })))
}

/// What each rule would do with the event: `apply`, `skip`, `dedupe` or `fail` (with why).
async fn preview(state: &AppState, event: &Event, rules: ReplayRules) -> ApiResult<Vec<Value>> {
    let limits = Limits::default();
    let snapshots = match rules {
        ReplayRules::Current => state
            .store
            .active_rules()
            .await?
            .into_iter()
            .filter(|r| r.event_type == event.event_type)
            .collect(),
        ReplayRules::Original => state.store.original_rules(event.id).await?,
    };
    let mut results = Vec::with_capacity(snapshots.len());
    for snapshot in &snapshots {
        let rule = CompiledRule::compile(snapshot, &limits);
        let base = json!({
            "rule_id": rule.rule_id,
            "rule_name": rule.rule_name,
            "rule_version_id": rule.version_id,
            "rule_version": rule.version,
        });
        let mut entry = base.as_object().cloned().unwrap_or_default();
        let (would, error) = match &rule.body {
            Err(message) => ("fail", Some(message.clone())),
            Ok(body) => match body.condition.logic().matches(&event.payload) {
                Err(e) => ("fail", Some(format!("condition: {e}"))),
                Ok(false) => ("skip", None),
                Ok(true) if body.action.is_idempotent() => ("apply", None),
                Ok(true) => {
                    let key = idempotency_key(event.id, rule.rule_id, &body.action.content_hash());
                    let prior = state
                        .store
                        .prior_executions(std::slice::from_ref(&key))
                        .await?;
                    entry.insert("idempotency_key".into(), json!(key));
                    match prior.get(&key) {
                        Some(ExecutionResult::Applied) => ("dedupe", None),
                        _ => ("apply", None),
                    }
                }
            },
        };
        entry.insert("would".into(), json!(would));
        entry.insert("error".into(), json!(error));
        results.push(Value::Object(entry));
    }
    Ok(results)
}

/// `POST /events/replay-batch`: `{"event_ids": [...]}` or `{"filter": {...}, "limit": n}`.
pub async fn replay_batch(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let object = body_object(&body)?;
    let mut errors = Vec::new();
    let rules = parse_rules(object, &mut errors);
    let (requested, events) = match (object.get("event_ids"), object.get("filter")) {
        (Some(ids), None) => {
            let ids = parse_ids(ids, &mut errors);
            if !errors.is_empty() {
                return Err(ApiError::invalid(errors));
            }
            let events = state.store.replay_events(&ids, rules).await?;
            (ids.len(), events)
        }
        (None, Some(filter)) => {
            let filter = parse_replay_filter(filter, &mut errors);
            let limit = match object.get("limit") {
                None => 1000,
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
            if !errors.is_empty() {
                return Err(ApiError::invalid(errors));
            }
            let events = state.store.replay_matching(&filter, limit, rules).await?;
            (events.len(), events)
        }
        _ => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "",
                "send either event_ids (1..100 ids) or filter (with an optional limit)",
            )]))
        }
    };
    queued(&state, &events);
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    Ok(Json(json!({
        "message": format!("{} of {requested} events queued for replay", ids.len()),
        "requested": requested,
        "replayed": ids.len(),
        "rules": rules,
        "events": ids,
    })))
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
    }
}

/// `POST /events/requeue-stuck`: gives back `processing` events untouched for a while (with
/// leases this is rarely needed: expired leases are released automatically).
pub async fn requeue_stuck(
    State(state): State<AppState>,
    OptionalJsonBody(body): OptionalJsonBody,
) -> ApiResult<Json<Value>> {
    let body = body.unwrap_or_else(|| json!({}));
    let object = body_object(&body)?;
    let seconds = match object.get("older_than_seconds") {
        None | Some(Value::Null) => DEFAULT_STUCK_SECONDS,
        Some(value) => match value.as_i64() {
            Some(n) if n >= 0 => n,
            _ => {
                return Err(ApiError::invalid(vec![FieldError::new(
                    "older_than_seconds",
                    "must be a non-negative integer",
                )]))
            }
        },
    };
    let max_attempts = i64::from(state.settings.max_attempts);
    let changes = state
        .store
        .release_events(Release::OlderThan(seconds), max_attempts)
        .await?;
    crate::worker::publish_releases(&state.bus, &changes);
    let ids: Vec<i64> = changes.iter().map(|c| c.event_id).collect();
    Ok(Json(json!({ "requeued": ids.len(), "events": ids })))
}
