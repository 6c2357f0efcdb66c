//! What each rule does with an event, decided in one place for the worker and for dry runs:
//! evaluate the compiled condition, then apply, skip, dedupe or fail — and, for an action to
//! run, render it and say whether it must be recorded as `started` first. The worker executes
//! these decisions (`worker/process.rs`); a dry run reports them (`operations/replay.rs`).

use crate::evaluation;
use serde_json::Value;
use sluice_core::action::{Action, RenderedAction};
use sluice_core::event::ExecutionResult;
use sluice_core::idempotency::idempotency_key;
use sluice_core::logic::{Explained, Limits};
use sluice_core::rule::RuleBody;
use sluice_core::template::TemplateContext;
use sluice_store::{Event, RuleSnapshot, Store, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rule version ready to run. A stored version that no longer compiles (say, after limits
/// were lowered) is kept with its error, so its executions fail visibly instead of vanishing.
#[derive(Debug)]
pub struct CompiledRule {
    pub rule_id: i64,
    pub rule_name: String,
    pub version_id: i64,
    pub version: i64,
    pub body: Result<RuleBody, String>,
}

impl CompiledRule {
    pub fn compile(snapshot: &RuleSnapshot, limits: &Limits) -> Self {
        let body = RuleBody::parse(
            &snapshot.version.condition,
            &snapshot.version.action,
            limits,
        )
        .map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!(
                "stored rule version no longer compiles: {}",
                text.join("; ")
            )
        });
        CompiledRule {
            rule_id: snapshot.rule_id,
            rule_name: snapshot.rule_name.clone(),
            version_id: snapshot.version.id,
            version: snapshot.version.version,
            body,
        }
    }
}

/// The rules one attempt evaluates, in order.
pub type RuleSet = Arc<Vec<Arc<CompiledRule>>>;

/// Compiles rule versions into a set.
pub fn compile_all(snapshots: &[RuleSnapshot], limits: &Limits) -> RuleSet {
    Arc::new(
        snapshots
            .iter()
            .map(|s| Arc::new(CompiledRule::compile(s, limits)))
            .collect(),
    )
}

/// What one rule will do with the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The condition is false.
    Skip,
    /// The rule cannot succeed with this event: its version does not compile, its condition
    /// fails on this data (the same data fails the same way every time), or an earlier
    /// attempt stopped while running an action that is never sent twice (an email). Not
    /// worth a retry.
    Fail {
        error: String,
        idempotency_key: Option<String>,
    },
    /// An earlier attempt already applied this action (same event, rule and action content).
    Dedupe { idempotency_key: String },
    /// Run the action. `at_most_once` actions are recorded as `started` before they run.
    Apply {
        action: RenderedAction,
        idempotency_key: String,
        at_most_once: bool,
    },
}

impl Decision {
    /// The execution result this decision is recorded as when no action has to run.
    pub fn settled_result(&self) -> Option<ExecutionResult> {
        match self {
            Decision::Skip => Some(ExecutionResult::Skipped),
            Decision::Fail { .. } => Some(ExecutionResult::Failed),
            Decision::Dedupe { .. } => Some(ExecutionResult::Deduped),
            Decision::Apply { .. } => None,
        }
    }

    /// The idempotency key worth recording and showing: that of an at-most-once action.
    pub fn recorded_key(&self) -> Option<&str> {
        match self {
            Decision::Skip => None,
            Decision::Fail {
                idempotency_key, ..
            } => idempotency_key.as_deref(),
            Decision::Dedupe { idempotency_key } => Some(idempotency_key),
            Decision::Apply {
                idempotency_key,
                at_most_once,
                ..
            } => at_most_once.then_some(idempotency_key.as_str()),
        }
    }
}

/// A rule and its decision, with the time deciding took.
#[derive(Debug, Clone)]
pub struct RuleDecision {
    pub rule: Arc<CompiledRule>,
    pub decision: Decision,
    pub decided_in: Duration,
}

/// Decides every rule for one event, as a dry run reports it: [`evaluate_all`], then every
/// at-most-once action settled against its prior executions ([`settle`]) in one query.
pub async fn decide(
    store: &dyn Store,
    rules: &[Arc<CompiledRule>],
    event: &Event,
) -> Result<Vec<RuleDecision>, StoreError> {
    let mut decisions = evaluate_all(rules, event).await;
    let keys: Vec<String> = decisions
        .iter()
        .filter_map(|d| d.at_most_once_key().map(str::to_owned))
        .collect();
    if keys.is_empty() {
        return Ok(decisions);
    }
    let prior = store.prior_executions(&keys).await?;
    for decided in &mut decisions {
        if let Some(key) = decided.at_most_once_key() {
            let found = prior.get(key).copied();
            decided.settle(found);
        }
    }
    Ok(decisions)
}

