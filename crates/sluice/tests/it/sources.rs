//! Sources: third-party webhooks verified, mapped to events and stored once; every refusal
//! counted and shown.

use crate::helpers::{Answer, TestApp};
use crate::story;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

fn hex(bytes: Vec<u8>) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_of(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Posts `body` to a source with the given headers.
async fn deliver(
    app: &TestApp,
    source: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/sources/{source}/events")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.answer().await
}

async fn events_of_type(app: &TestApp, event_type: &str) -> Vec<Value> {
    let (status, page) = app.get_json(&format!("/events?type={event_type}")).await;
    assert_eq!(status, 200);
    page["data"].as_array().unwrap().clone()
}

/// The counts are added up every second: waits until they show `accepted` and `rejected`.
async fn wait_for_counts(app: &TestApp, source: &str, accepted: i64, rejected: i64) -> Value {
    for _ in 0..100 {
        let (status, shown) = app.get_json(&format!("/sources/{source}")).await;
        assert_eq!(status, 200, "{shown}");
        if shown["accepted"] == accepted && shown["rejected"] == rejected {
            return shown;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, shown) = app.get_json(&format!("/sources/{source}")).await;
    panic!("expected {accepted} accepted and {rejected} rejected: {shown}");
}

story!(a_code_host_webhook_signed_with_hmac_becomes_one_event_and_a_bad_one_none);
async fn a_code_host_webhook_signed_with_hmac_becomes_one_event_and_a_bad_one_none(app: TestApp) {
    let (status, source) = app
        .put(
            "/sources/github",
            &json!({
                "verify": {"scheme": "hmac_sha256", "secret": "It's a Secret to Everybody",
                           "header": "X-Hub-Signature-256", "prefix": "sha256="},
                "id": {"header": "X-GitHub-Delivery"},
                "type": {"header": "X-GitHub-Event"},
            }),
        )
        .await;
    assert_eq!(status, 201, "{source}");
    assert_eq!(source["receive_path"], "/sources/github/events");
    assert_eq!(source["config"]["verify"]["secret"], "********");

    let body = r#"{"action":"opened","number":7}"#;
    let signature =
        |key: &[u8], body: &str| format!("sha256={}", hex(hmac_of(key, &[body.as_bytes()])));
    let good = [
        ("X-GitHub-Delivery", "d-1".to_owned()),
        ("X-GitHub-Event", "pull_request".to_owned()),
        (
            "X-Hub-Signature-256",
            signature(b"It's a Secret to Everybody", body),
        ),
    ];
    let (status, stored) = deliver(&app, "github", &good, body).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["duplicate"], false);
    assert_eq!(stored["external_id"], "d-1");

    // The provider retries the same delivery: a duplicate, still one event.
    let (status, again) = deliver(&app, "github", &good, body).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["duplicate"], true);

    // Tampered body, wrong secret, missing signature: 401, nothing stored.
    let tampered = r#"{"action":"opened","number":8}"#;
    let (status, refused) = deliver(&app, "github", &good, tampered).await;
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["error"], "Unauthorized");
    let wrong = [
        ("X-GitHub-Delivery", "d-2".to_owned()),
        ("X-GitHub-Event", "push".to_owned()),
        ("X-Hub-Signature-256", signature(b"another secret", body)),
    ];
    assert_eq!(deliver(&app, "github", &wrong, body).await.0, 401);
    let (status, missing) = deliver(&app, "github", &wrong[..2], body).await;
    assert_eq!(status, 401);
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("X-Hub-Signature-256"),
        "{missing}"
    );

    let events = events_of_type(&app, "pull_request").await;
    assert_eq!(events.len(), 1);
    let (_, event) = app.get_json(&format!("/events/{}", events[0]["id"])).await;
    assert_eq!(event["payload"], json!({"action": "opened", "number": 7}));
    assert!(events_of_type(&app, "push").await.is_empty());

    let shown = wait_for_counts(&app, "github", 2, 3).await;
    assert!(
        shown["last_rejection"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{shown}"
    );
    // The console shows the refusals, never the secret.
    let page = app.get("/console/sources").await.text().await.unwrap();
    assert!(page.contains("/sources/github/events"), "{page}");
    assert!(page.contains("hmac_sha256"), "{page}");
    assert!(
        page.contains("X-Hub-Signature-256 header is missing"),
        "{page}"
    );
    assert!(!page.contains("Secret to Everybody"), "{page}");
    app.stop().await;
}

