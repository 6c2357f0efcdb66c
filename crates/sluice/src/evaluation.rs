//! Where rule evaluations run. Nearly every evaluation is cheap and runs where it is asked
//! for, under a small inline budget; one that needs more is moved to tokio's blocking pool
//! and run there with the rule's full budget, so a costly (or hostile) rule never holds an
//! async worker thread and `/health` keeps answering. Either way the budget bounds the work.

use serde_json::Value;
use sluice_core::logic::{EvalError, Explained, Limits, Logic};

/// The most an evaluation may cost on an async thread before it is moved to the blocking pool
/// (a typical rule uses tens of operations).
fn inline_cap() -> Limits {
    Limits {
        max_operations: 2_000,
        max_bytes_built: 64 * 1024,
        ..Limits::default()
    }
}

/// Runs CPU-bound work on the blocking pool and waits for it.
pub async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EvalError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        tracing::error!(error = %error, "an evaluation stopped unexpectedly");
        EvalError::Type("the evaluation stopped unexpectedly".to_owned())
    })
}

/// Whether the rule's result for `data` is truthy.
pub async fn matches(logic: &Logic, data: &Value) -> Result<bool, EvalError> {
    let cap = inline_cap();
    match logic.matches_capped(data, &cap) {
        Err(error) if error.is_budget() && logic.is_capped_by(&cap) => {
            let (logic, data) = (logic.clone(), data.clone());
            off_the_runtime(move || logic.matches(&data)).await?
        }
        decided => decided,
    }
}

/// The rule's result for `data`, as JSON.
pub async fn evaluate(logic: &Logic, data: &Value) -> Result<Value, EvalError> {
    let cap = inline_cap();
    match logic.evaluate_capped(data, &cap) {
        Err(error) if error.is_budget() && logic.is_capped_by(&cap) => {
            let (logic, data) = (logic.clone(), data.clone());
            off_the_runtime(move || logic.evaluate(&data)).await?
        }
        decided => decided,
    }
}

/// The rule's result for `data`, explained (the same evaluation, watched node by node).
pub async fn explain(logic: &Logic, data: &Value) -> Result<Explained, EvalError> {
    let cap = inline_cap();
    match logic.explain_capped(data, &cap) {
        Err(error) if error.is_budget() && logic.is_capped_by(&cap) => {
            let (logic, data) = (logic.clone(), data.clone());
            off_the_runtime(move || logic.explain(&data)).await?
        }
        decided => decided,
    }
}
