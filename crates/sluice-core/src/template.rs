//! Templates in action params: `{{ external_id }}`, `{{ type }}`, `{{ event_id }}` and
//! `{{ data.some.path }}` inside strings, compiled once when a rule is saved and rendered per event.
//!
//! Syntax: a placeholder is `{{`, a name, `}}`; spaces around the name are optional. The names are
//! `event_id`, `external_id`, `type`, `data` (the whole data object) and `data.<path>`, where the
//! path is dot-separated keys and a segment of digits indexes an array (`data.items.0.sku`). There
//! is no escape for a literal `{{`: any `{{` opens a placeholder, so a typo is caught when the rule
//! is saved rather than sent verbatim to a receiver. A lone `}}` is literal text.
//!
//! Rendering a template never fails: a path absent from an event renders as `null` (or as empty
//! text inside a longer string), because whether an event carries a field is the event's
//! business, not the rule's.
//!
//! Transforms: in a templated JSON value (a webhook body, an email's data, a broker payload) an
//! object that is exactly `{"$logic": <JSONLogic>}` is computed against
//! `{"data": …, "event": {"id", "external_id", "type", "created_at"}}` under the rule's
//! budget, and its result (any JSON) takes its place. A text param (a URL, a header value, a
//! subject: a [`TextParam`]) may be a transform too; its result becomes text as a placeholder's
//! would. A transform can fail (over budget, a type error): rendering says where and why.

use crate::error::{index_path, join_path, FieldError};
use crate::logic::{EvalError, Limits, Logic};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::ops::Range;

/// What a template is rendered against: one event.
#[derive(Debug, Clone, Copy)]
pub struct TemplateContext<'a> {
    pub event_id: i64,
    pub external_id: &'a str,
    pub event_type: &'a str,
    /// The event's `data` object.
    pub data: &'a Value,
    /// When the event was received (transforms see it as `event.created_at`).
    pub created_at: Option<DateTime<Utc>>,
    /// The budget of each transform: the rule's.
    pub limits: Limits,
}

impl TemplateContext<'_> {
    /// What a transform is computed against: `{"data": …, "event": {"id", "external_id",
    /// "type", "created_at"}}`.
    pub fn transform_input(&self) -> Value {
        transform_input(self)
    }
}

/// What the transforms of one rendering are computed against, built on first use and shared
/// by every param of an action: the event's data is copied into it once, not per transform.
#[derive(Debug, Default)]
pub struct TransformInput(std::cell::OnceCell<Value>);

impl TransformInput {
    fn get(&self, ctx: &TemplateContext<'_>) -> &Value {
        self.0.get_or_init(|| transform_input(ctx))
    }
}

/// The key that makes an object a transform.
pub const TRANSFORM_KEY: &str = "$logic";

/// A transform that could not be computed for one event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("transform at {path}: {error}")]
pub struct TransformError {
    /// Where in the action (`action.params.body.total`).
    pub path: String,
    pub error: EvalError,
}

