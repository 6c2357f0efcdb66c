//! `sluice bench --history N[,M…]`: what a long-lived installation costs to read. Builds a
//! history of settled events through the API (20 event types with a rule each; one type in
//! twenty fails), and at each size times the operator's reads (median of 5) and the drain of
//! fresh events on top of it. With `--retention-check` (and a server with RETENTION, e.g.
//! `--server-args "--retention 2m"`), it then keeps a producer going at `--rate` until
//! retention has deleted the history, and compares the producer's latency before and during.

use super::{progress_bar, wait_ready, BenchArgs};
use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TYPES: usize = 20;
/// Events per `POST /events/batch` while building.
const BATCH: u64 = 1_000;
/// Batches in flight while building.
const BATCHES_IN_FLIGHT: usize = 4;
/// Fresh events drained on top of each history.
const FRESH: u64 = 5_000;
/// Pause between the history settling and the reads.
const SETTLE: Duration = Duration::from_secs(3);
/// Times each read is repeated; the median is reported.
const REPEATS: usize = 5;

#[derive(Debug, Serialize)]
pub struct HistoryReport {
    pub url: String,
    pub database: Option<String>,
    pub sizes: Vec<SizeReport>,
    pub retention: Option<RetentionReport>,
}

#[derive(Debug, Serialize)]
pub struct SizeReport {
    pub events: u64,
    pub build_seconds: f64,
    /// Median milliseconds per read, in the order printed.
    pub reads: Vec<(String, f64)>,
    /// Fresh events per second, from the first post to the last one processed.
    pub fresh_drain_rate: f64,
}

#[derive(Debug, Serialize)]
pub struct RetentionReport {
    pub deleted: u64,
    pub deleting_seconds: f64,
    pub producer_rate: u64,
    pub p99_ms_before: f64,
    pub p99_ms_during: f64,
}

pub async fn bench_history(args: BenchArgs) -> anyhow::Result<HistoryReport> {
    let mut sizes = args.history.clone();
    sizes.sort_unstable();
    if sizes.first() == Some(&0) {
        bail!("--history sizes must be at least 1");
    }
    let (spawned, url, client) = super::connect(&args, "serve", 32)?;
    wait_ready(&client, &url).await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let types: Vec<String> = (0..TYPES)
        .map(|t| format!("hist.{run_id}.t{t:02}"))
        .collect();
    let failing = &types[TYPES - 1];
    for event_type in &types {
        // The failing type's condition exhausts its budget: a failure without retries.
        let condition = if event_type == failing {
            json!({"reduce": [(1..=30).collect::<Vec<i32>>(), {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}, [1]]})
        } else {
            json!({">=": [{"var": "amount"}, 0]})
        };
        let rule = json!({"name": format!("history {event_type}"), "event_type": event_type,
            "condition": condition, "action": {"type": "noop"}});
        expect_success(
            client
                .post(format!("{url}/rules"))
                .json(&rule)
                .send()
                .await?,
        )
        .await?;
    }

    let mut built = 0u64;
    let mut reports = Vec::new();
    for size in sizes {
        let started = Instant::now();
        post_events(&client, &url, &args, &types, built, size - built, "history").await?;
        wait_settled(&client, &url, None, size, args.timeout_secs).await?;
        let build_seconds = started.elapsed().as_secs_f64();
        built = size;
        // Reads of a settled history, not of one still being cleaned up: workers compact the
        // queue within a second or two of running dry.
        tokio::time::sleep(SETTLE).await;
        let reads = time_reads(&client, &url, &types).await?;
        let fresh_type = format!("hist.{run_id}.fresh{size}");
        let rule = json!({"name": format!("history {fresh_type}"), "event_type": fresh_type,
            "condition": true, "action": {"type": "noop"}});
        expect_success(
            client
                .post(format!("{url}/rules"))
                .json(&rule)
                .send()
                .await?,
        )
        .await?;
        let started = Instant::now();
        post_events(
            &client,
            &url,
            &args,
            std::slice::from_ref(&fresh_type),
            0,
            FRESH,
            "fresh",
        )
        .await?;
        wait_settled(&client, &url, Some(&fresh_type), FRESH, args.timeout_secs).await?;
        let fresh_drain_rate = FRESH as f64 / started.elapsed().as_secs_f64();
        reports.push(SizeReport {
            events: size,
            build_seconds,
            reads,
            fresh_drain_rate,
        });
    }
    let retention = if args.retention_check {
        Some(check_retention(&client, &url, &args, &run_id, built).await?)
    } else {
        None
    };
    Ok(HistoryReport {
        url,
        database: spawned
            .as_ref()
            .map(|_| sluice_store::redact_url(&args.database_url)),
        sizes: reports,
        retention,
    })
}

