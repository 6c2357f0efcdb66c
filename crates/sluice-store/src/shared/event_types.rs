//! Event types: their settings and schemas.

use super::dialect::{Dialect, QueryBuilderExt, RowExt};
use super::rows::*;
use super::rules::bump_generation;
use super::Engine;
use crate::model::*;
use crate::{EventTypeStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use serde_json::Value;
use sqlx::QueryBuilder;

#[async_trait]
impl<E: Engine> EventTypeStore for E {
    async fn event_types(&self) -> Result<Vec<EventTypeRecord>, StoreError> {
        let mut conn = self.writes().acquire().await?;
        let mut configured = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {EVENT_TYPE_COLUMNS} FROM event_types"
        ));
        let mut by_name: std::collections::BTreeMap<String, EventTypeRecord> = configured
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|row| event_type_from_row(row).map(|t| (t.event_type.clone(), t)))
            .collect::<Result<_, _>>()?;
        // From the kept counts: a sum over a few rows per type, not a count of the history.
        let mut counts = QueryBuilder::<E::Dialect>::new(
            "SELECT type AS event_type, CAST(SUM(n) AS BIGINT) AS n FROM (\
                SELECT type, n FROM event_counts \
                UNION ALL SELECT type, n FROM event_count_changes) counted \
             GROUP BY type HAVING SUM(n) <> 0 \
             UNION ALL SELECT DISTINCT event_type, 0 AS n FROM rules",
        );
        for row in counts.fetch_all(&mut conn).await? {
            let name: String = row.value("event_type")?;
            let n: i64 = row.value("n")?;
            by_name
                .entry(name.clone())
                .or_insert_with(|| seen_event_type(name))
                .events_total += n;
        }
        Ok(by_name.into_values().collect())
    }

    async fn event_type(&self, event_type: &str) -> Result<Option<EventTypeRecord>, StoreError> {
        let mut conn = self.writes().acquire().await?;
        fetch_event_type::<E::Dialect>(&mut conn, event_type).await
    }

    async fn update_event_type(
        &self,
        event_type: &str,
        changes: &EventTypeChanges,
    ) -> Result<EventTypeRecord, StoreError> {
        let now = Utc::now();
        let schema_text = |schema: &Option<Value>| schema.as_ref().map(Value::to_string);
        let backoff_text = |backoff: &Option<Vec<i64>>| {
            backoff.as_ref().map(|b| Value::from(b.clone()).to_string())
        };
        let mut upsert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO event_types (event_type, description, data_schema, \
             processing_timeout_ms, max_attempts, retry_backoff_ms, max_wait_ms, created_at, \
             updated_at, updated_by) VALUES (",
        );
        upsert
            .push_value(event_type.to_owned())
            .push(", ")
            .push_value(changes.description.clone().flatten())
            .push(", ")
            .push_value(changes.schema.as_ref().and_then(schema_text))
            .push(", ")
            .push_value(changes.processing_timeout_ms.flatten())
            .push(", ")
            .push_value(changes.max_attempts.flatten())
            .push(", ")
            .push_value(changes.retry_backoff_ms.as_ref().and_then(backoff_text))
            .push(", ")
            .push_value(changes.max_wait_ms.flatten())
            .push(", ")
            .push_timestamp(now)
            .push(", ")
            .push_timestamp(now)
            .push(", ")
            .push_value(changes.updated_by.clone())
            .push(
                ") ON CONFLICT (event_type) DO UPDATE SET updated_at = excluded.updated_at, \
                 updated_by = excluded.updated_by",
            );
        // Only the fields the change names are overwritten; the others keep their values.
        let named = [
            ("description", changes.description.is_some()),
            ("data_schema", changes.schema.is_some()),
            (
                "processing_timeout_ms",
                changes.processing_timeout_ms.is_some(),
            ),
            ("max_attempts", changes.max_attempts.is_some()),
            ("retry_backoff_ms", changes.retry_backoff_ms.is_some()),
            ("max_wait_ms", changes.max_wait_ms.is_some()),
        ];
        for (column, _) in named.iter().filter(|(_, named)| *named) {
            upsert.push(format!(", {column} = excluded.{column}"));
        }
        let mut tx = self.writes().begin().await?;
        upsert.execute(&mut tx).await?;
        bump_generation::<E::Dialect>(&mut tx).await?;
        let record = fetch_event_type::<E::Dialect>(&mut tx, event_type).await?;
        tx.commit().await?;
        record.ok_or_else(|| StoreError::Corrupt(format!("event type '{event_type}' vanished")))
    }

    async fn event_type_settings(&self) -> Result<Vec<(String, EventTypeSettings)>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {EVENT_TYPE_COLUMNS} FROM event_types ORDER BY event_type"
        ));
        let mut conn = self.writes().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter()
            .map(|row| event_type_from_row(row).map(|t| (t.event_type, t.settings)))
            .collect()
    }
}

/// One event type: its settings if configured, its event count, whether it has rules;
/// `None` when it is none of these.
pub(super) async fn fetch_event_type<D: Dialect>(
    conn: &mut D::Connection,
    event_type: &str,
) -> Result<Option<EventTypeRecord>, StoreError> {
    let mut configured = QueryBuilder::<D>::new(format!(
        "SELECT {EVENT_TYPE_COLUMNS} FROM event_types WHERE event_type = "
    ));
    configured.push_value(event_type.to_owned());
    let row = configured.fetch_optional(&mut *conn).await?;
    let mut record = match row.as_ref().map(event_type_from_row).transpose()? {
        Some(record) => record,
        None => seen_event_type(event_type.to_owned()),
    };
    let mut counts = QueryBuilder::<D>::new(
        "SELECT (SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM (\
            SELECT n FROM event_counts WHERE type = ",
    );
    counts
        .push_value(event_type.to_owned())
        .push(" UNION ALL SELECT n FROM event_count_changes WHERE type = ")
        .push_value(event_type.to_owned())
        .push(") counted) AS n, (SELECT COUNT(*) FROM rules WHERE event_type = ")
        .push_value(event_type.to_owned())
        .push(") AS rules");
    let row = counts.fetch_one(&mut *conn).await?;
    record.events_total = row.value("n")?;
    let rules: i64 = row.value("rules")?;
    Ok((record.configured || record.events_total > 0 || rules > 0).then_some(record))
}

/// A type known only from its events or rules: every setting at the default.
pub(super) fn seen_event_type(event_type: String) -> EventTypeRecord {
    EventTypeRecord {
        event_type,
        settings: EventTypeSettings::default(),
        configured: false,
        events_total: 0,
        updated_at: None,
        updated_by: None,
    }
}
