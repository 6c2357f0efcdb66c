//! `sluice bench`: a load generator. It posts events to a running sluice (`--url`) or to one it
//! starts itself (`--spawn`, as a child process on the configured database), optionally with
//! rules of each action type in place (webhooks go to a local sink it runs), waits until every
//! event is terminal, and reports ingest rate, drain rate, ingest-to-processed latency
//! percentiles, errors by kind and — for a spawned server — its peak memory.

mod destinations;
mod history;
pub mod report;
mod sink;
mod sources;
mod webhooks;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use report::percentile;
pub use report::Report;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A running sluice to drive, e.g. http://127.0.0.1:3000.
    #[arg(long, conflicts_with = "spawn")]
    pub url: Option<String>,
    /// Start sluice as a child process on DATABASE_URL (default sqlite://sluice-bench.db).
    #[arg(long)]
    pub spawn: bool,
    /// Database for --spawn.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://sluice-bench.db")]
    pub database_url: String,
    /// Events to post.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Post at this steady rate (events/s) instead of as fast as possible.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Fraction of posts that resend an earlier event (0.0–0.9).
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Rules to put in place, comma-separated: log, noop, webhook, email (or none).
    #[arg(long, default_value = "log")]
    pub actions: String,
    /// With --spawn: start this sluice binary instead of this one (e.g. another build, to
    /// compare the two in one run).
    #[arg(long, requires = "spawn")]
    pub server_bin: Option<std::path::PathBuf>,
    /// Extra flags for the spawned server, e.g. "--worker-concurrency 128".
    #[arg(long, allow_hyphen_values = true)]
    pub server_args: Option<String>,
    /// With --spawn: measure ingest and processing apart. Start `sluice api` alone, post every
    /// event, then start one `sluice worker` process and time how fast it drains them.
    #[arg(long, requires = "spawn")]
    pub phased: bool,
    /// Give up waiting for events to finish after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// An API key to send (`Authorization: Bearer`) to a server running with AUTH=api_key.
    #[arg(long, env = "SLUICE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// With --spawn: run the server with AUTH=api_key, with an admin key made for the bench
    /// by `sluice keys create` (so every request pays for its key check).
    #[arg(long, requires = "spawn")]
    pub auth: bool,
    /// Before the run, queue this many events whose webhook goes to a receiver that accepts
    /// connections and never answers; the figures are then the healthy events' (use with
    /// `--actions webhook`, e.g. `--hanging-target 400 --rate 10`).
    #[arg(long)]
    pub hanging_target: Option<u64>,
    /// Spread the events over this many ordering keys (event i gets key `i % N`), so each
    /// key's events are processed one at a time, in order.
    #[arg(long)]
    pub ordering_keys: Option<u64>,
    /// Give the bench's event type a typical JSON Schema (required fields, types, an enum, a
    /// pattern, an array of items) that every posted event matches, so ingest pays for the
    /// check.
    #[arg(long)]
    pub schema: bool,
    /// Instead of the load run: build a history of this many settled events (comma-separated
    /// sizes, e.g. 100000,1000000, each built on the one before) and time the operator's
    /// reads and a fresh drain at each size.
    #[arg(long, value_delimiter = ',')]
    pub history: Vec<u64>,
    /// With --history: then produce at --rate (default 500/s) until the server's RETENTION
    /// has deleted the history, and compare the producer's latency before and during.
    #[arg(long, requires = "history")]
    pub retention_check: bool,
    /// Instead of the load run: webhooks to a local receiver — its own capacity from a plain
    /// load, then sluice delivering a backlog of --events to it, a steady load at 0.6x its
    /// capacity, and events waiting for a receiver that is down (needs --spawn).
    #[arg(long, requires = "spawn")]
    pub webhooks: bool,
    /// Instead of the load run: sources — signed webhooks through a source against plain
    /// `POST /events` (alternating rounds of --events at --concurrency), then a backlog of
    /// --events from a NATS stream and from a RabbitMQ queue (on this machine's brokers) into
    /// processed events (needs --spawn).
    #[arg(long, requires = "spawn", conflicts_with = "webhooks")]
    pub sources: bool,
    /// Instead of the load run: destinations — for NATS JetStream, RabbitMQ and Redis (on
    /// this machine), a backlog of --events events each publishing one message, against the
    /// same client publishing alone with the same acknowledgements (needs --spawn).
    #[arg(long, requires = "spawn", conflicts_with_all = ["webhooks", "sources"])]
    pub destinations: bool,
    /// With --destinations: only these brokers (nats, rabbitmq, redis); all three if unset.
    #[arg(long, value_delimiter = ',', requires = "destinations", value_parser = ["nats", "rabbitmq", "redis"])]
    pub brokers: Vec<String>,
    /// Only run the benchmarks' webhook receiver (answering after --receiver-delay-ms) on
    /// this port until stopped, e.g. to measure it with wrk.
    #[arg(long, conflicts_with_all = ["webhooks", "spawn", "url"])]
    pub serve_receiver: Option<u16>,
    /// With --webhooks: how long the receiver takes to answer each request.
    #[arg(long, default_value_t = 10)]
    pub receiver_delay_ms: u64,
    /// With --webhooks: connections of the plain load that measures the receiver.
    #[arg(long, default_value_t = 16)]
    pub receiver_connections: usize,
    /// With --webhooks: how long the steady load lasts.
    #[arg(long, default_value_t = 15)]
    pub steady_secs: u64,
    /// With --webhooks: events waiting for the receiver that is down.
    #[arg(long, default_value_t = 5000)]
    pub dead_events: u64,
    /// With --webhooks: how long they wait while CPU and rows are measured.
    #[arg(long, default_value_t = 30)]
    pub dead_secs: u64,
    /// With --webhooks: the rate limit (deliveries a second) of the last phase, where a
    /// second worker process joins and ten seconds' worth of events go to a limited target
    /// (0: skip it).
    #[arg(long, default_value_t = 200.0)]
    pub limit_per_second: f64,
}

