//! The binary's subcommands that need no server: `eval`, and configuration errors.

use std::io::Write;
use std::process::{Command, Stdio};

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn eval_reads_json_lines_and_answers_one_line_each() {
    let mut child = sluice()
        .arg("eval")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            concat!(
                r#"{"rule":{">=":[{"var":"amount"},50]},"data":{"amount":100}}"#, "\n",
                r#"{"rule":{"cat":["a",{"var":"b"}]},"data":{"b":1}}"#, "\n",
                r#"{"rule":{"nope":[1]},"data":{}}"#, "\n",
                "\n",
                r#"{"rule":{"reduce":[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30],{"merge":[{"var":"accumulator"},{"var":"accumulator"}]},[1]]},"data":null}"#, "\n",
            )
            .as_bytes(),
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], serde_json::json!(true));
    assert_eq!(lines[1], serde_json::json!("a1"));
    assert!(lines[2]["error"].as_str().unwrap().contains("nope"));
    assert!(
        lines[3]["error"].is_string(),
        "the budget stops the doubling: {}",
        lines[3]
    );
}

#[test]
fn eval_with_flags_prints_the_result() {
    let output = sluice()
        .args([
            "eval",
            "--rule",
            r#"{"+":[1,{"var":"x"}]}"#,
            "--data",
            r#"{"x":2}"#,
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(String::from_utf8(output.stdout).unwrap().trim(), "3");
    let bad = sluice()
        .args(["eval", "--rule", "{", "--data", "{}"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8(bad.stderr)
        .unwrap()
        .contains("--rule is not JSON"));
}

#[test]
fn input_that_is_not_json_lines_exits_non_zero() {
    let mut child = sluice()
        .arg("eval")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not json\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let line = String::from_utf8(output.stdout).unwrap();
    assert!(line.contains("error"), "{line}");
}

#[test]
fn invalid_configuration_fails_at_start_with_one_line() {
    let output = sluice().args(["serve", "--port", "http"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("port"), "{stderr}");
    let output = sluice()
        .args(["serve", "--email-mode", "smtp"])
        .env_remove("SMTP_URL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("SMTP_URL"), "{stderr}");
    // A trace exporter sluice does not have stops it rather than losing every span.
    let dir = tempfile::tempdir().unwrap();
    let output = sluice()
        .args(["serve", "--port", "0", "--database-url"])
        .arg(format!("sqlite://{}", dir.path().join("s.db").display()))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        "{stderr}"
    );
}

#[test]
fn help_and_debug_output_never_show_secrets() {
    for command in ["serve", "api", "worker", "migrate"] {
        let output = sluice()
            .args([command, "--help"])
            .env(
                "DATABASE_URL",
                "postgres://ops:dbpass-hunter2@db.internal/sluice",
            )
            .env("SMTP_URL", "smtp://mailer:smtp-hunter2@mail.internal:587")
            .env("WEBHOOK_SECRET", "whsec_c2VjcmV0LWh1bnRlcjI=")
            .output()
            .unwrap();
        assert!(output.status.success(), "{command} --help");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("DATABASE_URL"), "{text}");
        for secret in ["dbpass-hunter2", "smtp-hunter2", "c2VjcmV0LWh1bnRlcjI"] {
            assert!(
                !text.contains(secret),
                "{command} --help shows {secret}:\n{text}"
            );
        }
    }
    let settings = sluice::config::Settings::from_args([
        "--database-url",
        "postgres://ops:dbpass-hunter2@db.internal/sluice",
        "--smtp-url",
        "smtp://mailer:smtp-hunter2@mail.internal:587",
        "--webhook-secret",
        "whsec_c2VjcmV0LWh1bnRlcjI=",
    ])
    .unwrap();
    let debug = format!("{settings:?}");
    assert!(debug.contains("db.internal"), "{debug}");
    for secret in ["dbpass-hunter2", "smtp-hunter2", "c2VjcmV0LWh1bnRlcjI"] {
        assert!(!debug.contains(secret), "Debug shows {secret}: {debug}");
    }
}

/// `sluice keys …` against a database with no server running, then a server on it that
/// honours the key, and a revoke from the command line that the running server obeys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_listed_and_revoked_from_the_command_line() {
    use crate::helpers::{fresh_database, start_on, Db};
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(database) = fresh_database(db).await else {
            continue;
        };
        let keys_with = |env: &[(&str, &str)], args: &[&str]| {
            let output = sluice()
                .arg("keys")
                .args(args)
                .env("DATABASE_URL", &database.url)
                .envs(env.iter().copied())
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "sluice keys {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            output
        };
        let keys = |args: &[&str]| keys_with(&[], args);
        let created = keys(&[
            "create",
            "--name",
            "ci",
            "--scopes",
            "ingest,read",
            "--json",
        ]);
        let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
        let key = created["key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("sk_"), "{created}");
        assert_eq!(created["scopes"], serde_json::json!(["ingest", "read"]));
        let plain = keys(&["create", "--name", "ops", "--scopes", "admin"]);
        let plain_key = String::from_utf8(plain.stdout).unwrap().trim().to_owned();
        assert!(
            plain_key.starts_with("sk_"),
            "the text form prints just the key"
        );

        let listed = keys(&["list", "--json"]);
        let listed_text = String::from_utf8(listed.stdout).unwrap();
        assert!(
            !listed_text.contains(&key[11..]),
            "a listing never shows a key"
        );
        let listed: serde_json::Value = serde_json::from_str(&listed_text).unwrap();
        assert_eq!(listed["count"], 2);
        let table = String::from_utf8(keys(&["list"]).stdout).unwrap();
        assert!(table.contains("ci") && table.contains(created["prefix"].as_str().unwrap()));

        let app = start_on(db, &database.url, &["--auth", "api_key"]).await;
        let response = app
            .with_key(reqwest::Method::GET, "/events/stats", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        let id = created["id"].as_i64().unwrap().to_string();
        let revoked = keys(&["revoke", &id]);
        assert!(String::from_utf8_lossy(&revoked.stderr).contains("revoked key"));
        let asked = std::time::Instant::now();
        loop {
            let response = app
                .with_key(reqwest::Method::GET, "/events/stats", &key)
                .send()
                .await
                .unwrap();
            if response.status() == 401 {
                break;
            }
            assert!(asked.elapsed() < std::time::Duration::from_secs(5));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // With OPERATIONAL_EVENTS on, a revoke from the command line is stored as
        // `sluice.key.revoked`, as one through a server is; without it, nothing is.
        let revoked_events = || async {
            let response = app
                .with_key(
                    reqwest::Method::GET,
                    "/events?type=sluice.key.revoked",
                    &plain_key,
                )
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let list: serde_json::Value = response.json().await.unwrap();
            list["data"].as_array().cloned().unwrap_or_default()
        };
        assert!(revoked_events().await.is_empty());
        let temporary = keys(&["create", "--name", "temp", "--scopes", "read", "--json"]);
        let temporary: serde_json::Value = serde_json::from_slice(&temporary.stdout).unwrap();
        let temporary_id = temporary["id"].as_i64().unwrap();
        for _ in 0..2 {
            keys_with(
                &[("OPERATIONAL_EVENTS", "true")],
                &["revoke", &temporary_id.to_string()],
            );
        }
        let reported = revoked_events().await;
        assert_eq!(
            reported.len(),
            1,
            "revoked twice, reported once: {reported:?}"
        );
        assert_eq!(
            reported[0]["external_id"],
            format!("sluice.key.revoked:{temporary_id}")
        );

        let bad = sluice()
            .args(["keys", "create", "--name", "x", "--scopes", "root"])
            .env("DATABASE_URL", &database.url)
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("ingest, read, admin"));
        app.stop().await;
    }
}
