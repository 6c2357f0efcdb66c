//! Random rules (operator trees over every operator, with any number of arguments, random
//! literals and `var` paths) against random data: compiling and evaluating never panic,
//! and under small limits every evaluation ends quickly, with a result or a budget error.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};
use sluice_core::logic::{truthy, EvalError, Limits, Logic};
use std::time::{Duration, Instant};

/// Every json-logic-js operator, plus names that must be refused.
const OPERATORS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    "<",
    "<=",
    ">",
    ">=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "map",
    "filter",
    "reduce",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "log",
    "method",
    "foo",
    "",
    "a.b",
];

const ITERATING: &[&str] = &["map", "filter", "all", "none", "some", "reduce"];

const KEYS: &[&str] = &[
    "a",
    "b",
    "x",
    "items",
    "qty",
    "0",
    "1",
    "accumulator",
    "current",
    "length",
    "",
    "a.b",
];

const PATHS: &[&str] = &[
    "",
    "a",
    "b",
    "x",
    "a.b",
    "a.0",
    "items",
    "items.0.qty",
    "items.length",
    "0",
    "1",
    "length",
    "accumulator",
    "current",
    "current.qty",
    "a..b",
    "-1",
    "01",
];

fn literal() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..20).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        select(vec![
            0.5, -1.5, 1e21, 1e-7, 0.1, -0.0, 3.0, 1e308, -1e308, 5e-324
        ])
        .prop_map(|f| json!(f)),
        select(vec![
            "",
            "0",
            "1",
            "a",
            "b",
            "1.5",
            " 2 ",
            "0x10",
            "a.b",
            "length",
            "😀",
            "h😀llo",
            "abc",
            "-1",
            "Infinity",
            "1e3",
            "true",
            "null",
            "[object Object]",
        ])
        .prop_map(Value::from),
        "[a-c0-9. ]{0,6}".prop_map(Value::from),
    ]
}

fn object(key: &str, value: Value) -> Value {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    Value::Object(map)
}

fn rule(depth: u32, size: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        4 => literal(),
        3 => select(PATHS).prop_map(|p| json!({ "var": p })),
        1 => (select(PATHS), literal()).prop_map(|(p, d)| json!({ "var": [p, d] })),
        1 => (-2i64..4).prop_map(|i| json!({ "var": i })),
    ];
    leaf.prop_recursive(depth, size, 5, |inner| {
        prop_oneof![
            6 => (select(OPERATORS), prop::collection::vec(inner.clone(), 0..5))
                .prop_map(|(op, args)| object(op, Value::Array(args))),
            2 => (select(OPERATORS), inner.clone()).prop_map(|(op, arg)| object(op, arg)),
            3 => (select(ITERATING), inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(op, list, logic, init)| {
                    if op == "reduce" {
                        object(op, json!([list, logic, init]))
                    } else {
                        object(op, json!([list, logic]))
                    }
                }),
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            1 => (inner.clone(), inner).prop_map(|(a, b)| json!({ "k1": a, "k2": b })),
        ]
    })
}

fn data(max_items: usize) -> impl Strategy<Value = Value> {
    literal().prop_recursive(4, 64, max_items as u32, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..max_items).prop_map(Value::Array),
            prop::collection::vec((select(KEYS), inner), 0..6).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// The shape of a value with every number replaced by 0.
fn kinds(value: &Value) -> Value {
    match value {
        Value::Number(_) => json!(0),
        Value::Array(items) => Value::Array(items.iter().map(kinds).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), kinds(v))).collect())
        }
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn compiling_and_evaluating_never_panic(rule in rule(5, 40), data in data(6)) {
        let Ok(logic) = Logic::compile(&rule, &Limits::default()) else {
            return Ok(());
        };
        let evaluated = logic.evaluate(&data);
        let matched = logic.matches(&data);
        if let (Ok(value), Ok(matched)) = (&evaluated, &matched) {
            // matches() is the truthiness of evaluate(), without building the JSON; except
            // that ±Infinity (null as JSON) is truthy, as it is in json-logic-js.
            prop_assert!(
                truthy(value) == *matched || (value.is_null() && *matched),
                "rule {} data {} gave {} but matches() said {}", rule, data, value, matched
            );
            // The result is plain JSON (serde_json's float parsing may move the last
            // digit, so the round trip is compared by structure, not bit for bit).
            let text = serde_json::to_string(value).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(kinds(&back), kinds(value));
        }
        // Evaluation is deterministic.
        prop_assert_eq!(logic.evaluate(&data), evaluated);
    }

    #[test]
    fn compile_errors_have_a_message(rule in rule(5, 40)) {
        if let Err(err) = Logic::compile(&rule, &Limits::default()) {
            prop_assert!(!err.message.is_empty());
            prop_assert!(!err.to_string().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Bigger, deeper rules over bigger data under small limits: every evaluation ends
    /// quickly, and the only failures are the sandbox's (or missing_some of null).
    #[test]
    fn deep_rules_end_within_the_budget(rule in rule(10, 200), data in data(40)) {
        let limits = Limits {
            max_operations: 20_000,
            max_bytes_built: 256 * 1024,
            ..Limits::default()
        };
        let Ok(logic) = Logic::compile(&rule, &limits) else {
            return Ok(());
        };
        let started = Instant::now();
        for result in [logic.evaluate(&data).map(|_| ()), logic.matches(&data).map(|_| ())] {
            if let Err(err) = result {
                prop_assert!(
                    err.is_budget() || matches!(err, EvalError::Type(_)),
                    "unexpected {:?}", err
                );
            }
        }
        prop_assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    }
}
