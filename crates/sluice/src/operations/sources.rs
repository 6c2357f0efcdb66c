//! Sources: configure them (`PUT`/`GET`/`DELETE /sources/{name}`), and take an inbound
//! webhook through one (`POST /sources/{name}/events`): verified, mapped to an event, then
//! stored like any other (`events::ingest`: schema, dedupe, rules, replay).

use super::events::{self, IngestedOut};
use crate::auth::keyring::Verdict;
use crate::auth::Scope;
use crate::error::{ApiError, ApiResult, ErrorName};
use crate::state::AppState;
use crate::traces::{self, KeyValue, SpanKind, TraceSpan};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sluice_core::json_text::JsonNode;
use sluice_core::source::{Defaults, Source, SourceKind, SourceName, Verify};
use sluice_store::SourceRecord;
use std::borrow::Cow;
use utoipa::ToSchema;

/// A source as shown: its configuration with secrets and URL passwords masked, and what
/// came through it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SourceOut {
    pub name: String,
    /// `webhook`, `nats` or `rabbitmq`.
    pub kind: String,
    /// As saved, secrets masked (send a masked secret back, or none, to keep it).
    #[schema(value_type = Object)]
    pub config: Value,
    /// Where a webhook source takes requests (`null` for a broker source).
    pub receive_path: Option<String>,
    /// Requests or messages that became events (duplicates included).
    pub accepted: i64,
    /// Requests or messages refused (a bad signature, a missing id, …).
    pub rejected: i64,
    pub last_rejected_at: Option<DateTime<Utc>>,
    /// Why the latest one was refused.
    pub last_rejection: Option<String>,
    /// A broker source: why its consumer last failed to connect (`null` once one connects).
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The name of the API key that saved it; `null` without access control.
    pub updated_by: Option<String>,
}

/// Every source, by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceList {
    pub data: Vec<SourceOut>,
    pub count: usize,
}

impl SourceOut {
    fn from_record(record: SourceRecord) -> Self {
        // What the store holds was validated when saved; shown masked whatever happens.
        let config = match Source::parse(&record.name, &record.config, None) {
            Ok(source) => source.to_json(false),
            Err(_) => Value::Null,
        };
        let receive_path = (record.kind == SourceKind::Webhook.as_str())
            .then(|| format!("/sources/{}/events", record.name));
        SourceOut {
            name: record.name,
            kind: record.kind,
            config,
            receive_path,
            accepted: record.accepted,
            rejected: record.rejected,
            last_rejected_at: record.last_rejected_at,
            last_rejection: record.last_rejection,
            last_error: record.last_error,
            last_error_at: record.last_error_at,
            created_at: record.created_at,
            updated_at: record.updated_at,
            updated_by: record.updated_by,
        }
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("source '{name}' not found"))
}

/// Creates or replaces a source, saved `by` the named key; true when it was created. A
/// secret left out (or sent back masked) keeps the stored one.
pub async fn put(
    state: &AppState,
    name: &str,
    body: &Value,
    by: Option<&str>,
) -> ApiResult<(SourceOut, bool)> {
    let previous = state
        .store
        .source(name)
        .await?
        .and_then(|r| Source::parse(&r.name, &r.config, None).ok());
    let source = Source::parse(name, body, previous.as_ref()).map_err(ApiError::invalid)?;
    let (record, created) = state
        .store
        .put_source(
            source.name.as_str(),
            source.kind.as_str(),
            &source.to_json(true),
            by,
        )
        .await?;
    reload(state).await;
    Ok((SourceOut::from_record(record), created))
}

pub async fn list(state: &AppState) -> ApiResult<SourceList> {
    let data: Vec<SourceOut> = state
        .store
        .sources()
        .await?
        .into_iter()
        .map(SourceOut::from_record)
        .collect();
    Ok(SourceList {
        count: data.len(),
        data,
    })
}

pub async fn get(state: &AppState, name: &str) -> ApiResult<SourceOut> {
    state
        .store
        .source(name)
        .await?
        .map(SourceOut::from_record)
        .ok_or_else(|| not_found(name))
}

/// Deletes a source: its requests are refused (404) and its consumers stop within seconds.
/// Returns it as it was.
pub async fn delete(state: &AppState, name: &str) -> ApiResult<SourceOut> {
    let source = get(state, name).await?;
    if !state.store.delete_source(name).await? {
        return Err(not_found(name));
    }
    reload(state).await;
    Ok(source)
}

async fn reload(state: &AppState) {
    if let Err(error) = state.sources.reload().await {
        tracing::warn!(error = %error, "cannot reload the sources");
    }
}

/// An inbound request, as the operation needs it.
pub struct Inbound<'a> {
    /// A header by name, case-insensitively.
    pub header: &'a (dyn Fn(&str) -> Option<&'a str> + Sync),
    pub body: &'a [u8],
    /// The API key the request presents, if any (needed by a source that checks no
    /// signature, when access control is on).
    pub key: Option<&'a str>,
}

/// Takes an inbound webhook through source `name`: 404 for an unknown (or broker) source,
/// 401 for a request that fails verification (counted, nothing stored), 400 naming what is
/// missing, else the stored event (or its duplicate).
pub async fn receive(state: &AppState, name: &str, inbound: Inbound<'_>) -> ApiResult<IngestedOut> {
    let source = state
        .sources
        .get(name)
        .filter(|s| s.kind == SourceKind::Webhook)
        .ok_or_else(|| not_found(name))?;
    let refuse = |label: &'static str, error: ApiError| {
        state.sources.rejected(name, label, &error.message);
        error
    };
    if matches!(source.verify, Verify::None) {
        check_key(state, inbound.key)
            .await
            .map_err(|e| refuse("unauthorized", e))?;
    }
    source
        .verify
        .check(inbound.header, inbound.body, Utc::now().timestamp())
        .map_err(|rejection| {
            refuse(
                rejection.label(),
                ApiError::unauthorized(format!("not verified: {rejection}")),
            )
        })?;
    let header = |name: &str| (inbound.header)(name).map(Cow::Borrowed);
    store(state, &source, header, inbound.body, Defaults::default()).await
}

