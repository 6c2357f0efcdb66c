//! The `call_webhook` executor: one HTTP request with an Idempotency-Key and Standard Webhooks
//! headers, classified into success, retryable and permanent failure.

use super::guard::{self, GuardedResolver, Refused};
use super::{ActionConfig, ActionContext, ActionError};
use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{redirect, Method, StatusCode, Url};
use serde_json::Value;
use sha2::Sha256;
use sluice_core::action::HttpMethod;
use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// How much of an error answer's body is read: enough for the message, and a misbehaving
/// receiver cannot make sluice download a large body.
const MAX_ERROR_BODY_BYTES: usize = 4096;
/// How much of that body ends up in the message.
const MAX_ERROR_BODY_CHARS: usize = 200;

const ALLOW_PRIVATE_HINT: &str = "set WEBHOOK_ALLOW_PRIVATE=true to allow";

/// A rendered webhook, borrowed from the `RenderedAction`.
pub(crate) struct Request<'a> {
    pub url: &'a str,
    pub method: HttpMethod,
    pub headers: &'a [(String, String)],
    pub body: &'a Value,
    pub timeout_ms: Option<u64>,
}

pub(crate) struct WebhookSender {
    client: reqwest::Client,
    /// The decoded Standard Webhooks secret.
    signing_key: Option<Vec<u8>>,
    default_timeout: Duration,
    allow_private: bool,
}

impl WebhookSender {
    pub(crate) fn new(config: &ActionConfig) -> anyhow::Result<Self> {
        let signing_key = config
            .webhook_secret
            .as_deref()
            .map(decode_secret)
            .transpose()?;
        let mut builder = reqwest::Client::builder()
            // A redirect could lead to a private address behind the guard's back, and a
            // receiver that moved should be fixed in the rule rather than followed forever.
            .redirect(redirect::Policy::none())
            // Through a proxy, the guard would check the proxy's address, not the target's.
            .no_proxy()
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let client = builder
            .build()
            .context("cannot build the webhook HTTP client")?;
        Ok(Self {
            client,
            signing_key,
            default_timeout: config.webhook_timeout,
            allow_private: config.allow_private,
        })
    }

    pub(crate) async fn send(
        &self,
        request: Request<'_>,
        ctx: &ActionContext<'_>,
    ) -> Result<(), ActionError> {
        let url = parse_url(request.url)?;
        let shown_url = shown(&url);
        if !self.allow_private {
            refuse_private_literal(&url)?;
        }
        let timeout = request
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.default_timeout);
        let body = serde_json::to_vec(request.body).map_err(|error| {
            ActionError::Permanent(format!("webhook body cannot be serialized: {error}"))
        })?;
        let mut headers = self.headers(request.headers, ctx.idempotency_key, &body)?;
        // The action's span, continued by the receiver. With traces on, it replaces a
        // `traceparent` the rule sets: that one could not name this delivery.
        if let Some(traceparent) = ctx.traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert("traceparent", traceparent);
        }
        let method = match request.method {
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
        };
        let described = format!("webhook {method} {shown_url}");
        let response = self
            .client
            .request(method, url)
            .headers(headers)
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|error| send_error(&error, timeout))?;
        classify(response, &described).await
    }

    fn headers(
        &self,
        rule_headers: &[(String, String)],
        idempotency_key: &str,
        body: &[u8],
    ) -> Result<HeaderMap, ActionError> {
        let mut headers = HeaderMap::with_capacity(rule_headers.len() + 5);
        // Rules cannot set the reserved names (checked when saved), so the headers set below
        // never overwrite a rule's.
        for (name, value) in rule_headers {
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ActionError::Permanent(format!("webhook header name '{name}' is invalid"))
            })?;
            let header_value = HeaderValue::from_str(value).map_err(|_| {
                ActionError::Permanent(format!(
                    "webhook header {name} has an invalid value after rendering"
                ))
            })?;
            headers.insert(header_name, header_value);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let key = HeaderValue::from_str(idempotency_key).map_err(|_| {
            ActionError::Permanent(format!("idempotency key '{idempotency_key}' is invalid"))
        })?;
        let timestamp = chrono::Utc::now().timestamp().to_string();
        if let Some(secret) = &self.signing_key {
            let signature = sign(secret, idempotency_key, &timestamp, body);
            headers.insert(
                "webhook-signature",
                HeaderValue::from_str(&format!("v1,{signature}"))
                    .expect("base64 is a valid header value"),
            );
        }
        headers.insert(
            "webhook-timestamp",
            HeaderValue::from_str(&timestamp).expect("digits are a valid header value"),
        );
        // The webhook-id is the idempotency key, so a re-send after a crash carries the same
        // id and receivers that dedupe on it (as the spec suggests) see one delivery.
        headers.insert("webhook-id", key.clone());
        headers.insert("idempotency-key", key);
        Ok(headers)
    }
}

