//! `/console/rules`: the list; a rule with its version history (diffs between versions) and a
//! way to try it; the create/edit form whose validation errors appear next to their field.

use super::events::{known_types, WhyView};
use super::view::{diff_lines, pretty, query_string, DiffLine, When};
use super::{render, ConsoleResult, FieldErrors, Flash, Layout, Section, Viewer};
use crate::api::extract::IdPath;
use crate::error::{ApiError, ErrorName};
use crate::operations::events as event_ops;
use crate::operations::rules::{
    self as rule_ops, RuleOut, RuleTestOut, RuleVersionOut, TestRuleIn, DEFAULT_TEST_EVENTS,
};
use crate::state::AppState;
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_core::action::ActionKind;
use sluice_core::rule::{NewRule, RulePatch};
use sluice_store::{EventFilter, Page, RuleFilter};

/// Rules per page of the list.
const PAGE_SIZE: i64 = 50;
const RULE_FIELDS: &[&str] = &["name", "event_type", "condition", "action", "active"];
const TEST_FIELDS: &[&str] = &["condition", "data", "event_type", "last", "action"];

// ---- the list ----

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RulesParams {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub active: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub offset: String,
}

impl RulesParams {
    fn link(&self, offset: i64) -> String {
        let params = RulesParams {
            offset: if offset > 0 {
                offset.to_string()
            } else {
                String::new()
            },
            ..self.clone()
        };
        format!("/console/rules{}", query_string(&params))
    }
}

pub struct RuleRow {
    pub id: i64,
    pub name: String,
    pub event_type: String,
    pub active: bool,
    pub version: i64,
    pub action_type: String,
    pub updated: When,
}

#[derive(Template)]
#[template(path = "console/rules.html")]
struct RulesPage {
    layout: Layout,
    params: RulesParams,
    errors: FieldErrors,
    rows: Vec<RuleRow>,
    newer: Option<String>,
    older: Option<String>,
}

/// `GET /console/rules`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<RulesParams>, QueryRejection>,
    Query(flash): Query<SavedParams>,
) -> ConsoleResult<Response> {
    let now = Utc::now();
    let mut errors = FieldErrors::default();
    let params = query.map(|Query(p)| p).unwrap_or_default();
    // The message names the rule as stored, never text from the query string (a link could
    // otherwise make the console announce anything as a success).
    let flashed = match flash.rule.as_deref().and_then(|id| id.parse::<i64>().ok()) {
        Some(id) => rule_ops::get_rule(&state, id).await.ok(),
        None => None,
    };
    let active = match params.active.as_str() {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        other => {
            errors.push(
                "active",
                format!("must be active or inactive, got '{other}'"),
            );
            None
        }
    };
    let offset = params.offset.parse::<i64>().unwrap_or(0).max(0);
    let filter = RuleFilter {
        active,
        event_type: Some(params.event_type.trim().to_owned()).filter(|t| {
            if t.contains('\0') {
                errors.push("event_type", "must not contain U+0000 (NUL)");
            }
            !t.is_empty() && !t.contains('\0')
        }),
        before_id: None,
    };
    let mut rules = rule_ops::list_rules(
        &state,
        &filter,
        Page {
            limit: PAGE_SIZE + 1,
            offset,
        },
    )
    .await?
    .data;
    let has_older = rules.len() as i64 > PAGE_SIZE;
    rules.truncate(PAGE_SIZE as usize);
    let rows = rules
        .iter()
        .map(|r| RuleRow {
            id: r.id,
            name: r.name.clone(),
            event_type: r.event_type.clone(),
            active: r.active,
            version: r.current_version.version,
            action_type: r.action_type().to_owned(),
            updated: When::new(r.updated_at, now),
        })
        .collect();
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = RulesPage {
        layout: Layout::new("Rules", Section::Rules, &viewer)
            .with_flash(flash.flash(flashed.as_ref())),
        newer: (offset > 0).then(|| params.link((offset - PAGE_SIZE).max(0))),
        older: has_older.then(|| params.link(offset + PAGE_SIZE)),
        params,
        errors,
        rows,
    };
    Ok(render(status, &page))
}

/// `?saved=…` after a redirect: what the previous request did.
#[derive(Debug, Default, Deserialize)]
pub struct SavedParams {
    saved: Option<String>,
    rule: Option<String>,
}

