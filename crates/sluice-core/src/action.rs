//! What a rule does when it matches: `log`, `noop`, `call_webhook`, `send_email`. An
//! [`Action`] is validated and its templates compiled when the rule is saved; the worker renders
//! it per event into a [`RenderedAction`] for the executors in the binary crate.
//!
//! Validation is strict on purpose: unknown params are rejected (a misspelt `hedaers` would
//! otherwise be silently dropped), and whatever is literal in a URL or address is checked when
//! the rule is saved. Parts built from placeholders can only be checked once rendered, which is
//! the executors' job (they also refuse private addresses).

use crate::error::{join_path, FieldError};
use crate::event::json_kind;
use crate::hash::content_hash;
use crate::template::{
    Template, TemplateContext, TemplatedValue, TextParam, Transform, TransformError, TransformInput,
};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::fmt;

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Every accepted spelling, for error messages: `a, b, c`.
            fn expected() -> String {
                [$($text),+].join(", ")
            }

            fn from_text(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        /// Exact spelling only; params parsing is case-insensitive where documented.
        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, String> {
                Self::from_text(text).ok_or_else(|| {
                    format!("unknown {} '{text}' (expected one of: {})", stringify!($name), Self::expected())
                })
            }
        }

        /// A string schema listing every spelling.
        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// The action types: the one list of them. The API's schema, error messages and the
    /// console's examples are derived from it.
    ActionKind {
        Log => "log",
        Noop => "noop",
        CallWebhook => "call_webhook",
        SendEmail => "send_email",
        PublishNats => "publish_nats",
        PublishRabbitmq => "publish_rabbitmq",
        PublishRedis => "publish_redis",
    }
);

text_enum!(
    /// Severity of a `log` action's line.
    LogLevel {
        Info => "info",
        Warn => "warn",
        Error => "error",
    }
);

text_enum!(
    /// The methods a webhook may use: ones that carry a body.
    HttpMethod {
        Post => "POST",
        Put => "PUT",
        Patch => "PATCH",
    }
);

impl ActionKind {
    /// Idempotent actions can simply run again on retry or replay; the others are
    /// at-most-once per event × rule × action content.
    pub fn is_idempotent(self) -> bool {
        matches!(self, ActionKind::Log | ActionKind::Noop)
    }

    /// Whether a delivery whose outcome is unknown (recorded `started`, never finished) may
    /// be sent again: a webhook carries the same `Idempotency-Key` and `webhook-id`, so its
    /// receiver can tell; an email cannot be taken back, so it is never sent twice.
    pub fn may_resend(self) -> bool {
        self.never_resent_because().is_none()
    }

    /// Why a delivery of unknown outcome is failed rather than sent again, for the kinds
    /// that are never sent twice (see [`ActionKind::may_resend`]).
    pub fn never_resent_because(self) -> Option<&'static str> {
        match self {
            ActionKind::SendEmail => Some(
                "an earlier attempt stopped while sending this email; outcome unknown, not re-sent",
            ),
            // A publish again carries the same `Nats-Msg-Id`: JetStream drops the second.
            ActionKind::Log
            | ActionKind::Noop
            | ActionKind::CallWebhook
            | ActionKind::PublishNats
            // Sent again with the same `message_id` (RabbitMQ) or `idempotency_key` field
            // (Redis), which consumers can dedupe on.
            | ActionKind::PublishRabbitmq
            | ActionKind::PublishRedis => None,
        }
    }

    /// A complete action of this type, as the console shows it to start from.
    pub fn example(self) -> Value {
        match self {
            ActionKind::Log => json!({"type": "log", "params": {
                "level": "info", "message": "High value order {{ external_id }}"}}),
            ActionKind::Noop => json!({"type": "noop", "params": {}}),
            ActionKind::CallWebhook => json!({"type": "call_webhook", "params": {
                "url": "https://example.com/hooks/orders", "method": "POST",
                "body": {"order": "{{ external_id }}", "amount": "{{ data.amount }}"}}}),
            ActionKind::SendEmail => json!({"type": "send_email", "params": {
                "to": "ops@example.com", "subject": "Order {{ external_id }}",
                "template": "Amount: {{ data.amount }}"}}),
            ActionKind::PublishNats => json!({"type": "publish_nats", "params": {
                "url": "nats://127.0.0.1:4222", "subject": "orders.{{ type }}",
                "payload": {"order": "{{ external_id }}", "amount": "{{ data.amount }}"}}}),
            ActionKind::PublishRabbitmq => json!({"type": "publish_rabbitmq", "params": {
                "url": "amqp://guest:guest@127.0.0.1:5672/%2f", "exchange": "orders",
                "routing_key": "{{ type }}", "payload": {"order": "{{ external_id }}"}}}),
            ActionKind::PublishRedis => json!({"type": "publish_redis", "params": {
                "url": "redis://127.0.0.1:6379", "stream": "orders",
                "payload": {"order": "{{ external_id }}"}, "maxlen": 100000}}),
        }
    }
}

/// Upper bound of a webhook's `timeout_ms`: a slow receiver holds a worker slot this long.
pub const MAX_WEBHOOK_TIMEOUT_MS: u64 = 60_000;

/// Headers a webhook's `headers` may not set: sluice sets the first four itself (idempotency and
/// Standard Webhooks signing, which a user value would break) and the HTTP client owns the rest.
pub const RESERVED_HEADERS: &[&str] = &[
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
];

/// An action as shown: a password (or NATS token) in its `url` masked. The stored action
/// keeps it; [`Action::restore_credentials`] puts it back when a shown action is saved again.
pub fn masked(action: &Value) -> Value {
    let mut shown = action.clone();
    if let Some(url) = shown.pointer_mut("/params/url") {
        if let Some(text) = url.as_str() {
            *url = Value::String(crate::source::mask_url_password(text));
        }
    }
    shown
}

/// The body a webhook sends when its params have no `body`: the event, with `event_id` a number
/// and `data` the event's whole data object.
pub fn default_webhook_body() -> Value {
    json!({
        "event_id": "{{ event_id }}",
        "external_id": "{{ external_id }}",
        "type": "{{ type }}",
        "data": "{{ data }}"
    })
}

const ROOT: &str = "action";
const PARAMS: &str = "action.params";

/// A validated action with its templates compiled. If one exists, it is valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    source: Value,
    normalized: Value,
    hash: String,
    spec: Spec,
}

#[derive(Debug, Clone, PartialEq)]
enum Spec {
    Log { level: LogLevel, message: TextParam },
    Noop,
    CallWebhook(Box<Webhook>),
    SendEmail(Box<Email>),
    PublishNats(Box<NatsPublish>),
    PublishRabbitmq(Box<AmqpPublish>),
    PublishRedis(Box<RedisPublish>),
}

#[derive(Debug, Clone, PartialEq)]
struct RedisPublish {
    /// Literal: it names the target (and may carry credentials).
    url: String,
    stream: TextParam,
    fields: Vec<(String, TextParam)>,
    payload: TemplatedValue,
    maxlen: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
struct AmqpPublish {
    /// Literal: it names the target (and may carry credentials).
    url: String,
    exchange: String,
    routing_key: TextParam,
    headers: Vec<(String, TextParam)>,
    payload: TemplatedValue,
    properties: AmqpProperties<TextParam>,
}

impl AmqpPublish {
    /// Its text params, in the order they are rendered.
    fn texts(&self) -> Vec<&TextParam> {
        let properties = &self.properties;
        std::iter::once(&self.routing_key)
            .chain(properties.correlation_id.as_ref())
            .chain(properties.reply_to.as_ref())
            .collect()
    }
}

/// The AMQP basic properties a rule may set on a published message (`message_id`, `type`,
/// `delivery_mode` and `timestamp` are sluice's: the idempotency key, the event type,
/// persistent, now). `T` is a template in a rule, text once rendered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AmqpProperties<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<T>,
    /// 0 to 9.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// After this many milliseconds in a queue the message is dropped (or dead-lettered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_ms: Option<u32>,
}