async fn expect_success(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("sluice answered {status}: {body}");
    }
    Ok(body)
}

/// Posts `count` events numbered from `first`, spread over `types`, in batches.
async fn post_events(
    client: &reqwest::Client,
    url: &str,
    args: &BenchArgs,
    types: &[String],
    first: u64,
    count: u64,
    label: &str,
) -> anyhow::Result<()> {
    let progress = progress_bar(count, args.json);
    progress.set_message(label.to_owned());
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = Vec::new();
    for _ in 0..BATCHES_IN_FLIGHT {
        let (client, url, next, progress) = (
            client.clone(),
            url.to_owned(),
            next.clone(),
            progress.clone(),
        );
        let types = types.to_vec();
        let label = label.to_owned();
        senders.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(BATCH, Ordering::Relaxed);
                if start >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let events: Vec<Value> = (start..(start + BATCH).min(count))
                    .map(|i| {
                        let n = first + i;
                        json!({"id": format!("{label}-{}-{n}", types[0]), "type": types[n as usize % types.len()],
                            "data": super::payload(n)})
                    })
                    .collect();
                let sent = events.len() as u64;
                let body = expect_success(
                    client
                        .post(format!("{url}/events/batch"))
                        .json(&json!({ "events": events }))
                        .send()
                        .await?,
                )
                .await?;
                let refused = body["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["status"] != "created")
                    .count();
                if refused > 0 {
                    bail!("{refused} events of a batch were not created: {body}");
                }
                progress.inc(sent);
            }
        }));
    }
    for sender in senders {
        sender.await??;
    }
    progress.finish_and_clear();
    Ok(())
}

