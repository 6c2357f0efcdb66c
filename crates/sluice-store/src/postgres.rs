//! The PostgreSQL store: production, shared by any number of API and worker processes.

use crate::ingest::{finish, plan_round, resolve_conflicts, resolve_round, UpsertRow};
use crate::model::*;
use crate::worker::{merge_prior, release_message, snapshot, CompletionPlan};
use crate::{Backend, NotificationStream, Store, StoreError};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use sluice_core::event::NewEvent;
use sluice_core::event::{AttemptStatus, ExecutionResult};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Sets a terminal event back to pending for a replay; `$2` is the replay rules and must come
/// last (replay_matching binds it by position).
const REPLAY_SET: &str = "state = 'pending', next_attempt_at = now(), next_trigger = 'replay', \
     run_attempts = 0, replayed_at = now(), processed_at = NULL, last_error = NULL, \
     updated_at = now(), replay_rules = $2";

const RULE_SELECT: &str = "SELECT r.id, r.name, r.event_type, r.active, r.current_version_id, \
     r.created_at, r.updated_at, v.id AS v_id, v.rule_id AS v_rule_id, v.version AS v_version, \
     v.condition AS v_condition, v.action AS v_action, v.action_hash AS v_action_hash, \
     v.created_at AS v_created_at \
     FROM rules r JOIN rule_versions v ON v.id = r.current_version_id";

const CLAIMED_COLUMNS: &str = "e.id, e.external_id, e.type, e.payload, e.state, e.received_count, \
     e.attempts, e.next_attempt_at, e.last_error, e.created_at, e.updated_at, e.processed_at, \
     e.replayed_at, e.lease_expires_at, e.leased_by, e.run_attempts, e.replay_rules";

const EVENT_COLUMNS: &str = "id, external_id, type, payload, state, received_count, attempts, \
     next_attempt_at, last_error, created_at, updated_at, processed_at, replayed_at, \
     lease_expires_at, leased_by";

pub struct PostgresStore {
    pool: PgPool,
    /// For claims and lease renewals only: `synchronous_commit=off`, so a claim does not wait
    /// for a WAL flush. Losing one in a database crash is harmless — the event is simply still
    /// pending — and any later durable commit (a `started` record, an outcome) flushes the WAL
    /// up to and including it, so no outcome is ever durable without its claim.
    lease_pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid DATABASE_URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        // Lazy: API-only processes never claim, so they never open these connections.
        let lease_pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options.options([("synchronous_commit", "off")]));
        Ok(Self { pool, lease_pool })
    }

    /// The connection pool, for `LISTEN` connections of the worker and the live feed.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn existing_ids(
    conn: &mut sqlx::PgConnection,
    external_ids: &[&str],
) -> Result<HashMap<String, i64>, StoreError> {
    let found: Vec<(String, i64)> =
        sqlx::query_as("SELECT external_id, id FROM events WHERE external_id = ANY($1::text[])")
            .bind(external_ids)
            .fetch_all(conn)
            .await?;
    Ok(found.into_iter().collect())
}

