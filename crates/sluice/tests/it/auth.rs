//! Access control (`AUTH=api_key`): every route × every kind of credential, audit fields,
//! revocation across processes, the console's sessions, and no secret in the database.

use crate::helpers::{fresh_database, spawn_sibling, start_on, Answer, Db, Roles, TestApp};
use crate::story;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What a request carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Credential<'a> {
    None,
    Bearer(&'a str),
    Header(&'a str),
}

async fn call(
    app: &TestApp,
    method: &Method,
    path: &str,
    credential: Credential<'_>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.client.request(method.clone(), app.url(path));
    request = match credential {
        Credential::None => request,
        Credential::Bearer(key) => request.bearer_auth(key),
        Credential::Header(key) => request.header("x-api-key", key),
    };
    if matches!(*method, Method::POST | Method::PUT) {
        request = request.json(&json!({}));
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, body)
}

/// Every operation of the OpenAPI document with the scope it declares (`None`: open).
fn operations(spec: &Value) -> Vec<(Method, String, Option<String>)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (name, operation) in item.as_object().expect("path item") {
            let method = match name.as_str() {
                "get" => Method::GET,
                "post" => Method::POST,
                "put" => Method::PUT,
                "delete" => Method::DELETE,
                _ => continue,
            };
            let scope = operation["security"]
                .as_array()
                .expect("every operation states its security")
                .iter()
                .find_map(|r| r["bearer"].as_array().and_then(|s| s.first()))
                .and_then(Value::as_str)
                .map(str::to_owned);
            // A path id no row has: nothing is changed by an admin call.
            out.push((method, path.replace("{id}", "999999"), scope));
        }
    }
    out
}

