//! The `publish_nats` executor: a JetStream publish that waits for the stream's ack, with
//! `Nats-Msg-Id` set to the idempotency key, so a publish sent again (a retry after a crash,
//! a replay) is dropped by JetStream's de-duplication window. One client per URL, kept and
//! shared; the client reconnects by itself.

use super::connections::Connections;
use super::{ActionContext, ActionError};
use std::time::Duration;

/// How long a publish waits for the stream's ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct NatsPublisher {
    clients: Connections<async_nats::Client>,
}

pub struct Publish<'a> {
    pub url: &'a str,
    pub subject: &'a str,
    pub headers: &'a [(String, String)],
    pub payload: &'a serde_json::Value,
}

impl NatsPublisher {
    /// The client reconnects by itself, so one kept is always used.
    async fn client(&self, url: &str) -> Result<async_nats::Client, ActionError> {
        self.clients.get(url, |_| true, || connect(url)).await
    }

    pub async fn publish(
        &self,
        publish: Publish<'_>,
        ctx: &ActionContext<'_>,
    ) -> Result<(), ActionError> {
        let subject = publish.subject;
        if subject.is_empty()
            || subject
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '*' | '>'))
        {
            return Err(ActionError::Permanent(format!(
                "'{subject}' is not a subject one can publish to"
            )));
        }
        let client = self.client(publish.url).await?;
        let jetstream = async_nats::jetstream::new(client);
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in publish.headers {
            headers.insert(name.as_str(), value.as_str());
        }
        headers.insert("Nats-Msg-Id", ctx.idempotency_key);
        if let Some(traceparent) = ctx.traceparent {
            headers.insert("traceparent", traceparent);
        }
        let payload = serde_json::to_vec(publish.payload).expect("a JSON value always serializes");
        let ack = jetstream
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await
            .map_err(|error| {
                ActionError::Retryable(format!("cannot publish to {subject}: {error}"))
            })?;
        match tokio::time::timeout(ACK_TIMEOUT, ack).await {
            Err(_) => Err(ActionError::Retryable(format!(
                "no ack from JetStream for {subject} within {} s",
                ACK_TIMEOUT.as_secs()
            ))),
            Ok(Err(error)) => {
                let text = error.to_string();
                if text.contains("no responders") || text.contains("no stream found") {
                    // No stream takes the subject: the same every time until one is made.
                    Err(ActionError::Permanent(format!(
                        "no JetStream stream takes subject {subject}"
                    )))
                } else {
                    Err(ActionError::Retryable(format!(
                        "JetStream refused the message for {subject}: {text}"
                    )))
                }
            }
            Ok(Ok(_)) => Ok(()),
        }
    }
}

async fn connect(url: &str) -> Result<async_nats::Client, ActionError> {
    let (address, options) = connect_options(url)
        .map_err(|_| ActionError::Permanent("the NATS URL does not parse".into()))?;
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        options
            .connection_timeout(CONNECT_TIMEOUT)
            .name("sluice publish")
            .connect(address.as_str()),
    )
    .await
    .map_err(|_| ActionError::Retryable(format!("no answer from {address}")))?
    .map_err(|error| ActionError::Retryable(format!("cannot connect to {address}: {error}")))
}

/// The server's address without credentials, and options carrying them: `user:password@`
/// as a user and password, a lone `token@` as a token.
pub fn connect_options(url: &str) -> anyhow::Result<(String, async_nats::ConnectOptions)> {
    let parsed = reqwest::Url::parse(url)?;
    let decode = |text: &str| percent_decode(text);
    let options = match (parsed.username(), parsed.password()) {
        ("", _) => async_nats::ConnectOptions::new(),
        (user, Some(password)) => {
            async_nats::ConnectOptions::new().user_and_password(decode(user), decode(password))
        }
        (token, None) => async_nats::ConnectOptions::new().token(decode(token)),
    };
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    let port = parsed.port().unwrap_or(4222);
    Ok((format!("{}://{host}:{port}", parsed.scheme()), options))
}

/// `%XX` escapes of a URL's user or password decoded.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_for_the_options() {
        let (address, _) = connect_options("nats://user:p%40ss@nats.example:4333").unwrap();
        assert_eq!(address, "nats://nats.example:4333");
        let (address, _) = connect_options("tls://t0ken@nats.example").unwrap();
        assert_eq!(address, "tls://nats.example:4222");
        assert_eq!(percent_decode("p%40ss%2"), "p@ss%2");
    }
}
