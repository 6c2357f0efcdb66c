//! Broker sources against the real servers: NATS JetStream (127.0.0.1:4222) and RabbitMQ
//! (127.0.0.1:5672). Messages become events once each; a poison message is put aside where
//! the broker keeps such messages and blocks nothing; a consuming process that dies mid-stream
//! loses nothing and stores nothing twice.

use crate::helpers::{fresh_database, start_on, Db, TestApp};
use async_nats::jetstream;
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::time::Duration;

pub(crate) const NATS_URL: &str = "nats://127.0.0.1:4222";
pub(crate) const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A broker that is not running fails the test in CI and skips it elsewhere.
fn unavailable(what: &str, error: impl std::fmt::Display) -> Option<()> {
    assert!(
        std::env::var("CI").is_err(),
        "{what} must be running for CI: {error}"
    );
    eprintln!("skipped: {what} is not running ({error})");
    None
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

pub(crate) async fn nats() -> Option<jetstream::Context> {
    match async_nats::connect(NATS_URL).await {
        Ok(client) => Some(jetstream::new(client)),
        Err(error) => {
            unavailable("NATS", error);
            None
        }
    }
}

/// A fresh stream taking `<prefix>.>`.
pub(crate) async fn stream(js: &jetstream::Context) -> (String, String) {
    let name = unique("SLUICE_");
    let prefix = unique("t");
    js.create_stream(jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .expect("stream created");
    (name, prefix)
}

async fn publish(js: &jetstream::Context, subject: String, id: Option<&str>, payload: Vec<u8>) {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = id {
        headers.insert("Nats-Msg-Id", id);
    }
    js.publish_with_headers(subject, headers, payload.into())
        .await
        .expect("published")
        .await
        .expect("acknowledged by JetStream");
}

async fn event_count(app: &TestApp) -> i64 {
    app.sql_number("SELECT COUNT(*) FROM events").await
}

async fn wait_for_events(app: &TestApp, count: i64) {
    for _ in 0..300 {
        if event_count(app).await >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {count} events, have {}", event_count(app).await);
}

async fn source(app: &TestApp, name: &str) -> Value {
    let (status, shown) = app.get_json(&format!("/sources/{name}")).await;
    assert_eq!(status, 200, "{shown}");
    shown
}

async fn wait_for_rejected(app: &TestApp, name: &str, rejected: i64) -> Value {
    for _ in 0..100 {
        let shown = source(app, name).await;
        if shown["rejected"] == rejected {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} never showed {rejected} rejected: {}",
        source(app, name).await
    );
}

crate::story!(nats_messages_become_events_once_each_and_a_poison_one_is_terminated);
async fn nats_messages_become_events_once_each_and_a_poison_one_is_terminated(app: TestApp) {
    let Some(js) = nats().await else { return };
    let (stream_name, prefix) = stream(&js).await;
    let (status, created) = app
        .put(
            "/sources/orders",
            &json!({"kind": "nats", "url": NATS_URL, "stream": stream_name,
                    "durable": "sluice", "id": {"pointer": "/order"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    for n in 0..10 {
        let body = json!({"order": format!("o-{n}"), "total": n});
        publish(
            &js,
            format!("{prefix}.created"),
            None,
            body.to_string().into_bytes(),
        )
        .await;
    }
    // The same order published again (a producer's retry): one event.
    publish(
        &js,
        format!("{prefix}.created"),
        None,
        json!({"order": "o-3", "total": 3}).to_string().into_bytes(),
    )
    .await;
    // Not JSON: terminated, counted, and the messages after it still arrive.
    publish(&js, format!("{prefix}.created"), None, b"not json".to_vec()).await;
    publish(
        &js,
        format!("{prefix}.paid"),
        None,
        json!({"order": "o-10"}).to_string().into_bytes(),
    )
    .await;

    wait_for_events(&app, 11).await;
    let shown = wait_for_rejected(&app, "orders", 1).await;
    assert!(
        shown["last_rejection"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{shown}"
    );
    assert_eq!(event_count(&app).await, 11);
    let (_, paid) = app.get_json(&format!("/events?type={prefix}.paid")).await;
    assert_eq!(
        paid["data"][0]["external_id"], "o-10",
        "the subject is the type: {paid}"
    );

    // JetStream's consumer holds nothing back: everything was acknowledged or terminated.
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .get_consumer("sluice")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    js.delete_stream(&stream_name).await.unwrap();
    app.stop().await;
}

crate::story!(rabbitmq_messages_become_events_and_a_poison_one_is_dead_lettered);
async fn rabbitmq_messages_become_events_and_a_poison_one_is_dead_lettered(app: TestApp) {
    let connection = match Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
        Ok(connection) => connection,
        Err(error) => {
            unavailable("RabbitMQ", error);
            return;
        }
    };
    let channel = connection.create_channel().await.unwrap();
    let queue = unique("sluice-test-");
    let dead = format!("{queue}.dead");
    channel
        .queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    arguments.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dead.as_str().into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            arguments,
        )
        .await
        .unwrap();
    let (status, created) = app
        .put(
            "/sources/shop",
            &json!({"kind": "rabbitmq", "url": AMQP_URL, "queue": queue}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["config"]["url"],
        "amqp://guest:********@127.0.0.1:5672/%2f"
    );
    let send = |id: Option<&str>, kind: &str, body: Vec<u8>| {
        let mut properties = BasicProperties::default().with_type(kind.into());
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        let channel = channel.clone();
        let queue = queue.clone();
        async move {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    for n in 0..5 {
        let id = format!("m-{n}");
        send(
            Some(&id),
            "shop.order",
            json!({"n": n}).to_string().into_bytes(),
        )
        .await;
    }
    send(
        Some("m-1"),
        "shop.order",
        json!({"n": 1}).to_string().into_bytes(),
    )
    .await;
    // No message id and the source names none: it can never become an event.
    send(
        None,
        "shop.order",
        json!({"n": 99}).to_string().into_bytes(),
    )
    .await;
    send(
        Some("m-5"),
        "shop.order",
        json!({"n": 5}).to_string().into_bytes(),
    )
    .await;

    wait_for_events(&app, 6).await;
    let shown = wait_for_rejected(&app, "shop", 1).await;
    assert!(
        shown["last_rejection"].as_str().unwrap().contains("id"),
        "{shown}"
    );
    assert_eq!(
        shown["accepted"], 7,
        "six events and one duplicate: {shown}"
    );
    assert_eq!(event_count(&app).await, 6);
    let poison = channel
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the refused message is dead-lettered");
    assert_eq!(
        poison.delivery.data,
        json!({"n": 99}).to_string().into_bytes()
    );
    app.stop().await;
    let _ = connection.close(200, "done".into()).await;
}

/// A process consuming a stream dies mid-stream (its runtime vanishes, as with kill -9);
/// another takes over: every message is an event, none twice.
async fn a_consumer_killed_mid_stream_loses_nothing_and_stores_nothing_twice(db: Db) {
    const MESSAGES: usize = 400;
    let Some(js) = nats().await else { return };
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let url = database.url.clone();
    let (stream_name, prefix) = stream(&js).await;
    let doomed_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let doomed = {
        let url = url.clone();
        doomed_runtime
            .spawn(async move { start_on(db, &url, &[]).await })
            .await
            .unwrap()
    };
    let (status, created) = doomed
        .put(
            "/sources/stream",
            &json!({"kind": "nats", "url": NATS_URL, "stream": stream_name, "durable": "sluice",
                    "ack_wait_s": 2, "max_in_flight": 16}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    for n in 0..MESSAGES {
        let id = format!("e-{n}");
        publish(
            &js,
            format!("{prefix}.tick"),
            Some(&id),
            json!({"n": n}).to_string().into_bytes(),
        )
        .await;
    }
    while event_count(&doomed).await == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    doomed_runtime.shutdown_background();
    let at_kill = event_count(&doomed).await;
    std::mem::forget(doomed);
    eprintln!("killed with {at_kill} of {MESSAGES} events stored");

    let survivor = start_on(db, &url, &[]).await;
    wait_for_events(&survivor, MESSAGES as i64).await;
    // Whatever was redelivered (the messages in hand at the kill) found its event stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(event_count(&survivor).await, MESSAGES as i64);
    let distinct = survivor
        .sql_number("SELECT COUNT(DISTINCT external_id) FROM events")
        .await;
    assert_eq!(distinct, MESSAGES as i64);
    js.delete_stream(&stream_name).await.unwrap();
    survivor.stop().await;
}

mod a_consumer_killed_mid_stream_loses_nothing_and_stores_nothing_twice {
    use crate::helpers::Db;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_consumer_killed_mid_stream_loses_nothing_and_stores_nothing_twice(Db::Sqlite)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_consumer_killed_mid_stream_loses_nothing_and_stores_nothing_twice(Db::Postgres)
            .await;
    }
}

crate::story!(a_broker_source_that_cannot_connect_says_why_until_it_does);
async fn a_broker_source_that_cannot_connect_says_why_until_it_does(app: TestApp) {
    let Some(js) = nats().await else { return };
    let stream_name = unique("SLUICE_LATER_");
    let prefix = unique("later");
    let (status, _) = app
        .put(
            "/sources/later",
            &json!({"kind": "nats", "url": "nats://sluice:hunter2@127.0.0.1:4222",
                    "stream": stream_name, "durable": "sluice"}),
        )
        .await;
    assert_eq!(status, 201);
    let mut shown = source(&app, "later").await;
    for _ in 0..100 {
        if shown["last_error"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        shown = source(&app, "later").await;
    }
    let error = shown["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(!error.contains("hunter2"), "{error}");
    let page = app.get("/console/sources").await.text().await.unwrap();
    assert!(page.contains("cannot connect"), "{page}");
    assert!(!page.contains("hunter2"), "{page}");

    // The stream appears (and the server takes any credentials): the consumer connects,
    // the error clears, and the stream's messages arrive.
    js.create_stream(jetstream::stream::Config {
        name: stream_name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    publish(&js, format!("{prefix}.x"), Some("l-1"), b"{}".to_vec()).await;
    wait_for_events(&app, 1).await;
    for _ in 0..100 {
        if source(&app, "later").await["last_error"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(source(&app, "later").await["last_error"].is_null());
    js.delete_stream(&stream_name).await.unwrap();
    app.stop().await;
}
