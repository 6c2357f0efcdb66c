//! Sources: their configurations, and what came through each.

use super::dialect::{QueryBuilderExt, RowExt};
use super::Engine;
use crate::model::*;
use crate::{SourceStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::QueryBuilder;

const SOURCE_COLUMNS: &str = "name, kind, config, created_at, updated_at, updated_by, accepted, \
     rejected, last_rejected_at, last_rejection, last_error, last_error_at";

fn source_from_row<R: RowExt>(row: &R) -> Result<SourceRecord, StoreError> {
    let config: String = row.value("config")?;
    Ok(SourceRecord {
        name: row.value("name")?,
        kind: row.value("kind")?,
        config: serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("sources.config: {e}")))?,
        created_at: row.timestamp("created_at")?,
        updated_at: row.timestamp("updated_at")?,
        updated_by: row.value("updated_by")?,
        accepted: row.value("accepted")?,
        rejected: row.value("rejected")?,
        last_rejected_at: row.opt_timestamp("last_rejected_at")?,
        last_rejection: row.value("last_rejection")?,
        last_error: row.value("last_error")?,
        last_error_at: row.opt_timestamp("last_error_at")?,
    })
}

#[async_trait]
impl<E: Engine> SourceStore for E {
    async fn put_source(
        &self,
        name: &str,
        kind: &str,
        config: &serde_json::Value,
        updated_by: Option<&str>,
    ) -> Result<(SourceRecord, bool), StoreError> {
        let now = Utc::now();
        let mut tx = self.writes().begin().await?;
        let mut existing =
            QueryBuilder::<E::Dialect>::new("SELECT COUNT(*) AS n FROM sources WHERE name = ");
        existing.push_value(name.to_owned());
        let created = existing.fetch_one(&mut tx).await?.value::<i64>("n")? == 0;
        let mut upsert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO sources (name, kind, config, created_at, updated_at, updated_by) VALUES (",
        );
        upsert
            .push_value(name.to_owned())
            .push(", ")
            .push_value(kind.to_owned())
            .push(", ")
            .push_value(config.to_string())
            .push(", ")
            .push_timestamp(now)
            .push(", ")
            .push_timestamp(now)
            .push(", ")
            .push_value(updated_by.map(str::to_owned))
            .push(
                ") ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, \
                 config = excluded.config, updated_at = excluded.updated_at, \
                 updated_by = excluded.updated_by",
            );
        upsert.execute(&mut tx).await?;
        let mut read = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {SOURCE_COLUMNS} FROM sources WHERE name = "
        ));
        read.push_value(name.to_owned());
        let record = source_from_row(&read.fetch_one(&mut tx).await?)?;
        tx.commit().await?;
        Ok((record, created))
    }

    async fn sources(&self) -> Result<Vec<SourceRecord>, StoreError> {
        let mut conn = self.reads().acquire().await?;
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {SOURCE_COLUMNS} FROM sources ORDER BY name"
        ));
        query
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(source_from_row)
            .collect()
    }

    async fn source(&self, name: &str) -> Result<Option<SourceRecord>, StoreError> {
        let mut conn = self.writes().acquire().await?;
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {SOURCE_COLUMNS} FROM sources WHERE name = "
        ));
        query.push_value(name.to_owned());
        query
            .fetch_optional(&mut conn)
            .await?
            .as_ref()
            .map(source_from_row)
            .transpose()
    }

    async fn delete_source(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.writes().acquire().await?;
        let mut delete = QueryBuilder::<E::Dialect>::new("DELETE FROM sources WHERE name = ");
        delete.push_value(name.to_owned()).push(" RETURNING name");
        Ok(delete.fetch_optional(&mut conn).await?.is_some())
    }

    async fn record_source_tallies(&self, tallies: &[SourceTally]) -> Result<(), StoreError> {
        if tallies.is_empty() {
            return Ok(());
        }
        let mut tx = self.writes().begin().await?;
        // A few sources once a second per process: one small statement each.
        for tally in tallies {
            let mut update =
                QueryBuilder::<E::Dialect>::new("UPDATE sources SET accepted = accepted + ");
            update
                .push_value(tally.accepted)
                .push(", rejected = rejected + ")
                .push_value(tally.rejected);
            if let Some((at, why)) = &tally.last_rejection {
                update
                    .push(", last_rejected_at = ")
                    .push_timestamp(*at)
                    .push(", last_rejection = ")
                    .push_value(why.clone());
            }
            match &tally.connection {
                None => {}
                Some(ConnectionNews::Connected) => {
                    update.push(", last_error = NULL, last_error_at = NULL");
                }
                Some(ConnectionNews::Failed(at, why)) => {
                    update
                        .push(", last_error = ")
                        .push_value(why.clone())
                        .push(", last_error_at = ")
                        .push_timestamp(*at);
                }
            }
            update.push(" WHERE name = ").push_value(tally.name.clone());
            update.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