/// A compiled template string: literal text and placeholders, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// A byte range of `source`, so literal text is not stored twice.
    Literal(Range<usize>),
    Placeholder(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Placeholder {
    EventId,
    ExternalId,
    EventType,
    /// A path into `data`; empty means the whole object.
    Data(Vec<String>),
}

impl Template {
    /// Compiles `text`; `path` locates it in the rule for the error (e.g. `action.params.url`).
    pub fn compile(text: &str, path: &str) -> Result<Self, FieldError> {
        let mut parts = Vec::new();
        let mut position = 0;
        while let Some(offset) = text[position..].find("{{") {
            let open = position + offset;
            if open > position {
                parts.push(Part::Literal(position..open));
            }
            let inner_start = open + 2;
            let Some(close_offset) = text[inner_start..].find("}}") else {
                return Err(FieldError::new(
                    path,
                    format!(
                        "unterminated placeholder: '{{{{' at character {} has no closing '}}}}'",
                        text[..open].chars().count() + 1
                    ),
                ));
            };
            let close = inner_start + close_offset;
            parts.push(Part::Placeholder(parse_placeholder(
                text[inner_start..close].trim(),
                path,
            )?));
            position = close + 2;
        }
        if position < text.len() {
            parts.push(Part::Literal(position..text.len()));
        }
        Ok(Self {
            source: text.to_owned(),
            parts,
        })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether rendering can produce anything other than the source text.
    pub fn has_placeholders(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Placeholder(_)))
    }

    /// The literal text before the first placeholder (all of it when there is none): what can
    /// be checked when the rule is saved, e.g. a URL's scheme and host.
    pub fn leading_literal(&self) -> &str {
        match self.parts.first() {
            Some(Part::Literal(range)) => &self.source[range.clone()],
            _ => "",
        }
    }

    /// The literal pieces of the template, in order.
    pub fn literals(&self) -> impl Iterator<Item = &str> + '_ {
        self.parts.iter().filter_map(|part| match part {
            Part::Literal(range) => Some(&self.source[range.clone()]),
            Part::Placeholder(_) => None,
        })
    }

    /// Renders to JSON: a template that is exactly one placeholder keeps the value's JSON type
    /// (`"{{ data.amount }}"` → `250`, absent → `null`); anything else is a string.
    pub fn render_value(&self, ctx: &TemplateContext<'_>) -> Value {
        match self.parts.as_slice() {
            [Part::Placeholder(placeholder)] => resolve(placeholder, ctx).into_owned(),
            _ if !self.has_placeholders() => Value::String(self.source.clone()),
            _ => Value::String(self.render_string(ctx)),
        }
    }

    /// Renders to text: strings as they are, numbers and booleans as JSON writes them, null or
    /// absent as nothing, objects and arrays as compact JSON.
    pub fn render_string(&self, ctx: &TemplateContext<'_>) -> String {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Literal(range) => out.push_str(&self.source[range.clone()]),
                Part::Placeholder(placeholder) => match resolve(placeholder, ctx).as_ref() {
                    Value::Null => {}
                    Value::String(text) => out.push_str(text),
                    other => write!(out, "{other}").expect("writing JSON to a String cannot fail"),
                },
            }
        }
        out
    }
}

fn parse_placeholder(name: &str, path: &str) -> Result<Placeholder, FieldError> {
    match name {
        "" => {
            return Err(FieldError::new(
                path,
                "empty placeholder '{{}}' (use external_id, type, event_id or data.<path>)",
            ))
        }
        "event_id" => return Ok(Placeholder::EventId),
        "external_id" => return Ok(Placeholder::ExternalId),
        "type" => return Ok(Placeholder::EventType),
        "data" => return Ok(Placeholder::Data(Vec::new())),
        _ => {}
    }
    let Some(data_path) = name.strip_prefix("data.") else {
        return Err(FieldError::new(
            path,
            format!(
                "unknown placeholder '{name}' (use external_id, type, event_id or data.<path>)"
            ),
        ));
    };
    let segments: Vec<String> = data_path.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(FieldError::new(
            path,
            format!("placeholder '{name}' has an empty path segment (write data.a.b)"),
        ));
    }
    Ok(Placeholder::Data(segments))
}

fn resolve<'v>(
    placeholder: &Placeholder,
    ctx: &TemplateContext<'v>,
) -> std::borrow::Cow<'v, Value> {
    use std::borrow::Cow;
    match placeholder {
        Placeholder::EventId => Cow::Owned(Value::from(ctx.event_id)),
        Placeholder::ExternalId => Cow::Owned(Value::String(ctx.external_id.to_owned())),
        Placeholder::EventType => Cow::Owned(Value::String(ctx.event_type.to_owned())),
        Placeholder::Data(segments) => match lookup(ctx.data, segments) {
            Some(value) => Cow::Borrowed(value),
            None => Cow::Owned(Value::Null),
        },
    }
}

/// Follows `segments` into `value`: keys into objects, canonical decimal indexes into arrays.
fn lookup<'v>(value: &'v Value, segments: &[String]) -> Option<&'v Value> {
    segments
        .iter()
        .try_fold(value, |current, segment| match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => array_index(segment).and_then(|index| items.get(index)),
            _ => None,
        })
}

/// `"0"`, `"12"`; not `"01"` or `"+1"`, which JavaScript would not treat as indexes either.
fn array_index(segment: &str) -> Option<usize> {
    let canonical = segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'));
    if canonical {
        segment.parse().ok()
    } else {
        None
    }
}

/// A text param (a URL, a header value, a subject, a message): a [`Template`], or a
/// `{"$logic": …}` transform whose result becomes text — strings as they are, numbers and
/// booleans as JSON writes them, null as nothing, objects and arrays as compact JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum TextParam {
    Template(Template),
    Transform(Box<Transform>),
}

