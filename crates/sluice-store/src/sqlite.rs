//! The SQLite store: zero setup, one process, one file (WAL mode).
//!
//! SQLite allows one writer at a time, so writes go through a single-connection pool (no
//! `SQLITE_BUSY` between our own writers) while reads use a pool of their own. Timestamps are
//! stored as integer microseconds so they sort and compare as numbers.
//!
//! What is written here is what SQLite does its own way: the ingest upsert and the worker's
//! claim, lease, completion and release (chunked or per-row statements on the one writer).
//! Everything else comes from [`crate::shared`].

use crate::ingest::UpsertRow;
use crate::model::*;
use crate::shared::dialect::{parse_text, Dialect, RowExt};
use crate::shared::rows::{event_from_row, state_change_from_row, summary_from_row, EVENT_COLUMNS};
use crate::shared::stats::counts_by_minute_until;
use crate::shared::Engine;
use crate::worker::{release_message, CompletionPlan};
use crate::{Backend, NotificationStream, QueueStore, SignalStore, StoreError, UpkeepStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sluice_core::event::{AttemptStatus, EventState};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Rows per multi-row statement, well under SQLite's bound-parameter limit.
const ROWS_PER_STATEMENT: usize = 1000;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

pub(crate) fn to_micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp out of range: {micros}")))
}

fn opt_from_micros(micros: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    micros.map(from_micros).transpose()
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid DATABASE_URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit survives power loss too, which is what a 201 promises.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // No ping before each use (sqlx's default): a SQLite connection does not go away,
        // and the ping is a round trip to the connection's thread.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        // An in-memory database exists per connection: everything must share the writer.
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Self { writer, reader })
    }
}

async fn upsert_round(
    conn: &mut SqliteConnection,
    rows: &[UpsertRow<'_>],
    now: i64,
) -> Result<HashMap<String, EventSummary>, StoreError> {
    let mut summaries = HashMap::with_capacity(rows.len());
    // A new event enters the queue by the insert trigger, in the same statement.
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (external_id, type, payload, payload_hash, received_count, \
             ordering_key, next_attempt_at, trace_context, created_at, updated_at) ",
        );
        query.push_values(chunk, |mut values, row| {
            values
                .push_bind(row.external_id)
                .push_bind(row.event_type)
                .push_bind(row.payload)
                .push_bind(row.payload_hash)
                .push_bind(row.count)
                .push_bind(row.ordering_key)
                .push_bind(row.process_at.map_or(now, to_micros))
                .push_bind(row.trace_context)
                .push_bind(now)
                .push_bind(now);
        });
        query.push(
            " ON CONFLICT (external_id) DO UPDATE \
               SET received_count = events.received_count + excluded.received_count, \
                   updated_at = excluded.updated_at \
               WHERE events.payload_hash = excluded.payload_hash \
             RETURNING id, external_id, type, state, received_count, created_at",
        );
        for row in &query.build().fetch_all(&mut *conn).await? {
            let summary = summary_from_row(row)?;
            summaries.insert(summary.external_id.clone(), summary);
        }
    }
    Ok(summaries)
}

/// `(?, ?, …)`, one placeholder per value.
fn push_in_list<'a, T>(query: &mut QueryBuilder<'a, Sqlite>, values: impl IntoIterator<Item = T>)
where
    T: 'a + sqlx::Encode<'a, Sqlite> + sqlx::Type<Sqlite>,
{
    query.push("(");
    let mut separated = query.separated(", ");
    for value in values {
        separated.push_bind(value);
    }
    query.push(")");
}

impl Dialect for Sqlite {
    // One writer at a time: a transaction's reads cannot be overtaken by another's writes.
    const FOR_UPDATE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const PAYLOAD_BYTES: &'static str = "length(CAST(payload AS BLOB))";
    // CROSS JOIN fixes SQLite's join order: left to right.
    const QUEUED_EVENTS: &'static str = "event_queue q CROSS JOIN events e";

    fn push_timestamp(query: &mut QueryBuilder<'_, Self>, at: Timestamp) {
        query.push_bind(to_micros(at));
    }

