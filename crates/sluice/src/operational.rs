//! Operational events: what happens to sluice itself — a target opened, closed or was paused,
//! an event failed for good, an API key was revoked — stored as events of type `sluice.*`, so
//! ordinary rules route them (email the on-call when `sluice.target.opened` names a partner's
//! host, post failures to a chat). Opt-in: `OPERATIONAL_EVENTS=true`.
//!
//! - **No loops.** Nothing that happens while handling a `sluice.*` event produces another:
//!   a failed `sluice.*` event is not reported, nor is a target that a `sluice.*` delivery
//!   opened or closed.
//! - **Bounded.** `sluice.event.failed` is sent for at most [`FAILED_PER_MINUTE`] events a
//!   minute per process; the rest of that minute's failures are counted into one
//!   `sluice.event.failed` with `"aggregate": true` when the minute ends. Target events are
//!   as frequent as the breaker lets a target change state (at most once per
//!   `TARGET_OPEN_MS` each).
//! - **Never in the way.** An operational event is stored on its own task after what it
//!   reports happened; if it cannot be stored, that is logged and nothing else changes.
//!
//! Each has an id that says what it reports (`sluice.target.opened:https://h:443:2026-…`), so
//! two processes reporting the same change store it once.

use crate::bus::{Bus, Committed};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sluice_core::event::NewEvent;
use sluice_store::{StateChange, Store, StoreError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The prefix of every operational event's type.
pub const PREFIX: &str = "sluice.";
/// Failed events reported one by one per minute and process; more are aggregated.
pub const FAILED_PER_MINUTE: u32 = 10;
const MINUTE: Duration = Duration::from_secs(60);
/// Event ids an aggregate lists as a sample.
const AGGREGATE_SAMPLE: usize = 20;

/// Whether an event type is one of sluice's own.
pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with(PREFIX)
}

pub struct Operational {
    store: Arc<dyn Store>,
    bus: Bus,
    failed: Mutex<FailedWindow>,
}

/// Failures of the current minute: how many were reported, and what was held back.
struct FailedWindow {
    started: DateTime<Utc>,
    reported: u32,
    held_back: u64,
    sample: Vec<i64>,
}

