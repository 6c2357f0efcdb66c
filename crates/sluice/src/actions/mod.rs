//! The action executors: run one [`RenderedAction`] for one event and say whether a failure
//! is worth retrying. The worker owns delivery bookkeeping (started/applied records, dedupe,
//! backoff); this module only performs the side effect.

mod connections;
mod email;
pub mod guard;
mod nats;
mod rabbitmq;
mod redis;

pub use nats::{connect_options as nats_connect_options, percent_decode};
mod webhook;

use crate::config::{EmailMode, Settings};
use sluice_core::action::{LogLevel, RenderedAction};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What the executors need from the configuration.
#[derive(Clone)]
pub struct ActionConfig {
    /// For webhooks whose action sets no `timeout_ms`.
    pub webhook_timeout: Duration,
    /// `whsec_<base64>`; webhooks are unsigned without it.
    pub webhook_secret: Option<String>,
    /// Let webhooks reach loopback, private and link-local addresses.
    pub allow_private: bool,
    pub email_mode: EmailMode,
    /// Only read when `email_mode` is `Smtp`.
    pub smtp_url: Option<String>,
    pub email_from: String,
}

impl ActionConfig {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            webhook_timeout: Duration::from_millis(s.webhook_timeout_ms),
            webhook_secret: s.webhook_secret.clone(),
            allow_private: s.webhook_allow_private,
            email_mode: s.email_mode,
            smtp_url: s.smtp_url.clone(),
            email_from: s.email_from.clone(),
        }
    }
}

impl ActionConfig {
    /// `smtp://host:port` of the SMTP server, when emails are really sent.
    pub fn smtp_target(&self) -> Option<String> {
        match (self.email_mode, &self.smtp_url) {
            (EmailMode::Smtp, Some(url)) => target_of(url),
            _ => None,
        }
    }
}

/// Keeps the signing secret and SMTP credentials out of logs.
impl fmt::Debug for ActionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "<set>" } else { "<unset>" };
        f.debug_struct("ActionConfig")
            .field("webhook_timeout", &self.webhook_timeout)
            .field("webhook_secret", &redacted(self.webhook_secret.is_some()))
            .field("allow_private", &self.allow_private)
            .field("email_mode", &self.email_mode)
            .field("smtp_url", &redacted(self.smtp_url.is_some()))
            .field("email_from", &self.email_from)
            .finish()
    }
}

/// Who the action runs for: logged with it and, for the non-idempotent types, sent along so
/// receivers can dedupe.
#[derive(Debug, Clone, Copy)]
pub struct ActionContext<'a> {
    pub event_id: i64,
    pub external_id: &'a str,
    pub event_type: &'a str,
    pub rule_id: i64,
    pub rule_name: &'a str,
    pub rule_version: i64,
    /// Stable per event × rule × action content (`sluice_core::idempotency::idempotency_key`).
    pub idempotency_key: &'a str,
    /// The W3C `traceparent` of the action's span, sent with it; `None` while traces are off.
    pub traceparent: Option<&'a str>,
}

/// A failed action. The message goes into the event's history as operators see it, so it names
/// what failed and how, briefly.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Might succeed later (a 5xx, a timeout, a refused connection): the event is retried.
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way every time (a 4xx, an invalid address, a refused target).
    #[error("{0}")]
    Permanent(String),
    /// The receiver asked for fewer requests (a 429), and how long to hold off if it said
    /// (`Retry-After`): retried, and the target's pace drops (see `delivery`).
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: Option<std::time::Duration>,
    },
}

impl ActionError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ActionError::Retryable(_) | ActionError::Throttled { .. }
        )
    }
}

/// The executors, built once per process and shared by the worker's tasks: one HTTP client (so
/// connections are pooled) and one SMTP transport. Cloning is cheap.
#[derive(Clone)]
pub struct Actions {
    inner: Arc<Inner>,
}

struct Inner {
    webhook: webhook::WebhookSender,
    email: email::EmailSender,
    nats: nats::NatsPublisher,
    rabbitmq: rabbitmq::AmqpPublisher,
    redis: redis::RedisPublisher,
    /// `smtp://host:port` of the SMTP server, when emails are really sent.
    smtp_target: Option<String>,
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actions").finish_non_exhaustive()
    }
}

impl Actions {
    /// Fails on configuration the executors cannot use: a secret that is not `whsec_<base64>`,
    /// an unusable SMTP URL (or none with `EmailMode::Smtp`), an invalid sender address.
    pub fn new(config: ActionConfig) -> anyhow::Result<Actions> {
        Ok(Actions {
            inner: Arc::new(Inner {
                webhook: webhook::WebhookSender::new(&config)?,
                email: email::EmailSender::new(&config)?,
                nats: nats::NatsPublisher::default(),
                rabbitmq: rabbitmq::AmqpPublisher::default(),
                redis: redis::RedisPublisher::default(),
                smtp_target: config.smtp_target(),
            }),
        })
    }

