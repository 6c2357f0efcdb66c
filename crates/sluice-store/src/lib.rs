//! sluice's storage: the [`Store`] trait the rest of the program talks to, and its two
//! implementations — PostgreSQL for production, SQLite for a zero-setup single process.
//!
//! Invariant: all SQL lives in this crate. Each backend has its own migrations folder and
//! translates database errors into [`StoreError`] here, so callers never see SQL text.
//!
//! [`Store`] is one trait per concern (events, stats, rules, event types, replay, targets,
//! access, executions, sources, the queue, upkeep, signals). Most are implemented once for both
//! databases in `shared`, one file per concern; each backend implements itself only what it
//! does its own way — [`QueueStore`], [`UpkeepStore`], [`SignalStore`], its connection setup
//! and ingest statement — and its SQL dialect.

mod error;
mod ingest;
pub mod model;
mod postgres;
mod shared;
mod sqlite;
mod worker;

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

/// Everything sluice reads and writes, one trait per concern; one implementation per
/// database, and one test suite runs against both. Callers hold an `Arc<dyn Store>` and
/// call any concern's methods on it.
#[async_trait]
pub trait Store:
    EventStore
    + StatsStore
    + RuleStore
    + EventTypeStore
    + ReplayStore
    + TargetStore
    + AccessStore
    + ExecutionStore
    + SourceStore
    + QueueStore
    + UpkeepStore
    + SignalStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;

    /// Applies pending migrations (idempotent; safe to run from several processes at once).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Ok when the database answers and every migration this binary knows is applied.
    async fn ready(&self) -> Result<(), StoreError>;
}

/// Events: ingest, one event, listings, payloads, attempts and their explanation.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores a batch of submitted events in one transaction, deduplicating by external id.
    /// Returns one outcome per input, in input order. Equal ids within the batch are resolved
    /// as if they had arrived one after another in that order.
    async fn ingest(&self, events: &[NewEvent]) -> Result<Vec<IngestOutcome>, StoreError>;

    async fn get_event(&self, id: i64) -> Result<Option<Event>, StoreError>;

    /// Newest first, whole events. Loads every payload of the page: for a page whose size
    /// must be bounded, list headers and fetch payloads with [`EventStore::event_payloads`].
    async fn list_events(&self, filter: &EventFilter, page: Page)
        -> Result<Vec<Event>, StoreError>;

    /// Newest first, without payloads but with each payload's size.
    async fn list_event_headers(
        &self,
        filter: &EventFilter,
        page: Page,
    ) -> Result<Vec<EventHeader>, StoreError>;

    /// The payloads of these events (unknown ids are left out).
    async fn event_payloads(
        &self,
        ids: &[i64],
    ) -> Result<std::collections::HashMap<i64, serde_json::Value>, StoreError>;

    /// The rule version an execution of this event ran, with its condition and action; `None` if the
    /// execution is unknown or belongs to another event.
    async fn execution_condition(
        &self,
        event_id: i64,
        execution_id: i64,
    ) -> Result<Option<ExecutionCondition>, StoreError>;

    /// An event's attempts, newest first, each with its rule executions; with
    /// `before_attempt_no`, only older ones (a cursor).
    async fn list_attempts(
        &self,
        event_id: i64,
        before_attempt_no: Option<i64>,
        page: Page,
    ) -> Result<Vec<Attempt>, StoreError>;

    /// The target a pending event waits for in the queue, and since when (`None` when it waits
    /// for nothing).
    async fn event_waiting(&self, id: i64) -> Result<Option<Waiting>, StoreError>;
}

/// Counts: events by state, arrivals by minute, history size.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// `filter.state` and `filter.external_id` are ignored.
    async fn event_stats(&self, filter: &EventFilter) -> Result<EventStats, StoreError>;

    /// Events that arrived in each minute since `since` (at most the last two hours are kept
    /// by minute), oldest first; minutes without events are left out.
    async fn arrivals_per_minute(&self, since: Timestamp) -> Result<Vec<Arrivals>, StoreError>;

    /// How many history rows are stored (for benchmarks: rows written per delivered event).
    async fn history_size(&self) -> Result<HistorySize, StoreError>;
}

