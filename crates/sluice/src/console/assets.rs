//! The console's stylesheet, script and icon, compiled into the binary and served under
//! `/console/assets/`. Pages link them with `?v=<content hash>`, so a versioned URL can be
//! cached forever and a new binary's assets are fetched at once.

use axum::extract::{Path, Query};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const CSS: &str = include_str!("../../assets/console.css");
const JS: &str = include_str!("../../assets/console.js");
const ICON: &str = include_str!("../../assets/icon.svg");

/// Short hash of every asset: changes whenever any of them does.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    for asset in [CSS, JS, ICON] {
        hasher.update(asset.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
});

static URLS: LazyLock<[String; 3]> = LazyLock::new(|| {
    ["console.css", "console.js", "icon.svg"].map(|f| format!("/console/assets/{f}?v={}", *VERSION))
});

pub fn css_url() -> &'static str {
    &URLS[0]
}

pub fn js_url() -> &'static str {
    &URLS[1]
}

pub fn icon_url() -> &'static str {
    &URLS[2]
}

#[derive(Deserialize)]
pub struct AssetQuery {
    v: Option<String>,
}

/// `GET /console/assets/{file}`.
pub async fn serve(
    Path(file): Path<String>,
    Query(query): Query<AssetQuery>,
    headers: HeaderMap,
) -> Response {
    let (body, content_type) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let etag = format!("\"{}\"", *VERSION);
    // A URL naming this exact version never changes; anything else must revalidate.
    let versioned = query.v.as_deref() == Some(VERSION.as_str());
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response_headers.insert(header::ETAG, value);
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (response_headers, body).into_response()
}
