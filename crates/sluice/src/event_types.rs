//! Event types: what a type overrides (processing timeout, attempts, retry delays), the JSON
//! Schema its `data` must match, and the [`Catalog`] every process keeps of them.
//!
//! A schema is compiled when it is saved (to refuse an invalid one) and when a catalog loads
//! it — once per change, never per event. The worker's catalog reloads with its rules (the
//! rule generation moves on every change of either); an API process's [`SharedCatalog`]
//! reloads at once after a change it made and within [`REFRESH`] of a change made elsewhere.

use serde_json::{Map, Value};
use sluice_core::event::{json_kind, EventType};
use sluice_core::retry::RetryPolicy;
use sluice_core::FieldError;
use sluice_store::{EventTypeChanges, EventTypeSettings, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// How often an API process looks for changes made by other processes.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Largest schema accepted, as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Most violations one rejected event reports.
pub const MAX_VIOLATIONS: usize = 50;
/// Longest violation message (longer ones are cut: they may quote the offending value).
const MAX_MESSAGE_CHARS: usize = 300;
const MAX_DESCRIPTION_CHARS: usize = 1000;
const MAX_TIMEOUT_MS: i64 = 3_600_000;
const MAX_ATTEMPTS: i64 = 100;
/// A year: the longest an event of a type may be set to wait for its target.
const MAX_WAIT_MS: i64 = 366 * 86_400_000;
const MAX_DELAYS: usize = 20;
const MAX_DELAY_MS: i64 = 86_400_000;

/// A compiled JSON Schema for events' `data`.
pub struct DataSchema {
    validator: jsonschema::Validator,
    /// Its size with references followed: what checking one value may cost.
    parts: usize,
}

impl std::fmt::Debug for DataSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataSchema")
    }
}

impl DataSchema {
    /// Compiles a schema (any draft it declares, 2020-12 otherwise). Patterns use a regex
    /// engine without backtracking, so no schema can make validation take exponential time;
    /// `format` is asserted, as users of `"format": "email"` expect; references outside the
    /// schema are refused (nothing is fetched).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        let size = schema.to_string().len();
        if size > MAX_SCHEMA_BYTES {
            return Err(format!(
                "is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are allowed"
            ));
        }
        if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
            return Err(format!(
                "must be a JSON Schema (an object or a boolean), got {}",
                json_kind(schema)
            ));
        }
        let parts = Expansion::check(schema)?;
        jsonschema::options()
            .with_pattern_options(jsonschema::PatternOptions::regex())
            .should_validate_formats(true)
            .build(schema)
            .map(|validator| DataSchema { validator, parts })
            .map_err(|e| format!("is not a valid JSON Schema: {}", cut(&e.to_string())))
    }

    /// Every violation of `data` (up to [`MAX_VIOLATIONS`]), each at the JSON pointer into
    /// `data` where it is.
    pub fn check(&self, data: &Value) -> Result<(), Vec<FieldError>> {
        if self.validator.is_valid(data) {
            return Ok(());
        }
        if self.costly(data) {
            // Listing every violation means evaluating every branch of every applicator
            // for every value and keeping what failed: for a costly check that is far more
            // work than deciding. Report the first violation only.
            let first = self
                .validator
                .validate(data)
                .err()
                .map(|e| FieldError::new(e.instance_path().as_str(), cut(&e.to_string())))
                .into_iter()
                .chain(std::iter::once(FieldError::new(
                    "",
                    "only the first violation is reported for an event this costly to check",
                )))
                .collect();
            return Err(first);
        }
        let mut violations: Vec<FieldError> = self
            .validator
            .iter_errors(data)
            .take(MAX_VIOLATIONS + 1)
            .map(|e| FieldError::new(e.instance_path().as_str(), cut(&e.to_string())))
            .collect();
        if violations.len() > MAX_VIOLATIONS {
            violations.truncate(MAX_VIOLATIONS);
            violations.push(FieldError::new(
                "",
                format!("more violations not shown (the first {MAX_VIOLATIONS} are)"),
            ));
        }
        Err(violations)
    }

    /// Whether checking `data` may cost more than [`INLINE_WORK`].
    fn costly(&self, data: &Value) -> bool {
        let limit = INLINE_WORK / self.parts.max(1) + 1;
        let values = match data {
            Value::Object(map) => count_values(map, limit),
            _ => 1,
        };
        self.parts.saturating_mul(values) > INLINE_WORK
    }

    /// Checks an event's `data` object in place (no copy of it is made).
    pub fn check_map(&self, data: &mut Map<String, Value>) -> Result<(), Vec<FieldError>> {
        let value = Value::Object(std::mem::take(data));
        let checked = self.check(&value);
        if let Value::Object(map) = value {
            *data = map;
        }
        checked
    }
}

