//! The rules API: create, list, read, update (versioned), deactivate, version history, and
//! trying a condition before saving it.

use super::error::{ApiError, ApiResult};
use super::events::{query_or_400, Listing};
use super::extract::{IdPath, JsonBody};
use super::query::{parse_page, QueryErrors};
use crate::app::AppState;
use crate::bus::LiveMessage;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_core::event::{json_kind, EventType};
use sluice_core::logic::{truthy, Limits};
use sluice_core::rule::{Condition, NewRule, RulePatch};
use sluice_core::FieldError;
use sluice_store::{
    EventFilter, NewRuleRecord, Page, Rule, RuleChanges, RuleFilter, RuleVersion, VersionContent,
};

/// Most stored events `POST /rules/test` may try a condition against.
pub const MAX_TEST_EVENTS: i64 = 1000;
/// Matching events shown as samples by `POST /rules/test`.
const TEST_SAMPLES: usize = 10;

fn not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("rule {id} not found"))
}

fn announce(state: &AppState, rule: &Rule) {
    state.bus.publish(vec![LiveMessage::RuleChanged {
        rule_id: rule.id,
        version: rule.current_version.version,
    }]);
}

/// `POST /rules`.
pub async fn create_rule(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<Rule>)> {
    let rule = NewRule::parse(&body, &Limits::default()).map_err(ApiError::invalid)?;
    let record = NewRuleRecord {
        name: rule.name.as_str().to_owned(),
        event_type: rule.event_type.as_str().to_owned(),
        active: rule.active,
        condition: rule.body.condition.source().clone(),
        action: rule.body.action.source().clone(),
        action_hash: rule.body.action.content_hash(),
    };
    let created = state.store.create_rule(&record).await?;
    announce(&state, &created);
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Default, Deserialize)]
pub struct RulesQuery {
    pub active: Option<String>,
    pub event_type: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

/// `GET /rules`.
pub async fn list_rules(
    State(state): State<AppState>,
    query: Result<Query<RulesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Listing<Rule>>> {
    let query = query_or_400(query)?;
    let mut errors = QueryErrors::default();
    let active = match query.active.as_deref() {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            errors.push("active", format!("must be true or false, got '{other}'"));
            None
        }
    };
    let page = parse_page(query.limit.as_deref(), query.offset.as_deref(), &mut errors);
    errors.into_result()?;
    let filter = RuleFilter {
        active,
        event_type: query.event_type.filter(|t| !t.is_empty()),
    };
    let rules = state.store.list_rules(&filter, page).await?;
    Ok(Json(Listing::new(rules, page)))
}

/// `GET /rules/{id}`.
pub async fn get_rule(State(state): State<AppState>, IdPath(id): IdPath) -> ApiResult<Json<Rule>> {
    state
        .store
        .get_rule(id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

#[derive(Serialize)]
pub struct Versions {
    pub data: Vec<RuleVersion>,
    pub count: usize,
}

/// `GET /rules/{id}/versions`, newest first.
pub async fn list_versions(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Json<Versions>> {
    if state.store.get_rule(id).await?.is_none() {
        return Err(not_found(id));
    }
    let data = state.store.list_rule_versions(id).await?;
    Ok(Json(Versions {
        count: data.len(),
        data,
    }))
}

/// `PUT /rules/{id}`: name, event type and active change in place; a changed condition or
/// action writes version n+1 (versions are never modified).
pub async fn update_rule(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Rule>> {
    let patch = RulePatch::parse(&body, &Limits::default()).map_err(ApiError::invalid)?;
    if patch.is_empty() {
        return Err(ApiError::validation(
            "nothing to change: send at least one of name, event_type, condition, action, active",
        ));
    }
    let current = state
        .store
        .get_rule(id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let version = &current.current_version;
    let condition_changed = patch
        .condition
        .as_ref()
        .is_some_and(|c| c.source() != &version.condition);
    let action_changed = patch
        .action
        .as_ref()
        .is_some_and(|a| a.content_hash() != version.action_hash);
    let new_version = (condition_changed || action_changed).then(|| VersionContent {
        condition: patch
            .condition
            .as_ref()
            .map(|c| c.source().clone())
            .unwrap_or_else(|| version.condition.clone()),
        action: patch
            .action
            .as_ref()
            .map(|a| a.source().clone())
            .unwrap_or_else(|| version.action.clone()),
        action_hash: patch
            .action
            .as_ref()
            .map(|a| a.content_hash())
            .unwrap_or_else(|| version.action_hash.clone()),
    });
    let changes = RuleChanges {
        name: patch.name.map(|n| n.as_str().to_owned()),
        event_type: patch.event_type.map(|t| t.as_str().to_owned()),
        active: patch.active,
        new_version,
    };
    let updated = state
        .store
        .update_rule(id, &changes)
        .await?
        .ok_or_else(|| not_found(id))?;
    announce(&state, &updated);
    Ok(Json(updated))
}

/// `DELETE /rules/{id}`: deactivates (history keeps pointing at it).
pub async fn delete_rule(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Json<Value>> {
    let changes = RuleChanges {
        active: Some(false),
        ..RuleChanges::default()
    };
    let rule = state
        .store
        .update_rule(id, &changes)
        .await?
        .ok_or_else(|| not_found(id))?;
    announce(&state, &rule);
    Ok(Json(json!({ "message": "Rule deactivated", "rule": rule })))
}

/// `POST /rules/test`: `{condition, data}` → `{result, matched}`, or
/// `{condition, event_type, last}` → how many of the last N events of that type match.
pub async fn test_rule(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<Value>> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::invalid(vec![FieldError::new(
            "",
            format!("body must be a JSON object, got {}", json_kind(&body)),
        )]));
    };
    let condition = match object.get("condition") {
        Some(condition) => Condition::parse(condition, &Limits::default())
            .map_err(|e| ApiError::invalid(vec![e]))?,
        None => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "condition",
                "is required",
            )]))
        }
    };
    if let Some(data) = object.get("data") {
        let result = condition.logic().evaluate(data).map_err(|e| {
            ApiError::invalid(vec![FieldError::new(
                "condition",
                format!("evaluation failed: {e}"),
            )])
        })?;
        return Ok(Json(
            json!({ "result": result, "matched": truthy(&result) }),
        ));
    }
    let mut errors = Vec::new();
    let event_type = match object.get("event_type") {
        Some(Value::String(t)) => EventType::parse(t)
            .map_err(|e| errors.push(FieldError::new("event_type", e.message)))
            .ok(),
        Some(other) => {
            errors.push(FieldError::new(
                "event_type",
                format!("must be a string, got {}", json_kind(other)),
            ));
            None
        }
        None => {
            errors.push(FieldError::new(
                "",
                "send either data, or event_type with last",
            ));
            None
        }
    };
    let last = match object.get("last") {
        None => 100,
        Some(value) => match value.as_i64() {
            Some(n) if (1..=MAX_TEST_EVENTS).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "last",
                    format!("must be an integer from 1 to {MAX_TEST_EVENTS}"),
                ));
                0
            }
        },
    };
    let Some(event_type) = event_type.filter(|_| errors.is_empty()) else {
        return Err(ApiError::invalid(errors));
    };
    let filter = EventFilter {
        event_type: Some(event_type.as_str().to_owned()),
        ..EventFilter::default()
    };
    let events = state
        .store
        .list_events(
            &filter,
            Page {
                limit: last,
                offset: 0,
            },
        )
        .await?;
    let mut matched = 0;
    let mut failed = 0;
    let mut samples = Vec::new();
    for event in &events {
        match condition.logic().evaluate(&event.payload) {
            Ok(result) if truthy(&result) => {
                matched += 1;
                if samples.len() < TEST_SAMPLES {
                    samples.push(json!({"event_id": event.id, "external_id": event.external_id, "result": result, "data": event.payload}));
                }
            }
            Ok(_) => {}
            Err(error) => {
                failed += 1;
                if samples.len() < TEST_SAMPLES {
                    samples.push(json!({"event_id": event.id, "external_id": event.external_id, "error": error.to_string()}));
                }
            }
        }
    }
    Ok(Json(json!({
        "event_type": event_type.as_str(),
        "checked": events.len(),
        "matched": matched,
        "errors": failed,
        "samples": samples,
    })))
}
