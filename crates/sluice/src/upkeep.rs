//! Housekeeping every process does, whatever its role: folding the database's count changes
//! into the counts stats read (see `Store::compact_counts`), and retention — deleting settled
//! events older than `RETENTION` in small batches (see `Store::delete_settled`; one process at
//! a time, the others find the lock taken and wait for the next round).

use crate::config::Period;
use sluice_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often counts are compacted and retention looks for events past their time.
const EVERY: Duration = Duration::from_secs(1);
/// Events deleted per transaction: short enough that ingest and replays never wait long on
/// it, large enough to keep up with any rate this machine ingests at.
const RETENTION_BATCH: i64 = 1_000;
/// Pause between two full batches, leaving the database to the producers in between.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

pub fn spawn(
    store: Arc<dyn Store>,
    retention: Option<Period>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(error) = store.compact_counts().await {
                tracing::warn!(error = %error, "cannot compact event counts");
            }
            if let Some(retention) = retention {
                apply_retention(store.as_ref(), retention, &stop).await;
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {},
                () = stop.cancelled() => return,
            }
        }
    })
}

/// Deletes batch after batch until no settled event is older than the retention.
async fn apply_retention(store: &dyn Store, retention: Period, stop: &CancellationToken) {
    loop {
        let before = chrono::Utc::now() - retention.0;
        match store.delete_settled(before, RETENTION_BATCH).await {
            Ok(0) => return,
            Ok(deleted) => {
                metrics::counter!("sluice_retention_deleted_total").increment(deleted);
                tracing::debug!(deleted, "retention deleted settled events");
                if deleted < RETENTION_BATCH as u64 {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "retention cannot delete old events");
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(BETWEEN_BATCHES) => {},
            () = stop.cancelled() => return,
        }
    }
}
