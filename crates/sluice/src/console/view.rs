//! What the console's templates show, computed in Rust: times (absolute and relative), pretty
//! JSON, line diffs between rule versions, the throughput chart's geometry, query strings.
//! Templates stay free of logic and every value they print is escaped by askama.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use similar::{ChangeTag, TextDiff};

/// An instant as the console shows it: relative text, with the exact time as a tooltip and in
/// `datetime` (which the script uses to keep the relative text current).
#[derive(Debug, Clone)]
pub struct When {
    pub iso: String,
    pub exact: String,
    pub relative: String,
}

impl When {
    pub fn new(at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        When {
            iso: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            exact: at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
            relative: relative(at, now),
        }
    }

    pub fn maybe(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Self> {
        at.map(|at| When::new(at, now))
    }
}

/// "just now", "12 s ago", "5 min ago", "3 h ago", "2 days ago", or "in 30 s" for the future.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let (amount, future) = (seconds.unsigned_abs(), seconds < 0);
    let text = match amount {
        0..=4 => return "just now".to_owned(),
        5..=59 => format!("{amount} s"),
        60..=3_599 => format!("{} min", amount / 60),
        3_600..=86_399 => format!("{} h", amount / 3_600),
        86_400..=172_799 => "1 day".to_owned(),
        _ => format!("{} days", amount / 86_400),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Two-space indented JSON, as people read it.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// One line of a diff between two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// `same`, `added` or `removed` (also the CSS class).
    pub kind: &'static str,
    /// `" "`, `"+"` or `"-"`.
    pub sign: &'static str,
    pub text: String,
}

/// A line diff of two texts (pretty JSON of a rule's condition or action).
pub fn diff_lines(old: &str, new: &str) -> Vec<DiffLine> {
    TextDiff::from_lines(old, new)
        .iter_all_changes()
        .map(|change| {
            let (kind, sign) = match change.tag() {
                ChangeTag::Equal => ("same", " "),
                ChangeTag::Insert => ("added", "+"),
                ChangeTag::Delete => ("removed", "-"),
            };
            DiffLine {
                kind,
                sign,
                text: change.value().trim_end_matches('\n').to_owned(),
            }
        })
        .collect()
}

/// A query string (`?a=1&b=2`) of the non-empty pairs, or `""` when there are none.
pub fn query_string<T: Serialize>(pairs: &T) -> String {
    match serde_urlencoded::to_string(pairs) {
        Ok(text) if !text.is_empty() => format!("?{text}"),
        _ => String::new(),
    }
}

/// The first line of a message, cut to `max` characters (tables show the rest on the event).
pub fn excerpt(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max && line.len() == text.trim_end().len() {
        return line.to_owned();
    }
    let cut: String = line.chars().take(max).collect();
    format!("{}…", cut.trim_end())
}

/// One minute of the throughput chart: events received in it, by what became of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteCount {
    pub start: Option<DateTime<Utc>>,
    pub processed: i64,
    pub failed: i64,
    /// Pending or processing.
    pub waiting: i64,
}

impl MinuteCount {
    pub fn total(&self) -> i64 {
        self.processed + self.failed + self.waiting
    }
}

/// A stacked bar of the chart, in SVG user units.
#[derive(Debug, Clone)]
pub struct Bar {
    pub x: f64,
    pub width: f64,
    /// Bottom to top; empty segments are left out.
    pub segments: Vec<Segment>,
    pub label: String,
}

/// One state's share of a bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// `processed`, `failed` or `waiting` (also the CSS class).
    pub kind: &'static str,
    pub y: f64,
    pub height: f64,
}

/// The throughput chart: one bar per minute, scaled to the busiest minute.
#[derive(Debug, Clone)]
pub struct Chart {
    pub width: f64,
    pub height: f64,
    pub bars: Vec<Bar>,
    pub peak: i64,
    pub total: i64,
    /// Text alternative for screen readers.
    pub summary: String,
}

