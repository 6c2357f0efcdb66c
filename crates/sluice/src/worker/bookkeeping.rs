//! Each delivery's bookkeeping, batched: the dedupe lookup of an at-most-once action and its
//! `started` record are asked for one delivery at a time, but written together with those
//! of the other deliveries asking meanwhile — one statement (and one commit) for many, the
//! way ingest's group commit does it. At a thousand deliveries a second, one statement per
//! delivery and per step was most of what the database did.

use sluice_core::event::ExecutionResult;
use sluice_store::{NewStarted, Store, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// At most this many deliveries share a statement.
const MAX_BATCH: usize = 128;
/// Writers per kind: while one waits for its statement, the next batch gathers and goes.
const WRITERS: usize = 2;

/// Why bookkeeping failed: the store's error, as text (one failed statement answers every
/// delivery in it).
pub type Failed = String;

type Answer<T> = oneshot::Sender<Result<T, Failed>>;
/// Requests waiting for a writer, shared by the writers of one kind.
type Queue<R, T> = Arc<Mutex<mpsc::Receiver<(R, Answer<T>)>>>;

#[derive(Clone)]
pub struct Bookkeeping {
    lookups: mpsc::Sender<(String, Answer<Option<ExecutionResult>>)>,
    starts: mpsc::Sender<(NewStarted, Answer<i64>)>,
}

impl Bookkeeping {
    /// Starts the writers; they stop when every handle is dropped.
    pub fn start(store: Arc<dyn Store>) -> Bookkeeping {
        let (lookups, lookup_queue) = mpsc::channel(1024);
        let (starts, start_queue) = mpsc::channel(1024);
        let lookup_queue = Arc::new(Mutex::new(lookup_queue));
        let start_queue = Arc::new(Mutex::new(start_queue));
        for _ in 0..WRITERS {
            tokio::spawn(look_up(store.clone(), lookup_queue.clone()));
            tokio::spawn(record(store.clone(), start_queue.clone()));
        }
        Bookkeeping { lookups, starts }
    }

    /// What earlier attempts did with this idempotency key (see `Store::prior_executions`).
    pub async fn prior(&self, key: String) -> Result<Option<ExecutionResult>, Failed> {
        let (answer, answered) = oneshot::channel();
        self.lookups
            .send((key, answer))
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// Durably records the action as started; its row's id.
    pub async fn started(&self, started: NewStarted) -> Result<i64, Failed> {
        let (answer, answered) = oneshot::channel();
        self.starts
            .send((started, answer))
            .await
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Failed {
    "the worker's bookkeeping stopped".to_owned()
}

/// Takes what is queued (waiting for the first), up to [`MAX_BATCH`].
async fn next_batch<T>(queue: &Mutex<mpsc::Receiver<T>>) -> Option<Vec<T>> {
    let mut queue = queue.lock().await;
    let first = queue.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn look_up(store: Arc<dyn Store>, queue: Queue<String, Option<ExecutionResult>>) {
    while let Some(batch) = next_batch(&queue).await {
        let keys: Vec<String> = batch.iter().map(|(key, _)| key.clone()).collect();
        match store.prior_executions(&keys).await {
            Ok(prior) => {
                for (key, answer) in batch {
                    let _ = answer.send(Ok(prior.get(&key).copied()));
                }
            }
            Err(error) => answer_all(batch, &error),
        }
    }
}

async fn record(store: Arc<dyn Store>, queue: Queue<NewStarted, i64>) {
    while let Some(batch) = next_batch(&queue).await {
        let rows: Vec<NewStarted> = batch.iter().map(|(row, _)| row.clone()).collect();
        match store.record_started(&rows).await {
            Ok(ids) => {
                let ids: HashMap<usize, i64> = ids.into_iter().enumerate().collect();
                for (i, (_, answer)) in batch.into_iter().enumerate() {
                    let result = ids
                        .get(&i)
                        .copied()
                        .ok_or_else(|| "a started record is missing".to_owned());
                    let _ = answer.send(result);
                }
            }
            Err(error) => answer_all(batch, &error),
        }
    }
}

/// One failed statement fails every delivery in it, each with the same error.
fn answer_all<R, T>(batch: Vec<(R, Answer<T>)>, error: &StoreError) {
    let text = error.to_string();
    for (_, answer) in batch {
        let _ = answer.send(Err(text.clone()));
    }
}
