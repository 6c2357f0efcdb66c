//! The PostgreSQL store: production, shared by any number of API and worker processes.

use crate::ingest::{finish, plan_round, resolve_conflicts, resolve_round, UpsertRow};
use crate::model::*;
use crate::{Backend, NotificationStream, Store, StoreError};
use async_trait::async_trait;
use serde_json::Value;
use sluice_core::event::NewEvent;
use sqlx::migrate::Migrator;
use futures::StreamExt;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

const EVENT_COLUMNS: &str = "id, external_id, type, payload, state, received_count, attempts, \
     next_attempt_at, last_error, created_at, updated_at, processed_at, replayed_at, \
     lease_expires_at, leased_by";

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid DATABASE_URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// The connection pool, for `LISTEN` connections of the worker and the live feed.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn upsert_round(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[UpsertRow<'_>],
) -> Result<HashMap<String, EventSummary>, StoreError> {
    let external_ids: Vec<&str> = rows.iter().map(|r| r.external_id).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.payload.as_str()).collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.payload_hash).collect();
    let counts: Vec<i64> = rows.iter().map(|r| r.count).collect();
    // One statement for the whole batch; the WHERE makes a different payload a no-op that
    // returns no row, which the caller turns into a conflict.
    let returned = sqlx::query(
        "INSERT INTO events (external_id, type, payload, payload_hash, received_count) \
         SELECT e, t, p::jsonb, h, c \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) AS u(e, t, p, h, c) \
         ON CONFLICT (external_id) DO UPDATE \
            SET received_count = events.received_count + EXCLUDED.received_count, \
                updated_at = now() \
            WHERE events.payload_hash = EXCLUDED.payload_hash \
         RETURNING id, external_id, type, state, received_count, created_at",
    )
    .bind(&external_ids)
    .bind(&types)
    .bind(&payloads)
    .bind(&hashes)
    .bind(&counts)
    .fetch_all(&mut **tx)
    .await?;
    returned
        .iter()
        .map(|row| {
            let summary = summary_from_row(row)?;
            Ok((summary.external_id.clone(), summary))
        })
        .collect()
}

fn summary_from_row(row: &PgRow) -> Result<EventSummary, StoreError> {
    Ok(EventSummary {
        id: row.try_get("id")?,
        external_id: row.try_get("external_id")?,
        event_type: row.try_get("type")?,
        state: parse_text(row.try_get("state")?)?,
        received_count: row.try_get("received_count")?,
        created_at: row.try_get("created_at")?,
    })
}

fn event_from_row(row: &PgRow) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.try_get("id")?,
        external_id: row.try_get("external_id")?,
        event_type: row.try_get("type")?,
        payload: row.try_get::<Value, _>("payload")?,
        state: parse_text(row.try_get("state")?)?,
        received_count: row.try_get("received_count")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        processed_at: row.try_get("processed_at")?,
        replayed_at: row.try_get("replayed_at")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        leased_by: row.try_get("leased_by")?,
    })
}

fn attempt_from_row(row: &PgRow) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        attempt_no: row.try_get("attempt_no")?,
        trigger: parse_text(row.try_get("trigger")?)?,
        status: parse_text(row.try_get("status")?)?,
        error: row.try_get("error")?,
        worker: row.try_get("worker")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        duration_ms: row.try_get("duration_ms")?,
        rule_executions: Vec::new(),
    })
}

fn execution_from_row(row: &PgRow) -> Result<(i64, RuleExecution), StoreError> {
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
            executed_at: row.try_get("executed_at")?,
            duration_ms: row.try_get("duration_ms")?,
        },
    ))
}

/// Decodes a closed-set column (state, status, …); an unknown value is a corrupt row.
pub(crate) fn parse_text<T: FromStr<Err = String>>(text: String) -> Result<T, StoreError> {
    text.parse().map_err(StoreError::Corrupt)
}