/// The key of a `whsec_<base64>` secret.
fn decode_secret(secret: &str) -> anyhow::Result<Vec<u8>> {
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        bail!("WEBHOOK_SECRET must look like whsec_<base64>");
    };
    let key = BASE64.decode(encoded).context(
        "WEBHOOK_SECRET must look like whsec_<base64>: the part after whsec_ is not base64",
    )?;
    if key.is_empty() {
        bail!("WEBHOOK_SECRET must look like whsec_<base64>: the key is empty");
    }
    Ok(key)
}

/// Standard Webhooks `v1` signature: base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Templates can render anything, so the URL is checked again here; a bad one never gets better.
fn parse_url(text: &str) -> Result<Url, ActionError> {
    let url = Url::parse(text).map_err(|error| {
        ActionError::Permanent(format!("webhook URL '{text}' is invalid: {error}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ActionError::Permanent(format!(
            "webhook URL '{text}' is invalid: must be http:// or https://"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ActionError::Permanent(format!(
            "webhook URL '{text}' is invalid: it has no host"
        )));
    }
    Ok(url)
}

/// Hosts written as IP addresses are connected to without resolving, so the resolver's check
/// does not see them.
fn refuse_private_literal(url: &Url) -> Result<(), ActionError> {
    let host = url.host_str().unwrap_or_default();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    match literal.parse::<IpAddr>() {
        Ok(ip) if guard::is_private(ip) => Err(ActionError::Permanent(format!(
            "webhook refused: {host} is a private address ({ALLOW_PRIVATE_HINT})"
        ))),
        _ => Ok(()),
    }
}

/// The URL as it may appear in messages: without a password.
fn shown(url: &Url) -> Url {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Only fails for URLs that cannot have credentials, which then have none to hide.
        let _ = shown.set_password(Some("***"));
    }
    shown
}

fn send_error(error: &reqwest::Error, timeout: Duration) -> ActionError {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return ActionError::Permanent(format!(
                "webhook refused: {refused} ({ALLOW_PRIVATE_HINT})"
            ));
        }
        source = cause.source();
    }
    if error.is_timeout() {
        ActionError::Retryable(format!(
            "webhook timed out after {} ms",
            timeout.as_millis()
        ))
    } else if error.is_builder() {
        ActionError::Permanent(format!("webhook request is invalid: {}", causes(error)))
    } else if error.is_connect() {
        ActionError::Retryable(format!("webhook connection failed: {}", causes(error)))
    } else {
        // Reset connections, broken answers: the receiver may have got the request, but it
        // dedupes on the idempotency key, so sending again is safe.
        ActionError::Retryable(format!("webhook request failed: {}", causes(error)))
    }
}

/// The causes of a client error, most general first, without the top line (which repeats the
/// URL) and without hyper's "client error (Connect)" wrapper (which repeats the kind).
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.starts_with("client error (") && parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        // Only the top line is left; cut its " for url (…)", which may carry credentials.
        let text = error.to_string();
        return match text.find(" for url (") {
            Some(at) => text[..at].to_owned(),
            None => text,
        };
    }
    parts.join(": ")
}

