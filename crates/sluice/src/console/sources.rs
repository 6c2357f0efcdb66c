//! The Sources page: every source — an inbound webhook endpoint or a broker queue — with
//! where it takes events, how it checks them, and what came through it: events accepted,
//! requests or messages refused, and why the latest one was. Sources are configured through
//! the API (`PUT /sources/{name}`); secrets are never shown.

use super::view::When;
use super::{render, ConsoleResult, Layout, Section, Viewer};
use crate::operations::sources::{self as source_ops, SourceOut};
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;

pub struct SourceRow {
    pub name: String,
    pub kind: String,
    /// The path a webhook source takes requests on, or the broker and its queue or stream.
    pub from: String,
    /// How requests are verified (`—` for a broker).
    pub check: String,
    pub accepted: i64,
    pub rejected: i64,
    pub last_rejection: Option<String>,
    pub last_rejected: Option<When>,
    /// A broker source's connection: `None` for a webhook source or one that connects.
    pub last_error: Option<String>,
    pub last_error_at: Option<When>,
}

impl SourceRow {
    fn new(s: SourceOut, now: chrono::DateTime<Utc>) -> Self {
        let text = |key: &str| s.config[key].as_str().unwrap_or_default().to_owned();
        let from = match s.kind.as_str() {
            "nats" => format!("{} stream {}", text("url"), text("stream")),
            "rabbitmq" => format!("{} queue {}", text("url"), text("queue")),
            _ => s.receive_path.clone().unwrap_or_default(),
        };
        let check = s.config["verify"]["scheme"]
            .as_str()
            .unwrap_or("—")
            .to_owned();
        SourceRow {
            from,
            check,
            accepted: s.accepted,
            rejected: s.rejected,
            last_rejected: When::maybe(s.last_rejected_at, now),
            last_rejection: s.last_rejection,
            last_error_at: When::maybe(s.last_error_at, now),
            last_error: s.last_error,
            kind: s.kind,
            name: s.name,
        }
    }
}

#[derive(Template)]
#[template(path = "console/sources.html")]
struct SourcesPage {
    layout: Layout,
    rows: Vec<SourceRow>,
}

/// `GET /console/sources`.
pub async fn list(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult<Response> {
    let now = Utc::now();
    let page = SourcesPage {
        layout: Layout::new("Sources", Section::Sources, &viewer),
        rows: source_ops::list(&state)
            .await?
            .data
            .into_iter()
            .map(|s| SourceRow::new(s, now))
            .collect(),
    };
    Ok(render(StatusCode::OK, &page))
}
