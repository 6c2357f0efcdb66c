//! Events as producers send them and as sluice tracks them: validated ids and types, the
//! payload rules (an object, bounded depth), and the closed sets of states and statuses.

use crate::error::{join_path, FieldError};
use crate::hash::{sha256_hex, sha256_hex_of, write_json};
use crate::json_text::JsonNode;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Deepest nesting accepted in an event's `data` (an object of scalars has depth 1).
pub const MAX_DATA_DEPTH: usize = 20;

macro_rules! bounded_string {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            /// Accepts 1..=MAX_CHARS characters with no control characters.
            pub fn parse(value: &str) -> Result<Self, FieldError> {
                let chars = value.chars().count();
                if chars == 0 {
                    return Err(FieldError::new($field, "must not be empty"));
                }
                if chars > Self::MAX_CHARS {
                    return Err(FieldError::new(
                        $field,
                        format!("must be at most {} characters (got {chars})", Self::MAX_CHARS),
                    ));
                }
                if value.chars().any(char::is_control) {
                    return Err(FieldError::new($field, "must not contain control characters"));
                }
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

bounded_string!(
    /// The producer's id for an event: the dedupe key.
    ExternalId,
    "id",
    255
);
bounded_string!(
    /// An event type such as `order.created`; rules subscribe to one.
    EventType,
    "type",
    100
);
bounded_string!(
    /// Events with the same key (a customer, an order) are processed one at a time, in order.
    OrderingKey,
    "ordering_key",
    255
);

/// A validated event as submitted: what `POST /events` accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub external_id: ExternalId,
    pub event_type: EventType,
    /// `data` as both stores write it: its canonical JSON text (keys sorted at every level),
    /// the same text the payload hash is computed over, so no event is serialized twice.
    /// Read back as a value only where one is needed (an event type's schema check).
    pub data_text: String,
    pub ordering_key: Option<OrderingKey>,
    /// Hash of `{type, data}` (and the ordering key, when there is one) in canonical form:
    /// equal submissions hash equal.
    pub payload_hash: String,
    /// Not processed before this instant (`process_at`, or `delay_ms` after receipt); `None`
    /// for at once. Only a new event takes it: a duplicate changes nothing.
    pub process_at: Option<DateTime<Utc>>,
    /// The W3C `traceparent` of the span that ingested it, when traces are exported: the
    /// worker that processes it continues that trace. Only a new event keeps it.
    pub trace_context: Option<String>,
}

/// How far ahead an event may be scheduled: a year.
pub const MAX_SCHEDULE_DAYS: i64 = 365;

/// `process_at` (RFC 3339) or `delay_ms` (whole milliseconds), at most a year ahead of `now`;
/// one of them, or neither. A time already past means at once.
fn schedule(
    body: &JsonNode<'_>,
    now: DateTime<Utc>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let latest = now + chrono::Duration::days(MAX_SCHEDULE_DAYS);
    let too_far = || format!("must be at most {MAX_SCHEDULE_DAYS} days ahead");
    match (body.get("process_at"), body.get("delay_ms")) {
        (None | Some(JsonNode::Null), None | Some(JsonNode::Null)) => None,
        (Some(_), Some(_)) => {
            errors.push(FieldError::new(
                "delay_ms",
                "give process_at or delay_ms, not both",
            ));
            None
        }
        (Some(JsonNode::String(text)), _) => match DateTime::parse_from_rfc3339(text) {
            Ok(at) if at.with_timezone(&Utc) > latest => {
                errors.push(FieldError::new("process_at", too_far()));
                None
            }
            Ok(at) => Some(at.with_timezone(&Utc).max(now)),
            Err(_) => {
                errors.push(FieldError::new(
                    "process_at",
                    "must be an RFC 3339 date and time, e.g. 2026-12-24T09:00:00Z",
                ));
                None
            }
        },
        (Some(other), _) => {
            errors.push(FieldError::new(
                "process_at",
                format!("must be a string, got {}", other.kind()),
            ));
            None
        }
        (_, Some(JsonNode::Number(n))) => {
            let max_ms = MAX_SCHEDULE_DAYS * 86_400_000;
            match n.as_i64() {
                Some(ms @ 0..) if ms <= max_ms => Some(now + chrono::Duration::milliseconds(ms)),
                Some(0..) => {
                    errors.push(FieldError::new("delay_ms", too_far()));
                    None
                }
                _ => {
                    errors.push(FieldError::new(
                        "delay_ms",
                        "must be a whole number of milliseconds, 0 or more",
                    ));
                    None
                }
            }
        }
        (_, Some(other)) => {
            errors.push(FieldError::new(
                "delay_ms",
                format!("must be a number, got {}", other.kind()),
            ));
            None
        }
    }
}

impl NewEvent {
    /// Validates a submitted body `{"id", "type", "data", "ordering_key"?}`, read from its
    /// JSON text, reporting every problem at once.
    pub fn from_json(body: &JsonNode<'_>) -> Result<Self, Vec<FieldError>> {
        let JsonNode::Object(_) = body else {
            return Err(vec![FieldError::new(
                "",
                format!("body must be a JSON object, got {}", body.kind()),
            )]);
        };
        let mut errors = Vec::new();
        let external_id = match body.get("id") {
            Some(JsonNode::String(s)) => ExternalId::parse(s).map_err(|e| errors.push(e)).ok(),
            Some(other) => {
                errors.push(FieldError::new(
                    "id",
                    format!("must be a string, got {}", other.kind()),
                ));
                None
            }
            None => {
                errors.push(FieldError::new("id", "is required"));
                None
            }
        };
        let event_type = match body.get("type") {
            Some(JsonNode::String(s)) => EventType::parse(s).map_err(|e| errors.push(e)).ok(),
            Some(other) => {
                errors.push(FieldError::new(
                    "type",
                    format!("must be a string, got {}", other.kind()),
                ));
                None
            }
            None => {
                errors.push(FieldError::new("type", "is required"));
                None
            }
        };
        let data_text = match body.get("data") {
            Some(data @ JsonNode::Object(_)) => {
                let mut text = Vec::with_capacity(256);
                let depth = data.write_canonical(&mut text);
                if depth > MAX_DATA_DEPTH {
                    errors.push(FieldError::new(
                        "data",
                        format!("nests {depth} levels deep; at most {MAX_DATA_DEPTH} are allowed"),
                    ));
                    None
                } else if let Some(path) = data.nul_path("data") {
                    errors.push(FieldError::new(path, "must not contain U+0000 (NUL)"));
                    None
                } else {
                    Some(String::from_utf8(text).expect("serde_json writes UTF-8"))
                }
            }
            Some(other) => {
                errors.push(FieldError::new(
                    "data",
                    format!("must be a JSON object, got {}", other.kind()),
                ));
                None
            }
            None => {
                errors.push(FieldError::new("data", "is required"));
                None
            }
        };
        let ordering_key = match body.get("ordering_key") {
            None | Some(JsonNode::Null) => None,
            Some(JsonNode::String(s)) => OrderingKey::parse(s).map_err(|e| errors.push(e)).ok(),
            Some(other) => {
                errors.push(FieldError::new(
                    "ordering_key",
                    format!("must be a string, got {}", other.kind()),
                ));
                None
            }
        };
        // Microseconds: what both stores keep, so the time answered is the time stored.
        let process_at = schedule(body, Utc::now(), &mut errors).map(|at| at.trunc_subsecs(6));
        for key in body.keys() {
            if !matches!(
                key,
                "id" | "type" | "data" | "ordering_key" | "process_at" | "delay_ms"
            ) {
                errors.push(FieldError::new(
                    join_path("", key),
                    "is not a field of an event (expected id, type, data, ordering_key, \
                     process_at, delay_ms)",
                ));
            }
        }
        match (external_id, event_type, data_text) {
            (Some(external_id), Some(event_type), Some(data_text)) if errors.is_empty() => {
                let mut payload_hash = payload_hash_of_text(&event_type, &data_text);
                if let Some(key) = &ordering_key {
                    // A resubmission under another key is another submission.
                    payload_hash =
                        sha256_hex(format!("{payload_hash}:{}", key.as_str()).as_bytes());
                }
                Ok(Self {
                    external_id,
                    event_type,
                    data_text,
                    ordering_key,
                    payload_hash,
                    process_at,
                    trace_context: None,
                })
            }
            _ => Err(errors),
        }
    }

    /// [`NewEvent::from_json`] for a body already held as a `Value`.
    pub fn parse(body: Value) -> Result<Self, Vec<FieldError>> {
        let text = serde_json::to_vec(&body).expect("a JSON value always serializes");
        match serde_json::from_slice::<JsonNode>(&text) {
            Ok(node) => Self::from_json(&node),
            Err(_) => Err(vec![FieldError::new("", "JSON nests too deeply")]),
        }
    }

    /// `data` as a JSON object, read back from its stored text.
    pub fn data(&self) -> Map<String, Value> {
        serde_json::from_str(&self.data_text).expect("data_text is the JSON text of an object")
    }
}

/// The hash that decides whether a resubmission is "the same payload": of the canonical form
/// of `{"data": data, "type": type}`, given `data`'s canonical text.
fn payload_hash_of_text(event_type: &EventType, data_text: &str) -> String {
    let mut type_text = Vec::with_capacity(event_type.as_str().len() + 2);
    write_json(event_type.as_str(), &mut type_text);
    sha256_hex_of(&[
        b"{\"data\":",
        data_text.as_bytes(),
        b",\"type\":",
        &type_text,
        b"}",
    ])
}

/// The path of the first string (key or value) in `value` that holds U+0000, which no
/// backend can store as JSON text (PostgreSQL's `jsonb` refuses it), or `None`. The walk
/// builds no path until it has found one, so its cost is the size of the value.
pub fn nul_path(value: &Value, path: &str) -> Option<String> {
    let mut trail = Vec::new();
    find_nul(value, &mut trail).then(|| render_trail(path, &trail))
}

/// One step into a value: an array index or an object key.
enum Step<'a> {
    Index(usize),
    Key(&'a str),
}

/// Whether `value` holds U+0000; on `true`, `trail` leads to it (innermost last).
fn find_nul<'a>(value: &'a Value, trail: &mut Vec<Step<'a>>) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
            trail.push(Step::Index(i));
            let found = find_nul(item, trail);
            if !found {
                trail.pop();
            }
            found
        }),
        Value::Object(map) => find_nul_in(map, trail),
        _ => false,
    }
}

