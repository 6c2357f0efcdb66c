//! Delivery targets: circuit breakers, pauses, events waiting, load reports.

use super::dialect::{Dialect, QueryBuilderExt, RowExt};
use super::rows::*;
use super::Engine;
use crate::model::*;
use crate::{StoreError, TargetStore};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::{Pool, QueryBuilder};

#[async_trait]
impl<E: Engine> TargetStore for E {
    async fn targets(&self) -> Result<Vec<TargetRecord>, StoreError> {
        let mut query = select_targets::<E::Dialect>();
        query.push(" ORDER BY target");
        let mut conn = self.writes().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(target_from_row).collect()
    }

    async fn set_target_paused(
        &self,
        target: &str,
        paused: bool,
    ) -> Result<TargetRecord, StoreError> {
        let now = Utc::now();
        let mut upsert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO targets (target, paused, updated_at) VALUES (",
        );
        upsert
            .push_value(target.to_owned())
            .push(", ")
            .push_value(paused)
            .push(", ")
            .push_timestamp(now)
            .push(") ON CONFLICT (target) DO UPDATE SET paused = ")
            .push_value(paused)
            .push(", updated_at = ")
            .push_timestamp(now);
        upsert_target::<E::Dialect>(self.writes(), upsert, target).await
    }

    async fn set_target_rate(
        &self,
        target: &str,
        max_per_second: Option<f64>,
    ) -> Result<TargetRecord, StoreError> {
        let now = Utc::now();
        let mut upsert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO targets (target, max_per_second, updated_at) VALUES (",
        );
        upsert
            .push_value(target.to_owned())
            .push(", ")
            .push_value(max_per_second)
            .push(", ")
            .push_timestamp(now)
            .push(") ON CONFLICT (target) DO UPDATE SET max_per_second = ")
            .push_value(max_per_second)
            .push(", updated_at = ")
            .push_timestamp(now);
        upsert_target::<E::Dialect>(self.writes(), upsert, target).await
    }

    async fn reserve_sends(
        &self,
        target: &str,
        count: i64,
        interval_us: i64,
    ) -> Result<Timestamp, StoreError> {
        let now_us = Utc::now().timestamp_micros();
        let span = count.max(1).saturating_mul(interval_us.max(0));
        let mut reserve = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO targets (target, pace_next_us, updated_at) VALUES (",
        );
        reserve
            .push_value(target.to_owned())
            .push(", ")
            .push_value(now_us.saturating_add(span))
            .push(", ")
            .push_timestamp(Utc::now())
            .push(
                ") ON CONFLICT (target) DO UPDATE SET pace_next_us = CASE \
                 WHEN targets.pace_next_us IS NULL OR targets.pace_next_us < ",
            )
            .push_value(now_us)
            .push(" THEN ")
            .push_value(now_us)
            .push(" ELSE targets.pace_next_us END + ")
            .push_value(span)
            .push(" RETURNING pace_next_us");
        let mut conn = self.writes().acquire().await?;
        let row = reserve.fetch_one(&mut conn).await?;
        let next: i64 = row.value("pace_next_us")?;
        chrono::DateTime::from_timestamp_micros(next.saturating_sub(span))
            .ok_or_else(|| StoreError::Corrupt(format!("targets.pace_next_us: {next}")))
    }

    async fn throttle_target(
        &self,
        target: &str,
        until: Timestamp,
        slowdown: f64,
    ) -> Result<TargetRecord, StoreError> {
        let now = Utc::now();
        let until_us = until.timestamp_micros();
        let fresh = "(targets.throttled_at IS NULL OR targets.throttled_at < ";
        let a_second_ago = now - chrono::Duration::seconds(1);
        let mut upsert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO targets (target, pace_next_us, slowdown, throttled_at, updated_at) \
             VALUES (",
        );
        upsert
            .push_value(target.to_owned())
            .push(", ")
            .push_value(until_us)
            .push(", ")
            .push_value(slowdown)
            .push(", ")
            .push_timestamp(now)
            .push(", ")
            .push_timestamp(now)
            .push(
                ") ON CONFLICT (target) DO UPDATE SET pace_next_us = CASE \
                 WHEN targets.pace_next_us IS NULL OR targets.pace_next_us < ",
            )
            .push_value(until_us)
            .push(" THEN ")
            .push_value(until_us)
            .push(" ELSE targets.pace_next_us END, slowdown = CASE WHEN ")
            .push(fresh)
            .push_timestamp(a_second_ago)
            .push(") THEN ")
            .push_value(slowdown)
            .push(" ELSE targets.slowdown END, throttled_at = CASE WHEN ")
            .push(fresh)
            .push_timestamp(a_second_ago)
            .push(") THEN ")
            .push_timestamp(now)
            .push(" ELSE targets.throttled_at END, updated_at = ")
            .push_timestamp(now);
        upsert_target::<E::Dialect>(self.writes(), upsert, target).await
    }

