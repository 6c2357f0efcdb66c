//! Why a rule matched or not: an evaluation watched node by node ([`Explainer`], a
//! [`Trace`]) becomes an [`Explanation`] tree — each node with its operator and its value,
//! `var` nodes with their path, arguments never reached marked `skipped`, loops shown by
//! their first few items and a count — and a one-line [`summary`] naming the comparisons
//! that decided it, e.g. `amount (10) >= 50 is false`.
//!
//! It is the same evaluation as [`Logic::evaluate`](super::Logic::evaluate), under the same
//! budget; only the tracer differs. The tree is bounded: values are previews (long strings
//! cut, the first items of arrays and keys of objects), loops keep [`LOOP_ITEMS_SHOWN`]
//! items, and once the tree holds [`TREE_BUDGET_BYTES`] the rest is left out and the
//! explanation says it is `truncated` — so whatever the data, it stays under 64 KiB.

use super::compile::{Node, Op, Path};
use super::eval::Trace;
use super::value::{number_to_json, Val};
use serde::Serialize;
use serde_json::{Map, Value};

/// Per-item explanations a loop (`map`, `filter`, `all`, `none`, `some`, `reduce`) keeps.
pub const LOOP_ITEMS_SHOWN: usize = 3;
/// Roughly how many bytes of JSON the tree may take before the rest is left out.
pub const TREE_BUDGET_BYTES: usize = 48 * 1024;
/// Bytes one value's preview may take.
const PREVIEW_BYTES: usize = 320;
/// Characters of a string shown in a preview.
const PREVIEW_CHARS: usize = 80;
const PREVIEW_ITEMS: usize = 5;
const PREVIEW_DEPTH: usize = 3;
/// Characters of a one-line summary.
const SUMMARY_CHARS: usize = 600;

/// One node of an explanation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The operator; `null` for a literal (or an array holding logic).
    pub op: Option<&'static str>,
    /// For `var`: the path read (`""` is the whole data).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub var: Option<String>,
    /// Never evaluated: `and`/`or`/`if` decided before reaching it.
    #[serde(skip_serializing_if = "is_false")]
    pub skipped: bool,
    /// What the node evaluated to (a preview: see `value_cut`); absent when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// The value was too large to show whole.
    #[serde(skip_serializing_if = "is_false")]
    pub value_cut: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Explanation>,
    /// For loops: the explanations of the logic for the first items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<Explanation>>,
    /// For loops: how many items the logic ran for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Left out to keep the explanation small.
    #[serde(skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Explanation {
    fn bare(node: &Node) -> Explanation {
        Explanation {
            op: op_name(node),
            var: match node {
                Node::Var(var) => match &var.path {
                    Path::Keys(keys) => Some(shorten(&join_keys(keys), PREVIEW_CHARS).0),
                    Path::Whole => Some(String::new()),
                    Path::Dynamic(_) => None,
                },
                _ => None,
            },
            skipped: false,
            value: None,
            value_cut: false,
            args: Vec::new(),
            items: None,
            count: None,
            truncated: false,
        }
    }

    fn skipped(node: &Node) -> Explanation {
        Explanation {
            skipped: true,
            ..Explanation::bare(node)
        }
    }

    fn left_out(node: &Node) -> Explanation {
        Explanation {
            truncated: true,
            ..Explanation::bare(node)
        }
    }

    /// Whether the node's value is truthy (a skipped node has none).
    pub fn truthy(&self) -> Option<bool> {
        self.value.as_ref().map(super::truthy)
    }
}

fn op_name(node: &Node) -> Option<&'static str> {
    match node {
        Node::Op(op, _) => Some(op.name()),
        Node::Var(_) => Some("var"),
        _ => None,
    }
}

fn join_keys(keys: &[super::compile::Key]) -> String {
    keys.iter().map(|k| &*k.name).collect::<Vec<_>>().join(".")
}

fn addr(node: &Node) -> usize {
    node as *const Node as usize
}

fn is_loop(op: Op) -> bool {
    matches!(
        op,
        Op::Map | Op::Filter | Op::All | Op::None | Op::Some | Op::Reduce
    )
}

/// Why a frame builds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    No,
    /// A loop item past the ones shown: only counted.
    LoopItem,
    /// Past the tree's budget: shown as `truncated`.
    OverBudget,
    /// Inside a quiet frame.
    Inside,
}

struct Frame {
    addr: usize,
    /// For a loop: its per-item logic.
    loop_logic: Option<usize>,
    children: Vec<(usize, Explanation)>,
    items: Vec<Explanation>,
    count: u64,
    quiet: Quiet,
}

