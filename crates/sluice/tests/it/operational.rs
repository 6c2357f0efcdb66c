//! Operational events (`OPERATIONAL_EVENTS=true`): a target that opens is announced as a
//! `sluice.target.opened` event that an ordinary rule routes; a failing `sluice.*` event
//! produces no further one; a storm of failures produces a bounded number of reports.

use crate::helpers::TestApp;
use crate::receiver::Receiver;
use crate::story;
use crate::targets::{hook_rule, wait_until};
use serde_json::{json, Value};
use std::time::Duration;

async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    let (status, list) = app
        .get_json(&format!("/events?type={event_type}&limit=500"))
        .await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().cloned().unwrap_or_default()
}

story!(
    a_target_that_opens_is_announced_and_a_rule_routes_it,
    "--operational-events",
    "true",
    "--webhook-allow-private",
    "true",
    "--target-failure-threshold",
    "2",
    "--target-open-ms",
    "60000",
    "--max-attempts",
    "1"
);
async fn a_target_that_opens_is_announced_and_a_rule_routes_it(app: TestApp) {
    let failing = Receiver::start(503, 0).await;
    let on_call = Receiver::start(200, 0).await;
    let failing_target = failing.url.trim_end_matches('/').to_owned();
    assert_eq!(
        app.post("/rules", &hook_rule("orders", "order", &failing.url))
            .await
            .0,
        201
    );
    let alert = json!({"name": "page the on-call", "event_type": "sluice.target.opened",
        "condition": {"==": [{"var": "target"}, failing_target]},
        "action": {"type": "call_webhook", "params": {"url": format!("{}/alert", on_call.url),
            "body": {"text": "{{ data.target }} is down: {{ data.error }}"}}}});
    assert_eq!(app.post("/rules", &alert).await.0, 201);

    for i in 0..3 {
        app.post(
            "/events",
            &json!({"id": format!("o-{i}"), "type": "order", "data": {"i": i}}),
        )
        .await;
    }
    wait_until(
        "the on-call is paged",
        Duration::from_secs(20),
        async || on_call.count() >= 1,
    )
    .await;
    let page = on_call.requests()[0].json();
    let text = page["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("{failing_target} is down: ")),
        "{page}"
    );
    assert!(text.contains("503"), "{page}");

    // Once, however many deliveries failed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let opened = events_of(&app, "sluice.target.opened").await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(on_call.count(), 1);

    // A pause is announced too.
    let (status, _) = app
        .post("/targets/pause", &json!({"target": failing_target}))
        .await;
    assert_eq!(status, 200);
    wait_until(
        "the pause is announced",
        Duration::from_secs(5),
        async || events_of(&app, "sluice.target.paused").await.len() == 1,
    )
    .await;
    app.stop().await;
}

story!(
    a_failing_operational_event_reports_nothing_more_and_a_storm_is_bounded,
    "--operational-events",
    "true",
    "--webhook-allow-private",
    "true",
    "--max-attempts",
    "1"
);
async fn a_failing_operational_event_reports_nothing_more_and_a_storm_is_bounded(app: TestApp) {
    // A receiver that refuses (400): each delivery fails for good, and its target stays up.
    let refusing = Receiver::start(400, 0).await;
    assert_eq!(
        app.post("/rules", &hook_rule("jobs", "job", &refusing.url))
            .await
            .0,
        201
    );
    // The rule on failures fails as well.
    assert_eq!(
        app.post(
            "/rules",
            &hook_rule("report", "sluice.event.failed", &refusing.url)
        )
        .await
        .0,
        201
    );
    // One job fails: one report, which fails in turn and reports nothing.
    app.post("/events", &json!({"id": "j-0", "type": "job", "data": {}}))
        .await;
    wait_until("the report failed", Duration::from_secs(20), async || {
        let reports = events_of(&app, "sluice.event.failed").await;
        reports.len() == 1 && reports[0]["state"] == "failed"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(events_of(&app, "sluice.event.failed").await.len(), 1);

    // A storm: 30 failures.
    const STORM: usize = 30;
    let events: Vec<Value> = (1..STORM)
        .map(|i| json!({"id": format!("j-{i}"), "type": "job", "data": {"i": i}}))
        .collect();
    let (status, body) = app
        .post("/events/batch", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("every job failed", Duration::from_secs(30), async || {
        app.get_json("/events?type=job&state=failed&limit=500")
            .await
            .1["count"]
            == STORM as i64
    })
    .await;
    // Ten reports a minute one by one (the rest go into one aggregate when the minute ends),
    // and the reports that failed in turn reported nothing.
    wait_until(
        "the reports are handled",
        Duration::from_secs(20),
        async || {
            let reports = events_of(&app, "sluice.event.failed").await;
            reports.len() == 10 && reports.iter().all(|r| r["state"] == "failed")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reports = events_of(&app, "sluice.event.failed").await;
    assert_eq!(reports.len(), 10, "{reports:?}");
    let (_, first) = app.get_json(&format!("/events/{}", reports[0]["id"])).await;
    assert_eq!(first["payload"]["type"], "job", "{first}");
    assert!(
        first["payload"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("400")),
        "{first}"
    );
    // 30 jobs and 10 reports reached the receiver: nothing about the reports' failures.
    assert_eq!(refusing.count(), STORM + 10);

    // A revoked key is announced.
    let (status, key) = app
        .post("/api-keys", &json!({"name": "ci", "scopes": ["read"]}))
        .await;
    assert_eq!(status, 201, "{key}");
    let response = app
        .client
        .delete(app.url(&format!("/api-keys/{}", key["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_until(
        "the revocation is announced",
        Duration::from_secs(5),
        async || {
            events_of(&app, "sluice.key.revoked")
                .await
                .first()
                .is_some_and(|e| e["external_id"] == format!("sluice.key.revoked:{}", key["id"]))
        },
    )
    .await;
    app.stop().await;
}