/// A server this bench started; killed when dropped.
struct Spawned {
    child: Child,
    url: String,
}

impl Spawned {
    /// Starts `sluice <subcommand>` on the bench's database (`api`/`serve` listen on a free port).
    fn start_role(args: &BenchArgs, subcommand: &str) -> anyhow::Result<Spawned> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let binary = match &args.server_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()?,
        };
        let mut command = Command::new(binary);
        command.arg(subcommand);
        if subcommand != "worker" {
            command.args(["--port", &port.to_string(), "--host", "127.0.0.1"]);
        }
        command
            .args(["--database-url", &args.database_url])
            .args(["--webhook-allow-private", "true", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if args.auth {
            command.args(["--auth", "api_key"]);
        }
        if let Some(extra) = &args.server_args {
            command.args(extra.split_whitespace());
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start sluice {subcommand}"))?;
        Ok(Spawned {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    /// Peak resident memory so far, from /proc (Linux).
    fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    }
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{url}/ready")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("sluice at {url} did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn payload(i: u64) -> Value {
    // A realistic order: nested customer, a few items, ~350 bytes.
    let country = ["BR", "PT", "DE", "US"][(i % 4) as usize];
    let tier = if i.is_multiple_of(10) {
        "gold"
    } else {
        "standard"
    };
    json!({
        "amount": (i * 37) % 1000,
        "currency": "EUR",
        "customer": {"id": format!("cus_{}", i % 5000), "country": country, "tier": tier},
        "items": [
            {"sku": format!("sku-{}", i % 97), "qty": 1 + i % 3, "price": 19.9},
            {"sku": format!("sku-{}", (i + 13) % 97), "qty": 1, "price": 5.5}
        ],
        "created_by": "bench",
    })
}

/// A schema such as a producer would write for [`payload`].
fn typical_schema() -> Value {
    json!({
        "type": "object",
        "required": ["amount", "currency", "customer", "items"],
        "properties": {
            "amount": {"type": "integer", "minimum": 0},
            "currency": {"enum": ["EUR", "USD", "BRL"]},
            "customer": {
                "type": "object",
                "required": ["id", "country"],
                "properties": {
                    "id": {"type": "string", "pattern": "^cus_[0-9]+$"},
                    "country": {"type": "string", "minLength": 2, "maxLength": 2},
                    "tier": {"enum": ["standard", "gold"]}
                }
            },
            "items": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["sku", "qty", "price"],
                    "properties": {
                        "sku": {"type": "string"},
                        "qty": {"type": "integer", "minimum": 1},
                        "price": {"type": "number", "exclusiveMinimum": 0}
                    }
                }
            },
            "created_by": {"type": "string"}
        }
    })
}

fn rule_action(kind: &str, sink: &str) -> anyhow::Result<Value> {
    Ok(match kind {
        "log" => {
            json!({"type": "log", "params": {"level": "info", "message": "bench order {{ external_id }}"}})
        }
        "noop" => json!({"type": "noop"}),
        "webhook" => {
            json!({"type": "call_webhook", "params": {"url": format!("{sink}/hook"), "body": {"order": "{{ external_id }}", "amount": "{{ data.amount }}"}}})
        }
        "email" => {
            json!({"type": "send_email", "params": {"to": "ops@example.com", "subject": "order {{ external_id }}", "template": "amount {{ data.amount }}"}})
        }
        other => bail!("unknown action '{other}' (use log, noop, webhook, email or none)"),
    })
}

pub fn run(args: BenchArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sluice bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let json = args.json;
    if let Some(port) = args.serve_receiver {
        let delay = Duration::from_millis(args.receiver_delay_ms);
        return match runtime.block_on(sink::Sink::serve_forever(port, delay)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sluice bench: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if args.webhooks {
        let report = runtime.block_on(webhooks::bench_webhooks(args));
        return print_report(report, json, webhooks::WebhookReport::text);
    }
    if args.sources {
        let report = runtime.block_on(sources::bench_sources(args));
        return print_report(report, json, sources::SourcesReport::text);
    }
    if args.destinations {
        let report = runtime.block_on(destinations::bench_destinations(args));
        return print_report(report, json, destinations::DestinationsReport::text);
    }
    if !args.history.is_empty() {
        let report = runtime.block_on(history::bench_history(args));
        return print_report(report, json, history::HistoryReport::text);
    }
    match runtime.block_on(bench(args)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(error) => eprintln!("sluice bench: {error}"),
                }
            } else {
                print!("{}", report.text());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sluice bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints a report as JSON or as text, or the error that stopped the run.
fn print_report<R: serde::Serialize>(
    report: anyhow::Result<R>,
    json: bool,
    text: impl Fn(&R) -> String,
) -> std::process::ExitCode {
    let printed = report.and_then(|report| {
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", text(&report));
        }
        Ok(())
    });
    match printed {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Posts events `0..count` (each made by `event`) in batches of 1,000.
async fn post_in_batches(
    client: &reqwest::Client,
    url: &str,
    count: u64,
    event: impl Fn(u64) -> Value,
) -> anyhow::Result<()> {
    let mut sent = 0;
    while sent < count {
        let chunk = (count - sent).min(1000);
        let events: Vec<Value> = (sent..sent + chunk).map(&event).collect();
        let response = client
            .post(format!("{url}/events/batch"))
            .json(&json!({ "events": events }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "cannot queue events: {}",
                response.text().await.unwrap_or_default()
            );
        }
        sent += chunk;
    }
    Ok(())
}

/// Starts a receiver that accepts connections and never answers, gives it a rule, and queues
/// `count` events for it; returns the listener (dropping it closes the receiver).
async fn queue_hanging(
    client: &reqwest::Client,
    url: &str,
    run_id: &str,
    count: u64,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let hanging = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // read nothing, answer nothing
        }
    });
    let event_type = format!("bench.{run_id}.hanging");
    let rule = json!({
        "name": format!("bench hanging {run_id}"),
        "event_type": event_type,
        "condition": true,
        "action": {"type": "call_webhook", "params": {"url": format!("http://{address}/hang")}},
    });
    let response = client
        .post(format!("{url}/rules"))
        .json(&rule)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "cannot create the hanging rule: {}",
            response.text().await.unwrap_or_default()
        );
    }
    post_in_batches(
        client,
        url,
        count,
        |i| json!({"id": format!("{run_id}-hanging-{i}"), "type": event_type, "data": {"i": i}}),
    )
    .await?;
    Ok(hanging)
}

/// Makes an admin key for the bench with `sluice keys create` on the bench's database.
fn bench_key(database_url: &str) -> anyhow::Result<String> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "keys", "create", "--name", "bench", "--scopes", "admin", "--json",
        ])
        .args(["--database-url", database_url])
        .output()
        .context("cannot run `sluice keys create`")?;
    if !output.status.success() {
        bail!(
            "`sluice keys create` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let created: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    created["key"]
        .as_str()
        .map(str::to_owned)
        .context("`sluice keys create --json` printed no key")
}

/// The sluice to drive — started as `role` with `--spawn` (with an admin key made for it under
/// `--auth`), else the one at `--url` — and a client for it.
fn connect(
    args: &BenchArgs,
    role: &str,
    connections: usize,
) -> anyhow::Result<(Option<Spawned>, String, reqwest::Client)> {
    let api_key = match (&args.api_key, args.auth) {
        (Some(key), _) => Some(key.clone()),
        (None, true) => Some(bench_key(&args.database_url)?),
        (None, false) => None,
    };
    let spawned = if args.spawn {
        Some(Spawned::start_role(args, role)?)
    } else {
        None
    };
    let url = match (&spawned, &args.url) {
        (Some(s), _) => s.url.clone(),
        (None, Some(url)) => url.trim_end_matches('/').to_owned(),
        (None, None) => bail!("give --url of a running sluice, or --spawn"),
    };
    Ok((spawned, url, client(api_key.as_deref(), connections)?))
}

/// An HTTP client that sends `api_key` (if any) with every request.
fn client(api_key: Option<&str>, connections: usize) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key is not valid in a header")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .default_headers(headers)
        .build()?)
}

