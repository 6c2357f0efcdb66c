//! JSONLogic rule conditions: compiled once when a rule is saved, evaluated per event inside
//! a budget, with the semantics of json-logic-js 2.0.5 (the reference implementation).
//!
//! Semantics follow json-logic-js exactly for every operator it has except `method`, down
//! to JavaScript's coercions (loose `==`, `parseFloat` in `+`/`*`, `String(number)` in
//! `cat`, the truthiness of `[]`, `"0"` and `{}`). Where we differ, it is on purpose:
//!
//! - Unknown operators and argument counts that mean nothing (`{"map": [x]}`) are rejected
//!   when the rule is compiled, with a path into the rule; json-logic-js throws, or returns
//!   something meaningless, only when evaluation reaches them.
//! - Values from the data are never evaluated as logic. json-logic-js's `missing` and
//!   `missing_some` feed keys back into its evaluator, so a key that is a one-key object in
//!   the data would run as an operator; here it is read as a path (`[object Object]`).
//! - NaN and ±Infinity stay numbers while a rule runs (`{"<": [{"/": [1, 0]}, 5]}` is
//!   false, as in JavaScript) but come out of [`Logic::evaluate`] as `null`, which is what
//!   json-logic-js's results turn into as JSON. Likewise `undefined` (`{"and": []}`) comes
//!   out as `null`, and in a returned object its key is left out.
//! - `var` reads object keys, array and string indexes and `length`, not prototype members
//!   (`toString`, `constructor`); a string index that splits a surrogate pair, which
//!   JavaScript keeps as a lone surrogate, gives U+FFFD, as does `substr` cutting one.
//! - `log` returns its argument and prints nothing: this crate does no I/O.
//! - Integers from the data are returned exactly as given, even past 2^53 where JavaScript
//!   would round them; computed integral numbers come back as integers (`3`, not `3.0`).
//! - Evaluations that exceed the budget (see [`Limits`]) fail with an [`EvalError`] where
//!   json-logic-js would run on or run out of memory; values nested more than 512 levels
//!   deep are refused for the same reason.

mod budget;
mod compile;
mod eval;
mod explain;
mod number;
mod value;

use crate::error::FieldError;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

pub use budget::MAX_VALUE_DEPTH;
pub use compile::HARD_MAX_DEPTH;
pub use explain::{summary, tree_lines, Explanation, TreeLine, LOOP_ITEMS_SHOWN};

/// What one rule may cost. Size and nesting are checked when a rule is compiled; operations
/// and bytes are counted afresh by every evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest rule accepted, in bytes of compact JSON.
    pub max_rule_bytes: usize,
    /// Deepest nesting of arrays and objects in a rule, counted like
    /// [`crate::event::depth`] (`{"var": "a"}` is 1, `{"and": [{"var": "a"}]}` is 3).
    /// Values above [`HARD_MAX_DEPTH`] act as that.
    pub max_depth: usize,
    /// Operations per evaluation: one per node visited and per item iterated (by `map`,
    /// `filter`, `reduce`, `all`, `none`, `some`, `merge`, `in`, `missing`, and by arrays
    /// turned into text), plus one per 64 bytes of text searched by `in`.
    pub max_operations: u64,
    /// Bytes of strings and arrays built per evaluation, including the result: text by its
    /// length, arrays at 24 bytes an item, the result at 16 bytes a value plus its text.
    pub max_bytes_built: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_rule_bytes: 64 * 1024,
            max_depth: 64,
            max_operations: 100_000,
            max_bytes_built: 4 * 1024 * 1024,
        }
    }
}

/// A compiled rule condition. Cheap to clone and shareable between threads; it keeps the
/// limits it was compiled with and applies them to every evaluation.
#[derive(Clone)]
pub struct Logic {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: Value,
    root: compile::Node,
    limits: Limits,
}

impl Logic {
    /// Validates and compiles `rule`: size and nesting within `limits`, every operator
    /// known, argument counts that mean something.
    pub fn compile(rule: &Value, limits: &Limits) -> Result<Logic, CompileError> {
        let root = compile::compile(rule, limits)?;
        Ok(Logic {
            inner: Arc::new(Compiled {
                source: rule.clone(),
                root,
                limits: *limits,
            }),
        })
    }

