//! The worker's rule cache: active rules compiled once, grouped by event type, and the
//! event-type settings (timeouts, attempts, delays), reloaded only when the store's rule
//! generation moves (every change of a rule or an event type moves it). Each claim returns
//! the generation it saw (see `claim` in `worker/mod.rs`), so a rule saved before an event
//! arrived always applies.

use crate::event_types::{Catalog, Processing};
use crate::rule_pass::{CompiledRule, RuleSet};
use sluice_core::logic::Limits;
use sluice_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct RuleCache {
    generation: Option<i64>,
    by_type: HashMap<String, RuleSet>,
    empty: RuleSet,
    types: Catalog,
}

impl RuleCache {
    /// Reloads unless the last load was at `generation` already. Returns whether it
    /// reloaded. What it loads may be newer than `generation`; the next claim then reloads
    /// once more, which is harmless.
    pub async fn refresh(
        &mut self,
        store: &dyn Store,
        generation: i64,
        limits: &Limits,
    ) -> Result<bool, StoreError> {
        if self.generation == Some(generation) {
            return Ok(false);
        }
        let mut by_type: HashMap<String, Vec<Arc<CompiledRule>>> = HashMap::new();
        for snapshot in store.active_rules().await? {
            by_type
                .entry(snapshot.event_type.clone())
                .or_default()
                .push(Arc::new(CompiledRule::compile(&snapshot, limits)));
        }
        self.by_type = by_type.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        self.types = Catalog::load(store).await?;
        self.generation = Some(generation);
        Ok(true)
    }

    pub fn rules_for(&self, event_type: &str) -> RuleSet {
        self.by_type
            .get(event_type)
            .cloned()
            .unwrap_or_else(|| self.empty.clone())
    }

    /// How this type's events are processed: the defaults with the type's overrides.
    pub fn processing(&self, event_type: &str, defaults: &Processing) -> Processing {
        self.types.processing(event_type, defaults)
    }
}
