//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when the standard `OTEL_*`
//! variables ask for it, and not even created otherwise.
//!
//! A request's spans (ingest, a source's delivery) are `tracing` spans with the target
//! [`TARGET`]. Only the OpenTelemetry layer sees them, so log lines are the same with tracing
//! on or off; with it off no layer wants them, and each span costs one cached check of its
//! call site. An event's processing (its attempt, each rule, each delivery: two or three
//! spans per event, at the drain's rate) is traced with [`WorkSpan`]s, made on the
//! OpenTelemetry tracer directly: through `tracing`, each was built twice (the layer's
//! builder, then the SDK's span at its end) and made whether or not its trace was sampled.
//! Work that only tracing needs (reading or writing a `traceparent`) is behind [`on`].
//!
//! A trace crosses processes as a W3C `traceparent`: read from the request that ingests an
//! event, stored with the event (so the worker that claims it, on any machine, continues the
//! trace), and sent with every delivery (webhook header, NATS and RabbitMQ message header).

use bytes::Bytes;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tracing::{Level, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The `tracing` target of every span sluice exports.
pub const TARGET: &str = "sluice::traces";

static ON: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static TRACER: OnceLock<opentelemetry_sdk::trace::SdkTracer> = OnceLock::new();

/// Whether traces are exported by this process.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Awaits `$work` inside `$span` while traces are on, and exactly as untraced code otherwise.
/// Wrapping a future in its span moves it, and an attempt's future (with every action's
/// client inline) is large: moving it a few times per event, traces off, cost a tenth of the
/// drain rate in `memmove`. Traced, the work is boxed first, so it moves once.
macro_rules! in_span {
    ($span:expr, $work:expr) => {
        if $crate::traces::on() {
            ::tracing::Instrument::instrument(Box::pin($work), $span).await
        } else {
            $work.await
        }
    };
}
pub(crate) use in_span;

/// What the environment asks for.
#[derive(Debug, PartialEq)]
enum Setup {
    Off,
    Otlp,
}

/// Traces are exported when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER=otlp` asks for the default
/// one, unless `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Settings sluice
/// cannot honour are an error at startup rather than traces silently lost.
fn setup(var: impl Fn(&str) -> Option<String>) -> Result<Setup, String> {
    let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(Setup::Off);
    }
    let exporter = set("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase());
    match exporter.as_deref() {
        Some("none") => return Ok(Setup::Off),
        Some("otlp") | None => {}
        Some(other) => {
            return Err(format!(
                "OTEL_TRACES_EXPORTER={other} is not supported: sluice exports traces with \
                 otlp (or none)"
            ))
        }
    }
    let endpoint = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or(set("OTEL_EXPORTER_OTLP_ENDPOINT"));
    if exporter.is_none() && endpoint.is_none() {
        return Ok(Setup::Off);
    }
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or(set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(protocol) = protocol {
        if protocol.trim() != "http/protobuf" {
            return Err(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: sluice exports OTLP \
                 over HTTP with protobuf (http/protobuf, port 4318 on a collector)"
            ));
        }
    }
    Ok(Setup::Otlp)
}

/// The layer that exports sluice's spans, when the environment asks for traces (see
/// [`setup`]); `None` when it does not. Must be called on the runtime, which carries the
/// exporter's requests.
#[allow(clippy::type_complexity)]
pub fn layer<S>() -> Result<
    Option<
        Filtered<
            tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
            Targets,
            S,
        >,
    >,
    String,
>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    if setup(|name| std::env::var(name).ok())? == Setup::Off {
        return Ok(None);
    }
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "traces can only be exported from the server's runtime".to_owned())?;
    // Each request is bounded by the standard timeout (10 s unless set), as the built-in
    // clients are.
    let timeout_ms = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
    .unwrap_or(10_000);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms.max(1)))
        .build()
        .map_err(|error| format!("cannot build the OTLP client: {error}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(ExportClient { client, runtime })
        .build()
        .map_err(|error| format!("cannot set up the OTLP exporter: {error}"))?;
    let mut resource = Resource::builder();
    // The standard default is `unknown_service`; a sluice process is `sluice` unless told.
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name"));
    if !named {
        resource = resource.with_service_name("sluice");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("sluice");
    if PROVIDER.set(provider).is_err() {
        // Set up before in this process (tests start several apps).
        return Ok(None);
    }
    let _ = TRACER.set(tracer.clone());
    let only_ours = Targets::new().with_target(TARGET, Level::TRACE);
    Ok(Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // What a span costs is mostly its attributes (exporting converts each one) and
            // work on each poll: no code location, thread or target attributes, no busy/idle timing at every enter and exit, and
            // no OpenTelemetry context made current at each enter (sluice reads a span's
            // context from the span itself).
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(only_ours),
    ))
}

/// Called once the layer is installed: from now on spans are exported.
pub(crate) fn started() {
    ON.store(true, Ordering::Relaxed);
}

/// Exports what is still buffered; called once the process has stopped its work.
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        // The exporter's thread waits for requests that run on this runtime.
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// Continues the trace a W3C `traceparent` names (if it is valid) in `span`, which must be
/// new: neither entered nor a parent yet.
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    if !on() {
        return;
    }
    if let Some(traceparent) = traceparent {
        let _ = span.set_parent(remote_parent(traceparent));
    }
}

/// `span`'s W3C `traceparent`, to store with an event or send with a delivery; `None` when
/// tracing is off.
pub fn traceparent(span: &Span) -> Option<String> {
    if !on() {
        return None;
    }
    traceparent_of(&span.context())
}

/// The context a W3C `traceparent` names, as the parent of a span; an empty context (so a
/// new trace) if it is not valid.
fn remote_parent(traceparent: &str) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Traceparent(traceparent))
}

