//! Delayed and scheduled events: stored at once, processed not before their time, through a
//! restart, in order per key, cancellable while they wait.

use crate::helpers::{fresh_database, start_on, Db, TestApp};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::time::Duration;

async fn noop_rule(app: &TestApp, event_type: &str) {
    let rule = json!({"name": format!("on {event_type}"), "event_type": event_type,
        "condition": true, "action": {"type": "noop"}});
    assert_eq!(app.post("/rules", &rule).await.0, 201);
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a time, got {value}"))
        .parse()
        .unwrap()
}

crate::story!(a_delayed_event_is_stored_at_once_and_processed_not_before_its_time);
async fn a_delayed_event_is_stored_at_once_and_processed_not_before_its_time(app: TestApp) {
    noop_rule(&app, "reminder").await;
    let (status, created) = app
        .post(
            "/events",
            &json!({"id": "r-1", "type": "reminder", "data": {}, "delay_ms": 1500}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let process_at = time(&created["process_at"]);
    assert!(process_at > time(&created["created_at"]), "{created}");

    // Committed and listed as scheduled, with its time; not processed yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, event) = app.get_json(&format!("/events/{id}")).await;
    assert_eq!(event["state"], "pending", "{event}");
    assert_eq!(event["attempts"], 0, "{event}");
    assert_eq!(time(&event["scheduled_for"]), process_at, "{event}");
    let (_, page) = app.get_json("/events?type=reminder").await;
    let listed = page.as_array().map_or(&page["data"], |_| &page);
    assert!(
        listed.to_string().contains("scheduled_for"),
        "the listing shows it scheduled: {page}"
    );

    let done = app.wait_for_state(id, &["processed"]).await;
    assert!(time(&done["processed_at"]) >= process_at, "{done}");
    assert!(done.get("scheduled_for").is_none(), "{done}");
    app.stop().await;
}

crate::story!(a_scheduled_event_can_be_cancelled_while_it_waits_and_not_after);
async fn a_scheduled_event_can_be_cancelled_while_it_waits_and_not_after(app: TestApp) {
    noop_rule(&app, "reminder").await;
    let at = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, created) = app
        .post(
            "/events",
            &json!({"id": "later", "type": "reminder", "data": {}, "process_at": at}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (status, cancelled) = app.post(&format!("/events/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["event"]["state"], "failed");
    assert!(cancelled["event"]["last_error"]
        .as_str()
        .unwrap()
        .contains("cancelled"));
    let (status, again) = app.post(&format!("/events/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 409, "{again}");
    assert_eq!(app.post("/events/999999/cancel", &json!({})).await.0, 404);

    // A processed event cannot be cancelled; a cancelled one can still be replayed.
    let (_, now) = app
        .post(
            "/events",
            &json!({"id": "now", "type": "reminder", "data": {}}),
        )
        .await;
    let now_id = now["id"].as_i64().unwrap();
    app.wait_for_state(now_id, &["processed"]).await;
    assert_eq!(
        app.post(&format!("/events/{now_id}/cancel"), &json!({}))
            .await
            .0,
        409
    );
    let (status, _) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
    assert_eq!(status, 200);
    app.wait_for_state(id, &["processed"]).await;

    // The console cancels too, from the event's page.
    let (_, console) = app
        .post(
            "/events",
            &json!({"id": "from-console", "type": "reminder", "data": {}, "delay_ms": 3_600_000}),
        )
        .await;
    let console_id = console["id"].as_i64().unwrap();
    let page = app
        .get(&format!("/console/events/{console_id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Cancel this event"), "{page}");
    let done =
        crate::console::post_form(&app, &format!("/console/events/{console_id}/cancel"), &[]).await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert!(done.location().ends_with("?cancelled=1"));
    let (_, event) = app.get_json(&format!("/events/{console_id}")).await;
    assert_eq!(event["state"], "failed", "{event}");
    let again =
        crate::console::post_form(&app, &format!("/console/events/{console_id}/cancel"), &[]).await;
    assert_eq!(again.status, 409);
    again.assert_contains("only a pending event that waits can be cancelled");
    app.stop().await;
}

crate::story!(scheduling_is_validated_and_a_key_waits_for_its_scheduled_event);
async fn scheduling_is_validated_and_a_key_waits_for_its_scheduled_event(app: TestApp) {
    for (body, path) in [
        (
            json!({"delay_ms": 10, "process_at": "2030-01-01T00:00:00Z"}),
            "delay_ms",
        ),
        (json!({"delay_ms": -1}), "delay_ms"),
        (json!({"delay_ms": 1.5}), "delay_ms"),
        (json!({"delay_ms": 400_u64 * 86_400_000}), "delay_ms"),
        (json!({"process_at": "tomorrow"}), "process_at"),
        (json!({"process_at": "2999-01-01T00:00:00Z"}), "process_at"),
    ] {
        let mut event = json!({"id": "bad", "type": "t", "data": {}});
        event
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        let (status, answer) = app.post("/events", &event).await;
        assert_eq!(status, 400, "{event}: {answer}");
        assert_eq!(answer["details"][0]["path"], path, "{answer}");
    }

    // The first event of a key is scheduled; the next one, due at once, waits behind it.
    noop_rule(&app, "step").await;
    let (_, first) = app
        .post(
            "/events",
            &json!({"id": "s-1", "type": "step", "data": {}, "ordering_key": "k", "delay_ms": 1200}),
        )
        .await;
    let (_, second) = app
        .post(
            "/events",
            &json!({"id": "s-2", "type": "step", "data": {}, "ordering_key": "k"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, waiting) = app.get_json(&format!("/events/{}", second["id"])).await;
    assert_eq!(waiting["state"], "pending", "{waiting}");
    let first = app
        .wait_for_state(first["id"].as_i64().unwrap(), &["processed"])
        .await;
    let second = app
        .wait_for_state(second["id"].as_i64().unwrap(), &["processed"])
        .await;
    assert!(time(&first["processed_at"]) <= time(&second["processed_at"]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_event_survives_a_restart_sqlite() {
    survives_a_restart(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_event_survives_a_restart_postgres() {
    survives_a_restart(Db::Postgres).await;
}

async fn survives_a_restart(db: Db) {
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let first = start_on(db, &database.url, &[]).await;
    noop_rule(&first, "reminder").await;
    let (status, created) = first
        .post(
            "/events",
            &json!({"id": "r-1", "type": "reminder", "data": {}, "delay_ms": 1500}),
        )
        .await;
    assert_eq!(status, 201);
    let id = created["id"].as_i64().unwrap();
    first.stop().await;
    let second = start_on(db, &database.url, &[]).await;
    let (_, event) = second.get_json(&format!("/events/{id}")).await;
    assert_eq!(event["state"], "pending", "{event}");
    second.wait_for_state(id, &["processed"]).await;
    second.stop().await;
}
