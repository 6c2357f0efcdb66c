//! Delivery targets: their circuit breakers, rate limits and totals (`GET /targets`); pausing
//! or resuming one (`POST /targets/pause`, `/targets/resume`) and setting its rate limit
//! (`PUT /targets/{target}`), for the API and the console.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sluice_core::FieldError;
use sluice_store::TargetRecord;
use utoipa::ToSchema;

/// What a target's deliveries do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Deliveries go (up to the in-flight cap).
    Closed,
    /// Too many failures in a row: deliveries wait until a probe at `next_probe_at` works.
    Open,
    /// One probe delivery is trying the target again.
    HalfOpen,
    /// An operator paused it: deliveries wait until it is resumed.
    Paused,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Closed => "closed",
            TargetState::Open => "open",
            TargetState::HalfOpen => "half_open",
            TargetState::Paused => "paused",
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetOut {
    /// `scheme://host:port` of a webhook URL, or `smtp://host:port`.
    pub target: String,
    pub state: TargetState,
    /// Deliveries in flight now, over every worker process.
    pub in_flight: i64,
    /// Events waiting in the queue for this target (its circuit open, paused, or more than
    /// the workers hold in line for it), and since when the oldest of them waits.
    pub waiting: i64,
    pub waiting_since: Option<DateTime<Utc>>,
    /// Failures in a row (timeouts, 5xx, refused connections) since the last success.
    pub recent_failures: i64,
    pub last_error: Option<String>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub opened_at: Option<DateTime<Utc>>,
    /// When an open circuit lets one probe delivery through.
    pub next_probe_at: Option<DateTime<Utc>>,
    pub delivered_total: i64,
    pub failed_total: i64,
    /// Deliveries a second it gets at most, over every worker process (its own limit, else
    /// `TARGET_MAX_PER_SECOND`); `null`: no limit.
    pub max_per_second: Option<f64>,
    /// Whether that limit is the target's own (set by `PUT /targets/{target}`).
    pub own_limit: bool,
    /// The pace it gets now: its limit, or less while a 429 slows it down (halved at each,
    /// recovering by half every 10 s); `null`: no limit.
    pub pace_per_second: Option<f64>,
    /// When it last answered 429.
    pub throttled_at: Option<DateTime<Utc>>,
}

impl TargetOut {
    /// The target as the API shows it; `default_rate` is `TARGET_MAX_PER_SECOND`.
    pub fn new(t: TargetRecord, default_rate: f64, now: DateTime<Utc>) -> Self {
        let limit = t.max_per_second.unwrap_or(default_rate);
        let max_per_second = (limit > 0.0).then_some(limit);
        let slowdown = crate::delivery::slowdown_now(&t, now);
        let pace_per_second = max_per_second.map(|limit| round_rate(limit / slowdown));
        let state = if t.paused {
            TargetState::Paused
        } else {
            match t.state.as_str() {
                "open" => TargetState::Open,
                "half_open" => TargetState::HalfOpen,
                _ => TargetState::Closed,
            }
        };
        TargetOut {
            target: t.target,
            state,
            in_flight: t.in_flight,
            waiting: t.waiting,
            waiting_since: t.waiting_since,
            recent_failures: t.consecutive_failures,
            last_error: t.last_error,
            last_failure_at: t.last_failure_at,
            opened_at: t.opened_at,
            next_probe_at: t.next_probe_at,
            delivered_total: t.delivered_total,
            failed_total: t.failed_total,
            own_limit: t.max_per_second.is_some(),
            max_per_second,
            pace_per_second,
            throttled_at: t.throttled_at,
        }
    }
}

/// A rate to show: three significant decimals are plenty.
fn round_rate(rate: f64) -> f64 {
    (rate * 1000.0).round() / 1000.0
}

/// What `PUT /targets/{target}` changes: fields left out keep their value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetChange {
    /// `Some(None)`: back to `TARGET_MAX_PER_SECOND`; `Some(Some(0.0))`: no limit.
    pub max_per_second: Option<Option<f64>>,
    pub paused: Option<bool>,
}

/// A `PUT /targets/{target}` body: `{"max_per_second": 20, "paused": false}`, either or both.
pub fn parse_change(body: &Value) -> ApiResult<TargetChange> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::invalid(vec![FieldError::new(
            "",
            "body must be a JSON object {\"max_per_second\": 20, \"paused\": false}",
        )]));
    };
    let mut change = TargetChange::default();
    let mut errors = Vec::new();
    for (key, value) in object {
        match key.as_str() {
            "max_per_second" => match value {
                Value::Null => change.max_per_second = Some(None),
                Value::Number(n) => match n.as_f64().map(crate::config::check_rate) {
                    Some(Ok(rate)) => change.max_per_second = Some(Some(rate)),
                    Some(Err(message)) => errors.push(FieldError::new(key.as_str(), message)),
                    None => errors.push(FieldError::new(key.as_str(), "must be a number")),
                },
                _ => errors.push(FieldError::new(
                    key.as_str(),
                    "must be a number of deliveries per second (0: no limit) or null (the \
                     process default, TARGET_MAX_PER_SECOND)",
                )),
            },
            "paused" => match value.as_bool() {
                Some(paused) => change.paused = Some(paused),
                None => errors.push(FieldError::new(key.as_str(), "must be true or false")),
            },
            other => errors.push(FieldError::new(
                other,
                "is not a field here (expected max_per_second, paused)",
            )),
        }
    }
    if errors.is_empty() && change == TargetChange::default() {
        errors.push(FieldError::new(
            "",
            "nothing to change: give max_per_second, paused or both",
        ));
    }
    if errors.is_empty() {
        Ok(change)
    } else {
        Err(ApiError::invalid(errors))
    }
}

