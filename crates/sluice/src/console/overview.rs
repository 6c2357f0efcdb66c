//! `/console`: how many events are where, what came in over the last hour, what failed lately.

use super::view::{excerpt, Chart, MinuteCount, When};
use super::{render, ConsoleResult, Layout, Section, Viewer};
use crate::error::ApiError;
use crate::operations::events::{self as event_ops, StatsOut};
use crate::operations::rules as rule_ops;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, DurationRound, Utc};
use sluice_core::event::EventState;
use sluice_store::{EventFilter, Page, RuleFilter};

/// Minutes the throughput chart covers.
const CHART_MINUTES: i64 = 60;
/// Recent failures listed.
const FAILURES_SHOWN: i64 = 8;

pub struct FailureRow {
    pub id: i64,
    pub external_id: String,
    pub event_type: String,
    pub error: String,
    pub updated: When,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    layout: Layout,
    stats: StatsOut,
    active_rules: usize,
    chart: Chart,
    failures: Vec<FailureRow>,
    /// How long settled events are kept, when something deletes them.
    retention: Option<String>,
}

/// `GET /console`.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult<Response> {
    let now = Utc::now();
    let stats = event_ops::event_stats(&state, &EventFilter::default()).await?;
    let (failed, _) = event_ops::browse_events(
        &state,
        &EventFilter {
            state: Some(EventState::Failed),
            ..EventFilter::default()
        },
        Page {
            limit: FAILURES_SHOWN,
            offset: 0,
        },
    )
    .await?;
    let failures = failed
        .into_iter()
        .map(|e| FailureRow {
            id: e.id,
            error: e
                .last_error
                .as_deref()
                .map(|m| excerpt(m, 160))
                .unwrap_or_else(|| "no error recorded".to_owned()),
            updated: When::new(e.updated_at, now),
            external_id: e.external_id,
            event_type: e.event_type,
        })
        .collect();
    let active_rules = rule_ops::list_rules(
        &state,
        &RuleFilter {
            active: Some(true),
            event_type: None,
            before_id: None,
        },
        Page {
            limit: 1000,
            offset: 0,
        },
    )
    .await?
    .count;
    let minutes = throughput(&state, now).await?;
    Ok(render(
        StatusCode::OK,
        &OverviewPage {
            layout: Layout::new("Overview", Section::Overview, &viewer),
            stats,
            active_rules,
            chart: Chart::new(&minutes),
            failures,
            retention: state.settings.retention.map(|r| r.to_string()),
        },
    ))
}

/// Events received per minute over the last hour, by what became of them: one read of the
/// counts the database keeps per minute of arrival.
async fn throughput(state: &AppState, now: DateTime<Utc>) -> Result<Vec<MinuteCount>, ApiError> {
    let minute = Duration::minutes(1);
    let current = now.duration_trunc(minute).unwrap_or(now);
    let first = current - Duration::minutes(CHART_MINUTES - 1);
    let arrivals = state.store.arrivals_per_minute(first).await?;
    Ok((0..CHART_MINUTES)
        .map(|i| {
            let start = first + Duration::minutes(i);
            let counts = arrivals.iter().find(|a| a.minute == start);
            MinuteCount {
                start: Some(start),
                processed: counts.map_or(0, |c| c.processed),
                failed: counts.map_or(0, |c| c.failed),
                waiting: counts.map_or(0, |c| c.waiting),
            }
        })
        .collect())
}