    fn push_now(query: &mut QueryBuilder<'_, Self>, now: Timestamp) {
        query.push_bind(to_micros(now));
    }

    fn push_in_ids(query: &mut QueryBuilder<'_, Self>, column: &str, ids: &[i64]) {
        query.push(column).push(" IN ");
        push_in_list(query, ids.iter().copied());
    }

    fn push_in_texts(query: &mut QueryBuilder<'_, Self>, column: &str, values: &[String]) {
        query.push(column).push(" IN ");
        push_in_list(query, values.iter().cloned());
    }

    fn timestamp(row: &SqliteRow, column: &str) -> Result<Timestamp, StoreError> {
        from_micros(row.try_get(column)?)
    }

    fn opt_timestamp(row: &SqliteRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
        opt_from_micros(row.try_get(column)?)
    }

    fn json(row: &SqliteRow, column: &str) -> Result<Value, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("{column} is not JSON: {e}")))
    }
}

#[async_trait]
impl Engine for SqliteStore {
    type Dialect = Sqlite;

    const BACKEND: Backend = Backend::Sqlite;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn reads(&self) -> &SqlitePool {
        &self.reader
    }

    fn writes(&self) -> &SqlitePool {
        &self.writer
    }

    const UPSERT_ROWS_PER_STATEMENT: usize = ROWS_PER_STATEMENT;

    async fn upsert_round(
        conn: &mut SqliteConnection,
        rows: &[UpsertRow<'_>],
    ) -> Result<HashMap<String, EventSummary>, StoreError> {
        upsert_round(conn, rows, to_micros(Utc::now())).await
    }
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn claim_due_events(
        &self,
        worker: &str,
        types: &TypeSelector,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let mut writer = UnsyncedWriter::begin(&self.writer).await?;
        // On an error the writer is dropped mid-transaction, which closes its connection
        // (rolling the transaction back) rather than returning it to the pool.
        let claimed = claim_on(writer.connection(), worker, types, limit, lease_ms).await?;
        writer.commit().await?;
        Ok(claimed)
    }

    async fn extend_leases(&self, leases: &[HeldLease], lease_ms: i64) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let until = to_micros(Utc::now()) + lease_ms * 1000;
        let mut query = QueryBuilder::new("UPDATE event_queue SET lease_expires_at = ");
        query.push_bind(until);
        query.push(" WHERE lease_expires_at IS NOT NULL AND event_id IN ");
        push_in_list(&mut query, leases.iter().map(|l| l.event_id));
        query.push(
            " AND event_id IN (SELECT id FROM events WHERE state = 'processing' \
             AND current_attempt_id IN ",
        );
        push_in_list(&mut query, leases.iter().map(|l| l.attempt_id));
        query.push(")");
        query.build().execute(&self.writer).await?;
        Ok(())
    }