impl Operational {
    /// `None` unless `OPERATIONAL_EVENTS` is on. With it, starts the task that sends each
    /// minute's aggregate of failures.
    pub fn start(store: Arc<dyn Store>, bus: Bus, enabled: bool) -> Option<Arc<Operational>> {
        if !enabled {
            return None;
        }
        let operational = Arc::new(Operational {
            store,
            bus,
            failed: Mutex::new(FailedWindow {
                started: Utc::now(),
                reported: 0,
                held_back: 0,
                sample: Vec::new(),
            }),
        });
        let weak = Arc::downgrade(&operational);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(MINUTE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(operational) = weak.upgrade() else {
                    break;
                };
                operational.roll_failed_window();
            }
        });
        Some(operational)
    }

    /// A target's circuit opened after failures that a retry might fix.
    pub fn target_opened(&self, target: &str, error: Option<&str>, at: DateTime<Utc>) {
        self.send(
            "sluice.target.opened",
            format!("{target}:{}", stamp(at)),
            json!({"target": target, "error": error, "opened_at": stamp(at)}),
        );
    }

    /// A target that was open (or probing) delivered again.
    pub fn target_closed(&self, target: &str, at: DateTime<Utc>) {
        self.send(
            "sluice.target.closed",
            format!("{target}:{}", stamp(at)),
            json!({"target": target, "closed_at": stamp(at)}),
        );
    }

    /// An operator paused or resumed a target.
    pub fn target_paused(&self, target: &str, paused: bool, at: DateTime<Utc>) {
        self.send(
            "sluice.target.paused",
            format!("{target}:{}:{}", paused, stamp(at)),
            json!({"target": target, "paused": paused, "at": stamp(at)}),
        );
    }

    /// An API key was revoked.
    pub fn key_revoked(&self, id: i64, name: &str, prefix: &str, at: DateTime<Utc>) {
        if let Some(event) = key_revoked(id, name, prefix, at) {
            self.store_later(event);
        }
    }

    /// Events that ended `failed` (as a worker recorded them): each reported, up to
    /// [`FAILED_PER_MINUTE`] a minute; `sluice.*` events never.
    pub fn events_failed(&self, changes: &[StateChange], errors: &[(i64, Option<String>)]) {
        for change in changes {
            if change.state != sluice_core::event::EventState::Failed
                || is_operational(&change.event_type)
            {
                continue;
            }
            let report = {
                let mut window = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                if window.reported < FAILED_PER_MINUTE {
                    window.reported += 1;
                    true
                } else {
                    window.held_back += 1;
                    if window.sample.len() < AGGREGATE_SAMPLE {
                        window.sample.push(change.event_id);
                    }
                    false
                }
            };
            if report {
                let error = errors
                    .iter()
                    .find(|(id, _)| *id == change.event_id)
                    .and_then(|(_, error)| error.clone());
                self.send(
                    "sluice.event.failed",
                    format!("{}:{}", change.event_id, change.attempt_id.unwrap_or(0)),
                    json!({
                        "event_id": change.event_id,
                        "external_id": change.external_id,
                        "type": change.event_type,
                        "error": error,
                        "failed_at": change.finished_at.map(stamp),
                    }),
                );
            }
        }
    }

    /// The minute is over: what was held back goes out as one aggregate.
    fn roll_failed_window(&self) {
        let now = Utc::now();
        let (started, held_back, sample) = {
            let mut window = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            let previous = std::mem::replace(
                &mut *window,
                FailedWindow {
                    started: now,
                    reported: 0,
                    held_back: 0,
                    sample: Vec::new(),
                },
            );
            (previous.started, previous.held_back, previous.sample)
        };
        if held_back > 0 {
            self.send(
                "sluice.event.failed",
                format!(
                    "aggregate:{}:{}",
                    stamp(started),
                    uuid::Uuid::new_v4().simple()
                ),
                json!({
                    "aggregate": true,
                    "count": held_back,
                    "from": stamp(started),
                    "to": stamp(now),
                    "sample_event_ids": sample,
                }),
            );
        }
    }

    /// Stores one operational event on its own task, and tells whoever listens.
    fn send(&self, event_type: &'static str, id: String, data: Value) {
        if let Some(event) = operational_event(event_type, id, data) {
            self.store_later(event);
        }
    }

    fn store_later(&self, event: NewEvent) {
        let (store, bus) = (self.store.clone(), self.bus.clone());
        tokio::spawn(async move {
            match store.ingest(std::slice::from_ref(&event)).await {
                Ok(outcomes) => bus.announce(Committed::Ingested(&outcomes)),
                Err(error) => tracing::warn!(
                    event_type = event.event_type.as_str(), error = %error,
                    "cannot store an operational event"
                ),
            }
        });
    }
}

/// `sluice.key.revoked` for a key revoked where no server runs (`sluice keys revoke`): stored
/// before this returns, as nothing would store it later. A worker takes it at its next poll.
pub async fn store_key_revoked(
    store: &dyn Store,
    id: i64,
    name: &str,
    prefix: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(event) = key_revoked(id, name, prefix, at) {
        store.ingest(std::slice::from_ref(&event)).await?;
    }
    Ok(())
}

fn key_revoked(id: i64, name: &str, prefix: &str, at: DateTime<Utc>) -> Option<NewEvent> {
    operational_event(
        "sluice.key.revoked",
        format!("{id}"),
        json!({"key_id": id, "name": name, "prefix": prefix, "revoked_at": stamp(at)}),
    )
}

/// The event, its id saying what it reports; `None` (logged) should its parts not make one.
fn operational_event(event_type: &'static str, id: String, data: Value) -> Option<NewEvent> {
    let body = json!({"id": format!("{event_type}:{id}"), "type": event_type, "data": data});
    match NewEvent::parse(body) {
        Ok(event) => Some(event),
        Err(errors) => {
            let error = errors.iter().map(ToString::to_string).collect::<Vec<_>>();
            tracing::warn!(event_type, error = %error.join("; "), "cannot build an operational event");
            None
        }
    }
}

fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}
