//! One attempt at one event: take the rule pass's decisions, run the actions they call for
//! with their delivery guarantees, and decide where the event goes next.
//!
//! The retry path: an action's failure is classified retryable or not by its executor
//! (`actions::ActionError`); `attempt_end` turns the attempt's failures into a status;
//! [`next_after_failure`] picks retry-with-backoff or `failed`; the outcome writer in
//! `worker/mod.rs` stores it and wakes the claim loop when the retry is due.

use super::bookkeeping::Bookkeeping;
use crate::actions::{ActionContext, ActionError, Actions};
use crate::delivery::{Admission, Delivered, Targets};
use crate::event_types::Processing;
use crate::rule_pass::{self, Decision, RuleDecision, RuleSet};
use crate::traces::{self, KeyValue, SpanKind, TraceSpan};
use crate::worker::WorkerSlot;
use chrono::{DateTime, Utc};
use sluice_core::action::RenderedAction;
use sluice_core::event::{AttemptStatus, ExecutionResult};
use sluice_core::retry::RetryPolicy;
use sluice_store::{
    AttemptOutcome, ClaimedEvent, ExecutionRecord, NewStarted, NextState, StoreError,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What processing needs besides the event.
pub struct ProcessContext {
    pub bookkeeping: Bookkeeping,
    pub actions: Actions,
    pub targets: Arc<Targets>,
}

/// One rule's result plus whether a failure could succeed on retry.
struct RuleResult {
    record: ExecutionRecord,
    retryable: bool,
    /// Deferred: the target it waits for.
    deferred_for: Option<String>,
}

/// How the rules of an attempt went, when they did not fail on the store.
enum Ran {
    /// Every rule's decision was carried out (or deferred).
    Through,
    /// Nothing ran: this target's line in this worker is full, so the event is set aside.
    SetAside(String),
}

/// Executions finished so far; shared so a timeout cannot lose them.
type Finished = Arc<Mutex<Vec<RuleResult>>>;

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Where an event goes after an attempt that did not succeed: a retry after the policy's
/// backoff (with `jitter` in `[0, 1)`), or `failed` when the failure cannot succeed on retry or
/// no attempt is left. `run_attempts` counts the attempts of this run, this one included.
pub fn next_after_failure(
    retry: &RetryPolicy,
    run_attempts: i64,
    retryable: bool,
    now: DateTime<Utc>,
    jitter: f64,
) -> NextState {
    if !retryable {
        return NextState::Failed;
    }
    let done = u32::try_from(run_attempts.max(0)).unwrap_or(u32::MAX);
    match retry.next_delay_ms(done, jitter) {
        Some(delay) => NextState::RetryAt(
            now + chrono::Duration::milliseconds(i64::try_from(delay).unwrap_or(i64::MAX)),
        ),
        None => NextState::Failed,
    }
}

/// How an attempt ended, from whether it timed out and what its rules did: its status, its
/// error (naming each failed or deferred rule) and whether trying again could help. An
/// attempt whose only shortfall is deferred actions is `deferred`.
fn attempt_end(
    timed_out: Option<Duration>,
    results: &[RuleResult],
    rules: &RuleSet,
) -> (AttemptStatus, Option<String>, bool) {
    if let Some(timeout) = timed_out {
        let error = format!(
            "processing timed out after {} ms ({} of {} rules finished)",
            timeout.as_millis(),
            results.len(),
            rules.len()
        );
        return (AttemptStatus::Timeout, Some(error), true);
    }
    let failures: Vec<&RuleResult> = results
        .iter()
        .filter(|r| r.record.result == ExecutionResult::Failed)
        .collect();
    let rule_name = |id: i64| {
        rules
            .iter()
            .find(|r| r.rule_id == id)
            .map(|r| r.rule_name.as_str())
            .unwrap_or("?")
    };
    if failures.is_empty() {
        let deferred: Vec<String> = results
            .iter()
            .filter(|r| r.record.result == ExecutionResult::Deferred)
            .map(|r| {
                format!(
                    "rule {} ({}) deferred: {}",
                    r.record.rule_id,
                    rule_name(r.record.rule_id),
                    r.record.error.as_deref().unwrap_or("target unavailable")
                )
            })
            .collect();
        if deferred.is_empty() {
            return (AttemptStatus::Success, None, false);
        }
        return (AttemptStatus::Deferred, Some(deferred.join("; ")), false);
    }
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
}

/// Runs one attempt to its end (or its timeout) and says how it ended. Traced as a span of
/// the trace the event was ingested in.
pub async fn process(
    claimed: &ClaimedEvent,
    rules: RuleSet,
    processing: &Processing,
    context: &ProcessContext,
    slot: &WorkerSlot,
) -> AttemptOutcome {
    let event = &claimed.event;
    let mut span = TraceSpan::continuing(
        claimed.trace_context.as_deref(),
        || format!("process {}", event.event_type),
        SpanKind::Consumer,
        || {
            [
                KeyValue::new("sluice.event.id", event.id),
                KeyValue::new("sluice.event.external_id", event.external_id.to_string()),
                KeyValue::new("sluice.attempt.no", claimed.attempt_no),
                KeyValue::new("sluice.attempt.trigger", claimed.trigger.as_str()),
            ]
        },
    );
    // Spans name their parents rather than being entered around the work: wrapping a future
    // in its span moves it, and an attempt's future (every action's client inline) is large
    // enough that a few moves per event cost a tenth of the drain rate.
    let outcome = attempt(claimed, rules, processing, context, slot, &span).await;
    span.set(|| KeyValue::new("sluice.attempt.status", outcome.status.as_str()));
    if outcome.status == AttemptStatus::Failed {
        span.fail(outcome.error.as_deref().unwrap_or("a rule failed"));
    }
    outcome
}

async fn attempt(
    claimed: &ClaimedEvent,
    rules: RuleSet,
    processing: &Processing,
    context: &ProcessContext,
    slot: &WorkerSlot,
    span: &TraceSpan,
) -> AttemptOutcome {
    let started = Instant::now();
    let finished: Finished = Arc::new(Mutex::new(Vec::new()));
    let clock = Clock::new(processing.timeout);
    let waits = Waits {
        clock: &clock,
        slot,
    };
    let run = run_rules(
        claimed,
        &rules,
        processing,
        context,
        &waits,
        finished.clone(),
        span,
    );
    // Boxed, as each rule's execution below: awaited by value, a future is kept twice by the
    // one awaiting it, so each level doubled the task an event runs in (140 KB, moved into
    // its cell at every spawn: 14% of a worker's CPU in `memmove`).
    let outcome = clock.run(Box::pin(run)).await;
    let timed_out = outcome.is_none().then_some(processing.timeout);
    let results = std::mem::take(&mut *finished.lock().unwrap_or_else(|e| e.into_inner()));
    let (status, error, retryable) = match outcome {
        Some(Err(error)) => (AttemptStatus::Failed, Some(store_error(&error)), true),
        Some(Ok(Ran::SetAside(target))) => {
            return AttemptOutcome {
                event_id: claimed.event.id,
                attempt_id: claimed.attempt_id,
                status: AttemptStatus::Deferred,
                error: None,
                duration_ms: millis(started.elapsed()),
                next: NextState::SetAside {
                    until: wait_deadline(claimed, &target, processing),
                    target,
                },
                executions: Vec::new(),
            };
        }
        _ => attempt_end(timed_out, &results, &rules),
    };
    let deferred_for = results.iter().find_map(|r| r.deferred_for.clone());
    let next = if status == AttemptStatus::Success {
        NextState::Processed
    } else if let (AttemptStatus::Deferred, Some(target)) = (status, deferred_for) {
        NextState::WaitFor {
            until: wait_deadline(claimed, &target, processing),
            target,
        }
    } else {
        next_after_failure(
            &processing.retry,
            claimed.run_attempts,
            retryable,
            Utc::now(),
            rand::random::<f64>(),
        )
    };
    AttemptOutcome {
        event_id: claimed.event.id,
        attempt_id: claimed.attempt_id,
        status,
        error,
        duration_ms: millis(started.elapsed()),
        next,
        executions: results.into_iter().map(|r| r.record).collect(),
    }
}

/// When an event that waits for `target` stops waiting and fails: its longest allowed wait
/// after it began waiting — now, or earlier if it already waited for this target.
fn wait_deadline(claimed: &ClaimedEvent, target: &str, processing: &Processing) -> DateTime<Utc> {
    let since = match (&claimed.waiting_for, claimed.waiting_since) {
        (Some(waited_for), Some(since)) if waited_for == target => since,
        _ => Utc::now(),
    };
    since + chrono::Duration::from_std(processing.max_wait).unwrap_or(chrono::Duration::MAX)
}

/// Whether the event already waited for `target` as long as it may.
fn waited_too_long(claimed: &ClaimedEvent, target: &str, processing: &Processing) -> bool {
    claimed.waiting_for.as_deref() == Some(target)
        && wait_deadline(claimed, target, processing) <= Utc::now()
}

/// What an attempt sets aside while one of its deliveries waits in line for its target: its
/// processing timeout stands still (time in line is not time spent processing) and its
/// worker slot is free for other events.
struct Waits<'a> {
    clock: &'a Clock,
    slot: &'a WorkerSlot,
}

