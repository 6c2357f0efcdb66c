//! Evaluates a compiled rule against data with json-logic-js 2.0.5's semantics, charging
//! every node visited, item iterated and byte built to the evaluation's budget.
//!
//! Evaluation recurses once per node, so its depth is the rule's, which compiling bounded.

use super::budget::Budget;
use super::compile::{array_index, var_path, Node, Op, Path, Var};
use super::value::{
    less_than, loose_equals, strict_equals, to_float, to_integer, to_js_string, to_number,
    utf16_len, utf16_slice, Val, SLOT_BYTES,
};
use super::{EvalError, Limits};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::rc::Rc;

/// Watches an evaluation node by node (to explain it). [`NoTrace`] watches nothing and
/// compiles away: plain evaluation pays nothing for explanations being possible.
pub(crate) trait Trace {
    /// Whether the evaluator calls the hooks at all.
    const ON: bool;
    /// `node` is about to be evaluated.
    fn enter(&mut self, node: &Node);
    /// `node` (the last one entered and not left) evaluated to `value`.
    fn exit(&mut self, node: &Node, value: &Val<'_>);
}

pub(crate) struct NoTrace;

impl Trace for NoTrace {
    const ON: bool = false;
    fn enter(&mut self, _: &Node) {}
    fn exit(&mut self, _: &Node, _: &Val<'_>) {}
}

pub(crate) struct Evaluator<T: Trace = NoTrace> {
    pub(crate) budget: Budget,
    /// Counts evaluations of array literals, which are fresh arrays each time.
    serial: u64,
    pub(crate) trace: T,
}

impl Evaluator<NoTrace> {
    pub(crate) fn new(limits: &Limits) -> Self {
        Evaluator::traced(limits, NoTrace)
    }
}

impl<T: Trace> Evaluator<T> {
    pub(crate) fn traced(limits: &Limits, trace: T) -> Self {
        Self {
            budget: Budget::new(limits),
            // Serial 0 belongs to the compiler's view of literals.
            serial: 0,
            trace,
        }
    }

    pub(crate) fn eval<'a>(
        &mut self,
        node: &'a Node,
        data: &Val<'a>,
    ) -> Result<Val<'a>, EvalError> {
        if !T::ON {
            return self.eval_node(node, data);
        }
        self.trace.enter(node);
        let value = self.eval_node(node, data)?;
        self.trace.exit(node, &value);
        Ok(value)
    }

    fn eval_node<'a>(&mut self, node: &'a Node, data: &Val<'a>) -> Result<Val<'a>, EvalError> {
        self.budget.tick()?;
        Ok(match node {
            Node::Undefined => Val::Undefined,
            Node::Null => Val::Null,
            Node::Bool(b) => Val::Bool(*b),
            Node::Num(n) => Val::Num(*n),
            Node::Str(s) => Val::Str(s),
            Node::LiteralArray(items) => {
                self.serial += 1;
                Val::Literal(items, self.serial)
            }
            Node::Object(map) => Val::JsonObject(map),
            Node::Array(nodes) => {
                self.budget
                    .build((nodes.len() as u64).saturating_mul(SLOT_BYTES))?;
                let mut items = Vec::with_capacity(nodes.len());
                for node in nodes.iter() {
                    items.push(self.eval(node, data)?);
                }
                Val::array(items)?
            }
            Node::Var(var) => self.var(var, data)?,
            Node::Op(op, args) => self.op(*op, args, data)?,
        })
    }

