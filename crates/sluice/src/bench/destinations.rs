//! `sluice bench --spawn --destinations`: publish actions against the broker's own client.
//!
//! For each broker on this machine (NATS JetStream, RabbitMQ, Redis):
//! 1. **Reference**: the same client library sluice uses publishes `--events` messages of the
//!    same size in a loop, with the same acknowledgement settings (JetStream ack, publisher
//!    confirms, the `XADD` reply), `BROKER_MAX_IN_FLIGHT` (32) at a time — the most one
//!    worker process keeps in flight to one target — and, for context, one at a time.
//! 2. **sluice**: `sluice api` alone queues `--events` events whose rule publishes to the
//!    broker; one `sluice worker` starts and publishes them; time until every event is
//!    processed, and the broker is checked to hold exactly `--events` messages.
//!
//! The reference runs before and after sluice; the faster of the two is the one compared.

use super::webhooks::wait_done;
use super::{wait_ready, BenchArgs, Spawned};
use anyhow::{bail, Context};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Write;
use std::future::Future;
use std::time::Instant;

const NATS_URL: &str = "nats://127.0.0.1:4222";
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// A worker process's in-flight cap per broker, by default (`BROKER_MAX_IN_FLIGHT`).
const IN_FLIGHT: usize = 32;

#[derive(Debug, Serialize)]
pub struct DestinationsReport {
    pub database: String,
    pub events: u64,
    pub brokers: Vec<BrokerFigures>,
    /// Why a broker was not measured.
    pub skipped: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BrokerFigures {
    pub broker: &'static str,
    /// Messages/s of the client alone, `IN_FLIGHT` at a time (the better of two runs).
    pub reference_rate: f64,
    /// Messages/s of the client alone, one at a time.
    pub sequential_rate: f64,
    /// Events/s from a backlog to processed, each publishing one message.
    pub sluice_rate: f64,
    /// sluice / reference.
    pub ratio: f64,
    /// Messages the broker holds from sluice's run (must equal the events).
    pub published: u64,
}

impl DestinationsReport {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sluice bench --destinations on {}: a backlog of {} events per broker",
            self.database, self.events
        );
        for b in &self.brokers {
            let _ = writeln!(
                out,
                "  {:<9} client alone {:>6.0}/s ({IN_FLIGHT} in flight; {:.0}/s one at a time) · sluice {:>6.0}/s = {:.2}x · {} messages",
                b.broker, b.reference_rate, b.sequential_rate, b.sluice_rate, b.ratio, b.published
            );
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "  skipped: {skipped}");
        }
        out
    }
}

pub async fn bench_destinations(args: BenchArgs) -> anyhow::Result<DestinationsReport> {
    if !args.spawn {
        bail!("--destinations measures the processes it starts: add --spawn");
    }
    if args.events == 0 {
        bail!("--events must be at least 1");
    }
    let api = Spawned::start_role(&args, "api")?;
    let client = super::client(None, 64)?;
    wait_ready(&client, &api.url).await?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut brokers = Vec::new();
    let mut skipped = Vec::new();
    let wanted = |broker: Broker| {
        args.brokers.is_empty()
            || args
                .brokers
                .iter()
                .any(|name| name.eq_ignore_ascii_case(broker.name()))
    };
    for broker in [Broker::Nats, Broker::Rabbitmq, Broker::Redis]
        .into_iter()
        .filter(|broker| wanted(*broker))
    {
        match measure(broker, &args, &client, &api.url, &run).await {
            Ok(figures) => {
                eprintln!(
                    "{}: sluice {:.0}/s, client alone {:.0}/s",
                    figures.broker, figures.sluice_rate, figures.reference_rate
                );
                brokers.push(figures);
            }
            Err(error) => {
                eprintln!("{}: {error:#}", broker.name());
                skipped.push(format!("{}: {error:#}", broker.name()));
            }
        }
    }
    drop(api);
    Ok(DestinationsReport {
        database: sluice_store::redact_url(&args.database_url),
        events: args.events,
        brokers,
        skipped,
    })
}

#[derive(Debug, Clone, Copy)]
enum Broker {
    Nats,
    Rabbitmq,
    Redis,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Nats => "NATS",
            Broker::Rabbitmq => "RabbitMQ",
            Broker::Redis => "Redis",
        }
    }
}

