//! The PostgreSQL store: production, shared by any number of API and worker processes.
//!
//! What is written here is what PostgreSQL does its own way: the one-statement ingest upsert
//! and the worker's claim, lease, completion and release (UNNEST arrays, `SKIP LOCKED`), and
//! `LISTEN`/`NOTIFY`. Everything else comes from [`crate::shared`].

use crate::ingest::UpsertRow;
use crate::model::*;
use crate::shared::dialect::{Dialect, RowExt};
use crate::shared::rows::{event_from_row, state_change_from_row, summary_from_row};
use crate::shared::stats::counts_by_minute_until;
use crate::shared::Engine;
use crate::worker::{release_message, CompletionPlan};
use crate::{Backend, NotificationStream, QueueStore, SignalStore, StoreError, UpkeepStore};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use sluice_core::event::AttemptStatus;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, QueryBuilder, Row};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The advisory lock that makes retention one process at a time ("sluice.r" in ASCII).
const RETENTION_LOCK: i64 = 0x736c_7569_6365_2e72;
/// The advisory lock of count compaction ("sluice.c").
const COUNTS_LOCK: i64 = 0x736c_7569_6365_2e63;

const CLAIMED_COLUMNS: &str = "e.id, e.external_id, e.type, e.payload, e.state, e.received_count, \
     e.attempts, e.next_attempt_at, e.last_error, e.created_at, e.updated_at, e.processed_at, \
     e.replayed_at, e.lease_expires_at, e.leased_by, e.ordering_key, e.run_attempts, \
     e.replay_rules, e.trace_context";

pub struct PostgresStore {
    pool: PgPool,
    /// For claims, lease renewals and the stats (which count the leases):
    /// `synchronous_commit=off`, so a claim does not wait for a WAL flush. Losing one in a database crash is harmless — the event is simply still
    /// pending — and any later durable commit (a `started` record, an outcome) flushes the WAL
    /// up to and including it, so no outcome is ever durable without its claim.
    lease_pool: PgPool,
    /// For `NOTIFY` only, also `synchronous_commit=off`: a notification is a hint (workers
    /// poll, the console reloads), so its transaction need not wait for a WAL flush of its
    /// own — under load there are as many of them as ingest batches.
    notify_pool: PgPool,
    /// For recording outcomes and releasing expired leases: `enable_seqscan=off`. Those
    /// statements find every row they touch by key, but a plan is made once per connection
    /// and kept, and one made while `events` was small (a fresh install, before any ANALYZE)
    /// scans it whole: 2.7 ms per outcome batch at 20,000 events instead of 0.28, growing
    /// with the history.
    completion_pool: PgPool,
    /// For each delivery's dedupe lookup and `started` record, and releases of waiting
    /// events: `enable_seqscan=off`, for the same reason — `rule_executions` grows with the
    /// history and may never have been analyzed, and a lookup by idempotency key that
    /// scans it took 300 ms at 60,000 rows.
    delivery_pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid DATABASE_URL: {e}")))?
            .options([
                // Every statement here is short; a plan whose cost estimate crosses the JIT
                // threshold (a big table the planner has no statistics for) would spend
                // 100 ms compiling a query that runs in one.
                ("jit", "off"),
                // Listings must walk their index in the order they page and stop at the
                // page's end. A bitmap scan gathers every row of the filter and sorts them
                // (26 ms instead of 0.6 at 100,000 events), and a planner without fresh
                // statistics picks it. Nothing sluice runs needs one.
                ("enable_bitmapscan", "off"),
            ]);
        let pool = pool_options(max_connections.max(2))
            .connect_with(options.clone())
            .await?;
        let notify_pool = pool_options(1)
            .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));
        // Lazy: API-only processes never claim, so they never open these connections.
        let lease_pool = pool_options(2).connect_lazy_with(options.clone().options([
            ("synchronous_commit", "off"),
            // A claim must walk the due index in order and stop at its limit, whatever
            // the planner believes: a queue filled since the last ANALYZE looks nearly
            // empty (so it would gather every due row and sort them), and a generic plan
            // does not know the limit is small (so it would hash the whole queue). Only
            // claims, lease renewals and the stats use these connections, all of them index
            // lookups or scans of small tables that have no index to take.
            ("plan_cache_mode", "force_custom_plan"),
            ("enable_seqscan", "off"),
        ]));
        // Two: a worker's two completion writers (its reaper takes turns with them).
        let completion_pool =
            pool_options(2).connect_lazy_with(options.clone().options([("enable_seqscan", "off")]));
        let delivery_pool =
            pool_options(8).connect_lazy_with(options.options([("enable_seqscan", "off")]));
        Ok(Self {
            pool,
            lease_pool,
            notify_pool,
            completion_pool,
            delivery_pool,
        })
    }

    /// The connection pool, for `LISTEN` connections of the worker and the live feed.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Pool settings shared by every pool here. A connection that sat idle for a while is