/// Rules and their versions.
#[async_trait]
pub trait RuleStore: Send + Sync {
    async fn create_rule(&self, rule: &NewRuleRecord) -> Result<Rule, StoreError>;

    async fn get_rule(&self, id: i64) -> Result<Option<Rule>, StoreError>;

    /// Newest first.
    async fn list_rules(&self, filter: &RuleFilter, page: Page) -> Result<Vec<Rule>, StoreError>;

    /// Applies the changes in one transaction (a new version is n+1); `None` if unknown.
    async fn update_rule(&self, id: i64, changes: &RuleChanges)
        -> Result<Option<Rule>, StoreError>;

    /// Newest first.
    async fn list_rule_versions(&self, rule_id: i64) -> Result<Vec<RuleVersion>, StoreError>;

    /// Bumped by every rule change: workers compare it to know their cache is current.
    async fn rule_generation(&self) -> Result<i64, StoreError>;

    /// Every active rule at its current version.
    async fn active_rules(&self) -> Result<Vec<RuleSnapshot>, StoreError>;

    /// The rule versions an event's first attempt evaluated (what `rules: original` replays).
    async fn original_rules(&self, event_id: i64) -> Result<Vec<RuleSnapshot>, StoreError>;
}

/// Event types: their settings and schemas.
#[async_trait]
pub trait EventTypeStore: Send + Sync {
    /// Every event type configured, with events stored, or with rules, by name.
    async fn event_types(&self) -> Result<Vec<EventTypeRecord>, StoreError>;

    /// One event type if it is configured, has events or has rules.
    async fn event_type(&self, event_type: &str) -> Result<Option<EventTypeRecord>, StoreError>;

    /// Applies a partial change (creating the type's settings if needed) and bumps the rule
    /// generation in the same transaction, so every worker's cache picks it up.
    async fn update_event_type(
        &self,
        event_type: &str,
        changes: &EventTypeChanges,
    ) -> Result<EventTypeRecord, StoreError>;

    /// The settings of every configured type (what caches load; no counting).
    async fn event_type_settings(&self) -> Result<Vec<(String, EventTypeSettings)>, StoreError>;
}

/// Replay: settled events sent back to the queue.
#[async_trait]
pub trait ReplayStore: EventStore + Send + Sync {
    /// Sends a processed or failed event back to the queue for a `replay` attempt; says why
    /// not otherwise (unknown, or not finished).
    async fn replay_event(
        &self,
        id: i64,
        rules: ReplayRules,
        requested_by: Option<&str>,
    ) -> Result<Result<Event, ReplayRefusal>, StoreError> {
        if !self
            .replay_events(&[id], rules, requested_by)
            .await?
            .is_empty()
        {
            if let Some(event) = self.get_event(id).await? {
                return Ok(Ok(event));
            }
        }
        Ok(Err(match self.get_event(id).await? {
            None => ReplayRefusal::NotFound,
            Some(event) => ReplayRefusal::NotTerminal(event.state),
        }))
    }

    /// Replays those of `ids` that are processed or failed; says which (without payloads,
    /// so a large replay holds no payload in memory). `requested_by` (the asking key's name)
    /// is recorded on the replay attempt.
    async fn replay_events(
        &self,
        ids: &[i64],
        rules: ReplayRules,
        requested_by: Option<&str>,
    ) -> Result<Vec<StateChange>, StoreError>;

    /// Takes a pending event that waits (scheduled, or for a retry or a target) out of the
    /// queue: it ends `failed` with `last_error` saying it was cancelled, and by whom. One
    /// being processed or settled is refused.
    async fn cancel_event(
        &self,
        id: i64,
        requested_by: Option<&str>,
    ) -> Result<Result<StateChange, CancelRefusal>, StoreError>;

    /// Replays up to `limit` processed or failed events matching the filter, newest first.
    async fn replay_matching(
        &self,
        filter: &EventFilter,
        limit: i64,
        rules: ReplayRules,
        requested_by: Option<&str>,
    ) -> Result<Vec<StateChange>, StoreError>;
}

