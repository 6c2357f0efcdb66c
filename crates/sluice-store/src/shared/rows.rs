//! How rows become model types, for both backends: the column lists queries select and one
//! `*_from_row` per model type.

use super::dialect::RowExt;
use crate::model::*;
use crate::StoreError;
use std::collections::HashMap;

/// What [`event_from_row`] reads.
pub(crate) const EVENT_COLUMNS: &str = "id, external_id, type, payload, state, received_count, \
     attempts, next_attempt_at, last_error, created_at, updated_at, processed_at, replayed_at, \
     lease_expires_at, leased_by, ordering_key";

/// What [`header_from_row`] reads, but for the payload size its dialect computes.
pub(crate) const HEADER_COLUMNS: &str = "id, external_id, type, state, received_count, \
     attempts, next_attempt_at, last_error, created_at, updated_at, processed_at, replayed_at, \
     ordering_key";

/// What [`attempt_from_row`] reads.
pub(crate) const ATTEMPT_COLUMNS: &str = "id, event_id, attempt_no, trigger, status, error, \
     worker, started_at, finished_at, duration_ms, requested_by";

/// Rule executions with their rule's name and version, as [`execution_from_row`] reads them.
pub(crate) const EXECUTION_SELECT: &str = "SELECT x.id, x.attempt_id, x.rule_id, \
     r.name AS rule_name, x.rule_version_id, v.version AS rule_version, x.result, x.error, \
     x.idempotency_key, x.executed_at, x.duration_ms \
     FROM rule_executions x \
     JOIN rules r ON r.id = x.rule_id \
     JOIN rule_versions v ON v.id = x.rule_version_id";

/// Rules with their current version, as [`rule_from_row`] reads them.
pub(crate) const RULE_SELECT: &str = "SELECT r.id, r.name, r.event_type, r.active, \
     r.current_version_id, r.created_at, r.updated_at, v.id AS v_id, v.rule_id AS v_rule_id, \
     v.version AS v_version, v.condition AS v_condition, v.action AS v_action, \
     v.action_hash AS v_action_hash, v.created_at AS v_created_at, \
     v.created_by AS v_created_by \
     FROM rules r JOIN rule_versions v ON v.id = r.current_version_id";

/// The columns of `rule_versions`, named as [`version_from_row`] reads them.
pub(crate) const VERSION_COLUMNS: &str = "id AS v_id, rule_id AS v_rule_id, version AS v_version, \
     condition AS v_condition, action AS v_action, action_hash AS v_action_hash, \
     created_at AS v_created_at, created_by AS v_created_by";

pub(crate) fn summary_from_row<R: RowExt>(row: &R) -> Result<EventSummary, StoreError> {
    Ok(EventSummary {
        id: row.value("id")?,
        external_id: row.value("external_id")?,
        event_type: row.value("type")?,
        state: row.text_enum("state")?,
        received_count: row.value("received_count")?,
        created_at: row.timestamp("created_at")?,
    })
}

pub(crate) fn header_from_row<R: RowExt>(row: &R) -> Result<EventHeader, StoreError> {
    Ok(EventHeader {
        id: row.value("id")?,
        external_id: row.value("external_id")?,
        event_type: row.value("type")?,
        state: row.text_enum("state")?,
        received_count: row.value("received_count")?,
        attempts: row.value("attempts")?,
        next_attempt_at: row.opt_timestamp("next_attempt_at")?,
        last_error: row.value("last_error")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        processed_at: row.opt_timestamp("processed_at")?,
        replayed_at: row.opt_timestamp("replayed_at")?,
        ordering_key: row.value("ordering_key")?,
        payload_bytes: row.value("payload_bytes")?,
    })
}

pub(crate) fn event_from_row<R: RowExt>(row: &R) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.value("id")?,
        external_id: row.value("external_id")?,
        event_type: row.value("type")?,
        payload: row.json("payload")?,
        state: row.text_enum("state")?,
        received_count: row.value("received_count")?,
        attempts: row.value("attempts")?,
        next_attempt_at: row.opt_timestamp("next_attempt_at")?,
        last_error: row.value("last_error")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        processed_at: row.opt_timestamp("processed_at")?,
        replayed_at: row.opt_timestamp("replayed_at")?,
        lease_expires_at: row.opt_timestamp("lease_expires_at")?,
        leased_by: row.value("leased_by")?,
        ordering_key: row.value("ordering_key")?,
    })
}

pub(crate) fn attempt_from_row<R: RowExt>(row: &R) -> Result<Attempt, StoreError> {
    Ok(Attempt {
        id: row.value("id")?,
        event_id: row.value("event_id")?,
        attempt_no: row.value("attempt_no")?,
        trigger: row.text_enum("trigger")?,
        status: row.text_enum("status")?,
        error: row.value("error")?,
        worker: row.value("worker")?,
        started_at: row.timestamp("started_at")?,
        finished_at: row.opt_timestamp("finished_at")?,
        duration_ms: row.value("duration_ms")?,
        requested_by: row.value("requested_by")?,
        rule_executions: Vec::new(),
    })
}

/// An execution and the id of the attempt it belongs to.
pub(crate) fn execution_from_row<R: RowExt>(row: &R) -> Result<(i64, RuleExecution), StoreError> {
    Ok((
        row.value("attempt_id")?,
        RuleExecution {
            id: row.value("id")?,
            rule_id: row.value("rule_id")?,
            rule_name: row.value("rule_name")?,
            rule_version_id: row.value("rule_version_id")?,
            rule_version: row.value("rule_version")?,
            result: row.text_enum("result")?,
            error: row.value("error")?,
            idempotency_key: row.value("idempotency_key")?,
            executed_at: row.timestamp("executed_at")?,
            duration_ms: row.value("duration_ms")?,
        },
    ))
}