/// Waits until `expected` events (of one type, or all) are stored and settled.
async fn wait_settled(
    client: &reqwest::Client,
    url: &str,
    event_type: Option<&str>,
    expected: u64,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let path = match event_type {
        Some(t) => format!("{url}/events/stats?type={t}"),
        None => format!("{url}/events/stats"),
    };
    loop {
        let stats: Value = client.get(&path).send().await?.json().await?;
        let settled =
            stats["processed"].as_u64().unwrap_or(0) + stats["failed"].as_u64().unwrap_or(0);
        if settled >= expected && stats["pending"] == 0 && stats["processing"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("gave up after {timeout_secs} s waiting for events to settle: {stats}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reads an operator makes, each timed `REPEATS` times; medians in milliseconds.
async fn time_reads(
    client: &reqwest::Client,
    url: &str,
    types: &[String],
) -> anyhow::Result<Vec<(String, f64)>> {
    let some_type = &types[3];
    let failing = &types[TYPES - 1];
    let newest: Value = client
        .get(format!("{url}/events?limit=1&type={failing}"))
        .send()
        .await?
        .json()
        .await?;
    let some_event = newest["data"][0]["id"]
        .as_i64()
        .context("the history has no failed event")?;
    // The deepest page: a cursor at the first event of the history.
    let first: Value = client
        .get(format!("{url}/events"))
        .query(&[("external_id", format!("history-{}-0", types[0]))])
        .send()
        .await?
        .json()
        .await?;
    let oldest = &first["data"][0];
    let deepest = match (
        oldest["created_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        oldest["id"].as_i64(),
    ) {
        (Some(at), Some(id)) => {
            crate::operations::events::encode_cursor(at.with_timezone(&chrono::Utc), id + 1)
        }
        _ => bail!("the history's first event is missing: {first}"),
    };
    let reads = [
        ("GET /events/stats".to_owned(), "/events/stats".to_owned()),
        (
            "GET /events?cursor=(the oldest page)".to_owned(),
            format!("/events?cursor={deepest}"),
        ),
        (
            "GET /events/stats?type=…".to_owned(),
            format!("/events/stats?type={some_type}"),
        ),
        (
            "GET /events?state=pending&limit=50 (empty)".to_owned(),
            "/events?state=pending&limit=50".to_owned(),
        ),
        (
            "GET /events?type=…&state=processed".to_owned(),
            format!("/events?type={some_type}&state=processed"),
        ),
        (
            "GET /events?type=(failing)&state=failed".to_owned(),
            format!("/events?type={failing}&state=failed"),
        ),
        ("GET /events (newest 50)".to_owned(), "/events".to_owned()),
        (
            "GET /events/{id}/attempts".to_owned(),
            format!("/events/{some_event}/attempts"),
        ),
        ("/console (overview)".to_owned(), "/console".to_owned()),
        (
            "GET /event-types (with events_total)".to_owned(),
            "/event-types".to_owned(),
        ),
        (
            "/console/events?state=failed".to_owned(),
            "/console/events?state=failed".to_owned(),
        ),
    ];
    let mut medians = Vec::new();
    for (label, path) in reads {
        let mut times = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            let started = Instant::now();
            let response = client.get(format!("{url}{path}")).send().await?;
            let status = response.status();
            response.bytes().await?;
            if !status.is_success() {
                bail!("{path} answered {status}");
            }
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        medians.push((label, times[REPEATS / 2]));
    }
    Ok(medians)
}

/// Produces at `--rate` (500/s by default) while the server's retention deletes the history,
/// and compares the producer's p99 before the first deletion with the one during deletion.
async fn check_retention(
    client: &reqwest::Client,
    url: &str,
    args: &BenchArgs,
    run_id: &str,
    history: u64,
) -> anyhow::Result<RetentionReport> {
    let rate = args.rate.unwrap_or(500).max(1);
    let event_type = format!("hist.{run_id}.producer");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (seconds since start, milliseconds) per post.
    let samples: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let started = Instant::now();
    let producer = {
        let (client, url, stop, samples) = (
            client.clone(),
            url.to_owned(),
            stop.clone(),
            samples.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            let mut in_flight = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
                let (client, url, samples) = (client.clone(), url.clone(), samples.clone());
                let body = json!({"id": format!("{event_type}-{i}"), "type": event_type, "data": super::payload(i)});
                in_flight.spawn(async move {
                    let sent = Instant::now();
                    let ok = client
                        .post(format!("{url}/events"))
                        .json(&body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 201);
                    if ok {
                        samples.lock().unwrap_or_else(|e| e.into_inner()).push((
                            sent.duration_since(started).as_secs_f64(),
                            sent.elapsed().as_secs_f64() * 1000.0,
                        ));
                    }
                });
                while in_flight.try_join_next().is_some() {}
                i += 1;
            }
            while in_flight.join_next().await.is_some() {}
        })
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut first_deletion: Option<f64> = None;
    let (deleted, done_at) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let metrics = client
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let deleted = metrics
            .lines()
            .find_map(|l| l.strip_prefix("sluice_retention_deleted_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        let now = started.elapsed().as_secs_f64();
        if deleted > 0 && first_deletion.is_none() {
            first_deletion = Some(now);
        }
        if deleted >= history {
            break (deleted, now);
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            bail!("retention deleted {deleted} of {history} events within {} s (is RETENTION set on the server?)", args.timeout_secs);
        }
    };
    stop.store(true, Ordering::Relaxed);
    producer.await?;
    let began = first_deletion.unwrap_or(done_at);
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let p99 = |from: f64, to: f64| {
        let mut window: Vec<f64> = samples
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, ms)| *ms)
            .collect();
        window.sort_by(f64::total_cmp);
        super::report::percentile(&window, 99.0)
    };
    Ok(RetentionReport {
        deleted,
        deleting_seconds: done_at - began,
        producer_rate: rate,
        p99_ms_before: p99(0.0, began),
        p99_ms_during: p99(began, done_at),
    })
}

impl HistoryReport {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "sluice bench --history against {}", self.url);
        if let Some(database) = &self.database {
            let _ = writeln!(out, "  database {database} (spawned)");
        }
        let _ = write!(out, "  {:<44}", "median of 5, ms");
        for size in &self.sizes {
            let _ = write!(out, "{:>14}", format!("{} events", size.events));
        }
        let _ = writeln!(out);
        if let Some(first) = self.sizes.first() {
            for (i, (label, _)) in first.reads.iter().enumerate() {
                let _ = write!(out, "  {label:<44}");
                for size in &self.sizes {
                    let _ = write!(out, "{:>14.1}", size.reads[i].1);
                }
                let _ = writeln!(out);
            }
        }
        let _ = write!(out, "  {:<44}", "fresh 5,000 drained, events/s");
        for size in &self.sizes {
            let _ = write!(out, "{:>14.0}", size.fresh_drain_rate);
        }
        let _ = writeln!(out);
        let _ = write!(out, "  {:<44}", "history built in, s");
        for size in &self.sizes {
            let _ = write!(out, "{:>14.1}", size.build_seconds);
        }
        let _ = writeln!(out);
        if let Some(r) = &self.retention {
            let _ = writeln!(
                out,
                "  retention: {} events deleted in {:.1} s while producing {}/s; producer p99 {:.1} ms before, {:.1} ms during ({:.2}x)",
                r.deleted,
                r.deleting_seconds,
                r.producer_rate,
                r.p99_ms_before,
                r.p99_ms_during,
                r.p99_ms_during / r.p99_ms_before.max(1e-9)
            );
        }
        out
    }
}
