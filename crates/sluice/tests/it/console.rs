//! The console's pages and forms without a browser: status, key content, escaping of user data,
//! forms that work without JavaScript (303 on success, 400 with inline errors and the input
//! kept), replay from the event page, and the guard against cross-site posts.

use crate::helpers::TestApp;
use crate::processing::{create_rule, post_event};
use crate::story;
use serde_json::{json, Value};

/// What a browser would get: status, headers and HTML, without following redirects.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no Location header (status {})", self.status))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn assert_contains(&self, needle: &str) {
        assert!(
            self.html.contains(needle),
            "expected {needle:?} in the page (status {}):\n{}",
            self.status,
            self.html
        );
    }

    #[track_caller]
    pub fn assert_lacks(&self, needle: &str) {
        assert!(
            !self.html.contains(needle),
            "did not expect {needle:?} in the page:\n{}",
            self.html
        );
    }

    /// How many times `needle` occurs.
    pub fn count(&self, needle: &str) -> usize {
        self.html.matches(needle).count()
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn page(response: reqwest::Response) -> Page {
    Page {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        html: response.text().await.unwrap(),
    }
}

pub async fn get(app: &TestApp, path: &str) -> Page {
    page(browser().get(app.url(path)).send().await.unwrap()).await
}

pub async fn post_form(app: &TestApp, path: &str, form: &[(&str, &str)]) -> Page {
    page(
        browser()
            .post(app.url(path))
            .form(form)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The id at the end of a redirect like `/console/rules/7?saved=created`.
fn id_in(location: &str) -> i64 {
    let path = location.split(['?', '#']).next().unwrap();
    path.rsplit('/').next().unwrap().parse().unwrap()
}

/// A rule whose action can never succeed here: the webhook's address is private, which this
/// sluice refuses (a failure that is not retried).
async fn failing_rule(app: &TestApp, name: &str, event_type: &str) -> i64 {
    create_rule(
        app,
        name,
        event_type,
        json!(true),
        json!({"type": "call_webhook", "params": {"url": "http://127.0.0.1:9/hook"}}),
    )
    .await
}

story!(the_front_door_pages_and_assets_are_served);
async fn the_front_door_pages_and_assets_are_served(app: TestApp) {
    let root = get(&app, "/").await;
    assert_eq!(root.status, 303);
    assert_eq!(root.location(), "/console");

    for path in [
        "/console",
        "/console/events",
        "/console/rules",
        "/console/rules/new",
    ] {
        let page = get(&app, path).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            page.header("content-type")
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        page.assert_contains("<nav aria-label=\"Main\">");
        page.assert_contains("aria-current=\"page\"");
        // Everything the page loads comes from sluice itself.
        for attribute in [
            "src=\"",
            "rel=\"stylesheet\" href=\"",
            "rel=\"icon\" href=\"",
        ] {
            for (at, _) in page.html.match_indices(attribute) {
                let url = &page.html[at + attribute.len()..];
                assert!(
                    url.starts_with('/') && !url.starts_with("//"),
                    "{path} loads {}",
                    &url[..40.min(url.len())]
                );
            }
        }
    }
    let overview = get(&app, "/console").await;
    overview.assert_contains("No failed events");
    overview.assert_contains("<svg");

    // Assets: versioned URLs are cached for good; others revalidate; unknown ones are 404.
    let css_url = overview
        .html
        .split("href=\"")
        .find(|s| s.starts_with("/console/assets/console.css"))
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let css = get(&app, &css_url).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert!(css.header("cache-control").unwrap().contains("immutable"));
    assert!(css.html.contains(".badge"));
    let etag = css.header("etag").unwrap().to_owned();
    let again = browser()
        .get(app.url("/console/assets/console.css"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let js = get(&app, "/console/assets/console.js").await;
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(js.header("cache-control"), Some("no-cache"));
    assert_eq!(get(&app, "/console/assets/nope.js").await.status, 404);

    let missing = get(&app, "/console/nowhere").await;
    assert_eq!(missing.status, 404);
    missing.assert_contains("there is no console page at /console/nowhere");
    // The JSON API is untouched.
    let (status, body) = app.get_json("/nowhere").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("NotFoundError"))
    );
    app.stop().await;
}

story!(the_overview_counts_states_and_shows_the_latest_failures);
async fn the_overview_counts_states_and_shows_the_latest_failures(app: TestApp) {
    failing_rule(&app, "notify partner", "order.failed").await;
    create_rule(
        &app,
        "log",
        "order.created",
        json!(true),
        json!({"type": "log", "params": {"message": "m"}}),
    )
    .await;
    let ok = post_event(&app, "ok-1", "order.created", json!({"amount": 1})).await;
    let bad = post_event(&app, "bad-1", "order.failed", json!({"amount": 2})).await;
    app.wait_for_state(ok, &["processed"]).await;
    app.wait_for_state(bad, &["failed"]).await;

    let page = get(&app, "/console").await;
    assert_eq!(page.status, 200);
    page.assert_contains(
        "<span class=\"card-number\">1</span><span class=\"card-label\">processed</span>",
    );
    page.assert_contains(
        "<span class=\"card-number\">1</span><span class=\"card-label\">failed</span>",
    );
    page.assert_contains("1 in the last 24 h");
    page.assert_contains(
        "<span class=\"card-number\">2</span><span class=\"card-label\">active rules</span>",
    );
    // The chart has this minute's bar, with a text alternative.
    page.assert_contains("2 events received in the last hour");
    page.assert_contains("class=\"seg-processed\"");
    page.assert_contains("class=\"seg-failed\"");
    // The failure, with its error, links to the event.
    page.assert_contains(&format!("href=\"/console/events/{bad}\""));
    page.assert_contains("webhook refused");
    page.assert_lacks(&format!("href=\"/console/events/{ok}\""));
    app.stop().await;
}

story!(user_data_renders_inert_on_every_page);
async fn user_data_renders_inert_on_every_page(app: TestApp) {
    let evil_name = "<img src=x onerror=alert(1)>";
    let rule = create_rule(
        &app,
        evil_name,
        "t<script>",
        json!({"==": [{"var": "x"}, "</pre><script>alert(2)</script>"]}),
        json!({"type": "log", "params": {"message": "<script>alert(3)</script>"}}),
    )
    .await;
    failing_rule(&app, "<b>bold</b>", "t<script>").await;
    let id = post_event(
        &app,
        "<script>alert(\"id\")</script>",
        "t<script>",
        json!({"x": "</pre><script>alert(2)</script>", "quote": "\" onmouseover=\"alert(4)"}),
    )
    .await;
    app.wait_for_state(id, &["failed"]).await;

    let pages = [
        "/console".to_owned(),
        "/console/events".to_owned(),
        "/console/events?type=t%3Cscript%3E&external_id=%3Cscript%3E".to_owned(),
        format!("/console/events/{id}"),
        "/console/rules".to_owned(),
        format!("/console/rules/{rule}"),
        format!("/console/rules/{rule}/edit"),
    ];
    for path in &pages {
        let page = get(&app, path).await;
        assert_eq!(page.status, 200, "{path}");
        for raw in [
            "<script>alert",
            "<img src=x",
            "<b>bold",
            "</pre><script>",
            "\" onmouseover=",
        ] {
            assert!(
                !page.html.contains(raw),
                "{path} contains {raw:?} unescaped:\n{}",
                page.html
            );
        }
        // The only script tag is the console's own.
        assert_eq!(page.count("<script"), 1, "{path}");
    }
    let event = get(&app, &format!("/console/events/{id}")).await;
    event.assert_contains("&#60;script&#62;alert(&#34;id&#34;)&#60;/script&#62;");
    event.assert_contains("&#60;/pre&#62;&#60;script&#62;alert(2)&#60;/script&#62;");
    let rule_page = get(&app, &format!("/console/rules/{rule}")).await;
    rule_page.assert_contains("&#60;img src=x onerror=alert(1)&#62;");
    app.stop().await;
}

story!(the_events_list_filters_paginates_and_explains_bad_filters);
async fn the_events_list_filters_paginates_and_explains_bad_filters(app: TestApp) {
    let events: Vec<Value> = (0..55)
        .map(|i| {
            let event_type = if i % 5 == 0 {
                "user.signup"
            } else {
                "order.created"
            };
            json!({"id": format!("e-{i:02}"), "type": event_type, "data": {"i": i}})
        })
        .collect();
    let (status, body) = app.post("/events/batch", &json!({"events": events})).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_processed(55).await;

    let first = get(&app, "/console/events").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.count("<tr data-event-id="), 50);
    first.assert_contains(">e-54</a>");
    first.assert_lacks(">e-04</a>");
    first.assert_contains("Showing 1–50");
    first.assert_contains("data-insert=\"true\"");
    first.assert_contains("class=\"badge state-processed\"");
    // Older pages continue by cursor (the same cost however deep).
    let older = first
        .html
        .split("href=\"")
        .filter_map(|rest| rest.split_once('"'))
        .find(|(_, after)| after.starts_with(" rel=\"next\""))
        .map(|(link, _)| link.replace("&#38;", "&").replace("&amp;", "&"))
        .expect("a link to older events");
    assert!(older.starts_with("/console/events?cursor="), "{older}");

    let second = get(&app, &older).await;
    assert_eq!(second.count("<tr data-event-id="), 5);
    second.assert_contains(">e-00</a>");
    second.assert_contains("Showing 51–55");
    second.assert_contains("href=\"/console/events\" rel=\"prev\"");
    second.assert_lacks("rel=\"next\"");
    // Live insertion only on the first page.
    second.assert_contains("data-insert=\"false\"");
    // Offsets still work, for links made before.
    let by_offset = get(&app, "/console/events?offset=50").await;
    assert_eq!(by_offset.count("<tr data-event-id="), 5);

    let signups = get(&app, "/console/events?type=user.signup&state=processed").await;
    assert_eq!(signups.count("<tr data-event-id="), 11);
    signups.assert_contains("<option value=\"processed\" selected>");
    signups.assert_contains("value=\"user.signup\"");
    signups.assert_contains("Clear filters");

    let one = get(&app, "/console/events?external_id=e-07").await;
    assert_eq!(one.count("<tr data-event-id="), 1);
    let none = get(&app, "/console/events?state=failed").await;
    assert_eq!(none.count("<tr data-event-id="), 0);
    none.assert_contains("No events match these filters.");

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let dated = get(
        &app,
        &format!("/console/events?start_date={today}&end_date={today}"),
    )
    .await;
    assert_eq!(dated.count("<tr data-event-id="), 50);
    dated.assert_contains("data-insert=\"false\"");

    let bad = get(
        &app,
        "/console/events?start_date=31/01/2026&end_date=2020-01-01",
    )
    .await;
    assert_eq!(bad.status, 400);
    bad.assert_contains("id=\"filter-start-error\" data-server-error>must be a date (YYYY-MM-DD) or an RFC 3339 timestamp");
    bad.assert_contains("value=\"31/01/2026\"");
    let backwards = get(
        &app,
        "/console/events?start_date=2026-02-01&end_date=2026-01-01",
    )
    .await;
    assert_eq!(backwards.status, 400);
    backwards
        .assert_contains("id=\"filter-end-error\" data-server-error>must not be before start_date");
    let unknown = get(&app, "/console/events?state=lost").await;
    assert_eq!(unknown.status, 400);
    unknown.assert_contains("id=\"filter-state-error\"");
    app.stop().await;
}

story!(an_event_page_says_why_it_failed_and_replays_it);
async fn an_event_page_says_why_it_failed_and_replays_it(app: TestApp) {
    failing_rule(&app, "notify partner", "order.created").await;
    create_rule(
        &app,
        "log it",
        "order.created",
        json!(true),
        json!({"type": "log", "params": {"message": "m"}}),
    )
    .await;
    let id = post_event(&app, "order-1", "order.created", json!({"amount": 70})).await;
    app.wait_for_state(id, &["failed"]).await;

    let event = get(&app, &format!("/console/events/{id}")).await;
    assert_eq!(event.status, 200);
    event.assert_contains("Why this event failed");
    event.assert_contains("(version 1) failed:");
    event.assert_contains("notify partner</a>");
    event.assert_contains("webhook refused");
    // The last error is on the page, and so is every rule execution of the attempt.
    event.assert_contains("id=\"last-error\"");
    event.assert_contains("Attempt 1</h3>");
    event.assert_contains("class=\"badge result-failed\"");
    event.assert_contains("class=\"badge result-applied\"");
    event.assert_contains("&#34;amount&#34;: 70");
    event.assert_contains("received 1 time");
    // The replay buttons are right there.
    for mode in ["current", "original", "dry_run"] {
        event.assert_contains(&format!("name=\"mode\" value=\"{mode}\""));
    }
    let diagnosis = event.html.find("Why this event failed").unwrap();
    let buttons = event.html.find("Replay with current rules").unwrap();
    let payload = event.html.find("Payload</h2>").unwrap();
    assert!(
        diagnosis < buttons && buttons < payload,
        "diagnosis, then replay, then details"
    );

    // A dry run says what each rule would do and changes nothing.
    let dry = post_form(
        &app,
        &format!("/console/events/{id}/replay"),
        &[("mode", "dry_run"), ("dry_run_rules", "original")],
    )
    .await;
    assert_eq!(dry.status, 200);
    dry.assert_contains("Dry run with original rules");
    dry.assert_contains("Dry run: nothing was changed and no action ran");
    dry.assert_contains("class=\"badge would-apply\"");
    assert_eq!(app.attempts(id).await.len(), 1);

    // A replay redirects back to the event, which shows the new attempt.
    let replay = post_form(
        &app,
        &format!("/console/events/{id}/replay"),
        &[("mode", "current")],
    )
    .await;
    assert_eq!(replay.status, 303);
    assert_eq!(
        replay.location(),
        format!("/console/events/{id}?replayed=current#attempts")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app
        .attempts(id)
        .await
        .first()
        .is_none_or(|a| a["status"] == "running" || a["attempt_no"] != 2)
    {
        assert!(std::time::Instant::now() < deadline, "the replay never ran");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.wait_for_state(id, &["failed"]).await;
    let after = get(&app, &format!("/console/events/{id}?replayed=current")).await;
    after.assert_contains("Replay queued with each rule");
    after.assert_contains("Attempt 2</h3>");
    after.assert_contains("class=\"badge trigger-replay\"");
    let newest = after.html.find("Attempt 2</h3>").unwrap();
    let oldest = after.html.find("Attempt 1</h3>").unwrap();
    assert!(newest < oldest, "newest attempt first");

    // Wrong ids and modes are pages too, not JSON.
    let unknown = get(&app, "/console/events/999999").await;
    assert_eq!(unknown.status, 404);
    unknown.assert_contains("event 999999 not found");
    let bad = get(&app, "/console/events/abc").await;
    assert_eq!(bad.status, 400);
    bad.assert_contains("id must be a positive integer");
    let mode = post_form(
        &app,
        &format!("/console/events/{id}/replay"),
        &[("mode", "later")],
    )
    .await;
    assert_eq!(mode.status, 400);
    mode.assert_contains("unknown replay mode");
    app.stop().await;
}

story!(
    an_event_waiting_for_a_retry_shows_why_and_cannot_be_replayed_yet,
    "--webhook-allow-private",
    "true",
    "--retry-backoff-ms",
    "600000"
);
async fn an_event_waiting_for_a_retry_shows_why_and_cannot_be_replayed_yet(app: TestApp) {
    // Nothing listens on port 9: a connection error, retried after a long backoff.
    create_rule(
        &app,
        "hook",
        "order.created",
        json!(true),
        json!({"type": "call_webhook", "params": {"url": "http://127.0.0.1:9/hook"}}),
    )
    .await;
    let id = post_event(&app, "slow-1", "order.created", json!({})).await;
    app.wait_for_stats(|s| s["retrying"] == 1).await;

    let event = get(&app, &format!("/console/events/{id}")).await;
    event.assert_contains("class=\"badge state-pending\"");
    event.assert_contains("What went wrong");
    event.assert_contains("hook</a> (version 1) failed:");
    event.assert_contains("it can be replayed once it is processed or failed. Next attempt <time");
    event.assert_lacks("name=\"mode\" value=\"current\"");

    let refused = post_form(
        &app,
        &format!("/console/events/{id}/replay"),
        &[("mode", "current")],
    )
    .await;
    assert_eq!(refused.status, 409);
    refused.assert_contains("role=\"alert\"");
    refused.assert_contains("only processed or failed events can be replayed");
    app.stop().await;
}

story!(rules_are_created_edited_tested_and_deactivated_without_javascript);
async fn rules_are_created_edited_tested_and_deactivated_without_javascript(app: TestApp) {
    let form = get(&app, "/console/rules/new").await;
    assert_eq!(form.status, 200);
    for (id, name) in [
        ("rule-name", "name"),
        ("rule-event-type", "event_type"),
        ("rule-condition", "condition"),
        ("rule-action", "action"),
    ] {
        form.assert_contains(&format!("<label for=\"{id}\">"));
        form.assert_contains(&format!("id=\"{id}\" name=\"{name}\""));
    }

    // Invalid: errors next to their fields, the input kept, nothing saved.
    let invalid = post_form(
        &app,
        "/console/rules",
        &[
            ("name", "High value"),
            ("event_type", "order.created"),
            ("condition", "{\"frobnicate\": [1]}"),
            ("action", "{\"type\": "),
            ("active", "on"),
            ("intent", "save"),
        ],
    )
    .await;
    assert_eq!(invalid.status, 400);
    invalid.assert_contains("The rule was not saved");
    invalid.assert_contains("id=\"rule-condition-error\" data-server-error>");
    invalid.assert_contains("frobnicate");
    invalid.assert_contains("id=\"rule-action-error\" data-server-error>is not valid JSON");
    invalid.assert_contains("{&#34;frobnicate&#34;: [1]}</textarea>");
    invalid.assert_contains("value=\"High value\"");
    invalid.assert_contains("aria-invalid=\"true\"");
    let condition_error = invalid
        .html
        .split("id=\"rule-condition-error\" data-server-error>")
        .nth(1)
        .unwrap();
    assert!(
        condition_error.starts_with("unknown operator") || condition_error.contains("frobnicate"),
        "{condition_error}"
    );
    let (_, rules) = app.get_json("/rules").await;
    assert_eq!(rules["count"], 0);

    // A bad action (valid JSON) is reported at its field too.
    let bad_action = post_form(
        &app,
        "/console/rules",
        &[
            ("name", "x"),
            ("event_type", "order.created"),
            ("condition", "true"),
            (
                "action",
                "{\"type\": \"call_webhook\", \"params\": {\"url\": \"ftp://x\"}}",
            ),
            ("intent", "save"),
        ],
    )
    .await;
    assert_eq!(bad_action.status, 400);
    bad_action.assert_contains("id=\"rule-action-error\" data-server-error>at params.url");
    let missing = post_form(
        &app,
        "/console/rules",
        &[
            ("name", ""),
            ("event_type", ""),
            ("condition", ""),
            ("action", ""),
        ],
    )
    .await;
    assert_eq!(missing.status, 400);
    missing.assert_contains("id=\"rule-name-error\" data-server-error>must not be empty");
    missing.assert_contains("id=\"rule-condition-error\" data-server-error>is required");

    // Trying the condition from the form saves nothing.
    let tried = post_form(
        &app,
        "/console/rules",
        &[
            ("name", "High value"),
            ("event_type", "order.created"),
            ("condition", "{\">=\": [{\"var\": \"amount\"}, 50]}"),
            ("action", ""),
            ("data", "{\"amount\": 70}"),
            ("intent", "test"),
        ],
    )
    .await;
    assert_eq!(tried.status, 200);
    tried.assert_contains("Matches: the action would run for this payload.");
    tried.assert_contains("action=\"/console/rules\"");
    tried.assert_contains("formaction=\"/console/rules#test\"");
    assert_eq!(app.get_json("/rules").await.1["count"], 0);

    // The same test previews what the action being edited would send: transforms computed.
    let previewed = post_form(
        &app,
        "/console/rules",
        &[
            ("name", "High value"),
            ("event_type", "order.created"),
            ("condition", "{\">=\": [{\"var\": \"amount\"}, 50]}"),
            (
                "action",
                "{\"type\": \"call_webhook\", \"params\": {\"url\": \"https://hooks.example.com/in\", \
                 \"body\": {\"total\": {\"$logic\": {\"*\": [{\"var\": \"data.qty\"}, {\"var\": \"data.price\"}]}}}}}",
            ),
            ("data", "{\"amount\": 70, \"qty\": 3, \"price\": 1.25}"),
            ("intent", "test"),
        ],
    )
    .await;
    assert_eq!(previewed.status, 200, "{}", previewed.html);
    previewed.assert_contains("The action would send:");
    previewed.assert_contains("total&#34;: 3.75");
    assert_eq!(app.get_json("/rules").await.1["count"], 0);

    // Valid: 303 to the rule.
    let created = post_form(
        &app,
        "/console/rules",
        &[
            ("name", "High value"),
            ("event_type", "order.created"),
            ("condition", "{\">=\": [{\"var\": \"amount\"}, 50]}"),
            (
                "action",
                "{\"type\": \"log\", \"params\": {\"message\": \"big {{ external_id }}\"}}",
            ),
            ("active", "on"),
            ("intent", "save"),
        ],
    )
    .await;
    assert_eq!(created.status, 303, "{}", created.html);
    let id = id_in(created.location());
    assert!(created.location().ends_with("?saved=created"));
    let (_, rule) = app.get_json(&format!("/rules/{id}")).await;
    assert_eq!(rule["active"], true);
    assert_eq!(
        rule["current_version"]["condition"],
        json!({">=": [{"var": "amount"}, 50]})
    );
    let page = get(&app, created.location()).await;
    page.assert_contains("“High value” was created.");
    page.assert_contains("Version 1</h3>");
    page.assert_contains("first version");

    // Edit: the form comes prefilled; a changed condition is version 2, with a diff.
    let edit = get(&app, &format!("/console/rules/{id}/edit")).await;
    assert_eq!(edit.status, 200);
    edit.assert_contains("value=\"High value\"");
    edit.assert_contains("&#34;amount&#34;");
    edit.assert_contains("Changing the condition or the action saves version 2");
    let saved = post_form(
        &app,
        &format!("/console/rules/{id}/edit"),
        &[
            ("name", "Very high value"),
            ("event_type", "order.created"),
            ("condition", "{\">=\": [{\"var\": \"amount\"}, 60]}"),
            (
                "action",
                "{\"type\": \"log\", \"params\": {\"message\": \"big {{ external_id }}\"}}",
            ),
            ("active", "on"),
            ("intent", "save"),
        ],
    )
    .await;
    assert_eq!(saved.status, 303);
    assert_eq!(
        saved.location(),
        format!("/console/rules/{id}?saved=updated")
    );
    let page = get(&app, saved.location()).await;
    page.assert_contains("“Very high value” was saved; version 2 is current.");
    page.assert_contains("Version 2</h3>");
    page.assert_contains("changed the condition since version 1");
    page.assert_contains("<span class=\"diff-removed\"><span class=\"diff-sign\" aria-hidden=\"true\">- </span><span class=\"visually-hidden\">removed: </span>    50");
    page.assert_contains("<span class=\"diff-added\"><span class=\"diff-sign\" aria-hidden=\"true\">+ </span><span class=\"visually-hidden\">added: </span>    60");
    let (_, versions) = app.get_json(&format!("/rules/{id}/versions")).await;
    assert_eq!(versions["count"], 2);

    // An invalid edit keeps the input and changes nothing.
    let bad_edit = post_form(
        &app,
        &format!("/console/rules/{id}/edit"),
        &[
            ("name", "Very high value"),
            ("event_type", "order.created"),
            ("condition", "{\"var\": [1, 2, 3, 4]"),
            (
                "action",
                "{\"type\": \"log\", \"params\": {\"message\": \"m\"}}",
            ),
            ("intent", "save"),
        ],
    )
    .await;
    assert_eq!(bad_edit.status, 400);
    bad_edit.assert_contains("id=\"rule-condition-error\" data-server-error>is not valid JSON");
    assert_eq!(
        app.get_json(&format!("/rules/{id}/versions")).await.1["count"],
        2
    );

    // Test against a sample payload and against stored events.
    let sample = post_form(
        &app,
        &format!("/console/rules/{id}/test"),
        &[("test", "sample"), ("data", "{\"amount\": 10}")],
    )
    .await;
    assert_eq!(sample.status, 200);
    sample.assert_contains("Does not match");
    let broken = post_form(
        &app,
        &format!("/console/rules/{id}/test"),
        &[("test", "sample"), ("data", "{amount")],
    )
    .await;
    assert_eq!(broken.status, 400);
    broken.assert_contains("id=\"test-data-error\" data-server-error>is not valid JSON");
    broken.assert_contains(">{amount</textarea>");
    post_event(&app, "o-1", "order.created", json!({"amount": 100})).await;
    post_event(&app, "o-2", "order.created", json!({"amount": 5})).await;
    let from_form = post_form(
        &app,
        &format!("/console/rules/{id}/edit"),
        &[
            ("name", "Very high value"),
            ("event_type", "order.created"),
            ("condition", "{\">=\": [{\"var\": \"amount\"}, 1]}"),
            ("action", "{\"type\": \"noop\", \"params\": {}}"),
            ("last", "10"),
            ("intent", "test_last"),
        ],
    )
    .await;
    assert_eq!(from_form.status, 200);
    from_form
        .assert_contains("2 of the last 2 events of type <strong>order.created</strong> match");
    assert_eq!(
        app.get_json(&format!("/rules/{id}/versions")).await.1["count"],
        2,
        "a test saves nothing"
    );
    let stored = post_form(
        &app,
        &format!("/console/rules/{id}/test"),
        &[("test", "last"), ("last", "10")],
    )
    .await;
    assert_eq!(stored.status, 200);
    stored.assert_contains("1 of the last 2 events of type <strong>order.created</strong> match");
    stored.assert_contains(">o-1</a>");
    let too_many = post_form(
        &app,
        &format!("/console/rules/{id}/test"),
        &[("test", "last"), ("last", "5000")],
    )
    .await;
    assert_eq!(too_many.status, 400);
    too_many.assert_contains(
        "id=\"test-last-error\" data-server-error>must be an integer from 1 to 1000",
    );

    // Deactivate from the list, activate from the rule.
    let off = post_form(
        &app,
        &format!("/console/rules/{id}/active"),
        &[("active", "false"), ("back", "list")],
    )
    .await;
    assert_eq!(off.status, 303);
    assert!(off
        .location()
        .starts_with("/console/rules?saved=deactivated"));
    assert_eq!(
        app.get_json(&format!("/rules/{id}")).await.1["active"],
        false
    );
    let list = get(&app, off.location()).await;
    list.assert_contains("is inactive: it no longer runs.");
    list.assert_contains("“Very high value” is inactive");
    // The message names the stored rule: a link cannot make it announce other text.
    let forged = get(
        &app,
        "/console/rules?saved=created&rule=Your%20account%20is%20locked",
    )
    .await;
    assert!(
        !forged.html.contains("Your account is locked"),
        "the console announced text from the link"
    );
    list.assert_contains("class=\"badge active-no\"");
    list.assert_contains("aria-label=\"Activate Very high value\"");
    let on = post_form(
        &app,
        &format!("/console/rules/{id}/active"),
        &[("active", "true")],
    )
    .await;
    assert_eq!(
        on.location(),
        format!("/console/rules/{id}?saved=activated")
    );
    assert_eq!(
        app.get_json(&format!("/rules/{id}")).await.1["active"],
        true
    );
    let active_only = get(&app, "/console/rules?active=false").await;
    active_only.assert_contains("No rules match these filters.");

    assert_eq!(get(&app, "/console/rules/424242").await.status, 404);
    assert_eq!(get(&app, "/console/rules/424242/edit").await.status, 404);
    app.stop().await;
}

story!(forms_posted_from_another_site_are_refused);
async fn forms_posted_from_another_site_are_refused(app: TestApp) {
    let rule = create_rule(
        &app,
        "r",
        "t",
        json!(true),
        json!({"type": "noop", "params": {}}),
    )
    .await;
    let forged = browser()
        .post(app.url(&format!("/console/rules/{rule}/active")))
        .header("origin", "https://evil.example")
        .form(&[("active", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let fetched = browser()
        .post(app.url(&format!("/console/rules/{rule}/active")))
        .header("sec-fetch-site", "cross-site")
        .form(&[("active", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 403);
    assert_eq!(
        app.get_json(&format!("/rules/{rule}")).await.1["active"],
        true
    );

    let same = browser()
        .post(app.url(&format!("/console/rules/{rule}/active")))
        .header("origin", format!("http://{}", app.addr))
        .header("sec-fetch-site", "same-origin")
        .form(&[("active", "false")])
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 303);
    assert_eq!(
        app.get_json(&format!("/rules/{rule}")).await.1["active"],
        false
    );
    app.stop().await;
}

story!(event_types_are_listed_and_configured_with_errors_beside_their_fields);
async fn event_types_are_listed_and_configured_with_errors_beside_their_fields(app: TestApp) {
    crate::processing::post_event(&app, "e-1", "order.created", json!({"amount": 1})).await;
    let list = get(&app, "/console/event-types").await;
    assert_eq!(list.status, 200);
    list.assert_contains("<code>order.created</code>");
    list.assert_contains("href=\"/console/event-types/settings?type=order.created\"");

    let form = get(&app, "/console/event-types/settings?type=order.created").await;
    assert_eq!(form.status, 200);
    form.assert_contains("1 events stored.");
    form.assert_contains("Not configured yet");
    form.assert_contains("id=\"type-schema\" name=\"schema\"");

    // Wrong values: each error beside its field, the input kept, nothing saved.
    let invalid = post_form(
        &app,
        "/console/event-types/settings",
        &[
            ("type", "order.created"),
            ("description", "Orders"),
            ("schema", "{\"type\": \"integr\"}"),
            ("processing_timeout_ms", "soon"),
            ("max_attempts", "0"),
            ("retry_backoff_ms", "100, 200"),
        ],
    )
    .await;
    assert_eq!(invalid.status, 400);
    invalid.assert_contains("The settings were not saved");
    invalid.assert_contains(
        "id=\"type-timeout-error\" data-server-error>&#39;soon&#39; is not a whole number",
    );
    invalid.assert_contains("value=\"Orders\"");
    // The API's own validation speaks too, at the same fields.
    invalid
        .assert_contains("id=\"type-schema-error\" data-server-error>is not a valid JSON Schema");
    invalid.assert_contains(
        "id=\"type-attempts-error\" data-server-error>must be an integer from 1 to 100",
    );
    let (_, body) = app.get_json("/event-types/order.created").await;
    assert_eq!(body["configured"], false, "{body}");

    let saved = post_form(
        &app,
        "/console/event-types/settings",
        &[
            ("type", "order.created"),
            ("description", "Orders"),
            ("schema", "{\"required\": [\"amount\"]}"),
            ("processing_timeout_ms", "2500"),
            ("max_attempts", ""),
            ("retry_backoff_ms", "100, 200"),
        ],
    )
    .await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    let (_, body) = app.get_json("/event-types/order.created").await;
    assert_eq!(body["schema"], json!({"required": ["amount"]}));
    assert_eq!(body["processing_timeout_ms"], 2500);
    assert_eq!(body["max_attempts"], Value::Null);
    assert_eq!(body["retry_backoff_ms"], json!([100, 200]));
    let list = get(&app, "/console/event-types?saved=order.created").await;
    list.assert_contains("Settings of order.created saved.");
    list.assert_contains("<span class=\"badge\">checked</span>");
    // The schema now guards ingest.
    let (status, _) = app
        .post(
            "/events",
            &json!({"id": "e-2", "type": "order.created", "data": {}}),
        )
        .await;
    assert_eq!(status, 400);
}
