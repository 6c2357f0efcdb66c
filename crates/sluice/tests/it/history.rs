//! History at scale: stats from the counts the database keeps (exact at any date range, after
//! roll-ups), listings by state through their own index, and retention.

use crate::helpers::TestApp;
use crate::processing::{create_rule, post_event};
use crate::story;
use crate::workers::Sql;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Value};

/// A rule whose evaluation exhausts its budget: its events fail at once, without retries.
fn failing_condition() -> Value {
    json!({"reduce": [(1..=30).collect::<Vec<i32>>(), {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]}, [1]]})
}

/// Every event, newest first, walked page by page.
async fn all_events(app: &TestApp, query: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut path = format!("/events?limit=3{query}");
    loop {
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        events.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/events?limit=3{query}&cursor={cursor}"),
            None => return events,
        }
    }
}

fn at(event: &Value, field: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(event[field].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

/// A date filter's bound, if set.
type Bound = Option<DateTime<Utc>>;

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What `/events/stats` must say about `events` (the ones the filter selects), counted here.
fn expected_stats(events: &[&Value], now: DateTime<Utc>) -> Value {
    let count = |state: &str| events.iter().filter(|e| e["state"] == state).count();
    let recent = events
        .iter()
        .filter(|e| e["state"] == "failed" && at(e, "updated_at") >= now - Duration::hours(24))
        .count();
    json!({
        "total": events.len(),
        "pending": count("pending"),
        "processing": count("processing"),
        "processed": count("processed"),
        "failed": count("failed"),
        "failed_last_24h": recent,
        "retrying": events.iter().filter(|e| e["state"] == "pending" && e["attempts"].as_i64() > Some(0)).count(),
    })
}

/// `/events/stats` with a type (if any) and date parameters says what counting `selected` says.
async fn assert_stats(
    app: &TestApp,
    selected: &[&Value],
    event_type: Option<&str>,
    dates: &str,
    now: DateTime<Utc>,
) {
    let type_query = event_type.map(|t| format!("&type={t}")).unwrap_or_default();
    let (status, stats) = app
        .get_json(&format!("/events/stats?x=1{type_query}{dates}"))
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        stats,
        expected_stats(selected, now),
        "stats for type {event_type:?}, dates {dates:?}"
    );
}

story!(stats_from_kept_counts_agree_with_the_events_at_any_dates);
async fn stats_from_kept_counts_agree_with_the_events_at_any_dates(app: TestApp) {
    create_rule(
        &app,
        "bomb",
        "t.fail",
        failing_condition(),
        json!({"type": "noop"}),
    )
    .await;
    create_rule(&app, "fine", "t.ok", json!(true), json!({"type": "noop"})).await;
    for i in 0..12 {
        post_event(&app, &format!("ok-{i}"), "t.ok", json!({"i": i})).await;
    }
    for i in 0..6 {
        post_event(&app, &format!("fail-{i}"), "t.fail", json!({"i": i})).await;
    }
    app.wait_for_stats(|s| s["processed"] == 12 && s["failed"] == 6)
        .await;

    // Some arrived three hours ago (counted by a minute that is then rolled up into its hour),
    // some thirty (and failed then: no longer "in the last 24 h").
    let sql = Sql::connect(app.db, &app.database_url).await;
    sql.backdate("external_id IN ('ok-0', 'ok-1', 'ok-2', 'fail-0')", 3)
        .await;
    sql.backdate("external_id IN ('ok-3', 'fail-1', 'fail-2')", 30)
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sql
        .number("SELECT count(*) FROM event_counts WHERE bucket_minutes = 60")
        .await
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "old minutes were never rolled up into hours"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let events = all_events(&app, "").await;
    assert_eq!(events.len(), 18);
    let now = Utc::now();
    let today = now.format("%Y-%m-%d").to_string();
    // Bounds inside hours (counted event by event at the edges), whole days, and ranges
    // shorter than an hour.
    let ranges: Vec<(Bound, Bound, String)> = vec![
        (None, None, String::new()),
        (
            Some(now - Duration::minutes(200)),
            None,
            format!("&start_date={}", stamp(now - Duration::minutes(200))),
        ),
        (
            None,
            Some(now - Duration::minutes(150)),
            format!("&end_date={}", stamp(now - Duration::minutes(150))),
        ),
        (
            Some(now - Duration::hours(31)),
            Some(now - Duration::minutes(170)),
            format!(
                "&start_date={}&end_date={}",
                stamp(now - Duration::hours(31)),
                stamp(now - Duration::minutes(170))
            ),
        ),
        (
            Some(now - Duration::minutes(190)),
            Some(now - Duration::minutes(170)),
            format!(
                "&start_date={}&end_date={}",
                stamp(now - Duration::minutes(190)),
                stamp(now - Duration::minutes(170))
            ),
        ),
        (
            Some(
                DateTime::parse_from_rfc3339(&format!("{today}T00:00:00Z"))
                    .unwrap()
                    .with_timezone(&Utc),
            ),
            None,
            format!("&start_date={today}"),
        ),
    ];
    for event_type in [None, Some("t.ok"), Some("t.fail")] {
        for (start, end, dates) in &ranges {
            let selected: Vec<&Value> = events
                .iter()
                .filter(|e| event_type.is_none_or(|t| e["type"] == t))
                .filter(|e| start.is_none_or(|s| at(e, "created_at") >= s))
                .filter(|e| end.is_none_or(|s| at(e, "created_at") <= s))
                .collect();
            assert_stats(&app, &selected, event_type, dates, now).await;
        }
    }

    // Failures are listed through their own index, by type and dates, page by page.
    let mut failed: Vec<&Value> = events.iter().filter(|e| e["state"] == "failed").collect();
    failed.sort_by_key(|e| std::cmp::Reverse((at(e, "created_at"), e["id"].as_i64())));
    let ids = |events: &[&Value]| {
        events
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    let listed = all_events(&app, "&state=failed&type=t.fail").await;
    assert_eq!(
        listed
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids(&failed)
    );
    let since = now - Duration::hours(4);
    let recent: Vec<&Value> = failed
        .iter()
        .copied()
        .filter(|e| at(e, "created_at") >= since)
        .collect();
    let listed = all_events(&app, &format!("&state=failed&start_date={}", stamp(since))).await;
    assert_eq!(
        listed
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        ids(&recent)
    );

    // A replay by filter takes the same page: the failures of that type, however old.
    let (status, body) = app
        .post(
            "/events/replay-batch",
            &json!({"filter": {"state": "failed", "type": "t.fail"}, "limit": 100}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], 6, "{body}");
    app.stop().await;
}

story!(
    retention_deletes_settled_events_past_it_and_nothing_else,
    "--retention",
    "1h",
    "--exclude-event-types",
    "held.*"
);
async fn retention_deletes_settled_events_past_it_and_nothing_else(app: TestApp) {
    create_rule(&app, "fine", "t.ok", json!(true), json!({"type": "noop"})).await;
    create_rule(
        &app,
        "bomb",
        "t.fail",
        failing_condition(),
        json!({"type": "noop"}),
    )
    .await;
    let mut old = Vec::new();
    for i in 0..20 {
        old.push(post_event(&app, &format!("ok-{i}"), "t.ok", json!({"i": i})).await);
    }
    old.push(post_event(&app, "fail-0", "t.fail", json!({})).await);
    // Never claimed by this worker: pending however old they get.
    let held = post_event(&app, "held-0", "held.x", json!({})).await;
    app.wait_for_stats(|s| s["processed"] == 20 && s["failed"] == 1)
        .await;
    let recent = post_event(&app, "ok-recent", "t.ok", json!({})).await;
    app.wait_for_state(recent, &["processed"]).await;

    let sql = Sql::connect(app.db, &app.database_url).await;
    sql.backdate("external_id <> 'ok-recent'", 2).await;
    let stats = app.wait_for_stats(|s| s["total"] == 2).await;
    assert_eq!(stats["pending"], 1, "{stats}");
    assert_eq!(stats["processed"], 1, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");

    for id in &old {
        let (status, _) = app.get_json(&format!("/events/{id}")).await;
        assert_eq!(status, 404, "event {id} outlived the retention");
    }
    assert_eq!(
        app.wait_for_state(held, &["pending"]).await["state"],
        "pending"
    );
    assert_eq!(
        app.wait_for_state(recent, &["processed"]).await["state"],
        "processed"
    );
    assert_eq!(app.attempts(recent).await.len(), 1);
    // Their attempts and rule executions went with them.
    let in_list = old
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    assert_eq!(
        sql.number(&format!(
            "SELECT count(*) FROM event_attempts WHERE event_id IN ({in_list})"
        ))
        .await,
        0
    );
    assert_eq!(
        sql.number(&format!(
            "SELECT count(*) FROM rule_executions WHERE event_id IN ({in_list})"
        ))
        .await,
        0
    );
    let (status, listed) = app.get_json("/events?state=failed").await;
    assert_eq!((status, listed["count"].clone()), (200, json!(0)));

    // Past the retention an id is new again.
    let (status, again) = app
        .post(
            "/events",
            &json!({"id": "ok-0", "type": "t.ok", "data": {"i": 0}}),
        )
        .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["duplicate"], false);
    assert!(!old.contains(&again["id"].as_i64().unwrap()));

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let deleted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sluice_retention_deleted_total "))
        .expect("the retention metric is exported")
        .parse()
        .unwrap();
    assert!(deleted >= 21.0, "{deleted}");
    let overview = app.get("/console").await.text().await.unwrap();
    assert!(
        overview.contains("deleted 1 h after their last change"),
        "the console does not show the retention"
    );
    app.stop().await;
}

/// Every page of a listing, following `next_cursor` from `path` (which has a `?`).
async fn walk(app: &TestApp, path: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut next = path.to_owned();
    loop {
        let (status, page) = app.get_json(&next).await;
        assert_eq!(status, 200, "{next}: {page}");
        rows.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{path}&cursor={cursor}"),
            None => return rows,
        }
    }
}

story!(rules_and_attempts_continue_by_cursor);
async fn rules_and_attempts_continue_by_cursor(app: TestApp) {
    let mut rules = Vec::new();
    for i in 0..5 {
        rules.push(
            create_rule(
                &app,
                &format!("r{i}"),
                "t",
                json!(true),
                json!({"type": "noop"}),
            )
            .await,
        );
    }
    rules.reverse();
    let listed = walk(&app, "/rules?limit=2").await;
    assert_eq!(
        listed
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        rules
    );
    let (_, last) = app.get_json("/rules?limit=5").await;
    assert_eq!(last["next_cursor"], Value::Null, "a full last page says so");

    let id = post_event(&app, "e", "t", json!({})).await;
    app.wait_for_state(id, &["processed"]).await;
    for replays in 1..=3 {
        let (status, body) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
        assert_eq!(status, 200, "{body}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while app.attempts(id).await.len() <= replays
            || app.wait_for_state(id, &["processed"]).await["state"] != "processed"
        {
            assert!(
                std::time::Instant::now() < deadline,
                "replay {replays} never ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let attempts = walk(&app, &format!("/events/{id}/attempts?limit=1")).await;
    let numbers: Vec<i64> = attempts
        .iter()
        .map(|a| a["attempt_no"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [4, 3, 2, 1]);
    assert!(attempts
        .iter()
        .all(|a| a["rule_executions"].as_array().unwrap().len() == 5));

    for bad in [
        "/rules?cursor=abc",
        "/rules?cursor=0",
        &format!("/events/{id}/attempts?cursor=x"),
    ] {
        let (status, body) = app.get_json(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["details"][0]["path"], "cursor", "{body}");
    }
    let (status, body) = app.get_json("/rules?cursor=3&offset=1").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["path"], "offset");
    app.stop().await;
}

story!(
    stats_count_unsettled_events_exactly,
    "--exclude-event-types",
    "held.*",
    "--webhook-allow-private",
    "true",
    "--retry-backoff-ms",
    "60000,60000",
    "--max-attempts",
    "3"
);
async fn stats_count_unsettled_events_exactly(app: TestApp) {
    // Pending (never claimed here), processing (a receiver that answers after 30 s, past the
    // test), retrying (a receiver that fails; the retry is a minute away) and processed.
    let hanging = crate::receiver::Receiver::start(200, 30_000).await;
    let failing = crate::receiver::Receiver::start(500, 0).await;
    create_rule(
        &app,
        "hang",
        "t.hang",
        json!(true),
        crate::processing::webhook(&hanging.url),
    )
    .await;
    create_rule(
        &app,
        "fail",
        "t.retry",
        json!(true),
        crate::processing::webhook(&failing.url),
    )
    .await;
    create_rule(&app, "fine", "t.ok", json!(true), json!({"type": "noop"})).await;
    for (prefix, event_type, count) in [
        ("held", "held.x", 3),
        ("hang", "t.hang", 2),
        ("retry", "t.retry", 2),
        ("ok", "t.ok", 4),
    ] {
        for i in 0..count {
            post_event(
                &app,
                &format!("{prefix}-{i}"),
                event_type,
                json!({"amount": i}),
            )
            .await;
        }
    }
    app.wait_for_stats(|s| s["processing"] == 2 && s["retrying"] == 2 && s["processed"] == 4)
        .await;

    let events = all_events(&app, "").await;
    let now = Utc::now();
    let an_hour_ago = now - Duration::minutes(61);
    for (event_type, dates) in [
        (None, String::new()),
        (Some("t.hang"), String::new()),
        (Some("t.retry"), String::new()),
        (None, format!("&start_date={}", stamp(an_hour_ago))),
        (
            Some("t.hang"),
            format!("&start_date={}", stamp(an_hour_ago)),
        ),
    ] {
        let selected: Vec<&Value> = events
            .iter()
            .filter(|e| event_type.is_none_or(|t| e["type"] == t))
            .collect();
        assert_stats(&app, &selected, event_type, &dates, now).await;
    }
    let (_, stats) = app.get_json("/events/stats").await;
    assert_eq!(
        (
            stats["pending"].as_i64(),
            stats["processing"].as_i64(),
            stats["total"].as_i64()
        ),
        (Some(5), Some(2), Some(11)),
        "{stats}"
    );
    // Not stopped gracefully: that would wait for the hanging receiver.
}
