//! The signal bus: live messages for `/ws` and wake-ups for workers, within this process and,
//! on PostgreSQL, across every process sharing the database (`LISTEN`/`NOTIFY`).
//!
//! Local subscribers get a message straight away; other processes get it through a NOTIFY
//! sent after the change committed. Each process tags its notifications with an origin id and
//! ignores its own, so nothing is delivered twice. Live messages are best effort (a process
//! that is down misses them); wake-ups are backed by the workers' polling.
//!
//! Live messages leave a process only while another process has `/ws` clients: every event
//! makes two or three of them, and sending them all through the database nobody reads cost
//! the drain 6%. A process with clients says so when one connects, every `WATCH_INTERVAL`
//! after that, and when a process that starts up asks; the others forward for `WATCH_TTL`
//! after they last heard it.
//!
//! Wake-ups leave a process the same way: only while a worker in another process waits for
//! them. A busy worker claims again as soon as it has room and needs no wake-up; sending one
//! per ingest burst regardless cost an API process 8–12% of its ingest rate (a NOTIFY
//! transaction every 2 ms, and its own notifications coming back). A worker that finds
//! nothing due says it waits — at once, unless it already did so within `WATCH_INTERVAL` and
//! nobody has started or reconnected since; then every `WATCH_INTERVAL` while it still
//! waits; and when a process that starts up asks — and looks once more before it sleeps, for
//! what was committed before the others heard it.
//! A process that starts up, or listens again after losing its connection, sends wake-ups
//! for `ANSWER_GRACE` before it has heard anything, since the answers may still be on their
//! way.

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_core::event::{AttemptStatus, EventState};
use sluice_store::{ClaimedEvent, EventSummary, IngestOutcome, StateChange, Store};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

const LIVE_CHANNEL: &str = "sluice_live";
const WAKE_CHANNEL: &str = "sluice_wake";
/// `watching <origin>`: that process has `/ws` clients. `ask <origin>`: who has?
const WATCH_CHANNEL: &str = "sluice_watch";
const WATCH_INTERVAL: Duration = Duration::from_secs(5);
/// Three announcements may be missed before a process stops forwarding.
const WATCH_TTL: Duration = Duration::from_secs(15);
/// How long a new `/ws` client, or a worker about to wait, waits for its process's
/// announcement to be sent.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a process that starts listening assumes another process's worker waits, until
/// the answers to its question arrive.
const ANSWER_GRACE: Duration = Duration::from_secs(2);
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const MAX_NOTIFY_BYTES: usize = 7_000;
/// At most one NOTIFY round trip per this interval. Every NOTIFY is a transaction that
/// signals each listening connection; sent per ingest batch they outnumbered the ingest
/// commits three to one. Processes wait at most this long for news from another process.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(2);
/// Live messages a slow subscriber may fall behind by before it is dropped.
const LIVE_BUFFER: usize = 4_096;

/// A message of `GET /ws`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type")]
pub enum LiveMessage {
    #[serde(rename = "event.created")]
    EventCreated {
        event_id: i64,
        external_id: String,
        event_type: String,
        state: EventState,
    },
    #[serde(rename = "event.updated")]
    EventUpdated {
        event_id: i64,
        external_id: String,
        event_type: String,
        state: EventState,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        attempt_id: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        status: Option<AttemptStatus>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        finished_at: Option<DateTime<Utc>>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        duration_ms: Option<i64>,
    },
    #[serde(rename = "rule.changed")]
    RuleChanged { rule_id: i64, version: i64 },
}

impl LiveMessage {
    pub fn event_id(&self) -> Option<i64> {
        match self {
            LiveMessage::EventCreated { event_id, .. }
            | LiveMessage::EventUpdated { event_id, .. } => Some(*event_id),
            LiveMessage::RuleChanged { .. } => None,
        }
    }

    pub fn event_type(&self) -> Option<&str> {
        match self {
            LiveMessage::EventCreated { event_type, .. }
            | LiveMessage::EventUpdated { event_type, .. } => Some(event_type),
            LiveMessage::RuleChanged { .. } => None,
        }
    }

