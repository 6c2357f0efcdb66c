//! The events API: ingest, dedupe, conflicts, batch, listings, stats, bad input.

use crate::helpers::TestApp;
use crate::story;
use serde_json::{json, Value};

fn quick_start_event() -> Value {
    json!({"id": "order-123", "type": "order.created", "data": {"amount": 100, "user_id": "user-456"}})
}

story!(the_seed_quick_start_event_is_stored);
async fn the_seed_quick_start_event_is_stored(app: TestApp) {
    let response = app.post_json("/events", &quick_start_event()).await;
    assert_eq!(response.status(), 201);
    assert!(response.headers().get("idempotent-replayed").is_none());
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["external_id"], "order-123");
    assert_eq!(created["type"], "order.created");
    assert_eq!(created["state"], "pending");
    assert_eq!(created["received_count"], 1);
    assert_eq!(created["duplicate"], false);
    let id = created["id"].as_i64().unwrap();

    let (status, event) = app.get_json(&format!("/events/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        event["payload"],
        json!({"amount": 100, "user_id": "user-456"})
    );
    assert_eq!(event["created_at"], created["created_at"]);
    for field in [
        "next_attempt_at",
        "last_error",
        "updated_at",
        "processed_at",
        "replayed_at",
    ] {
        assert!(event.get(field).is_some(), "{field} missing from {event}");
    }
    app.stop().await;
}

story!(a_duplicate_is_acknowledged_and_counted_a_different_payload_conflicts);
async fn a_duplicate_is_acknowledged_and_counted_a_different_payload_conflicts(app: TestApp) {
    let (_, first) = app.post("/events", &quick_start_event()).await;
    // Same content, other key order: still the same payload.
    let reordered = json!({"data": {"user_id": "user-456", "amount": 100}, "type": "order.created", "id": "order-123"});
    let response = app.post_json("/events", &reordered).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let again: Value = response.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["received_count"], 2);

    let changed = json!({"id": "order-123", "type": "order.created", "data": {"amount": 999}});
    let (status, body) = app.post("/events", &changed).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"], "ConflictError");
    assert!(body["message"].as_str().unwrap().contains("order-123"));
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains(&first["id"].to_string()));

    // The conflict wrote nothing.
    let (_, event) = app.get_json(&format!("/events/{}", first["id"])).await;
    assert_eq!(event["received_count"], 2);
    assert_eq!(event["payload"]["amount"], 100);
    app.stop().await;
}