/// Delivery targets: circuit breakers, pauses, events waiting, load reports.
#[async_trait]
pub trait TargetStore: Send + Sync {
    /// Every target with a state (seen failing, paused, or delivered to), by name; `in_flight`
    /// sums the reports of workers heard from in the last few seconds.
    async fn targets(&self) -> Result<Vec<TargetRecord>, StoreError>;

    /// Pauses or resumes a target (creating its row if needed).
    async fn set_target_paused(
        &self,
        target: &str,
        paused: bool,
    ) -> Result<TargetRecord, StoreError>;

    /// Sets a target's own rate limit (`None`: the process default; `Some(0.0)`: no limit),
    /// creating its row if needed.
    async fn set_target_rate(
        &self,
        target: &str,
        max_per_second: Option<f64>,
    ) -> Result<TargetRecord, StoreError>;

    /// Hands out `count` consecutive send times `interval_us` apart to one worker process:
    /// the first is the target's next free one, or now if that has passed; the target's next
    /// free one moves past the last. Returns the first. Atomic across processes.
    async fn reserve_sends(
        &self,
        target: &str,
        count: i64,
        interval_us: i64,
    ) -> Result<Timestamp, StoreError>;

    /// The receiver answered 429: no send time is handed out before `until`, and its limit is
    /// divided by `slowdown` from now on — unless another 429 set it less than a second ago
    /// (many deliveries in flight get the same answer; that is one signal, not many).
    async fn throttle_target(
        &self,
        target: &str,
        until: Timestamp,
        slowdown: f64,
    ) -> Result<TargetRecord, StoreError>;

    /// Counts a failure that the breaker counts (a timeout, a 5xx, no connection): opens the
    /// circuit at `threshold` consecutive ones — or at once when it was probing — until
    /// `open_ms` from now.
    async fn record_target_failure(
        &self,
        target: &str,
        error: &str,
        threshold: i64,
        open_ms: i64,
    ) -> Result<TargetRecord, StoreError>;

    /// A delivery succeeded where the breaker had counted failures or was probing: closed.
    async fn close_target(&self, target: &str) -> Result<TargetRecord, StoreError>;

    /// Takes the probe of an open circuit whose open period is over, or of a half-open one
    /// whose probe never reported back (it becomes half open for another `open_ms`); false if
    /// another worker took it first or it is not due.
    async fn claim_target_probe(&self, target: &str, open_ms: i64) -> Result<bool, StoreError>;

    /// Makes up to `limit` events waiting for `target` due now, oldest first, and returns how
    /// many. Released for good (`as_probe` false: the target closed, was resumed, or has room)
    /// they no longer wait; released as the target's probe they keep waiting for it, so the
    /// worker that claims one knows it is the probe.
    async fn release_waiting(
        &self,
        target: &str,
        limit: i64,
        as_probe: bool,
    ) -> Result<u64, StoreError>;

    /// One worker's periodic report: deliveries in flight now and totals since the last.
    async fn report_targets(
        &self,
        worker: &str,
        reports: &[TargetReport],
    ) -> Result<(), StoreError>;
}

/// Access control: API keys and console sessions.
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Stores a new key (its hash and prefix; the key itself is never given to the store).
    async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, StoreError>;

    /// Every key, revoked ones included, newest first.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revokes a key (a second revoke keeps the first time) and ends its console sessions;
    /// `None` if unknown.
    async fn revoke_api_key(&self, id: i64) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Records when keys were last used (a batch of `(key id, time)`; later times win).
    async fn record_key_use(&self, uses: &[(i64, Timestamp)]) -> Result<(), StoreError>;

    /// Opens a console session (and forgets expired ones).
    async fn create_console_session(
        &self,
        token_hash: &str,
        api_key_id: i64,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// The key of an unexpired session.
    async fn console_session(&self, token_hash: &str) -> Result<Option<i64>, StoreError>;

    async fn end_console_session(&self, token_hash: &str) -> Result<(), StoreError>;
}

/// The at-most-once bookkeeping of actions: `started` records and what earlier attempts did.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Durably records that non-idempotent actions are about to run, in one statement;
    /// returns their row ids in the same order.
    async fn record_started(&self, started: &[NewStarted]) -> Result<Vec<i64>, StoreError>;

    /// For each key: `Applied` if any execution with it was applied, else `Started` if one was
    /// started and never completed (its worker died mid-call). Absent keys never ran.
    async fn prior_executions(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, sluice_core::event::ExecutionResult>, StoreError>;
}

