//! Events: ingest, one event, listings, payloads, attempts and their explanation.

use super::dialect::{Dialect, QueryBuilderExt, RowExt};
use super::rows::*;
use super::Engine;
use crate::ingest::{finish, plan_round, resolve_conflicts, resolve_round};
use crate::model::*;
use crate::{EventStore, StoreError};
use async_trait::async_trait;
use serde_json::Value;
use sluice_core::event::{EventState, NewEvent};
use sqlx::QueryBuilder;
use std::collections::HashMap;

#[async_trait]
impl<E: Engine> EventStore for E {
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

    async fn execution_condition(
        &self,
        event_id: i64,
        execution_id: i64,
    ) -> Result<Option<ExecutionCondition>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT x.rule_id, x.rule_version_id, v.condition AS v_condition, v.action AS v_action \
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
            action: row.json("v_action")?,
        }))
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
}

/// Appends ` AND …` for each filter set.
pub(super) fn push_event_filter<D: Dialect>(query: &mut QueryBuilder<'_, D>, filter: &EventFilter) {
    push_event_filter_on(query, filter, "", "id");
}

/// The filter's conditions on the columns of a table aliased `prefix` whose event id is
/// `id_column`: `events` itself, or `failed_events` (same `type` and `created_at`).
pub(super) fn push_event_filter_on<D: Dialect>(
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
pub(super) fn push_listing<D: Dialect>(
    query: &mut QueryBuilder<'_, D>,
    filter: &EventFilter,
    page: Page,
) {
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

/// The ids of stored events with these external ids (the other side of a conflict).
pub(super) async fn existing_ids<D: Dialect>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use sluice_core::event::ExecutionResult;
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
}
