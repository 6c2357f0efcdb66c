//! `/console/events`: the filtered, paginated, live list; one event with every attempt and
//! what each rule did; replay (current or original rules, or a dry run) from that page.

use super::view::{excerpt, pretty, query_string, When};
use super::{render, ConsoleError, ConsoleResult, FieldErrors, Flash, Layout, Section, Viewer};
use crate::api::extract::IdPath;
use crate::error::{ApiError, ErrorName};
use crate::operations::events::{self as event_ops, AttemptOut, EventBrief, EventOut, EventsQuery};
use crate::operations::replay::{self as replay_ops, ReplayOut};
use crate::operations::rules as rule_ops;
use crate::state::AppState;
use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sluice_core::event::{AttemptStatus, EventState, ExecutionResult, ReplayRules};
use sluice_store::{Page, RuleFilter};

/// Events per page of the list.
pub const PAGE_SIZE: i64 = 50;
/// Attempts shown on an event's page (newest first).
const ATTEMPTS_SHOWN: i64 = 100;
const FILTER_FIELDS: &[&str] = &[
    "state",
    "type",
    "external_id",
    "start_date",
    "end_date",
    "offset",
    "cursor",
];

/// The list's filters, as the form sends them and the links carry them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct EventsParams {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub start_date: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub end_date: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub offset: String,
    /// Where the page starts: the `next_cursor` of the page before (older pages are walked by
    /// cursor, at the same cost however deep).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cursor: String,
    /// How many events the pages before this one showed (for "Showing 51–100" only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shown: String,
}

impl EventsParams {
    fn trimmed(self) -> Self {
        EventsParams {
            state: self.state.trim().to_owned(),
            event_type: self.event_type.trim().to_owned(),
            external_id: self.external_id.trim().to_owned(),
            start_date: self.start_date.trim().to_owned(),
            end_date: self.end_date.trim().to_owned(),
            offset: self.offset.trim().to_owned(),
            cursor: self.cursor.trim().to_owned(),
            shown: self.shown.trim().to_owned(),
        }
    }

    fn offset(&self) -> i64 {
        self.offset.parse().unwrap_or(0).max(0)
    }

    /// How many events come before this page in the list.
    fn position(&self) -> i64 {
        if self.cursor.is_empty() {
            self.offset()
        } else {
            self.shown.parse().unwrap_or(0).max(0)
        }
    }

    fn is_filtered(&self) -> bool {
        !(self.state.is_empty()
            && self.event_type.is_empty()
            && self.external_id.is_empty()
            && self.start_date.is_empty()
            && self.end_date.is_empty())
    }

    /// The list's URL with these filters at another offset.
    fn link(&self, offset: i64) -> String {
        let params = EventsParams {
            offset: if offset > 0 {
                offset.to_string()
            } else {
                String::new()
            },
            cursor: String::new(),
            shown: String::new(),
            ..self.clone()
        };
        format!("/console/events{}", query_string(&params))
    }

    /// The list's URL with these filters, continuing after `cursor`.
    fn link_after(&self, cursor: String, shown: i64) -> String {
        let params = EventsParams {
            offset: String::new(),
            cursor,
            shown: shown.to_string(),
            ..self.clone()
        };
        format!("/console/events{}", query_string(&params))
    }
}

/// One row of the list. Live refresh fetches this page again and imports its new rows, so a
/// row is rendered here only.
pub struct EventRow {
    pub id: i64,
    pub external_id: String,
    pub event_type: String,
    pub state: &'static str,
    pub received_count: i64,
    pub attempts: i64,
    pub created: When,
    pub error: Option<String>,
}

impl EventRow {
    fn new(event: &EventBrief, now: DateTime<Utc>) -> Self {
        EventRow {
            id: event.id,
            external_id: event.external_id.clone(),
            event_type: event.event_type.clone(),
            state: event.state.as_str(),
            received_count: event.received_count,
            attempts: event.attempts,
            created: When::new(event.created_at, now),
            error: event.last_error.as_deref().map(|e| excerpt(e, 90)),
        }
    }
}

