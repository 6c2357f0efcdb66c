//! JavaScript's conversions between numbers and text, which JSONLogic inherits from
//! json-logic-js: `Number("0x10")` (used by `-`, `/`, `%`, `==`, `<`), `parseFloat("1.5px")`
//! (used by `+` and `*`) and `String(1e21)` (used by `cat`, `in`, `substr`, `var` paths).

/// JavaScript's `StrWhiteSpaceChar`: what `Number()` trims and `parseFloat()` skips.
pub(crate) fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}' | '\u{A}' | '\u{B}' | '\u{C}' | '\u{D}' | ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202F}'
                | '\u{205F}'
                | '\u{3000}'
                | '\u{FEFF}'
    )
}

/// `Number(text)`: the whole text, trimmed, must be a numeric literal; `""` is 0; anything
/// else is NaN.
pub(crate) fn string_to_number(text: &str) -> f64 {
    let t = text.trim_matches(is_js_whitespace);
    if t.is_empty() {
        return 0.0;
    }
    let bytes = t.as_bytes();
    if bytes.len() > 2 && bytes[0] == b'0' {
        let radix = match bytes[1] {
            b'x' | b'X' => 16,
            b'o' | b'O' => 8,
            b'b' | b'B' => 2,
            _ => 0,
        };
        if radix != 0 {
            return parse_radix(&t[2..], radix);
        }
    }
    match t {
        "Infinity" | "+Infinity" => return f64::INFINITY,
        "-Infinity" => return f64::NEG_INFINITY,
        _ => {}
    }
    if decimal_prefix_len(t) == t.len() {
        // The grammar checked above is a subset of what Rust's parser accepts, and Rust's
        // parser rounds correctly as JavaScript does.
        t.parse().unwrap_or(f64::NAN)
    } else {
        f64::NAN
    }
}

/// `parseFloat(text)`: skips leading whitespace and reads the longest prefix that is a
/// decimal literal (or `Infinity`); NaN if there is none.
pub(crate) fn parse_float(text: &str) -> f64 {
    let t = text.trim_start_matches(is_js_whitespace);
    let (negative, unsigned) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if unsigned.starts_with("Infinity") {
        return if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    match decimal_prefix_len(t) {
        0 => f64::NAN,
        len => t[..len].parse().unwrap_or(f64::NAN),
    }
}

/// Length of the longest prefix of `t` of the form `[+-]? (d+ (. d*)? | . d+) ([eE] [+-]? d+)?`,
/// or 0 when there is none.
fn decimal_prefix_len(t: &str) -> usize {
    let b = t.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int_start = i;
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - int_start;
    if b.get(i) == Some(&b'.') {
        let frac_start = i + 1;
        let mut j = frac_start;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        digits += j - frac_start;
        if digits > 0 {
            i = j;
        }
    }
    if digits == 0 {
        return 0;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_start = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j > exp_start {
            i = j;
        }
    }
    i
}

/// Digits after `0x`/`0o`/`0b`; NaN unless every character is a digit of `radix`.
fn parse_radix(digits: &str, radix: u32) -> f64 {
    if digits.is_empty() {
        return f64::NAN;
    }
    // Exact while it fits in u128, so the single conversion at the end rounds like JavaScript;
    // past that (more than 32 hex digits) we accumulate in f64.
    let mut exact: Option<u128> = Some(0);
    let mut approx = 0.0_f64;
    for c in digits.chars() {
        let Some(d) = c.to_digit(radix) else {
            return f64::NAN;
        };
        exact = exact
            .and_then(|v| v.checked_mul(u128::from(radix)))
            .and_then(|v| v.checked_add(u128::from(d)));
        approx = approx * f64::from(radix) + f64::from(d);
    }
    match exact {
        Some(v) => v as f64,
        None => approx,
    }
}

/// Largest integer below which every integer is exactly representable (2^53).
pub(crate) const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_992.0;

/// `String(x)` for a number, as JavaScript writes it: `1` not `1.0`, `1e+21`, `1e-7`,
/// `0.000001`, `NaN`, `Infinity`, and `-0` as `0`.
pub(crate) fn number_to_string(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x == 0.0 {
        return "0".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if x.fract() == 0.0 && x.abs() < MAX_SAFE_INTEGER {
        return format!("{}", x as i64);
    }
    // Rust's `{:e}` writes the shortest digits that round-trip, as JavaScript chooses them;
    // only the layout differs.
    let scientific = format!("{:e}", x.abs());
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return x.to_string();
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return x.to_string();
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exponent + 1;
    let mut out = String::with_capacity(digits.len() + 8);
    if x < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_from_text_follows_javascript() {
        assert_eq!(string_to_number(""), 0.0);
        assert_eq!(string_to_number(" \n 12 \u{A0}"), 12.0);
        assert_eq!(string_to_number("1e3"), 1000.0);
        assert_eq!(string_to_number(".5"), 0.5);
        assert_eq!(string_to_number("5."), 5.0);
        assert_eq!(string_to_number("+5"), 5.0);
        assert_eq!(string_to_number("0x1A"), 26.0);
        assert_eq!(string_to_number("0b101"), 5.0);
        assert_eq!(string_to_number("0o17"), 15.0);
        assert_eq!(string_to_number("-Infinity"), f64::NEG_INFINITY);
        for nan in [
            "abc", "1_000", "-0x1A", "0x", "1e", "inf", "nan", "5px", "1,2", ".",
        ] {
            assert!(string_to_number(nan).is_nan(), "{nan}");
        }
    }

    #[test]
    fn parse_float_reads_the_longest_prefix() {
        assert_eq!(parse_float("1.5px"), 1.5);
        assert_eq!(parse_float("  -.5e-3x"), -0.0005);
        assert_eq!(parse_float("1e"), 1.0);
        assert_eq!(parse_float("1.e2"), 100.0);
        assert_eq!(parse_float("0x10"), 0.0);
        assert_eq!(parse_float("1,2"), 1.0);
        assert_eq!(parse_float("-Infinityx"), f64::NEG_INFINITY);
        for nan in ["", "-", ".", "null", "true", "e5", "+-1"] {
            assert!(parse_float(nan).is_nan(), "{nan}");
        }
    }

    #[test]
    fn numbers_print_as_javascript_prints_them() {
        let cases: [(f64, &str); 14] = [
            (1.0, "1"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (1e21, "1e+21"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (123456789012345680000.0, "123456789012345680000"),
            (-1.5e-10, "-1.5e-10"),
            (5e-324, "5e-324"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1.5e300, "1.5e+300"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Infinity"),
            (-123.456, "-123.456"),
        ];
        for (x, text) in cases {
            assert_eq!(number_to_string(x), text);
        }
    }
}
