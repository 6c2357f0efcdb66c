//! Logging, set up once per process: JSON lines for machines, pretty text for humans.

use crate::config::LogFormat;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::fmt::{self, Write as _};
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::layer as log_lines;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber (log lines) and starts exporting traces when the standard
/// `OTEL_*` variables ask for them (see `traces`; the subscriber is the same either way). Safe
/// to call more than once (later calls do nothing), which lets tests start several apps in
/// one process. An `OTEL_*` setting sluice cannot honour is an error.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    crate::traces::start()?;
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(log_lines_as(format))
        .try_init();
    Ok(())
}

/// Log lines on stderr, as JSON or pretty text.
fn log_lines_as<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    match format {
        LogFormat::Json => json_lines(std::io::stderr).boxed(),
        LogFormat::Pretty => log_lines().with_writer(std::io::stderr).boxed(),
    }
}

/// JSON log lines written to `writer`: one object per line, the event's fields flattened
/// into it and the current span's fields under `span`.
fn json_lines<S, W>(writer: W) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    log_lines()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(SpanFieldsAsJson)
        .with_writer(writer)
}

/// A span's fields as the JSON object the JSON log lines embed, written straight into the
/// span's text. Every request opens a span, and its fields are formatted when it opens
/// (whether or not anything is logged inside it); the stock JSON field formatter first
/// gathers them into a map of JSON values and serializes that, which cost about 4% of the
/// API's work per ingested event.
pub struct SpanFieldsAsJson;

impl<'writer> FormatFields<'writer> for SpanFieldsAsJson {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut object = JsonObject::new(&mut writer);
        fields.record(&mut object);
        object.finish()
    }

    /// Fields recorded after the span opened join the object written when it opened.
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let Some(open) = current.fields.strip_suffix('}').map(str::len) else {
            return self.format_fields(current.as_writer(), fields);
        };
        let mut more = String::new();
        let mut object = JsonObject::new(&mut more);
        fields.record(&mut object);
        object.finish()?;
        if more == "{}" {
            return Ok(());
        }
        current.fields.truncate(open);
        if !current.fields.ends_with('{') {
            current.fields.push(',');
        }
        current.fields.push_str(&more[1..]);
        Ok(())
    }
}

/// Writes `{"name":value,…}` as fields are visited: strings and anything shown with `Debug`
/// or `Display` as JSON strings, numbers and booleans as themselves.
struct JsonObject<'a> {
    out: &'a mut dyn fmt::Write,
    empty: bool,
    result: fmt::Result,
}

impl<'a> JsonObject<'a> {
    fn new(out: &'a mut dyn fmt::Write) -> Self {
        let result = out.write_char('{');
        Self {
            out,
            empty: true,
            result,
        }
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.empty { "" } else { "," };
        self.empty = false;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| write_json_string(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }

    fn finish(self) -> fmt::Result {
        self.result?;
        self.out.write_char('}')
    }
}

impl Visit for JsonObject<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| write_json_string(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.entry(field, |out| write!(out, "{value}"));
        } else {
            // JSON has no NaN or infinity.
            self.entry(field, |out| write_json_string(out, &value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaping(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `text` as a JSON string literal.
fn write_json_string(out: &mut dyn fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    write_escaped(out, text)?;
    out.write_char('"')
}

/// `text` escaped for the inside of a JSON string. Only ASCII bytes need escaping, and no
/// byte of a multi-byte UTF-8 character is ASCII, so the scan is over bytes.
fn write_escaped(out: &mut dyn fmt::Write, text: &str) -> fmt::Result {
    let mut plain_from = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            byte if byte < b' ' => "",
            _ => continue,
        };
        out.write_str(&text[plain_from..at])?;
        if escaped.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escaped)?;
        }
        plain_from = at + 1;
    }
    out.write_str(&text[plain_from..])
}

/// A `fmt::Write` that escapes what is written to it for the inside of a JSON string, so a
/// `Debug` or `Display` value is written into the log line without a `String` of its own.
struct Escaping<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        write_escaped(self.0, text)
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just stays empty.
            if metrics::set_global_recorder(recorder).is_ok() {
                describe_metrics();
                spawn_metrics_upkeep(handle.clone());
            }
            handle
        })
        .clone()
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric sluice records, with its help text: `/metrics` writes `# HELP` and `# TYPE`
/// for each family (as Prometheus' conventions and `promtool check metrics` want). A metric
/// recorded but missing here has no help text; the metrics story test catches that.
const METRICS: &[(&str, Kind, &str)] = &[
    ("sluice_http_requests_total", Kind::Counter, "HTTP requests answered, by route, method and status."),
    ("sluice_http_request_seconds", Kind::Histogram, "Time to answer an HTTP request, by route."),
    ("sluice_auth_failures_total", Kind::Counter, "Requests refused by access control, by reason."),
    ("sluice_events_ingested_total", Kind::Counter, "Events received by the API, by outcome (created, duplicate, invalid, ...)."),
    ("sluice_ingest_batch_size", Kind::Histogram, "Events committed together in one ingest statement."),
    ("sluice_ingest_commit_seconds", Kind::Histogram, "Time to commit one ingest statement."),
    ("sluice_source_events_total", Kind::Counter, "Events taken from a source (inbound webhook or broker), by source and outcome."),
    ("sluice_source_connection_errors_total", Kind::Counter, "Failed connections to a broker source, by source."),
    ("sluice_worker_claimed_total", Kind::Counter, "Events claimed by this worker."),
    ("sluice_attempts_total", Kind::Counter, "Processing attempts finished, by status, what comes next and worker pool."),
    ("sluice_attempt_seconds", Kind::Histogram, "Time a processing attempt took, from claim to outcome."),
    ("sluice_set_aside_total", Kind::Counter, "Events set back in the queue untouched because their target's line was full, by worker pool."),
    ("sluice_deliveries_total", Kind::Counter, "Deliveries to a target, by target and outcome (delivered, unavailable, refused, throttled)."),
    ("sluice_target_in_flight", Kind::Gauge, "Deliveries this worker has in flight to a target."),
    ("sluice_target_in_line", Kind::Gauge, "Deliveries waiting in this worker for a place under a target's cap."),
    ("sluice_target_state", Kind::Gauge, "A target's state: 0 closed, 1 half open, 2 open, 3 paused."),
    ("sluice_target_waiting", Kind::Gauge, "Events waiting in the queue for a target."),
    ("sluice_target_waiting_oldest_seconds", Kind::Gauge, "How long the oldest event waiting for a target has waited."),
    ("sluice_replays_total", Kind::Counter, "Replays requested."),
    ("sluice_retention_deleted_total", Kind::Counter, "Settled events deleted by retention."),
    ("sluice_live_messages_dropped_total", Kind::Counter, "Live updates dropped because the bus was full."),
    ("sluice_ws_clients", Kind::Gauge, "WebSocket clients connected to this API process."),
    ("sluice_ws_refused_total", Kind::Counter, "WebSocket connections refused, by reason."),
    ("sluice_ws_dropped_total", Kind::Counter, "WebSocket clients dropped, by reason (too slow to read, lagged)."),
];

