//! Delivery isolation and back-pressure: every receiver ("target": `scheme://host:port` of a
//! webhook, the SMTP server of an email) gets a cap on deliveries in flight and a circuit
//! breaker, so one that hangs, is slow or fails cannot hold up deliveries to the others — and
//! waiting for one costs nothing.
//!
//! Before a delivery, the worker asks [`Targets::admit`]. The answer is go — with a permit
//! counted against the target's cap — or wait, with the reason: the target is paused, its
//! circuit is open (until its next probe), or another worker is probing it. Waiting events
//! are held where it is cheap:
//!
//! - **At the cap, in the worker.** A target that is answering but has
//!   `TARGET_MAX_IN_FLIGHT` deliveries in flight from this process makes the next ones wait
//!   in line (first come, first served) for a place, in memory, holding no worker slot. At
//!   most [`TargetLimits::max_waiting`] wait per target. An event that would be one more
//!   ([`Targets::crowded`]) waits for a place in the line if the line is moving — as many
//!   as it took in the last [`LINE_HORIZON`], each at most [`LINE_MAX_WAIT`]
//!   ([`Targets::place_in_line`]), so a backlog to a receiver that keeps up stays in the
//!   worker rather than going round through the queue. Otherwise it is set aside before
//!   anything of it runs: back to the queue without a trace (no attempt, no history row),
//!   marked with the target, and claims pass it by.
//! - **Open or paused, in the queue.** The action is recorded `deferred` once, the rest of
//!   the event's rules run, and the event goes back to the queue marked with the target it
//!   waits for, due only when its longest allowed wait (`TARGET_MAX_WAIT`) ends: no claim,
//!   no evaluation, no row while it waits.
//!
//! Waiting events are released ([`sluice_store::Store::release_waiting`], oldest first) by
//! every worker process that has room for them: when the target closes or is resumed, as
//! places free up under its cap, and one at a time, as the probe, when an open circuit's
//! period is over. Each process reads the targets (with how many events wait for each)
//! every [`REFRESH`].
//!
//! **Rate limits.** A target may also have a pace: at most `TARGET_MAX_PER_SECOND` (or its own
//! `max_per_second`) deliveries a second over every worker process together. A delivery that
//! may go then also waits for its send time ([`Targets::pace`]), in memory, its worker slot
//! free: each process takes send times from the target's row a few at a time
//! ([`sluice_store::Store::reserve_sends`], one atomic statement), one `1/limit` apart, so
//! processes interleave without overlap; one it held too long is dropped, never bunched with
//! the next, so any one second sees at most the limit plus one. A 429 holds every process off
//! until its `Retry-After` (1 s without one) and halves the pace (at most once a second, down
//! to [`MAX_SLOWDOWN`]); the pace recovers by half every [`RECOVERY_HALF_LIFE`].
//!
//! The breaker (closed → open after `TARGET_FAILURE_THRESHOLD` consecutive failures that a
//! retry might fix → after `TARGET_OPEN_MS` one probe delivery, half open → closed on its
//! success, open again on its failure) lives in the `targets` table, so every worker process
//! honours it, and each writes what it changes at once. Counts of deliveries and what is in
//! flight are reported every [`REPORT`] for `GET /targets`.

use crate::bus::{Bus, Committed};
use chrono::{DateTime, Utc};
use sluice_store::{Store, StoreError, TargetRecord, TargetReport};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub const REFRESH: Duration = Duration::from_millis(500);
pub const REPORT: Duration = Duration::from_secs(1);
/// How far ahead a target's line may be queued beyond its room in a worker: an event finding
/// the line full waits for a place only if fewer wait so than the line took in about this
/// long (a line that moves fast keeps its backlog in the worker; one that does not sets it
/// aside at once).
pub const LINE_HORIZON: Duration = Duration::from_millis(100);
/// The longest an event waits for a place in a full line before it is set aside after all
/// (the line stopped moving meanwhile).
pub const LINE_MAX_WAIT: Duration = Duration::from_secs(1);