/// Most parts (objects, arrays, values) a schema may have with its references followed:
/// the work of checking an event grows with it, and references can make it grow
/// exponentially with the schema's text (`a` = two references to `b`, `b` to `c`, …).
const MAX_EXPANDED_PARTS: usize = 20_000;
/// Deepest chain of references followed one inside another.
const MAX_REFERENCE_DEPTH: usize = 32;

/// The walk that bounds a schema's size with its `$ref`s followed. References must be local
/// (`#/json/pointer` or `#anchor`) and not recursive: recursion and remote documents are
/// refused so the bound holds.
struct Expansion<'a> {
    root: &'a Value,
    anchors: HashMap<&'a str, &'a Value>,
    following: Vec<&'a str>,
    parts: usize,
}

impl<'a> Expansion<'a> {
    /// The schema's size with references followed, or why it is refused.
    fn check(root: &'a Value) -> Result<usize, String> {
        let mut anchors = HashMap::new();
        collect_anchors(root, &mut anchors);
        let mut walk = Expansion {
            root,
            anchors,
            following: Vec::new(),
            parts: 0,
        };
        walk.visit(root)?;
        Ok(walk.parts)
    }

    fn visit(&mut self, node: &'a Value) -> Result<(), String> {
        self.parts += 1;
        if self.parts > MAX_EXPANDED_PARTS {
            return Err(format!(
                "is too large with its references followed (over {MAX_EXPANDED_PARTS} parts)"
            ));
        }
        match node {
            Value::Object(map) => {
                for keyword in ["$dynamicRef", "$recursiveRef"] {
                    if map.contains_key(keyword) {
                        return Err(format!("uses {keyword}, which is not supported"));
                    }
                }
                if let Some(reference) = map.get("$ref") {
                    self.follow(reference)?;
                }
                for (key, value) in map {
                    // Literal values, not schemas: counted, not walked.
                    if !matches!(key.as_str(), "const" | "enum" | "default" | "examples") {
                        self.visit(value)?;
                    }
                }
                Ok(())
            }
            Value::Array(items) => items.iter().try_for_each(|item| self.visit(item)),
            _ => Ok(()),
        }
    }

    fn follow(&mut self, reference: &'a Value) -> Result<(), String> {
        let Some(reference) = reference.as_str() else {
            return Err("has a $ref that is not a string".to_owned());
        };
        let Some(fragment) = reference.strip_prefix('#') else {
            return Err(format!(
                "refers to '{}': references must stay inside the schema (#/…)",
                cut(reference)
            ));
        };
        if self.following.contains(&reference) {
            return Err(format!(
                "refers to itself through '{}': recursive schemas are not supported",
                cut(reference)
            ));
        }
        if self.following.len() >= MAX_REFERENCE_DEPTH {
            return Err(format!(
                "nests references more than {MAX_REFERENCE_DEPTH} deep"
            ));
        }
        let target = if fragment.is_empty() {
            Some(self.root)
        } else if fragment.starts_with('/') {
            self.root.pointer(fragment)
        } else {
            self.anchors.get(fragment).copied()
        };
        // An unresolvable reference is the compiler's to refuse.
        if let Some(target) = target {
            self.following.push(reference);
            self.visit(target)?;
            self.following.pop();
        }
        Ok(())
    }
}

fn collect_anchors<'a>(node: &'a Value, anchors: &mut HashMap<&'a str, &'a Value>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(name)) = map.get("$anchor") {
                anchors.insert(name.as_str(), node);
            }
            for value in map.values() {
                collect_anchors(value, anchors);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_anchors(item, anchors)),
        _ => {}
    }
}

/// Above this estimate of work (schema parts × data values), a check runs on the blocking
/// pool rather than on an async thread, so that a costly schema over a large event never
/// holds up other requests (`/health` included). A typical event is checked in place.
const INLINE_WORK: usize = 200_000;

/// Checks an event's `data` against a schema, on the blocking pool when it may be costly.
pub async fn check_data(
    schema: &Arc<DataSchema>,
    mut data: Map<String, Value>,
) -> Result<(), Vec<FieldError>> {
    let limit = INLINE_WORK / schema.parts.max(1) + 1;
    if schema.parts.saturating_mul(count_values(&data, limit)) <= INLINE_WORK {
        return schema.check_map(&mut data);
    }
    let schema = schema.clone();
    let work = tokio::task::spawn_blocking(move || schema.check_map(&mut data));
    match work.await {
        Ok(checked) => checked,
        Err(error) => {
            tracing::error!(error = %error, "a schema check stopped unexpectedly");
            Err(vec![FieldError::new(
                "",
                "the schema check stopped unexpectedly",
            )])
        }
    }
}

