//! Turns a JSONLogic rule into a tree of resolved operators, once: operator names looked up,
//! `var` paths split, literal arrays kept as they are, constant sub-expressions folded.
//! Everything wrong with a rule that can be known without data is reported here, with a path.

use super::budget::Budget;
use super::eval::Evaluator;
use super::value::{to_js_string, Val};
use super::{CompileError, EvalError, Limits};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::io;

/// Deepest `max_depth` honoured whatever the caller asks: compiling and evaluating recurse
/// once per level, and this keeps that well inside a 2 MiB thread stack.
pub const HARD_MAX_DEPTH: usize = 256;

#[derive(Debug)]
pub(crate) enum Node {
    /// Only from folding (`{"and": []}` is `undefined` in json-logic-js).
    Undefined,
    Null,
    Bool(bool),
    Num(f64),
    Str(Box<str>),
    /// An array with no logic in it.
    LiteralArray(Vec<Value>),
    /// An object that is not one operator: data, returned as it is.
    Object(Box<Map<String, Value>>),
    /// An array with logic in it, evaluated item by item.
    Array(Box<[Node]>),
    Var(Box<Var>),
    Op(Op, Box<[Node]>),
}

#[derive(Debug)]
pub(crate) struct Var {
    pub(crate) path: Path,
    /// The second argument; json-logic-js evaluates it whether or not the path is found.
    pub(crate) default: Option<Node>,
}

#[derive(Debug)]
pub(crate) enum Path {
    /// `{"var": ""}`, `{"var": null}`, `{"var": []}`: the whole data.
    Whole,
    /// A constant path, split at dots.
    Keys(Box<[Key]>),
    /// A path computed by logic, split at each evaluation.
    Dynamic(Node),
}

#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) name: Box<str>,
    /// The array index this key names, if it is one (`"0"`, `"12"`; not `"01"` or `"-1"`).
    pub(crate) index: Option<usize>,
}

impl Key {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            index: array_index(name),
        }
    }
}

/// The index a property name denotes on an array, as JavaScript reads it: a canonical
/// decimal integer below 2^32 - 1.
pub(crate) fn array_index(name: &str) -> Option<usize> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    let value: u64 = name.parse().ok()?;
    if value >= u64::from(u32::MAX) {
        return None;
    }
    usize::try_from(value).ok()
}

macro_rules! operators {
    ($($variant:ident => $name:literal),+ $(,)?) => {
        /// Every operator of json-logic-js 2.0.5 but `method`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Op { $($variant),+ }

        impl Op {
            fn from_name(name: &str) -> Option<Op> {
                match name {
                    $($name => Some(Op::$variant),)+
                    "?:" => Some(Op::If),
                    _ => None,
                }
            }

            /// The operator as rules spell it.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)+
                }
            }
        }
    };
}

operators! {
    Var => "var",
    Missing => "missing",
    MissingSome => "missing_some",
    If => "if",
    Eq => "==",
    StrictEq => "===",
    Ne => "!=",
    StrictNe => "!==",
    Not => "!",
    NotNot => "!!",
    Or => "or",
    And => "and",
    Lt => "<",
    Le => "<=",
    Gt => ">",
    Ge => ">=",
    Max => "max",
    Min => "min",
    Add => "+",
    Sub => "-",
    Mul => "*",
    Div => "/",
    Mod => "%",
    Map => "map",
    Filter => "filter",
    Reduce => "reduce",
    All => "all",
    None => "none",
    Some => "some",
    Merge => "merge",
    In => "in",
    Cat => "cat",
    Substr => "substr",
    Log => "log",
}

impl Op {
    /// How many arguments an operator accepts, where any other count is a mistake rather
    /// than something json-logic-js gives a meaning to. `(min, max, what they are)`.
    fn arity(self) -> Option<(usize, usize, &'static str)> {
        Some(match self {
            Op::Var => (0, 2, "a path and an optional default"),
            Op::MissingSome => (2, 2, "how many keys are needed and the list of keys"),
            Op::Eq
            | Op::StrictEq
            | Op::Ne
            | Op::StrictNe
            | Op::Gt
            | Op::Ge
            | Op::In
            | Op::Div
            | Op::Mod => (2, 2, "two values"),
            Op::Lt | Op::Le => (2, 3, "two values, or three for a between test"),
            Op::Not | Op::NotNot | Op::Log => (1, 1, "one value"),
            Op::Sub => (1, 2, "one value to negate or two to subtract"),
            Op::Mul => (1, usize::MAX, "at least one value"),
            Op::Map | Op::Filter | Op::All | Op::None | Op::Some => {
                (2, 2, "an array and the logic applied to each item")
            }
            Op::Reduce => (
                2,
                3,
                "an array, the logic applied to each item and an optional initial value",
            ),
            Op::Substr => (1, 3, "a string, an optional start and an optional length"),
            Op::Missing
            | Op::If
            | Op::Or
            | Op::And
            | Op::Max
            | Op::Min
            | Op::Add
            | Op::Merge
            | Op::Cat => return None,
        })
    }