impl<T> Default for AmqpProperties<T> {
    fn default() -> Self {
        AmqpProperties {
            content_type: None,
            app_id: None,
            correlation_id: None,
            reply_to: None,
            priority: None,
            expiration_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct NatsPublish {
    /// Literal: it names the target (and may carry credentials).
    url: String,
    subject: TextParam,
    headers: Vec<(String, TextParam)>,
    payload: TemplatedValue,
}

#[derive(Debug, Clone, PartialEq)]
struct Webhook {
    url: TextParam,
    method: HttpMethod,
    /// Names lowercased (HTTP names are case-insensitive and the client sends lowercase anyway).
    headers: Vec<(String, TextParam)>,
    body: TemplatedValue,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Email {
    to: TextParam,
    subject: TextParam,
    template: TextParam,
    data: Option<TemplatedValue>,
}

/// An action rendered for one event: everything an executor needs, nothing left to template.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RenderedAction {
    Log {
        level: LogLevel,
        message: String,
    },
    Noop,
    CallWebhook {
        url: String,
        method: HttpMethod,
        /// Lowercase names, values on one line. No `content-type` here means the executor's
        /// default (`application/json`).
        headers: Vec<(String, String)>,
        body: Value,
        /// `None`: the executor's default (`WEBHOOK_TIMEOUT_MS`).
        timeout_ms: Option<u64>,
    },
    SendEmail {
        to: String,
        subject: String,
        body: String,
        data: Option<Value>,
    },
    PublishNats {
        url: String,
        subject: String,
        headers: Vec<(String, String)>,
        payload: Value,
    },
    PublishRabbitmq {
        url: String,
        exchange: String,
        routing_key: String,
        headers: Vec<(String, String)>,
        payload: Value,
        /// Boxed: rarely set, and it would double the size of every rendered action.
        properties: Box<AmqpProperties<String>>,
    },
    PublishRedis {
        url: String,
        stream: String,
        /// Added after sluice's own `payload`, `type` and `idempotency_key` fields.
        fields: Vec<(String, String)>,
        payload: Value,
        /// `XADD … MAXLEN ~ n`: the stream is trimmed to about this many entries.
        maxlen: Option<u64>,
    },
}

impl RenderedAction {
    /// What this action sends, as `{"type", "params"}` in the shape of the action's own
    /// params with every template filled in, plus what sluice adds itself (the idempotency
    /// key as the broker or receiver sees it); credentials in a URL masked. Dry runs and
    /// explain show it.
    pub fn shown(&self, idempotency_key: &str) -> Value {
        let names = |pairs: &[(String, String)]| -> Value {
            pairs
                .iter()
                .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
                .collect::<Map<String, Value>>()
                .into()
        };
        let params = match self {
            RenderedAction::Log { level, message } => json!({"level": level, "message": message}),
            RenderedAction::Noop => json!({}),
            RenderedAction::CallWebhook {
                url,
                method,
                headers,
                body,
                timeout_ms,
            } => {
                let mut headers = names(headers);
                headers["idempotency-key"] = idempotency_key.into();
                json!({"url": url, "method": method, "headers": headers, "body": body,
                    "timeout_ms": timeout_ms})
            }
            RenderedAction::SendEmail {
                to,
                subject,
                body,
                data,
            } => json!({"to": to, "subject": subject, "template": body, "data": data}),
            RenderedAction::PublishNats {
                url,
                subject,
                headers,
                payload,
            } => {
                let mut headers = names(headers);
                headers["Nats-Msg-Id"] = idempotency_key.into();
                json!({"url": url, "subject": subject, "headers": headers, "payload": payload})
            }
            RenderedAction::PublishRabbitmq {
                url,
                exchange,
                routing_key,
                headers,
                payload,
                properties,
            } => {
                let mut shown = json!({"message_id": idempotency_key, "headers": names(headers)});
                let set = [
                    (
                        "content_type",
                        properties.content_type.clone().map(Value::from),
                    ),
                    ("app_id", properties.app_id.clone().map(Value::from)),
                    (
                        "correlation_id",
                        properties.correlation_id.clone().map(Value::from),
                    ),
                    ("reply_to", properties.reply_to.clone().map(Value::from)),
                    ("priority", properties.priority.map(Value::from)),
                    ("expiration_ms", properties.expiration_ms.map(Value::from)),
                ];
                for (name, value) in set {
                    if let Some(value) = value {
                        shown[name] = value;
                    }
                }
                json!({"url": url, "exchange": exchange, "routing_key": routing_key,
                    "properties": shown, "payload": payload})
            }
            RenderedAction::PublishRedis {
                url,
                stream,
                fields,
                payload,
                maxlen,
            } => {
                let mut entry = names(fields);
                entry["idempotency_key"] = idempotency_key.into();
                json!({"url": url, "stream": stream, "fields": entry, "payload": payload,
                    "maxlen": maxlen})
            }
        };
        masked(&json!({"type": self.kind().as_str(), "params": params}))
    }

    pub fn kind(&self) -> ActionKind {
        match self {
            RenderedAction::Log { .. } => ActionKind::Log,
            RenderedAction::Noop => ActionKind::Noop,
            RenderedAction::CallWebhook { .. } => ActionKind::CallWebhook,
            RenderedAction::SendEmail { .. } => ActionKind::SendEmail,
            RenderedAction::PublishNats { .. } => ActionKind::PublishNats,
            RenderedAction::PublishRabbitmq { .. } => ActionKind::PublishRabbitmq,
            RenderedAction::PublishRedis { .. } => ActionKind::PublishRedis,
        }
    }
}

impl Action {
    /// Validates a rule's `action` — `{"type": …, "params": {…}}` — reporting every problem at
    /// once with paths rooted at `action` (`action.type`, `action.params.headers.X Bad`, …).
    ///
    /// Params per type (absent `params` counts as `{}`):
    /// - `log`: `level` info | warn | error (default info, any case), `message` template
    ///   (default empty: the executor's line still names the event and the rule).
    /// - `noop`: none.
    /// - `call_webhook`: `url` (required), `method` POST | PUT | PATCH (default POST, any case),
    ///   `headers` object of name → template string, `body` any JSON with templated strings
    ///   (default [`default_webhook_body`]; an explicit `null` sends `null`), `timeout_ms`
    ///   1..=[`MAX_WEBHOOK_TIMEOUT_MS`].
    /// - `send_email`: `to` (a single address), `subject`, `template` (the body text), all
    ///   required templates, and `data`, an optional object with templated strings.
    pub fn parse(action: &Value) -> Result<Self, Vec<FieldError>> {
        if let Some(path) = crate::event::nul_path(action, ROOT) {
            return Err(vec![FieldError::new(path, "must not contain U+0000 (NUL)")]);
        }
        let Some(object) = action.as_object() else {
            return Err(vec![FieldError::new(
                ROOT,
                format!(
                    "must be a JSON object like {{\"type\": \"log\", \"params\": {{}}}}, got {}",
                    json_kind(action)
                ),
            )]);
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if !matches!(key.as_str(), "type" | "params") {
                errors.push(FieldError::new(
                    join_path(ROOT, key),
                    "is not a field of an action (expected type, params)",
                ));
            }
        }
        let type_path = join_path(ROOT, "type");
        let kind = match object.get("type") {
            Some(Value::String(text)) => {
                let kind = ActionKind::from_text(text);
                if kind.is_none() {
                    errors.push(FieldError::new(
                        &type_path,
                        format!(
                            "unknown action type '{text}' (expected one of: {})",
                            ActionKind::expected()
                        ),
                    ));
                }
                kind
            }
            Some(other) => {
                errors.push(FieldError::new(
                    &type_path,
                    format!("must be a string, got {}", json_kind(other)),
                ));
                None
            }
            None => {
                errors.push(FieldError::new(
                    &type_path,
                    format!("is required (one of: {})", ActionKind::expected()),
                ));
                None
            }
        };
        let empty = Map::new();
        let params = match object.get("params") {
            None => Some(&empty),
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                errors.push(FieldError::new(
                    PARAMS,
                    format!("must be a JSON object, got {}", json_kind(other)),
                ));
                None
            }
        };
        let (Some(kind), Some(params)) = (kind, params) else {
            return Err(errors);
        };
        let parsed = match kind {
            ActionKind::Log => parse_log(params, &mut errors),
            ActionKind::Noop => {
                reject_unknown_params(kind, params, &[], &mut errors);
                Some((Spec::Noop, Map::new()))
            }
            ActionKind::CallWebhook => parse_webhook(params, &mut errors),
            ActionKind::SendEmail => parse_email(params, &mut errors),
            ActionKind::PublishNats => parse_nats(params, &mut errors),
            ActionKind::PublishRabbitmq => parse_amqp(params, &mut errors),
            ActionKind::PublishRedis => parse_redis(params, &mut errors),
        };
        match parsed {
            Some((spec, normalized_params)) if errors.is_empty() => {
                let normalized = json!({"type": kind.as_str(), "params": normalized_params});
                Ok(Self {
                    source: action.clone(),
                    hash: content_hash(&normalized),
                    normalized,
                    spec,
                })
            }
            _ => Err(errors),
        }
    }

    pub fn kind(&self) -> ActionKind {
        match self.spec {
            Spec::Log { .. } => ActionKind::Log,
            Spec::Noop => ActionKind::Noop,
            Spec::CallWebhook(_) => ActionKind::CallWebhook,
            Spec::SendEmail(_) => ActionKind::SendEmail,
            Spec::PublishNats(_) => ActionKind::PublishNats,
            Spec::PublishRabbitmq(_) => ActionKind::PublishRabbitmq,
            Spec::PublishRedis(_) => ActionKind::PublishRedis,
        }
    }

    pub fn is_idempotent(&self) -> bool {
        self.kind().is_idempotent()
    }

    /// This action with the stored `previous` action's URL when this one's is that URL as
    /// shown (masked): saving what a read showed keeps the credentials.
    pub fn restore_credentials(self, previous: &Value) -> Action {
        let (Some(given), Some(stored)) = (
            self.source.pointer("/params/url").and_then(Value::as_str),
            previous.pointer("/params/url").and_then(Value::as_str),
        ) else {
            return self;
        };
        if given == stored || given != crate::source::mask_url_password(stored) {
            return self;
        }
        let mut restored = self.source.clone();
        if let Some(url) = restored.pointer_mut("/params/url") {
            *url = Value::String(stored.to_owned());
        }
        Action::parse(&restored).unwrap_or(self)
    }

    /// The action JSON exactly as the rule gave it (what the API shows back).
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// `{type, params}` with defaults filled in, method uppercase, level and header names
    /// lowercase: equal meaning gives equal JSON.
    pub fn normalized(&self) -> &Value {
        &self.normalized
    }

    /// Content hash of [`Action::normalized`]: what idempotency keys and dedupe compare, so a
    /// rule version that changes only the condition, or only spelling (`"post"` for the default
    /// POST, key order), keeps the same hash and does not re-send.
    pub fn content_hash(&self) -> String {
        self.hash.clone()
    }

    /// Whether any param holds a `{"$logic": …}` transform (rendering then evaluates
    /// JSONLogic, under the rule's budget).
    pub fn has_transforms(&self) -> bool {
        let any = |texts: &[&TextParam], named: &[(String, TextParam)]| {
            texts.iter().any(|t| t.is_transform()) || named.iter().any(|(_, t)| t.is_transform())
        };
        match &self.spec {
            Spec::Noop => false,
            Spec::Log { message, .. } => message.is_transform(),
            Spec::CallWebhook(webhook) => {
                webhook.body.has_transforms() || any(&[&webhook.url], &webhook.headers)
            }
            Spec::SendEmail(email) => {
                email.data.as_ref().is_some_and(|d| d.has_transforms())
                    || any(&[&email.to, &email.subject, &email.template], &[])
            }
            Spec::PublishNats(publish) => {
                publish.payload.has_transforms() || any(&[&publish.subject], &publish.headers)
            }
            Spec::PublishRabbitmq(publish) => {
                publish.payload.has_transforms() || any(&publish.texts(), &publish.headers)
            }
            Spec::PublishRedis(publish) => {
                publish.payload.has_transforms() || any(&[&publish.stream], &publish.fields)
            }
        }
    }

    /// Every `{"$logic": …}` transform in the params, in the order they are rendered.
    pub fn transforms(&self) -> Vec<&Transform> {
        fn texts<'a>(texts: &[&'a TextParam]) -> Vec<&'a Transform> {
            texts.iter().filter_map(|t| t.transform()).collect()
        }
        fn named(named: &[(String, TextParam)]) -> Vec<&Transform> {
            named.iter().filter_map(|(_, t)| t.transform()).collect()
        }
        match &self.spec {
            Spec::Noop => Vec::new(),
            Spec::Log { message, .. } => message.transform().into_iter().collect(),
            Spec::CallWebhook(webhook) => [
                texts(&[&webhook.url]),
                named(&webhook.headers),
                webhook.body.transforms(),
            ]
            .concat(),
            Spec::SendEmail(email) => [
                texts(&[&email.to, &email.subject, &email.template]),
                email
                    .data
                    .as_ref()
                    .map(|d| d.transforms())
                    .unwrap_or_default(),
            ]
            .concat(),
            Spec::PublishNats(publish) => [
                texts(&[&publish.subject]),
                named(&publish.headers),
                publish.payload.transforms(),
            ]
            .concat(),
            Spec::PublishRabbitmq(publish) => [
                texts(&publish.texts()),
                named(&publish.headers),
                publish.payload.transforms(),
            ]
            .concat(),
            Spec::PublishRedis(publish) => [
                texts(&[&publish.stream]),
                named(&publish.fields),
                publish.payload.transforms(),
            ]
            .concat(),
        }
    }

    /// Renders every template against one event, and computes every transform; fails on a
    /// transform that cannot be computed for it. Header values, `to` and `subject` have control
    /// characters (line breaks) from event data replaced by spaces, so data cannot inject
    /// headers or make a request unbuildable. The URL is rendered as is: the executor parses it.
    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<RenderedAction, TransformError> {
        let input = &TransformInput::default();
        Ok(match &self.spec {
            Spec::Log { level, message } => RenderedAction::Log {
                level: *level,
                message: message.render(ctx, input)?,
            },
            Spec::Noop => RenderedAction::Noop,
            Spec::CallWebhook(webhook) => RenderedAction::CallWebhook {
                url: webhook.url.render(ctx, input)?,
                method: webhook.method,
                headers: webhook
                    .headers
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), single_line(value.render(ctx, input)?))))
                    .collect::<Result<_, TransformError>>()?,
                body: webhook.body.render_in(ctx, input)?,
                timeout_ms: webhook.timeout_ms,
            },
            Spec::SendEmail(email) => RenderedAction::SendEmail {
                to: single_line(email.to.render(ctx, input)?),
                subject: single_line(email.subject.render(ctx, input)?),
                body: email.template.render(ctx, input)?,
                data: email
                    .data
                    .as_ref()
                    .map(|data| data.render_in(ctx, input))
                    .transpose()?,
            },
            Spec::PublishNats(publish) => RenderedAction::PublishNats {
                url: publish.url.clone(),
                subject: single_line(publish.subject.render(ctx, input)?),
                headers: publish
                    .headers
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), single_line(value.render(ctx, input)?))))
                    .collect::<Result<_, TransformError>>()?,
                payload: publish.payload.render_in(ctx, input)?,
            },
            Spec::PublishRabbitmq(publish) => {
                let text = |param: &Option<TextParam>| {
                    param
                        .as_ref()
                        .map(|p| Ok(single_line(p.render(ctx, input)?)))
                        .transpose()
                };
                let properties = &publish.properties;
                RenderedAction::PublishRabbitmq {
                    url: publish.url.clone(),
                    exchange: publish.exchange.clone(),
                    routing_key: single_line(publish.routing_key.render(ctx, input)?),
                    headers: publish
                        .headers
                        .iter()
                        .map(|(name, value)| {
                            Ok((name.clone(), single_line(value.render(ctx, input)?)))
                        })
                        .collect::<Result<_, TransformError>>()?,
                    payload: publish.payload.render_in(ctx, input)?,
                    properties: Box::new(AmqpProperties {
                        content_type: properties.content_type.clone(),
                        app_id: properties.app_id.clone(),
                        correlation_id: text(&properties.correlation_id)?,
                        reply_to: text(&properties.reply_to)?,
                        priority: properties.priority,
                        expiration_ms: properties.expiration_ms,
                    }),
                }
            }
            Spec::PublishRedis(publish) => RenderedAction::PublishRedis {
                url: publish.url.clone(),
                stream: single_line(publish.stream.render(ctx, input)?),
                fields: publish
                    .fields
                    .iter()
                    .map(|(name, value)| Ok((name.clone(), value.render(ctx, input)?)))
                    .collect::<Result<_, TransformError>>()?,
                payload: publish.payload.render_in(ctx, input)?,
                maxlen: publish.maxlen,
            },
        })
    }
}

