//! Rules and their versions.

use super::dialect::{Dialect, QueryBuilderExt, RowExt};
use super::rows::*;
use super::Engine;
use crate::model::*;
use crate::worker::snapshot;
use crate::{RuleStore, StoreError};
use async_trait::async_trait;
use chrono::Utc;
use sqlx::types::Json;
use sqlx::QueryBuilder;

#[async_trait]
impl<E: Engine> RuleStore for E {
    async fn create_rule(&self, rule: &NewRuleRecord) -> Result<Rule, StoreError> {
        let now = Utc::now();
        let mut tx = self.writes().begin().await?;
        let mut insert = QueryBuilder::<E::Dialect>::new(
            "INSERT INTO rules (name, event_type, active, created_at, updated_at) VALUES (",
        );
        insert
            .push_value(rule.name.clone())
            .push(", ")
            .push_value(rule.event_type.clone())
            .push(", ")
            .push_value(rule.active)
            .push(", ")
            .push_now(now)
            .push(", ")
            .push_now(now)
            .push(") RETURNING id");
        let rule_id: i64 = insert.fetch_one(&mut tx).await?.value("id")?;
        let content = VersionContent {
            condition: rule.condition.clone(),
            action: rule.action.clone(),
            action_hash: rule.action_hash.clone(),
            created_by: rule.created_by.clone(),
        };
        let version_id = insert_version::<E::Dialect>(&mut tx, rule_id, 1, &content, now).await?;
        let mut update = QueryBuilder::<E::Dialect>::new("UPDATE rules SET current_version_id = ");
        update
            .push_value(version_id)
            .push(" WHERE id = ")
            .push_value(rule_id);
        update.execute(&mut tx).await?;
        bump_generation::<E::Dialect>(&mut tx).await?;
        let created = fetch_rule::<E::Dialect>(&mut tx, rule_id).await?;
        tx.commit().await?;
        created.ok_or_else(|| StoreError::Corrupt(format!("rule {rule_id} vanished")))
    }

    async fn get_rule(&self, id: i64) -> Result<Option<Rule>, StoreError> {
        let mut conn = self.reads().acquire().await?;
        fetch_rule::<E::Dialect>(&mut conn, id).await
    }

