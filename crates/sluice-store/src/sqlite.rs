//! The SQLite store: zero setup, one process, one file (WAL mode).
//!
//! SQLite allows one writer at a time, so writes go through a single-connection pool (no
//! `SQLITE_BUSY` between our own writers) while reads use a pool of their own. Timestamps are
//! stored as integer microseconds so they sort and compare as numbers.

use crate::ingest::{finish, plan_round, resolve_conflicts, resolve_round, UpsertRow};
use crate::model::*;
use crate::postgres::{attach_executions, check_migrations_current, parse_text};
use crate::{Backend, NotificationStream, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::event::NewEvent;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

const EVENT_COLUMNS: &str = "id, external_id, type, payload, state, received_count, attempts, \
     next_attempt_at, last_error, created_at, updated_at, processed_at, replayed_at, \
     lease_expires_at, leased_by";

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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        // An in-memory database exists per connection: everything must share the writer.
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(Self { writer, reader })
    }
}

async fn upsert_round(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[UpsertRow<'_>],
    now: i64,
) -> Result<HashMap<String, EventSummary>, StoreError> {
    let mut summaries = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (external_id, type, payload, payload_hash, received_count, \
             next_attempt_at, created_at, updated_at) ",
        );
        query.push_values(chunk, |mut values, row| {
            values
                .push_bind(row.external_id)
                .push_bind(row.event_type)
                .push_bind(row.payload.as_str())
                .push_bind(row.payload_hash)
                .push_bind(row.count)
                .push_bind(now)
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
        let returned = query.build().fetch_all(&mut **tx).await?;
        for row in &returned {
            let summary = EventSummary {
                id: row.try_get("id")?,
                external_id: row.try_get("external_id")?,
                event_type: row.try_get("type")?,
                state: parse_text(row.try_get("state")?)?,
                received_count: row.try_get("received_count")?,
                created_at: from_micros(row.try_get("created_at")?)?,
            };
            summaries.insert(summary.external_id.clone(), summary);
        }
    }
    Ok(summaries)
}

fn event_from_row(row: &SqliteRow) -> Result<Event, StoreError> {
    let payload: String = row.try_get("payload")?;
    Ok(Event {
        id: row.try_get("id")?,
        external_id: row.try_get("external_id")?,
        event_type: row.try_get("type")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("payload is not JSON: {e}")))?,
        state: parse_text(row.try_get("state")?)?,
        received_count: row.try_get("received_count")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: opt_from_micros(row.try_get("next_attempt_at")?)?,
        last_error: row.try_get("last_error")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        updated_at: from_micros(row.try_get("updated_at")?)?,
        processed_at: opt_from_micros(row.try_get("processed_at")?)?,
        replayed_at: opt_from_micros(row.try_get("replayed_at")?)?,
        lease_expires_at: opt_from_micros(row.try_get("lease_expires_at")?)?,
        leased_by: row.try_get("leased_by")?,
    })
}

fn attempt_from_row(row: &SqliteRow) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        attempt_no: row.try_get("attempt_no")?,
        trigger: parse_text(row.try_get("trigger")?)?,
        status: parse_text(row.try_get("status")?)?,
        error: row.try_get("error")?,
        worker: row.try_get("worker")?,
        started_at: from_micros(row.try_get("started_at")?)?,
        finished_at: opt_from_micros(row.try_get("finished_at")?)?,
        duration_ms: row.try_get("duration_ms")?,
        rule_executions: Vec::new(),
    })
}

fn execution_from_row(row: &SqliteRow) -> Result<(i64, RuleExecution), StoreError> {
    Ok((
        row.try_get("attempt_id")?,
        RuleExecution {
            id: row.try_get("id")?,
            rule_id: row.try_get("rule_id")?,
            rule_name: row.try_get("rule_name")?,
            rule_version_id: row.try_get("rule_version_id")?,
            rule_version: row.try_get("rule_version")?,
            result: parse_text(row.try_get("result")?)?,
            error: row.try_get("error")?,
            idempotency_key: row.try_get("idempotency_key")?,
            executed_at: from_micros(row.try_get("executed_at")?)?,
            duration_ms: row.try_get("duration_ms")?,
        },
    ))
}