story!(a_standard_webhook_is_verified_and_a_stale_one_refused);
async fn a_standard_webhook_is_verified_and_a_stale_one_refused(app: TestApp) {
    let key = b"a key of some length";
    let secret = format!("whsec_{}", BASE64.encode(key));
    let (status, _) = app
        .put(
            "/sources/billing",
            &json!({"verify": {"scheme": "standard_webhooks", "secret": secret},
                    "type": {"pointer": "/type"}, "data": {"pointer": "/data"}}),
        )
        .await;
    assert_eq!(status, 201);
    let body = r#"{"type":"invoice.paid","data":{"invoice":"in_1","amount":100}}"#;
    let sign = |id: &str, at: i64| {
        let signature = BASE64.encode(hmac_of(
            key,
            &[
                id.as_bytes(),
                b".",
                at.to_string().as_bytes(),
                b".",
                body.as_bytes(),
            ],
        ));
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", at.to_string()),
            ("webhook-signature", format!("v1,{signature}")),
        ]
    };
    let now = chrono::Utc::now().timestamp();
    let (status, stored) = deliver(&app, "billing", &sign("msg_1", now), body).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["external_id"], "msg_1");
    assert_eq!(stored["type"], "invoice.paid");

    // Captured and sent again ten minutes later: refused, even with a valid signature.
    let (status, stale) = deliver(&app, "billing", &sign("msg_2", now - 600), body).await;
    assert_eq!(status, 401, "{stale}");

    // Saving again without the secret keeps it: the next delivery still verifies.
    let (status, replaced) = app
        .put(
            "/sources/billing",
            &json!({"verify": {"scheme": "standard_webhooks", "tolerance_s": 60},
                    "type": {"pointer": "/type"}, "data": {"pointer": "/data"}}),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    let (status, _) = deliver(&app, "billing", &sign("msg_3", now), body).await;
    assert_eq!(status, 201);

    let events = events_of_type(&app, "invoice.paid").await;
    assert_eq!(events.len(), 2);
    let (_, event) = app.get_json(&format!("/events/{}", events[0]["id"])).await;
    assert_eq!(event["payload"], json!({"invoice": "in_1", "amount": 100}));
    app.stop().await;
}

story!(a_payment_provider_signature_with_a_timestamp_is_checked);
async fn a_payment_provider_signature_with_a_timestamp_is_checked(app: TestApp) {
    let (status, _) = app
        .put(
            "/sources/payments",
            &json!({"verify": {"scheme": "timestamped_hmac", "secret": "whsec_test",
                               "header": "Stripe-Signature"},
                    "id": {"pointer": "/id"}, "type": {"pointer": "/type"},
                    "data": {"pointer": "/data/object"}}),
        )
        .await;
    assert_eq!(status, 201);
    let body = r#"{"id":"evt_1","type":"charge.succeeded","data":{"object":{"amount":5}}}"#;
    let t = chrono::Utc::now().timestamp().to_string();
    let v1 = hex(hmac_of(
        b"whsec_test",
        &[t.as_bytes(), b".", body.as_bytes()],
    ));
    let header = [("Stripe-Signature", format!("t={t},v1={v1}"))];
    let (status, stored) = deliver(&app, "payments", &header, body).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["external_id"], "evt_1");
    let forged = [("Stripe-Signature", format!("t={t},v1={}", "0".repeat(64)))];
    assert_eq!(deliver(&app, "payments", &forged, body).await.0, 401);

    // Verified but without the id where the source says it is: a 400 naming it.
    let no_id = r#"{"type":"charge.succeeded","data":{"object":{}}}"#;
    let v1 = hex(hmac_of(
        b"whsec_test",
        &[t.as_bytes(), b".", no_id.as_bytes()],
    ));
    let header = [("Stripe-Signature", format!("t={t},v1={v1}"))];
    let (status, missing) = deliver(&app, "payments", &header, no_id).await;
    assert_eq!(status, 400, "{missing}");
    assert_eq!(missing["details"][0]["path"], "id");
    app.stop().await;
}