/// How far 429s can slow a target down: its limit divided by this at most.
pub const MAX_SLOWDOWN: f64 = 32.0;
/// How fast a slowed target recovers: its slowdown halves every this long without a 429.
pub const RECOVERY_HALF_LIFE: Duration = Duration::from_secs(10);
/// How long a 429 without a usable `Retry-After` holds a target off.
pub const DEFAULT_HOLD_OFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
pub struct TargetLimits {
    /// `TARGET_MAX_IN_FLIGHT`: a webhook's or the SMTP server's cap.
    pub max_in_flight: usize,
    /// `BROKER_MAX_IN_FLIGHT`: a broker's cap.
    pub broker_max_in_flight: usize,
    /// Deliveries one process keeps waiting in line for a place under a target's cap; an
    /// event that would be one more is set aside in the queue.
    pub max_waiting: usize,
    pub failure_threshold: i64,
    pub open_ms: i64,
    /// `TARGET_MAX_PER_SECOND`, for targets without a limit of their own (0: none).
    pub max_per_second: f64,
}

impl TargetLimits {
    /// The in-flight cap of `target` (`scheme://host:port`).
    pub fn cap(&self, target: &str) -> usize {
        if crate::actions::is_broker(target) {
            self.broker_max_in_flight
        } else {
            self.max_in_flight
        }
    }

    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let max_in_flight = settings.target_max_in_flight as usize;
        let broker_max_in_flight = settings.broker_max_in_flight as usize;
        TargetLimits {
            max_in_flight,
            broker_max_in_flight,
            // Half of what a worker holds (`worker::HELD_PER_SLOT` per slot): a backlog to
            // one target never takes all of it, so other targets' events are still claimed.
            max_waiting: (settings.worker_concurrency as usize * 4)
                .max(max_in_flight)
                .max(broker_max_in_flight),
            failure_threshold: i64::from(settings.target_failure_threshold),
            open_ms: i64::try_from(settings.target_open_ms).unwrap_or(i64::MAX),
            max_per_second: settings.target_max_per_second,
        }
    }
}

/// What [`Targets::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    Go(Permit),
    /// The target cannot take it now (paused, open, being probed): why.
    Wait(String),
}

/// A place in a target's line: [`Targets::admit`] found its cap taken.
#[derive(Debug)]
pub struct InLine {
    probe: bool,
}

/// A delivery under way: holds its place under the target's cap until it is dropped.
#[derive(Debug)]
pub struct Permit {
    target: String,
    /// This delivery is the half-open probe.
    probe: bool,
    _slot: OwnedSemaphorePermit,
}

/// How a delivery went, for the breaker.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivered {
    Ok,
    /// A failure a retry might fix: counts against the breaker.
    Unavailable(String),
    /// The receiver answered and refused (a 4xx): it is up, the request was wrong.
    Refused,
    /// The receiver asked for fewer requests (a 429), holding off this long if it said.
    Throttled(Option<Duration>),
}

#[derive(Default)]
struct Local {
    delivered: i64,
    failed: i64,
}

/// One target as this process sees it: its places, who waits for one, and whether events
/// wait for it in the queue.
struct Lane {
    /// Its cap: the places `slots` has in all.
    cap: usize,
    slots: Arc<Semaphore>,
    /// Deliveries waiting in line for a place.
    waiting: AtomicUsize,
    /// The target's state changed (it opened, was paused): those in line look again.
    changed: Notify,
    /// Deliveries waiting for a place in the full line ([`Targets::place_in_line`]).
    queued: AtomicUsize,
    /// One left the line for a place under the cap: the next queued one looks again.
    moved: Notify,
    /// How fast the line has been moving.
    departures: Mutex<Departures>,
    /// Events wait for this target in the queue (this process set some aside, or the last
    /// read of the targets counted some).
    parked: AtomicBool,
    /// A release of its waiting events is under way.
    releasing: AtomicBool,
    /// Deliveries waiting for a send time under its rate limit.
    pacing: AtomicUsize,
    /// Send times this process took from the target's row and has not used yet.
    sends: tokio::sync::Mutex<Sends>,
    /// Bumped at a 429: send times taken before it are not used.
    throttles: AtomicU64,
}

/// Departures from a target's line (deliveries that got a place under its cap), counted over
/// two windows of [`LINE_HORIZON`]: how many the line took in about its last horizon.
#[derive(Debug)]
struct Departures {
    since: std::time::Instant,
    current: usize,
    previous: usize,
}

impl Departures {
    fn new(now: std::time::Instant) -> Self {
        Departures {
            since: now,
            current: 0,
            previous: 0,
        }
    }

