//! The rules API: versions, validation errors naming the part at fault, trying a rule.

use crate::helpers::TestApp;
use crate::story;
use serde_json::{json, Value};

pub fn seed_rule() -> Value {
    json!({
        "name": "Log high value orders",
        "event_type": "order.created",
        "condition": { ">=": [{ "var": "amount" }, 50] },
        "action": { "type": "log", "params": { "level": "info", "message": "High value order detected" } },
        "active": true
    })
}

story!(rules_are_versioned_only_by_condition_and_action);
async fn rules_are_versioned_only_by_condition_and_action(app: TestApp) {
    let (status, rule) = app.post("/rules", &seed_rule()).await;
    assert_eq!(status, 201, "{rule}");
    let id = rule["id"].as_i64().unwrap();
    assert_eq!(rule["active"], true);
    assert_eq!(rule["current_version"]["version"], 1);
    assert_eq!(rule["current_version"]["rule_id"], id);
    assert_eq!(
        rule["current_version"]["condition"],
        seed_rule()["condition"]
    );
    assert_eq!(rule["current_version_id"], rule["current_version"]["id"]);

    let (status, renamed) = app
        .put(&format!("/rules/{id}"), &json!({"name": "Renamed"}))
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "Renamed");
    assert_eq!(
        renamed["current_version"]["version"], 1,
        "a rename is not a version"
    );

    // The same condition again, and the same action with defaults spelled out: no version.
    let same = json!({"condition": seed_rule()["condition"], "action": {"type": "log", "params": {"message": "High value order detected", "level": "INFO"}}});
    let (_, unchanged) = app.put(&format!("/rules/{id}"), &same).await;
    assert_eq!(unchanged["current_version"]["version"], 1, "{unchanged}");

    let (_, v2) = app
        .put(
            &format!("/rules/{id}"),
            &json!({"condition": {">": [{"var": "amount"}, 500]}}),
        )
        .await;
    assert_eq!(v2["current_version"]["version"], 2);
    assert_eq!(
        v2["current_version"]["action"],
        seed_rule()["action"],
        "the action carries over"
    );
    let (_, v3) = app
        .put(
            &format!("/rules/{id}"),
            &json!({"action": {"type": "noop"}}),
        )
        .await;
    assert_eq!(v3["current_version"]["version"], 3);

    let (status, versions) = app.get_json(&format!("/rules/{id}/versions")).await;
    assert_eq!(status, 200);
    let numbers: Vec<i64> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    assert_eq!(
        versions["data"][2]["condition"],
        seed_rule()["condition"],
        "versions are immutable"
    );

    let (status, deleted) = app.delete(&format!("/rules/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(deleted["rule"]["active"], false);
    assert!(deleted["message"].is_string());
    let (_, fetched) = app.get_json(&format!("/rules/{id}")).await;
    assert_eq!(fetched["active"], false);

    app.post("/rules", &json!({"name": "other", "event_type": "user.signup", "condition": true, "action": {"type": "noop"}})).await;
    let (_, active) = app.get_json("/rules?active=true").await;
    assert_eq!(active["count"], 1);
    assert_eq!(active["data"][0]["event_type"], "user.signup");
    let (_, by_type) = app.get_json("/rules?event_type=order.created").await;
    assert_eq!(by_type["count"], 1);
    let (_, all) = app.get_json("/rules?limit=1").await;
    assert_eq!(all["count"], 1);
    app.stop().await;
}

story!(invalid_rules_are_refused_with_the_part_at_fault);
async fn invalid_rules_are_refused_with_the_part_at_fault(app: TestApp) {
    let cases = [
        (
            json!({"condition": {"and": [true, {"frobnicate": [1]}]}}),
            "condition.and[1]",
        ),
        (json!({"condition": {"map": [[1]]}}), "condition"),
        (json!({"action": {"type": "teleport"}}), "action.type"),
        (
            json!({"action": {"type": "call_webhook", "params": {"url": "ftp://x"}}}),
            "action.params.url",
        ),
        (
            json!({"action": {"type": "call_webhook", "params": {"url": "https://x.example/{{ nope }}"}}}),
            "action.params.url",
        ),
        (
            json!({"action": {"type": "send_email", "params": {"to": "a@b.c", "subject": "s"}}}),
            "action.params.template",
        ),
        (json!({"name": ""}), "name"),
        (json!({"event_type": "x".repeat(101)}), "event_type"),
        (json!({"active": "yes"}), "active"),
    ];
    for (change, path) in cases {
        let mut rule = seed_rule();
        for (key, value) in change.as_object().unwrap() {
            rule[key] = value.clone();
        }
        let (status, body) = app.post("/rules", &rule).await;
        assert_eq!(status, 400, "{change}: {body}");
        assert_eq!(body["error"], "ValidationError");
        let paths: Vec<&str> = body["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap())
            .collect();
        assert!(
            paths.iter().any(|p| p.starts_with(path)),
            "{change}: expected {path} in {paths:?}"
        );
    }
    let (status, _) = app.post("/rules", &json!({})).await;
    assert_eq!(status, 400);
    let (status, body) = app.put("/rules/999", &json!({"name": "x"})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("NotFoundError"))
    );
    let (status, _) = app.put("/rules/abc", &json!({"name": "x"})).await;
    assert_eq!(status, 400);
    let (_, rule) = app.post("/rules", &seed_rule()).await;
    let (status, body) = app.put(&format!("/rules/{}", rule["id"]), &json!({})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = app
        .put(
            &format!("/rules/{}", rule["id"]),
            &json!({"condition": {"nope": 1}}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app.get_json("/rules/999/versions").await;
    assert_eq!(status, 404);
    let (status, _) = app.get_json("/rules?active=maybe").await;
    assert_eq!(status, 400);
    app.stop().await;
}

story!(a_rule_can_be_tried_before_it_is_saved);
async fn a_rule_can_be_tried_before_it_is_saved(app: TestApp) {
    let (status, body) = app
        .post(
            "/rules/test",
            &json!({"condition": {">=": [{"var": "amount"}, 50]}, "data": {"amount": 100}}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"result": true, "matched": true}));
    let (_, body) = app
        .post(
            "/rules/test",
            &json!({"condition": {"var": "a"}, "data": {"a": 0}}),
        )
        .await;
    assert_eq!(body, json!({"result": 0, "matched": false}));

    for amount in [10, 60, 70, 5] {
        app.post("/events", &json!({"id": format!("o-{amount}"), "type": "order.created", "data": {"amount": amount}})).await;
    }
    app.post(
        "/events",
        &json!({"id": "other", "type": "user.signup", "data": {"amount": 1000}}),
    )
    .await;
    let (status, body) = app
        .post("/rules/test", &json!({"condition": {">=": [{"var": "amount"}, 50]}, "event_type": "order.created", "last": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checked"], 3);
    assert_eq!(body["matched"], 2);
    assert_eq!(body["samples"].as_array().unwrap().len(), 2);

    let (status, body) = app
        .post(
            "/rules/test",
            &json!({"condition": {"bogus": []}, "data": {}}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["path"], "condition");
    let (status, _) = app
        .post(
            "/rules/test",
            &json!({"condition": true, "event_type": "t", "last": 5000}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = app.post("/rules/test", &json!({"condition": true})).await;
    assert_eq!(status, 400);
    app.stop().await;
}
