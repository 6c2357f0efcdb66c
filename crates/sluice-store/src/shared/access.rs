//! Access control: API keys and console sessions.

use super::dialect::{QueryBuilderExt, RowExt};
use super::rows::*;
use super::Engine;
use crate::model::*;
use crate::{AccessStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::QueryBuilder;

#[async_trait]
impl<E: Engine> AccessStore for E {
    async fn create_api_key(&self, key: &NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        let mut insert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO api_keys (name, prefix, key_hash, scopes, created_at) VALUES (",
        );
        insert
            .push_value(key.name.clone())
            .push(", ")
            .push_value(key.prefix.clone())
            .push(", ")
            .push_value(key.key_hash.clone())
            .push(", ")
            .push_value(key.scopes.join(","))
            .push(", ")
            .push_now(Utc::now())
            .push(format!(") RETURNING {API_KEY_COLUMNS}"));
        let mut conn = self.writes().acquire().await?;
        api_key_from_row(&insert.fetch_one(&mut conn).await?)
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id DESC"
        ));
        // From the writer: a key created or revoked a moment ago must be seen.
        let mut conn = self.writes().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(&self, id: i64) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut tx = self.writes().begin().await?;
        let mut revoke = QueryBuilder::<E::Dialect>::new("UPDATE api_keys SET revoked_at = ");
        revoke
            .push_now(Utc::now())
            .push(" WHERE revoked_at IS NULL AND id = ")
            .push_value(id);
        revoke.execute(&mut tx).await?;
        let mut end =
            QueryBuilder::<E::Dialect>::new("DELETE FROM console_sessions WHERE api_key_id = ");
        end.push_value(id);
        end.execute(&mut tx).await?;
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = "
        ));
        query.push_value(id);
        let row = query.fetch_optional(&mut tx).await?;
        tx.commit().await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn record_key_use(&self, uses: &[(i64, Timestamp)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.writes().begin().await?;
        // A handful of keys a few times a minute: one small statement each is plenty.
        for (id, at) in uses {
            let mut update = QueryBuilder::<E::Dialect>::new("UPDATE api_keys SET last_used_at = ");
            update
                .push_timestamp(*at)
                .push(" WHERE id = ")
                .push_value(*id)
                .push(" AND (last_used_at IS NULL OR last_used_at < ")
                .push_timestamp(*at)
                .push(")");
            update.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn create_console_session(
        &self,
        token_hash: &str,
        api_key_id: i64,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut tx = self.writes().begin().await?;
        let mut expired =
            QueryBuilder::<E::Dialect>::new("DELETE FROM console_sessions WHERE expires_at < ");
        expired.push_now(now);
        expired.execute(&mut tx).await?;
        let mut insert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO console_sessions (token_hash, api_key_id, created_at, expires_at) VALUES (",
        );
        insert
            .push_value(token_hash.to_owned())
            .push(", ")
            .push_value(api_key_id)
            .push(", ")
            .push_now(now)
            .push(", ")
            .push_timestamp(expires_at)
            .push(")");
        insert.execute(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn console_session(&self, token_hash: &str) -> Result<Option<i64>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT api_key_id FROM console_sessions WHERE token_hash = ",
        );
        query
            .push_value(token_hash.to_owned())
            .push(" AND expires_at > ")
            .push_now(Utc::now());
        let mut conn = self.writes().acquire().await?;
        query
            .fetch_optional(&mut conn)
            .await?
            .map(|row| row.value("api_key_id"))
            .transpose()
    }

    async fn end_console_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let mut query =
            QueryBuilder::<E::Dialect>::new("DELETE FROM console_sessions WHERE token_hash = ");
        query.push_value(token_hash.to_owned());
        let mut conn = self.writes().acquire().await?;
        query.execute(&mut conn).await?;
        Ok(())
    }
}
