//! Replay: send processed or failed events back through the rules — one, a list, a filter —
//! or preview what a replay would do (a dry run, through the same rule pass the worker uses).
//! Every replay is a new attempt; history is never rewritten. Also `requeue-stuck`.

use super::events::EventOut;
use crate::bus::Committed;
use crate::error::{ApiError, ApiResult};
use crate::rule_pass::{self, compile_all, Decision};
use crate::state::AppState;
use serde::Serialize;
use sluice_core::event::{EventState, ReplayRules};
use sluice_store::{CancelRefusal, EventFilter, Release, ReplayRefusal, StateChange};
use utoipa::ToSchema;

pub const MAX_REPLAY_IDS: usize = 100;
pub const MAX_REPLAY_FILTER_LIMIT: i64 = 10_000;
/// Events a filtered replay-batch takes when it names no limit.
pub const DEFAULT_REPLAY_FILTER_LIMIT: i64 = 1000;
/// Default age of `processing` events that `requeue-stuck` gives back.
pub const DEFAULT_STUCK_SECONDS: i64 = 300;
/// Oldest age `requeue-stuck` accepts: a year.
pub const MAX_STUCK_SECONDS: i64 = 31_536_000;

const CURRENT_WARNING: &str = "replays evaluate each rule's current version, so the outcome may differ from the original processing; use \"rules\": \"original\" to re-run the versions first evaluated";

/// What a rule would do in a dry run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Would {
    Apply,
    Skip,
    Dedupe,
    Fail,
}

impl Would {
    pub fn as_str(self) -> &'static str {
        match self {
            Would::Apply => "apply",
            Would::Skip => "skip",
            Would::Dedupe => "dedupe",
            Would::Fail => "fail",
        }
    }
}

/// One rule's line in a dry run.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DryRunRuleOut {
    pub rule_id: i64,
    pub rule_name: String,
    pub rule_version_id: i64,
    pub rule_version: i64,
    pub would: Would,
    /// Why it would fail.
    pub error: Option<String>,
    /// For actions that run at most once (webhooks, emails, publishes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// For `apply`: what the action would send — rendered for this event, with what sluice
    /// adds (the idempotency key) and credentials masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub action: Option<serde_json::Value>,
    /// For `apply`: the target (`scheme://host:port`) it would go through, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// For `apply`, if the action has `{"$logic": …}` transforms: how each was computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transforms: Option<Vec<crate::operations::events::TransformOut>>,
}

/// The answer to `POST /events/{id}/replay`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayOut {
    pub message: String,
    /// Present (true) for a dry run, which changed nothing and ran no action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    pub rules: ReplayRules,
    /// The name of the API key that asked for the replay (recorded on its attempt); `null`
    /// without access control or for a dry run.
    pub requested_by: Option<String>,
    pub event: EventOut,
    /// Set when replaying current versions, whose outcome may differ from the original.
    pub warning: Option<&'static str>,
    /// A dry run's verdict per rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<DryRunRuleOut>>,
}

fn refusal(id: i64, refusal: ReplayRefusal) -> ApiError {
    match refusal {
        ReplayRefusal::NotFound => ApiError::not_found(format!("event {id} not found")),
        ReplayRefusal::NotTerminal(state) => ApiError::conflict(format!(
            "event {id} is {state}; only processed or failed events can be replayed"
        )),
    }
}

fn warning(rules: ReplayRules) -> Option<&'static str> {
    (rules == ReplayRules::Current).then_some(CURRENT_WARNING)
}

/// Queues a processed or failed event for a `replay` attempt asked for `by` the named key;
/// 404 unknown, 409 unfinished.
pub async fn replay(
    state: &AppState,
    id: i64,
    rules: ReplayRules,
    by: Option<&str>,
) -> ApiResult<ReplayOut> {
    let event = state
        .store
        .replay_event(id, rules, by)
        .await?
        .map_err(|r| refusal(id, r))?;
    state.bus.announce(Committed::Requeued(&[StateChange {
        event_id: event.id,
        external_id: event.external_id.clone(),
        event_type: event.event_type.clone(),
        state: event.state,
        attempt_id: None,
        status: None,
        finished_at: None,
        duration_ms: None,
    }]));
    metrics::counter!("sluice_replays_total").increment(1);
    Ok(ReplayOut {
        message: "Event queued for replay".to_owned(),
        dry_run: None,
        rules,
        requested_by: by.map(str::to_owned),
        warning: warning(rules),
        event: event.into(),
        results: None,
    })
}

/// The answer to `POST /events/{id}/cancel`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CancelOut {
    pub message: String,
    /// The event as it is now: `failed`, `last_error` saying it was cancelled.
    pub event: EventOut,
}

/// Takes a pending event that waits — scheduled, or for a retry or a target — out of the
/// queue, asked for `by` the named key; 404 unknown, 409 being processed or settled.
pub async fn cancel(state: &AppState, id: i64, by: Option<&str>) -> ApiResult<CancelOut> {
    let change = state
        .store
        .cancel_event(id, by)
        .await?
        .map_err(|refusal| match refusal {
            CancelRefusal::NotFound => ApiError::not_found(format!("event {id} not found")),
            CancelRefusal::NotWaiting(state) => ApiError::conflict(format!(
                "event {id} is {}; only a pending event that waits can be cancelled",
                if state == EventState::Pending {
                    "being processed".to_owned()
                } else {
                    state.to_string()
                }
            )),
        })?;
    state
        .bus
        .announce(Committed::Cancelled(std::slice::from_ref(&change)));
    let event = state
        .store
        .get_event(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("event {id} not found")))?;
    Ok(CancelOut {
        message: "Event cancelled".to_owned(),
        event: event.into(),
    })
}

