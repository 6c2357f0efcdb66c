//! Rules: create, list, read, update (a changed condition or action is a new immutable
//! version), deactivate, version history, and trying a condition before saving it.

use crate::bus::Committed;
use crate::error::{ApiError, ApiResult};
use crate::evaluation;
use crate::operations::events;
use crate::state::AppState;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sluice_core::action::Action;
use sluice_core::event::{json_kind, EventType};
use sluice_core::logic::{truthy, Explanation, Limits, Logic};
use sluice_core::rule::{Condition, NewRule, RulePatch};
use sluice_core::FieldError;
use sluice_store::{
    EventFilter, NewRuleRecord, Page, Rule, RuleChanges, RuleFilter, RuleVersion, VersionContent,
};
use utoipa::ToSchema;

/// Most stored events `POST /rules/test` may try a condition against.
pub const MAX_TEST_EVENTS: i64 = 1000;
/// Stored events tried when a test names no `last`.
pub const DEFAULT_TEST_EVENTS: i64 = 100;
/// Matching events shown as samples by `POST /rules/test`.
const TEST_SAMPLES: usize = 10;

/// One immutable version of a rule's condition and action.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RuleVersionOut {
    pub id: i64,
    pub rule_id: i64,
    /// 1, 2, … in the order they were written.
    pub version: i64,
    /// A JSONLogic expression evaluated against the event's data.
    #[schema(value_type = Object)]
    pub condition: Value,
    /// `{"type": <an action type>, "params": {...}}` (see `ActionIn`); strings in params may
    /// hold `{{ external_id }}`, `{{ type }}`, `{{ event_id }}`, `{{ data.path }}`.
    #[schema(value_type = Object)]
    pub action: Value,
    pub created_at: DateTime<Utc>,
    /// The name of the API key that wrote this version; `null` without access control.
    pub created_by: Option<String>,
}

impl From<RuleVersion> for RuleVersionOut {
    fn from(v: RuleVersion) -> Self {
        RuleVersionOut {
            id: v.id,
            rule_id: v.rule_id,
            version: v.version,
            condition: v.condition,
            // Credentials in a URL are never shown.
            action: sluice_core::action::masked(&v.action),
            created_at: v.created_at,
            created_by: v.created_by,
        }
    }
}

/// A rule with its current version.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RuleOut {
    pub id: i64,
    pub name: String,
    pub event_type: String,
    pub active: bool,
    pub current_version_id: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub current_version: RuleVersionOut,
}

impl From<Rule> for RuleOut {
    fn from(r: Rule) -> Self {
        RuleOut {
            id: r.id,
            name: r.name,
            event_type: r.event_type,
            active: r.active,
            current_version_id: r.current_version_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
            current_version: r.current_version.into(),
        }
    }
}

impl RuleOut {
    /// The action's type as stored.
    pub fn action_type(&self) -> &str {
        self.current_version.action["type"].as_str().unwrap_or("?")
    }
}

/// A page of rules, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleList {
    pub data: Vec<RuleOut>,
    pub count: usize,
    pub limit: i64,
    pub offset: i64,
    /// Continues with `?cursor=` (`null` on the last page).
    pub next_cursor: Option<String>,
}

/// Every version of a rule, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleVersionList {
    pub data: Vec<RuleVersionOut>,
    pub count: usize,
}

/// The answer to `DELETE /rules/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeactivatedRuleOut {
    pub message: String,
    pub rule: RuleOut,
}

fn not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("rule {id} not found"))
}

fn announce(state: &AppState, rule: &Rule) {
    state.bus.announce(Committed::RuleChanged {
        rule_id: rule.id,
        version: rule.current_version.version,
    });
}