/// Runs a benchmark and returns its figures.
pub async fn bench(args: BenchArgs) -> anyhow::Result<Report> {
    if args.events == 0 || args.concurrency == 0 {
        bail!("--events and --concurrency must be at least 1");
    }
    if !(0.0..=0.9).contains(&args.duplicates) {
        bail!("--duplicates must be between 0.0 and 0.9");
    }
    let role = if args.phased { "api" } else { "serve" };
    let (spawned, url, client) = connect(&args, role, args.concurrency)?;
    wait_ready(&client, &url).await?;

    let sink = sink::Sink::start().await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let event_type = format!("bench.{run_id}");
    let kinds: Vec<String> = args
        .actions
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s != "none")
        .collect();
    // Kept open for the whole run: a receiver that never answers.
    let _hanging = match args.hanging_target {
        Some(count) if count > 0 => Some(queue_hanging(&client, &url, &run_id, count).await?),
        _ => None,
    };
    for kind in &kinds {
        let rule = json!({
            "name": format!("bench {kind} {run_id}"),
            "event_type": event_type,
            "condition": {">=": [{"var": "amount"}, 0]},
            "action": rule_action(kind, &sink.url)?,
        });
        let response = client
            .post(format!("{url}/rules"))
            .json(&rule)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "cannot create the {kind} rule: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }

    if args.schema {
        let response = client
            .put(format!("{url}/event-types/{event_type}"))
            .json(&json!({"schema": typical_schema()}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "cannot set the schema: {}",
                response.text().await.unwrap_or_default()
            );
        }
    }

    let progress = progress_bar(args.events * 2, args.json);
    progress.set_message("ingest");
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let unique_sent = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        let (client, url, next, errors, unique_sent, progress, event_type, run_id) = (
            client.clone(),
            url.clone(),
            next.clone(),
            errors.clone(),
            unique_sent.clone(),
            progress.clone(),
            event_type.clone(),
            run_id.clone(),
        );
        let total = args.events;
        let rate = args.rate;
        let duplicates = args.duplicates;
        let ordering_keys = args.ordering_keys;
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                if let Some(rate) = rate {
                    // Event i is due at i/rate seconds after the start.
                    let due = started + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                // Deterministic duplicates: resend an earlier id with the same payload.
                let resend =
                    duplicates > 0.0 && i > 0 && ((i * 7919) % 1000) < (duplicates * 1000.0) as u64;
                let n = if resend { (i * 31) % i } else { i };
                let mut body =
                    json!({"id": format!("{run_id}-{n}"), "type": event_type, "data": payload(n)});
                if let Some(keys) = ordering_keys.filter(|k| *k > 0) {
                    body["ordering_key"] = json!(format!("k{}", n % keys));
                }
                match client
                    .post(format!("{url}/events"))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(response) if response.status().as_u16() == 201 => {
                        let duplicate = response.headers().contains_key("idempotent-replayed");
                        if !duplicate {
                            unique_sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(response) => {
                        *errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(format!("http {}", response.status().as_u16()))
                            .or_default() += 1;
                    }
                    Err(error) => {
                        let kind = if error.is_timeout() {
                            "timeout"
                        } else if error.is_connect() {
                            "connect"
                        } else {
                            "transport"
                        };
                        *errors
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(kind.to_owned())
                            .or_default() += 1;
                    }
                }
                progress.inc(1);
            }
        }));
    }
    for sender in senders {
        sender.await?;
    }
    let ingest_elapsed = started.elapsed();
    let unique = unique_sent.load(Ordering::Relaxed);
    progress.set_message("drain");
    // Phased: nothing has processed yet; one worker process starts now.
    let drain_started = Instant::now();
    let worker = if args.phased {
        Some(Spawned::start_role(&args, "worker")?)
    } else {
        None
    };

    // Wait until every stored event is terminal.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut peak_rss = spawned.as_ref().and_then(Spawned::peak_rss_bytes);
    let mut worker_rss: Option<u64> = None;
    let stats = loop {
        let stats: Value = client
            .get(format!("{url}/events/stats?type={event_type}"))
            .send()
            .await?
            .json()
            .await?;
        let done = stats["processed"].as_u64().unwrap_or(0) + stats["failed"].as_u64().unwrap_or(0);
        progress.set_position(args.events + done.min(args.events));
        if let Some(s) = &spawned {
            peak_rss = s.peak_rss_bytes().max(peak_rss);
        }
        if let Some(w) = &worker {
            worker_rss = w.peak_rss_bytes().max(worker_rss);
        }
        if stats["total"].as_u64() == Some(unique) && done == unique {
            break stats;
        }
        if Instant::now() > deadline {
            progress.finish_and_clear();
            bail!("gave up after {} s: {stats}", args.timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drain_elapsed = if args.phased {
        drain_started.elapsed()
    } else {
        started.elapsed()
    };
    progress.finish_and_clear();

    let latencies = collect_latencies(&client, &url, &event_type).await?;
    let span = latencies.span_seconds.max(1e-9);
    let report = Report {
        url: url.clone(),
        database: spawned
            .as_ref()
            .map(|_| sluice_store::redact_url(&args.database_url)),
        events_sent: args.events,
        unique_events: unique,
        concurrency: args.concurrency,
        target_rate: args.rate,
        actions: kinds.clone(),
        ingest_seconds: ingest_elapsed.as_secs_f64(),
        ingest_rate: args.events as f64 / ingest_elapsed.as_secs_f64(),
        drain_seconds: drain_elapsed.as_secs_f64(),
        drain_rate: if args.phased {
            // From the worker's start to the last event done, as the client saw it.
            unique as f64 / drain_elapsed.as_secs_f64()
        } else {
            unique as f64 / span
        },
        phased: args.phased,
        latency_ms_p50: percentile(&latencies.millis, 50.0),
        latency_ms_p95: percentile(&latencies.millis, 95.0),
        latency_ms_p99: percentile(&latencies.millis, 99.0),
        latency_ms_max: latencies.millis.last().copied().unwrap_or(0.0),
        processed: stats["processed"].as_u64().unwrap_or(0),
        failed: stats["failed"].as_u64().unwrap_or(0),
        errors: errors.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        webhooks_received: sink.count(),
        server_peak_rss_mb: peak_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
        worker_peak_rss_mb: worker_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
    };
    Ok(report)
}

fn progress_bar(length: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    bar.set_style(
        ProgressStyle::with_template("{msg:>7} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

struct Latencies {
    /// Sorted ascending.
    millis: Vec<f64>,
    /// From the first event's creation to the last one's end, by the server's clock.
    span_seconds: f64,
}

/// Reads every bench event back (newest first, page by page) and measures `processed_at - created_at` (server clock).
async fn collect_latencies(
    client: &reqwest::Client,
    url: &str,
    event_type: &str,
) -> anyhow::Result<Latencies> {
    let mut millis = Vec::new();
    let mut first_created: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut last_done: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("type", event_type), ("limit", "500")];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor));
        }
        let page: Value = client
            .get(format!("{url}/events"))
            .query(&query)
            .send()
            .await?
            .json()
            .await?;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        for event in &data {
            let created = parse_time(&event["created_at"]);
            let done = parse_time(&event["processed_at"]);
            if let (Some(created), Some(done)) = (created, done) {
                millis.push((done - created).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                first_created = Some(first_created.map_or(created, |f| f.min(created)));
                last_done = Some(last_done.map_or(done, |l| l.max(done)));
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    millis.sort_by(f64::total_cmp);
    let span_seconds = match (first_created, last_done) {
        (Some(f), Some(l)) => (l - f).num_microseconds().unwrap_or(0) as f64 / 1e6,
        _ => 0.0,
    };
    Ok(Latencies {
        millis,
        span_seconds,
    })
}

fn parse_time(value: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}
