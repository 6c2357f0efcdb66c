//! What `sluice bench` prints.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub database: Option<String>,
    pub events_sent: u64,
    pub unique_events: u64,
    pub concurrency: usize,
    pub target_rate: Option<u64>,
    pub actions: Vec<String>,
    pub ingest_seconds: f64,
    /// Posts answered per second.
    pub ingest_rate: f64,
    /// Phased run: ingest by `sluice api` alone, then drain by one `sluice worker` process.
    pub phased: bool,
    pub drain_seconds: f64,
    /// Events finished per second, from the first creation to the last finish (server clock).
    pub drain_rate: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub processed: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub webhooks_received: u64,
    pub server_peak_rss_mb: Option<f64>,
    pub worker_peak_rss_mb: Option<f64>,
}

/// The most of `times` (sorted) that fall within any one second: what a rate-limited
/// receiver saw at its busiest.
pub fn busiest_second(times: &[std::time::Instant]) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|at| at.duration_since(times[i]) < std::time::Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "sluice bench against {}", self.url);
        if let Some(database) = &self.database {
            let _ = writeln!(out, "  database        {database} (spawned)");
        }
        let _ = writeln!(
            out,
            "  events          {} posted ({} unique), concurrency {}{}, rules: {}",
            self.events_sent,
            self.unique_events,
            self.concurrency,
            self.target_rate
                .map(|r| format!(", paced at {r}/s"))
                .unwrap_or_default(),
            if self.actions.is_empty() {
                "none".to_owned()
            } else {
                self.actions.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  ingest          {:>10.0} events/s  ({:.2} s)",
            self.ingest_rate, self.ingest_seconds
        );
        if self.phased {
            let _ = writeln!(out, "  drain           {:>10.0} events/s  (one worker process; all terminal {:.2} s after it started)", self.drain_rate, self.drain_seconds);
        } else {
            let _ = writeln!(
                out,
                "  drain           {:>10.0} events/s  (all terminal after {:.2} s)",
                self.drain_rate, self.drain_seconds
            );
            let _ = writeln!(
                out,
                "  ingest→processed p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                self.latency_ms_p50, self.latency_ms_p95, self.latency_ms_p99, self.latency_ms_max
            );
        }
        let _ = writeln!(
            out,
            "  outcome         {} processed, {} failed",
            self.processed, self.failed
        );
        if self.webhooks_received > 0 {
            let _ = writeln!(
                out,
                "  webhook sink    {} requests received",
                self.webhooks_received
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "  errors          none");
        } else {
            for (kind, count) in &self.errors {
                let _ = writeln!(out, "  errors          {kind}: {count}");
            }
        }
        if let Some(rss) = self.server_peak_rss_mb {
            let _ = writeln!(out, "  server memory   {rss:.1} MB peak RSS");
        }
        if let Some(rss) = self.worker_peak_rss_mb {
            let _ = writeln!(out, "  worker memory   {rss:.1} MB peak RSS");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
