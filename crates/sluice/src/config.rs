//! Configuration: every setting is an environment variable (compatible with the names of the
//! Node system sluice replaces) and a flag, read and validated once at start. Invalid configuration stops the process with one line.

use clap::{Args, ValueEnum};
use sluice_core::retry::RetryPolicy;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmailMode {
    Disabled,
    Log,
    Smtp,
}

/// Settings shared by `serve`, `api`, `worker` and `migrate`. Secrets (passwords in
/// `DATABASE_URL` and `SMTP_URL`, `WEBHOOK_SECRET`) are hidden from `--help` and `Debug`.
#[derive(Clone, Args)]
pub struct Settings {
    /// Database: postgres://… or sqlite://path (created if missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://sluice.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// How often an idle worker polls for due events when no wake-up arrives.
    #[arg(long, env = "WORKER_POLL_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub worker_poll_interval_ms: u64,

    /// Longest one processing attempt may take before it is cancelled and retried.
    #[arg(long, env = "PROCESSING_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub processing_timeout_ms: u64,

    /// Default timeout of one webhook request (a rule may set its own, lower or higher).
    #[arg(long, env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub webhook_timeout_ms: u64,

    /// Events processed at once by one worker process.
    #[arg(long, env = "WORKER_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub worker_concurrency: u64,

    /// Attempts before an event is `failed` (including the first).
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// Delays before retries, in milliseconds, comma-separated; the last one repeats.
    #[arg(long, env = "RETRY_BACKOFF_MS", default_value = "1000,5000,30000",
          value_parser = parse_backoff)]
    pub retry_backoff_ms: Backoff,

    /// What `send_email` does: disabled, log, or smtp (needs SMTP_URL).
    #[arg(long, env = "EMAIL_MODE", value_enum, default_value = "log")]
    pub email_mode: EmailMode,

    /// SMTP server for EMAIL_MODE=smtp, e.g. smtp://user:pass@host:587.
    #[arg(long, env = "SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender address of `send_email`.
    #[arg(long, env = "EMAIL_FROM", default_value = "sluice@localhost")]
    pub email_from: String,

    /// Standard Webhooks signing secret (whsec_<base64>); webhooks are unsigned without it.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Allow webhooks to loopback, private and link-local addresses.
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub webhook_allow_private: bool,

    /// Store sluice's own operational events (`sluice.target.opened`, `sluice.target.closed`,
    /// `sluice.target.paused`, `sluice.event.failed`, `sluice.key.revoked`) so rules can
    /// route them.
    #[arg(long, env = "OPERATIONAL_EVENTS", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub operational_events: bool,

    /// Origin allowed by CORS (`*` for any); unset disables CORS headers.
    #[arg(long, env = "CORS_ORIGIN")]
    pub cors_origin: Option<String>,

    /// Log filter, e.g. info or sluice=debug,sqlx=warn.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// json for machines, pretty for humans.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Database connections per process.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// Live `/ws` connections one API process accepts at once; more are refused with 503.
    #[arg(long, env = "WS_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub ws_max_connections: u32,

    /// Seconds a client may take to send a request's headers before it is disconnected.
    #[arg(long, env = "HEADER_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub header_timeout_secs: u64,

    /// Host names (optionally `host:port`) requests may address, comma-separated; `*` allows
    /// any. Default: the loopback names when bound to a loopback address, else any.
    #[arg(long, env = "ALLOWED_HOSTS")]
    pub allowed_hosts: Option<String>,

    /// none: every route open (for a machine of your own); api_key: every route but /health
    /// and /ready needs a key (create one with `sluice keys create`).
    #[arg(long, env = "AUTH", value_enum, default_value = "none")]
    pub auth: crate::auth::AuthMode,

    /// Deliveries one worker process keeps in flight to one target (scheme://host:port of a
    /// webhook; the SMTP server); more wait in line, without holding a worker slot.
    #[arg(long, env = "TARGET_MAX_IN_FLIGHT", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub target_max_in_flight: u32,

    /// Publishes one worker process keeps in flight to one broker (the scheme://host:port of
    /// a `publish_nats`, `publish_rabbitmq` or `publish_redis` URL); more wait in line. A
    /// broker takes publishes pipelined on one connection, so it gets more than a webhook.
    #[arg(long, env = "BROKER_MAX_IN_FLIGHT", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub broker_max_in_flight: u32,

    /// Deliveries per second each target gets at most, over every worker process together
    /// (0: no limit); `PUT /targets/{target}` sets one target's own. Fractions are allowed
    /// (`0.5`: one every two seconds).
    #[arg(long, env = "TARGET_MAX_PER_SECOND", default_value_t = 0.0,
          value_parser = parse_rate)]
    pub target_max_per_second: f64,

    /// Consecutive failures (timeouts, 5xx, refused connections) that open a target's
    /// circuit.
    #[arg(long, env = "TARGET_FAILURE_THRESHOLD", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub target_failure_threshold: u32,

    /// How long an open circuit waits before one probe delivery may try the target again.
    #[arg(long, env = "TARGET_OPEN_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub target_open_ms: u64,

    /// How long an event may wait for a target that is open, paused or crowded before it
    /// fails with that reason (replay it once the receiver is back): `24h`, `90m`, `30s`.
    /// An event type's `max_wait_ms` overrides it.
    #[arg(long, env = "TARGET_MAX_WAIT", default_value = "24h", value_parser = parse_period)]
    pub target_max_wait: Period,

    /// Event types this worker claims, comma-separated globs (`payment.*,order.created`);
    /// unset: every type. A worker pool.
    #[arg(long, env = "WORKER_EVENT_TYPES", value_delimiter = ',')]
    pub event_types: Vec<String>,

    /// Event types this worker leaves to others, comma-separated globs.
    #[arg(long, env = "WORKER_EXCLUDE_EVENT_TYPES", value_delimiter = ',')]
    pub exclude_event_types: Vec<String>,

    /// Delete settled (processed or failed) events, with their attempts and rule executions,
    /// once unchanged for this long: `30d`, `12h`, `90m`, `45s`. Unset: keep them forever.
    /// This is also how long a duplicate id is recognised.
    #[arg(long, env = "RETENTION", value_parser = parse_period)]
    pub retention: Option<Period>,
}