    /// Ops whose result depends only on their arguments' values, so constant arguments make
    /// a constant result. (`var` and `missing*` read the data; the iterating ops evaluate
    /// their logic against items, which is rarely constant.)
    fn foldable(self) -> bool {
        !matches!(
            self,
            Op::Var
                | Op::Missing
                | Op::MissingSome
                | Op::Map
                | Op::Filter
                | Op::Reduce
                | Op::All
                | Op::None
                | Op::Some
        )
    }
}

/// A compile failure on its way up: path segments are collected innermost first.
pub(crate) struct Fail {
    segments: Vec<Segment>,
    message: String,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl Fail {
    fn new(message: impl Into<String>) -> Self {
        Self {
            segments: Vec::new(),
            message: message.into(),
        }
    }

    fn at(mut self, segment: Segment) -> Self {
        self.segments.push(segment);
        self
    }

    fn into_error(self) -> CompileError {
        let mut path = String::new();
        for segment in self.segments.iter().rev() {
            match segment {
                Segment::Key(key) => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                Segment::Index(i) => {
                    path.push('[');
                    path.push_str(&i.to_string());
                    path.push(']');
                }
            }
        }
        CompileError {
            path,
            message: self.message,
        }
    }
}

/// Checks a rule's size and nesting, then compiles it.
pub(crate) fn compile(rule: &Value, limits: &Limits) -> Result<Node, CompileError> {
    let max_depth = limits.max_depth.min(HARD_MAX_DEPTH);
    check_depth(rule, max_depth, max_depth).map_err(Fail::into_error)?;
    check_size(rule, limits.max_rule_bytes)?;
    Compiler { limits }.node(rule).map_err(Fail::into_error)
}

/// Nesting of arrays and objects (scalars 0, `{"var": "a"}` 1), checked before anything
/// else recurses over the rule. Recursion stops at the limit, so it is bounded too.
fn check_depth(value: &Value, allowed: usize, max_depth: usize) -> Result<(), Fail> {
    let children: Box<dyn Iterator<Item = (Segment, &Value)>> = match value {
        Value::Array(items) => Box::new(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (Segment::Index(i), v)),
        ),
        Value::Object(map) => Box::new(map.iter().map(|(k, v)| (Segment::Key(k.clone()), v))),
        _ => return Ok(()),
    };
    if allowed == 0 {
        return Err(Fail::new(format!(
            "is nested more than {max_depth} levels deep; a rule may nest at most {max_depth} \
             levels of arrays and objects"
        )));
    }
    for (segment, child) in children {
        if let Err(fail) = check_depth(child, allowed - 1, max_depth) {
            return Err(fail.at(segment));
        }
    }
    Ok(())
}

