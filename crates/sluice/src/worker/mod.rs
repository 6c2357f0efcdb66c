//! The worker: claims due events in batches under a lease, processes them concurrently, writes
//! their outcomes in batches, and keeps leases alive. Several workers (in any number of
//! processes) may share one database: a claim skips what another worker holds.
//!
//! Tasks: the claim loop (woken by the bus, polling only as a fallback), one task per event in
//! flight (bounded by `concurrency`), a completion writer (group commit of outcomes), a lease
//! heartbeat and a reaper that gives back events whose worker died.

mod bookkeeping;
mod process;
mod rules;

use crate::actions::Actions;
use crate::bus::{Bus, Committed};
use crate::rule_pass::{compile_all, RuleSet};
use process::{process, ProcessContext};
use rules::RuleCache;
use sluice_core::logic::Limits;
use sluice_core::retry::RetryPolicy;
use sluice_store::{
    AttemptOutcome, Backend, ClaimedEvent, HeldLease, NextState, Release, ReplayRules, Store,
    TypeSelector,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker_id: String,
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub processing_timeout: Duration,
    pub retry: RetryPolicy,
    /// How long an event may wait for its target (TARGET_MAX_WAIT).
    pub max_wait: Duration,
    /// How long a claim holds an event without renewal; a dead worker's events come back
    /// after at most this (plus the reaper's period).
    pub lease: Duration,
    pub reap_interval: Duration,
    pub claim_batch: usize,
    pub limits: Limits,
    pub targets: crate::delivery::TargetLimits,
    /// The event types this worker claims (its pool).
    pub types: TypeSelector,
    /// Whether it reports operational events (`OPERATIONAL_EVENTS`).
    pub operational_events: bool,
}

impl WorkerConfig {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        WorkerConfig {
            worker_id: pool_worker_id(&type_selector(settings)),
            concurrency: usize::try_from(settings.worker_concurrency).unwrap_or(64),
            poll_interval: Duration::from_millis(settings.worker_poll_interval_ms),
            processing_timeout: Duration::from_millis(settings.processing_timeout_ms),
            retry: settings.retry_policy(),
            max_wait: settings
                .target_max_wait
                .0
                .to_std()
                .unwrap_or(Duration::from_secs(86_400)),
            lease: Duration::from_secs(10),
            reap_interval: Duration::from_secs(1),
            claim_batch: 256,
            limits: settings.rule_limits(),
            targets: crate::delivery::TargetLimits::from_settings(settings),
            operational_events: settings.operational_events,
            types: type_selector(settings),
        }
    }
}

/// The pool a worker's settings describe: the non-empty, trimmed globs.
fn type_selector(settings: &crate::config::Settings) -> TypeSelector {
    let clean = |globs: &[String]| {
        globs
            .iter()
            .map(|g| g.trim().to_owned())
            .filter(|g| !g.is_empty())
            .collect::<Vec<_>>()
    };
    TypeSelector {
        include: clean(&settings.event_types),
        exclude: clean(&settings.exclude_event_types),
    }
}

/// The pool's name as attempts and metrics show it: `payment.*,order.created`, `!ship.*`,
/// or `all`.
pub fn pool_name(types: &TypeSelector) -> String {
    let mut parts: Vec<String> = types.include.clone();
    parts.extend(types.exclude.iter().map(|g| format!("!{g}")));
    if parts.is_empty() {
        "all".to_owned()
    } else {
        parts.join(",")
    }
}

/// The worker id, with its pool when it has one: `host:pid:random[payment.*]`.
fn pool_worker_id(types: &TypeSelector) -> String {
    let id = worker_id();
    if types.include.is_empty() && types.exclude.is_empty() {
        id
    } else {
        format!("{id}[{}]", pool_name(types))
    }
}

/// `host:pid:random`, unique per worker instance, shown in attempts.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Starts a worker; it stops (finishing what it holds) when `shutdown` is cancelled.
pub fn spawn(
    store: Arc<dyn Store>,
    bus: Bus,
    actions: Actions,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, bus, actions, config, shutdown))
}

