//! The at-most-once bookkeeping of actions: `started` records and what earlier attempts did.

use super::dialect::{QueryBuilderExt, RowExt};
use super::Engine;
use crate::model::*;
use crate::worker::merge_prior;
use crate::{ExecutionStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use sluice_core::event::ExecutionResult;
use sqlx::QueryBuilder;
use std::collections::HashMap;

#[async_trait]
impl<E: Engine> ExecutionStore for E {
    async fn record_started(&self, started: &[NewStarted]) -> Result<Vec<i64>, StoreError> {
        if started.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let mut insert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO rule_executions (attempt_id, event_id, rule_id, rule_version_id, result, \
             idempotency_key, executed_at) VALUES ",
        );
        for (i, row) in started.iter().enumerate() {
            if i > 0 {
                insert.push(", ");
            }
            insert
                .push("(")
                .push_value(row.attempt_id)
                .push(", ")
                .push_value(row.event_id)
                .push(", ")
                .push_value(row.rule_id)
                .push(", ")
                .push_value(row.rule_version_id)
                .push(", 'started', ")
                .push_value(row.idempotency_key.clone())
                .push(", ")
                .push_now(now)
                .push(")");
        }
        insert.push(" RETURNING id, attempt_id, idempotency_key");
        let mut conn = self.deliveries().acquire().await?;
        // RETURNING promises no order: rows are matched by attempt and key (unique per attempt).
        let mut ids = HashMap::with_capacity(started.len());
        for row in insert.fetch_all(&mut conn).await? {
            let key: String = row.value("idempotency_key")?;
            let attempt_id: i64 = row.value("attempt_id")?;
            ids.insert((attempt_id, key), row.value::<i64>("id")?);
        }
        started
            .iter()
            .map(|row| {
                ids.get(&(row.attempt_id, row.idempotency_key.clone()))
                    .copied()
                    .ok_or_else(|| StoreError::Corrupt("a started record was not written".into()))
            })
            .collect()
    }

    async fn prior_executions(
        &self,
        keys: &[String],
    ) -> Result<HashMap<String, ExecutionResult>, StoreError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT idempotency_key, result FROM rule_executions \
             WHERE result IN ('applied', 'started') AND ",
        );
        query.push_in_texts("idempotency_key", keys);
        // Read where `started` rows are written: one written moments ago must be seen.
        let mut conn = self.deliveries().acquire().await?;
        let pairs = query
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|row| Ok((row.value("idempotency_key")?, row.value("result")?)))
            .collect::<Result<Vec<(String, String)>, StoreError>>()?;
        Ok(merge_prior(pairs))
    }
}