    fn roll(&mut self, now: std::time::Instant) {
        let age = now.saturating_duration_since(self.since);
        if age >= LINE_HORIZON {
            self.previous = if age < 2 * LINE_HORIZON {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.since = now;
        }
    }

    fn depart(&mut self, now: std::time::Instant) {
        self.roll(now);
        self.current += 1;
    }

    /// How many left the line in about the last [`LINE_HORIZON`] (none if it stood still).
    fn recent(&mut self, now: std::time::Instant) -> usize {
        self.roll(now);
        self.previous.max(self.current)
    }
}

/// Consecutive send times, `interval` apart, the first at `next`.
#[derive(Default)]
struct Sends {
    next: Option<DateTime<Utc>>,
    left: i64,
    interval: chrono::Duration,
    /// [`Lane::throttles`] when they were taken.
    taken_at_throttle: u64,
}

/// What this process last reported in flight per target (so idle ones are not re-reported).
type Reported = HashMap<String, i64>;

pub struct Targets {
    store: Arc<dyn Store>,
    bus: Bus,
    limits: TargetLimits,
    worker: String,
    /// The shared state as last read (and as this process changed it since).
    known: RwLock<HashMap<String, TargetRecord>>,
    lanes: Mutex<HashMap<String, Arc<Lane>>>,
    counts: Mutex<HashMap<String, Local>>,
    reported: Mutex<Reported>,
    operational: Option<Arc<crate::operational::Operational>>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Targets {
    pub fn new(
        store: Arc<dyn Store>,
        bus: Bus,
        limits: TargetLimits,
        worker: String,
        operational: Option<Arc<crate::operational::Operational>>,
    ) -> Arc<Targets> {
        Arc::new(Targets {
            store,
            bus,
            limits,
            worker,
            known: RwLock::default(),
            lanes: Mutex::default(),
            counts: Mutex::default(),
            reported: Mutex::default(),
            operational,
        })
    }

    /// Reads the shared state every [`REFRESH`] (releasing what waits for targets that can
    /// take it) and reports every [`REPORT`], until `shutdown`; then reports one last time.
    pub fn spawn_sync(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let targets = self.clone();
        tokio::spawn(async move {
            let mut refresh = tokio::time::interval(REFRESH);
            refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_report = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = refresh.tick() => {}
                }
                match targets.reload().await {
                    Ok(()) => targets.release_what_can_go().await,
                    Err(error) => tracing::warn!(error = %error, "cannot read delivery targets"),
                }
                if last_report.elapsed() >= REPORT {
                    last_report = tokio::time::Instant::now();
                    targets.report().await;
                }
            }
            targets.report().await;
        })
    }