    /// Evaluates the rule against `data`, returning its result as JSON.
    pub fn evaluate(&self, data: &Value) -> Result<Value, EvalError> {
        let mut evaluator = eval::Evaluator::new(&self.inner.limits);
        let result = evaluator.eval(&self.inner.root, &value::Val::from_json(data))?;
        value::to_json(&result, &mut evaluator.budget, 0)
    }

    /// Whether the rule's result is truthy (see [`truthy`]). Cheaper than
    /// [`evaluate`](Self::evaluate): the result is never turned into JSON. The truthiness is
    /// that of the JavaScript value, so a result of ±Infinity (`null` once it is JSON)
    /// matches, as it does with json-logic-js.
    pub fn matches(&self, data: &Value) -> Result<bool, EvalError> {
        let mut evaluator = eval::Evaluator::new(&self.inner.limits);
        let result = evaluator.eval(&self.inner.root, &value::Val::from_json(data))?;
        Ok(result.truthy())
    }

    /// Like [`matches`](Self::matches), but under a budget no larger than `cap` (each limit
    /// the smaller of the rule's and the cap's). A budget error when `cap` is below the
    /// rule's own limits means "too costly to decide under the cap", not that the rule fails:
    /// callers run cheap evaluations under a cap where they are and move the rest elsewhere.
    pub fn matches_capped(&self, data: &Value, cap: &Limits) -> Result<bool, EvalError> {
        let limits = self.capped(cap);
        let mut evaluator = eval::Evaluator::new(&limits);
        let result = evaluator.eval(&self.inner.root, &value::Val::from_json(data))?;
        Ok(result.truthy())
    }

    /// Like [`evaluate`](Self::evaluate), under a budget no larger than `cap` (see
    /// [`matches_capped`](Self::matches_capped)).
    pub fn evaluate_capped(&self, data: &Value, cap: &Limits) -> Result<Value, EvalError> {
        let limits = self.capped(cap);
        let mut evaluator = eval::Evaluator::new(&limits);
        let result = evaluator.eval(&self.inner.root, &value::Val::from_json(data))?;
        value::to_json(&result, &mut evaluator.budget, 0)
    }

    /// Whether `cap` leaves this rule less budget than its own limits give it.
    pub fn is_capped_by(&self, cap: &Limits) -> bool {
        cap.max_operations < self.inner.limits.max_operations
            || cap.max_bytes_built < self.inner.limits.max_bytes_built
    }

    fn capped(&self, cap: &Limits) -> Limits {
        let own = &self.inner.limits;
        Limits {
            max_operations: own.max_operations.min(cap.max_operations),
            max_bytes_built: own.max_bytes_built.min(cap.max_bytes_built),
            ..*own
        }
    }

    /// Evaluates like [`evaluate`](Self::evaluate) and also reports how many operations of
    /// the budget the evaluation used.
    pub fn evaluate_counted(&self, data: &Value) -> Result<(Value, u64), EvalError> {
        let mut evaluator = eval::Evaluator::new(&self.inner.limits);
        let result = evaluator.eval(&self.inner.root, &value::Val::from_json(data))?;
        let json = value::to_json(&result, &mut evaluator.budget, 0)?;
        Ok((json, evaluator.budget.operations()))
    }

    /// Evaluates like [`evaluate`](Self::evaluate), under the same budget, and explains the
    /// result: a tree of every node with its value (see [`Explanation`]) and a one-line
    /// summary. Plain evaluation does not pay for this: the evaluator's tracing compiles
    /// away when nobody explains.
    pub fn explain(&self, data: &Value) -> Result<Explained, EvalError> {
        self.explain_capped(data, &self.inner.limits)
    }

    /// Like [`explain`](Self::explain), under a budget no larger than `cap`.
    pub fn explain_capped(&self, data: &Value, cap: &Limits) -> Result<Explained, EvalError> {
        let limits = self.capped(cap);
        let mut evaluator = eval::Evaluator::traced(&limits, explain::Explainer::default());
        let result = evaluator.eval(&self.inner.root, &value::Val::from_json(data))?;
        let matched = result.truthy();
        let json = value::to_json(&result, &mut evaluator.budget, 0)?;
        let truncated = evaluator.trace.truncated;
        let tree = evaluator
            .trace
            .into_tree()
            .ok_or_else(|| EvalError::Type("nothing was evaluated".to_owned()))?;
        Ok(Explained {
            summary: summary(&tree),
            result: json,
            matched,
            tree,
            truncated,
        })
    }