type Parsed = Option<(Spec, Map<String, Value>)>;

fn parse_log(params: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Parsed {
    reject_unknown_params(ActionKind::Log, params, &["level", "message"], errors);
    let level = match params.get("level") {
        None => Some(LogLevel::Info),
        Some(Value::String(text)) => {
            let level = LogLevel::from_text(&text.to_ascii_lowercase());
            if level.is_none() {
                errors.push(FieldError::new(
                    param_path("level"),
                    format!("must be one of {}, got '{text}'", LogLevel::expected()),
                ));
            }
            level
        }
        Some(other) => {
            errors.push(type_error("level", "a string", other));
            None
        }
    };
    let message = template_param(params, "message", Required::No, errors);
    let message = match message {
        Param::Given(template) => Some(template),
        Param::Absent => Some(TextParam::Template(
            Template::compile("", "").expect("empty text has no placeholder"),
        )),
        Param::Invalid => None,
    };
    let (level, message) = (level?, message?);
    let mut normalized = Map::new();
    normalized.insert("level".into(), level.as_str().into());
    normalized.insert("message".into(), message.source_json());
    Some((Spec::Log { level, message }, normalized))
}

fn parse_webhook(params: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Parsed {
    reject_unknown_params(
        ActionKind::CallWebhook,
        params,
        &["url", "method", "headers", "body", "timeout_ms"],
        errors,
    );
    let url = template_param(params, "url", Required::Yes, errors).given();
    if let Some(url) = &url {
        if let Err(message) = url.template().map_or(Ok(()), check_url) {
            errors.push(FieldError::new(param_path("url"), message));
        }
    }
    let method = match params.get("method") {
        None => Some(HttpMethod::Post),
        Some(Value::String(text)) => {
            let method = HttpMethod::from_text(&text.to_ascii_uppercase());
            if method.is_none() {
                errors.push(FieldError::new(
                    param_path("method"),
                    format!("must be one of {}, got '{text}'", HttpMethod::expected()),
                ));
            }
            method
        }
        Some(other) => {
            errors.push(type_error("method", "a string", other));
            None
        }
    };
    let headers = headers_param(params, errors);
    let (body_source, body) = templated_param(params, "body", errors);
    let timeout_ms = match params.get("timeout_ms") {
        None => Some(None),
        Some(value) => match value.as_u64() {
            Some(ms) if (1..=MAX_WEBHOOK_TIMEOUT_MS).contains(&ms) => Some(Some(ms)),
            _ => {
                errors.push(FieldError::new(
                    param_path("timeout_ms"),
                    format!(
                        "must be an integer number of milliseconds from 1 to \
                         {MAX_WEBHOOK_TIMEOUT_MS}, got {value}"
                    ),
                ));
                None
            }
        },
    };
    let (url, method, headers, body, timeout_ms) = (url?, method?, headers?, body?, timeout_ms?);
    let mut normalized = Map::new();
    normalized.insert("url".into(), url.source_json());
    normalized.insert("method".into(), method.as_str().into());
    normalized.insert("headers".into(), templates_json(&headers));
    normalized.insert("body".into(), body_source);
    if let Some(ms) = timeout_ms {
        normalized.insert("timeout_ms".into(), ms.into());
    }
    let webhook = Webhook {
        url,
        method,
        headers,
        body,
        timeout_ms,
    };
    Some((Spec::CallWebhook(Box::new(webhook)), normalized))
}

fn parse_headers(
    map: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<(String, TextParam)>> {
    parse_headers_at(map, &param_path("headers"), errors)
}

fn parse_headers_at(
    map: &Map<String, Value>,
    headers_path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<(String, TextParam)>> {
    let mut headers: Vec<(String, TextParam)> = Vec::with_capacity(map.len());
    let mut valid = true;
    for (name, value) in map {
        let path = join_path(headers_path, name);
        let lower = name.to_ascii_lowercase();
        let name_error = if name.is_empty() || !name.bytes().all(is_token_byte) {
            Some(
                "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
                    .to_owned(),
            )
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            Some(format!(
                "'{lower}' is set by sluice and cannot be overridden"
            ))
        } else if headers.iter().any(|(seen, _)| *seen == lower) {
            Some("duplicate header (header names are case-insensitive)".to_owned())
        } else {
            None
        };
        if let Some(message) = name_error {
            errors.push(FieldError::new(path, message));
            valid = false;
            continue;
        }
        match TextParam::compile(value, &path) {
            Some(Ok(text)) if has_control_chars(&text) => {
                errors.push(FieldError::new(
                    path,
                    "must not contain control characters such as line breaks",
                ));
                valid = false;
            }
            Some(Ok(text)) => headers.push((lower, text)),
            Some(Err(error)) => {
                errors.push(error);
                valid = false;
            }
            None => {
                errors.push(FieldError::new(
                    path,
                    format!("must be a string, got {}", json_kind(value)),
                ));
                valid = false;
            }
        }
    }
    valid.then_some(headers)
}

fn parse_email(params: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Parsed {
    reject_unknown_params(
        ActionKind::SendEmail,
        params,
        &["to", "subject", "template", "data"],
        errors,
    );
    let to = template_param(params, "to", Required::Yes, errors).given();
    if let Some(to) = &to {
        let problem = if has_control_chars(to) {
            Some("must not contain control characters such as line breaks".to_owned())
        } else {
            to.template()
                .filter(|t| !t.has_placeholders() && !looks_like_email(t.source()))
                .map(|literal| {
                    format!(
                        "must be an email address like name@example.com, got '{}'",
                        literal.source()
                    )
                })
        };
        if let Some(message) = problem {
            errors.push(FieldError::new(param_path("to"), message));
        }
    }
    let subject = template_param(params, "subject", Required::Yes, errors).given();
    if subject.as_ref().is_some_and(has_control_chars) {
        errors.push(FieldError::new(
            param_path("subject"),
            "must not contain control characters such as line breaks",
        ));
    }
    let template = template_param(params, "template", Required::Yes, errors).given();
    let data = match params.get("data") {
        None => Some(None),
        Some(value @ Value::Object(_)) => TemplatedValue::compile(value, &param_path("data"))
            .map(Some)
            .map_err(|data_errors| errors.extend(data_errors))
            .ok(),
        Some(other) => {
            errors.push(type_error("data", "a JSON object", other));
            None
        }
    };
    let (to, subject, template, data) = (to?, subject?, template?, data?);
    let mut normalized = Map::new();
    normalized.insert("to".into(), to.source_json());
    normalized.insert("subject".into(), subject.source_json());
    normalized.insert("template".into(), template.source_json());
    if let Some(data) = params.get("data") {
        normalized.insert("data".into(), data.clone());
    }
    let email = Email {
        to,
        subject,
        template,
        data,
    };
    Some((Spec::SendEmail(Box::new(email)), normalized))
}

fn parse_nats(params: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Parsed {
    reject_unknown_params(
        ActionKind::PublishNats,
        params,
        &["url", "subject", "headers", "payload"],
        errors,
    );
    let url = broker_url_param(params, &["nats://", "tls://"], errors);
    let subject = template_param(params, "subject", Required::Yes, errors).given();
    if let Some(subject) = &subject {
        let literals = subject.template().map(Template::literals);
        if literals.is_some_and(|mut literals| {
            literals.any(|text| {
                text.chars()
                    .any(|c| c.is_whitespace() || matches!(c, '*' | '>'))
            })
        }) {
            errors.push(FieldError::new(
                param_path("subject"),
                "must be a subject without spaces or wildcards (e.g. orders.created)",
            ));
        }
    }
    let headers = headers_param(params, errors);
    if headers
        .as_ref()
        .is_some_and(|h| h.iter().any(|(name, _)| name == "nats-msg-id"))
    {
        errors.push(FieldError::new(
            join_path(&param_path("headers"), "Nats-Msg-Id"),
            "is set by sluice (the idempotency key) and cannot be overridden",
        ));
    }
    let (payload_source, payload) = templated_param(params, "payload", errors);
    let (url, subject, headers, payload) = (url?, subject?, headers?, payload?);
    let mut normalized = Map::new();
    normalized.insert("url".into(), url.clone().into());
    normalized.insert("subject".into(), subject.source_json());
    normalized.insert("headers".into(), templates_json(&headers));
    normalized.insert("payload".into(), payload_source);
    let publish = NatsPublish {
        url,
        subject,
        headers,
        payload,
    };
    Some((Spec::PublishNats(Box::new(publish)), normalized))
}

fn parse_amqp(params: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Parsed {
    reject_unknown_params(
        ActionKind::PublishRabbitmq,
        params,
        &[
            "url",
            "exchange",
            "routing_key",
            "headers",
            "payload",
            "properties",
        ],
        errors,
    );
    let url = broker_url_param(params, &["amqp://", "amqps://"], errors);
    // The default exchange ("") routes by queue name.
    let exchange = match params.get("exchange") {
        None => Some(String::new()),
        Some(Value::String(name))
            if name.len() <= 255
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            Some(name.clone())
        }
        Some(_) => {
            errors.push(FieldError::new(
                param_path("exchange"),
                "must be an exchange name: letters, digits, '-', '_', '.', ':' (at most 255)",
            ));
            None
        }
    };
    let routing_key = template_param(params, "routing_key", Required::Yes, errors).given();
    if routing_key.as_ref().is_some_and(has_control_chars) {
        errors.push(FieldError::new(
            param_path("routing_key"),
            "must not contain control characters such as line breaks",
        ));
    }
    let top_headers = headers_param(params, errors);
    let (properties, property_headers, properties_source) = amqp_properties(params, errors);
    let headers = match (top_headers, property_headers) {
        (Some(top), Some(inner)) if !top.is_empty() && !inner.is_empty() => {
            errors.push(FieldError::new(
                param_path("headers"),
                "give the headers in one place: properties.headers (or headers), not both",
            ));
            None
        }
        (Some(top), Some(inner)) => Some(if inner.is_empty() { top } else { inner }),
        _ => None,
    };
    let (payload_source, payload) = templated_param(params, "payload", errors);
    let (url, exchange, routing_key, headers, payload, properties) = (
        url?,
        exchange?,
        routing_key?,
        headers?,
        payload?,
        properties?,
    );
    let mut normalized = Map::new();
    normalized.insert("url".into(), url.clone().into());
    normalized.insert("exchange".into(), exchange.clone().into());
    normalized.insert("routing_key".into(), routing_key.source_json());
    normalized.insert("headers".into(), templates_json(&headers));
    normalized.insert("payload".into(), payload_source);
    // Only when given: rules saved before properties existed keep their action (and keys).
    if let Some(source) = properties_source {
        normalized.insert("properties".into(), source);
    }
    let publish = AmqpPublish {
        url,
        exchange,
        routing_key,
        headers,
        payload,
        properties,
    };
    Some((Spec::PublishRabbitmq(Box::new(publish)), normalized))
}

/// `properties` of a `publish_rabbitmq` action: the properties, the headers given there
/// (empty when none), and the properties as the normalized action writes them (without the
/// headers, which it writes at `headers`), when given.
#[allow(clippy::type_complexity)]
fn amqp_properties(
    params: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> (
    Option<AmqpProperties<TextParam>>,
    Option<Vec<(String, TextParam)>>,
    Option<Value>,
) {
    let path = param_path("properties");
    let map = match params.get("properties") {
        None => return (Some(AmqpProperties::default()), Some(Vec::new()), None),
        Some(Value::Object(map)) => map,
        Some(other) => {
            errors.push(type_error("properties", "a JSON object", other));
            return (None, None, None);
        }
    };
    let before = errors.len();
    let mut properties = AmqpProperties::default();
    let mut headers = Some(Vec::new());
    let mut source = Map::new();
    for (key, value) in map {
        let at = join_path(&path, key);
        match (key.as_str(), value) {
            ("headers", Value::Object(headers_map)) => {
                headers = parse_headers_at(headers_map, &at, errors);
            }
            ("content_type" | "app_id", Value::String(text))
                if !text.is_empty()
                    && text.len() <= 255
                    && text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') =>
            {
                source.insert(key.clone(), value.clone());
                if key == "content_type" {
                    properties.content_type = Some(text.clone());
                } else {
                    properties.app_id = Some(text.clone());
                }
            }
            ("content_type" | "app_id", _) => errors.push(FieldError::new(
                at,
                "must be printable ASCII text of 1 to 255 characters",
            )),
            ("correlation_id" | "reply_to", _) => match TextParam::compile(value, &at) {
                Some(Ok(text)) if has_control_chars(&text) => errors.push(FieldError::new(
                    at,
                    "must not contain control characters such as line breaks",
                )),
                Some(Ok(text)) => {
                    source.insert(key.clone(), text.source_json());
                    if key == "correlation_id" {
                        properties.correlation_id = Some(text);
                    } else {
                        properties.reply_to = Some(text);
                    }
                }
                Some(Err(error)) => errors.push(error),
                None => errors.push(FieldError::new(
                    at,
                    format!("must be a string, got {}", json_kind(value)),
                )),
            },
            ("priority", Value::Number(n)) if n.as_u64().is_some_and(|p| p <= 9) => {
                source.insert(key.clone(), value.clone());
                properties.priority = n.as_u64().and_then(|p| u8::try_from(p).ok());
            }
            ("priority", _) => errors.push(FieldError::new(at, "must be an integer from 0 to 9")),
            ("expiration_ms", Value::Number(n))
                if n.as_u64()
                    .is_some_and(|ms| (1..=u64::from(u32::MAX)).contains(&ms)) =>
            {
                source.insert(key.clone(), value.clone());
                properties.expiration_ms = n.as_u64().and_then(|ms| u32::try_from(ms).ok());
            }
            ("expiration_ms", _) => errors.push(FieldError::new(
                at,
                format!(
                    "must be a whole number of milliseconds from 1 to {}",
                    u32::MAX
                ),
            )),
            ("message_id" | "type" | "delivery_mode" | "timestamp", _) => {
                errors.push(FieldError::new(
                    at,
                    "is set by sluice (message_id: the idempotency key; type: the event \
                     type; delivery_mode: persistent; timestamp: when it is published)",
                ))
            }
            _ => errors.push(FieldError::new(
                at,
                "is not a property sluice sets (expected: content_type, app_id, \
                 correlation_id, reply_to, priority, expiration_ms, headers)",
            )),
        }
    }
    if errors.len() > before {
        return (None, None, None);
    }
    (Some(properties), headers, Some(source.into()))
}

/// The fields sluice writes on every Redis stream entry.
pub const REDIS_OWN_FIELDS: &[&str] = &["payload", "type", "idempotency_key"];

/// Upper bound of a Redis stream's `maxlen`.
pub const MAX_REDIS_MAXLEN: u64 = 1_000_000_000;

fn parse_redis(params: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Parsed {
    reject_unknown_params(
        ActionKind::PublishRedis,
        params,
        &["url", "stream", "fields", "payload", "maxlen"],
        errors,
    );
    let url = broker_url_param(params, &["redis://", "rediss://"], errors);
    let stream = template_param(params, "stream", Required::Yes, errors).given();
    if stream.as_ref().is_some_and(|stream| {
        stream.template().is_some_and(|t| t.source().is_empty()) || has_control_chars(stream)
    }) {
        errors.push(FieldError::new(
            param_path("stream"),
            "must be a stream key, not empty and without control characters",
        ));
    }
    let fields = match params.get("fields") {
        None => Some(Vec::new()),
        Some(Value::Object(map)) => redis_fields(map, errors),
        Some(other) => {
            errors.push(type_error(
                "fields",
                "a JSON object of field name to string",
                other,
            ));
            None
        }
    };
    let maxlen = match params.get("maxlen") {
        None => Some(None),
        Some(value) => match value.as_u64() {
            Some(n @ 1..=MAX_REDIS_MAXLEN) => Some(Some(n)),
            _ => {
                errors.push(FieldError::new(
                    param_path("maxlen"),
                    format!("must be a whole number from 1 to {MAX_REDIS_MAXLEN}"),
                ));
                None
            }
        },
    };
    let (payload_source, payload) = templated_param(params, "payload", errors);
    let (url, stream, fields, payload, maxlen) = (url?, stream?, fields?, payload?, maxlen?);
    let mut normalized = Map::new();
    normalized.insert("url".into(), url.clone().into());
    normalized.insert("stream".into(), stream.source_json());
    normalized.insert("fields".into(), templates_json(&fields));
    normalized.insert("payload".into(), payload_source);
    if let Some(maxlen) = maxlen {
        normalized.insert("maxlen".into(), maxlen.into());
    }
    let publish = RedisPublish {
        url,
        stream,
        fields,
        payload,
        maxlen,
    };
    Some((Spec::PublishRedis(Box::new(publish)), normalized))
}

/// A Redis entry's extra fields: name → string template; names not sluice's own, without
/// control characters.
fn redis_fields(
    map: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<(String, TextParam)>> {
    let fields_path = param_path("fields");
    let mut fields = Vec::with_capacity(map.len());
    let mut valid = true;
    for (name, value) in map {
        let path = join_path(&fields_path, name);
        if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
            errors.push(FieldError::new(
                &path,
                "must be a field name of 1 to 256 bytes without control characters",
            ));
            valid = false;
        } else if REDIS_OWN_FIELDS.contains(&name.as_str()) {
            errors.push(FieldError::new(
                &path,
                format!("'{name}' is set by sluice and cannot be overridden"),
            ));
            valid = false;
        }
        match TextParam::compile(value, &path) {
            Some(Ok(text)) => fields.push((name.clone(), text)),
            Some(Err(error)) => {
                errors.push(error);
                valid = false;
            }
            None => {
                errors.push(FieldError::new(
                    &path,
                    format!("must be a string, got {}", json_kind(value)),
                ));
                valid = false;
            }
        }
    }
    valid.then_some(fields)
}

/// `headers`: a JSON object of header name to string template (none by default).
fn headers_param(
    params: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<(String, TextParam)>> {
    match params.get("headers") {
        None => Some(Vec::new()),
        Some(Value::Object(map)) => parse_headers(map, errors),
        Some(other) => {
            errors.push(type_error(
                "headers",
                "a JSON object of header name to string",
                other,
            ));
            None
        }
    }
}

/// Headers or fields (name → template) as the normalized action writes them.
fn templates_json(headers: &[(String, TextParam)]) -> Value {
    headers
        .iter()
        .map(|(name, value)| (name.clone(), value.source_json()))
        .collect::<Map<String, Value>>()
        .into()
}

/// A JSON value with templates in its strings (`body`, `payload`): as given, or the event
/// (`default_webhook_body`) when absent; its source and, if it compiles, its template.
fn templated_param(
    params: &Map<String, Value>,
    key: &str,
    errors: &mut Vec<FieldError>,
) -> (Value, Option<TemplatedValue>) {
    let source = params
        .get(key)
        .cloned()
        .unwrap_or_else(default_webhook_body);
    let compiled = TemplatedValue::compile(&source, &param_path(key))
        .map_err(|compile_errors| errors.extend(compile_errors))
        .ok();
    (source, compiled)
}

/// A broker's `url` (literal, never quoted back: it may hold credentials).
fn broker_url_param(
    params: &Map<String, Value>,
    schemes: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match params.get("url") {
        Some(Value::String(url)) => match check_broker_url(url, schemes) {
            Ok(()) => Some(url.clone()),
            Err(message) => {
                errors.push(FieldError::new(param_path("url"), message));
                None
            }
        },
        None => {
            errors.push(FieldError::new(param_path("url"), "is required"));
            None
        }
        Some(other) => {
            errors.push(type_error("url", "a string", other));
            None
        }
    }
}

/// A broker URL: one of the schemes, a host, no control characters or spaces; never
/// quoted back (it may hold credentials).
fn check_broker_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let expected = format!("must be a URL starting with {}", schemes.join(" or "));
    let Some(rest) = schemes.iter().find_map(|s| url.strip_prefix(s)) else {
        return Err(expected);
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{expected}, with a host"));
    }
    Ok(())
}

fn param_path(key: &str) -> String {
    join_path(PARAMS, key)
}

fn type_error(key: &str, expected: &str, got: &Value) -> FieldError {
    FieldError::new(
        param_path(key),
        format!("must be {expected}, got {}", json_kind(got)),
    )
}

fn reject_unknown_params(
    kind: ActionKind,
    params: &Map<String, Value>,
    allowed: &[&str],
    errors: &mut Vec<FieldError>,
) {
    for key in params.keys() {
        if !allowed.contains(&key.as_str()) {
            let expected = if allowed.is_empty() {
                format!("{kind} takes no parameters")
            } else {
                format!("expected: {}", allowed.join(", "))
            };
            errors.push(FieldError::new(
                param_path(key),
                format!("is not a parameter of {kind} ({expected})"),
            ));
        }
    }
}

#[derive(PartialEq)]
enum Required {
    Yes,
    No,
}

enum Param {
    Given(TextParam),
    Absent,
    /// Reported in the errors already.
    Invalid,
}

impl Param {
    fn given(self) -> Option<TextParam> {
        match self {
            Param::Given(template) => Some(template),
            Param::Absent | Param::Invalid => None,
        }
    }
}

/// A string param compiled as a template; a missing required one is reported here.
fn template_param(
    params: &Map<String, Value>,
    key: &str,
    required: Required,
    errors: &mut Vec<FieldError>,
) -> Param {
    match params.get(key) {
        None if required == Required::Yes => {
            errors.push(FieldError::new(param_path(key), "is required"));
            Param::Invalid
        }
        None => Param::Absent,
        Some(value) => match TextParam::compile(value, &param_path(key)) {
            Some(Ok(text)) => Param::Given(text),
            Some(Err(error)) => {
                errors.push(error);
                Param::Invalid
            }
            None => {
                errors.push(type_error(key, "a string", value));
                Param::Invalid
            }
        },
    }
}

/// RFC 9110 `tchar`: what an HTTP header name may contain.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether the literal text of a param has a control character (a transform's result has them
/// replaced when rendered).
fn has_control_chars(param: &TextParam) -> bool {
    param.template().is_some_and(literal_control_chars)
}

fn literal_control_chars(template: &Template) -> bool {
    template
        .literals()
        .any(|text| text.chars().any(char::is_control))
}

/// Replaces control characters with spaces, allocating only when there is one.
fn single_line(text: String) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        text
    }
}

/// `local@domain`, both non-empty, one `@`, no whitespace: a typo check, not RFC 5322.
fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !text.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

const URL_EXPECTED: &str = "must be an absolute http:// or https:// URL";

/// Checks what is literal at the start of a URL template: the scheme must be http or https and,
/// when the host is literal, it must be a plausible host. `ftp://x` and `not a url` fail here;
/// `{{ data.callback }}` or `https://{{ data.host }}/x` are left to the executor.
fn check_url(url: &Template) -> Result<(), String> {
    if literal_control_chars(url) {
        return Err("must not contain control characters".into());
    }
    let literal = url.leading_literal();
    let complete = !url.has_placeholders();
    let Some(scheme_end) = literal.find([':', '/', '?', '#']) else {
        // No delimiter yet: a placeholder may still supply the scheme.
        return if complete {
            Err(format!("{URL_EXPECTED}, got '{literal}'"))
        } else {
            Ok(())
        };
    };
    let scheme = &literal[..scheme_end];
    if !literal[scheme_end..].starts_with(':') || scheme.is_empty() {
        return Err(format!("{URL_EXPECTED} (it has no scheme)"));
    }
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(format!("{URL_EXPECTED}, not '{scheme}:'"));
    }
    let rest = &literal[scheme_end + 1..];
    let Some(after_slashes) = rest.strip_prefix("//") else {
        return if !complete && "//".starts_with(rest) {
            Ok(())
        } else {
            Err(format!("{URL_EXPECTED} (expected '//' after '{scheme}:')"))
        };
    };
    let authority_end = after_slashes.find(['/', '?', '#']);
    if authority_end.is_none() && !complete {
        // The host continues into a placeholder.
        return Ok(());
    }
    let authority = &after_slashes[..authority_end.unwrap_or(after_slashes.len())];
    check_authority(authority).map_err(|problem| format!("{URL_EXPECTED}: {problem}"))
}

/// `[user@]host[:port]` with a DNS-like or IP host, or `[IPv6]`. Messages never quote the
/// authority: it may hold credentials (`user:password@`), and a malformed one cannot be split
/// reliably into what is secret and what is not.
fn check_authority(authority: &str) -> Result<(), String> {
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_userinfo, rest)| rest);
    let (host_ok, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((ipv6, after)) = bracketed.split_once(']') else {
            return Err("its IPv6 host has no closing ']'".into());
        };
        let ok = !ipv6.is_empty()
            && ipv6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.');
        match after.strip_prefix(':') {
            Some(port) => (ok, Some(port)),
            None if after.is_empty() => (ok, None),
            None => return Err("unexpected text after its host".into()),
        }
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if host.is_empty() {
            return Err("it has no host".into());
        }
        let ok = host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_'));
        (ok, port)
    };
    if !host_ok {
        return Err("its host is not a valid name or address".into());
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err("its port is not a number from 1 to 65535".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_url_is_refused_without_echoing_its_credentials() {
        for url in [
            "https://ops:hunter2/x@example.com",
            "https://ops:hunter2@exa mple.com",
            "https://ops:hunter2@example.com:99999",
            "https://ops:hunter2@[::1]zz",
        ] {
            let errors = Action::parse(&json!({"type": "call_webhook", "params": {"url": url}}))
                .expect_err(url);
            let text = format!("{errors:?}");
            assert!(!text.contains("hunter2"), "{url}: {text}");
            assert!(text.contains("action.params.url"), "{url}: {text}");
        }
    }

    fn parse(action: Value) -> Action {
        Action::parse(&action).unwrap_or_else(|errors| panic!("{action}: {errors:?}"))
    }

    fn errors(action: Value) -> Vec<(String, String)> {
        match Action::parse(&action) {
            Ok(_) => panic!("{action} should be invalid"),
            Err(errors) => errors.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    fn error_paths(action: Value) -> Vec<String> {
        errors(action).into_iter().map(|(path, _)| path).collect()
    }

    fn render(action: &Action) -> RenderedAction {
        let data = json!({"amount": 250, "user": {"email": "ana@example.com", "name": "Ana"}});
        action
            .render(&TemplateContext {
                event_id: 42,
                external_id: "order-123",
                event_type: "order.created",
                data: &data,
                created_at: None,
                limits: crate::logic::Limits::default(),
            })
            .expect("no transform")
    }

    fn webhook(params: Value) -> Value {
        json!({"type": "call_webhook", "params": params})
    }

    #[test]
    fn parses_the_seed_examples() {
        let log = parse(json!({
            "type": "log",
            "params": {"level": "info", "message": "High value order detected"}
        }));
        assert_eq!(log.kind(), ActionKind::Log);
        assert!(log.is_idempotent());
        let hook = parse(webhook(json!({
            "url": "https://api.fraud-detection.com/alerts",
            "method": "POST",
            "body": {"event_id": "{{ external_id }}"}
        })));
        assert_eq!(hook.kind(), ActionKind::CallWebhook);
        assert!(!hook.is_idempotent());
        let RenderedAction::CallWebhook { body, .. } = render(&hook) else {
            panic!("a webhook renders as a webhook");
        };
        assert_eq!(body, json!({"event_id": "order-123"}));
    }

    #[test]
    fn log_defaults_and_renders() {
        let action = parse(json!({"type": "log"}));
        assert_eq!(
            render(&action),
            RenderedAction::Log {
                level: LogLevel::Info,
                message: String::new()
            }
        );
        let action = parse(json!({
            "type": "log",
            "params": {"level": "WARN", "message": "{{ type }} for {{ data.amount }}"}
        }));
        assert_eq!(
            render(&action),
            RenderedAction::Log {
                level: LogLevel::Warn,
                message: "order.created for 250".into()
            }
        );
        assert_eq!(action.normalized()["params"]["level"], "warn");
    }

    #[test]
    fn log_rejects_bad_params() {
        let found = errors(json!({
            "type": "log",
            "params": {"level": "debug", "message": 5, "msg": "typo"}
        }));
        assert_eq!(
            found,
            [
                (
                    "action.params.msg".to_owned(),
                    "is not a parameter of log (expected: level, message)".to_owned()
                ),
                (
                    "action.params.level".to_owned(),
                    "must be one of info, warn, error, got 'debug'".to_owned()
                ),
                (
                    "action.params.message".to_owned(),
                    "must be a string, got number".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn noop_takes_nothing() {
        assert_eq!(parse(json!({"type": "noop"})).kind(), ActionKind::Noop);
        assert_eq!(
            render(&parse(json!({"type": "noop", "params": {}}))),
            RenderedAction::Noop
        );
        assert_eq!(
            errors(json!({"type": "noop", "params": {"x": 1}})),
            [(
                "action.params.x".to_owned(),
                "is not a parameter of noop (noop takes no parameters)".to_owned()
            )]
        );
        assert_eq!(
            error_paths(json!({"type": "noop", "params": null})),
            ["action.params"]
        );
    }

    #[test]
    fn rejects_malformed_actions() {
        assert_eq!(error_paths(json!("log")), ["action"]);
        assert_eq!(error_paths(json!({})), ["action.type"]);
        assert_eq!(error_paths(json!({"type": 3})), ["action.type"]);
        let found = errors(json!({"type": "send_sms", "prams": {}}));
        assert_eq!(found[0].0, "action.prams");
        assert_eq!(
            found[1],
            (
                "action.type".to_owned(),
                format!(
                    "unknown action type 'send_sms' (expected one of: {})",
                    ActionKind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            )
        );
    }

    #[test]
    fn webhook_defaults() {
        let action = parse(webhook(json!({"url": "https://example.com/hook"})));
        let RenderedAction::CallWebhook {
            url,
            method,
            headers,
            body,
            timeout_ms,
        } = render(&action)
        else {
            panic!("a webhook renders as a webhook");
        };
        assert_eq!(url, "https://example.com/hook");
        assert_eq!(method, HttpMethod::Post);
        assert!(headers.is_empty());
        assert_eq!(timeout_ms, None);
        assert_eq!(
            body,
            json!({
                "event_id": 42,
                "external_id": "order-123",
                "type": "order.created",
                "data": {"amount": 250, "user": {"email": "ana@example.com", "name": "Ana"}}
            })
        );
    }

    #[test]
    fn webhook_renders_every_part() {
        let action = parse(webhook(json!({
            "url": "https://example.com/users/{{ data.user.name }}?e={{ event_id }}",
            "method": "patch",
            "headers": {"X-Order": "{{ external_id }}", "Content-Type": "application/json"},
            "body": {"amount": "{{ data.amount }}", "note": "line\n{{ data.missing }}"},
            "timeout_ms": 5000
        })));
        assert_eq!(
            render(&action),
            RenderedAction::CallWebhook {
                url: "https://example.com/users/Ana?e=42".into(),
                method: HttpMethod::Patch,
                headers: vec![
                    ("x-order".into(), "order-123".into()),
                    ("content-type".into(), "application/json".into())
                ],
                body: json!({"amount": 250, "note": "line\n"}),
                timeout_ms: Some(5000),
            }
        );
    }

    #[test]
    fn header_values_from_data_stay_on_one_line() {
        let action = parse(webhook(json!({
            "url": "https://example.com",
            "headers": {"X-Name": "{{ data.name }}"}
        })));
        let data = json!({"name": "a\r\nInjected: yes"});
        let rendered = action
            .render(&TemplateContext {
                event_id: 1,
                external_id: "x",
                event_type: "t",
                data: &data,
                created_at: None,
                limits: crate::logic::Limits::default(),
            })
            .expect("no transform");
        let RenderedAction::CallWebhook { headers, .. } = rendered else {
            panic!("a webhook renders as a webhook");
        };
        assert_eq!(
            headers,
            [("x-name".to_owned(), "a  Injected: yes".to_owned())]
        );
    }

    #[test]
    fn webhook_urls_are_checked_where_literal() {
        for good in [
            "https://example.com",
            "HTTP://example.com:8080/a?b=c#d",
            "http://user:pw@localhost:3000/x",
            "http://[::1]:8080/",
            "http://127.0.0.1/hook",
            "https://{{ data.host }}/hook",
            "https://api.{{ data.region }}.example.com/",
            "{{ data.callback_url }}",
            "http{{ data.s }}://example.com",
            "https://example.com/{{ data.path }}",
        ] {
            assert!(
                Action::parse(&webhook(json!({"url": good}))).is_ok(),
                "{good} should be accepted"
            );
        }
        for bad in [
            "ftp://example.com/file",
            "not a url",
            "example.com/hook",
            "example.com/{{ data.path }}",
            "mailto:{{ data.to }}",
            "https:example.com",
            "https://",
            "https:///path",
            "https://exa mple.com/",
            "https://example.com:0/",
            "https://example.com:99999/",
            "https://example.com:x/",
            "http://[::1/",
            "https://example.com/\n",
            "",
        ] {
            let found = errors(webhook(json!({"url": bad})));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].0, "action.params.url", "{bad}");
            assert!(found[0].1.starts_with("must"), "{bad}: {}", found[0].1);
        }
        let found = errors(webhook(json!({"url": "ftp://example.com"})));
        assert_eq!(
            found[0].1,
            "must be an absolute http:// or https:// URL, not 'ftp:'"
        );
    }

    #[test]
    fn webhook_rejects_bad_params_with_paths() {
        let found = error_paths(webhook(json!({
            "method": "GET",
            "headers": {
                "X Bad": "v",
                "Webhook-Signature": "forged",
                "Idempotency-Key": "k",
                "x-ok": "{{ nope }}",
                "X-Num": 5,
                "X-Line": "a\nb",
                "x-dup": "1",
                "X-Dup": "2"
            },
            "body": {"a": ["{{ data. }}"]},
            "timeout_ms": 0,
            "hedaers": {}
        })));
        assert_eq!(
            found,
            [
                "action.params.hedaers",
                "action.params.url",
                "action.params.method",
                "action.params.headers.X Bad",
                "action.params.headers.Webhook-Signature",
                "action.params.headers.Idempotency-Key",
                "action.params.headers.x-ok",
                "action.params.headers.X-Num",
                "action.params.headers.X-Line",
                "action.params.headers.X-Dup",
                "action.params.body.a[0]",
                "action.params.timeout_ms",
            ]
        );
        for bad in [json!(0), json!(60001), json!(-1), json!(1.5), json!("100")] {
            let found = errors(webhook(json!({"url": "https://x.io", "timeout_ms": bad})));
            assert_eq!(found[0].0, "action.params.timeout_ms");
        }
        assert!(Action::parse(&webhook(
            json!({"url": "https://x.io", "timeout_ms": 60000})
        ))
        .is_ok());
        assert_eq!(
            error_paths(webhook(json!({"url": "https://x.io", "headers": ["a"]}))),
            ["action.params.headers"]
        );
        assert_eq!(
            error_paths(webhook(json!({"url": 5}))),
            ["action.params.url"]
        );
    }

    #[test]
    fn a_null_body_is_sent_as_null() {
        let action = parse(webhook(json!({"url": "https://x.io", "body": null})));
        let RenderedAction::CallWebhook { body, .. } = render(&action) else {
            panic!("a webhook renders as a webhook");
        };
        assert_eq!(body, Value::Null);
    }

    #[test]
    fn send_email_validates_and_renders() {
        let action = parse(json!({
            "type": "send_email",
            "params": {
                "to": "{{ data.user.email }}",
                "subject": "Order {{ external_id }}",
                "template": "Hi {{ data.user.name }},\nyou paid {{ data.amount }}.",
                "data": {"amount": "{{ data.amount }}"}
            }
        }));
        assert!(!action.is_idempotent());
        assert_eq!(
            render(&action),
            RenderedAction::SendEmail {
                to: "ana@example.com".into(),
                subject: "Order order-123".into(),
                body: "Hi Ana,\nyou paid 250.".into(),
                data: Some(json!({"amount": 250})),
            }
        );
        let plain = parse(json!({
            "type": "send_email",
            "params": {"to": "ops@example.com", "subject": "s", "template": "t"}
        }));
        let RenderedAction::SendEmail { data, .. } = render(&plain) else {
            panic!("an email renders as an email");
        };
        assert_eq!(data, None);
    }

    #[test]
    fn send_email_rejects_bad_params() {
        assert_eq!(
            error_paths(json!({"type": "send_email", "params": {}})),
            [
                "action.params.to",
                "action.params.subject",
                "action.params.template"
            ]
        );
        let found = error_paths(json!({
            "type": "send_email",
            "params": {
                "to": "not-an-address",
                "subject": "a\r\nBcc: x@y",
                "template": "{{ data.x",
                "data": ["x"],
                "cc": "typo"
            }
        }));
        assert_eq!(
            found,
            [
                "action.params.cc",
                "action.params.to",
                "action.params.subject",
                "action.params.template",
                "action.params.data"
            ]
        );
        for bad in ["a b@c.d", "@x.io", "x@", "a@b@c"] {
            let found = error_paths(json!({
                "type": "send_email",
                "params": {"to": bad, "subject": "s", "template": "t"}
            }));
            assert_eq!(found, ["action.params.to"], "{bad}");
        }
        let found = error_paths(json!({
            "type": "send_email",
            "params": {"to": "a@b.c", "subject": "s", "template": "t", "data": {"k": "{{ x }}"}}
        }));
        assert_eq!(found, ["action.params.data.k"]);
    }

    #[test]
    fn template_errors_surface_with_full_paths() {
        let found = errors(webhook(json!({
            "url": "https://example.com/{{ data.id }",
            "body": {"user": {"name": "{{ usr }}"}}
        })));
        assert_eq!(found[0].0, "action.params.url");
        assert!(
            found[0].1.starts_with("unterminated placeholder"),
            "{}",
            found[0].1
        );
        assert_eq!(
            found[1],
            (
                "action.params.body.user.name".to_owned(),
                "unknown placeholder 'usr' (use external_id, type, event_id or data.<path>)"
                    .to_owned()
            )
        );
    }

    #[test]
    fn hash_ignores_spelling_and_defaults() {
        let hash = |action: Value| parse(action).content_hash();
        let base = hash(webhook(json!({"url": "https://x.io"})));
        assert_eq!(base.len(), 64);
        assert_eq!(
            base,
            hash(webhook(json!({"url": "https://x.io", "method": "post"})))
        );
        assert_eq!(
            base,
            hash(webhook(
                json!({"url": "https://x.io", "headers": {}, "body": default_webhook_body()})
            ))
        );
        assert_ne!(
            base,
            hash(webhook(json!({"url": "https://x.io", "method": "PUT"})))
        );
        assert_ne!(base, hash(webhook(json!({"url": "https://y.io"}))));
        assert_ne!(
            base,
            hash(webhook(json!({"url": "https://x.io", "timeout_ms": 10})))
        );
        assert_eq!(
            hash(webhook(
                json!({"url": "https://x.io", "headers": {"X-A": "1", "x-b": "2"}})
            )),
            hash(webhook(
                json!({"url": "https://x.io", "headers": {"x-b": "2", "x-a": "1"}})
            ))
        );
        assert_eq!(
            hash(json!({"type": "log"})),
            hash(json!({"type": "log", "params": {"level": "INFO", "message": ""}}))
        );
        assert_eq!(
            hash(json!({"type": "noop"})),
            hash(json!({"type": "noop", "params": {}}))
        );
        assert_ne!(hash(json!({"type": "noop"})), hash(json!({"type": "log"})));
    }

    #[test]
    fn source_is_the_action_as_given() {
        let given =
            json!({"type": "call_webhook", "params": {"url": "https://x.io", "method": "put"}});
        let action = parse(given.clone());
        assert_eq!(action.source(), &given);
        assert_eq!(action.normalized()["params"]["method"], "PUT");
    }

    #[test]
    fn rendered_actions_serialize_with_their_type() {
        let rendered = render(&parse(json!({"type": "log", "params": {"message": "m"}})));
        assert_eq!(
            serde_json::to_value(&rendered).unwrap(),
            json!({"type": "log", "level": "info", "message": "m"})
        );
        assert_eq!(
            serde_json::to_value(RenderedAction::Noop).unwrap(),
            json!({"type": "noop"})
        );
    }

    #[test]
    fn every_kind_has_an_example_that_saves_as_that_kind() {
        for kind in ActionKind::ALL {
            let example = kind.example();
            let action = Action::parse(&example)
                .unwrap_or_else(|e| panic!("the {kind} example does not save: {e:?}"));
            assert_eq!(action.kind(), *kind);
        }
    }

    #[test]
    fn closed_sets_round_trip_through_text() {
        for kind in ActionKind::ALL {
            assert_eq!(kind.as_str().parse::<ActionKind>().unwrap(), *kind);
        }
        assert_eq!("PATCH".parse::<HttpMethod>().unwrap(), HttpMethod::Patch);
        assert!("patch".parse::<HttpMethod>().is_err());
        assert_eq!("warn".parse::<LogLevel>().unwrap(), LogLevel::Warn);
    }

    #[test]
    fn a_redis_publish_renders_its_stream_and_fields_and_shows_the_key_with_the_password_masked() {
        let action = Action::parse(&json!({"type": "publish_redis", "params": {
            "url": "redis://app:hunter2@cache:6379/0", "stream": "orders:{{ type }}",
            "fields": {"order": "{{ external_id }}"}, "maxlen": 500}}))
        .expect("valid");
        let data = json!({"amount": 3});
        let rendered = action
            .render(&TemplateContext {
                event_id: 9,
                external_id: "o-9",
                event_type: "order.created",
                data: &data,
                created_at: None,
                limits: crate::logic::Limits::default(),
            })
            .expect("no transform");
        let RenderedAction::PublishRedis {
            stream,
            fields,
            maxlen,
            ..
        } = &rendered
        else {
            panic!("{rendered:?}")
        };
        assert_eq!(stream, "orders:order.created");
        assert_eq!(fields, &[("order".to_owned(), "o-9".to_owned())]);
        assert_eq!(*maxlen, Some(500));
        let shown = rendered.shown("key-1");
        assert_eq!(shown["params"]["url"], "redis://app:********@cache:6379/0");
        assert_eq!(shown["params"]["fields"]["idempotency_key"], "key-1");
        assert!(!shown.to_string().contains("hunter2"));

        let errors = Action::parse(&json!({"type": "publish_redis", "params": {
            "url": "redis://cache", "stream": "s", "fields": {"payload": "x", "ok": 3},
            "maxlen": 1.5}}))
        .expect_err("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "action.params.fields.payload",
                "action.params.fields.ok",
                "action.params.maxlen"
            ]
        );
    }

    #[test]
    fn text_params_may_be_transforms_whose_results_become_single_line_text() {
        let action = Action::parse(&json!({"type": "send_email", "params": {
            "to": "ops@example.com",
            "subject": {"$logic": {"cat": ["Order ", {"var": "event.external_id"}, ": ",
                {"*": [{"var": "data.qty"}, 2]}, " units\nBcc: x@evil"]}},
            "template": "Hello"}}))
        .expect("valid");
        assert!(action.has_transforms());
        assert_eq!(
            action.normalized()["params"]["subject"]["$logic"]["cat"][0],
            "Order "
        );
        let data = json!({"qty": 4});
        let rendered = action
            .render(&TemplateContext {
                event_id: 1,
                external_id: "o-1",
                event_type: "order.created",
                data: &data,
                created_at: None,
                limits: crate::logic::Limits::default(),
            })
            .expect("computed");
        let RenderedAction::SendEmail { subject, .. } = &rendered else {
            panic!("{rendered:?}")
        };
        assert_eq!(subject, "Order o-1: 8 units Bcc: x@evil");

        let errors = Action::parse(&json!({"type": "call_webhook", "params": {
            "url": "https://h.example/x", "headers": {"x-a": {"$logic": {"nope": []}}}}}))
        .expect_err("an unknown operation");
        assert!(
            errors[0]
                .path
                .starts_with("action.params.headers.x-a.$logic"),
            "{errors:?}"
        );
    }

    #[test]
    fn actions_are_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone + fmt::Debug>() {}
        assert_send_sync::<Action>();
        assert_send_sync::<RenderedAction>();
    }
}
