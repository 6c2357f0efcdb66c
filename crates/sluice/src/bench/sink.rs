//! A webhook receiver for benchmarks: answers 200 to everything and counts.

use axum::routing::any;
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Sink {
    pub url: String,
    received: Arc<AtomicU64>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Sink> {
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        let app = Router::new().fallback(any(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink { url, received })
    }

    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}
