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
    /// When the request arrived.
    pub at: std::time::Instant,
    pub method: String,
    /// The path and query it was sent to.
    pub path: String,
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
    /// The status to answer and how long to wait first; changeable while it runs.
    answer: Arc<Mutex<(u16, Duration)>>,
    /// Headers sent with every answer (e.g. `Retry-After`); changeable while it runs.
    headers: Arc<Mutex<Vec<(String, String)>>>,
    seen: Arc<Mutex<Vec<Received>>>,
}

pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<(u16, Duration)>>,
    headers: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    pub async fn start(status: u16, delay_ms: u64) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, status, delay_ms)
    }

    /// A receiver on `addr`, e.g. one that refused connections until now.
    pub async fn start_on(addr: std::net::SocketAddr, status: u16, delay_ms: u64) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, status, delay_ms)
    }

    /// An address where nothing listens: connections to it are refused.
    pub async fn refusing() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    fn serve(listener: tokio::net::TcpListener, status: u16, delay_ms: u64) -> Receiver {
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer = Arc::new(Mutex::new((status, Duration::from_millis(delay_ms))));
        let headers: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let behaviour = Behaviour {
            answer: answer.clone(),
            headers: headers.clone(),
            seen: seen.clone(),
        };
        let app = Router::new()
            .route("/{*path}", any(record))
            .route("/", any(record))
            .with_state(behaviour);
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}"),
            seen,
            answer,
            headers,
        }
    }

    /// From now on answer `status` with these headers, at once.
    pub fn answer_with(&self, status: u16, headers: &[(&str, &str)]) {
        *self.headers.lock().unwrap() = headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        self.answer(status, 0);
    }

    /// From now on answer `status` after `delay_ms` (requests already waiting keep theirs).
    pub fn answer(&self, status: u16, delay_ms: u64) {
        *self.answer.lock().unwrap() = (status, Duration::from_millis(delay_ms));
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
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    behaviour.seen.lock().unwrap().push(Received {
        at: std::time::Instant::now(),
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers,
        raw: body,
    });
    let (status, delay) = *behaviour.answer.lock().unwrap();
    let mut answer_headers = HeaderMap::new();
    for (name, value) in behaviour.headers.lock().unwrap().iter() {
        answer_headers.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), answer_headers)
}
