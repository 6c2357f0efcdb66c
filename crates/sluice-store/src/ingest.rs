//! Backend-neutral planning of a batched ingest: how a batch of submissions becomes
//! multi-row upserts, and how the rows that come back become one answer per submission.
//!
//! A single `INSERT … ON CONFLICT DO UPDATE` may not touch the same row twice, so equal ids in
//! one batch are collapsed into one row that carries how many submissions it stands for.
//! Submissions of an id with a *different* payload than the first one in the batch are
//! deferred to a later round of the same transaction, which preserves arrival-order semantics.

use crate::model::{EventSummary, IngestOutcome};
use sluice_core::event::NewEvent;
use std::collections::HashMap;

/// One row of a multi-row upsert: a distinct external id and the submissions it stands for.
pub(crate) struct UpsertRow<'a> {
    pub external_id: &'a str,
    pub event_type: &'a str,
    pub payload: &'a str,
    pub payload_hash: &'a str,
    pub ordering_key: Option<&'a str>,
    /// Not due before this (a scheduled event); `None`: due at once.
    pub process_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The trace it was ingested in (a W3C `traceparent`), if any.
    pub trace_context: Option<&'a str>,
    /// Submissions with this id and hash in this round; added to `received_count`.
    pub count: i64,
    /// Indices into the batch, in arrival order.
    pub indices: Vec<usize>,
}

/// Splits `pending` (indices into `events`) into this round's rows, sorted by external id so
/// concurrent batches lock rows in the same order (no deadlocks), and the indices left over
/// for the next round.
pub(crate) fn plan_round<'a>(
    events: &'a [NewEvent],
    pending: &[usize],
) -> (Vec<UpsertRow<'a>>, Vec<usize>) {
    let mut rows: Vec<UpsertRow<'a>> = Vec::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut leftovers = Vec::new();
    for &index in pending {
        let event = &events[index];
        let id = event.external_id.as_str();
        match by_id.get(id) {
            Some(&row) if rows[row].payload_hash == event.payload_hash => {
                rows[row].count += 1;
                rows[row].indices.push(index);
            }
            Some(_) => leftovers.push(index),
            None => {
                by_id.insert(id, rows.len());
                rows.push(UpsertRow {
                    external_id: id,
                    event_type: event.event_type.as_str(),
                    payload: &event.data_text,
                    payload_hash: &event.payload_hash,
                    ordering_key: event.ordering_key.as_ref().map(|k| k.as_str()),
                    process_at: event.process_at,
                    trace_context: event.trace_context.as_deref(),
                    count: 1,
                    indices: vec![index],
                });
            }
        }
    }
    rows.sort_by(|a, b| a.external_id.cmp(b.external_id));
    (rows, leftovers)
}

/// Records the outcome of each row the upsert returned. Rows that did not come back hit an
/// existing event with a different payload; their external ids are returned for a lookup.
pub(crate) fn resolve_round<'a>(
    rows: &[UpsertRow<'a>],
    mut returned: HashMap<String, EventSummary>,
    outcomes: &mut [Option<IngestOutcome>],
) -> Vec<&'a str> {
    let mut conflicting = Vec::new();
    for row in rows {
        match returned.remove(row.external_id) {
            Some(summary) => {
                // A fresh insert has exactly this round's submissions; an update has more.
                let inserted = summary.received_count == row.count;
                for (position, &index) in row.indices.iter().enumerate() {
                    outcomes[index] = Some(if inserted && position == 0 {
                        IngestOutcome::Created(summary.clone())
                    } else {
                        IngestOutcome::Duplicate(summary.clone())
                    });
                }
            }
            None => conflicting.push(row.external_id),
        }
    }
    conflicting
}

