//! One broker connection per URL, shared by a process's deliveries. Each URL has its own
//! slot, so connecting to a broker that does not answer holds up only the deliveries to that
//! broker, never the others.

use super::ActionError;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

type Slot<C> = Arc<tokio::sync::Mutex<Option<C>>>;

pub struct Connections<C> {
    slots: Mutex<HashMap<String, Slot<C>>>,
}

impl<C> Default for Connections<C> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Clone> Connections<C> {
    /// The kept connection to `url` while `usable` says it is, otherwise a new one from
    /// `connect` (kept when it succeeds). Deliveries to one URL wait for one connect.
    pub async fn get<F, Fut>(
        &self,
        url: &str,
        usable: impl Fn(&C) -> bool,
        connect: F,
    ) -> Result<C, ActionError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, ActionError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().expect("the slot map is never poisoned");
            slots.entry(url.to_owned()).or_default().clone()
        };
        let mut kept = slot.lock().await;
        if let Some(connection) = kept.as_ref().filter(|c| usable(c)) {
            return Ok(connection.clone());
        }
        let connection = connect().await?;
        *kept = Some(connection.clone());
        Ok(connection)
    }
}