/// Every rule's decision as far as it needs no database. The worker settles at-most-once
/// actions one by one, right before each runs (so a prior execution recorded by another
/// worker meanwhile is seen); a dry run settles them all at once ([`decide`]).
pub async fn evaluate_all(rules: &[Arc<CompiledRule>], event: &Event) -> Vec<RuleDecision> {
    let mut decisions = Vec::with_capacity(rules.len());
    for rule in rules {
        decisions.push(evaluate(rule, event).await);
    }
    decisions
}

impl RuleDecision {
    /// The key to look up before running this rule's action, if it runs at most once.
    pub fn at_most_once_key(&self) -> Option<&str> {
        match &self.decision {
            Decision::Apply {
                idempotency_key,
                at_most_once: true,
                ..
            } => Some(idempotency_key),
            _ => None,
        }
    }

    /// Settles an at-most-once action against what earlier attempts did with its key: applied
    /// means dedupe; started without an outcome (its worker died mid-call) means it goes again
    /// with the same keys where its kind allows (a webhook: the receiver can tell it is the
    /// same delivery), and fails with the reason where it does not
    /// (`ActionKind::never_resent_because`: an email).
    pub fn settle(&mut self, prior: Option<ExecutionResult>) {
        let Some(key) = self.at_most_once_key().map(str::to_owned) else {
            return;
        };
        let never_resent_because = self
            .rule
            .body
            .as_ref()
            .ok()
            .and_then(|b| b.action.kind().never_resent_because());
        match (prior, never_resent_because) {
            (Some(ExecutionResult::Applied), _) => {
                self.decision = Decision::Dedupe {
                    idempotency_key: key,
                }
            }
            (Some(_), Some(reason)) => {
                self.decision = Decision::Fail {
                    error: reason.to_owned(),
                    idempotency_key: Some(key),
                }
            }
            _ => {}
        }
    }
}

/// A rule's action rendered for one event — its transforms computed under `limits`, the
/// rule's budget — with its idempotency key (of the action as written, so the same content
/// dedupes whatever its transforms compute). An action with transforms is rendered on the
/// blocking pool, as a costly condition is evaluated: the budget bounds the work, and no
/// async thread waits for it.
pub async fn render(
    action: &Action,
    rule_id: i64,
    event: &Event,
    limits: &Limits,
) -> (Result<RenderedAction, String>, String) {
    let key = idempotency_key(event.id, rule_id, &action.content_hash());
    let rendered = if action.has_transforms() {
        let (action, event, limits) = (action.clone(), event.clone(), *limits);
        evaluation::off_the_runtime(move || render_now(&action, &event, &limits))
            .await
            .unwrap_or_else(|error| Err(error.to_string()))
    } else {
        render_now(action, event, limits)
    };
    (rendered, key)
}

/// An action rendered for a sample payload (`POST /rules/test`, the console's preview), as
/// the worker would render it for an event of that data: what it would send, shown.
pub async fn preview(action: &Action, data: Value, limits: &Limits) -> Value {
    match render(action, 0, &sample_event(data), limits).await {
        (Ok(rendered), key) => rendered.shown(&key),
        (Err(error), _) => serde_json::json!({ "error": error }),
    }
}

/// How many of an action's transforms are explained (each explanation stays under 64 KiB).
pub const MAX_EXPLAINED_TRANSFORMS: usize = 16;

/// One transform of an action, explained for one event: where it is, and its value with every
/// node of its JSONLogic — or why it could not be computed.
#[derive(Debug)]
pub struct ExplainedTransform {
    pub path: String,
    pub outcome: Result<Explained, String>,
}

