//! Counts: events by state, arrivals by minute, history size.

use super::dialect::{Dialect, QueryBuilderExt, RowExt};
use super::Engine;
use crate::model::*;
use crate::{StatsStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::QueryBuilder;

#[async_trait]
impl<E: Engine> StatsStore for E {
    async fn event_stats(&self, filter: &EventFilter) -> Result<EventStats, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new("");
        push_stats_query(&mut query, filter, Utc::now());
        let mut conn = self.queue_reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        let mut stats = EventStats::default();
        for row in &rows {
            let n: i64 = row.value("n")?;
            stats.failed_last_24h += row.value::<i64>("recent")?;
            match row.value::<String>("status")?.as_str() {
                "pending" => stats.pending += n,
                "retrying" => {
                    stats.pending += n;
                    stats.retrying += n;
                }
                "processing" => stats.processing += n,
                "processed" => stats.processed += n,
                "failed" => stats.failed += n,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "unknown status {other:?} in event counts"
                    )))
                }
            }
        }
        stats.total = stats.pending + stats.processing + stats.processed + stats.failed;
        Ok(stats)
    }

    async fn arrivals_per_minute(&self, since: Timestamp) -> Result<Vec<Arrivals>, StoreError> {
        let since = floor_to(since, MINUTE_US);
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT bucket, status, CAST(SUM(n) AS BIGINT) AS n FROM (\
             SELECT bucket, status, n FROM event_counts WHERE bucket_minutes = 1 AND bucket >= ",
        );
        query
            .push_timestamp(since)
            .push(" UNION ALL SELECT bucket, status, n FROM event_count_changes WHERE bucket >= ")
            .push_timestamp(since)
            .push(") counted GROUP BY bucket, status ORDER BY bucket");
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        let mut minutes: Vec<Arrivals> = Vec::new();
        for row in &rows {
            let minute = E::Dialect::timestamp(row, "bucket")?;
            if minutes.last().map(|m| m.minute) != Some(minute) {
                minutes.push(Arrivals {
                    minute,
                    ..Arrivals::default()
                });
            }
            let n: i64 = row.value("n")?;
            let counts = minutes.last_mut().expect("pushed above when missing");
            match row.value::<String>("status")?.as_str() {
                "processed" => counts.processed += n,
                "failed" => counts.failed += n,
                _ => counts.waiting += n,
            }
        }
        Ok(minutes)
    }

    async fn history_size(&self) -> Result<HistorySize, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT (SELECT COUNT(*) FROM event_attempts) AS attempts, \
             (SELECT COUNT(*) FROM rule_executions) AS executions, \
             (SELECT COUNT(*) FROM rule_executions WHERE result = 'deferred') AS deferred",
        );
        let mut conn = self.reads().acquire().await?;
        let row = query.fetch_one(&mut conn).await?;
        Ok(HistorySize {
            attempts: row.value("attempts")?,
            executions: row.value("executions")?,
            deferred: row.value("deferred")?,
        })
    }
}

/// Counts are kept per minute of arrival for this long, then rolled up into hours.
pub(super) const COUNTS_BY_MINUTE_HOURS: i64 = 2;

/// Counts by minute older than this are rolled up into hours (see `UpkeepStore::compact_counts`).
pub(crate) fn counts_by_minute_until() -> Timestamp {
    Utc::now() - chrono::Duration::hours(COUNTS_BY_MINUTE_HOURS)
}

pub(super) const MINUTE_US: i64 = 60_000_000;

pub(super) const HOUR_US: i64 = 3_600_000_000;

pub(super) fn floor_to(at: Timestamp, unit_us: i64) -> Timestamp {
    let us = at.timestamp_micros();
    Timestamp::from_timestamp_micros(us - us.rem_euclid(unit_us)).unwrap_or(at)
}

pub(super) fn ceil_to(at: Timestamp, unit_us: i64) -> Timestamp {
    let floor = floor_to(at, unit_us);
    if floor == at {
        at
    } else {
        floor + chrono::Duration::microseconds(unit_us)
    }
}

/// The status an event is reported under, counted one by one (the counting triggers count a
/// processing event as pending, see `push_stats_query`).
pub(super) const STATUS_OF_EVENT: &str =
    "CASE WHEN state = 'pending' AND attempts > 0 THEN 'retrying' ELSE state END";