fn find_nul_in<'a>(map: &'a Map<String, Value>, trail: &mut Vec<Step<'a>>) -> bool {
    map.iter().any(|(key, item)| {
        trail.push(Step::Key(key));
        let found = key.contains('\0') || find_nul(item, trail);
        if !found {
            trail.pop();
        }
        found
    })
}

fn render_trail(path: &str, trail: &[Step<'_>]) -> String {
    trail.iter().fold(path.to_owned(), |path, step| match step {
        Step::Index(i) => format!("{path}[{i}]"),
        Step::Key(key) => join_path(&path, &key.replace('\0', "\\u0000")),
    })
}

/// Nesting depth of a JSON value: scalars are 0, `{}`/`[]` of scalars are 1.
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Object(map) => object_depth(map),
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn object_depth(map: &Map<String, Value>) -> usize {
    1 + map.values().map(depth).max().unwrap_or(0)
}

/// "object", "array", "string", … for error messages.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

macro_rules! closed_set {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} '{other}' (expected one of: {})",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

closed_set!(
    /// Where an event is in its life: `pending` → `processing` → `processed` | `failed`.
    EventState {
        Pending => "pending",
        Processing => "processing",
        Processed => "processed",
        Failed => "failed",
    }
);

closed_set!(
    /// Why an attempt ran.
    Trigger {
        Initial => "initial",
        Retry => "retry",
        Replay => "replay",
    }
);

closed_set!(
    /// How an attempt ended (or `running` while it runs). `deferred`: some action's receiver
    /// was unavailable (circuit open, paused, at its cap), so the event waits for it without
    /// the attempt counting against `MAX_ATTEMPTS`.
    AttemptStatus {
        Running => "running",
        Success => "success",
        Failed => "failed",
        Timeout => "timeout",
        Abandoned => "abandoned",
        Deferred => "deferred",
    }
);

closed_set!(
    /// Which rule versions a replay evaluates: each rule's `current` version (and rules created
    /// since), or the `original` versions the event's first attempt evaluated.
    ReplayRules {
        Current => "current",
        Original => "original",
    }
);

closed_set!(
    /// What one rule did with one event in one attempt. `deferred`: not attempted, because its
    /// receiver was unavailable; the event comes back for it.
    ExecutionResult {
        Applied => "applied",
        Skipped => "skipped",
        Failed => "failed",
        Deduped => "deduped",
        Started => "started",
        Deferred => "deferred",
    }
);

impl EventState {
    /// Replay is allowed only from a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventState::Processed | EventState::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_the_seed_quick_start_event() {
        let event = NewEvent::parse(json!({
            "id": "order-123", "type": "order.created",
            "data": {"amount": 100, "user_id": "user-456"}
        }))
        .unwrap();
        assert_eq!(event.external_id.as_str(), "order-123");
        assert_eq!(event.event_type.as_str(), "order.created");
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let errors =
            NewEvent::parse(json!({"id": "", "type": 5, "data": [], "extra": 1})).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["id", "type", "data", "extra"]);
    }

    #[test]
    fn bounds_ids_and_types_in_characters() {
        assert!(ExternalId::parse(&"é".repeat(255)).is_ok());
        assert!(ExternalId::parse(&"x".repeat(256)).is_err());
        assert!(EventType::parse(&"t".repeat(100)).is_ok());
        assert!(EventType::parse(&"t".repeat(101)).is_err());
        assert!(ExternalId::parse("a\nb").is_err());
    }

    #[test]
    fn rejects_data_nested_deeper_than_the_limit() {
        let mut data = json!(1);
        for _ in 0..MAX_DATA_DEPTH {
            data = json!({ "a": data });
        }
        let ok = json!({"id": "x", "type": "t", "data": data.clone()});
        assert!(NewEvent::parse(ok).is_ok());
        let too_deep = json!({"id": "x", "type": "t", "data": {"a": data}});
        let errors = NewEvent::parse(too_deep).unwrap_err();
        assert_eq!(errors[0].path, "data");
    }

    #[test]
    fn same_content_in_another_key_order_hashes_the_same() {
        let a = NewEvent::parse(json!({"id": "x", "type": "t", "data": {"a": 1, "b": 2}})).unwrap();
        let b = NewEvent::parse(json!({"type": "t", "data": {"b": 2, "a": 1}, "id": "x"})).unwrap();
        let c = NewEvent::parse(json!({"id": "x", "type": "u", "data": {"a": 1, "b": 2}})).unwrap();
        assert_eq!(a.payload_hash, b.payload_hash);
        assert_ne!(a.payload_hash, c.payload_hash);
    }

    #[test]
    fn the_payload_hash_is_the_hash_of_type_and_data_in_canonical_form() {
        let event = NewEvent::parse(
            json!({"id": "x", "type": "t", "data": {"b": [1, {"d": 2, "c": 3}], "a": "é"}}),
        )
        .unwrap();
        let whole = json!({"type": "t", "data": {"a": "é", "b": [1, {"c": 3, "d": 2}]}});
        assert_eq!(event.payload_hash, crate::hash::content_hash(&whole));
        let empty = NewEvent::parse(json!({"id": "x", "type": "t", "data": {}})).unwrap();
        assert_eq!(
            empty.payload_hash,
            crate::hash::content_hash(&json!({"type": "t", "data": {}}))
        );
    }

    #[test]
    fn data_is_stored_as_its_canonical_text() {
        let event = NewEvent::parse(json!({"id": "x", "type": "t",
            "data": {"b": [2, {"z": null, "y": "é\n"}], "a": 1.5}}))
        .unwrap();
        assert_eq!(event.data_text, r#"{"a":1.5,"b":[2,{"y":"é\n","z":null}]}"#);
        let reordered = NewEvent::parse(json!({"id": "x", "type": "t",
            "data": {"a": 1.5, "b": [2, {"y": "é\n", "z": null}]}}))
        .unwrap();
        assert_eq!(event.data_text, reordered.data_text);
        assert_eq!(
            Value::Object(event.data()),
            json!({"a": 1.5, "b": [2, {"y": "é\n", "z": null}]})
        );
    }

    #[test]
    fn a_body_read_from_its_text_is_the_event_its_value_gives() {
        let text =
            r#"{"type": "t", "data": {"z": "é\u0000"}, "id": "x", "data": {"b": 1, "a": "é"}}"#;
        let node: JsonNode = serde_json::from_str(text).unwrap();
        let from_text = NewEvent::from_json(&node).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(from_text, NewEvent::parse(value).unwrap());
        assert_eq!(from_text.data_text, r#"{"a":"é","b":1}"#);
    }

    #[test]
    fn the_payload_hash_never_changes_for_the_same_payload() {
        // Stored hashes decide whether a resubmission is a duplicate or a conflict, so the
        // canonical text must stay byte for byte what it was (escapes, unicode, numbers).
        let event = NewEvent::parse(json!({"id": "x", "type": "order.created",
            "data": {"b": [1, 2.5, "x\"y\n"], "a": {"z": null, "é": true}}}))
        .unwrap();
        assert_eq!(
            event.payload_hash,
            "6082512fa7ebbab2fa4d163498143ecb66f4c40889be42ac799bf77090a3e582"
        );
    }

    #[test]
    fn closed_sets_round_trip_through_text() {
        for state in EventState::ALL {
            assert_eq!(state.as_str().parse::<EventState>().unwrap(), *state);
        }
        assert!("done".parse::<EventState>().is_err());
    }
}

#[cfg(test)]
mod number_tests {
    /// PostgreSQL's jsonb gives numbers back as exact decimals (1e-223 as 0.000…0001…): each
    /// must parse again to the number that was stored, or a stored event could never be read.
    #[test]
    fn numbers_come_back_from_exact_decimal_expansions() {
        let cases = [
            ("0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000016105932366797209", 1.610_593_236_679_720_9e-223),
        ];
        let max = format!("17976931348623157{}", "0".repeat(292));
        let cases = cases.into_iter().chain([(max.as_str(), f64::MAX)]);
        for (text, expected) in cases {
            let value: serde_json::Value = serde_json::from_str(text).expect(text);
            assert_eq!(value.as_f64(), Some(expected), "{text}");
        }
    }
}
