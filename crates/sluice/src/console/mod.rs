//! The web console (`/console`): server-rendered HTML over the same store and handlers the JSON
//! API uses, plain CSS and a little script that only enhances (live refresh, relative times,
//! JSON editing). Every page and form works without JavaScript.
//!
//! Pages read and write through the same typed operations as the JSON API (`operations/`),
//! so validation, versioning, live announcements and metrics are exactly the API's, and they
//! render the operations' `…Out` structs into view structs of their own (`view.rs` and each
//! page's module).

mod assets;
mod event_types;
mod events;
mod keys;
mod login;
mod overview;
mod rules;
mod sources;
mod targets;
pub mod view;

use crate::api::site::same_origin;
use crate::auth::access::Gate;
use crate::auth::{count_failure, session, AuthMode, Principal, Scope};
use crate::error::{ApiError, ErrorName};
use crate::state::AppState;
use askama::Template;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use sluice_core::FieldError;
use std::sync::Arc;

/// The console's routes, all under `/console`; with `AUTH=api_key` every page but the login
/// page needs a session (see [`guard`]).
pub fn router(gate: Gate) -> Router<AppState> {
    Router::new()
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/keys", get(keys::list).post(keys::create))
        .route("/console/keys/{id}/revoke", post(keys::revoke))
        .route("/console/targets", get(targets::list).post(targets::change))
        .route("/console/sources", get(sources::list))
        .route("/console/event-types", get(event_types::list))
        .route(
            "/console/event-types/settings",
            get(event_types::settings).post(event_types::save),
        )
        .route("/console", get(overview::page))
        .route("/console/", get(to_console))
        .route("/console/events", get(events::list))
        .route("/console/events/{id}", get(events::detail))
        .route("/console/events/{id}/replay", post(events::replay))
        .route("/console/events/{id}/cancel", post(events::cancel))
        .route("/console/rules", get(rules::list).post(rules::create))
        .route("/console/rules/new", get(rules::new_form))
        .route("/console/rules/{id}", get(rules::detail))
        .route(
            "/console/rules/{id}/edit",
            get(rules::edit_form).post(rules::update),
        )
        .route("/console/rules/{id}/active", post(rules::set_active))
        .route("/console/rules/{id}/test", post(rules::test))
        .route("/console/assets/{file}", get(assets::serve))
        .route("/console/{*rest}", get(unknown_page))
        .layer(middleware::from_fn_with_state(gate, guard))
}

/// Who is looking at a page: with `AUTH=api_key`, the signed-in key; it decides whether the
/// page shows write controls (an `admin` key) or only what there is to see (a `read` key).
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Whether access control is on.
    pub auth: bool,
    pub principal: Option<Arc<Principal>>,
}

impl Viewer {
    fn open() -> Viewer {
        Viewer {
            auth: false,
            principal: None,
        }
    }

    /// Whether the viewer may change things (always, without access control).
    pub fn can_write(&self) -> bool {
        !self.auth
            || self
                .principal
                .as_ref()
                .is_some_and(|p| p.scopes.cover(Scope::Admin))
    }

    /// The name recorded as "by" for what the viewer does.
    pub fn name(&self) -> Option<&str> {
        self.principal.as_deref().map(|p| p.name.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Viewer>()
            .cloned()
            .unwrap_or_else(Viewer::open))
    }
}

/// `GET /`: the console is the front door.
pub async fn to_console() -> Redirect {
    Redirect::to("/console")
}

/// Which part of the console a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Events,
    Rules,
    EventTypes,
    Targets,
    Sources,
    Keys,
    None,
}

/// A short message at the top of a page: what just happened.
#[derive(Debug, Clone)]
pub struct Flash {
    /// `success`, `info` or `error` (also the CSS class).
    pub kind: &'static str,
    pub message: String,
}

impl Flash {
    pub fn success(message: impl Into<String>) -> Self {
        Flash {
            kind: "success",
            message: message.into(),
        }
    }

    pub fn info(message: impl Into<String>) -> Self {
        Flash {
            kind: "info",
            message: message.into(),
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Flash {
            kind: "error",
            message: message.into(),
        }
    }
}

/// What every page's frame needs: its title, section, the versioned asset URLs, and what
/// the viewer may do.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    pub section: Section,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
    pub flash: Option<Flash>,
    /// Whether to show forms and buttons that change things.
    pub can_write: bool,
    /// The signed-in key's name, with access control (shown with a sign-out button).
    pub signed_in: Option<String>,
    /// Whether to show the navigation (not on the sign-in page).
    pub nav: bool,
}

impl Layout {
    pub fn new(title: impl Into<String>, section: Section, viewer: &Viewer) -> Self {
        Layout {
            title: title.into(),
            section,
            css: assets::css_url(),
            js: assets::js_url(),
            icon: assets::icon_url(),
            flash: None,
            can_write: viewer.can_write(),
            signed_in: viewer.name().map(str::to_owned),
            nav: !viewer.auth || viewer.principal.is_some(),
        }
    }

    pub fn with_flash(mut self, flash: Option<Flash>) -> Self {
        self.flash = flash;
        self
    }

    /// Whether the page is in the named section (`overview`, `events`, `rules`).
    pub fn is_section(&self, name: &str) -> bool {
        let current = match self.section {
            Section::Overview => "overview",
            Section::Events => "events",
            Section::Rules => "rules",
            Section::Keys => "keys",
            Section::Targets => "targets",
            Section::Sources => "sources",
            Section::EventTypes => "event-types",
            Section::None => return false,
        };
        current == name
    }
}

/// Renders a page with a status; a template that fails to render is a logged 500.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "cannot render a console page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>The page could not be rendered.</p>"),
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    heading: &'static str,
    message: String,
}

