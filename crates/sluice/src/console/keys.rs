//! The Keys page (admins; everyone without access control): create a key — shown once, on
//! the page that answers the form —, list keys, revoke one.

use super::view::When;
use super::{render, ConsoleResult, FieldErrors, Flash, Layout, Section, Viewer};
use crate::api::extract::IdPath;
use crate::error::ApiError;
use crate::operations::keys::{self as key_ops, ApiKeyOut, CreatedKeyOut, NewKey};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::{self, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use chrono::Utc;
use serde::Deserialize;

pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub scopes: String,
    pub created: When,
    pub last_used: Option<When>,
    pub revoked: Option<When>,
}

impl KeyRow {
    fn new(key: &ApiKeyOut, now: chrono::DateTime<Utc>) -> Self {
        KeyRow {
            id: key.id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            scopes: key
                .scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            created: When::new(key.created_at, now),
            last_used: When::maybe(key.last_used_at, now),
            revoked: When::maybe(key.revoked_at, now),
        }
    }
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    layout: Layout,
    rows: Vec<KeyRow>,
    created: Option<CreatedKeyOut>,
    form: KeyForm,
    errors: FieldErrors,
    auth: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub scope_ingest: Option<String>,
    #[serde(default)]
    pub scope_read: Option<String>,
    #[serde(default)]
    pub scope_admin: Option<String>,
}

impl KeyForm {
    fn scopes(&self) -> Vec<&'static str> {
        [
            (&self.scope_ingest, "ingest"),
            (&self.scope_read, "read"),
            (&self.scope_admin, "admin"),
        ]
        .into_iter()
        .filter(|(on, _)| on.is_some())
        .map(|(_, name)| name)
        .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct KeysParams {
    /// The id of a key just revoked.
    #[serde(default)]
    revoked: Option<String>,
}

async fn page(
    state: &AppState,
    viewer: &Viewer,
    flash: Option<Flash>,
    created: Option<CreatedKeyOut>,
    form: KeyForm,
    errors: FieldErrors,
) -> ConsoleResult<KeysPage> {
    let now = Utc::now();
    let keys = key_ops::list(state.store.as_ref()).await?;
    Ok(KeysPage {
        layout: Layout::new("API keys", Section::Keys, viewer).with_flash(flash),
        rows: keys.data.iter().map(|k| KeyRow::new(k, now)).collect(),
        created,
        form,
        errors,
        auth: viewer.auth,
    })
}

/// `GET /console/keys`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(params): Query<KeysParams>,
) -> ConsoleResult<Response> {
    // The flash names the key as stored, never text from the link.
    let keys = key_ops::list(state.store.as_ref()).await?;
    let flash = params
        .revoked
        .and_then(|id| id.parse::<i64>().ok())
        .and_then(|id| keys.data.into_iter().find(|k| k.id == id))
        .map(|k| Flash::success(format!("Key '{}' revoked.", k.name)));
    let page = page(
        &state,
        &viewer,
        flash,
        None,
        KeyForm::default(),
        FieldErrors::default(),
    )
    .await?;
    Ok(render(StatusCode::OK, &page))
}

/// `POST /console/keys`: creates a key and shows it, this once.
pub async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    Form(form): Form<KeyForm>,
) -> ConsoleResult<Response> {
    let new = match NewKey::new(&form.name, &form.scopes()) {
        Ok(new) => new,
        Err(details) => {
            let errors = FieldErrors::from_details(&details, &["name", "scopes"]);
            let page = page(&state, &viewer, None, None, form, errors).await?;
            return Ok(render(StatusCode::BAD_REQUEST, &page));
        }
    };
    let created = key_ops::create(state.store.as_ref(), &new).await?;
    state.keys_changed().await;
    let flash = Flash::success(format!(
        "Key '{}' created. Copy it now: it is not stored and will not be shown again.",
        created.name
    ));
    let page = page(
        &state,
        &viewer,
        Some(flash),
        Some(created),
        KeyForm::default(),
        FieldErrors::default(),
    )
    .await?;
    let mut response = render(StatusCode::CREATED, &page);
    // The page holds a secret: keep it out of caches and the back-forward history.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /console/keys/{id}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    id: Result<IdPath, ApiError>,
) -> ConsoleResult<Response> {
    let IdPath(id) = id?;
    key_ops::revoke(state.store.as_ref(), id, state.operational.as_deref()).await?;
    state.keys_changed().await;
    Ok(Redirect::to(&format!("/console/keys?revoked={id}")).into_response())
}