/// How many values `data` holds, counting no further than `limit`.
fn count_values(data: &Map<String, Value>, limit: usize) -> usize {
    let mut count = 0;
    let mut pending: Vec<&Value> = data.values().collect();
    while let Some(value) = pending.pop() {
        count += 1;
        if count >= limit {
            break;
        }
        match value {
            Value::Object(map) => pending.extend(map.values()),
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    count
}

fn cut(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message.to_owned();
    }
    let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
    cut.push('…');
    cut
}

/// One type's settings with its compiled schema.
#[derive(Debug)]
pub struct TypeConfig {
    pub settings: EventTypeSettings,
    pub schema: Option<Arc<DataSchema>>,
}

/// How the worker processes one type's events: the process defaults with the type's
/// overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Processing {
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// How long an event may wait for its target (open, paused or crowded) before it fails.
    pub max_wait: Duration,
}

/// Every configured event type, compiled, as of one rule generation.
#[derive(Debug, Default)]
pub struct Catalog {
    generation: Option<i64>,
    types: HashMap<String, Arc<TypeConfig>>,
}

impl Catalog {
    /// Reads the generation first, then the settings: a change committed in between is
    /// loaded now and again at the next look, never missed.
    pub async fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let generation = store.rule_generation().await?;
        let types = store
            .event_type_settings()
            .await?
            .into_iter()
            .map(|(name, settings)| {
                let schema = settings.schema.as_ref().and_then(|schema| {
                    DataSchema::compile(schema)
                        .map_err(|error| {
                            // Checked when saved; this only happens if the crate changed its
                            // mind about a schema between versions.
                            tracing::error!(event_type = %name, error = %error, "stored schema no longer compiles; not checking this type");
                        })
                        .ok()
                        .map(Arc::new)
                });
                (name, Arc::new(TypeConfig { settings, schema }))
            })
            .collect();
        Ok(Catalog {
            generation: Some(generation),
            types,
        })
    }

    pub fn generation(&self) -> Option<i64> {
        self.generation
    }

    pub fn get(&self, event_type: &str) -> Option<&Arc<TypeConfig>> {
        self.types.get(event_type)
    }

    /// The schema events of this type must match, if it has one.
    pub fn schema(&self, event_type: &str) -> Option<&Arc<DataSchema>> {
        self.get(event_type).and_then(|t| t.schema.as_ref())
    }

    /// How events of this type are processed, given the process defaults.
    pub fn processing(&self, event_type: &str, defaults: &Processing) -> Processing {
        let Some(config) = self.get(event_type) else {
            return defaults.clone();
        };
        let settings = &config.settings;
        Processing {
            timeout: settings
                .processing_timeout_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map_or(defaults.timeout, Duration::from_millis),
            retry: RetryPolicy {
                max_attempts: settings
                    .max_attempts
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(defaults.retry.max_attempts),
                backoff_ms: settings
                    .retry_backoff_ms
                    .as_ref()
                    .map(|delays| {
                        delays
                            .iter()
                            .map(|&d| u64::try_from(d).unwrap_or(0))
                            .collect()
                    })
                    .unwrap_or_else(|| defaults.retry.backoff_ms.clone()),
            },
            max_wait: settings
                .max_wait_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map_or(defaults.max_wait, Duration::from_millis),
        }
    }
}

/// The catalog an API process checks ingest against, kept current in the background.
pub struct SharedCatalog {
    store: Arc<dyn Store>,
    current: RwLock<Arc<Catalog>>,
    loading: tokio::sync::Mutex<()>,
}

impl SharedCatalog {
    /// Starts empty (loaded on first use) and refreshes every [`REFRESH`] while it lives.
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let shared = Arc::new(SharedCatalog {
            store,
            current: RwLock::new(Arc::new(Catalog::default())),
            loading: tokio::sync::Mutex::new(()),
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&shared)));
        shared
    }

    /// The current catalog; loads it first if it never was.
    pub async fn current(&self) -> Result<Arc<Catalog>, StoreError> {
        let current = self.snapshot();
        if current.generation().is_some() {
            return Ok(current);
        }
        self.reload(false).await
    }

    fn snapshot(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the catalog if the generation moved (or always, with `force`).
    pub async fn reload(&self, force: bool) -> Result<Arc<Catalog>, StoreError> {
        let _one_at_a_time = self.loading.lock().await;
        let current = self.snapshot();
        if !force && current.generation().is_some() {
            let generation = self.store.rule_generation().await?;
            if current.generation() == Some(generation) {
                return Ok(current);
            }
        }
        let loaded = Arc::new(Catalog::load(&*self.store).await?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded.clone();
        Ok(loaded)
    }
}

async fn refresh_loop(shared: Weak<SharedCatalog>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(error) = shared.reload(false).await {
            tracing::warn!(error = %error, "cannot refresh the event types");
        }
    }
}

