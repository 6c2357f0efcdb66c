//! Where events come from besides `POST /events`: a *source* — an inbound webhook endpoint
//! or a broker queue — validated when it is saved; how an inbound request is verified; how a
//! request or a message becomes an event.
//!
//! No I/O: callers pass the headers, the body and the current time.

use crate::error::FieldError;
use crate::event::NewEvent;
use crate::json_text::JsonNode;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;
use std::borrow::Cow;
use subtle::ConstantTimeEq;

/// Longest source name.
pub const MAX_NAME_LEN: usize = 64;
/// How far a signed timestamp may be from now, by default: the window in which a captured
/// request could be sent again (its id then dedupes it).
pub const DEFAULT_TOLERANCE_S: i64 = 300;
/// How long JetStream waits for an acknowledgement before delivering a message again.
pub const DEFAULT_ACK_WAIT_S: u32 = 30;
/// Most broker messages a consumer holds unacknowledged, by default.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
/// What a secret looks like when it is shown again.
const MASK: &str = "********";

/// A source's name: `[a-z0-9][a-z0-9_.-]*`, at most 64 characters (it is a path segment).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceName(String);

impl SourceName {
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
            });
        if valid {
            Ok(SourceName(name.to_owned()))
        } else {
            Err(FieldError::new(
                "name",
                format!(
                    "must be 1..{MAX_NAME_LEN} of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a source's events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Requests to `POST /sources/{name}/events`.
    Webhook,
    /// A NATS JetStream durable consumer.
    Nats,
    /// A RabbitMQ queue.
    Rabbitmq,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [SourceKind::Webhook, SourceKind::Nats, SourceKind::Rabbitmq];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Webhook => "webhook",
            SourceKind::Nats => "nats",
            SourceKind::Rabbitmq => "rabbitmq",
        }
    }

    fn from_text(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// Where one of an event's `id`, `type` or `data` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A request header, or a message header (case-insensitive for HTTP).
    Header(String),
    /// A JSON pointer into the body (RFC 6901).
    Pointer(String),
    /// A constant.
    Value(String),
}

impl Field {
    fn parse(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Option<Field> {
        let Some(object) = value.as_object().filter(|o| o.len() == 1) else {
            errors.push(FieldError::new(
                path,
                r#"must be one of {"header": "…"}, {"pointer": "/…"}, {"value": "…"}"#,
            ));
            return None;
        };
        let (kind, text) = object.iter().next().expect("one entry");
        let Some(text) = text.as_str().filter(|t| !t.is_empty() && t.len() <= 255) else {
            errors.push(FieldError::new(
                format!("{path}.{kind}"),
                "must be a string of 1..255 characters",
            ));
            return None;
        };
        match kind.as_str() {
            "header" if is_header_name(text) => Some(Field::Header(text.to_owned())),
            "header" => {
                errors.push(FieldError::new(
                    format!("{path}.header"),
                    "is not a valid header name",
                ));
                None
            }
            "pointer" if text.starts_with('/') => Some(Field::Pointer(text.to_owned())),
            "pointer" => {
                errors.push(FieldError::new(
                    format!("{path}.pointer"),
                    "must be a JSON pointer starting with '/' (e.g. /data/id)",
                ));
                None
            }
            "value" => Some(Field::Value(text.to_owned())),
            other => {
                errors.push(FieldError::new(
                    format!("{path}.{other}"),
                    "is not a way to find a value (expected header, pointer or value)",
                ));
                None
            }
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Field::Header(name) => json!({ "header": name }),
            Field::Pointer(pointer) => json!({ "pointer": pointer }),
            Field::Value(value) => json!({ "value": value }),
        }
    }
}

fn is_header_name(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// How an inbound webhook proves where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// No check: the route then needs an `ingest` key like `POST /events` (a trusted network).
    None,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,<base64>`
    /// HMAC-SHA256 of `{id}.{timestamp}.{body}`) with a `whsec_<base64>` secret.
    StandardWebhooks { secret: String, tolerance_s: i64 },
    /// HMAC-SHA256 of the body, hex, in a header after a prefix (`X-Hub-Signature-256:
    /// sha256=…`, the common code-host form).
    HmacSha256 {
        secret: String,
        header: String,
        prefix: String,
    },
    /// `t=<unix seconds>,v1=<hex>` in a header: HMAC-SHA256 of `{t}.{body}` (the common
    /// payment-provider form).
    TimestampedHmac {
        secret: String,
        header: String,
        tolerance_s: i64,
    },
}

impl Verify {
    pub fn scheme(&self) -> &'static str {
        match self {
            Verify::None => "none",
            Verify::StandardWebhooks { .. } => "standard_webhooks",
            Verify::HmacSha256 { .. } => "hmac_sha256",
            Verify::TimestampedHmac { .. } => "timestamped_hmac",
        }
    }

    fn secret(&self) -> Option<&str> {
        match self {
            Verify::None => None,
            Verify::StandardWebhooks { secret, .. }
            | Verify::HmacSha256 { secret, .. }
            | Verify::TimestampedHmac { secret, .. } => Some(secret),
        }
    }

    /// `previous` is the stored source's check: a `secret` left out keeps its secret when the
    /// scheme is the same, so a secret need not be sent again to change something else.
    fn parse(value: &Value, previous: Option<&Verify>, errors: &mut Vec<FieldError>) -> Verify {
        let Some(object) = value.as_object() else {
            errors.push(FieldError::new("verify", "must be a JSON object"));
            return Verify::None;
        };
        let scheme = object.get("scheme").and_then(Value::as_str).unwrap_or("");
        let allowed: &[&str] = match scheme {
            "none" => &["scheme"],
            "standard_webhooks" => &["scheme", "secret", "tolerance_s"],
            "hmac_sha256" => &["scheme", "secret", "header", "prefix"],
            "timestamped_hmac" => &["scheme", "secret", "header", "tolerance_s"],
            _ => {
                errors.push(FieldError::new(
                    "verify.scheme",
                    "must be one of none, standard_webhooks, hmac_sha256, timestamped_hmac",
                ));
                return Verify::None;
            }
        };
        for key in object.keys() {
            if !allowed.contains(&key.as_str()) {
                errors.push(FieldError::new(
                    format!("verify.{key}"),
                    format!("is not a setting of {scheme}"),
                ));
            }
        }
        let kept = previous
            .filter(|p| p.scheme() == scheme)
            .and_then(Verify::secret);
        let secret = match object.get("secret") {
            None => kept.map(str::to_owned),
            // What a read showed, sent back unchanged.
            Some(Value::String(s)) if kept.is_some_and(|k| mask(k) == *s) => {
                kept.map(str::to_owned)
            }
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 512 && !s.ends_with(MASK) => {
                Some(s.clone())
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "verify.secret",
                    "must be a string of 1..512 characters",
                ));
                return Verify::None;
            }
        };
        let tolerance_s = match object.get("tolerance_s") {
            None => DEFAULT_TOLERANCE_S,
            Some(v) => match v.as_i64().filter(|n| (1..=86_400).contains(n)) {
                Some(n) => n,
                None => {
                    errors.push(FieldError::new(
                        "verify.tolerance_s",
                        "must be an integer of 1..86400 seconds",
                    ));
                    DEFAULT_TOLERANCE_S
                }
            },
        };
        let header = |errors: &mut Vec<FieldError>| match object.get("header") {
            Some(Value::String(h)) if is_header_name(h) && !h.is_empty() => Some(h.clone()),
            None => {
                errors.push(FieldError::new("verify.header", "is required"));
                None
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "verify.header",
                    "must be a header name such as X-Hub-Signature-256",
                ));
                None
            }
        };
        if scheme == "none" {
            return Verify::None;
        }
        let header = match scheme {
            "hmac_sha256" | "timestamped_hmac" => header(errors).unwrap_or_default(),
            _ => String::new(),
        };
        let Some(secret) = secret else {
            errors.push(FieldError::new("verify.secret", "is required"));
            return Verify::None;
        };
        match scheme {
            "standard_webhooks" => {
                if standard_key(&secret).is_none() {
                    errors.push(FieldError::new(
                        "verify.secret",
                        "must look like whsec_<base64> (a Standard Webhooks secret)",
                    ));
                }
                Verify::StandardWebhooks {
                    secret,
                    tolerance_s,
                }
            }
            "hmac_sha256" => {
                let prefix = match object.get("prefix") {
                    None => String::new(),
                    Some(Value::String(p)) if p.len() <= 64 => p.clone(),
                    Some(_) => {
                        errors.push(FieldError::new(
                            "verify.prefix",
                            "must be a string of at most 64 characters",
                        ));
                        String::new()
                    }
                };
                Verify::HmacSha256 {
                    secret,
                    header,
                    prefix,
                }
            }
            _ => Verify::TimestampedHmac {
                secret,
                header,
                tolerance_s,
            },
        }
    }

    fn to_json(&self, reveal: bool) -> Value {
        let secret = |s: &str| {
            if reveal {
                s.to_owned()
            } else {
                mask(s)
            }
        };
        match self {
            Verify::None => json!({"scheme": "none"}),
            Verify::StandardWebhooks {
                secret: s,
                tolerance_s,
            } => {
                json!({"scheme": "standard_webhooks", "secret": secret(s), "tolerance_s": tolerance_s})
            }
            Verify::HmacSha256 {
                secret: s,
                header,
                prefix,
            } => {
                json!({"scheme": "hmac_sha256", "secret": secret(s), "header": header, "prefix": prefix})
            }
            Verify::TimestampedHmac {
                secret: s,
                header,
                tolerance_s,
            } => {
                json!({"scheme": "timestamped_hmac", "secret": secret(s), "header": header, "tolerance_s": tolerance_s})
            }
        }
    }

    /// Checks a request: `header` looks a header up (case-insensitively), `now_s` is the
    /// current Unix time. Constant-time comparisons throughout.
    pub fn check<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), Rejection> {
        match self {
            Verify::None => Ok(()),
            Verify::StandardWebhooks {
                secret,
                tolerance_s,
            } => {
                let id = header("webhook-id").ok_or(Rejection::Missing("webhook-id"))?;
                let timestamp =
                    header("webhook-timestamp").ok_or(Rejection::Missing("webhook-timestamp"))?;
                let signatures =
                    header("webhook-signature").ok_or(Rejection::Missing("webhook-signature"))?;
                check_time(timestamp, now_s, *tolerance_s)?;
                let key = standard_key(secret).ok_or(Rejection::BadSignature)?;
                let mut mac = hmac(&key);
                mac.update(id.as_bytes());
                mac.update(b".");
                mac.update(timestamp.as_bytes());
                mac.update(b".");
                mac.update(body);
                let expected = BASE64.encode(mac.finalize().into_bytes());
                let matches = signatures
                    .split(' ')
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())));
                matches.then_some(()).ok_or(Rejection::BadSignature)
            }
            Verify::HmacSha256 {
                secret,
                header: name,
                prefix,
            } => {
                let value = header(name).ok_or(Rejection::MissingNamed(name.clone()))?;
                let given = value
                    .trim()
                    .strip_prefix(prefix.as_str())
                    .ok_or(Rejection::BadSignature)?;
                let mut mac = hmac(secret.as_bytes());
                mac.update(body);
                hex_matches(given, &mac.finalize().into_bytes())
                    .then_some(())
                    .ok_or(Rejection::BadSignature)
            }
            Verify::TimestampedHmac {
                secret,
                header: name,
                tolerance_s,
            } => {
                let value = header(name).ok_or(Rejection::MissingNamed(name.clone()))?;
                let mut timestamp = None;
                let mut signatures = Vec::new();
                for part in value.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", t)) => timestamp = Some(t),
                        Some(("v1", s)) => signatures.push(s),
                        _ => {}
                    }
                }
                let timestamp = timestamp.ok_or(Rejection::BadSignature)?;
                check_time(timestamp, now_s, *tolerance_s)?;
                let mut mac = hmac(secret.as_bytes());
                mac.update(timestamp.as_bytes());
                mac.update(b".");
                mac.update(body);
                let expected = mac.finalize().into_bytes();
                signatures
                    .iter()
                    .any(|s| hex_matches(s, &expected))
                    .then_some(())
                    .ok_or(Rejection::BadSignature)
            }
        }
    }
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let key = BASE64.decode(secret.strip_prefix("whsec_")?).ok()?;
    (!key.is_empty()).then_some(key)
}

