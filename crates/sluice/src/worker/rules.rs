//! The worker's rule cache: active rules compiled once, grouped by event type, reloaded only
//! when the store's rule generation moves (one cheap read before each claim).

use sluice_core::logic::Limits;
use sluice_core::rule::RuleBody;
use sluice_store::{RuleSnapshot, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// A rule version ready to run. A stored version that no longer compiles (say, after limits
/// were lowered) is kept with its error, so its executions fail visibly instead of vanishing.
#[derive(Debug)]
pub struct CompiledRule {
    pub rule_id: i64,
    pub rule_name: String,
    pub version_id: i64,
    pub version: i64,
    pub body: Result<RuleBody, String>,
}

impl CompiledRule {
    pub fn compile(snapshot: &RuleSnapshot, limits: &Limits) -> Self {
        let body = RuleBody::parse(
            &snapshot.version.condition,
            &snapshot.version.action,
            limits,
        )
        .map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!(
                "stored rule version no longer compiles: {}",
                text.join("; ")
            )
        });
        CompiledRule {
            rule_id: snapshot.rule_id,
            rule_name: snapshot.rule_name.clone(),
            version_id: snapshot.version.id,
            version: snapshot.version.version,
            body,
        }
    }
}

pub type RuleSet = Arc<Vec<Arc<CompiledRule>>>;

#[derive(Default)]
pub struct RuleCache {
    generation: Option<i64>,
    by_type: HashMap<String, RuleSet>,
    empty: RuleSet,
}

impl RuleCache {
    /// Reloads when a rule changed since the last load. Returns whether it reloaded.
    pub async fn refresh(
        &mut self,
        store: &dyn Store,
        limits: &Limits,
    ) -> Result<bool, StoreError> {
        let generation = store.rule_generation().await?;
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
        self.generation = Some(generation);
        Ok(true)
    }

    pub fn rules_for(&self, event_type: &str) -> RuleSet {
        self.by_type
            .get(event_type)
            .cloned()
            .unwrap_or_else(|| self.empty.clone())
    }
}