    /// The receiver an action delivers to — `scheme://host:port` of a webhook's URL, the SMTP
    /// server of an email — whose circuit breaker and in-flight cap it goes through; `None`
    /// for actions that deliver nowhere (log, noop, emails not really sent).
    pub fn target(&self, action: &RenderedAction) -> Option<String> {
        target(action, self.inner.smtp_target.as_deref())
    }

    pub async fn run(
        &self,
        action: &RenderedAction,
        ctx: &ActionContext<'_>,
    ) -> Result<(), ActionError> {
        match action {
            RenderedAction::Log { level, message } => {
                log(*level, message, ctx);
                Ok(())
            }
            RenderedAction::Noop => Ok(()),
            RenderedAction::CallWebhook {
                url,
                method,
                headers,
                body,
                timeout_ms,
            } => {
                self.inner
                    .webhook
                    .send(
                        webhook::Request {
                            url,
                            method: *method,
                            headers,
                            body,
                            timeout_ms: *timeout_ms,
                        },
                        ctx,
                    )
                    .await
            }
            RenderedAction::SendEmail {
                to, subject, body, ..
            } => self.inner.email.send(to, subject, body, ctx).await,
            RenderedAction::PublishNats {
                url,
                subject,
                headers,
                payload,
            } => {
                self.inner
                    .nats
                    .publish(
                        nats::Publish {
                            url,
                            subject,
                            headers,
                            payload,
                        },
                        ctx,
                    )
                    .await
            }
            RenderedAction::PublishRabbitmq {
                url,
                exchange,
                routing_key,
                headers,
                payload,
                properties,
            } => {
                self.inner
                    .rabbitmq
                    .publish(
                        rabbitmq::Publish {
                            url,
                            exchange,
                            routing_key,
                            headers,
                            payload,
                            properties,
                        },
                        ctx,
                    )
                    .await
            }
            RenderedAction::PublishRedis {
                url,
                stream,
                fields,
                payload,
                maxlen,
            } => {
                self.inner
                    .redis
                    .publish(
                        redis::Publish {
                            url,
                            stream,
                            fields,
                            payload,
                            maxlen: *maxlen,
                        },
                        ctx,
                    )
                    .await
            }
        }
    }
}

/// The receiver an action delivers to (see [`Actions::target`]), `smtp_target` being the
/// SMTP server's when emails are really sent.
pub fn target(action: &RenderedAction, smtp_target: Option<&str>) -> Option<String> {
    match action {
        RenderedAction::CallWebhook { url, .. } => target_of(url),
        RenderedAction::SendEmail { .. } => smtp_target.map(str::to_owned),
        RenderedAction::PublishNats { url, .. }
        | RenderedAction::PublishRabbitmq { url, .. }
        | RenderedAction::PublishRedis { url, .. } => target_of(url),
        RenderedAction::Log { .. } | RenderedAction::Noop => None,
    }
}

/// Whether `target` (`scheme://host:port`, see [`target_of`]) is a broker a publish action
/// goes to (NATS, RabbitMQ, Redis), rather than a webhook's receiver or an SMTP server.
pub fn is_broker(target: &str) -> bool {
    let scheme = target.split_once("://").map_or("", |(scheme, _)| scheme);
    matches!(
        scheme,
        "nats" | "tls" | "amqp" | "amqps" | "redis" | "rediss"
    )
}

/// `scheme://host:port` of a URL (the scheme's usual port when it names none; 587 for
/// `smtp`, 465 for `smtps`); `None` if it does not parse.
pub fn target_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let port = url.port_or_known_default().or(match url.scheme() {
        "smtp" => Some(587),
        "smtps" => Some(465),
        "nats" | "tls" => Some(4222),
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "redis" | "rediss" => Some(6379),
        _ => None,
    })?;
    Some(format!("{}://{host}:{port}", url.scheme()))
}