    /// Argument `i`, or `undefined` when the rule gave fewer.
    fn arg<'a>(
        &mut self,
        args: &'a [Node],
        i: usize,
        data: &Val<'a>,
    ) -> Result<Val<'a>, EvalError> {
        match args.get(i) {
            Some(node) => self.eval(node, data),
            None => Ok(Val::Undefined),
        }
    }

    fn all_args<'a>(
        &mut self,
        args: &'a [Node],
        data: &Val<'a>,
    ) -> Result<Vec<Val<'a>>, EvalError> {
        args.iter().map(|node| self.eval(node, data)).collect()
    }

    fn var<'a>(&mut self, var: &'a Var, data: &Val<'a>) -> Result<Val<'a>, EvalError> {
        // json-logic-js evaluates both arguments before looking anything up.
        let dynamic = match &var.path {
            Path::Dynamic(node) => self.eval(node, data)?,
            _ => Val::Undefined,
        };
        let default = match &var.default {
            Some(node) => self.eval(node, data)?,
            None => Val::Undefined,
        };
        let found = match &var.path {
            Path::Whole => Some(data.clone()),
            Path::Keys(keys) => self.lookup(data, keys.iter().map(|k| (&*k.name, k.index)))?,
            Path::Dynamic(_) => return self.resolve(&dynamic, default, data),
        };
        Ok(found.unwrap_or(not_found(default)))
    }

    /// `{"var": [path, default]}` with both already evaluated.
    fn resolve<'a>(
        &mut self,
        path: &Val<'_>,
        default: Val<'a>,
        data: &Val<'a>,
    ) -> Result<Val<'a>, EvalError> {
        let found = match var_path(path, &mut self.budget)? {
            None => Some(data.clone()),
            Some(text) => {
                // Splitting and hashing a path built at run time reads all of it.
                self.budget.scan(text.len())?;
                self.lookup(data, text.split('.').map(|k| (k, array_index(k))))?
            }
        };
        Ok(found.unwrap_or(not_found(default)))
    }

    /// Walks `keys` down from `data`; `None` where JavaScript would reach `undefined`.
    /// Reaching `null` at the end is a value (`{"var": ["a", 1]}` on `{"a": null}` is null).
    fn lookup<'a, 'k>(
        &mut self,
        data: &Val<'a>,
        keys: impl Iterator<Item = (&'k str, Option<usize>)>,
    ) -> Result<Option<Val<'a>>, EvalError> {
        let mut current: Option<Val<'a>> = None;
        for (name, index) in keys {
            self.budget.tick()?;
            let here = current.as_ref().unwrap_or(data);
            let next = match here {
                Val::Null | Val::Undefined => return Ok(None),
                // The common case, inline: a key of an object in the event.
                Val::JsonObject(map) => object_get(map, name).map(Val::from_json),
                other => self.property(other, name, index)?,
            };
            match next {
                None | Some(Val::Undefined) => return Ok(None),
                Some(next) => current = Some(next),
            }
        }
        Ok(Some(current.unwrap_or_else(|| data.clone())))
    }

    /// `value[name]` for the properties JSON values have: object keys, array and string
    /// indexes and `length`. (Prototype members such as `toString` are not data, and
    /// json-logic-js reaching them is an accident we do not copy.)
    fn property<'a>(
        &mut self,
        value: &Val<'a>,
        name: &str,
        index: Option<usize>,
    ) -> Result<Option<Val<'a>>, EvalError> {
        Ok(match value {
            Val::JsonObject(map) => object_get(map, name).map(Val::from_json),
            Val::Scope(scope) => match name {
                "current" => Some(scope.current.clone()),
                "accumulator" => Some(scope.accumulator.clone()),
                _ => None,
            },
            Val::Str(s) if s.len() <= 64 && s.is_ascii() => match index {
                Some(i) => s.get(i..i + 1).map(Val::Str),
                None if name == "length" => Some(Val::Num(s.len() as f64)),
                None => None,
            },
            Val::Str(_) | Val::String(_) => {
                let s = value.as_str().unwrap_or_default();
                self.budget.scan(s.len())?;
                let len = utf16_len(s);
                match index {
                    Some(i) if i < len => {
                        let unit = utf16_slice(s, i, i + 1);
                        self.budget.build(unit.len() as u64)?;
                        Some(Val::String(Rc::from(unit)))
                    }
                    Some(_) => None,
                    None if name == "length" => Some(Val::Num(len as f64)),
                    None => None,
                }
            }
            other => match other.items() {
                Some(items) => match index {
                    Some(i) => items.get(i),
                    None if name == "length" => Some(Val::Num(items.len() as f64)),
                    None => None,
                },
                None => None,
            },
        })
    }

    fn op<'a>(&mut self, op: Op, args: &'a [Node], data: &Val<'a>) -> Result<Val<'a>, EvalError> {
        // `if`, `and`, `or` and the iterating operators evaluate their arguments as they
        // need them; every other operator evaluates all of them first, in order.
        Ok(match op {
            Op::If => {
                let mut i = 0;
                while i + 1 < args.len() {
                    if self.eval(&args[i], data)?.truthy() {
                        return self.eval(&args[i + 1], data);
                    }
                    i += 2;
                }
                match args.get(i) {
                    Some(last) => self.eval(last, data)?,
                    None => Val::Null,
                }
            }
            Op::And | Op::Or => {
                // The first falsy (and) or truthy (or) value, else the last; none is undefined.
                let mut last = Val::Undefined;
                for node in args.iter() {
                    last = self.eval(node, data)?;
                    if last.truthy() == (op == Op::Or) {
                        break;
                    }
                }
                last
            }
            Op::Map | Op::Filter | Op::All | Op::None | Op::Some => self.iterate(op, args, data)?,
            Op::Reduce => self.reduce(args, data)?,
            Op::Var => {
                // Compiled to Node::Var; kept for completeness.
                let path = self.arg(args, 0, data)?;
                let default = self.arg(args, 1, data)?;
                self.resolve(&path, default, data)?
            }
            Op::Eq | Op::Ne | Op::StrictEq | Op::StrictNe => {
                let a = self.arg(args, 0, data)?;
                let b = self.arg(args, 1, data)?;
                Val::Bool(match op {
                    Op::Eq => loose_equals(&a, &b, &mut self.budget)?,
                    Op::Ne => !loose_equals(&a, &b, &mut self.budget)?,
                    Op::StrictEq => strict_equals(&a, &b, &mut self.budget)?,
                    _ => !strict_equals(&a, &b, &mut self.budget)?,
                })
            }
            Op::Not => Val::Bool(!self.arg(args, 0, data)?.truthy()),
            Op::NotNot => Val::Bool(self.arg(args, 0, data)?.truthy()),
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let a = self.arg(args, 0, data)?;
                let b = self.arg(args, 1, data)?;
                let c = self.arg(args, 2, data)?;
                let budget = &mut self.budget;
                // a <= b is "b < a is false" (NaN makes both false), as in JavaScript.
                let lt = |x: &Val<'_>, y: &Val<'_>, budget: &mut Budget| {
                    less_than(x, y, budget).map(|r| r == Some(true))
                };
                let le = |x: &Val<'_>, y: &Val<'_>, budget: &mut Budget| {
                    less_than(y, x, budget).map(|r| r == Some(false))
                };
                Val::Bool(match op {
                    // Only < and <= have the three-argument "between" form.
                    Op::Lt if matches!(c, Val::Undefined) => lt(&a, &b, budget)?,
                    Op::Lt => lt(&a, &b, budget)? && lt(&b, &c, budget)?,
                    Op::Le if matches!(c, Val::Undefined) => le(&a, &b, budget)?,
                    Op::Le => le(&a, &b, budget)? && le(&b, &c, budget)?,
                    Op::Gt => lt(&b, &a, budget)?,
                    _ => le(&b, &a, budget)?,
                })
            }
            Op::Max | Op::Min => {
                // Math.max / Math.min: NaN wins, +0 beats -0 for max and loses for min.
                let mut result = if op == Op::Max {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                };
                for node in args.iter() {
                    let value = self.eval(node, data)?;
                    let n = to_number(&value, &mut self.budget)?;
                    if n.is_nan() || result.is_nan() {
                        result = f64::NAN;
                    } else if op == Op::Max {
                        if n > result || (n == 0.0 && result == 0.0 && n.is_sign_positive()) {
                            result = n;
                        }
                    } else if n < result || (n == 0.0 && result == 0.0 && n.is_sign_negative()) {
                        result = n;
                    }
                }
                Val::Num(result)
            }
            Op::Add => {
                // reduce((a, b) => parseFloat(a) + parseFloat(b), 0)
                let mut sum = 0.0;
                for node in args.iter() {
                    let value = self.eval(node, data)?;
                    sum = float_of(sum) + to_float(&value, &mut self.budget)?;
                }
                Val::Num(sum)
            }
            Op::Mul => {
                // reduce((a, b) => parseFloat(a) * parseFloat(b)) with no initial value: one
                // argument comes back untouched (`{"*": ["3"]}` is "3").
                let first = self.arg(args, 0, data)?;
                if args.len() < 2 {
                    return Ok(first);
                }
                let mut product = to_float(&first, &mut self.budget)?;
                for node in args[1..].iter() {
                    let value = self.eval(node, data)?;
                    product = float_of(product) * to_float(&value, &mut self.budget)?;
                }
                Val::Num(product)
            }
            Op::Sub => {
                let a = self.arg(args, 0, data)?;
                let b = self.arg(args, 1, data)?;
                let x = to_number(&a, &mut self.budget)?;
                match b {
                    Val::Undefined => Val::Num(-x),
                    b => Val::Num(x - to_number(&b, &mut self.budget)?),
                }
            }
            // JavaScript's / and % give Infinity and NaN where JSON has nothing; they stay
            // numbers while the rule runs (Infinity > 5) and become null in the result.
            Op::Div | Op::Mod => {
                let a = self.arg(args, 0, data)?;
                let b = self.arg(args, 1, data)?;
                let x = to_number(&a, &mut self.budget)?;
                let y = to_number(&b, &mut self.budget)?;
                Val::Num(if op == Op::Div { x / y } else { x % y })
            }
            Op::Merge => {
                let values = self.all_args(args, data)?;
                let total: usize = values
                    .iter()
                    .map(|v| v.items().map_or(1, |items| items.len()))
                    .sum();
                // Charge before allocating: merge(acc, acc) doubles each time.
                self.budget.spend(total as u64)?;
                self.budget
                    .build((total as u64).saturating_mul(SLOT_BYTES))?;
                let mut out = Vec::with_capacity(total);
                for value in &values {
                    match value.items() {
                        Some(items) => out.extend((0..items.len()).filter_map(|i| items.get(i))),
                        None => out.push(value.clone()),
                    }
                }
                Val::array(out)?
            }
            Op::In => {
                let needle = self.arg(args, 0, data)?;
                let haystack = self.arg(args, 1, data)?;
                match (haystack.as_str(), haystack.items()) {
                    // An empty string is falsy, so json-logic-js answers false before looking.
                    (Some(""), _) => Val::Bool(false),
                    (Some(text), _) => {
                        let needle = to_js_string(&needle, &mut self.budget)?;
                        self.budget.scan(text.len())?;
                        Val::Bool(text.contains(needle.as_ref()))
                    }
                    (None, Some(items)) => {
                        let mut found = false;
                        for i in 0..items.len() {
                            self.budget.tick()?;
                            let Some(item) = items.get(i) else { continue };
                            if strict_equals(&needle, &item, &mut self.budget)? {
                                found = true;
                                break;
                            }
                        }
                        Val::Bool(found)
                    }
                    (None, None) => Val::Bool(false),
                }
            }
            Op::Cat => {
                let values = self.all_args(args, data)?;
                let mut pieces = Vec::with_capacity(values.len());
                for value in &values {
                    pieces.push(match value {
                        Val::Null | Val::Undefined => Cow::Borrowed(""),
                        other => to_js_string(other, &mut self.budget)?,
                    });
                }
                let total: usize = pieces.iter().map(|p| p.len()).sum();
                self.budget.build(total as u64)?;
                Val::String(Rc::from(pieces.concat()))
            }
            Op::Substr => self.substr(args, data)?,
            Op::Log => self.arg(args, 0, data)?,
            Op::Missing => {
                let values = self.all_args(args, data)?;
                // One array argument is the list of keys; otherwise the arguments are.
                let keys = match values.first().and_then(Val::items) {
                    Some(items) => items.to_vec(),
                    None => values,
                };
                Val::array(self.missing(keys, data)?)?
            }
            Op::MissingSome => {
                let need = self.arg(args, 0, data)?;
                let options = self.arg(args, 1, data)?;
                self.missing_some(need, options, data)?
            }
        })
    }

    /// `map`, `filter`, `all`, `none`, `some`: the logic runs with each item as its data.
    fn iterate<'a>(
        &mut self,
        op: Op,
        args: &'a [Node],
        data: &Val<'a>,
    ) -> Result<Val<'a>, EvalError> {
        let list = self.arg(args, 0, data)?;
        let Some(logic) = args.get(1) else {
            return Ok(Val::Undefined);
        };
        let Some(items) = list.items() else {
            return Ok(match op {
                Op::Map | Op::Filter => Val::empty_array(),
                // `none` of nothing is true; `all` of nothing is false, as in json-logic-js.
                Op::None => Val::Bool(true),
                _ => Val::Bool(false),
            });
        };
        let len = items.len();
        match op {
            Op::Map => {
                self.budget.build((len as u64).saturating_mul(SLOT_BYTES))?;
                let mut out = Vec::with_capacity(len);
                for i in 0..len {
                    self.budget.tick()?;
                    let item = items.get(i).unwrap_or(Val::Undefined);
                    out.push(self.eval(logic, &item)?);
                }
                Val::array(out)
            }
            Op::Filter => {
                let mut out = Vec::new();
                for i in 0..len {
                    self.budget.tick()?;
                    let item = items.get(i).unwrap_or(Val::Undefined);
                    if self.eval(logic, &item)?.truthy() {
                        self.budget.build(SLOT_BYTES)?;
                        out.push(item);
                    }
                }
                Val::array(out)
            }
            _ => {
                // all: stop at the first falsy; none/some: stop at the first truthy.
                let stop_when = op != Op::All;
                if len == 0 {
                    return Ok(Val::Bool(op == Op::None));
                }
                for i in 0..len {
                    self.budget.tick()?;
                    let item = items.get(i).unwrap_or(Val::Undefined);
                    if self.eval(logic, &item)?.truthy() == stop_when {
                        return Ok(Val::Bool(op == Op::Some));
                    }
                }
                Ok(Val::Bool(op != Op::Some))
            }
        }
    }

    /// `reduce`: the logic runs with `{current, accumulator}` as its data.
    fn reduce<'a>(&mut self, args: &'a [Node], data: &Val<'a>) -> Result<Val<'a>, EvalError> {
        let list = self.arg(args, 0, data)?;
        let mut accumulator = match args.get(2) {
            Some(initial) => self.eval(initial, data)?,
            None => Val::Null,
        };
        let (Some(items), Some(logic)) = (list.items(), args.get(1)) else {
            return Ok(accumulator);
        };
        for i in 0..items.len() {
            self.budget.tick()?;
            self.budget.build(2 * SLOT_BYTES)?;
            let current = items.get(i).unwrap_or(Val::Undefined);
            let scope = Val::scope(current, accumulator)?;
            accumulator = self.eval(logic, &scope)?;
        }
        Ok(accumulator)
    }

    /// `substr(source, start, length)`: JavaScript's `String.prototype.substr`, counting
    /// UTF-16 code units, plus json-logic-js's PHP-style negative length.
    fn substr<'a>(&mut self, args: &'a [Node], data: &Val<'a>) -> Result<Val<'a>, EvalError> {
        let source = self.arg(args, 0, data)?;
        let start = self.arg(args, 1, data)?;
        let length = self.arg(args, 2, data)?;
        let text = to_js_string(&source, &mut self.budget)?;
        // Measuring and slicing read the whole text, however short the result.
        self.budget.scan(text.len())?;
        let start = to_integer(&start, &mut self.budget)?;
        let result = if less_than(&length, &Val::Num(0.0), &mut self.budget)? == Some(true) {
            // `temp.substr(0, temp.length + end)`. For a number that is "all but the last
            // |end| units". Anything else below 0 is text or an array (`"-1"`, `[-1]`), and
            // `+` then concatenates ("5-1"): a length of NaN, which counts as 0.
            let temp = substring(&text, start, None);
            self.budget.build(temp.len() as u64)?;
            self.budget.scan(temp.len())?;
            let keep = match length {
                Val::Num(end) => (utf16_len(&temp) as f64 + end).trunc(),
                _ => 0.0,
            };
            substring(&temp, 0.0, Some(keep))
        } else {
            let length = match length {
                Val::Undefined => None,
                other => Some(to_integer(&other, &mut self.budget)?),
            };
            substring(&text, start, length)
        };
        self.budget.build(result.len() as u64)?;
        Ok(Val::String(Rc::from(result)))
    }

    /// The keys whose value is missing (`null` or `""`). A key that is an array is a `var`
    /// with a default, `[path, default]`, as json-logic-js reads it.
    fn missing<'a>(
        &mut self,
        keys: Vec<Val<'a>>,
        data: &Val<'a>,
    ) -> Result<Vec<Val<'a>>, EvalError> {
        let mut missing = Vec::new();
        for key in keys {
            self.budget.tick()?;
            let (path, default) = match key.items() {
                Some(items) => (
                    items.get(0).unwrap_or(Val::Undefined),
                    items.get(1).unwrap_or(Val::Undefined),
                ),
                None => (key.clone(), Val::Undefined),
            };
            let value = self.resolve(&path, default, data)?;
            if matches!(value, Val::Null) || value.as_str() == Some("") {
                self.budget.build(SLOT_BYTES)?;
                missing.push(key);
            }
        }
        Ok(missing)
    }

    /// `missing_some(need, keys)`: no keys reported if at least `need` are present, else the
    /// missing ones.
    fn missing_some<'a>(
        &mut self,
        need: Val<'a>,
        options: Val<'a>,
        data: &Val<'a>,
    ) -> Result<Val<'a>, EvalError> {
        if matches!(options, Val::Null | Val::Undefined) {
            // json-logic-js throws here (it reads `options.length`).
            return Err(EvalError::Type(format!(
                "missing_some needs a list of keys as its second argument, got {}",
                if matches!(options, Val::Null) {
                    "null"
                } else {
                    "nothing"
                }
            )));
        }
        // json-logic-js passes the options back through `missing`, which reads a first
        // item that is an array as the whole list of keys.
        let keys = match options.items() {
            Some(items) => match items.get(0).as_ref().and_then(Val::items) {
                Some(inner) => inner.to_vec(),
                None => items.to_vec(),
            },
            None => vec![options.clone()],
        };
        let missing = self.missing(keys, data)?;
        let options_len = match (options.items(), options.as_str()) {
            (Some(items), _) => items.len() as f64,
            (None, Some(text)) => {
                self.budget.scan(text.len())?;
                utf16_len(text) as f64
            }
            // `length` of a number or an object is undefined: NaN, and NaN >= need is false.
            (None, None) => f64::NAN,
        };
        let present = Val::Num(options_len - missing.len() as f64);
        if less_than(&present, &need, &mut self.budget)? == Some(false) {
            Ok(Val::empty_array())
        } else {
            Val::array(missing)
        }
    }
}

/// `map[name]`. Event objects are small, and for a few keys comparing them is cheaper than
/// hashing the name with serde_json's SipHash (a quarter of a simple rule's time).
fn object_get<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if map.len() <= 16 {
        map.iter()
            .find(|(key, _)| key.as_str() == name)
            .map(|(_, value)| value)
    } else {
        map.get(name)
    }
}

/// What `var` gives for a path that is not there: the default, or null without one.
fn not_found(default: Val<'_>) -> Val<'_> {
    match default {
        Val::Undefined => Val::Null,
        other => other,
    }
}

/// `parseFloat` of a number that is already one: itself, but -0 reads back as 0.
fn float_of(n: f64) -> f64 {
    if n == 0.0 {
        0.0
    } else {
        n
    }
}

/// `String.prototype.substr(start, length)` with both already integers (or ±Infinity).
fn substring(text: &str, start: f64, length: Option<f64>) -> String {
    let size = utf16_len(text) as f64;
    let start = if start < 0.0 {
        (size + start).max(0.0)
    } else {
        start.min(size)
    };
    let length = length.map_or(size, |l| l.clamp(0.0, size));
    let end = (start + length).min(size);
    if end <= start {
        return String::new();
    }
    utf16_slice(text, start as usize, end as usize)
}