/// Maps a verified request or a message to its event and stores it: the one path from a
/// source to the store. Refusals (not JSON, no id, a schema violation, a conflicting
/// payload) are counted against the source.
async fn store<'h>(
    state: &AppState,
    source: &Source,
    header: impl Fn(&str) -> Option<Cow<'h, str>>,
    body: &[u8],
    defaults: Defaults<'_>,
) -> ApiResult<IngestedOut> {
    let name = source.name.as_str();
    let refuse = |label: &'static str, error: ApiError| {
        state.sources.rejected(name, label, &error.message);
        error
    };
    let body: JsonNode = serde_json::from_slice(body).map_err(|e| {
        refuse(
            "invalid",
            ApiError::validation(format!("the body is not JSON: {e}")),
        )
    })?;
    let event = source
        .event(header, &body, defaults)
        .map_err(|errors| refuse("invalid", ApiError::invalid(errors)))?;
    match events::ingest(state, event).await {
        Ok(ingested) => {
            state.sources.accepted(name);
            Ok(ingested)
        }
        Err(error) if error.name == ErrorName::ValidationError => Err(refuse("invalid", error)),
        Err(error) if error.name == ErrorName::ConflictError => Err(refuse("conflict", error)),
        Err(error) => Err(error),
    }
}

/// A broker message, as the operation needs it.
pub struct Message<'a> {
    /// A message header by name.
    pub header: &'a (dyn Fn(&str) -> Option<Cow<'a, str>> + Sync),
    pub body: &'a [u8],
    /// The broker's own id and type for the message, used where the source names none.
    pub defaults: Defaults<'a>,
}

/// What to tell the broker about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Its event is committed (or was already): acknowledge.
    Stored,
    /// It can never become an event (not JSON, no id, …): reject it for good, to where the
    /// broker keeps such messages.
    Refused(String),
    /// It could not be stored now (the database is down, sluice is stopping): leave it to
    /// be delivered again.
    Retry(String),
}

/// The largest message a broker source takes, as `POST /events` takes bodies.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Takes a message from a broker source: stored, refused for good, or to be retried.
pub async fn take(state: &AppState, source: &Source, message: Message<'_>) -> Disposition {
    if message.body.len() > MAX_MESSAGE_BYTES {
        let why = format!(
            "the message is {} bytes; at most {MAX_MESSAGE_BYTES} are taken",
            message.body.len()
        );
        state
            .sources
            .rejected(source.name.as_str(), "too_large", &why);
        return Disposition::Refused(why);
    }
    let header = |name: &str| (message.header)(name);
    let span = receive_span(source, &header);
    let stored = traces::in_span!(
        span,
        store(state, source, header, message.body, message.defaults)
    );
    match stored {
        Ok(_) => Disposition::Stored,
        Err(error)
            if matches!(
                error.name,
                ErrorName::ValidationError | ErrorName::ConflictError
            ) =>
        {
            Disposition::Refused(error.message)
        }
        Err(error) => Disposition::Retry(error.message),
    }
}

/// The span of a broker message taken, continuing the producer's trace (its `traceparent`
/// header), as `POST /events` continues a request's; none while traces are off.
fn receive_span<'a>(source: &Source, header: &impl Fn(&str) -> Option<Cow<'a, str>>) -> TraceSpan {
    if !traces::on() {
        return TraceSpan::none();
    }
    TraceSpan::continuing(
        header("traceparent").as_deref(),
        || format!("receive {}", source.name.as_str()),
        SpanKind::Consumer,
        || {
            [KeyValue::new(
                "sluice.source",
                source.name.as_str().to_owned(),
            )]
        },
    )
}

/// A source that checks no signature takes only requests with an `ingest` key (when
/// access control is on), like `POST /events`.
async fn check_key(state: &AppState, key: Option<&str>) -> ApiResult<()> {
    let Some(ring) = &state.keys else {
        return Ok(());
    };
    let Some(key) = key else {
        return Err(ApiError::unauthorized(
            "this source checks no signature: send an API key with the ingest scope",
        ));
    };
    match ring.verify(key).await {
        Ok(Verdict::Valid(principal)) if principal.scopes.cover(Scope::Ingest) => Ok(()),
        Ok(Verdict::Valid(principal)) => Err(ApiError::forbidden(format!(
            "the key '{}' lacks the 'ingest' scope this source needs",
            principal.name
        ))),
        Ok(Verdict::Unknown) => Err(ApiError::unauthorized("unknown API key")),
        Ok(Verdict::Revoked) => Err(ApiError::unauthorized("this API key has been revoked")),
        Err(error) => {
            tracing::warn!(error = %error, "cannot check an API key");
            Err(ApiError::unavailable(
                "cannot check API keys right now; try again",
            ))
        }
    }
}

/// Checks a source name from a path (a 400 naming it).
pub fn parse_name(name: &str) -> ApiResult<SourceName> {
    SourceName::parse(name).map_err(|e| ApiError::invalid(vec![e]))
}