/// The message sluice publishes by default (the event), for the reference to match in size.
fn message(i: u64, event_type: &str) -> Vec<u8> {
    json!({"event_id": i, "external_id": format!("p-{i}"), "type": event_type,
        "data": super::payload(i)})
    .to_string()
    .into_bytes()
}

async fn measure(
    broker: Broker,
    args: &BenchArgs,
    client: &reqwest::Client,
    url: &str,
    run: &str,
) -> anyhow::Result<BrokerFigures> {
    let events = args.events;
    let event_type = format!("bench.{run}.{}", broker.name().to_ascii_lowercase());
    let place = Place::make(broker, run).await?;
    eprintln!("{}: the client alone…", broker.name());
    let first = place.reference(events, IN_FLIGHT, "ref1").await?;
    let sequential = place.reference(events.min(5_000), 1, "seq").await?;
    place.clear().await?;
    eprintln!("{}: sluice…", broker.name());

    let rule = json!({"name": format!("bench {event_type}"), "event_type": event_type,
        "condition": true, "action": place.action()});
    let response = client
        .post(format!("{url}/rules"))
        .json(&rule)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "cannot create the rule: {}",
            response.text().await.unwrap_or_default()
        );
    }
    super::post_in_batches(
        client,
        url,
        events,
        |i| json!({"id": format!("{event_type}-{i}"), "type": event_type, "data": super::payload(i)}),
    )
    .await?;
    let started = Instant::now();
    let worker = Spawned::start_role(args, "worker")?;
    wait_done(client, url, &event_type, events, args.timeout_secs).await?;
    let sluice_rate = events as f64 / started.elapsed().as_secs_f64();
    drop(worker);
    let published = place.count().await?;
    let stats: Value = client
        .get(format!("{url}/events/stats?type={event_type}"))
        .send()
        .await?
        .json()
        .await?;
    if stats["processed"].as_u64() != Some(events) {
        bail!("not every event was published: {stats}");
    }
    place.clear().await?;
    let second = place.reference(events, IN_FLIGHT, "ref2").await?;
    place.remove().await;
    let reference_rate = first.max(second);
    Ok(BrokerFigures {
        broker: broker.name(),
        reference_rate,
        sequential_rate: sequential,
        sluice_rate,
        ratio: sluice_rate / reference_rate.max(f64::MIN_POSITIVE),
        published,
    })
}

/// Where one broker's messages go: a JetStream stream, a RabbitMQ queue, a Redis stream.
enum Place {
    Nats {
        js: async_nats::jetstream::Context,
        stream: String,
        subject: String,
    },
    Rabbitmq {
        connection: lapin::Connection,
        channel: lapin::Channel,
        queue: String,
    },
    Redis {
        connection: redis::aio::MultiplexedConnection,
        key: String,
    },
}

