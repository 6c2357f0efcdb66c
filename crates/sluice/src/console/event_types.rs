//! The Event types page: every type configured or seen, with its event count and settings,
//! and a form per type (description, JSON Schema, timeout, attempts, retry delays) that shows
//! what is wrong next to the field. Saving goes through the same operation as
//! `PUT /event-types/{type}`.

use super::{render, ConsoleResult, FieldErrors, Flash, Layout, Section, Viewer};
use crate::console::view::pretty;
use crate::error::{ApiError, ErrorName};
use crate::event_types::{parse_changes, parse_name};
use crate::operations::event_types::{self as type_ops, EventTypeOut};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::{Map, Value};

const FIELDS: &[&str] = &[
    "description",
    "schema",
    "processing_timeout_ms",
    "max_attempts",
    "retry_backoff_ms",
    "max_wait_ms",
];

pub struct TypeRow {
    pub name: String,
    /// The link to its settings (the name percent-encoded).
    pub href: String,
    pub description: String,
    pub events_total: i64,
    pub has_schema: bool,
    pub timeout: Option<i64>,
    pub attempts: Option<i64>,
    pub delays: Option<String>,
}

fn settings_href(name: &str) -> String {
    format!(
        "/console/event-types/settings?{}",
        serde_urlencoded::to_string([("type", name)]).unwrap_or_default()
    )
}

