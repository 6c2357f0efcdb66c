//! One attempt at one event: evaluate each rule, run the matching actions with their
//! delivery guarantees, and decide where the event goes next.

use super::rules::{CompiledRule, RuleSet};
use crate::actions::{ActionContext, ActionError, Actions};
use chrono::Utc;
use sluice_core::action::ActionKind;
use sluice_core::event::{AttemptStatus, ExecutionResult};
use sluice_core::idempotency::idempotency_key;
use sluice_core::retry::RetryPolicy;
use sluice_core::template::TemplateContext;
use sluice_store::{AttemptOutcome, ClaimedEvent, ExecutionRecord, NextState, Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What processing needs besides the event.
pub struct ProcessContext {
    pub store: Arc<dyn Store>,
    pub actions: Actions,
    pub retry: RetryPolicy,
    pub timeout: Duration,
}

/// One rule's result plus whether a failure could succeed on retry.
struct RuleResult {
    record: ExecutionRecord,
    retryable: bool,
}

/// Executions finished so far; shared so a timeout cannot lose them.
type Finished = Arc<Mutex<Vec<RuleResult>>>;

fn elapsed_ms(since: Instant) -> i64 {
    i64::try_from(since.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Runs one attempt to its end (or its timeout) and says how it ended.
pub async fn process(
    claimed: &ClaimedEvent,
    rules: RuleSet,
    context: &ProcessContext,
) -> AttemptOutcome {
    let started = Instant::now();
    let finished: Finished = Arc::new(Mutex::new(Vec::new()));
    let run = run_rules(claimed, &rules, context, finished.clone());
    let timed_out = tokio::time::timeout(context.timeout, run).await.is_err();
    let results = std::mem::take(&mut *finished.lock().unwrap_or_else(|e| e.into_inner()));

    let failures: Vec<&RuleResult> = results
        .iter()
        .filter(|r| r.record.result == ExecutionResult::Failed)
        .collect();
    let (status, error, retryable) = if timed_out {
        (
            AttemptStatus::Timeout,
            Some(format!(
                "processing timed out after {} ms ({} of {} rules finished)",
                context.timeout.as_millis(),
                results.len(),
                rules.len()
            )),
            true,
        )
    } else if failures.is_empty() {
        (AttemptStatus::Success, None, false)
    } else {
        let summary: Vec<String> = failures
            .iter()
            .map(|f| {
                let name = rules
                    .iter()
                    .find(|r| r.rule_id == f.record.rule_id)
                    .map(|r| r.rule_name.as_str())
                    .unwrap_or("?");
                format!(
                    "rule {} ({name}): {}",
                    f.record.rule_id,
                    f.record.error.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        (
            AttemptStatus::Failed,
            Some(summary.join("; ")),
            failures.iter().any(|f| f.retryable),
        )
    };

    let run_attempts = u32::try_from(claimed.run_attempts).unwrap_or(u32::MAX);
    let next = if status == AttemptStatus::Success {
        NextState::Processed
    } else if !retryable {
        NextState::Failed
    } else {
        match context
            .retry
            .next_delay_ms(run_attempts, rand::random::<f64>())
        {
            Some(delay) => NextState::RetryAt(
                Utc::now()
                    + chrono::Duration::milliseconds(i64::try_from(delay).unwrap_or(i64::MAX)),
            ),
            None => NextState::Failed,
        }
    };
    AttemptOutcome {
        event_id: claimed.event.id,
        attempt_id: claimed.attempt_id,
        status,
        error,
        duration_ms: elapsed_ms(started),
        next,
        executions: results.into_iter().map(|r| r.record).collect(),
    }
}

/// The outcome of an attempt that could not even start (its rules could not be loaded): a
/// retryable failure, so the event comes back later.
pub fn cannot_start(
    claimed: &ClaimedEvent,
    context: &ProcessContext,
    error: &str,
) -> AttemptOutcome {
    let run_attempts = u32::try_from(claimed.run_attempts).unwrap_or(u32::MAX);
    let next = match context
        .retry
        .next_delay_ms(run_attempts, rand::random::<f64>())
    {
        Some(delay) => NextState::RetryAt(
            Utc::now() + chrono::Duration::milliseconds(i64::try_from(delay).unwrap_or(i64::MAX)),
        ),
        None => NextState::Failed,
    };
    AttemptOutcome {
        event_id: claimed.event.id,
        attempt_id: claimed.attempt_id,
        status: AttemptStatus::Failed,
        error: Some(error.to_owned()),
        duration_ms: 0,
        next,
        executions: Vec::new(),
    }
}

async fn run_rules(
    claimed: &ClaimedEvent,
    rules: &RuleSet,
    context: &ProcessContext,
    finished: Finished,
) {
    for rule in rules.iter() {
        let result = run_rule(claimed, rule, context).await;
        finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(result);
    }
}

/// Evaluates one rule and runs its action; never fails the others.
async fn run_rule(
    claimed: &ClaimedEvent,
    rule: &CompiledRule,
    context: &ProcessContext,
) -> RuleResult {
    let started = Instant::now();
    let event = &claimed.event;
    let mut record = ExecutionRecord {
        rule_id: rule.rule_id,
        rule_version_id: rule.version_id,
        result: ExecutionResult::Skipped,
        error: None,
        idempotency_key: None,
        duration_ms: 0,
        started_id: None,
    };
    let finish = |mut record: ExecutionRecord, result, error: Option<String>, retryable| {
        record.result = result;
        record.error = error;
        record.duration_ms = elapsed_ms(started);
        RuleResult { record, retryable }
    };
    let body = match &rule.body {
        Ok(body) => body,
        Err(message) => {
            return finish(
                record,
                ExecutionResult::Failed,
                Some(message.clone()),
                false,
            )
        }
    };
    match body.condition.logic().matches(&event.payload) {
        Err(error) => {
            // The same data fails the same way every time: not worth a retry.
            return finish(
                record,
                ExecutionResult::Failed,
                Some(format!("condition: {error}")),
                false,
            );
        }
        Ok(false) => return finish(record, ExecutionResult::Skipped, None, false),
        Ok(true) => {}
    }

    let action = &body.action;
    let key = idempotency_key(event.id, rule.rule_id, &action.content_hash());
    if !action.is_idempotent() {
        record.idempotency_key = Some(key.clone());
        let prior = match context
            .store
            .prior_executions(std::slice::from_ref(&key))
            .await
        {
            Ok(prior) => prior.get(&key).copied(),
            Err(error) => {
                return finish(
                    record,
                    ExecutionResult::Failed,
                    Some(store_error(&error)),
                    true,
                )
            }
        };
        match prior {
            Some(ExecutionResult::Applied) => {
                return finish(record, ExecutionResult::Deduped, None, false)
            }
            Some(_) if action.kind() == ActionKind::SendEmail => {
                // At most once: an email whose sending was interrupted may have gone out.
                return finish(
                    record,
                    ExecutionResult::Failed,
                    Some("an earlier attempt stopped while sending this email; outcome unknown, not re-sent".into()),
                    false,
                );
            }
            // A webhook interrupted mid-call is re-sent with the same Idempotency-Key and
            // webhook-id, so the receiver can tell it is the same delivery.
            _ => {}
        }
        match context
            .store
            .record_started(
                claimed.attempt_id,
                event.id,
                rule.rule_id,
                rule.version_id,
                &key,
            )
            .await
        {
            Ok(id) => record.started_id = Some(id),
            Err(error) => {
                return finish(
                    record,
                    ExecutionResult::Failed,
                    Some(store_error(&error)),
                    true,
                )
            }
        }
    }

    let template = TemplateContext {
        event_id: event.id,
        external_id: &event.external_id,
        event_type: &event.event_type,
        data: &event.payload,
    };
    let rendered = action.render(&template);
    let action_context = ActionContext {
        event_id: event.id,
        external_id: &event.external_id,
        event_type: &event.event_type,
        rule_id: rule.rule_id,
        rule_name: &rule.rule_name,
        rule_version: rule.version,
        idempotency_key: &key,
    };
    match context.actions.run(&rendered, &action_context).await {
        Ok(()) => finish(record, ExecutionResult::Applied, None, false),
        Err(error) => {
            let retryable = matches!(error, ActionError::Retryable(_));
            finish(
                record,
                ExecutionResult::Failed,
                Some(error.to_string()),
                retryable,
            )
        }
    }
}

fn store_error(error: &StoreError) -> String {
    tracing::warn!(error = %error, "store error while processing");
    "database unavailable while processing; will retry".to_owned()
}