story!(two_hundred_concurrent_posts_of_one_id_make_one_event);
async fn two_hundred_concurrent_posts_of_one_id_make_one_event(app: TestApp) {
    let body = json!({"id": "same", "type": "t", "data": {"n": 1}});
    let requests = (0..200).map(|_| {
        let client = app.client.clone();
        let url = app.url("/events");
        let body = body.clone();
        tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    });
    let answers: Vec<(u16, Value)> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(
        answers.iter().all(|(status, _)| *status == 201),
        "{answers:?}"
    );
    let ids: std::collections::HashSet<i64> = answers
        .iter()
        .map(|(_, b)| b["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    let firsts = answers
        .iter()
        .filter(|(_, b)| b["duplicate"] == false)
        .count();
    assert_eq!(firsts, 1, "exactly one request created the event");

    let (_, list) = app.get_json("/events?external_id=same").await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["data"][0]["received_count"], 200);
    app.stop().await;
}

story!(concurrent_posts_of_distinct_ids_are_all_stored);
async fn concurrent_posts_of_distinct_ids_are_all_stored(app: TestApp) {
    let requests = (0..300).map(|i| {
        let client = app.client.clone();
        let url = app.url("/events");
        tokio::spawn(async move {
            let body = json!({"id": format!("e-{i}"), "type": "t", "data": {"i": i}});
            client
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    });
    for status in futures::future::join_all(requests).await {
        assert_eq!(status.unwrap(), 201);
    }
    let (_, stats) = app.get_json("/events/stats").await;
    assert_eq!(stats["total"], 300);
    // With no rules, the worker marks each processed.
    app.wait_for_processed(300).await;
    app.stop().await;
}

story!(bad_input_gets_a_documented_4xx);
async fn bad_input_gets_a_documented_4xx(app: TestApp) {
    let expect = |status: u16, body: &Value, want_status: u16, want_error: &str| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"], want_error, "{body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    };
    let (s, b) = app
        .post_raw("/events", Some("application/json"), b"{not json".to_vec())
        .await;
    expect(s, &b, 400, "ValidationError");
    let (s, b) = app
        .post_raw("/events", Some("application/json"), b"".to_vec())
        .await;
    expect(s, &b, 400, "ValidationError");
    let (s, b) = app
        .post_raw("/events", Some("text/plain"), b"{}".to_vec())
        .await;
    expect(s, &b, 415, "UnsupportedMediaType");
    let (s, b) = app.post_raw("/events", None, b"{}".to_vec()).await;
    expect(s, &b, 415, "UnsupportedMediaType");
    let big = json!({"id": "big", "type": "t", "data": {"blob": "x".repeat(1024 * 1024)}});
    let (s, b) = app
        .post_raw(
            "/events",
            Some("application/json"),
            big.to_string().into_bytes(),
        )
        .await;
    expect(s, &b, 413, "PayloadTooLarge");
    let (s, b) = app
        .post_raw(
            "/events",
            Some("application/json"),
            br#"{"id":"n","type":"t","data":{"x":1e999}}"#.to_vec(),
        )
        .await;
    expect(s, &b, 400, "ValidationError");
    let (s, b) = app
        .post_raw(
            "/events",
            Some("application/json"),
            br#"{"id":"n","type":"t","data":{"x":NaN}}"#.to_vec(),
        )
        .await;
    expect(s, &b, 400, "ValidationError");

    let mut deep = json!(1);
    for _ in 0..21 {
        deep = json!({ "a": deep });
    }
    let (s, b) = app
        .post("/events", &json!({"id": "deep", "type": "t", "data": deep}))
        .await;
    expect(s, &b, 400, "ValidationError");
    assert_eq!(b["details"][0]["path"], "data");
    let mut very_deep = String::new();
    for _ in 0..200 {
        very_deep.push_str("{\"a\":");
    }
    very_deep.push('1');
    very_deep.push_str(&"}".repeat(200));
    let body = format!(r#"{{"id":"d","type":"t","data":{very_deep}}}"#);
    let (s, b) = app
        .post_raw("/events", Some("application/json"), body.into_bytes())
        .await;
    expect(s, &b, 400, "ValidationError");

    let (s, b) = app.post("/events", &json!({"type": "t", "data": {}})).await;
    expect(s, &b, 400, "ValidationError");
    assert_eq!(b["details"][0]["path"], "id");
    let (s, b) = app
        .post(
            "/events",
            &json!({"id": "x".repeat(256), "type": "", "data": []}),
        )
        .await;
    expect(s, &b, 400, "ValidationError");
    let paths: Vec<&str> = b["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["id", "type", "data"]);
    let (s, b) = app.post("/events", &json!([1, 2])).await;
    expect(s, &b, 400, "ValidationError");

    for path in [
        "/events/abc",
        "/events/0",
        "/events/-1",
        "/events/1.5",
        "/events/abc/attempts",
    ] {
        let (s, b) = app.get_json(path).await;
        expect(s, &b, 400, "ValidationError");
    }
    let (s, b) = app.get_json("/events/999999").await;
    expect(s, &b, 404, "NotFoundError");
    let (s, b) = app.get_json("/events/999999/attempts").await;
    expect(s, &b, 404, "NotFoundError");
    for query in [
        "start_date=yesterday",
        "end_date=2026-13-01",
        "start_date=2026-02-01&end_date=2026-01-01",
        "state=done",
        "limit=0",
        "limit=501",
        "limit=ten",
        "offset=-1",
    ] {
        let (s, b) = app.get_json(&format!("/events?{query}")).await;
        expect(s, &b, 400, "ValidationError");
        assert!(
            b["details"].as_array().is_some_and(|d| !d.is_empty()),
            "{query}: {b}"
        );
    }
    let (s, b) = app.get_json("/events/stats?start_date=nope").await;
    expect(s, &b, 400, "ValidationError");
    let (s, b) = app.get_json("/no/such/route").await;
    expect(s, &b, 404, "NotFoundError");

    // Nothing above stored anything.
    let (_, stats) = app.get_json("/events/stats").await;
    assert_eq!(stats["total"], 0);
    app.stop().await;
}

story!(a_batch_answers_per_item);
async fn a_batch_answers_per_item(app: TestApp) {
    app.post(
        "/events",
        &json!({"id": "old", "type": "t", "data": {"v": 1}}),
    )
    .await;
    let batch = json!({"events": [
        {"id": "new-1", "type": "t", "data": {"v": 1}},
        {"id": "old", "type": "t", "data": {"v": 1}},
        {"id": "old", "type": "t", "data": {"v": 2}},
        {"id": "", "type": "t", "data": {}},
        {"id": "new-1", "type": "t", "data": {"v": 1}},
        {"id": "new-2", "type": "t", "data": {"v": 2}},
        {"id": "new-2", "type": "t", "data": {"v": 3}},
    ]});
    let (status, body) = app.post("/events/batch", &batch).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "created",
            "duplicate",
            "conflict",
            "invalid",
            "duplicate",
            "created",
            "conflict"
        ]
    );
    for (index, result) in results.iter().enumerate() {
        assert_eq!(result["index"], index);
    }
    assert_eq!(results[3]["error"]["error"], "ValidationError");
    assert_eq!(results[3]["error"]["details"][0]["path"], "events[3].id");
    assert_eq!(results[2]["error"]["error"], "ConflictError");
    assert_eq!(results[1]["event"]["received_count"], 2);
    assert_eq!(results[4]["event"]["id"], results[0]["event"]["id"]);

    let (_, old) = app.get_json("/events?external_id=old").await;
    assert_eq!(old["data"][0]["received_count"], 2);
    let (_, new1) = app.get_json("/events?external_id=new-1").await;
    assert_eq!(new1["data"][0]["received_count"], 2);
    let (_, new2) = app.get_json("/events?external_id=new-2").await;
    assert_eq!(new2["data"][0]["payload"], json!({"v": 2}));

    for bad in [
        json!({"events": []}),
        json!({"events": "x"}),
        json!({}),
        json!({"events": vec![json!({}); 1001]}),
    ] {
        let (status, body) = app.post("/events/batch", &bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "ValidationError");
    }
    app.stop().await;
}

story!(listings_filter_and_page_newest_first);
async fn listings_filter_and_page_newest_first(app: TestApp) {
    for i in 0..7 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        let (status, _) = app
            .post(
                "/events",
                &json!({"id": format!("ev-{i}"), "type": kind, "data": {"i": i}}),
            )
            .await;
        assert_eq!(status, 201);
    }
    app.wait_for_processed(7).await;
    let (_, all) = app.get_json("/events").await;
    assert_eq!(all["count"], 7);
    assert_eq!(all["limit"], 50);
    assert_eq!(all["offset"], 0);
    let order: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["ev-6", "ev-5", "ev-4", "ev-3", "ev-2", "ev-1", "ev-0"]
    );

    let (_, page) = app.get_json("/events?limit=3&offset=3").await;
    let order: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["ev-3", "ev-2", "ev-1"]);
    assert_eq!(page["count"], 3);

    let (_, even) = app.get_json("/events?type=even").await;
    assert_eq!(even["count"], 4);
    let (_, processed) = app.get_json("/events?state=processed&type=odd").await;
    assert_eq!(processed["count"], 3);
    let (_, pending) = app.get_json("/events?state=pending").await;
    assert_eq!(pending["count"], 0);
    let (_, one) = app.get_json("/events?external_id=ev-4").await;
    assert_eq!(one["data"][0]["payload"]["i"], 4);

    let today = chrono::Utc::now().date_naive();
    let (_, today_events) = app
        .get_json(&format!("/events?start_date={today}&end_date={today}"))
        .await;
    assert_eq!(
        today_events["count"], 7,
        "a date-only end_date covers the whole day"
    );
    let tomorrow = today.succ_opt().unwrap();
    let (_, future) = app
        .get_json(&format!("/events?start_date={tomorrow}"))
        .await;
    assert_eq!(future["count"], 0);
    let (_, past) = app.get_json("/events?end_date=2000-01-01T00:00:00Z").await;
    assert_eq!(past["count"], 0);

    let (_, stats) = app.get_json("/events/stats?type=odd").await;
    assert_eq!(
        stats,
        json!({"total": 3, "pending": 0, "processing": 0, "processed": 3, "failed": 0, "failed_last_24h": 0, "retrying": 0})
    );
    let (_, stats) = app
        .get_json(&format!("/events/stats?start_date={tomorrow}"))
        .await;
    assert_eq!(stats["total"], 0);

    let id = one["data"][0]["id"].as_i64().unwrap();
    let (status, attempts) = app
        .get_json(&format!("/events/{id}/attempts?limit=1"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(attempts["count"], 1);
    assert_eq!(attempts["limit"], 1);
    assert_eq!(attempts["data"][0]["status"], "success");
    assert_eq!(attempts["data"][0]["rule_executions"], json!([]));
    app.stop().await;
}