fn hex_matches(given: &str, expected: &[u8]) -> bool {
    match hex::decode(given.trim().to_ascii_lowercase()) {
        Ok(bytes) => bool::from(bytes.as_slice().ct_eq(expected)),
        Err(_) => false,
    }
}

fn check_time(timestamp: &str, now_s: i64, tolerance_s: i64) -> Result<(), Rejection> {
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::BadTimestamp)?;
    if now_s.abs_diff(at) > tolerance_s.unsigned_abs() {
        return Err(Rejection::Stale { tolerance_s });
    }
    Ok(())
}

/// A secret as shown: nothing of it. (Even a few characters are a good part of a short
/// HMAC secret.)
fn mask(_secret: &str) -> String {
    MASK.to_owned()
}

/// Why an inbound request was refused (a 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Missing(&'static str),
    MissingNamed(String),
    BadTimestamp,
    Stale { tolerance_s: i64 },
    BadSignature,
}

impl Rejection {
    /// A short label for counting (`missing_header`, `stale`, `bad_signature`, …).
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Missing(_) | Rejection::MissingNamed(_) => "missing_header",
            Rejection::BadTimestamp => "bad_timestamp",
            Rejection::Stale { .. } => "stale",
            Rejection::BadSignature => "bad_signature",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::Missing(name) => write!(f, "the {name} header is missing"),
            Rejection::MissingNamed(name) => write!(f, "the {name} header is missing"),
            Rejection::BadTimestamp => f.write_str("the signed timestamp is not a number"),
            Rejection::Stale { tolerance_s } => write!(
                f,
                "the signed timestamp is more than {tolerance_s} s away from now"
            ),
            Rejection::BadSignature => f.write_str("the signature does not match"),
        }
    }
}