impl SavedParams {
    fn flash(&self, rule: Option<&RuleOut>) -> Option<Flash> {
        let name = rule
            .map(|r| format!("“{}”", r.name))
            .unwrap_or_else(|| "The rule".to_owned());
        let version = rule.map(|r| r.current_version.version);
        let message = match (self.saved.as_deref()?, version) {
            ("created", _) => format!("{name} was created."),
            ("updated", Some(v)) => format!("{name} was saved; version {v} is current."),
            ("updated", None) => format!("{name} was saved."),
            ("activated", _) => format!("{name} is active: it runs on new events."),
            ("deactivated", _) => format!("{name} is inactive: it no longer runs."),
            _ => return None,
        };
        Some(Flash::success(message))
    }
}

// ---- one rule ----

pub struct VersionView {
    pub version: i64,
    pub created: When,
    pub created_by: Option<String>,
    pub is_current: bool,
    pub is_first: bool,
    pub condition_changed: bool,
    pub action_changed: bool,
    pub condition: Vec<DiffLine>,
    pub action: Vec<DiffLine>,
}

/// Each version against the one before it (the first against itself), newest first.
fn version_history(
    versions: &[RuleVersionOut],
    current: i64,
    now: DateTime<Utc>,
) -> Vec<VersionView> {
    versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let condition = pretty(&v.condition);
            let action = pretty(&v.action);
            let previous = versions.get(i + 1);
            let (old_condition, old_action) = match previous {
                Some(p) => (pretty(&p.condition), pretty(&p.action)),
                None => (condition.clone(), action.clone()),
            };
            VersionView {
                version: v.version,
                created: When::new(v.created_at, now),
                created_by: v.created_by.clone(),
                is_current: v.id == current,
                is_first: previous.is_none(),
                condition_changed: old_condition != condition,
                action_changed: old_action != action,
                condition: diff_lines(&old_condition, &condition),
                action: diff_lines(&old_action, &action),
            }
        })
        .collect()
}

/// The answer of `POST /rules/test`, for a page.
pub struct TestView {
    pub sample: Option<SampleResult>,
    pub stored: Option<StoredResult>,
}

pub struct SampleResult {
    pub matched: bool,
    pub result: String,
    pub why: Option<WhyView>,
    /// What the action would send for this payload (templates filled in, transforms
    /// computed), pretty; or why a transform failed.
    pub action: Option<String>,
    pub action_error: Option<String>,
}

pub struct StoredResult {
    pub event_type: String,
    pub checked: usize,
    pub matched: usize,
    pub errors: usize,
    pub samples: Vec<TestSample>,
}

pub struct TestSample {
    pub event_id: i64,
    pub external_id: String,
    pub result: Option<String>,
    pub error: Option<String>,
}

