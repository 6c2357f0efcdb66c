//! `sluice bench --spawn --webhooks`: webhooks to a real receiver, measured against what the
//! receiver itself takes.
//!
//! 1. **Capacity**: a plain load on the receiver (as wrk would: `--receiver-connections`
//!    connections posting back to back for a few seconds) — the reference.
//! 2. **Backlog**: `sluice api` alone queues `--events` events with one webhook each, then one
//!    `sluice worker` starts and delivers them: rate as a ratio of the capacity, history rows
//!    per event.
//! 3. **Steady**: events posted at 0.6× the capacity for `--steady-secs`: created→processed
//!    p50/p99, history rows per event.
//! 4. **Dead receiver**: `--dead-events` events for a receiver that refuses connections; once
//!    they wait, for `--dead-secs`: CPU of sluice and of PostgreSQL (every `postgres`
//!    process) and history rows written; then, while they still wait, a healthy receiver's
//!    p50/p99 at a steady 20 events/s (for `--dead-secs`, at most 10 s).
//! 5. **Rate limit**: a second `sluice worker` joins; a target limited to
//!    `--limit-per-second` (`PUT /targets/{target}`) gets ten seconds' worth of events at
//!    once: the rate it got and the most requests it saw within any one second.

use super::report::percentile;
use super::{collect_latencies, sink::Sink, wait_ready, BenchArgs, Spawned};
use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use sluice_store::HistorySize;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct WebhookReport {
    pub database: String,
    pub receiver_delay_ms: u64,
    pub receiver_connections: usize,
    /// Requests a second the receiver took from the plain load.
    pub capacity: f64,
    pub backlog_events: u64,
    pub backlog_seconds: f64,
    pub backlog_rate: f64,
    pub backlog_ratio: f64,
    pub backlog_executions_per_event: f64,
    pub backlog_deferred: i64,
    pub steady_rate: f64,
    pub steady_events: u64,
    pub steady_p50_ms: f64,
    pub steady_p99_ms: f64,
    pub steady_max_ms: f64,
    pub steady_executions_per_event: f64,
    pub dead_events: u64,
    pub dead_seconds: f64,
    /// Share of one core used while the dead receiver's events waited.
    pub dead_sluice_cpu: f64,
    pub dead_postgres_cpu: f64,
    pub dead_rows_written: i64,
    pub healthy_events: u64,
    pub healthy_p50_ms: f64,
    pub healthy_p99_ms: f64,
    pub limit_per_second: f64,
    pub limited_events: u64,
    /// Deliveries a second the limited target got, first request to last.
    pub limited_rate: f64,
    /// The most requests it saw within any one second.
    pub limited_busiest_second: usize,
}

impl WebhookReport {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "sluice bench --webhooks on {}", self.database);
        let _ = writeln!(
            out,
            "  receiver        answers after {} ms; takes {:.0} requests/s from {} connections",
            self.receiver_delay_ms, self.capacity, self.receiver_connections
        );
        let _ = writeln!(
            out,
            "  backlog         {} events in {:.1} s: {:.0}/s = {:.2}x the receiver; {:.2} executions/event, {} deferred",
            self.backlog_events,
            self.backlog_seconds,
            self.backlog_rate,
            self.backlog_ratio,
            self.backlog_executions_per_event,
            self.backlog_deferred
        );
        let _ = writeln!(
            out,
            "  steady          {} events at {:.0}/s (0.6x): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {:.2} executions/event",
            self.steady_events,
            self.steady_rate,
            self.steady_p50_ms,
            self.steady_p99_ms,
            self.steady_max_ms,
            self.steady_executions_per_event
        );
        let _ = writeln!(
            out,
            "  dead receiver   {} events waiting for {:.0} s: sluice {:.1}% of a core, PostgreSQL {:.1}%, {} history rows written",
            self.dead_events,
            self.dead_seconds,
            self.dead_sluice_cpu * 100.0,
            self.dead_postgres_cpu * 100.0,
            self.dead_rows_written
        );
        let _ = writeln!(
            out,
            "  meanwhile       {} events to a healthy receiver: p50 {:.1} ms, p99 {:.1} ms",
            self.healthy_events, self.healthy_p50_ms, self.healthy_p99_ms
        );
        if self.limited_events > 0 {
            let _ = writeln!(
                out,
                "  rate limit      {:.0}/s over two workers: {} events at {:.1}/s, at most {} within any second",
                self.limit_per_second,
                self.limited_events,
                self.limited_rate,
                self.limited_busiest_second
            );
        }
        out
    }
}

