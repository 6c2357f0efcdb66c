//! Rules as users write them: a name, the event type they watch, a JSONLogic condition and an
//! action — validated as one value, so a `NewRule` that exists is a rule sluice can run.

use crate::action::Action;
use crate::error::{join_path, FieldError};
use crate::event::{json_kind, EventType};
use crate::logic::{Limits, Logic};
use serde_json::{Map, Value};
use std::fmt;

/// A rule's display name: 1..=255 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleName(String);

impl RuleName {
    pub const MAX_CHARS: usize = 255;

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let chars = value.chars().count();
        if value.trim().is_empty() {
            return Err(FieldError::new("name", "must not be empty"));
        }
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                "name",
                format!(
                    "must be at most {} characters (got {chars})",
                    Self::MAX_CHARS
                ),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "must not contain control characters",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A compiled condition. Its errors are located under `condition` (e.g. `condition.and[1]`).
#[derive(Debug, Clone)]
pub struct Condition {
    logic: Logic,
}

impl Condition {
    pub fn parse(condition: &Value, limits: &Limits) -> Result<Self, FieldError> {
        if let Some(path) = crate::event::nul_path(condition, "condition") {
            return Err(FieldError::new(path, "must not contain U+0000 (NUL)"));
        }
        Logic::compile(condition, limits)
            .map(|logic| Condition { logic })
            .map_err(|e| FieldError::new(join_path("condition", &e.path), e.message))
    }

    pub fn logic(&self) -> &Logic {
        &self.logic
    }

    pub fn source(&self) -> &Value {
        self.logic.source()
    }
}

/// What a rule does when its condition holds: the part of a rule that makes up a version.
#[derive(Debug, Clone)]
pub struct RuleBody {
    pub condition: Condition,
    pub action: Action,
}

impl RuleBody {
    /// Parses a stored or submitted condition and action.
    pub fn parse(
        condition: &Value,
        action: &Value,
        limits: &Limits,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let condition = Condition::parse(condition, limits)
            .map_err(|e| errors.push(e))
            .ok();
        let action = Action::parse(action).map_err(|e| errors.extend(e)).ok();
        match (condition, action) {
            (Some(condition), Some(action)) => Ok(RuleBody { condition, action }),
            _ => Err(errors),
        }
    }
}

/// A rule as `POST /rules` accepts it.
#[derive(Debug, Clone)]
pub struct NewRule {
    pub name: RuleName,
    pub event_type: EventType,
    pub body: RuleBody,
    pub active: bool,
}

/// The changes of `PUT /rules/{id}`: only what is present changes.
#[derive(Debug, Clone, Default)]
pub struct RulePatch {
    pub name: Option<RuleName>,
    pub event_type: Option<EventType>,
    pub condition: Option<Condition>,
    pub action: Option<Action>,
    pub active: Option<bool>,
}

const RULE_FIELDS: &str = "name, event_type, condition, action, active";

fn object(body: &Value) -> Result<&Map<String, Value>, Vec<FieldError>> {
    body.as_object().ok_or_else(|| {
        vec![FieldError::new(
            "",
            format!("body must be a JSON object, got {}", json_kind(body)),
        )]
    })
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    key: &str,
    errors: &mut Vec<FieldError>,
) -> Option<&'a str> {
    match object.get(key) {
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errors.push(FieldError::new(
                key,
                format!("must be a string, got {}", json_kind(other)),
            ));
            None
        }
        None => None,
    }
}

fn unknown_fields(object: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    for key in object.keys() {
        if !matches!(
            key.as_str(),
            "name" | "event_type" | "condition" | "action" | "active"
        ) {
            errors.push(FieldError::new(
                key.as_str(),
                format!("is not a field of a rule (expected {RULE_FIELDS})"),
            ));
        }
    }
}

fn parse_event_type(text: &str) -> Result<EventType, FieldError> {
    EventType::parse(text).map_err(|e| FieldError::new("event_type", e.message))
}

fn parse_active(object: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<bool> {
    match object.get("active") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            errors.push(FieldError::new(
                "active",
                format!("must be true or false, got {}", json_kind(other)),
            ));
            None
        }
    }
}