impl TextParam {
    /// A string as a template, or an object that is exactly `{"$logic": …}` as a transform;
    /// `None` for any other value (the caller says what it expected).
    pub fn compile(value: &Value, path: &str) -> Option<Result<Self, FieldError>> {
        match value {
            Value::String(text) => Some(Template::compile(text, path).map(TextParam::Template)),
            Value::Object(map) if map.len() == 1 && map.contains_key(TRANSFORM_KEY) => {
                Some(compile_transform(&map[TRANSFORM_KEY], path).map(TextParam::Transform))
            }
            _ => None,
        }
    }

    /// The param as written: its text, or the `{"$logic": …}` object.
    pub fn source_json(&self) -> Value {
        match self {
            TextParam::Template(template) => Value::from(template.source()),
            TextParam::Transform(transform) => {
                let mut map = Map::new();
                map.insert(TRANSFORM_KEY.to_owned(), transform.logic.source().clone());
                Value::Object(map)
            }
        }
    }

    /// The template, unless it is a transform (what can be checked when the rule is saved).
    pub fn template(&self) -> Option<&Template> {
        match self {
            TextParam::Template(template) => Some(template),
            TextParam::Transform(_) => None,
        }
    }

    pub fn is_transform(&self) -> bool {
        matches!(self, TextParam::Transform(_))
    }

    /// The transform, if it is one.
    pub fn transform(&self) -> Option<&Transform> {
        match self {
            TextParam::Template(_) => None,
            TextParam::Transform(transform) => Some(transform),
        }
    }

    /// Renders against one event; `input` is shared with the action's other params.
    pub fn render(
        &self,
        ctx: &TemplateContext<'_>,
        input: &TransformInput,
    ) -> Result<String, TransformError> {
        match self {
            TextParam::Template(template) => Ok(template.render_string(ctx)),
            TextParam::Transform(transform) => {
                Ok(match transform.evaluate(input.get(ctx), ctx)? {
                    Value::Null => String::new(),
                    Value::String(text) => text,
                    other => other.to_string(),
                })
            }
        }
    }
}

/// A whole JSON value (a webhook body, an email's data) with every string in it compiled as a
/// [`Template`]. Object keys are not templated. Parts with no placeholder are kept as plain JSON
/// and cloned when rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplatedValue {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A subtree with no placeholder anywhere.
    Fixed(Value),
    String(Template),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
    Transform(Box<Transform>),
}

/// A compiled `{"$logic": …}`, with where it is in the action for its errors.
#[derive(Debug, Clone)]
pub struct Transform {
    path: String,
    logic: Logic,
}

impl Transform {
    /// Where it is in the action (`action.params.body.total`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its JSONLogic, compiled (to explain it).
    pub fn logic(&self) -> &Logic {
        &self.logic
    }

    fn evaluate(&self, input: &Value, ctx: &TemplateContext<'_>) -> Result<Value, TransformError> {
        self.logic
            .evaluate_capped(input, &ctx.limits)
            .map_err(|error| TransformError {
                path: self.path.clone(),
                error,
            })
    }
}

/// Compiles a transform's JSONLogic (what `"$logic"` holds) at `path`.
fn compile_transform(logic: &Value, path: &str) -> Result<Box<Transform>, FieldError> {
    let logic_path = join_path(path, TRANSFORM_KEY);
    Logic::compile(logic, &transform_compile_limits())
        .map(|logic| {
            Box::new(Transform {
                path: path.to_owned(),
                logic,
            })
        })
        .map_err(|error| FieldError::new(join_path(&logic_path, &error.path), error.message))
}

impl PartialEq for Transform {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.logic.source() == other.logic.source()
    }
}

/// Size and nesting as for a condition; operations and bytes left to the rule's budget,
/// given when the transform runs.
fn transform_compile_limits() -> Limits {
    Limits {
        max_operations: u64::MAX,
        max_bytes_built: u64::MAX,
        ..Limits::default()
    }
}

