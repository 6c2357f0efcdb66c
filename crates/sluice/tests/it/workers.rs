//! Workers as an operator meets them: several processes sharing one database, a worker that
//! died holding a lease, a slow action outliving the lease, and a graceful stop and restart.

use crate::helpers::{fresh_database, spawn_app, spawn_sibling, start_on, Db, Roles, TestApp};
use crate::live::Watcher;
use crate::receiver::Receiver;
use crate::story;
use serde_json::{json, Value};
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// Direct access to a test database, for what the API does not show (or to stage a crash).
pub(crate) enum Sql {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Sql {
    pub(crate) async fn connect(db: Db, url: &str) -> Sql {
        match db {
            Db::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .unwrap()
                    .busy_timeout(Duration::from_secs(10));
                Sql::Sqlite(SqlitePool::connect_with(options).await.unwrap())
            }
            Db::Postgres => Sql::Postgres(PgPool::connect(url).await.unwrap()),
        }
    }

    /// One integer (e.g. a count) from SQL both backends understand.
    pub(crate) async fn number(&self, sql: &str) -> i64 {
        match self {
            Sql::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Sql::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// (text, integer) rows from SQL both backends understand.
    pub(crate) async fn pairs(&self, sql: &str) -> Vec<(String, i64)> {
        match self {
            Sql::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            Sql::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs one statement; returns the rows it changed.
    pub(crate) async fn execute(&self, sql: &str) -> u64 {
        match self {
            Sql::Sqlite(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Sql::Postgres(pool) => sqlx::query(sql)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Moves the matching events' `created_at` and `updated_at` back by `hours`, as if they
    /// had arrived (and last changed) that long ago.
    pub(crate) async fn backdate(&self, condition: &str, hours: i64) -> u64 {
        let shift = match self {
            Sql::Sqlite(_) => format!("- {}", hours * 3_600_000_000),
            Sql::Postgres(_) => format!("- interval '{hours} hours'"),
        };
        self.execute(&format!(
            "UPDATE events SET created_at = created_at {shift}, updated_at = updated_at {shift} \
             WHERE {condition}"
        ))
        .await
    }

    /// What a worker that died mid-attempt leaves behind: an event `processing` under a
    /// lease that ran out a while ago (in the queue), and a `running` attempt row (as claims
    /// wrote before the attempt was written only at its end; the reaper closes either kind). Returns (event id, attempt id).
    async fn stage_dead_worker_claim(&self, external_id: &str, event_type: &str) -> (i64, i64) {
        match self {
            Sql::Sqlite(pool) => {
                let now = chrono::Utc::now().timestamp_micros();
                let (minute_ago, expired) = (now - 60_000_000, now - 30_000_000);
                let mut tx = pool.begin().await.unwrap();
                let event_id: i64 = sqlx::query_scalar(
                    "INSERT INTO events (external_id, type, payload, payload_hash, state, attempts, \
                        run_attempts, next_attempt_at, lease_expires_at, leased_by, created_at, updated_at) \
                     VALUES (?, ?, '{\"n\": 1}', 'staged', 'processing', 1, 1, ?, ?, 'dead-worker', ?, ?) \
                     RETURNING id",
                )
                .bind(external_id)
                .bind(event_type)
                .bind(minute_ago)
                .bind(expired)
                .bind(minute_ago)
                .bind(minute_ago)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                let attempt_id: i64 = sqlx::query_scalar(
                    "INSERT INTO event_attempts (event_id, attempt_no, trigger, status, worker, started_at) \
                     VALUES (?, 1, 'initial', 'running', 'dead-worker', ?) RETURNING id",
                )
                .bind(event_id)
                .bind(minute_ago)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                sqlx::query("UPDATE events SET current_attempt_id = ? WHERE id = ?")
                    .bind(attempt_id)
                    .bind(event_id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO event_queue (event_id, type, next_attempt_at, lease_expires_at) \
                     VALUES (?, ?, ?, ?)",
                )
                .bind(event_id)
                .bind(event_type)
                .bind(minute_ago)
                .bind(expired)
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
                (event_id, attempt_id)
            }
            Sql::Postgres(pool) => {
                let mut tx = pool.begin().await.unwrap();
                let event_id: i64 = sqlx::query_scalar(
                    "INSERT INTO events (external_id, type, payload, payload_hash, state, attempts, \
                        run_attempts, next_attempt_at, lease_expires_at, leased_by, created_at, updated_at) \
                     VALUES ($1, $2, '{\"n\": 1}', 'staged', 'processing', 1, 1, \
                        now() - interval '60 seconds', now() - interval '30 seconds', 'dead-worker', \
                        now() - interval '60 seconds', now() - interval '60 seconds') \
                     RETURNING id",
                )
                .bind(external_id)
                .bind(event_type)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                let attempt_id: i64 = sqlx::query_scalar(
                    "INSERT INTO event_attempts (event_id, attempt_no, trigger, status, worker, started_at) \
                     VALUES ($1, 1, 'initial', 'running', 'dead-worker', now() - interval '60 seconds') \
                     RETURNING id",
                )
                .bind(event_id)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                sqlx::query("UPDATE events SET current_attempt_id = $1 WHERE id = $2")
                    .bind(attempt_id)
                    .bind(event_id)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO event_queue (event_id, type, next_attempt_at, lease_expires_at) \
                     VALUES ($1, $2, now() - interval '60 seconds', now() - interval '30 seconds')",
                )
                .bind(event_id)
                .bind(event_type)
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
                (event_id, attempt_id)
            }
        }
    }

    async fn close(self) {
        match self {
            Sql::Sqlite(pool) => pool.close().await,
            Sql::Postgres(pool) => pool.close().await,
        }
    }
}

/// The Idempotency-Key of each call the receiver got, in arrival order (recorded as the call
/// arrives, before the receiver's delay).
fn idempotency_keys(receiver: &Receiver) -> Vec<String> {
    receiver
        .requests()
        .iter()
        .map(|r| {
            r.header("idempotency-key")
                .unwrap_or_else(|| "<none>".to_owned())
        })
        .collect()
}

/// How many times each key was called, for keys called more than once.
fn repeated(keys: &[String]) -> HashMap<&str, usize> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for key in keys {
        *counts.entry(key.as_str()).or_default() += 1;
    }
    counts.retain(|_, n| *n > 1);
    counts
}

fn webhook_rule(event_type: &str, url: &str) -> Value {
    json!({"name": format!("hook {event_type}"), "event_type": event_type, "condition": true,
           "action": {"type": "call_webhook", "params": {"url": url, "timeout_ms": 60000}}})
}

fn noop_rule(event_type: &str) -> Value {
    json!({"name": format!("noop {event_type}"), "event_type": event_type, "condition": true,
           "action": {"type": "noop"}})
}

fn batch(prefix: &str, from: usize, count: usize, event_type: &str) -> Value {
    let events: Vec<Value> = (from..from + count)
        .map(|i| json!({"id": format!("{prefix}-{i}"), "type": event_type, "data": {"i": i}}))
        .collect();
    json!({ "events": events })
}

fn all_created(body: &Value) -> bool {
    body["results"]
        .as_array()
        .is_some_and(|r| r.iter().all(|r| r["status"] == "created"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_the_work_and_each_event_runs_once() {
    const EVENTS: usize = 3_000;
    let Some(app) = spawn_app(Db::Postgres).await else {
        return;
    };
    let second = spawn_sibling(&app, &[], Roles::WORKER).await;
    let third = spawn_sibling(&app, &[], Roles::WORKER).await;
    let (status, rule) = app.post("/rules", &noop_rule("job")).await;
    assert_eq!(status, 201, "{rule}");

    for from in (0..EVENTS).step_by(1_000) {
        let (status, body) = app
            .post("/events/batch", &batch("job", from, 1_000, "job"))
            .await;
        assert_eq!(status, 200);
        assert!(all_created(&body), "{body}");
    }
    app.wait_for_stats(|s| s["processed"] == EVENTS && s["pending"] == 0 && s["processing"] == 0)
        .await;

    let sql = Sql::connect(Db::Postgres, &app.database_url).await;
    assert_eq!(
        sql.number("SELECT count(*) FROM events").await,
        EVENTS as i64
    );
    let twice = sql
        .pairs(
            "SELECT event_id::text, count(*) FROM event_attempts GROUP BY event_id \
             HAVING count(*) <> 1 ORDER BY event_id LIMIT 20",
        )
        .await;
    assert!(
        twice.is_empty(),
        "events with other than one attempt: {twice:?}"
    );
    assert_eq!(
        sql.number("SELECT count(*) FROM event_attempts WHERE status <> 'success'")
            .await,
        0
    );
    let not_once = sql
        .pairs(
            "SELECT e.id::text, count(x.id) FROM events e \
             LEFT JOIN rule_executions x ON x.event_id = e.id AND x.result = 'applied' \
             GROUP BY e.id HAVING count(x.id) <> 1 ORDER BY e.id LIMIT 20",
        )
        .await;
    assert!(
        not_once.is_empty(),
        "events not applied exactly once: {not_once:?}"
    );
    assert_eq!(
        sql.number("SELECT count(*) FROM rule_executions").await,
        EVENTS as i64
    );

    let split = sql
        .pairs("SELECT worker, count(*) FROM event_attempts GROUP BY worker ORDER BY worker")
        .await;
    eprintln!("work split between worker processes: {split:?}");
    assert!(split.len() >= 2, "one worker did everything: {split:?}");
    sql.close().await;

    third.stop().await;
    second.stop().await;
    app.stop().await;
}

story!(a_dead_workers_expired_lease_is_given_back_and_the_event_processed);
async fn a_dead_workers_expired_lease_is_given_back_and_the_event_processed(app: TestApp) {
    let (status, rule) = app.post("/rules", &noop_rule("job")).await;
    assert_eq!(status, 201, "{rule}");
    let mut watcher = Watcher::connect(&app, "?event_type=job").await;

    let sql = Sql::connect(app.db, &app.database_url).await;
    let (id, dead_attempt) = sql.stage_dead_worker_claim("orphan-1", "job").await;

    let event = app.wait_for_state(id, &["processed"]).await;
    assert_eq!(event["attempts"], 2, "{event}");

    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let (retry, dead) = (&attempts[0], &attempts[1]);
    assert_eq!(dead["id"], dead_attempt);
    assert_eq!(dead["status"], "abandoned", "{dead}");
    assert_eq!(dead["worker"], "dead-worker");
    assert!(
        dead["error"].as_str().unwrap_or_default().contains("lease"),
        "{dead}"
    );
    assert!(dead["finished_at"].is_string(), "{dead}");
    assert_eq!(retry["attempt_no"], 2);
    assert_eq!(retry["trigger"], "retry", "{retry}");
    assert_eq!(retry["status"], "success", "{retry}");
    assert_ne!(retry["worker"], "dead-worker");
    assert_eq!(retry["rule_executions"][0]["result"], "applied", "{retry}");

    // A watcher saw the event given back, then processed.
    let released = watcher
        .until("the release", |m| {
            m["event_id"] == id && m["status"] == "abandoned"
        })
        .await;
    assert_eq!(released["type"], "event.updated");
    assert_eq!(released["state"], "pending", "{released}");
    assert_eq!(released["attempt_id"], dead_attempt);
    watcher.until_processed(id).await;

    watcher.close().await;
    sql.close().await;
    app.stop().await;
}

story!(
    a_slow_action_keeps_its_lease_and_runs_once,
    "--webhook-allow-private",
    "true"
);
async fn a_slow_action_keeps_its_lease_and_runs_once(app: TestApp) {
    // Longer than a lease (10 s): only the heartbeat keeps the reaper away.
    let receiver = Receiver::start(200, 12_000).await;
    let (status, rule) = app
        .post("/rules", &webhook_rule("slow", &receiver.url))
        .await;
    assert_eq!(status, 201, "{rule}");
    let (status, event) = app
        .post(
            "/events",
            &json!({"id": "slow-1", "type": "slow", "data": {}}),
        )
        .await;
    assert_eq!(status, 201, "{event}");
    let id = event["id"].as_i64().unwrap();

    let event = app.wait_for_state(id, &["processed", "failed"]).await;
    assert_eq!(event["state"], "processed", "{event}");
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0]["status"], "success");
    assert_eq!(
        idempotency_keys(&receiver).len(),
        1,
        "the webhook was called again"
    );
    app.stop().await;
}

/// Stop a busy worker, start another on the same database: nothing is lost, nothing is left
/// half-done, and no webhook is sent twice.
async fn a_stopped_worker_finishes_what_it_holds_and_a_restart_finishes_the_rest(db: Db) {
    const EVENTS: usize = 200;
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let url = database.url.clone();
    let flags = [
        "--webhook-allow-private",
        "true",
        "--worker-concurrency",
        "16",
    ];
    let receiver = Receiver::start(200, 200).await;

    let first = start_on(db, &url, &flags).await;
    let (status, rule) = first
        .post("/rules", &webhook_rule("job", &receiver.url))
        .await;
    assert_eq!(status, 201, "{rule}");
    let (status, body) = first
        .post("/events/batch", &batch("job", 0, EVENTS, "job"))
        .await;
    assert_eq!(status, 200);
    assert!(all_created(&body), "{body}");
    // Stop once work is under way.
    first
        .wait_for_stats(|s| s["processed"].as_i64().is_some_and(|n| n > 0))
        .await;
    first.stop().await;

    // What the stopped worker held, it finished: nothing processing, no attempt running or
    // abandoned, and every webhook it started is recorded as applied.
    let sql = Sql::connect(db, &url).await;
    let by_state = sql
        .pairs("SELECT state, count(*) FROM events GROUP BY state ORDER BY state")
        .await;
    let processed_at_stop = sql
        .number("SELECT count(*) FROM events WHERE state = 'processed'")
        .await;
    eprintln!("at stop: {by_state:?}");
    assert_eq!(
        sql.number("SELECT count(*) FROM events WHERE state = 'processing'")
            .await,
        0,
        "{by_state:?}"
    );
    let attempts = sql
        .pairs("SELECT status, count(*) FROM event_attempts GROUP BY status ORDER BY status")
        .await;
    // Attempts deferred because the receiver was at its in-flight cap ran no action.
    let ran: Vec<(String, i64)> = attempts
        .iter()
        .filter(|(status, _)| status != "deferred")
        .cloned()
        .collect();
    assert_eq!(
        ran,
        [("success".to_owned(), processed_at_stop)],
        "{attempts:?}"
    );
    assert_eq!(idempotency_keys(&receiver).len() as i64, processed_at_stop);
    assert!(
        processed_at_stop < EVENTS as i64,
        "everything was done before the stop; the story needs work left over"
    );

    // A new process on the same database does the rest.
    let second = start_on(db, &url, &flags).await;
    second
        .wait_for_stats(|s| s["processed"] == EVENTS && s["pending"] == 0 && s["processing"] == 0)
        .await;
    assert_eq!(
        sql.number("SELECT count(*) FROM event_attempts WHERE status <> 'success'")
            .await,
        0
    );
    let twice = sql
        .pairs(
            "SELECT CAST(event_id AS TEXT), count(*) FROM event_attempts GROUP BY event_id \
             HAVING count(*) <> 1 ORDER BY event_id LIMIT 20",
        )
        .await;
    assert!(
        twice.is_empty(),
        "events with other than one attempt: {twice:?}"
    );
    let keys = idempotency_keys(&receiver);
    assert_eq!(keys.len(), EVENTS);
    assert!(
        repeated(&keys).is_empty(),
        "webhooks sent twice: {:?}",
        repeated(&keys)
    );

    sql.close().await;
    second.stop().await;
}

mod a_stopped_worker_finishes_what_it_holds_and_a_restart_finishes_the_rest {
    use crate::helpers::Db;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_stopped_worker_finishes_what_it_holds_and_a_restart_finishes_the_rest(Db::Sqlite)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_stopped_worker_finishes_what_it_holds_and_a_restart_finishes_the_rest(
            Db::Postgres,
        )
        .await;
    }
}

story!(a_dead_workers_last_allowed_attempt_fails_the_event);
async fn a_dead_workers_last_allowed_attempt_fails_the_event(app: TestApp) {
    let (status, rule) = app.post("/rules", &noop_rule("job")).await;
    assert_eq!(status, 201, "{rule}");
    let sql = Sql::connect(app.db, &app.database_url).await;
    let (id, dead_attempt) = sql.stage_dead_worker_claim("orphan-last", "job").await;
    // The staged attempt is the fourth of four allowed (MAX_ATTEMPTS defaults to 4).
    let staged = match &sql {
        Sql::Sqlite(pool) => sqlx::query("UPDATE events SET run_attempts = 4 WHERE id = ?")
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        Sql::Postgres(pool) => sqlx::query("UPDATE events SET run_attempts = 4 WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    };
    assert_eq!(staged.unwrap(), 1);

    let event = app.wait_for_state(id, &["failed", "processed"]).await;
    assert_eq!(event["state"], "failed", "{event}");
    assert!(
        event["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("lease"),
        "{event}"
    );
    let attempts = app.attempts(id).await;
    assert_eq!(
        attempts.len(),
        1,
        "no attempt beyond the last allowed: {attempts:#?}"
    );
    assert_eq!(attempts[0]["id"], dead_attempt);
    assert_eq!(attempts[0]["status"], "abandoned");
    sql.close().await;
    app.stop().await;
}

/// Kill a worker process mid-webhook (its runtime vanishes, as with kill -9), start another:
/// every event still ends processed, the dead attempts are abandoned, and a webhook is only
/// ever repeated with the same Idempotency-Key.
async fn a_killed_worker_loses_nothing_and_repeats_webhooks_only_under_the_same_key(db: Db) {
    const EVENTS: usize = 24;
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let url = database.url.clone();
    let flags = [
        "--webhook-allow-private",
        "true",
        "--worker-concurrency",
        "4",
    ];
    // (The webhook-id sluice sends is the Idempotency-Key.)
    let receiver = Receiver::start(200, 2_000).await;

    // The doomed process runs on a runtime of its own, so it can be made to vanish.
    let doomed_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let doomed = {
        let url = url.clone();
        doomed_runtime
            .spawn(async move { start_on(db, &url, &flags).await })
            .await
            .unwrap()
    };
    let (status, rule) = doomed
        .post("/rules", &webhook_rule("job", &receiver.url))
        .await;
    assert_eq!(status, 201, "{rule}");
    let (status, body) = doomed
        .post("/events/batch", &batch("job", 0, EVENTS, "job"))
        .await;
    assert_eq!(status, 200);
    assert!(all_created(&body), "{body}");
    // Kill it while webhooks are in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while idempotency_keys(&receiver).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no webhook was ever called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed_runtime.shutdown_background();
    std::mem::forget(doomed);
    let at_kill = idempotency_keys(&receiver).len();

    let survivor = start_on(db, &url, &flags).await;
    survivor
        .wait_for_stats(|s| s["processed"] == EVENTS && s["pending"] == 0 && s["processing"] == 0)
        .await;

    let sql = Sql::connect(db, &url).await;
    let statuses = sql
        .pairs("SELECT status, count(*) FROM event_attempts GROUP BY status ORDER BY status")
        .await;
    eprintln!("killed with {at_kill} webhooks started; attempts by status: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|(s, _)| s == "success" || s == "abandoned"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|(s, _)| s == "abandoned"),
        "nothing was in flight when the worker died: {statuses:?}"
    );
    assert_eq!(
        sql.number(
            "SELECT count(*) FROM event_attempts WHERE status = 'abandoned' AND error NOT LIKE '%lease%'"
        )
        .await,
        0
    );
    let not_once = sql
        .pairs(
            "SELECT CAST(e.id AS TEXT), count(x.id) FROM events e \
             LEFT JOIN rule_executions x ON x.event_id = e.id AND x.result = 'applied' \
             GROUP BY e.id HAVING count(x.id) <> 1 ORDER BY e.id LIMIT 20",
        )
        .await;
    assert!(
        not_once.is_empty(),
        "events not applied exactly once: {not_once:?}"
    );
    // One key per event, kept across attempts: a repeat after the crash is recognisable.
    let keys = idempotency_keys(&receiver);
    let distinct: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), EVENTS, "{keys:?}");
    eprintln!("webhooks repeated after the crash: {:?}", repeated(&keys));
    // Only events whose attempt was abandoned were called more than once.
    let abandoned = sql
        .number("SELECT count(DISTINCT event_id) FROM event_attempts WHERE status = 'abandoned'")
        .await;
    assert!(
        repeated(&keys).len() as i64 <= abandoned,
        "{:?}",
        repeated(&keys)
    );

    sql.close().await;
    survivor.stop().await;
}

mod a_killed_worker_loses_nothing_and_repeats_webhooks_only_under_the_same_key {
    use crate::helpers::Db;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_killed_worker_loses_nothing_and_repeats_webhooks_only_under_the_same_key(
            Db::Sqlite,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_killed_worker_loses_nothing_and_repeats_webhooks_only_under_the_same_key(
            Db::Postgres,
        )
        .await;
    }
}

/// A worker pool: a `pay.*` worker leaves `ship.*` events alone; a worker excluding `pay.*`
/// takes them; attempts say which pool ran them.
async fn worker_pools_claim_only_their_event_types(db: Db) {
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let pay = start_on(db, &database.url, &["--event-types", "pay.*"]).await;
    for event_type in ["pay.card", "ship.box"] {
        let (status, body) = pay.post("/rules", &noop_rule(event_type)).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = pay
        .post("/events/batch", &batch("p", 0, 5, "pay.card"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = pay
        .post("/events/batch", &batch("s", 0, 5, "ship.box"))
        .await;
    assert_eq!(status, 200, "{body}");
    pay.wait_for_processed(5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, stats) = pay.get_json("/events/stats?type=ship.box").await;
    assert_eq!(
        stats["pending"], 5,
        "the pay.* worker left ship.* alone: {stats}"
    );
    let (_, list) = pay.get_json("/events?type=pay.card&limit=1").await;
    let attempts = pay.attempts(list["data"][0]["id"].as_i64().unwrap()).await;
    assert!(
        attempts[0]["worker"].as_str().unwrap().ends_with("[pay.*]"),
        "{attempts:?}"
    );

    let rest = spawn_sibling(&pay, &["--exclude-event-types", "pay.*"], Roles::WORKER).await;
    pay.wait_for_processed(10).await;
    let (_, list) = pay.get_json("/events?type=ship.box&limit=1").await;
    let attempts = pay.attempts(list["data"][0]["id"].as_i64().unwrap()).await;
    assert!(
        attempts[0]["worker"]
            .as_str()
            .unwrap()
            .ends_with("[!pay.*]"),
        "{attempts:?}"
    );
    let metrics = pay.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("pool=\"pay.*\""), "{metrics}");
    rest.stop().await;
    pay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_pools_claim_only_their_event_types_sqlite() {
    worker_pools_claim_only_their_event_types(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_pools_claim_only_their_event_types_postgres() {
    worker_pools_claim_only_their_event_types(Db::Postgres).await;
}

/// Every event passes through the queue; its churn must not leave it growing, even where
/// the database's autovacuum is off (as on the machine CI runs on): the queue's dead rows are
/// reclaimed by sluice itself, and once every event is settled nothing of it remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_compacted_after_churn() {
    const EVENTS: usize = 2_000;
    let Some(app) = spawn_app(Db::Postgres).await else {
        return;
    };
    let (status, rule) = app.post("/rules", &noop_rule("job")).await;
    assert_eq!(status, 201, "{rule}");
    for from in (0..EVENTS).step_by(1_000) {
        let (status, body) = app
            .post("/events/batch", &batch("job", from, 1_000, "job"))
            .await;
        assert_eq!(status, 200);
        assert!(all_created(&body), "{body}");
    }
    app.wait_for_stats(|s| s["processed"] == EVENTS && s["pending"] == 0 && s["processing"] == 0)
        .await;
    let sql = Sql::connect(Db::Postgres, &app.database_url).await;
    let size = "SELECT pg_relation_size('event_queue')";
    assert!(sql.number(size).await > 0, "the churn left pages behind");
    let store = sluice_store::PostgresStore::connect(&app.database_url, 2)
        .await
        .unwrap();
    sluice_store::UpkeepStore::compact_queue(&store)
        .await
        .unwrap();
    assert_eq!(sql.number("SELECT count(*) FROM event_queue").await, 0);
    assert_eq!(sql.number(size).await, 0, "emptied pages are given back");
    sql.close().await;
    app.stop().await;
}

// A worker that polls only every ten minutes: every event here reaches it by a wake-up.
story!(
    a_worker_starts_new_events_without_polling,
    "--worker-poll-interval-ms",
    "600000"
);
async fn a_worker_starts_new_events_without_polling(app: TestApp) {
    for i in 0..3 {
        let (status, body) = app
            .post(
                "/events",
                &json!({"id": format!("one-{i}"), "type": "t", "data": {}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        app.wait_for_processed(i + 1).await;
    }
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("batch-{i}"), "type": "t", "data": {}}))
        .collect();
    let (status, body) = app
        .post("/events/batch", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_processed(6).await;
}
