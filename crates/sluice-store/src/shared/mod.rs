//! The [`Store`] implementation both backends share, one file per concern. A backend
//! implements [`Engine`] (its pools, its migrations, its ingest statement) and the concerns
//! that differ in substance — the worker's queue, upkeep, signals — and gets events,
//! listings, stats, rules, event types, replay, targets, access and the at-most-once
//! bookkeeping from here, written once against its [`Dialect`].

pub(crate) mod access;
pub(crate) mod dialect;
pub(crate) mod event_types;
pub(crate) mod events;
pub(crate) mod executions;
pub(crate) mod replay;
pub(crate) mod rows;
pub(crate) mod rules;
pub(crate) mod sources;
pub(crate) mod stats;
pub(crate) mod targets;

use crate::ingest::UpsertRow;
use crate::model::*;
use crate::{Backend, QueueStore, SignalStore, Store, StoreError, UpkeepStore};
use async_trait::async_trait;
use dialect::{Dialect, QueryBuilderExt, RowExt};
use sqlx::migrate::Migrator;
use sqlx::{Pool, QueryBuilder};
use std::collections::HashMap;

/// What the shared code needs from a backend: its pools, its migrations and its ingest
/// statement. A backend implements [`QueueStore`], [`UpkeepStore`] and [`SignalStore`]
/// itself; with those, every [`Engine`] is a [`Store`].
#[async_trait]
pub(crate) trait Engine:
    QueueStore + UpkeepStore + SignalStore + Send + Sync + 'static
{
    type Dialect: Dialect;
    const BACKEND: Backend;

    fn migrator() -> &'static Migrator;
    /// Where reads go.
    fn reads(&self) -> &Pool<Self::Dialect>;
    /// Where writes go, and reads that must see the latest writes.
    fn writes(&self) -> &Pool<Self::Dialect>;
    /// Where reads go that look up the queue's leased rows, which must take the queue's
    /// indexes whatever the planner's statistics say (a queue filled since its last
    /// `ANALYZE` looks half leased, and a sequential scan of a backlog costs milliseconds).
    fn queue_reads(&self) -> &Pool<Self::Dialect> {
        self.reads()
    }
    /// Where the statements of each delivery go (its dedupe lookup, its `started` record,
    /// releases of waiting events): they must find rows by index in a history of millions
    /// whatever the planner's statistics say.
    fn deliveries(&self) -> &Pool<Self::Dialect> {
        self.writes()
    }

    /// The most rows [`Engine::upsert_round`] writes in one statement.
    const UPSERT_ROWS_PER_STATEMENT: usize;
    /// One round of a batched ingest (planned in `crate::ingest`): the multi-row upsert of
    /// `rows`, new events entering the queue in the same statement; the rows that came back,
    /// by external id (a row whose id is stored with another payload does not come back).
    async fn upsert_round(
        conn: &mut <Self::Dialect as sqlx::Database>::Connection,
        rows: &[UpsertRow<'_>],
    ) -> Result<HashMap<String, EventSummary>, StoreError>;
}

#[async_trait]
impl<E: Engine> Store for E {
    fn backend(&self) -> Backend {
        E::BACKEND
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes a lock (an advisory lock on PostgreSQL), so concurrent starts of several
        // processes are safe.
        E::migrator().run(self.writes()).await?;
        Ok(())
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let mut query = QueryBuilder::<E::Dialect>::new(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        );
        let mut conn = self.reads().acquire().await?;
        let applied = query
            .fetch_all(&mut conn)
            .await?
            .iter()
            .map(|row| row.value("version"))
            .collect::<Result<Vec<i64>, _>>()?;
        check_migrations_current(E::migrator(), &applied)
    }
}

/// Ready means every migration embedded in this binary has been applied.
fn check_migrations_current(migrator: &Migrator, applied: &[i64]) -> Result<(), StoreError> {
    let missing: Vec<i64> = migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Migration(format!(
            "not applied yet: {missing:?} (run `sluice migrate`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_every_embedded_migration_applied() {
        static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
        let all: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert!(check_migrations_current(&MIGRATOR, &all).is_ok());
        assert!(matches!(
            check_migrations_current(&MIGRATOR, &all[..1]),
            Err(StoreError::Migration(_))
        ));
    }
}