    pub fn created(event: &EventSummary) -> Self {
        LiveMessage::EventCreated {
            event_id: event.id,
            external_id: event.external_id.clone(),
            event_type: event.event_type.clone(),
            state: event.state,
        }
    }

    pub fn processing(claimed: &ClaimedEvent) -> Self {
        LiveMessage::EventUpdated {
            event_id: claimed.event.id,
            external_id: claimed.event.external_id.clone(),
            event_type: claimed.event.event_type.clone(),
            state: EventState::Processing,
            attempt_id: Some(claimed.attempt_id),
            status: Some(AttemptStatus::Running),
            finished_at: None,
            duration_ms: None,
        }
    }

    pub fn from_change(change: &StateChange) -> Self {
        LiveMessage::EventUpdated {
            event_id: change.event_id,
            external_id: change.external_id.clone(),
            event_type: change.event_type.clone(),
            state: change.state,
            attempt_id: change.attempt_id,
            status: change.status,
            finished_at: change.finished_at,
            duration_ms: change.duration_ms,
        }
    }
}

/// What a committed write did. Every write that makes events due or changes what a live
/// watcher sees is announced here, once, after its commit: ingest and batches (by the
/// ingestor), claims, completions and released leases (by the worker), replays and requeues
/// (by the operations), releases of waiting events (by the targets), rule changes.
/// [`Bus::announce`] decides who hears what.
pub enum Committed<'a> {
    /// Events stored by ingest, one or a batch: the new ones are told as `event.created` and
    /// wake the workers; duplicates changed nothing.
    Ingested(&'a [IngestOutcome]),
    /// Events a worker leased: told as `processing`. Nobody needs waking.
    Claimed(&'a [ClaimedEvent]),
    /// Attempts that ended. Told; workers are woken when the next event of an ordering key
    /// may now be due (`frees_keys`: nothing else announces it) and when the earliest retry
    /// is (`retry_at`), rather than for every retry scheduled.
    Completed {
        changes: &'a [StateChange],
        frees_keys: bool,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Events sent back to the queue — replayed, requeued, or released when their lease
    /// expired: told, and workers woken for those pending again.
    Requeued(&'a [StateChange]),
    /// Waiting events taken out of the queue (cancelled): told. Nobody needs waking.
    Cancelled(&'a [StateChange]),
    /// This many events that waited for a target were made due again.
    Released(u64),
    /// A rule has a new version.
    RuleChanged { rule_id: i64, version: i64 },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    messages: Vec<LiveMessage>,
}

enum Outgoing {
    Live(Vec<LiveMessage>),
    Wake,
    /// Announce that this process has `/ws` clients; the sender learns once it is sent.
    Watching(Option<oneshot::Sender<()>>),
    /// Announce that this process's worker waits for wake-ups; the sender learns once it is
    /// sent.
    Waiting(Option<oneshot::Sender<()>>),
    Ask,
}

/// Until when something heard from another process holds (it has `/ws` clients; its worker
/// waits), on a monotonic clock.
struct Heard {
    epoch: Instant,
    until_ms: AtomicU64,
}

impl Heard {
    fn new() -> Self {
        Heard {
            epoch: Instant::now(),
            until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn holds_for(&self, period: Duration) {
        let until = self.now_ms().saturating_add(period.as_millis() as u64);
        self.until_ms.fetch_max(until, Ordering::Relaxed);
    }

    fn heard(&self) {
        self.holds_for(WATCH_TTL);
    }

    fn holds(&self) -> bool {
        self.now_ms() < self.until_ms.load(Ordering::Relaxed)
    }
}

/// Whether this process's worker waits for a wake-up, and when it last said so.
struct Waiting {
    now: AtomicBool,
    /// When it last said so at once (`Bus::worker_waits`); `None` once a process that may not
    /// have heard it has started or reconnected.
    announced: std::sync::Mutex<Option<Instant>>,
}

impl Waiting {
    fn forget_announcement(&self) {
        *self.announced.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Cheap to clone; every clone shares the same channels.
#[derive(Clone)]
pub struct Bus {
    live: broadcast::Sender<Arc<LiveMessage>>,
    wake: Arc<Notify>,
    /// To other processes; `None` on SQLite (one process, nothing to tell).
    outgoing: Option<mpsc::Sender<Outgoing>>,
    /// Whether another process has `/ws` clients, so live messages are worth sending.
    watched: Arc<Heard>,
    /// Whether a worker in another process waits, so wake-ups are worth sending.
    waited: Arc<Heard>,
    /// Whether this process's worker waits.
    waiting: Arc<Waiting>,
}

impl Bus {
    /// A bus for this process only.
    pub fn local() -> Self {
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        Bus {
            live,
            wake: Arc::new(Notify::new()),
            outgoing: None,
            watched: Arc::new(Heard::new()),
            waited: Arc::new(Heard::new()),
            waiting: Arc::new(Waiting {
                now: AtomicBool::new(false),
                announced: std::sync::Mutex::new(None),
            }),
        }
    }

    /// A bus that also talks to other processes when the store can (`LISTEN`/`NOTIFY`).
    pub async fn start(store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let mut bus = Bus::local();
        let Some(mut incoming) = store.listen(&CHANNELS).await? else {
            return Ok(bus);
        };
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let (sender, mut outgoing) = mpsc::channel::<Outgoing>(1024);
        // Watchers and waiting workers elsewhere answer at once rather than at their next
        // announcement.
        let _ = sender.try_send(Outgoing::Ask);
        bus.waited.holds_for(ANSWER_GRACE);
        bus.outgoing = Some(sender.clone());

        let live = bus.live.clone();
        let wake = bus.wake.clone();
        let watched = bus.watched.clone();
        let waited = bus.waited.clone();
        let waiting = bus.waiting.clone();
        let own_origin = origin.clone();
        let listen_store = store.clone();
        let replies = sender.clone();
        tokio::spawn(async move {
            // The stream ends after a connection error (e.g. the database restarted): listen
            // again until it works, then wake the local worker, since wake-ups sent meanwhile
            // were lost.
            loop {
                while let Some(item) = incoming.next().await {
                    match item {
                        Ok((channel, payload)) if channel == WAKE_CHANNEL => {
                            if payload != own_origin {
                                wake.notify_waiters();
                                wake.notify_one();
                            }
                        }
                        Ok((channel, payload)) if channel == WATCH_CHANNEL => {
                            match payload.split_once(' ') {
                                Some((_, origin)) if origin == own_origin => {}
                                Some(("watching", _)) => watched.heard(),
                                Some(("waiting", _)) => waited.heard(),
                                Some(("ask", _)) => {
                                    // The asker has heard nothing yet: the next time the
                                    // worker waits, it says so at once.
                                    waiting.forget_announcement();
                                    if live.receiver_count() > 0 {
                                        let _ = replies.try_send(Outgoing::Watching(None));
                                    }
                                    if waiting.now.load(Ordering::Relaxed) {
                                        let _ = replies.try_send(Outgoing::Waiting(None));
                                    }
                                }
                                _ => {}
                            }
                        }
                        Ok((_, payload)) => deliver(&live, &own_origin, &payload),
                        Err(error) => {
                            tracing::warn!(error = %error, "live notifications interrupted; reconnecting");
                            break;
                        }
                    }
                }
                incoming = loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    match listen_store.listen(&CHANNELS).await {
                        Ok(Some(stream)) => break stream,
                        Ok(None) => return,
                        Err(error) => tracing::debug!(error = %error, "cannot listen yet"),
                    }
                };
                tracing::info!("listening for notifications again");
                wake.notify_one();
                // Announcements sent meanwhile were lost too.
                let _ = replies.try_send(Outgoing::Ask);
                waited.holds_for(ANSWER_GRACE);
                waiting.forget_announcement();
                if waiting.now.load(Ordering::Relaxed) {
                    let _ = replies.try_send(Outgoing::Waiting(None));
                }
            }
        });

        let live = bus.live.clone();
        let waiting = bus.waiting.clone();
        let announcements = sender;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WATCH_INTERVAL);
            loop {
                every.tick().await;
                if live.receiver_count() > 0
                    && announcements.send(Outgoing::Watching(None)).await.is_err()
                {
                    return;
                }
                if waiting.now.load(Ordering::Relaxed)
                    && announcements.send(Outgoing::Waiting(None)).await.is_err()
                {
                    return;
                }
            }
        });

        tokio::spawn(async move {
            let mut next_send = tokio::time::Instant::now();
            while let Some(first) = outgoing.recv().await {
                // Coalesce what queues up until the interval has passed since the last one:
                // one NOTIFY round trip per burst. A lone message goes out at once.
                tokio::time::sleep_until(next_send).await;
                let mut messages = Vec::new();
                let mut wake = false;
                let mut watching = false;
                let mut waits = false;
                let mut ask = false;
                let mut announced = Vec::new();
                let mut take = |item: Outgoing| match item {
                    Outgoing::Live(batch) => messages.extend(batch),
                    Outgoing::Wake => wake = true,
                    Outgoing::Watching(sent) => {
                        watching = true;
                        announced.extend(sent);
                    }
                    Outgoing::Waiting(sent) => {
                        waits = true;
                        announced.extend(sent);
                    }
                    Outgoing::Ask => ask = true,
                };
                take(first);
                while let Ok(item) = outgoing.try_recv() {
                    take(item);
                }
                // Wake-up and live messages share one round trip.
                let mut notifications: Vec<(&str, String)> = envelopes(&origin, messages)
                    .into_iter()
                    .map(|payload| (LIVE_CHANNEL, payload))
                    .collect();
                if wake {
                    notifications.push((WAKE_CHANNEL, origin.clone()));
                }
                if watching {
                    notifications.push((WATCH_CHANNEL, format!("watching {origin}")));
                }
                if waits {
                    notifications.push((WATCH_CHANNEL, format!("waiting {origin}")));
                }
                if ask {
                    notifications.push((WATCH_CHANNEL, format!("ask {origin}")));
                }
                next_send = tokio::time::Instant::now() + NOTIFY_INTERVAL;
                if let Err(error) = store.notify(&notifications).await {
                    tracing::warn!(error = %error, "cannot send notifications to other processes");
                }
                for sent in announced {
                    let _ = sent.send(());
                }
            }
        });
        Ok(bus)
    }

    /// Whether anyone would receive a live message now: a `/ws` client here, or one in
    /// another process. Lets a publisher skip building messages nobody reads.
    pub fn has_audience(&self) -> bool {
        self.live.receiver_count() > 0 || (self.outgoing.is_some() && self.watched.holds())
    }

    /// Tells whoever should hear what a committed write did (see [`Committed`]). Live
    /// messages are built only when someone watches.
    pub fn announce(&self, committed: Committed<'_>) {
        match committed {
            Committed::Ingested(outcomes) => {
                let created = || {
                    outcomes.iter().filter_map(|o| match o {
                        IngestOutcome::Created(event) => Some(event),
                        _ => None,
                    })
                };
                if created().next().is_none() {
                    return;
                }
                if self.has_audience() {
                    self.publish(created().map(LiveMessage::created).collect());
                }
                self.wake_workers();
            }
            Committed::Claimed(claimed) => {
                if self.has_audience() {
                    self.publish(claimed.iter().map(LiveMessage::processing).collect());
                }
            }
            Committed::Completed {
                changes,
                frees_keys,
                retry_at,
            } => {
                if frees_keys && !changes.is_empty() {
                    self.wake_workers();
                }
                if let Some(at) = retry_at {
                    self.wake_workers_at(at);
                }
                if self.has_audience() {
                    self.publish(changes.iter().map(LiveMessage::from_change).collect());
                }
            }
            Committed::Requeued(changes) => {
                if self.has_audience() {
                    self.publish(changes.iter().map(LiveMessage::from_change).collect());
                }
                if changes.iter().any(|c| c.state == EventState::Pending) {
                    self.wake_workers();
                }
            }
            Committed::Cancelled(changes) => {
                if self.has_audience() {
                    self.publish(changes.iter().map(LiveMessage::from_change).collect());
                }
            }
            Committed::Released(count) => {
                if count > 0 {
                    self.wake_workers();
                }
            }
            Committed::RuleChanged { rule_id, version } => {
                self.publish(vec![LiveMessage::RuleChanged { rule_id, version }]);
            }
        }
    }

    /// Wakes the workers when `at` comes, so a retry does not wait for the poll interval.
    fn wake_workers_at(&self, at: DateTime<Utc>) {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        let bus = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            bus.wake_workers();
        });
    }

    /// Delivers to local subscribers now and to other processes shortly.
    fn publish(&self, messages: Vec<LiveMessage>) {
        if messages.is_empty() {
            return;
        }
        for message in &messages {
            // No subscriber is fine.
            let _ = self.live.send(Arc::new(message.clone()));
        }
        if let Some(outgoing) = self.outgoing.as_ref().filter(|_| self.watched.holds()) {
            if outgoing.try_send(Outgoing::Live(messages)).is_err() {
                metrics::counter!("sluice_live_messages_dropped_total").increment(1);
            }
        }
    }

    /// Tells workers here and elsewhere that events are due: the one in this process, and
    /// those in other processes if one of them said it waits.
    fn wake_workers(&self) {
        self.wake.notify_one();
        if let Some(outgoing) = self.outgoing.as_ref().filter(|_| self.waited.holds()) {
            let _ = outgoing.try_send(Outgoing::Wake);
        }
    }

    /// This process's worker found nothing due and is about to wait for a wake-up. Returns
    /// whether it just told the other processes so (once sent, or once a wake-up came
    /// meanwhile): then it should look once more before it waits, for what they committed
    /// before they heard it.
    pub async fn worker_waits(&self) -> bool {
        self.waiting.now.store(true, Ordering::Relaxed);
        let Some(outgoing) = &self.outgoing else {
            return false;
        };
        let mut announced = {
            let mut last = self
                .waiting
                .announced
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < WATCH_INTERVAL) {
                return false;
            }
            let (sent, announced) = oneshot::channel();
            if outgoing.try_send(Outgoing::Waiting(Some(sent))).is_err() {
                return false;
            }
            *last = Some(Instant::now());
            announced
        };
        // A wake-up meanwhile is a reason to look again too.
        tokio::select! {
            _ = tokio::time::timeout(ANNOUNCE_TIMEOUT, &mut announced) => {}
            () = self.wake.notified() => {}
        }
        true
    }

    /// This process's worker stopped waiting: a claim brought it events, or it stops.
    pub fn worker_stops_waiting(&self) {
        self.waiting.now.store(false, Ordering::Relaxed);
    }

    /// Live messages from now on, from this process and every other. Returns once the other
    /// processes have been told that someone here watches (or after `ANNOUNCE_TIMEOUT`, if the
    /// database is slow to take the announcement); what they publish from then on arrives.
    pub async fn subscribe(&self) -> broadcast::Receiver<Arc<LiveMessage>> {
        let receiver = self.live.subscribe();
        if let Some(outgoing) = &self.outgoing {
            let (sent, announced) = oneshot::channel();
            if outgoing.try_send(Outgoing::Watching(Some(sent))).is_ok() {
                let _ = tokio::time::timeout(ANNOUNCE_TIMEOUT, announced).await;
            }
        }
        receiver
    }

    /// Notified when events may be due.
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

const CHANNELS: [&str; 3] = [LIVE_CHANNEL, WAKE_CHANNEL, WATCH_CHANNEL];

/// Hands another process's live messages to local subscribers. Our own notifications come
/// back too; they are recognised by their prefix without parsing (they were delivered locally).
fn deliver(live: &broadcast::Sender<Arc<LiveMessage>>, own_origin: &str, payload: &str) {
    if live.receiver_count() == 0 {
        return; // nobody here is watching: not worth parsing
    }
    let own_prefix = format!("{{\"origin\":\"{own_origin}\"");
    if payload.starts_with(&own_prefix) {
        return;
    }
    match serde_json::from_str::<Envelope>(payload) {
        Ok(envelope) => {
            for message in envelope.messages {
                let _ = live.send(Arc::new(message));
            }
        }
        Err(error) => tracing::warn!(error = %error, "ignoring a malformed live notification"),
    }
}

/// Packs messages into as few NOTIFY payloads as fit under the size limit.
fn envelopes(origin: &str, messages: Vec<LiveMessage>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut batch: Vec<LiveMessage> = Vec::new();
    let mut size = 0;
    for message in messages {
        let len = serde_json::to_string(&message)
            .map(|s| s.len())
            .unwrap_or(0);
        if !batch.is_empty() && size + len > MAX_NOTIFY_BYTES {
            payloads.extend(encode(origin, std::mem::take(&mut batch)));
            size = 0;
        }
        size += len + 1;
        batch.push(message);
    }
    if !batch.is_empty() {
        payloads.extend(encode(origin, batch));
    }
    payloads
}

fn encode(origin: &str, messages: Vec<LiveMessage>) -> Option<String> {
    serde_json::to_string(&Envelope {
        origin: origin.to_owned(),
        messages,
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(i: i64) -> LiveMessage {
        LiveMessage::EventCreated {
            event_id: i,
            external_id: format!("ext-{i}-{}", "x".repeat(100)),
            event_type: "order.created".into(),
            state: EventState::Pending,
        }
    }

    #[test]
    fn envelopes_stay_under_the_notify_limit_and_keep_every_message() {
        let payloads = envelopes("o", (0..500).map(created).collect());
        assert!(payloads.len() > 1);
        let mut seen = 0;
        for payload in &payloads {
            assert!(payload.len() < 8000, "{}", payload.len());
            let envelope: Envelope = serde_json::from_str(payload).unwrap();
            seen += envelope.messages.len();
        }
        assert_eq!(seen, 500);
    }

    #[test]
    fn own_notifications_are_skipped_and_others_delivered() {
        let (live, mut receiver) = broadcast::channel(16);
        for payload in envelopes("me", vec![created(1)]) {
            deliver(&live, "me", &payload);
        }
        assert!(receiver.try_recv().is_err(), "our own message came back");
        for payload in envelopes("other", vec![created(2)]) {
            deliver(&live, "me", &payload);
        }
        assert_eq!(receiver.try_recv().unwrap().event_id(), Some(2));
    }

    /// A bus whose messages to other processes land in the returned receiver.
    fn bus_with_outgoing() -> (Bus, mpsc::Receiver<Outgoing>) {
        let mut bus = Bus::local();
        let (sender, outgoing) = mpsc::channel(16);
        bus.outgoing = Some(sender);
        (bus, outgoing)
    }

    #[test]
    fn wake_ups_leave_the_process_only_while_a_worker_elsewhere_waits() {
        let (bus, mut outgoing) = bus_with_outgoing();
        bus.wake_workers();
        assert!(outgoing.try_recv().is_err(), "a wake-up went out unwaited");
        bus.waited.heard();
        bus.wake_workers();
        assert!(matches!(outgoing.try_recv(), Ok(Outgoing::Wake)));
    }

    #[tokio::test]
    async fn a_waiting_worker_says_so_at_once_then_not_again_until_someone_asks() {
        let (bus, mut outgoing) = bus_with_outgoing();
        // Sends what is queued, as the sender task does, and counts the announcements.
        let sender = tokio::spawn(async move {
            let mut announced = 0;
            while let Some(item) = outgoing.recv().await {
                if let Outgoing::Waiting(Some(sent)) = item {
                    let _ = sent.send(());
                    announced += 1;
                }
            }
            announced
        });
        assert!(bus.worker_waits().await, "the first wait is announced");
        assert!(
            !bus.worker_waits().await,
            "announced again within the interval"
        );
        assert!(bus.waiting.now.load(Ordering::Relaxed));
        // A process that starts up asks: it has heard nothing, so the next wait says so.
        bus.waiting.forget_announcement();
        assert!(
            bus.worker_waits().await,
            "not announced to a process that asked"
        );
        bus.worker_stops_waiting();
        assert!(!bus.waiting.now.load(Ordering::Relaxed));
        drop(bus);
        assert_eq!(sender.await.unwrap(), 2);
    }

    #[test]
    fn messages_have_the_documented_shape() {
        let json = serde_json::to_value(created(7)).unwrap();
        assert_eq!(json["type"], "event.created");
        assert_eq!(json["event_id"], 7);
        assert_eq!(json["state"], "pending");
        let rule = serde_json::to_value(LiveMessage::RuleChanged {
            rule_id: 1,
            version: 2,
        })
        .unwrap();
        assert_eq!(
            rule,
            serde_json::json!({"type": "rule.changed", "rule_id": 1, "version": 2})
        );
    }
}