impl Place {
    async fn make(broker: Broker, run: &str) -> anyhow::Result<Place> {
        Ok(match broker {
            Broker::Nats => {
                let js = async_nats::jetstream::new(
                    async_nats::connect(NATS_URL)
                        .await
                        .context("cannot connect to NATS at 127.0.0.1:4222")?,
                );
                let stream = format!("SLUICE_BENCH_OUT_{run}");
                let subject = format!("bench.{run}.out");
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![subject.clone()],
                    ..Default::default()
                })
                .await?;
                Place::Nats {
                    js,
                    stream,
                    subject,
                }
            }
            Broker::Rabbitmq => {
                use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
                let connection =
                    lapin::Connection::connect(AMQP_URL, lapin::ConnectionProperties::default())
                        .await
                        .context("cannot connect to RabbitMQ at 127.0.0.1:5672")?;
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                let queue = format!("sluice-bench-out-{run}");
                channel
                    .queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                Place::Rabbitmq {
                    connection,
                    channel,
                    queue,
                }
            }
            Broker::Redis => {
                let connection = redis::Client::open(REDIS_URL)?
                    .get_multiplexed_async_connection()
                    .await
                    .context("cannot connect to Redis at 127.0.0.1:6379")?;
                Place::Redis {
                    connection,
                    key: format!("sluice-bench-out-{run}"),
                }
            }
        })
    }

    /// The rule's action publishing here (the default payload: the event).
    fn action(&self) -> Value {
        match self {
            Place::Nats { subject, .. } => json!({"type": "publish_nats",
                "params": {"url": NATS_URL, "subject": subject}}),
            Place::Rabbitmq { queue, .. } => json!({"type": "publish_rabbitmq",
                "params": {"url": AMQP_URL, "routing_key": queue}}),
            Place::Redis { key, .. } => json!({"type": "publish_redis",
                "params": {"url": REDIS_URL, "stream": key}}),
        }
    }

    /// Publishes `count` messages, `in_flight` at a time, each awaiting its acknowledgement
    /// as sluice does; messages/s.
    async fn reference(&self, count: u64, in_flight: usize, tag: &str) -> anyhow::Result<f64> {
        let started = Instant::now();
        match self {
            Place::Nats { js, subject, .. } => {
                pump(count, in_flight, |i| async move {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", format!("{tag}-{i}").as_str());
                    js.publish_with_headers(subject.clone(), headers, message(i, tag).into())
                        .await?
                        .await?;
                    Ok(())
                })
                .await?
            }
            Place::Rabbitmq { channel, queue, .. } => {
                use lapin::options::BasicPublishOptions;
                pump(count, in_flight, |i| async move {
                    let properties = lapin::BasicProperties::default()
                        .with_message_id(format!("{tag}-{i}").as_str().into())
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2);
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..Default::default()
                            },
                            &message(i, tag),
                            properties,
                        )
                        .await?
                        .await?;
                    if !confirm.is_ack() {
                        bail!("the broker did not confirm");
                    }
                    Ok(())
                })
                .await?
            }
            Place::Redis { connection, key } => {
                pump(count, in_flight, |i| async move {
                    let mut connection = connection.clone();
                    let _: String = redis::cmd("XADD")
                        .arg(key)
                        .arg("*")
                        .arg("payload")
                        .arg(message(i, tag))
                        .arg("type")
                        .arg(tag)
                        .arg("idempotency_key")
                        .arg(format!("{tag}-{i}"))
                        .query_async(&mut connection)
                        .await?;
                    Ok(())
                })
                .await?
            }
        }
        Ok(count as f64 / started.elapsed().as_secs_f64())
    }

    /// Messages held now.
    async fn count(&self) -> anyhow::Result<u64> {
        Ok(match self {
            Place::Nats { js, stream, .. } => {
                js.get_stream(stream).await?.info().await?.state.messages
            }
            Place::Rabbitmq { channel, queue, .. } => {
                use lapin::options::QueueDeclareOptions;
                let declared = channel
                    .queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await?;
                u64::from(declared.message_count())
            }
            Place::Redis { connection, key } => {
                redis::cmd("XLEN")
                    .arg(key)
                    .query_async(&mut connection.clone())
                    .await?
            }
        })
    }

    /// Empties the stream or queue, so each run starts alike.
    async fn clear(&self) -> anyhow::Result<()> {
        match self {
            Place::Nats { js, stream, .. } => {
                js.get_stream(stream).await?.purge().await?;
            }
            Place::Rabbitmq { channel, queue, .. } => {
                channel
                    .queue_purge(queue.as_str().into(), Default::default())
                    .await?;
            }
            Place::Redis { connection, key } => {
                let _: () = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut connection.clone())
                    .await?;
            }
        }
        Ok(())
    }

    async fn remove(self) {
        match self {
            Place::Nats { js, stream, .. } => {
                let _ = js.delete_stream(&stream).await;
            }
            Place::Rabbitmq {
                connection,
                channel,
                queue,
            } => {
                let _ = channel
                    .queue_delete(queue.as_str().into(), Default::default())
                    .await;
                let _ = connection.close(200, "bench done".into()).await;
            }
            Place::Redis {
                mut connection,
                key,
            } => {
                let _: Result<(), _> = redis::cmd("DEL")
                    .arg(key)
                    .query_async(&mut connection)
                    .await;
            }
        }
    }
}

/// Runs `publish(i)` for every i below `count`, `in_flight` at a time.
async fn pump<F, Fut>(count: u64, in_flight: usize, publish: F) -> anyhow::Result<()>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut sends = futures::stream::iter(0..count)
        .map(publish)
        .buffer_unordered(in_flight);
    while let Some(sent) = sends.next().await {
        sent?;
    }
    Ok(())
}
