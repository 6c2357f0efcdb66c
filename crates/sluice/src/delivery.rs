//! Delivery isolation: every receiver ("target": `scheme://host:port` of a webhook, the SMTP
//! server of an email) gets a cap on deliveries in flight and a circuit breaker, so one that
//! hangs or fails cannot hold up deliveries to the others.
//!
//! Before a delivery, the worker asks [`Targets::admit`]. The answer is go — with a permit
//! counted against the target's cap — or defer until a given time, with the reason: the
//! target is paused, its circuit is open (until its next probe), another worker is probing
//! it, or this process already has `TARGET_MAX_IN_FLIGHT` deliveries in flight to it. A
//! deferred action is not attempted; the event goes back to pending until then without the
//! attempt counting against `MAX_ATTEMPTS`, and holds no worker slot while it waits.
//!
//! The breaker (closed → open after `TARGET_FAILURE_THRESHOLD` consecutive failures that a
//! retry might fix → after `TARGET_OPEN_MS` one probe delivery, half open → closed on its
//! success, open again on its failure) lives in the `targets` table, so every worker process
//! honours it; each process reads it every [`REFRESH`] (a pause reaches all within a second)
//! and writes what it changes at once. Counts of deliveries and what is in flight are
//! reported every [`REPORT`] for `GET /targets`.

use chrono::{DateTime, Utc};
use sluice_store::{Store, StoreError, TargetRecord, TargetReport};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

pub const REFRESH: Duration = Duration::from_millis(500);
pub const REPORT: Duration = Duration::from_secs(1);
/// How long a delivery may wait in its worker slot for a place under its target's cap, when
/// the target is answering (it completed a delivery within [`FLOWING`]): a busy-but-working
/// receiver frees a place within milliseconds, so it is not churned through deferrals. A
/// target that is not answering gets no wait: its deliveries are deferred at once, and hold
/// no slot another receiver could use.
const CAP_QUEUE: Duration = Duration::from_millis(50);
const FLOWING: Duration = Duration::from_millis(200);
/// How long an action is deferred when its target is at its cap, or paused.
const CAP_WAIT: chrono::Duration = chrono::Duration::milliseconds(1000);
const PAUSE_WAIT: chrono::Duration = chrono::Duration::milliseconds(5000);

#[derive(Debug, Clone, Copy)]
pub struct TargetLimits {
    pub max_in_flight: usize,
    pub failure_threshold: i64,
    pub open_ms: i64,
}

impl TargetLimits {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        TargetLimits {
            max_in_flight: settings.target_max_in_flight as usize,
            failure_threshold: i64::from(settings.target_failure_threshold),
            open_ms: i64::try_from(settings.target_open_ms).unwrap_or(i64::MAX),
        }
    }
}

/// What [`Targets::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    Go(Permit),
    Defer {
        until: DateTime<Utc>,
        reason: String,
    },
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
}

#[derive(Default)]
struct Local {
    delivered: i64,
    failed: i64,
}

/// What this process last reported in flight per target (so idle ones are not re-reported).
type Reported = HashMap<String, i64>;