    /// The rule as it was given.
    pub fn source(&self) -> &Value {
        &self.inner.source
    }

    /// The limits this rule was compiled with and is evaluated under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }
}

/// A result with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Explained {
    pub result: Value,
    /// Whether the result is truthy, as [`Logic::matches`] says.
    pub matched: bool,
    pub tree: Explanation,
    /// One line: the comparisons that decided the result, with their values.
    pub summary: String,
    /// Parts of the tree were left out to keep it under 64 KiB.
    pub truncated: bool,
}

impl fmt::Debug for Logic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logic")
            .field("source", &self.inner.source)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

/// JSONLogic truthiness (json-logic-js's `truthy`): `false`, `null`, `0`, `""` and `[]` are
/// false; everything else, including `"0"` and `{}`, is true.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(_) => true,
    }
}

/// Why a rule does not compile, located by a path into the rule such as `and[1].var` (or
/// `""` for the rule as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for CompileError {}

impl From<CompileError> for FieldError {
    fn from(error: CompileError) -> Self {
        FieldError::new(error.path, error.message)
    }
}

/// Why an evaluation failed. The messages are written to be shown to the rule's author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// More nodes visited and items iterated than [`Limits::max_operations`].
    #[error("operation budget of {limit} exhausted")]
    OperationBudget { limit: u64 },
    /// More bytes of strings and arrays built than [`Limits::max_bytes_built`].
    #[error("built more than {limit} bytes of strings and arrays")]
    BytesBudget { limit: u64 },
    /// A value built or read nests deeper than [`MAX_VALUE_DEPTH`].
    #[error("a value nested more than {limit} levels deep")]
    TooDeep { limit: usize },
    /// Something json-logic-js would throw a TypeError for, such as `missing_some` of null.
    #[error("{0}")]
    Type(String),
}

impl EvalError {
    /// Whether the rule was stopped by the sandbox rather than by an error in its logic.
    pub fn is_budget(&self) -> bool {
        !matches!(self, EvalError::Type(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(rule: Value, data: Value) -> Value {
        Logic::compile(&rule, &Limits::default())
            .unwrap()
            .evaluate(&data)
            .unwrap()
    }

    #[test]
    fn seed_rule_matches_large_amounts() {
        let logic =
            Logic::compile(&json!({">=": [{"var": "amount"}, 50]}), &Limits::default()).unwrap();
        assert!(logic.matches(&json!({"amount": 100})).unwrap());
        assert!(!logic.matches(&json!({"amount": 10})).unwrap());
        assert!(!logic.matches(&json!({})).unwrap());
    }

    #[test]
    fn integral_results_are_integers() {
        assert_eq!(eval(json!({"+": [1.5, 1.5]}), json!(null)).to_string(), "3");
        assert_eq!(
            eval(json!({"var": "x"}), json!({"x": 2.0})).to_string(),
            "2"
        );
        assert_eq!(eval(json!({"/": [1, 0]}), json!(null)), Value::Null);
    }

    #[test]
    fn errors_carry_paths() {
        let err =
            Logic::compile(&json!({"and": [true, {"foo": [1]}]}), &Limits::default()).unwrap_err();
        assert_eq!(err.path, "and[1]");
        assert!(err.message.contains("unknown operator \"foo\""));
        let err = Logic::compile(
            &json!({"reduce": [[1], {"merge": [{"map": [1]}]}, 0]}),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.path, "reduce[1].merge[0]");
        let field: FieldError = err.into();
        assert_eq!(field.path, "reduce[1].merge[0]");
    }

    #[test]
    fn logic_is_shareable() {
        fn assert_traits<T: Clone + Send + Sync + fmt::Debug>() {}
        assert_traits::<Logic>();
    }

    #[test]
    fn json_truthiness() {
        for falsy in [json!(null), json!(false), json!(0), json!(""), json!([])] {
            assert!(!truthy(&falsy), "{falsy}");
        }
        for truthy_value in [json!("0"), json!({}), json!([0]), json!(-1), json!(" ")] {
            assert!(truthy(&truthy_value), "{truthy_value}");
        }
    }
}
