//! Console sessions: signing in with a key sets a cookie holding a random token; the database
//! keeps only the token's hash, which key it belongs to and when it expires, so every API
//! process honours it and signing out (or revoking the key) ends it everywhere.
//!
//! The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! sends it), `Secure` when the request came through HTTPS (`X-Forwarded-Proto: https` from
//! the proxy in front), and `Path=/` so the console's live `/ws` connection carries it too.

use super::keyring::KeyRing;
use super::keys;
use super::Principal;
use crate::error::ApiError;
use axum::http::header::{self, HeaderMap, HeaderValue};
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sluice_store::{Store, StoreError};
use std::sync::Arc;

pub const COOKIE: &str = "sluice_session";
/// How long a session lasts after signing in.
pub const TTL: chrono::Duration = chrono::Duration::hours(12);

/// The session token a request's cookies carry.
pub fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty() && value.len() <= 128)
}

/// The signed-in key of a request's session; `None` without a live session, or when its
/// key was revoked.
pub async fn principal(
    headers: &HeaderMap,
    store: &Arc<dyn Store>,
    keys: &KeyRing,
) -> Result<Option<Arc<Principal>>, ApiError> {
    let Some(token) = token(headers) else {
        return Ok(None);
    };
    let hash = keys::to_hex(&keys::digest(token));
    let Some(key_id) = store.console_session(&hash).await? else {
        return Ok(None);
    };
    keys.principal(key_id).await.map_err(|e| {
        tracing::warn!(error = %e, "cannot check an API key");
        ApiError::unavailable("cannot check API keys right now; try again")
    })
}

/// Opens a session for a key; returns the `Set-Cookie` value.
pub async fn open(
    store: &Arc<dyn Store>,
    key_id: i64,
    secure: bool,
) -> Result<HeaderValue, StoreError> {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = keys::to_hex(&keys::digest(&token));
    store
        .create_console_session(&hash, key_id, chrono::Utc::now() + TTL)
        .await?;
    Ok(cookie(&token, TTL.num_seconds(), secure))
}

/// Ends a request's session, if it has one; returns the `Set-Cookie` that clears it.
pub async fn close(
    headers: &HeaderMap,
    store: &Arc<dyn Store>,
    secure: bool,
) -> Result<HeaderValue, StoreError> {
    if let Some(token) = token(headers) {
        let hash = keys::to_hex(&keys::digest(token));
        store.end_console_session(&hash).await?;
    }
    Ok(cookie("", 0, secure))
}

fn cookie(token: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value =
        format!("{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    // Base64url and fixed text: always a valid header value.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether the browser reached us over HTTPS (through a proxy that says so).
pub fn is_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim() == "https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_token_is_found_among_cookies() {
        let mut headers = HeaderMap::new();
        assert_eq!(token(&headers), None);
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; sluice_session=abc123; other=1"),
        );
        assert_eq!(token(&headers), Some("abc123"));
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_https() {
        let plain = cookie("t", 60, false);
        let plain = plain.to_str().expect("ascii");
        assert!(plain.contains("HttpOnly"));
        assert!(plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(cookie("t", 60, true)
            .to_str()
            .expect("ascii")
            .ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        assert!(!is_https(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(is_https(&headers));
    }
}