/// An operation that lists both "no key" and a key: the request proves itself (an inbound
/// webhook, by its source's signature).
fn proves_itself(spec: &Value, method: &Method, path: &str) -> bool {
    let operation = &spec["paths"][path][method.as_str().to_lowercase()];
    let requirements = operation["security"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    requirements
        .iter()
        .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
        && requirements.iter().any(|r| r["bearer"].is_array())
}

fn covers(scopes: &[&str], needed: &str) -> bool {
    scopes.contains(&"admin") || scopes.contains(&needed)
}

story!(
    every_route_admits_exactly_the_keys_whose_scope_covers_it,
    "--auth",
    "api_key"
);
async fn every_route_admits_exactly_the_keys_whose_scope_covers_it(app: TestApp) {
    let admin = app.create_key("ops", &["admin"]).await;
    let ingest = app.create_key("producer", &["ingest"]).await;
    let read = app.create_key("dashboard", &["read"]).await;
    let both = app.create_key("both", &["ingest", "read"]).await;
    let revoked = app.create_key("gone", &["admin"]).await;
    let (status, _, keys) = call(&app, &Method::GET, "/api-keys", Credential::Bearer(&admin)).await;
    assert_eq!(status, 200);
    let gone = keys_named(&keys, "gone");
    let (status, _, _) = call(
        &app,
        &Method::DELETE,
        &format!("/api-keys/{gone}"),
        Credential::Header(&admin),
    )
    .await;
    assert_eq!(status, 200);
    let unknown = format!("sk_{}", "A".repeat(40));

    let (status, _, spec) = call(
        &app,
        &Method::GET,
        "/api-docs.json",
        Credential::Bearer(&read),
    )
    .await;
    assert_eq!(status, 200);
    let operations = operations(&spec);
    assert!(
        operations.len() >= 20,
        "the document lists every route: {}",
        operations.len()
    );
    let scoped: [(&str, &[&str]); 4] = [
        (&admin, &["admin"]),
        (&ingest, &["ingest"]),
        (&read, &["read"]),
        (&both, &["ingest", "read"]),
    ];
    for (method, path, needed) in &operations {
        if proves_itself(&spec, method, path) {
            // Its source's signature is the credential (or a key the source asks for): the
            // gate lets it through, and an unknown source is a 404 whatever the key.
            for credential in [Credential::None, Credential::Bearer(&unknown)] {
                let (status, _, body) = call(&app, method, path, credential).await;
                assert_eq!(status, 404, "{method} {path} ({credential:?}): {body}");
            }
            continue;
        }
        let Some(needed) = needed else {
            for credential in [
                Credential::None,
                Credential::Bearer(&unknown),
                Credential::Bearer(&revoked),
            ] {
                let (status, _, _) = call(&app, method, path, credential).await;
                assert_eq!(status, 200, "{method} {path} is open ({credential:?})");
            }
            continue;
        };
        for (credential, message) in [
            (Credential::None, "an API key is required"),
            (Credential::Bearer(&unknown), "unknown API key"),
            (Credential::Bearer("not-even-a-key"), "unknown API key"),
            (Credential::Header(&revoked), "revoked"),
        ] {
            let (status, headers, body) = call(&app, method, path, credential).await;
            assert_eq!(status, 401, "{method} {path} with {credential:?}: {body}");
            assert_eq!(body["error"], "Unauthorized");
            assert!(
                body["message"].as_str().unwrap().contains(message),
                "{body}"
            );
            assert_eq!(headers["www-authenticate"], "Bearer");
        }
        for (key, scopes) in scoped {
            for credential in [Credential::Bearer(key), Credential::Header(key)] {
                let (status, _, body) = call(&app, method, path, credential).await;
                if covers(scopes, needed) {
                    assert!(
                        status != 401 && status != 403,
                        "{method} {path} needs {needed}; {scopes:?} must pass, got {status} {body}"
                    );
                } else {
                    assert_eq!(
                        status, 403,
                        "{method} {path} needs {needed}; {scopes:?}: {body}"
                    );
                    assert_eq!(body["error"], "Forbidden");
                    assert!(body["message"].as_str().unwrap().contains(needed.as_str()));
                }
            }
        }
    }
    // The documented mapping, spelled out for the routes that matter most.
    let needs = |m: Method, p: &str| {
        operations
            .iter()
            .find(|(method, path, _)| *method == m && path == p)
            .and_then(|(_, _, scope)| scope.clone())
    };
    assert_eq!(needs(Method::POST, "/events").as_deref(), Some("ingest"));
    assert_eq!(
        needs(Method::POST, "/events/batch").as_deref(),
        Some("ingest")
    );
    assert_eq!(needs(Method::GET, "/events").as_deref(), Some("read"));
    assert_eq!(needs(Method::GET, "/ws").as_deref(), Some("read"));
    assert_eq!(needs(Method::GET, "/metrics").as_deref(), Some("read"));
    assert_eq!(needs(Method::POST, "/rules").as_deref(), Some("admin"));
    assert_eq!(
        needs(Method::POST, "/events/999999/replay").as_deref(),
        Some("admin")
    );
    assert_eq!(needs(Method::GET, "/api-keys").as_deref(), Some("admin"));
    assert_eq!(needs(Method::GET, "/health"), None);
    assert_eq!(needs(Method::GET, "/ready"), None);

    // A producer's key really ingests, a dashboard's really reads.
    let (status, _, body) = {
        let response = app
            .with_key(Method::POST, "/events", &ingest)
            .json(&json!({"id": "e-1", "type": "t", "data": {}}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            (),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = call(&app, &Method::GET, "/events", Credential::Bearer(&read)).await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 1);

    // Refusals are counted by reason.
    let (_, _, _) = call(&app, &Method::GET, "/metrics", Credential::None).await;
    let metrics = app
        .with_key(Method::GET, "/metrics", &read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["missing", "unknown", "revoked", "scope"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("sluice_auth_failures_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "no {reason} failures counted in\n{metrics}"
        );
    }
}

fn keys_named(list: &Value, name: &str) -> i64 {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key {name} in {list}"))["id"]
        .as_i64()
        .unwrap()
}

story!(
    keys_are_managed_over_the_api_and_never_shown_twice,
    "--auth",
    "api_key"
);
async fn keys_are_managed_over_the_api_and_never_shown_twice(app: TestApp) {
    let admin = app.create_key("ops", &["admin"]).await;
    let response = app
        .with_key(Method::POST, "/api-keys", &admin)
        .json(&json!({"name": "checkout", "scopes": ["ingest"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk_") && key.len() >= 40, "{key}");
    assert_eq!(created["scopes"], json!(["ingest"]));
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));

    // Usable at once, by this process.
    let response = app
        .with_key(Method::POST, "/events", &key)
        .json(&json!({"id": "a", "type": "t", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // Listed without any secret; its use is recorded (in a batch, within seconds).
    let listing = app
        .with_key(Method::GET, "/api-keys", &admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !listing.contains(&key[12..]),
        "the listing shows no secret: {listing}"
    );
    assert!(!listing.contains("hash"), "{listing}");
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let entry = listing["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "checkout")
        .unwrap();
    assert_eq!(entry["revoked_at"], Value::Null);
    assert!(entry.get("key").is_none());

    // Bad input is a 400 with details.
    let response = app
        .with_key(Method::POST, "/api-keys", &admin)
        .json(&json!({"name": "", "scopes": ["root"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    let paths: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["name", "scopes[0]"]);

    // Revoked: refused at once here; unknown ids are a 404.
    let id = entry["id"].as_i64().unwrap();
    let (status, revoked) = {
        let r = app
            .with_key(Method::DELETE, &format!("/api-keys/{id}"), &admin)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    let response = app
        .with_key(Method::POST, "/events", &key)
        .json(&json!({"id": "b", "type": "t", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .with_key(Method::DELETE, "/api-keys/424242", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

story!(
    rule_versions_and_replays_record_which_key_did_them,
    "--auth",
    "api_key"
);
async fn rule_versions_and_replays_record_which_key_did_them(app: TestApp) {
    let admin = app.create_key("ops-alice", &["admin"]).await;
    let ingest = app.create_key("producer", &["ingest"]).await;
    let rule: Value = app
        .with_key(Method::POST, "/rules", &admin)
        .json(&json!({
            "name": "log all", "event_type": "order.created",
            "condition": true, "action": {"type": "log", "params": {"message": "hi"}}
        }))
        .answer()
        .await
        .1;
    assert_eq!(rule["current_version"]["created_by"], "ops-alice", "{rule}");
    let second = app.create_key("ops-bob", &["admin"]).await;
    let id = rule["id"].as_i64().unwrap();
    let updated: Value = app
        .with_key(Method::PUT, &format!("/rules/{id}"), &second)
        .json(&json!({"condition": {"==": [1, 1]}}))
        .answer()
        .await
        .1;
    assert_eq!(updated["current_version"]["version"], 2);
    assert_eq!(updated["current_version"]["created_by"], "ops-bob");
    let versions: Value = app
        .with_key(Method::GET, &format!("/rules/{id}/versions"), &admin)
        .answer()
        .await
        .1;
    let by: Vec<&str> = versions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["created_by"].as_str().unwrap())
        .collect();
    assert_eq!(by, ["ops-bob", "ops-alice"]);

    let event: Value = app
        .with_key(Method::POST, "/events", &ingest)
        .json(&json!({"id": "o-1", "type": "order.created", "data": {}}))
        .answer()
        .await
        .1;
    let event_id = event["id"].as_i64().unwrap();
    let path = format!("/events/{event_id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e: Value = app.with_key(Method::GET, &path, &admin).answer().await.1;
        if e["state"] == "processed" {
            break;
        }
        assert!(Instant::now() < deadline, "not processed: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replay: Value = app
        .with_key(Method::POST, &format!("{path}/replay"), &second)
        .json(&json!({}))
        .answer()
        .await
        .1;
    assert_eq!(replay["requested_by"], "ops-bob", "{replay}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let attempts = loop {
        let a: Value = app
            .with_key(Method::GET, &format!("{path}/attempts"), &admin)
            .answer()
            .await
            .1;
        if a["data"][0]["trigger"] == "replay" && a["data"][0]["status"] == "success" {
            break a;
        }
        assert!(Instant::now() < deadline, "no replay attempt: {a}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(attempts["data"][0]["requested_by"], "ops-bob");
    assert_eq!(attempts["data"][1]["trigger"], "initial");
    assert_eq!(attempts["data"][1]["requested_by"], Value::Null);

    let batch: Value = app
        .with_key(Method::POST, "/events/replay-batch", &admin)
        .json(&json!({"event_ids": [event_id]}))
        .answer()
        .await
        .1;
    assert_eq!(batch["requested_by"], "ops-alice", "{batch}");
}

story!(without_access_control_nothing_is_recorded_as_by);
async fn without_access_control_nothing_is_recorded_as_by(app: TestApp) {
    let (status, rule) = app
        .post(
            "/rules",
            &json!({
                "name": "r", "event_type": "t", "condition": true,
                "action": {"type": "noop"}
            }),
        )
        .await;
    assert_eq!(status, 201, "{rule}");
    assert_eq!(rule["current_version"]["created_by"], Value::Null);
    // And a key is not needed, nor checked.
    let (status, _) = app.get_json("/events").await;
    assert_eq!(status, 200);
}

/// A key revoked on one process is refused by another within 5 s; a key created on one is
/// accepted by the other at once.
async fn revocation_reaches_every_process(db: Db) {
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let first = start_on(db, &database.url, &["--auth", "api_key"]).await;
    let second = spawn_sibling(&first, &["--auth", "api_key"], Roles::API).await;
    let admin = first.create_key("ops", &["admin"]).await;
    let created: Value = first
        .with_key(Method::POST, "/api-keys", &admin)
        .json(&json!({"name": "dash", "scopes": ["read"]}))
        .answer()
        .await
        .1;
    let key = created["key"].as_str().unwrap();
    let response = second
        .with_key(Method::GET, "/events/stats", key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a new key works on another process at once"
    );

    let id = created["id"].as_i64().unwrap();
    let response = first
        .with_key(Method::DELETE, &format!("/api-keys/{id}"), &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let revoked_at = Instant::now();
    loop {
        let response = second
            .with_key(Method::GET, "/events/stats", key)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::UNAUTHORIZED {
            let body: Value = response.json().await.unwrap();
            assert!(body["message"].as_str().unwrap().contains("revoked"));
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the other process still accepts a revoked key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_process_sqlite() {
    revocation_reaches_every_process(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_process_postgres() {
    revocation_reaches_every_process(Db::Postgres).await;
}

/// Every text stored anywhere in the database, one line per row.
async fn dump_database(app: &TestApp) -> String {
    use sqlx::{Connection, Row};
    let mut dump = String::new();
    match app.db {
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&app.database_url)
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM \"{table}\" t"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                dump.push_str(&rows.join("\n"));
                dump.push('\n');
            }
        }
        Db::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
                .await
                .unwrap();
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
            for table in tables {
                let columns: Vec<String> =
                    sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.get::<String, _>(0))
                        .collect();
                let concat = columns
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT {concat} FROM \"{table}\""))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                dump.push_str(&rows.join("\n"));
                dump.push('\n');
            }
        }
    }
    dump
}

story!(
    the_database_holds_no_key_and_no_session_token,
    "--auth",
    "api_key"
);
async fn the_database_holds_no_key_and_no_session_token(app: TestApp) {
    let admin = app.create_key("ops", &["admin"]).await;
    let created: Value = app
        .with_key(Method::POST, "/api-keys", &admin)
        .json(&json!({"name": "reader", "scopes": ["read"]}))
        .answer()
        .await
        .1;
    let reader = created["key"].as_str().unwrap().to_owned();
    let (cookie, _) = sign_in(&app, &reader).await;
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    assert!(token.len() >= 32);
    // Something to scan besides: a rule and an event written with the keys.
    let response = app
        .with_key(Method::POST, "/rules", &admin)
        .json(
            &json!({"name": "r", "event_type": "t", "condition": true, "action": {"type": "noop"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    let dump = dump_database(&app).await;
    assert!(
        dump.contains(&created["prefix"].as_str().unwrap().to_owned()),
        "the dump covers api_keys"
    );
    for secret in [&admin, &reader] {
        assert!(
            !dump.contains(&secret[11..]),
            "a key's secret part is stored"
        );
    }
    assert!(!dump.contains(&token), "a session token is stored");
}

/// Signs in to the console; returns the session cookie and the redirect target.
async fn sign_in(app: &TestApp, key: &str) -> (String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .post(app.url("/console/login"))
        .form(&[("key", key), ("next", "/console/rules")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        response.text().await
    );
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    (cookie, location)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

story!(
    the_console_asks_for_a_key_and_a_read_key_only_looks,
    "--auth",
    "api_key"
);
async fn the_console_asks_for_a_key_and_a_read_key_only_looks(app: TestApp) {
    let admin = app.create_key("ops", &["admin"]).await;
    let read = app.create_key("wallboard", &["read"]).await;
    let ingest = app.create_key("producer", &["ingest"]).await;
    let client = no_redirects();
    let response = app
        .with_key(Method::POST, "/rules", &admin)
        .json(&json!({"name": "High value", "event_type": "t", "condition": true, "action": {"type": "noop"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // No session: every page sends the visitor to sign in, and back afterwards.
    for page in [
        "/console",
        "/console/events",
        "/console/rules/1",
        "/console/keys",
    ] {
        let response = client.get(app.url(page)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        let location = response.headers()["location"].to_str().unwrap();
        assert!(
            location.starts_with("/console/login?next="),
            "{page} → {location}"
        );
    }
    let response = client
        .post(app.url("/console/rules/1/active"))
        .form(&[("active", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "a write without a session signs in first"
    );
    // The API key header does not open the console, and /, assets and the login page are open.
    let login = client.get(app.url("/console/login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    assert!(login.text().await.unwrap().contains("name=\"key\""));
    let response = client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    // Wrong keys are refused on the page.
    for (key, status, says) in [
        ("sk_nope", StatusCode::UNAUTHORIZED, "not a valid API key"),
        (
            ingest.as_str(),
            StatusCode::FORBIDDEN,
            "can only send events",
        ),
    ] {
        let response = client
            .post(app.url("/console/login"))
            .form(&[("key", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
        assert!(response.headers().get("set-cookie").is_none());
        assert!(response.text().await.unwrap().contains(says));
    }

    // A read key: a session cookie that scripts cannot read and other sites do not send.
    let (cookie, location) = sign_in(&app, &read).await;
    assert_eq!(location, "/console/rules");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    let session = cookie.split(';').next().unwrap().to_owned();
    let get = |path: &str| client.get(app.url(path)).header("cookie", &session).send();
    for page in [
        "/console",
        "/console/events",
        "/console/rules",
        "/console/rules/1",
    ] {
        let response = get(page).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let html = response.text().await.unwrap();
        assert!(
            html.contains("Signed in as <strong>wallboard</strong>"),
            "{page}"
        );
        assert!(
            !html.contains("method=\"post\" action=\"/console/rules"),
            "{page} shows a write control"
        );
        assert!(!html.contains("New rule"), "{page}");
        assert!(!html.contains("href=\"/console/keys\""), "{page}");
    }
    for (method, page) in [
        (Method::POST, "/console/rules/1/active"),
        (Method::POST, "/console/rules"),
        (Method::GET, "/console/rules/new"),
        (Method::GET, "/console/rules/1/edit"),
        (Method::GET, "/console/keys"),
        (Method::POST, "/console/keys"),
    ] {
        let response = client
            .request(method.clone(), app.url(page))
            .header("cookie", &session)
            .form(&[("active", "false"), ("name", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {page}");
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("can look but not change"));
    }
    let rule: Value = app
        .with_key(Method::GET, "/rules/1", &admin)
        .answer()
        .await
        .1;
    assert_eq!(rule["active"], true, "the refused write changed nothing");

    // Behind an HTTPS proxy the cookie is Secure.
    let response = client
        .post(app.url("/console/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("key", read.as_str())])
        .send()
        .await
        .unwrap();
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    // Signing out ends the session on the server, not just in the browser.
    let response = client
        .post(app.url("/console/logout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let response = get("/console").await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );

    // An admin session sees and uses the write controls, and the Keys page.
    let (cookie, _) = sign_in(&app, &admin).await;
    let session = cookie.split(';').next().unwrap().to_owned();
    let html = client
        .get(app.url("/console/rules/1"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/console/rules/1/edit"));
    let response = client
        .post(app.url("/console/keys"))
        .header("cookie", &session)
        .form(&[("name", "new-producer"), ("scope_ingest", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let html = response.text().await.unwrap();
    let start = html.find("id=\"new-key\">").expect("the key is shown") + "id=\"new-key\">".len();
    let new_key = &html[start..start + 43];
    assert!(new_key.starts_with("sk_"));
    let response = app
        .with_key(Method::POST, "/events", new_key)
        .json(&json!({"id": "from-console-key", "type": "t", "data": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "the key shown works"
    );
    let listing = client
        .get(app.url("/console/keys"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("new-producer"));
    assert!(
        !listing.contains(&new_key[11..]),
        "the key is not shown again"
    );
    let response = client
        .post(app.url("/console/rules/1/active"))
        .header("cookie", &session)
        .form(&[("active", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let rule: Value = app
        .with_key(Method::GET, "/rules/1", &admin)
        .answer()
        .await
        .1;
    assert_eq!(rule["active"], false);

    // Revoking a key ends its console sessions.
    let keys: Value = app
        .with_key(Method::GET, "/api-keys", &admin)
        .answer()
        .await
        .1;
    let (cookie, _) = sign_in(&app, &read).await;
    let session = cookie.split(';').next().unwrap().to_owned();
    let id = keys_named(&keys, "wallboard");
    app.with_key(Method::DELETE, &format!("/api-keys/{id}"), &admin)
        .send()
        .await
        .unwrap();
    let response = client
        .get(app.url("/console"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

story!(
    the_live_stream_takes_a_key_or_the_console_session,
    "--auth",
    "api_key"
);
async fn the_live_stream_takes_a_key_or_the_console_session(app: TestApp) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error;
    let read = app.create_key("wallboard", &["read"]).await;
    let ingest = app.create_key("producer", &["ingest"]).await;
    let url = format!("ws://{}/ws", app.addr);
    let connect = |header: Option<(&'static str, String)>| {
        let mut request = url.clone().into_client_request().unwrap();
        if let Some((name, value)) = header {
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    match connect(None).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("a stream without a key: {other:?}"),
    }
    match connect(Some(("authorization", format!("Bearer {ingest}")))).await {
        Err(Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("a stream with an ingest key: {other:?}"),
    }
    let (socket, _) = connect(Some(("authorization", format!("Bearer {read}"))))
        .await
        .expect("a read key streams");
    drop(socket);
    let (cookie, _) = sign_in(&app, &read).await;
    let session = cookie.split(';').next().unwrap().to_owned();
    let (socket, _) = connect(Some(("cookie", session)))
        .await
        .expect("the console session streams");
    drop(socket);
}

story!(
    an_expired_console_session_signs_in_again,
    "--auth",
    "api_key"
);
async fn an_expired_console_session_signs_in_again(app: TestApp) {
    let read = app.create_key("wallboard", &["read"]).await;
    let store = sluice_store::connect(&app.database_url, 1).await.unwrap();
    let keys = store.api_keys().await.unwrap();
    let token = "expired-session-token";
    let hash: String = sluice::auth::keys::digest(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    store
        .create_console_session(
            &hash,
            keys[0].id,
            chrono::Utc::now() - chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    let response = no_redirects()
        .get(app.url("/console"))
        .header("cookie", format!("sluice_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "an expired session is no session"
    );
    // A fresh sign-in works, and lasts 12 hours.
    let (cookie, _) = sign_in(&app, &read).await;
    assert!(cookie.contains("Max-Age=43200"), "{cookie}");
}
