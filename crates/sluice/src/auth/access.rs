//! Which scope each route needs, and the middleware that checks it on the JSON API (the
//! console checks its sessions itself, in `console::guard`).

use super::keyring::{KeyRing, Verdict};
use super::{count_failure, session, AuthMode, Principal, Scope};
use crate::error::ApiError;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sluice_store::Store;
use std::sync::Arc;

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/health`, `/ready`: probes must work without a key.
    Open,
    /// The console's pages, which check their own session (and the `/` redirect to them).
    Console,
    /// An inbound webhook (`POST /sources/{name}/events`): the request proves itself with
    /// its source's signature, or, for a source that checks none, with an `ingest` key the
    /// operation checks.
    Verified,
    Needs(Scope),
}

/// The one route → scope table: `ingest` posts events, `read` sees (every `GET`, `/ws`,
/// `/metrics`, `/api-docs.json`), `admin` does everything else — rules, replay, requeue —
/// and is the only one that may see or change keys.
pub fn required(method: &Method, path: &str) -> Access {
    if path == "/health" || path == "/ready" {
        return Access::Open;
    }
    if path == "/" || path == "/console" || path.starts_with("/console/") {
        return Access::Console;
    }
    if path == "/api-keys" || path.starts_with("/api-keys/") {
        return Access::Needs(Scope::Admin);
    }
    if *method == Method::POST && is_source_inbox(path) {
        return Access::Verified;
    }
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Access::Needs(Scope::Read),
        Method::POST if path == "/events" || path == "/events/batch" => {
            Access::Needs(Scope::Ingest)
        }
        _ => Access::Needs(Scope::Admin),
    }
}

/// `/sources/{name}/events`.
fn is_source_inbox(path: &str) -> bool {
    path.strip_prefix("/sources/")
        .and_then(|rest| rest.strip_suffix("/events"))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// What the middleware needs: the mode, and the keys when they matter.
#[derive(Clone)]
pub struct Gate {
    pub mode: AuthMode,
    pub keys: Option<Arc<KeyRing>>,
    pub store: Arc<dyn Store>,
}

impl Gate {
    /// Who a request's credentials name. `Ok(None)`: it carries none.
    async fn identify(
        &self,
        headers: &HeaderMap,
        allow_session: bool,
    ) -> Result<Option<Result<Arc<Principal>, Refusal>>, ApiError> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        if let Some(presented) = presented_key(headers) {
            let verdict = keys.verify(presented).await.map_err(|e| {
                tracing::warn!(error = %e, "cannot check an API key");
                ApiError::unavailable("cannot check API keys right now; try again")
            })?;
            return Ok(Some(match verdict {
                Verdict::Valid(principal) => Ok(principal),
                Verdict::Unknown => Err(Refusal::Unknown),
                Verdict::Revoked => Err(Refusal::Revoked),
            }));
        }
        if allow_session {
            if let Some(principal) = session::principal(headers, &self.store, keys).await? {
                return Ok(Some(Ok(principal)));
            }
        }
        Ok(None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Unknown,
    Revoked,
}

/// The key a request presents: `Authorization: Bearer <key>` or `X-API-Key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, key) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim())
            .filter(|k| !k.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// A 401 that tells the client how to authenticate.
pub fn unauthorized(reason: &'static str, message: &str) -> Response {
    count_failure(reason);
    let mut response = ApiError::unauthorized(message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Access control over the JSON API (part of every request's checks, `app::checkpoint`):
/// refuses requests whose key is missing, unknown, revoked or short of the route's scope,
/// and hands the key's principal to the handler.
pub async fn guard(gate: &Gate, mut request: Request, next: Next) -> Response {
    if gate.mode == AuthMode::None {
        return next.run(request).await;
    }
    let needed = match required(request.method(), request.uri().path()) {
        Access::Open | Access::Console | Access::Verified => return next.run(request).await,
        Access::Needs(scope) => scope,
    };
    // Browsers cannot put a header on a WebSocket: the console's own `/ws` rides on its
    // session cookie (SameSite=Strict, and foreign origins are refused by the site guard).
    let allow_session = request.uri().path() == "/ws";
    let principal = match gate.identify(request.headers(), allow_session).await {
        Err(error) => return error.into_response(),
        Ok(None) => {
            return unauthorized(
                "missing",
                "an API key is required: send Authorization: Bearer <key> or X-API-Key",
            )
        }
        Ok(Some(Err(Refusal::Unknown))) => return unauthorized("unknown", "unknown API key"),
        Ok(Some(Err(Refusal::Revoked))) => {
            return unauthorized("revoked", "this API key has been revoked")
        }
        Ok(Some(Ok(principal))) => principal,
    };
    if !principal.scopes.cover(needed) {
        count_failure("scope");
        return ApiError::forbidden(format!(
            "the key '{}' lacks the '{needed}' scope this route needs",
            principal.name
        ))
        .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_the_documented_scopes() {
        let needs = |m: Method, p| required(&m, p);
        assert_eq!(needs(Method::GET, "/health"), Access::Open);
        assert_eq!(needs(Method::GET, "/ready"), Access::Open);
        assert_eq!(needs(Method::POST, "/events"), Access::Needs(Scope::Ingest));
        assert_eq!(
            needs(Method::POST, "/events/batch"),
            Access::Needs(Scope::Ingest)
        );
        assert_eq!(needs(Method::GET, "/events"), Access::Needs(Scope::Read));
        assert_eq!(needs(Method::GET, "/ws"), Access::Needs(Scope::Read));
        assert_eq!(needs(Method::GET, "/metrics"), Access::Needs(Scope::Read));
        assert_eq!(
            needs(Method::POST, "/events/1/replay"),
            Access::Needs(Scope::Admin)
        );
        assert_eq!(
            needs(Method::POST, "/rules/test"),
            Access::Needs(Scope::Admin)
        );
        assert_eq!(needs(Method::GET, "/api-keys"), Access::Needs(Scope::Admin));
        assert_eq!(
            needs(Method::DELETE, "/api-keys/3"),
            Access::Needs(Scope::Admin)
        );
        assert_eq!(needs(Method::GET, "/console/rules"), Access::Console);
        assert_eq!(needs(Method::POST, "/sources/gh/events"), Access::Verified);
        assert_eq!(
            needs(Method::PUT, "/sources/gh"),
            Access::Needs(Scope::Admin)
        );
        assert_eq!(
            needs(Method::GET, "/sources/gh"),
            Access::Needs(Scope::Read)
        );
        assert_eq!(needs(Method::GET, "/"), Access::Console);
    }

    #[test]
    fn keys_come_from_either_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), None);
        headers.insert("x-api-key", HeaderValue::from_static(" sk_x "));
        assert_eq!(presented_key(&headers), Some("sk_x"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer sk_y"),
        );
        assert_eq!(presented_key(&headers), Some("sk_y"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&headers), None);
    }
}
