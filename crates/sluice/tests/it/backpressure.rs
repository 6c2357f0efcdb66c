//! Back-pressure: events waiting for a receiver cost nothing while they wait — no claim, no
//! evaluation, no history row — and go as soon as it can take them; a slow receiver takes a
//! backlog at its own pace without a row of churn; waiting has a bound; the statements a
//! worker runs keep their index plans on a large table that was never analyzed.

use crate::helpers::{fresh_database, spawn_sibling, start_on, start_on_as, Db, Roles, TestApp};
use crate::processing::post_event;
use crate::receiver::Receiver;
use crate::story;
use crate::targets::{hook_rule, wait_until};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The target as `GET /targets` lists it (`null` until it is listed).
async fn target(app: &TestApp, name: &str) -> Value {
    crate::targets::target(app, name)
        .await
        .unwrap_or(Value::Null)
}

async fn queue(app: &TestApp, prefix: &str, event_type: &str, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"id": format!("{prefix}-{i}"), "type": event_type, "data": {"i": i}}))
            .collect();
        let (status, body) = app
            .post("/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn history_rows(app: &TestApp) -> (i64, i64) {
    (
        app.sql_number("SELECT COUNT(*) FROM rule_executions").await,
        app.sql_number("SELECT COUNT(*) FROM event_attempts").await,
    )
}

const OPEN_MS: u64 = 400;

/// Starts `sluice api` as a process of its own on `database_url` and scrapes its `/metrics`.
async fn metrics_of_an_api_process(database_url: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["api", "--host", "127.0.0.1", "--log-level", "warn"])
        .args(["--port", &port.to_string(), "--database-url", database_url])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        if let Ok(response) = client.get(format!("{url}/metrics")).send().await {
            if response.status() == 200 {
                break response.text().await.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "sluice api did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    metrics
}

story!(
    a_receiver_that_is_down_costs_nothing_while_events_wait_for_it,
    "--webhook-allow-private",
    "true",
    "--target-failure-threshold",
    "3",
    "--target-open-ms",
    "400",
    "--max-attempts",
    "50",
    "--retry-backoff-ms",
    "100"
);
async fn a_receiver_that_is_down_costs_nothing_while_events_wait_for_it(app: TestApp) {
    const WAITING: usize = 2000;
    let down = Receiver::refusing().await;
    let down_url = format!("http://{down}");
    let healthy = Receiver::start(200, 0).await;
    for (name, event_type, url) in [
        ("down", "to.down", down_url.as_str()),
        ("up", "to.up", &healthy.url),
    ] {
        let (status, body) = app.post("/rules", &hook_rule(name, event_type, url)).await;
        assert_eq!(status, 201, "{body}");
    }
    queue(&app, "d", "to.down", WAITING).await;

    // The circuit opens and every event ends up waiting in the queue for the target (all
    // but the probe of the moment), each with one deferral on record.
    wait_until(
        "every event waits for the target",
        Duration::from_secs(60),
        async || {
            let t = target(&app, &down_url).await;
            t["waiting"].as_i64().unwrap_or(0) >= WAITING as i64 - 1
        },
    )
    .await;
    let state = target(&app, &down_url).await;
    assert!(
        matches!(state["state"].as_str(), Some("open" | "half_open")),
        "{state}"
    );
    assert!(state["waiting_since"].is_string(), "{state}");
    // The Targets page says how many wait, and since when.
    let page = app.get("/console/targets").await.text().await.unwrap();
    let row = &page[page.find(&format!("<code>{down_url}</code>")).unwrap()..];
    let cell = &row[row.find("data-label=\"Waiting\" class=\"num\">").unwrap() + 33..];
    let shown: usize = cell[..cell.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap();
    assert!(shown + 2 >= WAITING, "the page shows {shown} waiting");
    assert!(
        cell[..cell.find("</td>").unwrap()].contains("since"),
        "{cell:.300}"
    );
    // An event's page says what it waits for, and since when.
    let (_, listed) = app
        .get_json("/events?type=to.down&state=pending&limit=1")
        .await;
    let id = listed["data"][0]["id"].as_i64().unwrap();
    let (_, event) = app.get_json(&format!("/events/{id}")).await;
    if event["state"] == "pending" {
        assert_eq!(event["waiting"]["target"], down_url, "{event}");
        assert!(event["waiting"]["since"].is_string(), "{event}");
        let html = app
            .get(&format!("/console/events/{id}"))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("Waiting for") && html.contains(&down_url),
            "{html}"
        );
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!("sluice_target_waiting{{target=\"{down_url}\"}}")),
        "{metrics}"
    );
    if app.db == Db::Postgres {
        // An API process of its own (workers serve no /metrics; in this test process every
        // app shares one recorder, so it must be another process) shows the same.
        let metrics = metrics_of_an_api_process(&app.database_url).await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("sluice_target_waiting{{target=\"{down_url}\"}}")))
            .unwrap_or_else(|| panic!("{metrics}"));
        let shown: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(shown + 2.0 >= WAITING as f64, "{line}");
    }

    // While it stays down, several open periods pass: the only rows written are the probes'
    // (one event at a time, each period), not one per waiting event.
    let (executions_before, attempts_before) = history_rows(&app).await;
    let waited = Instant::now();
    let mut posted = Vec::new();
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        posted.push(Instant::now());
        post_event(&app, &format!("up-{i}"), "to.up", json!({"i": i})).await;
    }
    let (executions_after, attempts_after) = history_rows(&app).await;
    let periods = waited.elapsed().as_millis() as i64 / OPEN_MS as i64 + 2;
    // A probe that fails is one failed delivery and, on its retry, one deferral; a healthy
    // event is one execution.
    let allowed = 2 * periods + 10;
    assert!(
        executions_after - executions_before <= allowed,
        "{} executions written in {} open periods while {WAITING} events waited",
        executions_after - executions_before,
        periods
    );
    assert!(
        attempts_after - attempts_before <= allowed,
        "{} attempts written while {WAITING} events waited",
        attempts_after - attempts_before
    );
    assert!(
        executions_after <= WAITING as i64 + allowed + 20,
        "history grows with outages: {executions_after} executions for {WAITING} events"
    );

    // The healthy receiver got its events meanwhile, promptly.
    wait_until(
        "the healthy receiver has its events",
        Duration::from_secs(20),
        async || healthy.count() >= 10,
    )
    .await;
    for request in healthy.requests() {
        let i = request.json()["data"]["i"].as_u64().unwrap() as usize;
        let took = request.at.saturating_duration_since(posted[i]);
        assert!(
            took < Duration::from_secs(2),
            "a healthy delivery took {took:?}"
        );
    }

    // It comes up: every waiting event is delivered, exactly once each.
    let up = Receiver::start_on(down, 200, 0).await;
    app.wait_for_stats(|s| s["processed"].as_i64() == Some(WAITING as i64 + 10))
        .await;
    let (_, stats) = app.get_json("/events/stats").await;
    assert_eq!(stats["failed"], 0, "{stats}");
    let keys: HashSet<String> = up
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), WAITING, "every waiting event was delivered");
    assert_eq!(up.count(), WAITING, "and none twice");
    let state = target(&app, &down_url).await;
    assert_eq!(state["state"], "closed", "{state}");
    assert_eq!(state["waiting"], 0, "{state}");
}