impl TemplatedValue {
    /// Compiles every string in `value`, reporting every bad one with its path under `path`
    /// (e.g. `action.params.body.user`, `action.params.body.items[2]`).
    pub fn compile(value: &Value, path: &str) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let root = compile_node(value, path, &mut errors);
        if errors.is_empty() {
            Ok(Self { root })
        } else {
            Err(errors)
        }
    }

    /// Whether any string inside has a placeholder, or any part is a transform.
    pub fn has_placeholders(&self) -> bool {
        !matches!(self.root, Node::Fixed(_))
    }

    /// Whether any part is a `{"$logic": …}` transform.
    pub fn has_transforms(&self) -> bool {
        fn any(node: &Node) -> bool {
            match node {
                Node::Transform(_) => true,
                Node::Array(items) => items.iter().any(any),
                Node::Object(entries) => entries.iter().any(|(_, node)| any(node)),
                Node::Fixed(_) | Node::String(_) => false,
            }
        }
        any(&self.root)
    }

    /// Every transform inside, in order.
    pub fn transforms(&self) -> Vec<&Transform> {
        fn collect<'a>(node: &'a Node, out: &mut Vec<&'a Transform>) {
            match node {
                Node::Transform(transform) => out.push(transform),
                Node::Array(items) => items.iter().for_each(|n| collect(n, out)),
                Node::Object(entries) => entries.iter().for_each(|(_, n)| collect(n, out)),
                Node::Fixed(_) | Node::String(_) => {}
            }
        }
        let mut out = Vec::new();
        collect(&self.root, &mut out);
        out
    }

    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<Value, TransformError> {
        self.render_in(ctx, &TransformInput::default())
    }

    /// [`TemplatedValue::render`], sharing `input` with the action's other params.
    pub fn render_in(
        &self,
        ctx: &TemplateContext<'_>,
        input: &TransformInput,
    ) -> Result<Value, TransformError> {
        render_node(&self.root, ctx, input)
    }
}

/// What a transform is computed against, built once per rendering.
fn transform_input(ctx: &TemplateContext<'_>) -> Value {
    json!({
        "data": ctx.data,
        "event": {
            "id": ctx.event_id,
            "external_id": ctx.external_id,
            "type": ctx.event_type,
            "created_at": ctx.created_at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        }
    })
}