    async fn complete_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<StateChange>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        // Truncated as stored, so what is announced is what is recorded.
        let now_at = from_micros(to_micros(Utc::now()))?;
        let now = to_micros(now_at);
        let plan = CompletionPlan::new(outcomes);
        // Each step is one statement over the whole batch, its rows passed as one JSON array
        // (the same statement text whatever the batch size, so it is prepared once): a
        // statement per row was four round trips to the one writer per event, inside the
        // transaction that holds it.
        let x = &plan.new_executions;
        let executions: Vec<Value> = (0..x.attempt_ids.len())
            .map(|i| {
                json!({
                    "attempt_id": x.attempt_ids[i], "event_id": x.event_ids[i],
                    "rule_id": x.rule_ids[i], "rule_version_id": x.rule_version_ids[i],
                    "result": x.results[i], "error": x.errors[i], "key": x.keys[i],
                    "duration_ms": x.durations[i],
                })
            })
            .collect();
        let s = &plan.started;
        let started: Vec<Value> = (0..s.ids.len())
            .map(|i| {
                json!({
                    "id": s.ids[i], "result": s.results[i], "error": s.errors[i],
                    "duration_ms": s.durations[i],
                })
            })
            .collect();
        let e = &plan.events;
        let moves: Vec<Value> = (0..e.event_ids.len())
            .map(|i| {
                json!({
                    "event_id": e.event_ids[i], "attempt_id": e.attempt_ids[i],
                    "state": e.states[i], "next_at": e.next_ats[i].map(to_micros),
                    "error": e.errors[i], "deferred": e.deferred[i],
                    "set_aside": e.set_aside[i],
                })
            })
            .collect();
        let mut tx = self.writer.begin().await?;
        if !executions.is_empty() {
            sqlx::query(
                "INSERT INTO rule_executions (attempt_id, event_id, rule_id, rule_version_id, \
                    result, error, idempotency_key, duration_ms, executed_at) \
                 SELECT value ->> 'attempt_id', value ->> 'event_id', value ->> 'rule_id', \
                    value ->> 'rule_version_id', value ->> 'result', value ->> 'error', \
                    value ->> 'key', value ->> 'duration_ms', ?2 \
                 FROM json_each(?1) ORDER BY key",
            )
            .bind(Value::Array(executions).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if !started.is_empty() {
            sqlx::query(
                "UPDATE rule_executions SET result = v.result, error = v.error, \
                    duration_ms = v.duration_ms, executed_at = ?2 \
                 FROM (SELECT value ->> 'id' AS id, value ->> 'result' AS result, \
                    value ->> 'error' AS error, value ->> 'duration_ms' AS duration_ms \
                    FROM json_each(?1)) AS v \
                 WHERE rule_executions.id = v.id",
            )
            .bind(Value::Array(started).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // Only events their attempt still holds move; the others' rows do not come back.
        let moved = sqlx::query(
            "UPDATE events SET state = v.state, next_attempt_at = v.next_at, \
                last_error = CASE WHEN v.set_aside THEN events.last_error ELSE v.error END, \
                attempts = CASE WHEN v.set_aside THEN events.attempts - 1 \
                    ELSE events.attempts END, \
                processed_at = CASE WHEN v.state = 'pending' THEN NULL ELSE ?2 END, \
                next_trigger = CASE WHEN v.state = 'pending' AND NOT v.deferred THEN 'retry' \
                    ELSE events.next_trigger END, \
                run_attempts = CASE WHEN v.deferred THEN events.run_attempts - 1 \
                    ELSE events.run_attempts END, \
                lease_expires_at = NULL, leased_by = NULL, current_attempt_id = NULL, \
                updated_at = ?2 \
             FROM (SELECT value ->> 'event_id' AS event_id, value ->> 'attempt_id' AS attempt_id, \
                value ->> 'state' AS state, value ->> 'next_at' AS next_at, \
                value ->> 'error' AS error, value ->> 'deferred' AS deferred, \
                value ->> 'set_aside' AS set_aside \
                FROM json_each(?1)) AS v \
             WHERE events.id = v.event_id AND events.current_attempt_id = v.attempt_id \
                AND events.state = 'processing' \
             RETURNING id, external_id, type, state",
        )
        .bind(Value::Array(moves).to_string())
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let attempt_of: HashMap<i64, i64> = e
            .event_ids
            .iter()
            .copied()
            .zip(e.attempt_ids.iter().copied())
            .collect();
        // In the batch's order, as announced.
        let position: HashMap<i64, usize> = e
            .event_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect();
        let mut moved = moved;
        moved.sort_by_key(|row| {
            row.try_get::<i64, _>("id")
                .ok()
                .and_then(|id| position.get(&id).copied())
        });
        let mut kept = Vec::with_capacity(moved.len());
        let mut changes = Vec::with_capacity(moved.len());
        let mut settled = Vec::new();
        let mut requeued = Vec::new();
        let mut set_aside = Vec::new();
        for row in &moved {
            let event_id: i64 = row.try_get("id")?;
            let attempt_id = attempt_of.get(&event_id).copied().ok_or_else(|| {
                StoreError::Corrupt(format!("completion moved event {event_id} it did not hold"))
            })?;
            let at = position.get(&event_id).copied();
            let aside = at.is_some_and(|i| e.set_aside[i]);
            let change = state_change_from_row(row, (!aside).then_some(attempt_id))?;
            if change.state == EventState::Pending {
                let next_at = at.and_then(|i| e.next_ats[i]).map(to_micros).unwrap_or(now);
                let waiting_for = at.and_then(|i| e.waiting_for[i].clone());
                requeued.push(
                    json!({"event_id": event_id, "next_at": next_at, "waiting_for": waiting_for}),
                );
            } else {
                settled.push(event_id);
            }
            if aside {
                set_aside.push(attempt_id);
            }
            kept.push(attempt_id);
            changes.push(change);
        }
        if !set_aside.is_empty() {
            // The claim wrote the attempt's row; an event set aside had no attempt.
            sqlx::query("DELETE FROM event_attempts WHERE id IN (SELECT value FROM json_each(?))")
                .bind(json!(set_aside).to_string())
                .execute(&mut *tx)
                .await?;
        }
        if !settled.is_empty() {
            sqlx::query(
                "DELETE FROM event_queue WHERE event_id IN (SELECT value FROM json_each(?))",
            )
            .bind(json!(settled).to_string())
            .execute(&mut *tx)
            .await?;
        }
        if !requeued.is_empty() {
            sqlx::query(
                "UPDATE event_queue SET next_attempt_at = v.next_at, lease_expires_at = NULL, \
                    waiting_since = CASE WHEN v.waiting_for IS NULL THEN NULL \
                        WHEN event_queue.waiting_for = v.waiting_for \
                        THEN event_queue.waiting_since ELSE ?2 END, \
                    waiting_for = v.waiting_for \
                 FROM (SELECT value ->> 'event_id' AS event_id, value ->> 'next_at' AS next_at, \
                    value ->> 'waiting_for' AS waiting_for FROM json_each(?1)) AS v \
                 WHERE event_queue.event_id = v.event_id",
            )
            .bind(Value::Array(requeued).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let a = plan.attempts_for(&kept);
        if !a.ids.is_empty() {
            let ends: Vec<Value> = (0..a.ids.len())
                .map(|i| {
                    json!({
                        "id": a.ids[i], "status": a.statuses[i], "error": a.errors[i],
                        "duration_ms": a.durations[i],
                    })
                })
                .collect();
            sqlx::query(
                "UPDATE event_attempts SET status = v.status, error = v.error, \
                    finished_at = ?2, duration_ms = v.duration_ms \
                 FROM (SELECT value ->> 'id' AS id, value ->> 'status' AS status, \
                    value ->> 'error' AS error, value ->> 'duration_ms' AS duration_ms \
                    FROM json_each(?1)) AS v \
                 WHERE event_attempts.id = v.id AND event_attempts.status = 'running'",
            )
            .bind(Value::Array(ends).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for change in &mut changes {
            if let Some(i) = a.ids.iter().position(|id| Some(*id) == change.attempt_id) {
                change.status = Some(parse_text(a.statuses[i].to_owned())?);
                change.finished_at = Some(now_at);
                change.duration_ms = Some(a.durations[i]);
            }
        }
        Ok(changes)
    }

    async fn release_events(
        &self,
        which: Release,
        max_attempts: i64,
    ) -> Result<Vec<StateChange>, StoreError> {
        // Truncated as stored, so what is announced is what is recorded.
        let now_at = from_micros(to_micros(Utc::now()))?;
        let now = to_micros(now_at);
        let message = release_message(which);
        let mut tx = self.writer.begin().await?;
        let stale = match which {
            Release::Expired => {
                sqlx::query(
                    "SELECT e.id, e.current_attempt_id FROM event_queue q \
                     JOIN events e ON e.id = q.event_id \
                     WHERE e.state = 'processing' AND q.lease_expires_at < ?",
                )
                .bind(now)
                .fetch_all(&mut *tx)
                .await?
            }
            Release::OlderThan(seconds) => {
                sqlx::query(
                    "SELECT id, current_attempt_id FROM events \
                     WHERE state = 'processing' AND updated_at < ?",
                )
                .bind(now - seconds * 1_000_000)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        let mut changes = Vec::with_capacity(stale.len());
        for row in &stale {
            let event_id: i64 = row.value("id")?;
            let attempt_id: Option<i64> = row.value("current_attempt_id")?;
            let moved = sqlx::query(
                "UPDATE events SET \
                    state = CASE WHEN run_attempts >= COALESCE((SELECT t.max_attempts FROM event_types t WHERE t.event_type = events.type), ?1) THEN 'failed' ELSE 'pending' END, \
                    processed_at = CASE WHEN run_attempts >= COALESCE((SELECT t.max_attempts FROM event_types t WHERE t.event_type = events.type), ?1) THEN ?3 ELSE NULL END, \
                    next_attempt_at = ?3, next_trigger = 'retry', last_error = ?2, \
                    lease_expires_at = NULL, leased_by = NULL, current_attempt_id = NULL, \
                    updated_at = ?3 \
                 WHERE id = ?4 RETURNING id, external_id, type, state",
            )
            .bind(max_attempts)
            .bind(message)
            .bind(now)
            .bind(event_id)
            .fetch_one(&mut *tx)
            .await?;
            if moved.try_get::<String, _>("state")? == "failed" {
                sqlx::query("DELETE FROM event_queue WHERE event_id = ?")
                    .bind(event_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "UPDATE event_queue SET next_attempt_at = ?, lease_expires_at = NULL \
                     WHERE event_id = ?",
                )
                .bind(now)
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
            }
            let ended: Option<(i64,)> = match attempt_id {
                Some(attempt_id) => sqlx::query_as(
                    "UPDATE event_attempts SET status = 'abandoned', error = ?, finished_at = ?, \
                            duration_ms = (? - started_at) / 1000 \
                         WHERE id = ? AND status = 'running' RETURNING duration_ms",
                )
                .bind(message)
                .bind(now)
                .bind(now)
                .bind(attempt_id)
                .fetch_optional(&mut *tx)
                .await?,
                None => None,
            };
            changes.push(StateChange {
                status: ended.map(|_| AttemptStatus::Abandoned),
                finished_at: ended.map(|_| now_at),
                duration_ms: ended.map(|(d,)| d),
                ..state_change_from_row(&moved, attempt_id)?
            });
        }
        tx.commit().await?;
        Ok(changes)
    }
}

#[async_trait]
impl UpkeepStore for SqliteStore {
    async fn compact_queue(&self) -> Result<(), StoreError> {
        // SQLite reuses a deleted row's space within the file by itself.
        Ok(())
    }

    async fn compact_counts(&self) -> Result<(), StoreError> {
        let minutes_until = counts_by_minute_until();
        // The triggers here update `event_counts` in place (one writer at a time); only the
        // roll-up of old minutes into hours is left to do.
        let until = to_micros(minutes_until);
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n) \
             SELECT type, bucket - bucket % 3600000000, 60, status, failed_hour, SUM(n) \
             FROM event_counts WHERE bucket_minutes = 1 AND bucket < ?1 \
             GROUP BY type, bucket - bucket % 3600000000, status, failed_hour \
             ON CONFLICT (type, bucket, bucket_minutes, status, failed_hour) \
             DO UPDATE SET n = n + excluded.n",
        )
        .bind(until)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM event_counts WHERE bucket_minutes = 1 AND bucket < ?1")
            .bind(until)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM event_counts WHERE n = 0")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_settled(&self, before: Timestamp, limit: i64) -> Result<u64, StoreError> {
        // One writer: the three statements see the same oldest events.
        const DOOMED: &str = "SELECT id FROM events WHERE created_at < ?1 AND updated_at < ?1 \
             AND state IN ('processed', 'failed') ORDER BY created_at LIMIT ?2";
        let before = to_micros(before);
        let mut tx = self.writer.begin().await?;
        sqlx::query(&format!(
            "DELETE FROM rule_executions WHERE attempt_id IN \
             (SELECT id FROM event_attempts WHERE event_id IN ({DOOMED}))"
        ))
        .bind(before)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM event_attempts WHERE event_id IN ({DOOMED})"
        ))
        .bind(before)
        .bind(limit)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query(&format!("DELETE FROM events WHERE id IN ({DOOMED})"))
            .bind(before)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

#[async_trait]
impl SignalStore for SqliteStore {
    async fn notify(&self, _notifications: &[(&str, String)]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn listen(&self, _channels: &[&str]) -> Result<Option<NotificationStream>, StoreError> {
        Ok(None)
    }
}

/// `{open}type GLOB ? OR …)` for each glob; nothing for none.
fn push_globs(query: &mut QueryBuilder<'_, Sqlite>, open: &str, globs: &[String]) {
    if globs.is_empty() {
        return;
    }
    query.push(open);
    for (i, glob) in globs.iter().enumerate() {
        if i > 0 {
            query.push(" OR ");
        }
        query
            .push("type GLOB ")
            .push_bind(TypeSelector::glob_pattern(glob));
    }
    query.push(")");
}

/// A claim: leases the due events and opens their attempts, inside the transaction open on
/// `tx`. Three statements, each one round trip to the writer's thread.
async fn claim_on(
    tx: &mut SqliteConnection,
    worker: &str,
    types: &TypeSelector,
    limit: i64,
    lease_ms: i64,
) -> Result<Vec<ClaimedEvent>, StoreError> {
    let now = to_micros(Utc::now());
    let mut lease = QueryBuilder::new("UPDATE event_queue SET lease_expires_at = ");
    lease.push_bind(now + lease_ms * 1000).push(
        " WHERE event_id IN (SELECT event_id FROM event_queue q \
         WHERE lease_expires_at IS NULL AND next_attempt_at <= ",
    );
    lease.push_bind(now);
    push_globs(&mut lease, " AND (", &types.include);
    push_globs(&mut lease, " AND NOT (", &types.exclude);
    // One event per ordering key at a time: the lowest unsettled (queued) one.
    lease.push(
        " AND (ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM event_queue o \
         WHERE o.ordering_key = q.ordering_key AND o.event_id < q.event_id))",
    );
    lease
        .push(" ORDER BY next_attempt_at, event_id LIMIT ")
        .push_bind(limit)
        .push(") RETURNING event_id, next_attempt_at, waiting_for, waiting_since");
    let mut leased: Vec<(i64, i64, Option<String>, Option<i64>)> =
        lease.build_query_as().fetch_all(&mut *tx).await?;
    if leased.is_empty() {
        return Ok(Vec::new());
    }
    // RETURNING comes in no particular order; the attempts run in due order.
    leased.sort_unstable_by_key(|&(event_id, next_attempt_at, ..)| (next_attempt_at, event_id));
    let due: Vec<i64> = leased.iter().map(|&(event_id, ..)| event_id).collect();
    let mut waiting: HashMap<i64, (Option<String>, Option<i64>)> = leased
        .into_iter()
        .map(|(event_id, _, target, since)| (event_id, (target, since)))
        .collect();
    let mut insert = QueryBuilder::new(
        "INSERT INTO event_attempts \
         (event_id, attempt_no, trigger, status, worker, started_at, requested_by) \
         SELECT id, attempts + 1, next_trigger, 'running', ",
    );
    insert.push_bind(worker).push(", ").push_bind(now);
    insert.push(", CASE WHEN next_trigger = 'replay' THEN replay_requested_by END");
    insert.push(" FROM events WHERE id IN ");
    push_in_list(&mut insert, due.iter().copied());
    insert.push(" RETURNING id, event_id, attempt_no, trigger");
    let attempts = insert.build().fetch_all(&mut *tx).await?;
    let mut by_event: HashMap<i64, (i64, i64, String)> = HashMap::new();
    for row in &attempts {
        by_event.insert(
            row.try_get("event_id")?,
            (
                row.try_get("id")?,
                row.try_get("attempt_no")?,
                row.try_get("trigger")?,
            ),
        );
    }
    let mut update = QueryBuilder::new(
        "UPDATE events SET state = 'processing', attempts = attempts + 1, \
         run_attempts = run_attempts + 1, \
         current_attempt_id = (SELECT a.id FROM event_attempts a \
            WHERE a.event_id = events.id AND a.attempt_no = events.attempts + 1), leased_by = ",
    );
    update
        .push_bind(worker)
        .push(", lease_expires_at = ")
        .push_bind(now + lease_ms * 1000)
        .push(", updated_at = ")
        .push_bind(now)
        .push(", claimed_at = ")
        .push_bind(now)
        .push(" WHERE id IN ");
    push_in_list(&mut update, due.iter().copied());
    update.push(format!(
        " RETURNING {EVENT_COLUMNS}, run_attempts, replay_rules, trace_context, \
         (SELECT generation FROM rule_generation WHERE id = 1) AS rule_generation"
    ));
    let rows = update.build().fetch_all(&mut *tx).await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let event = event_from_row(row)?;
        let Some((attempt_id, attempt_no, trigger)) = by_event.remove(&event.id) else {
            return Err(StoreError::Corrupt(format!(
                "claimed event {} has no attempt",
                event.id
            )));
        };
        let (waiting_for, waiting_since) = waiting.remove(&event.id).unwrap_or_default();
        claimed.push(ClaimedEvent {
            attempt_id,
            attempt_no,
            trigger: parse_text(trigger)?,
            replay_rules: row.text_enum("replay_rules")?,
            run_attempts: row.value("run_attempts")?,
            rule_generation: row.value("rule_generation")?,
            waiting_for,
            waiting_since: opt_from_micros(waiting_since)?,
            trace_context: row.value("trace_context")?,
            event,
        });
    }
    let order: HashMap<i64, usize> = due.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    claimed.sort_by_key(|c| order.get(&c.event.id).copied().unwrap_or(usize::MAX));
    Ok(claimed)
}

/// The writer connection in a transaction at `synchronous=NORMAL`, for one whose loss in a
/// power failure is harmless: a claim (the event is simply still due). Its WAL frames are
/// made durable by the fsync of the next `FULL` commit (the WAL is one file, appended in
/// order), so no outcome or `started` record is ever durable without its claim, and a claim
/// saves one fsync on the one writer. `commit` commits and sets `FULL` again in one round
/// trip; a writer dropped without it (an error, a cancelled future) closes its connection
/// instead of returning it, which rolls the transaction back, so the pool never hands out a
/// lax writer or an open transaction.
struct UnsyncedWriter {
    connection: Option<PoolConnection<Sqlite>>,
}

impl UnsyncedWriter {
    /// Takes the writer and opens the transaction (one round trip, as a plain `BEGIN`).
    async fn begin(pool: &SqlitePool) -> Result<Self, StoreError> {
        let mut writer = Self {
            connection: Some(pool.acquire().await?),
        };
        sqlx::query("PRAGMA synchronous = NORMAL; BEGIN")
            .execute(writer.connection())
            .await?;
        Ok(writer)
    }

    fn connection(&mut self) -> &mut SqliteConnection {
        self.connection
            .as_deref_mut()
            .expect("the connection is only taken by commit, which consumes the writer")
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT; PRAGMA synchronous = FULL")
            .execute(self.connection())
            .await?;
        // Committed and restored: hand the connection back to the pool as usual.
        drop(self.connection.take());
        Ok(())
    }
}

impl Drop for UnsyncedWriter {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.as_mut() {
            connection.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_core::event::NewEvent;

    async fn synchronous(store: &SqliteStore) -> i64 {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&store.writer)
            .await
            .expect("the pragma reads back")
    }

    #[tokio::test]
    async fn a_claim_leaves_the_writer_synchronous_full() {
        let store = SqliteStore::connect("sqlite::memory:", 1)
            .await
            .expect("an in-memory store");
        crate::Store::migrate(&store).await.expect("migrations run");
        const FULL: i64 = 2;
        assert_eq!(synchronous(&store).await, FULL);
        let event =
            NewEvent::parse(json!({"id": "a", "type": "t", "data": {}})).expect("a valid event");
        crate::EventStore::ingest(&store, &[event])
            .await
            .expect("ingested");

        let claimed =
            QueueStore::claim_due_events(&store, "w", &TypeSelector::default(), 10, 30_000)
                .await
                .expect("claimed");
        assert_eq!(claimed.len(), 1);
        assert_eq!(synchronous(&store).await, FULL, "after a claim");
        // Nothing due: the claim returns early and must restore all the same.
        let none = QueueStore::claim_due_events(&store, "w", &TypeSelector::default(), 10, 30_000)
            .await
            .expect("claimed nothing");
        assert!(none.is_empty());
        assert_eq!(synchronous(&store).await, FULL, "after an empty claim");
    }
}
