//! Live updates over `GET /ws`: what a watcher sees while events are created and processed,
//! filters, messages from another process (PostgreSQL), and a client too slow to keep up.

use crate::helpers::{fresh_database, spawn_app, spawn_sibling, start_on_as, Db, Roles, TestApp};
use crate::story;
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::Connection;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a watcher waits for a message it expects.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `/ws` client that remembers every message it has read.
pub(crate) struct Watcher {
    socket: Socket,
    pub(crate) seen: Vec<Value>,
}

impl Watcher {
    pub(crate) async fn connect(app: &TestApp, query: &str) -> Watcher {
        let url = format!("ws://{}/ws{query}", app.addr);
        let (socket, response) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|error| panic!("{url} does not upgrade: {error}"));
        assert_eq!(response.status(), 101);
        Watcher {
            socket,
            seen: Vec::new(),
        }
    }

    /// The first message, already read or still to come, that satisfies `wanted` (panics
    /// after `PATIENCE`).
    pub(crate) async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        match self.within(PATIENCE, &wanted).await {
            Some(message) => message,
            None => panic!(
                "no message {what} within {PATIENCE:?}; saw {:#?}",
                self.seen
            ),
        }
    }

    /// The first message, already read or arriving within `wait`, that satisfies `wanted`.
    async fn within(&mut self, wait: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(message) = self.seen.iter().find(|m| wanted(m)) {
            return Some(message.clone());
        }
        let deadline = Instant::now() + wait;
        loop {
            let Ok(next) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                return None;
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not JSON: {text}: {e}"));
                    self.seen.push(message.clone());
                    if wanted(&message) {
                        return Some(message);
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("socket ended: {other:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Reads until `event_id` has been announced `processed`.
    pub(crate) async fn until_processed(&mut self, event_id: i64) -> Value {
        self.until(&format!("event {event_id} processed"), |m| {
            m["event_id"] == event_id && m["state"] == "processed"
        })
        .await
    }

    fn about(&self, event_id: i64) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|m| m["event_id"] == event_id)
            .collect()
    }

    pub(crate) async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

async fn noop_rule(app: &TestApp, event_type: &str) -> Value {
    let (status, rule) = app
        .post(
            "/rules",
            &json!({"name": format!("noop {event_type}"), "event_type": event_type,
                    "condition": true, "action": {"type": "noop"}}),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    rule
}

async fn post_event(app: &TestApp, external_id: &str, event_type: &str) -> i64 {
    let (status, event) = app
        .post(
            "/events",
            &json!({"id": external_id, "type": event_type, "data": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 201, "{event}");
    event["id"].as_i64().unwrap()
}

fn position(messages: &[&Value], wanted: impl Fn(&Value) -> bool) -> Option<usize> {
    messages.iter().position(|m| wanted(m))
}

/// The created → processing → processed story of one event, as a watcher sees it. Returns
/// the attempt id the messages name.
fn assert_lifecycle(messages: &[&Value], id: i64, external_id: &str, event_type: &str) -> i64 {
    let created = position(messages, |m| m["type"] == "event.created")
        .unwrap_or_else(|| panic!("no event.created for {id} in {messages:#?}"));
    let processing = position(messages, |m| {
        m["type"] == "event.updated" && m["state"] == "processing"
    })
    .unwrap_or_else(|| panic!("no processing update for {id} in {messages:#?}"));
    let processed = position(messages, |m| {
        m["type"] == "event.updated" && m["state"] == "processed"
    })
    .unwrap_or_else(|| panic!("no processed update for {id} in {messages:#?}"));
    assert!(
        created < processed,
        "created after processed: {messages:#?}"
    );
    assert!(
        processing < processed,
        "processing after processed: {messages:#?}"
    );

    let created = messages[created];
    assert_eq!(created["event_id"], id);
    assert_eq!(created["external_id"], external_id);
    assert_eq!(created["event_type"], event_type);
    assert_eq!(created["state"], "pending");

    let processing = messages[processing];
    assert_eq!(processing["external_id"], external_id);
    assert_eq!(processing["event_type"], event_type);
    assert_eq!(processing["status"], "running", "{processing}");
    let attempt_id = processing["attempt_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no attempt_id in {processing}"));

    let processed = messages[processed];
    assert_eq!(processed["external_id"], external_id);
    assert_eq!(processed["event_type"], event_type);
    assert_eq!(processed["attempt_id"], attempt_id, "{processed}");
    assert_eq!(processed["status"], "success", "{processed}");
    let finished_at = processed["finished_at"]
        .as_str()
        .unwrap_or_else(|| panic!("no finished_at in {processed}"));
    chrono::DateTime::parse_from_rfc3339(finished_at)
        .unwrap_or_else(|e| panic!("finished_at {finished_at} is not RFC 3339: {e}"));
    assert!(
        processed["duration_ms"].as_i64().is_some_and(|d| d >= 0),
        "{processed}"
    );
    attempt_id
}

story!(a_watcher_sees_an_event_arrive_get_picked_up_and_processed);
async fn a_watcher_sees_an_event_arrive_get_picked_up_and_processed(app: TestApp) {
    noop_rule(&app, "t").await;
    let mut watcher = Watcher::connect(&app, "").await;

    let id = post_event(&app, "live-1", "t").await;
    watcher.until_processed(id).await;

    let attempt_id = assert_lifecycle(&watcher.about(id), id, "live-1", "t");
    // The attempt the messages name is the one the API lists.
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0]["id"], attempt_id);
    assert_eq!(attempts[0]["status"], "success");
    watcher.close().await;
    app.stop().await;
}

story!(filters_narrow_the_stream_to_one_type_or_one_event);
async fn filters_narrow_the_stream_to_one_type_or_one_event(app: TestApp) {
    noop_rule(&app, "a").await;
    // An event that exists before anyone watches it, so its id can be a filter.
    let watched = post_event(&app, "x-1", "x").await;
    app.wait_for_state(watched, &["processed"]).await;

    let mut everything = Watcher::connect(&app, "").await;
    let mut only_a = Watcher::connect(&app, "?event_type=a").await;
    let mut only_watched = Watcher::connect(&app, &format!("?event_id={watched}")).await;

    let a1 = post_event(&app, "a-1", "a").await;
    let b1 = post_event(&app, "b-1", "b").await;
    let a2 = post_event(&app, "a-2", "a").await;
    let b2 = post_event(&app, "b-2", "b").await;
    let rule_b = noop_rule(&app, "b").await;
    for id in [a1, b1, a2, b2] {
        everything.until_processed(id).await;
    }
    everything
        .until("rule.changed", |m| m["type"] == "rule.changed")
        .await;
    let change = everything
        .seen
        .iter()
        .find(|m| m["type"] == "rule.changed")
        .unwrap();
    assert_eq!(change["rule_id"], rule_b["id"]);
    assert_eq!(change["version"], 1);

    // Everything above was published before what follows, and each client reads the one
    // stream in order: once a filtered client sees what follows, it has been offered all of
    // the above.
    let (status, body) = app
        .post(&format!("/events/{watched}/replay"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let a3 = post_event(&app, "a-3", "a").await;
    only_a.until_processed(a3).await;
    only_watched.until_processed(watched).await;

    for message in &only_a.seen {
        assert_eq!(message["event_type"], "a", "a type-a watcher got {message}");
    }
    for (id, external_id) in [(a1, "a-1"), (a2, "a-2"), (a3, "a-3")] {
        assert_lifecycle(&only_a.about(id), id, external_id, "a");
    }
    for message in &only_watched.seen {
        assert_eq!(
            message["event_id"], watched,
            "an event-{watched} watcher got {message}"
        );
    }
    // The replay, as the event's own watcher sees it: queued, picked up, processed.
    let states: Vec<&str> = only_watched
        .seen
        .iter()
        .map(|m| m["state"].as_str().unwrap_or("?"))
        .collect();
    // (pending and processing may swap if a polling worker claims the event between the
    // replay's commit and its announcement; processed is always last.)
    let mut sorted = states.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["pending", "processed", "processing"],
        "{:#?}",
        only_watched.seen
    );
    assert_eq!(states.last(), Some(&"processed"));

    for watcher in [everything, only_a, only_watched] {
        watcher.close().await;
    }
    app.stop().await;
}

story!(a_malformed_filter_is_refused_before_the_upgrade);
async fn a_malformed_filter_is_refused_before_the_upgrade(app: TestApp) {
    let url = format!("ws://{}/ws?event_id=abc", app.addr);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body = response.body().as_deref().unwrap_or_default();
            let body: Value = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
            assert_eq!(body["error"], "ValidationError", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("event_id"),
                "{body}"
            );
        }
        Err(other) => panic!("expected a 400 answer, got {other}"),
        Ok(_) => panic!("a malformed event_id was accepted"),
    }
    // A good filter on the same route still works.
    let watcher = Watcher::connect(&app, "?event_id=1").await;
    watcher.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_process_sees_what_another_process_does() {
    let Some(app) = spawn_app(Db::Postgres).await else {
        return;
    };
    // An API-only process on the same database: it never processes anything itself.
    let other = spawn_sibling(&app, &[], Roles::API).await;
    let mut watcher = Watcher::connect(&other, "").await;

    let rule = noop_rule(&app, "t").await;
    let change = watcher
        .until("rule.changed", |m| m["type"] == "rule.changed")
        .await;
    assert_eq!(
        change,
        json!({"type": "rule.changed", "rule_id": rule["id"], "version": 1})
    );

    let id = post_event(&app, "far-1", "t").await;
    watcher.until_processed(id).await;
    let attempt_id = assert_lifecycle(&watcher.about(id), id, "far-1", "t");
    let attempts = other.get_json(&format!("/events/{id}/attempts")).await.1["data"].clone();
    assert_eq!(attempts[0]["id"], attempt_id, "{attempts}");
    // Each message arrives once, not once per path it could have taken.
    let processed = watcher
        .about(id)
        .iter()
        .filter(|m| m["state"] == "processed")
        .count();
    assert_eq!(processed, 1, "{:#?}", watcher.seen);

    watcher.close().await;
    other.stop().await;
    app.stop().await;
}

/// Events for the slow-client story: ids and type as long as allowed, so every live message
/// is large and the flood outgrows any socket buffer.
fn bulky_events(from: usize, count: usize, event_type: &str) -> Value {
    let events: Vec<Value> = (from..from + count)
        .map(|i| json!({"id": format!("{i:0>255}"), "type": event_type, "data": {"i": i}}))
        .collect();
    json!({ "events": events })
}

story!(a_client_that_never_reads_is_dropped_and_the_server_carries_on);
async fn a_client_that_never_reads_is_dropped_and_the_server_carries_on(app: TestApp) {
    const EVENTS: usize = 6_000;
    const CHUNK: usize = 1_000;
    let event_type = "t".repeat(100);
    // Connected, then never read while the flood goes by.
    let mut slow = Watcher::connect(&app, "").await;

    for from in (0..EVENTS).step_by(CHUNK) {
        let (status, body) = app
            .post("/events/batch", &bulky_events(from, CHUNK, &event_type))
            .await;
        assert_eq!(status, 200);
        assert!(
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "created"),
            "{body}"
        );
    }
    app.wait_for_stats(|s| s["processed"] == EVENTS && s["pending"] == 0 && s["processing"] == 0)
        .await;
    let (status, _) = app.get_json("/health").await;
    assert_eq!(status, 200);

    // The slow client's socket was given up: reading what the kernel still holds ends in a
    // close (1008) or the connection simply ending, never in an endless stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered = 0usize;
    let ending = loop {
        let next = tokio::time::timeout_at(deadline, slow.socket.next())
            .await
            .unwrap_or_else(|_| {
                panic!("the slow client is still connected after {delivered} messages")
            });
        match next {
            Some(Ok(Message::Text(_))) => delivered += 1,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                if let Some(frame) = &frame {
                    assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
                }
                break format!("close frame {frame:?}");
            }
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
            Some(Err(error)) => break format!("error: {error}"),
            None => break "end of stream".to_owned(),
        }
    };
    eprintln!(
        "slow client: {delivered} of {} messages, then {ending}",
        EVENTS * 3
    );
    assert!(
        delivered < EVENTS * 3,
        "the slow client got everything: it was not slow"
    );

    // A new watcher is served as usual.
    let mut fresh = Watcher::connect(&app, "").await;
    let id = post_event(&app, "after-the-flood", "t").await;
    fresh.until_processed(id).await;
    fresh.close().await;
    app.stop().await;
}