/// Creates a rule at version 1, written `by` the named key.
pub async fn create_rule(state: &AppState, rule: NewRule, by: Option<&str>) -> ApiResult<RuleOut> {
    let record = NewRuleRecord {
        name: rule.name.as_str().to_owned(),
        event_type: rule.event_type.as_str().to_owned(),
        active: rule.active,
        condition: rule.body.condition.source().clone(),
        action: rule.body.action.source().clone(),
        action_hash: rule.body.action.content_hash(),
        created_by: by.map(str::to_owned),
    };
    let created = state.store.create_rule(&record).await?;
    announce(state, &created);
    Ok(created.into())
}

/// Rules matching the filter, newest first.
pub async fn list_rules(state: &AppState, filter: &RuleFilter, page: Page) -> ApiResult<RuleList> {
    // One more than the page: whether another page follows.
    let mut rules = state.store.list_rules(filter, page.plus_one()).await?;
    let more = rules.len() as i64 > page.limit;
    rules.truncate(page.limit as usize);
    let next_cursor = rules.last().filter(|_| more).map(|r| r.id.to_string());
    Ok(RuleList {
        count: rules.len(),
        data: rules.into_iter().map(RuleOut::from).collect(),
        limit: page.limit,
        offset: page.offset,
        next_cursor,
    })
}

/// One rule; 404 if unknown.
pub async fn get_rule(state: &AppState, id: i64) -> ApiResult<RuleOut> {
    state
        .store
        .get_rule(id)
        .await?
        .map(RuleOut::from)
        .ok_or_else(|| not_found(id))
}

/// Every version of a rule, newest first; 404 if the rule is unknown.
pub async fn list_versions(state: &AppState, id: i64) -> ApiResult<RuleVersionList> {
    if state.store.get_rule(id).await?.is_none() {
        return Err(not_found(id));
    }
    let data: Vec<RuleVersionOut> = state
        .store
        .list_rule_versions(id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(RuleVersionList {
        count: data.len(),
        data,
    })
}

/// Name, event type and active change in place; a condition or action that differs from the
/// current version writes version n+1 (versions are never modified), recorded as written
/// `by` the named key. An empty patch is a 400.
pub async fn update_rule(
    state: &AppState,
    id: i64,
    patch: RulePatch,
    by: Option<&str>,
) -> ApiResult<RuleOut> {
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
    let mut patch = patch;
    patch.action = patch
        .action
        .map(|action| action.restore_credentials(&version.action));
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
        created_by: by.map(str::to_owned),
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
    announce(state, &updated);
    Ok(updated.into())
}

/// Activates or deactivates a rule (history keeps pointing at it either way).
pub async fn set_active(state: &AppState, id: i64, active: bool) -> ApiResult<RuleOut> {
    let changes = RuleChanges {
        active: Some(active),
        ..RuleChanges::default()
    };
    let rule = state
        .store
        .update_rule(id, &changes)
        .await?
        .ok_or_else(|| not_found(id))?;
    announce(state, &rule);
    Ok(rule.into())
}

/// Soft delete: deactivates.
pub async fn deactivate_rule(state: &AppState, id: i64) -> ApiResult<DeactivatedRuleOut> {
    Ok(DeactivatedRuleOut {
        message: "Rule deactivated".to_owned(),
        rule: set_active(state, id, false).await?,
    })
}

/// What a rule test tries the condition against.
#[derive(Debug, Clone)]
pub enum TestTarget {
    /// One sample payload, whether to explain the verdict, and an action to preview.
    Data {
        data: Value,
        explain: bool,
        action: Option<Box<Action>>,
    },
    /// The last `last` stored events of a type.
    Stored { event_type: EventType, last: i64 },
}

/// A parsed `POST /rules/test` body.
#[derive(Debug, Clone)]
pub struct TestRuleIn {
    pub condition: Condition,
    pub target: TestTarget,
}

impl TestRuleIn {
    /// `{condition, data}` or `{condition, event_type, last?}`; a 400 names each bad field.
    pub fn parse(body: &Value, limits: &Limits) -> ApiResult<Self> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::invalid(vec![FieldError::new(
                "",
                format!("body must be a JSON object, got {}", json_kind(body)),
            )]));
        };
        let condition = match object.get("condition") {
            Some(condition) => {
                Condition::parse(condition, limits).map_err(|e| ApiError::invalid(vec![e]))?
            }
            None => {
                return Err(ApiError::invalid(vec![FieldError::new(
                    "condition",
                    "is required",
                )]))
            }
        };
        let explain = match object.get("explain") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(explain)) => *explain,
            Some(other) => {
                return Err(ApiError::invalid(vec![FieldError::new(
                    "explain",
                    format!("must be true or false, got {}", json_kind(other)),
                )]))
            }
        };
        if let Some(data) = object.get("data") {
            let action = match object.get("action") {
                None | Some(Value::Null) => None,
                Some(action) => Some(Box::new(Action::parse(action).map_err(ApiError::invalid)?)),
            };
            return Ok(TestRuleIn {
                condition,
                target: TestTarget::Data {
                    data: data.clone(),
                    explain,
                    action,
                },
            });
        }
        let mut errors = Vec::new();
        if explain {
            errors.push(FieldError::new(
                "explain",
                "explains a test with data; stored events are explained one by one \
                 (GET /events/{id}/executions/{execution_id}/explain)",
            ));
        }
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
            None => DEFAULT_TEST_EVENTS,
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
        match event_type {
            Some(event_type) if errors.is_empty() => Ok(TestRuleIn {
                condition,
                target: TestTarget::Stored { event_type, last },
            }),
            _ => Err(ApiError::invalid(errors)),
        }
    }
}

