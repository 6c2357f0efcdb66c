//! Event types: a type's JSON Schema is checked at ingest (single and batch, one detail per
//! violation), an invalid schema is refused, settings are partial and listed with counts, and
//! the worker honours a type's own timeout, attempts and retry delays.

use crate::helpers::{spawn_sibling, Roles, TestApp};
use crate::processing::{create_rule, post_event};
use crate::receiver::Receiver;
use crate::story;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn order_schema() -> Value {
    json!({
        "type": "object",
        "required": ["order_id", "amount"],
        "properties": {
            "order_id": {"type": "string", "minLength": 1},
            "amount": {"type": "number", "minimum": 0},
            "customer": {
                "type": "object",
                "properties": {"email": {"type": "string", "format": "email"}}
            }
        }
    })
}

fn paths(body: &Value) -> Vec<String> {
    body["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details in {body}"))
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_owned())
        .collect()
}

story!(a_types_schema_decides_which_events_are_accepted);
async fn a_types_schema_decides_which_events_are_accepted(app: TestApp) {
    let (status, body) = app
        .put(
            "/event-types/order.created",
            &json!({"description": "A customer placed an order", "schema": order_schema()}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schema"], order_schema());
    assert_eq!(body["configured"], true);

    post_event(
        &app,
        "o-1",
        "order.created",
        json!({"order_id": "A1", "amount": 12.5}),
    )
    .await;
    let (status, body) = app
        .post(
            "/events",
            &json!({"id": "o-2", "type": "order.created",
                    "data": {"amount": -3, "customer": {"email": "not an email"}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "ValidationError");
    let mut got = paths(&body);
    got.sort();
    assert_eq!(got, ["", "/amount", "/customer/email"], "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("schema of event type 'order.created'"),
        "{body}"
    );
    // Nothing of the refused event was stored: its id is still free.
    assert_eq!(app.get_json("/events?external_id=o-2").await.1["count"], 0);

    // Other types are not checked.
    post_event(&app, "s-1", "order.shipped", json!({"anything": true})).await;

    let (status, body) = app
        .post(
            "/events/batch",
            &json!({"events": [
                {"id": "b-1", "type": "order.created", "data": {"order_id": "B1", "amount": 1}},
                {"id": "b-2", "type": "order.created", "data": {"order_id": 7, "amount": 1}},
                {"id": "b-3", "type": "order.shipped", "data": {}}
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["created", "invalid", "created"], "{body}");
    assert_eq!(paths(&body["results"][1]["error"]), ["/order_id"]);

    // An invalid schema is refused and the stored one stays.
    let (status, body) = app
        .put(
            "/event-types/order.created",
            &json!({"schema": {"type": "integr"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(paths(&body), ["schema"]);
    let (status, body) = app.get_json("/event-types/order.created").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schema"], order_schema());
    assert_eq!(body["description"], "A customer placed an order");
    assert_eq!(body["events_total"], 2);

    // Clearing the schema accepts what it refused; the description is kept.
    let (status, body) = app
        .put("/event-types/order.created", &json!({"schema": null}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["schema"], Value::Null);
    assert_eq!(body["description"], "A customer placed an order");
    post_event(&app, "o-2", "order.created", json!({"amount": -3})).await;
}

story!(event_types_are_listed_configured_or_seen_with_their_counts);
async fn event_types_are_listed_configured_or_seen_with_their_counts(app: TestApp) {
    post_event(&app, "a-1", "seen.only", json!({})).await;
    post_event(&app, "a-2", "seen.only", json!({})).await;
    create_rule(&app, "r", "ruled.only", json!(true), json!({"type": "log"})).await;
    let (status, _) = app
        .put("/event-types/configured.only", &json!({"max_attempts": 2}))
        .await;
    assert_eq!(status, 200);

    let (status, body) = app.get_json("/event-types").await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<(String, i64, bool)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["event_type"].as_str().unwrap().to_owned(),
                t["events_total"].as_i64().unwrap(),
                t["configured"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("configured.only".to_owned(), 0, true),
            ("ruled.only".to_owned(), 0, false),
            ("seen.only".to_owned(), 2, false),
        ]
    );
    let (status, body) = app.get_json("/event-types/seen.only").await;
    assert_eq!((status, body["max_attempts"].clone()), (200, Value::Null));
    let (status, body) = app.get_json("/event-types/never.heard.of").await;
    assert_eq!(status, 404, "{body}");
    let long = "x".repeat(300);
    let (status, body) = app.get_json(&format!("/event-types/{long}")).await;
    assert_eq!(status, 400, "{body}");

    // A change is partial; bad values are refused one detail each.
    let (status, body) = app
        .put(
            "/event-types/configured.only",
            &json!({"processing_timeout_ms": 0, "retry_backoff_ms": [100, "soon"], "colour": "red"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        paths(&body),
        ["processing_timeout_ms", "retry_backoff_ms[1]", "colour"]
    );
    let (status, body) = app
        .put(
            "/event-types/configured.only",
            &json!({"retry_backoff_ms": 250}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["max_attempts"], 2);
    assert_eq!(body["retry_backoff_ms"], json!([250]));
}

story!(a_schema_saved_through_one_api_process_is_enforced_by_another);
async fn a_schema_saved_through_one_api_process_is_enforced_by_another(app: TestApp) {
    let other = spawn_sibling(&app, &[], Roles::API).await;
    // The other process has loaded the (empty) catalog before the change.
    post_event(&other, "before", "pay.done", json!({"cents": "lots"})).await;
    let (status, _) = app
        .put(
            "/event-types/pay.done",
            &json!({"schema": {"properties": {"cents": {"type": "integer"}}}}),
        )
        .await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut n = 0;
    loop {
        n += 1;
        let (status, body) = other
            .post(
                "/events",
                &json!({"id": format!("after-{n}"), "type": "pay.done", "data": {"cents": "lots"}}),
            )
            .await;
        if status == 400 {
            assert_eq!(paths(&body), ["/cents"]);
            break;
        }
        assert_eq!(status, 201, "{body}");
        assert!(
            Instant::now() < deadline,
            "the other process never applied the schema"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    other.stop().await;
}

async fn attempts_of(app: &TestApp, id: i64) -> Vec<Value> {
    let mut attempts = app.attempts(id).await;
    attempts.reverse();
    attempts
}

fn hook(name: &str, receiver: &Receiver) -> Value {
    json!({"type": "call_webhook", "params": {"url": format!("{}/{name}", receiver.url)}})
}

story!(
    a_types_timeout_cancels_its_attempts_at_its_own_value,
    "--webhook-allow-private",
    "true",
    "--processing-timeout-ms",
    "20000"
);
async fn a_types_timeout_cancels_its_attempts_at_its_own_value(app: TestApp) {
    let slow = Receiver::start(200, 1500).await;
    for event_type in ["hurried", "patient"] {
        let (status, body) = app
            .post(
                "/rules",
                &json!({"name": event_type, "event_type": event_type, "condition": true,
                        "action": hook(event_type, &slow)}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = app
        .put(
            "/event-types/hurried",
            &json!({"processing_timeout_ms": 300, "max_attempts": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let hurried = post_event(&app, "h-1", "hurried", json!({})).await;
    let patient = post_event(&app, "p-1", "patient", json!({})).await;
    let failed = app.wait_for_state(hurried, &["failed"]).await;
    let attempts = attempts_of(&app, hurried).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["status"], "timeout", "{attempts:?}");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out after 300 ms"),
        "{failed}"
    );
    let took = attempts[0]["duration_ms"].as_i64().unwrap();
    assert!((300..1500).contains(&took), "cancelled after {took} ms");
    // The other type keeps the process default and outlasts the slow receiver.
    app.wait_for_state(patient, &["processed"]).await;
    assert_eq!(attempts_of(&app, patient).await[0]["status"], "success");
}

story!(
    a_types_attempts_and_delays_override_the_defaults,
    "--webhook-allow-private",
    "true",
    "--max-attempts",
    "4",
    "--retry-backoff-ms",
    "50",
    // Every delivery fails on purpose: the breaker must not step in.
    "--target-failure-threshold",
    "1000"
);
async fn a_types_attempts_and_delays_override_the_defaults(app: TestApp) {
    let down = Receiver::start(503, 0).await;
    for event_type in ["brief", "slow.retry", "default"] {
        let (status, body) = app
            .post(
                "/rules",
                &json!({"name": event_type, "event_type": event_type, "condition": true,
                        "action": hook(event_type, &down)}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(
        app.put("/event-types/brief", &json!({"max_attempts": 2}))
            .await
            .0,
        200
    );
    assert_eq!(
        app.put(
            "/event-types/slow.retry",
            &json!({"max_attempts": 2, "retry_backoff_ms": [1500]})
        )
        .await
        .0,
        200
    );
    let brief = post_event(&app, "b", "brief", json!({})).await;
    let slow = post_event(&app, "s", "slow.retry", json!({})).await;
    let default = post_event(&app, "d", "default", json!({})).await;
    for (id, expected) in [(brief, 2), (default, 4), (slow, 2)] {
        app.wait_for_state(id, &["failed"]).await;
        let attempts = attempts_of(&app, id).await;
        assert_eq!(attempts.len(), expected, "event {id}: {attempts:?}");
    }
    // Its own delay (1500 ms ± 20%) separates the slow type's attempts, not the default 50.
    let attempts = attempts_of(&app, slow).await;
    let at = |a: &Value, field: &str| {
        chrono::DateTime::parse_from_rfc3339(a[field].as_str().unwrap()).unwrap()
    };
    let waited = at(&attempts[1], "started_at") - at(&attempts[0], "finished_at");
    assert!(
        waited >= chrono::Duration::milliseconds(1150),
        "retried after {waited}"
    );
}
