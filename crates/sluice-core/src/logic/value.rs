//! The values an evaluation works with: JavaScript's values (with `undefined`, NaN and
//! Infinity, which JSON lacks), borrowing from the event data and the compiled rule wherever
//! json-logic-js would hand out the same object, and JavaScript's coercions between them.

use super::budget::{check_depth, Budget};
use super::number::{number_to_string, parse_float, string_to_number};
use super::EvalError;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::rc::Rc;

/// A JavaScript value during one evaluation. `'a` is the lifetime of the data and the rule:
/// `var` borrows from them instead of copying.
#[derive(Clone, Debug)]
pub(crate) enum Val<'a> {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    /// A string from the data or the rule.
    Str(&'a str),
    /// A string built during evaluation (`cat`, `substr`, ...).
    String(Rc<str>),
    /// An array in the data: the same JavaScript object every time `var` reaches it.
    JsonArray(&'a Vec<Value>),
    /// An object in the data or a data object in the rule.
    JsonObject(&'a Map<String, Value>),
    /// An array literal of the rule. json-logic-js builds a fresh array each time it evaluates
    /// one, so identity (`===`, `in`) tells evaluations apart by their serial number.
    Literal(&'a Vec<Value>, u64),
    /// An array built during evaluation (`map`, `merge`, arrays containing logic, ...).
    Array(Rc<Built<'a>>),
    /// The `{current, accumulator}` object `reduce` evaluates its logic against.
    Scope(Rc<Scope<'a>>),
}

#[derive(Debug)]
pub(crate) struct Built<'a> {
    pub(crate) items: Vec<Val<'a>>,
    /// Nesting of built values inside (1 for an array of scalars), bounded by
    /// [`MAX_VALUE_DEPTH`](super::budget::MAX_VALUE_DEPTH) so drops never recurse too deep.
    pub(crate) depth: usize,
}

#[derive(Debug)]
pub(crate) struct Scope<'a> {
    pub(crate) current: Val<'a>,
    pub(crate) accumulator: Val<'a>,
    pub(crate) depth: usize,
}

/// What a byte of built array costs against `max_bytes_built`: the real size of a slot.
pub(crate) const SLOT_BYTES: u64 = std::mem::size_of::<Val<'static>>() as u64;

/// JavaScript's `typeof`, with arrays and objects together.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Undefined,
    Null,
    Bool,
    Num,
    Str,
    Object,
}

/// The items of any kind of array, read without copying the array.
pub(crate) enum Items<'v, 'a> {
    Json(&'a [Value]),
    Literal(&'a [Value], u64),
    Built(&'v [Val<'a>]),
}

impl<'a> Items<'_, 'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Items::Json(items) | Items::Literal(items, _) => items.len(),
            Items::Built(items) => items.len(),
        }
    }

    pub(crate) fn to_vec(&self) -> Vec<Val<'a>> {
        (0..self.len()).filter_map(|i| self.get(i)).collect()
    }

    pub(crate) fn get(&self, index: usize) -> Option<Val<'a>> {
        match self {
            Items::Json(items) => items.get(index).map(Val::from_json),
            Items::Literal(items, serial) => {
                items.get(index).map(|v| Val::from_literal(v, *serial))
            }
            Items::Built(items) => items.get(index).cloned(),
        }
    }
}