story!(
    a_slow_receiver_takes_a_backlog_at_its_pace_without_churn,
    "--webhook-allow-private",
    "true",
    "--worker-concurrency",
    "32"
);
async fn a_slow_receiver_takes_a_backlog_at_its_pace_without_churn(app: TestApp) {
    // 16 in flight at 30 ms a call: about 5 s for the backlog. This worker holds 256 events
    // and keeps at most 128 in line for one target, so most of the backlog is set aside.
    const BACKLOG: usize = 3000;
    let slow = Receiver::start(200, 30).await;
    let quick = Receiver::start(200, 0).await;
    for (name, event_type, url) in [
        ("slow", "to.slow", &slow.url),
        ("quick", "to.quick", &quick.url),
    ] {
        let (status, body) = app.post("/rules", &hook_rule(name, event_type, url)).await;
        assert_eq!(status, 201, "{body}");
    }
    queue(&app, "s", "to.slow", BACKLOG).await;
    // Events for another receiver, queued behind the backlog, do not wait for it.
    for i in 0..10 {
        post_event(&app, &format!("q-{i}"), "to.quick", json!({"i": i})).await;
    }
    wait_until(
        "the quick receiver has its events",
        Duration::from_secs(30),
        async || quick.count() >= 10,
    )
    .await;
    assert!(
        slow.count() < BACKLOG,
        "the other receiver's events waited for the whole backlog"
    );

    let processed = BACKLOG as i64 + 10;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, stats) = app.get_json("/events/stats").await;
        if stats["processed"].as_i64() == Some(processed) {
            assert_eq!(stats["failed"], 0, "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "backlog not drained: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys: HashSet<String> = slow
        .requests()
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), BACKLOG);
    assert_eq!(slow.count(), BACKLOG, "none delivered twice");
    let (executions, attempts) = history_rows(&app).await;
    assert!(
        executions as f64 <= 1.2 * processed as f64,
        "{executions} rule executions for {processed} events"
    );
    assert!(
        attempts as f64 <= 1.2 * processed as f64,
        "{attempts} attempts for {processed} events"
    );
    let deferred = app
        .sql_number("SELECT COUNT(*) FROM rule_executions WHERE result = 'deferred'")
        .await;
    assert_eq!(
        deferred, 0,
        "a receiver that answers is never a reason to defer"
    );
}