/// Validates the body of `PUT /event-types/{type}`: a partial change, `null` clearing a
/// setting. Reports every problem at once.
pub fn parse_changes(body: &Value) -> Result<EventTypeChanges, Vec<FieldError>> {
    let Some(object) = body.as_object() else {
        return Err(vec![FieldError::new(
            "",
            format!("body must be a JSON object, got {}", json_kind(body)),
        )]);
    };
    let mut errors = Vec::new();
    let mut changes = EventTypeChanges::default();
    for (key, value) in object {
        let null = value.is_null();
        match key.as_str() {
            "description" => match value {
                Value::Null => changes.description = Some(None),
                Value::String(text) if text.chars().count() > MAX_DESCRIPTION_CHARS => {
                    errors.push(FieldError::new(
                        key,
                        format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
                    ))
                }
                Value::String(text) if text.contains('\0') => {
                    errors.push(FieldError::new(key, "must not contain U+0000 (NUL)"))
                }
                Value::String(text) => changes.description = Some(Some(text.clone())),
                other => errors.push(FieldError::new(
                    key,
                    format!("must be a string or null, got {}", json_kind(other)),
                )),
            },
            "schema" if null => changes.schema = Some(None),
            "schema" => match DataSchema::compile(value) {
                Ok(_) => changes.schema = Some(Some(value.clone())),
                Err(message) => errors.push(FieldError::new(key, message)),
            },
            "processing_timeout_ms" if null => changes.processing_timeout_ms = Some(None),
            "processing_timeout_ms" => match bounded(value, 1, MAX_TIMEOUT_MS) {
                Ok(ms) => changes.processing_timeout_ms = Some(Some(ms)),
                Err(message) => errors.push(FieldError::new(key, message)),
            },
            "max_attempts" if null => changes.max_attempts = Some(None),
            "max_attempts" => match bounded(value, 1, MAX_ATTEMPTS) {
                Ok(n) => changes.max_attempts = Some(Some(n)),
                Err(message) => errors.push(FieldError::new(key, message)),
            },
            "retry_backoff_ms" if null => changes.retry_backoff_ms = Some(None),
            "retry_backoff_ms" => match backoff(value) {
                Ok(delays) => changes.retry_backoff_ms = Some(Some(delays)),
                Err(error) => errors.push(FieldError::new(
                    match error.0 {
                        Some(i) => format!("{key}[{i}]"),
                        None => key.clone(),
                    },
                    error.1,
                )),
            },
            "max_wait_ms" if null => changes.max_wait_ms = Some(None),
            "max_wait_ms" => match bounded(value, 1_000, MAX_WAIT_MS) {
                Ok(ms) => changes.max_wait_ms = Some(Some(ms)),
                Err(message) => errors.push(FieldError::new(key, message)),
            },
            _ => errors.push(FieldError::new(
                key,
                "is not a setting of an event type (expected description, schema, \
                 processing_timeout_ms, max_attempts, retry_backoff_ms, max_wait_ms)",
            )),
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(errors)
    }
}

/// The `{type}` of `/event-types/{type}`: a valid event type name.
pub fn parse_name(name: &str) -> Result<EventType, FieldError> {
    EventType::parse(name).map_err(|e| FieldError::new("type", e.message))
}

fn bounded(value: &Value, min: i64, max: i64) -> Result<i64, String> {
    match value.as_i64() {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be an integer from {min} to {max}, got {}",
            cut(&value.to_string())
        )),
    }
}

