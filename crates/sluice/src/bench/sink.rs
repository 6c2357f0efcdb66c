//! A webhook receiver for benchmarks: answers 200 to everything (after a fixed delay, like a
//! receiver that writes to its own database) and counts.

use axum::routing::any;
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Sink {
    pub url: String,
    received: Arc<AtomicU64>,
    /// When each request arrived, if this sink keeps them.
    arrivals: Option<Arc<std::sync::Mutex<Vec<std::time::Instant>>>>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Sink> {
        Self::start_with_delay(Duration::ZERO).await
    }

    /// A receiver that takes `delay` to answer each request.
    pub async fn start_with_delay(delay: Duration) -> anyhow::Result<Sink> {
        Self::start_on(0, delay).await
    }

    /// Serves on `port` until the process is stopped.
    pub async fn serve_forever(port: u16, delay: Duration) -> anyhow::Result<()> {
        let sink = Self::start_on(port, delay).await?;
        eprintln!("receiver on {}/hook, answering after {delay:?}", sink.url);
        std::future::pending::<()>().await;
        Ok(())
    }

    /// A receiver that answers at once and keeps when each request arrived.
    pub async fn start_recording() -> anyhow::Result<Sink> {
        Self::serve(0, Duration::ZERO, true).await
    }

    async fn start_on(port: u16, delay: Duration) -> anyhow::Result<Sink> {
        Self::serve(port, delay, false).await
    }

    async fn serve(port: u16, delay: Duration, record: bool) -> anyhow::Result<Sink> {
        let received = Arc::new(AtomicU64::new(0));
        let arrivals = record.then(Arc::default);
        let counter = received.clone();
        let times: Option<Arc<std::sync::Mutex<Vec<std::time::Instant>>>> = arrivals.clone();
        let app = Router::new().fallback(any(move || {
            let counter = counter.clone();
            let times = times.clone();
            async move {
                if let Some(times) = &times {
                    times
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(std::time::Instant::now());
                }
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink {
            url,
            received,
            arrivals,
        })
    }

    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// When each request arrived, in order (empty unless started recording).
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        let mut times = self
            .arrivals
            .as_ref()
            .map(|a| a.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default();
        times.sort();
        times
    }
}