fn describe_metrics() {
    use metrics::Unit;
    for (name, kind, help) in METRICS {
        let unit = if name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else {
            None
        };
        match (kind, unit) {
            (Kind::Counter, _) => metrics::describe_counter!(*name, *help),
            (Kind::Gauge, Some(unit)) => metrics::describe_gauge!(*name, unit, *help),
            (Kind::Gauge, None) => metrics::describe_gauge!(*name, *help),
            (Kind::Histogram, Some(unit)) => metrics::describe_histogram!(*name, unit, *help),
            (Kind::Histogram, None) => metrics::describe_histogram!(*name, *help),
        }
    }
}

/// Histogram samples are buffered until the recorder's upkeep folds them into its summaries;
/// without it, a process nobody scrapes keeps every sample it ever recorded (two or three
/// per event, about 20 bytes an event: 25 MB a million events). A thread rather than a task:
/// the recorder is process-wide and may be installed before, or outlive, any runtime.
fn spawn_metrics_upkeep(handle: PrometheusHandle) {
    const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms grow until scraped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use std::io;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// The JSON log lines written while `body` runs, as the production subscriber writes them.
    fn log_lines(body: impl FnOnce()) -> Vec<Value> {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(json_lines(captured.clone()));
        tracing::subscriber::with_default(subscriber, body);
        let text = String::from_utf8(captured.0.lock().expect("log buffer").clone())
            .expect("log lines are UTF-8");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("each log line is JSON"))
            .collect()
    }

    #[test]
    fn a_line_logged_in_a_span_carries_its_fields_as_json() {
        let lines = log_lines(|| {
            let method = axum::http::Method::POST;
            let span = tracing::info_span!(
                "http",
                method = %method,
                route = "/events",
                request_id = "a\"b\\c\nd\u{1}",
                attempt = 3_u64,
                offset = -2_i64,
                sampled = true,
                ratio = 0.5_f64,
                worker = tracing::field::Empty,
                detail = ?"say \"hi\"\n",
            );
            let _entered = span.enter();
            span.record("worker", "w-1");
            tracing::info!(event_id = 7, "processed");
        });
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "processed");
        assert_eq!(lines[0]["event_id"], 7);
        assert_eq!(
            lines[0]["span"],
            json!({
                "name": "http",
                "method": "POST",
                "route": "/events",
                "request_id": "a\"b\\c\nd\u{1}",
                "attempt": 3,
                "offset": -2,
                "sampled": true,
                "ratio": 0.5,
                "worker": "w-1",
                "detail": format!("{:?}", "say \"hi\"\n"),
            })
        );
    }

    #[test]
    fn a_span_whose_fields_come_later_still_logs_valid_json() {
        let lines = log_lines(|| {
            let span = tracing::info_span!("claim", batch = tracing::field::Empty);
            let _entered = span.enter();
            tracing::info!("before");
            span.record("batch", 16_u64);
            tracing::info!("after");
        });
        assert_eq!(lines[0]["span"], json!({"name": "claim"}));
        assert_eq!(lines[1]["span"], json!({"name": "claim", "batch": 16}));
    }
}