/// pinged before use (a restarted database closed it); one in steady use is not — the ping
/// is a round trip, and sqlx's default pings on every acquire: one per ingest batch, claim
/// and completion, each waking a backend for nothing.
/// Runs a `VACUUM (SKIP_LOCKED …)`. While another process vacuums the same table the server
/// skips it with a warning, which sqlx would log as this process's: it is what SKIP_LOCKED is
/// for, so the connection asks for errors only while the statement runs.
async fn vacuum_skipping_locked(pool: &PgPool, statement: &str) -> Result<(), StoreError> {
    let mut pooled = pool.acquire().await?;
    let connection: &mut sqlx::PgConnection = &mut pooled;
    sqlx::query("SET client_min_messages = error")
        .execute(&mut *connection)
        .await?;
    let vacuumed = sqlx::query(statement).execute(&mut *connection).await;
    let reset = sqlx::query("RESET client_min_messages")
        .execute(&mut *connection)
        .await;
    if reset.is_err() {
        // Not back to normal: this connection goes rather than back to the pool.
        pooled.close_on_drop();
    }
    vacuumed?;
    reset?;
    Ok(())
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= IDLE_BEFORE_PING {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// How long a connection may sit idle before it is pinged on its next use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

async fn upsert_round(
    conn: &mut sqlx::PgConnection,
    rows: &[UpsertRow<'_>],
) -> Result<HashMap<String, EventSummary>, StoreError> {
    let external_ids: Vec<&str> = rows.iter().map(|r| r.external_id).collect();
    let types: Vec<&str> = rows.iter().map(|r| r.event_type).collect();
    let payloads: Vec<&str> = rows.iter().map(|r| r.payload).collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.payload_hash).collect();
    let counts: Vec<i64> = rows.iter().map(|r| r.count).collect();
    let keys: Vec<Option<&str>> = rows.iter().map(|r| r.ordering_key).collect();
    let due: Vec<Option<chrono::DateTime<chrono::Utc>>> =
        rows.iter().map(|r| r.process_at).collect();
    let traces: Vec<Option<&str>> = rows.iter().map(|r| r.trace_context).collect();
    // One statement for the whole batch; the WHERE makes a different payload a no-op that
    // returns no row, which the caller turns into a conflict.
    // A new event (xmax = 0: inserted, not updated) enters the queue in the same statement.
    let returned = sqlx::query(
        "WITH upserted AS ( \
            INSERT INTO events (external_id, type, payload, payload_hash, received_count, \
               ordering_key, next_attempt_at, trace_context) \
            SELECT e, t, p::jsonb, h, c, k, COALESCE(n, now()), tc \
            FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], \
               $7::timestamptz[], $8::text[]) AS u(e, t, p, h, c, k, n, tc) \
            ON CONFLICT (external_id) DO UPDATE \
               SET received_count = events.received_count + EXCLUDED.received_count, \
                   updated_at = now() \
               WHERE events.payload_hash = EXCLUDED.payload_hash \
            RETURNING id, external_id, type, state, received_count, created_at, ordering_key, \
               next_attempt_at, xmax = 0 AS inserted \
         ), queued AS ( \
            INSERT INTO event_queue (event_id, type, ordering_key, next_attempt_at) \
            SELECT id, type, ordering_key, next_attempt_at FROM upserted WHERE inserted \
         ) SELECT id, external_id, type, state, received_count, created_at FROM upserted",
    )
    .bind(&external_ids)
    .bind(&types)
    .bind(&payloads)
    .bind(&hashes)
    .bind(&counts)
    .bind(&keys)
    .bind(&due)
    .bind(&traces)
    .fetch_all(conn)
    .await?;
    returned
        .iter()
        .map(|row| {
            let summary = summary_from_row(row)?;
            Ok((summary.external_id.clone(), summary))
        })
        .collect()
}

impl Dialect for Postgres {
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const PAYLOAD_BYTES: &'static str = "octet_length(payload::text)::bigint";
    // OFFSET 0 keeps the subquery from being flattened into a join the planner could turn
    // around (walking every event by date, probing the queue for each).
    const QUEUED_EVENTS: &'static str = "event_queue q CROSS JOIN LATERAL (\
        SELECT id, type, state, external_id, created_at FROM events \
        WHERE events.id = q.event_id OFFSET 0) e";

    fn push_timestamp(query: &mut QueryBuilder<'_, Self>, at: Timestamp) {
        query.push_bind(at);
    }

    fn push_now(query: &mut QueryBuilder<'_, Self>, _now: Timestamp) {
        query.push("now()");
    }

    fn push_in_ids(query: &mut QueryBuilder<'_, Self>, column: &str, ids: &[i64]) {
        query
            .push(column)
            .push(" = ANY(")
            .push_bind(ids.to_vec())
            .push("::bigint[])");
    }

    fn push_in_texts(query: &mut QueryBuilder<'_, Self>, column: &str, values: &[String]) {
        query
            .push(column)
            .push(" = ANY(")
            .push_bind(values.to_vec())
            .push("::text[])");
    }

    fn timestamp(row: &PgRow, column: &str) -> Result<Timestamp, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn opt_timestamp(row: &PgRow, column: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(row.try_get(column)?)
    }

    fn json(row: &PgRow, column: &str) -> Result<Value, StoreError> {
        Ok(row.try_get(column)?)
    }
}

/// The completion statement, apart so that a worker can prepare it with nothing to write.
impl PostgresStore {
    async fn write_completion(
        &self,
        plan: &CompletionPlan<'_>,
    ) -> Result<Vec<StateChange>, StoreError> {
        let (x, s, e) = (&plan.new_executions, &plan.started, &plan.events);
        // One statement, atomic on its own: move each event that its attempt still holds,
        // settle or requeue its queue row, write those attempts (once, finished), record
        // every execution — they happened, whether or not the attempt kept its lease — and
        // settle `started` ones.
        let moved = sqlx::query(
            "WITH u AS ( \
                SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], \
                    $5::text[], $6::boolean[], $7::text[], $8::bigint[], $21::boolean[], \
                    $22::text[]) \
                    AS u(event_id, attempt_id, state, next_at, error, deferred, status, duration_ms, \
                        set_aside, waiting_for) \
             ), moved AS ( \
                UPDATE events e SET state = u.state, next_attempt_at = u.next_at, \
                    last_error = CASE WHEN u.set_aside THEN e.last_error ELSE u.error END, \
                    attempts = CASE WHEN u.set_aside THEN e.attempts - 1 ELSE e.attempts END, \
                    processed_at = CASE WHEN u.state = 'pending' THEN NULL ELSE now() END, \
                    next_trigger = CASE WHEN u.state = 'pending' AND NOT u.deferred THEN 'retry' \
                        ELSE e.next_trigger END, \
                    run_attempts = CASE WHEN u.deferred THEN e.run_attempts - 1 \
                        ELSE e.run_attempts END, \
                    lease_expires_at = NULL, leased_by = NULL, current_attempt_id = NULL, \
                    updated_at = now() \
                FROM u JOIN events o ON o.id = u.event_id \
                WHERE e.id = u.event_id AND e.current_attempt_id = u.attempt_id \
                    AND e.state = 'processing' \
                RETURNING e.id, e.external_id, e.type, e.state, e.next_attempt_at, u.attempt_id, \
                    u.status, u.error, u.duration_ms, o.attempts AS attempt_no, o.next_trigger AS trigger, \
                    o.leased_by AS worker, COALESCE(o.claimed_at, o.updated_at) AS started_at, \
                    CASE WHEN o.next_trigger = 'replay' THEN o.replay_requested_by END \
                        AS requested_by, u.set_aside, u.waiting_for \
             ), settled AS ( \
                DELETE FROM event_queue q USING moved m \
                WHERE q.event_id = m.id AND m.state <> 'pending' \
             ), requeued AS ( \
                UPDATE event_queue q SET next_attempt_at = m.next_attempt_at, \
                    lease_expires_at = NULL, waiting_for = m.waiting_for, \
                    waiting_since = CASE WHEN m.waiting_for IS NULL THEN NULL \
                        WHEN q.waiting_for = m.waiting_for THEN q.waiting_since ELSE now() END \
                FROM moved m WHERE q.event_id = m.id AND m.state = 'pending' \
             ), attempts AS ( \
                INSERT INTO event_attempts (id, event_id, attempt_no, trigger, status, error, \
                    worker, started_at, finished_at, duration_ms, requested_by) \
                SELECT attempt_id, id, attempt_no, trigger, status, error, worker, started_at, \
                    now(), duration_ms, requested_by FROM moved WHERE NOT set_aside \
                ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error, \
                    finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms \
                    WHERE event_attempts.status = 'running' \
             ), executions AS ( \
                INSERT INTO rule_executions (attempt_id, event_id, rule_id, rule_version_id, \
                    result, error, idempotency_key, duration_ms) \
                SELECT * FROM UNNEST($9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], \
                    $13::text[], $14::text[], $15::text[], $16::bigint[]) \
             ), started AS ( \
                UPDATE rule_executions x SET result = v.result, error = v.error, \
                    duration_ms = v.duration_ms, executed_at = now() \
                FROM UNNEST($17::bigint[], $18::text[], $19::text[], $20::bigint[]) \
                    AS v(id, result, error, duration_ms) \
                WHERE x.id = v.id \
             ) SELECT id, external_id, type, state, \
                    CASE WHEN NOT set_aside THEN attempt_id END AS attempt_id, \
                    CASE WHEN NOT set_aside THEN status END AS status, \
                    CASE WHEN NOT set_aside THEN now() END AS finished_at, \
                    CASE WHEN NOT set_aside THEN duration_ms END AS duration_ms FROM moved",
        )
        .bind(&e.event_ids)
        .bind(&e.attempt_ids)
        .bind(&e.states)
        .bind(&e.next_ats)
        .bind(&e.errors)
        .bind(&e.deferred)
        .bind(&e.statuses)
        .bind(&e.durations)
        .bind(&x.attempt_ids)
        .bind(&x.event_ids)
        .bind(&x.rule_ids)
        .bind(&x.rule_version_ids)
        .bind(&x.results)
        .bind(&x.errors)
        .bind(&x.keys)
        .bind(&x.durations)
        .bind(&s.ids)
        .bind(&s.results)
        .bind(&s.errors)
        .bind(&s.durations)
        .bind(&e.set_aside)
        .bind(&e.waiting_for)
        .fetch_all(&self.completion_pool)
        .await?;
        moved
            .iter()
            .map(|row| {
                // None for an event set aside: it had no attempt.
                let attempt_id: Option<i64> = row.value("attempt_id")?;
                let status = match attempt_id {
                    Some(_) => Some(row.text_enum::<AttemptStatus>("status")?),
                    None => None,
                };
                Ok(StateChange {
                    status,
                    finished_at: row.opt_timestamp("finished_at")?,
                    duration_ms: row.value("duration_ms")?,
                    ..state_change_from_row(row, attempt_id)?
                })
            })
            .collect()
    }
}

#[async_trait]
impl Engine for PostgresStore {
    type Dialect = Postgres;

    const BACKEND: Backend = Backend::Postgres;

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    fn reads(&self) -> &PgPool {
        &self.pool
    }

    fn writes(&self) -> &PgPool {
        &self.pool
    }

    /// The claims' connections: they never scan a table sequentially where an index exists.
    fn queue_reads(&self) -> &PgPool {
        &self.lease_pool
    }

    fn deliveries(&self) -> &PgPool {
        &self.delivery_pool
    }

    const UPSERT_ROWS_PER_STATEMENT: usize = usize::MAX;

    async fn upsert_round(
        conn: &mut sqlx::PgConnection,
        rows: &[UpsertRow<'_>],
    ) -> Result<HashMap<String, EventSummary>, StoreError> {
        upsert_round(conn, rows).await
    }
}

#[async_trait]
impl QueueStore for PostgresStore {
    async fn claim_due_events(
        &self,
        worker: &str,
        types: &TypeSelector,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedEvent>, StoreError> {
        let include: Vec<String> = types
            .include
            .iter()
            .map(|g| TypeSelector::like_pattern(g))
            .collect();
        let exclude: Vec<String> = types
            .exclude
            .iter()
            .map(|g| TypeSelector::like_pattern(g))
            .collect();
        // One statement: pick due queue rows no one holds, lease them, and mark their events
        // (a HOT update: nothing the claim changes in `events` is indexed). The attempt's id
        // comes from the sequence; its row is written when it ends (see `complete_attempts`).
        let rows = sqlx::query(&format!(
            "WITH due AS ( \
                SELECT q.event_id FROM event_queue q \
                WHERE q.lease_expires_at IS NULL AND q.next_attempt_at <= now() \
                AND (cardinality($4::text[]) = 0 OR q.type LIKE ANY($4::text[])) \
                AND NOT (q.type LIKE ANY($5::text[])) \
                AND (q.ordering_key IS NULL OR NOT EXISTS ( \
                    SELECT 1 FROM event_queue o WHERE o.ordering_key = q.ordering_key \
                    AND o.event_id < q.event_id)) \
                ORDER BY q.next_attempt_at, q.event_id LIMIT $2 FOR UPDATE SKIP LOCKED \
             ), leased AS ( \
                UPDATE event_queue q \
                SET lease_expires_at = now() + make_interval(secs => $3::double precision / 1000) \
                FROM due WHERE q.event_id = due.event_id \
                RETURNING q.event_id, q.lease_expires_at, q.waiting_for, q.waiting_since \
             ), claimed AS ( \
                UPDATE events e SET state = 'processing', attempts = e.attempts + 1, \
                    run_attempts = e.run_attempts + 1, leased_by = $1, \
                    current_attempt_id = nextval('event_attempts_id_seq'), claimed_at = now(), \
                    lease_expires_at = leased.lease_expires_at, updated_at = now() \
                FROM leased WHERE e.id = leased.event_id \
                RETURNING {CLAIMED_COLUMNS}, e.current_attempt_id AS attempt_id, \
                    e.attempts AS attempt_no, e.next_trigger AS trigger, leased.waiting_for, \
                    leased.waiting_since \
             ) SELECT *, (SELECT generation FROM rule_generation WHERE id = 1) AS rule_generation \
             FROM claimed ORDER BY next_attempt_at, id"
        ))
        .bind(worker)
        .bind(limit)
        .bind(lease_ms)
        .bind(&include)
        .bind(&exclude)
        .fetch_all(&self.lease_pool)
        .await?;
        rows.iter().map(claimed_from_row).collect()
    }

    async fn extend_leases(&self, leases: &[HeldLease], lease_ms: i64) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let event_ids: Vec<i64> = leases.iter().map(|l| l.event_id).collect();
        let attempt_ids: Vec<i64> = leases.iter().map(|l| l.attempt_id).collect();
        sqlx::query(
            // By event id (index lookups only), and only while the attempt still holds the
            // lease. SKIP LOCKED: a row locked right now is being completed, so it needs no
            // renewal, and waiting for it could deadlock with that completion.
            "UPDATE event_queue SET lease_expires_at = now() + make_interval(secs => $3::double precision / 1000) \
             WHERE event_id IN (SELECT q.event_id \
                FROM UNNEST($1::bigint[], $2::bigint[]) AS u(event_id, attempt_id) \
                JOIN event_queue q ON q.event_id = u.event_id \
                JOIN events e ON e.id = u.event_id \
                WHERE e.current_attempt_id = u.attempt_id AND e.state = 'processing' \
                AND q.lease_expires_at IS NOT NULL \
                FOR UPDATE OF q SKIP LOCKED)",
        )
        .bind(&event_ids)
        .bind(&attempt_ids)
        .bind(lease_ms)
        .execute(&self.lease_pool)
        .await?;
        Ok(())
    }

    async fn prepare_ingest(&self) -> Result<(), StoreError> {
        // The group commit alternates between two writes; an upsert of no rows plans the
        // statement and compiles the count trigger (which inserts nothing for no rows) on
        // each connection.
        let prepare = || async {
            let mut conn = self.pool.acquire().await?;
            upsert_round(&mut conn, &[]).await.map(drop)
        };
        let (first, second) = tokio::join!(prepare(), prepare());
        first?;
        second
    }

    async fn prepare_worker(
        &self,
        worker: &str,
        types: &TypeSelector,
        lease_ms: i64,
    ) -> Result<(), StoreError> {
        // Two of each at once: the pools then open both of their connections. A claim of
        // nothing and a completion of nothing plan their statements and load the catalog
        // entries of every table and index they touch, which a new connection does not have.
        let nothing = CompletionPlan::new(&[]);
        let (first, second, third, fourth) = tokio::join!(
            self.claim_due_events(worker, types, 0, lease_ms),
            self.claim_due_events(worker, types, 0, lease_ms),
            self.write_completion(&nothing),
            self.write_completion(&nothing),
        );
        first?;
        second?;
        third?;
        fourth?;
        Ok(())
    }

    async fn complete_attempts(
        &self,
        outcomes: &[AttemptOutcome],
    ) -> Result<Vec<StateChange>, StoreError> {
        if outcomes.is_empty() {
            return Ok(Vec::new());
        }
        self.write_completion(&CompletionPlan::new(outcomes)).await
    }

    async fn release_events(
        &self,
        which: Release,
        max_attempts: i64,
    ) -> Result<Vec<StateChange>, StoreError> {
        let (predicate, seconds) = match which {
            Release::Expired => ("q.lease_expires_at < now()", 0),
            Release::OlderThan(seconds) => (
                "q.lease_expires_at IS NOT NULL \
                 AND events.updated_at < now() - make_interval(secs => $3::bigint)",
                seconds,
            ),
        };
        let message = release_message(which);
        // The abandoned attempt is written here, from the lease (a claim writes no row), or
        // a `running` row from before claims stopped writing one is closed.
        let rows = sqlx::query(&format!(
            "WITH stale AS ( \
                SELECT id, current_attempt_id, attempts, next_trigger, leased_by, \
                    COALESCE(claimed_at, updated_at) AS started_at, replay_requested_by, \
                    COALESCE((SELECT t.max_attempts FROM event_types t \
                    WHERE t.event_type = events.type), $1) AS max_attempts \
                FROM event_queue q JOIN events ON events.id = q.event_id \
                WHERE events.state = 'processing' AND {predicate} AND $3::bigint >= 0 \
                FOR UPDATE OF events SKIP LOCKED \
             ), reset AS ( \
                UPDATE events e SET \
                    state = CASE WHEN e.run_attempts >= s.max_attempts THEN 'failed' ELSE 'pending' END, \
                    processed_at = CASE WHEN e.run_attempts >= s.max_attempts THEN now() ELSE NULL END, \
                    next_attempt_at = now(), next_trigger = 'retry', last_error = $2, \
                    lease_expires_at = NULL, leased_by = NULL, current_attempt_id = NULL, \
                    updated_at = now() \
                FROM stale s WHERE e.id = s.id \
                RETURNING e.id, e.external_id, e.type, e.state, s.current_attempt_id \
             ), settled AS ( \
                DELETE FROM event_queue q USING reset r WHERE q.event_id = r.id AND r.state = 'failed' \
             ), requeued AS ( \
                UPDATE event_queue q SET next_attempt_at = now(), lease_expires_at = NULL \
                FROM reset r WHERE q.event_id = r.id AND r.state = 'pending' \
             ), abandoned AS ( \
                INSERT INTO event_attempts (id, event_id, attempt_no, trigger, status, error, \
                    worker, started_at, finished_at, duration_ms, requested_by) \
                SELECT s.current_attempt_id, s.id, s.attempts, s.next_trigger, 'abandoned', $2, \
                    s.leased_by, s.started_at, now(), \
                    (extract(epoch FROM now() - s.started_at) * 1000)::bigint, \
                    CASE WHEN s.next_trigger = 'replay' THEN s.replay_requested_by END \
                FROM stale s WHERE s.current_attempt_id IS NOT NULL \
                ON CONFLICT (id) DO UPDATE SET status = 'abandoned', error = EXCLUDED.error, \
                    finished_at = EXCLUDED.finished_at, \
                    duration_ms = (extract(epoch FROM now() - event_attempts.started_at) * 1000)::bigint \
                    WHERE event_attempts.status = 'running' \
                RETURNING id, finished_at, duration_ms \
             ) SELECT r.id, r.external_id, r.type, r.state, r.current_attempt_id, \
                      ab.finished_at, ab.duration_ms \
               FROM reset r LEFT JOIN abandoned ab ON ab.id = r.current_attempt_id"
        ))
        .bind(max_attempts)
        .bind(message)
        .bind(seconds)
        .fetch_all(&self.completion_pool)
        .await?;
        rows.iter()
            .map(|row| {
                let attempt_id: Option<i64> = row.value("current_attempt_id")?;
                Ok(StateChange {
                    status: attempt_id.map(|_| AttemptStatus::Abandoned),
                    finished_at: row.opt_timestamp("finished_at")?,
                    duration_ms: row.value("duration_ms")?,
                    ..state_change_from_row(row, attempt_id)?
                })
            })
            .collect()
    }
}

#[async_trait]
impl UpkeepStore for PostgresStore {
    async fn compact_queue(&self) -> Result<(), StoreError> {
        // Not left to autovacuum alone: it may be off, or too slow for a table every event
        // passes through; without it dead rows are never reused and the queue only grows.
        // ANALYZE too: after a burst the queue's file stays large until VACUUM can give its
        // empty pages back, and the planner should know how few rows are left in it.
        // Pages are given back only when the queue is empty: the exclusive lock that takes
        // is retried for up to seconds while ingest and claims keep using the table (at a
        // steady 2,000 events/s each compaction took 1–3 s), and once the queue is empty
        // everything it took after a burst can go.
        let (empty,): (bool,) = sqlx::query_as("SELECT NOT EXISTS (SELECT 1 FROM event_queue)")
            .fetch_one(&self.pool)
            .await?;
        let vacuum = if empty {
            "VACUUM (SKIP_LOCKED, ANALYZE) event_queue"
        } else {
            "VACUUM (SKIP_LOCKED, ANALYZE, TRUNCATE false) event_queue"
        };
        vacuum_skipping_locked(&self.pool, vacuum).await
    }

    async fn compact_counts(&self) -> Result<(), StoreError> {
        let minutes_until = counts_by_minute_until();
        let mut tx = self.pool.begin().await?;
        // Every process calls this each second; one at a time does the work (a second one
        // would only wait on the first one's deleted rows), the others return at once.
        let (ours,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
            .bind(COUNTS_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !ours {
            return Ok(());
        }
        // DELETE … RETURNING: even without the lock, two processes compacting at once would
        // each fold the rows they deleted, never the same row twice.
        sqlx::query(
            "WITH moved AS ( \
                DELETE FROM event_count_changes RETURNING type, bucket, status, failed_hour, n \
             ) INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n) \
             SELECT type, \
                CASE WHEN bucket < $1 THEN date_bin('1 hour', bucket, TIMESTAMPTZ 'epoch') \
                     ELSE bucket END, \
                CASE WHEN bucket < $1 THEN 60 ELSE 1 END, status, failed_hour, sum(n) \
             FROM moved GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 \
             ON CONFLICT (type, bucket, bucket_minutes, status, failed_hour) \
             DO UPDATE SET n = event_counts.n + EXCLUDED.n",
        )
        .bind(minutes_until)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "WITH old AS ( \
                DELETE FROM event_counts WHERE bucket_minutes = 1 AND bucket < $1 \
                RETURNING type, bucket, status, failed_hour, n \
             ) INSERT INTO event_counts (type, bucket, bucket_minutes, status, failed_hour, n) \
             SELECT type, date_bin('1 hour', bucket, TIMESTAMPTZ 'epoch'), 60, status, \
                failed_hour, sum(n) \
             FROM old GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 \
             ON CONFLICT (type, bucket, bucket_minutes, status, failed_hour) \
             DO UPDATE SET n = event_counts.n + EXCLUDED.n",
        )
        .bind(minutes_until)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM event_counts WHERE n = 0")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Every event's changes pass through this table: its dead rows are reclaimed here,
        // autovacuum or not, so readers scanning it stay fast. Its empty pages are kept
        // (TRUNCATE false): they refill within the second, and giving them back takes an
        // exclusive lock on a table every claim and completion inserts into (0.3 ms a call
        // instead of 1.3 during a drain).
        vacuum_skipping_locked(
            &self.pool,
            "VACUUM (SKIP_LOCKED, TRUNCATE false) event_count_changes",
        )
        .await
    }

    async fn delete_settled(&self, before: Timestamp, limit: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (ours,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
            .bind(RETENTION_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !ours {
            return Ok(0);
        }
        // SKIP LOCKED: an event a replay holds is left for the next round, and neither waits.
        let deleted = sqlx::query(
            "WITH doomed AS ( \
                SELECT id FROM events \
                WHERE created_at < $1 AND updated_at < $1 AND state IN ('processed', 'failed') \
                ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED \
             ), attempts AS ( \
                DELETE FROM event_attempts WHERE event_id IN (SELECT id FROM doomed) RETURNING id \
             ), executions AS ( \
                DELETE FROM rule_executions WHERE attempt_id IN (SELECT id FROM attempts) \
             ) DELETE FROM events WHERE id IN (SELECT id FROM doomed)",
        )
        .bind(before)
        .bind(limit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

#[async_trait]
impl SignalStore for PostgresStore {
    async fn notify(&self, notifications: &[(&str, String)]) -> Result<(), StoreError> {
        if notifications.is_empty() {
            return Ok(());
        }
        let channels: Vec<&str> = notifications.iter().map(|(c, _)| *c).collect();
        let payloads: Vec<&str> = notifications.iter().map(|(_, p)| p.as_str()).collect();
        sqlx::query("SELECT pg_notify(c, p) FROM UNNEST($1::text[], $2::text[]) AS u(c, p)")
            .bind(&channels)
            .bind(&payloads)
            .execute(&self.notify_pool)
            .await?;
        Ok(())
    }

    async fn listen(&self, channels: &[&str]) -> Result<Option<NotificationStream>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        let stream = listener.into_stream().map(|item| {
            item.map(|n| (n.channel().to_owned(), n.payload().to_owned()))
                .map_err(StoreError::from)
        });
        Ok(Some(Box::pin(stream)))
    }
}

fn claimed_from_row(row: &PgRow) -> Result<ClaimedEvent, StoreError> {
    Ok(ClaimedEvent {
        event: event_from_row(row)?,
        attempt_id: row.value("attempt_id")?,
        attempt_no: row.value("attempt_no")?,
        trigger: row.text_enum("trigger")?,
        replay_rules: row.text_enum("replay_rules")?,
        run_attempts: row.value("run_attempts")?,
        rule_generation: row.value("rule_generation")?,
        waiting_for: row.value("waiting_for")?,
        waiting_since: row.opt_timestamp("waiting_since")?,
        trace_context: row.value("trace_context")?,
    })
}
