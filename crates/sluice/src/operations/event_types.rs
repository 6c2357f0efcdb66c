//! Event types: every type configured or seen (`GET /event-types`), one type, and a partial
//! change of its settings (`PUT /event-types/{type}`), for the API and the console.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sluice_core::event::EventType;
use sluice_store::{EventTypeChanges, EventTypeRecord};
use utoipa::ToSchema;

/// An event type: its settings (`null` = the process default) and how many events it has.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct EventTypeOut {
    pub event_type: String,
    pub description: Option<String>,
    /// The JSON Schema events' `data` must match, if any.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    pub processing_timeout_ms: Option<i64>,
    pub max_attempts: Option<i64>,
    /// Delays before retries in milliseconds; the last one repeats.
    pub retry_backoff_ms: Option<Vec<i64>>,
    /// How long an event may wait for its target (circuit open, paused, at its cap) before
    /// it fails; overrides TARGET_MAX_WAIT.
    pub max_wait_ms: Option<i64>,
    /// Events of this type stored now.
    pub events_total: i64,
    /// False for a type only seen in events or rules (every setting at the default).
    pub configured: bool,
    pub updated_at: Option<DateTime<Utc>>,
    /// The key that last changed the settings (with access control).
    pub updated_by: Option<String>,
}

impl From<EventTypeRecord> for EventTypeOut {
    fn from(t: EventTypeRecord) -> Self {
        EventTypeOut {
            event_type: t.event_type,
            description: t.settings.description,
            schema: t.settings.schema,
            processing_timeout_ms: t.settings.processing_timeout_ms,
            max_attempts: t.settings.max_attempts,
            retry_backoff_ms: t.settings.retry_backoff_ms,
            max_wait_ms: t.settings.max_wait_ms,
            events_total: t.events_total,
            configured: t.configured,
            updated_at: t.updated_at,
            updated_by: t.updated_by,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventTypeList {
    pub data: Vec<EventTypeOut>,
}

pub async fn list(state: &AppState) -> ApiResult<EventTypeList> {
    Ok(EventTypeList {
        data: state
            .store
            .event_types()
            .await?
            .into_iter()
            .map(EventTypeOut::from)
            .collect(),
    })
}

/// One type, configured or seen; 404 otherwise.
pub async fn get(state: &AppState, event_type: &EventType) -> ApiResult<EventTypeOut> {
    state
        .store
        .event_type(event_type.as_str())
        .await?
        .map(EventTypeOut::from)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "event type '{}' has no settings, events or rules",
                event_type.as_str()
            ))
        })
}

/// Applies a validated partial change; this process checks ingest against it at once, other
/// processes within a second, workers from their next claim.
pub async fn update(
    state: &AppState,
    event_type: &EventType,
    mut changes: EventTypeChanges,
    by: Option<&str>,
) -> ApiResult<EventTypeOut> {
    changes.updated_by = by.map(str::to_owned);
    let record = state
        .store
        .update_event_type(event_type.as_str(), &changes)
        .await?;
    if let Err(error) = state.event_types.reload(true).await {
        tracing::warn!(error = %error, "cannot reload the event types after a change; the periodic refresh will");
    }
    tracing::info!(event_type = %event_type.as_str(), by = by.unwrap_or("-"), "event type changed");
    Ok(record.into())
}
