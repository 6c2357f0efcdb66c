//! The rows sluice stores, as the rest of the program sees them (backend-neutral).

use chrono::{DateTime, Utc};
use serde_json::Value;
pub use sluice_core::event::ReplayRules;
use sluice_core::event::{AttemptStatus, EventState, ExecutionResult, Trigger};

pub type Timestamp = DateTime<Utc>;

/// One stored event row, with the worker's bookkeeping (lease) next to what the API shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub external_id: String,
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
    pub lease_expires_at: Option<Timestamp>,
    pub leased_by: Option<String>,
    pub ordering_key: Option<String>,
}

/// What `POST /events` answers about an event it created or found.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSummary {
    pub id: i64,
    pub external_id: String,
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
    /// Only events after this one in listing order (newest first): `(created_at, id)` of the
    /// last event of the previous page. Served by the listing's own index, however deep.
    pub before: Option<(Timestamp, i64)>,
}

/// An event without its payload, and how large that payload is: what listings fetch first.
#[derive(Debug, Clone, PartialEq)]
pub struct EventHeader {
    pub id: i64,
    pub external_id: String,
    pub event_type: String,
    pub state: EventState,
    pub received_count: i64,
    pub attempts: i64,
    pub next_attempt_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub processed_at: Option<Timestamp>,
    pub replayed_at: Option<Timestamp>,
    pub ordering_key: Option<String>,
    /// Size of the payload as JSON text.
    pub payload_bytes: i64,
}

impl EventHeader {
    /// The whole event, given its payload.
    pub fn with_payload(self, payload: Value) -> Event {
        Event {
            id: self.id,
            external_id: self.external_id,
            event_type: self.event_type,
            payload,
            state: self.state,
            received_count: self.received_count,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            last_error: self.last_error,
            created_at: self.created_at,
            updated_at: self.updated_at,
            processed_at: self.processed_at,
            replayed_at: self.replayed_at,
            lease_expires_at: None,
            leased_by: None,
            ordering_key: self.ordering_key,
        }
    }
}

/// A page of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    /// The same page with one row more: fetched to learn whether another page follows.
    pub fn plus_one(self) -> Page {
        Page {
            limit: self.limit + 1,
            ..self
        }
    }
}

/// Counts of `GET /events/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// Events that arrived in one minute, by what has become of them so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Arrivals {
    pub minute: Timestamp,
    /// Pending (retries included) or processing.
    pub waiting: i64,
    pub processed: i64,
    pub failed: i64,
}

/// One processing attempt of an event, with what each rule did in it.
#[derive(Debug, Clone, PartialEq)]
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
    /// For a replay attempt: the name of the API key that asked for it.
    pub requested_by: Option<String>,
    pub rule_executions: Vec<RuleExecution>,
}

/// What one rule (at one version) did with an event during one attempt.
#[derive(Debug, Clone, PartialEq)]
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

/// One immutable version of a rule's condition and action.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleVersion {
    pub id: i64,
    pub rule_id: i64,
    pub version: i64,
    pub condition: Value,
    pub action: Value,
    pub action_hash: String,
    pub created_at: Timestamp,
    /// The name of the API key that wrote this version (`None` without access control).
    pub created_by: Option<String>,
}

/// A rule with its current version, as the rules API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: i64,
    pub name: String,
    pub event_type: String,
    pub active: bool,
    pub current_version_id: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub current_version: RuleVersion,
}

/// A rule to create (already validated by the caller).
#[derive(Debug, Clone)]
pub struct NewRuleRecord {
    pub name: String,
    pub event_type: String,
    pub active: bool,
    pub condition: Value,
    pub action: Value,
    pub action_hash: String,
    pub created_by: Option<String>,
}

/// A new version's content.
#[derive(Debug, Clone)]
pub struct VersionContent {
    pub condition: Value,
    pub action: Value,
    pub action_hash: String,
    pub created_by: Option<String>,
}

/// What `PUT /rules/{id}` changes; `new_version` is set only when condition or action differ
/// from the current version.
#[derive(Debug, Clone, Default)]
pub struct RuleChanges {
    pub name: Option<String>,
    pub event_type: Option<String>,
    pub active: Option<bool>,
    pub new_version: Option<VersionContent>,
}

#[derive(Debug, Clone, Default)]
pub struct RuleFilter {
    pub active: Option<bool>,
    pub event_type: Option<String>,
    /// Only rules with a lower id (listing order is newest first): a cursor.
    pub before_id: Option<i64>,
}

