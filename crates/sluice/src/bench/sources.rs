//! `sluice bench --spawn --sources`: what sources cost, against a running `sluice serve`.
//!
//! 1. **Verified webhooks**: after a warm-up, `--events` events posted one per request at
//!    `--concurrency`, alternately to `POST /events` (the reference) and as Standard
//!    Webhooks, signed by the bench, to `POST /sources/{name}/events` — five rounds each; the
//!    ratio of the medians.
//! 2. **NATS JetStream**: `--events` messages published to a fresh stream, then a source on
//!    it; time until every one is a processed event.
//! 3. **RabbitMQ**: the same with a fresh queue.

use super::webhooks::wait_done;
use super::{wait_ready, BenchArgs, Spawned};
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::Sha256;
use std::fmt::Write;
use std::time::Instant;

const ROUNDS: usize = 5;
/// Events posted before the rounds, unmeasured: connections opened, statements prepared.
const WARM_UP: u64 = 2_000;

#[derive(Debug, Serialize)]
pub struct SourcesReport {
    pub database: String,
    pub events: u64,
    pub concurrency: usize,
    /// Events/s of `POST /events`, one event a request, per round.
    pub plain_rates: Vec<f64>,
    /// Events/s of signed webhooks through a source, per round.
    pub verified_rates: Vec<f64>,
    /// Median verified / median plain.
    pub verified_ratio: f64,
    /// Messages a second from a NATS stream into processed events.
    pub nats_rate: Option<f64>,
    /// Messages a second from a RabbitMQ queue into processed events.
    pub rabbitmq_rate: Option<f64>,
    /// Why a broker was not measured.
    pub skipped: Vec<String>,
}

