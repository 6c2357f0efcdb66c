//! The `send_email` executor: depending on `EMAIL_MODE`, refuse, log instead of sending (a
//! simulated send, for development), or send a plain-text message over SMTP.

use super::{ActionConfig, ActionContext, ActionError};
use crate::config::EmailMode;
use anyhow::Context as _;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub(crate) struct EmailSender {
    mode: Mode,
    from: Mailbox,
}

enum Mode {
    Disabled,
    Log,
    /// Built once, at start.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl EmailSender {
    pub(crate) fn new(config: &ActionConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config.email_from.parse().with_context(|| {
            format!(
                "EMAIL_FROM '{}' is not a valid email address",
                config.email_from
            )
        })?;
        let mode = match config.email_mode {
            EmailMode::Smtp => {
                let url = config
                    .smtp_url
                    .as_deref()
                    .context("EMAIL_MODE=smtp needs SMTP_URL (e.g. smtp://user:pass@host:587)")?;
                // The error never repeats the URL, which may hold a password.
                let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .context("SMTP_URL is not a usable smtp:// or smtps:// URL")?;
                Mode::Smtp(builder.build())
            }
            EmailMode::Disabled => Mode::Disabled,
            EmailMode::Log => Mode::Log,
        };
        Ok(Self { mode, from })
    }

    pub(crate) async fn send(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        ctx: &ActionContext<'_>,
    ) -> Result<(), ActionError> {
        match &self.mode {
            // Permanent rather than a quiet success: operators see it in the history, and a
            // later replay with email enabled is not deduped against a send that never was.
            Mode::Disabled => Err(ActionError::Permanent(
                "email is disabled (EMAIL_MODE=disabled); not sent".into(),
            )),
            Mode::Log => {
                tracing::info!(
                    to,
                    subject,
                    body_len = body.len(),
                    event_id = ctx.event_id,
                    rule_id = ctx.rule_id,
                    rule_version = ctx.rule_version,
                    idempotency_key = ctx.idempotency_key,
                    "email not sent (EMAIL_MODE=log)"
                );
                Ok(())
            }
            Mode::Smtp(transport) => {
                let message = self.message(to, subject, body, ctx.idempotency_key)?;
                transport
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|error| smtp_error(to, &error))
            }
        }
    }

    fn message(
        &self,
        to: &str,
        subject: &str,
        body: &str,
        idempotency_key: &str,
    ) -> Result<Message, ActionError> {
        let recipient: Mailbox = to.parse().map_err(|error| {
            ActionError::Permanent(format!("email recipient '{to}' is invalid: {error}"))
        })?;
        Message::builder()
            .from(self.from.clone())
            .to(recipient)
            .subject(subject)
            // Both carry the idempotency key, so a receiving system (or a person) can tell a
            // re-send apart from a new message.
            .message_id(Some(format!(
                "<{idempotency_key}@{}>",
                self.from.email.domain()
            )))
            .header(IdempotencyKeyHeader(idempotency_key.to_owned()))
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|error| ActionError::Permanent(format!("email cannot be built: {error}")))
    }
}

/// 5xx replies and client-side failures will not change on retry; 4xx replies, connection and
/// TLS problems and timeouts might.
fn smtp_error(to: &str, error: &lettre::transport::smtp::Error) -> ActionError {
    if error.is_permanent() || error.is_client() {
        ActionError::Permanent(format!("email to {to} rejected: {error}"))
    } else {
        ActionError::Retryable(format!("email to {to} failed: {error}"))
    }
}

#[derive(Debug, Clone)]
struct IdempotencyKeyHeader(String);