    async fn record_target_failure(
        &self,
        target: &str,
        error: &str,
        threshold: i64,
        open_ms: i64,
    ) -> Result<TargetRecord, StoreError> {
        let now = Utc::now();
        let probe_at = now + chrono::Duration::milliseconds(open_ms);
        let opens = "(targets.state = 'half_open' OR (targets.state = 'closed' AND \
             targets.consecutive_failures + 1 >= ";
        let mut upsert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO targets (target, state, consecutive_failures, last_error, \
             last_failure_at, opened_at, next_probe_at, failed_total, updated_at) VALUES (",
        );
        let opens_at_once = threshold <= 1;
        upsert
            .push_value(target.to_owned())
            .push(", ")
            .push_value(if opens_at_once { "open" } else { "closed" }.to_owned())
            .push(", 1, ")
            .push_value(error.to_owned())
            .push(", ")
            .push_timestamp(now)
            .push(", ");
        if opens_at_once {
            upsert
                .push_timestamp(now)
                .push(", ")
                .push_timestamp(probe_at);
        } else {
            upsert.push("NULL, NULL");
        }
        upsert
            .push(", 1, ")
            .push_timestamp(now)
            .push(") ON CONFLICT (target) DO UPDATE SET ")
            .push("opened_at = CASE WHEN ")
            .push(opens)
            .push_value(threshold)
            .push(")) THEN ")
            .push_timestamp(now)
            .push(" ELSE targets.opened_at END, next_probe_at = CASE WHEN ")
            .push(opens)
            .push_value(threshold)
            .push(")) THEN ")
            .push_timestamp(probe_at)
            .push(" ELSE targets.next_probe_at END, state = CASE WHEN ")
            .push(opens)
            .push_value(threshold)
            .push(")) THEN 'open' ELSE targets.state END, ")
            .push("consecutive_failures = targets.consecutive_failures + 1, last_error = ")
            .push_value(error.to_owned())
            .push(", last_failure_at = ")
            .push_timestamp(now)
            .push(", failed_total = targets.failed_total + 1, updated_at = ")
            .push_timestamp(now);
        upsert_target::<E::Dialect>(self.writes(), upsert, target).await
    }

    async fn close_target(&self, target: &str) -> Result<TargetRecord, StoreError> {
        let now = Utc::now();
        let mut upsert =
            QueryBuilder::<E::Dialect>::new("INSERT INTO targets (target, updated_at) VALUES (");
        upsert
            .push_value(target.to_owned())
            .push(", ")
            .push_timestamp(now)
            .push(
                ") ON CONFLICT (target) DO UPDATE SET state = 'closed', consecutive_failures = 0, \
                 opened_at = NULL, next_probe_at = NULL, updated_at = ",
            )
            .push_timestamp(now);
        upsert_target::<E::Dialect>(self.writes(), upsert, target).await
    }

    async fn claim_target_probe(&self, target: &str, open_ms: i64) -> Result<bool, StoreError> {
        let now = Utc::now();
        let mut claim = QueryBuilder::<E::Dialect>::new(
            "UPDATE targets SET state = 'half_open', next_probe_at = ",
        );
        claim
            .push_timestamp(now + chrono::Duration::milliseconds(open_ms))
            .push(", updated_at = ")
            .push_timestamp(now)
            .push(" WHERE target = ")
            .push_value(target.to_owned())
            .push(" AND state IN ('open', 'half_open') AND next_probe_at <= ")
            .push_timestamp(now)
            .push(" RETURNING target");
        let mut conn = self.writes().acquire().await?;
        Ok(claim.fetch_optional(&mut conn).await?.is_some())
    }

