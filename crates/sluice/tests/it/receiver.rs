//! A webhook receiver for tests: records every request and answers with a fixed status,
//! optionally after a delay.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;
use axum::Router;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub headers: HeaderMap,
    pub raw: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.raw).expect("JSON body")
    }
}

#[derive(Clone)]
struct Behaviour {
    status: u16,
    delay: Duration,
    seen: Arc<Mutex<Vec<Received>>>,
}

pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    pub async fn start(status: u16, delay_ms: u64) -> Receiver {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let behaviour = Behaviour {
            status,
            delay: Duration::from_millis(delay_ms),
            seen: seen.clone(),
        };
        let app = Router::new()
            .route("/{*path}", any(record))
            .route("/", any(record))
            .with_state(behaviour);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}"),
            seen,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn record(
    State(behaviour): State<Behaviour>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    behaviour.seen.lock().unwrap().push(Received {
        method: method.to_string(),
        headers,
        raw: body,
    });
    tokio::time::sleep(behaviour.delay).await;
    StatusCode::from_u16(behaviour.status).unwrap()
}