impl Chart {
    pub const WIDTH: f64 = 600.0;
    pub const HEIGHT: f64 = 120.0;

    pub fn new(minutes: &[MinuteCount]) -> Self {
        let peak = minutes.iter().map(MinuteCount::total).max().unwrap_or(0);
        let total: i64 = minutes.iter().map(MinuteCount::total).sum();
        let slot = Self::WIDTH / minutes.len().max(1) as f64;
        let scale = if peak > 0 {
            Self::HEIGHT / peak as f64
        } else {
            0.0
        };
        let bars = minutes
            .iter()
            .enumerate()
            .map(|(i, minute)| {
                let mut bottom = Self::HEIGHT;
                let segments = [
                    ("processed", minute.processed),
                    ("failed", minute.failed),
                    ("waiting", minute.waiting),
                ]
                .into_iter()
                .filter(|(_, count)| *count > 0)
                .map(|(kind, count)| {
                    let height = count as f64 * scale;
                    bottom -= height;
                    Segment {
                        kind,
                        y: round(bottom),
                        height: round(height),
                    }
                })
                .collect();
                let at = minute
                    .start
                    .map(|s| s.format("%H:%M UTC").to_string())
                    .unwrap_or_default();
                Bar {
                    x: round(i as f64 * slot + slot * 0.1),
                    width: round(slot * 0.8),
                    segments,
                    label: format!(
                        "{at}: {} received ({} processed, {} failed, {} waiting)",
                        minute.total(),
                        minute.processed,
                        minute.failed,
                        minute.waiting
                    ),
                }
            })
            .collect();
        let summary = if total == 0 {
            "No events received in the last hour.".to_owned()
        } else {
            format!("{total} events received in the last hour; the busiest minute had {peak}.")
        };
        Chart {
            width: Self::WIDTH,
            height: Self::HEIGHT,
            bars,
            peak,
            total,
            summary,
        }
    }
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn relative_times_read_naturally() {
        let now = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        let ago = |s: i64| relative(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(2), "just now");
        assert_eq!(ago(42), "42 s ago");
        assert_eq!(ago(150), "2 min ago");
        assert_eq!(ago(7_200), "2 h ago");
        assert_eq!(ago(90_000), "1 day ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(ago(-30), "in 30 s");
    }

    #[test]
    fn diffs_mark_added_and_removed_lines() {
        let old = pretty(&serde_json::json!({">=": [{"var": "amount"}, 50]}));
        let new = pretty(&serde_json::json!({">=": [{"var": "amount"}, 60]}));
        let lines = diff_lines(&old, &new);
        let changed: Vec<(&str, &str)> = lines
            .iter()
            .filter(|l| l.kind != "same")
            .map(|l| (l.sign, l.text.trim()))
            .collect();
        assert_eq!(changed, [("-", "50"), ("+", "60")]);
    }

    #[test]
    fn excerpts_keep_the_first_line() {
        assert_eq!(excerpt("short", 10), "short");
        assert_eq!(excerpt("a long message here", 6), "a long…");
        assert_eq!(excerpt("first\nsecond", 80), "first…");
    }

    #[test]
    fn the_chart_scales_to_the_busiest_minute() {
        let minutes = vec![
            MinuteCount {
                processed: 2,
                failed: 2,
                ..MinuteCount::default()
            },
            MinuteCount::default(),
        ];
        let chart = Chart::new(&minutes);
        assert_eq!((chart.peak, chart.total), (4, 4));
        let kinds: Vec<(&str, f64, f64)> = chart.bars[0]
            .segments
            .iter()
            .map(|s| (s.kind, s.y, s.height))
            .collect();
        assert_eq!(kinds, [("processed", 60.0, 60.0), ("failed", 0.0, 60.0)]);
        assert!(chart.bars[1].segments.is_empty());
        assert_eq!(
            Chart::new(&[]).summary,
            "No events received in the last hour."
        );
    }
}