    async fn release_waiting(
        &self,
        target: &str,
        limit: i64,
        as_probe: bool,
    ) -> Result<u64, StoreError> {
        let mut release =
            QueryBuilder::<E::Dialect>::new("UPDATE event_queue SET next_attempt_at = ");
        release.push_now(Utc::now());
        if !as_probe {
            release.push(", waiting_for = NULL, waiting_since = NULL");
        }
        release
            .push(
                " WHERE event_id IN (SELECT event_id FROM event_queue \
                 WHERE lease_expires_at IS NULL AND waiting_for = ",
            )
            .push_value(target.to_owned())
            .push(" ORDER BY waiting_for, event_id LIMIT ")
            .push_value(limit)
            .push(<E::Dialect as Dialect>::SKIP_LOCKED)
            .push(") RETURNING event_id");
        let mut conn = self.deliveries().acquire().await?;
        Ok(release.fetch_all(&mut conn).await?.len() as u64)
    }

    async fn report_targets(
        &self,
        worker: &str,
        reports: &[TargetReport],
    ) -> Result<(), StoreError> {
        if reports.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut tx = self.writes().begin().await?;
        // A few targets a second per worker: one small statement each is plenty.
        for report in reports {
            if report.delivered > 0 || report.failed > 0 {
                let mut totals = QueryBuilder::<E::Dialect>::new(
                    "INSERT INTO targets (target, delivered_total, failed_total, updated_at) VALUES (",
                );
                totals
                    .push_value(report.target.clone())
                    .push(", ")
                    .push_value(report.delivered)
                    .push(", ")
                    .push_value(report.failed)
                    .push(", ")
                    .push_timestamp(now)
                    .push(") ON CONFLICT (target) DO UPDATE SET delivered_total = targets.delivered_total + ")
                    .push_value(report.delivered)
                    .push(", failed_total = targets.failed_total + ")
                    .push_value(report.failed);
                totals.execute(&mut tx).await?;
            }
            let mut load = QueryBuilder::<E::Dialect>::new(
                "INSERT INTO target_load (target, worker, in_flight, updated_at) VALUES (",
            );
            load.push_value(report.target.clone())
                .push(", ")
                .push_value(worker.to_owned())
                .push(", ")
                .push_value(report.in_flight)
                .push(", ")
                .push_timestamp(now)
                .push(") ON CONFLICT (target, worker) DO UPDATE SET in_flight = ")
                .push_value(report.in_flight)
                .push(", updated_at = ")
                .push_timestamp(now);
            load.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// How recent a worker's load report must be to count as in flight.
pub(super) const LOAD_FRESH_SECS: i64 = 5;

/// Targets with what is in flight to each (as the worker processes reported it lately) and
/// what waits for each in the queue.
pub(super) fn select_targets<D: Dialect>() -> QueryBuilder<'static, D> {
    let mut query = QueryBuilder::<D>::new(format!(
        "SELECT {TARGET_COLUMNS}, (SELECT CAST(SUM(l.in_flight) AS BIGINT) FROM target_load l \
         WHERE l.target = targets.target AND l.updated_at > "
    ));
    query
        .push_timestamp(Utc::now() - chrono::Duration::seconds(LOAD_FRESH_SECS))
        .push(
            ") AS in_flight, \
             (SELECT COUNT(*) FROM event_queue w WHERE w.waiting_for = targets.target) \
                AS waiting, \
             (SELECT MIN(w.waiting_since) FROM event_queue w \
                WHERE w.waiting_for = targets.target) AS waiting_since \
             FROM targets",
        );
    query
}

/// Runs an upsert of one target's row, then reads the row back.
pub(super) async fn upsert_target<D: Dialect>(
    pool: &Pool<D>,
    mut upsert: QueryBuilder<'_, D>,
    target: &str,
) -> Result<TargetRecord, StoreError> {
    let mut conn = pool.acquire().await?;
    upsert.execute(&mut conn).await?;
    let mut query = select_targets::<D>();
    query.push(" WHERE target = ").push_value(target.to_owned());
    target_from_row(&query.fetch_one(&mut conn).await?)
}
