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

    // Filters reach the database as text: U+0000 in them is a 400 too.
    for path in [
        "/events?type=a%00b",
        "/events/stats?type=a%00b",
        "/events?external_id=%00",
        "/rules?event_type=y%07%00",
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, body) = app
        .post(
            "/events/replay-batch",
            &json!({"filter": {"type": "a\u{0}"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        app.get("/console/rules?event_type=a%00").await.status(),
        400
    );

    // Numbers that the database hands back as long exact decimals (PostgreSQL's jsonb writes
    // 1.6e-223 as 0.000…016) are stored, processed and listed like any other.
    create_rule(&app, "tiny", "tiny", json!(true), json!({"type": "noop"})).await;
    let data = json!({"x": 1.610_593_236_679_720_9e-223, "m": f64::MAX});
    let id = post_event(&app, "tiny-1", "tiny", data).await;
    app.wait_for_state(id, &["processed"]).await;
    let (status, page) = app.get_json("/events?type=tiny").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"][0]["payload"]["m"], json!(f64::MAX), "{page}");
}

story!(another_sites_pages_cannot_write_rebind_or_listen);
async fn another_sites_pages_cannot_write_rebind_or_listen(app: TestApp) {
    create_rule(&app, "log", "t", json!(true), json!({"type": "log"})).await;
    let id = post_event(&app, "cs-1", "t", json!({})).await;
    app.wait_for_state(id, &["processed"]).await;

    // A body-less form post from a page on another site (what a hidden <form> sends).
    for path in [
        format!("/events/{id}/replay"),
        "/events/requeue-stuck".to_owned(),
    ] {
        let response = app
            .client
            .post(app.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", "http://evil.example")
            .header("sec-fetch-site", "cross-site")
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "Forbidden", "{body}");
        // Even without the browser's headers, a form content type is not JSON.
        let response = app
            .client
            .post(app.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{path}");
    }
    let event = app.get_json(&format!("/events/{id}")).await.1;
    assert_eq!(event["state"], "processed", "no replay was queued: {event}");
    assert!(event["replayed_at"].is_null(), "{event}");

    // DNS rebinding: a name that is not this server's.
    let response = app
        .client
        .get(app.url("/events"))
        .header("host", format!("evil.example:{}", app.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Forbidden", "{body}");

    // A WebSocket opened by another site's page.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws", app.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!(
            "a foreign origin upgraded: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }

    // Same-origin and non-browser clients are unaffected, and answers say not to sniff or frame.
    let response = app
        .client
        .post(app.url(&format!("/events/{id}/replay")))
        .header("origin", format!("http://127.0.0.1:{}", app.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
}

story!(
    websockets_are_capped_and_take_only_small_messages,
    "--ws-max-connections",
    "2"
);
async fn websockets_are_capped_and_take_only_small_messages(app: TestApp) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/ws", app.addr);
    let (mut first, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let (_second, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!(
            "a third connection was accepted: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // A 64 KiB message (the library's default would take 64 MiB) ends the connection.
    let _ = first
        .send(Message::Text("x".repeat(64 * 1024).into()))
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match first.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an oversized message was accepted");
    // Its seat is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(error) => panic!("the freed seat was not given back: {error}"),
        }
    }
}

story!(
    a_half_sent_request_is_dropped_after_the_header_timeout,
    "--header-timeout-secs",
    "1"
);
async fn a_half_sent_request_is_dropped_after_the_header_timeout(app: TestApp) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buffer = [0u8; 1024];
    // Closed by the server (EOF or a 408) within a few seconds, not held open.
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buffer)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => {
            let text = String::from_utf8_lossy(&buffer[..n]);
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        }
        Err(_) => panic!("a half-sent request was still open after 5 s"),
    }
    // Everyone else is served.
    assert_eq!(app.get("/health").await.status(), 200);
}

/// An event whose payload is about 900 KB.
fn large_event(i: usize) -> Value {
    json!({"id": format!("big-{i}"), "type": "big.t", "data": {"i": i, "blob": "x".repeat(900_000)}})
}

story!(listings_of_large_events_are_bounded_in_bytes_and_continue_by_cursor);
async fn listings_of_large_events_are_bounded_in_bytes_and_continue_by_cursor(app: TestApp) {
    for i in 0..12 {
        let (status, body) = app.post("/events", &large_event(i)).await;
        assert_eq!(status, 201, "{body}");
    }
    // A page asks for 500; it holds what fits in ~4 MiB, and its cursor continues.
    let mut seen = Vec::new();
    let mut path = "/events?type=big.t&limit=500".to_owned();
    loop {
        let response = app.get(&path).await;
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        assert!(
            bytes.len() < 5 * 1024 * 1024,
            "a page of {} bytes",
            bytes.len()
        );
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        let data = page["data"].as_array().unwrap();
        assert!(
            !data.is_empty() && data.len() <= 4,
            "{} events in a page",
            data.len()
        );
        assert_eq!(page["count"], data.len());
        seen.extend(
            data.iter()
                .map(|e| e["external_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/events?type=big.t&limit=500&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..12).rev().map(|i| format!("big-{i}")).collect();
    assert_eq!(seen, expected, "every event once, newest first");

    // A test over the last 1000 of them answers, with its quoted data bounded too.
    let response = app
        .post_json(
            "/rules/test",
            &json!({"condition": {">=": [{"var": "i"}, 0]}, "event_type": "big.t", "last": 1000}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    assert!(
        bytes.len() < 2 * 1024 * 1024,
        "a test answer of {} bytes",
        bytes.len()
    );
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(answer["checked"], 12, "{}", answer["checked"]);
    assert_eq!(answer["matched"], 12);

    let (status, body) = app.get_json("/events?cursor=not-a-cursor").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["path"], "cursor");
}

story!(a_cursor_walks_a_listing_page_by_page);
async fn a_cursor_walks_a_listing_page_by_page(app: TestApp) {
    for i in 0..5 {
        post_event(&app, &format!("c-{i}"), "walk", json!({"i": i})).await;
    }
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    let mut path = "/events?type=walk&limit=2".to_owned();
    loop {
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().unwrap();
        sizes.push(data.len());
        seen.extend(
            data.iter()
                .map(|e| e["external_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/events?type=walk&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    let (_, first) = app.get_json("/events?type=walk&limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, body) = app
        .get_json(&format!("/events?type=walk&cursor={cursor}&offset=2"))
        .await;
    assert_eq!(
        status, 400,
        "a cursor with an offset would skip events: {body}"
    );
    assert_eq!(seen, ["c-4", "c-3", "c-2", "c-1", "c-0"]);
}

// A check whose cost (schema parts with references followed × values in the event) is past
// the inline limit runs on the blocking pool and reports only its first violation, instead
// of evaluating and keeping every failing branch of every value.
story!(a_costly_schema_check_reports_its_first_violation_and_holds_up_nothing);
async fn a_costly_schema_check_reports_its_first_violation_and_holds_up_nothing(app: TestApp) {
    // Nearly as large as a schema may be with its references followed: 80 references to 100
    // alternatives, 8,000 tries for every item of `xs` (none matches), over 5,000 items.
    let branches: Vec<Value> = (1..=100).map(|k| json!({"maximum": -k})).collect();
    let refs: Vec<Value> = (0..80).map(|_| json!({"$ref": "#/$defs/b"})).collect();
    let schema = json!({
        "$defs": {"b": {"anyOf": branches}},
        "properties": {"xs": {"items": {"anyOf": refs}}}
    });
    let (status, body) = app
        .put("/event-types/heavy", &json!({"schema": schema}))
        .await;
    assert_eq!(status, 200, "{body}");

    let app = Arc::new(app);
    let stop = Arc::new(AtomicBool::new(false));
    let health = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move { watch_health(&app, stop).await })
    };
    let xs: Vec<Value> = (0..5_000).map(|_| json!(1)).collect();
    let posts: Vec<_> = (0..2)
        .map(|i| {
            let (app, xs) = (app.clone(), xs.clone());
            tokio::spawn(async move {
                app.post(
                    "/events",
                    &json!({"id": format!("heavy-{i}"), "type": "heavy", "data": {"xs": xs}}),
                )
                .await
            })
        })
        .collect();
    for post in posts {
        let (status, body) = post.await.unwrap();
        assert_eq!(status, 400, "{body}");
        // The first violation, and a word that the others are not listed.
        assert_eq!(body["details"].as_array().unwrap().len(), 2, "{body}");
        assert_eq!(body["details"][0]["path"], "/xs/0", "{body}");
    }
    stop.store(true, Ordering::Relaxed);
    let slowest = health.await.unwrap();
    assert!(
        slowest < Duration::from_secs(1),
        "/health took {slowest:?} while costly schemas were checked"
    );
}
