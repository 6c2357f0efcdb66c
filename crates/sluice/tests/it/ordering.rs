//! Ordering per key: events with the same `ordering_key` are processed one at a time, lowest
//! id first, across worker processes — a retrying event holds its key back — while events
//! without a key are not slowed.

use crate::helpers::{spawn_sibling, Db, Roles, TestApp};
use crate::story;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Every request as `(key, seq, answered)`, in arrival order; the first delivery of each
/// event marked `flaky` is answered 500.
#[derive(Clone, Default)]
struct Log {
    seen: Arc<Mutex<Vec<(String, u64, u16)>>>,
    failed_once: Arc<Mutex<HashSet<String>>>,
}

async fn receive(
    State(log): State<Log>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let data = &body["data"];
    let key = data["key"].as_str().unwrap_or_default().to_owned();
    let seq = data["seq"].as_u64().unwrap_or_default();
    let idempotency = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let status = if data["flaky"] == true && log.failed_once.lock().unwrap().insert(idempotency) {
        500
    } else {
        200
    };
    log.seen.lock().unwrap().push((key, seq, status));
    StatusCode::from_u16(status).unwrap()
}

async fn start_receiver() -> (String, Log) {
    let log = Log::default();
    let app = axum::Router::new()
        .route("/", axum::routing::post(receive))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, log)
}

// Twenty 500s are the story, not an outage: the circuit stays closed.
story!(
    events_of_one_key_are_processed_in_order_across_workers,
    "--webhook-allow-private",
    "true",
    "--retry-backoff-ms",
    "100",
    "--target-failure-threshold",
    "1000"
);
async fn events_of_one_key_are_processed_in_order_across_workers(app: TestApp) {
    const KEYS: u64 = 20;
    const PER_KEY: u64 = 10;
    let (url, log) = start_receiver().await;
    let flags = [
        "--webhook-allow-private",
        "true",
        "--retry-backoff-ms",
        "100",
        "--target-failure-threshold",
        "1000",
    ];
    let mut siblings = Vec::new();
    if app.db == Db::Postgres {
        for _ in 0..2 {
            siblings.push(spawn_sibling(&app, &flags, Roles::WORKER).await);
        }
    }
    let (status, body) = app
        .post(
            "/rules",
            &json!({"name": "deliver", "event_type": "ordered", "condition": true,
                    "action": {"type": "call_webhook", "params": {"url": url, "body": {"data": "{{ data }}"}}}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // Interleaved keys, in batches, so every worker sees every key.
    for seq in 0..PER_KEY {
        let events: Vec<Value> = (0..KEYS)
            .map(|k| {
                json!({"id": format!("k{k}-{seq}"), "type": "ordered", "ordering_key": format!("k{k}"),
                       "data": {"key": format!("k{k}"), "seq": seq, "flaky": seq == PER_KEY / 2}})
            })
            .collect();
        let (status, body) = app
            .post("/events/batch", &json!({ "events": events }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // Unkeyed events are not held back by the keyed ones.
    let (status, _) = app
        .post(
            "/events",
            &json!({"id": "free", "type": "unordered", "data": {}}),
        )
        .await;
    assert_eq!(status, 201);
    app.wait_for_processed((KEYS * PER_KEY + 1) as i64).await;

    let seen = log.seen.lock().unwrap().clone();
    let mut delivered: HashMap<String, Vec<u64>> = HashMap::new();
    for (key, seq, status) in &seen {
        if *status == 200 {
            delivered.entry(key.clone()).or_default().push(*seq);
        } else {
            // The retrying event's key waited: nothing after it had arrived yet.
            let later = delivered
                .get(key)
                .is_some_and(|s| s.iter().any(|x| x > seq));
            assert!(!later, "{key}: a later event overtook the retrying {seq}");
        }
    }
    assert_eq!(delivered.len() as u64, KEYS);
    for (key, seqs) in &delivered {
        assert_eq!(
            seqs,
            &(0..PER_KEY).collect::<Vec<_>>(),
            "{key} out of order"
        );
    }
    let failures = seen.iter().filter(|(_, _, s)| *s == 500).count() as u64;
    assert_eq!(
        failures, KEYS,
        "each key's middle event failed once and was retried"
    );
    let (_, event) = app.get_json("/events?external_id=k3-4").await;
    assert_eq!(event["data"][0]["ordering_key"], "k3");
    for sibling in siblings {
        sibling.stop().await;
    }
}

story!(an_ordering_key_is_checked_like_any_field);
async fn an_ordering_key_is_checked_like_any_field(app: TestApp) {
    let long = "k".repeat(256);
    let cases = [
        (json!(""), 400),
        (json!(long), 400),
        (json!(5), 400),
        (json!("ok"), 201),
    ];
    for (i, (key, status)) in cases.into_iter().enumerate() {
        let (got, body) = app
            .post(
                "/events",
                &json!({"id": format!("e-{i}"), "type": "t", "data": {}, "ordering_key": key}),
            )
            .await;
        assert_eq!(got, status, "{key}: {body}");
        if status == 400 {
            assert_eq!(body["details"][0]["path"], "ordering_key");
        }
    }
    // The same id and data under another key is another submission: a conflict.
    let (status, _) = app
        .post(
            "/events",
            &json!({"id": "e-3", "type": "t", "data": {}, "ordering_key": "other"}),
        )
        .await;
    assert_eq!(status, 409);
}

// Polling only every ten minutes: each event of the key must be started by a wake-up.
story!(
    the_next_event_of_a_key_starts_when_the_one_before_it_ends,
    "--worker-poll-interval-ms",
    "600000"
);
async fn the_next_event_of_a_key_starts_when_the_one_before_it_ends(app: TestApp) {
    // One batch: one ingest, one wake-up, and only the first of the key is due then.
    let events: Vec<Value> = (0..3)
        .map(|seq| json!({"id": format!("seq-{seq}"), "type": "ordered", "ordering_key": "k", "data": {"seq": seq}}))
        .collect();
    let (status, body) = app
        .post("/events/batch", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_processed(3).await;
}