/// Sources: where events come from besides `POST /events`.
#[async_trait]
pub trait SourceStore: Send + Sync {
    /// Creates or replaces a source; true when it was created.
    async fn put_source(
        &self,
        name: &str,
        kind: &str,
        config: &serde_json::Value,
        updated_by: Option<&str>,
    ) -> Result<(SourceRecord, bool), StoreError>;

    /// Every source, by name.
    async fn sources(&self) -> Result<Vec<SourceRecord>, StoreError>;

    async fn source(&self, name: &str) -> Result<Option<SourceRecord>, StoreError>;

    /// Deletes a source; false if there was none.
    async fn delete_source(&self, name: &str) -> Result<bool, StoreError>;

    /// Adds up what processes saw through their sources (unknown sources are skipped).
    async fn record_source_tallies(&self, tallies: &[SourceTally]) -> Result<(), StoreError>;
}

/// The worker's queue: claims, leases, completions, releases. Each backend writes its own.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Leases up to `limit` due pending events to `worker` for `lease_ms` and opens an attempt
    /// for each, in one transaction. Events leased by another worker are skipped, not waited on.
    async fn claim_due_events(
        &self,
        worker: &str,
        types: &TypeSelector,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError>;

    /// Readies the connections ingest writes on, and on each one the ingest statement, so
    /// the first events after a start do not wait for that. Writes nothing. Nothing to do
    /// by default.
    async fn prepare_ingest(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Readies what a worker's claims and completions use — their connections, and on each
    /// one its statement — so the first events after a start do not wait for that. Changes
    /// nothing. Nothing to do by default.
    async fn prepare_worker(
        &self,
        _worker: &str,
        _types: &TypeSelector,
        _lease_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Extends the leases of attempts still running.
    async fn extend_leases(&self, leases: &[HeldLease], lease_ms: i64) -> Result<(), StoreError>;

    /// Records attempts' ends and moves their events on, in one transaction. Executions are
    /// always recorded (they happened); the attempt and event are updated only while the
    /// attempt still holds the lease. Returns the state changes made.
    async fn complete_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<StateChange>, StoreError>;

    /// Gives processing events back: pending again (or `failed` once their type's
    /// `max_attempts` — `max_attempts` for a type without its own — attempts ran), their
    /// attempts `abandoned`.
    async fn release_events(
        &self,
        which: Release,
        max_attempts: i64,
    ) -> Result<Vec<StateChange>, StoreError>;
}

/// Upkeep: compaction and retention. Each backend writes its own.
#[async_trait]
pub trait UpkeepStore: Send + Sync {
    /// Reclaims the queue's dead rows so that its churn (every event passes through it)
    /// leaves it small however the database's own vacuuming is set up. Cheap: the queue
    /// holds only unsettled events. Skipped when another process is already at it.
    async fn compact_queue(&self) -> Result<(), StoreError>;

    /// Folds the count changes the database's triggers appended into the counts, and rolls
    /// counts by minute older than two hours up into hours; cheap when there is little to do.
    /// Readers see exact figures before and after.
    async fn compact_counts(&self) -> Result<(), StoreError>;

    /// Retention: deletes up to `limit` settled (processed or failed) events whose last change
    /// is older than `before`, oldest first, with their attempts and rule executions; returns
    /// how many. One process at a time (on PostgreSQL, others return 0 at once); events being
    /// replayed are skipped, pending and processing ones are never touched.
    async fn delete_settled(&self, before: Timestamp, limit: i64) -> Result<u64, StoreError>;
}

/// Signals between processes. Each backend writes its own.
#[async_trait]
pub trait SignalStore: Send + Sync {
    /// Tells every process listening (PostgreSQL `NOTIFY`, one per `(channel, payload)`, all in
    /// one round trip). SQLite serves one process, which signals itself in memory: a no-op there.
    async fn notify(&self, notifications: &[(&str, String)]) -> Result<(), StoreError>;

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
