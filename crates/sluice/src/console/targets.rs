//! The Targets page: every delivery target with its circuit breaker, what is in flight, its
//! recent failures and last error, when it will be probed; pause and resume (admins). Live:
//! it refreshes as deliveries happen.

use super::view::When;
use super::{render, ConsoleResult, Flash, Layout, Section, Viewer};
use crate::operations::targets::{self as target_ops, TargetOut};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;

pub struct TargetRow {
    pub target: String,
    pub state: &'static str,
    pub paused: bool,
    pub in_flight: i64,
    pub waiting: i64,
    pub waiting_since: Option<When>,
    pub recent_failures: i64,
    pub last_error: Option<String>,
    pub last_failure: Option<When>,
    pub next_probe: Option<When>,
    pub delivered_total: i64,
    pub failed_total: i64,
    /// `20/s`, with what a 429 slowed it to (`10/s now`); empty without a limit.
    pub rate_limit: String,
    pub slowed_to: Option<String>,
    pub throttled: Option<When>,
}

/// A rate as people read it: `20/s`, `0.5/s`.
fn per_second(rate: f64) -> String {
    format!("{rate}/s")
}

impl TargetRow {
    fn new(t: TargetOut, now: chrono::DateTime<Utc>) -> Self {
        let state = t.state.as_str();
        TargetRow {
            paused: state == "paused",
            state,
            in_flight: t.in_flight,
            waiting: t.waiting,
            waiting_since: When::maybe(t.waiting_since, now),
            recent_failures: t.recent_failures,
            last_error: t.last_error,
            last_failure: When::maybe(t.last_failure_at, now),
            next_probe: When::maybe(t.next_probe_at, now).filter(|_| state != "closed"),
            delivered_total: t.delivered_total,
            failed_total: t.failed_total,
            rate_limit: t.max_per_second.map(per_second).unwrap_or_default(),
            slowed_to: t
                .pace_per_second
                .filter(|pace| Some(*pace) != t.max_per_second)
                .map(per_second),
            throttled: When::maybe(t.throttled_at, now),
            target: t.target,
        }
    }
}

#[derive(Template)]
#[template(path = "console/targets.html")]
struct TargetsPage {
    layout: Layout,
    rows: Vec<TargetRow>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TargetsParams {
    /// `paused` or `resumed`, with `target`: what was just done.
    #[serde(default)]
    done: String,
    #[serde(default)]
    target: String,
}

/// `GET /console/targets`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<TargetsParams>,
) -> ConsoleResult<Response> {
    let now = Utc::now();
    let targets = target_ops::list(&state).await?.data;
    // The flash names a target as stored, never text from the link.
    let flash = targets
        .iter()
        .find(|t| t.target == params.target)
        .and_then(|t| match params.done.as_str() {
            "paused" => Some(Flash::success(format!(
                "{} paused: its deliveries wait.",
                t.target
            ))),
            "resumed" => Some(Flash::success(format!("{} resumed.", t.target))),
            _ => None,
        });
    let page = TargetsPage {
        layout: Layout::new("Targets", Section::Targets, &viewer).with_flash(flash),
        rows: targets
            .into_iter()
            .map(|t| TargetRow::new(t, now))
            .collect(),
    };
    Ok(render(StatusCode::OK, &page))
}

#[derive(Debug, Default, Deserialize)]
pub struct TargetForm {
    #[serde(default)]
    target: String,
    /// `pause` or `resume`.
    #[serde(default)]
    action: String,
}

/// `POST /console/targets`: pauses or resumes one.
pub async fn change(
    State(state): State<AppState>,
    Form(form): Form<TargetForm>,
) -> ConsoleResult<Response> {
    let target = target_ops::parse_target(&json!({ "target": form.target }))?;
    let (paused, done) = match form.action.as_str() {
        "pause" => (true, "paused"),
        "resume" => (false, "resumed"),
        other => {
            return Err(crate::error::ApiError::validation(format!(
                "unknown action '{other}' (expected pause or resume)"
            ))
            .into())
        }
    };
    target_ops::set_paused(&state, &target, paused).await?;
    let query = serde_urlencoded::to_string([("done", done), ("target", target.as_str())])
        .unwrap_or_default();
    Ok(Redirect::to(&format!("/console/targets?{query}")).into_response())
}