pub async fn bench_webhooks(args: BenchArgs) -> anyhow::Result<WebhookReport> {
    if !args.spawn {
        bail!("--webhooks measures the processes it starts: add --spawn");
    }
    let delay = Duration::from_millis(args.receiver_delay_ms);
    let receiver = Sink::start_with_delay(delay).await?;
    let capacity = receiver_capacity(&receiver.url, args.receiver_connections).await?;
    eprintln!("receiver takes {capacity:.0} requests/s");

    let store = sluice_store::connect(&args.database_url, 2).await?;
    let api = Spawned::start_role(&args, "api")?;
    let client = super::client(None, 64)?;
    wait_ready(&client, &api.url).await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let url = api.url.clone();

    // Backlog.
    let backlog_type = format!("bench.{run_id}.backlog");
    hook_rule(
        &client,
        &url,
        &backlog_type,
        &format!("{}/hook", receiver.url),
    )
    .await?;
    queue(&client, &url, &backlog_type, "b", args.events).await?;
    let before = store.history_size().await?;
    let started = Instant::now();
    let worker = Spawned::start_role(&args, "worker")?;
    wait_done(&client, &url, &backlog_type, args.events, args.timeout_secs).await?;
    let backlog_seconds = started.elapsed().as_secs_f64();
    let after = store.history_size().await?;
    let backlog_rate = args.events as f64 / backlog_seconds;
    eprintln!("backlog drained at {backlog_rate:.0}/s");

    // Steady load at 0.6x the receiver.
    let steady_type = format!("bench.{run_id}.steady");
    hook_rule(
        &client,
        &url,
        &steady_type,
        &format!("{}/hook", receiver.url),
    )
    .await?;
    let steady_rate = (capacity * 0.6).max(1.0);
    let steady_events = (steady_rate * args.steady_secs as f64) as u64;
    let steady_before = store.history_size().await?;
    paced(&client, &url, &steady_type, "s", steady_events, steady_rate).await?;
    wait_done(
        &client,
        &url,
        &steady_type,
        steady_events,
        args.timeout_secs,
    )
    .await?;
    let steady_after = store.history_size().await?;
    let steady = collect_latencies(&client, &url, &steady_type).await?;
    eprintln!("steady load done");

    // A receiver that refuses connections, with events waiting for it.
    let dead_address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let dead_target = format!("http://{dead_address}");
    let dead_type = format!("bench.{run_id}.dead");
    hook_rule(&client, &url, &dead_type, &format!("{dead_target}/hook")).await?;
    queue(&client, &url, &dead_type, "d", args.dead_events).await?;
    wait_waiting(
        &client,
        &url,
        &dead_target,
        args.dead_events,
        args.timeout_secs,
    )
    .await?;
    let pids = [api.child.id(), worker.child.id()];
    let rows_before = store.history_size().await?;
    let sluice_before = cpu_ticks(&pids);
    let postgres_before = postgres_ticks();
    let measured = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.dead_secs)).await;
    let elapsed = measured.elapsed().as_secs_f64();
    let sluice_after = cpu_ticks(&pids);
    let postgres_after = postgres_ticks();
    let rows_after = store.history_size().await?;
    let share = |before: u64, after: u64| after.saturating_sub(before) as f64 / TICKS / elapsed;
    eprintln!("dead receiver measured");

    // Meanwhile, a healthy receiver's events at a steady 20 a second.
    let healthy_type = format!("bench.{run_id}.healthy");
    hook_rule(
        &client,
        &url,
        &healthy_type,
        &format!("{}/hook", receiver.url),
    )
    .await?;
    let healthy_events = 20 * args.dead_secs.clamp(1, 10);
    paced(&client, &url, &healthy_type, "h", healthy_events, 20.0).await?;
    wait_done(
        &client,
        &url,
        &healthy_type,
        healthy_events,
        args.timeout_secs,
    )
    .await?;
    let healthy = collect_latencies(&client, &url, &healthy_type).await?;

    // A target with a rate limit, two worker processes.
    let (limited_events, limited_rate, limited_busiest_second) = if args.limit_per_second > 0.0 {
        let second_worker = Spawned::start_role(&args, "worker")?;
        let limited = Sink::start_recording().await?;
        let target = limited.url.replace(':', "%3A").replace('/', "%2F");
        let answer = client
            .put(format!("{url}/targets/{target}"))
            .json(&json!({"max_per_second": args.limit_per_second}))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!("cannot set the rate limit: {}", answer.text().await?);
        }
        // Every worker follows a change within a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let limited_type = format!("bench.{run_id}.limited");
        hook_rule(
            &client,
            &url,
            &limited_type,
            &format!("{}/hook", limited.url),
        )
        .await?;
        let events = (args.limit_per_second * 10.0).ceil() as u64;
        queue(&client, &url, &limited_type, "l", events).await?;
        wait_done(&client, &url, &limited_type, events, args.timeout_secs).await?;
        drop(second_worker);
        let times = limited.arrivals();
        let span = match (times.first(), times.last()) {
            (Some(first), Some(last)) => last.duration_since(*first).as_secs_f64(),
            _ => 0.0,
        };
        let busiest = super::report::busiest_second(&times);
        eprintln!("rate limit measured");
        (
            events,
            times.len().saturating_sub(1) as f64 / span.max(f64::EPSILON),
            busiest,
        )
    } else {
        (0, 0.0, 0)
    };

    let per_event = |before: HistorySize, after: HistorySize, events: u64| {
        (after.executions - before.executions) as f64 / events.max(1) as f64
    };
    drop(worker);
    drop(api);
    Ok(WebhookReport {
        database: sluice_store::redact_url(&args.database_url),
        receiver_delay_ms: args.receiver_delay_ms,
        receiver_connections: args.receiver_connections,
        capacity,
        backlog_events: args.events,
        backlog_seconds,
        backlog_rate,
        backlog_ratio: backlog_rate / capacity,
        backlog_executions_per_event: per_event(before, after, args.events),
        backlog_deferred: after.deferred - before.deferred,
        steady_rate,
        steady_events,
        steady_p50_ms: percentile(&steady.millis, 50.0),
        steady_p99_ms: percentile(&steady.millis, 99.0),
        steady_max_ms: steady.millis.last().copied().unwrap_or(0.0),
        steady_executions_per_event: per_event(steady_before, steady_after, steady_events),
        dead_events: args.dead_events,
        dead_seconds: elapsed,
        dead_sluice_cpu: share(sluice_before, sluice_after),
        dead_postgres_cpu: share(postgres_before, postgres_after),
        dead_rows_written: (rows_after.executions + rows_after.attempts)
            - (rows_before.executions + rows_before.attempts),
        healthy_events,
        healthy_p50_ms: percentile(&healthy.millis, 50.0),
        healthy_p99_ms: percentile(&healthy.millis, 99.0),
        limit_per_second: args.limit_per_second,
        limited_events,
        limited_rate,
        limited_busiest_second,
    })
}