impl TestView {
    fn new(answer: RuleTestOut) -> Self {
        match answer {
            RuleTestOut::Sample(sample) => TestView {
                sample: Some(SampleResult {
                    matched: sample.matched,
                    result: sample.result.to_string(),
                    why: sample
                        .summary
                        .map(|summary| WhyView::new(summary, sample.explanation.as_deref())),
                    action_error: sample
                        .action
                        .as_ref()
                        .and_then(|a| a.get("error"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    action: sample
                        .action
                        .as_ref()
                        .filter(|a| a.get("error").is_none())
                        .map(pretty),
                }),
                stored: None,
            },
            RuleTestOut::Stored(stored) => TestView {
                sample: None,
                stored: Some(StoredResult {
                    event_type: stored.event_type,
                    checked: stored.checked,
                    matched: stored.matched,
                    errors: stored.errors,
                    samples: stored
                        .samples
                        .into_iter()
                        .map(|s| TestSample {
                            event_id: s.event_id,
                            external_id: s.external_id,
                            result: s.result.as_ref().map(Value::to_string),
                            error: s.error,
                        })
                        .collect(),
                }),
            },
        }
    }
}

/// What the test form sends: a sample payload, or how many stored events to try.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TestInput {
    /// `sample` or `last`.
    #[serde(default)]
    test: String,
    #[serde(default)]
    data: String,
    #[serde(default)]
    last: String,
}

impl TestInput {
    fn last_or_default(&self) -> String {
        if self.last.trim().is_empty() {
            DEFAULT_TEST_EVENTS.to_string()
        } else {
            self.last.clone()
        }
    }
}

/// Tries `condition` with the rules-test operation — against a sample, with what `action`
/// would send for it; problems go into `errors`.
async fn run_test(
    state: &AppState,
    condition: Value,
    action: Option<Value>,
    event_type: &str,
    input: &TestInput,
    errors: &mut FieldErrors,
) -> ConsoleResult<Option<TestView>> {
    let body = if input.test == "last" {
        let last = match input.last_or_default().trim().parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                errors.push("last", "must be a whole number from 1 to 1000");
                return Ok(None);
            }
        };
        json!({ "condition": condition, "event_type": event_type, "last": last })
    } else {
        match serde_json::from_str::<Value>(&input.data) {
            Ok(data) => {
                let mut body = json!({ "condition": condition, "data": data, "explain": true });
                if let Some(action) = action {
                    body["action"] = action;
                }
                body
            }
            Err(error) => {
                errors.push("data", format!("is not valid JSON: {error}"));
                return Ok(None);
            }
        }
    };
    let answer = match TestRuleIn::parse(&body, &state.settings.rule_limits()) {
        Ok(test) => rule_ops::test_rule(state, test).await,
        Err(error) => Err(error),
    };
    match answer {
        Ok(answer) => Ok(Some(TestView::new(answer))),
        Err(error) if error.name == ErrorName::ValidationError => {
            let placed = FieldErrors::from_details(&error.details, TEST_FIELDS);
            if placed.is_empty() {
                errors.push("", error.message);
            }
            for field in ["", "condition", "data", "event_type", "last", "action"] {
                if let Some(message) = placed.get(field) {
                    errors.push(field, message);
                }
            }
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

#[derive(Template)]
#[template(path = "console/rule.html")]
struct RulePage {
    layout: Layout,
    id: i64,
    name: String,
    event_type: String,
    active: bool,
    version: i64,
    action_type: String,
    created: When,
    updated: When,
    condition: String,
    action: String,
    versions: Vec<VersionView>,
    input: TestInput,
    test: Option<TestView>,
    errors: FieldErrors,
}

async fn rule_page(
    state: &AppState,
    viewer: &Viewer,
    rule: RuleOut,
    flash: Option<Flash>,
    input: Option<TestInput>,
    test: Option<TestView>,
    errors: FieldErrors,
) -> ConsoleResult<RulePage> {
    let now = Utc::now();
    let versions = rule_ops::list_versions(state, rule.id).await?.data;
    let input = match input {
        Some(input) => input,
        None => TestInput {
            test: String::new(),
            data: latest_payload(state, &rule.event_type).await?,
            last: DEFAULT_TEST_EVENTS.to_string(),
        },
    };
    Ok(RulePage {
        layout: Layout::new(format!("Rule {}", rule.name), Section::Rules, viewer)
            .with_flash(flash),
        id: rule.id,
        active: rule.active,
        version: rule.current_version.version,
        action_type: rule.action_type().to_owned(),
        created: When::new(rule.created_at, now),
        updated: When::new(rule.updated_at, now),
        condition: pretty(&rule.current_version.condition),
        action: pretty(&rule.current_version.action),
        versions: version_history(&versions, rule.current_version_id, now),
        input,
        test,
        errors,
        name: rule.name,
        event_type: rule.event_type,
    })
}

/// The newest stored payload of a type, pretty: a realistic sample to test against.
async fn latest_payload(state: &AppState, event_type: &str) -> ConsoleResult<String> {
    let (latest, _) = event_ops::browse_events(
        state,
        &EventFilter {
            event_type: Some(event_type.to_owned()),
            ..EventFilter::default()
        },
        Page {
            limit: 1,
            offset: 0,
        },
    )
    .await?;
    let Some(newest) = latest.first() else {
        return Ok("{}".to_owned());
    };
    Ok(event_ops::event_detail(state, newest.id)
        .await
        .ok()
        .map(|e| pretty(&e.payload))
        .unwrap_or_else(|| "{}".to_owned()))
}

async fn load_rule(state: &AppState, id: i64) -> ConsoleResult<RuleOut> {
    Ok(rule_ops::get_rule(state, id).await?)
}

/// `GET /console/rules/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<IdPath, ApiError>,
    Query(saved): Query<SavedParams>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    let rule = load_rule(&state, id).await?;
    let flash = saved.flash(Some(&rule));
    let page = rule_page(
        &state,
        &viewer,
        rule,
        flash,
        None,
        None,
        FieldErrors::default(),
    )
    .await?;
    Ok(render(StatusCode::OK, &page))
}

/// `POST /console/rules/{id}/test`: tries the current version's condition.
pub async fn test(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<IdPath, ApiError>,
    Form(input): Form<TestInput>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    let rule = load_rule(&state, id).await?;
    let mut errors = FieldErrors::default();
    let condition = rule.current_version.condition.clone();
    let action = Some(rule.current_version.action.clone());
    let test = run_test(
        &state,
        condition,
        action,
        &rule.event_type,
        &input,
        &mut errors,
    )
    .await?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = rule_page(&state, &viewer, rule, None, Some(input), test, errors).await?;
    Ok(render(status, &page))
}

#[derive(Debug, Deserialize)]
pub struct ActiveForm {
    active: String,
    /// `list` to come back to the list instead of the rule.
    #[serde(default)]
    back: String,
}

/// `POST /console/rules/{id}/active`: activates or deactivates.
pub async fn set_active(
    State(state): State<AppState>,
    id: Result<IdPath, ApiError>,
    Form(form): Form<ActiveForm>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    let active = match form.active.as_str() {
        "true" => true,
        "false" => false,
        other => {
            return Err(ApiError::validation(format!(
                "active must be true or false, got '{other}'"
            ))
            .into())
        }
    };
    let rule = rule_ops::set_active(&state, id, active).await?;
    let saved = if active { "activated" } else { "deactivated" };
    let to = if form.back == "list" {
        format!(
            "/console/rules{}",
            query_string(&[("saved", saved), ("rule", rule.id.to_string().as_str())])
        )
    } else {
        format!("/console/rules/{id}?saved={saved}")
    };
    Ok(Redirect::to(&to).into_response())
}

// ---- the form ----

/// What the rule form sends (and shows again, as typed, when something is wrong).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    event_type: String,
    #[serde(default)]
    condition: String,
    #[serde(default)]
    action: String,
    /// A checkbox: present when checked.
    active: Option<String>,
    /// `save` (the default) or `test` (try the condition without saving).
    #[serde(default)]
    intent: String,
    #[serde(flatten)]
    test: TestInput,
}

