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

impl NewExecutions {
    pub fn is_empty(&self) -> bool {
        self.attempt_ids.is_empty()
    }
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
            events.event_ids.push(outcome.event_id);
            events.attempt_ids.push(outcome.attempt_id);
            events.states.push(state);
            events.next_ats.push(next_at);
            events.errors.push(outcome.error.clone());
        }
        Self {
            outcomes,
            new_executions,
            started,
            events,
        }
    }

    /// The attempt ends of those attempts that still held their lease.
    pub fn attempts_for(&self, kept_attempt_ids: &[i64]) -> AttemptEnds {
        let mut ends = AttemptEnds::default();
        for outcome in self.outcomes {
            if kept_attempt_ids.contains(&outcome.attempt_id) {
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
    pub(crate) fn as_text(self) -> (&'static str, Option<Timestamp>) {
        match self {
            NextState::Processed => ("processed", None),
            NextState::Failed => ("failed", None),
            NextState::RetryAt(at) => ("pending", Some(at)),
        }
    }
}
