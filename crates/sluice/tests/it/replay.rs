//! Replay: dedupe of non-idempotent actions across versions, pinned original versions,
//! dry runs, batches and refusals.

use crate::helpers::TestApp;
use crate::processing::{create_rule, post_event, webhook};
use crate::receiver::Receiver;
use crate::story;
use serde_json::{json, Value};

async fn replay(app: &TestApp, id: i64, body: Value) -> (u16, Value) {
    app.post(&format!("/events/{id}/replay"), &body).await
}

async fn last_results(app: &TestApp, id: i64) -> Vec<(String, i64)> {
    let attempts = app.attempts(id).await;
    attempts[0]["rule_executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["result"].as_str().unwrap().to_owned(),
                x["rule_version"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Replays and waits for the new attempt to finish.
async fn replay_and_wait(app: &TestApp, id: i64, body: Value) -> Value {
    let before = app.attempts(id).await.len();
    let (status, answer) = replay(app, id, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["event"]["state"], "pending");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let attempts = app.attempts(id).await;
        if attempts.len() > before && attempts[0]["status"] != "running" {
            return app.wait_for_state(id, &["processed", "failed"]).await;
        }
        assert!(std::time::Instant::now() < deadline, "replay never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

story!(
    replays_never_resend_what_was_applied_unless_the_action_changed,
    "--webhook-allow-private",
    "true"
);
async fn replays_never_resend_what_was_applied_unless_the_action_changed(app: TestApp) {
    let receiver = Receiver::start(200, 0).await;
    let rule = create_rule(
        &app,
        "hook",
        "order.created",
        json!({">=": [{"var": "amount"}, 50]}),
        webhook(&receiver.url),
    )
    .await;
    let id = post_event(&app, "order-1", "order.created", json!({"amount": 100})).await;
    app.wait_for_state(id, &["processed"]).await;
    assert_eq!(receiver.count(), 1);

    // Same version: deduped.
    replay_and_wait(&app, id, json!({})).await;
    assert_eq!(last_results(&app, id).await, [("deduped".to_owned(), 1)]);
    assert_eq!(receiver.count(), 1);

    // A new version that changes only the condition: still deduped (re-sending on any new version would be the naive behaviour).
    app.put(
        &format!("/rules/{rule}"),
        &json!({"condition": {">=": [{"var": "amount"}, 60]}}),
    )
    .await;
    replay_and_wait(&app, id, json!({"rules": "current"})).await;
    assert_eq!(last_results(&app, id).await, [("deduped".to_owned(), 2)]);
    assert_eq!(receiver.count(), 1);

    // A changed action is a different delivery: applied again, with a new key.
    let mut changed = webhook(&receiver.url);
    changed["params"]["body"]["extra"] = json!("v3");
    app.put(&format!("/rules/{rule}"), &json!({"action": changed}))
        .await;
    let event = replay_and_wait(&app, id, json!({})).await;
    assert_eq!(event["state"], "processed");
    assert!(event["replayed_at"].is_string());
    assert_eq!(last_results(&app, id).await, [("applied".to_owned(), 3)]);
    assert_eq!(receiver.count(), 2);
    let keys: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").unwrap())
        .collect();
    assert_ne!(keys[0], keys[1]);

    let attempts = app.attempts(id).await;
    let triggers: Vec<&str> = attempts
        .iter()
        .map(|a| a["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(
        triggers,
        ["replay", "replay", "replay", "initial"],
        "history is never rewritten"
    );
    app.stop().await;
}

story!(original_rules_replay_the_versions_first_evaluated);
async fn original_rules_replay_the_versions_first_evaluated(app: TestApp) {
    let rule = create_rule(
        &app,
        "log",
        "t",
        json!({"==": [{"var": "kind"}, "a"]}),
        json!({"type": "log", "params": {"message": "m"}}),
    )
    .await;
    let id = post_event(&app, "e", "t", json!({"kind": "a"})).await;
    app.wait_for_state(id, &["processed"]).await;
    app.put(
        &format!("/rules/{rule}"),
        &json!({"condition": {"==": [{"var": "kind"}, "b"]}}),
    )
    .await;
    create_rule(&app, "newer", "t", json!(true), json!({"type": "noop"})).await;

    replay_and_wait(&app, id, json!({"rules": "original"})).await;
    assert_eq!(
        last_results(&app, id).await,
        [("applied".to_owned(), 1)],
        "only v1 of the first rule"
    );

    replay_and_wait(&app, id, json!({"rules": "current"})).await;
    let mut current = last_results(&app, id).await;
    current.sort();
    assert_eq!(
        current,
        [("applied".to_owned(), 1), ("skipped".to_owned(), 2)]
    );
    app.stop().await;
}

story!(
    a_dry_run_reports_and_changes_nothing,
    "--webhook-allow-private",
    "true"
);
async fn a_dry_run_reports_and_changes_nothing(app: TestApp) {
    let receiver = Receiver::start(200, 0).await;
    create_rule(&app, "hook", "t", json!(true), webhook(&receiver.url)).await;
    create_rule(&app, "never", "t", json!(false), json!({"type": "noop"})).await;
    let id = post_event(&app, "e", "t", json!({"amount": 1})).await;
    let before = app.wait_for_state(id, &["processed"]).await;

    let (status, answer) = replay(&app, id, json!({"dry_run": true})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["dry_run"], true);
    let would: Vec<&str> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["would"].as_str().unwrap())
        .collect();
    assert_eq!(would, ["dedupe", "skip"]);

    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_, after) = app.get_json(&format!("/events/{id}")).await;
    assert_eq!(after, before, "a dry run changes nothing");
    assert_eq!(app.attempts(id).await.len(), 1);
    assert_eq!(receiver.count(), 1);
    app.stop().await;
}

story!(
    replay_is_refused_for_unknown_or_unfinished_events_and_bad_options,
    "--exclude-event-types",
    "held"
);
async fn replay_is_refused_for_unknown_or_unfinished_events_and_bad_options(app: TestApp) {
    let (status, body) = replay(&app, 999, json!({})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("NotFoundError"))
    );
    let (status, _) = app.post("/events/abc/replay", &json!({})).await;
    assert_eq!(status, 400);
    // An event that is not finished: its type is one this worker leaves alone, so it stays
    // pending (a race with a fast failure would make this flaky).
    let id = post_event(&app, "busy", "held", json!({})).await;
    let (status, body) = replay(&app, id, json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "ConflictError");

    let done = post_event(&app, "done", "t", json!({})).await;
    app.wait_for_state(done, &["processed"]).await;
    for bad in [
        json!({"rules": "latest"}),
        json!({"dry_run": "yes"}),
        json!({"bogus": 1}),
        json!([1]),
    ] {
        let (status, body) = replay(&app, done, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // No body at all is a plain replay.
    let response = app
        .client
        .post(app.url(&format!("/events/{done}/replay")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

story!(batches_replay_by_ids_or_by_filter);
async fn batches_replay_by_ids_or_by_filter(app: TestApp) {
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            post_event(
                &app,
                &format!("e{i}"),
                if i < 3 { "a" } else { "b" },
                json!({}),
            )
            .await,
        );
    }
    app.wait_for_processed(5).await;

    let (status, body) = app
        .post(
            "/events/replay-batch",
            &json!({"event_ids": [ids[0], ids[1], 99999]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requested"], 3);
    assert_eq!(body["replayed"], 2);
    app.wait_for_stats(|s| s["processed"] == 5).await;

    let (status, body) = app
        .post(
            "/events/replay-batch",
            &json!({"filter": {"type": "b", "state": "processed"}, "limit": 10}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], 2);
    let mut replayed: Vec<i64> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    replayed.sort();
    assert_eq!(replayed, [ids[3], ids[4]]);
    for id in &replayed {
        app.wait_for_state(*id, &["processed"]).await;
        let attempts = app.attempts(*id).await;
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0]["trigger"], "replay");
    }

    for bad in [
        json!({}),
        json!({"event_ids": []}),
        json!({"event_ids": (1..=101).collect::<Vec<i64>>()}),
        json!({"event_ids": ["x"]}),
        json!({"filter": {"state": "pending"}}),
        json!({"filter": {}, "limit": 10001}),
        json!({"event_ids": [1], "filter": {}}),
    ] {
        let (status, body) = app.post("/events/replay-batch", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let (status, body) = app
        .post("/events/requeue-stuck", &json!({"older_than_seconds": 60}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["requeued"], 0);
    app.stop().await;
}
