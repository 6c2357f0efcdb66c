//! Rate limits per target: deliveries spread over every worker process so the receiver never
//! sees more than its limit in a second; a 429 with `Retry-After` holds the target off and
//! slows it down; `PUT /targets/{target}` sets a target's limit, and bad input is a 400.

use crate::helpers::{spawn_sibling, Db, Roles, TestApp};
use crate::receiver::{Received, Receiver};
use crate::story;
use crate::targets::{hook_rule, target, wait_until};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// The path of `PUT /targets/{target}` for a receiver: its `scheme://host:port`, URL-encoded.
fn target_path(receiver: &Receiver) -> String {
    let name = receiver.url.trim_end_matches('/');
    format!("/targets/{}", name.replace(':', "%3A").replace('/', "%2F"))
}

/// The most requests that arrived within any one second.
fn busiest_second(requests: &[Received]) -> usize {
    let mut times: Vec<_> = requests.iter().map(|r| r.at).collect();
    times.sort();
    sluice::bench::report::busiest_second(&times)
}

async fn post_batch(app: &TestApp, prefix: &str, range: std::ops::Range<usize>) {
    let events: Vec<Value> = range
        .map(|i| json!({"id": format!("{prefix}-{i}"), "type": "paced", "data": {"i": i}}))
        .collect();
    let (status, body) = app
        .post("/events/batch", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
}

story!(
    a_limited_target_gets_its_pace_from_every_worker_together,
    "--webhook-allow-private",
    "true"
);
async fn a_limited_target_gets_its_pace_from_every_worker_together(app: TestApp) {
    const EVENTS: usize = 200;
    let receiver = Receiver::start(200, 0).await;
    // On PostgreSQL a second worker process shares the work (and the pace).
    let _second = if app.db == Db::Postgres {
        Some(spawn_sibling(&app, &["--webhook-allow-private", "true"], Roles::WORKER).await)
    } else {
        None
    };
    let (status, limited) = app
        .put(&target_path(&receiver), &json!({"max_per_second": 20}))
        .await;
    assert_eq!(status, 200, "{limited}");
    assert_eq!(limited["max_per_second"], 20.0);
    assert_eq!(limited["own_limit"], true);
    // Every worker process follows a change within a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = app
        .post("/rules", &hook_rule("paced", "paced", &receiver.url))
        .await;
    assert_eq!(status, 201, "{body}");

    post_batch(&app, "p", 0..EVENTS / 2).await;
    post_batch(&app, "p", EVENTS / 2..EVENTS).await;
    wait_until(
        "every event is delivered",
        Duration::from_secs(60),
        async || receiver.count() >= EVENTS,
    )
    .await;
    // Nothing more comes: each event was delivered once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = receiver.requests();
    let keys: HashSet<String> = requests
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .collect();
    assert_eq!(keys.len(), EVENTS, "none lost");
    assert_eq!(requests.len(), EVENTS, "none sent twice");

    // 200 at 20 a second take about ten seconds, over whichever workers sent them.
    let first = requests.iter().map(|r| r.at).min().unwrap();
    let last = requests.iter().map(|r| r.at).max().unwrap();
    let span = last.duration_since(first);
    assert!(span >= Duration::from_millis(9_500), "took only {span:?}");
    // At most the limit plus one in any second; a little more leeway for requests the busy
    // test machine delays in transit and delivers together.
    let busiest = busiest_second(&requests);
    assert!(busiest <= 23, "{busiest} requests within one second");

    // Workers report their counts every second.
    let name = limited["target"].as_str().unwrap().to_owned();
    wait_until(
        "the deliveries are counted",
        Duration::from_secs(5),
        async || target(&app, &name).await.unwrap()["delivered_total"] == EVENTS as i64,
    )
    .await;
    let shown = target(&app, &name).await.unwrap();
    assert_eq!(shown["pace_per_second"], 20.0, "{shown}");
}

story!(
    a_429_with_retry_after_holds_the_target_off_and_slows_it,
    "--webhook-allow-private",
    "true",
    "--retry-backoff-ms",
    "200",
    "--max-attempts",
    "10"
);
async fn a_429_with_retry_after_holds_the_target_off_and_slows_it(app: TestApp) {
    let receiver = Receiver::start(200, 0).await;
    receiver.answer_with(429, &[("retry-after", "1")]);
    let (status, limited) = app
        .put(&target_path(&receiver), &json!({"max_per_second": 100}))
        .await;
    assert_eq!(status, 200, "{limited}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let name = limited["target"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post("/rules", &hook_rule("paced", "paced", &receiver.url))
        .await;
    assert_eq!(status, 201, "{body}");

    post_batch(&app, "first", 0..1).await;
    wait_until(
        "the receiver answers 429",
        Duration::from_secs(10),
        async || receiver.count() >= 1,
    )
    .await;
    wait_until("the 429 is recorded", Duration::from_secs(10), async || {
        target(&app, &name)
            .await
            .is_some_and(|t| !t["throttled_at"].is_null())
    })
    .await;
    let shown = target(&app, &name).await.unwrap();
    let pace = shown["pace_per_second"].as_f64().unwrap();
    assert!(pace < 60.0, "the 429 halves the pace: {shown}");
    assert_eq!(
        shown["recent_failures"], 0,
        "a 429 is not a breaker failure: {shown}"
    );

    receiver.answer_with(200, &[]);
    post_batch(&app, "more", 0..5).await;
    wait_until(
        "every event is delivered",
        Duration::from_secs(20),
        async || {
            receiver
                .requests()
                .iter()
                .filter(|r| r.header("idempotency-key").is_some())
                .map(|r| r.header("idempotency-key"))
                .collect::<HashSet<_>>()
                .len()
                >= 6
        },
    )
    .await;
    let requests = receiver.requests();
    let throttled_at = requests[0].at;
    let next = requests[1].at;
    assert!(
        next.duration_since(throttled_at) >= Duration::from_millis(900),
        "the next request came {:?} after the 429 with Retry-After: 1",
        next.duration_since(throttled_at)
    );
}

story!(a_targets_limit_is_validated_and_can_be_reset);
async fn a_targets_limit_is_validated_and_can_be_reset(app: TestApp) {
    let path = "/targets/https%3A%2F%2Fhooks.example.com";
    for (body, field) in [
        (json!({"max_per_second": -1}), "max_per_second"),
        (json!({"max_per_second": "fast"}), "max_per_second"),
        (json!({"max_per_second": 1_000_000}), "max_per_second"),
        (json!({"max_per_second": 1e-300}), "max_per_second"),
        (json!({"paused": "yes"}), "paused"),
        (json!({"burst": 3}), "burst"),
    ] {
        let (status, answer) = app.put(path, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "ValidationError", "{answer}");
        assert_eq!(answer["details"][0]["path"], field, "{answer}");
    }
    let (status, answer) = app.put(path, &json!({})).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = app
        .put("/targets/not-a-target", &json!({"max_per_second": 1}))
        .await;
    assert_eq!(status, 400, "{answer}");

    let (status, set) = app
        .put(path, &json!({"max_per_second": 0.5, "paused": true}))
        .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["target"], "https://hooks.example.com:443");
    assert_eq!(set["max_per_second"], 0.5);
    assert_eq!(set["state"], "paused");
    // Shown on the console's Targets page.
    let page = app.get("/console/targets").await.text().await.unwrap();
    assert!(page.contains("0.5/s"), "{page}");

    // 0: no limit at all; null: back to the process default (none here).
    let (_, none) = app.put(path, &json!({"max_per_second": 0})).await;
    assert_eq!(none["max_per_second"], Value::Null, "{none}");
    assert_eq!(none["own_limit"], true, "{none}");
    let (_, reset) = app
        .put(path, &json!({"max_per_second": null, "paused": false}))
        .await;
    assert_eq!(reset["own_limit"], false, "{reset}");
    assert_eq!(reset["state"], "closed", "{reset}");
}
