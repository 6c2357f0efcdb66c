//! Signing in to the console with an API key (`read` or `admin`), and out again.

use super::{render, ConsoleError, ConsoleResult, Layout, Section, Viewer};
use crate::auth::keyring::Verdict;
use crate::auth::{count_failure, session, AuthMode, Scope};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginParams {
    #[serde(default)]
    next: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    next: String,
}

/// Where to go after signing in: a console page, never another site (`//evil`, `/\evil`).
fn safe_next(next: &str) -> String {
    let console_page = (next == "/console" || next.starts_with("/console/"))
        && !next.contains('\\')
        && !next.starts_with("/console/login")
        && next.chars().all(|c| c.is_ascii_graphic());
    if console_page {
        next.to_owned()
    } else {
        "/console".to_owned()
    }
}

/// A visitor without a session goes to the sign-in page, then back where they were going.
pub(super) fn redirect_to_login(request: &Request) -> Response {
    let wanted = if request.method() == axum::http::Method::GET {
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/console")
    } else {
        "/console"
    };
    let next = safe_next(wanted);
    let query = serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
    Redirect::to(&format!("/console/login?{query}")).into_response()
}

fn page(viewer: &Viewer, next: String, error: Option<String>) -> LoginPage {
    LoginPage {
        layout: Layout {
            nav: false,
            ..Layout::new("Sign in", Section::None, viewer)
        },
        next,
        error,
    }
}

/// `GET /console/login`.
pub async fn form(viewer: Viewer, Query(params): Query<LoginParams>) -> Response {
    if !viewer.auth {
        return Redirect::to("/console").into_response();
    }
    render(
        StatusCode::OK,
        &page(&viewer, safe_next(&params.next), None),
    )
}

/// `POST /console/login`: a valid `read` or `admin` key opens a session.
pub async fn submit(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> ConsoleResult<Response> {
    let next = safe_next(&form.next);
    let (Some(keys), AuthMode::ApiKey) = (&state.keys, state.settings.auth) else {
        return Ok(Redirect::to(&next).into_response());
    };
    let refuse = |status: StatusCode, reason: &'static str, message: &str| {
        count_failure(reason);
        render(
            status,
            &page(&viewer, next.clone(), Some(message.to_owned())),
        )
    };
    let verdict = keys
        .verify(form.key.trim())
        .await
        .map_err(|e| ConsoleError(crate::error::ApiError::from_store(&e)))?;
    let principal = match verdict {
        Verdict::Valid(principal) => principal,
        Verdict::Unknown => {
            return Ok(refuse(
                StatusCode::UNAUTHORIZED,
                "unknown",
                "That is not a valid API key.",
            ))
        }
        Verdict::Revoked => {
            return Ok(refuse(
                StatusCode::UNAUTHORIZED,
                "revoked",
                "That API key has been revoked.",
            ))
        }
    };
    if !principal.scopes.cover(Scope::Read) {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            "scope",
            "That key can only send events; the console needs a read or admin key.",
        ));
    }
    let cookie = session::open(&state.store, principal.key_id, session::is_https(&headers)).await?;
    tracing::info!(key = %principal.name, "console sign-in");
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response())
}

/// `POST /console/logout`: ends the session everywhere.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ConsoleResult<Response> {
    let cookie = session::close(&headers, &state.store, session::is_https(&headers)).await?;
    let to = if state.settings.auth == AuthMode::ApiKey {
        "/console/login"
    } else {
        "/console"
    };
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response())
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn sign_in_only_returns_to_console_pages() {
        assert_eq!(
            safe_next("/console/events?state=failed"),
            "/console/events?state=failed"
        );
        assert_eq!(safe_next("/console"), "/console");
        assert_eq!(safe_next("//evil.example"), "/console");
        assert_eq!(safe_next("https://evil.example"), "/console");
        assert_eq!(safe_next("/console\\@evil"), "/console");
        assert_eq!(safe_next("/consolex"), "/console");
        assert_eq!(safe_next("/console/login?next=x"), "/console");
    }
}