impl RuleForm {
    fn from_rule(rule: &RuleOut) -> Self {
        RuleForm {
            name: rule.name.clone(),
            event_type: rule.event_type.clone(),
            condition: pretty(&rule.current_version.condition),
            action: pretty(&rule.current_version.action),
            active: rule.active.then(|| "on".to_owned()),
            intent: String::new(),
            test: TestInput::default(),
        }
    }

    fn blank() -> Self {
        RuleForm {
            active: Some("on".to_owned()),
            test: TestInput {
                data: "{}".to_owned(),
                ..TestInput::default()
            },
            ..RuleForm::default()
        }
    }

    fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Whether a "Test" button sent the form (rather than "Save").
    fn is_test(&self) -> bool {
        matches!(self.intent.as_str(), "test" | "test_last")
    }

    /// The JSON body the rules API takes. Condition and action that are not JSON are left
    /// out and reported; empty ones are left out for the API to call required.
    fn body(&self, errors: &mut FieldErrors) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("name".into(), json!(self.name));
        body.insert("event_type".into(), json!(self.event_type.trim()));
        for (field, text) in [("condition", &self.condition), ("action", &self.action)] {
            if text.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(text) {
                Ok(value) => {
                    body.insert(field.into(), value);
                }
                Err(error) => errors.push(field, format!("is not valid JSON: {error}")),
            }
        }
        body.insert("active".into(), json!(self.is_active()));
        body
    }
}

#[derive(Template)]
#[template(path = "console/rule_form.html")]
struct RuleFormPage {
    layout: Layout,
    /// `None` when creating.
    rule_id: Option<i64>,
    version: Option<i64>,
    form: RuleForm,
    errors: FieldErrors,
    known_types: Vec<String>,
    test: Option<TestView>,
    /// One complete action per action type, to start from.
    action_examples: Vec<String>,
}

async fn form_page(
    state: &AppState,
    viewer: &Viewer,
    rule: Option<&RuleOut>,
    form: RuleForm,
    errors: FieldErrors,
    test: Option<TestView>,
) -> ConsoleResult<RuleFormPage> {
    let title = match rule {
        Some(rule) => format!("Edit {}", rule.name),
        None => "New rule".to_owned(),
    };
    Ok(RuleFormPage {
        layout: Layout::new(title, Section::Rules, viewer),
        rule_id: rule.map(|r| r.id),
        version: rule.map(|r| r.current_version.version),
        form,
        errors,
        known_types: known_types(state).await?,
        test,
        action_examples: ActionKind::ALL
            .iter()
            .map(|k| k.example().to_string())
            .collect(),
    })
}

/// `GET /console/rules/new`.
pub async fn new_form(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult<Response> {
    let page = form_page(
        &state,
        &viewer,
        None,
        RuleForm::blank(),
        FieldErrors::default(),
        None,
    )
    .await?;
    Ok(render(StatusCode::OK, &page))
}

/// `GET /console/rules/{id}/edit`.
pub async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<IdPath, ApiError>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    let rule = load_rule(&state, id).await?;
    let mut form = RuleForm::from_rule(&rule);
    form.test.data = latest_payload(&state, &rule.event_type).await?;
    let page = form_page(
        &state,
        &viewer,
        Some(&rule),
        form,
        FieldErrors::default(),
        None,
    )
    .await?;
    Ok(render(StatusCode::OK, &page))
}

