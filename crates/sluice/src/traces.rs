//! OpenTelemetry traces, exported over OTLP/HTTP (protobuf) when the standard `OTEL_*`
//! variables ask for it, and not even created otherwise.
//!
//! Every span sluice exports is a [`TraceSpan`], made on the OpenTelemetry tracer directly:
//! a request's (ingest, a source's message) and an event's processing (its attempt, each
//! rule, each delivery). None goes through `tracing`: there, each span was built twice (the
//! layer's builder, then the SDK's span at its end), made whether or not its trace was
//! sampled, and the exporting layer needed a filter per layer that cost every log line and
//! span of the process some work. So the `tracing` subscriber is the same with traces on or
//! off, and log lines are too. While traces are off a `TraceSpan` is nothing, and work that
//! only tracing needs (reading or writing a `traceparent`) is behind [`on`].
//!
//! A trace crosses processes as a W3C `traceparent`: read from the request that ingests an
//! event, stored with the event (so the worker that claims it, on any machine, continues the
//! trace), and sent with every delivery (webhook header, NATS and RabbitMQ message header).
//! Within a request, the span is made current around the handler ([`in_span!`]), and what the
//! handler stores takes its `traceparent` from there ([`current_traceparent`]).

use bytes::Bytes;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, TraceContextExt, TraceFlags, Tracer as _, TracerProvider as _,
};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub use opentelemetry::trace::SpanKind;
pub use opentelemetry::KeyValue;

static ON: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether traces are exported by this process.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Awaits `$work` with `$span` current while it has one (so that what the work stores names
/// it: see [`current_traceparent`]), and exactly as untraced code otherwise. Wrapping a
/// future moves it, and a request's future is large: traced, the work is boxed first, so it
/// moves once; untraced, it is not wrapped at all.
macro_rules! in_span {
    ($span:expr, $work:expr) => {
        match $span.context() {
            Some(cx) => {
                ::opentelemetry::context::FutureExt::with_context(Box::pin($work), cx).await
            }
            None => $work.await,
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

/// Starts exporting traces when the environment asks for them (see [`setup`]); from then on
/// [`on`] is true. Must be called on the runtime, which carries the exporter's requests. Once
/// per process: later calls (tests start several apps in one) change nothing.
pub fn start() -> Result<(), String> {
    if setup(|name| std::env::var(name).ok())? == Setup::Off || PROVIDER.get().is_some() {
        return Ok(());
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
    if PROVIDER.set(provider).is_ok() && TRACER.set(tracer).is_ok() {
        ON.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Exports what is still buffered; called once the process has stopped its work.
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        // The exporter's thread waits for requests that run on this runtime.
        let provider = provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// The context a W3C `traceparent` names, as the parent of a span; an empty context (so a
/// new trace) if it is not valid.
fn remote_parent(traceparent: &str) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Traceparent(traceparent))
}

/// The W3C `traceparent` naming the span `span` (version 00, sampled flag only); `None` if
/// it is not valid.
fn traceparent_of(span: &SpanContext) -> Option<String> {
    span.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span.trace_id(),
            span.span_id(),
            span.trace_flags() & TraceFlags::SAMPLED
        )
    })
}

/// The `traceparent` of the span made current by [`in_span!`], to store with what a request
/// ingests; `None` when tracing is off or no span is current.
pub fn current_traceparent() -> Option<String> {
    if !on() {
        return None;
    }
    traceparent_of(opentelemetry::Context::current().span().span_context())
}

/// A span sluice exports: a request (ingest, a source's message) or a part of an event's
/// processing (its attempt, a rule, a delivery). Made on the OpenTelemetry tracer, named,
/// given its kind and attributes only while traces are on; ends when dropped. Holds the SDK's
/// span itself: a span in an OpenTelemetry `Context` is boxed, shared and locked at each use,
/// and only a request's span is ever made current.
pub struct TraceSpan(Option<opentelemetry_sdk::trace::Span>);

/// How many attributes each span is given after it starts (an attempt's or a request's
/// status, a rule's result): room is made for them at the start.
const SET_LATER: usize = 1;

impl TraceSpan {
    /// No span: traces are off, or nothing worth one happens.
    pub fn none() -> TraceSpan {
        TraceSpan(None)
    }

    /// A span continuing the trace a W3C `traceparent` names (a request's or a message's
    /// header, or the one stored with an event), or starting a new trace; none while traces
    /// are off, with nothing built.
    pub fn continuing<A>(
        traceparent: Option<&str>,
        name: impl FnOnce() -> String,
        kind: SpanKind,
        attributes: impl FnOnce() -> A,
    ) -> TraceSpan
    where
        A: IntoIterator<Item = KeyValue>,
    {
        if !on() {
            return TraceSpan::none();
        }
        let parent = match traceparent {
            Some(traceparent) => remote_parent(traceparent),
            None => opentelemetry::Context::new(),
        };
        TraceSpan::start(&parent, name(), kind, attributes())
    }

    /// A span inside this one; none if this one is none. Inside a span that is not recorded
    /// (its trace was not sampled) the child is not recorded either, whichever sampler the
    /// standard variables choose, so its name and attributes are not built; it still gets a
    /// span id, so that a delivery passes the trace (and the decision) on.
    pub fn child<A>(
        &self,
        name: impl FnOnce() -> String,
        kind: SpanKind,
        attributes: impl FnOnce() -> A,
    ) -> TraceSpan
    where
        A: IntoIterator<Item = KeyValue>,
    {
        match &self.0 {
            Some(parent) => {
                let recorded = parent.is_recording();
                let parent = opentelemetry::Context::new()
                    .with_remote_span_context(parent.span_context().clone());
                if recorded {
                    TraceSpan::start(&parent, name(), kind, attributes())
                } else {
                    TraceSpan::start(&parent, String::new(), kind, [])
                }
            }
            None => TraceSpan::none(),
        }
    }

    fn start<A>(
        parent: &opentelemetry::Context,
        name: String,
        kind: SpanKind,
        attributes: A,
    ) -> TraceSpan
    where
        A: IntoIterator<Item = KeyValue>,
    {
        let Some(tracer) = TRACER.get() else {
            return TraceSpan::none();
        };
        let attributes = attributes.into_iter();
        let mut all = Vec::with_capacity(attributes.size_hint().0 + SET_LATER);
        all.extend(attributes);
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(all)
            .start_with_context(tracer, parent);
        TraceSpan(Some(span))
    }

    /// Sets an attribute known only once the work is done.
    pub fn set(&mut self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(attribute());
        }
    }

    /// Marks the span as failed, with `why`.
    pub fn fail(&mut self, why: &str) {
        if let Some(span) = &mut self.0 {
            span.set_status(opentelemetry::trace::Status::error(why.to_owned()));
        }
    }

    /// The span's W3C `traceparent`, sent with a delivery so that its receiver continues
    /// the trace; `None` without a span.
    pub fn traceparent(&self) -> Option<String> {
        traceparent_of(self.0.as_ref()?.span_context())
    }

    /// The span as the current context of work (see [`in_span!`]); `None` without a span.
    pub fn context(&self) -> Option<opentelemetry::Context> {
        let span = self.0.as_ref()?;
        Some(opentelemetry::Context::new().with_remote_span_context(span.span_context().clone()))
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