#[derive(Template)]
#[template(path = "console/events.html")]
struct EventsPage {
    layout: Layout,
    params: EventsParams,
    states: &'static [EventState],
    known_types: Vec<String>,
    errors: FieldErrors,
    rows: Vec<EventRow>,
    /// Live insertion only makes sense on the first page, newest first.
    first_page: bool,
    filtered: bool,
    newer: Option<String>,
    older: Option<String>,
    range: String,
}

/// `GET /console/events`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<EventsParams>, QueryRejection>,
) -> ConsoleResult<Response> {
    let now = Utc::now();
    let mut errors = FieldErrors::default();
    let params = match query {
        Ok(Query(params)) => params.trimmed(),
        Err(rejection) => {
            errors.push(
                "",
                format!("invalid query string: {}", rejection.body_text()),
            );
            EventsParams::default()
        }
    };
    let offset = params.offset();
    let position = params.position();
    let by_cursor = !params.cursor.is_empty();
    let api_query = EventsQuery {
        state: Some(params.state.clone()),
        event_type: Some(params.event_type.clone()),
        external_id: Some(params.external_id.clone()),
        start_date: Some(params.start_date.clone()),
        end_date: Some(params.end_date.clone()),
        limit: Some(PAGE_SIZE.to_string()),
        offset: (!by_cursor).then(|| offset.to_string()),
        cursor: by_cursor.then(|| params.cursor.clone()),
    };
    let mut events = Vec::new();
    let mut has_older = false;
    if errors.is_empty() {
        // Rows without payloads: a page of large events costs no more than one of small ones.
        let listing = match api_query.parse() {
            Ok((filter, page)) => event_ops::browse_events(&state, &filter, page).await,
            Err(error) => Err(error),
        };
        match listing {
            Ok((rows, more)) => (events, has_older) = (rows, more),
            Err(error) if error.name == ErrorName::ValidationError => {
                errors = FieldErrors::from_details(&error.details, FILTER_FIELDS);
                if errors.is_empty() {
                    errors.push("", error.message);
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    let rows: Vec<EventRow> = events.iter().map(|e| EventRow::new(e, now)).collect();
    let range = match rows.len() {
        0 => String::new(),
        n => format!("{}–{}", position + 1, position + n as i64),
    };
    let older = match events.last() {
        Some(last) if has_older => Some(params.link_after(
            event_ops::encode_cursor(last.created_at, last.id),
            position + rows.len() as i64,
        )),
        _ => None,
    };
    let page = EventsPage {
        layout: Layout::new("Events", Section::Events, &viewer),
        states: EventState::ALL,
        known_types: known_types(&state).await?,
        first_page: position == 0,
        filtered: params.is_filtered(),
        // Cursors walk one way: from a cursor page, "newer" goes back to the newest.
        newer: if by_cursor {
            Some(params.link(0))
        } else {
            (offset > 0).then(|| params.link((offset - PAGE_SIZE).max(0)))
        },
        older,
        range,
        rows,
        errors,
        params,
    };
    let status = if page.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(render(status, &page))
}

/// Event types the rules watch: suggestions for the type filter and the rule form.
pub async fn known_types(state: &AppState) -> ConsoleResult<Vec<String>> {
    let rules = rule_ops::list_rules(
        state,
        &RuleFilter::default(),
        Page {
            limit: 1000,
            offset: 0,
        },
    )
    .await?;
    let mut types: Vec<String> = rules.data.into_iter().map(|r| r.event_type).collect();
    types.sort();
    types.dedup();
    Ok(types)
}

/// Why a rule matched or not, as the event page shows it in a "why?" disclosure.
#[derive(Clone)]
pub struct WhyView {
    pub summary: String,
    pub lines: Vec<WhyLine>,
    /// What the action sent (or would send), pretty, when the condition held.
    pub sent: Option<String>,
    /// How each `{"$logic": …}` transform of the action was computed.
    pub transforms: Vec<TransformView>,
}

#[derive(Clone)]
pub struct TransformView {
    pub path: String,
    /// Its value as compact JSON, or why it failed.
    pub value: String,
    pub failed: bool,
    pub summary: String,
    pub lines: Vec<WhyLine>,
}

#[derive(Clone)]
pub struct WhyLine {
    /// Nesting, capped for the indentation classes (`why-depth-0` … `why-depth-8`).
    pub depth: usize,
    pub text: String,
    pub muted: bool,
}

impl WhyView {
    pub fn new(summary: String, tree: Option<&sluice_core::logic::Explanation>) -> Self {
        WhyView {
            summary,
            lines: why_lines(tree),
            sent: None,
            transforms: Vec::new(),
        }
    }

    /// With what the action sent and how its transforms were computed.
    fn with_action(
        mut self,
        sent: Option<&serde_json::Value>,
        transforms: Option<&[event_ops::TransformOut]>,
    ) -> Self {
        self.sent = sent.map(super::view::pretty);
        self.transforms = transforms
            .unwrap_or_default()
            .iter()
            .map(|t| TransformView {
                path: t.path.clone(),
                failed: t.error.is_some(),
                value: match (&t.value, &t.error) {
                    (Some(value), _) => value.to_string(),
                    (None, Some(error)) => error.clone(),
                    (None, None) => String::new(),
                },
                summary: t.summary.clone().unwrap_or_default(),
                lines: why_lines(t.explanation.as_deref()),
            })
            .collect();
        self
    }
}

fn why_lines(tree: Option<&sluice_core::logic::Explanation>) -> Vec<WhyLine> {
    tree.map(sluice_core::logic::tree_lines)
        .unwrap_or_default()
        .into_iter()
        .map(|l| WhyLine {
            depth: l.depth.min(8),
            text: l.text,
            muted: l.muted,
        })
        .collect()
}

/// The explanation of each rule version an event's shown attempts ran: the same version on
/// the same payload always explains the same way, so each is evaluated once.
async fn explanations(
    state: &AppState,
    event_id: i64,
    attempts: &[AttemptOut],
) -> ConsoleResult<std::collections::HashMap<i64, WhyView>> {
    let mut views = std::collections::HashMap::new();
    for execution in attempts.iter().flat_map(|a| a.rule_executions.iter()) {
        if views.contains_key(&execution.rule_version_id) {
            continue;
        }
        let explained = match event_ops::explain_execution(state, event_id, execution.id).await {
            Ok(explained) => explained,
            // The page is still worth showing without this one explanation.
            Err(error) if error.name != ErrorName::ServiceUnavailable => {
                tracing::warn!(execution = execution.id, error = %error.message, "cannot explain");
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        views.insert(
            execution.rule_version_id,
            WhyView::new(explained.summary, explained.explanation.as_ref())
                .with_action(explained.action.as_ref(), explained.transforms.as_deref()),
        );
    }
    Ok(views)
}

pub struct ExecutionView {
    pub rule_id: i64,
    pub rule_name: String,
    pub rule_version: i64,
    pub result: &'static str,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub duration_ms: Option<i64>,
    pub why: Option<WhyView>,
}

pub struct AttemptView {
    pub attempt_no: i64,
    pub trigger: &'static str,
    pub status: &'static str,
    pub error: Option<String>,
    pub worker: Option<String>,
    pub requested_by: Option<String>,
    pub started: When,
    pub duration_ms: Option<i64>,
    pub executions: Vec<ExecutionView>,
}

impl AttemptView {
    fn new(
        attempt: &AttemptOut,
        now: DateTime<Utc>,
        why: &std::collections::HashMap<i64, WhyView>,
    ) -> Self {
        AttemptView {
            attempt_no: attempt.attempt_no,
            trigger: attempt.trigger.as_str(),
            status: attempt.status.as_str(),
            error: attempt.error.clone(),
            worker: attempt.worker.clone(),
            requested_by: attempt.requested_by.clone(),
            started: When::new(attempt.started_at, now),
            duration_ms: attempt.duration_ms,
            executions: attempt
                .rule_executions
                .iter()
                .map(|x| ExecutionView {
                    rule_id: x.rule_id,
                    rule_name: x.rule_name.clone(),
                    rule_version: x.rule_version,
                    result: x.result.as_str(),
                    error: x.error.clone(),
                    idempotency_key: x.idempotency_key.clone(),
                    duration_ms: x.duration_ms,
                    why: why.get(&x.rule_version_id).cloned(),
                })
                .collect(),
        }
    }
}

/// Why the event failed, up front: the event's last error and the rules that failed in its
/// latest attempt.
pub struct Diagnosis {
    pub last_error: Option<String>,
    pub attempt_no: Option<i64>,
    pub attempt_error: Option<String>,
    pub failed_rules: Vec<FailedRule>,
}

pub struct FailedRule {
    pub rule_id: i64,
    pub rule_name: String,
    pub rule_version: i64,
    pub error: String,
}

fn diagnose(event: &EventOut, attempts: &[AttemptOut]) -> Option<Diagnosis> {
    let latest = attempts.first();
    let failed_rules: Vec<FailedRule> = latest
        .map(|a| {
            a.rule_executions
                .iter()
                .filter(|x| x.result == ExecutionResult::Failed)
                .map(|x| FailedRule {
                    rule_id: x.rule_id,
                    rule_name: x.rule_name.clone(),
                    rule_version: x.rule_version,
                    error: x
                        .error
                        .clone()
                        .unwrap_or_else(|| "no error recorded".to_owned()),
                })
                .collect()
        })
        .unwrap_or_default();
    let attempt_failed = latest
        .is_some_and(|a| !matches!(a.status, AttemptStatus::Success | AttemptStatus::Running));
    let troubled = event.state == EventState::Failed
        || event.last_error.is_some()
        || attempt_failed
        || !failed_rules.is_empty();
    // Errors are shown once: an attempt's error usually quotes its failed rules', and the
    // event's last error usually is the latest attempt's.
    let explained = |text: &String| failed_rules.iter().any(|r| text.contains(&r.error));
    let attempt_error = latest
        .filter(|_| attempt_failed)
        .and_then(|a| a.error.clone())
        .filter(|e| !explained(e));
    let last_error = event
        .last_error
        .clone()
        .filter(|e| !explained(e) && Some(e) != attempt_error.as_ref());
    troubled.then(|| Diagnosis {
        last_error,
        attempt_no: latest.filter(|_| attempt_failed).map(|a| a.attempt_no),
        attempt_error,
        failed_rules,
    })
}

/// What a dry run said each rule would do.
pub struct DryRun {
    pub rules: String,
    pub message: String,
    pub results: Vec<DryRunRow>,
}

pub struct DryRunRow {
    pub rule_id: i64,
    pub rule_name: String,
    pub rule_version: i64,
    pub would: String,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
}

impl DryRun {
    fn new(answer: ReplayOut) -> Self {
        DryRun {
            rules: answer.rules.as_str().to_owned(),
            message: answer.message,
            results: answer
                .results
                .unwrap_or_default()
                .into_iter()
                .map(|r| DryRunRow {
                    rule_id: r.rule_id,
                    rule_name: r.rule_name,
                    rule_version: r.rule_version,
                    would: r.would.as_str().to_owned(),
                    error: r.error,
                    idempotency_key: r.idempotency_key,
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/event.html")]
struct EventPage {
    layout: Layout,
    id: i64,
    external_id: String,
    event_type: String,
    state: &'static str,
    received_count: i64,
    attempt_count: i64,
    ordering_key: Option<String>,
    payload: String,
    created: When,
    updated: When,
    processed: Option<When>,
    replayed: Option<When>,
    next_attempt: Option<When>,
    /// The receiver it waits for, and since when.
    waiting: Option<(String, When)>,
    can_replay: bool,
    /// Pending: it can be cancelled while it waits (its time, a retry, a receiver).
    can_cancel: bool,
    last_error: Option<String>,
    diagnosis: Option<Diagnosis>,
    attempts: Vec<AttemptView>,
    dry_run: Option<DryRun>,
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailParams {
    replayed: Option<String>,
    cancelled: Option<String>,
}

/// `GET /console/events/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<IdPath, ApiError>,
    Query(params): Query<DetailParams>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    let flash = match params.replayed.as_deref() {
        Some("current") => Some(Flash::success(
            "Replay queued with each rule's current version. The new attempt appears below.",
        )),
        Some("original") => Some(Flash::success(
            "Replay queued with the rule versions the first attempt evaluated. The new attempt appears below.",
        )),
        _ if params.cancelled.is_some() => Some(Flash::success(
            "Event cancelled: it will not be processed. A replay can still run it.",
        )),
        _ => None,
    };
    let page = event_page(&state, &viewer, id, flash, None).await?;
    Ok(render(StatusCode::OK, &page))
}

/// `POST /console/events/{id}/cancel`: takes a waiting event out of the queue.
pub async fn cancel(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<IdPath, ApiError>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    match replay_ops::cancel(&state, id, viewer.name()).await {
        Ok(_) => Ok(Redirect::to(&format!("/console/events/{id}?cancelled=1")).into_response()),
        Err(error) if error.name == ErrorName::ConflictError => {
            refused(&state, &viewer, id, error).await
        }
        Err(error) => Err(ConsoleError(error)),
    }
}

async fn event_page(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    flash: Option<Flash>,
    dry_run: Option<DryRun>,
) -> ConsoleResult<EventPage> {
    let now = Utc::now();
    let event = event_ops::event_detail(state, id).await?;
    let attempts = event_ops::list_attempts(
        state,
        id,
        None,
        Page {
            limit: ATTEMPTS_SHOWN,
            offset: 0,
        },
    )
    .await?
    .data;
    let why = explanations(state, id, &attempts).await?;
    Ok(EventPage {
        layout: Layout::new(
            format!("Event {}", event.external_id),
            Section::Events,
            viewer,
        )
        .with_flash(flash),
        id: event.id,
        state: event.state.as_str(),
        received_count: event.received_count,
        attempt_count: event.attempts,
        ordering_key: event.ordering_key.clone(),
        payload: pretty(&event.payload),
        created: When::new(event.created_at, now),
        updated: When::new(event.updated_at, now),
        processed: When::maybe(event.processed_at, now),
        replayed: When::maybe(event.replayed_at, now),
        next_attempt: When::maybe(event.next_attempt_at, now)
            .filter(|_| event.state == EventState::Pending && event.waiting.is_none()),
        waiting: event
            .waiting
            .as_ref()
            .map(|w| (w.target.clone(), When::new(w.since, now))),
        can_replay: event.state.is_terminal(),
        can_cancel: event.state == EventState::Pending,
        last_error: event.last_error.clone(),
        diagnosis: diagnose(&event, &attempts),
        attempts: attempts
            .iter()
            .map(|a| AttemptView::new(a, now, &why))
            .collect(),
        dry_run,
        external_id: event.external_id,
        event_type: event.event_type,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct ReplayForm {
    /// `current`, `original` or `dry_run`.
    #[serde(default)]
    mode: String,
    /// Which rules a dry run evaluates.
    #[serde(default)]
    dry_run_rules: String,
}

/// `POST /console/events/{id}/replay`: a replay redirects back to the event (whose page shows
/// the new attempt); a dry run shows what each rule would do, on the event's page.
pub async fn replay(
    State(state): State<AppState>,
    viewer: Viewer,
    id: Result<IdPath, ApiError>,
    Form(form): Form<ReplayForm>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    let (rules, dry_run) = match form.mode.as_str() {
        "current" => (ReplayRules::Current, false),
        "original" => (ReplayRules::Original, false),
        "dry_run" if form.dry_run_rules == "original" => (ReplayRules::Original, true),
        "dry_run" => (ReplayRules::Current, true),
        other => {
            return Err(ApiError::validation(format!(
                "unknown replay mode '{other}' (expected current, original or dry_run)"
            ))
            .into())
        }
    };
    let answer = if dry_run {
        replay_ops::dry_run(&state, id, rules).await
    } else {
        replay_ops::replay(&state, id, rules, viewer.name()).await
    };
    match answer {
        Ok(answer) if dry_run => {
            let page = event_page(&state, &viewer, id, None, Some(DryRun::new(answer))).await?;
            Ok(render(StatusCode::OK, &page))
        }
        Ok(_) => Ok(
            Redirect::to(&format!("/console/events/{id}?replayed={rules}#attempts"))
                .into_response(),
        ),
        Err(error) if error.name == ErrorName::ConflictError => {
            refused(&state, &viewer, id, error).await
        }
        Err(error) => Err(ConsoleError(error)),
    }
}

/// The event's page again, with why an action on it was refused (a conflict) and its status.
async fn refused(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    error: ApiError,
) -> ConsoleResult<Response> {
    let status = error.name.status();
    let page = event_page(state, viewer, id, Some(Flash::error(error.message)), None).await?;
    Ok(render(status, &page))
}
