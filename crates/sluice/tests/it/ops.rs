//! Operations endpoints and the OpenAPI document.

use crate::helpers::TestApp;
use crate::story;

story!(health_ready_and_metrics_answer);
async fn health_ready_and_metrics_answer(app: TestApp) {
    let (status, health) = app.get_json("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert!(health["timestamp"].is_string());

    let (status, ready) = app.get_json("/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        ready["database"],
        match app.db {
            crate::helpers::Db::Sqlite => "sqlite",
            crate::helpers::Db::Postgres => "postgres",
        }
    );

    app.post(
        "/events",
        &serde_json::json!({"id": "m", "type": "t", "data": {}}),
    )
    .await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(text.contains("sluice_http_requests_total"), "{text}");
    assert!(text.contains("sluice_events_ingested_total"), "{text}");

    let response = app.get("/health").await;
    assert!(response.headers().contains_key("x-request-id"));
    app.stop().await;
}

story!(the_openapi_document_covers_every_route);
async fn the_openapi_document_covers_every_route(app: TestApp) {
    let (status, spec) = app.get_json("/api-docs.json").await;
    assert_eq!(status, 200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let documented = [
        ("/events", "post"),
        ("/events", "get"),
        ("/events/batch", "post"),
        ("/events/stats", "get"),
        ("/events/{id}", "get"),
        ("/events/{id}/attempts", "get"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/events/{id}/replay", "post"),
        ("/events/replay-batch", "post"),
        ("/events/requeue-stuck", "post"),
        ("/rules", "post"),
        ("/rules", "get"),
        ("/rules/test", "post"),
        ("/rules/{id}", "get"),
        ("/rules/{id}", "put"),
        ("/rules/{id}", "delete"),
        ("/rules/{id}/versions", "get"),
        ("/ws", "get"),
    ];
    for (path, method) in documented {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing from the spec"
        );
    }
    app.stop().await;
}