fn push_event_filter(query: &mut QueryBuilder<'_, Sqlite>, filter: &EventFilter) {
    if let Some(state) = filter.state {
        query.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(event_type) = &filter.event_type {
        query.push(" AND type = ").push_bind(event_type.clone());
    }
    if let Some(external_id) = &filter.external_id {
        query
            .push(" AND external_id = ")
            .push_bind(external_id.clone());
    }
    if let Some(start) = filter.start {
        query
            .push(" AND created_at >= ")
            .push_bind(to_micros(start));
    }
    if let Some(end) = filter.end {
        query.push(" AND created_at <= ").push_bind(to_micros(end));
    }
}

fn push_in_list<'a>(query: &mut QueryBuilder<'a, Sqlite>, values: impl IntoIterator<Item = i64>) {
    query.push("(");
    let mut separated = query.separated(", ");
    for value in values {
        separated.push_bind(value);
    }
    query.push(")");
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.reader)
        .await?;
        check_migrations_current(&MIGRATOR, &applied)
    }

    async fn ingest(&self, events: &[NewEvent]) -> Result<Vec<IngestOutcome>, StoreError> {
        let now = to_micros(Utc::now());
        let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; events.len()];
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut tx = self.writer.begin().await?;
        while !pending.is_empty() {
            let (rows, leftovers) = plan_round(events, &pending);
            let returned = upsert_round(&mut tx, &rows, now).await?;
            let conflicting = resolve_round(&rows, returned, &mut outcomes);
            let mut existing = HashMap::new();
            for external_id in conflicting {
                let id: i64 = sqlx::query_scalar("SELECT id FROM events WHERE external_id = ?")
                    .bind(external_id)
                    .fetch_one(&mut *tx)
                    .await?;
                existing.insert(external_id.to_owned(), id);
            }
            resolve_conflicts(&rows, &existing, &mut outcomes);
            pending = leftovers;
        }
        tx.commit().await?;
        finish(outcomes)
    }

    async fn get_event(&self, id: i64) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        page: Page,
    ) -> Result<Vec<Event>, StoreError> {
        let mut query = QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1"));
        push_event_filter(&mut query, filter);
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(page.limit)
            .push(" OFFSET ")
            .push_bind(page.offset);
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event_stats(&self, filter: &EventFilter) -> Result<EventStats, StoreError> {
        let day_ago = to_micros(Utc::now() - chrono::Duration::hours(24));
        let mut query = QueryBuilder::new(
            "SELECT count(*) AS total, \
             count(*) FILTER (WHERE state = 'pending') AS pending, \
             count(*) FILTER (WHERE state = 'processing') AS processing, \
             count(*) FILTER (WHERE state = 'processed') AS processed, \
             count(*) FILTER (WHERE state = 'failed') AS failed, \
             count(*) FILTER (WHERE state = 'failed' AND updated_at > ",
        );
        query.push_bind(day_ago);
        query.push(
            ") AS failed_last_24h, \
             count(*) FILTER (WHERE state = 'pending' AND attempts > 0) AS retrying \
             FROM events WHERE 1",
        );
        let scoped = EventFilter {
            state: None,
            external_id: None,
            ..filter.clone()
        };
        push_event_filter(&mut query, &scoped);
        let row = query.build().fetch_one(&self.reader).await?;
        Ok(EventStats {
            total: row.try_get("total")?,
            pending: row.try_get("pending")?,
            processing: row.try_get("processing")?,
            processed: row.try_get("processed")?,
            failed: row.try_get("failed")?,
            failed_last_24h: row.try_get("failed_last_24h")?,
            retrying: row.try_get("retrying")?,
        })
    }

    async fn list_attempts(&self, event_id: i64, page: Page) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, event_id, attempt_no, trigger, status, error, worker, started_at, \
                    finished_at, duration_ms \
             FROM event_attempts WHERE event_id = ? \
             ORDER BY attempt_no DESC LIMIT ? OFFSET ?",
        )
        .bind(event_id)
        .bind(page.limit)
        .bind(page.offset)
        .fetch_all(&self.reader)
        .await?;
        let mut attempts: Vec<Attempt> = rows
            .iter()
            .map(attempt_from_row)
            .collect::<Result<_, _>>()?;
        if attempts.is_empty() {
            return Ok(attempts);
        }
        let mut query = QueryBuilder::new(
            "SELECT x.id, x.attempt_id, x.rule_id, r.name AS rule_name, x.rule_version_id, \
                    v.version AS rule_version, x.result, x.error, x.idempotency_key, \
                    x.executed_at, x.duration_ms \
             FROM rule_executions x \
             JOIN rules r ON r.id = x.rule_id \
             JOIN rule_versions v ON v.id = x.rule_version_id \
             WHERE x.attempt_id IN ",
        );
        push_in_list(&mut query, attempts.iter().map(|a| a.id));
        query.push(" ORDER BY x.id");
        let executions = query.build().fetch_all(&self.reader).await?;
        attach_executions(&mut attempts, executions.iter().map(execution_from_row))?;
        Ok(attempts)
    }

    async fn notify(&self, _channel: &str, _payloads: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn listen(&self, _channels: &[&str]) -> Result<Option<NotificationStream>, StoreError> {
        Ok(None)
    }
}