/// A broker to consume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    Nats {
        url: String,
        stream: String,
        /// Only this subject of the stream (a filter), or all of it.
        subject: Option<String>,
        durable: String,
        /// How long a message may stay unacknowledged (its consumer died) before JetStream
        /// delivers it again.
        ack_wait_s: u32,
    },
    Rabbitmq {
        url: String,
        queue: String,
    },
}

impl Broker {
    pub fn url(&self) -> &str {
        match self {
            Broker::Nats { url, .. } | Broker::Rabbitmq { url, .. } => url,
        }
    }
}

/// A source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: SourceName,
    pub kind: SourceKind,
    pub verify: Verify,
    /// `None`: the caller's default (a Standard Webhooks `webhook-id`, a broker's message id).
    pub id: Option<Field>,
    /// `None`: the caller's default (a NATS subject, an AMQP `type`), else required.
    pub event_type: Option<Field>,
    /// `None`: the whole body.
    pub data: Option<Field>,
    pub broker: Option<Broker>,
    pub max_in_flight: u32,
}

/// What a request or a message offers where the source names no field.
#[derive(Debug, Default, Clone)]
pub struct Defaults<'a> {
    pub id: Option<Cow<'a, str>>,
    pub event_type: Option<Cow<'a, str>>,
}

impl Source {
    /// Validates `PUT /sources/{name}`'s body, reporting every problem at once. `previous`
    /// is the stored source of that name, whose secret a body without one keeps.
    pub fn parse(
        name: &str,
        body: &Value,
        previous: Option<&Source>,
    ) -> Result<Source, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = SourceName::parse(name).map_err(|e| errors.push(e)).ok();
        let Some(object) = body.as_object() else {
            errors.push(FieldError::new("", "body must be a JSON object"));
            return Err(errors);
        };
        let kind = match object.get("kind") {
            None => SourceKind::Webhook,
            Some(v) => match v.as_str().and_then(SourceKind::from_text) {
                Some(kind) => kind,
                None => {
                    errors.push(FieldError::new(
                        "kind",
                        "must be one of webhook, nats, rabbitmq",
                    ));
                    SourceKind::Webhook
                }
            },
        };
        let allowed: &[&str] = match kind {
            SourceKind::Webhook => &["kind", "verify", "id", "type", "data"],
            SourceKind::Nats => &[
                "kind",
                "id",
                "type",
                "data",
                "url",
                "stream",
                "subject",
                "durable",
                "ack_wait_s",
                "max_in_flight",
            ],
            SourceKind::Rabbitmq => &[
                "kind",
                "id",
                "type",
                "data",
                "url",
                "queue",
                "max_in_flight",
            ],
        };
        for key in object.keys() {
            if !allowed.contains(&key.as_str()) {
                errors.push(FieldError::new(
                    key.clone(),
                    format!("is not a setting of a {} source", kind.as_str()),
                ));
            }
        }
        let verify = match (kind, object.get("verify")) {
            (SourceKind::Webhook, Some(v)) => {
                Verify::parse(v, previous.map(|p| &p.verify), &mut errors)
            }
            (SourceKind::Webhook, None) => {
                errors.push(FieldError::new(
                    "verify",
                    r#"is required: {"scheme": "standard_webhooks" | "hmac_sha256" | "timestamped_hmac" | "none", …}"#,
                ));
                Verify::None
            }
            _ => Verify::None,
        };
        let field = |key: &str, errors: &mut Vec<FieldError>| {
            object.get(key).and_then(|v| Field::parse(v, key, errors))
        };
        let mut id = field("id", &mut errors);
        let event_type = field("type", &mut errors);
        let data = field("data", &mut errors);
        if matches!(data, Some(Field::Value(_))) {
            errors.push(FieldError::new(
                "data.value",
                "data must come from the body (a pointer), or be the whole body",
            ));
        }
        if kind == SourceKind::Webhook {
            if id.is_none() {
                if matches!(verify, Verify::StandardWebhooks { .. }) {
                    id = Some(Field::Header("webhook-id".to_owned()));
                } else if object.contains_key("verify") && !object.contains_key("id") {
                    errors.push(FieldError::new(
                        "id",
                        r#"is required: where each request's id is, e.g. {"header": "X-GitHub-Delivery"} or {"pointer": "/id"}"#,
                    ));
                }
            }
            if event_type.is_none() && !object.contains_key("type") {
                errors.push(FieldError::new(
                    "type",
                    r#"is required: e.g. {"header": "X-GitHub-Event"}, {"pointer": "/type"} or {"value": "order.paid"}"#,
                ));
            }
        }
        let text = |key: &str, required: bool, errors: &mut Vec<FieldError>| -> Option<String> {
            match object.get(key) {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Some(s.clone()),
                None if !required => None,
                None => {
                    errors.push(FieldError::new(key, "is required"));
                    None
                }
                Some(_) => {
                    errors.push(FieldError::new(
                        key,
                        "must be a string of 1..1024 characters",
                    ));
                    None
                }
            }
        };
        let broker_url = |scheme: &[&str], errors: &mut Vec<FieldError>| {
            let url = text("url", true, errors)?;
            if !scheme.iter().any(|s| url.starts_with(s)) {
                errors.push(FieldError::new(
                    "url",
                    format!("must start with {}", scheme.join(" or ")),
                ));
                return None;
            }
            Some(url)
        };
        let name_like = |key: &str, value: Option<String>, errors: &mut Vec<FieldError>| {
            value.filter(|v| {
                // JetStream's stream and consumer names: no '.', no wildcards, no spaces.
                let ok = v.len() <= 255
                    && v.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"*>./\\".contains(&b));
                if !ok {
                    errors.push(FieldError::new(
                        key,
                        "must be printable ASCII without spaces, '.', '/', '\\' or wildcards",
                    ));
                }
                ok
            })
        };
        let broker = match kind {
            SourceKind::Webhook => None,
            SourceKind::Nats => {
                let url = broker_url(&["nats://", "tls://"], &mut errors);
                let stream = name_like("stream", text("stream", true, &mut errors), &mut errors);
                let durable = name_like("durable", text("durable", true, &mut errors), &mut errors);
                let subject = text("subject", false, &mut errors);
                let ack_wait_s = match object.get("ack_wait_s") {
                    None => DEFAULT_ACK_WAIT_S,
                    Some(v) => match v.as_u64().filter(|n| (1..=3_600).contains(n)) {
                        Some(n) => n as u32,
                        None => {
                            errors.push(FieldError::new(
                                "ack_wait_s",
                                "must be an integer of 1..3600 seconds",
                            ));
                            DEFAULT_ACK_WAIT_S
                        }
                    },
                };
                match (url, stream, durable) {
                    (Some(url), Some(stream), Some(durable)) => Some(Broker::Nats {
                        url,
                        stream,
                        subject,
                        durable,
                        ack_wait_s,
                    }),
                    _ => None,
                }
            }
            SourceKind::Rabbitmq => {
                let url = broker_url(&["amqp://", "amqps://"], &mut errors);
                let queue = text("queue", true, &mut errors);
                match (url, queue) {
                    (Some(url), Some(queue)) => Some(Broker::Rabbitmq { url, queue }),
                    _ => None,
                }
            }
        };
        let max_in_flight = match object.get("max_in_flight") {
            None => DEFAULT_MAX_IN_FLIGHT,
            Some(v) => match v.as_u64().filter(|n| (1..=10_000).contains(n)) {
                Some(n) => n as u32,
                None => {
                    errors.push(FieldError::new(
                        "max_in_flight",
                        "must be an integer of 1..10000",
                    ));
                    DEFAULT_MAX_IN_FLIGHT
                }
            },
        };
        match name {
            Some(name) if errors.is_empty() => Ok(Source {
                name,
                kind,
                verify,
                id,
                event_type,
                data,
                broker,
                max_in_flight,
            }),
            _ => Err(errors),
        }
    }

    /// The source as stored (`reveal`: secrets in full) or shown (secrets and URL passwords
    /// masked). `Source::parse` reads back what this writes.
    pub fn to_json(&self, reveal: bool) -> Value {
        let mut out = Map::new();
        out.insert("kind".into(), json!(self.kind.as_str()));
        if self.kind == SourceKind::Webhook {
            out.insert("verify".into(), self.verify.to_json(reveal));
        }
        for (key, field) in [
            ("id", &self.id),
            ("type", &self.event_type),
            ("data", &self.data),
        ] {
            if let Some(field) = field {
                out.insert(key.into(), field.to_json());
            }
        }
        let url = |url: &str| {
            if reveal {
                url.to_owned()
            } else {
                mask_url_password(url)
            }
        };
        match &self.broker {
            None => {}
            Some(Broker::Nats {
                url: u,
                stream,
                subject,
                durable,
                ack_wait_s,
            }) => {
                out.insert("url".into(), json!(url(u)));
                out.insert("stream".into(), json!(stream));
                if let Some(subject) = subject {
                    out.insert("subject".into(), json!(subject));
                }
                out.insert("durable".into(), json!(durable));
                out.insert("ack_wait_s".into(), json!(ack_wait_s));
            }
            Some(Broker::Rabbitmq { url: u, queue }) => {
                out.insert("url".into(), json!(url(u)));
                out.insert("queue".into(), json!(queue));
            }
        }
        if self.broker.is_some() {
            out.insert("max_in_flight".into(), json!(self.max_in_flight));
        }
        Value::Object(out)
    }

    /// The event a request or message carries: `header` looks a header up, `body` is the
    /// parsed body. Every problem is reported, each under `id`, `type` or `data`.
    pub fn event<'h>(
        &self,
        header: impl Fn(&str) -> Option<Cow<'h, str>>,
        body: &JsonNode<'_>,
        defaults: Defaults<'_>,
    ) -> Result<NewEvent, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut text_of = |key: &str, field: &Option<Field>, default: Option<Cow<'_, str>>| {
            let found: Result<Cow<'_, str>, String> = match field {
                None => default.ok_or_else(|| "is not set for this source".to_owned()),
                Some(Field::Value(value)) => Ok(Cow::Owned(value.clone())),
                Some(Field::Header(name)) => header(name)
                    .map(|v| Cow::Owned(v.into_owned()))
                    .ok_or_else(|| format!("header {name} is missing")),
                Some(Field::Pointer(pointer)) => match body.pointer(pointer) {
                    Some(JsonNode::String(s)) => Ok(Cow::Owned(s.to_string())),
                    Some(JsonNode::Number(n)) if n.is_i64() || n.is_u64() => {
                        Ok(Cow::Owned(n.to_string()))
                    }
                    Some(other) => Err(format!(
                        "{pointer} in the body is {}, not a string",
                        other.kind()
                    )),
                    None => Err(format!("{pointer} is not in the body")),
                },
            };
            match found {
                Ok(text) => Some(JsonNode::String(Cow::Owned(text.into_owned()))),
                Err(message) => {
                    errors.push(FieldError::new(key, message));
                    None
                }
            }
        };
        let id = text_of("id", &self.id, defaults.id);
        let event_type = text_of("type", &self.event_type, defaults.event_type);
        let data = match &self.data {
            None => Some(body),
            Some(Field::Pointer(pointer)) => {
                let found = body.pointer(pointer);
                if found.is_none() {
                    errors.push(FieldError::new(
                        "data",
                        format!("{pointer} is not in the body"),
                    ));
                }
                found
            }
            Some(_) => {
                errors.push(FieldError::new("data", "must come from the body"));
                None
            }
        };
        let (Some(id), Some(event_type), Some(data)) = (id, event_type, data) else {
            return Err(errors);
        };
        let event = JsonNode::Object(vec![
            (Cow::Borrowed("id"), id),
            (Cow::Borrowed("type"), event_type),
            (Cow::Borrowed("data"), data.clone()),
        ]);
        NewEvent::from_json(&event)
    }
}