/// A condition's verdict on one sample payload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SampleTestOut {
    /// What the condition evaluated to.
    #[schema(value_type = Object)]
    pub result: Value,
    /// Whether that result is truthy (the rule would run its action).
    pub matched: bool,
    /// With `explain`: every node of the condition with its value (`op`, `value`, `args`;
    /// `var` nodes with their path; `skipped` where evaluation never reached; loops with
    /// their first `items` and a `count`). Under 64 KiB whatever the data.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub explanation: Option<Box<Explanation>>,
    /// With `explain`: one line naming the comparisons that decided, with their values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// With `action`: what it would send for this data — every template filled in, every
    /// `{"$logic": …}` transform computed — or `{"error": …}` saying which transform failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub action: Option<Value>,
    /// With `action` and `explain`, if it has `{"$logic": …}` transforms: how each was
    /// computed for this data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transforms: Option<Vec<events::TransformOut>>,
}

/// One stored event a test tried: matched (with its result and data) or failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TestSampleOut {
    pub event_id: i64,
    pub external_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A condition's verdict on the last stored events of a type.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoredTestOut {
    pub event_type: String,
    /// Events tried.
    pub checked: usize,
    pub matched: usize,
    /// Events on which evaluation failed.
    pub errors: usize,
    /// Up to 10 matching or failing events.
    pub samples: Vec<TestSampleOut>,
}

/// The answer to `POST /rules/test`: a sample's verdict, or stored events'.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RuleTestOut {
    Sample(SampleTestOut),
    Stored(StoredTestOut),
}

