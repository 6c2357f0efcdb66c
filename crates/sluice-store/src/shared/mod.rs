//! The one [`Store`] implementation both backends share. A backend implements [`Engine`] —
//! its pools and the statements that differ in substance (ingest, the worker's claim, lease,
//! completion and release, notifications) — and gets listings, stats, rule CRUD, replay and
//! the rest from here, written once against its [`Dialect`].

pub(crate) mod dialect;
pub(crate) mod rows;

use crate::ingest::{finish, plan_round, resolve_conflicts, resolve_round, UpsertRow};
use crate::model::*;
use crate::worker::{merge_prior, snapshot};
use crate::{Backend, NotificationStream, Store, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use dialect::{Dialect, QueryBuilderExt, RowExt};
use rows::*;
use serde_json::Value;
use sluice_core::event::{EventState, ExecutionResult, NewEvent};
use sqlx::migrate::Migrator;
use sqlx::types::Json;
use sqlx::{Pool, QueryBuilder};
use std::collections::HashMap;

/// What a backend implements itself. Every [`Engine`] is a [`Store`]; the methods here are the
/// [`Store`] methods of the same name.
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    type Dialect: Dialect;
    const BACKEND: Backend;

    fn migrator() -> &'static Migrator;
    /// Where reads go.
    fn reads(&self) -> &Pool<Self::Dialect>;
    /// Where writes go, and reads that must see the latest writes.
    fn writes(&self) -> &Pool<Self::Dialect>;
    /// Where reads go that look up the queue's leased rows, which must take the queue's
    /// indexes whatever the planner's statistics say (a queue filled since its last
    /// `ANALYZE` looks half leased, and a sequential scan of a backlog costs milliseconds).
    fn queue_reads(&self) -> &Pool<Self::Dialect> {
        self.reads()
    }
    /// Where the statements of each delivery go (its dedupe lookup, its `started` record,
    /// releases of waiting events): they must find rows by index in a history of millions
    /// whatever the planner's statistics say.
    fn deliveries(&self) -> &Pool<Self::Dialect> {
        self.writes()
    }

    /// The most rows [`Engine::upsert_round`] writes in one statement.
    const UPSERT_ROWS_PER_STATEMENT: usize;
    /// One round of a batched ingest (planned in `crate::ingest`): the multi-row upsert of
    /// `rows`, new events entering the queue in the same statement; the rows that came back,
    /// by external id (a row whose id is stored with another payload does not come back).
    async fn upsert_round(
        conn: &mut <Self::Dialect as sqlx::Database>::Connection,
        rows: &[UpsertRow<'_>],
    ) -> Result<HashMap<String, EventSummary>, StoreError>;
    async fn claim_due_events(
        &self,
        worker: &str,
        types: &TypeSelector,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError>;
    /// See [`Store::prepare_ingest`]; nothing to do by default.
    async fn prepare_ingest(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// See [`Store::prepare_worker`]; nothing to do by default.
    async fn prepare_worker(
        &self,
        _worker: &str,
        _types: &TypeSelector,
        _lease_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    async fn extend_leases(&self, leases: &[HeldLease], lease_ms: i64) -> Result<(), StoreError>;
    async fn complete_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<StateChange>, StoreError>;
    async fn release_events(
        &self,
        which: Release,
        max_attempts: i64,
    ) -> Result<Vec<StateChange>, StoreError>;
    async fn compact_queue(&self) -> Result<(), StoreError>;
    /// Folds appended count changes into `event_counts` and rolls minutes older than
    /// `minutes_until` up into hours.
    async fn compact_counts(&self, minutes_until: Timestamp) -> Result<(), StoreError>;
    async fn delete_settled(&self, before: Timestamp, limit: i64) -> Result<u64, StoreError>;
    async fn notify(&self, notifications: &[(&str, String)]) -> Result<(), StoreError>;
    async fn listen(&self, channels: &[&str]) -> Result<Option<NotificationStream>, StoreError>;
}

#[async_trait]
impl<E: Engine> Store for E {
    fn backend(&self) -> Backend {
        E::BACKEND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes a lock (an advisory lock on PostgreSQL), so concurrent starts of several
        // processes are safe.
        E::migrator().run(self.writes()).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        );
        let mut conn = self.reads().acquire().await?;
        let applied = query
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|row| row.value("version"))
            .collect::<Result<Vec<i64>, _>>()?;
        check_migrations_current(E::migrator(), &applied)
    }

    async fn ingest(&self, events: &[NewEvent]) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut outcomes: Vec<Option<IngestOutcome>> = vec![None; events.len()];
        let all: Vec<usize> = (0..events.len()).collect();
        let (rows, leftovers) = plan_round(events, &all);
        if leftovers.is_empty() && rows.len() <= E::UPSERT_ROWS_PER_STATEMENT {
            // The usual case: one multi-row upsert, atomic on its own — no BEGIN/COMMIT round
            // trips. The conflict lookup afterwards is safe outside it: a row's payload never
            // changes.
            let mut conn = self.writes().acquire().await?;
            let returned = E::upsert_round(&mut conn, &rows).await?;
            let conflicting = resolve_round(&rows, returned, &mut outcomes);
            if !conflicting.is_empty() {
                let existing = existing_ids::<E::Dialect>(&mut conn, &conflicting).await?;
                resolve_conflicts(&rows, &existing, &mut outcomes);
            }
            return finish(outcomes);
        }
        // Equal ids with different payloads in one batch, or more rows than one statement
        // takes: rounds in one transaction, so the batch is still all-or-nothing.
        let mut pending = all;
        let mut tx = self.writes().begin().await?;
        while !pending.is_empty() {
            let (rows, leftovers) = plan_round(events, &pending);
            let returned = E::upsert_round(&mut tx, &rows).await?;
            let conflicting = resolve_round(&rows, returned, &mut outcomes);
            if !conflicting.is_empty() {
                let existing = existing_ids::<E::Dialect>(&mut tx, &conflicting).await?;
                resolve_conflicts(&rows, &existing, &mut outcomes);
            }
            pending = leftovers;
        }
        tx.commit().await?;
        finish(outcomes)
    }

    async fn get_event(&self, id: i64) -> Result<Option<Event>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id = "
        ));
        query.push_value(id);
        let mut conn = self.reads().acquire().await?;
        let row = query.fetch_optional(&mut conn).await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn list_event_headers(
        &self,
        filter: &EventFilter,
        page: Page,
    ) -> Result<Vec<EventHeader>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {HEADER_COLUMNS}, {} AS payload_bytes",
            <E::Dialect as Dialect>::PAYLOAD_BYTES
        ));
        push_listing(&mut query, filter, page);
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(header_from_row).collect()
    }

    async fn event_payloads(&self, ids: &[i64]) -> Result<HashMap<i64, Value>, StoreError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut query = QueryBuilder::<E::Dialect>::new("SELECT id, payload FROM events WHERE ");
        query.push_in_ids("id", ids);
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter()
            .map(|row| Ok((row.value("id")?, row.json("payload")?)))
            .collect()
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        page: Page,
    ) -> Result<Vec<Event>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!("SELECT {EVENT_COLUMNS}"));
        push_listing(&mut query, filter, page);
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(event_from_row).collect()
    }

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

    async fn compact_counts(&self) -> Result<(), StoreError> {
        Engine::compact_counts(
            self,
            Utc::now() - chrono::Duration::hours(COUNTS_BY_MINUTE_HOURS),
        )
        .await
    }

    async fn delete_settled(&self, before: Timestamp, limit: i64) -> Result<u64, StoreError> {
        Engine::delete_settled(self, before, limit).await
    }

    async fn list_attempts(
        &self,
        event_id: i64,
        before_attempt_no: Option<i64>,
        page: Page,
    ) -> Result<Vec<Attempt>, StoreError> {
        // A claimed event's running attempt has no row yet (it is written when it ends): it
        // is read from the lease instead.
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM (SELECT {ATTEMPT_COLUMNS} FROM event_attempts \
             WHERE event_id = "
        ));
        query
            .push_value(event_id)
            .push(
                " UNION ALL SELECT current_attempt_id, id, attempts, next_trigger, 'running', \
                 NULL, leased_by, COALESCE(claimed_at, updated_at), NULL, NULL, \
                 CASE WHEN next_trigger = 'replay' THEN replay_requested_by END \
                 FROM events WHERE id = ",
            )
            .push_value(event_id)
            .push(
                " AND state = 'processing' AND current_attempt_id IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM event_attempts r \
                    WHERE r.id = events.current_attempt_id)) attempts WHERE TRUE",
            );
        if let Some(before) = before_attempt_no {
            query.push(" AND attempt_no < ").push_value(before);
        }
        query
            .push(" ORDER BY attempt_no DESC LIMIT ")
            .push_value(page.limit)
            .push(" OFFSET ")
            .push_value(page.offset);
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        let mut attempts: Vec<Attempt> = rows
            .iter()
            .map(attempt_from_row)
            .collect::<Result<_, _>>()?;
        if attempts.is_empty() {
            return Ok(attempts);
        }
        let ids: Vec<i64> = attempts.iter().map(|a| a.id).collect();
        let mut query = QueryBuilder::<E::Dialect>::new(format!("{EXECUTION_SELECT} WHERE "));
        query
            .push_in_ids("x.attempt_id", &ids)
            .push(" ORDER BY x.id");
        let executions = query.fetch_all(&mut conn).await?;
        attach_executions(&mut attempts, executions.iter().map(execution_from_row))?;
        Ok(attempts)
    }

    async fn execution_condition(
        &self,
        event_id: i64,
        execution_id: i64,
    ) -> Result<Option<ExecutionCondition>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT x.rule_id, x.rule_version_id, v.condition AS v_condition \
             FROM rule_executions x JOIN rule_versions v ON v.id = x.rule_version_id \
             WHERE x.id = ",
        );
        query
            .push_value(execution_id)
            .push(" AND x.event_id = ")
            .push_value(event_id);
        let mut conn = self.reads().acquire().await?;
        let Some(row) = query.fetch_optional(&mut conn).await? else {
            return Ok(None);
        };
        Ok(Some(ExecutionCondition {
            rule_id: row.value("rule_id")?,
            rule_version_id: row.value("rule_version_id")?,
            condition: row.json("v_condition")?,
        }))
    }

    async fn create_rule(&self, rule: &NewRuleRecord) -> Result<Rule, StoreError> {
        let now = Utc::now();
        let mut tx = self.writes().begin().await?;
        let mut insert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO rules (name, event_type, active, created_at, updated_at) VALUES (",
        );
        insert
            .push_value(rule.name.clone())
            .push(", ")
            .push_value(rule.event_type.clone())
            .push(", ")
            .push_value(rule.active)
            .push(", ")
            .push_now(now)
            .push(", ")
            .push_now(now)
            .push(") RETURNING id");
        let rule_id: i64 = insert.fetch_one(&mut tx).await?.value("id")?;
        let content = VersionContent {
            condition: rule.condition.clone(),
            action: rule.action.clone(),
            action_hash: rule.action_hash.clone(),
            created_by: rule.created_by.clone(),
        };
        let version_id = insert_version::<E::Dialect>(&mut tx, rule_id, 1, &content, now).await?;
        let mut update = QueryBuilder::<E::Dialect>::new("UPDATE rules SET current_version_id = ");
        update
            .push_value(version_id)
            .push(" WHERE id = ")
            .push_value(rule_id);
        update.execute(&mut tx).await?;
        bump_generation::<E::Dialect>(&mut tx).await?;
        let created = fetch_rule::<E::Dialect>(&mut tx, rule_id).await?;
        tx.commit().await?;
        created.ok_or_else(|| StoreError::Corrupt(format!("rule {rule_id} vanished")))
    }

    async fn get_rule(&self, id: i64) -> Result<Option<Rule>, StoreError> {
        let mut conn = self.reads().acquire().await?;
        fetch_rule::<E::Dialect>(&mut conn, id).await
    }

    async fn list_rules(&self, filter: &RuleFilter, page: Page) -> Result<Vec<Rule>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!("{RULE_SELECT} WHERE TRUE"));
        if let Some(active) = filter.active {
            query.push(" AND r.active = ").push_value(active);
        }
        if let Some(event_type) = &filter.event_type {
            query
                .push(" AND r.event_type = ")
                .push_value(event_type.clone());
        }
        if let Some(before) = filter.before_id {
            query.push(" AND r.id < ").push_value(before);
        }
        query
            .push(" ORDER BY r.id DESC LIMIT ")
            .push_value(page.limit)
            .push(" OFFSET ")
            .push_value(page.offset);
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn update_rule(
        &self,
        id: i64,
        changes: &RuleChanges,
    ) -> Result<Option<Rule>, StoreError> {
        let now = Utc::now();
        let mut tx = self.writes().begin().await?;
        // Lock the rule so concurrent updates number their versions one after another.
        let mut lock = QueryBuilder::<E::Dialect>::new("SELECT id FROM rules WHERE id = ");
        lock.push_value(id).push(E::Dialect::FOR_UPDATE);
        if lock.fetch_optional(&mut tx).await?.is_none() {
            return Ok(None);
        }
        let mut version_id: Option<i64> = None;
        if let Some(content) = &changes.new_version {
            let mut next = QueryBuilder::<E::Dialect>::new(
                "SELECT COALESCE(max(version), 0) + 1 AS next FROM rule_versions WHERE rule_id = ",
            );
            next.push_value(id);
            let next: i64 = next.fetch_one(&mut tx).await?.value("next")?;
            version_id = Some(insert_version::<E::Dialect>(&mut tx, id, next, content, now).await?);
        }
        let mut update = QueryBuilder::<E::Dialect>::new("UPDATE rules SET name = COALESCE(");
        update
            .push_value(changes.name.clone())
            .push(", name), event_type = COALESCE(")
            .push_value(changes.event_type.clone())
            .push(", event_type), active = COALESCE(")
            .push_value(changes.active)
            .push(", active), current_version_id = COALESCE(")
            .push_value(version_id)
            .push(", current_version_id), updated_at = ")
            .push_now(now)
            .push(" WHERE id = ")
            .push_value(id);
        update.execute(&mut tx).await?;
        bump_generation::<E::Dialect>(&mut tx).await?;
        let updated = fetch_rule::<E::Dialect>(&mut tx, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn list_rule_versions(&self, rule_id: i64) -> Result<Vec<RuleVersion>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {VERSION_COLUMNS} FROM rule_versions WHERE rule_id = "
        ));
        query.push_value(rule_id).push(" ORDER BY version DESC");
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn rule_generation(&self) -> Result<i64, StoreError> {
        let mut query =
            QueryBuilder::<E::Dialect>::new("SELECT generation FROM rule_generation WHERE id = 1");
        let mut conn = self.reads().acquire().await?;
        query.fetch_one(&mut conn).await?.value("generation")
    }

    async fn active_rules(&self) -> Result<Vec<RuleSnapshot>, StoreError> {
        let mut query =
            QueryBuilder::<E::Dialect>::new(format!("{RULE_SELECT} WHERE r.active ORDER BY r.id"));
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter()
            .map(|row| rule_from_row(row).map(snapshot))
            .collect()
    }

    async fn original_rules(&self, event_id: i64) -> Result<Vec<RuleSnapshot>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT r.id AS rule_id, r.name, r.event_type, v.id AS v_id, v.rule_id AS v_rule_id, \
                    v.version AS v_version, v.condition AS v_condition, v.action AS v_action, \
                    v.action_hash AS v_action_hash, v.created_at AS v_created_at, \
                    v.created_by AS v_created_by \
             FROM rule_versions v JOIN rules r ON r.id = v.rule_id \
             WHERE v.id IN ( \
                SELECT x.rule_version_id FROM rule_executions x \
                JOIN event_attempts a ON a.id = x.attempt_id \
                WHERE a.event_id = ",
        );
        query
            .push_value(event_id)
            .push(
                " AND a.attempt_no = ( \
                    SELECT min(a2.attempt_no) FROM event_attempts a2 \
                    JOIN rule_executions x2 ON x2.attempt_id = a2.id WHERE a2.event_id = ",
            )
            .push_value(event_id)
            .push(")) ORDER BY r.id");
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter()
            .map(|row| {
                Ok(RuleSnapshot {
                    rule_id: row.value("rule_id")?,
                    rule_name: row.value("name")?,
                    event_type: row.value("event_type")?,
                    version: version_from_row(row)?,
                })
            })
            .collect()
    }

    async fn claim_due_events(
        &self,
        worker: &str,
        types: &TypeSelector,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        Engine::claim_due_events(self, worker, types, limit, lease_ms).await
    }

    async fn prepare_ingest(&self) -> Result<(), StoreError> {
        Engine::prepare_ingest(self).await
    }

    async fn prepare_worker(
        &self,
        worker: &str,
        types: &TypeSelector,
        lease_ms: i64,
    ) -> Result<(), StoreError> {
        Engine::prepare_worker(self, worker, types, lease_ms).await
    }

    async fn extend_leases(&self, leases: &[HeldLease], lease_ms: i64) -> Result<(), StoreError> {
        Engine::extend_leases(self, leases, lease_ms).await
    }

    async fn record_started(&self, started: &[NewStarted]) -> Result<Vec<i64>, StoreError> {
        if started.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut insert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO rule_executions (attempt_id, event_id, rule_id, rule_version_id, result, \
             idempotency_key, executed_at) VALUES ",
        );
        for (i, row) in started.iter().enumerate() {
            if i > 0 {
                insert.push(", ");
            }
            insert
                .push("(")
                .push_value(row.attempt_id)
                .push(", ")
                .push_value(row.event_id)
                .push(", ")
                .push_value(row.rule_id)
                .push(", ")
                .push_value(row.rule_version_id)
                .push(", 'started', ")
                .push_value(row.idempotency_key.clone())
                .push(", ")
                .push_now(now)
                .push(")");
        }
        insert.push(" RETURNING id, attempt_id, idempotency_key");
        let mut conn = self.deliveries().acquire().await?;
        // RETURNING promises no order: rows are matched by attempt and key (unique per attempt).
        let mut ids = HashMap::with_capacity(started.len());
        for row in insert.fetch_all(&mut conn).await? {
            let key: String = row.value("idempotency_key")?;
            let attempt_id: i64 = row.value("attempt_id")?;
            ids.insert((attempt_id, key), row.value::<i64>("id")?);
        }
        started
            .iter()
            .map(|row| {
                ids.get(&(row.attempt_id, row.idempotency_key.clone()))
                    .copied()
                    .ok_or_else(|| StoreError::Corrupt("a started record was not written".into()))
            })
            .collect()
    }

    async fn prior_executions(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, ExecutionResult>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT idempotency_key, result FROM rule_executions \
             WHERE result IN ('applied', 'started') AND ",
        );
        query.push_in_texts("idempotency_key", keys);
        // Read where `started` rows are written: one written moments ago must be seen.
        let mut conn = self.deliveries().acquire().await?;
        let pairs = query
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|row| Ok((row.value("idempotency_key")?, row.value("result")?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        Ok(merge_prior(pairs))
    }

    async fn complete_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<StateChange>, StoreError> {
        Engine::complete_attempts(self, outcomes).await
    }

    async fn release_events(
        &self,
        which: Release,
        max_attempts: i64,
    ) -> Result<Vec<StateChange>, StoreError> {
        Engine::release_events(self, which, max_attempts).await
    }

    async fn compact_queue(&self) -> Result<(), StoreError> {
        Engine::compact_queue(self).await
    }

    async fn replay_events(
        &self,
        ids: &[i64],
        rules: ReplayRules,
        requested_by: Option<&str>,
    ) -> Result<Vec<StateChange>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = QueryBuilder::<E::Dialect>::new("UPDATE events SET ");
        push_replay_set(&mut query, rules, requested_by);
        query
            .push(" WHERE ")
            .push_in_ids("id", ids)
            .push(" AND state IN ('processed', 'failed') RETURNING id, external_id, type, state");
        let mut tx = self.writes().begin().await?;
        let rows = query.fetch_all(&mut tx).await?;
        let changes: Vec<StateChange> = rows
            .iter()
            .map(|row| state_change_from_row(row, None))
            .collect::<Result<_, _>>()?;
        enqueue::<E::Dialect>(&mut tx, &changes).await?;
        tx.commit().await?;
        Ok(changes)
    }

    async fn replay_matching(
        &self,
        filter: &EventFilter,
        limit: i64,
        rules: ReplayRules,
        requested_by: Option<&str>,
    ) -> Result<Vec<StateChange>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new("UPDATE events SET ");
        push_replay_set(&mut query, rules, requested_by);
        query.push(" WHERE id IN (SELECT id");
        match filter.state {
            // The same page a listing of that state would show (failures through their own
            // table): a replay of the failed events of a type costs those events.
            Some(EventState::Failed | EventState::Processed) => {
                push_listing(&mut query, filter, Page { limit, offset: 0 });
            }
            _ => {
                query.push(" FROM events WHERE state IN ('processed', 'failed')");
                push_event_filter(&mut query, filter);
                query
                    .push(" ORDER BY created_at DESC, id DESC LIMIT ")
                    .push_value(limit);
            }
        }
        query.push(") RETURNING id, external_id, type, state");
        let mut tx = self.writes().begin().await?;
        let rows = query.fetch_all(&mut tx).await?;
        let changes: Vec<StateChange> = rows
            .iter()
            .map(|row| state_change_from_row(row, None))
            .collect::<Result<_, _>>()?;
        enqueue::<E::Dialect>(&mut tx, &changes).await?;
        tx.commit().await?;
        Ok(changes)
    }

    async fn event_types(&self) -> Result<Vec<EventTypeRecord>, StoreError> {
        let mut conn = self.writes().acquire().await?;
        let mut configured = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {EVENT_TYPE_COLUMNS} FROM event_types"
        ));
        let mut by_name: std::collections::BTreeMap<String, EventTypeRecord> = configured
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|row| event_type_from_row(row).map(|t| (t.event_type.clone(), t)))
            .collect::<Result<_, _>>()?;
        // From the kept counts: a sum over a few rows per type, not a count of the history.
        let mut counts = QueryBuilder::<E::Dialect>::new(
            "SELECT type AS event_type, CAST(SUM(n) AS BIGINT) AS n FROM (\
                SELECT type, n FROM event_counts \
                UNION ALL SELECT type, n FROM event_count_changes) counted \
             GROUP BY type HAVING SUM(n) <> 0 \
             UNION ALL SELECT DISTINCT event_type, 0 AS n FROM rules",
        );
        for row in counts.fetch_all(&mut conn).await? {
            let name: String = row.value("event_type")?;
            let n: i64 = row.value("n")?;
            by_name
                .entry(name.clone())
                .or_insert_with(|| seen_event_type(name))
                .events_total += n;
        }
        Ok(by_name.into_values().collect())
    }

    async fn event_type(&self, event_type: &str) -> Result<Option<EventTypeRecord>, StoreError> {
        let mut conn = self.writes().acquire().await?;
        fetch_event_type::<E::Dialect>(&mut conn, event_type).await
    }

    async fn update_event_type(
        &self,
        event_type: &str,
        changes: &EventTypeChanges,
    ) -> Result<EventTypeRecord, StoreError> {
        let now = Utc::now();
        let schema_text = |schema: &Option<Value>| schema.as_ref().map(Value::to_string);
        let backoff_text = |backoff: &Option<Vec<i64>>| {
            backoff.as_ref().map(|b| Value::from(b.clone()).to_string())
        };
        let mut upsert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO event_types (event_type, description, data_schema, \
             processing_timeout_ms, max_attempts, retry_backoff_ms, max_wait_ms, created_at, \
             updated_at, updated_by) VALUES (",
        );
        upsert
            .push_value(event_type.to_owned())
            .push(", ")
            .push_value(changes.description.clone().flatten())
            .push(", ")
            .push_value(changes.schema.as_ref().and_then(schema_text))
            .push(", ")
            .push_value(changes.processing_timeout_ms.flatten())
            .push(", ")
            .push_value(changes.max_attempts.flatten())
            .push(", ")
            .push_value(changes.retry_backoff_ms.as_ref().and_then(backoff_text))
            .push(", ")
            .push_value(changes.max_wait_ms.flatten())
            .push(", ")
            .push_timestamp(now)
            .push(", ")
            .push_timestamp(now)
            .push(", ")
            .push_value(changes.updated_by.clone())
            .push(
                ") ON CONFLICT (event_type) DO UPDATE SET updated_at = excluded.updated_at, \
                 updated_by = excluded.updated_by",
            );
        // Only the fields the change names are overwritten; the others keep their values.
        let named = [
            ("description", changes.description.is_some()),
            ("data_schema", changes.schema.is_some()),
            (
                "processing_timeout_ms",
                changes.processing_timeout_ms.is_some(),
            ),
            ("max_attempts", changes.max_attempts.is_some()),
            ("retry_backoff_ms", changes.retry_backoff_ms.is_some()),
            ("max_wait_ms", changes.max_wait_ms.is_some()),
        ];
        for (column, _) in named.iter().filter(|(_, named)| *named) {
            upsert.push(format!(", {column} = excluded.{column}"));
        }
        let mut tx = self.writes().begin().await?;
        upsert.execute(&mut tx).await?;
        bump_generation::<E::Dialect>(&mut tx).await?;
        let record = fetch_event_type::<E::Dialect>(&mut tx, event_type).await?;
        tx.commit().await?;
        record.ok_or_else(|| StoreError::Corrupt(format!("event type '{event_type}' vanished")))
    }

    async fn event_type_settings(&self) -> Result<Vec<(String, EventTypeSettings)>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {EVENT_TYPE_COLUMNS} FROM event_types ORDER BY event_type"
        ));
        let mut conn = self.writes().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter()
            .map(|row| event_type_from_row(row).map(|t| (t.event_type, t.settings)))
            .collect()
    }

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

    async fn event_waiting(&self, id: i64) -> Result<Option<Waiting>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT waiting_for, waiting_since FROM event_queue \
             WHERE waiting_for IS NOT NULL AND event_id = ",
        );
        query.push_value(id);
        let mut conn = self.reads().acquire().await?;
        let Some(row) = query.fetch_optional(&mut conn).await? else {
            return Ok(None);
        };
        Ok(Some(Waiting {
            target: row.value("waiting_for")?,
            since: row.timestamp("waiting_since")?,
        }))
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

    async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        let mut insert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO api_keys (name, prefix, key_hash, scopes, created_at) VALUES (",
        );
        insert
            .push_value(key.name.clone())
            .push(", ")
            .push_value(key.prefix.clone())
            .push(", ")
            .push_value(key.key_hash.clone())
            .push(", ")
            .push_value(key.scopes.join(","))
            .push(", ")
            .push_now(Utc::now())
            .push(format!(") RETURNING {API_KEY_COLUMNS}"));
        let mut conn = self.writes().acquire().await?;
        api_key_from_row(&insert.fetch_one(&mut conn).await?)
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id DESC"
        ));
        // From the writer: a key created or revoked a moment ago must be seen.
        let mut conn = self.writes().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(&self, id: i64) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut tx = self.writes().begin().await?;
        let mut revoke = QueryBuilder::<E::Dialect>::new("UPDATE api_keys SET revoked_at = ");
        revoke
            .push_now(Utc::now())
            .push(" WHERE revoked_at IS NULL AND id = ")
            .push_value(id);
        revoke.execute(&mut tx).await?;
        let mut end =
            QueryBuilder::<E::Dialect>::new("DELETE FROM console_sessions WHERE api_key_id = ");
        end.push_value(id);
        end.execute(&mut tx).await?;
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = "
        ));
        query.push_value(id);
        let row = query.fetch_optional(&mut tx).await?;
        tx.commit().await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn record_key_use(&self, uses: &[(i64, Timestamp)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.writes().begin().await?;
        // A handful of keys a few times a minute: one small statement each is plenty.
        for (id, at) in uses {
            let mut update = QueryBuilder::<E::Dialect>::new("UPDATE api_keys SET last_used_at = ");
            update
                .push_timestamp(*at)
                .push(" WHERE id = ")
                .push_value(*id)
                .push(" AND (last_used_at IS NULL OR last_used_at < ")
                .push_timestamp(*at)
                .push(")");
            update.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_console_session(
        &self,
        token_hash: &str,
        api_key_id: i64,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tx = self.writes().begin().await?;
        let mut expired =
            QueryBuilder::<E::Dialect>::new("DELETE FROM console_sessions WHERE expires_at < ");
        expired.push_now(now);
        expired.execute(&mut tx).await?;
        let mut insert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO console_sessions (token_hash, api_key_id, created_at, expires_at) VALUES (",
        );
        insert
            .push_value(token_hash.to_owned())
            .push(", ")
            .push_value(api_key_id)
            .push(", ")
            .push_now(now)
            .push(", ")
            .push_timestamp(expires_at)
            .push(")");
        insert.execute(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn console_session(&self, token_hash: &str) -> Result<Option<i64>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT api_key_id FROM console_sessions WHERE token_hash = ",
        );
        query
            .push_value(token_hash.to_owned())
            .push(" AND expires_at > ")
            .push_now(Utc::now());
        let mut conn = self.writes().acquire().await?;
        query
            .fetch_optional(&mut conn)
            .await?
            .map(|row| row.value("api_key_id"))
            .transpose()
    }

    async fn end_console_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let mut query =
            QueryBuilder::<E::Dialect>::new("DELETE FROM console_sessions WHERE token_hash = ");
        query.push_value(token_hash.to_owned());
        let mut conn = self.writes().acquire().await?;
        query.execute(&mut conn).await?;
        Ok(())
    }

    async fn notify(&self, notifications: &[(&str, String)]) -> Result<(), StoreError> {
        Engine::notify(self, notifications).await
    }

    async fn listen(&self, channels: &[&str]) -> Result<Option<NotificationStream>, StoreError> {
        Engine::listen(self, channels).await
    }
}

/// Appends ` AND …` for each filter set.
fn push_event_filter<D: Dialect>(query: &mut QueryBuilder<'_, D>, filter: &EventFilter) {
    push_event_filter_on(query, filter, "", "id");
}

/// The filter's conditions on the columns of a table aliased `prefix` whose event id is
/// `id_column`: `events` itself, or `failed_events` (same `type` and `created_at`).
fn push_event_filter_on<D: Dialect>(
    query: &mut QueryBuilder<'_, D>,
    filter: &EventFilter,
    prefix: &str,
    id_column: &str,
) {
    if let Some(state) = filter.state {
        query
            .push(format_args!(" AND {prefix}state = "))
            .push_value(state.as_str().to_owned());
    }
    if let Some(event_type) = &filter.event_type {
        query
            .push(format_args!(" AND {prefix}type = "))
            .push_value(event_type.clone());
    }
    if let Some(external_id) = &filter.external_id {
        query
            .push(format_args!(" AND {prefix}external_id = "))
            .push_value(external_id.clone());
    }
    if let Some(start) = filter.start {
        query
            .push(format_args!(" AND {prefix}created_at >= "))
            .push_timestamp(start);
    }
    if let Some(end) = filter.end {
        query
            .push(format_args!(" AND {prefix}created_at <= "))
            .push_timestamp(end);
    }
    if let Some((created_at, id)) = filter.before {
        // Spelled out rather than as a row comparison, which not every planner matches to
        // the (created_at, id) order; the plain `<=` is what lets an index start at the
        // cursor instead of walking every newer row (the `OR` alone is no index bound).
        query
            .push(format_args!(" AND {prefix}created_at <= "))
            .push_timestamp(created_at)
            .push(format_args!(" AND ({prefix}created_at < "))
            .push_timestamp(created_at)
            .push(format_args!(" OR ({prefix}created_at = "))
            .push_timestamp(created_at)
            .push(format_args!(" AND {id_column} < "))
            .push_value(id)
            .push("))");
    }
}

/// `FROM events WHERE …` for a listing page, newest first, found through the narrowest table
/// that holds the filter's state: `events` has no index on its state (its updates stay HOT),
/// so failures come from `failed_events` and unsettled events from the queue; a page then
/// costs the rows it shows (or the queue, which is the work in hand), not the history.
fn push_listing<D: Dialect>(query: &mut QueryBuilder<'_, D>, filter: &EventFilter, page: Page) {
    let narrowed = match (filter.state, &filter.external_id) {
        (Some(EventState::Failed), None) => {
            query.push(" FROM events WHERE id IN (SELECT event_id FROM failed_events WHERE TRUE");
            let rest = EventFilter {
                state: None,
                ..filter.clone()
            };
            push_event_filter_on(query, &rest, "", "event_id");
            query.push(" ORDER BY created_at DESC, event_id DESC");
            true
        }
        (Some(EventState::Pending | EventState::Processing), None) => {
            query.push(format_args!(
                " FROM events WHERE id IN (SELECT e.id FROM {} WHERE e.id = q.event_id",
                D::QUEUED_EVENTS
            ));
            push_event_filter_on(query, filter, "e.", "e.id");
            query.push(" ORDER BY e.created_at DESC, e.id DESC");
            true
        }
        _ => {
            query.push(" FROM events WHERE TRUE");
            push_event_filter(query, filter);
            query.push(" ORDER BY created_at DESC, id DESC");
            false
        }
    };
    query
        .push(" LIMIT ")
        .push_value(page.limit)
        .push(" OFFSET ")
        .push_value(page.offset);
    if narrowed {
        query.push(") ORDER BY created_at DESC, id DESC");
    }
}

/// Counts are kept per minute of arrival for this long, then rolled up into hours.
const COUNTS_BY_MINUTE_HOURS: i64 = 2;
const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 3_600_000_000;

fn floor_to(at: Timestamp, unit_us: i64) -> Timestamp {
    let us = at.timestamp_micros();
    Timestamp::from_timestamp_micros(us - us.rem_euclid(unit_us)).unwrap_or(at)
}

fn ceil_to(at: Timestamp, unit_us: i64) -> Timestamp {
    let floor = floor_to(at, unit_us);
    if floor == at {
        at
    } else {
        floor + chrono::Duration::microseconds(unit_us)
    }
}

/// The status an event is reported under, counted one by one (the counting triggers count a
/// processing event as pending, see `push_stats_query`).
const STATUS_OF_EVENT: &str =
    "CASE WHEN state = 'pending' AND attempts > 0 THEN 'retrying' ELSE state END";

/// One statement (one snapshot, so the figures agree with each other) that adds up the counts
/// of the whole hours inside the filter's dates, counts the events of the partial hours at its
/// edges one by one (the `created_at` index bounds them to an hour each), and does the same for
/// the 24 hours of "failed lately": whole hours from the counts, the partial one from
/// `failed_events`; processing events (counted as pending) from the queue's leases. Rows:
/// `status`, `n`, and `recent` (failures in the last 24 hours).
fn push_stats_query<D: Dialect>(
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

/// How recent a worker's load report must be to count as in flight.
const LOAD_FRESH_SECS: i64 = 5;

/// Runs an upsert of one target's row, then reads the row back.
/// Targets with what is in flight to each (as the worker processes reported it lately) and
/// what waits for each in the queue.
fn select_targets<D: Dialect>() -> QueryBuilder<'static, D> {
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

async fn upsert_target<D: Dialect>(
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

/// The ids of stored events with these external ids (the other side of a conflict).
async fn existing_ids<D: Dialect>(
    conn: &mut D::Connection,
    external_ids: &[&str],
) -> Result<HashMap<String, i64>, StoreError> {
    let texts: Vec<String> = external_ids.iter().map(|id| (*id).to_owned()).collect();
    let mut query = QueryBuilder::<D>::new("SELECT external_id, id FROM events WHERE ");
    query.push_in_texts("external_id", &texts);
    query
        .fetch_all(conn)
        .await?
        .iter()
        .map(|row| Ok((row.value("external_id")?, row.value("id")?)))
        .collect()
}

/// Puts events that became pending again (replays) back in the queue, in the transaction
/// that changed them: a settled event has no queue row, so there is none to conflict with.
async fn enqueue<D: Dialect>(
    conn: &mut D::Connection,
    changes: &[StateChange],
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = changes.iter().map(|c| c.event_id).collect();
    let mut insert = QueryBuilder::<D>::new(
        "INSERT INTO event_queue (event_id, type, ordering_key, next_attempt_at) \
         SELECT id, type, ordering_key, next_attempt_at FROM events WHERE ",
    );
    insert.push_in_ids("id", &ids);
    insert.execute(conn).await?;
    Ok(())
}

/// Sets a terminal event back to pending for a replay.
fn push_replay_set<D: Dialect>(
    query: &mut QueryBuilder<'_, D>,
    rules: ReplayRules,
    requested_by: Option<&str>,
) {
    let now = Utc::now();
    query
        .push(
            "state = 'pending', next_trigger = 'replay', run_attempts = 0, processed_at = NULL, \
             last_error = NULL, next_attempt_at = ",
        )
        .push_now(now)
        .push(", replayed_at = ")
        .push_now(now)
        .push(", updated_at = ")
        .push_now(now)
        .push(", replay_rules = ")
        .push_value(rules.as_str().to_owned())
        .push(", replay_requested_by = ")
        .push_value(requested_by.map(str::to_owned));
}

async fn insert_version<D: Dialect>(
    conn: &mut D::Connection,
    rule_id: i64,
    version: i64,
    content: &VersionContent,
    now: chrono::DateTime<Utc>,
) -> Result<i64, StoreError> {
    let mut insert = QueryBuilder::<D>::new(
        "INSERT INTO rule_versions \
         (rule_id, version, condition, action, action_hash, created_at, created_by) VALUES (",
    );
    insert
        .push_value(rule_id)
        .push(", ")
        .push_value(version)
        .push(", ")
        .push_value(Json(content.condition.clone()))
        .push(", ")
        .push_value(Json(content.action.clone()))
        .push(", ")
        .push_value(content.action_hash.clone())
        .push(", ")
        .push_now(now)
        .push(", ")
        .push_value(content.created_by.clone())
        .push(") RETURNING id");
    insert.fetch_one(conn).await?.value("id")
}

/// One event type: its settings if configured, its event count, whether it has rules;
/// `None` when it is none of these.
async fn fetch_event_type<D: Dialect>(
    conn: &mut D::Connection,
    event_type: &str,
) -> Result<Option<EventTypeRecord>, StoreError> {
    let mut configured = QueryBuilder::<D>::new(format!(
        "SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE event_type = "
    ));
    configured.push_value(event_type.to_owned());
    let row = configured.fetch_optional(&mut *conn).await?;
    let mut record = match row.as_ref().map(event_type_from_row).transpose()? {
        Some(record) => record,
        None => seen_event_type(event_type.to_owned()),
    };
    let mut counts = QueryBuilder::<D>::new(
        "SELECT (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM (\
            SELECT n FROM event_counts WHERE type = ",
    );
    counts
        .push_value(event_type.to_owned())
        .push(" UNION ALL SELECT n FROM event_count_changes WHERE type = ")
        .push_value(event_type.to_owned())
        .push(") counted) AS n, (SELECT COUNT(*) FROM rules WHERE event_type = ")
        .push_value(event_type.to_owned())
        .push(") AS rules");
    let row = counts.fetch_one(&mut *conn).await?;
    record.events_total = row.value("n")?;
    let rules: i64 = row.value("rules")?;
    Ok((record.configured || record.events_total > 0 || rules > 0).then_some(record))
}

/// A type known only from its events or rules: every setting at the default.
fn seen_event_type(event_type: String) -> EventTypeRecord {
    EventTypeRecord {
        event_type,
        settings: EventTypeSettings::default(),
        configured: false,
        events_total: 0,
        updated_at: None,
        updated_by: None,
    }
}

async fn bump_generation<D: Dialect>(conn: &mut D::Connection) -> Result<(), StoreError> {
    QueryBuilder::<D>::new("UPDATE rule_generation SET generation = generation + 1 WHERE id = 1")
        .execute(conn)
        .await?;
    Ok(())
}

async fn fetch_rule<D: Dialect>(
    conn: &mut D::Connection,
    id: i64,
) -> Result<Option<Rule>, StoreError> {
    let mut query = QueryBuilder::<D>::new(format!("{RULE_SELECT} WHERE r.id = "));
    query.push_value(id);
    let row = query.fetch_optional(conn).await?;
    row.as_ref().map(rule_from_row).transpose()
}

/// Ready means every migration embedded in this binary has been applied.
fn check_migrations_current(migrator: &Migrator, applied: &[i64]) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use sluice_core::event::EventState;
    use sqlx::{Postgres, Sqlite};

    fn full_filter() -> EventFilter {
        EventFilter {
            state: Some(EventState::Failed),
            event_type: Some("order.created".to_owned()),
            external_id: Some("a".to_owned()),
            start: Some(Utc.timestamp_opt(1, 0).single().expect("a valid instant")),
            end: Some(Utc.timestamp_opt(2, 0).single().expect("a valid instant")),
            before: Some((
                Utc.timestamp_opt(2, 0).single().expect("a valid instant"),
                9,
            )),
        }
    }

    #[test]
    fn event_filter_binds_each_set_field() {
        let mut query = QueryBuilder::<Postgres>::new("SELECT id FROM events WHERE TRUE");
        push_event_filter(&mut query, &full_filter());
        assert_eq!(
            query.sql(),
            "SELECT id FROM events WHERE TRUE AND state = $1 AND type = $2 \
             AND external_id = $3 AND created_at >= $4 AND created_at <= $5 \
             AND created_at <= $6 AND (created_at < $7 OR (created_at = $8 AND id < $9))"
        );

        let mut query = QueryBuilder::<Sqlite>::new("SELECT id FROM events WHERE TRUE");
        push_event_filter(&mut query, &EventFilter::default());
        assert_eq!(query.sql(), "SELECT id FROM events WHERE TRUE");
    }

    #[test]
    fn id_lists_are_an_array_on_postgres_and_placeholders_on_sqlite() {
        let mut query = QueryBuilder::<Postgres>::new("SELECT 1 WHERE ");
        query.push_in_ids("id", &[1, 2, 3]);
        assert_eq!(query.sql(), "SELECT 1 WHERE id = ANY($1::bigint[])");

        let mut query = QueryBuilder::<Sqlite>::new("SELECT 1 WHERE ");
        query.push_in_ids("id", &[1, 2, 3]);
        assert_eq!(query.sql(), "SELECT 1 WHERE id IN (?, ?, ?)");
    }

    #[test]
    fn replay_uses_the_database_clock_where_there_is_one() {
        let mut query = QueryBuilder::<Postgres>::new("");
        push_replay_set(&mut query, ReplayRules::Original, Some("ops"));
        assert_eq!(
            query.sql(),
            "state = 'pending', next_trigger = 'replay', run_attempts = 0, processed_at = NULL, \
             last_error = NULL, next_attempt_at = now(), replayed_at = now(), \
             updated_at = now(), replay_rules = $1, replay_requested_by = $2"
        );

        let mut query = QueryBuilder::<Sqlite>::new("");
        push_replay_set(&mut query, ReplayRules::Current, None);
        assert!(query.sql().ends_with(
            "next_attempt_at = ?, replayed_at = ?, updated_at = ?, replay_rules = ?, \
             replay_requested_by = ?"
        ));
    }

    #[test]
    fn attach_executions_puts_each_under_its_attempt() {
        let attempt = |id| Attempt {
            id,
            event_id: 1,
            attempt_no: id,
            trigger: sluice_core::event::Trigger::Initial,
            status: sluice_core::event::AttemptStatus::Success,
            error: None,
            worker: None,
            started_at: Utc::now(),
            finished_at: None,
            duration_ms: None,
            requested_by: None,
            rule_executions: Vec::new(),
        };
        let execution = |id| RuleExecution {
            id,
            rule_id: 1,
            rule_name: "r".to_owned(),
            rule_version_id: 1,
            rule_version: 1,
            result: ExecutionResult::Applied,
            error: None,
            idempotency_key: None,
            executed_at: Utc::now(),
            duration_ms: None,
        };
        let mut attempts = vec![attempt(2), attempt(1)];
        let executions = vec![
            Ok((1, execution(10))),
            Ok((2, execution(11))),
            Ok((1, execution(12))),
            // An attempt not on this page: ignored.
            Ok((3, execution(13))),
        ];
        attach_executions(&mut attempts, executions.into_iter()).expect("no decode errors");
        let ids = |a: &Attempt| a.rule_executions.iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(&attempts[0]), vec![11]);
        assert_eq!(ids(&attempts[1]), vec![10, 12]);
    }

    #[test]
    fn ready_needs_every_embedded_migration_applied() {
        static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
        let all: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert!(check_migrations_current(&MIGRATOR, &all).is_ok());
        assert!(matches!(
            check_migrations_current(&MIGRATOR, &all[..1]),
            Err(StoreError::Migration(_))
        ));
    }
}