/// Answers a form that was not saved: with the test result, or with what is wrong (400).
async fn form_again(
    state: &AppState,
    viewer: &Viewer,
    rule: Option<&RuleOut>,
    form: RuleForm,
    errors: FieldErrors,
    test: Option<TestView>,
) -> ConsoleResult<Response> {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = form_page(state, viewer, rule, form, errors, test).await?;
    Ok(render(status, &page))
}

/// Tries the condition being edited (the form's "Test" buttons): `test` against the sample
/// payload, `test_last` against stored events.
async fn test_from_form(
    state: &AppState,
    viewer: &Viewer,
    rule: Option<&RuleOut>,
    mut form: RuleForm,
) -> ConsoleResult<Response> {
    form.test.test = if form.intent == "test_last" {
        "last".to_owned()
    } else {
        "sample".to_owned()
    };
    let mut errors = FieldErrors::default();
    let body = form.body(&mut errors);
    let test = match body.get("condition") {
        Some(condition) if !errors.has("condition") => {
            let event_type = form.event_type.trim().to_owned();
            let action = body
                .get("action")
                .filter(|_| !errors.has("action"))
                .cloned();
            run_test(
                state,
                condition.clone(),
                action,
                &event_type,
                &form.test,
                &mut errors,
            )
            .await?
        }
        Some(_) => None,
        None => {
            errors.push("condition", "write a condition to test");
            None
        }
    };
    form_again(state, viewer, rule, form, errors, test).await
}

/// `POST /console/rules`: creates a rule.
pub async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<RuleForm>,
) -> ConsoleResult<Response> {
    if form.is_test() {
        return test_from_form(&state, &viewer, None, form).await;
    }
    let mut errors = FieldErrors::default();
    let body = Value::Object(form.body(&mut errors));
    if !errors.is_empty() {
        // Still report what else is wrong, except what the JSON errors already explain.
        if let Err(details) = NewRule::parse(&body, &state.settings.rule_limits()) {
            for (field, message) in FieldErrors::from_details(&details, RULE_FIELDS).into_iter() {
                if !errors.has(&field) {
                    errors.push(&field, message);
                }
            }
        }
        return form_again(&state, &viewer, None, form, errors, None).await;
    }
    let created = match NewRule::parse(&body, &state.settings.rule_limits()) {
        Ok(rule) => rule_ops::create_rule(&state, rule, viewer.name()).await,
        Err(details) => Err(ApiError::invalid(details)),
    };
    match created {
        Ok(rule) => {
            Ok(Redirect::to(&format!("/console/rules/{}?saved=created", rule.id)).into_response())
        }
        Err(error) if error.name == ErrorName::ValidationError => {
            let errors = validation_errors(error);
            form_again(&state, &viewer, None, form, errors, None).await
        }
        Err(error) => Err(error.into()),
    }
}

/// `POST /console/rules/{id}/edit`: saves the rule (a changed condition or
/// action becomes a new version).
pub async fn update(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<IdPath, ApiError>,
    Form(form): Form<RuleForm>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    let rule = load_rule(&state, id).await?;
    if form.is_test() {
        return test_from_form(&state, &viewer, Some(&rule), form).await;
    }
    let mut errors = FieldErrors::default();
    let body = form.body(&mut errors);
    for field in ["condition", "action"] {
        if !body.contains_key(field) && !errors.has(field) {
            errors.push(field, "is required");
        }
    }
    if !errors.is_empty() {
        return form_again(&state, &viewer, Some(&rule), form, errors, None).await;
    }
    let answer = match RulePatch::parse(&Value::Object(body), &state.settings.rule_limits()) {
        Ok(patch) => rule_ops::update_rule(&state, id, patch, viewer.name()).await,
        Err(details) => Err(ApiError::invalid(details)),
    };
    match answer {
        Ok(_) => Ok(Redirect::to(&format!("/console/rules/{id}?saved=updated")).into_response()),
        Err(error) if error.name == ErrorName::ValidationError => {
            let errors = validation_errors(error);
            form_again(&state, &viewer, Some(&rule), form, errors, None).await
        }
        Err(error) => Err(error.into()),
    }
}

fn validation_errors(error: ApiError) -> FieldErrors {
    let errors = FieldErrors::from_details(&error.details, RULE_FIELDS);
    if errors.is_empty() {
        let mut errors = FieldErrors::default();
        errors.push("", error.message);
        errors
    } else {
        errors
    }
}