/// A length of time as settings write it (`30d`, `12h`, `90m`, `45s`): RETENTION,
/// TARGET_MAX_WAIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub chrono::Duration);

impl std::fmt::Display for Period {
    /// In the largest unit that divides it: `30 d`, `36 h`, `90 min`, `45 s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.0.num_seconds();
        match secs {
            s if s % 86_400 == 0 => write!(f, "{} d", s / 86_400),
            s if s % 3_600 == 0 => write!(f, "{} h", s / 3_600),
            s if s % 60 == 0 => write!(f, "{} min", s / 60),
            s => write!(f, "{s} s"),
        }
    }
}

/// The highest rate limit a target can have, in deliveries per second.
pub const MAX_RATE: f64 = 100_000.0;
/// The lowest (one delivery every 1,000 s): below it the spacing of send times would
/// overflow what the store keeps.
pub const MIN_RATE: f64 = 0.001;

/// A rate limit as given: 0 (none), or [`MIN_RATE`] up to [`MAX_RATE`] deliveries a second.
pub fn check_rate(rate: f64) -> Result<f64, String> {
    if rate == 0.0 || (rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate)) {
        Ok(rate)
    } else {
        Err(format!(
            "must be 0 (no limit) or a number of deliveries per second from {MIN_RATE} to \
             {MAX_RATE}"
        ))
    }
}

/// `TARGET_MAX_PER_SECOND`: see [`check_rate`].
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of deliveries per second"))?;
    check_rate(rate)
}