/// Builds an explanation while the evaluator runs.
#[derive(Default)]
pub(crate) struct Explainer {
    stack: Vec<Frame>,
    root: Option<Explanation>,
    bytes: usize,
    pub(crate) truncated: bool,
}

impl Explainer {
    pub(crate) fn into_tree(self) -> Option<Explanation> {
        self.root
    }

    /// Counts `bytes` against the tree's budget; false once it is spent.
    fn spend(&mut self, bytes: usize) -> bool {
        if self.bytes.saturating_add(bytes) > TREE_BUDGET_BYTES {
            self.truncated = true;
            return false;
        }
        self.bytes += bytes;
        true
    }

    fn build(&mut self, node: &Node, value: &Val<'_>, frame: Frame) -> Explanation {
        let Frame {
            mut children,
            items,
            count,
            ..
        } = frame;
        let mut take = |child: &Node| {
            let at = addr(child);
            children
                .iter()
                .position(|(a, _)| *a == at)
                .map(|i| children.swap_remove(i).1)
        };
        let mut out = Explanation::bare(node);
        let (preview, cut) = preview(value);
        out.value = Some(preview);
        out.value_cut = cut;
        let mut unreached = Vec::new();
        match node {
            Node::Op(op, args) => {
                for (i, arg) in args.iter().enumerate() {
                    if is_loop(*op) && i == 1 {
                        continue;
                    }
                    match take(arg) {
                        Some(child) => out.args.push(child),
                        None => unreached.push(arg),
                    }
                }
                if is_loop(*op) {
                    out.items = Some(items);
                    out.count = Some(count);
                }
            }
            Node::Var(var) => {
                if let Path::Dynamic(path) = &var.path {
                    if let Some(child) = take(path) {
                        let (path, _) = match &child.value {
                            Some(Value::String(s)) => shorten(s, PREVIEW_CHARS),
                            Some(Value::Null) | None => (String::new(), false),
                            Some(other) => shorten(&other.to_string(), PREVIEW_CHARS),
                        };
                        out.var = Some(path);
                        out.args.push(child);
                    }
                }
                if let Some(default) = &var.default {
                    if let Some(child) = take(default) {
                        out.args.push(child);
                    }
                }
            }
            Node::Array(nodes) => {
                for item in nodes.iter() {
                    if let Some(child) = take(item) {
                        out.args.push(child);
                    }
                }
            }
            _ => {}
        }
        // Arguments short-circuiting never reached, in their place among the others.
        if let Node::Op(op, args) = node {
            if !unreached.is_empty() {
                let mut ordered = Vec::with_capacity(args.len());
                let mut reached = std::mem::take(&mut out.args).into_iter();
                for (i, arg) in args.iter().enumerate() {
                    if is_loop(*op) && i == 1 {
                        continue;
                    }
                    if unreached.iter().any(|u| std::ptr::eq(*u, arg)) {
                        if self.spend(24) {
                            ordered.push(Explanation::skipped(arg));
                        }
                    } else if let Some(child) = reached.next() {
                        ordered.push(child);
                    }
                }
                out.args = ordered;
            }
        }
        out
    }
}

impl Trace for Explainer {
    const ON: bool = true;

    fn enter(&mut self, node: &Node) {
        let quiet = match self.stack.last() {
            Some(parent) if parent.quiet != Quiet::No => Quiet::Inside,
            Some(parent)
                if parent.loop_logic == Some(addr(node))
                    && parent.items.len() >= LOOP_ITEMS_SHOWN =>
            {
                Quiet::LoopItem
            }
            _ if self.bytes >= TREE_BUDGET_BYTES => Quiet::OverBudget,
            _ => Quiet::No,
        };
        let loop_logic = match node {
            Node::Op(op, args) if is_loop(*op) => args.get(1).map(addr),
            _ => None,
        };
        self.stack.push(Frame {
            addr: addr(node),
            loop_logic,
            children: Vec::new(),
            items: Vec::new(),
            count: 0,
            quiet,
        });
    }

    fn exit(&mut self, node: &Node, value: &Val<'_>) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let at = frame.addr;
        let explanation = match frame.quiet {
            Quiet::Inside => return,
            Quiet::LoopItem => {
                if let Some(parent) = self.stack.last_mut() {
                    parent.count += 1;
                }
                return;
            }
            Quiet::OverBudget => {
                self.truncated = true;
                if !self.spend(24) {
                    // Not even a marker fits: the parent's arguments just end here.
                    if let Some(parent) = self.stack.last_mut() {
                        if parent.loop_logic == Some(at) {
                            parent.count += 1;
                        }
                    }
                    return;
                }
                Explanation::left_out(node)
            }
            Quiet::No => {
                let explanation = self.build(node, value, frame);
                let size = 40
                    + explanation.var.as_ref().map_or(0, String::len)
                    + explanation
                        .value
                        .as_ref()
                        .map_or(0, |v| v.to_string().len());
                self.bytes = self.bytes.saturating_add(size);
                explanation
            }
        };
        match self.stack.last_mut() {
            Some(parent) if parent.loop_logic == Some(at) => {
                parent.count += 1;
                parent.items.push(explanation);
            }
            Some(parent) => parent.children.push((at, explanation)),
            None => self.root = Some(explanation),
        }
    }
}