impl NewRule {
    /// Validates `{name, event_type, condition, action, active?}`, reporting every problem.
    pub fn parse(body: &Value, limits: &Limits) -> Result<Self, Vec<FieldError>> {
        let object = object(body)?;
        let mut errors = Vec::new();
        unknown_fields(object, &mut errors);
        let name = match string_field(object, "name", &mut errors) {
            Some(s) => RuleName::parse(s).map_err(|e| errors.push(e)).ok(),
            None if !object.contains_key("name") => {
                errors.push(FieldError::new("name", "is required"));
                None
            }
            None => None,
        };
        let event_type = match string_field(object, "event_type", &mut errors) {
            Some(s) => parse_event_type(s).map_err(|e| errors.push(e)).ok(),
            None if !object.contains_key("event_type") => {
                errors.push(FieldError::new("event_type", "is required"));
                None
            }
            None => None,
        };
        let condition = match object.get("condition") {
            Some(condition) => Condition::parse(condition, limits)
                .map_err(|e| errors.push(e))
                .ok(),
            None => {
                errors.push(FieldError::new("condition", "is required"));
                None
            }
        };
        let action = match object.get("action") {
            Some(action) => Action::parse(action).map_err(|e| errors.extend(e)).ok(),
            None => {
                errors.push(FieldError::new("action", "is required"));
                None
            }
        };
        let active = parse_active(object, &mut errors).unwrap_or(true);
        match (name, event_type, condition, action) {
            (Some(name), Some(event_type), Some(condition), Some(action)) if errors.is_empty() => {
                Ok(NewRule {
                    name,
                    event_type,
                    body: RuleBody { condition, action },
                    active,
                })
            }
            _ => Err(errors),
        }
    }
}

impl RulePatch {
    /// Validates a partial update; absent fields stay as they are.
    pub fn parse(body: &Value, limits: &Limits) -> Result<Self, Vec<FieldError>> {
        let object = object(body)?;
        let mut errors = Vec::new();
        unknown_fields(object, &mut errors);
        let name = string_field(object, "name", &mut errors)
            .and_then(|s| RuleName::parse(s).map_err(|e| errors.push(e)).ok());
        let event_type = string_field(object, "event_type", &mut errors)
            .and_then(|s| parse_event_type(s).map_err(|e| errors.push(e)).ok());
        let condition = object
            .get("condition")
            .and_then(|c| Condition::parse(c, limits).map_err(|e| errors.push(e)).ok());
        let action = object
            .get("action")
            .and_then(|a| Action::parse(a).map_err(|e| errors.extend(e)).ok());
        let active = parse_active(object, &mut errors);
        if errors.is_empty() {
            Ok(RulePatch {
                name,
                event_type,
                condition,
                action,
                active,
            })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.event_type.is_none()
            && self.condition.is_none()
            && self.action.is_none()
            && self.active.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_rule() -> Value {
        json!({
            "name": "Log high value orders",
            "event_type": "order.created",
            "condition": { ">=": [{ "var": "amount" }, 50] },
            "action": { "type": "log", "params": { "level": "info", "message": "High value order detected" } },
            "active": true
        })
    }

    #[test]
    fn the_seed_rule_is_valid() {
        let rule = NewRule::parse(&seed_rule(), &Limits::default()).unwrap();
        assert_eq!(rule.name.as_str(), "Log high value orders");
        assert!(rule.active);
        assert!(rule
            .body
            .condition
            .logic()
            .matches(&json!({"amount": 60}))
            .unwrap());
    }

    #[test]
    fn errors_name_the_part_at_fault() {
        let mut rule = seed_rule();
        rule["condition"] = json!({"and": [true, {"frobnicate": [1]}]});
        rule["action"] = json!({"type": "call_webhook", "params": {"url": "ftp://x"}});
        rule["name"] = json!("");
        let errors = NewRule::parse(&rule, &Limits::default()).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"name"), "{errors:?}");
        assert!(paths.contains(&"condition.and[1]"), "{errors:?}");
        assert!(
            paths.iter().any(|p| p.starts_with("action.params.url")),
            "{errors:?}"
        );
    }

    #[test]
    fn missing_fields_are_reported() {
        let errors = NewRule::parse(&json!({}), &Limits::default()).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["name", "event_type", "condition", "action"]);
    }

    #[test]
    fn a_patch_takes_only_what_is_present() {
        let patch = RulePatch::parse(&json!({"active": false}), &Limits::default()).unwrap();
        assert_eq!(patch.active, Some(false));
        assert!(patch.condition.is_none() && patch.name.is_none());
        assert!(RulePatch::parse(&json!({}), &Limits::default())
            .unwrap()
            .is_empty());
        let errors = RulePatch::parse(&json!({"active": "yes", "nme": "x"}), &Limits::default())
            .unwrap_err();
        assert_eq!(errors.len(), 2);
    }
}