/// Explains how each of an action's transforms (the first [`MAX_EXPLAINED_TRANSFORMS`]) is
/// computed for `event`, under `limits`, as the worker computes it; on the blocking pool.
pub async fn explain_transforms(
    action: &Action,
    event: &Event,
    limits: &Limits,
) -> Vec<ExplainedTransform> {
    if !action.has_transforms() {
        return Vec::new();
    }
    let (action, event, limits) = (action.clone(), event.clone(), *limits);
    evaluation::off_the_runtime(move || {
        let input = template_context(&event, &limits).transform_input();
        action
            .transforms()
            .into_iter()
            .take(MAX_EXPLAINED_TRANSFORMS)
            .map(|transform| ExplainedTransform {
                path: transform.path().to_owned(),
                outcome: transform
                    .logic()
                    .explain_capped(&input, &limits)
                    .map_err(|error| error.to_string()),
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// [`explain_transforms`] for a sample payload.
pub async fn explain_sample_transforms(
    action: &Action,
    data: Value,
    limits: &Limits,
) -> Vec<ExplainedTransform> {
    explain_transforms(action, &sample_event(data), limits).await
}

/// An event of `data` that was never stored, for previews.
fn sample_event(data: Value) -> Event {
    let now = chrono::Utc::now();
    Event {
        id: 0,
        external_id: "sample".to_owned(),
        event_type: "sample".to_owned(),
        payload: data,
        state: sluice_core::event::EventState::Pending,
        received_count: 1,
        attempts: 0,
        next_attempt_at: None,
        last_error: None,
        created_at: now,
        updated_at: now,
        processed_at: None,
        replayed_at: None,
        lease_expires_at: None,
        leased_by: None,
        ordering_key: None,
    }
}

fn template_context<'a>(event: &'a Event, limits: &Limits) -> TemplateContext<'a> {
    TemplateContext {
        event_id: event.id,
        external_id: &event.external_id,
        event_type: &event.event_type,
        data: &event.payload,
        created_at: Some(event.created_at),
        limits: *limits,
    }
}

fn render_now(action: &Action, event: &Event, limits: &Limits) -> Result<RenderedAction, String> {
    action
        .render(&template_context(event, limits))
        .map_err(|error| error.to_string())
}

/// The part of a decision that needs no database: compile errors, the condition, rendering.
async fn evaluate(rule: &Arc<CompiledRule>, event: &Event) -> RuleDecision {
    let started = Instant::now();
    let decision = match &rule.body {
        Err(message) => Decision::Fail {
            error: message.clone(),
            idempotency_key: None,
        },
        Ok(body) => match evaluation::matches(body.condition.logic(), &event.payload).await {
            Err(error) => Decision::Fail {
                error: format!("condition: {error}"),
                idempotency_key: None,
            },
            Ok(false) => Decision::Skip,
            Ok(true) => {
                let limits = body.condition.logic().limits();
                match render(&body.action, rule.rule_id, event, limits).await {
                    (Ok(action), idempotency_key) => Decision::Apply {
                        action,
                        idempotency_key,
                        at_most_once: !body.action.is_idempotent(),
                    },
                    // The same data fails the same way every time: not worth a retry.
                    (Err(error), _) => Decision::Fail {
                        error: format!("action: {error}"),
                        idempotency_key: None,
                    },
                }
            }
        },
    };
    RuleDecision {
        rule: rule.clone(),
        decision,
        decided_in: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_core::event::EventState;
    use sluice_store::RuleVersion;

    fn rule(condition: serde_json::Value, action: serde_json::Value) -> Arc<CompiledRule> {
        let snapshot = RuleSnapshot {
            rule_id: 7,
            rule_name: "big orders".to_owned(),
            event_type: "order.created".to_owned(),
            version: RuleVersion {
                id: 70,
                rule_id: 7,
                version: 3,
                condition,
                action,
                action_hash: String::new(),
                created_at: chrono::Utc::now(),
                created_by: None,
            },
        };
        Arc::new(CompiledRule::compile(&snapshot, &Limits::default()))
    }

    fn event(amount: i64) -> Event {
        let now = chrono::Utc::now();
        Event {
            id: 42,
            external_id: "ord-1".to_owned(),
            event_type: "order.created".to_owned(),
            payload: json!({"amount": amount}),
            state: EventState::Processing,
            received_count: 1,
            attempts: 1,
            next_attempt_at: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            processed_at: None,
            replayed_at: None,
            lease_expires_at: None,
            leased_by: None,
            ordering_key: None,
        }
    }

    #[tokio::test]
    async fn a_false_condition_skips_and_a_true_one_renders_the_action() {
        let log = json!({"type": "log", "params": {"message": "order {{ external_id }} of {{ data.amount }}"}});
        let r = rule(json!({">=": [{"var": "amount"}, 50]}), log);
        assert_eq!(evaluate(&r, &event(10)).await.decision, Decision::Skip);
        match evaluate(&r, &event(250)).await.decision {
            Decision::Apply {
                action: RenderedAction::Log { message, .. },
                at_most_once,
                idempotency_key,
            } => {
                assert_eq!(message, "order ord-1 of 250");
                assert!(!at_most_once, "a log line is idempotent");
                assert!(idempotency_key.starts_with("evt_42_rule_7_"));
            }
            other => panic!("expected a rendered log action, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn webhooks_run_at_most_once_and_show_their_key() {
        let hook = json!({"type": "call_webhook", "params": {"url": "https://example.com/hook"}});
        let decided = evaluate(&rule(json!(true), hook), &event(1)).await;
        let key = decided.decision.recorded_key().map(str::to_owned);
        assert!(matches!(
            decided.decision,
            Decision::Apply {
                at_most_once: true,
                ..
            }
        ));
        assert!(key.is_some_and(|k| k.starts_with("evt_42_rule_7_")));
    }

    #[tokio::test]
    async fn a_version_that_no_longer_compiles_fails_without_a_retry() {
        let broken = rule(json!({"frobnicate": []}), json!({"type": "noop"}));
        match evaluate(&broken, &event(1)).await.decision {
            Decision::Fail { error, .. } => {
                assert!(
                    error.starts_with("stored rule version no longer compiles"),
                    "{error}"
                )
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(
            Decision::Skip.settled_result(),
            Some(ExecutionResult::Skipped)
        );
    }
}