fn delays_text(delays: &[i64]) -> String {
    delays
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<EventTypeOut> for TypeRow {
    fn from(t: EventTypeOut) -> Self {
        TypeRow {
            href: settings_href(&t.event_type),
            description: t.description.unwrap_or_default(),
            events_total: t.events_total,
            has_schema: t.schema.is_some(),
            timeout: t.processing_timeout_ms,
            attempts: t.max_attempts,
            delays: t.retry_backoff_ms.as_deref().map(delays_text),
            name: t.event_type,
        }
    }
}

/// The process defaults a type falls back to, as this process has them.
pub struct Defaults {
    pub timeout: u64,
    pub attempts: u32,
    pub delays: String,
    /// TARGET_MAX_WAIT, as it was set (`24 h`).
    pub max_wait: String,
}

impl Defaults {
    fn of(state: &AppState) -> Self {
        let s = &state.settings;
        Defaults {
            timeout: s.processing_timeout_ms,
            attempts: s.max_attempts,
            delays: s
                .retry_backoff_ms
                .0
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            max_wait: s.target_max_wait.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/event_types.html")]
struct TypesPage {
    layout: Layout,
    rows: Vec<TypeRow>,
    defaults: Defaults,
}

#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// The type just saved.
    #[serde(default)]
    saved: String,
}

/// `GET /console/event-types`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<ListParams>,
) -> ConsoleResult<Response> {
    let types = type_ops::list(&state).await?.data;
    // The flash names a type as stored, never text from the link.
    let flash = types
        .iter()
        .find(|t| t.event_type == params.saved)
        .map(|t| Flash::success(format!("Settings of {} saved.", t.event_type)));
    let page = TypesPage {
        layout: Layout::new("Event types", Section::EventTypes, &viewer).with_flash(flash),
        rows: types.into_iter().map(TypeRow::from).collect(),
        defaults: Defaults::of(&state),
    };
    Ok(render(StatusCode::OK, &page))
}

/// What the settings form sends (and shows again, as typed, when something is wrong). An
/// empty field means "the default" (no schema, no description).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TypeForm {
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    schema: String,
    #[serde(default)]
    processing_timeout_ms: String,
    #[serde(default)]
    max_attempts: String,
    #[serde(default)]
    retry_backoff_ms: String,
    #[serde(default)]
    max_wait_ms: String,
}

impl TypeForm {
    fn from_type(t: &EventTypeOut) -> Self {
        TypeForm {
            event_type: t.event_type.clone(),
            description: t.description.clone().unwrap_or_default(),
            schema: t.schema.as_ref().map(pretty).unwrap_or_default(),
            processing_timeout_ms: number_text(t.processing_timeout_ms),
            max_attempts: number_text(t.max_attempts),
            retry_backoff_ms: t
                .retry_backoff_ms
                .as_deref()
                .map(delays_text)
                .unwrap_or_default(),
            max_wait_ms: number_text(t.max_wait_ms),
        }
    }

    /// The body `PUT /event-types/{type}` takes: every field, empty ones as `null`. Text
    /// that is not a number or not JSON is reported here.
    fn body(&self, errors: &mut FieldErrors) -> Value {
        let mut body = Map::new();
        let description = self.description.trim();
        body.insert(
            "description".into(),
            if description.is_empty() {
                Value::Null
            } else {
                Value::String(description.to_owned())
            },
        );
        let schema = self.schema.trim();
        if schema.is_empty() {
            body.insert("schema".into(), Value::Null);
        } else {
            match serde_json::from_str::<Value>(schema) {
                Ok(value) => {
                    body.insert("schema".into(), value);
                }
                Err(error) => errors.push("schema", format!("is not valid JSON: {error}")),
            }
        }
        for (field, text) in [
            ("processing_timeout_ms", &self.processing_timeout_ms),
            ("max_attempts", &self.max_attempts),
            ("max_wait_ms", &self.max_wait_ms),
        ] {
            match number(text) {
                Ok(value) => {
                    body.insert(field.into(), value);
                }
                Err(message) => errors.push(field, message),
            }
        }
        let delays = self.retry_backoff_ms.trim();
        if delays.is_empty() {
            body.insert("retry_backoff_ms".into(), Value::Null);
        } else {
            let parsed: Result<Vec<Value>, String> = delays
                .split(',')
                .enumerate()
                .map(|(i, item)| {
                    number(item).and_then(|v| {
                        if v.is_null() {
                            Err(format!("delay {} is empty", i + 1))
                        } else {
                            Ok(v)
                        }
                    })
                })
                .collect();
            match parsed {
                Ok(items) => {
                    body.insert("retry_backoff_ms".into(), Value::Array(items));
                }
                Err(message) => errors.push("retry_backoff_ms", message),
            }
        }
        Value::Object(body)
    }
}

fn number_text(n: Option<i64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// A whole number as typed; empty is `null` (the default).
fn number(text: &str) -> Result<Value, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    text.parse::<i64>()
        .map(Value::from)
        .map_err(|_| format!("'{text}' is not a whole number"))
}

#[derive(Template)]
#[template(path = "console/event_type_form.html")]
struct TypeFormPage {
    layout: Layout,
    form: TypeForm,
    errors: FieldErrors,
    events_total: i64,
    configured: bool,
    defaults: Defaults,
}

#[derive(Debug, Default, Deserialize)]
pub struct TypeParams {
    #[serde(default, rename = "type")]
    event_type: String,
}

/// `GET /console/event-types/settings?type=…`: a type's settings (a new type's defaults).
pub async fn settings(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<TypeParams>,
) -> ConsoleResult<Response> {
    let name = parse_name(params.event_type.trim()).map_err(|e| ApiError::invalid(vec![e]))?;
    let (form, events_total, configured) = match type_ops::get(&state, &name).await {
        Ok(t) => (TypeForm::from_type(&t), t.events_total, t.configured),
        Err(error) if error.name == ErrorName::NotFoundError => (
            TypeForm {
                event_type: name.as_str().to_owned(),
                ..TypeForm::default()
            },
            0,
            false,
        ),
        Err(error) => return Err(error.into()),
    };
    let page = TypeFormPage {
        layout: Layout::new(name.as_str(), Section::EventTypes, &viewer),
        form,
        errors: FieldErrors::default(),
        events_total,
        configured,
        defaults: Defaults::of(&state),
    };
    Ok(render(StatusCode::OK, &page))
}

/// `POST /console/event-types/settings`: saves a type's settings, or shows the form again
/// with what is wrong next to each field (400).
pub async fn save(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<TypeForm>,
) -> ConsoleResult<Response> {
    let name = parse_name(form.event_type.trim()).map_err(|e| ApiError::invalid(vec![e]))?;
    let mut errors = FieldErrors::default();
    let body = form.body(&mut errors);
    // Fields that did not even parse are left out of the body; the rest are still checked,
    // so every problem shows at once.
    match parse_changes(&body) {
        Ok(changes) if errors.is_empty() => {
            type_ops::update(&state, &name, changes, viewer.name()).await?;
            let query = serde_urlencoded::to_string([("saved", name.as_str())]).unwrap_or_default();
            return Ok(Redirect::to(&format!("/console/event-types?{query}")).into_response());
        }
        Ok(_) => {}
        Err(details) => {
            for (field, message) in FieldErrors::from_details(&details, FIELDS) {
                errors.push(&field, message);
            }
        }
    }
    let (events_total, configured) = match type_ops::get(&state, &name).await {
        Ok(t) => (t.events_total, t.configured),
        Err(_) => (0, false),
    };
    let page = TypeFormPage {
        layout: Layout::new(name.as_str(), Section::EventTypes, &viewer),
        form,
        errors,
        events_total,
        configured,
        defaults: Defaults::of(&state),
    };
    Ok(render(StatusCode::BAD_REQUEST, &page))
}