async fn classify(mut response: reqwest::Response, described: &str) -> Result<(), ActionError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status.is_redirection() {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(|location| format!(" to {location}"))
            .unwrap_or_default();
        return Err(ActionError::Permanent(format!(
            "{described} answered {status}{location}; redirects are not followed"
        )));
    }
    let retry_after = (status == StatusCode::TOO_MANY_REQUESTS).then(|| {
        response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, chrono::Utc::now()))
    });
    let excerpt = body_excerpt(&mut response).await;
    let message = if excerpt.is_empty() {
        format!("{described} answered {status}")
    } else {
        format!("{described} answered {status}: {excerpt}")
    };
    if let Some(retry_after) = retry_after {
        Err(ActionError::Throttled {
            message,
            retry_after,
        })
    } else if is_retryable_status(status) {
        Err(ActionError::Retryable(message))
    } else {
        Err(ActionError::Permanent(message))
    }
}

/// The longest hold-off a `Retry-After` is taken at: a receiver cannot stop a target for
/// longer than this with one answer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A `Retry-After` value: seconds, or an HTTP date (RFC 9110 §10.2.3); at most
/// [`MAX_RETRY_AFTER`]. `None` when it is neither.
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// 408 and 429 say "later", 5xx says "not now"; every other answer will be the same next time.
fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// The start of an answer's body on one line. Reading stops at a small limit; a body that fails
/// or times out midway gives what arrived.
async fn body_excerpt(response: &mut reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(MAX_ERROR_BODY_BYTES);
    let text = String::from_utf8_lossy(&bytes);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_ERROR_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::{config, ctx, KEY};
    use crate::actions::Actions;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxumHeaders, Method as AxumMethod, Uri};
    use axum::response::{IntoResponse, Response};
    use serde_json::json;
    use sluice_core::action::RenderedAction;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: AxumHeaders,
        body: Bytes,
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// Answers by path: `/status/<code>` with that status (and a body), `/slow` after 3 s,
    /// `/redirect` with a 302 to `/ok`, anything else 200.
    async fn receive(
        State(log): State<Log>,
        method: AxumMethod,
        uri: Uri,
        headers: AxumHeaders,
        body: Bytes,
    ) -> Response {
        log.lock().expect("receiver log").push(Seen {
            method: method.to_string(),
            path: uri.path().to_owned(),
            headers,
            body,
        });
        let path = uri.path();
        if let Some(rest) = path.strip_prefix("/status/") {
            let code = rest.split('/').next().unwrap_or_default();
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                .expect("tests ask for valid statuses");
            let body = if path.ends_with("/long") {
                "x".repeat(10_000)
            } else {
                format!("boom\n  from {code}")
            };
            return (status, body).into_response();
        }
        if path.starts_with("/status-long/") {
            return (axum::http::StatusCode::BAD_GATEWAY, "y".repeat(50_000)).into_response();
        }
        match path {
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late".into_response()
            }
            "/redirect" => (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, "/ok")],
            )
                .into_response(),
            _ => "ok".into_response(),
        }
    }

    async fn receiver() -> (SocketAddr, Log) {
        let log: Log = Arc::default();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, log)
    }

    fn webhook(url: String) -> RenderedAction {
        RenderedAction::CallWebhook {
            url,
            method: HttpMethod::Post,
            headers: Vec::new(),
            body: json!({"event_id": 42}),
            timeout_ms: None,
        }
    }

    async fn run(config: ActionConfig, action: RenderedAction) -> Result<(), ActionError> {
        Actions::new(config)
            .expect("the test config is valid")
            .run(&action, &ctx())
            .await
    }

    fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
        seen.headers
            .get(name)
            .map(|value| value.to_str().expect("test headers are ASCII"))
    }

    const SECRET_KEY: &[u8] = b"a test signing key of some length";

    #[tokio::test]
    async fn delivers_a_signed_request() {
        let (addr, log) = receiver().await;
        let mut config = config();
        config.webhook_secret = Some(format!("whsec_{}", BASE64.encode(SECRET_KEY)));
        let body = json!({"event_id": 42, "user": {"name": "Ana"}, "amount": 250, "note": "é"});
        let action = RenderedAction::CallWebhook {
            url: format!("http://{addr}/hooks/Ana?e=42"),
            method: HttpMethod::Post,
            headers: vec![("x-order".into(), "order-123".into())],
            body: body.clone(),
            timeout_ms: Some(2000),
        };
        run(config, action).await.expect("the receiver answers 200");

        let seen = log.lock().expect("receiver log").clone();
        assert_eq!(seen.len(), 1);
        let seen = &seen[0];
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/hooks/Ana");
        assert_eq!(header(seen, "x-order"), Some("order-123"));
        assert_eq!(header(seen, "content-type"), Some("application/json"));
        assert_eq!(header(seen, "idempotency-key"), Some(KEY));
        assert_eq!(header(seen, "webhook-id"), Some(KEY));
        let body_sent: Value = serde_json::from_slice(&seen.body).expect("the body is JSON");
        assert_eq!(body_sent, body);

        let timestamp = header(seen, "webhook-timestamp").expect("a timestamp is sent");
        let sent_at: i64 = timestamp.parse().expect("the timestamp is unix seconds");
        assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);

        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_KEY).expect("any key length");
        mac.update(format!("{KEY}.{timestamp}.").as_bytes());
        mac.update(&seen.body);
        let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        assert_eq!(header(seen, "webhook-signature"), Some(expected.as_str()));
    }

    #[tokio::test]
    async fn unsigned_without_a_secret_and_keeps_a_rule_content_type() {
        let (addr, log) = receiver().await;
        let action = RenderedAction::CallWebhook {
            url: format!("http://{addr}/ok"),
            method: HttpMethod::Put,
            headers: vec![("content-type".into(), "application/vnd.x+json".into())],
            body: Value::Null,
            timeout_ms: None,
        };
        run(config(), action)
            .await
            .expect("the receiver answers 200");
        let seen = log.lock().expect("receiver log").clone();
        let seen = &seen[0];
        assert_eq!(seen.method, "PUT");
        assert_eq!(header(seen, "content-type"), Some("application/vnd.x+json"));
        assert_eq!(header(seen, "webhook-id"), Some(KEY));
        assert!(header(seen, "webhook-timestamp").is_some());
        assert_eq!(header(seen, "webhook-signature"), None);
        assert_eq!(&seen.body[..], b"null");
    }

    #[test]
    fn retry_after_is_seconds_or_a_date_and_bounded() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .expect("a date")
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after("Mon, 07 Dec 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Mon, 07 Dec 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn classifies_answers() {
        let (addr, log) = receiver().await;
        for (code, retryable) in [
            (500, true),
            (502, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (401, false),
            (404, false),
            (422, false),
        ] {
            let url = format!("http://{addr}/status/{code}");
            let error = run(config(), webhook(url.clone()))
                .await
                .expect_err("a non-2xx answer is an error");
            assert_eq!(error.is_retryable(), retryable, "{code}: {error}");
            let reason = axum::http::StatusCode::from_u16(code)
                .expect("valid")
                .to_string();
            assert_eq!(
                error.to_string(),
                format!("webhook POST {url} answered {reason}: boom from {code}")
            );
        }
        for code in [200, 201, 202, 204] {
            run(config(), webhook(format!("http://{addr}/status/{code}")))
                .await
                .expect("2xx is success");
        }
        assert_eq!(log.lock().expect("receiver log").len(), 13);
    }

    #[tokio::test]
    async fn error_messages_quote_only_the_start_of_the_body() {
        let (addr, _log) = receiver().await;
        let error = run(config(), webhook(format!("http://{addr}/status/500/long")))
            .await
            .expect_err("500");
        let text = error.to_string();
        let excerpt = text.split(": ").nth(1).expect("the body is quoted");
        assert_eq!(excerpt, format!("{}…", "x".repeat(200)));

        let error = run(config(), webhook(format!("http://{addr}/status-long/")))
            .await
            .expect_err("502");
        assert!(error.is_retryable());
        assert!(error.to_string().len() < 400, "{error}");
    }

    #[tokio::test]
    async fn redirects_are_permanent_and_not_followed() {
        let (addr, log) = receiver().await;
        let url = format!("http://{addr}/redirect");
        let error = run(config(), webhook(url.clone()))
            .await
            .expect_err("a redirect is an error");
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            format!("webhook POST {url} answered 302 Found to /ok; redirects are not followed")
        );
        let paths: Vec<String> = log
            .lock()
            .expect("receiver log")
            .iter()
            .map(|seen| seen.path.clone())
            .collect();
        assert_eq!(paths, ["/redirect"]);
    }

    #[tokio::test]
    async fn a_slow_receiver_times_out() {
        let (addr, _log) = receiver().await;
        let action = RenderedAction::CallWebhook {
            url: format!("http://{addr}/slow"),
            method: HttpMethod::Post,
            headers: Vec::new(),
            body: json!({}),
            timeout_ms: Some(200),
        };
        let started = std::time::Instant::now();
        let error = run(config(), action)
            .await
            .expect_err("the receiver is slow");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(error.is_retryable());
        assert_eq!(error.to_string(), "webhook timed out after 200 ms");

        let mut short_default = config();
        short_default.webhook_timeout = Duration::from_millis(150);
        let error = run(short_default, webhook(format!("http://{addr}/slow")))
            .await
            .expect_err("the receiver is slow");
        assert_eq!(error.to_string(), "webhook timed out after 150 ms");
    }

    #[tokio::test]
    async fn a_dead_port_is_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        drop(listener);
        let error = run(config(), webhook(format!("http://{addr}/")))
            .await
            .expect_err("nothing listens");
        assert!(error.is_retryable(), "{error}");
        let text = error.to_string();
        assert!(text.starts_with("webhook connection failed: "), "{text}");
        assert!(!text.contains("client error"), "{text}");
    }

    #[tokio::test]
    async fn private_targets_are_refused() {
        let (addr, log) = receiver().await;
        let port = addr.port();
        let mut guarded = config();
        guarded.allow_private = false;
        let actions = Actions::new(guarded).expect("the test config is valid");
        for (url, expected) in [
            (
                format!("http://127.0.0.1:{port}/"),
                "webhook refused: 127.0.0.1 is a private address \
                 (set WEBHOOK_ALLOW_PRIVATE=true to allow)"
                    .to_owned(),
            ),
            (
                format!("http://[::ffff:127.0.0.1]:{port}/"),
                "webhook refused: [::ffff:7f00:1] is a private address \
                 (set WEBHOOK_ALLOW_PRIVATE=true to allow)"
                    .to_owned(),
            ),
            (
                format!("http://2130706433:{port}/"),
                "webhook refused: 127.0.0.1 is a private address \
                 (set WEBHOOK_ALLOW_PRIVATE=true to allow)"
                    .to_owned(),
            ),
        ] {
            let error = actions
                .run(&webhook(url.clone()), &ctx())
                .await
                .expect_err("loopback is refused");
            assert!(!error.is_retryable(), "{url}");
            assert_eq!(error.to_string(), expected, "{url}");
        }
        let error = actions
            .run(&webhook(format!("http://localhost:{port}/")), &ctx())
            .await
            .expect_err("localhost is refused");
        assert!(!error.is_retryable());
        let text = error.to_string();
        assert!(
            text.starts_with("webhook refused: localhost resolves to private address ")
                && text.ends_with(" (set WEBHOOK_ALLOW_PRIVATE=true to allow)"),
            "{text}"
        );
        assert!(log.lock().expect("receiver log").is_empty());
    }

    #[tokio::test]
    async fn invalid_urls_are_permanent() {
        for (url, expected) in [
            (
                "not a url",
                "webhook URL 'not a url' is invalid: relative URL without a base",
            ),
            (
                "ftp://example.com/x",
                "webhook URL 'ftp://example.com/x' is invalid: must be http:// or https://",
            ),
            (
                "http://exa mple.com/",
                "webhook URL 'http://exa mple.com/' is invalid: invalid international domain name",
            ),
        ] {
            let error = run(config(), webhook(url.into()))
                .await
                .expect_err("the URL is invalid");
            assert!(!error.is_retryable(), "{url}");
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        let url = Url::parse("https://user:hunter2@x.example/hook?a=1").expect("valid");
        assert_eq!(shown(&url).as_str(), "https://user:***@x.example/hook?a=1");
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert_eq!(
            decode_secret(&format!("whsec_{}", BASE64.encode(b"key"))).expect("valid"),
            b"key"
        );
        assert!(decode_secret("whsec_").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
        assert!(decode_secret(&BASE64.encode(b"key")).is_err());
    }

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example from the Standard Webhooks reference libraries' tests.
        let key = BASE64
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("valid base64");
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