impl<'a> Val<'a> {
    pub(crate) fn from_json(value: &'a Value) -> Self {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Val::Str(s),
            Value::Array(items) => Val::JsonArray(items),
            Value::Object(map) => Val::JsonObject(map),
        }
    }

    /// An element of an array literal: nested arrays are fresh per evaluation too, objects
    /// are not (json-logic-js returns data objects as they are).
    pub(crate) fn from_literal(value: &'a Value, serial: u64) -> Self {
        match value {
            Value::Array(items) => Val::Literal(items, serial),
            other => Val::from_json(other),
        }
    }

    pub(crate) fn empty_array() -> Self {
        Val::Array(Rc::new(Built {
            items: Vec::new(),
            depth: 1,
        }))
    }

    /// A built array; fails if it would nest too deep.
    pub(crate) fn array(items: Vec<Val<'a>>) -> Result<Self, EvalError> {
        let depth = 1 + items.iter().map(Val::depth).max().unwrap_or(0);
        check_depth(depth)?;
        Ok(Val::Array(Rc::new(Built { items, depth })))
    }

    pub(crate) fn scope(current: Val<'a>, accumulator: Val<'a>) -> Result<Self, EvalError> {
        let depth = 1 + current.depth().max(accumulator.depth());
        check_depth(depth)?;
        Ok(Val::Scope(Rc::new(Scope {
            current,
            accumulator,
            depth,
        })))
    }

    /// Nesting of built values (data and literals count 0: they are not ours to drop).
    pub(crate) fn depth(&self) -> usize {
        match self {
            Val::Array(built) => built.depth,
            Val::Scope(scope) => scope.depth,
            _ => 0,
        }
    }

    pub(crate) fn items(&self) -> Option<Items<'_, 'a>> {
        match self {
            Val::JsonArray(items) => Some(Items::Json(items)),
            Val::Literal(items, serial) => Some(Items::Literal(items, *serial)),
            Val::Array(built) => Some(Items::Built(&built.items)),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::String(s) => Some(s),
            _ => None,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Val::Undefined => Kind::Undefined,
            Val::Null => Kind::Null,
            Val::Bool(_) => Kind::Bool,
            Val::Num(_) => Kind::Num,
            Val::Str(_) | Val::String(_) => Kind::Str,
            Val::JsonArray(_)
            | Val::JsonObject(_)
            | Val::Literal(..)
            | Val::Array(_)
            | Val::Scope(_) => Kind::Object,
        }
    }

    /// JavaScript's `!!value`.
    pub(crate) fn js_truthy(&self) -> bool {
        match self {
            Val::Undefined | Val::Null => false,
            Val::Bool(b) => *b,
            Val::Num(n) => *n != 0.0 && !n.is_nan(),
            Val::Str(s) => !s.is_empty(),
            Val::String(s) => !s.is_empty(),
            _ => true,
        }
    }

    /// JSONLogic truthiness: JavaScript's, except that an empty array is false.
    pub(crate) fn truthy(&self) -> bool {
        match self.items() {
            Some(items) => items.len() > 0,
            None => self.js_truthy(),
        }
    }
}

/// Whether two objects are the same object (JavaScript `===` on objects).
fn same_object(a: &Val<'_>, b: &Val<'_>) -> bool {
    match (a, b) {
        (Val::JsonArray(x), Val::JsonArray(y)) => std::ptr::eq(*x, *y),
        (Val::JsonObject(x), Val::JsonObject(y)) => std::ptr::eq(*x, *y),
        (Val::Literal(x, s), Val::Literal(y, t)) => std::ptr::eq(*x, *y) && s == t,
        (Val::Array(x), Val::Array(y)) => Rc::ptr_eq(x, y),
        (Val::Scope(x), Val::Scope(y)) => Rc::ptr_eq(x, y),
        _ => false,
    }
}

/// `String(value)`. Arrays join their items with `,` (null and undefined as nothing),
/// objects are `[object Object]`. Text built here counts against the byte budget.
pub(crate) fn to_js_string<'v>(
    value: &'v Val<'_>,
    budget: &mut Budget,
) -> Result<Cow<'v, str>, EvalError> {
    Ok(match value {
        Val::Undefined => Cow::Borrowed("undefined"),
        Val::Null => Cow::Borrowed("null"),
        Val::Bool(true) => Cow::Borrowed("true"),
        Val::Bool(false) => Cow::Borrowed("false"),
        Val::Num(n) => {
            let text = number_to_string(*n);
            budget.build(text.len() as u64)?;
            Cow::Owned(text)
        }
        Val::Str(s) => Cow::Borrowed(s),
        Val::String(s) => Cow::Borrowed(s),
        Val::JsonObject(_) | Val::Scope(_) => Cow::Borrowed("[object Object]"),
        Val::JsonArray(_) | Val::Literal(..) | Val::Array(_) => {
            let mut out = String::new();
            join_into(value, &mut out, budget, 1)?;
            Cow::Owned(out)
        }
    })
}

