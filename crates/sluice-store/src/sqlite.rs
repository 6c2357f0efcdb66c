//! The SQLite store: zero setup, one process, one file (WAL mode).
//!
//! SQLite allows one writer at a time, so writes go through a single-connection pool (no
//! `SQLITE_BUSY` between our own writers) while reads use a pool of their own. Timestamps are
//! stored as integer microseconds so they sort and compare as numbers.

use crate::ingest::{finish, plan_round, resolve_conflicts, resolve_round, UpsertRow};
use crate::model::*;
use crate::postgres::{attach_executions, check_migrations_current, parse_text};
use crate::worker::{merge_prior, release_message, snapshot, CompletionPlan};
use crate::{Backend, NotificationStream, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::event::NewEvent;
use sluice_core::event::{AttemptStatus, ExecutionResult};
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

const RULE_SELECT: &str = "SELECT r.id, r.name, r.event_type, r.active, r.current_version_id, \
     r.created_at, r.updated_at, v.id AS v_id, v.rule_id AS v_rule_id, v.version AS v_version, \
     v.condition AS v_condition, v.action AS v_action, v.action_hash AS v_action_hash, \
     v.created_at AS v_created_at \
     FROM rules r JOIN rule_versions v ON v.id = r.current_version_id";

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

    async fn create_rule(&self, rule: &NewRuleRecord) -> Result<Rule, StoreError> {
        let now = to_micros(Utc::now());
        let mut tx = self.writer.begin().await?;
        let rule_id: i64 = sqlx::query_scalar(
            "INSERT INTO rules (name, event_type, active, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&rule.name)
        .bind(&rule.event_type)
        .bind(rule.active)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let content = VersionContent {
            condition: rule.condition.clone(),
            action: rule.action.clone(),
            action_hash: rule.action_hash.clone(),
        };
        let version_id = insert_version(&mut tx, rule_id, 1, &content, now).await?;
        sqlx::query("UPDATE rules SET current_version_id = ? WHERE id = ?")
            .bind(version_id)
            .bind(rule_id)
            .execute(&mut *tx)
            .await?;
        bump_generation(&mut tx).await?;
        let created = fetch_rule(&mut tx, rule_id).await?;
        tx.commit().await?;
        created.ok_or_else(|| StoreError::Corrupt(format!("rule {rule_id} vanished")))
    }

    async fn get_rule(&self, id: i64) -> Result<Option<Rule>, StoreError> {
        let mut conn = self.reader.acquire().await?;
        fetch_rule(&mut conn, id).await
    }

    async fn list_rules(&self, filter: &RuleFilter, page: Page) -> Result<Vec<Rule>, StoreError> {
        let mut query = QueryBuilder::new(format!("{RULE_SELECT} WHERE 1"));
        if let Some(active) = filter.active {
            query.push(" AND r.active = ").push_bind(active);
        }
        if let Some(event_type) = &filter.event_type {
            query
                .push(" AND r.event_type = ")
                .push_bind(event_type.clone());
        }
        query
            .push(" ORDER BY r.id DESC LIMIT ")
            .push_bind(page.limit)
            .push(" OFFSET ")
            .push_bind(page.offset);
        let rows = query.build().fetch_all(&self.reader).await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn update_rule(
        &self,
        id: i64,
        changes: &RuleChanges,
    ) -> Result<Option<Rule>, StoreError> {
        let now = to_micros(Utc::now());
        let mut tx = self.writer.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM rules WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let mut version_id: Option<i64> = None;
        if let Some(content) = &changes.new_version {
            let next: i64 = sqlx::query_scalar(
                "SELECT COALESCE(max(version), 0) + 1 FROM rule_versions WHERE rule_id = ?",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            version_id = Some(insert_version(&mut tx, id, next, content, now).await?);
        }
        sqlx::query(
            "UPDATE rules SET name = COALESCE(?, name), event_type = COALESCE(?, event_type), \
             active = COALESCE(?, active), current_version_id = COALESCE(?, current_version_id), \
             updated_at = ? WHERE id = ?",
        )
        .bind(&changes.name)
        .bind(&changes.event_type)
        .bind(changes.active)
        .bind(version_id)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        bump_generation(&mut tx).await?;
        let updated = fetch_rule(&mut tx, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn list_rule_versions(&self, rule_id: i64) -> Result<Vec<RuleVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT id AS v_id, rule_id AS v_rule_id, version AS v_version, condition AS v_condition, \
                    action AS v_action, action_hash AS v_action_hash, created_at AS v_created_at \
             FROM rule_versions WHERE rule_id = ? ORDER BY version DESC",
        )
        .bind(rule_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn rule_generation(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT generation FROM rule_generation WHERE id = 1")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn active_rules(&self) -> Result<Vec<RuleSnapshot>, StoreError> {
        let rows = sqlx::query(&format!("{RULE_SELECT} WHERE r.active = 1 ORDER BY r.id"))
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|row| rule_from_row(row).map(snapshot))
            .collect()
    }

    async fn original_rules(&self, event_id: i64) -> Result<Vec<RuleSnapshot>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id AS rule_id, r.name, r.event_type, v.id AS v_id, v.rule_id AS v_rule_id, \
                    v.version AS v_version, v.condition AS v_condition, v.action AS v_action, \
                    v.action_hash AS v_action_hash, v.created_at AS v_created_at \
             FROM rule_versions v JOIN rules r ON r.id = v.rule_id \
             WHERE v.id IN ( \
                SELECT x.rule_version_id FROM rule_executions x \
                JOIN event_attempts a ON a.id = x.attempt_id \
                WHERE a.event_id = ?1 AND a.attempt_no = ( \
                    SELECT min(a2.attempt_no) FROM event_attempts a2 \
                    JOIN rule_executions x2 ON x2.attempt_id = a2.id WHERE a2.event_id = ?1)) \
             ORDER BY r.id",
        )
        .bind(event_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RuleSnapshot {
                    rule_id: row.try_get("rule_id")?,
                    rule_name: row.try_get("name")?,
                    event_type: row.try_get("event_type")?,
                    version: version_from_row(row)?,
                })
            })
            .collect()
    }

    async fn claim_due_events(
        &self,
        worker: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let now = to_micros(Utc::now());
        let mut tx = self.writer.begin().await?;
        let due: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM events WHERE state = 'pending' AND next_attempt_at <= ? \
             ORDER BY next_attempt_at, id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let mut insert = QueryBuilder::new(
            "INSERT INTO event_attempts (event_id, attempt_no, trigger, status, worker, started_at) \
             SELECT id, attempts + 1, next_trigger, 'running', ",
        );
        insert.push_bind(worker).push(", ").push_bind(now);
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
            .push(" WHERE id IN ");
        push_in_list(&mut update, due.iter().copied());
        update.push(format!(
            " RETURNING {EVENT_COLUMNS}, run_attempts, replay_rules"
        ));
        let rows = update.build().fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let event = event_from_row(row)?;
            let Some((attempt_id, attempt_no, trigger)) = by_event.remove(&event.id) else {
                return Err(StoreError::Corrupt(format!(
                    "claimed event {} has no attempt",
                    event.id
                )));
            };
            claimed.push(ClaimedEvent {
                attempt_id,
                attempt_no,
                trigger: parse_text(trigger)?,
                replay_rules: parse_text(row.try_get("replay_rules")?)?,
                run_attempts: row.try_get("run_attempts")?,
                event,
            });
        }
        let order: HashMap<i64, usize> = due.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        claimed.sort_by_key(|c| order.get(&c.event.id).copied().unwrap_or(usize::MAX));
        Ok(claimed)
    }

    async fn extend_leases(&self, attempt_ids: &[i64], lease_ms: i64) -> Result<(), StoreError> {
        if attempt_ids.is_empty() {
            return Ok(());
        }
        let until = to_micros(Utc::now()) + lease_ms * 1000;
        let mut query = QueryBuilder::new("UPDATE events SET lease_expires_at = ");
        query.push_bind(until);
        query.push(" WHERE state = 'processing' AND current_attempt_id IN ");
        push_in_list(&mut query, attempt_ids.iter().copied());
        query.build().execute(&self.writer).await?;
        Ok(())
    }

    async fn record_started(
        &self,
        attempt_id: i64,
        event_id: i64,
        rule_id: i64,
        rule_version_id: i64,
        idempotency_key: &str,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "INSERT INTO rule_executions (attempt_id, event_id, rule_id, rule_version_id, result, \
             idempotency_key, executed_at) VALUES (?, ?, ?, ?, 'started', ?, ?) RETURNING id",
        )
        .bind(attempt_id)
        .bind(event_id)
        .bind(rule_id)
        .bind(rule_version_id)
        .bind(idempotency_key)
        .bind(to_micros(Utc::now()))
        .fetch_one(&self.writer)
        .await?)
    }

    async fn prior_executions(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, ExecutionResult>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut query = QueryBuilder::new(
            "SELECT idempotency_key, result FROM rule_executions \
             WHERE result IN ('applied', 'started') AND idempotency_key IN (",
        );
        let mut separated = query.separated(", ");
        for key in keys {
            separated.push_bind(key.as_str());
        }
        query.push(")");
        // Read through the writer: a `started` row written moments ago must be seen.
        let rows = query.build().fetch_all(&self.writer).await?;
        let pairs = rows
            .iter()
            .map(|row| Ok((row.try_get("idempotency_key")?, row.try_get("result")?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        Ok(merge_prior(pairs))
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
        let mut tx = self.writer.begin().await?;
        let x = &plan.new_executions;
        for i in 0..x.attempt_ids.len() {
            sqlx::query(
                "INSERT INTO rule_executions (attempt_id, event_id, rule_id, rule_version_id, result, \
                 error, idempotency_key, duration_ms, executed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(x.attempt_ids[i])
            .bind(x.event_ids[i])
            .bind(x.rule_ids[i])
            .bind(x.rule_version_ids[i])
            .bind(x.results[i])
            .bind(&x.errors[i])
            .bind(&x.keys[i])
            .bind(x.durations[i])
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let s = &plan.started;
        for i in 0..s.ids.len() {
            sqlx::query(
                "UPDATE rule_executions SET result = ?, error = ?, duration_ms = ?, executed_at = ? \
                 WHERE id = ?",
            )
            .bind(s.results[i])
            .bind(&s.errors[i])
            .bind(s.durations[i])
            .bind(now)
            .bind(s.ids[i])
            .execute(&mut *tx)
            .await?;
        }
        let e = &plan.events;
        let mut kept = Vec::new();
        let mut changes = Vec::new();
        for i in 0..e.event_ids.len() {
            let terminal = e.states[i] != "pending";
            let row = sqlx::query(
                "UPDATE events SET state = ?, next_attempt_at = ?, last_error = ?, \
                    processed_at = ?, \
                    next_trigger = CASE WHEN ? = 'pending' THEN 'retry' ELSE next_trigger END, \
                    lease_expires_at = NULL, leased_by = NULL, current_attempt_id = NULL, \
                    updated_at = ? \
                 WHERE id = ? AND current_attempt_id = ? AND state = 'processing' \
                 RETURNING id, external_id, type, state",
            )
            .bind(e.states[i])
            .bind(e.next_ats[i].map(to_micros))
            .bind(&e.errors[i])
            .bind(terminal.then_some(now))
            .bind(e.states[i])
            .bind(now)
            .bind(e.event_ids[i])
            .bind(e.attempt_ids[i])
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                kept.push(e.attempt_ids[i]);
                changes.push(StateChange {
                    event_id: row.try_get("id")?,
                    external_id: row.try_get("external_id")?,
                    event_type: row.try_get("type")?,
                    state: parse_text(row.try_get("state")?)?,
                    attempt_id: Some(e.attempt_ids[i]),
                    status: None,
                    finished_at: None,
                    duration_ms: None,
                });
            }
        }
        let a = plan.attempts_for(&kept);
        for i in 0..a.ids.len() {
            sqlx::query(
                "UPDATE event_attempts SET status = ?, error = ?, finished_at = ?, duration_ms = ? \
                 WHERE id = ? AND status = 'running'",
            )
            .bind(a.statuses[i])
            .bind(&a.errors[i])
            .bind(now)
            .bind(a.durations[i])
            .bind(a.ids[i])
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
                    "SELECT id, current_attempt_id FROM events \
                     WHERE state = 'processing' AND lease_expires_at < ?",
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
            let event_id: i64 = row.try_get("id")?;
            let attempt_id: Option<i64> = row.try_get("current_attempt_id")?;
            let moved = sqlx::query(
                "UPDATE events SET \
                    state = CASE WHEN run_attempts >= ?1 THEN 'failed' ELSE 'pending' END, \
                    processed_at = CASE WHEN run_attempts >= ?1 THEN ?3 ELSE NULL END, \
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
                event_id,
                external_id: moved.try_get("external_id")?,
                event_type: moved.try_get("type")?,
                state: parse_text(moved.try_get("state")?)?,
                attempt_id,
                status: ended.map(|_| AttemptStatus::Abandoned),
                finished_at: ended.map(|_| now_at),
                duration_ms: ended.map(|(d,)| d),
            });
        }
        tx.commit().await?;
        Ok(changes)
    }

    async fn replay_events(
        &self,
        ids: &[i64],
        rules: ReplayRules,
    ) -> Result<Vec<Event>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = to_micros(Utc::now());
        let mut query = QueryBuilder::new("UPDATE events SET ");
        push_replay_set(&mut query, now, rules);
        query.push(" WHERE state IN ('processed', 'failed') AND id IN ");
        push_in_list(&mut query, ids.iter().copied());
        query.push(format!(" RETURNING {EVENT_COLUMNS}"));
        let rows = query.build().fetch_all(&self.writer).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn replay_matching(
        &self,
        filter: &EventFilter,
        limit: i64,
        rules: ReplayRules,
    ) -> Result<Vec<Event>, StoreError> {
        let now = to_micros(Utc::now());
        let mut query = QueryBuilder::new("UPDATE events SET ");
        push_replay_set(&mut query, now, rules);
        query.push(" WHERE id IN (SELECT id FROM events WHERE state IN ('processed', 'failed')");
        push_event_filter(&mut query, filter);
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit)
            .push(format!(") RETURNING {EVENT_COLUMNS}"));
        let rows = query.build().fetch_all(&self.writer).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn notify(&self, _notifications: &[(&str, String)]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn listen(&self, _channels: &[&str]) -> Result<Option<NotificationStream>, StoreError> {
        Ok(None)
    }
}

fn push_replay_set(query: &mut QueryBuilder<'_, Sqlite>, now: i64, rules: ReplayRules) {
    query
        .push("state = 'pending', next_trigger = 'replay', run_attempts = 0, processed_at = NULL, last_error = NULL, next_attempt_at = ")
        .push_bind(now)
        .push(", replayed_at = ")
        .push_bind(now)
        .push(", updated_at = ")
        .push_bind(now)
        .push(", replay_rules = ")
        .push_bind(rules.as_str());
}

async fn insert_version(
    tx: &mut Transaction<'_, Sqlite>,
    rule_id: i64,
    version: i64,
    content: &VersionContent,
    now: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO rule_versions (rule_id, version, condition, action, action_hash, created_at) \
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(rule_id)
    .bind(version)
    .bind(content.condition.to_string())
    .bind(content.action.to_string())
    .bind(&content.action_hash)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?)
}

async fn bump_generation(tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
    sqlx::query("UPDATE rule_generation SET generation = generation + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn fetch_rule(
    conn: &mut sqlx::SqliteConnection,
    id: i64,
) -> Result<Option<Rule>, StoreError> {
    let row = sqlx::query(&format!("{RULE_SELECT} WHERE r.id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(rule_from_row).transpose()
}

fn json_column(row: &SqliteRow, column: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("{column} is not JSON: {e}")))
}

fn version_from_row(row: &SqliteRow) -> Result<RuleVersion, StoreError> {
    Ok(RuleVersion {
        id: row.try_get("v_id")?,
        rule_id: row.try_get("v_rule_id")?,
        version: row.try_get("v_version")?,
        condition: json_column(row, "v_condition")?,
        action: json_column(row, "v_action")?,
        action_hash: row.try_get("v_action_hash")?,
        created_at: from_micros(row.try_get("v_created_at")?)?,
    })
}

fn rule_from_row(row: &SqliteRow) -> Result<Rule, StoreError> {
    Ok(Rule {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        event_type: row.try_get("event_type")?,
        active: row.try_get("active")?,
        current_version_id: row.try_get("current_version_id")?,
        created_at: from_micros(row.try_get("created_at")?)?,
        updated_at: from_micros(row.try_get("updated_at")?)?,
        current_version: version_from_row(row)?,
    })
}