/// Delays in milliseconds: an array (`[1000, 5000]`) or one number.
fn backoff(value: &Value) -> Result<Vec<i64>, (Option<usize>, String)> {
    let items = match value {
        Value::Array(items) => items.as_slice(),
        one => std::slice::from_ref(one),
    };
    if items.is_empty() || items.len() > MAX_DELAYS {
        return Err((
            None,
            format!("must list 1 to {MAX_DELAYS} delays in milliseconds, e.g. [1000, 5000, 30000]"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            bounded(item, 1, MAX_DELAY_MS)
                .map_err(|message| (value.is_array().then_some(i), message))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_reports_each_violation_at_its_pointer_into_data() {
        let schema = DataSchema::compile(&json!({
            "type": "object",
            "required": ["amount"],
            "properties": {
                "amount": {"type": "number", "minimum": 0},
                "customer": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
            }
        }))
        .unwrap();
        assert!(schema.check(&json!({"amount": 3})).is_ok());
        let errors = schema
            .check(&json!({"amount": -1, "customer": {"email": "nope"}}))
            .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/amount", "/customer/email"], "{errors:?}");
        let missing = schema.check(&json!({})).unwrap_err();
        assert_eq!(missing[0].path, "");
        assert!(missing[0].message.contains("amount"), "{missing:?}");
    }

    #[test]
    fn an_invalid_schema_is_refused_with_the_reason() {
        let error = DataSchema::compile(&json!({"type": "integr"})).unwrap_err();
        assert!(error.starts_with("is not a valid JSON Schema"), "{error}");
        assert!(DataSchema::compile(&json!([1])).is_err());
        assert!(DataSchema::compile(&json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(DataSchema::compile(&json!({"pattern": "(unclosed"})).is_err());
    }

    #[test]
    fn schemas_whose_references_explode_or_recurse_are_refused() {
        // Each level refers twice to the next: 2^20 checks of one value.
        let mut defs = Map::new();
        for i in 0..20 {
            let next = format!("#/$defs/d{}", i + 1);
            defs.insert(
                format!("d{i}"),
                json!({"anyOf": [{"$ref": next}, {"$ref": next, "minimum": 1}]}),
            );
        }
        defs.insert("d20".into(), json!({"type": "integer"}));
        let exploding = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        let error = DataSchema::compile(&exploding).unwrap_err();
        assert!(error.contains("too large"), "{error}");
        for recursive in [
            json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
            json!({"$anchor": "top", "anyOf": [{"$ref": "#top"}]}),
            json!({"properties": {"next": {"$ref": "#"}}}),
        ] {
            let error = DataSchema::compile(&recursive).unwrap_err();
            assert!(error.contains("recursive"), "{error}");
        }
        // Shared definitions are fine.
        let shared = json!({
            "$defs": {"money": {"type": "number", "minimum": 0}},
            "properties": {"amount": {"$ref": "#/$defs/money"}, "fee": {"$ref": "#/$defs/money"}}
        });
        let schema = DataSchema::compile(&shared).unwrap();
        assert_eq!(
            schema.check(&json!({"fee": -1})).unwrap_err()[0].path,
            "/fee"
        );
    }

    #[test]
    fn violations_are_bounded_in_count_and_size() {
        let schema =
            DataSchema::compile(&json!({"additionalProperties": {"type": "integer"}})).unwrap();
        let mut data = Map::new();
        for i in 0..200 {
            data.insert(format!("k{i}"), Value::String("x".repeat(10_000)));
        }
        let errors = schema.check(&Value::Object(data)).unwrap_err();
        assert_eq!(errors.len(), MAX_VIOLATIONS + 1);
        assert!(errors
            .iter()
            .all(|e| e.message.chars().count() <= MAX_MESSAGE_CHARS + 1));
    }

    #[test]
    fn changes_are_partial_and_null_clears() {
        let changes = parse_changes(&json!({
            "max_attempts": 2, "processing_timeout_ms": null, "retry_backoff_ms": 250
        }))
        .unwrap();
        assert_eq!(changes.max_attempts, Some(Some(2)));
        assert_eq!(changes.processing_timeout_ms, Some(None));
        assert_eq!(changes.retry_backoff_ms, Some(Some(vec![250])));
        assert_eq!(changes.description, None);
        let errors = parse_changes(&json!({
            "max_attempts": 0, "retry_backoff_ms": [10, -1], "schema": {"type": 5}, "colour": 1
        }))
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["max_attempts", "retry_backoff_ms[1]", "schema", "colour"]
        );
    }

    #[test]
    fn a_type_overrides_only_what_it_sets() {
        let defaults = Processing {
            max_wait: Duration::from_secs(86_400),
            timeout: Duration::from_secs(30),
            retry: RetryPolicy {
                max_attempts: 4,
                backoff_ms: vec![1000],
            },
        };
        let mut catalog = Catalog::default();
        catalog.types.insert(
            "pay".into(),
            Arc::new(TypeConfig {
                settings: EventTypeSettings {
                    processing_timeout_ms: Some(200),
                    ..EventTypeSettings::default()
                },
                schema: None,
            }),
        );
        let pay = catalog.processing("pay", &defaults);
        assert_eq!(pay.timeout, Duration::from_millis(200));
        assert_eq!(pay.retry, defaults.retry);
        assert_eq!(catalog.processing("ship", &defaults), defaults);
    }
}