/// Marks every submission of the conflicting ids as a conflict with the stored event.
pub(crate) fn resolve_conflicts(
    rows: &[UpsertRow<'_>],
    existing: &HashMap<String, i64>,
    outcomes: &mut [Option<IngestOutcome>],
) {
    for row in rows {
        if let Some(&existing_id) = existing.get(row.external_id) {
            for &index in &row.indices {
                outcomes[index] = Some(IngestOutcome::Conflict {
                    existing_id,
                    external_id: row.external_id.to_owned(),
                });
            }
        }
    }
}

/// Unwraps the per-submission outcomes once every round has run.
pub(crate) fn finish(
    outcomes: Vec<Option<IngestOutcome>>,
) -> Result<Vec<IngestOutcome>, crate::StoreError> {
    outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            outcome.ok_or_else(|| {
                crate::StoreError::Corrupt(format!("ingest left submission {index} unresolved"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use sluice_core::event::EventState;

    fn event(id: &str, amount: i64) -> NewEvent {
        NewEvent::parse(json!({"id": id, "type": "order.created", "data": {"amount": amount}}))
            .expect("a valid event")
    }

    fn summary(id: i64, external_id: &str, received_count: i64) -> EventSummary {
        EventSummary {
            id,
            external_id: external_id.to_owned(),
            event_type: "order.created".to_owned(),
            state: EventState::Pending,
            received_count,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn plan_round_collapses_equal_submissions_into_one_row() {
        let events = [event("a", 1), event("a", 1), event("a", 1)];
        let (rows, leftovers) = plan_round(&events, &[0, 1, 2]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].external_id, "a");
        assert_eq!(rows[0].count, 3);
        assert_eq!(rows[0].indices, vec![0, 1, 2]);
        assert_eq!(rows[0].payload, r#"{"amount":1}"#);
        assert!(leftovers.is_empty());
    }

    #[test]
    fn plan_round_defers_a_different_payload_for_the_same_id() {
        let events = [event("a", 1), event("a", 2), event("a", 1), event("a", 2)];
        let (rows, leftovers) = plan_round(&events, &[0, 1, 2, 3]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].payload_hash, events[0].payload_hash);
        assert_eq!(rows[0].indices, vec![0, 2]);
        assert_eq!(leftovers, vec![1, 3]);

        let (next, rest) = plan_round(&events, &leftovers);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].payload_hash, events[1].payload_hash);
        assert_eq!(next[0].indices, vec![1, 3]);
        assert!(rest.is_empty());
    }

    #[test]
    fn plan_round_sorts_rows_by_external_id() {
        let events = [event("c", 1), event("a", 1), event("b", 1), event("a", 1)];
        let (rows, leftovers) = plan_round(&events, &[0, 1, 2, 3]);
        let ids: Vec<&str> = rows.iter().map(|r| r.external_id).collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
        assert_eq!(rows[0].indices, vec![1, 3]);
        assert!(leftovers.is_empty());
    }

    #[test]
    fn plan_round_plans_only_the_pending_indices() {
        let events = [event("a", 1), event("b", 1), event("c", 1)];
        let (rows, _) = plan_round(&events, &[2, 0]);
        let ids: Vec<&str> = rows.iter().map(|r| r.external_id).collect();
        assert_eq!(ids, vec!["a", "c"]);
    }

    #[test]
    fn resolve_round_creates_once_then_counts_duplicates() {
        let events = [event("a", 1), event("a", 1), event("b", 1)];
        let (rows, _) = plan_round(&events, &[0, 1, 2]);
        let mut outcomes = vec![None; events.len()];
        // "a" is new (its count is this round's two submissions); "b" existed (count grew).
        let returned = HashMap::from([
            ("a".to_owned(), summary(1, "a", 2)),
            ("b".to_owned(), summary(2, "b", 5)),
        ]);
        let conflicting = resolve_round(&rows, returned, &mut outcomes);
        assert!(conflicting.is_empty());
        assert!(matches!(&outcomes[0], Some(IngestOutcome::Created(s)) if s.id == 1));
        assert!(matches!(&outcomes[1], Some(IngestOutcome::Duplicate(s)) if s.id == 1));
        assert!(matches!(&outcomes[2], Some(IngestOutcome::Duplicate(s)) if s.id == 2));
    }

    #[test]
    fn rows_that_did_not_come_back_are_conflicts() {
        let events = [event("a", 1), event("a", 1)];
        let (rows, _) = plan_round(&events, &[0, 1]);
        let mut outcomes = vec![None; events.len()];
        let conflicting = resolve_round(&rows, HashMap::new(), &mut outcomes);
        assert_eq!(conflicting, vec!["a"]);
        resolve_conflicts(&rows, &HashMap::from([("a".to_owned(), 7)]), &mut outcomes);
        let outcomes = finish(outcomes).expect("every submission resolved");
        for outcome in outcomes {
            assert_eq!(
                outcome,
                IngestOutcome::Conflict {
                    existing_id: 7,
                    external_id: "a".to_owned()
                }
            );
        }
    }

    #[test]
    fn finish_reports_an_unresolved_submission() {
        let outcomes = vec![None];
        assert!(matches!(
            finish(outcomes),
            Err(crate::StoreError::Corrupt(_))
        ));
    }
}