story!(sources_are_validated_listed_and_deleted);
async fn sources_are_validated_listed_and_deleted(app: TestApp) {
    let (status, invalid) = app
        .put(
            "/sources/shop",
            &json!({"verify": {"scheme": "hmac_sha256", "secret": "s"}, "id": {"pointer": "x"}}),
        )
        .await;
    assert_eq!(status, 400, "{invalid}");
    let paths: Vec<&str> = invalid["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["verify.header", "id.pointer", "type"], "{invalid}");
    let (status, _) = app
        .put("/sources/Bad%20Name", &json!({"verify": {"scheme": "none"}, "type": {"value": "t"}, "id": {"pointer": "/id"}}))
        .await;
    assert_eq!(status, 400);

    let (status, _) = app
        .put(
            "/sources/shop",
            &json!({"verify": {"scheme": "none"}, "id": {"pointer": "/id"}, "type": {"value": "shop.order"}}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, list) = app.get_json("/sources").await;
    assert_eq!(list["count"], 1);
    assert_eq!(list["data"][0]["name"], "shop");
    let (status, stored) = deliver(&app, "shop", &[], r#"{"id":"o-1","total":3}"#).await;
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["type"], "shop.order");

    assert_eq!(app.delete("/sources/shop").await.0, 200);
    assert_eq!(app.get_json("/sources/shop").await.0, 404);
    assert_eq!(deliver(&app, "shop", &[], r#"{"id":"o-2"}"#).await.0, 404);
    app.stop().await;
}

story!(
    a_source_that_checks_no_signature_needs_an_ingest_key,
    "--auth",
    "api_key"
);
async fn a_source_that_checks_no_signature_needs_an_ingest_key(app: TestApp) {
    let admin = app.create_key("admin", &["admin"]).await;
    let reader = app.create_key("reader", &["read"]).await;
    let ingest = app.create_key("producer", &["ingest"]).await;
    let (status, _) = app
        .with_key(Method::PUT, "/sources/internal", &admin)
        .json(&json!({"verify": {"scheme": "none"}, "id": {"pointer": "/id"}, "type": {"value": "internal"}}))
        .answer()
        .await;
    assert_eq!(status, 201);
    let body = json!({"id": "i-1"});
    let path = "/sources/internal/events";
    assert_eq!(app.post(path, &body).await.0, 401);
    assert_eq!(
        app.with_key(Method::POST, path, &reader)
            .json(&body)
            .answer()
            .await
            .0,
        403
    );
    let (status, stored) = app
        .with_key(Method::POST, path, &ingest)
        .json(&body)
        .answer()
        .await;
    assert_eq!(status, 201, "{stored}");

    // A signed source needs no key: its signature is the credential.
    let (status, _) = app
        .with_key(Method::PUT, "/sources/signed", &admin)
        .json(
            &json!({"verify": {"scheme": "hmac_sha256", "secret": "k", "header": "X-Sig"},
                      "id": {"pointer": "/id"}, "type": {"value": "signed"}}),
        )
        .answer()
        .await;
    assert_eq!(status, 201);
    let text = r#"{"id":"s-1"}"#;
    let signature = hex(hmac_of(b"k", &[text.as_bytes()]));
    let (status, stored) = deliver(&app, "signed", &[("X-Sig", signature)], text).await;
    assert_eq!(status, 201, "{stored}");
    app.stop().await;
}