impl SourcesReport {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rates = |r: &[f64]| {
            r.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        let _ = writeln!(
            out,
            "sluice bench --sources on {}: {} events, {} in flight",
            self.database, self.events, self.concurrency
        );
        let _ = writeln!(
            out,
            "  POST /events              {} /s",
            rates(&self.plain_rates)
        );
        let _ = writeln!(
            out,
            "  signed webhooks (source)  {} /s = {:.2}x (medians)",
            rates(&self.verified_rates),
            self.verified_ratio
        );
        if let Some(rate) = self.nats_rate {
            let _ = writeln!(out, "  NATS JetStream -> processed  {rate:.0} /s");
        }
        if let Some(rate) = self.rabbitmq_rate {
            let _ = writeln!(out, "  RabbitMQ -> processed        {rate:.0} /s");
        }
        for skipped in &self.skipped {
            let _ = writeln!(out, "  skipped: {skipped}");
        }
        out
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

pub async fn bench_sources(args: BenchArgs) -> anyhow::Result<SourcesReport> {
    if !args.spawn {
        bail!("--sources measures the process it starts: add --spawn");
    }
    if args.events == 0 || args.concurrency == 0 {
        bail!("--events and --concurrency must be at least 1");
    }
    let server = Spawned::start_role(&args, "serve")?;
    let client = super::client(None, args.concurrency)?;
    wait_ready(&client, &server.url).await?;
    let url = server.url.clone();
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();

    let key = format!("bench signing key {run}");
    let secret = format!("whsec_{}", BASE64.encode(key.as_bytes()));
    put_source(
        &client,
        &url,
        "bench-signed",
        json!({"verify": {"scheme": "standard_webhooks", "secret": secret},
               "type": {"pointer": "/type"}, "data": {"pointer": "/data"}}),
    )
    .await?;
    let warm_type = format!("bench.{run}.warm");
    let warm_up = BenchArgs {
        events: WARM_UP.min(args.events),
        ..args.clone()
    };
    post_all(&warm_up, |i| {
        let body = json!({"id": format!("{warm_type}-{i}"), "type": warm_type, "data": {"i": i}});
        client.post(format!("{url}/events")).json(&body)
    })
    .await?;
    let mut plain_rates = Vec::new();
    let mut verified_rates = Vec::new();
    for round in 0..ROUNDS {
        let plain_type = format!("bench.{run}.plain{round}");
        plain_rates.push(
            post_all(&args, |i| {
                let body = json!({"id": format!("{plain_type}-{i}"), "type": plain_type, "data": {"i": i, "order": "o-1", "amount": 12.5}});
                client
                    .post(format!("{url}/events"))
                    .json(&body)
            })
            .await?,
        );
        let signed_type = format!("bench.{run}.signed{round}");
        verified_rates.push(
            post_all(&args, |i| {
                let id = format!("{signed_type}-{i}");
                let body =
                    json!({"type": signed_type, "data": {"i": i, "order": "o-1", "amount": 12.5}})
                        .to_string();
                let at = chrono::Utc::now().timestamp().to_string();
                let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                    .expect("HMAC takes keys of any length");
                mac.update(format!("{id}.{at}.").as_bytes());
                mac.update(body.as_bytes());
                let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
                client
                    .post(format!("{url}/sources/bench-signed/events"))
                    .header("content-type", "application/json")
                    .header("webhook-id", id)
                    .header("webhook-timestamp", at)
                    .header("webhook-signature", signature)
                    .body(body)
            })
            .await?,
        );
    }
    let mut skipped = Vec::new();
    let nats_rate = match nats_backlog(&client, &args, &url, &run).await {
        Ok(rate) => Some(rate),
        Err(error) => {
            skipped.push(format!("NATS: {error:#}"));
            None
        }
    };
    let rabbitmq_rate = match rabbitmq_backlog(&client, &args, &url, &run).await {
        Ok(rate) => Some(rate),
        Err(error) => {
            skipped.push(format!("RabbitMQ: {error:#}"));
            None
        }
    };
    drop(server);
    Ok(SourcesReport {
        database: sluice_store::redact_url(&args.database_url),
        events: args.events,
        concurrency: args.concurrency,
        verified_ratio: median(&verified_rates) / median(&plain_rates).max(f64::MIN_POSITIVE),
        plain_rates,
        verified_rates,
        nats_rate,
        rabbitmq_rate,
        skipped,
    })
}

async fn put_source(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    body: Value,
) -> anyhow::Result<()> {
    let response = client
        .put(format!("{url}/sources/{name}"))
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "cannot create source {name}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Sends `--events` requests, `--concurrency` at a time; events/s.
async fn post_all(
    args: &BenchArgs,
    request: impl Fn(u64) -> reqwest::RequestBuilder,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut sends = futures::stream::iter(0..args.events)
        .map(|i| {
            let request = request(i);
            async move {
                let response = request.send().await?;
                if response.status().as_u16() != 201 {
                    bail!(
                        "an event was refused: {} {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    );
                }
                Ok(())
            }
        })
        .buffer_unordered(args.concurrency);
    while let Some(sent) = sends.next().await {
        sent?;
    }
    Ok(args.events as f64 / started.elapsed().as_secs_f64())
}

async fn nats_backlog(
    client: &reqwest::Client,
    args: &BenchArgs,
    url: &str,
    run: &str,
) -> anyhow::Result<f64> {
    let nats_url = "nats://127.0.0.1:4222";
    let js = async_nats::jetstream::new(
        async_nats::connect(nats_url)
            .await
            .context("cannot connect to NATS at 127.0.0.1:4222")?,
    );
    let stream = format!("SLUICE_BENCH_{run}");
    let subject = format!("bench.{run}.nats");
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await?;
    let mut acks = Vec::with_capacity(1000);
    for i in 0..args.events {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("{run}-nats-{i}").as_str());
        let body = json!({"i": i, "order": "o-1", "amount": 12.5}).to_string();
        acks.push(
            js.publish_with_headers(subject.clone(), headers, body.into())
                .await?,
        );
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    let started = Instant::now();
    put_source(
        client,
        url,
        "bench-nats",
        json!({"kind": "nats", "url": nats_url, "stream": stream, "durable": "sluice"}),
    )
    .await?;
    let done = wait_done(client, url, &subject, args.events, args.timeout_secs).await;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = client
        .delete(format!("{url}/sources/bench-nats"))
        .send()
        .await;
    let _ = js.delete_stream(&stream).await;
    done?;
    Ok(args.events as f64 / elapsed)
}

async fn rabbitmq_backlog(
    client: &reqwest::Client,
    args: &BenchArgs,
    url: &str,
    run: &str,
) -> anyhow::Result<f64> {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let amqp_url = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .context("cannot connect to RabbitMQ at 127.0.0.1:5672")?;
    let channel = connection.create_channel().await?;
    let queue = format!("sluice-bench-{run}");
    let event_type = format!("bench.{run}.amqp");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    for i in 0..args.events {
        let body = json!({"i": i, "order": "o-1", "amount": 12.5}).to_string();
        let properties = BasicProperties::default()
            .with_message_id(format!("{run}-amqp-{i}").as_str().into())
            .with_type(event_type.as_str().into());
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await?;
    }
    let started = Instant::now();
    put_source(
        client,
        url,
        "bench-rabbitmq",
        json!({"kind": "rabbitmq", "url": amqp_url, "queue": queue}),
    )
    .await?;
    let done = wait_done(client, url, &event_type, args.events, args.timeout_secs).await;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = client
        .delete(format!("{url}/sources/bench-rabbitmq"))
        .send()
        .await;
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "bench done".into()).await;
    done?;
    Ok(args.events as f64 / elapsed)
}