async fn upsert_round(
    conn: &mut sqlx::PgConnection,
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
    .fetch_all(conn)
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
        let all: Vec<usize> = (0..events.len()).collect();
        let (rows, leftovers) = plan_round(events, &all);
        if leftovers.is_empty() {
            // The usual case: one multi-row upsert, atomic on its own — no BEGIN/COMMIT round
            // trips. A conflict lookup afterwards is safe outside it: rows never change payload
            // and are never deleted.
            let mut conn = self.pool.acquire().await?;
            let returned = upsert_round(&mut conn, &rows).await?;
            let conflicting = resolve_round(&rows, returned, &mut outcomes);
            if !conflicting.is_empty() {
                let existing = existing_ids(&mut conn, &conflicting).await?;
                resolve_conflicts(&rows, &existing, &mut outcomes);
            }
            return finish(outcomes);
        }
        // Equal ids with different payloads in one batch: rounds in one transaction, so the
        // batch is still all-or-nothing.
        let mut pending = all;
        let mut tx = self.pool.begin().await?;
        while !pending.is_empty() {
            let (rows, leftovers) = plan_round(events, &pending);
            let returned = upsert_round(&mut tx, &rows).await?;
            let conflicting = resolve_round(&rows, returned, &mut outcomes);
            if !conflicting.is_empty() {
                let existing = existing_ids(&mut tx, &conflicting).await?;
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

    async fn create_rule(&self, rule: &NewRuleRecord) -> Result<Rule, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rule_id: i64 = sqlx::query_scalar(
            "INSERT INTO rules (name, event_type, active) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(&rule.name)
        .bind(&rule.event_type)
        .bind(rule.active)
        .fetch_one(&mut *tx)
        .await?;
        let content = VersionContent {
            condition: rule.condition.clone(),
            action: rule.action.clone(),
            action_hash: rule.action_hash.clone(),
        };
        let version_id = insert_version(&mut tx, rule_id, 1, &content).await?;
        sqlx::query("UPDATE rules SET current_version_id = $1 WHERE id = $2")
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
        let mut conn = self.pool.acquire().await?;
        fetch_rule(&mut conn, id).await
    }

    async fn list_rules(&self, filter: &RuleFilter, page: Page) -> Result<Vec<Rule>, StoreError> {
        let mut query = QueryBuilder::new(format!("{RULE_SELECT} WHERE TRUE"));
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
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn update_rule(
        &self,
        id: i64,
        changes: &RuleChanges,
    ) -> Result<Option<Rule>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Lock the rule so concurrent updates number their versions one after another.
        let current: Option<i64> =
            sqlx::query_scalar("SELECT id FROM rules WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        if current.is_none() {
            return Ok(None);
        }
        let mut version_id: Option<i64> = None;
        if let Some(content) = &changes.new_version {
            let next: i64 = sqlx::query_scalar(
                "SELECT COALESCE(max(version), 0) + 1 FROM rule_versions WHERE rule_id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            version_id = Some(insert_version(&mut tx, id, next, content).await?);
        }
        sqlx::query(
            "UPDATE rules SET name = COALESCE($2, name), event_type = COALESCE($3, event_type), \
             active = COALESCE($4, active), current_version_id = COALESCE($5, current_version_id), \
             updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(&changes.name)
        .bind(&changes.event_type)
        .bind(changes.active)
        .bind(version_id)
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
             FROM rule_versions WHERE rule_id = $1 ORDER BY version DESC",
        )
        .bind(rule_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn rule_generation(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT generation FROM rule_generation WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn active_rules(&self) -> Result<Vec<RuleSnapshot>, StoreError> {
        let rows = sqlx::query(&format!("{RULE_SELECT} WHERE r.active ORDER BY r.id"))
            .fetch_all(&self.pool)
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
                WHERE a.event_id = $1 AND a.attempt_no = ( \
                    SELECT min(a2.attempt_no) FROM event_attempts a2 \
                    JOIN rule_executions x2 ON x2.attempt_id = a2.id WHERE a2.event_id = $1)) \
             ORDER BY r.id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
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
        // One statement: pick due events no one holds, lease them, open their attempts.
        let rows = sqlx::query(&format!(
            "WITH due AS ( \
                SELECT id FROM events WHERE state = 'pending' AND next_attempt_at <= now() \
                ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED \
             ), attempts AS ( \
                INSERT INTO event_attempts (event_id, attempt_no, trigger, status, worker) \
                SELECT e.id, e.attempts + 1, e.next_trigger, 'running', $1 \
                FROM events e JOIN due ON due.id = e.id \
                RETURNING id, event_id, attempt_no, trigger \
             ), claimed AS ( \
                UPDATE events e SET state = 'processing', attempts = e.attempts + 1, \
                    run_attempts = e.run_attempts + 1, leased_by = $1, current_attempt_id = a.id, \
                    lease_expires_at = now() + make_interval(secs => $3::double precision / 1000), \
                    updated_at = now() \
                FROM attempts a WHERE e.id = a.event_id \
                RETURNING {CLAIMED_COLUMNS}, a.id AS attempt_id, a.attempt_no, a.trigger \
             ) SELECT * FROM claimed ORDER BY next_attempt_at, id"
        ))
        .bind(worker)
        .bind(limit)
        .bind(lease_ms)
        .fetch_all(&self.lease_pool)
        .await?;
        rows.iter().map(claimed_from_row).collect()
    }

    async fn extend_leases(&self, attempt_ids: &[i64], lease_ms: i64) -> Result<(), StoreError> {
        if attempt_ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            // SKIP LOCKED: a row locked right now is being completed, so it needs no renewal,
            // and waiting for it could deadlock with that completion.
            "UPDATE events SET lease_expires_at = now() + make_interval(secs => $2::double precision / 1000) \
             WHERE id IN (SELECT id FROM events \
                WHERE current_attempt_id = ANY($1::bigint[]) AND state = 'processing' \
                FOR UPDATE SKIP LOCKED)",
        )
        .bind(attempt_ids)
        .bind(lease_ms)
        .execute(&self.lease_pool)
        .await?;
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
             idempotency_key) VALUES ($1, $2, $3, $4, 'started', $5) RETURNING id",
        )
        .bind(attempt_id)
        .bind(event_id)
        .bind(rule_id)
        .bind(rule_version_id)
        .bind(idempotency_key)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn prior_executions(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, ExecutionResult>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT idempotency_key, result FROM rule_executions \
             WHERE idempotency_key = ANY($1::text[]) AND result IN ('applied', 'started')",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(merge_prior(rows))
    }

    async fn complete_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<StateChange>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let plan = CompletionPlan::new(outcomes);
        if !plan.new_executions.is_empty() {
            let x = &plan.new_executions;
            sqlx::query(
                "INSERT INTO rule_executions (attempt_id, event_id, rule_id, rule_version_id, result, \
                    error, idempotency_key, duration_ms) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
                    $5::text[], $6::text[], $7::text[], $8::bigint[])",
            )
            .bind(&x.attempt_ids)
            .bind(&x.event_ids)
            .bind(&x.rule_ids)
            .bind(&x.rule_version_ids)
            .bind(&x.results)
            .bind(&x.errors)
            .bind(&x.keys)
            .bind(&x.durations)
            .execute(&mut *tx)
            .await?;
        }
        if !plan.started.ids.is_empty() {
            let s = &plan.started;
            sqlx::query(
                "UPDATE rule_executions x SET result = u.result, error = u.error, \
                    duration_ms = u.duration_ms, executed_at = now() \
                 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
                    AS u(id, result, error, duration_ms) \
                 WHERE x.id = u.id",
            )
            .bind(&s.ids)
            .bind(&s.results)
            .bind(&s.errors)
            .bind(&s.durations)
            .execute(&mut *tx)
            .await?;
        }
        let e = &plan.events;
        let moved = sqlx::query(
            "UPDATE events e SET state = u.state, next_attempt_at = u.next_at, last_error = u.error, \
                processed_at = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END, \
                next_trigger = CASE WHEN u.state = 'pending' THEN 'retry' ELSE e.next_trigger END, \
                lease_expires_at = NULL, leased_by = NULL, current_attempt_id = NULL, updated_at = now() \
             FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[]) \
                AS u(event_id, attempt_id, state, next_at, error) \
             WHERE e.id = u.event_id AND e.current_attempt_id = u.attempt_id AND e.state = 'processing' \
             RETURNING e.id, e.external_id, e.type, e.state, u.attempt_id",
        )
        .bind(&e.event_ids)
        .bind(&e.attempt_ids)
        .bind(&e.states)
        .bind(&e.next_ats)
        .bind(&e.errors)
        .fetch_all(&mut *tx)
        .await?;
        let kept: Vec<i64> = moved
            .iter()
            .map(|row| row.try_get::<i64, _>("attempt_id"))
            .collect::<Result<_, _>>()?;
        let a = plan.attempts_for(&kept);
        let finished = sqlx::query(
            "UPDATE event_attempts a SET status = u.status, error = u.error, finished_at = now(), \
                duration_ms = u.duration_ms \
             FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
                AS u(id, status, error, duration_ms) \
             WHERE a.id = u.id AND a.status = 'running' \
             RETURNING a.id, a.status, a.finished_at, a.duration_ms",
        )
        .bind(&a.ids)
        .bind(&a.statuses)
        .bind(&a.errors)
        .bind(&a.durations)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut finished_by_id = HashMap::new();
        for row in &finished {
            let id: i64 = row.try_get("id")?;
            finished_by_id.insert(
                id,
                (
                    parse_text::<AttemptStatus>(row.try_get("status")?)?,
                    row.try_get::<Timestamp, _>("finished_at")?,
                    row.try_get::<Option<i64>, _>("duration_ms")?,
                ),
            );
        }
        moved
            .iter()
            .map(|row| {
                let attempt_id: i64 = row.try_get("attempt_id")?;
                let finished = finished_by_id.get(&attempt_id);
                Ok(StateChange {
                    event_id: row.try_get("id")?,
                    external_id: row.try_get("external_id")?,
                    event_type: row.try_get("type")?,
                    state: parse_text(row.try_get("state")?)?,
                    attempt_id: Some(attempt_id),
                    status: finished.map(|f| f.0),
                    finished_at: finished.map(|f| f.1),
                    duration_ms: finished.and_then(|f| f.2),
                })
            })
            .collect()
    }

    async fn release_events(
        &self,
        which: Release,
        max_attempts: i64,
    ) -> Result<Vec<StateChange>, StoreError> {
        let (predicate, seconds) = match which {
            Release::Expired => ("lease_expires_at < now()", 0),
            Release::OlderThan(seconds) => (
                "updated_at < now() - make_interval(secs => $3::bigint)",
                seconds,
            ),
        };
        let message = release_message(which);
        let rows = sqlx::query(&format!(
            "WITH stale AS ( \
                SELECT id, current_attempt_id FROM events \
                WHERE state = 'processing' AND {predicate} AND $3::bigint >= 0 \
                FOR UPDATE SKIP LOCKED \
             ), reset AS ( \
                UPDATE events e SET \
                    state = CASE WHEN e.run_attempts >= $1 THEN 'failed' ELSE 'pending' END, \
                    processed_at = CASE WHEN e.run_attempts >= $1 THEN now() ELSE NULL END, \
                    next_attempt_at = now(), next_trigger = 'retry', last_error = $2, \
                    lease_expires_at = NULL, leased_by = NULL, current_attempt_id = NULL, \
                    updated_at = now() \
                FROM stale s WHERE e.id = s.id \
                RETURNING e.id, e.external_id, e.type, e.state, s.current_attempt_id \
             ), abandoned AS ( \
                UPDATE event_attempts a SET status = 'abandoned', error = $2, finished_at = now(), \
                    duration_ms = (extract(epoch FROM now() - a.started_at) * 1000)::bigint \
                FROM stale s WHERE a.id = s.current_attempt_id AND a.status = 'running' \
                RETURNING a.id, a.finished_at, a.duration_ms \
             ) SELECT r.id, r.external_id, r.type, r.state, r.current_attempt_id, \
                      ab.finished_at, ab.duration_ms \
               FROM reset r LEFT JOIN abandoned ab ON ab.id = r.current_attempt_id"
        ))
        .bind(max_attempts)
        .bind(message)
        .bind(seconds)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let attempt_id: Option<i64> = row.try_get("current_attempt_id")?;
                Ok(StateChange {
                    event_id: row.try_get("id")?,
                    external_id: row.try_get("external_id")?,
                    event_type: row.try_get("type")?,
                    state: parse_text(row.try_get("state")?)?,
                    attempt_id,
                    status: attempt_id.map(|_| AttemptStatus::Abandoned),
                    finished_at: row.try_get("finished_at")?,
                    duration_ms: row.try_get("duration_ms")?,
                })
            })
            .collect()
    }

    async fn replay_events(
        &self,
        ids: &[i64],
        rules: ReplayRules,
    ) -> Result<Vec<Event>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "UPDATE events SET {REPLAY_SET} \
             WHERE id = ANY($1::bigint[]) AND state IN ('processed', 'failed') \
             RETURNING {EVENT_COLUMNS}"
        ))
        .bind(ids)
        .bind(rules.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn replay_matching(
        &self,
        filter: &EventFilter,
        limit: i64,
        rules: ReplayRules,
    ) -> Result<Vec<Event>, StoreError> {
        let mut query = QueryBuilder::new("UPDATE events SET ");
        query
            .push(REPLAY_SET.replace("$2", ""))
            .push_bind(rules.as_str());
        query.push(" WHERE id IN (SELECT id FROM events WHERE state IN ('processed', 'failed')");
        push_event_filter(&mut query, filter);
        query
            .push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(limit)
            .push(format!(") RETURNING {EVENT_COLUMNS}"));
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn notify(&self, notifications: &[(&str, String)]) -> Result<(), StoreError> {
        if notifications.is_empty() {
            return Ok(());
        }
        let channels: Vec<&str> = notifications.iter().map(|(c, _)| *c).collect();
        let payloads: Vec<&str> = notifications.iter().map(|(_, p)| p.as_str()).collect();
        sqlx::query("SELECT pg_notify(c, p) FROM UNNEST($1::text[], $2::text[]) AS u(c, p)")
            .bind(&channels)
            .bind(&payloads)
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

async fn insert_version(
    tx: &mut Transaction<'_, Postgres>,
    rule_id: i64,
    version: i64,
    content: &VersionContent,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO rule_versions (rule_id, version, condition, action, action_hash) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(rule_id)
    .bind(version)
    .bind(&content.condition)
    .bind(&content.action)
    .bind(&content.action_hash)
    .fetch_one(&mut **tx)
    .await?)
}

async fn bump_generation(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
    sqlx::query("UPDATE rule_generation SET generation = generation + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn fetch_rule(conn: &mut sqlx::PgConnection, id: i64) -> Result<Option<Rule>, StoreError> {
    let row = sqlx::query(&format!("{RULE_SELECT} WHERE r.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(rule_from_row).transpose()
}

fn version_from_row(row: &PgRow) -> Result<RuleVersion, StoreError> {
    Ok(RuleVersion {
        id: row.try_get("v_id")?,
        rule_id: row.try_get("v_rule_id")?,
        version: row.try_get("v_version")?,
        condition: row.try_get("v_condition")?,
        action: row.try_get("v_action")?,
        action_hash: row.try_get("v_action_hash")?,
        created_at: row.try_get("v_created_at")?,
    })
}

fn rule_from_row(row: &PgRow) -> Result<Rule, StoreError> {
    Ok(Rule {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        event_type: row.try_get("event_type")?,
        active: row.try_get("active")?,
        current_version_id: row.try_get("current_version_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        current_version: version_from_row(row)?,
    })
}

fn claimed_from_row(row: &PgRow) -> Result<ClaimedEvent, StoreError> {
    Ok(ClaimedEvent {
        event: event_from_row(row)?,
        attempt_id: row.try_get("attempt_id")?,
        attempt_no: row.try_get("attempt_no")?,
        trigger: parse_text(row.try_get("trigger")?)?,
        replay_rules: parse_text(row.try_get("replay_rules")?)?,
        run_attempts: row.try_get("run_attempts")?,
    })
}