fn parse_period(text: &str) -> Result<Period, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or("needs a unit: d, h, m or s (e.g. 30d)")?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .map_err(|_| "must start with a whole number (e.g. 30d)".to_owned())?;
    let unit_secs = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => {
            return Err(format!(
                "unknown unit '{unit}': use d, h, m or s (e.g. 30d)"
            ))
        }
    };
    // Ten years at most: enough for any policy, and far from overflowing a timestamp.
    let secs = number
        .checked_mul(unit_secs)
        .filter(|s| (1..=10 * 366 * 86_400).contains(s))
        .ok_or("must be between 1s and 10 years")?;
    Ok(Period(chrono::Duration::seconds(secs)))
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field(
                "database_url",
                &sluice_store::redact_url(&self.database_url),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .field("worker_poll_interval_ms", &self.worker_poll_interval_ms)
            .field("processing_timeout_ms", &self.processing_timeout_ms)
            .field("webhook_timeout_ms", &self.webhook_timeout_ms)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff_ms", &self.retry_backoff_ms)
            .field("email_mode", &self.email_mode)
            .field(
                "smtp_url",
                &self.smtp_url.as_deref().map(sluice_store::redact_url),
            )
            .field("email_from", &self.email_from)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "***"),
            )
            .field("webhook_allow_private", &self.webhook_allow_private)
            .field("cors_origin", &self.cors_origin)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field("database_max_connections", &self.database_max_connections)
            .field("ws_max_connections", &self.ws_max_connections)
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("auth", &self.auth)
            .field("target_max_in_flight", &self.target_max_in_flight)
            .field("broker_max_in_flight", &self.broker_max_in_flight)
            .field("target_max_per_second", &self.target_max_per_second)
            .field("operational_events", &self.operational_events)
            .field("target_failure_threshold", &self.target_failure_threshold)
            .field("target_open_ms", &self.target_open_ms)
            .field("target_max_wait", &self.target_max_wait)
            .field("event_types", &self.event_types)
            .field("exclude_event_types", &self.exclude_event_types)
            .field("retention", &self.retention)
            .finish()
    }
}

/// Retry delays as parsed from RETRY_BACKOFF_MS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff(pub Vec<u64>);

fn parse_backoff(text: &str) -> Result<Backoff, String> {
    RetryPolicy::parse_backoff(text).map(Backoff)
}

impl Settings {
    /// Cross-field checks clap cannot express. Returns the one line to print on failure.
    pub fn validate(&self) -> Result<(), String> {
        if self.email_mode == EmailMode::Smtp && self.smtp_url.is_none() {
            return Err("EMAIL_MODE=smtp needs SMTP_URL (e.g. smtp://user:pass@host:587)".into());
        }
        if let Some(url) = &self.smtp_url {
            if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
                return Err("SMTP_URL must start with smtp:// or smtps://".into());
            }
        }
        if let Some(secret) = &self.webhook_secret {
            if !secret.starts_with("whsec_") || secret.len() <= "whsec_".len() {
                return Err("WEBHOOK_SECRET must look like whsec_<base64>".into());
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(format!(
                "LOG_LEVEL '{}' is not a valid log filter",
                self.log_level
            ));
        }
        Ok(())
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff_ms: self.retry_backoff_ms.0.clone(),
        }
    }

    /// The limits every rule is compiled and evaluated under — when saved, tested, dry-run
    /// and processed alike. Not configurable yet: one value, read from here by everyone.
    pub fn rule_limits(&self) -> sluice_core::logic::Limits {
        sluice_core::logic::Limits::default()
    }
}

#[derive(clap::Parser)]
struct SettingsOnly {
    #[command(flatten)]
    settings: Settings,
}

impl Settings {
    /// Settings from flags (and the environment), as `sluice serve` would read them; for
    /// embedding sluice in tests and tools.
    pub fn from_args<I, T>(args: I) -> Result<Settings, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        let args = std::iter::once(std::ffi::OsString::from("sluice"))
            .chain(args.into_iter().map(Into::into));
        SettingsOnly::try_parse_from(args).map(|s| s.settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_a_number_and_a_unit() {
        assert_eq!(parse_period("30d"), Ok(Period(chrono::Duration::days(30))));
        assert_eq!(
            parse_period("90m"),
            Ok(Period(chrono::Duration::minutes(90)))
        );
        assert_eq!(
            parse_period("12h").map(|r| r.to_string()).as_deref(),
            Ok("12 h")
        );
        assert_eq!(
            parse_period("90m").map(|r| r.to_string()).as_deref(),
            Ok("90 min")
        );
        for bad in ["30", "d", "0d", "-1d", "1.5h", "3w", "99999999999999d", ""] {
            assert!(parse_period(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
