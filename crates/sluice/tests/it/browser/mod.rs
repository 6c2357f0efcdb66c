//! The console in a real headless Chromium: an operator creates a rule through the form (with a
//! mistake first), watches an event arrive and get processed on the live events page, opens it,
//! replays it and sees the new attempts, and tries a dry run. Every page is screenshotted to
//! `test-output/console/` (git-ignored), at laptop and phone widths.

mod webdriver;

use crate::helpers::{spawn_app, Db, TestApp};
use crate::processing::post_event;
use serde_json::{json, Value};
use std::path::PathBuf;
use webdriver::{Driver, Session};

/// `test-output/console/` at the workspace root.
fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-output/console");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

struct Shots {
    dir: PathBuf,
}

impl Shots {
    async fn take(&self, session: &Session, name: &str) {
        session
            .screenshot(&self.dir.join(format!("{name}.png")))
            .await;
    }
}

/// Fails on anything the page reported as an error: a script error, a blocked resource, a
/// Content-Security-Policy violation. A 400 answering a form with mistakes is expected.
async fn assert_console_clean(session: &Session, page: &str) {
    let Some(entries) = session.console_log().await else {
        return;
    };
    let expected = |e: &Value| {
        let message = e["message"].as_str().unwrap_or_default();
        e["source"] == "network" && message.contains("status of 400")
    };
    let errors: Vec<&Value> = entries
        .iter()
        .filter(|e| e["level"] == "SEVERE" && !expected(e))
        .collect();
    assert!(errors.is_empty(), "browser errors on {page}: {errors:#?}");
}

