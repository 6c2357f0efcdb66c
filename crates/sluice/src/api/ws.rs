//! `GET /ws`: every state change, from whichever process made it, as JSON messages.
//! `?event_id=` and `?event_type=` narrow the stream. A client that cannot keep up is
//! disconnected (close code 1008) rather than allowed to back up the server.

use super::events::query_or_400;
use crate::bus::LiveMessage;
use crate::error::{ApiError, ApiResult, ErrorName};
use crate::state::AppState;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// A send that takes longer than this means the client is not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const PING_EVERY: Duration = Duration::from_secs(30);
/// Largest message or frame a client may send: clients only ever send small control messages,
/// so anything bigger is refused instead of buffered (the library's default is 64 MiB).
pub const MAX_INBOUND_BYTES: usize = 4 * 1024;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LiveQuery {
    /// Only this event.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub event_id: Option<String>,
    /// Only events of this type.
    pub event_type: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct LiveFilter {
    event_id: Option<i64>,
    event_type: Option<String>,
}

impl LiveFilter {
    fn accepts(&self, message: &LiveMessage) -> bool {
        let id_ok = self
            .event_id
            .is_none_or(|id| message.event_id() == Some(id));
        let type_ok = self
            .event_type
            .as_deref()
            .is_none_or(|t| message.event_type() == Some(t));
        // Rule changes concern everyone unless the client asked about one event.
        match message {
            LiveMessage::RuleChanged { .. } => self.event_id.is_none() && self.event_type.is_none(),
            _ => id_ok && type_ok,
        }
    }
}

/// Live state changes as a WebSocket of JSON messages.
#[utoipa::path(get, path = "/ws", tag = "live",
    params(LiveQuery),
    responses(
        (status = 101, description = "WebSocket of JSON LiveMessage frames; a client that falls behind is closed with code 1008", body = LiveMessage),
        (status = 400, description = "Bad filter", body = crate::error::ErrorBody),
    ))]
pub async fn live(
    State(state): State<AppState>,
    query: Result<Query<LiveQuery>, axum::extract::rejection::QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let query = query_or_400(query)?;
    let event_id = match query.event_id.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            ApiError::validation(format!("event_id must be an integer, got '{text}'"))
        })?),
    };
    let filter = LiveFilter {
        event_id,
        event_type: query.event_type.filter(|t| !t.is_empty()),
    };
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::validation(format!(
            "GET /ws needs a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    let Ok(seat) = state.live_seats.clone().try_acquire_owned() else {
        metrics::counter!("sluice_ws_refused_total", "reason" => "connection_cap").increment(1);
        return Err(ApiError::new(
            ErrorName::ServiceUnavailable,
            format!(
                "too many live connections (WS_MAX_CONNECTIONS={}); try again later",
                state.settings.ws_max_connections
            ),
        ));
    };
    let receiver = state.bus.subscribe().await;
    Ok(upgrade
        .max_message_size(MAX_INBOUND_BYTES)
        .max_frame_size(MAX_INBOUND_BYTES)
        .on_upgrade(move |socket| async move {
            stream(socket, receiver, filter).await;
            drop(seat);
        }))
}

async fn stream(
    mut socket: WebSocket,
    mut receiver: tokio::sync::broadcast::Receiver<Arc<LiveMessage>>,
    filter: LiveFilter,
) {
    metrics::gauge!("sluice_ws_clients").increment(1.0);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            message = receiver.recv() => match message {
                Ok(message) => {
                    if !filter.accepts(&message) {
                        continue;
                    }
                    let Ok(text) = serde_json::to_string(&*message) else { continue };
                    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break,
                        Err(_) => {
                            metrics::counter!("sluice_ws_dropped_total", "reason" => "send_timeout").increment(1);
                            break;
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("sluice_ws_dropped_total", "reason" => "lagged").increment(1);
                    let close = CloseFrame {
                        code: 1008,
                        reason: format!("too slow: missed {missed} messages; reconnect").into(),
                    };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(close)))).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    metrics::gauge!("sluice_ws_clients").decrement(1.0);
}
