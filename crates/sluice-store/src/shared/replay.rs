//! Replay: settled events sent back to the queue; a waiting event taken out of it (cancel).

use super::dialect::{Dialect, QueryBuilderExt};
use super::events::{push_event_filter, push_listing};
use super::rows::*;
use super::Engine;
use crate::model::*;
use crate::{EventStore, ReplayStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use sluice_core::event::EventState;
use sqlx::QueryBuilder;

#[async_trait]
impl<E: Engine> ReplayStore for E {
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

    async fn cancel_event(
        &self,
        id: i64,
        requested_by: Option<&str>,
    ) -> Result<Result<StateChange, CancelRefusal>, StoreError> {
        let mut tx = self.writes().begin().await?;
        // A claim holds the queue row while it leases it; this waits for that claim and then
        // finds the row leased, so a cancel never takes an event a worker holds.
        let mut take = QueryBuilder::<E::Dialect>::new("DELETE FROM event_queue WHERE event_id = ");
        take.push_value(id)
            .push(" AND lease_expires_at IS NULL RETURNING event_id");
        if take.fetch_optional(&mut tx).await?.is_none() {
            drop(tx);
            return Ok(Err(match self.get_event(id).await? {
                None => CancelRefusal::NotFound,
                Some(event) => CancelRefusal::NotWaiting(event.state),
            }));
        }
        let reason = match requested_by {
            Some(name) => format!("cancelled by {name} before it was processed"),
            None => "cancelled before it was processed".to_owned(),
        };
        let now = Utc::now();
        let mut settle = QueryBuilder::<E::Dialect>::new(
            "UPDATE events SET state = 'failed', next_attempt_at = NULL, last_error = ",
        );
        settle
            .push_value(reason)
            .push(", updated_at = ")
            .push_now(now)
            .push(" WHERE id = ")
            .push_value(id)
            .push(" RETURNING id, external_id, type, state");
        let row = settle.fetch_one(&mut tx).await?;
        tx.commit().await?;
        Ok(Ok(state_change_from_row(&row, None)?))
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
}

/// Puts events that became pending again (replays) back in the queue, in the transaction
/// that changed them: a settled event has no queue row, so there is none to conflict with.
pub(super) async fn enqueue<D: Dialect>(
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
pub(super) fn push_replay_set<D: Dialect>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{Postgres, Sqlite};

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
}
