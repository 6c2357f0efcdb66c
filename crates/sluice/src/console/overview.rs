//! `/console`: how many events are where, what came in over the last hour, what failed lately.

use super::view::{excerpt, Chart, MinuteCount, When};
use super::{render, ConsoleResult, Layout, Section};
use crate::app::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, DurationRound, Utc};
use futures::{StreamExt, TryStreamExt};
use sluice_core::event::EventState;
use sluice_store::{EventFilter, EventStats, Page, RuleFilter, StoreError};

/// Minutes the throughput chart covers.
const CHART_MINUTES: i64 = 60;
/// Recent failures listed.
const FAILURES_SHOWN: i64 = 8;
/// Per-minute counts fetched at once.
const CONCURRENT_COUNTS: usize = 6;

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
    stats: EventStats,
    active_rules: usize,
    chart: Chart,
    failures: Vec<FailureRow>,
}

/// `GET /console`.
pub async fn page(State(state): State<AppState>) -> ConsoleResult<Response> {
    let now = Utc::now();
    let stats = state.store.event_stats(&EventFilter::default()).await?;
    let failed = state
        .store
        .list_events(
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
    let active_rules = state
        .store
        .list_rules(
            &RuleFilter {
                active: Some(true),
                event_type: None,
            },
            Page {
                limit: 1000,
                offset: 0,
            },
        )
        .await?
        .len();
    let minutes = throughput(&state, now).await?;
    Ok(render(
        StatusCode::OK,
        &OverviewPage {
            layout: Layout::new("Overview", Section::Overview),
            stats,
            active_rules,
            chart: Chart::new(&minutes),
            failures,
        },
    ))
}

/// Events received per minute over the last hour, by what became of them, from one
/// `event_stats` per minute (each bounded by the `created_at` index).
async fn throughput(state: &AppState, now: DateTime<Utc>) -> Result<Vec<MinuteCount>, StoreError> {
    let minute = Duration::minutes(1);
    let current = now.duration_trunc(minute).unwrap_or(now);
    let first = current - Duration::minutes(CHART_MINUTES - 1);
    futures::stream::iter(0..CHART_MINUTES)
        .map(|i| {
            let start = first + Duration::minutes(i);
            let filter = EventFilter {
                start: Some(start),
                // Bounds are inclusive; stop a microsecond before the next minute.
                end: Some(start + minute - Duration::microseconds(1)),
                ..EventFilter::default()
            };
            let store = state.store.clone();
            async move {
                let stats = store.event_stats(&filter).await?;
                Ok::<_, StoreError>(MinuteCount {
                    start: Some(start),
                    processed: stats.processed,
                    failed: stats.failed,
                    waiting: stats.pending + stats.processing,
                })
            }
        })
        .buffered(CONCURRENT_COUNTS)
        .try_collect()
        .await
}
