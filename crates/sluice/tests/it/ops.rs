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
    every_family_has_help_and_type(&text);

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
    // The action types a client may send are listed from the one definition of them.
    let schemas = &spec["components"]["schemas"];
    let action_type = &schemas["ActionIn"]["properties"]["type"];
    let action_type = match action_type["$ref"].as_str() {
        Some(reference) => &schemas[reference.trim_start_matches("#/components/schemas/")],
        None => action_type,
    };
    let listed: Vec<&str> = action_type["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("no enum of action types: {action_type}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let kinds: Vec<&str> = sluice_core::action::ActionKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(listed, kinds);
    app.stop().await;
}

/// A database with history, made by the migrations before delivery isolation (which rebuilds
/// two tables on SQLite), upgrades in place when a new sluice starts on it: every row kept,
/// the foreign keys whole, the old events replayable and a pending one processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_history_upgrades_in_place() {
    use crate::helpers::{fresh_database, start_on, Db};
    use sqlx::migrate::Migrator;
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(database) = fresh_database(db).await else {
            continue;
        };
        let folder = match db {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
        };
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../sluice-store/migrations")
            .join(folder);
        let mut migrator = Migrator::new(dir.as_path()).await.unwrap();
        migrator.migrations = migrator
            .migrations
            .iter()
            .filter(|m| m.version <= 3)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        let history = [
            "INSERT INTO rules (id, name, event_type, active, created_at, updated_at) \
             VALUES (1, 'old rule', 't', TRUE, 0, 0)",
            "INSERT INTO rule_versions (id, rule_id, version, condition, action, action_hash, created_at) \
             VALUES (1, 1, 1, 'true', '{\"type\":\"noop\"}', 'h', 0)",
            "UPDATE rules SET current_version_id = 1 WHERE id = 1",
            "INSERT INTO events (id, external_id, type, payload, payload_hash, state, attempts, \
             run_attempts, next_attempt_at, created_at, updated_at, processed_at) \
             VALUES (1, 'old-1', 't', '{}', 'p', 'processed', 1, 1, NULL, 0, 0, 0)",
            "INSERT INTO events (id, external_id, type, payload, payload_hash, state, \
             created_at, updated_at, next_attempt_at) \
             VALUES (2, 'old-2', 't', '{}', 'p2', 'pending', 0, 0, 0)",
            "INSERT INTO event_attempts (id, event_id, attempt_no, trigger, status, started_at, \
             finished_at, duration_ms) VALUES (1, 1, 1, 'initial', 'success', 0, 0, 1)",
            "INSERT INTO rule_executions (id, attempt_id, event_id, rule_id, rule_version_id, result, \
             executed_at) VALUES (1, 1, 1, 1, 1, 'applied', 0)",
        ];
        match db {
            Db::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", database.url))
                    .await
                    .unwrap();
                migrator.run(&pool).await.unwrap();
                for sql in history {
                    sqlx::query(sql).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
            Db::Postgres => {
                let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                for sql in history {
                    // PostgreSQL wants real timestamps and JSON.
                    let sql = sql
                        .replace(", 0, 0, 0)", ", now(), now(), now())")
                        .replace(", 0, 0)", ", now(), now())")
                        .replace(", 0, 0, 1)", ", now(), now(), 1)")
                        .replace("'applied', 0)", "'applied', now())")
                        .replace("'h', 0)", "'h', now())");
                    sqlx::query(&sql).execute(&pool).await.unwrap();
                }
                let _ = sqlx::query("SELECT setval('events_id_seq', 10)")
                    .execute(&pool)
                    .await;
                let _ = sqlx::query("SELECT setval('event_attempts_id_seq', 10)")
                    .execute(&pool)
                    .await;
                let _ = sqlx::query("SELECT setval('rule_executions_id_seq', 10)")
                    .execute(&pool)
                    .await;
                let _ = sqlx::query("SELECT setval('rules_id_seq', 10)")
                    .execute(&pool)
                    .await;
                let _ = sqlx::query("SELECT setval('rule_versions_id_seq', 10)")
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }

        let app = start_on(db, &database.url, &[]).await;
        // An event still pending at the upgrade is queued by the migration and processed.
        let waiting = app.wait_for_state(2, &["processed"]).await;
        assert_eq!(waiting["attempts"], 1, "{waiting}");
        let attempts = app.attempts(1).await;
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(attempts[0]["rule_executions"][0]["result"], "applied");
        let (status, body) = app.post("/events/1/replay", &serde_json::json!({})).await;
        assert_eq!(status, 200, "{body}");
        app.wait_for_state(1, &["processed"]).await;
        let attempts = app.attempts(1).await;
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        app.stop().await;
    }
}

/// What `promtool check metrics` asks first: each family a sample belongs to has `# HELP`
/// and `# TYPE` lines, counters end in `_total`, and each is written once.
fn every_family_has_help_and_type(text: &str) {
    use std::collections::BTreeMap;
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut helps: BTreeMap<&str, &str> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                assert!(types.insert(name, kind).is_none(), "{name} typed twice");
            }
            (Some("#"), Some("HELP"), Some(name), help) => {
                let help = help.unwrap_or_default();
                assert!(!help.trim().is_empty(), "{name} has empty help");
                assert!(helps.insert(name, help).is_none(), "{name} helped twice");
            }
            (Some("#"), ..) => {}
            (Some(sample), ..) => samples.push(sample.split('{').next().unwrap_or(sample)),
            _ => {}
        }
    }
    assert!(!samples.is_empty(), "{text}");
    for sample in samples {
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .filter_map(|suffix| sample.strip_suffix(suffix))
            .find(|base| {
                types
                    .get(base)
                    .is_some_and(|kind| matches!(*kind, "summary" | "histogram"))
            })
            .unwrap_or(sample);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("{family} has no # TYPE:\n{text}"));
        assert!(
            helps.contains_key(family),
            "{family} has no # HELP:\n{text}"
        );
        if *kind == "counter" {
            assert!(
                family.ends_with("_total"),
                "counter {family} must end in _total"
            );
        }
    }
}

/// Every metric the code records is described (so it gets its `# HELP`): each name in a
/// `metrics::counter!`/`gauge!`/`histogram!` call appears in `telemetry.rs`'s table.
#[test]
fn every_recorded_metric_is_described() {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let telemetry = std::fs::read_to_string(src.join("telemetry.rs")).unwrap();
    let mut recorded = 0;
    for file in files {
        let code = std::fs::read_to_string(&file).unwrap();
        for call in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in code.match_indices(&format!("metrics::{call}")) {
                let rest = code[at + "metrics::".len() + call.len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let name = &rest[..rest.find('"').unwrap()];
                recorded += 1;
                assert!(
                    telemetry.contains(&format!("(\"{name}\", Kind::")),
                    "{name} (recorded in {}) has no help text in telemetry.rs",
                    file.display()
                );
            }
        }
    }
    assert!(recorded > 20, "found only {recorded} metrics");
}