    pub async fn reload(&self) -> Result<(), StoreError> {
        let fresh: HashMap<String, TargetRecord> = self
            .store
            .targets()
            .await?
            .into_iter()
            .map(|t| (t.target.clone(), t))
            .collect();
        let before = std::mem::replace(
            &mut *self.known.write().unwrap_or_else(|p| p.into_inner()),
            fresh,
        );
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        for (target, record) in known.iter() {
            let was_available = before.get(target).is_none_or(available);
            if was_available && !available(record) {
                // Opened or paused elsewhere: whoever waits in line here stops waiting.
                self.lane(target).changed.notify_waiters();
            }
            if record.waiting > 0 {
                self.lane(target).parked.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn known(&self, target: &str) -> Option<TargetRecord> {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .cloned()
    }

    /// Whether `target` can take deliveries as far as this process knows (neither open nor
    /// paused; an unknown one can). Read in place, not cloned: asked before every delivery.
    fn takes_deliveries(&self, target: &str) -> bool {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .is_none_or(available)
    }

    fn remember(&self, record: TargetRecord) {
        let target = record.target.clone();
        let now_available = available(&record);
        let previous = self
            .known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(target.clone(), record);
        if previous.as_ref().is_none_or(available) && !now_available {
            self.lane(&target).changed.notify_waiters();
        }
    }

    fn lane(&self, target: &str) -> Arc<Lane> {
        self.lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.to_owned())
            .or_insert_with(|| {
                let cap = self.limits.cap(target);
                Arc::new(Lane {
                    cap,
                    slots: Arc::new(Semaphore::new(cap)),
                    waiting: AtomicUsize::new(0),
                    changed: Notify::new(),
                    queued: AtomicUsize::new(0),
                    moved: Notify::new(),
                    departures: Mutex::new(Departures::new(std::time::Instant::now())),
                    parked: AtomicBool::new(false),
                    releasing: AtomicBool::new(false),
                    pacing: AtomicUsize::new(0),
                    sends: tokio::sync::Mutex::default(),
                    throttles: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Whether a delivery to `target` would find its cap taken and its line in this process
    /// full (or others already waiting for a place in it): then it waits for a place
    /// ([`Targets::place_in_line`]) or is set aside ([`Targets::set_aside`]).
    pub fn crowded(&self, target: &str) -> bool {
        if !self.takes_deliveries(target) {
            return false;
        }
        let lane = self.lane(target);
        self.line_full(&lane) || lane.queued.load(Ordering::Relaxed) > 0
    }

    fn line_full(&self, lane: &Lane) -> bool {
        lane.slots.available_permits() == 0
            && lane.waiting.load(Ordering::Relaxed) >= self.limits.max_waiting
    }

    /// Waits, first come first served, for a place in `target`'s full line — if the line is
    /// moving: at most as many wait so as it took in the last [`LINE_HORIZON`], each for at
    /// most [`LINE_MAX_WAIT`]. `true`: it has a place (or the target cannot take deliveries
    /// any more, which [`Targets::admit`] will say); `false`: set it aside. A backlog to a
    /// receiver that keeps up thus stays in the worker instead of being set aside and claimed
    /// again, while one to a receiver that does not is set aside at once, leaving the
    /// worker's room to other targets' events.
    pub async fn place_in_line(&self, target: &str) -> bool {
        let lane = self.lane(target);
        let recent = lane
            .departures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recent(std::time::Instant::now());
        if lane.queued.fetch_add(1, Ordering::AcqRel) >= recent {
            lane.queued.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let deadline = tokio::time::Instant::now() + LINE_MAX_WAIT;
        let placed = loop {
            let moved = lane.moved.notified();
            let changed = lane.changed.notified();
            tokio::pin!(moved, changed);
            moved.as_mut().enable();
            changed.as_mut().enable();
            if !self.takes_deliveries(target) || !self.line_full(&lane) {
                break true;
            }
            tokio::select! {
                () = moved => {}
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => break false,
            }
        };
        lane.queued.fetch_sub(1, Ordering::AcqRel);
        if !placed {
            // Its turn passes to the next one.
            lane.moved.notify_one();
        }
        placed
    }

    /// This process set an event aside for `target`: it will release it when there is room.
    pub fn set_aside(&self, target: &str) {
        self.lane(target).parked.store(true, Ordering::Relaxed);
    }

    /// May a delivery to `target` start now? Go, with a place under its cap; wait, because
    /// it cannot take deliveries (paused, open, being probed); or, at its cap, a place in
    /// its line ([`Targets::wait_in_line`]). `released_as_probe`: the event was released
    /// from the queue as this target's probe.
    pub async fn admit(
        &self,
        target: &str,
        released_as_probe: bool,
    ) -> Result<Result<Admission, InLine>, StoreError> {
        let probe = match self.may_go(target, released_as_probe).await? {
            Ok(probe) => probe,
            Err(reason) => return Ok(Ok(Admission::Wait(reason))),
        };
        match self.lane(target).slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(Ok(Admission::Go(self.permit(target, probe, slot)))),
            Err(_) => Ok(Err(InLine { probe })),
        }
    }

    /// Waits in line (first come, first served) for a place under `target`'s cap; gives up
    /// with [`Admission::Wait`] as soon as the target opens or is paused.
    pub async fn wait_in_line(&self, target: &str, place: InLine) -> Admission {
        let InLine { probe } = place;
        let lane = self.lane(target);
        loop {
            lane.waiting.fetch_add(1, Ordering::Relaxed);
            let acquired = tokio::select! {
                slot = lane.slots.clone().acquire_owned() => slot.ok(),
                () = lane.changed.notified() => None,
            };
            lane.waiting.fetch_sub(1, Ordering::Relaxed);
            if acquired.is_some() {
                lane.departures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .depart(std::time::Instant::now());
                lane.moved.notify_one();
            }
            // The target may have opened or been paused while this one waited.
            if !probe {
                if let Some(reason) = self.known(target).and_then(|t| unavailable_reason(&t)) {
                    return Admission::Wait(reason);
                }
            }
            if let Some(slot) = acquired {
                return Admission::Go(self.permit(target, probe, slot));
            }
        }
    }

    fn permit(&self, target: &str, probe: bool, slot: OwnedSemaphorePermit) -> Permit {
        Permit {
            target: target.to_owned(),
            probe,
            _slot: slot,
        }
    }

    /// Whether deliveries to `target` wait for a send time: it has a rate limit, or a 429
    /// holds it off.
    pub fn is_paced(&self, target: &str) -> bool {
        // Read in place, not cloned: this is asked before every delivery.
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let record = known.get(target);
        let now = Utc::now();
        self.rate(record, now).is_some()
            || record
                .and_then(|r| r.pace_next_at)
                .is_some_and(|at| at > now)
    }

    /// The pace `target` has now: its limit (its own, else `TARGET_MAX_PER_SECOND`) divided by
    /// what 429s left of their slowdown; `None` without a limit.
    fn rate(&self, record: Option<&TargetRecord>, now: DateTime<Utc>) -> Option<f64> {
        let limit = record
            .and_then(|r| r.max_per_second)
            .unwrap_or(self.limits.max_per_second);
        if limit <= 0.0 {
            return None;
        }
        Some(limit / record.map_or(1.0, |r| slowdown_now(r, now)))
    }

    /// Waits until this delivery's send time under its target's rate limit (or until a 429's
    /// hold-off ends). Gives up with the reason, as [`Admission::Wait`] would, if the target
    /// opens or is paused meanwhile.
    pub async fn pace(&self, permit: &Permit) -> Result<Option<String>, StoreError> {
        let target = permit.target.as_str();
        let lane = self.lane(target);
        let record = self.known(target);
        let send_at = match self.rate(record.as_ref(), Utc::now()) {
            None => record.and_then(|r| r.pace_next_at),
            Some(rate) => {
                lane.pacing.fetch_add(1, Ordering::Relaxed);
                let taken = self.take_send_time(target, &lane, rate).await;
                lane.pacing.fetch_sub(1, Ordering::Relaxed);
                Some(taken?)
            }
        };
        let Some(send_at) = send_at else {
            return Ok(None);
        };
        while let Ok(wait) = (send_at - Utc::now()).to_std() {
            let changed = lane.changed.notified();
            tokio::select! {
                () = tokio::time::sleep(wait) => break,
                () = changed => {}
            }
            if let Some(reason) = self.unavailable_now(target, permit.probe) {
                return Ok(Some(reason));
            }
        }
        Ok(self.unavailable_now(target, permit.probe))
    }

    fn unavailable_now(&self, target: &str, probe: bool) -> Option<String> {
        if probe {
            return None;
        }
        self.known(target).and_then(|t| unavailable_reason(&t))
    }

    /// The next send time this process holds for `target`, taking more from the target's row
    /// when it has none left: as many as deliveries wait for one here, up to a tenth of a
    /// second's worth. One it held too long (over an interval ago) is dropped, not used late,
    /// so it never bunches up with the next.
    async fn take_send_time(
        &self,
        target: &str,
        lane: &Lane,
        rate: f64,
    ) -> Result<DateTime<Utc>, StoreError> {
        let mut sends = lane.sends.lock().await;
        let throttles = lane.throttles.load(Ordering::Acquire);
        if sends.taken_at_throttle != throttles {
            sends.left = 0;
        }
        let now = Utc::now();
        while sends.left > 0 && sends.next.is_some_and(|at| at + sends.interval < now) {
            sends.next = sends.next.map(|at| at + sends.interval);
            sends.left -= 1;
        }
        if sends.left == 0 {
            let interval_us = ((1_000_000.0 / rate).ceil() as i64).max(1);
            let most = ((rate / 10.0).floor() as i64).clamp(1, 100);
            let wanted = i64::try_from(lane.pacing.load(Ordering::Relaxed))
                .unwrap_or(i64::MAX)
                .clamp(1, most);
            let first = self
                .store
                .reserve_sends(target, wanted, interval_us)
                .await?;
            *sends = Sends {
                next: Some(first),
                left: wanted,
                interval: chrono::Duration::microseconds(interval_us),
                taken_at_throttle: throttles,
            };
        }
        let at = sends.next.unwrap_or(now);
        sends.next = Some(at + sends.interval);
        sends.left -= 1;
        Ok(at)
    }

    /// Whether the target's state lets a delivery go (and whether it is the probe), or why not.
    async fn may_go(
        &self,
        target: &str,
        released_as_probe: bool,
    ) -> Result<Result<bool, String>, StoreError> {
        let Some(state) = self.known(target) else {
            return Ok(Ok(false));
        };
        if state.paused {
            return Ok(Err(format!("target {target} is paused")));
        }
        let now = Utc::now();
        let next_probe = state.next_probe_at.unwrap_or(now);
        Ok(match state.state.as_str() {
            // The worker that took the probe released this event for it.
            "open" | "half_open" if released_as_probe => Ok(true),
            "open" if next_probe > now => Err(open_reason(target, next_probe)),
            "half_open" if next_probe > now => Err(probing_reason(target)),
            // Due for a probe — or a probe whose worker never said how it went.
            "open" | "half_open" => {
                if self
                    .store
                    .claim_target_probe(target, self.limits.open_ms)
                    .await?
                {
                    Ok(true)
                } else {
                    Err(probing_reason(target))
                }
            }
            _ => Ok(false),
        })
    }

    /// Records how a delivery went; the breaker's changes are written at once. A place under
    /// the cap is free again: what waits for the target in the queue may be released.
    /// `quiet`: the delivery was for an operational (`sluice.*`) event, whose consequences
    /// are never reported as operational events themselves.
    pub async fn finished(self: &Arc<Self>, permit: Permit, how: Delivered, quiet: bool) {
        let target = permit.target.clone();
        let outcome = match &how {
            Delivered::Ok => "delivered",
            Delivered::Unavailable(_) => "unavailable",
            Delivered::Refused => "refused",
            Delivered::Throttled(_) => "throttled",
        };
        metrics::counter!("sluice_deliveries_total", "target" => target.clone(), "outcome" => outcome)
            .increment(1);
        let written = match how {
            Delivered::Ok => {
                self.count(&target, 1, 0);
                let counted_failures = self
                    .known(&target)
                    .is_some_and(|t| t.consecutive_failures > 0 || t.state != "closed");
                if permit.probe || counted_failures {
                    Some(self.store.close_target(&target).await)
                } else {
                    None
                }
            }
            Delivered::Refused => {
                self.count(&target, 0, 1);
                None
            }
            Delivered::Throttled(retry_after) => {
                // The receiver is up and says how fast it takes requests: not a breaker
                // failure, a slower pace.
                self.count(&target, 0, 1);
                let now = Utc::now();
                let hold_off = retry_after.unwrap_or(DEFAULT_HOLD_OFF);
                let until = now + chrono::Duration::from_std(hold_off).unwrap_or_default();
                let slowdown = (self.known(&target).map_or(1.0, |r| slowdown_now(&r, now)) * 2.0)
                    .min(MAX_SLOWDOWN);
                self.lane(&target).throttles.fetch_add(1, Ordering::AcqRel);
                tracing::info!(target = %target, hold_off_ms = hold_off.as_millis() as u64, "target throttled (429)");
                Some(self.store.throttle_target(&target, until, slowdown).await)
            }
            Delivered::Unavailable(error) => Some(
                self.store
                    .record_target_failure(
                        &target,
                        &error,
                        self.limits.failure_threshold,
                        self.limits.open_ms,
                    )
                    .await,
            ),
        };
        match written {
            Some(Ok(record)) => {
                let before = self.known(&target).map(|t| t.state);
                let was_open = before.as_deref() == Some("open");
                let opened = record.state == "open" && !was_open;
                let closed = record.state == "closed"
                    && matches!(before.as_deref(), Some("open" | "half_open"));
                if opened {
                    tracing::warn!(target = %target, error = record.last_error.as_deref().unwrap_or(""), "circuit open");
                }
                if let Some(operational) = self.operational.as_ref().filter(|_| !quiet) {
                    if opened {
                        operational.target_opened(
                            &target,
                            record.last_error.as_deref(),
                            record.opened_at.unwrap_or_else(Utc::now),
                        );
                    } else if closed {
                        operational.target_closed(&target, Utc::now());
                    }
                }
                self.remember(record);
            }
            Some(Err(error)) => {
                tracing::warn!(error = %error, target = %target, "cannot record a delivery's outcome");
            }
            None => {}
        }
        drop(permit);
        self.release_if_room(&target);
    }

    /// Releases events waiting in the queue for `target` if it can take deliveries and this
    /// process has room for a good part of a line: as many as fit (in flight and in line),
    /// in one statement, then wakes the workers. One release per target at a time.
    fn release_if_room(self: &Arc<Self>, target: &str) {
        let lane = self.lane(target);
        if !lane.parked.load(Ordering::Relaxed) || !self.takes_deliveries(target) {
            return;
        }
        let in_flight = lane.cap - lane.slots.available_permits();
        let holding = in_flight + lane.waiting.load(Ordering::Relaxed);
        let room = (lane.cap + self.limits.max_waiting).saturating_sub(holding);
        if room < (self.limits.max_waiting / 2).max(1) {
            return;
        }
        if lane.releasing.swap(true, Ordering::AcqRel) {
            return;
        }
        let targets = self.clone();
        let target = target.to_owned();
        tokio::spawn(async move {
            let wanted = i64::try_from(room).unwrap_or(i64::MAX);
            match targets.store.release_waiting(&target, wanted, false).await {
                Ok(released) => {
                    targets.bus.announce(Committed::Released(released));
                    if released < room as u64 {
                        // Nothing more waits (until someone sets more aside).
                        lane.parked.store(false, Ordering::Relaxed);
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error, target = %target, "cannot release waiting events")
                }
            }
            lane.releasing.store(false, Ordering::Release);
        });
    }

    /// After a read of the targets: releases what waits for targets that can take it, and
    /// the probe of each open target whose period is over.
    async fn release_what_can_go(self: &Arc<Self>) {
        let now = Utc::now();
        let waiting: Vec<TargetRecord> = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|t| t.waiting > 0 && !t.paused)
            .cloned()
            .collect();
        for target in waiting {
            if available(&target) {
                self.release_if_room(&target.target);
                continue;
            }
            if target.next_probe_at.is_some_and(|at| at > now) {
                continue;
            }
            match self
                .store
                .claim_target_probe(&target.target, self.limits.open_ms)
                .await
            {
                Ok(true) => match self.store.release_waiting(&target.target, 1, true).await {
                    Ok(released) => self.bus.announce(Committed::Released(released)),
                    Err(error) => {
                        tracing::warn!(error = %error, target = %target.target, "cannot release a probe")
                    }
                },
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %error, target = %target.target, "cannot take a probe")
                }
            }
        }
    }

    fn count(&self, target: &str, delivered: i64, failed: i64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let local = counts.entry(target.to_owned()).or_default();
        local.delivered += delivered;
        local.failed += failed;
    }

    /// Reports what is in flight now, and the counts since the last report.
    async fn report(&self) {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let lanes: Vec<(String, usize, usize)> = self
            .lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, lane)| {
                (
                    t.clone(),
                    lane.cap - lane.slots.available_permits(),
                    lane.waiting.load(Ordering::Relaxed),
                )
            })
            .collect();
        let mut reports: HashMap<String, TargetReport> = lanes
            .into_iter()
            .map(|(target, in_flight, in_line)| {
                metrics::gauge!("sluice_target_in_flight", "target" => target.clone())
                    .set(in_flight as f64);
                metrics::gauge!("sluice_target_in_line", "target" => target.clone())
                    .set(in_line as f64);
                (
                    target.clone(),
                    TargetReport {
                        target,
                        in_flight: in_flight as i64,
                        delivered: 0,
                        failed: 0,
                    },
                )
            })
            .collect();
        for (target, local) in counts {
            let report = reports.entry(target.clone()).or_insert(TargetReport {
                target,
                in_flight: 0,
                delivered: 0,
                failed: 0,
            });
            report.delivered += local.delivered;
            report.failed += local.failed;
        }
        // Only what changed: a target idle now and at the last report needs no row written.
        let reports: Vec<TargetReport> = {
            let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            reports
                .into_values()
                .filter(|r| {
                    let before = reported.insert(r.target.clone(), r.in_flight).unwrap_or(0);
                    r.delivered > 0 || r.failed > 0 || r.in_flight > 0 || before > 0
                })
                .collect()
        };
        if let Err(error) = self.store.report_targets(&self.worker, &reports).await {
            tracing::warn!(error = %error, "cannot report delivery targets");
        }
        let now = Utc::now();
        for target in self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            record_gauges(target, now);
        }
    }
}

/// The target's gauges: `sluice_target_state` and what waits for it in the queue.
pub fn record_gauges(target: &TargetRecord, now: DateTime<Utc>) {
    let label = target.target.clone();
    metrics::gauge!("sluice_target_state", "target" => label.clone()).set(state_number(target));
    metrics::gauge!("sluice_target_waiting", "target" => label.clone()).set(target.waiting as f64);
    let oldest = target
        .waiting_since
        .map(|since| (now - since).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    metrics::gauge!("sluice_target_waiting_oldest_seconds", "target" => label).set(oldest);
}

/// What a target's limit is divided by now: its last 429's slowdown, halved every
/// [`RECOVERY_HALF_LIFE`] since; at least 1.
pub fn slowdown_now(target: &TargetRecord, now: DateTime<Utc>) -> f64 {
    let Some(at) = target.throttled_at else {
        return 1.0;
    };
    let elapsed = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
    let half_lives = elapsed / RECOVERY_HALF_LIFE.as_secs_f64();
    (target.slowdown * 0.5f64.powf(half_lives)).max(1.0)
}

/// Whether a target takes deliveries (closed and not paused).
fn available(target: &TargetRecord) -> bool {
    unavailable_reason(target).is_none()
}

/// Why a target takes no delivery now other than its probe, if it does not.
fn unavailable_reason(target: &TargetRecord) -> Option<String> {
    let name = &target.target;
    if target.paused {
        return Some(format!("target {name} is paused"));
    }
    match target.state.as_str() {
        "open" => Some(open_reason(
            name,
            target.next_probe_at.unwrap_or_else(Utc::now),
        )),
        "half_open" => Some(probing_reason(name)),
        _ => None,
    }
}

fn open_reason(target: &str, next_probe: DateTime<Utc>) -> String {
    format!(
        "circuit open for {target} until {}",
        next_probe.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    )
}

fn probing_reason(target: &str) -> String {
    format!("circuit half open for {target}: a probe is in flight")
}

/// `sluice_target_state`: 0 closed, 1 half open, 2 open, 3 paused.
pub fn state_number(target: &TargetRecord) -> f64 {
    if target.paused {
        return 3.0;
    }
    match target.state.as_str() {
        "open" => 2.0,
        "half_open" => 1.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_broker_gets_its_own_cap_and_a_receiver_the_targets() {
        let settings = crate::config::Settings::from_args(["--database-url", "sqlite::memory:"])
            .expect("parses");
        let limits = TargetLimits::from_settings(&settings);
        assert_eq!(limits.cap("redis://127.0.0.1:6379"), 32);
        assert_eq!(limits.cap("nats://127.0.0.1:4222"), 32);
        assert_eq!(limits.cap("https://hooks.example.com:443"), 16);
        assert_eq!(limits.cap("smtp://mail.example.com:587"), 16);
        let settings = crate::config::Settings::from_args([
            "--database-url",
            "sqlite::memory:",
            "--broker-max-in-flight",
            "64",
            "--target-max-in-flight",
            "4",
        ])
        .expect("parses");
        let limits = TargetLimits::from_settings(&settings);
        assert_eq!(limits.cap("amqp://127.0.0.1:5672"), 64);
        assert_eq!(limits.cap("http://127.0.0.1:8080"), 4);
    }

    #[test]
    fn a_line_is_as_fast_as_its_last_horizon_and_still_once_it_stops() {
        let start = Instant::now();
        let mut departures = Departures::new(start);
        assert_eq!(departures.recent(start), 0, "a line that never moved");
        for i in 0..50 {
            departures.depart(start + Duration::from_millis(i));
        }
        assert_eq!(departures.recent(start + Duration::from_millis(60)), 50);
        // The next horizon remembers the last one until it has more of its own.
        let next = start + LINE_HORIZON + Duration::from_millis(10);
        departures.depart(next);
        assert_eq!(departures.recent(next), 50);
        for i in 1..80 {
            departures.depart(next + Duration::from_millis(i / 2));
        }
        assert_eq!(departures.recent(next + Duration::from_millis(50)), 80);
        // A line that stood still for two horizons took nothing lately.
        assert_eq!(departures.recent(next + 3 * LINE_HORIZON), 0);
    }
}
