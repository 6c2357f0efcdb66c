//! The worker end to end: rules evaluated, actions run with their guarantees, failures retried
//! with backoff, history recorded.

use crate::helpers::TestApp;
use crate::receiver::Receiver;
use crate::story;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub async fn post_event(app: &TestApp, id: &str, event_type: &str, data: Value) -> i64 {
    let (status, body) = app
        .post(
            "/events",
            &json!({"id": id, "type": event_type, "data": data}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

pub async fn create_rule(
    app: &TestApp,
    name: &str,
    event_type: &str,
    condition: Value,
    action: Value,
) -> i64 {
    let (status, body) = app
        .post("/rules", &json!({"name": name, "event_type": event_type, "condition": condition, "action": action}))
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

pub fn webhook(url: &str) -> Value {
    json!({"type": "call_webhook", "params": {
        "url": url,
        "body": {"order": "{{ external_id }}", "amount": "{{ data.amount }}", "note": "order {{ data.amount }} of {{ type }}"},
        "headers": {"X-Order": "{{ external_id }}"}
    }})
}

fn results(attempt: &Value) -> Vec<String> {
    attempt["rule_executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["result"].as_str().unwrap().to_owned())
        .collect()
}

story!(a_matching_log_rule_is_applied_and_a_false_condition_skipped);
async fn a_matching_log_rule_is_applied_and_a_false_condition_skipped(app: TestApp) {
    let rule = create_rule(
        &app,
        "high",
        "order.created",
        json!({">=": [{"var": "amount"}, 50]}),
        json!({"type": "log", "params": {"message": "High value order {{ external_id }}"}}),
    )
    .await;
    let high = post_event(&app, "order-123", "order.created", json!({"amount": 100})).await;
    let low = post_event(&app, "order-124", "order.created", json!({"amount": 10})).await;

    let event = app.wait_for_state(high, &["processed", "failed"]).await;
    assert_eq!(event["state"], "processed");
    assert_eq!(event["attempts"], 1);
    assert!(event["processed_at"].is_string());
    let attempts = app.attempts(high).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["status"], "success");
    assert_eq!(attempts[0]["trigger"], "initial");
    assert!(attempts[0]["worker"].is_string());
    let execution = &attempts[0]["rule_executions"][0];
    assert_eq!(execution["result"], "applied");
    assert_eq!(execution["rule_id"], rule);
    assert_eq!(execution["rule_name"], "high");
    assert_eq!(execution["rule_version"], 1);

    app.wait_for_state(low, &["processed"]).await;
    let attempts = app.attempts(low).await;
    assert_eq!(results(&attempts[0]), ["skipped"]);
    app.stop().await;
}

story!(
    a_webhook_gets_the_templated_body_an_idempotency_key_and_a_valid_signature,
    "--webhook-allow-private",
    "true",
    "--webhook-secret",
    crate::processing::SECRET
);
async fn a_webhook_gets_the_templated_body_an_idempotency_key_and_a_valid_signature(app: TestApp) {
    let receiver = Receiver::start(200, 0).await;
    create_rule(
        &app,
        "hook",
        "order.created",
        json!(true),
        webhook(&format!("{}/hooks/orders", receiver.url)),
    )
    .await;
    let id = post_event(&app, "order-9", "order.created", json!({"amount": 250})).await;
    app.wait_for_state(id, &["processed", "failed"]).await;
    assert_eq!(
        app.wait_for_state(id, &["processed"]).await["state"],
        "processed"
    );

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.json(),
        json!({"order": "order-9", "amount": 250, "note": "order 250 of order.created"})
    );
    assert_eq!(request.header("x-order").as_deref(), Some("order-9"));
    let key = request.header("idempotency-key").expect("Idempotency-Key");
    let attempts = app.attempts(id).await;
    assert_eq!(
        attempts[0]["rule_executions"][0]["idempotency_key"],
        key.as_str()
    );
    assert_eq!(attempts[0]["rule_executions"][0]["result"], "applied");

    // Standard Webhooks: v1,base64(HMAC-SHA256(secret, "id.timestamp.body")).
    let webhook_id = request.header("webhook-id").expect("webhook-id");
    let timestamp = request
        .header("webhook-timestamp")
        .expect("webhook-timestamp");
    let signature = request
        .header("webhook-signature")
        .expect("webhook-signature");
    let secret = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
    mac.update(format!("{webhook_id}.{timestamp}.").as_bytes());
    mac.update(&request.raw);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(signature, format!("v1,{expected}"));
    app.stop().await;
}

story!(
    a_failing_receiver_is_retried_with_backoff_until_failed,
    "--retry-backoff-ms",
    "30,60",
    "--max-attempts",
    "3",
    "--webhook-allow-private",
    "true"
);
async fn a_failing_receiver_is_retried_with_backoff_until_failed(app: TestApp) {
    let receiver = Receiver::start(500, 0).await;
    create_rule(&app, "hook", "t", json!(true), webhook(&receiver.url)).await;
    let id = post_event(&app, "e", "t", json!({"amount": 1})).await;
    let event = app.wait_for_state(id, &["failed"]).await;
    assert_eq!(event["attempts"], 3);
    assert!(
        event["last_error"].as_str().unwrap().contains("500"),
        "{event}"
    );
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 3);
    let triggers: Vec<&str> = attempts
        .iter()
        .map(|a| a["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(triggers, ["retry", "retry", "initial"]);
    for attempt in &attempts {
        assert_eq!(attempt["status"], "failed");
        assert_eq!(results(attempt), ["failed"]);
        assert!(attempt["error"].as_str().unwrap().contains("500"));
    }
    // The same delivery each time: one Idempotency-Key.
    let keys: std::collections::HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_eq!(receiver.count(), 3);
    assert_eq!(keys.len(), 1);
    let (_, stats) = app.get_json("/events/stats").await;
    assert_eq!(stats["failed"], 1);
    assert_eq!(stats["failed_last_24h"], 1);
    app.stop().await;
}

story!(
    a_receiver_that_refuses_the_request_fails_the_event_at_once,
    "--max-attempts",
    "3",
    "--webhook-allow-private",
    "true"
);
async fn a_receiver_that_refuses_the_request_fails_the_event_at_once(app: TestApp) {
    let receiver = Receiver::start(400, 0).await;
    create_rule(&app, "hook", "t", json!(true), webhook(&receiver.url)).await;
    let id = post_event(&app, "e", "t", json!({})).await;
    let event = app.wait_for_state(id, &["failed"]).await;
    assert_eq!(event["attempts"], 1, "a 400 cannot succeed on retry");
    assert_eq!(receiver.count(), 1);
    app.stop().await;
}

story!(
    a_receiver_slower_than_the_timeout_times_out_and_is_retried,
    "--retry-backoff-ms",
    "30",
    "--max-attempts",
    "2",
    "--webhook-allow-private",
    "true",
    "--processing-timeout-ms",
    "300"
);
async fn a_receiver_slower_than_the_timeout_times_out_and_is_retried(app: TestApp) {
    let slow = Receiver::start(200, 3_000).await;
    create_rule(&app, "slow", "t", json!(true), webhook(&slow.url)).await;
    let id = post_event(&app, "e", "t", json!({})).await;
    let event = app.wait_for_state(id, &["failed"]).await;
    assert_eq!(event["attempts"], 2);
    let attempts = app.attempts(id).await;
    for attempt in &attempts {
        assert_eq!(attempt["status"], "timeout", "{attempt}");
        assert!(attempt["error"].as_str().unwrap().contains("timed out"));
    }
    // A webhook's own timeout fails the execution (retryable) rather than the attempt.
    let rule_timeout =
        json!({"type": "call_webhook", "params": {"url": slow.url, "timeout_ms": 100}});
    create_rule(&app, "short", "u", json!(true), rule_timeout).await;
    let other = post_event(&app, "f", "u", json!({})).await;
    app.wait_for_state(other, &["failed"]).await;
    let attempts = app.attempts(other).await;
    assert_eq!(attempts.len(), 2, "retried once");
    assert!(
        attempts[0]["rule_executions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{}",
        attempts[0]
    );
    app.stop().await;
}

story!(
    one_failing_rule_never_stops_the_others,
    "--webhook-allow-private",
    "true",
    "--max-attempts",
    "1"
);
async fn one_failing_rule_never_stops_the_others(app: TestApp) {
    let refusing = Receiver::start(400, 0).await;
    let first = create_rule(&app, "first", "t", json!(true), json!({"type": "noop"})).await;
    let middle = create_rule(&app, "middle", "t", json!(true), webhook(&refusing.url)).await;
    let last = create_rule(
        &app,
        "last",
        "t",
        json!(true),
        json!({"type": "log", "params": {"message": "hi"}}),
    )
    .await;
    let id = post_event(&app, "e", "t", json!({})).await;
    app.wait_for_state(id, &["failed"]).await;
    let attempts = app.attempts(id).await;
    let by_rule: std::collections::HashMap<i64, String> = attempts[0]["rule_executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["rule_id"].as_i64().unwrap(),
                x["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(by_rule[&first], "applied");
    assert_eq!(by_rule[&middle], "failed");
    assert_eq!(by_rule[&last], "applied");
    assert!(attempts[0]["error"].as_str().unwrap().contains("middle"));
    app.stop().await;
}

story!(a_rule_that_exhausts_its_budget_fails_alone_and_the_worker_goes_on);
async fn a_rule_that_exhausts_its_budget_fails_alone_and_the_worker_goes_on(app: TestApp) {
    let doubling = json!({"reduce": [(1..=30).collect::<Vec<i32>>(), {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}, [1]]});
    create_rule(&app, "bomb", "t", doubling, json!({"type": "noop"})).await;
    create_rule(&app, "fine", "t", json!(true), json!({"type": "noop"})).await;
    let id = post_event(&app, "e", "t", json!({})).await;
    let event = app.wait_for_state(id, &["failed"]).await;
    assert_eq!(event["attempts"], 1, "a budget error is not retried");
    let attempts = app.attempts(id).await;
    let executions = attempts[0]["rule_executions"].as_array().unwrap();
    let bomb = executions
        .iter()
        .find(|x| x["rule_name"] == "bomb")
        .unwrap();
    assert_eq!(bomb["result"], "failed");
    assert!(
        bomb["error"].as_str().unwrap().contains("budget")
            || bomb["error"].as_str().unwrap().contains("bytes"),
        "{bomb}"
    );
    let fine = executions
        .iter()
        .find(|x| x["rule_name"] == "fine")
        .unwrap();
    assert_eq!(fine["result"], "applied");

    // The worker is still working.
    let next = post_event(&app, "next", "other", json!({})).await;
    app.wait_for_state(next, &["processed"]).await;
    app.stop().await;
}

story!(
    an_attempt_in_flight_is_shown_running_and_then_finished_in_place,
    "--webhook-allow-private",
    "true"
);
async fn an_attempt_in_flight_is_shown_running_and_then_finished_in_place(app: TestApp) {
    // A claim writes no attempt row on PostgreSQL (the attempt is written when it ends): while
    // the webhook is in flight, the running attempt is read from the lease, with the `started`
    // record of its webhook under it.
    let slow = Receiver::start(200, 1_500).await;
    create_rule(&app, "slow", "t", json!(true), webhook(&slow.url)).await;
    let id = post_event(&app, "e", "t", json!({})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let running = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the attempt in flight was never shown"
        );
        let attempts = app.attempts(id).await;
        if let Some(attempt) = attempts.first() {
            if attempt["rule_executions"][0]["result"] == "started" {
                break attempt.clone();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(running["status"], "running", "{running}");
    assert_eq!(running["attempt_no"], 1);
    assert_eq!(running["trigger"], "initial");
    assert!(running["worker"].is_string(), "{running}");
    assert!(running["finished_at"].is_null(), "{running}");
    let (_, event) = app.get_json(&format!("/events/{id}")).await;
    assert_eq!(event["state"], "processing");

    app.wait_for_state(id, &["processed"]).await;
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let done = &attempts[0];
    assert_eq!(done["id"], running["id"]);
    assert_eq!(done["status"], "success");
    assert_eq!(done["started_at"], running["started_at"]);
    assert_eq!(done["worker"], running["worker"]);
    assert!(done["duration_ms"].as_i64().unwrap() >= 1_000, "{done}");
    let execution = &done["rule_executions"][0];
    assert_eq!(execution["id"], running["rule_executions"][0]["id"]);
    assert_eq!(execution["result"], "applied");
    app.stop().await;
}