/// A rule version together with what the worker needs to know about its rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSnapshot {
    pub rule_id: i64,
    pub rule_name: String,
    pub event_type: String,
    pub version: RuleVersion,
}

/// An event leased to a worker, with the attempt the claim opened.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedEvent {
    pub event: Event,
    pub attempt_id: i64,
    pub attempt_no: i64,
    pub trigger: Trigger,
    pub replay_rules: ReplayRules,
    /// Attempts in this run (since ingest or the last replay), this one included.
    pub run_attempts: i64,
    /// The rule generation the claim saw: every rule (and event-type) change committed
    /// before the event was ingested is in it, so a worker whose rules are at least this
    /// new applies them — without a round trip of its own to ask.
    pub rule_generation: i64,
    /// The target the event was waiting for when it was claimed — it was released as that
    /// target's probe, or its longest allowed wait is over — and since when it waits.
    pub waiting_for: Option<String>,
    pub waiting_since: Option<Timestamp>,
    /// The trace the event was ingested in (a W3C `traceparent`), which its attempts continue.
    pub trace_context: Option<String>,
}

/// A non-idempotent action about to run, recorded `started` first.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStarted {
    pub attempt_id: i64,
    pub event_id: i64,
    pub rule_id: i64,
    pub rule_version_id: i64,
    pub idempotency_key: String,
}

/// What one rule did, to be recorded with the attempt's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRecord {
    pub rule_id: i64,
    pub rule_version_id: i64,
    pub result: ExecutionResult,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub duration_ms: i64,
    /// The durable `started` row written before the action ran, which this record completes.
    pub started_id: Option<i64>,
}

/// Where an event goes after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    Processed,
    RetryAt(Timestamp),
    /// Back to pending, waiting for `target` (its circuit is open or it is paused), without
    /// the attempt counting against `max_attempts`. Claims pass it by until the target is
    /// released (`Store::release_waiting`) or `until` (the end of its longest allowed wait)
    /// comes. Since when it waits is kept while it waits for the same target.
    WaitFor {
        target: String,
        until: Timestamp,
    },
    /// Given back without a trace: nothing ran, because `target` already has as many
    /// deliveries in flight and waiting in this worker as it may. No attempt is recorded
    /// (the attempt's number is given back); it waits in the queue like [`NextState::WaitFor`].
    SetAside {
        target: String,
        until: Timestamp,
    },
    Failed,
}

/// A lease a worker holds: which event, under which attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    pub event_id: i64,
    pub attempt_id: i64,
}

/// The end of one attempt: its status, the event's next state and the rule executions.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptOutcome {
    pub event_id: i64,
    pub attempt_id: i64,
    pub status: AttemptStatus,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub next: NextState,
    pub executions: Vec<ExecutionRecord>,
}

/// An event whose state changed, for live updates.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    pub event_id: i64,
    pub external_id: String,
    pub event_type: String,
    pub state: EventState,
    pub attempt_id: Option<i64>,
    pub status: Option<AttemptStatus>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<i64>,
}

/// Why an event could not be replayed.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayRefusal {
    NotFound,
    NotTerminal(EventState),
}

/// Why an event could not be cancelled.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelRefusal {
    NotFound,
    /// Not waiting in the queue: being processed now, or already settled.
    NotWaiting(EventState),
}

/// Which processing events to give back to the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Release {
    /// Leases that expired (their worker stopped renewing them).
    Expired,
    /// Everything processing whose last change is older than this many seconds.
    OlderThan(i64),
}

/// What explaining a stored execution needs: which rule version ran, and its condition.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionCondition {
    pub rule_id: i64,
    pub rule_version_id: i64,
    pub condition: Value,
    /// The version's action as saved.
    pub action: Value,
}

/// An API key as stored: its public prefix and the hash of the whole key, never the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub scopes: Vec<String>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// A key to store.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub scopes: Vec<String>,
}

/// A delivery target's shared state: its circuit breaker and totals.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRecord {
    pub target: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    pub paused: bool,
    pub consecutive_failures: i64,
    pub last_error: Option<String>,
    pub last_failure_at: Option<Timestamp>,
    pub opened_at: Option<Timestamp>,
    pub next_probe_at: Option<Timestamp>,
    pub delivered_total: i64,
    pub failed_total: i64,
    /// Deliveries in flight, summed over the worker processes that reported lately.
    pub in_flight: i64,
    /// Events waiting in the queue for this target, and since when the oldest waits.
    pub waiting: i64,
    pub waiting_since: Option<Timestamp>,
    /// The target's own rate limit (`Some(0.0)`: none), if it overrides the process default.
    pub max_per_second: Option<f64>,
    /// The next send time not yet handed out under its rate limit (or its 429 hold-off).
    pub pace_next_at: Option<Timestamp>,
    /// What its limit was divided by at its last 429 (1: not slowed), and when.
    pub slowdown: f64,
    pub throttled_at: Option<Timestamp>,
}