/// One statement (one snapshot, so the figures agree with each other) that adds up the counts
/// of the whole hours inside the filter's dates, counts the events of the partial hours at its
/// edges one by one (the `created_at` index bounds them to an hour each), and does the same for
/// the 24 hours of "failed lately": whole hours from the counts, the partial one from
/// `failed_events`; processing events (counted as pending) from the queue's leases. Rows:
/// `status`, `n`, and `recent` (failures in the last 24 hours).
pub(super) fn push_stats_query<D: Dialect>(
    query: &mut QueryBuilder<'_, D>,
    filter: &EventFilter,
    now: Timestamp,
) {
    let lately = now - chrono::Duration::hours(24);
    let lately_hours = ceil_to(lately, HOUR_US);
    // Whole hours inside [start, end]: [inner_start, inner_end).
    let inner_start = filter.start.map(|s| ceil_to(s, HOUR_US));
    let inner_end = filter
        .end
        .map(|e| floor_to(e + chrono::Duration::microseconds(1), HOUR_US));
    let has_inner = match (inner_start, inner_end) {
        (Some(s), Some(e)) => s < e,
        _ => true,
    };
    let push_type = |query: &mut QueryBuilder<'_, D>| {
        if let Some(event_type) = &filter.event_type {
            query.push(" AND type = ").push_value(event_type.clone());
        }
    };
    let push_inner = |query: &mut QueryBuilder<'_, D>, column: &str| {
        if let Some(s) = inner_start {
            query
                .push(format_args!(" AND {column} >= "))
                .push_timestamp(s);
        }
        if let Some(e) = inner_end {
            query
                .push(format_args!(" AND {column} < "))
                .push_timestamp(e);
        }
    };
    query.push(
        "SELECT status, CAST(SUM(n) AS BIGINT) AS n, CAST(SUM(recent) AS BIGINT) AS recent \
         FROM (SELECT 'pending' AS status, 0 AS n, 0 AS recent",
    );
    if has_inner {
        for table in ["event_counts", "event_count_changes"] {
            query
                .push(
                    " UNION ALL SELECT status, n, \
                     CASE WHEN status = 'failed' AND failed_hour >= ",
                )
                .push_timestamp(lately_hours)
                .push(format_args!(" THEN n ELSE 0 END FROM {table} WHERE TRUE"));
            push_type(query);
            push_inner(query, "bucket");
        }
        // The counts hold processing events as pending (claims change no count); the
        // processing ones are the queue's leased rows, a worker's capacity at most.
        for (status, n) in [("processing", 1), ("pending", -1)] {
            query.push(format_args!(
                " UNION ALL SELECT '{status}', {n}, 0 FROM {} \
                 WHERE e.id = q.event_id AND q.lease_expires_at IS NOT NULL \
                 AND e.state = 'processing'",
                D::QUEUED_EVENTS
            ));
            if let Some(event_type) = &filter.event_type {
                query.push(" AND e.type = ").push_value(event_type.clone());
            }
            push_inner(query, "e.created_at");
        }
        // Failures of the partial hour at the start of the last 24 hours.
        if lately_hours > lately {
            query.push(" UNION ALL SELECT 'failed', 0, 1 FROM failed_events WHERE failed_at >= ");
            query
                .push_timestamp(lately)
                .push(" AND failed_at < ")
                .push_timestamp(lately_hours);
            push_type(query);
            push_inner(query, "created_at");
        }
    }
    // Events of the partial hours at the edges (or of the whole range, when it is shorter
    // than one whole hour), counted one by one.
    let mut edges: Vec<(Option<Timestamp>, Option<Timestamp>, bool)> = Vec::new();
    if has_inner {
        if let (Some(start), Some(inner)) = (filter.start, inner_start) {
            if start < inner {
                edges.push((Some(start), Some(inner), false));
            }
        }
        if let (Some(end), Some(inner)) = (filter.end, inner_end) {
            if inner <= end {
                edges.push((Some(inner), Some(end), true));
            }
        }
    } else {
        edges.push((filter.start, filter.end, true));
    }
    for (from, to, to_inclusive) in edges {
        query.push(format_args!(
            " UNION ALL SELECT {STATUS_OF_EVENT}, 1, \
             CASE WHEN state = 'failed' AND updated_at >= "
        ));
        query
            .push_timestamp(lately)
            .push(" THEN 1 ELSE 0 END FROM events WHERE TRUE");
        push_type(query);
        if let Some(from) = from {
            query.push(" AND created_at >= ").push_timestamp(from);
        }
        if let Some(to) = to {
            let op = if to_inclusive { "<=" } else { "<" };
            query
                .push(format_args!(" AND created_at {op} "))
                .push_timestamp(to);
        }
    }
    query.push(") counted GROUP BY status");
}
