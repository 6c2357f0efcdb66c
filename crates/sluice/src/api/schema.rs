//! The wire shapes of request bodies, for the OpenAPI document only. Bodies are not
//! deserialized into these: the domain's validating parsers (`NewEvent::parse`,
//! `NewRule::parse`, `RulePatch::parse`, `TestRuleIn::parse`, the replay parsers in
//! `api/replay.rs`) read the JSON themselves, because they report every problem at once with
//! a path into the body, which serde cannot. Responses, by contrast, are described by the very
//! `…Out` types the handlers serialize (see `operations/`).

// Never constructed: utoipa reads their fields at compile time. (`Deserialize` is derived
// only so that `deny_unknown_fields` states, as `additionalProperties: false`, that the
// parsers refuse unknown fields.)
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::Value;
use sluice_core::action::ActionKind;
use sluice_core::event::{EventState, ReplayRules};
use utoipa::ToSchema;

/// An event as submitted.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEventIn {
    /// The producer's id, 1..255 characters; the dedupe key.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "order-123"
    )]
    id: String,
    /// 1..100 characters.
    #[schema(
        rename = "type",
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "order.created"
    )]
    #[serde(rename = "type")]
    event_type: String,
    /// Any JSON object, nested at most 20 deep.
    #[schema(value_type = Object)]
    data: Value,
    /// Events with the same key are processed one at a time, lowest id first (1..255
    /// characters).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "customer-42"
    )]
    ordering_key: Option<String>,
    /// Not processed before this instant (RFC 3339, at most 365 days ahead; a past time
    /// means at once). Not with `delay_ms`.
    #[schema(format = DateTime, example = "2026-12-24T09:00:00Z")]
    process_at: Option<String>,
    /// Not processed before this many milliseconds after it is received (at most 365 days).
    /// Not with `process_at`.
    #[schema(minimum = 0, maximum = 31_536_000_000_i64)]
    delay_ms: Option<i64>,
}

#[derive(ToSchema)]
pub struct BatchIn {
    /// 1..1000 events.
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<NewEventIn>,
}

/// `{"rules": "current" | "original", "dry_run": bool}`, all optional.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayIn {
    /// current (default): each rule's current version; original: the versions the event's
    /// first attempt evaluated.
    rules: Option<ReplayRules>,
    /// Evaluate and report what would happen; run no action, change nothing.
    dry_run: Option<bool>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilterIn {
    /// processed | failed
    state: Option<EventState>,
    #[schema(rename = "type")]
    #[serde(rename = "type")]
    event_type: Option<String>,
    start_date: Option<String>,
    end_date: Option<String>,
}

/// Either `event_ids` (1..100) or `filter` with an optional `limit` (≤ 10000, default 1000).
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayBatchIn {
    #[schema(min_items = 1, max_items = 100)]
    event_ids: Option<Vec<i64>>,
    filter: Option<ReplayFilterIn>,
    #[schema(minimum = 1, maximum = 10000)]
    limit: Option<i64>,
    rules: Option<ReplayRules>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueIn {
    /// Processing events untouched for longer than this (default 300).
    #[schema(minimum = 1, maximum = 31536000)]
    older_than_seconds: Option<i64>,
}

/// `{"type": <an action type>, "params": {...}}`; strings in params may hold
/// `{{ external_id }}`, `{{ type }}`, `{{ event_id }}`, `{{ data.path }}`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionIn {
    #[schema(rename = "type", value_type = ActionKind)]
    #[serde(rename = "type")]
    action_type: String,
    #[schema(value_type = Object)]
    params: Option<Value>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRuleIn {
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    #[schema(min_length = 1, max_length = 100)]
    event_type: String,
    /// A JSONLogic expression evaluated against the event's data.
    #[schema(value_type = Object)]
    condition: Value,
    action: ActionIn,
    /// Default true.
    active: Option<bool>,
}

/// Any subset of the fields; a changed condition or action writes a new version.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulePatchIn {
    #[schema(min_length = 1, max_length = 255)]
    name: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    event_type: Option<String>,
    #[schema(value_type = Option<Object>)]
    condition: Option<Value>,
    action: Option<ActionIn>,
    active: Option<bool>,
}

/// `{condition, data, explain?}`, or `{condition, event_type, last}` (last ≤ 1000, default 100).
#[derive(ToSchema)]
pub struct RuleTestIn {
    #[schema(value_type = Object)]
    condition: Value,
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    event_type: Option<String>,
    #[schema(minimum = 1, maximum = 1000)]
    last: Option<i64>,
    /// With `data`: also answer `explanation` (the condition's nodes with their values) and
    /// `summary` (one line saying what decided).
    explain: Option<bool>,
}

/// A key to create.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyIn {
    /// Who or what will use it (recorded as `created_by`/`requested_by`), 1..100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        example = "checkout-service"
    )]
    name: String,
    /// What it may do.
    #[schema(min_items = 1, max_items = 3)]
    scopes: Vec<crate::auth::Scope>,
}

/// A delivery target to pause or resume.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetIn {
    /// `scheme://host:port` (the port may be left out for the scheme's own).
    #[schema(max_length = 300, example = "https://hooks.example.com:443")]
    target: String,
}

/// A change of a target: fields left out keep their value.
#[derive(ToSchema, Deserialize)]
pub struct TargetChangeIn {
    /// Deliveries a second it gets at most, over every worker process (0.001 to 100,000);
    /// `0`: no limit; `null`: the process default (`TARGET_MAX_PER_SECOND`).
    #[schema(minimum = 0, maximum = 100000, example = 20, nullable)]
    max_per_second: Option<f64>,
    paused: Option<bool>,
}

/// A partial change of an event type's settings: fields left out keep their value, `null`
/// clears one (back to the process default).
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeIn {
    #[schema(max_length = 1000)]
    description: Option<String>,
    /// A JSON Schema (draft 2020-12 unless it declares another) that `data` must match;
    /// `format` is checked and references must stay inside the schema.
    #[schema(value_type = Option<Object>)]
    schema: Option<serde_json::Value>,
    /// Overrides PROCESSING_TIMEOUT_MS for this type.
    #[schema(minimum = 1, maximum = 3_600_000)]
    processing_timeout_ms: Option<i64>,
    /// Overrides MAX_ATTEMPTS for this type.
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<i64>,
    /// Overrides RETRY_BACKOFF_MS for this type: 1..20 delays in milliseconds (or one number).
    retry_backoff_ms: Option<Vec<i64>>,
    /// Overrides TARGET_MAX_WAIT for this type: how long an event may wait for its target
    /// (circuit open, paused, crowded) before it fails, in milliseconds.
    #[schema(minimum = 1000, maximum = 31_622_400_000_i64)]
    max_wait_ms: Option<i64>,
}