/// A value as an explanation shows it, and whether it had to be cut.
fn preview(value: &Val<'_>) -> (Value, bool) {
    let mut room = PREVIEW_BYTES;
    let mut cut = false;
    let shown = preview_in(value, 0, &mut room, &mut cut);
    (shown, cut)
}

fn preview_in(value: &Val<'_>, depth: usize, room: &mut usize, cut: &mut bool) -> Value {
    match value {
        Val::Undefined | Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => {
            *room = room.saturating_sub(8);
            number_to_json(*n)
        }
        Val::Str(_) | Val::String(_) => {
            let text = value.as_str().unwrap_or_default();
            let limit = PREVIEW_CHARS.min(*room);
            let (shown, was_cut) = shorten(text, limit);
            *cut |= was_cut;
            *room = room.saturating_sub(shown.len() + 2);
            Value::String(shown)
        }
        Val::JsonObject(map) => {
            if depth >= PREVIEW_DEPTH || *room < 16 {
                *cut = true;
                return Value::String(format!("{{object of {} keys}}", map.len()));
            }
            let mut out = Map::new();
            for (key, item) in map.iter() {
                if out.len() >= PREVIEW_ITEMS || *room < 16 {
                    *cut = true;
                    out.insert(
                        "…".to_owned(),
                        Value::String(format!("{} more keys", map.len() - out.len())),
                    );
                    break;
                }
                let (key, was_cut) = shorten(key, PREVIEW_CHARS.min(*room));
                *cut |= was_cut;
                *room = room.saturating_sub(key.len() + 4);
                let item = preview_in(&Val::from_json(item), depth + 1, room, cut);
                out.insert(key, item);
            }
            Value::Object(out)
        }
        Val::Scope(scope) => {
            let mut out = Map::new();
            out.insert(
                "current".to_owned(),
                preview_in(&scope.current, depth + 1, room, cut),
            );
            out.insert(
                "accumulator".to_owned(),
                preview_in(&scope.accumulator, depth + 1, room, cut),
            );
            Value::Object(out)
        }
        other => {
            let Some(items) = other.items() else {
                return Value::Null;
            };
            let len = items.len();
            if depth >= PREVIEW_DEPTH || *room < 16 {
                *cut = true;
                return Value::String(format!("[array of {len} items]"));
            }
            let mut out = Vec::new();
            for i in 0..len {
                if out.len() >= PREVIEW_ITEMS || *room < 16 {
                    *cut = true;
                    out.push(Value::String(format!("… {} more items", len - i)));
                    break;
                }
                *room = room.saturating_sub(2);
                let item = items.get(i).unwrap_or(Val::Undefined);
                out.push(preview_in(&item, depth + 1, room, cut));
            }
            Value::Array(out)
        }
    }
}

/// `text` cut to `chars` characters (with `…`), and whether it was cut.
fn shorten(text: &str, chars: usize) -> (String, bool) {
    match text.char_indices().nth(chars) {
        None => (text.to_owned(), false),
        Some((end, _)) => (format!("{}…", &text[..end]), true),
    }
}

/// One line a person reads: the comparisons that decided the result, with their values,
/// e.g. `country ("AR") == "BR" is false; amount (250) >= 50 is true`.
pub fn summary(tree: &Explanation) -> String {
    let (line, _) = shorten(&describe(tree), SUMMARY_CHARS);
    line
}

