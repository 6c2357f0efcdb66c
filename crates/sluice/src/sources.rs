//! Each process's copy of the sources — read on every inbound webhook, so no request reads
//! them from the database — reloaded every second and at once after this process changes
//! one; and what the process saw through each (events accepted, requests or messages
//! refused and why), added to the store's counts every second.

use sluice_core::source::Source;
use sluice_store::{ConnectionNews, SourceTally, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

const REFRESH: Duration = Duration::from_secs(1);
/// A refusal's reason is kept this short in the counts.
const MAX_REASON: usize = 300;

pub struct Sources {
    store: Arc<dyn Store>,
    current: RwLock<Arc<HashMap<String, Arc<Source>>>>,
    /// Told when the set of sources changes (the consumers start and stop at once).
    changed: tokio::sync::Notify,
    /// One reload at a time: a slow one must not install what it read after a newer one.
    loading: tokio::sync::Mutex<()>,
    tallies: Mutex<HashMap<String, SourceTally>>,
}

impl Sources {
    /// Loads the sources (an empty set if the store cannot say yet) and keeps them fresh,
    /// and the counts reported, while it lives.
    pub async fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let sources = Arc::new(Sources {
            store,
            current: RwLock::new(Arc::new(HashMap::new())),
            changed: tokio::sync::Notify::new(),
            loading: tokio::sync::Mutex::new(()),
            tallies: Mutex::new(HashMap::new()),
        });
        if let Err(error) = sources.reload().await {
            tracing::warn!(error = %error, "cannot read the sources yet");
        }
        tokio::spawn(refresh_loop(Arc::downgrade(&sources)));
        sources
    }

    pub fn get(&self, name: &str) -> Option<Arc<Source>> {
        self.snapshot().get(name).cloned()
    }

    /// Every source, by name.
    pub fn snapshot(&self) -> Arc<HashMap<String, Arc<Source>>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the sources again (after this process changed one, or every second).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.loading.lock().await;
        let mut loaded = HashMap::new();
        for record in self.store.sources().await? {
            match Source::parse(&record.name, &record.config, None) {
                Ok(source) => {
                    loaded.insert(record.name, Arc::new(source));
                }
                Err(errors) => tracing::error!(
                    source = %record.name,
                    ?errors,
                    "a stored source no longer validates; it is ignored"
                ),
            }
        }
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if **current != loaded {
            *current = Arc::new(loaded);
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// Returns once the set of sources changes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// An event came in through `name` (stored, or a duplicate).
    pub fn accepted(&self, name: &str) {
        metrics::counter!("sluice_source_events_total", "source" => name.to_owned(), "outcome" => "accepted")
            .increment(1);
        self.tally(name, |t| t.accepted += 1);
    }

    /// A request or message through `name` was refused (`label` for the metric).
    pub fn rejected(&self, name: &str, label: &'static str, why: &str) {
        metrics::counter!("sluice_source_events_total", "source" => name.to_owned(), "outcome" => label)
            .increment(1);
        let why = shorten(why);
        self.tally(name, |t| {
            t.rejected += 1;
            t.last_rejection = Some((chrono::Utc::now(), why));
        });
    }

    /// A broker source's consumer connected.
    pub fn connected(&self, name: &str) {
        self.tally(name, |t| t.connection = Some(ConnectionNews::Connected));
    }

    /// A broker source's consumer could not connect, or lost its connection.
    pub fn connection_failed(&self, name: &str, why: &str) {
        let why = shorten(why);
        self.tally(name, |t| {
            t.connection = Some(ConnectionNews::Failed(chrono::Utc::now(), why))
        });
    }

    fn tally(&self, name: &str, change: impl FnOnce(&mut SourceTally)) {
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let tally = tallies
            .entry(name.to_owned())
            .or_insert_with(|| SourceTally {
                name: name.to_owned(),
                accepted: 0,
                rejected: 0,
                last_rejection: None,
                connection: None,
            });
        change(tally);
    }

    /// Adds this process's counts to the store's (kept for the next report if it cannot).
    pub async fn report(&self) -> Result<(), StoreError> {
        let taken: Vec<SourceTally> = self
            .tallies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, t)| t)
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.store.record_source_tallies(&taken).await {
            let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
            for old in taken {
                let tally = tallies
                    .entry(old.name.clone())
                    .or_insert_with(|| SourceTally {
                        name: old.name.clone(),
                        accepted: 0,
                        rejected: 0,
                        last_rejection: None,
                        connection: None,
                    });
                tally.accepted += old.accepted;
                tally.rejected += old.rejected;
                // What happened since is newer than what could not be written.
                if tally.last_rejection.is_none() {
                    tally.last_rejection = old.last_rejection;
                }
                if tally.connection.is_none() {
                    tally.connection = old.connection;
                }
            }
            return Err(error);
        }
        Ok(())
    }
}

/// A reason cut to `MAX_REASON` bytes.
fn shorten(why: &str) -> String {
    let mut why = why.to_owned();
    if why.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
    }
    why
}

async fn refresh_loop(sources: Weak<Sources>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        let Some(sources) = sources.upgrade() else {
            return;
        };
        if let Err(error) = sources.reload().await {
            tracing::warn!(error = %error, "cannot refresh the sources");
        }
        if let Err(error) = sources.report().await {
            tracing::warn!(error = %error, "cannot record the sources' counts");
        }
    }
}