async fn run(
    store: Arc<dyn Store>,
    bus: Bus,
    actions: Actions,
    config: WorkerConfig,
    shutdown: CancellationToken,
) {
    tracing::info!(worker = %config.worker_id, concurrency = config.concurrency, "worker started");
    // Attempt id → event id of every lease this worker holds (renewed by the heartbeat).
    let in_flight: Arc<Mutex<HashMap<i64, i64>>> = Arc::default();
    let operational = crate::operational::Operational::start(
        store.clone(),
        bus.clone(),
        config.operational_events,
    );
    // Room for half of what is held: a finished attempt hands over its outcome and frees its
    // slot without waiting for the batch being written.
    let (done_sender, done_receiver) =
        mpsc::channel::<Finished>(config.concurrency.max(1) * HELD_PER_SLOT / 2);
    let done_receiver = Arc::new(tokio::sync::Mutex::new(done_receiver));
    let writers: Vec<_> = (0..completion_writers(store.backend()))
        .map(|_| {
            tokio::spawn(write_completions(
                pool_name(&config.types),
                store.clone(),
                bus.clone(),
                done_receiver.clone(),
                in_flight.clone(),
                operational.clone(),
            ))
        })
        .collect();
    let background = CancellationToken::new();
    let heartbeat = tokio::spawn(renew_leases(
        store.clone(),
        config.clone(),
        in_flight.clone(),
        background.clone(),
    ));
    let reaper = tokio::spawn(reap(
        store.clone(),
        bus.clone(),
        config.clone(),
        in_flight.clone(),
        background.clone(),
    ));

    let targets = crate::delivery::Targets::new(
        store.clone(),
        bus.clone(),
        config.targets,
        config.worker_id.clone(),
        operational.clone(),
    );
    if let Err(error) = targets.reload().await {
        tracing::warn!(error = %error, "cannot read delivery targets yet");
    }
    let target_sync = targets.spawn_sync(background.clone());
    let context = Arc::new(ProcessContext {
        bookkeeping: bookkeeping::Bookkeeping::start(store.clone()),
        actions,
        targets,
    });
    // The claimer keeps a local queue of claimed events topped up while the dispatcher runs
    // them, so a claim's round trip overlaps the processing of the previous batch instead of
    // leaving the slots idle. `held` bounds what this worker holds (claimed and not finished).
    let concurrency = config.concurrency.max(1);
    let held = Arc::new(Semaphore::new(concurrency * HELD_PER_SLOT));
    let (ready_sender, mut ready) = mpsc::unbounded_channel::<Ready>();
    let claimer = tokio::spawn(claim_loop(
        store.clone(),
        bus.clone(),
        config.clone(),
        held,
        ready_sender,
        in_flight.clone(),
        shutdown.clone(),
    ));
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    // Ends when the claimer has stopped and everything it claimed has been started.
    while let Some(next) = ready.recv().await {
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        let Some(slot) = WorkerSlot::acquire(&slots).await else {
            break;
        };
        let context = context.clone();
        let done = done_sender.clone();
        tasks.spawn(async move {
            let Ready {
                event,
                rules,
                processing,
                held,
            } = next;
            let outcome = match rules {
                Ok(rules) => process(&event, rules, &processing, &context, &slot).await,
                Err(error) => process::cannot_start(&event, &processing, &error),
            };
            let ordered = event.event.ordering_key.is_some();
            let _ = done.send(Finished { outcome, ordered }).await;
            drop(slot);
            drop(held);
        });
    }
    let _ = claimer.await;

    // Graceful stop: let what we hold finish (each attempt is bounded by its timeout), then
    // flush the outcomes and stop the helpers.
    tracing::info!(worker = %config.worker_id, in_flight = tasks.len(), "worker stopping");
    while tasks.join_next().await.is_some() {}
    drop(done_sender);
    for writer in writers {
        let _ = writer.await;
    }
    background.cancel();
    let _ = heartbeat.await;
    let _ = reaper.await;
    let _ = target_sync.await;
    tracing::info!(worker = %config.worker_id, "worker stopped");
}