pub(crate) fn version_from_row<R: RowExt>(row: &R) -> Result<RuleVersion, StoreError> {
    Ok(RuleVersion {
        id: row.value("v_id")?,
        rule_id: row.value("v_rule_id")?,
        version: row.value("v_version")?,
        condition: row.json("v_condition")?,
        action: row.json("v_action")?,
        action_hash: row.value("v_action_hash")?,
        created_at: row.timestamp("v_created_at")?,
        created_by: row.value("v_created_by")?,
    })
}

pub(crate) fn rule_from_row<R: RowExt>(row: &R) -> Result<Rule, StoreError> {
    Ok(Rule {
        id: row.value("id")?,
        name: row.value("name")?,
        event_type: row.value("event_type")?,
        active: row.value("active")?,
        current_version_id: row.value("current_version_id")?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        current_version: version_from_row(row)?,
    })
}

/// The event part of a state change (`id, external_id, type, state`); the attempt's end is
/// left for the caller to fill in.
pub(crate) fn state_change_from_row<R: RowExt>(
    row: &R,
    attempt_id: Option<i64>,
) -> Result<StateChange, StoreError> {
    Ok(StateChange {
        event_id: row.value("id")?,
        external_id: row.value("external_id")?,
        event_type: row.value("type")?,
        state: row.text_enum("state")?,
        attempt_id,
        status: None,
        finished_at: None,
        duration_ms: None,
    })
}

/// Puts each execution under its attempt.
pub(crate) fn attach_executions(
    attempts: &mut [Attempt],
    executions: impl Iterator<Item = Result<(i64, RuleExecution), StoreError>>,
) -> Result<(), StoreError> {
    let position: HashMap<i64, usize> = attempts
        .iter()
        .enumerate()
        .map(|(i, a)| (a.id, i))
        .collect();
    for execution in executions {
        let (attempt_id, execution) = execution?;
        if let Some(&i) = position.get(&attempt_id) {
            attempts[i].rule_executions.push(execution);
        }
    }
    Ok(())
}

/// What [`api_key_from_row`] reads.
pub(crate) const API_KEY_COLUMNS: &str =
    "id, name, prefix, key_hash, scopes, created_at, last_used_at, revoked_at";

pub(crate) fn api_key_from_row<R: RowExt>(row: &R) -> Result<ApiKeyRecord, StoreError> {
    let scopes: String = row.value("scopes")?;
    Ok(ApiKeyRecord {
        id: row.value("id")?,
        name: row.value("name")?,
        prefix: row.value("prefix")?,
        key_hash: row.value("key_hash")?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        created_at: row.timestamp("created_at")?,
        last_used_at: row.opt_timestamp("last_used_at")?,
        revoked_at: row.opt_timestamp("revoked_at")?,
    })
}

/// What [`target_from_row`] reads, but for `in_flight`.
pub(crate) const TARGET_COLUMNS: &str = "target, state, paused, consecutive_failures, \
     last_error, last_failure_at, opened_at, next_probe_at, delivered_total, failed_total, \
     max_per_second, pace_next_us, slowdown, throttled_at";

pub(crate) fn target_from_row<R: RowExt>(row: &R) -> Result<TargetRecord, StoreError> {
    Ok(TargetRecord {
        target: row.value("target")?,
        state: row.value("state")?,
        paused: row.value("paused")?,
        consecutive_failures: row.value("consecutive_failures")?,
        last_error: row.value("last_error")?,
        last_failure_at: row.opt_timestamp("last_failure_at")?,
        opened_at: row.opt_timestamp("opened_at")?,
        next_probe_at: row.opt_timestamp("next_probe_at")?,
        delivered_total: row.value("delivered_total")?,
        failed_total: row.value("failed_total")?,
        in_flight: row.value::<Option<i64>>("in_flight")?.unwrap_or(0),
        waiting: row.value::<Option<i64>>("waiting")?.unwrap_or(0),
        waiting_since: row.opt_timestamp("waiting_since")?,
        max_per_second: row.value("max_per_second")?,
        pace_next_at: row
            .value::<Option<i64>>("pace_next_us")?
            .and_then(chrono::DateTime::from_timestamp_micros),
        slowdown: row.value("slowdown")?,
        throttled_at: row.opt_timestamp("throttled_at")?,
    })
}

/// What [`event_type_from_row`] reads.
pub(crate) const EVENT_TYPE_COLUMNS: &str = "event_type, description, data_schema, \
     processing_timeout_ms, max_attempts, retry_backoff_ms, max_wait_ms, updated_at, updated_by";

pub(crate) fn event_type_from_row<R: RowExt>(row: &R) -> Result<EventTypeRecord, StoreError> {
    let json_text = |column: &str| -> Result<Option<serde_json::Value>, StoreError> {
        row.value::<Option<String>>(column)?
            .map(|text| {
                serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("event_types.{column}: {e}")))
            })
            .transpose()
    };
    let backoff = json_text("retry_backoff_ms")?
        .map(|value| {
            serde_json::from_value::<Vec<i64>>(value)
                .map_err(|e| StoreError::Corrupt(format!("event_types.retry_backoff_ms: {e}")))
        })
        .transpose()?;
    Ok(EventTypeRecord {
        event_type: row.value("event_type")?,
        settings: EventTypeSettings {
            description: row.value("description")?,
            schema: json_text("data_schema")?,
            processing_timeout_ms: row.value("processing_timeout_ms")?,
            max_attempts: row.value("max_attempts")?,
            retry_backoff_ms: backoff,
            max_wait_ms: row.value("max_wait_ms")?,
        },
        configured: true,
        events_total: 0,
        updated_at: Some(row.timestamp("updated_at")?),
        updated_by: row.value("updated_by")?,
    })
}