fn check_size(rule: &Value, max_bytes: usize) -> Result<(), CompileError> {
    struct Counter {
        bytes: usize,
        max: usize,
    }
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.max {
                // Stop serializing: the size is already known to be too big.
                return Err(io::Error::other("rule too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter {
        bytes: 0,
        max: max_bytes,
    };
    serde_json::to_writer(&mut counter, rule).map_err(|_| CompileError {
        path: String::new(),
        message: format!("the rule is larger than {max_bytes} bytes of JSON, the most allowed"),
    })
}

struct Compiler<'l> {
    limits: &'l Limits,
}

impl Compiler<'_> {
    fn node(&self, value: &Value) -> Result<Node, Fail> {
        Ok(match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Node::Str(s.as_str().into()),
            Value::Array(items) if !contains_logic(value) => Node::LiteralArray(items.clone()),
            Value::Array(items) => Node::Array(self.nodes(items)?),
            Value::Object(map) => match map.iter().next() {
                Some((name, args)) if map.len() == 1 => self.operator(name, args)?,
                _ => Node::Object(Box::new(map.clone())),
            },
        })
    }

    fn nodes(&self, items: &[Value]) -> Result<Box<[Node]>, Fail> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.node(item).map_err(|f| f.at(Segment::Index(i))))
            .collect()
    }

    /// `{name: args}`. Errors about the operator itself are reported at its node's path,
    /// errors inside its arguments at `name[i]` (or `name` for a single unwrapped argument).
    fn operator(&self, name: &str, args: &Value) -> Result<Node, Fail> {
        let Some(op) = Op::from_name(name) else {
            return Err(Fail::new(format!("unknown operator \"{name}\"")));
        };
        let at_op = |f: Fail| f.at(Segment::Key(name.to_owned()));
        // json-logic-js's shorthand: `{"var": "x"}` means `{"var": ["x"]}`.
        let (args, nodes) = match args {
            Value::Array(items) => (items.as_slice(), self.nodes(items).map_err(at_op)?),
            single => (
                std::slice::from_ref(single),
                Box::from([self.node(single).map_err(at_op)?]),
            ),
        };
        if let Some((min, max, what)) = op.arity() {
            if args.len() < min || args.len() > max {
                let expected = match (min, max) {
                    (min, max) if min == max => format!("{min}"),
                    (min, usize::MAX) => format!("at least {min}"),
                    (min, max) => format!("{min} to {max}"),
                };
                return Err(Fail::new(format!(
                    "\"{name}\" takes {expected} argument{} ({what}), got {}",
                    if expected == "1" { "" } else { "s" },
                    args.len()
                )));
            }
        }
        if op == Op::Var {
            return Ok(self.var(nodes));
        }
        let node = Node::Op(op, nodes);
        Ok(if op.foldable() { self.fold(node) } else { node })
    }

    fn var(&self, nodes: Box<[Node]>) -> Node {
        let mut nodes = nodes.into_vec().into_iter();
        let path = nodes.next();
        let default = nodes.next();
        let path = match path {
            None => Path::Whole,
            Some(node) => match constant(&node) {
                Some(value) => match var_path(&value, &mut Budget::new(self.limits)) {
                    Ok(Some(text)) => Path::Keys(text.split('.').map(Key::new).collect()),
                    Ok(None) => Path::Whole,
                    // Only a budget failure can end up here; leave it to each evaluation.
                    Err(_) => Path::Dynamic(node),
                },
                None => Path::Dynamic(node),
            },
        };
        Node::Var(Box::new(Var { path, default }))
    }

    /// Evaluates an operator whose arguments are all constants, and keeps the result if it is
    /// a scalar. Errors (a budget, say) are left for evaluation to report.
    fn fold(&self, node: Node) -> Node {
        let Node::Op(_, args) = &node else {
            return node;
        };
        if !args.iter().all(|arg| constant(arg).is_some()) {
            return node;
        }
        let folded = {
            let mut evaluator = Evaluator::new(self.limits);
            match evaluator.eval(&node, &Val::Null) {
                Ok(Val::Undefined) => Some(Node::Undefined),
                Ok(Val::Null) => Some(Node::Null),
                Ok(Val::Bool(b)) => Some(Node::Bool(b)),
                Ok(Val::Num(n)) => Some(Node::Num(n)),
                Ok(Val::Str(s)) => Some(Node::Str(s.into())),
                Ok(Val::String(s)) => Some(Node::Str(s.as_ref().into())),
                _ => None,
            }
        };
        folded.unwrap_or(node)
    }
}

/// The value of a node that needs no data, if it is one.
pub(crate) fn constant(node: &Node) -> Option<Val<'_>> {
    Some(match node {
        Node::Undefined => Val::Undefined,
        Node::Null => Val::Null,
        Node::Bool(b) => Val::Bool(*b),
        Node::Num(n) => Val::Num(*n),
        Node::Str(s) => Val::Str(s),
        Node::LiteralArray(items) => Val::Literal(items, 0),
        Node::Object(map) => Val::JsonObject(map),
        Node::Array(_) | Node::Var(_) | Node::Op(..) => return None,
    })
}

/// The text of a `var` path, or `None` for the whole data (`undefined`, `null`, `""`).
/// Any other value is turned into text, to be split at dots, as json-logic-js does
/// (`{"var": 1}` reads index 1).
pub(crate) fn var_path<'v>(
    path: &'v Val<'_>,
    budget: &mut Budget,
) -> Result<Option<Cow<'v, str>>, EvalError> {
    match path {
        Val::Undefined | Val::Null => Ok(None),
        other if other.as_str() == Some("") => Ok(None),
        other => to_js_string(other, budget).map(Some),
    }
}

/// Whether an array holds logic anywhere (directly or in nested arrays); data objects
/// inside it are not looked into, as json-logic-js does not evaluate them.
fn contains_logic(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(contains_logic),
        Value::Object(map) => map.len() == 1,
        _ => false,
    }
}
