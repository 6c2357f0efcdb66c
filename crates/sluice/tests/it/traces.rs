//! OpenTelemetry traces across processes: `sluice api` and `sluice worker` run as processes of
//! their own (each with its own subscriber, as in production), export to a collector in the
//! test that decodes OTLP/HTTP protobuf, and one event is followed from the producer's
//! `traceparent` to the receiver's.

use crate::brokers::{nats, stream, NATS_URL};
use crate::helpers::{fresh_database, Db};
use crate::receiver::Receiver;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One span as the collector received it, ids in hex.
#[derive(Debug, Clone)]
struct ExportedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP collector: a receiver whose `POST /v1/traces` bodies are decoded on reading.
struct Collector {
    url: String,
    receiver: Receiver,
}

impl Collector {
    async fn start() -> Collector {
        let receiver = Receiver::start(200, 0).await;
        Collector {
            url: receiver.url.clone(),
            receiver,
        }
    }

    fn spans(&self) -> Vec<ExportedSpan> {
        self.receiver
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/traces")
            .flat_map(|r| {
                let request = ExportTraceServiceRequest::decode(r.raw.clone())
                    .expect("an OTLP protobuf export");
                exported(request)
            })
            .collect()
    }
}

fn exported(request: ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut kept = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(ExportedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| {
                            let value = a.value.as_ref().and_then(|v| v.value.as_ref());
                            (a.key.clone(), text(value))
                        })
                        .collect(),
                });
            }
        }
    }
    kept
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// `sluice <role>` as a process of its own, exporting to `collector` as `service`.
struct Process(Child);

