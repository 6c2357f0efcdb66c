//! The rows sluice stores, as the rest of the program sees them (backend-neutral).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sluice_core::event::{AttemptStatus, EventState, ExecutionResult, Trigger};

pub type Timestamp = DateTime<Utc>;

/// One stored event, everything `GET /events/{id}` shows plus the worker's bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: i64,
    pub external_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: Value,
    pub state: EventState,
    pub received_count: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub processed_at: Option<Timestamp>,
    pub replayed_at: Option<Timestamp>,
    #[serde(skip)]
    pub lease_expires_at: Option<Timestamp>,
    #[serde(skip)]
    pub leased_by: Option<String>,
}

/// What `POST /events` answers about an event it created or found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventSummary {
    pub id: i64,
    pub external_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub state: EventState,
    pub received_count: i64,
    pub created_at: Timestamp,
}

/// The fate of one submitted event in an ingest batch.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestOutcome {
    /// A new event was stored.
    Created(EventSummary),
    /// The same id with the same payload was already stored; its `received_count` was bumped.
    Duplicate(EventSummary),
    /// The same id is stored with a different payload; nothing was written.
    Conflict {
        existing_id: i64,
        external_id: String,
    },
}

/// Filters of `GET /events`; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub state: Option<EventState>,
    pub event_type: Option<String>,
    pub external_id: Option<String>,
    /// Inclusive lower bound on `created_at`.
    pub start: Option<Timestamp>,
    /// Inclusive upper bound on `created_at`.
    pub end: Option<Timestamp>,
}

/// A page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// Counts of `GET /events/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventStats {
    pub total: i64,
    pub pending: i64,
    pub processing: i64,
    pub processed: i64,
    pub failed: i64,
    pub failed_last_24h: i64,
    /// Pending events that already ran at least once (waiting for a retry).
    pub retrying: i64,
}

/// One processing attempt of an event, with what each rule did in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    pub id: i64,
    pub event_id: i64,
    pub attempt_no: i64,
    pub trigger: Trigger,
    pub status: AttemptStatus,
    pub error: Option<String>,
    pub worker: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
    pub rule_executions: Vec<RuleExecution>,
}

/// What one rule (at one version) did with an event during one attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleExecution {
    pub id: i64,
    pub rule_id: i64,
    pub rule_name: String,
    pub rule_version_id: i64,
    pub rule_version: i64,
    pub result: ExecutionResult,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub executed_at: Timestamp,
    pub duration_ms: Option<i64>,
}
