//! sluice's storage: the [`Store`] trait the rest of the program talks to, and its two
//! implementations — PostgreSQL for production, SQLite for a zero-setup single process.
//!
//! Invariant: all SQL lives in this crate. Each backend has its own migrations folder and
//! translates database errors into [`StoreError`] here, so callers never see SQL text.

mod error;
mod ingest;
pub mod model;
mod postgres;
mod sqlite;

use async_trait::async_trait;
use std::sync::Arc;

pub use error::StoreError;
pub use model::*;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use sluice_core::event::NewEvent;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// Everything sluice reads and writes. One implementation per database; one test suite runs
/// against both.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn backend(&self) -> Backend;

    /// Applies pending migrations (idempotent; safe to run from several processes at once).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Ok when the database answers and every migration this binary knows is applied.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Stores a batch of submitted events in one transaction, deduplicating by external id.
    /// Returns one outcome per input, in input order. Equal ids within the batch are resolved
    /// as if they had arrived one after another in that order.
    async fn ingest(&self, events: &[NewEvent]) -> Result<Vec<IngestOutcome>, StoreError>;

    async fn get_event(&self, id: i64) -> Result<Option<Event>, StoreError>;

    /// Newest first.
    async fn list_events(&self, filter: &EventFilter, page: Page)
        -> Result<Vec<Event>, StoreError>;

    /// `filter.state` and `filter.external_id` are ignored.
    async fn event_stats(&self, filter: &EventFilter) -> Result<EventStats, StoreError>;

    /// Attempts of one event, newest first, each with its rule executions.
    async fn list_attempts(&self, event_id: i64, page: Page) -> Result<Vec<Attempt>, StoreError>;

    /// Tells every process listening on `channel` (PostgreSQL `NOTIFY`, one per payload).
    /// SQLite serves one process, which signals itself in memory: a no-op there.
    async fn notify(&self, channel: &str, payloads: &[String]) -> Result<(), StoreError>;

    /// Notifications `(channel, payload)` sent by any process, or `None` on SQLite. The stream
    /// reconnects by itself after a connection loss (notifications sent meanwhile are lost).
    async fn listen(&self, channels: &[&str]) -> Result<Option<NotificationStream>, StoreError>;
}

/// `(channel, payload)` pairs from `LISTEN`.
pub type NotificationStream =
    futures::stream::BoxStream<'static, Result<(String, String), StoreError>>;

/// Opens the store a `DATABASE_URL` names: `postgres://…`/`postgresql://…` or `sqlite://path`
/// (also `sqlite:path`, `sqlite::memory:`). A SQLite file is created if missing.
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            PostgresStore::connect(url, max_connections).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, max_connections).await?))
    } else {
        Err(StoreError::Config(format!(
            "DATABASE_URL must start with postgres://, postgresql:// or sqlite: (got '{}')",
            redact_url(url)
        )))
    }
}

/// A URL with its password replaced, fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