/// An error shown as a console page with the status the API would have answered.
#[derive(Debug)]
pub struct ConsoleError(pub ApiError);

impl From<ApiError> for ConsoleError {
    fn from(error: ApiError) -> Self {
        ConsoleError(error)
    }
}

impl From<sluice_store::StoreError> for ConsoleError {
    fn from(error: sluice_store::StoreError) -> Self {
        ConsoleError(ApiError::from_store(&error))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let error = self.0;
        let heading = match error.name {
            ErrorName::ValidationError => "That request is not valid",
            ErrorName::Unauthorized => "Sign in needed",
            ErrorName::Forbidden => "Refused",
            ErrorName::NotFoundError => "Not found",
            ErrorName::ConflictError => "Not possible right now",
            ErrorName::PayloadTooLarge => "Too large",
            ErrorName::UnsupportedMediaType => "Unsupported request",
            ErrorName::InternalServerError => "Something went wrong",
            ErrorName::ServiceUnavailable => "Temporarily unavailable",
        };
        error_page(error.name.status(), heading, error.message)
    }
}

fn error_page(status: StatusCode, heading: &'static str, message: String) -> Response {
    render(
        status,
        &ErrorPage {
            layout: Layout {
                nav: false,
                ..Layout::new(heading, Section::None, &Viewer::open())
            },
            status: status.as_u16(),
            heading,
            message,
        },
    )
}

pub type ConsoleResult<T> = Result<T, ConsoleError>;

async fn unknown_page(uri: axum::http::Uri) -> ConsoleError {
    ConsoleError(ApiError::not_found(format!(
        "there is no console page at {}",
        uri.path()
    )))
}

/// Field errors sorted to the form fields they belong to: `condition.and[1]` goes next to
/// `condition` (with `and[1]` kept in the message); anything unplaced is shown atop the form.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors(Vec<(String, String)>);

impl FieldErrors {
    pub fn from_details(details: &[FieldError], fields: &[&str]) -> Self {
        let mut errors = FieldErrors::default();
        for detail in details {
            let head_len = detail.path.find(['.', '[']).unwrap_or(detail.path.len());
            let (head, rest) = detail.path.split_at(head_len);
            let rest = rest.trim_start_matches('.');
            if fields.contains(&head) {
                let message = if rest.is_empty() {
                    detail.message.clone()
                } else {
                    format!("at {rest}: {}", detail.message)
                };
                errors.push(head, message);
            } else {
                errors.push("", detail.to_string());
            }
        }
        errors
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_owned(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The messages for one field (`""`: the whole form), joined.
    pub fn get(&self, field: &str) -> Option<String> {
        let messages: Vec<&str> = self
            .0
            .iter()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
            .collect();
        (!messages.is_empty()).then(|| messages.join("; "))
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.iter().any(|(f, _)| f == field)
    }
}

impl IntoIterator for FieldErrors {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Refuses cross-site form posts (the console has no other CSRF token); with access
/// control, sends visitors without a session to the sign-in page and refuses write pages to
/// read-only keys; and sets the headers that keep pages from being framed or running
/// injected script.
async fn guard(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    // Refusals are console pages too, and get the console's headers.
    let mut response = admit(&gate, request, next).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn admit(gate: &Gate, mut request: Request, next: Next) -> Response {
    let writes = request.method() != Method::GET && request.method() != Method::HEAD;
    if writes && !same_origin(request.headers()) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was sent from another site. Open the console and try again.".to_owned(),
        );
    }
    let path = request.uri().path().to_owned();
    let viewer = match (&gate.keys, gate.mode) {
        (Some(keys), AuthMode::ApiKey) if !is_public(&path) => {
            match session::principal(request.headers(), &gate.store, keys).await {
                Err(error) => return ConsoleError(error).into_response(),
                Ok(Some(principal)) if principal.scopes.cover(Scope::Read) => Viewer {
                    auth: true,
                    principal: Some(principal),
                },
                Ok(_) => {
                    count_failure("no_session");
                    return login::redirect_to_login(&request);
                }
            }
        }
        (_, AuthMode::ApiKey) => Viewer {
            auth: true,
            principal: None,
        },
        _ => Viewer::open(),
    };
    if (writes || is_write_page(&path)) && !is_public(&path) && !viewer.can_write() {
        count_failure("scope");
        return error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            format!(
                "The key '{}' can look but not change anything: sign in with an admin key to do this.",
                viewer.name().unwrap_or("?")
            ),
        );
    }
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

/// Pages anyone may open: signing in and out, and the assets the sign-in page uses.
fn is_public(path: &str) -> bool {
    path == "/console/login" || path == "/console/logout" || path.starts_with("/console/assets/")
}

/// Pages that exist only to change things (forms), and the keys page.
fn is_write_page(path: &str) -> bool {
    path.ends_with("/new") || path.ends_with("/edit") || path.starts_with("/console/keys")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_land_next_to_their_field() {
        let details = [
            FieldError::new("condition.and[1]", "unknown operator 'frobnicate'"),
            FieldError::new("name", "must not be empty"),
            FieldError::new("action.params.url", "must be http or https"),
            FieldError::new("", "body must be an object"),
        ];
        let errors =
            FieldErrors::from_details(&details, &["name", "event_type", "condition", "action"]);
        assert_eq!(
            errors.get("condition").as_deref(),
            Some("at and[1]: unknown operator 'frobnicate'")
        );
        assert_eq!(errors.get("name").as_deref(), Some("must not be empty"));
        assert_eq!(
            errors.get("action").as_deref(),
            Some("at params.url: must be http or https")
        );
        assert_eq!(errors.get("").as_deref(), Some("body must be an object"));
        assert!(errors.get("event_type").is_none());
    }
}
