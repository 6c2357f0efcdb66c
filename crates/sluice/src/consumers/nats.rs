//! A NATS JetStream source: a durable pull consumer (created if missing) on the source's
//! stream, acknowledging explicitly.

use super::{log_disposition, RETRY_AFTER};
use crate::actions::nats_connect_options as connect_options;
use crate::operations::sources::{self, Disposition, Message};
use crate::state::AppState;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use futures::{StreamExt, TryStreamExt};
use sluice_core::source::{Broker, Defaults, Source};
use std::borrow::Cow;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(super) async fn consume(
    state: &AppState,
    source: &Source,
    broker: &Broker,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let Broker::Nats {
        url,
        stream,
        subject,
        durable,
        ack_wait_s,
    } = broker
    else {
        return Ok(());
    };
    // The client reads no credentials from a URL: they go in the options, the URL without them.
    let (address, options) = connect_options(url)?;
    let client = options
        .connection_timeout(Duration::from_secs(5))
        .name(format!("sluice source {}", source.name.as_str()))
        .connect(address.as_str())
        .await?;
    let jetstream = async_nats::jetstream::new(client);
    let stream_handle = jetstream.get_stream(stream).await?;
    let wanted = pull::Config {
        durable_name: Some(durable.clone()),
        filter_subject: subject.clone().unwrap_or_default(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(u64::from(*ack_wait_s)),
        max_ack_pending: i64::from(source.max_in_flight),
        ..Default::default()
    };
    let mut consumer: PullConsumer = stream_handle
        .get_or_create_consumer(durable, wanted.clone())
        .await?;
    let existing = &consumer.cached_info().config;
    if existing.ack_policy != AckPolicy::Explicit {
        // Acknowledging after the commit is the whole guarantee: never consume without it.
        anyhow::bail!(
            "the durable consumer '{durable}' exists with ack policy {:?}; sluice needs \
             explicit acks (delete it, or name another durable)",
            existing.ack_policy
        );
    }
    if existing.filter_subject != wanted.filter_subject
        || existing.ack_wait != wanted.ack_wait
        || existing.max_ack_pending != wanted.max_ack_pending
    {
        consumer = stream_handle.update_consumer(wanted).await?;
    }
    state.sources.connected(source.name.as_str());
    let messages = consumer
        .stream()
        .max_messages_per_batch(source.max_in_flight as usize)
        .messages()
        .await?;
    let limit = source.max_in_flight as usize;
    // A broken stream ends the consumption (the caller connects again); messages in hand
    // then are not acknowledged, so they come back, and their ids dedupe them.
    messages
        .take_until(stop.cancelled())
        .map_err(anyhow::Error::from)
        .try_for_each_concurrent(limit, |message| async move {
            handle(state, source, stream, message).await;
            Ok(())
        })
        .await
}

async fn handle(
    state: &AppState,
    source: &Source,
    stream: &str,
    message: async_nats::jetstream::Message,
) {
    let headers = message.headers.as_ref();
    let header = |name: &str| -> Option<Cow<'_, str>> {
        let headers = headers?;
        headers
            .get(name)
            .map(|v| Cow::Borrowed(v.as_str()))
            .or_else(|| {
                headers
                    .iter()
                    .find(|(k, _)| k.to_string().eq_ignore_ascii_case(name))
                    .and_then(|(_, values)| values.first())
                    .map(|v| Cow::Borrowed(v.as_str()))
            })
    };
    // The producer's id if it gave one (JetStream dedupes on it too), else the message's
    // place in the stream, which every redelivery keeps.
    let id = header("Nats-Msg-Id").or_else(|| {
        message
            .info()
            .ok()
            .map(|info| Cow::Owned(format!("{stream}:{}", info.stream_sequence)))
    });
    let disposition = sources::take(
        state,
        source,
        Message {
            header: &header,
            body: &message.payload,
            defaults: Defaults {
                id,
                event_type: Some(Cow::Borrowed(message.subject.as_str())),
            },
        },
    )
    .await;
    log_disposition(source, &disposition);
    let ack = match disposition {
        Disposition::Stored => message.ack().await,
        Disposition::Refused(_) => message.ack_with(AckKind::Term).await,
        Disposition::Retry(_) => message.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await,
    };
    if let Err(error) = ack {
        // Unacknowledged, it comes back after the ack wait, and its id dedupes it.
        tracing::warn!(source = %source.name.as_str(), %error, "cannot acknowledge a message");
    }
}
