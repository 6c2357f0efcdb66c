//! Broker sources, consumed by every process that runs a worker: one consumer per NATS
//! JetStream or RabbitMQ source, started, restarted and stopped as the sources change (seen
//! within a second). Each message becomes an event through the same path as an inbound
//! webhook (`operations::sources::take`) and is acknowledged only once its event is
//! committed: a crash before that has the broker deliver it again, and the event's id (the
//! broker's message id unless the source says otherwise) makes the second one a duplicate.
//!
//! Back-pressure reaches the broker: a consumer holds at most the source's `max_in_flight`
//! messages unacknowledged (JetStream's `max_ack_pending`, AMQP's prefetch), so a slow
//! database slows the consumption, never the memory.

mod nats;
mod rabbitmq;

use crate::operations::sources::Disposition;
use crate::state::AppState;
use sluice_core::source::{mask_url_password, Broker, Source};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the consumers are matched to the sources.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// The longest wait before connecting again to a broker that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a message that could not be stored waits before it is delivered again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Runs the consumers of every broker source until `stop`; then lets each finish the
/// messages it holds (their events stored and acknowledged) and returns.
pub fn spawn(state: AppState, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<String, Running> = HashMap::new();
        // Consumers of sources changed or deleted, finishing what they hold.
        let mut retired: Vec<JoinHandle<()>> = Vec::new();
        loop {
            let wanted = state.sources.snapshot();
            // A consumer whose source changed or went is retired; one that ended by itself
            // (it should not) is started again below.
            let leaving = running.extract_if(|name, consumer| {
                consumer.task.is_finished()
                    || wanted
                        .get(name)
                        .is_none_or(|source| *source != consumer.source)
            });
            for (_, consumer) in leaving {
                consumer.stop.cancel();
                retired.push(consumer.task);
            }
            let (done, going): (Vec<_>, Vec<_>) =
                retired.drain(..).partition(JoinHandle::is_finished);
            drop(done);
            retired = going;
            for (name, source) in wanted.iter() {
                if source.broker.is_none() || running.contains_key(name) {
                    continue;
                }
                let token = stop.child_token();
                let task = tokio::spawn(consume(state.clone(), source.clone(), token.clone()));
                running.insert(
                    name.clone(),
                    Running {
                        source: source.clone(),
                        stop: token,
                        task,
                    },
                );
            }
            tokio::select! {
                () = tokio::time::sleep(RECONCILE_EVERY) => {}
                () = state.sources.changed() => {}
                () = stop.cancelled() => break,
            }
        }
        let tasks = running
            .into_values()
            .map(|consumer| {
                consumer.stop.cancel();
                consumer.task
            })
            .chain(retired);
        for task in tasks {
            if let Err(error) = task.await {
                tracing::warn!(%error, "a consumer ended badly");
            }
        }
    })
}

struct Running {
    source: Arc<Source>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Consumes one source until `stop`, connecting again (with a growing pause) whenever the
/// broker goes away or refuses.
async fn consume(state: AppState, source: Arc<Source>, stop: CancellationToken) {
    let Some(broker) = source.broker.clone() else {
        return;
    };
    let url = mask_url_password(broker.url());
    let mut backoff = Duration::from_millis(500);
    loop {
        let result = match &broker {
            Broker::Nats { .. } => nats::consume(&state, &source, &broker, &stop).await,
            Broker::Rabbitmq { .. } => rabbitmq::consume(&state, &source, &broker, &stop).await,
        };
        if stop.is_cancelled() {
            return;
        }
        match result {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(error) => {
                let error = without_password(&format!("{error:#}"), broker.url());
                metrics::counter!("sluice_source_connection_errors_total", "source" => source.name.as_str().to_owned())
                    .increment(1);
                tracing::warn!(source = %source.name.as_str(), %url, %error, "broker source disconnected; connecting again");
                state
                    .sources
                    .connection_failed(source.name.as_str(), &error);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// An error's text with the URL's password, should a client quote it, masked.
fn without_password(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.rsplit_once('@'))
        .and_then(|(credentials, _)| credentials.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(password) => {
            let decoded = crate::actions::percent_decode(password);
            text.replace(password, "********")
                .replace(&decoded, "********")
        }
        None => text.to_owned(),
    }
}

/// Logs what happened to a message that did not become an event.
fn log_disposition(source: &Source, disposition: &Disposition) {
    match disposition {
        Disposition::Stored => {}
        Disposition::Refused(why) => {
            tracing::warn!(source = %source.name.as_str(), reason = %why, "message refused for good")
        }
        Disposition::Retry(why) => {
            tracing::warn!(source = %source.name.as_str(), reason = %why, "message not stored yet; the broker will deliver it again")
        }
    }
}