/// The W3C `traceparent` of the span in `cx`.
fn traceparent_of(cx: &opentelemetry::Context) -> Option<String> {
    let mut carrier = Carrier(None);
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.0
}

/// The current span's `traceparent` (see [`traceparent`]).
pub fn current_traceparent() -> Option<String> {
    if !on() {
        return None;
    }
    traceparent(&Span::current())
}

/// Marks `span` as failed, with `why`.
pub fn fail(span: &Span, why: &str) {
    if on() {
        span.set_status(opentelemetry::trace::Status::error(why.to_owned()));
    }
}

/// A span of an event's processing (its attempt, a rule, a delivery), made on the
/// OpenTelemetry tracer itself rather than through `tracing`: a worker makes two or three
/// per event, and the `tracing` path (a registry entry, the layer's builder, each field
/// formatted, then the same span built again at its end) cost the drain twice what the
/// span itself does. Ends when dropped; nothing at all while traces are off.
pub struct WorkSpan(Option<opentelemetry::Context>);

/// What a [`WorkSpan`] is: a consumer (an attempt), internal (a rule), or a call out of the
/// process (a webhook or an email: client; a broker publish: producer).
pub use opentelemetry::trace::SpanKind;

impl WorkSpan {
    /// No span: traces are off, or nothing worth one happens.
    pub fn none() -> WorkSpan {
        WorkSpan(None)
    }

    /// The span of an event's attempt, continuing the trace its `traceparent` names (the
    /// ingest request's, stored with the event), or a new trace.
    pub fn attempt(
        name: impl FnOnce() -> String,
        traceparent: Option<&str>,
        attributes: impl FnOnce() -> Vec<opentelemetry::KeyValue>,
    ) -> WorkSpan {
        if !on() {
            return WorkSpan::none();
        }
        let parent = match traceparent {
            Some(traceparent) => remote_parent(traceparent),
            None => opentelemetry::Context::new(),
        };
        WorkSpan::start(&parent, name(), SpanKind::Consumer, attributes())
    }

    /// A span inside this one; none if this one is none.
    pub fn child(
        &self,
        name: impl FnOnce() -> String,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<opentelemetry::KeyValue>,
    ) -> WorkSpan {
        match &self.0 {
            Some(parent) => WorkSpan::start(parent, name(), kind, attributes()),
            None => WorkSpan::none(),
        }
    }

    fn start(
        parent: &opentelemetry::Context,
        name: String,
        kind: SpanKind,
        attributes: Vec<opentelemetry::KeyValue>,
    ) -> WorkSpan {
        use opentelemetry::trace::Tracer;
        let Some(tracer) = TRACER.get() else {
            return WorkSpan::none();
        };
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        WorkSpan(Some(parent.with_span(span)))
    }

    /// Sets an attribute known only once the work is done.
    pub fn set(&self, key: &'static str, value: &'static str) {
        if let Some(cx) = &self.0 {
            cx.span()
                .set_attribute(opentelemetry::KeyValue::new(key, value));
        }
    }

    /// Marks the span as failed, with `why`.
    pub fn fail(&self, why: &str) {
        if let Some(cx) = &self.0 {
            cx.span()
                .set_status(opentelemetry::trace::Status::error(why.to_owned()));
        }
    }

    /// The span's W3C `traceparent`, sent with a delivery so that its receiver continues
    /// the trace; `None` without a span.
    pub fn traceparent(&self) -> Option<String> {
        traceparent_of(self.0.as_ref()?)
    }
}

impl Drop for WorkSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

struct Traceparent<'a>(&'a str);

impl Extractor for Traceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

struct Carrier(Option<String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// The exporter's HTTP client. The exporter runs on a thread of its own, outside the async
/// runtime, so each request is handed to the runtime and awaited from there; this reuses the
/// HTTP client sluice already has rather than building a second one.
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

/// A collector's answer is a few bytes; more is cut off.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let (status, headers, body) = self
            .runtime
            .spawn(async move {
                let mut response = client.execute(request).await?;
                let status = response.status();
                let headers = std::mem::take(response.headers_mut());
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await? {
                    let room = MAX_RESPONSE_BYTES.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if room <= chunk.len() {
                        break;
                    }
                }
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await??;
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn setup_with(vars: &[(&str, &str)]) -> Result<Setup, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        setup(|name| vars.get(name).cloned())
    }

    #[test]
    fn traces_are_off_unless_an_exporter_is_asked_for() {
        assert_eq!(setup_with(&[]), Ok(Setup::Off));
        assert_eq!(setup_with(&[("OTEL_SERVICE_NAME", "x")]), Ok(Setup::Off));
        assert_eq!(
            setup_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]),
            Ok(Setup::Off)
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(setup_with(&[endpoint]), Ok(Setup::Otlp));
        assert_eq!(
            setup_with(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces"
            )]),
            Ok(Setup::Otlp)
        );
        assert_eq!(
            setup_with(&[("OTEL_TRACES_EXPORTER", "otlp")]),
            Ok(Setup::Otlp)
        );
        assert_eq!(
            setup_with(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(Setup::Off)
        );
        assert_eq!(
            setup_with(&[endpoint, ("OTEL_SDK_DISABLED", "true")]),
            Ok(Setup::Off)
        );
    }

    #[test]
    fn settings_sluice_cannot_honour_are_refused_at_startup() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let grpc = setup_with(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert!(grpc.is_err_and(|e| e.contains("http/protobuf")));
        let zipkin = setup_with(&[("OTEL_TRACES_EXPORTER", "zipkin")]);
        assert!(zipkin.is_err_and(|e| e.contains("zipkin")));
        assert_eq!(
            setup_with(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            Ok(Setup::Otlp)
        );
    }
}