/// What the receiver takes from a plain load: `connections` clients posting back to back
/// for five seconds (after one of warm-up).
async fn receiver_capacity(url: &str, connections: usize) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let body = json!({"order": "bench-1", "amount": 250});
    let count = Arc::new(AtomicU64::new(0));
    let warm = Instant::now() + Duration::from_secs(1);
    let end = warm + Duration::from_secs(5);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, body, count, target) = (
            client.clone(),
            body.clone(),
            count.clone(),
            format!("{url}/hook"),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let now = Instant::now();
                if now >= end {
                    return;
                }
                if client.post(&target).json(&body).send().await.is_ok() && now >= warm {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / 5.0)
}

async fn hook_rule(
    client: &reqwest::Client,
    url: &str,
    event_type: &str,
    hook: &str,
) -> anyhow::Result<()> {
    let rule = json!({
        "name": format!("bench {event_type}"),
        "event_type": event_type,
        "condition": true,
        "action": {"type": "call_webhook", "params": {"url": hook,
            "body": {"order": "{{ external_id }}", "amount": "{{ data.amount }}"}}},
    });
    let response = client
        .post(format!("{url}/rules"))
        .json(&rule)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "cannot create a rule: {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Posts `count` events of the type in batches of 1,000.
async fn queue(
    client: &reqwest::Client,
    url: &str,
    event_type: &str,
    prefix: &str,
    count: u64,
) -> anyhow::Result<()> {
    super::post_in_batches(
        client,
        url,
        count,
        |i| json!({"id": format!("{prefix}-{i}"), "type": event_type, "data": super::payload(i)}),
    )
    .await
}

/// Posts `count` events one by one at `rate` a second (each on time, whatever the answers).
async fn paced(
    client: &reqwest::Client,
    url: &str,
    event_type: &str,
    prefix: &str,
    count: u64,
    rate: f64,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / rate)).await;
        let (client, target) = (client.clone(), format!("{url}/events"));
        let body =
            json!({"id": format!("{prefix}-{i}"), "type": event_type, "data": super::payload(i)});
        posts.spawn(async move { client.post(target).json(&body).send().await });
        while let Some(done) = posts.try_join_next() {
            check_posted(done)?;
        }
    }
    while let Some(done) = posts.join_next().await {
        check_posted(done)?;
    }
    Ok(())
}