impl Waits<'_> {
    fn pause(&self) {
        self.clock.pause();
        self.slot.give_up();
    }

    async fn resume(&self) {
        self.slot.take_again().await;
        self.clock.resume();
    }
}

/// An attempt's processing timeout, which stands still while it waits for its target.
struct Clock {
    state: Mutex<ClockState>,
    resumed: tokio::sync::Notify,
}

struct ClockState {
    deadline: tokio::time::Instant,
    paused_at: Option<tokio::time::Instant>,
}

impl Clock {
    fn new(timeout: Duration) -> Self {
        Clock {
            state: Mutex::new(ClockState {
                deadline: tokio::time::Instant::now() + timeout,
                paused_at: None,
            }),
            resumed: tokio::sync::Notify::new(),
        }
    }

    fn pause(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.paused_at = Some(tokio::time::Instant::now());
    }

    fn resume(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = state.paused_at.take() {
            state.deadline += at.elapsed();
        }
        self.resumed.notify_one();
    }

    /// Runs `work` to its end, or `None` once the (paused-adjusted) deadline passed.
    async fn run<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            let (deadline, paused) = {
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                (state.deadline, state.paused_at.is_some())
            };
            let alarm = async {
                if paused {
                    self.resumed.notified().await;
                } else {
                    tokio::time::sleep_until(deadline).await;
                }
            };
            tokio::select! {
                // The work first: most attempts end on their first poll, and then no timer
                // is ever registered (as with `tokio::time::timeout`).
                biased;
                out = &mut work => return Some(out),
                () = alarm => {
                    let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    if state.paused_at.is_none() && tokio::time::Instant::now() >= state.deadline {
                        return None;
                    }
                }
            }
        }
    }
}

