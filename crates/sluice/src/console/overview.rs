//! `/console`: how many events are where, what came in over the last hour, what failed lately.

use super::view::{excerpt, Chart, MinuteCount, When};
use super::{render, ConsoleResult, Layout, Section, Viewer};
use crate::app::AppState;
use crate::operations::events::{self as event_ops, StatsOut};
use crate::operations::rules as rule_ops;
use crate::operations::ApiError;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, DurationRound, Utc};
use futures::{StreamExt, TryStreamExt};
use sluice_core::event::EventState;
use sluice_store::{EventFilter, Page, RuleFilter};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

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
    stats: StatsOut,
    active_rules: usize,
    chart: Chart,
    failures: Vec<FailureRow>,
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
        },
    ))
}

/// Minutes that ended at least this long ago rarely change: their counts are cached.
const SETTLED_AFTER: Duration = Duration::minutes(10);
/// How long a cached minute is trusted (a replay can still move its events).
const CACHED_FOR: std::time::Duration = std::time::Duration::from_secs(300);

/// Counts of settled minutes, by database and minute. Recounting a busy hour on every refresh
/// of every open overview would load the database for a picture that barely changes.
type MinuteCache = HashMap<(String, DateTime<Utc>), (Instant, MinuteCount)>;
static SETTLED_MINUTES: LazyLock<Mutex<MinuteCache>> = LazyLock::new(Mutex::default);

fn cached_minute(database: &str, start: DateTime<Utc>) -> Option<MinuteCount> {
    let cache = SETTLED_MINUTES.lock().ok()?;
    let (at, count) = cache.get(&(database.to_owned(), start))?;
    (at.elapsed() < CACHED_FOR).then(|| count.clone())
}

fn remember_minutes(database: &str, minutes: &[MinuteCount], settled_before: DateTime<Utc>) {
    let Ok(mut cache) = SETTLED_MINUTES.lock() else {
        return;
    };
    cache.retain(|_, (at, _)| at.elapsed() < CACHED_FOR);
    for minute in minutes {
        if let Some(start) = minute.start.filter(|s| *s < settled_before) {
            cache
                .entry((database.to_owned(), start))
                .or_insert_with(|| (Instant::now(), minute.clone()));
        }
    }
}

/// Events received per minute over the last hour, by what became of them, from one
/// `event_stats` per minute (each bounded by the `created_at` index); settled minutes come
/// from a short-lived cache.
async fn throughput(state: &AppState, now: DateTime<Utc>) -> Result<Vec<MinuteCount>, ApiError> {
    let minute = Duration::minutes(1);
    let current = now.duration_trunc(minute).unwrap_or(now);
    let first = current - Duration::minutes(CHART_MINUTES - 1);
    let settled_before = now - SETTLED_AFTER - minute;
    let database = state.settings.database_url.as_str();
    let minutes: Vec<MinuteCount> = futures::stream::iter(0..CHART_MINUTES)
        .map(|i| {
            let start = first + Duration::minutes(i);
            let cached = (start < settled_before)
                .then(|| cached_minute(database, start))
                .flatten();
            let filter = EventFilter {
                start: Some(start),
                // Bounds are inclusive; stop a microsecond before the next minute.
                end: Some(start + minute - Duration::microseconds(1)),
                ..EventFilter::default()
            };
            async move {
                if let Some(count) = cached {
                    return Ok(count);
                }
                let stats = event_ops::event_stats(state, &filter).await?;
                Ok::<_, ApiError>(MinuteCount {
                    start: Some(start),
                    processed: stats.processed,
                    failed: stats.failed,
                    waiting: stats.pending + stats.processing,
                })
            }
        })
        .buffered(CONCURRENT_COUNTS)
        .try_collect()
        .await?;
    remember_minutes(database, &minutes, settled_before);
    Ok(minutes)
}
