//! When a failed event is tried again: how many attempts it gets and how long it waits between
//! them (`MAX_ATTEMPTS`, `RETRY_BACKOFF_MS`), with jitter so that events failing together
//! (a receiver going down) do not all come back in the same instant.
//!
//! Core has no random number generator and no clock: the worker passes a random number in and
//! adds the delay to its own `now`.

/// How many attempts an event gets and the delays between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    /// Delay before retry 1, 2, …; the last value repeats when there are more retries.
    pub backoff_ms: Vec<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff_ms: vec![1000, 5000, 30000],
        }
    }
}

/// How far jitter moves a delay either way: ±20%.
pub const JITTER_FRACTION: f64 = 0.2;

impl RetryPolicy {
    /// Parses the `RETRY_BACKOFF_MS` format: comma-separated positive integers of milliseconds,
    /// e.g. `1000,5000,30000` (spaces around items are allowed).
    pub fn parse_backoff(text: &str) -> Result<Vec<u64>, String> {
        if text.trim().is_empty() {
            return Err(
                "must list at least one delay in milliseconds, e.g. 1000,5000,30000".into(),
            );
        }
        text.split(',')
            .enumerate()
            .map(|(i, item)| {
                let item = item.trim();
                match item.parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(ms),
                    _ => Err(format!(
                        "item {} ('{item}') is not a positive integer of milliseconds \
                         (expected e.g. 1000,5000,30000)",
                        i + 1
                    )),
                }
            })
            .collect()
    }

    /// How long to wait before the next attempt, given how many attempts have run; `None` when
    /// none is left (`attempts_done >= max_attempts`) and the event becomes `failed`.
    ///
    /// The delay for retry n (after n attempts) is `backoff_ms[n - 1]`, or the last value when
    /// the list is shorter, scaled by `0.8 + 0.4 * jitter`: `jitter` is a uniform random number
    /// in `[0, 1)` from the caller, mapped to ±[`JITTER_FRACTION`]. A jitter outside `[0, 1]` is
    /// clamped and NaN counts as 0.5 (no change), so a bad random source cannot make a delay
    /// negative or unbounded. With `attempts_done == 0` nothing has failed yet, so the delay
    /// is 0; so it is with an empty `backoff_ms`.
    pub fn next_delay_ms(&self, attempts_done: u32, jitter: f64) -> Option<u64> {
        if attempts_done >= self.max_attempts {
            return None;
        }
        let Some(retry_index) = attempts_done.checked_sub(1) else {
            return Some(0);
        };
        let base = usize::try_from(retry_index)
            .ok()
            .and_then(|i| self.backoff_ms.get(i))
            .or_else(|| self.backoff_ms.last())
            .copied()
            .unwrap_or(0);
        let jitter = if jitter.is_nan() {
            0.5
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let factor = 1.0 - JITTER_FRACTION + 2.0 * JITTER_FRACTION * jitter;
        // `as` saturates on overflow, which is the behaviour wanted for absurd configured delays.
        Some((base as f64 * factor).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_the_documented_configuration() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.max_attempts, 4);
        assert_eq!(policy.backoff_ms, [1000, 5000, 30000]);
    }

    #[test]
    fn parses_the_env_var_format() {
        assert_eq!(
            RetryPolicy::parse_backoff("1000,5000,30000").unwrap(),
            [1000, 5000, 30000]
        );
        assert_eq!(
            RetryPolicy::parse_backoff(" 250 , 500 ").unwrap(),
            [250, 500]
        );
        assert_eq!(RetryPolicy::parse_backoff("7").unwrap(), [7]);
    }

    #[test]
    fn rejects_anything_but_positive_integers() {
        for bad in [
            "",
            "  ",
            "1000,",
            ",1000",
            "1000,,5000",
            "0",
            "-5",
            "1.5",
            "1s",
            "abc",
        ] {
            assert!(RetryPolicy::parse_backoff(bad).is_err(), "{bad:?}");
        }
        let error = RetryPolicy::parse_backoff("1000,x").unwrap_err();
        assert!(error.contains("item 2 ('x')"), "{error}");
    }

    #[test]
    fn middle_jitter_gives_the_configured_delay() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay_ms(1, 0.5), Some(1000));
        assert_eq!(policy.next_delay_ms(2, 0.5), Some(5000));
        assert_eq!(policy.next_delay_ms(3, 0.5), Some(30000));
    }

    #[test]
    fn stops_when_the_attempts_are_used_up() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay_ms(4, 0.5), None);
        assert_eq!(policy.next_delay_ms(5, 0.5), None);
        assert_eq!(policy.next_delay_ms(u32::MAX, 0.5), None);
        let single = RetryPolicy {
            max_attempts: 1,
            backoff_ms: vec![1000],
        };
        assert_eq!(single.next_delay_ms(1, 0.5), None);
    }

    #[test]
    fn repeats_the_last_delay_when_the_list_is_short() {
        let policy = RetryPolicy {
            max_attempts: 10,
            backoff_ms: vec![100, 200],
        };
        assert_eq!(policy.next_delay_ms(1, 0.5), Some(100));
        assert_eq!(policy.next_delay_ms(2, 0.5), Some(200));
        assert_eq!(policy.next_delay_ms(9, 0.5), Some(200));
        assert_eq!(policy.next_delay_ms(10, 0.5), None);
    }

    #[test]
    fn jitter_spans_twenty_percent_either_way() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay_ms(1, 0.0), Some(800));
        assert_eq!(policy.next_delay_ms(1, 0.25), Some(900));
        assert_eq!(policy.next_delay_ms(1, 0.999_999), Some(1200));
        assert_eq!(policy.next_delay_ms(3, 0.0), Some(24000));
    }

    #[test]
    fn bad_jitter_cannot_escape_the_range() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay_ms(1, -3.0), Some(800));
        assert_eq!(policy.next_delay_ms(1, 7.0), Some(1200));
        assert_eq!(policy.next_delay_ms(1, f64::NAN), Some(1000));
        assert_eq!(policy.next_delay_ms(1, f64::INFINITY), Some(1200));
    }

    #[test]
    fn degenerate_inputs_give_no_delay() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.next_delay_ms(0, 0.9), Some(0));
        let empty = RetryPolicy {
            max_attempts: 3,
            backoff_ms: Vec::new(),
        };
        assert_eq!(empty.next_delay_ms(1, 0.9), Some(0));
        let huge = RetryPolicy {
            max_attempts: 3,
            backoff_ms: vec![u64::MAX],
        };
        assert_eq!(huge.next_delay_ms(1, 0.99), Some(u64::MAX));
    }
}