/// Appends `String(value)` to `out`, recursing into arrays.
fn join_into(
    value: &Val<'_>,
    out: &mut String,
    budget: &mut Budget,
    depth: usize,
) -> Result<(), EvalError> {
    check_depth(depth)?;
    if let Some(items) = value.items() {
        for i in 0..items.len() {
            budget.tick()?;
            if i > 0 {
                budget.build(1)?;
                out.push(',');
            }
            match items.get(i) {
                None | Some(Val::Null | Val::Undefined) => {}
                Some(item) => join_into(&item, out, budget, depth + 1)?,
            }
        }
        return Ok(());
    }
    let text = to_js_string(value, budget)?;
    budget.build(text.len() as u64)?;
    out.push_str(&text);
    Ok(())
}

/// A primitive: what `ToPrimitive` leaves of a value (objects become their string).
enum Prim<'v> {
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'v, str>),
}

fn to_primitive<'v>(value: &'v Val<'_>, budget: &mut Budget) -> Result<Prim<'v>, EvalError> {
    Ok(match value {
        Val::Undefined => Prim::Undefined,
        Val::Null => Prim::Null,
        Val::Bool(b) => Prim::Bool(*b),
        Val::Num(n) => Prim::Num(*n),
        other => Prim::Str(to_js_string(other, budget)?),
    })
}

/// `Number(primitive)`; reading a string is paid for by its length.
fn prim_to_number(prim: &Prim<'_>, budget: &mut Budget) -> Result<f64, EvalError> {
    Ok(match prim {
        Prim::Undefined => f64::NAN,
        Prim::Null => 0.0,
        Prim::Bool(b) => f64::from(u8::from(*b)),
        Prim::Num(n) => *n,
        Prim::Str(s) => {
            budget.scan(s.len())?;
            string_to_number(s)
        }
    })
}

/// JavaScript's `Number(value)`.
pub(crate) fn to_number(value: &Val<'_>, budget: &mut Budget) -> Result<f64, EvalError> {
    Ok(match value {
        Val::Num(n) => *n,
        Val::JsonObject(_) | Val::Scope(_) => f64::NAN,
        other => {
            let prim = to_primitive(other, budget)?;
            prim_to_number(&prim, budget)?
        }
    })
}

/// JavaScript's `parseFloat(value)` (which reads `String(value)`).
pub(crate) fn to_float(value: &Val<'_>, budget: &mut Budget) -> Result<f64, EvalError> {
    Ok(match value {
        // String(-0) is "0"; every other number reads back as itself.
        Val::Num(n) if *n == 0.0 => 0.0,
        Val::Num(n) => *n,
        Val::Undefined | Val::Null | Val::Bool(_) => f64::NAN,
        other => {
            let text = to_js_string(other, budget)?;
            budget.scan(text.len())?;
            parse_float(&text)
        }
    })
}

/// JavaScript's `ToIntegerOrInfinity`, as `substr` applies it to its positions.
pub(crate) fn to_integer(value: &Val<'_>, budget: &mut Budget) -> Result<f64, EvalError> {
    let n = to_number(value, budget)?;
    Ok(if n.is_nan() { 0.0 } else { n.trunc() })
}

/// JavaScript's `a === b`. Comparing two strings is paid for by their shorter length.
pub(crate) fn strict_equals(
    a: &Val<'_>,
    b: &Val<'_>,
    budget: &mut Budget,
) -> Result<bool, EvalError> {
    Ok(match (a, b) {
        (Val::Num(x), Val::Num(y)) => x == y,
        (Val::Bool(x), Val::Bool(y)) => x == y,
        (Val::Undefined, Val::Undefined) | (Val::Null, Val::Null) => true,
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => {
                budget.scan(x.len().min(y.len()))?;
                x == y
            }
            _ => same_object(a, b),
        },
    })
}