/// What a pending event waits for, and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub target: String,
    pub since: Timestamp,
}

/// How many history rows are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistorySize {
    pub attempts: i64,
    pub executions: i64,
    /// Executions recorded `deferred` (their target could not take them).
    pub deferred: i64,
}

/// One worker process's report for one target since its last.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetReport {
    pub target: String,
    pub in_flight: i64,
    pub delivered: i64,
    /// Failures that do not count against the breaker (the receiver answered, e.g. a 400).
    pub failed: i64,
}

/// What an event type overrides; `None` means the process default (or, for `schema`, that
/// any `data` object is accepted).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventTypeSettings {
    pub description: Option<String>,
    /// A JSON Schema `data` must match (checked when the schema is saved, never here).
    pub schema: Option<Value>,
    pub processing_timeout_ms: Option<i64>,
    pub max_attempts: Option<i64>,
    /// Delays before retries; the last one repeats.
    pub retry_backoff_ms: Option<Vec<i64>>,
    /// How long an event may wait for its target before it fails.
    pub max_wait_ms: Option<i64>,
}

/// An event type as listed: configured (has settings), seen (has events or rules), or both.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTypeRecord {
    pub event_type: String,
    pub settings: EventTypeSettings,
    pub configured: bool,
    /// Events of this type stored now.
    pub events_total: i64,
    pub updated_at: Option<Timestamp>,
    pub updated_by: Option<String>,
}

/// A partial change to an event type's settings: `None` keeps a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventTypeChanges {
    pub description: Option<Option<String>>,
    pub schema: Option<Option<Value>>,
    pub processing_timeout_ms: Option<Option<i64>>,
    pub max_attempts: Option<Option<i64>>,
    pub retry_backoff_ms: Option<Option<Vec<i64>>>,
    pub max_wait_ms: Option<Option<i64>>,
    /// The asking key's name, recorded as `updated_by`.
    pub updated_by: Option<String>,
}

/// Which event types a worker claims: any matching an `include` glob (all types when there is
/// none) and no `exclude` glob. A glob's `*` matches any run of characters, nothing else is
/// special.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeSelector {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl TypeSelector {
    /// The `LIKE` pattern of a glob (`\` escapes).
    pub fn like_pattern(glob: &str) -> String {
        let mut out = String::with_capacity(glob.len());
        for c in glob.chars() {
            match c {
                '*' => out.push('%'),
                '%' | '_' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out
    }

    /// The SQLite `GLOB` pattern of a glob (only `*` stays special).
    pub fn glob_pattern(glob: &str) -> String {
        let mut out = String::with_capacity(glob.len());
        for c in glob.chars() {
            match c {
                '?' => out.push_str("[?]"),
                '[' => out.push_str("[[]"),
                c => out.push(c),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::TypeSelector;

    #[test]
    fn globs_keep_only_the_star_special() {
        assert_eq!(TypeSelector::like_pattern("pay.*"), "pay.%");
        assert_eq!(TypeSelector::like_pattern("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(TypeSelector::glob_pattern("pay.*"), "pay.*");
        assert_eq!(TypeSelector::glob_pattern("a?[b]"), "a[?][[]b]");
    }
}

/// A source as stored: its validated configuration (secrets included; callers mask them)
/// and what came through it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRecord {
    pub name: String,
    pub kind: String,
    pub config: serde_json::Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub updated_by: Option<String>,
    pub accepted: i64,
    pub rejected: i64,
    pub last_rejected_at: Option<Timestamp>,
    pub last_rejection: Option<String>,
    /// Why a broker source's consumer last failed to connect or lost its connection;
    /// `None` once one connects again.
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
}

/// What one process saw through one source since its last report.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceTally {
    pub name: String,
    pub accepted: i64,
    pub rejected: i64,
    /// The latest refusal: when, and why.
    pub last_rejection: Option<(Timestamp, String)>,
    /// The latest news of a broker source's connection, if any.
    pub connection: Option<ConnectionNews>,
}

/// How a broker source's consumer last fared.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionNews {
    Connected,
    Failed(Timestamp, String),
}
