//! The application state every request handler, console page and operation reaches: the
//! store, the ingestor, the bus, the settings, the keys and the event-type catalog. Below
//! `api/`, `console/` and `operations/`, which all take it; built by `app` when a process
//! starts.

use crate::auth::keyring::KeyRing;
use crate::bus::Bus;
use crate::config::Settings;
use crate::event_types::SharedCatalog;
use crate::ingest::{IngestConfig, Ingestor};
use crate::sources::Sources;
use metrics_exporter_prometheus::PrometheusHandle;
use sluice_store::{Backend, Store};
use std::sync::Arc;

/// What every handler can reach. One `Arc`: every request clones the state (axum hands each
/// handler and middleware its own copy), so a clone is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state's parts.
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub ingestor: Ingestor,
    pub bus: Bus,
    pub metrics: PrometheusHandle,
    pub settings: Arc<Settings>,
    /// One permit per open `/ws` connection, `WS_MAX_CONNECTIONS` in all.
    pub live_seats: Arc<tokio::sync::Semaphore>,
    /// The API keys, with `AUTH=api_key` (`None`: every route is open).
    pub keys: Option<Arc<KeyRing>>,
    /// Event-type settings and schemas, checked at ingest.
    pub event_types: Arc<SharedCatalog>,
    /// This process's copy of the sources, and what came through them.
    pub sources: Arc<Sources>,
    /// Where operational events go, with `OPERATIONAL_EVENTS` (`None` without).
    pub operational: Option<Arc<crate::operational::Operational>>,
}

impl AppState {
    /// Reloads this process's copy of the keys after a change (other processes see it
    /// within a second).
    pub async fn keys_changed(&self) {
        if let Some(ring) = &self.keys {
            if let Err(error) = ring.reload().await {
                tracing::warn!(error = %error, "cannot reload API keys");
            }
        }
    }
}

/// Builds the state for a store: starts the group-commit ingestor.
pub async fn build(
    store: Arc<dyn Store>,
    bus: Bus,
    settings: Settings,
    keys: Option<Arc<KeyRing>>,
) -> AppState {
    let ingest = match store.backend() {
        // SQLite's store has one writer connection: a flusher plans its batch while the
        // other one writes.
        Backend::Sqlite => IngestConfig {
            one_write_at_a_time: false,
            ..IngestConfig::default()
        },
        Backend::Postgres => IngestConfig::default(),
    };
    AppState(Arc::new(Shared {
        ingestor: Ingestor::start(store.clone(), bus.clone(), ingest),
        event_types: SharedCatalog::start(store.clone()),
        sources: Sources::start(store.clone()).await,
        operational: crate::operational::Operational::start(
            store.clone(),
            bus.clone(),
            settings.operational_events,
        ),
        store,
        bus,
        metrics: crate::telemetry::metrics_handle(),
        live_seats: Arc::new(tokio::sync::Semaphore::new(
            settings.ws_max_connections as usize,
        )),
        settings: Arc::new(settings),
        keys,
    }))
}
