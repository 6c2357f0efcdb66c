//! The `publish_redis` executor: `XADD` to a stream, the entry carrying the payload (JSON
//! text), the event type and the idempotency key (an entry of unknown outcome added again
//! carries the same key, for consumers to dedupe), trimmed with `MAXLEN ~` when the action
//! bounds the stream. One connection per URL; it reconnects by itself.

use super::connections::Connections;
use super::{ActionContext, ActionError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct RedisPublisher {
    connections: Connections<ConnectionManager>,
}

pub struct Publish<'a> {
    pub url: &'a str,
    pub stream: &'a str,
    pub fields: &'a [(String, String)],
    pub payload: &'a serde_json::Value,
    pub maxlen: Option<u64>,
}

impl RedisPublisher {
    pub async fn publish(
        &self,
        publish: Publish<'_>,
        ctx: &ActionContext<'_>,
    ) -> Result<(), ActionError> {
        let stream = publish.stream;
        if stream.is_empty() {
            return Err(ActionError::Permanent(
                "the stream key rendered empty".into(),
            ));
        }
        let mut connection = self
            .connections
            .get(publish.url, |_| true, || connect(publish.url))
            .await?;
        let payload =
            serde_json::to_string(publish.payload).expect("a JSON value always serializes");
        let mut command = redis::cmd("XADD");
        command.arg(stream);
        if let Some(maxlen) = publish.maxlen {
            command.arg("MAXLEN").arg("~").arg(maxlen);
        }
        command
            .arg("*")
            .arg("payload")
            .arg(payload)
            .arg("type")
            .arg(ctx.event_type)
            .arg("idempotency_key")
            .arg(ctx.idempotency_key);
        for (name, value) in publish.fields {
            command.arg(name).arg(value);
        }
        command
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(|error| classify(stream, &error))
    }
}

async fn connect(url: &str) -> Result<ConnectionManager, ActionError> {
    let target = super::target_of(url).unwrap_or_else(|| "the server".into());
    let client = redis::Client::open(url)
        .map_err(|_| ActionError::Permanent("the Redis URL does not parse".into()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        // Reconnecting is tried again on the next publish; the target's breaker paces those.
        .set_number_of_retries(1);
    tokio::time::timeout(
        CONNECT_TIMEOUT * 2,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| ActionError::Retryable(format!("no answer from {target}")))?
    .map_err(|error| ActionError::Retryable(format!("cannot connect to {target}: {error}")))
}

/// A key holding something else than a stream, or a user not allowed to write it, fails the
/// same way every time; anything else (a dropped connection, a timeout, `OOM`,
/// `LOADING`) may pass later.
fn classify(stream: &str, error: &redis::RedisError) -> ActionError {
    match error.code() {
        Some("WRONGTYPE") => ActionError::Permanent(format!(
            "the key {stream} holds something else than a stream"
        )),
        Some(code @ ("NOPERM" | "NOAUTH" | "WRONGPASS")) => {
            ActionError::Permanent(format!("Redis refused XADD to {stream}: {code}"))
        }
        _ => ActionError::Retryable(format!("XADD to {stream} failed: {error}")),
    }
}
