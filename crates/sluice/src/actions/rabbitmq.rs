//! The `publish_rabbitmq` executor: a persistent, mandatory publish on a channel with
//! publisher confirms, `message_id` set to the idempotency key (a publish of unknown outcome
//! sent again carries the same id, for consumers to dedupe). One connection and channel per
//! URL, kept and opened again when closed.

use super::connections::Connections;
use super::{ActionContext, ActionError};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use sluice_core::action::AmqpProperties;
use std::sync::Arc;
use std::time::Duration;

/// AMQP short strings (routing key, header names, most properties) hold at most 255 bytes;
/// the client library would write a longer one as a corrupt frame.
fn short(what: &str, text: &str) -> Result<ShortString, ActionError> {
    if text.len() > 255 {
        return Err(ActionError::Permanent(format!(
            "{what} is {} bytes after rendering; AMQP allows at most 255",
            text.len()
        )));
    }
    Ok(text.into())
}

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct AmqpPublisher {
    /// The connection is kept with its channel: dropping it would close both.
    channels: Connections<(Arc<Connection>, Channel)>,
}

pub struct Publish<'a> {
    pub url: &'a str,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub headers: &'a [(String, String)],
    pub payload: &'a serde_json::Value,
    pub properties: &'a AmqpProperties<String>,
}

impl AmqpPublisher {
    /// The kept channel while it is open; a new connection and channel otherwise.
    async fn channel(&self, url: &str) -> Result<Channel, ActionError> {
        let (_, channel) = self
            .channels
            .get(
                url,
                |(_, channel)| channel.status().connected(),
                || connect(url),
            )
            .await?;
        Ok(channel)
    }

    pub async fn publish(
        &self,
        publish: Publish<'_>,
        ctx: &ActionContext<'_>,
    ) -> Result<(), ActionError> {
        let mut headers = FieldTable::default();
        for (name, value) in publish.headers {
            headers.insert(
                short("a header name", name)?,
                AMQPValue::LongString(value.as_str().into()),
            );
        }
        if let Some(traceparent) = ctx.traceparent {
            headers.insert(
                "traceparent".into(),
                AMQPValue::LongString(traceparent.into()),
            );
        }
        let given = publish.properties;
        let content_type = given.content_type.as_deref().unwrap_or("application/json");
        let timestamp = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        let mut properties = BasicProperties::default()
            .with_message_id(ctx.idempotency_key.into())
            .with_type(ctx.event_type.into())
            .with_content_type(content_type.into())
            .with_delivery_mode(2)
            .with_timestamp(timestamp)
            .with_headers(headers);
        if let Some(app_id) = &given.app_id {
            properties = properties.with_app_id(app_id.as_str().into());
        }
        if let Some(correlation_id) = &given.correlation_id {
            properties = properties.with_correlation_id(short("correlation_id", correlation_id)?);
        }
        if let Some(reply_to) = &given.reply_to {
            properties = properties.with_reply_to(short("reply_to", reply_to)?);
        }
        if let Some(priority) = given.priority {
            properties = properties.with_priority(priority);
        }
        if let Some(expiration_ms) = given.expiration_ms {
            properties = properties.with_expiration(expiration_ms.to_string().into());
        }
        let payload = serde_json::to_vec(publish.payload).expect("a JSON value always serializes");
        let (exchange, key) = (publish.exchange, publish.routing_key);
        let routing_key = short("the routing key", key)?;
        let channel = self.channel(publish.url).await?;
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &payload,
                properties,
            )
            .await
            .map_err(|error| ActionError::Retryable(format!("cannot publish: {error}")))?;
        let shown = if exchange.is_empty() {
            "(default)"
        } else {
            exchange
        };
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Err(_) => Err(ActionError::Retryable(format!(
                "no confirm from the broker within {} s",
                CONFIRM_TIMEOUT.as_secs()
            ))),
            Ok(Err(error)) => Err(ActionError::Retryable(format!(
                "the publish to exchange {shown} failed: {error}"
            ))),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(ActionError::Permanent(format!(
                "no queue takes routing key '{key}' on exchange {shown}"
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(ActionError::Retryable(format!(
                "the broker refused the message for exchange {shown}"
            ))),
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
        }
    }
}

async fn connect(url: &str) -> Result<(Arc<Connection>, Channel), ActionError> {
    let target = super::target_of(url).unwrap_or_else(|| "the broker".into());
    let connection = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| ActionError::Retryable(format!("no answer from {target}")))?
    .map_err(|error| ActionError::Retryable(format!("cannot connect to {target}: {error}")))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|error| ActionError::Retryable(format!("cannot open a channel: {error}")))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|error| ActionError::Retryable(format!("cannot enable confirms: {error}")))?;
    Ok((Arc::new(connection), channel))
}