/// The finish time and duration a watcher is told are the ones the API then shows.
async fn the_announced_finish_is_the_recorded_one(db: Db) {
    let Some(app) = spawn_app(db).await else {
        return;
    };
    noop_rule(&app, "t").await;
    let mut watcher = Watcher::connect(&app, "").await;
    let id = post_event(&app, "when-1", "t").await;
    let announced = watcher.until_processed(id).await;
    let attempts = app.attempts(id).await;
    assert_eq!(announced["attempt_id"], attempts[0]["id"]);
    assert_eq!(
        announced["finished_at"], attempts[0]["finished_at"],
        "live {announced} vs API {}",
        attempts[0]
    );
    assert_eq!(announced["duration_ms"], attempts[0]["duration_ms"]);
    watcher.close().await;
    app.stop().await;
}

mod the_announced_finish_is_the_recorded_one {
    use crate::helpers::Db;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::the_announced_finish_is_the_recorded_one(Db::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::the_announced_finish_is_the_recorded_one(Db::Postgres).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_request_to_ws_gets_a_json_error() {
    let app = spawn_app(Db::Sqlite).await.unwrap();
    for path in ["/ws", "/ws?event_id=abc"] {
        let response = app.get(path).await;
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: {status} answered {text:?}, not JSON: {e}"));
        assert!(body["error"].is_string(), "{path}: {body}");
        assert!(body["message"].is_string(), "{path}: {body}");
    }
    app.stop().await;
}

/// Waits until `GET /ready` answers `status`.
async fn wait_for_ready(app: &TestApp, status: u16) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = app.get("/ready").await;
        if response.status().as_u16() == status {
            return;
        }
        assert!(Instant::now() < deadline, "/ready never answered {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_messages_go_through_the_database_only_while_another_process_watches() {
    let Some(app) = spawn_app(Db::Postgres).await else {
        return;
    };
    noop_rule(&app, "t").await;
    // What crosses between processes, seen from the database itself.
    let mut wire = sqlx::postgres::PgListener::connect(&app.database_url)
        .await
        .unwrap();
    wire.listen("sluice_live").await.unwrap();

    // Nobody anywhere watches: processing an event sends nothing through the database.
    let unwatched = post_event(&app, "unwatched", "t").await;
    app.wait_for_state(unwatched, &["processed"]).await;
    let sent = tokio::time::timeout(Duration::from_millis(500), wire.try_recv()).await;
    assert!(sent.is_err(), "a live message went out unwatched: {sent:?}");

    // A watcher connects to another process: from then on this one forwards, and the
    // watcher sees the whole story of the next event.
    let other = spawn_sibling(&app, &[], Roles::API).await;
    let mut watcher = Watcher::connect(&other, "").await;
    let watched = post_event(&app, "watched", "t").await;
    watcher.until_processed(watched).await;
    assert_lifecycle(&watcher.about(watched), watched, "watched", "t");
    let sent = tokio::time::timeout(PATIENCE, wire.try_recv()).await;
    assert!(
        matches!(sent, Ok(Ok(Some(_)))),
        "nothing went through the database while watched: {sent:?}"
    );

    watcher.close().await;
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_go_through_the_database_only_while_a_worker_elsewhere_waits() {
    let Some(database) = fresh_database(Db::Postgres).await else {
        return;
    };
    // What crosses between processes, seen from the database itself.
    let mut wire = sqlx::postgres::PgListener::connect(&database.url)
        .await
        .unwrap();
    wire.listen("sluice_wake").await.unwrap();
    let api = start_on_as(Db::Postgres, &database.url, &[], Roles::API).await;
    noop_rule(&api, "t").await;
    // A process that starts up wakes whoever may wait until the answers to its question
    // have had time to arrive; past that, it knows nobody waits.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // No worker anywhere: taking events sends no wake-up through the database.
    for i in 0..5 {
        post_event(&api, &format!("unclaimed-{i}"), "t").await;
    }
    let sent = tokio::time::timeout(Duration::from_millis(500), wire.try_recv()).await;
    assert!(
        sent.is_err(),
        "a wake-up went out with no worker waiting: {sent:?}"
    );

    // A worker process that polls only once an hour: it takes what is there and says it
    // waits; from then on what the API process takes reaches it at once, with a wake-up
    // through the database. (What is committed just as it says so may wait for its poll, or
    // be found by its last look before it sleeps: post again until one arrives by wake-up.)
    wire.listen("sluice_watch").await.unwrap();
    let worker = spawn_sibling(
        &api,
        &["--worker-poll-interval-ms", "3600000"],
        Roles::WORKER,
    )
    .await;
    api.wait_for_processed(5).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let heard = tokio::time::timeout_at(deadline, wire.recv()).await;
        let notification = heard.expect("the worker never said it waits").unwrap();
        if notification.channel() == "sluice_watch"
            && notification.payload().starts_with("waiting ")
        {
            break;
        }
    }
    let mut probe = 0;
    let mut woken = false;
    'probing: loop {
        let id = post_event(&api, &format!("probe-{probe}"), "t").await;
        probe += 1;
        let given_up = Instant::now() + Duration::from_secs(1);
        let mut processed = false;
        while Instant::now() < given_up {
            if let Ok(Ok(notification)) =
                tokio::time::timeout(Duration::from_millis(20), wire.recv()).await
            {
                woken |= notification.channel() == "sluice_wake";
            }
            let (_, event) = api.get_json(&format!("/events/{id}")).await;
            processed |= event["state"] == "processed";
            if processed && woken {
                break 'probing;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no wake-up reached the waiting worker (woken: {woken}, last probe processed: {processed})"
        );
    }

    worker.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_and_live_messages_cross_processes_again_after_a_database_outage() {
    // A worker that polls only once an hour: it picks up events posted to another process
    // only when that process's wake-up reaches it.
    let Some(app) =
        crate::helpers::spawn_app_with(Db::Postgres, &["--worker-poll-interval-ms", "3600000"])
            .await
    else {
        return;
    };
    let api = spawn_sibling(&app, &[], Roles::API).await;
    noop_rule(&app, "t").await;
    let mut watcher = Watcher::connect(&api, "").await;

    let before = post_event(&api, "before-outage", "t").await;
    watcher.until_processed(before).await;

    // The database goes away for a moment: every connection is cut and none is accepted.
    let name = app.database_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&format!(
        "{}/postgres",
        crate::helpers::postgres_server_url()
    ))
    .await
    .unwrap();
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();
    wait_for_ready(&app, 503).await;
    // Meanwhile the API says so, in its documented shape, rather than failing with a 500.
    let (status, body) = api
        .post(
            "/events",
            &json!({"id": "during-outage", "type": "t", "data": {}}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "ServiceUnavailable");
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    wait_for_ready(&app, 200).await;
    wait_for_ready(&api, 200).await;

    // Back to normal: events posted to the API process are picked up by the worker process
    // again, and the API process's watcher sees them processed. (Listeners may take a moment
    // to reconnect, and what is sent meanwhile may be lost: keep posting until one gets
    // through.)
    let deadline = Instant::now() + PATIENCE;
    let mut probes: Vec<i64> = Vec::new();
    loop {
        probes.push(post_event(&api, &format!("after-outage-{}", probes.len()), "t").await);
        let through = watcher
            .within(Duration::from_secs(1), |m| {
                m["state"] == "processed"
                    && m["event_id"]
                        .as_i64()
                        .is_some_and(|id| probes.contains(&id))
            })
            .await;
        if through.is_some() {
            break;
        }
        let (_, stats) = api.get_json("/events/stats").await;
        assert!(
            Instant::now() < deadline,
            "nothing posted after the outage was processed and announced; stats {stats}"
        );
    }
    watcher.close().await;
    api.stop().await;
    app.stop().await;
}
