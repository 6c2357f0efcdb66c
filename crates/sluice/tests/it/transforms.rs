//! Transforms: `{"$logic": …}` in an action's params, computed per event under the rule's
//! budget; previewed by `POST /rules/test`; deduped by the action as written.

use crate::helpers::TestApp;
use crate::receiver::Receiver;
use serde_json::{json, Value};

fn order() -> Value {
    json!({"qty": 3, "price": 2.5, "country": "BR",
        "items": [{"sku": "a", "n": 0}, {"sku": "b", "n": 2}, {"sku": "c", "n": 5}]})
}

fn body() -> Value {
    json!({
        "order": "{{ external_id }}",
        "total": {"$logic": {"*": [{"var": "data.qty"}, {"var": "data.price"}]}},
        "region": {"$logic": {"if": [{"==": [{"var": "data.country"}, "BR"]}, "latam", "other"]}},
        "in_stock": {"$logic": {"map": [
            {"filter": [{"var": "data.items"}, {">": [{"var": "n"}, 0]}]},
            {"var": "sku"}]}},
        "event_type": {"$logic": {"var": "event.type"}}
    })
}

crate::story!(
    a_webhook_body_is_computed_per_event_and_a_replay_of_the_same_content_dedupes,
    "--webhook-allow-private",
    "true"
);
async fn a_webhook_body_is_computed_per_event_and_a_replay_of_the_same_content_dedupes(
    app: TestApp,
) {
    let receiver = Receiver::start(200, 0).await;
    // The URL and a header may be transforms too: their results become text.
    let url = json!({"$logic": {"cat": [format!("{}/hook?units=", receiver.url),
        {"var": "data.qty"}]}});
    let rule = json!({"name": "shaped", "event_type": "order.created", "condition": true,
        "action": {"type": "call_webhook", "params": {"url": url,
            "headers": {"x-region": {"$logic": {"var": "data.country"}}},
            "body": body()}}});
    let (status, created) = app.post("/rules", &rule).await;
    assert_eq!(status, 201, "{created}");
    let (_, event) = app
        .post(
            "/events",
            &json!({"id": "o-1", "type": "order.created", "data": order()}),
        )
        .await;
    let id = event["id"].as_i64().unwrap();
    app.wait_for_state(id, &["processed"]).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/hook?units=3");
    assert_eq!(requests[0].header("x-region").as_deref(), Some("BR"));
    assert_eq!(
        requests[0].json(),
        json!({"order": "o-1", "total": 7.5, "region": "latam", "in_stock": ["b", "c"],
            "event_type": "order.created"})
    );

    // "Why?" shows how each transform computed what was sent.
    let execution = &app.attempts(id).await[0]["rule_executions"][0];
    let (status, why) = app
        .get_json(&format!(
            "/events/{id}/executions/{}/explain",
            execution["id"]
        ))
        .await;
    assert_eq!(status, 200, "{why}");
    let transforms = why["transforms"].as_array().expect("transforms explained");
    let paths: Vec<&str> = transforms
        .iter()
        .map(|t| t["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "action.params.url",
            "action.params.headers.x-region",
            "action.params.body.total",
            "action.params.body.region",
            "action.params.body.in_stock",
            "action.params.body.event_type"
        ],
        "{why}"
    );
    assert_eq!(transforms[2]["value"], 7.5, "{why}");
    assert_eq!(transforms[2]["explanation"]["op"], "*", "{why}");
    // The console's event page says the same under "why?".
    let page = app
        .get(&format!("/console/events/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<code>action.params.body.total</code> = <code>7.5</code>"),
        "{page}"
    );

    // So does a dry run of a replay, for a rule that would apply.
    let logged = json!({"name": "logged", "event_type": "order.created", "condition": true,
        "action": {"type": "log", "params": {"message": {"$logic": {"cat": ["units: ",
            {"var": "data.qty"}]}}}}});
    assert_eq!(app.post("/rules", &logged).await.0, 201);
    let (status, dry) = app
        .post(
            &format!("/events/{id}/replay"),
            &json!({"dry_run": true, "rules": "current"}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    let would = dry["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule_name"] == "logged")
        .cloned()
        .unwrap();
    assert_eq!(would["would"], "apply", "{dry}");
    assert_eq!(would["action"]["params"]["message"], "units: 3", "{dry}");
    assert_eq!(would["transforms"][0]["value"], "units: 3", "{dry}");
    assert_eq!(would["transforms"][0]["explanation"]["op"], "cat", "{dry}");

    let (status, _) = app
        .post(
            &format!("/events/{id}/replay"),
            &json!({"rules": "original"}),
        )
        .await;
    assert_eq!(status, 200);
    app.wait_for_state(id, &["processed"]).await;
    assert_eq!(
        app.attempts(id).await[0]["rule_executions"][0]["result"],
        "deduped"
    );
    assert_eq!(receiver.count(), 1);
    app.stop().await;
}

crate::story!(
    a_transform_over_budget_fails_the_action_with_the_reason_and_is_not_retried,
    "--webhook-allow-private",
    "true"
);
async fn a_transform_over_budget_fails_the_action_with_the_reason_and_is_not_retried(app: TestApp) {
    let receiver = Receiver::start(200, 0).await;
    let rule = json!({"name": "costly", "event_type": "big", "condition": true,
        "action": {"type": "call_webhook", "params": {"url": format!("{}/hook", receiver.url),
            "body": {"plus_one": {"$logic": {"map": [{"var": "data.xs"}, {"+": [{"var": ""}, 1]}]}}}}}});
    assert_eq!(app.post("/rules", &rule).await.0, 201);
    let xs = vec![0; 150_000];
    let (status, event) = app
        .post(
            "/events",
            &json!({"id": "b-1", "type": "big", "data": {"xs": xs}}),
        )
        .await;
    assert_eq!(status, 201, "{event}");
    let id = event["id"].as_i64().unwrap();
    app.wait_for_state(id, &["failed"]).await;
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 1, "not retried: {attempts:?}");
    let error = attempts[0]["rule_executions"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("transform at action.params.body.plus_one") && error.contains("budget"),
        "{error}"
    );
    assert_eq!(receiver.count(), 0);
    app.stop().await;
}