    async fn list_rules(&self, filter: &RuleFilter, page: Page) -> Result<Vec<Rule>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!("{RULE_SELECT} WHERE TRUE"));
        if let Some(active) = filter.active {
            query.push(" AND r.active = ").push_value(active);
        }
        if let Some(event_type) = &filter.event_type {
            query
                .push(" AND r.event_type = ")
                .push_value(event_type.clone());
        }
        if let Some(before) = filter.before_id {
            query.push(" AND r.id < ").push_value(before);
        }
        query
            .push(" ORDER BY r.id DESC LIMIT ")
            .push_value(page.limit)
            .push(" OFFSET ")
            .push_value(page.offset);
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn update_rule(
        &self,
        id: i64,
        changes: &RuleChanges,
    ) -> Result<Option<Rule>, StoreError> {
        let now = Utc::now();
        let mut tx = self.writes().begin().await?;
        // Lock the rule so concurrent updates number their versions one after another.
        let mut lock = QueryBuilder::<E::Dialect>::new("SELECT id FROM rules WHERE id = ");
        lock.push_value(id).push(E::Dialect::FOR_UPDATE);
        if lock.fetch_optional(&mut tx).await?.is_none() {
            return Ok(None);
        }
        let mut version_id: Option<i64> = None;
        if let Some(content) = &changes.new_version {
            let mut next = QueryBuilder::<E::Dialect>::new(
                "SELECT COALESCE(max(version), 0) + 1 AS next FROM rule_versions WHERE rule_id = ",
            );
            next.push_value(id);
            let next: i64 = next.fetch_one(&mut tx).await?.value("next")?;
            version_id = Some(insert_version::<E::Dialect>(&mut tx, id, next, content, now).await?);
        }
        let mut update = QueryBuilder::<E::Dialect>::new("UPDATE rules SET name = COALESCE(");
        update
            .push_value(changes.name.clone())
            .push(", name), event_type = COALESCE(")
            .push_value(changes.event_type.clone())
            .push(", event_type), active = COALESCE(")
            .push_value(changes.active)
            .push(", active), current_version_id = COALESCE(")
            .push_value(version_id)
            .push(", current_version_id), updated_at = ")
            .push_now(now)
            .push(" WHERE id = ")
            .push_value(id);
        update.execute(&mut tx).await?;
        bump_generation::<E::Dialect>(&mut tx).await?;
        let updated = fetch_rule::<E::Dialect>(&mut tx, id).await?;
        tx.commit().await?;
        Ok(updated)
    }

    async fn list_rule_versions(&self, rule_id: i64) -> Result<Vec<RuleVersion>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(format!(
            "SELECT {VERSION_COLUMNS} FROM rule_versions WHERE rule_id = "
        ));
        query.push_value(rule_id).push(" ORDER BY version DESC");
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter().map(version_from_row).collect()
    }

    async fn rule_generation(&self) -> Result<i64, StoreError> {
        let mut query =
            QueryBuilder::<E::Dialect>::new("SELECT generation FROM rule_generation WHERE id = 1");
        let mut conn = self.reads().acquire().await?;
        query.fetch_one(&mut conn).await?.value("generation")
    }

    async fn active_rules(&self) -> Result<Vec<RuleSnapshot>, StoreError> {
        let mut query =
            QueryBuilder::<E::Dialect>::new(format!("{RULE_SELECT} WHERE r.active ORDER BY r.id"));
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter()
            .map(|row| rule_from_row(row).map(snapshot))
            .collect()
    }

    async fn original_rules(&self, event_id: i64) -> Result<Vec<RuleSnapshot>, StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT r.id AS rule_id, r.name, r.event_type, v.id AS v_id, v.rule_id AS v_rule_id, \
                    v.version AS v_version, v.condition AS v_condition, v.action AS v_action, \
                    v.action_hash AS v_action_hash, v.created_at AS v_created_at, \
                    v.created_by AS v_created_by \
             FROM rule_versions v JOIN rules r ON r.id = v.rule_id \
             WHERE v.id IN ( \
                SELECT x.rule_version_id FROM rule_executions x \
                JOIN event_attempts a ON a.id = x.attempt_id \
                WHERE a.event_id = ",
        );
        query
            .push_value(event_id)
            .push(
                " AND a.attempt_no = ( \
                    SELECT min(a2.attempt_no) FROM event_attempts a2 \
                    JOIN rule_executions x2 ON x2.attempt_id = a2.id WHERE a2.event_id = ",
            )
            .push_value(event_id)
            .push(")) ORDER BY r.id");
        let mut conn = self.reads().acquire().await?;
        let rows = query.fetch_all(&mut conn).await?;
        rows.iter()
            .map(|row| {
                Ok(RuleSnapshot {
                    rule_id: row.value("rule_id")?,
                    rule_name: row.value("name")?,
                    event_type: row.value("event_type")?,
                    version: version_from_row(row)?,
                })
            })
            .collect()
    }
}

pub(super) async fn insert_version<D: Dialect>(
    conn: &mut D::Connection,
    rule_id: i64,
    version: i64,
    content: &VersionContent,
    now: chrono::DateTime<Utc>,
) -> Result<i64, StoreError> {
    let mut insert = QueryBuilder::<D>::new(
        "INSERT INTO rule_versions \
         (rule_id, version, condition, action, action_hash, created_at, created_by) VALUES (",
    );
    insert
        .push_value(rule_id)
        .push(", ")
        .push_value(version)
        .push(", ")
        .push_value(Json(content.condition.clone()))
        .push(", ")
        .push_value(Json(content.action.clone()))
        .push(", ")
        .push_value(content.action_hash.clone())
        .push(", ")
        .push_now(now)
        .push(", ")
        .push_value(content.created_by.clone())
        .push(") RETURNING id");
    insert.fetch_one(conn).await?.value("id")
}

pub(super) async fn bump_generation<D: Dialect>(
    conn: &mut D::Connection,
) -> Result<(), StoreError> {
    QueryBuilder::<D>::new("UPDATE rule_generation SET generation = generation + 1 WHERE id = 1")
        .execute(conn)
        .await?;
    Ok(())
}

pub(super) async fn fetch_rule<D: Dialect>(
    conn: &mut D::Connection,
    id: i64,
) -> Result<Option<Rule>, StoreError> {
    let mut query = QueryBuilder::<D>::new(format!("{RULE_SELECT} WHERE r.id = "));
    query.push_value(id);
    let row = query.fetch_optional(conn).await?;
    row.as_ref().map(rule_from_row).transpose()
}
