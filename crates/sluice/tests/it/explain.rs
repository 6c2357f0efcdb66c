//! Explain: why a rule matched or was skipped — on a sample (`POST /rules/test` with
//! `explain`), for a stored execution (`GET /events/{id}/executions/{execution_id}/explain`),
//! and on the console's event page.

use crate::helpers::TestApp;
use crate::processing::post_event;
use crate::story;
use serde_json::{json, Value};

story!(a_sample_test_can_say_why);
async fn a_sample_test_can_say_why(app: TestApp) {
    let condition =
        json!({"or": [{"==": [{"var": "country"}, "BR"]}, {">=": [{"var": "amount"}, 50]}]});
    let (status, body) = app
        .post(
            "/rules/test",
            &json!({"condition": condition, "data": {"country": "AR", "amount": 250}, "explain": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["matched"], true);
    assert_eq!(
        body["summary"],
        "country (\"AR\") == \"BR\" is false; amount (250) >= 50 is true"
    );
    assert_eq!(body["explanation"]["op"], "or");
    assert_eq!(body["explanation"]["args"][0]["args"][0]["var"], "country");
    assert_eq!(body["explanation"]["args"][0]["args"][0]["value"], "AR");

    // Without `explain`, the answer stays as it was.
    let (_, plain) = app
        .post(
            "/rules/test",
            &json!({"condition": condition, "data": {"amount": 1}}),
        )
        .await;
    assert!(
        plain.get("explanation").is_none() && plain.get("summary").is_none(),
        "{plain}"
    );
    // `explain` must be a boolean, and goes with data.
    let (status, body) = app
        .post(
            "/rules/test",
            &json!({"condition": true, "data": {}, "explain": "yes"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["details"][0]["path"], "explain");
    let (status, _) = app
        .post(
            "/rules/test",
            &json!({"condition": true, "event_type": "t", "explain": true}),
        )
        .await;
    assert_eq!(status, 400);
}

/// Rule 1 matches big orders, rule 2 wants Brazil: one order skips one and applies the other.
async fn two_rules_one_event(app: &TestApp) -> (i64, Vec<Value>) {
    for (name, condition) in [
        ("big orders", json!({">=": [{"var": "amount"}, 50]})),
        ("brazil", json!({"==": [{"var": "country"}, "BR"]})),
    ] {
        let (status, body) = app
            .post(
                "/rules",
                &json!({"name": name, "event_type": "order.created", "condition": condition,
                        "action": {"type": "noop"}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let id = post_event(
        app,
        "o-1",
        "order.created",
        json!({"amount": 10, "country": "BR"}),
    )
    .await;
    app.wait_for_state(id, &["processed"]).await;
    let attempts = app.attempts(id).await;
    let executions = attempts[0]["rule_executions"].as_array().unwrap().clone();
    (id, executions)
}

fn execution_of<'a>(executions: &'a [Value], rule: &str) -> &'a Value {
    executions.iter().find(|x| x["rule_name"] == rule).unwrap()
}

story!(a_stored_execution_is_explained_from_its_rule_version_and_payload);
async fn a_stored_execution_is_explained_from_its_rule_version_and_payload(app: TestApp) {
    let (id, executions) = two_rules_one_event(&app).await;
    let skipped = execution_of(&executions, "big orders");
    assert_eq!(skipped["result"], "skipped");
    let (status, why) = app
        .get_json(&format!(
            "/events/{id}/executions/{}/explain",
            skipped["id"]
        ))
        .await;
    assert_eq!(status, 200, "{why}");
    assert_eq!(why["matched"], false);
    assert_eq!(why["summary"], "amount (10) >= 50 is false");
    assert_eq!(why["execution_id"], skipped["id"]);
    assert_eq!(why["rule_version_id"], skipped["rule_version_id"]);
    assert_eq!(why["explanation"]["args"][0]["value"], 10);

    // A new version of the rule does not change what the recorded version explains.
    let (status, _) = app
        .put(
            &format!("/rules/{}", skipped["rule_id"]),
            &json!({"condition": {">=": [{"var": "amount"}, 5]}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, again) = app
        .get_json(&format!(
            "/events/{id}/executions/{}/explain",
            skipped["id"]
        ))
        .await;
    assert_eq!(again["summary"], "amount (10) >= 50 is false");

    let applied = execution_of(&executions, "brazil");
    let (_, why) = app
        .get_json(&format!(
            "/events/{id}/executions/{}/explain",
            applied["id"]
        ))
        .await;
    assert_eq!(why["matched"], true);
    assert_eq!(why["summary"], "country (\"BR\") == \"BR\" is true");

    // Unknown executions, another event's execution, bad ids.
    let other = post_event(&app, "o-2", "other.type", json!({})).await;
    for (path, status) in [
        (format!("/events/{id}/executions/999999/explain"), 404),
        (
            format!("/events/{other}/executions/{}/explain", applied["id"]),
            404,
        ),
        (
            format!("/events/999999/executions/{}/explain", applied["id"]),
            404,
        ),
        (format!("/events/{id}/executions/abc/explain"), 400),
    ] {
        let (got, body) = app.get_json(&path).await;
        assert_eq!(got, status, "{path}: {body}");
    }
}

story!(the_event_page_says_why_each_rule_matched_or_not);
async fn the_event_page_says_why_each_rule_matched_or_not(app: TestApp) {
    let (id, _) = two_rules_one_event(&app).await;
    let html = app
        .get(&format!("/console/events/{id}"))
        .await
        .text()
        .await
        .unwrap();
    let text = unescape(&html);
    assert!(text.contains("<summary>why?</summary>"), "{html}");
    assert!(text.contains("amount (10) >= 50 is false"), "{html}");
    assert!(
        text.contains("country (\"BR\") == \"BR\" is true"),
        "{html}"
    );
    assert!(text.contains("var amount → 10"));
}

story!(the_rule_form_test_says_why);
async fn the_rule_form_test_says_why(app: TestApp) {
    let response = app
        .client
        .post(app.url("/console/rules"))
        .form(&[
            ("name", "big"),
            ("event_type", "order.created"),
            ("condition", r#"{">=": [{"var": "amount"}, 50]}"#),
            ("action", r#"{"type": "noop"}"#),
            ("intent", "test"),
            ("data", r#"{"amount": 75}"#),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let html = unescape(&response.text().await.unwrap());
    assert!(html.contains("amount (75) >= 50 is true"), "{html}");
    assert!(html.contains("var amount → 75"));
}

/// The page's text with the entities askama writes turned back into characters.
fn unescape(html: &str) -> String {
    html.replace("&#62;", ">")
        .replace("&#60;", "<")
        .replace("&#34;", "\"")
        .replace("&#39;", "'")
        .replace("&#38;", "&")
}