/// The outcome of an attempt that could not even start (its rules could not be loaded): a
/// retryable failure, so the event comes back later.
pub fn cannot_start(
    claimed: &ClaimedEvent,
    processing: &Processing,
    error: &str,
) -> AttemptOutcome {
    AttemptOutcome {
        event_id: claimed.event.id,
        attempt_id: claimed.attempt_id,
        status: AttemptStatus::Failed,
        error: Some(error.to_owned()),
        duration_ms: 0,
        next: next_after_failure(
            &processing.retry,
            claimed.run_attempts,
            true,
            Utc::now(),
            rand::random::<f64>(),
        ),
        executions: Vec::new(),
    }
}

/// Evaluates every rule, then executes the decisions in order — unless one of their targets
/// has its line in this worker full and not moving fast enough to wait for a place in it, in
/// which case nothing runs and the event is set aside.
async fn run_rules(
    claimed: &ClaimedEvent,
    rules: &RuleSet,
    processing: &Processing,
    context: &ProcessContext,
    waits: &Waits<'_>,
    finished: Finished,
    attempt_span: &TraceSpan,
) -> Result<Ran, StoreError> {
    let decisions = rule_pass::evaluate_all(rules, &claimed.event).await;
    for decided in &decisions {
        if let Decision::Apply { action, .. } = &decided.decision {
            if let Some(target) = context.actions.target(action) {
                if context.targets.crowded(&target)
                    && !waited_too_long(claimed, &target, processing)
                {
                    waits.pause();
                    let placed = context.targets.place_in_line(&target).await;
                    waits.resume().await;
                    if !placed {
                        context.targets.set_aside(&target);
                        return Ok(Ran::SetAside(target));
                    }
                }
            }
        }
    }
    for decided in decisions {
        // A rule whose condition is false gets no span (explain says why): an event of a type
        // with many rules would otherwise export one per rule.
        let mut span = match decided.decision {
            Decision::Skip => TraceSpan::none(),
            _ => attempt_span.child(
                || format!("rule {}", decided.rule.rule_name),
                SpanKind::Internal,
                || {
                    [
                        KeyValue::new("sluice.rule.id", decided.rule.rule_id),
                        KeyValue::new("sluice.rule.version", decided.rule.version),
                    ]
                },
            ),
        };
        let result = Box::pin(execute(claimed, decided, processing, context, waits, &span)).await;
        span.set(|| KeyValue::new("sluice.rule.result", result.record.result.as_str()));
        if let (ExecutionResult::Failed, Some(error)) = (result.record.result, &result.record.error)
        {
            span.fail(error);
        }
        finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(result);
    }
    Ok(Ran::Through)
}