pub struct Targets {
    store: Arc<dyn Store>,
    limits: TargetLimits,
    worker: String,
    /// The shared state as last read (and as this process changed it since).
    known: RwLock<HashMap<String, TargetRecord>>,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    counts: Mutex<HashMap<String, Local>>,
    reported: Mutex<Reported>,
    /// When each target last answered a delivery.
    answered: Mutex<HashMap<String, std::time::Instant>>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Targets {
    pub fn new(store: Arc<dyn Store>, limits: TargetLimits, worker: String) -> Arc<Targets> {
        Arc::new(Targets {
            store,
            limits,
            worker,
            known: RwLock::default(),
            slots: Mutex::default(),
            counts: Mutex::default(),
            reported: Mutex::default(),
            answered: Mutex::default(),
        })
    }

    /// Reads the shared state every [`REFRESH`] and reports every [`REPORT`], until
    /// `shutdown`; then reports one last time.
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
                if let Err(error) = targets.reload().await {
                    tracing::warn!(error = %error, "cannot read delivery targets");
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
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn known(&self, target: &str) -> Option<TargetRecord> {
        self.known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .cloned()
    }

    fn remember(&self, record: TargetRecord) {
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.target.clone(), record);
    }

    fn slots(&self, target: &str) -> Arc<Semaphore> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.max_in_flight)))
            .clone()
    }

    /// May a delivery to `target` start now?
    pub async fn admit(&self, target: &str) -> Result<Admission, StoreError> {
        let now = Utc::now();
        let mut probe = false;
        if let Some(state) = self.known(target) {
            if state.paused {
                return Ok(Admission::Defer {
                    until: now + PAUSE_WAIT,
                    reason: format!("target {target} is paused"),
                });
            }
            let next_probe = state.next_probe_at.unwrap_or(now);
            match state.state.as_str() {
                "open" if next_probe > now => {
                    return Ok(Admission::Defer {
                        until: next_probe,
                        reason: format!(
                            "circuit open for {target} until {}",
                            next_probe.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        ),
                    })
                }
                "half_open" if next_probe > now => {
                    return Ok(Admission::Defer {
                        until: next_probe.max(now + CAP_WAIT),
                        reason: format!("circuit half open for {target}: a probe is in flight"),
                    })
                }
                // Due for a probe — or a probe whose worker never said how it went.
                "open" | "half_open" => {
                    if !self
                        .store
                        .claim_target_probe(target, self.limits.open_ms)
                        .await?
                    {
                        // Another worker took the probe: wait for its verdict.
                        let until = now + chrono::Duration::milliseconds(self.limits.open_ms);
                        return Ok(Admission::Defer {
                            until,
                            reason: format!("circuit half open for {target}: a probe is in flight"),
                        });
                    }
                    probe = true;
                }
                _ => {}
            }
        }
        let slots = self.slots(target);
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) if self.flowing(target) => {
                tokio::time::timeout(CAP_QUEUE, slots.acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        match slot {
            Some(slot) => Ok(Admission::Go(Permit {
                target: target.to_owned(),
                probe,
                _slot: slot,
            })),
            None => Ok(Admission::Defer {
                until: now + CAP_WAIT,
                reason: format!(
                    "{} deliveries to {target} already in flight (TARGET_MAX_IN_FLIGHT)",
                    self.limits.max_in_flight
                ),
            }),
        }
    }

    fn flowing(&self, target: &str) -> bool {
        self.answered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(target)
            .is_some_and(|at| at.elapsed() < FLOWING)
    }

    /// Records how a delivery went; the breaker's changes are written at once.
    pub async fn finished(&self, permit: Permit, how: Delivered) {
        let target = permit.target.clone();
        if !matches!(how, Delivered::Unavailable(_)) {
            self.answered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(target.clone(), std::time::Instant::now());
        }
        let outcome = match &how {
            Delivered::Ok => "delivered",
            Delivered::Unavailable(_) => "unavailable",
            Delivered::Refused => "refused",
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
                if record.state == "open" {
                    tracing::warn!(target = %target, error = record.last_error.as_deref().unwrap_or(""), "circuit open");
                }
                self.remember(record);
            }
            Some(Err(error)) => {
                tracing::warn!(error = %error, target = %target, "cannot record a delivery's outcome");
            }
            None => {}
        }
        drop(permit);
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
        let slots: Vec<(String, usize)> = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(t, s)| (t.clone(), self.limits.max_in_flight - s.available_permits()))
            .collect();
        let mut reports: HashMap<String, TargetReport> = slots
            .into_iter()
            .map(|(target, in_flight)| {
                metrics::gauge!("sluice_target_in_flight", "target" => target.clone())
                    .set(in_flight as f64);
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
        for target in self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            metrics::gauge!("sluice_target_state", "target" => target.target.clone())
                .set(state_number(target));
        }
    }
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
