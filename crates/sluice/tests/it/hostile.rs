//! Hostile clients: requests, rules and connections built to stall the server or grow its
//! memory. Each story reproduces an attack and shows the server answering `/health` within a
//! second throughout and refusing with the documented status and error body.

use crate::helpers::TestApp;
use crate::processing::{create_rule, post_event};
use crate::story;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polls `/health` until `stop` is set; returns the slowest answer.
async fn watch_health(app: &TestApp, stop: Arc<AtomicBool>) -> Duration {
    let mut slowest = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let response = app.get("/health").await;
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

/// A `reduce` over 20,000 items whose step slices the last character off an accumulator that
/// holds a 400,000-character string (non-ASCII, so every slice re-encodes it).
fn freezing_rule() -> Value {
    json!({"reduce": [
        {"var": "items"},
        {"if": [{"substr": [{"var": "accumulator"}, -1]}, {"var": "accumulator"}, ""]},
        {"var": "big"}
    ]})
}

fn freezing_data() -> Value {
    let items: Vec<Value> = (0..20_000).map(Value::from).collect();
    json!({"items": items, "big": "é".repeat(400_000)})
}

story!(a_rule_built_to_freeze_the_server_is_stopped_by_its_budget);
async fn a_rule_built_to_freeze_the_server_is_stopped_by_its_budget(app: TestApp) {
    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    let health = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move { watch_health(&app, stop).await })
    };

    // Tried before saving, several at once.
    let body = json!({"condition": freezing_rule(), "data": freezing_data()});
    let tries: Vec<_> = (0..4)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move { app.post("/rules/test", &body).await })
        })
        .collect();
    for attempt in tries {
        let (status, answer) = attempt.await.unwrap();
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"], "ValidationError");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("operation budget"),
            "{answer}"
        );
    }

    // Saved as a rule and processed: the execution fails on its budget, once (not retried:
    // the same data would fail the same way), and the worker goes on.
    create_rule(
        &app,
        "freeze",
        "hostile",
        freezing_rule(),
        json!({"type": "noop"}),
    )
    .await;
    let ids = [
        post_event(&app, "h-1", "hostile", freezing_data()).await,
        post_event(&app, "h-2", "hostile", freezing_data()).await,
    ];
    for id in ids {
        let event = app.wait_for_state(id, &["failed"]).await;
        assert_eq!(event["attempts"], 1, "{event}");
        let attempts = app.attempts(id).await;
        let execution = &attempts[0]["rule_executions"][0];
        assert_eq!(execution["result"], "failed", "{execution}");
        assert!(
            execution["error"]
                .as_str()
                .unwrap()
                .contains("operation budget"),
            "{execution}"
        );
    }

    stop.store(true, Ordering::Relaxed);
    let slowest = health.await.unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "/health took {slowest:?} while hostile rules ran"
    );
}

story!(nul_characters_and_numbers_out_of_range_are_400s_not_500s);
async fn nul_characters_and_numbers_out_of_range_are_400s_not_500s(app: TestApp) {
    // PostgreSQL's jsonb cannot hold U+0000: it must be refused before it reaches the store.
    let cases = [
        (
            json!({"id": "n-1", "type": "t", "data": {"a\u{0}b": 1}}),
            "data.a\\u0000b",
        ),
        (
            json!({"id": "n-2", "type": "t", "data": {"a": ["ok", "x\u{0}"]}}),
            "data.a[1]",
        ),
        (json!({"id": "n\u{0}3", "type": "t", "data": {}}), "id"),
    ];
    for (event, path) in &cases {
        let (status, body) = app.post("/events", event).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "ValidationError");
        assert_eq!(body["details"][0]["path"], *path, "{body}");
    }
    let (status, body) = app
        .post(
            "/events/batch",
            &json!({"events": [cases[0].0, {"id": "fine", "type": "t", "data": {}}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "invalid", "{body}");
    assert_eq!(body["results"][1]["status"], "created", "{body}");

    let (status, body) = app
        .post(
            "/rules",
            &json!({"name": "nul", "event_type": "t", "condition": {"==": [{"var": "a"}, "x\u{0}"]},
                    "action": {"type": "log", "params": {"message": "\u{0}"}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let paths: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("condition")), "{body}");
    assert!(paths.iter().any(|p| p.starts_with("action")), "{body}");

    for seconds in [
        json!(9_223_372_036_854_775_806_i64),
        json!(0),
        json!(-5),
        json!(31_536_001),
    ] {
        let (status, body) = app
            .post(
                "/events/requeue-stuck",
                &json!({"older_than_seconds": seconds}),
            )
            .await;
        assert_eq!(status, 400, "{seconds}: {body}");
        assert_eq!(body["details"][0]["path"], "older_than_seconds");
    }
    let (status, body) = app
        .post(
            "/events/requeue-stuck",
            &json!({"older_than_seconds": 31_536_000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}