/// JavaScript's `a == b` (IsLooselyEqual).
pub(crate) fn loose_equals(
    a: &Val<'_>,
    b: &Val<'_>,
    budget: &mut Budget,
) -> Result<bool, EvalError> {
    use Kind::*;
    let (ka, kb) = (a.kind(), b.kind());
    if ka == kb {
        return strict_equals(a, b, budget);
    }
    Ok(match (ka, kb) {
        (Null | Undefined, Null | Undefined) => true,
        (Bool, _) => {
            let n = Val::Num(if a.js_truthy() { 1.0 } else { 0.0 });
            loose_equals(&n, b, budget)?
        }
        (_, Bool) => {
            let n = Val::Num(if b.js_truthy() { 1.0 } else { 0.0 });
            loose_equals(a, &n, budget)?
        }
        (Num | Str | Object, Num | Str | Object) => {
            // Objects become strings; a string against a number compares as numbers.
            let pa = to_primitive(a, budget)?;
            let pb = to_primitive(b, budget)?;
            match (&pa, &pb) {
                (Prim::Str(x), Prim::Str(y)) => {
                    budget.scan(x.len().min(y.len()))?;
                    x == y
                }
                _ => prim_to_number(&pa, budget)? == prim_to_number(&pb, budget)?,
            }
        }
        _ => false,
    })
}

/// JavaScript's `IsLessThan(a, b)`: `None` when either side is NaN (every comparison false).
pub(crate) fn less_than(
    a: &Val<'_>,
    b: &Val<'_>,
    budget: &mut Budget,
) -> Result<Option<bool>, EvalError> {
    if let (Val::Num(x), Val::Num(y)) = (a, b) {
        return Ok(x.partial_cmp(y).map(|o| o == Ordering::Less));
    }
    let pa = to_primitive(a, budget)?;
    let pb = to_primitive(b, budget)?;
    if let (Prim::Str(x), Prim::Str(y)) = (&pa, &pb) {
        // Comparing walks both strings (their lengths in characters decide ties).
        budget.scan(x.len().saturating_add(y.len()))?;
        return Ok(Some(compare_utf16(x, y) == Ordering::Less));
    }
    let (x, y) = (prim_to_number(&pa, budget)?, prim_to_number(&pb, budget)?);
    Ok(x.partial_cmp(&y).map(|o| o == Ordering::Less))
}

/// Orders strings by UTF-16 code units, as JavaScript does (which differs from Rust's byte
/// order for characters above U+FFFF against U+E000..U+FFFF).
fn compare_utf16(a: &str, b: &str) -> Ordering {
    for (x, y) in a.chars().zip(b.chars()) {
        if x != y {
            let (mut bx, mut by) = ([0u16; 2], [0u16; 2]);
            let (ux, uy): (&[u16], &[u16]) = (x.encode_utf16(&mut bx), y.encode_utf16(&mut by));
            return ux.cmp(uy);
        }
    }
    a.chars().count().cmp(&b.chars().count())
}

/// Length in UTF-16 code units, as JavaScript's `length`.
pub(crate) fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().map(char::len_utf16).sum()
    }
}

/// The UTF-16 code units `start..end` of `s`. A cut through a surrogate pair, which
/// JavaScript would keep as a lone surrogate, becomes U+FFFD: Rust strings (and JSON from
/// serde) hold only well-formed text.
pub(crate) fn utf16_slice(s: &str, start: usize, end: usize) -> String {
    if s.is_ascii() {
        return s[start..end].to_owned();
    }
    let units: Vec<u16> = s.encode_utf16().collect();
    String::from_utf16_lossy(&units[start..end])
}