crate::story!(a_rule_test_previews_an_action_and_a_bad_transform_is_refused_on_save);
async fn a_rule_test_previews_an_action_and_a_bad_transform_is_refused_on_save(app: TestApp) {
    let action = json!({"type": "publish_nats", "params": {"url": "nats://u:secret@127.0.0.1:4222",
        "subject": "orders.created", "payload": body()}});
    let (status, tested) = app
        .post(
            "/rules/test",
            &json!({"condition": true, "data": order(), "action": action}),
        )
        .await;
    assert_eq!(status, 200, "{tested}");
    let payload = &tested["action"]["params"]["payload"];
    assert_eq!(payload["total"], 7.5, "{tested}");
    assert_eq!(payload["in_stock"], json!(["b", "c"]), "{tested}");
    assert!(!tested.to_string().contains("secret"), "{tested}");
    assert!(
        tested.get("transforms").is_none(),
        "only explained: {tested}"
    );

    // Explained, each transform says how it computed its value.
    let (status, explained) = app
        .post(
            "/rules/test",
            &json!({"condition": true, "data": order(), "action": action, "explain": true}),
        )
        .await;
    assert_eq!(status, 200, "{explained}");
    let transforms = explained["transforms"]
        .as_array()
        .expect("transforms explained");
    assert_eq!(transforms.len(), 4, "{explained}");
    let region = &transforms[1];
    assert_eq!(
        region["path"], "action.params.payload.region",
        "{explained}"
    );
    assert_eq!(region["value"], "latam");
    assert_eq!(region["explanation"]["op"], "if", "{region}");
    assert!(
        region["summary"].as_str().unwrap().contains("BR"),
        "{region}"
    );

    let (status, invalid) = app
        .post(
            "/rules",
            &json!({"name": "bad", "event_type": "t", "condition": true,
                "action": {"type": "call_webhook", "params": {"url": "https://example.com/h",
                    "body": {"total": {"$logic": {"no_such_op": [1]}}}}}}),
        )
        .await;
    assert_eq!(status, 400, "{invalid}");
    let path = invalid["details"][0]["path"].as_str().unwrap_or_default();
    assert!(
        path.starts_with("action.params.body.total.$logic"),
        "{invalid}"
    );
    app.stop().await;
}