/// One of the `WORKER_CONCURRENCY` places where an event is processed. An attempt gives it
/// up while one of its deliveries waits in line for its target, so that a receiver at its cap
/// never holds places other receivers' events need.
pub struct WorkerSlot {
    slots: Arc<Semaphore>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl WorkerSlot {
    async fn acquire(slots: &Arc<Semaphore>) -> Option<WorkerSlot> {
        let permit = slots.clone().acquire_owned().await.ok()?;
        Some(WorkerSlot {
            slots: slots.clone(),
            permit: Mutex::new(Some(permit)),
        })
    }

    /// Gives the place up (while waiting for something else than the worker).
    pub fn give_up(&self) {
        self.permit.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Takes a place again, waiting for one if every place is taken.
    pub async fn take_again(&self) {
        if self
            .permit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        if let Ok(permit) = self.slots.clone().acquire_owned().await {
            *self.permit.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
        }
    }
}

/// Events a worker may hold per slot of `WORKER_CONCURRENCY`: one running, the rest claimed
/// and waiting in its local queue. A deeper queue makes claims bigger and rarer; it also
/// keeps events leased by this worker that another could have taken, so it stays small.
/// Eight (512 at the default concurrency, Graphile Worker's local queue is 500) drained
/// 1.14× faster than four; sixteen was no faster.
const HELD_PER_SLOT: usize = 8;

/// An attempt's outcome on its way to the completion writer.
struct Finished {
    outcome: AttemptOutcome,
    /// Whether its event has an ordering key: its end may make the key's next event due.
    ordered: bool,
}

/// A claimed event, ready to run: its rules (or why they could not be loaded) and its
/// type's processing settings, resolved right after its claim.
struct Ready {
    event: ClaimedEvent,
    rules: Result<RuleSet, String>,
    processing: crate::event_types::Processing,
    /// Its place among what the worker holds, given back when it finishes.
    held: OwnedSemaphorePermit,
}

/// Claims due events whenever the worker has room to hold more, and hands them to the
/// dispatcher; stops claiming when `shutdown` is cancelled (what it handed over still runs).
async fn claim_loop(
    store: Arc<dyn Store>,
    bus: Bus,
    config: WorkerConfig,
    held: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Ready>,
    in_flight: Arc<Mutex<HashMap<i64, i64>>>,
    shutdown: CancellationToken,
) {
    let wake = bus.wake_signal();
    let mut cache = RuleCache::default();
    // Ready before the first claim rather than during it: the rules, and (on PostgreSQL) the
    // connections and statements of claims and completions. Whatever fails here is done
    // again when needed.
    let (prepared, generation) = tokio::join!(
        store.prepare_worker(&config.worker_id, &config.types, ms(config.lease)),
        store.rule_generation(),
    );
    if let Err(error) = prepared {
        tracing::warn!(error = %error, "cannot prepare the worker's connections yet");
    }
    if let Ok(generation) = generation {
        if let Err(error) = cache.refresh(&*store, generation, &config.limits).await {
            tracing::warn!(error = %error, "cannot load the rules yet");
        }
    }
    let defaults = crate::event_types::Processing {
        timeout: config.processing_timeout,
        retry: config.retry.clone(),
        max_wait: config.max_wait,
    };
    // Under a backlog, room frees up one event at a time; gathering a batch's worth first
    // keeps claims large (a round trip per batch, not per event).
    let gather = (config.concurrency.max(1) * HELD_PER_SLOT / 4).clamp(1, config.claim_batch);
    let mut backlog = false;
    'claiming: loop {
        let mut permits = tokio::select! {
            permit = held.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = shutdown.cancelled() => break,
        };
        if backlog && gather > 1 {
            let wanted = u32::try_from(gather - 1).unwrap_or(u32::MAX);
            if let Ok(Ok(more)) = tokio::time::timeout(
                Duration::from_millis(2),
                held.clone().acquire_many_owned(wanted),
            )
            .await
            {
                permits.merge(more);
            }
        }
        let room = config.claim_batch.saturating_sub(permits.num_permits());
        let free = held.available_permits().min(room);
        if free > 0 {
            if let Ok(more) = held
                .clone()
                .try_acquire_many_owned(u32::try_from(free).unwrap_or(u32::MAX))
            {
                permits.merge(more);
            }
        }
        let limit = permits.num_permits();
        let claimed = match claim(&*store, &mut cache, &config, limit).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(error = %error, "claim failed; retrying shortly");
                drop(permits);
                backlog = false;
                tokio::select! {
                    () = tokio::time::sleep(config.poll_interval.min(Duration::from_secs(1))) => {},
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
        };
        backlog = claimed.len() >= limit;
        if !claimed.is_empty() {
            bus.worker_stops_waiting();
            metrics::counter!("sluice_worker_claimed_total").increment(claimed.len() as u64);
            bus.announce(Committed::Claimed(&claimed));
            let mut leased = in_flight.lock().unwrap_or_else(|e| e.into_inner());
            leased.extend(claimed.iter().map(|c| (c.attempt_id, c.event.id)));
        }
        for event in claimed {
            let Some(place) = permits.split(1) else {
                // Cannot happen: a claim takes at most `limit` events.
                tracing::error!("claimed more events than there was room for");
                break;
            };
            let processing = cache.processing(&event.event.event_type, &defaults);
            let rules = rules_for(&*store, &cache, &event, &config.limits)
                .await
                .map_err(|error| {
                    tracing::warn!(error = %error, event_id = event.event.id, "cannot load the original rule versions; retrying");
                    format!("cannot load the original rule versions: {error}")
                });
            let next = Ready {
                event,
                rules,
                processing,
                held: place,
            };
            if ready.send(next).is_err() {
                break 'claiming;
            }
        }
        drop(permits);
        if backlog {
            continue;
        }
        // The claim took everything due that no one else holds. Whatever becomes due next
        // comes with a wake-up (a new event, a replay, a released lease, a retry's time, the
        // end of an earlier event with the same ordering key), so wait for one rather than
        // ask the database again: at a steady rate that second claim would come back empty,
        // and an event arriving meanwhile would wait for it.
        if bus.worker_waits().await {
            continue;
        }
        tokio::select! {
            () = wake.notified() => {},
            () = tokio::time::sleep(config.poll_interval) => {},
            () = shutdown.cancelled() => break,
        }
    }
    bus.worker_stops_waiting();
}

async fn claim(
    store: &dyn Store,
    cache: &mut RuleCache,
    config: &WorkerConfig,
    free: usize,
) -> Result<Vec<ClaimedEvent>, sluice_store::StoreError> {
    let limit = i64::try_from(free.min(config.claim_batch)).unwrap_or(1);
    let claimed = store
        .claim_due_events(&config.worker_id, &config.types, limit, ms(config.lease))
        .await?;
    // The generation the claim itself read, not one read before it: a rule saved before an
    // event was ingested is then always seen by the attempt that processes that event.
    if let Some(generation) = claimed.first().map(|c| c.rule_generation) {
        if cache.refresh(store, generation, &config.limits).await? {
            tracing::debug!("rule cache reloaded");
        }
    }
    Ok(claimed)
}

/// The rules an attempt evaluates: current ones from the cache, or the versions the event's
/// first attempt evaluated when it was replayed with `rules: original`.
async fn rules_for(
    store: &dyn Store,
    cache: &RuleCache,
    event: &ClaimedEvent,
    limits: &Limits,
) -> Result<RuleSet, sluice_store::StoreError> {
    if event.replay_rules == ReplayRules::Original {
        let pinned = store.original_rules(event.event.id).await?;
        return Ok(compile_all(&pinned, limits));
    }
    Ok(cache.rules_for(&event.event.event_type))
}

/// Completion writers per worker. On PostgreSQL two: while one batch waits for its commit to
/// be flushed, the next one is written, so a batch never waits for the flush of the batch
/// before it (the database flushes both at once). SQLite has one writer connection, so a
/// second completion writer would only wait for it with half a batch in hand: one writer
/// gathers everything that finished while it waited (batches ~1.5× bigger, ~15% more
/// events per second in `serve`).
fn completion_writers(backend: Backend) -> usize {
    match backend {
        Backend::Postgres => 2,
        Backend::Sqlite => 1,
    }
}

/// Writes outcomes in batches: whatever finished while the previous batch was being written
/// goes in the next statement.
async fn write_completions(
    pool: String,
    store: Arc<dyn Store>,
    bus: Bus,
    done: Arc<tokio::sync::Mutex<mpsc::Receiver<Finished>>>,
    in_flight: Arc<Mutex<HashMap<i64, i64>>>,
    operational: Option<Arc<crate::operational::Operational>>,
) {
    const MAX_BATCH: usize = 512;
    loop {
        let (batch, ordered) = {
            let mut done = done.lock().await;
            let Some(first) = done.recv().await else {
                break;
            };
            let mut ordered = first.ordered;
            let mut batch = vec![first.outcome];
            while batch.len() < MAX_BATCH {
                match done.try_recv() {
                    Ok(finished) => {
                        ordered |= finished.ordered;
                        batch.push(finished.outcome);
                    }
                    Err(_) => break,
                }
            }
            (batch, ordered)
        };
        let mut delay = Duration::from_millis(100);
        let changes = loop {
            match store.complete_attempts(&batch).await {
                Ok(changes) => break changes,
                Err(sluice_store::StoreError::Unavailable(error)) => {
                    // Keep the outcomes and try again; the leases are renewed meanwhile.
                    tracing::warn!(error = %error, "cannot record outcomes yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    tracing::error!(error = %error, "cannot record outcomes; their leases will expire and they will retry");
                    break Vec::new();
                }
            }
        };
        {
            let mut held = in_flight.lock().unwrap_or_else(|e| e.into_inner());
            for outcome in &batch {
                held.remove(&outcome.attempt_id);
            }
        }
        record_metrics(&pool, &batch);
        if let Some(operational) = &operational {
            let errors: Vec<(i64, Option<String>)> = batch
                .iter()
                .filter(|o| matches!(o.next, NextState::Failed))
                .map(|o| (o.event_id, o.error.clone()))
                .collect();
            if !errors.is_empty() {
                operational.events_failed(&changes, &errors);
            }
        }
        bus.announce(Committed::Completed {
            changes: &changes,
            frees_keys: ordered,
            retry_at: earliest_retry(&batch),
        });
    }
}

fn record_metrics(pool: &str, batch: &[AttemptOutcome]) {
    for outcome in batch {
        let next = match outcome.next {
            NextState::Processed => "processed",
            NextState::RetryAt(_) => "retry",
            NextState::WaitFor { .. } => "deferred",
            NextState::SetAside { .. } => {
                // Nothing ran: not an attempt.
                metrics::counter!("sluice_set_aside_total", "pool" => pool.to_owned()).increment(1);
                continue;
            }
            NextState::Failed => "failed",
        };
        metrics::counter!("sluice_attempts_total", "status" => outcome.status.as_str(), "next" => next, "pool" => pool.to_owned())
            .increment(1);
        metrics::histogram!("sluice_attempt_seconds").record(outcome.duration_ms as f64 / 1000.0);
    }
}

/// When the earliest retry of a batch is due (events waiting for a target are woken by its
/// release instead).
fn earliest_retry(batch: &[AttemptOutcome]) -> Option<chrono::DateTime<chrono::Utc>> {
    batch
        .iter()
        .filter_map(|o| match o.next {
            NextState::RetryAt(at) => Some(at),
            _ => None,
        })
        .min()
}

async fn renew_leases(
    store: Arc<dyn Store>,
    config: WorkerConfig,
    in_flight: Arc<Mutex<HashMap<i64, i64>>>,
    stop: CancellationToken,
) {
    let period = config.lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {},
            () = stop.cancelled() => return,
        }
        let held: Vec<HeldLease> = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(&attempt_id, &event_id)| HeldLease {
                event_id,
                attempt_id,
            })
            .collect();
        if let Err(error) = store.extend_leases(&held, ms(config.lease)).await {
            tracing::warn!(error = %error, "cannot renew leases");
        }
    }
}