fn push_event_filter(query: &mut QueryBuilder<'_, Postgres>, filter: &EventFilter) {
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
        query.push(" AND created_at >= ").push_bind(start);
    }
    if let Some(end) = filter.end {
        query.push(" AND created_at <= ").push_bind(end);
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes an advisory lock, so concurrent starts of several processes are safe.
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> = sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?;
        check_migrations_current(&MIGRATOR, &applied)
    }

    async fn ingest(&self, events: &[NewEvent]) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; events.len()];
        let mut pending: Vec<usize> = (0..events.len()).collect();
        let mut tx = self.pool.begin().await?;
        while !pending.is_empty() {
            let (rows, leftovers) = plan_round(events, &pending);
            let returned = upsert_round(&mut tx, &rows).await?;
            let conflicting = resolve_round(&rows, returned, &mut outcomes);
            if !conflicting.is_empty() {
                let found: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT external_id, id FROM events WHERE external_id = ANY($1::text[])",
                )
                .bind(&conflicting)
                .fetch_all(&mut *tx)
                .await?;
                let existing: HashMap<String, i64> = found.into_iter().collect();
                resolve_conflicts(&rows, &existing, &mut outcomes);
            }
            pending = leftovers;
        }
        tx.commit().await?;
        finish(outcomes)
    }

    async fn get_event(&self, id: i64) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        page: Page,
    ) -> Result<Vec<Event>, StoreError> {
        let mut query = QueryBuilder::new(format!("SELECT {EVENT_COLUMNS} FROM events WHERE TRUE"));
        push_event_filter(&mut query, filter);
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(page.limit)
            .push(" OFFSET ")
            .push_bind(page.offset);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event_stats(&self, filter: &EventFilter) -> Result<EventStats, StoreError> {
        let mut query = QueryBuilder::new(
            "SELECT count(*) AS total, \
             count(*) FILTER (WHERE state = 'pending') AS pending, \
             count(*) FILTER (WHERE state = 'processing') AS processing, \
             count(*) FILTER (WHERE state = 'processed') AS processed, \
             count(*) FILTER (WHERE state = 'failed') AS failed, \
             count(*) FILTER (WHERE state = 'failed' AND updated_at > now() - interval '24 hours') \
                AS failed_last_24h, \
             count(*) FILTER (WHERE state = 'pending' AND attempts > 0) AS retrying \
             FROM events WHERE TRUE",
        );
        let scoped = EventFilter {
            state: None,
            external_id: None,
            ..filter.clone()
        };
        push_event_filter(&mut query, &scoped);
        let row = query.build().fetch_one(&self.pool).await?;
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
             FROM event_attempts WHERE event_id = $1 \
             ORDER BY attempt_no DESC LIMIT $2 OFFSET $3",
        )
        .bind(event_id)
        .bind(page.limit)
        .bind(page.offset)
        .fetch_all(&self.pool)
        .await?;
        let mut attempts: Vec<Attempt> = rows
            .iter()
            .map(attempt_from_row)
            .collect::<Result<_, _>>()?;
        if attempts.is_empty() {
            return Ok(attempts);
        }
        let ids: Vec<i64> = attempts.iter().map(|a| a.id).collect();
        let executions = sqlx::query(
            "SELECT x.id, x.attempt_id, x.rule_id, r.name AS rule_name, x.rule_version_id, \
                    v.version AS rule_version, x.result, x.error, x.idempotency_key, \
                    x.executed_at, x.duration_ms \
             FROM rule_executions x \
             JOIN rules r ON r.id = x.rule_id \
             JOIN rule_versions v ON v.id = x.rule_version_id \
             WHERE x.attempt_id = ANY($1::bigint[]) ORDER BY x.id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        attach_executions(&mut attempts, executions.iter().map(execution_from_row))?;
        Ok(attempts)
    }

    async fn notify(&self, channel: &str, payloads: &[String]) -> Result<(), StoreError> {
        if payloads.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
            .bind(channel)
            .bind(payloads)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self, channels: &[&str]) -> Result<Option<NotificationStream>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        let stream = listener.into_stream().map(|item| {
            item.map(|n| (n.channel().to_owned(), n.payload().to_owned()))
                .map_err(StoreError::from)
        });
        Ok(Some(Box::pin(stream)))
    }
}

/// Puts each execution under its attempt.
pub(crate) fn attach_executions(
    attempts: &mut [Attempt],
    executions: impl Iterator<Item = Result<(i64, RuleExecution), StoreError>>,
) -> Result<(), StoreError> {
    let position: HashMap<i64, usize> = attempts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id, i))
        .collect();
    for execution in executions {
        let (attempt_id, execution) = execution?;
        if let Some(&i) = position.get(&attempt_id) {
            attempts[i].rule_executions.push(execution);
        }
    }
    Ok(())
}

/// Ready means every migration embedded in this binary has been applied.
pub(crate) fn check_migrations_current(
    migrator: &Migrator,
    applied: &[i64],
) -> Result<(), StoreError> {
    let missing: Vec<i64> = migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Migration(format!(
            "not applied yet: {missing:?} (run `sluice migrate`)"
        )))
    }
}
