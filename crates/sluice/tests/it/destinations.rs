//! Destinations: a rule publishes the matching event to a broker, once per event × rule ×
//! action content, through the same targets as webhooks.

use crate::brokers::{nats, stream, NATS_URL};
use crate::helpers::TestApp;
use async_nats::jetstream;
use serde_json::{json, Value};

async fn messages_in(js: &jetstream::Context, stream_name: &str) -> u64 {
    let mut handle = js.get_stream(stream_name).await.unwrap();
    handle.info().await.unwrap().state.messages
}

crate::story!(a_rule_publishes_to_jetstream_once_and_a_replay_publishes_nothing_new);
async fn a_rule_publishes_to_jetstream_once_and_a_replay_publishes_nothing_new(app: TestApp) {
    let Some(js) = nats().await else { return };
    let (stream_name, prefix) = stream(&js).await;
    let rule = json!({
        "name": "to the bus",
        "event_type": "order.created",
        "condition": true,
        "action": {"type": "publish_nats", "params": {
            "url": NATS_URL,
            "subject": format!("{prefix}.{{{{ type }}}}"),
            "headers": {"x-origin": "sluice"},
            "payload": {"order": "{{ external_id }}", "amount": "{{ data.amount }}"}}},
    });
    let (status, created) = app.post("/rules", &rule).await;
    assert_eq!(status, 201, "{created}");
    let rule_id = created["id"].as_i64().unwrap();
    let (id, _) = app
        .ingest_until(
            &json!({"id": "o-1", "type": "order.created", "data": {"amount": 7}}),
            &["processed"],
        )
        .await;
    assert_eq!(messages_in(&js, &stream_name).await, 1);

    let message = js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    assert_eq!(message.subject.as_str(), format!("{prefix}.order.created"));
    let payload: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(payload, json!({"order": "o-1", "amount": 7}));
    let attempts = app.attempts(id).await;
    let key = attempts[0]["rule_executions"][0]["idempotency_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(message.headers.get("Nats-Msg-Id").unwrap().as_str(), key);
    assert_eq!(message.headers.get("x-origin").unwrap().as_str(), "sluice");

    // A replay of the same content publishes nothing new.
    let (status, _) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
    assert_eq!(status, 200);
    app.wait_for_state(id, &["processed"]).await;
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["rule_executions"][0]["result"], "deduped");
    assert_eq!(messages_in(&js, &stream_name).await, 1);

    // A changed action publishes again.
    let (status, _) = app
        .put(
            &format!("/rules/{rule_id}"),
            &json!({"action": {"type": "publish_nats", "params": {
                "url": NATS_URL, "subject": format!("{prefix}.changed"),
                "payload": {"order": "{{ external_id }}"}}}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
    assert_eq!(status, 200);
    app.wait_for_state(id, &["processed"]).await;
    for _ in 0..50 {
        if app.attempts(id).await.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(messages_in(&js, &stream_name).await, 2);
    js.delete_stream(&stream_name).await.unwrap();
    app.stop().await;
}

crate::story!(a_publish_to_a_subject_no_stream_takes_fails_with_the_reason);
async fn a_publish_to_a_subject_no_stream_takes_fails_with_the_reason(app: TestApp) {
    if nats().await.is_none() {
        return;
    }
    let subject = format!("{}.nowhere", crate::brokers::unique("nostream"));
    let rule = json!({"name": "lost", "event_type": "t", "condition": true,
        "action": {"type": "publish_nats", "params": {"url": NATS_URL, "subject": subject}}});
    assert_eq!(app.post("/rules", &rule).await.0, 201);
    let (id, failed) = app
        .ingest_until(&json!({"id": "x", "type": "t", "data": {}}), &["failed"])
        .await;
    let attempts = app.attempts(id).await;
    let error = attempts[0]["rule_executions"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("no JetStream stream"),
        "{failed} {attempts:?}"
    );

    let (status, invalid) = app
        .post(
            "/rules",
            &json!({"name": "bad", "event_type": "t", "condition": true,
                "action": {"type": "publish_nats", "params": {"url": "http://x", "subject": "a b",
                    "headers": {"Nats-Msg-Id": "mine"}}}}),
        )
        .await;
    assert_eq!(status, 400, "{invalid}");
    let paths: Vec<&str> = invalid["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "action.params.url",
            "action.params.subject",
            "action.params.headers.Nats-Msg-Id"
        ],
        "{invalid}"
    );
    app.stop().await;
}

crate::story!(a_broker_password_in_a_rule_is_never_shown_and_survives_a_save_of_what_was_shown);
async fn a_broker_password_in_a_rule_is_never_shown_and_survives_a_save_of_what_was_shown(
    app: TestApp,
) {
    let action = json!({"type": "publish_nats", "params": {
        "url": "nats://sluice:hunter2@127.0.0.1:4222", "subject": "orders.created"}});
    let (status, created) = app
        .post(
            "/rules",
            &json!({"name": "bus", "event_type": "t", "condition": true, "action": action}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let shown = &created["current_version"]["action"];
    assert_eq!(
        shown["params"]["url"],
        "nats://sluice:********@127.0.0.1:4222"
    );
    for path in [
        format!("/rules/{id}"),
        format!("/rules/{id}/versions"),
        "/rules".into(),
    ] {
        let (_, body) = app.get_json(&path).await;
        assert!(!body.to_string().contains("hunter2"), "{path}: {body}");
    }
    let page = app
        .get(&format!("/console/rules/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains("hunter2"));

    // Saving the action as it was shown changes nothing: the password is kept.
    let (status, saved) = app
        .put(&format!("/rules/{id}"), &json!({"action": shown}))
        .await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["current_version"]["version"], 1, "{saved}");
    app.stop().await;
}

/// A connection to this machine's RabbitMQ with a new queue named from `prefix`; `None`
/// The next message in `queue`, which must hold one.
async fn take_one(channel: &lapin::Channel, queue: &str) -> lapin::message::BasicGetMessage {
    channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("one message published")
}

/// (outside CI) when RabbitMQ does not run.
async fn rabbitmq_queue(prefix: &str) -> Option<(lapin::Connection, lapin::Channel, String)> {
    use crate::brokers::{unique, AMQP_URL};
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties};
    let Ok(connection) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await
    else {
        assert!(std::env::var("CI").is_err(), "RabbitMQ must run for CI");
        return None;
    };
    let channel = connection.create_channel().await.unwrap();
    let queue = unique(prefix);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    Some((connection, channel, queue))
}

/// A broker down, then back: events for it are published to `down` (where nothing listens
/// yet) by a rule with `action`; its target opens with the events waiting, nothing is
/// published, and once a proxy on `down` forwards to the real broker (`upstream`) every event
/// is published exactly once (`published` counts what the broker holds).
async fn down_then_back(
    app: &TestApp,
    down: std::net::SocketAddr,
    target_name: &str,
    action: Value,
    upstream: &'static str,
    mut published: impl AsyncFnMut() -> usize,
) {
    use crate::targets::{target, wait_until};
    use std::time::Duration;
    const EVENTS: usize = 6;
    let rule = json!({"name": "bus", "event_type": "t", "condition": true, "action": action});
    let (status, created) = app.post("/rules", &rule).await;
    assert_eq!(status, 201, "{created}");
    for n in 0..EVENTS {
        let (status, _) = app
            .post(
                "/events",
                &json!({"id": format!("d-{n}"), "type": "t", "data": {"n": n}}),
            )
            .await;
        assert_eq!(status, 201);
    }
    wait_until(
        "the broker's target opens with events waiting",
        Duration::from_secs(30),
        async || {
            target(app, target_name)
                .await
                .is_some_and(|t| t["state"] != "closed" && t["waiting"].as_i64() > Some(0))
        },
    )
    .await;
    assert_eq!(published().await, 0);

    // The broker comes back (a proxy to the real one on the same port).
    let listener = tokio::net::TcpListener::bind(down).await.unwrap();
    let proxy = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    wait_until(
        "every event is processed",
        Duration::from_secs(60),
        async || {
            let (_, stats) = app.get_json("/events/stats").await;
            stats["processed"] == EVENTS
        },
    )
    .await;
    assert_eq!(published().await, EVENTS, "each published once");
    proxy.abort();
}

crate::story!(
    a_broker_that_is_down_opens_its_target_and_gets_everything_once_when_back,
    "--target-failure-threshold",
    "2",
    "--target-open-ms",
    "500",
    "--retry-backoff-ms",
    "100"
);
async fn a_broker_that_is_down_opens_its_target_and_gets_everything_once_when_back(app: TestApp) {
    use crate::receiver::Receiver;
    let Some(js) = nats().await else { return };
    let (stream_name, prefix) = stream(&js).await;
    // Nothing listens here yet: the broker is "down".
    let down = Receiver::refusing().await;
    let action = json!({"type": "publish_nats", "params": {
        "url": format!("nats://{down}"), "subject": format!("{prefix}.t")}});
    down_then_back(
        &app,
        down,
        &format!("nats://{down}"),
        action,
        "127.0.0.1:4222",
        async || messages_in(&js, &stream_name).await as usize,
    )
    .await;
    js.delete_stream(&stream_name).await.unwrap();
    app.stop().await;
}

crate::story!(
    a_redis_that_is_down_opens_its_target_and_gets_everything_once_when_back,
    "--target-failure-threshold",
    "2",
    "--target-open-ms",
    "500",
    "--retry-backoff-ms",
    "100"
);
async fn a_redis_that_is_down_opens_its_target_and_gets_everything_once_when_back(app: TestApp) {
    use crate::brokers::unique;
    use crate::receiver::Receiver;
    let Some(mut redis) = redis().await else {
        return;
    };
    let stream = unique("sluice-down-");
    let down = Receiver::refusing().await;
    let action = json!({"type": "publish_redis", "params": {
        "url": format!("redis://{down}"), "stream": stream}});
    down_then_back(
        &app,
        down,
        &format!("redis://{down}"),
        action,
        "127.0.0.1:6379",
        async || entries(&mut redis, &stream).await.len(),
    )
    .await;
    app.stop().await;
}

crate::story!(
    a_rabbitmq_that_is_down_opens_its_target_and_gets_everything_once_when_back,
    "--target-failure-threshold",
    "2",
    "--target-open-ms",
    "500",
    "--retry-backoff-ms",
    "100"
);
async fn a_rabbitmq_that_is_down_opens_its_target_and_gets_everything_once_when_back(app: TestApp) {
    use crate::receiver::Receiver;
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    let Some((connection, channel, queue)) = rabbitmq_queue("sluice-down-").await else {
        return;
    };
    let down = Receiver::refusing().await;
    let action = json!({"type": "publish_rabbitmq", "params": {
        "url": format!("amqp://guest:guest@{down}/%2f"), "routing_key": queue}});
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    down_then_back(
        &app,
        down,
        &format!("amqp://{down}"),
        action,
        "127.0.0.1:5672",
        async || {
            channel
                .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap()
                .message_count() as usize
        },
    )
    .await;
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

crate::story!(a_rule_publishes_to_rabbitmq_with_confirms_once_and_a_replay_publishes_nothing_new);
async fn a_rule_publishes_to_rabbitmq_with_confirms_once_and_a_replay_publishes_nothing_new(
    app: TestApp,
) {
    use crate::brokers::{unique, AMQP_URL};
    use lapin::options::BasicGetOptions;
    let Some((connection, channel, queue)) = rabbitmq_queue("sluice-out-").await else {
        return;
    };
    let rule = json!({"name": "to rabbit", "event_type": "order.created", "condition": true,
        "action": {"type": "publish_rabbitmq", "params": {"url": AMQP_URL, "routing_key": queue,
            "headers": {"x-origin": "sluice"}, "payload": {"order": "{{ external_id }}"}}}});
    let (status, created) = app.post("/rules", &rule).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["current_version"]["action"]["params"]["url"],
        "amqp://guest:********@127.0.0.1:5672/%2f"
    );
    let (id, _) = app
        .ingest_until(
            &json!({"id": "r-1", "type": "order.created", "data": {}}),
            &["processed"],
        )
        .await;
    let message = take_one(&channel, &queue).await;
    let key = app.attempts(id).await[0]["rule_executions"][0]["idempotency_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let properties = &message.delivery.properties;
    assert_eq!(properties.message_id().as_ref().unwrap().as_str(), key);
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    let payload: Value = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(payload, json!({"order": "r-1"}));

    let (status, _) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
    assert_eq!(status, 200);
    app.wait_for_state(id, &["processed"]).await;
    assert_eq!(
        app.attempts(id).await[0]["rule_executions"][0]["result"],
        "deduped"
    );
    let again = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(
        again.is_none(),
        "a replay of the same content publishes nothing"
    );

    // A routing key no queue takes fails the action with that reason.
    let (_, lost) = app
        .post(
            "/rules",
            &json!({"name": "lost", "event_type": "nowhere", "condition": true,
                "action": {"type": "publish_rabbitmq", "params": {"url": AMQP_URL,
                    "routing_key": unique("no-such-queue-")}}}),
        )
        .await;
    assert!(lost["id"].is_i64(), "{lost}");
    let (id, _) = app
        .ingest_until(
            &json!({"id": "n-1", "type": "nowhere", "data": {}}),
            &["failed"],
        )
        .await;
    let error = app.attempts(id).await[0]["rule_executions"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("no queue takes"), "{error}");
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}

const REDIS_URL: &str = "redis://127.0.0.1:6379";

async fn redis() -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(REDIS_URL).unwrap();
    match client.get_multiplexed_async_connection().await {
        Ok(connection) => Some(connection),
        Err(error) => {
            assert!(
                std::env::var("CI").is_err(),
                "Redis must run for CI: {error}"
            );
            None
        }
    }
}

/// A stream's entries, oldest first, each as field → value.
async fn entries(
    redis: &mut redis::aio::MultiplexedConnection,
    stream: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    let reply: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(redis)
        .await
        .unwrap();
    reply
        .into_iter()
        .map(|(_, fields)| fields.into_iter().collect())
        .collect()
}

crate::story!(a_rule_adds_to_a_redis_stream_once_and_dry_run_and_explain_show_the_entry);
async fn a_rule_adds_to_a_redis_stream_once_and_dry_run_and_explain_show_the_entry(app: TestApp) {
    use crate::brokers::unique;
    let Some(mut redis) = redis().await else {
        return;
    };
    let stream = unique("sluice-out-");
    let rule = json!({"name": "to redis", "event_type": "order.created", "condition": true,
        "action": {"type": "publish_redis", "params": {
            "url": REDIS_URL,
            "stream": format!("{stream}:{{{{ type }}}}"),
            "fields": {"origin": "sluice", "order": "{{ external_id }}"},
            "payload": {"order": "{{ external_id }}", "total": "{{ data.total }}"}}}});
    let (status, created) = app.post("/rules", &rule).await;
    assert_eq!(status, 201, "{created}");
    let rule_id = created["id"].as_i64().unwrap();
    let (id, _) = app
        .ingest_until(
            &json!({"id": "s-1", "type": "order.created", "data": {"total": 12.5}}),
            &["processed"],
        )
        .await;
    let key = format!("{stream}:order.created");
    let added = entries(&mut redis, &key).await;
    assert_eq!(added.len(), 1, "{added:?}");
    let attempts = app.attempts(id).await;
    let execution = &attempts[0]["rule_executions"][0];
    let idempotency_key = execution["idempotency_key"].as_str().unwrap().to_owned();
    let entry = &added[0];
    assert_eq!(entry["idempotency_key"], idempotency_key);
    assert_eq!(entry["type"], "order.created");
    assert_eq!(entry["origin"], "sluice");
    assert_eq!(entry["order"], "s-1");
    let payload: Value = serde_json::from_str(&entry["payload"]).unwrap();
    assert_eq!(payload, json!({"order": "s-1", "total": 12.5}));

    // Explain and a dry run show the entry as it was (or would be) added.
    let (status, explained) = app
        .get_json(&format!(
            "/events/{id}/executions/{}/explain",
            execution["id"]
        ))
        .await;
    assert_eq!(status, 200, "{explained}");
    let shown = &explained["action"]["params"];
    assert_eq!(explained["action"]["type"], "publish_redis", "{explained}");
    assert_eq!(shown["stream"], key.as_str());
    assert_eq!(shown["payload"], json!({"order": "s-1", "total": 12.5}));
    assert_eq!(shown["fields"]["idempotency_key"], idempotency_key.as_str());
    let (status, dry) = app
        .post(&format!("/events/{id}/replay"), &json!({"dry_run": true}))
        .await;
    assert_eq!(status, 200, "{dry}");
    let verdict = &dry["results"][0];
    assert_eq!(verdict["would"], "dedupe", "{dry}");

    // A replay of the same content adds nothing; a changed action adds again.
    let (status, _) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
    assert_eq!(status, 200);
    app.wait_for_state(id, &["processed"]).await;
    assert_eq!(
        app.attempts(id).await[0]["rule_executions"][0]["result"],
        "deduped"
    );
    assert_eq!(entries(&mut redis, &key).await.len(), 1);
    let changed = json!({"type": "publish_redis", "params": {"url": REDIS_URL,
        "stream": key, "payload": {"order": "{{ external_id }}", "v": 2}}});
    let (status, _) = app
        .put(&format!("/rules/{rule_id}"), &json!({"action": changed}))
        .await;
    assert_eq!(status, 200);
    let (_, dry) = app
        .post(&format!("/events/{id}/replay"), &json!({"dry_run": true}))
        .await;
    let verdict = &dry["results"][0];
    assert_eq!(verdict["would"], "apply", "{dry}");
    assert_eq!(verdict["target"], "redis://127.0.0.1:6379", "{dry}");
    assert_eq!(
        verdict["action"]["params"]["payload"],
        json!({"order": "s-1", "v": 2}),
        "{dry}"
    );
    assert_eq!(
        entries(&mut redis, &key).await.len(),
        1,
        "a dry run adds nothing"
    );
    let (status, _) = app.post(&format!("/events/{id}/replay"), &json!({})).await;
    assert_eq!(status, 200);
    crate::targets::wait_until(
        "the changed action adds a second entry",
        std::time::Duration::from_secs(20),
        async || entries(&mut redis.clone(), &key).await.len() == 2,
    )
    .await;
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    app.stop().await;
}

crate::story!(a_redis_stream_is_trimmed_to_maxlen_and_a_key_of_another_type_fails_the_action);
async fn a_redis_stream_is_trimmed_to_maxlen_and_a_key_of_another_type_fails_the_action(
    app: TestApp,
) {
    use crate::brokers::unique;
    const EVENTS: usize = 400;
    let Some(mut redis) = redis().await else {
        return;
    };
    let stream = unique("sluice-bounded-");
    let rule = json!({"name": "bounded", "event_type": "tick", "condition": true,
        "action": {"type": "publish_redis", "params": {
            "url": REDIS_URL, "stream": stream, "maxlen": 10}}});
    assert_eq!(app.post("/rules", &rule).await.0, 201);
    let events: Vec<Value> = (0..EVENTS)
        .map(|n| json!({"id": format!("t-{n}"), "type": "tick", "data": {"n": n}}))
        .collect();
    for chunk in events.chunks(100) {
        let (status, _) = app.post("/events/batch", &json!({"events": chunk})).await;
        assert_eq!(status, 200);
    }
    app.wait_for_processed(EVENTS as i64).await;
    let length: usize = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    // `MAXLEN ~ 10` trims whole nodes of (by default) 100 entries.
    assert!((10..EVENTS / 2).contains(&length), "{length}");

    // A key holding a string is not a stream: the action fails, not retried.
    let wrong = unique("sluice-string-");
    let _: () = redis::cmd("SET")
        .arg(&wrong)
        .arg("x")
        .query_async(&mut redis)
        .await
        .unwrap();
    let rule = json!({"name": "wrong", "event_type": "w", "condition": true,
        "action": {"type": "publish_redis", "params": {"url": REDIS_URL, "stream": wrong}}});
    assert_eq!(app.post("/rules", &rule).await.0, 201);
    let (id, _) = app
        .ingest_until(&json!({"id": "w-1", "type": "w", "data": {}}), &["failed"])
        .await;
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 1, "not retried: {attempts:?}");
    let error = attempts[0]["rule_executions"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("something else than a stream"), "{error}");

    // Validation names each bad field.
    let (status, invalid) = app
        .post(
            "/rules",
            &json!({"name": "bad", "event_type": "t", "condition": true,
                "action": {"type": "publish_redis", "params": {"url": "http://x", "stream": "",
                    "fields": {"idempotency_key": "mine"}, "maxlen": 0}}}),
        )
        .await;
    assert_eq!(status, 400, "{invalid}");
    let paths: Vec<&str> = invalid["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "action.params.url",
            "action.params.stream",
            "action.params.fields.idempotency_key",
            "action.params.maxlen"
        ],
        "{invalid}"
    );
    let _: () = redis::cmd("DEL")
        .arg(&stream)
        .arg(&wrong)
        .query_async(&mut redis)
        .await
        .unwrap();
    app.stop().await;
}

crate::story!(a_rabbitmq_publish_carries_the_properties_a_rule_sets_but_never_sluices_own);
async fn a_rabbitmq_publish_carries_the_properties_a_rule_sets_but_never_sluices_own(app: TestApp) {
    use crate::brokers::AMQP_URL;
    let Some((connection, channel, queue)) = rabbitmq_queue("sluice-props-").await else {
        return;
    };
    let rule = |properties: Value| {
        json!({"name": "to rabbit", "event_type": "order.paid", "condition": true,
            "action": {"type": "publish_rabbitmq", "params": {"url": AMQP_URL,
                "routing_key": queue, "payload": {"order": "{{ external_id }}"},
                "properties": properties}}})
    };
    // What sluice sets itself, and what is not a property, is refused naming the field.
    for (properties, field) in [
        (json!({"message_id": "mine"}), "properties.message_id"),
        (json!({"priority": 12}), "properties.priority"),
        (json!({"expiration_ms": 0}), "properties.expiration_ms"),
        (json!({"content_type": "a\nb"}), "properties.content_type"),
        (json!({"colour": "red"}), "properties.colour"),
    ] {
        let (status, body) = app.post("/rules", &rule(properties)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["details"][0]["path"],
            format!("action.params.{field}"),
            "{body}"
        );
    }
    let mut both = rule(json!({"headers": {"x-a": "1"}}));
    both["action"]["params"]["headers"] = json!({"x-b": "2"});
    let (status, body) = app.post("/rules", &both).await;
    assert_eq!(status, 400, "{body}");

    let (status, created) = app
        .post(
            "/rules",
            &rule(
                json!({"content_type": "application/vnd.order+json", "app_id": "shop",
                "correlation_id": "{{ external_id }}", "reply_to": "replies", "priority": 5,
                "expiration_ms": 60000, "headers": {"x-origin": "sluice"}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (id, _) = app
        .ingest_until(
            &json!({"id": "p-1", "type": "order.paid", "data": {}}),
            &["processed"],
        )
        .await;
    let message = take_one(&channel, &queue).await;
    let properties = &message.delivery.properties;
    let text =
        |value: &Option<lapin::types::ShortString>| value.as_ref().map(|v| v.as_str().to_owned());
    assert_eq!(
        text(properties.content_type()).as_deref(),
        Some("application/vnd.order+json")
    );
    assert_eq!(text(properties.app_id()).as_deref(), Some("shop"));
    assert_eq!(text(properties.correlation_id()).as_deref(), Some("p-1"));
    assert_eq!(text(properties.reply_to()).as_deref(), Some("replies"));
    assert_eq!(*properties.priority(), Some(5));
    assert_eq!(text(properties.expiration()).as_deref(), Some("60000"));
    assert_eq!(text(properties.kind()).as_deref(), Some("order.paid"));
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert!(properties.timestamp().is_some_and(|t| t > 0));
    let headers = properties.headers().as_ref().expect("headers");
    assert!(format!("{headers:?}").contains("x-origin"), "{headers:?}");
    let key = app.attempts(id).await[0]["rule_executions"][0]["idempotency_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(text(properties.message_id()).as_deref(), Some(key.as_str()));

    // A property rendered past AMQP's 255 bytes fails the action, not retried.
    let mut long = rule(json!({"correlation_id": "{{ data.reference }}"}));
    long["event_type"] = json!("order.long");
    let (status, created) = app.post("/rules", &long).await;
    assert_eq!(status, 201, "{created}");
    let (id, _) = app
        .ingest_until(
            &json!({"id": "l-1", "type": "order.long", "data": {"reference": "x".repeat(300)}}),
            &["processed", "failed"],
        )
        .await;
    let execution = &app.attempts(id).await[0]["rule_executions"][0];
    assert_eq!(execution["result"], "failed", "{execution}");
    assert!(
        execution["error"].as_str().unwrap().contains("at most 255"),
        "{execution}"
    );
    let _ = connection.close(200, "done".into()).await;
    app.stop().await;
}