/// What a replay would do with each rule — decided by the worker's own rule pass, with the
/// same limits — without running any action or changing anything.
pub async fn dry_run(state: &AppState, id: i64, rules: ReplayRules) -> ApiResult<ReplayOut> {
    let event = state
        .store
        .get_event(id)
        .await?
        .ok_or_else(|| refusal(id, ReplayRefusal::NotFound))?;
    if !event.state.is_terminal() {
        return Err(refusal(id, ReplayRefusal::NotTerminal(event.state)));
    }
    let snapshots = match rules {
        ReplayRules::Current => state
            .store
            .active_rules()
            .await?
            .into_iter()
            .filter(|r| r.event_type == event.event_type)
            .collect(),
        ReplayRules::Original => state.store.original_rules(event.id).await?,
    };
    let compiled = compile_all(&snapshots, &state.settings.rule_limits());
    let decisions = rule_pass::decide(&*state.store, &compiled, &event).await?;
    let smtp_target = crate::actions::ActionConfig::from_settings(&state.settings).smtp_target();
    let mut results = Vec::with_capacity(decisions.len());
    for d in &decisions {
        let transforms = match (&d.decision, &d.rule.body) {
            (Decision::Apply { .. }, Ok(body)) => crate::operations::events::TransformOut::list(
                rule_pass::explain_transforms(
                    &body.action,
                    &event,
                    body.condition.logic().limits(),
                )
                .await,
            ),
            _ => None,
        };
        results.push({
            let (would, error) = match &d.decision {
                Decision::Apply { .. } => (Would::Apply, None),
                Decision::Skip => (Would::Skip, None),
                Decision::Dedupe { .. } => (Would::Dedupe, None),
                Decision::Fail { error, .. } => (Would::Fail, Some(error.clone())),
            };
            DryRunRuleOut {
                rule_id: d.rule.rule_id,
                rule_name: d.rule.rule_name.clone(),
                rule_version_id: d.rule.version_id,
                rule_version: d.rule.version,
                would,
                error,
                idempotency_key: d.decision.recorded_key().map(str::to_owned),
                action: match &d.decision {
                    Decision::Apply {
                        action,
                        idempotency_key,
                        ..
                    } => Some(action.shown(idempotency_key)),
                    _ => None,
                },
                target: match &d.decision {
                    Decision::Apply { action, .. } => {
                        crate::actions::target(action, smtp_target.as_deref())
                    }
                    _ => None,
                },
                transforms,
            }
        });
    }
    Ok(ReplayOut {
        message: "Dry run: nothing was changed and no action ran".to_owned(),
        dry_run: Some(true),
        requested_by: None,
        rules,
        warning: warning(rules),
        event: event.into(),
        results: Some(results),
    })
}

/// Which events a batch replay takes.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplaySelection {
    /// These ids (1..=100, deduplicated); those not processed or failed are left alone.
    Ids(Vec<i64>),
    /// Up to `limit` processed or failed events matching the filter, newest first.
    Matching { filter: EventFilter, limit: i64 },
}

/// The answer to `POST /events/replay-batch`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayBatchOut {
    pub message: String,
    pub requested: usize,
    pub replayed: usize,
    pub rules: ReplayRules,
    /// The name of the API key that asked; `null` without access control.
    pub requested_by: Option<String>,
    /// Ids of the events queued for replay.
    pub events: Vec<i64>,
}

/// Queues every processed or failed event of the selection for replay.
pub async fn replay_batch(
    state: &AppState,
    selection: &ReplaySelection,
    rules: ReplayRules,
    by: Option<&str>,
) -> ApiResult<ReplayBatchOut> {
    let (requested, events) = match selection {
        ReplaySelection::Ids(ids) => (ids.len(), state.store.replay_events(ids, rules, by).await?),
        ReplaySelection::Matching { filter, limit } => {
            let events = state
                .store
                .replay_matching(filter, *limit, rules, by)
                .await?;
            (events.len(), events)
        }
    };
    state.bus.announce(Committed::Requeued(&events));
    let ids: Vec<i64> = events.iter().map(|e| e.event_id).collect();
    Ok(ReplayBatchOut {
        message: format!("{} of {requested} events queued for replay", ids.len()),
        requested,
        replayed: ids.len(),
        rules,
        requested_by: by.map(str::to_owned),
        events: ids,
    })
}

/// The answer to `POST /events/requeue-stuck`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequeueOut {
    pub requeued: usize,
    /// Ids of the events given back.
    pub events: Vec<i64>,
}

/// Gives back `processing` events untouched for longer than `older_than_seconds` (with leases
/// this is rarely needed: expired leases are released automatically).
pub async fn requeue_stuck(state: &AppState, older_than_seconds: i64) -> ApiResult<RequeueOut> {
    let max_attempts = i64::from(state.settings.max_attempts);
    let changes = state
        .store
        .release_events(Release::OlderThan(older_than_seconds), max_attempts)
        .await?;
    state.bus.announce(Committed::Requeued(&changes));
    let ids: Vec<i64> = changes.iter().map(|c| c.event_id).collect();
    Ok(RequeueOut {
        requeued: ids.len(),
        events: ids,
    })
}