fn compile_node(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Node {
    match value {
        Value::String(text) => match Template::compile(text, path) {
            Ok(template) if template.has_placeholders() => Node::String(template),
            Ok(_) => Node::Fixed(value.clone()),
            Err(error) => {
                errors.push(error);
                Node::Fixed(Value::Null)
            }
        },
        Value::Array(items) => {
            let nodes: Vec<Node> = items
                .iter()
                .enumerate()
                .map(|(i, item)| compile_node(item, &index_path(path, i), errors))
                .collect();
            if nodes.iter().all(|node| matches!(node, Node::Fixed(_))) {
                Node::Fixed(value.clone())
            } else {
                Node::Array(nodes)
            }
        }
        Value::Object(map) if map.len() == 1 && map.contains_key(TRANSFORM_KEY) => {
            match compile_transform(&map[TRANSFORM_KEY], path) {
                Ok(transform) => Node::Transform(transform),
                Err(error) => {
                    errors.push(error);
                    Node::Fixed(Value::Null)
                }
            }
        }
        Value::Object(map) => {
            let nodes: Vec<(String, Node)> = map
                .iter()
                .map(|(key, item)| {
                    (
                        key.clone(),
                        compile_node(item, &join_path(path, key), errors),
                    )
                })
                .collect();
            if nodes.iter().all(|(_, node)| matches!(node, Node::Fixed(_))) {
                Node::Fixed(value.clone())
            } else {
                Node::Object(nodes)
            }
        }
        scalar => Node::Fixed(scalar.clone()),
    }
}

fn render_node(
    node: &Node,
    ctx: &TemplateContext<'_>,
    input: &TransformInput,
) -> Result<Value, TransformError> {
    Ok(match node {
        Node::Fixed(value) => value.clone(),
        Node::String(template) => template.render_value(ctx),
        Node::Array(items) => Value::Array(
            items
                .iter()
                .map(|n| render_node(n, ctx, input))
                .collect::<Result<_, _>>()?,
        ),
        Node::Object(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (key, item) in entries {
                map.insert(key.clone(), render_node(item, ctx, input)?);
            }
            Value::Object(map)
        }
        Node::Transform(transform) => transform.evaluate(input.get(ctx), ctx)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_ctx<T>(f: impl FnOnce(&TemplateContext<'_>) -> T) -> T {
        let data = json!({
            "amount": 250,
            "price": 9.5,
            "paid": true,
            "note": null,
            "user": {"name": "Ana", "email": "ana@example.com"},
            "items": [{"sku": "A-1"}, {"sku": "B-2"}],
            "0": "zero key",
            "first name": "Ana B"
        });
        let ctx = TemplateContext {
            event_id: 42,
            external_id: "order-123",
            event_type: "order.created",
            data: &data,
            created_at: None,
            limits: crate::logic::Limits::default(),
        };
        f(&ctx)
    }

    fn value(text: &str) -> Value {
        let template = Template::compile(text, "t").unwrap();
        with_ctx(|ctx| template.render_value(ctx))
    }

    fn string(text: &str) -> String {
        let template = Template::compile(text, "t").unwrap();
        with_ctx(|ctx| template.render_string(ctx))
    }

    #[test]
    fn every_placeholder_kind_resolves() {
        assert_eq!(value("{{ event_id }}"), json!(42));
        assert_eq!(value("{{ external_id }}"), json!("order-123"));
        assert_eq!(value("{{ type }}"), json!("order.created"));
        assert_eq!(value("{{ data.user.name }}"), json!("Ana"));
        assert_eq!(value("{{ data.items.1.sku }}"), json!("B-2"));
        assert_eq!(value("{{ data.0 }}"), json!("zero key"));
        assert_eq!(value("{{ data.first name }}"), json!("Ana B"));
        assert_eq!(value("{{ data }}")["amount"], json!(250));
    }

    #[test]
    fn whitespace_inside_braces_is_optional() {
        assert_eq!(value("{{event_id}}"), json!(42));
        assert_eq!(value("{{   data.amount\t}}"), json!(250));
    }

    #[test]
    fn a_lone_placeholder_keeps_its_json_type() {
        assert_eq!(value("{{ data.amount }}"), json!(250));
        assert_eq!(value("{{ data.price }}"), json!(9.5));
        assert_eq!(value("{{ data.paid }}"), json!(true));
        assert_eq!(
            value("{{ data.user }}"),
            json!({"name": "Ana", "email": "ana@example.com"})
        );
        assert_eq!(value("{{ data.items }}").as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn anything_else_interpolates_as_text() {
        assert_eq!(
            value("Order {{ external_id }}: {{ data.amount }}"),
            json!("Order order-123: 250")
        );
        assert_eq!(value(" {{ data.amount }}"), json!(" 250"));
        assert_eq!(string("{{data.price}}/{{data.paid}}"), "9.5/true");
        assert_eq!(
            string("u={{ data.user }}"),
            r#"u={"name":"Ana","email":"ana@example.com"}"#
        );
        assert_eq!(string("{{ data.items.0 }}"), r#"{"sku":"A-1"}"#);
        assert_eq!(string("#{{ event_id }}{{ type }}"), "#42order.created");
    }

    #[test]
    fn plain_text_renders_as_itself() {
        assert_eq!(
            value("no placeholders }} here"),
            json!("no placeholders }} here")
        );
        assert_eq!(value(""), json!(""));
        assert!(!Template::compile("plain", "t").unwrap().has_placeholders());
    }

    #[test]
    fn absent_paths_render_as_null_or_nothing() {
        assert_eq!(value("{{ data.missing }}"), Value::Null);
        assert_eq!(value("{{ data.user.name.first }}"), Value::Null);
        assert_eq!(value("{{ data.items.9.sku }}"), Value::Null);
        assert_eq!(value("{{ data.items.01.sku }}"), Value::Null);
        assert_eq!(value("{{ data.items.sku }}"), Value::Null);
        assert_eq!(value("{{ data.note }}"), Value::Null);
        assert_eq!(string("[{{ data.missing }}][{{ data.note }}]"), "[][]");
    }

    #[test]
    fn leading_literal_and_literals_expose_the_fixed_text() {
        let template = Template::compile("https://x.io/{{ data.id }}/y", "t").unwrap();
        assert_eq!(template.leading_literal(), "https://x.io/");
        assert_eq!(
            template.literals().collect::<Vec<_>>(),
            ["https://x.io/", "/y"]
        );
        assert_eq!(
            Template::compile("{{ type }}", "t")
                .unwrap()
                .leading_literal(),
            ""
        );
        assert_eq!(
            Template::compile("all", "t").unwrap().leading_literal(),
            "all"
        );
    }

    #[test]
    fn bad_templates_are_errors_at_their_path() {
        let error = Template::compile("Hi {{ foo }}", "action.params.message").unwrap_err();
        assert_eq!(error.path, "action.params.message");
        assert_eq!(
            error.message,
            "unknown placeholder 'foo' (use external_id, type, event_id or data.<path>)"
        );
        for bad in [
            "{{ }}",
            "{{}}",
            "x {{ data.amount",
            "{{ data. }}",
            "{{ data..a }}",
            "{{ Data.a }}",
            "{{ type.x }}",
            "{{ event_id }} {{",
        ] {
            let error = Template::compile(bad, "p").unwrap_err();
            assert_eq!(error.path, "p", "{bad}");
        }
        let error = Template::compile("ab {{ x", "p").unwrap_err();
        assert!(error.message.contains("character 4"), "{}", error.message);
    }

    #[test]
    fn templated_values_render_every_string_and_keep_keys() {
        let body = json!({
            "id": "{{ event_id }}",
            "{{ type }}": "key is not templated",
            "who": {"name": "{{ data.user.name }}", "tags": ["vip", "{{ data.amount }}"]},
            "fixed": {"n": 1, "s": "x"},
            "missing": "{{ data.nope }}"
        });
        let compiled = TemplatedValue::compile(&body, "body").unwrap();
        assert!(compiled.has_placeholders());
        let rendered = with_ctx(|ctx| compiled.render(ctx)).unwrap();
        assert_eq!(
            rendered,
            json!({
                "id": 42,
                "{{ type }}": "key is not templated",
                "who": {"name": "Ana", "tags": ["vip", 250]},
                "fixed": {"n": 1, "s": "x"},
                "missing": null
            })
        );
        let keys: Vec<&String> = rendered.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "{{ type }}", "who", "fixed", "missing"]);
    }

    #[test]
    fn templated_values_without_placeholders_are_fixed() {
        let plain = json!({"a": [1, "two", {"b": null}]});
        let compiled = TemplatedValue::compile(&plain, "body").unwrap();
        assert!(!compiled.has_placeholders());
        assert_eq!(with_ctx(|ctx| compiled.render(ctx)).unwrap(), plain);
        let scalar = TemplatedValue::compile(&json!("{{ type }}"), "body").unwrap();
        assert_eq!(
            with_ctx(|ctx| scalar.render(ctx)).unwrap(),
            json!("order.created")
        );
    }

    #[test]
    fn templated_values_report_every_error_with_its_path() {
        let body = json!({"user": "{{ usr }}", "items": ["ok", "{{ data..x }}"], "n": "{{"});
        let errors = TemplatedValue::compile(&body, "action.params.body").unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "action.params.body.user",
                "action.params.body.items[1]",
                "action.params.body.n"
            ]
        );
    }

    #[test]
    fn a_transform_computes_any_json_from_the_event_and_says_where_it_failed() {
        let body = json!({"total": {"$logic": {"*": [{"var": "data.amount"}, 2]}},
            "who": {"$logic": {"cat": [{"var": "event.external_id"}, "/", {"var": "event.type"}]}},
            "keep": {"$logic": 1, "other": 2}});
        let compiled = TemplatedValue::compile(&body, "body").unwrap();
        assert!(compiled.has_transforms());
        let rendered = with_ctx(|ctx| compiled.render(ctx)).unwrap();
        assert_eq!(rendered["total"], 500);
        assert_eq!(rendered["who"], "order-123/order.created");
        assert_eq!(
            rendered["keep"],
            json!({"$logic": 1, "other": 2}),
            "not exactly one key"
        );

        let errors = TemplatedValue::compile(&json!({"t": {"$logic": {"nope": []}}}), "body")
            .expect_err("unknown operator");
        assert!(errors[0].path.starts_with("body.t.$logic"), "{errors:?}");

        let costly = TemplatedValue::compile(
            &json!({"t": {"$logic": {"map": [{"var": "data.items"}, {"var": "sku"}]}}}),
            "body",
        )
        .unwrap();
        let error = with_ctx(|ctx| {
            costly.render(&TemplateContext {
                limits: Limits {
                    max_operations: 2,
                    ..Limits::default()
                },
                ..*ctx
            })
        })
        .expect_err("over budget");
        assert_eq!(error.path, "body.t");
        assert!(
            error.to_string().starts_with("transform at body.t: "),
            "{error}"
        );
    }
}