fn log(level: LogLevel, message: &str, ctx: &ActionContext<'_>) {
    // An empty message is the default: the line's fields still say which event and rule.
    let message = if message.is_empty() {
        "log action"
    } else {
        message
    };
    macro_rules! line {
        ($macro:ident) => {
            tracing::$macro!(
                event_id = ctx.event_id,
                external_id = ctx.external_id,
                event_type = ctx.event_type,
                rule_id = ctx.rule_id,
                rule_name = ctx.rule_name,
                rule_version = ctx.rule_version,
                "{message}"
            )
        };
    }
    match level {
        LogLevel::Info => line!(info),
        LogLevel::Warn => line!(warn),
        LogLevel::Error => line!(error),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub const KEY: &str = "evt_42_rule_7_0123456789abcdef";

    pub fn ctx() -> ActionContext<'static> {
        ActionContext {
            event_id: 42,
            external_id: "order-123",
            event_type: "order.created",
            rule_id: 7,
            rule_name: "notify",
            rule_version: 3,
            idempotency_key: KEY,
            traceparent: None,
        }
    }

    pub fn config() -> ActionConfig {
        ActionConfig {
            webhook_timeout: Duration::from_secs(5),
            webhook_secret: None,
            allow_private: true,
            email_mode: EmailMode::Log,
            smtp_url: None,
            email_from: "sluice@example.com".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{config, ctx};
    use super::*;

    #[tokio::test]
    async fn log_and_noop_succeed() {
        let actions = Actions::new(config()).expect("the test config is valid");
        for level in LogLevel::ALL {
            let action = RenderedAction::Log {
                level: *level,
                message: "order.created for 250".into(),
            };
            actions
                .run(&action, &ctx())
                .await
                .expect("logging cannot fail");
        }
        actions
            .run(
                &RenderedAction::Log {
                    level: LogLevel::Info,
                    message: String::new(),
                },
                &ctx(),
            )
            .await
            .expect("an empty message is fine");
        actions
            .run(&RenderedAction::Noop, &ctx())
            .await
            .expect("noop cannot fail");
    }

    #[test]
    fn errors_say_whether_to_retry() {
        assert!(ActionError::Retryable("x".into()).is_retryable());
        assert!(!ActionError::Permanent("x".into()).is_retryable());
        assert_eq!(ActionError::Permanent("why".into()).to_string(), "why");
    }

    #[test]
    fn bad_configuration_is_an_error() {
        let mut bad_secret = config();
        bad_secret.webhook_secret = Some("whsec_not*base64".into());
        let error = Actions::new(bad_secret).expect_err("the secret is not base64");
        assert!(error.to_string().contains("WEBHOOK_SECRET"), "{error}");

        let mut no_prefix = config();
        no_prefix.webhook_secret = Some("c2VjcmV0".into());
        assert!(Actions::new(no_prefix).is_err());

        let mut no_smtp_url = config();
        no_smtp_url.email_mode = EmailMode::Smtp;
        assert!(Actions::new(no_smtp_url).is_err());

        let mut bad_smtp_url = config();
        bad_smtp_url.email_mode = EmailMode::Smtp;
        bad_smtp_url.smtp_url = Some("http://mail.example.com".into());
        assert!(Actions::new(bad_smtp_url).is_err());

        let mut bad_from = config();
        bad_from.email_from = "not an address".into();
        let error = Actions::new(bad_from).expect_err("the sender is invalid");
        assert!(error.to_string().contains("EMAIL_FROM"), "{error}");
    }

    #[test]
    fn debug_hides_secrets() {
        let mut config = config();
        config.webhook_secret = Some("whsec_c2VjcmV0".into());
        config.smtp_url = Some("smtp://user:hunter2@mail.example.com".into());
        let text = format!("{config:?}");
        assert!(
            !text.contains("c2VjcmV0") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn from_settings_copies_the_action_settings() {
        let settings = Settings::from_args([
            "--webhook-timeout-ms",
            "2500",
            "--webhook-allow-private",
            "--email-mode",
            "disabled",
            "--email-from",
            "ops@example.com",
        ])
        .expect("the flags are valid");
        let config = ActionConfig::from_settings(&settings);
        assert_eq!(config.webhook_timeout, Duration::from_millis(2500));
        assert!(config.allow_private);
        assert_eq!(config.email_mode, EmailMode::Disabled);
        assert_eq!(config.email_from, "ops@example.com");
    }
}

#[cfg(test)]
mod target_tests {
    use super::{is_broker, target_of};

    #[test]
    fn a_target_is_scheme_host_and_port() {
        assert_eq!(
            target_of("https://Hooks.Example.com/a/b?c=1").as_deref(),
            Some("https://hooks.example.com:443")
        );
        assert_eq!(
            target_of("http://127.0.0.1:8080/x").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            target_of("smtp://user:pw@mail.example.com").as_deref(),
            Some("smtp://mail.example.com:587")
        );
        assert_eq!(target_of("not a url"), None);
    }

    #[test]
    fn brokers_are_told_from_receivers_by_their_target() {
        for url in [
            "nats://127.0.0.1:4222",
            "amqp://guest:guest@127.0.0.1/%2f",
            "rediss://cache.example.com",
        ] {
            let target = target_of(url).expect("parses");
            assert!(is_broker(&target), "{target}");
        }
        for url in ["https://hooks.example.com/x", "smtp://mail.example.com"] {
            let target = target_of(url).expect("parses");
            assert!(!is_broker(&target), "{target}");
        }
    }
}