/// Tries a condition before it is saved.
pub async fn test_rule(state: &AppState, test: TestRuleIn) -> ApiResult<RuleTestOut> {
    let logic = test.condition.logic().clone();
    let (event_type, last) = match test.target {
        TestTarget::Data {
            data,
            explain,
            action,
        } => {
            let preview = match &action {
                Some(action) => {
                    Some(crate::rule_pass::preview(action, data.clone(), logic.limits()).await)
                }
                None => None,
            };
            let failed = |e: sluice_core::logic::EvalError| {
                ApiError::invalid(vec![FieldError::new(
                    "condition",
                    format!("evaluation failed: {e}"),
                )])
            };
            if explain {
                let explained = evaluation::explain(&logic, &data).await.map_err(failed)?;
                let transforms = match &action {
                    Some(action) => events::TransformOut::list(
                        crate::rule_pass::explain_sample_transforms(
                            action,
                            data.clone(),
                            logic.limits(),
                        )
                        .await,
                    ),
                    None => None,
                };
                return Ok(RuleTestOut::Sample(SampleTestOut {
                    matched: explained.matched,
                    result: explained.result,
                    explanation: Some(Box::new(explained.tree)),
                    summary: Some(explained.summary),
                    action: preview,
                    transforms,
                }));
            }
            let result = evaluation::evaluate(&logic, &data).await.map_err(failed)?;
            return Ok(RuleTestOut::Sample(SampleTestOut {
                matched: truthy(&result),
                result,
                explanation: None,
                summary: None,
                action: preview,
                transforms: None,
            }));
        }
        TestTarget::Stored { event_type, last } => (event_type, last),
    };
    let filter = EventFilter {
        event_type: Some(event_type.as_str().to_owned()),
        ..EventFilter::default()
    };
    let headers = state
        .store
        .list_event_headers(
            &filter,
            Page {
                limit: last,
                offset: 0,
            },
        )
        .await?;
    // Payloads in chunks of at most a page's bytes, each tried on the blocking pool: a test
    // over a thousand large events never holds them all, nor runs on an async thread.
    let mut tried = Tried::default();
    let mut rest = &headers[..];
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(events::fitting(rest, events::MAX_PAGE_BYTES));
        rest = after;
        let ids: Vec<i64> = chunk.iter().map(|h| h.id).collect();
        let mut payloads = state.store.event_payloads(&ids).await?;
        let stored: Vec<StoredPayload> = chunk
            .iter()
            .filter_map(|h| {
                Some(StoredPayload {
                    event_id: h.id,
                    external_id: h.external_id.clone(),
                    bytes: usize::try_from(h.payload_bytes).unwrap_or(usize::MAX),
                    payload: payloads.remove(&h.id)?,
                })
            })
            .collect();
        let logic = logic.clone();
        tried = evaluation::off_the_runtime(move || tried.on(&logic, stored))
            .await
            .map_err(|e| ApiError::invalid(vec![FieldError::new("condition", e.to_string())]))?;
    }
    Ok(RuleTestOut::Stored(StoredTestOut {
        event_type: event_type.into_string(),
        checked: headers.len(),
        matched: tried.matched,
        errors: tried.failed,
        samples: tried.samples,
    }))
}

/// Payload bytes the samples of one test may quote; later samples come without `data`.
const SAMPLE_DATA_BYTES: usize = 1024 * 1024;

/// One stored event a test tries.
struct StoredPayload {
    event_id: i64,
    external_id: String,
    bytes: usize,
    payload: Value,
}

/// What a test over stored events found so far.
#[derive(Default)]
struct Tried {
    matched: usize,
    failed: usize,
    samples: Vec<TestSampleOut>,
    sample_bytes: usize,
}

impl Tried {
    fn on(mut self, logic: &Logic, stored: Vec<StoredPayload>) -> Tried {
        for StoredPayload {
            event_id,
            external_id,
            bytes,
            payload,
        } in stored
        {
            let sample = match logic.evaluate(&payload) {
                Ok(result) if truthy(&result) => {
                    self.matched += 1;
                    let quoted = self.sample_bytes.saturating_add(bytes) <= SAMPLE_DATA_BYTES;
                    if quoted && self.samples.len() < TEST_SAMPLES {
                        self.sample_bytes += bytes;
                    }
                    TestSampleOut {
                        event_id,
                        external_id,
                        result: Some(result),
                        data: quoted.then_some(payload),
                        error: None,
                    }
                }
                Ok(_) => continue,
                Err(error) => {
                    self.failed += 1;
                    TestSampleOut {
                        event_id,
                        external_id,
                        result: None,
                        data: None,
                        error: Some(error.to_string()),
                    }
                }
            };
            if self.samples.len() < TEST_SAMPLES {
                self.samples.push(sample);
            }
        }
        self
    }
}
