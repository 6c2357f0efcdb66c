//! Query-string parameters shared by listings: pagination and date bounds.

use crate::error::ApiError;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sluice_core::FieldError;
use sluice_store::Page;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// `?limit&offset` of a listing, as sent (checked by [`parse_page`]).
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1..500, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    pub limit: Option<String>,
    /// Default 0.
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Option<String>,
    /// A page's `next_cursor`: continues that listing, at a cost that does not grow with depth.
    pub cursor: Option<String>,
}

/// A listing's `cursor` where pages are ordered by one integer key, newest first: the key of
/// the previous page's last row. Not combined with an offset (it would skip rows).
pub fn parse_key_cursor(cursor: Option<&str>, page: Page, errors: &mut QueryErrors) -> Option<i64> {
    let key = match cursor {
        None | Some("") => return None,
        Some(text) => match text.parse::<i64>() {
            Ok(key) if key > 0 => key,
            _ => {
                errors.push("cursor", "is not a cursor this server gave out");
                return None;
            }
        },
    };
    if page.offset > 0 {
        errors.push("offset", "cannot be combined with cursor");
    }
    Some(key)
}

/// Collects every bad parameter, so one answer lists them all.
#[derive(Default)]
pub struct QueryErrors(pub Vec<FieldError>);

impl QueryErrors {
    pub fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.0))
        }
    }
}

/// A text filter: absent or empty is no filter; U+0000 (which no database takes as text)
/// is a bad parameter.
pub fn text_param(name: &str, value: Option<&str>, errors: &mut QueryErrors) -> Option<String> {
    match value {
        None | Some("") => None,
        Some(text) if text.contains('\0') => {
            errors.push(name, "must not contain U+0000 (NUL)");
            None
        }
        Some(text) => Some(text.to_owned()),
    }
}

/// `limit` (1..=MAX_LIMIT, default 50) and `offset` (≥ 0, default 0).
pub fn parse_page(limit: Option<&str>, offset: Option<&str>, errors: &mut QueryErrors) -> Page {
    let limit = match limit {
        None | Some("") => DEFAULT_LIMIT,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}, got '{text}'"),
                );
                DEFAULT_LIMIT
            }
        },
    };
    let offset = match offset {
        None | Some("") => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                errors.push(
                    "offset",
                    format!("must be a non-negative integer, got '{text}'"),
                );
                0
            }
        },
    };
    Page { limit, offset }
}

/// Which end of a range a date bounds: a date-only end means the end of that day.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

/// `YYYY-MM-DD` or RFC 3339.
pub fn parse_date(text: &str, bound: Bound) -> Result<DateTime<Utc>, String> {
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let time = match bound {
            Bound::Start => NaiveTime::MIN,
            Bound::End => NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999)
                .expect("23:59:59.999999 is a valid time"),
        };
        return Ok(date.and_time(time).and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| format!("must be a date (YYYY-MM-DD) or an RFC 3339 timestamp, got '{text}'"))
}

/// Parses `start_date`/`end_date` and checks their order.
pub fn parse_date_range(
    start: Option<&str>,
    end: Option<&str>,
    errors: &mut QueryErrors,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let mut parse = |name: &str, text: Option<&str>, bound| match text {
        None | Some("") => None,
        Some(text) => parse_date(text, bound)
            .map_err(|message| errors.push(name, message))
            .ok(),
    };
    let start = parse("start_date", start, Bound::Start);
    let end = parse("end_date", end, Bound::End);
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            errors.push("end_date", "must not be before start_date");
        }
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_only_end_covers_the_whole_day() {
        let end = parse_date("2026-01-31", Bound::End).unwrap();
        assert_eq!(end.to_rfc3339(), "2026-01-31T23:59:59.999999+00:00");
        let start = parse_date("2026-01-31", Bound::Start).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-01-31T00:00:00+00:00");
    }

    #[test]
    fn rfc3339_with_offsets_is_converted_to_utc() {
        let at = parse_date("2026-01-31T10:00:00-03:00", Bound::Start).unwrap();
        assert_eq!(at.to_rfc3339(), "2026-01-31T13:00:00+00:00");
        assert!(parse_date("31/01/2026", Bound::Start).is_err());
        assert!(parse_date("2026-02-30", Bound::Start).is_err());
    }

    #[test]
    fn page_bounds_are_enforced() {
        let mut errors = QueryErrors::default();
        let page = parse_page(Some("500"), Some("10"), &mut errors);
        assert_eq!((page.limit, page.offset), (500, 10));
        parse_page(Some("501"), Some("-1"), &mut errors);
        assert_eq!(errors.0.len(), 2);
    }
}
