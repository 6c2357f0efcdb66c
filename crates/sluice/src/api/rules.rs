//! The rules API: create, list, read, update (versioned), deactivate, version history, and
//! trying a condition before saving it. Handlers parse, then call `operations::rules`.

use super::events::query_or_400;
use super::extract::{IdPath, JsonBody};
use super::schema::{NewRuleIn, RulePatchIn, RuleTestIn};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::operations::query::parse_key_cursor;
use crate::operations::query::{parse_page, text_param, QueryErrors};
use crate::operations::rules::{
    self, DeactivatedRuleOut, RuleList, RuleOut, RuleTestOut, RuleVersionList, TestRuleIn,
};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use sluice_core::rule::{NewRule, RulePatch};
use sluice_store::RuleFilter;

/// Creates a rule (version 1).
#[utoipa::path(post, path = "/rules", tag = "rules",
    request_body(content = NewRuleIn, content_type = "application/json"),
    responses(
        (status = 201, description = "Created with version 1", body = RuleOut),
        (status = 400, description = "Invalid; details name the part at fault (e.g. condition.and[1], action.params.url)", body = ErrorBody),
    ))]
pub async fn create_rule(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<RuleOut>)> {
    let rule = NewRule::parse(&body, &state.settings.rule_limits()).map_err(ApiError::invalid)?;
    let created = rules::create_rule(&state, rule, caller.name()).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `?active&event_type&limit&offset` of `GET /rules`, as sent.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RulesQuery {
    /// true | false
    #[param(value_type = Option<bool>)]
    pub active: Option<String>,
    /// Event type.
    pub event_type: Option<String>,
    /// 1..500, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// Default 0.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Option<String>,
    /// A page's `next_cursor`: continues that listing.
    pub cursor: Option<String>,
}

/// Rules, newest first.
#[utoipa::path(get, path = "/rules", tag = "rules",
    params(RulesQuery),
    responses((status = 200, description = "Newest first", body = RuleList), (status = 400, description = "Bad filter", body = ErrorBody)))]
pub async fn list_rules(
    State(state): State<AppState>,
    query: Result<Query<RulesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<RuleList>> {
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
    let before_id = parse_key_cursor(query.cursor.as_deref(), page, &mut errors);
    let event_type = text_param("event_type", query.event_type.as_deref(), &mut errors);
    errors.into_result()?;
    let filter = RuleFilter {
        active,
        event_type,
        before_id,
    };
    Ok(Json(rules::list_rules(&state, &filter, page).await?))
}

/// One rule with its current version.
#[utoipa::path(get, path = "/rules/{id}", tag = "rules",
    params(("id" = i64, Path, description = "Rule id", minimum = 1)),
    responses((status = 200, description = "The rule", body = RuleOut), (status = 400, description = "Bad id", body = ErrorBody), (status = 404, description = "Unknown rule", body = ErrorBody)))]
pub async fn get_rule(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Json<RuleOut>> {
    Ok(Json(rules::get_rule(&state, id).await?))
}

/// Every version of a rule, newest first.
#[utoipa::path(get, path = "/rules/{id}/versions", tag = "rules",
    params(("id" = i64, Path, description = "Rule id", minimum = 1)),
    responses((status = 200, description = "Every version, newest first", body = RuleVersionList), (status = 404, description = "Unknown rule", body = ErrorBody)))]
pub async fn list_versions(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Json<RuleVersionList>> {
    Ok(Json(rules::list_versions(&state, id).await?))
}

/// Changes a rule; a changed condition or action writes a new version.
#[utoipa::path(put, path = "/rules/{id}", tag = "rules",
    params(("id" = i64, Path, description = "Rule id", minimum = 1)),
    request_body(content = RulePatchIn, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated; a new version when condition or action changed", body = RuleOut),
        (status = 400, description = "Invalid or empty change", body = ErrorBody),
        (status = 404, description = "Unknown rule", body = ErrorBody),
    ))]
pub async fn update_rule(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<RuleOut>> {
    let patch =
        RulePatch::parse(&body, &state.settings.rule_limits()).map_err(ApiError::invalid)?;
    Ok(Json(
        rules::update_rule(&state, id, patch, caller.name()).await?,
    ))
}

/// Deactivates a rule (kept for history).
#[utoipa::path(delete, path = "/rules/{id}", tag = "rules",
    params(("id" = i64, Path, description = "Rule id", minimum = 1)),
    responses((status = 200, description = "Deactivated (kept for history)", body = DeactivatedRuleOut), (status = 400, description = "Bad id", body = ErrorBody), (status = 404, description = "Unknown rule", body = ErrorBody)))]
pub async fn delete_rule(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> ApiResult<Json<DeactivatedRuleOut>> {
    Ok(Json(rules::deactivate_rule(&state, id).await?))
}

/// Tries a condition on a sample payload or on the last stored events of a type.
#[utoipa::path(post, path = "/rules/test", tag = "rules",
    request_body(content = RuleTestIn, content_type = "application/json"),
    responses((status = 200, description = "What the condition gives", body = RuleTestOut), (status = 400, description = "Invalid condition or request", body = ErrorBody)))]
pub async fn test_rule(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<RuleTestOut>> {
    let test = TestRuleIn::parse(&body, &state.settings.rule_limits())?;
    Ok(Json(rules::test_rule(&state, test).await?))
}