/// A number as JSON: integral values as integers (`1`, not `1.0`; past 2^53 too, while
/// they fit an i64, so they print as digits and read back exactly), -0 as 0, and NaN and
/// ±Infinity as `null`, which is what `JSON.stringify` writes for them.
pub(crate) fn number_to_json(n: f64) -> Value {
    if !n.is_finite() {
        return Value::Null;
    }
    if n.fract() == 0.0 && n.abs() < I64_BOUND {
        return Value::Number(Number::from(n as i64));
    }
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

/// 2^63: integral floats below it in magnitude convert to i64 exactly.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// Converts a result to JSON, as `JSON.stringify` would see it: `undefined` in an array is
/// `null`, in an object the key is left out. Copying counts against the byte budget (a
/// nominal 16 bytes per value plus the text), so a rule cannot return a thousand copies of
/// a large event.
pub(crate) fn to_json(
    value: &Val<'_>,
    budget: &mut Budget,
    depth: usize,
) -> Result<Value, EvalError> {
    check_depth(depth)?;
    budget.build(16)?;
    Ok(match value {
        Val::Undefined | Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => number_to_json(*n),
        Val::Str(s) => {
            budget.build(s.len() as u64)?;
            Value::String((*s).to_owned())
        }
        Val::String(s) => {
            budget.build(s.len() as u64)?;
            Value::String(s.to_string())
        }
        Val::JsonArray(items) | Val::Literal(items, _) => copy_json_array(items, budget, depth)?,
        Val::JsonObject(map) => copy_json_object(map, budget, depth)?,
        Val::Array(built) => {
            let mut out = Vec::with_capacity(built.items.len());
            for item in &built.items {
                out.push(to_json(item, budget, depth + 1)?);
            }
            Value::Array(out)
        }
        Val::Scope(scope) => {
            let mut out = Map::new();
            for (key, item) in [
                ("current", &scope.current),
                ("accumulator", &scope.accumulator),
            ] {
                if !matches!(item, Val::Undefined) {
                    out.insert(key.to_owned(), to_json(item, budget, depth + 1)?);
                }
            }
            Value::Object(out)
        }
    })
}

/// Copies JSON from the data or the rule into a result. Integers are kept exactly as given
/// (even past 2^53, where JavaScript would round them); integral floats become integers.
fn copy_json(value: &Value, budget: &mut Budget, depth: usize) -> Result<Value, EvalError> {
    check_depth(depth)?;
    budget.build(16)?;
    Ok(match value {
        Value::Number(n) if n.is_f64() => number_to_json(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => copy_json_array(items, budget, depth)?,
        Value::Object(map) => copy_json_object(map, budget, depth)?,
        Value::String(s) => {
            budget.build(s.len() as u64)?;
            Value::String(s.clone())
        }
        scalar => scalar.clone(),
    })
}

fn copy_json_array(items: &[Value], budget: &mut Budget, depth: usize) -> Result<Value, EvalError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(copy_json(item, budget, depth + 1)?);
    }
    Ok(Value::Array(out))
}

fn copy_json_object(
    map: &Map<String, Value>,
    budget: &mut Budget,
    depth: usize,
) -> Result<Value, EvalError> {
    let mut out = Map::with_capacity(map.len());
    for (key, item) in map {
        budget.build(key.len() as u64)?;
        out.insert(key.clone(), copy_json(item, budget, depth + 1)?);
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_slot_is_24_bytes_as_documented_on_limits() {
        assert_eq!(SLOT_BYTES, 24);
    }

    #[test]
    fn strings_order_by_utf16_code_units() {
        assert_eq!(compare_utf16("a", "b"), Ordering::Less);
        assert_eq!(compare_utf16("ab", "a"), Ordering::Greater);
        // U+FFFF sorts after U+1F600 in UTF-16 (0xFFFF > 0xD83D), before it in UTF-8.
        assert_eq!(compare_utf16("\u{FFFF}", "\u{1F600}"), Ordering::Greater);
        assert_eq!(compare_utf16("é", "é"), Ordering::Equal);
    }
}
