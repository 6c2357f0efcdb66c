//! A RabbitMQ source: a consumer on the source's queue with a prefetch of `max_in_flight`.
//! A message refused for good is rejected without requeue: the queue's dead-letter
//! exchange keeps it, if the queue has one.

use super::{log_disposition, RETRY_AFTER};
use crate::operations::sources::{self, Disposition, Message};
use crate::state::AppState;
use futures::{StreamExt, TryStreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use sluice_core::source::{Broker, Defaults, Source};
use std::borrow::Cow;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn consume(
    state: &AppState,
    source: &Source,
    broker: &Broker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let Broker::Rabbitmq { url, queue } = broker else {
        return Ok(());
    };
    // A broker that never answers must not hold a stop for the system's TCP timeout.
    let connecting = tokio::time::timeout(
        CONNECT_TIMEOUT,
        Connection::connect(url, ConnectionProperties::default()),
    );
    let connection = tokio::select! {
        connected = connecting => connected
            .map_err(|_| anyhow::anyhow!("no answer from the broker within {} s", CONNECT_TIMEOUT.as_secs()))??,
        () = stop.cancelled() => return Ok(()),
    };
    let channel = connection.create_channel().await?;
    let prefetch = u16::try_from(source.max_in_flight).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("sluice-{}-{}", source.name.as_str(), uuid::Uuid::new_v4());
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    state.sources.connected(source.name.as_str());
    let limit = source.max_in_flight as usize;
    let result = consumer
        .take_until(stop.cancelled())
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(limit, |delivery| async move {
            handle(state, source, delivery).await;
            Ok(())
        })
        .await;
    if let Err(error) = connection.close(200, "sluice stops consuming".into()).await {
        tracing::debug!(%error, "closing a RabbitMQ connection");
    }
    result?;
    Ok(())
}

fn header_text(value: &AMQPValue) -> Option<Cow<'_, str>> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(Cow::Borrowed(s.as_str())),
        _ => None,
    }
}

async fn handle(state: &AppState, source: &Source, delivery: Delivery) {
    let headers = delivery.properties.headers().as_ref();
    let header = |name: &str| -> Option<Cow<'_, str>> {
        headers?
            .inner()
            .iter()
            .find(|(k, _)| k.as_str().eq_ignore_ascii_case(name))
            .and_then(|(_, v)| header_text(v))
    };
    let properties = &delivery.properties;
    let disposition = sources::take(
        state,
        source,
        Message {
            header: &header,
            body: &delivery.data,
            defaults: Defaults {
                id: properties
                    .message_id()
                    .as_ref()
                    .map(|id| Cow::Borrowed(id.as_str())),
                event_type: properties
                    .kind()
                    .as_ref()
                    .map(|kind| Cow::Borrowed(kind.as_str())),
            },
        },
    )
    .await;
    log_disposition(source, &disposition);
    let acked = match disposition {
        Disposition::Stored => delivery.acker.ack(BasicAckOptions::default()).await,
        Disposition::Refused(_) => {
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await
        }
        Disposition::Retry(_) => {
            tokio::time::sleep(RETRY_AFTER).await;
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
        }
    };
    if let Err(error) = acked {
        // Unacknowledged, it is delivered again when the channel closes; its id dedupes it.
        tracing::warn!(source = %source.name.as_str(), %error, "cannot acknowledge a message");
    }
}