/// A URL with its password replaced (for anything shown). For NATS, whose lone user part
/// (`nats://TOKEN@host`) is a token, that is masked too.
pub fn mask_url_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            let scheme = &url[..scheme_end];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:{MASK}{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None if matches!(scheme, "nats" | "tls") => {
                    format!("{}{MASK}{}", &url[..scheme_end + 3], &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    fn hex_hmac(key: &[u8], parts: &[&[u8]]) -> String {
        let mut mac = hmac(key);
        for part in parts {
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    fn source(body: Value) -> Source {
        Source::parse("s", &body, None).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn standard_webhooks_checks_signature_time_and_headers() {
        let secret = format!("whsec_{}", BASE64.encode(b"a secret key"));
        let verify = source(json!({"verify": {"scheme": "standard_webhooks", "secret": secret}, "type": {"value": "t"}})).verify;
        let body = br#"{"a":1}"#;
        let mut mac = hmac(b"a secret key");
        mac.update(format!("msg_1.{NOW}.").as_bytes());
        mac.update(body);
        let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
        let now = NOW.to_string();
        let good = [
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", now.as_str()),
            ("webhook-signature", signature.as_str()),
        ];
        assert_eq!(verify.check(headers(&good), body, NOW + 10), Ok(()));
        assert_eq!(
            verify.check(headers(&good), br#"{"a":2}"#, NOW),
            Err(Rejection::BadSignature)
        );
        assert!(matches!(
            verify.check(headers(&good), body, NOW + 301),
            Err(Rejection::Stale { .. })
        ));
        assert_eq!(
            verify.check(headers(&good[..2]), body, NOW),
            Err(Rejection::Missing("webhook-signature"))
        );
        let rotated = format!("v1,bm90IGl0 {signature}");
        let two = [good[0], good[1], ("webhook-signature", rotated.as_str())];
        assert_eq!(verify.check(headers(&two), body, NOW), Ok(()));
    }

    #[test]
    fn hmac_sha256_checks_the_prefixed_hex_of_the_body() {
        let verify = source(
            json!({"verify": {"scheme": "hmac_sha256", "secret": "s3cret",
            "header": "X-Hub-Signature-256", "prefix": "sha256="},
            "id": {"header": "X-GitHub-Delivery"}, "type": {"header": "X-GitHub-Event"}}),
        )
        .verify;
        let body = b"{}";
        let signed = format!("sha256={}", hex_hmac(b"s3cret", &[body]));
        let upper = signed.to_uppercase().replace("SHA256=", "sha256=");
        assert_eq!(
            verify.check(headers(&[("x-hub-signature-256", &signed)]), body, NOW),
            Ok(())
        );
        assert_eq!(
            verify.check(headers(&[("x-hub-signature-256", &upper)]), body, NOW),
            Ok(())
        );
        let wrong = format!("sha256={}", hex_hmac(b"other", &[body]));
        assert_eq!(
            verify.check(headers(&[("x-hub-signature-256", &wrong)]), body, NOW),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify.check(headers(&[]), body, NOW),
            Err(Rejection::MissingNamed("X-Hub-Signature-256".into()))
        );
    }

    #[test]
    fn timestamped_hmac_checks_t_and_v1() {
        let verify = source(
            json!({"verify": {"scheme": "timestamped_hmac", "secret": "whsec_x",
            "header": "Stripe-Signature"}, "id": {"pointer": "/id"}, "type": {"pointer": "/type"}}),
        )
        .verify;
        let body = br#"{"id":"evt_1"}"#;
        let t = NOW.to_string();
        let v1 = hex_hmac(b"whsec_x", &[t.as_bytes(), b".", body]);
        let header = format!("t={t},v1=00ff,v1={v1},v0=abc");
        assert_eq!(
            verify.check(headers(&[("stripe-signature", &header)]), body, NOW),
            Ok(())
        );
        assert!(matches!(
            verify.check(headers(&[("stripe-signature", &header)]), body, NOW - 1000),
            Err(Rejection::Stale { tolerance_s: 300 })
        ));
        let no_t = format!("v1={v1}");
        assert_eq!(
            verify.check(headers(&[("stripe-signature", &no_t)]), body, NOW),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn a_source_maps_headers_pointers_and_constants_to_an_event() {
        let s = source(
            json!({"verify": {"scheme": "none"}, "id": {"pointer": "/data/id"},
            "type": {"header": "X-Event"}, "data": {"pointer": "/data"}}),
        );
        let body: JsonNode = serde_json::from_str(r#"{"data": {"id": 42, "x": "y"}}"#).unwrap();
        let event = s
            .event(
                |h| (h == "X-Event").then_some(Cow::Borrowed("order.paid")),
                &body,
                Defaults::default(),
            )
            .unwrap();
        assert_eq!(event.external_id.as_str(), "42");
        assert_eq!(event.event_type.as_str(), "order.paid");
        assert_eq!(event.data_text, r#"{"id":42,"x":"y"}"#);

        let errors = s
            .event(
                |_| None,
                &serde_json::from_str(r#"{"other": 1}"#).unwrap(),
                Defaults::default(),
            )
            .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["id", "type", "data"]);
    }

    #[test]
    fn saving_validates_and_keeps_a_secret_not_sent_again() {
        let errors = Source::parse(
            "Bad Name",
            &json!({"verify": {"scheme": "hmac_sha256"}}),
            None,
        )
        .unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"name"), "{paths:?}");
        assert!(paths.contains(&"verify.secret"), "{paths:?}");
        assert!(paths.contains(&"verify.header"), "{paths:?}");
        assert!(paths.contains(&"type"), "{paths:?}");

        let first = source(
            json!({"verify": {"scheme": "hmac_sha256", "secret": "a long secret",
            "header": "X-Sig"}, "id": {"header": "X-Id"}, "type": {"value": "t"}}),
        );
        let shown = first.to_json(false);
        assert_eq!(shown["verify"]["secret"], "********");
        let again = Source::parse("s", &shown, Some(&first)).unwrap();
        assert_eq!(again, first, "the masked secret keeps the stored one");
        let stored = first.to_json(true);
        assert_eq!(Source::parse("s", &stored, None).unwrap(), first);

        let nats = source(json!({"kind": "nats", "url": "nats://u:pw@127.0.0.1:4222",
            "stream": "ORDERS", "durable": "sluice"}));
        assert_eq!(
            nats.to_json(false)["url"],
            "nats://u:********@127.0.0.1:4222"
        );
        assert!(Source::parse("n", &json!({"kind": "nats", "url": "http://x"}), None).is_err());
        assert_eq!(
            mask_url_password("nats://t0k3n@host:4222"),
            "nats://********@host:4222"
        );
        assert!(
            Source::parse(
                "n",
                &json!({"kind": "nats", "url": "nats://h", "stream": "A.B", "durable": "d"}),
                None
            )
            .is_err(),
            "JetStream names have no '.'"
        );
    }
}