/// A backlog to a receiver that keeps up stays in the worker: events that find its line full
/// wait there for a place while the line moves, instead of going back to the queue to be
/// claimed again (and again).
async fn a_backlog_to_a_receiver_that_keeps_up_is_not_set_aside(db: Db) {
    const BACKLOG: usize = 2000;
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let private = ["--webhook-allow-private", "true"];
    let api = start_on_as(db, &database.url, &private, Roles::API).await;
    let quick = Receiver::start(200, 0).await;
    let (status, body) = api
        .post("/rules", &hook_rule("quick", "to.quick", &quick.url))
        .await;
    assert_eq!(status, 201, "{body}");
    queue(&api, "b", "to.quick", BACKLOG).await;
    // This worker holds up to 32 events, 2 in flight to one target and 16 in its line: about
    // half of what it holds of this backlog finds the line full.
    let worker = spawn_sibling(
        &api,
        &[
            "--webhook-allow-private",
            "true",
            "--worker-concurrency",
            "4",
            "--target-max-in-flight",
            "2",
        ],
        Roles::WORKER,
    )
    .await;
    api.wait_for_processed(BACKLOG as i64).await;
    assert_eq!(quick.count(), BACKLOG, "each delivered once");
    let metrics = api.get("/metrics").await.text().await.unwrap();
    let set_aside: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("sluice_set_aside_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    // Only while the line has not moved yet (the first claims), or stood still for a moment,
    // is an event set aside (tens here); each one was, without the wait (more than BACKLOG).
    assert!(
        set_aside < (BACKLOG / 5) as f64,
        "{set_aside} of {BACKLOG} events were set aside and claimed again"
    );
    worker.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_to_a_receiver_that_keeps_up_is_not_set_aside_sqlite() {
    a_backlog_to_a_receiver_that_keeps_up_is_not_set_aside(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_to_a_receiver_that_keeps_up_is_not_set_aside_postgres() {
    a_backlog_to_a_receiver_that_keeps_up_is_not_set_aside(Db::Postgres).await;
}

story!(
    an_event_that_waits_too_long_fails_with_the_reason_and_replays,
    "--webhook-allow-private",
    "true"
);
async fn an_event_that_waits_too_long_fails_with_the_reason_and_replays(app: TestApp) {
    let receiver = Receiver::start(200, 0).await;
    let name = receiver.url.clone();
    let (status, body) = app
        .put("/event-types/slowpoke", &json!({"max_wait_ms": 10}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["path"], "max_wait_ms", "{body}");
    // TARGET_MAX_WAIT is a day; this type allows two seconds.
    let (status, body) = app
        .put("/event-types/slowpoke", &json!({"max_wait_ms": 2000}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_wait_ms"], 2000);
    let (status, _) = app
        .post("/rules", &hook_rule("later", "slowpoke", &name))
        .await;
    assert_eq!(status, 201);
    let (status, _) = app.post("/targets/pause", &json!({ "target": name })).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let started = Instant::now();
    let id = post_event(&app, "sp-1", "slowpoke", json!({})).await;
    let event = app.wait_for_state(id, &["failed"]).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "failed before its wait was over"
    );
    let error = event["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("TARGET_MAX_WAIT"), "{event}");
    let attempts = app.attempts(id).await;
    let results: Vec<&str> = attempts
        .iter()
        .flat_map(|a| a["rule_executions"].as_array().unwrap())
        .map(|x| x["result"].as_str().unwrap())
        .collect();
    // One deferral while it waited (not one per second), then the failure.
    assert_eq!(results, ["failed", "deferred"], "{attempts:?}");
    let reason = attempts[0]["rule_executions"][0]["error"].as_str().unwrap();
    assert!(
        reason.contains(&format!("waited 2s for {name}")),
        "{reason}"
    );
    assert!(reason.contains("is paused"), "{reason}");
    assert_eq!(receiver.count(), 0);

    // Once the receiver is back, a replay delivers it.
    let (status, _) = app
        .post("/targets/resume", &json!({ "target": name }))
        .await;
    assert_eq!(status, 200);
    let (status, body) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_state(id, &["processed"]).await;
    assert_eq!(receiver.count(), 1);
}

/// Every statement a worker runs per batch — claims, dedupe lookups, `started` records,
/// completions, releases of waiting events — keeps an index plan on tables that hold a
/// million rows and were never analyzed (autovacuum may be off, as it is on the test
/// server): none of them scans `rule_executions`, `event_attempts` or `events`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_statements_keep_index_plans_on_a_large_unanalyzed_history() {
    let Some(database) = crate::helpers::fresh_database(Db::Postgres).await else {
        return;
    };
    let flags = ["--webhook-allow-private", "true"];
    let app = start_on(Db::Postgres, &database.url, &flags).await;
    let receiver = Receiver::start(200, 0).await;
    let (status, _) = app
        .post("/rules", &hook_rule("plan", "plan", &receiver.url))
        .await;
    assert_eq!(status, 201);
    // Deliveries on a small history: every connection plans (and, after a few runs, keeps
    // a generic plan for) its statements while the tables are nearly empty.
    queue(&app, "small", "plan", 200).await;
    app.wait_for_stats(|s| s["processed"].as_i64() == Some(200))
        .await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
        sqlx::query(
            "INSERT INTO rule_executions (attempt_id, event_id, rule_id, rule_version_id, \
                result, idempotency_key, executed_at) \
             SELECT g, g, 1, 1, CASE WHEN g % 3 = 0 THEN 'deferred' ELSE 'applied' END, \
                'evt_' || g || '_rule_1_seed', now() FROM generate_series(1, 1000000) g",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO event_attempts (event_id, attempt_no, trigger, status, worker, \
                started_at, finished_at, duration_ms) \
             SELECT 10000000 + g, 1, 'initial', 'success', 'seed', now(), now(), 1 \
             FROM generate_series(1, 300000) g",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO events (external_id, type, payload, payload_hash, state, \
                received_count, attempts, created_at, updated_at, processed_at) \
             SELECT 'seed-' || g, 'seed', '{}'::jsonb, 'h', 'processed', 1, 1, now(), now(), now() \
             FROM generate_series(1, 300000) g",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        // A busy backend reports its statistics at most once a second: after that, only
        // what happens from now on is counted (index builds count as scans, and the small
        // tables were rightly scanned).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        sqlx::query("SELECT pg_stat_reset()")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    queue(&app, "p", "plan", 50).await;
    app.wait_for_stats(|s| s["processed"].as_i64() == Some(300_250))
        .await;
    // Waiting and release: a paused target's events wait, then go.
    let (status, _) = app
        .post("/targets/pause", &json!({ "target": receiver.url }))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    queue(&app, "w", "plan", 20).await;
    wait_until(
        "events wait for the paused target",
        Duration::from_secs(30),
        async || target(&app, &receiver.url).await["waiting"].as_i64() == Some(20),
    )
    .await;
    let (status, _) = app
        .post("/targets/resume", &json!({ "target": receiver.url }))
        .await;
    assert_eq!(status, 200);
    app.wait_for_stats(|s| s["processed"].as_i64() == Some(300_270))
        .await;
    assert_eq!(receiver.count(), 270);

    app.stop().await;
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let scans: Vec<(String, i64)> = sqlx::query_as(
        "SELECT relname::text, COALESCE(seq_scan, 0) FROM pg_stat_user_tables \
         WHERE relname IN ('rule_executions', 'event_attempts', 'events') ORDER BY relname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let analyzed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname = 'rule_executions' \
         AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(analyzed, 0, "the history was never analyzed");
    assert_eq!(
        scans,
        [
            ("event_attempts".to_owned(), 0),
            ("events".to_owned(), 0),
            ("rule_executions".to_owned(), 0)
        ],
        "sequential scans of the history"
    );
}