fn describe(e: &Explanation) -> String {
    if e.skipped {
        return format!("{} was not evaluated", expression(e));
    }
    let value = render(e.value.as_ref());
    let args: Vec<&Explanation> = e.args.iter().filter(|a| !a.skipped).collect();
    match e.op {
        Some("and" | "or") => {
            if args.is_empty() {
                return format!("{} of nothing is {value}", e.op.unwrap_or_default());
            }
            args.iter()
                .map(|a| describe(a))
                .collect::<Vec<_>>()
                .join("; ")
        }
        Some(op @ ("==" | "!=" | "===" | "!==" | "<" | "<=" | ">" | ">=" | "in")) => {
            let operands: Vec<String> = e.args.iter().map(operand).collect();
            format!("{} is {value}", operands.join(&format!(" {op} ")))
        }
        Some(op @ ("!" | "!!")) => match e.args.first() {
            Some(inner) => format!("{op}{} is {value}", operand(inner)),
            None => format!("{op} is {value}"),
        },
        Some("if") => {
            // The conditions tried, in order; the last one tried chose the branch.
            let tried: Vec<String> = e
                .args
                .iter()
                .enumerate()
                .filter(|(i, a)| !a.skipped && (*i % 2 == 0) && *i + 1 < e.args.len())
                .map(|(_, a)| describe(a))
                .collect();
            if tried.is_empty() {
                format!("if is {value}")
            } else {
                format!("{}, so if is {value}", tried.join("; "))
            }
        }
        Some(op @ ("some" | "all" | "none" | "map" | "filter" | "reduce")) => {
            let list = match e.args.first() {
                Some(list) => match &list.value {
                    Some(Value::Array(items)) if !list.value_cut => {
                        format!("{} ({} items)", expression(list), items.len())
                    }
                    _ => operand(list),
                },
                None => String::new(),
            };
            let count = e.count.unwrap_or(0);
            let checked = if count == 1 {
                "1 item".to_owned()
            } else {
                format!("{count} items")
            };
            format!("{op} over {list}, {checked} checked, is {value}")
        }
        Some("var") => format!(
            "{} is {}",
            operand(e),
            if e.truthy() == Some(true) {
                "truthy"
            } else {
                "falsy"
            }
        ),
        None => format!("the constant {value}"),
        Some(_) => format!("{} is {value}", expression(e)),
    }
}

/// An operand with its value: `amount (10)`, `"BR"`, `amount + 1 (11)`.
fn operand(e: &Explanation) -> String {
    if e.skipped {
        return format!("{} (not evaluated)", expression(e));
    }
    match e.op {
        None => render(e.value.as_ref()),
        _ => format!("{} ({})", expression(e), render(e.value.as_ref())),
    }
}

/// How a person would write the node, without values: `amount`, `amount + 1`, `cat(…)`.
fn expression(e: &Explanation) -> String {
    match e.op {
        None => render(e.value.as_ref()),
        Some("var") => match e.var.as_deref() {
            Some("") => "data".to_owned(),
            Some(path) => path.to_owned(),
            None => "var(…)".to_owned(),
        },
        Some(op @ ("+" | "-" | "*" | "/" | "%")) if e.args.len() >= 2 => e
            .args
            .iter()
            .map(expression)
            .collect::<Vec<_>>()
            .join(&format!(" {op} ")),
        Some(op) => format!("{op}(…)"),
    }
}

fn render(value: Option<&Value>) -> String {
    match value {
        None => "?".to_owned(),
        Some(value) => shorten(&value.to_string(), 60).0,
    }
}

/// One line of an explanation drawn as an indented tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeLine {
    /// Nesting: 0 for the root.
    pub depth: usize,
    pub text: String,
    /// Never evaluated, or left out.
    pub muted: bool,
}

/// The tree as lines to print or show, one per node: `>= → false`, `var amount → 10`, `50`.
pub fn tree_lines(tree: &Explanation) -> Vec<TreeLine> {
    let mut lines = Vec::new();
    push_lines(tree, 0, "", &mut lines);
    lines
}

fn push_lines(e: &Explanation, depth: usize, label: &str, lines: &mut Vec<TreeLine>) {
    let value = render(e.value.as_ref());
    let name = match (e.op, e.var.as_deref()) {
        (Some("var"), Some(path)) => {
            format!("var {}", if path.is_empty() { "(data)" } else { path })
        }
        (Some(op), _) => op.to_owned(),
        (None, _) => String::new(),
    };
    let text = if e.skipped {
        format!(
            "{label}{} (not evaluated)",
            if name.is_empty() { "value" } else { &name }
        )
    } else if e.truncated {
        format!("{label}{} … (left out to keep this short)", name)
    } else if name.is_empty() {
        format!("{label}{value}")
    } else {
        match e.count {
            Some(count) => {
                let shown = e.items.as_ref().map_or(0, Vec::len);
                format!("{label}{name} → {value} ({count} items checked, first {shown} shown)")
            }
            None => format!("{label}{name} → {value}"),
        }
    };
    lines.push(TreeLine {
        depth,
        text,
        muted: e.skipped || e.truncated,
    });
    for arg in &e.args {
        push_lines(arg, depth + 1, "", lines);
    }
    for (i, item) in e.items.iter().flatten().enumerate() {
        push_lines(item, depth + 1, &format!("item {}: ", i + 1), lines);
    }
}