/// How often a worker compacts the queue (see `Store::compact_queue`).
const COMPACT_QUEUE_EVERY: Duration = Duration::from_secs(30);

async fn reap(
    store: Arc<dyn Store>,
    bus: Bus,
    config: WorkerConfig,
    in_flight: Arc<Mutex<HashMap<i64, i64>>>,
    stop: CancellationToken,
) {
    let mut compacted = tokio::time::Instant::now();
    let mut busy_since_compacted = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.reap_interval) => {},
            () = stop.cancelled() => return,
        }
        let idle = in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        busy_since_compacted |= !idle;
        // Also as soon as a burst is over: the queue is then at its smallest, and a VACUUM
        // of an idle table can give its empty pages back, so the next reads of the queue
        // cost what is in it rather than what passed through it.
        if compacted.elapsed() >= COMPACT_QUEUE_EVERY || (idle && busy_since_compacted) {
            compacted = tokio::time::Instant::now();
            busy_since_compacted = false;
            if let Err(error) = store.compact_queue().await {
                tracing::warn!(error = %error, "cannot compact the queue");
            }
        }
        match store
            .release_events(Release::Expired, i64::from(config.retry.max_attempts))
            .await
        {
            Ok(changes) if !changes.is_empty() => {
                tracing::warn!(count = changes.len(), "released events whose lease expired");
                bus.announce(Committed::Requeued(&changes));
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "cannot release expired leases"),
        }
    }
}