impl Header for IdempotencyKeyHeader {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Sluice-Idempotency-Key")
    }

    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(text.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::{config, ctx, KEY};
    use crate::actions::Actions;
    use sluice_core::action::RenderedAction;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    #[derive(Debug, Default, Clone)]
    struct Received {
        mail_from: Vec<String>,
        rcpt_to: Vec<String>,
        data: Vec<String>,
    }

    /// A minimal SMTP server: greets, accepts everything except that RCPT is answered with
    /// `rcpt_reply`, and records what it got.
    async fn fake_smtp(rcpt_reply: &'static str) -> (SocketAddr, Arc<Mutex<Received>>) {
        let received = Arc::new(Mutex::new(Received::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let reply = |text: &str| format!("{text}\r\n");
                    if write
                        .write_all(reply("220 fake ESMTP").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                    while let Ok(Some(line)) = lines.next_line().await {
                        let command = line.to_ascii_uppercase();
                        let answer = if command.starts_with("EHLO") || command.starts_with("HELO") {
                            "250 fake"
                        } else if command.starts_with("MAIL FROM:") {
                            log.lock()
                                .expect("smtp log")
                                .mail_from
                                .push(line[10..].into());
                            "250 OK"
                        } else if command.starts_with("RCPT TO:") {
                            log.lock().expect("smtp log").rcpt_to.push(line[8..].into());
                            rcpt_reply
                        } else if command == "DATA" {
                            write
                                .write_all(reply("354 end with .").as_bytes())
                                .await
                                .expect("write to the client");
                            let mut data = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            log.lock().expect("smtp log").data.push(data);
                            "250 OK queued"
                        } else if command == "QUIT" {
                            let _ = write.write_all(reply("221 bye").as_bytes()).await;
                            return;
                        } else if command == "RSET" || command == "NOOP" {
                            "250 OK"
                        } else {
                            "502 unknown command"
                        };
                        if write.write_all(reply(answer).as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, received)
    }

    fn email(to: &str) -> RenderedAction {
        RenderedAction::SendEmail {
            to: to.into(),
            subject: "Order order-123".into(),
            body: "Hi Ana,\nyou paid 250.".into(),
            data: None,
        }
    }

    fn smtp_config(addr: SocketAddr) -> crate::actions::ActionConfig {
        let mut config = config();
        config.email_mode = EmailMode::Smtp;
        config.smtp_url = Some(format!("smtp://{addr}"));
        config
    }

    async fn run(
        config: crate::actions::ActionConfig,
        action: RenderedAction,
    ) -> Result<(), ActionError> {
        Actions::new(config)
            .expect("the test config is valid")
            .run(&action, &ctx())
            .await
    }

    #[tokio::test]
    async fn log_mode_pretends() {
        run(config(), email("ana@example.com"))
            .await
            .expect("log mode succeeds");
    }

    #[tokio::test]
    async fn disabled_mode_fails_permanently() {
        let mut config = config();
        config.email_mode = EmailMode::Disabled;
        let error = run(config, email("ana@example.com"))
            .await
            .expect_err("email is disabled");
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "email is disabled (EMAIL_MODE=disabled); not sent"
        );
    }

    #[tokio::test]
    async fn sends_over_smtp() {
        let (addr, received) = fake_smtp("250 OK").await;
        run(smtp_config(addr), email("Ana <ana@example.com>"))
            .await
            .expect("the server accepts the message");
        let received = received.lock().expect("smtp log").clone();
        assert_eq!(received.mail_from, ["<sluice@example.com>"]);
        assert_eq!(received.rcpt_to, ["<ana@example.com>"]);
        let data = &received.data[0];
        for expected in [
            "Subject: Order order-123\n",
            "From: sluice@example.com\n",
            "To: Ana <ana@example.com>\n",
            &format!("X-Sluice-Idempotency-Key: {KEY}\n"),
            &format!("Message-ID: <{KEY}@example.com>\n"),
            "Content-Type: text/plain; charset=utf-8\n",
            "\nHi Ana,\nyou paid 250.\n",
        ] {
            assert!(data.contains(expected), "{expected:?} not in:\n{data}");
        }
    }

    #[tokio::test]
    async fn smtp_rejections_are_classified() {
        let (addr, _) = fake_smtp("550 5.1.1 no such user").await;
        let error = run(smtp_config(addr), email("ghost@example.com"))
            .await
            .expect_err("the recipient is rejected");
        assert!(!error.is_retryable());
        assert_eq!(
            error.to_string(),
            "email to ghost@example.com rejected: permanent error (550): 5.1.1 no such user"
        );

        let (addr, _) = fake_smtp("451 4.3.0 try again later").await;
        let error = run(smtp_config(addr), email("ana@example.com"))
            .await
            .expect_err("the recipient is deferred");
        assert!(error.is_retryable(), "{error}");
        assert!(error.to_string().contains("451"), "{error}");
    }

    #[tokio::test]
    async fn an_unreachable_smtp_server_is_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        drop(listener);
        let error = run(smtp_config(addr), email("ana@example.com"))
            .await
            .expect_err("nothing listens");
        assert!(error.is_retryable(), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("email to ana@example.com failed: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn an_invalid_recipient_is_permanent() {
        let (addr, received) = fake_smtp("250 OK").await;
        let error = run(smtp_config(addr), email("not an address"))
            .await
            .expect_err("the address is invalid");
        assert!(!error.is_retryable());
        assert!(
            error
                .to_string()
                .starts_with("email recipient 'not an address' is invalid"),
            "{error}"
        );
        assert!(received.lock().expect("smtp log").rcpt_to.is_empty());
    }

    #[test]
    fn smtps_urls_build() {
        let mut config = config();
        config.email_mode = EmailMode::Smtp;
        config.smtp_url = Some("smtps://user:pw@mail.example.com".into());
        Actions::new(config.clone()).expect("smtps is supported");
        config.smtp_url = Some("smtp://mail.example.com:587?tls=required".into());
        Actions::new(config).expect("STARTTLS is supported");
    }
}