impl Process {
    fn start(role: &str, database_url: &str, port: Option<u16>, collector: &Collector) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .arg(role)
            .args(["--database-url", database_url, "--log-level", "warn"])
            .args(["--webhook-allow-private", "true"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
            .env("OTEL_SERVICE_NAME", format!("sluice-{role}"))
            // Export within a tenth of a second rather than the default five.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(Stdio::null());
        if let Some(port) = port {
            command.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        }
        Process(command.spawn().expect("sluice starts"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `sluice api` and `sluice worker` on one database, both exporting to one collector.
struct Sluice {
    api: String,
    client: reqwest::Client,
    collector: Collector,
    _processes: [Process; 2],
}

impl Sluice {
    async fn start(database_url: &str) -> Sluice {
        let collector = Collector::start().await;
        let port = free_port();
        let api_process = Process::start("api", database_url, Some(port), &collector);
        let api = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        wait_for("the API process", async || {
            let ready = client.get(format!("{api}/ready")).send().await.ok()?;
            ready.status().is_success().then_some(())
        })
        .await;
        let worker = Process::start("worker", database_url, None, &collector);
        Sluice {
            api,
            client,
            collector,
            _processes: [api_process, worker],
        }
    }

    async fn post(&self, path: &str, body: &serde_json::Value) -> u16 {
        let response = self
            .client
            .post(format!("{}{path}", self.api))
            .json(body)
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }

    /// Ingests the `order.paid` event `id`, sent with the producer's `traceparent`.
    async fn pay(&self, id: &str, traceparent: &str) {
        let response = self
            .client
            .post(format!("{}/events", self.api))
            .header("traceparent", traceparent)
            .json(&json!({"id": id, "type": "order.paid", "data": {"total": 12}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

/// sluice's API and worker processes on `database_url`, with one rule: every `order.paid`
/// is delivered to `receiver`'s `/hook`.
async fn shipping_to(receiver: &Receiver, database_url: &str) -> Sluice {
    let sluice = Sluice::start(database_url).await;
    let rule = json!({"name": "ship", "event_type": "order.paid", "condition": true,
        "action": {"type": "call_webhook", "params": {"url": format!("{}/hook", receiver.url)}}});
    assert_eq!(sluice.post("/rules", &rule).await, 201);
    sluice
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";

async fn one_trace_from_the_producer_through_the_api_and_a_worker_to_the_receiver(db: Db) {
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let receiver = Receiver::start(200, 0).await;
    let sluice = shipping_to(&receiver, &database.url).await;
    let collector = &sluice.collector;
    sluice
        .pay("order-1", &format!("00-{TRACE_ID}-{PRODUCER_SPAN}-01"))
        .await;

    // The receiver continues the trace: same trace id, its parent the delivery's span.
    let delivered = wait_for("the webhook", async || receiver.requests().first().cloned()).await;
    let traceparent = delivered
        .header("traceparent")
        .unwrap_or_else(|| panic!("the webhook carries a traceparent: {:?}", delivered.headers));
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        parts[1], TRACE_ID,
        "the producer's trace reaches the receiver"
    );
    let delivery_span = parts[2].to_owned();

    // Both processes export their spans of that one trace, joined parent to child.
    let spans = wait_for("the spans of both processes", async || {
        let spans = collector.spans();
        let action = spans.iter().any(|s| s.span_id == delivery_span);
        let request = spans.iter().any(|s| s.name == "POST /events");
        (action && request).then_some(spans)
    })
    .await;
    let ours: Vec<&ExportedSpan> = spans.iter().filter(|s| s.trace_id == TRACE_ID).collect();
    let named = |name: &str| {
        *ours
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in the trace: {ours:#?}"))
    };
    let request = named("POST /events");
    assert_eq!(request.service, "sluice-api");
    assert_eq!(
        request.parent_span_id, PRODUCER_SPAN,
        "ingest continues the producer's span"
    );
    assert_eq!(request.attributes["http.response.status_code"], "201");

    let attempt = named("process order.paid");
    assert_eq!(attempt.service, "sluice-worker");
    assert_eq!(
        attempt.parent_span_id, request.span_id,
        "the worker's attempt continues the ingest span, across processes"
    );
    assert_eq!(attempt.attributes["sluice.event.external_id"], "order-1");
    assert_eq!(attempt.attributes["sluice.attempt.status"], "success");

    let rule = named("rule ship");
    assert_eq!(rule.parent_span_id, attempt.span_id);
    assert_eq!(rule.attributes["sluice.rule.result"], "applied");
    let action = ours
        .iter()
        .find(|s| s.span_id == delivery_span)
        .expect("the delivery's span is exported");
    assert_eq!(action.parent_span_id, rule.span_id);
    assert_eq!(action.attributes["sluice.action.kind"], "call_webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_api_process_a_worker_process_and_the_receiver_on_sqlite() {
    one_trace_from_the_producer_through_the_api_and_a_worker_to_the_receiver(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_api_process_a_worker_process_and_the_receiver_on_postgres() {
    one_trace_from_the_producer_through_the_api_and_a_worker_to_the_receiver(Db::Postgres).await;
}

const BROKER_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const BROKER_PRODUCER_SPAN: &str = "b7ad6b7169203331";

/// A message a producer published with its `traceparent` comes in through a NATS source and
/// goes out to another subject with the trace continued.
async fn a_broker_message_keeps_its_trace_through_sluice_to_the_next_broker(db: Db) {
    let Some(js) = nats().await else { return };
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let (in_stream, in_prefix) = stream(&js).await;
    let (out_stream, out_prefix) = stream(&js).await;
    let sluice = Sluice::start(&database.url).await;
    let source = json!({"kind": "nats", "url": NATS_URL, "stream": in_stream,
        "durable": "sluice", "id": {"pointer": "/order"}});
    let created = sluice
        .client
        .put(format!("{}/sources/orders", sluice.api))
        .json(&source)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let rule = json!({"name": "relay", "event_type": format!("{in_prefix}.created"),
        "condition": true, "action": {"type": "publish_nats", "params": {"url": NATS_URL,
        "subject": format!("{out_prefix}.relayed"), "payload": {"order": "{{ external_id }}"}}}});
    assert_eq!(sluice.post("/rules", &rule).await, 201);

    let mut headers = async_nats::HeaderMap::new();
    let traceparent = format!("00-{BROKER_TRACE_ID}-{BROKER_PRODUCER_SPAN}-01");
    headers.insert("traceparent", traceparent.as_str());
    js.publish_with_headers(
        format!("{in_prefix}.created"),
        headers,
        json!({"order": "o-1"}).to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let relayed = wait_for("the relayed message", async || {
        let out = js.get_stream(&out_stream).await.ok()?;
        out.get_raw_message(1).await.ok()
    })
    .await;
    let sent = relayed
        .headers
        .get("traceparent")
        .expect("the published message carries a traceparent")
        .as_str()
        .to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], BROKER_TRACE_ID, "{sent}");

    let spans = wait_for("the worker's spans", async || {
        let spans = sluice.collector.spans();
        spans.iter().any(|s| s.span_id == parts[2]).then_some(spans)
    })
    .await;
    let ours: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == BROKER_TRACE_ID)
        .collect();
    let received = ours
        .iter()
        .find(|s| s.name == "receive orders")
        .unwrap_or_else(|| panic!("no receive span: {ours:#?}"));
    assert_eq!(received.parent_span_id, BROKER_PRODUCER_SPAN);
    let attempt = ours
        .iter()
        .find(|s| s.name.starts_with("process "))
        .unwrap_or_else(|| panic!("no attempt span: {ours:#?}"));
    assert_eq!(attempt.parent_span_id, received.span_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_message_keeps_its_trace_through_sluice_on_sqlite() {
    a_broker_message_keeps_its_trace_through_sluice_to_the_next_broker(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_message_keeps_its_trace_through_sluice_on_postgres() {
    a_broker_message_keeps_its_trace_through_sluice_to_the_next_broker(Db::Postgres).await;
}

const UNSAMPLED_TRACE_ID: &str = "5bf92f3577b34da6a3ce929d0e0e4737";

/// A producer that did not sample its trace: sluice keeps the decision. Nothing of that trace
/// is exported, and the receiver still gets the trace, marked unsampled, so that it does not
/// record it either.
async fn a_producers_unsampled_trace_is_passed_on_unsampled_and_never_exported(db: Db) {
    let Some(database) = fresh_database(db).await else {
        return;
    };
    let receiver = Receiver::start(200, 0).await;
    let sluice = shipping_to(&receiver, &database.url).await;
    let collector = &sluice.collector;
    let delivered_in = async |trace_id: &str| {
        wait_for("the webhook", async || {
            receiver.requests().iter().find_map(|request| {
                let traceparent = request.header("traceparent")?;
                traceparent.contains(trace_id).then_some(traceparent)
            })
        })
        .await
    };

    sluice
        .pay(
            "quiet",
            &format!("00-{UNSAMPLED_TRACE_ID}-{PRODUCER_SPAN}-00"),
        )
        .await;
    let passed_on = delivered_in(UNSAMPLED_TRACE_ID).await;
    let parts: Vec<&str> = passed_on.split('-').collect();
    assert_eq!(parts.len(), 4, "{passed_on}");
    assert_eq!(
        parts[1], UNSAMPLED_TRACE_ID,
        "the trace reaches the receiver"
    );
    assert_eq!(parts[3], "00", "marked unsampled: {passed_on}");
    assert_ne!(
        parts[2], PRODUCER_SPAN,
        "from sluice's own (unrecorded) span"
    );

    // An event traced after it: once its delivery's span is exported, anything of the first
    // event's trace would have been too (each process exports its spans in the order they
    // end, and the first event's had ended).
    sluice
        .pay("loud", &format!("00-{TRACE_ID}-{PRODUCER_SPAN}-01"))
        .await;
    let sampled = delivered_in(TRACE_ID).await;
    let sampled_delivery = sampled.split('-').nth(2).expect("a span id").to_owned();
    let spans = wait_for("the sampled trace's spans", async || {
        let spans = collector.spans();
        let request = spans
            .iter()
            .any(|s| s.trace_id == TRACE_ID && s.name == "POST /events");
        let delivery = spans.iter().any(|s| s.span_id == sampled_delivery);
        (request && delivery).then_some(spans)
    })
    .await;
    let leaked: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == UNSAMPLED_TRACE_ID)
        .collect();
    assert!(
        leaked.is_empty(),
        "an unsampled trace exported: {leaked:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_unsampled_trace_stays_unsampled_on_sqlite() {
    a_producers_unsampled_trace_is_passed_on_unsampled_and_never_exported(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_unsampled_trace_stays_unsampled_on_postgres() {
    a_producers_unsampled_trace_is_passed_on_unsampled_and_never_exported(Db::Postgres).await;
}
