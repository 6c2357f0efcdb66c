//! Every API process's in-memory copy of the keys table.
//!
//! Checking a key is a SHA-256, a map lookup by its public prefix and a constant-time
//! comparison of hashes: no database round trip per request, whatever the request rate and
//! however many bogus keys a client sends. The copy is reloaded every [`REFRESH`] (the table
//! is small), so a key revoked by any process or by `sluice keys revoke` is refused by every
//! process within about a second. A key this process has not seen yet triggers an early
//! reload, so a key created a moment ago works at once; such reloads are shared by every
//! request waiting for one and spaced [`MISS_RELOAD`] apart, so a flood of made-up keys costs
//! at most a few small queries a second (and each made-up key waits that long). A
//! copy older than [`STALE`] — its reloads failing — is not trusted: requests wait for a
//! reload, and get a 503 if the database cannot be reached.
//!
//! When each key was last used is kept here and written in one batch every [`FLUSH`].

use super::keys;
use super::{Principal, Scopes};
use sluice_store::{ApiKeyRecord, Store, StoreError, Timestamp};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

pub const REFRESH: Duration = Duration::from_secs(1);
pub const MISS_RELOAD: Duration = Duration::from_millis(200);
pub const STALE: Duration = Duration::from_secs(4);
pub const FLUSH: Duration = Duration::from_secs(15);

/// What checking a presented key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Valid(Arc<Principal>),
    /// Not a key, or not one of ours.
    Unknown,
    Revoked,
}

struct Entry {
    principal: Arc<Principal>,
    hash: [u8; 32],
    revoked: bool,
}

struct Snapshot {
    by_prefix: HashMap<String, Entry>,
    by_id: HashMap<i64, String>,
    loaded_at: Instant,
}

pub struct KeyRing {
    store: Arc<dyn Store>,
    snapshot: RwLock<Snapshot>,
    /// One reload at a time; others wait for it and use its result.
    reloading: tokio::sync::Mutex<()>,
    uses: Mutex<HashMap<i64, Timestamp>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the keys once (so a database that cannot be read stops the start).
    pub async fn load(store: Arc<dyn Store>) -> Result<Arc<KeyRing>, StoreError> {
        let snapshot = snapshot(&store.api_keys().await?);
        Ok(Arc::new(KeyRing {
            store,
            snapshot: RwLock::new(snapshot),
            reloading: tokio::sync::Mutex::new(()),
            uses: Mutex::new(HashMap::new()),
        }))
    }

    /// Reloads every [`REFRESH`] and records key use every [`FLUSH`] until `shutdown`, then
    /// records the last uses.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let ring = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_flush = Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(error) = ring.reload().await {
                    tracing::warn!(error = %error, "cannot reload API keys");
                }
                if last_flush.elapsed() >= FLUSH {
                    last_flush = Instant::now();
                    ring.flush_uses().await;
                }
            }
            ring.flush_uses().await;
        })
    }

    /// Checks a presented key.
    pub async fn verify(&self, presented: &str) -> Result<Verdict, StoreError> {
        let Some(prefix) = keys::prefix_of(presented) else {
            return Ok(Verdict::Unknown);
        };
        let hash = keys::digest(presented);
        let asked_at = Instant::now();
        let (verdict, age) = self.look_up(prefix, &hash);
        let verdict = if verdict.is_none() || age > STALE {
            self.reload_unless_done_since(asked_at).await?;
            self.look_up(prefix, &hash).0
        } else {
            verdict
        };
        let verdict = verdict.unwrap_or(Verdict::Unknown);
        if let Verdict::Valid(principal) = &verdict {
            self.used(principal.key_id);
        }
        Ok(verdict)
    }

    /// The principal of an unrevoked key, by id (for console sessions).
    pub async fn principal(&self, key_id: i64) -> Result<Option<Arc<Principal>>, StoreError> {
        if self.age() > STALE {
            self.reload_unless_done_since(Instant::now()).await?;
        }
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let principal = snapshot
            .by_id
            .get(&key_id)
            .and_then(|prefix| snapshot.by_prefix.get(prefix))
            .filter(|entry| !entry.revoked)
            .map(|entry| entry.principal.clone());
        if principal.is_some() {
            self.used(key_id);
        }
        Ok(principal)
    }

    /// How many keys are usable (not revoked).
    pub fn usable(&self) -> usize {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_prefix
            .values()
            .filter(|e| !e.revoked)
            .count()
    }

    /// Reloads now (after this process created or revoked a key).
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        self.load_now().await
    }

    fn loaded_at(&self) -> Instant {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .loaded_at
    }

    fn age(&self) -> Duration {
        self.loaded_at().elapsed()
    }

    /// Makes sure the copy was read after `asked_at` (so it holds every key committed before
    /// then): waits for a reload already under way or, if none started since, makes one — no
    /// sooner than [`MISS_RELOAD`] after the previous.
    async fn reload_unless_done_since(&self, asked_at: Instant) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let loaded_at = self.loaded_at();
        if loaded_at > asked_at {
            return Ok(());
        }
        let since = loaded_at.elapsed();
        if since < MISS_RELOAD {
            tokio::time::sleep(MISS_RELOAD - since).await;
        }
        self.load_now().await
    }

    async fn load_now(&self) -> Result<(), StoreError> {
        // Stamped with when the read began: it holds everything committed before that.
        let started = Instant::now();
        let mut fresh = snapshot(&self.store.api_keys().await?);
        fresh.loaded_at = started;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// The verdict for a prefix in the current copy (`None`: not in it), and the copy's age.
    fn look_up(&self, prefix: &str, hash: &[u8; 32]) -> (Option<Verdict>, Duration) {
        let snapshot = self.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let verdict = snapshot.by_prefix.get(prefix).map(|entry| {
            if !bool::from(entry.hash.ct_eq(hash)) {
                Verdict::Unknown
            } else if entry.revoked {
                Verdict::Revoked
            } else {
                Verdict::Valid(entry.principal.clone())
            }
        });
        (verdict, snapshot.loaded_at.elapsed())
    }

    fn used(&self, key_id: i64) {
        self.uses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id, chrono::Utc::now());
    }

    async fn flush_uses(&self) {
        let uses: Vec<(i64, Timestamp)> = {
            let mut uses = self.uses.lock().unwrap_or_else(|p| p.into_inner());
            uses.drain().collect()
        };
        if let Err(error) = self.store.record_key_use(&uses).await {
            tracing::warn!(error = %error, "cannot record when API keys were last used");
        }
    }
}

fn snapshot(records: &[ApiKeyRecord]) -> Snapshot {
    let mut by_prefix = HashMap::with_capacity(records.len());
    let mut by_id = HashMap::with_capacity(records.len());
    for record in records {
        let Some(hash) = keys::from_hex(&record.key_hash) else {
            tracing::warn!(key_id = record.id, "an API key's stored hash is unreadable");
            continue;
        };
        by_id.insert(record.id, record.prefix.clone());
        by_prefix.insert(
            record.prefix.clone(),
            Entry {
                principal: Arc::new(Principal {
                    key_id: record.id,
                    name: record.name.clone(),
                    scopes: Scopes::from_names(&record.scopes),
                }),
                hash,
                revoked: record.revoked_at.is_some(),
            },
        );
    }
    Snapshot {
        by_prefix,
        by_id,
        loaded_at: Instant::now(),
    }
}
