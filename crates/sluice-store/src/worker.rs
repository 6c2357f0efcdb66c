//! Backend-neutral helpers for the worker's writes: batched completion as column vectors
//! (for multi-row statements), dedupe lookups, release messages.

use crate::model::*;
use sluice_core::event::ExecutionResult;
use std::collections::HashMap;

/// New rule executions as columns, one entry per execution.
#[derive(Default)]
pub(crate) struct NewExecutions {
    pub attempt_ids: Vec<i64>,
    pub event_ids: Vec<i64>,
    pub rule_ids: Vec<i64>,
    pub rule_version_ids: Vec<i64>,
    pub results: Vec<&'static str>,
    pub errors: Vec<Option<String>>,
    pub keys: Vec<Option<String>>,
    pub durations: Vec<i64>,
}

/// Outcomes of executions recorded as `started` before their action ran.
#[derive(Default)]
pub(crate) struct StartedUpdates {
    pub ids: Vec<i64>,
    pub results: Vec<&'static str>,
    pub errors: Vec<Option<String>>,
    pub durations: Vec<i64>,
}

/// Where each event goes next.
#[derive(Default)]
pub(crate) struct EventMoves {
    pub event_ids: Vec<i64>,
    pub attempt_ids: Vec<i64>,
    pub states: Vec<&'static str>,
    pub next_ats: Vec<Option<Timestamp>>,
    pub errors: Vec<Option<String>>,
    /// Deferred: back to pending without the attempt counting, its trigger kept.
    pub deferred: Vec<bool>,
    /// Set aside: like deferred, and the attempt is not recorded at all.
    pub set_aside: Vec<bool>,
    /// The target a deferred or set-aside event waits for.
    pub waiting_for: Vec<Option<String>>,
    /// How the attempt ended, and how long it ran (its error is `errors`).
    pub statuses: Vec<&'static str>,
    pub durations: Vec<i64>,
}

/// How attempts end.
#[derive(Default)]
pub(crate) struct AttemptEnds {
    pub ids: Vec<i64>,
    pub statuses: Vec<&'static str>,
    pub errors: Vec<Option<String>>,
    pub durations: Vec<i64>,
}

pub(crate) struct CompletionPlan<'a> {
    outcomes: &'a [AttemptOutcome],
    pub new_executions: NewExecutions,
    pub started: StartedUpdates,
    pub events: EventMoves,
}

impl<'a> CompletionPlan<'a> {
    pub fn new(outcomes: &'a [AttemptOutcome]) -> Self {
        let mut new_executions = NewExecutions::default();
        let mut started = StartedUpdates::default();
        let mut events = EventMoves::default();
        for outcome in outcomes {
            for x in &outcome.executions {
                match x.started_id {
                    Some(id) => {
                        started.ids.push(id);
                        started.results.push(x.result.as_str());
                        started.errors.push(x.error.clone());
                        started.durations.push(x.duration_ms);
                    }
                    None => {
                        new_executions.attempt_ids.push(outcome.attempt_id);
                        new_executions.event_ids.push(outcome.event_id);
                        new_executions.rule_ids.push(x.rule_id);
                        new_executions.rule_version_ids.push(x.rule_version_id);
                        new_executions.results.push(x.result.as_str());
                        new_executions.errors.push(x.error.clone());
                        new_executions.keys.push(x.idempotency_key.clone());
                        new_executions.durations.push(x.duration_ms);
                    }
                }
            }
            let (state, next_at) = outcome.next.as_text();
            let waiting_for = match &outcome.next {
                NextState::WaitFor { target, .. } | NextState::SetAside { target, .. } => {
                    Some(target.clone())
                }
                _ => None,
            };
            events.event_ids.push(outcome.event_id);
            events.attempt_ids.push(outcome.attempt_id);
            events.states.push(state);
            events.next_ats.push(next_at);
            events.errors.push(outcome.error.clone());
            events.deferred.push(waiting_for.is_some());
            events
                .set_aside
                .push(matches!(outcome.next, NextState::SetAside { .. }));
            events.waiting_for.push(waiting_for);
            events.statuses.push(outcome.status.as_str());
            events.durations.push(outcome.duration_ms);
        }
        Self {
            outcomes,
            new_executions,
            started,
            events,
        }
    }

    /// The attempt ends of those attempts that still held their lease (and were not set
    /// aside: those leave no attempt).
    pub fn attempts_for(&self, kept_attempt_ids: &[i64]) -> AttemptEnds {
        let mut ends = AttemptEnds::default();
        for outcome in self.outcomes {
            if kept_attempt_ids.contains(&outcome.attempt_id)
                && !matches!(outcome.next, NextState::SetAside { .. })
            {
                ends.ids.push(outcome.attempt_id);
                ends.statuses.push(outcome.status.as_str());
                ends.errors.push(outcome.error.clone());
                ends.durations.push(outcome.duration_ms);
            }
        }
        ends
    }
}

/// Applied beats started: an action that was re-sent after a crash and then applied is done.
pub(crate) fn merge_prior(rows: Vec<(String, String)>) -> HashMap<String, ExecutionResult> {
    let mut prior = HashMap::new();
    for (key, result) in rows {
        let result = if result == "applied" {
            ExecutionResult::Applied
        } else {
            ExecutionResult::Started
        };
        let entry = prior.entry(key).or_insert(result);
        if result == ExecutionResult::Applied {
            *entry = ExecutionResult::Applied;
        }
    }
    prior
}