/// Carries out one rule's decision; never fails the others.
async fn execute(
    claimed: &ClaimedEvent,
    mut decided: RuleDecision,
    processing: &Processing,
    context: &ProcessContext,
    waits: &Waits<'_>,
    rule_span: &TraceSpan,
) -> RuleResult {
    let started = Instant::now();
    // An at-most-once action is settled against its prior executions right before it runs.
    // An event's first attempt has none to settle against: its keys name the event, and
    // every attempt that could have written under them counted itself at its claim (one set
    // aside uncounts itself, but it ran nothing). So the lookup, a round trip on the way to
    // every delivery, is made only from the second attempt on (a retry, a replay, a re-send
    // after a crash).
    let mut lookup_failed = None;
    let first_attempt = claimed.attempt_no == 1;
    if let Some(key) = decided
        .at_most_once_key()
        .filter(|_| !first_attempt)
        .map(str::to_owned)
    {
        match context.bookkeeping.prior(key).await {
            Ok(prior) => decided.settle(prior),
            Err(error) => lookup_failed = Some(unrecorded(&error)),
        }
    }
    let RuleDecision {
        rule,
        decision,
        decided_in,
    } = decided;
    let event = &claimed.event;
    let mut record = ExecutionRecord {
        rule_id: rule.rule_id,
        rule_version_id: rule.version_id,
        result: ExecutionResult::Skipped,
        error: None,
        idempotency_key: decision.recorded_key().map(str::to_owned),
        duration_ms: 0,
        started_id: None,
    };
    let finish = |mut record: ExecutionRecord, result, error: Option<String>, retryable| {
        record.result = result;
        record.error = error;
        record.duration_ms = millis(decided_in + started.elapsed());
        RuleResult {
            record,
            retryable,
            deferred_for: None,
        }
    };
    if let Some(error) = lookup_failed {
        return finish(record, ExecutionResult::Failed, Some(error), true);
    }
    let (action, key, at_most_once) = match decision {
        Decision::Skip => return finish(record, ExecutionResult::Skipped, None, false),
        Decision::Dedupe { .. } => return finish(record, ExecutionResult::Deduped, None, false),
        Decision::Fail { error, .. } => {
            return finish(record, ExecutionResult::Failed, Some(error), false)
        }
        Decision::Apply {
            action,
            idempotency_key,
            at_most_once,
        } => (action, idempotency_key, at_most_once),
    };
    // The receiver may be unavailable (circuit open, paused): then the action is deferred,
    // before anything is recorded as started. At its cap, the delivery waits in line here,
    // and that wait does not count against the processing timeout.
    let started = || NewStarted {
        attempt_id: claimed.attempt_id,
        event_id: event.id,
        rule_id: rule.rule_id,
        rule_version_id: rule.version_id,
        idempotency_key: key.clone(),
    };
    // A delivery that may be re-sent (a webhook) records its `started` row while it waits in
    // line for its target, so the place it gets under the cap is spent on the call alone.
    // Should the target open while it waits, that row becomes the deferral (nothing was
    // sent; were the worker to die in between, a re-send carries the same keys and is the
    // first the receiver sees). One that is never re-sent (an email) is recorded only once
    // it may go: a `started` without an outcome stops it for good.
    let record_in_line = at_most_once && action.kind().may_resend();
    let permit = match context.actions.target(&action) {
        None => None,
        Some(target) => {
            let expired = waited_too_long(claimed, &target, processing);
            let released_as_probe = !expired && claimed.waiting_for.as_deref() == Some(&target);
            let admission = match context.targets.admit(&target, released_as_probe).await {
                Ok(Ok(admission)) => Ok(admission),
                Ok(Err(place)) => {
                    waits.pause();
                    let in_line = context.targets.wait_in_line(&target, place);
                    let admission = if record_in_line {
                        let (admission, recorded) =
                            tokio::join!(in_line, context.bookkeeping.started(started()));
                        match recorded {
                            Ok(id) => record.started_id = Some(id),
                            Err(error) => {
                                waits.resume().await;
                                return finish(
                                    record,
                                    ExecutionResult::Failed,
                                    Some(unrecorded(&error)),
                                    true,
                                );
                            }
                        }
                        admission
                    } else {
                        in_line.await
                    };
                    waits.resume().await;
                    Ok(admission)
                }
                Err(error) => Err(error),
            };
            // Under a rate limit (or a 429's hold-off) it then waits for its send time, its
            // worker slot free and its timeout standing still, as in line.
            let admission = match admission {
                Ok(Admission::Go(permit)) if context.targets.is_paced(&target) => {
                    waits.pause();
                    let paced = context.targets.pace(&permit).await;
                    waits.resume().await;
                    match paced {
                        Ok(None) => Ok(Admission::Go(permit)),
                        Ok(Some(reason)) => Ok(Admission::Wait(reason)),
                        Err(error) => Err(error),
                    }
                }
                other => other,
            };
            match admission {
                Ok(Admission::Go(permit)) => Some(permit),
                Ok(Admission::Wait(reason)) if expired => {
                    let waited = humantime(processing.max_wait);
                    return finish(
                        record,
                        ExecutionResult::Failed,
                        Some(format!(
                            "waited {waited} for {target}, the longest allowed \
                             (TARGET_MAX_WAIT or the event type's max_wait_ms): {reason}"
                        )),
                        false,
                    );
                }
                Ok(Admission::Wait(reason)) => {
                    let mut result = finish(record, ExecutionResult::Deferred, Some(reason), false);
                    result.deferred_for = Some(target);
                    return result;
                }
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
    };
    if at_most_once && record.started_id.is_none() {
        match context.bookkeeping.started(started()).await {
            Ok(id) => record.started_id = Some(id),
            Err(error) => {
                return finish(
                    record,
                    ExecutionResult::Failed,
                    Some(unrecorded(&error)),
                    true,
                )
            }
        }
    }
    // Sent with the delivery (a `traceparent` header), so the receiver continues the trace.
    let mut span = action_span(&action, context, rule_span);
    let traceparent = span.traceparent();
    let action_context = ActionContext {
        traceparent: traceparent.as_deref(),
        event_id: event.id,
        external_id: &event.external_id,
        event_type: &event.event_type,
        rule_id: rule.rule_id,
        rule_name: &rule.rule_name,
        rule_version: rule.version,
        idempotency_key: &key,
    };
    let ran = context.actions.run(&action, &action_context).await;
    if let Err(error) = &ran {
        span.fail(&error.to_string());
    }
    drop(span);
    if let Some(permit) = permit {
        let how = match &ran {
            Ok(()) => Delivered::Ok,
            Err(ActionError::Retryable(message)) => Delivered::Unavailable(message.clone()),
            Err(ActionError::Permanent(_)) => Delivered::Refused,
            Err(ActionError::Throttled { retry_after, .. }) => Delivered::Throttled(*retry_after),
        };
        let quiet = crate::operational::is_operational(&event.event_type);
        context.targets.finished(permit, how, quiet).await;
    }
    match ran {
        Ok(()) => finish(record, ExecutionResult::Applied, None, false),
        Err(error) => {
            let retryable = error.is_retryable();
            finish(
                record,
                ExecutionResult::Failed,
                Some(error.to_string()),
                retryable,
            )
        }
    }
}

/// The span of one delivery, child of its rule's; none (and nothing computed) while traces
/// are off, and none for an action that does not leave the process (a log line).
fn action_span(action: &RenderedAction, context: &ProcessContext, parent: &TraceSpan) -> TraceSpan {
    let span_kind = match action {
        _ if !traces::on() => return TraceSpan::none(),
        RenderedAction::Log { .. } | RenderedAction::Noop => return TraceSpan::none(),
        RenderedAction::CallWebhook { .. } | RenderedAction::SendEmail { .. } => SpanKind::Client,
        RenderedAction::PublishNats { .. }
        | RenderedAction::PublishRabbitmq { .. }
        | RenderedAction::PublishRedis { .. } => SpanKind::Producer,
    };
    let kind = action.kind().as_str();
    let target = context.actions.target(action);
    parent.child(
        || format!("{kind} {}", target.as_deref().unwrap_or("")),
        span_kind,
        || {
            let target = target.as_ref();
            std::iter::once(KeyValue::new("sluice.action.kind", kind))
                .chain(target.map(|target| KeyValue::new("sluice.target", target.clone())))
        },
    )
}

/// A wait as people write it: `24h`, `90m`, `45s`, `1500ms`.
fn humantime(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// The delivery's bookkeeping could not be written: logged, and a retry will try again.
fn unrecorded(error: &str) -> String {
    tracing::warn!(error = %error, "store error while processing");
    "database unavailable while processing; will retry".to_owned()
}

fn store_error(error: &StoreError) -> String {
    tracing::warn!(error = %error, "store error while processing");
    "database unavailable while processing; will retry".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff_ms: vec![1000, 5000],
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap()
    }

    #[test]
    fn a_retryable_failure_waits_the_backoff_for_its_attempt() {
        // Jitter 0.5 leaves the delay as configured.
        let first = next_after_failure(&policy(), 1, true, now(), 0.5);
        assert_eq!(
            first,
            NextState::RetryAt(now() + chrono::Duration::seconds(1))
        );
        let second = next_after_failure(&policy(), 2, true, now(), 0.5);
        assert_eq!(
            second,
            NextState::RetryAt(now() + chrono::Duration::seconds(5))
        );
    }

    #[test]
    fn the_last_allowed_attempt_or_a_permanent_failure_fails_the_event() {
        assert_eq!(
            next_after_failure(&policy(), 3, true, now(), 0.5),
            NextState::Failed
        );
        assert_eq!(
            next_after_failure(&policy(), 1, false, now(), 0.5),
            NextState::Failed
        );
    }

    fn result(rule_id: i64, result: ExecutionResult, retryable: bool) -> RuleResult {
        RuleResult {
            record: ExecutionRecord {
                rule_id,
                rule_version_id: rule_id * 10,
                result,
                error: (result == ExecutionResult::Failed).then(|| format!("boom {rule_id}")),
                idempotency_key: None,
                duration_ms: 1,
                started_id: None,
            },
            retryable,
            deferred_for: None,
        }
    }

    fn rules() -> RuleSet {
        Arc::new(
            [(1, "first"), (2, "second")]
                .into_iter()
                .map(|(id, name)| {
                    Arc::new(rule_pass::CompiledRule {
                        rule_id: id,
                        rule_name: name.to_owned(),
                        version_id: id * 10,
                        version: 1,
                        body: Err("unused".to_owned()),
                    })
                })
                .collect(),
        )
    }

    #[test]
    fn an_attempt_fails_retryably_only_if_a_failed_rule_may_succeed_later() {
        let results = [
            result(1, ExecutionResult::Failed, false),
            result(2, ExecutionResult::Applied, false),
        ];
        let (status, error, retryable) = attempt_end(None, &results, &rules());
        assert_eq!(status, AttemptStatus::Failed);
        assert_eq!(error.as_deref(), Some("rule 1 (first): boom 1"));
        assert!(!retryable);

        let results = [
            result(1, ExecutionResult::Failed, false),
            result(2, ExecutionResult::Failed, true),
        ];
        let (_, error, retryable) = attempt_end(None, &results, &rules());
        assert_eq!(
            error.as_deref(),
            Some("rule 1 (first): boom 1; rule 2 (second): boom 2")
        );
        assert!(retryable);
    }

    #[test]
    fn a_timeout_is_retryable_and_says_how_far_it_got() {
        let results = [result(1, ExecutionResult::Applied, false)];
        let (status, error, retryable) =
            attempt_end(Some(Duration::from_millis(250)), &results, &rules());
        assert_eq!(status, AttemptStatus::Timeout);
        assert_eq!(
            error.as_deref(),
            Some("processing timed out after 250 ms (1 of 2 rules finished)")
        );
        assert!(retryable);
        let (status, error, _) = attempt_end(None, &results, &rules());
        assert_eq!((status, error), (AttemptStatus::Success, None));
    }
}