fn check_posted(
    done: Result<Result<reqwest::Response, reqwest::Error>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    let response = done?.context("cannot post an event")?;
    if response.status().as_u16() != 201 {
        bail!("an event was refused: {}", response.status());
    }
    Ok(())
}

/// Waits until `count` events of the type are processed or failed.
pub(super) async fn wait_done(
    client: &reqwest::Client,
    url: &str,
    event_type: &str,
    count: u64,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let stats: Value = client
            .get(format!("{url}/events/stats?type={event_type}"))
            .send()
            .await?
            .json()
            .await?;
        let done = stats["processed"].as_u64().unwrap_or(0) + stats["failed"].as_u64().unwrap_or(0);
        if done >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("gave up after {timeout_secs} s: {stats}");
        }
        let (since, done_then) = *first.get_or_insert((Instant::now(), done));
        tokio::time::sleep(poll_interval(
            since.elapsed(),
            done - done_then,
            count - done,
        ))
        .await;
    }
}

/// How long to wait before asking again how far the server got: often only near the end.
/// The stats a poll reads cost the server more the larger its backlog, and a bench must not
/// load what it measures (every 20 ms, they took a quarter of a core from a 20,000-event
/// drain); half the time the rest should take at the rate so far, 20–250 ms.
fn poll_interval(elapsed: Duration, progress: u64, remaining: u64) -> Duration {
    const FINE: Duration = Duration::from_millis(20);
    const COARSE: Duration = Duration::from_millis(250);
    if progress == 0 {
        return FINE;
    }
    let rest = elapsed.mul_f64(remaining as f64 / progress as f64);
    (rest / 2).clamp(FINE, COARSE)
}

/// Waits until (nearly) every event for `target` waits for it.
async fn wait_waiting(
    client: &reqwest::Client,
    url: &str,
    target: &str,
    count: u64,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let mut nearly_since: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let targets: Value = client
            .get(format!("{url}/targets"))
            .send()
            .await?
            .json()
            .await?;
        let listed = targets["data"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["target"] == target))
            .cloned()
            .unwrap_or(Value::Null);
        let waiting = listed["waiting"].as_u64().unwrap_or(0);
        // Every one of them, once the events that opened the circuit are back from their
        // retries; or all but a probe or two, for 15 s.
        if waiting >= count {
            return Ok(());
        }
        if waiting + 2 >= count {
            let nearly = *nearly_since.get_or_insert_with(Instant::now);
            if nearly.elapsed() >= Duration::from_secs(15) {
                return Ok(());
            }
        }
        if listed["state"] == "open" && listed.get("waiting").is_none() {
            // A build that does not count waiting events (--server-bin): give the events
            // time to reach the open circuit.
            tokio::time::sleep(Duration::from_secs(10)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("gave up after {timeout_secs} s: {waiting} of {count} events wait for {target}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clock ticks a second in /proc (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// CPU time (user + system, with waited-for children) of these processes, in ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|pid| process_ticks(*pid)).sum()
}

fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) closed by the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14–17 of the line, 12–15 here.
    let sum = fields
        .get(11..15)?
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Some(sum)
}

/// CPU time of every `postgres` process on this machine, in ticks.
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .filter_map(process_ticks)
        .sum()
}