pub(crate) fn release_message(which: Release) -> &'static str {
    match which {
        Release::Expired => "lease expired: the worker stopped renewing it (it crashed or stalled)",
        Release::OlderThan(_) => "requeued by an operator (requeue-stuck)",
    }
}

pub(crate) fn snapshot(rule: Rule) -> RuleSnapshot {
    RuleSnapshot {
        rule_id: rule.id,
        rule_name: rule.name,
        event_type: rule.event_type,
        version: rule.current_version,
    }
}

impl NextState {
    /// The state column and `next_attempt_at` this means.
    pub(crate) fn as_text(&self) -> (&'static str, Option<Timestamp>) {
        match self {
            NextState::Processed => ("processed", None),
            NextState::Failed => ("failed", None),
            NextState::RetryAt(at)
            | NextState::WaitFor { until: at, .. }
            | NextState::SetAside { until: at, .. } => ("pending", Some(*at)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use sluice_core::event::AttemptStatus;

    fn execution(
        rule_id: i64,
        result: ExecutionResult,
        started_id: Option<i64>,
    ) -> ExecutionRecord {
        ExecutionRecord {
            rule_id,
            rule_version_id: rule_id * 10,
            result,
            error: None,
            idempotency_key: started_id.map(|id| format!("key-{id}")),
            duration_ms: 5,
            started_id,
        }
    }

    fn outcome(
        attempt_id: i64,
        next: NextState,
        executions: Vec<ExecutionRecord>,
    ) -> AttemptOutcome {
        AttemptOutcome {
            event_id: attempt_id * 100,
            attempt_id,
            status: AttemptStatus::Success,
            error: None,
            duration_ms: 42,
            next,
            executions,
        }
    }

    #[test]
    fn executions_started_before_their_action_are_updates_the_rest_inserts() {
        let outcomes = [
            outcome(
                1,
                NextState::Processed,
                vec![
                    execution(7, ExecutionResult::Applied, Some(70)),
                    execution(8, ExecutionResult::Skipped, None),
                ],
            ),
            outcome(
                2,
                NextState::Failed,
                vec![execution(9, ExecutionResult::Failed, None)],
            ),
        ];
        let plan = CompletionPlan::new(&outcomes);

        assert_eq!(plan.started.ids, vec![70]);
        assert_eq!(plan.started.results, vec!["applied"]);

        let x = &plan.new_executions;
        assert_eq!(x.attempt_ids, vec![1, 2]);
        assert_eq!(x.event_ids, vec![100, 200]);
        assert_eq!(x.rule_ids, vec![8, 9]);
        assert_eq!(x.rule_version_ids, vec![80, 90]);
        assert_eq!(x.results, vec!["skipped", "failed"]);

        assert_eq!(plan.events.event_ids, vec![100, 200]);
        assert_eq!(plan.events.attempt_ids, vec![1, 2]);
        assert_eq!(plan.events.states, vec!["processed", "failed"]);
    }

    #[test]
    fn a_plan_without_new_executions_is_empty() {
        let outcomes = [outcome(
            1,
            NextState::Processed,
            vec![execution(7, ExecutionResult::Applied, Some(70))],
        )];
        assert!(CompletionPlan::new(&outcomes)
            .new_executions
            .attempt_ids
            .is_empty());
    }

    #[test]
    fn a_retry_moves_the_event_back_to_pending_at_its_time() {
        let at = Utc::now();
        let outcomes = [outcome(1, NextState::RetryAt(at), Vec::new())];
        let plan = CompletionPlan::new(&outcomes);
        assert_eq!(plan.events.states, vec!["pending"]);
        assert_eq!(plan.events.next_ats, vec![Some(at)]);
    }

    #[test]
    fn attempts_for_keeps_only_attempts_that_held_their_lease() {
        let outcomes = [
            outcome(1, NextState::Processed, Vec::new()),
            outcome(2, NextState::Processed, Vec::new()),
            outcome(3, NextState::Failed, Vec::new()),
        ];
        let plan = CompletionPlan::new(&outcomes);
        let ends = plan.attempts_for(&[3, 1]);
        assert_eq!(ends.ids, vec![1, 3]);
        assert_eq!(ends.statuses, vec!["success", "success"]);
        assert_eq!(ends.durations, vec![42, 42]);
        assert!(plan.attempts_for(&[]).ids.is_empty());
    }

    #[test]
    fn merge_prior_applied_beats_started_in_either_order() {
        let rows = vec![
            ("a".to_owned(), "started".to_owned()),
            ("a".to_owned(), "applied".to_owned()),
            ("b".to_owned(), "applied".to_owned()),
            ("b".to_owned(), "started".to_owned()),
            ("c".to_owned(), "started".to_owned()),
        ];
        let prior = merge_prior(rows);
        assert_eq!(prior.len(), 3);
        assert_eq!(prior["a"], ExecutionResult::Applied);
        assert_eq!(prior["b"], ExecutionResult::Applied);
        assert_eq!(prior["c"], ExecutionResult::Started);
    }
}