async fn visit(session: &Session, app: &TestApp, path: &str) {
    session.goto(&app.url(path)).await;
    session.find("main").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_creates_a_rule_watches_an_event_and_replays_it() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = spawn_app(Db::Sqlite).await.expect("sqlite always works");
    let shots = Shots {
        dir: screenshot_dir(),
    };
    let browser = driver.session(1280, 900).await;

    // An empty console first.
    visit(&browser, &app, "/console").await;
    browser.wait_contains("h1", "Overview").await;
    shots.take(&browser, "01-overview-empty").await;

    // Create a rule through the form. A missing brace is caught as it is typed…
    visit(&browser, &app, "/console/rules/new").await;
    browser.type_into("#rule-name", "High value orders").await;
    browser.type_into("#rule-event-type", "order.created").await;
    browser
        .type_into("#rule-condition", r#"{">=": [{"var": "amount"}, 50]"#)
        .await;
    browser.click("#rule-action").await;
    browser
        .wait_contains("#rule-condition-error", "Not valid JSON yet")
        .await;
    browser
        .type_into(
            "#rule-action",
            r#"{"type": "log", "params": {"message": "High value order {{ external_id }}"}}"#,
        )
        .await;
    // …and, sent anyway, the server answers with the error next to the field, input kept.
    browser.click("button[name=intent][value=save]").await;
    browser
        .wait_contains("#rule-condition-error", "is not valid JSON")
        .await;
    browser
        .wait_contains("#form-problems", "The rule was not saved")
        .await;
    let kept = browser
        .execute("return document.getElementById('rule-action').value")
        .await;
    assert!(
        kept.as_str()
            .unwrap_or_default()
            .contains("High value order"),
        "{kept}"
    );
    shots.take(&browser, "02-rule-form-with-errors").await;

    // Fixed, tried against a sample payload, formatted, then saved.
    browser
        .type_into("#rule-condition", r#"{">=": [{"var": "amount"}, 50]}"#)
        .await;
    browser.type_into("#test-data", r#"{"amount": 75}"#).await;
    browser.click("button[name=intent][value=test]").await;
    browser.wait_contains("#test-result", "Matches").await;
    browser
        .click("#rule-condition-error + .json-tools button")
        .await;
    let formatted = browser
        .execute("return document.getElementById('rule-condition').value")
        .await;
    assert!(
        formatted
            .as_str()
            .unwrap_or_default()
            .contains("\n  \">=\""),
        "{formatted}"
    );
    shots.take(&browser, "03-rule-form-tested").await;
    browser.click("button[name=intent][value=save]").await;
    browser.wait_contains(".flash", "was created").await;
    browser.wait_contains("h1", "High value orders").await;
    let (_, rules) = app.get_json("/rules").await;
    assert_eq!(rules["count"], 1);
    assert_eq!(
        rules["data"][0]["current_version"]["condition"],
        json!({">=": [{"var": "amount"}, 50]})
    );
    shots.take(&browser, "04-rule").await;
    assert_console_clean(&browser, "the rule pages").await;

    // The events page, live: an event posted through the API appears without a reload and
    // turns processed.
    visit(&browser, &app, "/console/events").await;
    browser.wait_contains("#live-status", "Live").await;
    browser.execute("window.sameDocument = true").await;
    let id = post_event(
        &app,
        "order-1001",
        "order.created",
        json!({"amount": 120, "customer": "<b>Ada</b>"}),
    )
    .await;
    let row = format!("tr[data-event-id=\"{id}\"]");
    browser.wait_contains(&row, "order-1001").await;
    browser
        .wait_contains(&format!("{row} [data-state-badge]"), "processed")
        .await;
    let same = browser.execute("return window.sameDocument === true").await;
    assert_eq!(same, json!(true), "the row arrived without a reload");
    browser.wait_contains("#live-status", "1 new").await;
    shots.take(&browser, "05-events").await;
    assert_console_clean(&browser, "/console/events").await;

    // Open it: the rule that ran, its version and result.
    browser.click(&format!("{row} a")).await;
    browser.wait_contains("h1", "order-1001").await;
    let attempt = browser
        .wait_contains("[data-attempt=\"1\"]", "applied")
        .await;
    assert!(
        attempt.contains("High value orders") && attempt.contains("v1"),
        "{attempt}"
    );
    let payload = browser.wait_contains("pre.json", "<b>Ada</b>").await;
    assert!(payload.contains("\"amount\": 120"), "{payload}");
    // "Why?" opens on the comparison that decided, with the event's value in it.
    browser
        .click("[data-attempt=\"1\"] details.why > summary")
        .await;
    browser
        .wait_contains(
            "[data-attempt=\"1\"] .why-summary",
            "amount (120) >= 50 is true",
        )
        .await;
    browser
        .wait_contains("[data-attempt=\"1\"] .why-tree", "var amount → 120")
        .await;
    shots.take(&browser, "06-event").await;

    // Replay it with the current rules: the page says so and shows the second attempt.
    browser.click("button[name=mode][value=current]").await;
    browser.wait_contains(".flash", "Replay queued").await;
    let second = browser
        .wait_contains("[data-attempt=\"2\"]", "success")
        .await;
    assert!(second.contains("replay"), "{second}");
    browser.wait_contains("h1", "processed").await;

    // While the page stays open, another replay (from the API) shows up live.
    browser.execute("window.sameDocument = true").await;
    let (status, answer) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let third = browser
        .wait_contains("[data-attempt=\"3\"]", "success")
        .await;
    assert!(
        third.contains("deduped") || third.contains("applied"),
        "{third}"
    );
    let same = browser.execute("return window.sameDocument === true").await;
    assert_eq!(same, json!(true), "the attempt arrived without a reload");
    shots.take(&browser, "07-event-replayed").await;

    // A dry run says what each rule would do, and changes nothing.
    browser.click("button[name=mode][value=dry_run]").await;
    let dry = browser
        .wait_contains("#dry-run", "Dry run with current rules")
        .await;
    assert!(
        dry.contains("High value orders") && dry.contains("apply"),
        "{dry}"
    );
    assert_eq!(app.attempts(id).await.len(), 3);
    shots.take(&browser, "08-event-dry-run").await;
    assert_console_clean(&browser, "the event page").await;

    // A failing event: the overview lists it with its error, and its page says why.
    visit(&browser, &app, "/console/rules/new").await;
    browser.type_into("#rule-name", "Notify partner").await;
    browser
        .type_into("#rule-event-type", "order.refunded")
        .await;
    browser.type_into("#rule-condition", "true").await;
    browser
        .type_into(
            "#rule-action",
            r#"{"type": "call_webhook", "params": {"url": "http://127.0.0.1:9/hook"}}"#,
        )
        .await;
    browser.click("button[name=intent][value=save]").await;
    browser.wait_contains(".flash", "was created").await;
    let failed = post_event(&app, "refund-7", "order.refunded", json!({"amount": 30})).await;
    app.wait_for_state(failed, &["failed"]).await;
    visit(&browser, &app, "/console").await;
    browser.wait_contains(".failures", "webhook refused").await;
    shots.take(&browser, "09-overview").await;
    browser
        .click(&format!(".failures a[href=\"/console/events/{failed}\"]"))
        .await;
    browser.wait_contains(".diagnosis", "Notify partner").await;
    browser.wait_contains(".diagnosis", "webhook refused").await;
    shots.take(&browser, "10-event-failed").await;

    // Fix the rule from there (version 2), come back and replay: now it is processed.
    browser
        .click(".diagnosis a[href^=\"/console/rules/\"]")
        .await;
    browser.click("a[href$=\"/edit\"]").await;
    browser
        .type_into(
            "#rule-action",
            r#"{"type": "log", "params": {"message": "refund {{ external_id }}"}}"#,
        )
        .await;
    browser.click("button[name=intent][value=save]").await;
    browser
        .wait_contains(".flash", "version 2 is current")
        .await;
    let history = browser.wait_contains("#versions", "Version 2").await;
    assert!(
        history.contains("changed the action since version 1"),
        "{history}"
    );
    shots.take(&browser, "11-rule-versions").await;
    visit(&browser, &app, &format!("/console/events/{failed}")).await;
    browser.click("button[name=mode][value=current]").await;
    browser.wait_contains("h1", "processed").await;
    let fixed = browser
        .wait_contains("[data-attempt=\"2\"]", "success")
        .await;
    assert!(fixed.contains("v2") && fixed.contains("applied"), "{fixed}");
    shots.take(&browser, "12-event-fixed").await;

    visit(&browser, &app, "/console/rules").await;
    browser.wait_contains("table", "Notify partner").await;
    shots.take(&browser, "13-rules").await;
    assert_console_clean(&browser, "the overview and rules").await;

    // The type gets a schema: a mistake shows beside its field, then it saves.
    visit(&browser, &app, "/console/event-types").await;
    browser
        .click("a[href=\"/console/event-types/settings?type=order.created\"]")
        .await;
    browser.wait_contains("h1", "order.created").await;
    browser
        .type_into("#type-schema", r#"{"type": "objet"}"#)
        .await;
    browser.click("button[type=submit].primary").await;
    browser
        .wait_contains("#type-schema-error", "is not a valid JSON Schema")
        .await;
    browser
        .type_into(
            "#type-schema",
            r#"{"type": "object", "required": ["amount"]}"#,
        )
        .await;
    browser.type_into("#type-attempts", "3").await;
    browser.click("button[type=submit].primary").await;
    browser
        .wait_contains(".flash", "Settings of order.created saved.")
        .await;
    shots.take(&browser, "13b-event-types").await;
    assert_console_clean(&browser, "the event types pages").await;

    // A phone: the same pages, readable at 390 px.
    browser.emulate_phone(390, 844).await;
    for (path, name) in [
        ("/console".to_owned(), "14-phone-overview"),
        ("/console/events".to_owned(), "15-phone-events"),
        (format!("/console/events/{failed}"), "16-phone-event"),
        ("/console/rules/1".to_owned(), "17-phone-rule"),
        ("/console/event-types".to_owned(), "18-phone-event-types"),
    ] {
        visit(&browser, &app, &path).await;
        let overflow = browser
            .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        assert!(
            overflow.as_i64().unwrap_or(0) <= 0,
            "{path} scrolls sideways on a phone by {overflow}px"
        );
        shots.take(&browser, name).await;
    }
    assert_console_clean(&browser, "phone pages").await;

    browser.quit().await;
    app.stop().await;
}

/// With `AUTH=api_key`: an operator signs in with a read key and looks around (live, but
/// with no write controls), is refused a write page, signs out, and signs in as admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_looks_around_read_only_and_signs_out() {
    let Some(driver) = Driver::start().await else {
        return;
    };
    let app = crate::helpers::spawn_app_with(Db::Sqlite, &["--auth", "api_key"])
        .await
        .expect("sqlite always works");
    let shots = Shots {
        dir: screenshot_dir(),
    };
    let admin = app.create_key("ops", &["admin"]).await;
    let read = app.create_key("wallboard", &["read"]).await;
    let response = app
        .with_key(reqwest::Method::POST, "/rules", &admin)
        .json(
            &json!({"name": "Log orders", "event_type": "order.created", "condition": true,
                      "action": {"type": "log", "params": {"message": "order"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let browser = driver.session(1280, 900).await;

    // Any page asks to sign in first, and a wrong key is said to be wrong.
    visit(&browser, &app, "/console/rules").await;
    browser.wait_contains("h1", "Sign in").await;
    browser.type_into("#key", "sk_not_a_real_key").await;
    browser.click("button[type=submit]").await;
    browser
        .wait_contains("#key-error", "not a valid API key")
        .await;
    shots.take(&browser, "20-sign-in-refused").await;

    // A read key: back to the page asked for, every page readable, no write controls.
    browser.type_into("#key", &read).await;
    browser.click("button[type=submit]").await;
    browser.wait_contains("h1", "Rules").await;
    browser.wait_contains(".session", "wallboard").await;
    assert!(browser
        .try_find("a[href=\"/console/rules/new\"]")
        .await
        .is_none());
    let cookie_visible = browser.execute("return document.cookie").await;
    assert_eq!(cookie_visible, json!(""), "scripts cannot read the session");
    shots.take(&browser, "21-read-only-rules").await;
    visit(&browser, &app, "/console/rules/1").await;
    browser.wait_contains("h1", "Log orders").await;
    assert!(browser
        .try_find("form[action=\"/console/rules/1/active\"]")
        .await
        .is_none());
    // Live updates work with the session alone.
    visit(&browser, &app, "/console/events").await;
    browser.wait_contains("#live-status", "Live").await;
    let response = app
        .with_key(reqwest::Method::POST, "/events", &admin)
        .json(&json!({"id": "order-1", "type": "order.created", "data": {"amount": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    browser.wait_contains("table", "order-1").await;
    // A write page typed in by hand is refused with a page that says why.
    visit(&browser, &app, "/console/rules/1/edit").await;
    browser
        .wait_contains("main", "can look but not change")
        .await;
    shots.take(&browser, "22-read-only-refused").await;
    assert_console_clean_but_403(&browser).await;

    // Signing out returns to the sign-in page, and the console is closed again.
    visit(&browser, &app, "/console").await;
    browser.click(".session button").await;
    browser.wait_contains("h1", "Sign in").await;
    visit(&browser, &app, "/console/events").await;
    browser.wait_contains("h1", "Sign in").await;

    // An admin sees the write controls and the Keys page.
    browser.type_into("#key", &admin).await;
    browser.click("button[type=submit]").await;
    browser.wait_contains("h1", "Events").await;
    visit(&browser, &app, "/console/keys").await;
    browser.wait_contains("table", "wallboard").await;
    browser.type_into("#key-name", "checkout").await;
    browser.click("input[name=scope_ingest]").await;
    browser.click(".key-form button[type=submit]").await;
    let shown = browser.wait_contains("#new-key", "sk_").await;
    assert_eq!(shown.trim().len(), 43, "{shown}");
    shots.take(&browser, "23-key-created").await;
    browser.quit().await;
    app.stop().await;
}

/// Like [`assert_console_clean`], also expecting the 403 of a refused page.
async fn assert_console_clean_but_403(session: &Session) {
    let Some(entries) = session.console_log().await else {
        return;
    };
    let errors: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            let message = e["message"].as_str().unwrap_or_default();
            e["level"] == "SEVERE"
                && !(e["source"] == "network"
                    && (message.contains("status of 403") || message.contains("status of 401")))
        })
        .collect();
    assert!(errors.is_empty(), "browser errors: {errors:#?}");
}