/// Applies a [`TargetChange`]; every worker process follows it within a second.
pub async fn change(state: &AppState, target: &str, change: TargetChange) -> ApiResult<TargetOut> {
    let mut record = None;
    if let Some(rate) = change.max_per_second {
        record = Some(state.store.set_target_rate(target, rate).await?);
        tracing::info!(target = %target, max_per_second = ?rate, "target rate limit set");
    }
    if let Some(paused) = change.paused {
        return set_paused(state, target, paused).await;
    }
    match record {
        Some(record) => Ok(out(state, record)),
        None => Err(ApiError::validation(
            "nothing to change: give max_per_second, paused or both",
        )),
    }
}

fn out(state: &AppState, record: TargetRecord) -> TargetOut {
    TargetOut::new(record, state.settings.target_max_per_second, Utc::now())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TargetList {
    pub data: Vec<TargetOut>,
}

/// A target as given (`https://host:443`, or `https://host` for the scheme's port),
/// normalised; a 400 otherwise.
pub fn parse_target(body: &Value) -> ApiResult<String> {
    let invalid = |message: &str| ApiError::invalid(vec![FieldError::new("target", message)]);
    let Some(object) = body.as_object() else {
        return Err(ApiError::invalid(vec![FieldError::new(
            "",
            "body must be a JSON object {\"target\": \"https://host:443\"}",
        )]));
    };
    if let Some(key) = object.keys().find(|k| k.as_str() != "target") {
        return Err(ApiError::invalid(vec![FieldError::new(
            key.as_str(),
            "is not a field here (expected target)",
        )]));
    }
    let Some(text) = object.get("target").and_then(Value::as_str) else {
        return Err(invalid(
            "is required: scheme://host:port, e.g. https://hooks.example.com:443",
        ));
    };
    parse_target_text(text)
}

/// A target as text (the body's `target`, or the path of `PUT /targets/{target}`).
pub fn parse_target_text(text: &str) -> ApiResult<String> {
    let invalid = |message: &str| ApiError::invalid(vec![FieldError::new("target", message)]);
    if text.len() > 300 || text.contains('\0') {
        return Err(invalid("must be scheme://host:port"));
    }
    let url = reqwest::Url::parse(text)
        .map_err(|_| invalid("must be scheme://host:port, e.g. https://hooks.example.com:443"))?;
    let bare = matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    let known = matches!(
        url.scheme(),
        "http"
            | "https"
            | "smtp"
            | "smtps"
            | "nats"
            | "tls"
            | "amqp"
            | "amqps"
            | "redis"
            | "rediss"
    );
    if !known || !bare {
        return Err(invalid(
            "must be scheme://host:port with no path \
             (http, https, smtp, smtps, nats, tls, amqp, amqps, redis or rediss)",
        ));
    }
    crate::actions::target_of(text).ok_or_else(|| invalid("must name a host"))
}

pub async fn list(state: &AppState) -> ApiResult<TargetList> {
    let now = Utc::now();
    let default_rate = state.settings.target_max_per_second;
    Ok(TargetList {
        data: state
            .store
            .targets()
            .await?
            .into_iter()
            .map(|t| TargetOut::new(t, default_rate, now))
            .collect(),
    })
}

/// Sets each target's gauges (state, events waiting and the oldest one's age) from the
/// shared table, so any API process's `/metrics` shows them — worker processes serve none.
pub async fn record_gauges(state: &AppState) {
    match state.store.targets().await {
        Ok(targets) => {
            let now = Utc::now();
            for target in &targets {
                crate::delivery::record_gauges(target, now);
            }
        }
        Err(error) => tracing::warn!(error = %error, "cannot read targets for /metrics"),
    }
}

/// Pauses or resumes a target; every worker process honours it within a second.
pub async fn set_paused(state: &AppState, target: &str, paused: bool) -> ApiResult<TargetOut> {
    let record = state.store.set_target_paused(target, paused).await?;
    if let Some(operational) = &state.operational {
        operational.target_paused(target, paused, Utc::now());
    }
    tracing::info!(target = %target, paused, "target {}", if paused { "paused" } else { "resumed" });
    Ok(out(state, record))
}

#[cfg(test)]
mod tests {
    use super::parse_target;
    use serde_json::json;

    #[test]
    fn targets_are_scheme_host_and_port() {
        let parse = |t: &str| parse_target(&json!({ "target": t })).ok();
        assert_eq!(
            parse("https://Hooks.example.com").as_deref(),
            Some("https://hooks.example.com:443")
        );
        assert_eq!(
            parse("http://127.0.0.1:8080/").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        // Broker connections are targets too, named with the broker's default port.
        assert_eq!(
            parse("nats://127.0.0.1").as_deref(),
            Some("nats://127.0.0.1:4222")
        );
        assert_eq!(
            parse("amqp://mq.example:5672").as_deref(),
            Some("amqp://mq.example:5672")
        );
        assert_eq!(
            parse("rediss://cache.example").as_deref(),
            Some("rediss://cache.example:6379")
        );
        assert_eq!(parse("https://h.example/path"), None);
        assert_eq!(parse("ftp://h.example"), None);
        assert_eq!(parse("https://user:pw@h.example"), None);
        assert!(parse_target(&json!({"target": "https://h", "x": 1})).is_err());
    }
}
