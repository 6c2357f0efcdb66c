//! The sandbox: rules built to stall a worker or exhaust memory end quickly with an error
//! that names the limit, and rules too large or too deep are refused when compiled.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use sluice_core::logic::{EvalError, Limits, Logic, HARD_MAX_DEPTH, MAX_VALUE_DEPTH};
use std::time::{Duration, Instant};

fn compile(rule: &Value) -> Logic {
    Logic::compile(rule, &Limits::default()).unwrap()
}

/// Evaluates, asserting it fails within a second (debug build) and returning the error.
fn fails_quickly(logic: &Logic, data: &Value) -> EvalError {
    let started = Instant::now();
    let err = logic.evaluate(data).unwrap_err();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} to fail with {err}"
    );
    assert!(err.is_budget(), "{err:?}");
    err
}

fn range(n: usize) -> Value {
    Value::Array((0..n).map(Value::from).collect())
}

#[test]
fn doubling_an_array_with_merge_runs_out_of_budget() {
    let rule = json!({"reduce": [
        range(30),
        {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]},
        [1]
    ]});
    let err = fails_quickly(&compile(&rule), &json!({}));
    assert_eq!(err, EvalError::OperationBudget { limit: 100_000 });
    assert_eq!(err.to_string(), "operation budget of 100000 exhausted");
}

#[test]
fn doubling_is_stopped_by_bytes_before_it_is_allocated() {
    // With operations to spare, the byte limit stops merge before it allocates.
    let limits = Limits {
        max_operations: u64::MAX,
        ..Limits::default()
    };
    let rule = json!({"reduce": [
        range(60),
        {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]},
        [1]
    ]});
    let logic = Logic::compile(&rule, &limits).unwrap();
    let err = fails_quickly(&logic, &json!({}));
    assert_eq!(err, EvalError::BytesBudget { limit: 4_194_304 });
    assert!(
        err.to_string().contains("built more than 4194304 bytes"),
        "{err}"
    );
}

#[test]
fn three_nested_maps_over_300_items_run_out_of_operations() {
    let items = range(300);
    let rule = json!({"map": [
        {"var": "a"},
        {"map": [items.clone(), {"map": [items, {"+": [1, 1]}]}]}
    ]});
    let err = fails_quickly(&compile(&rule), &json!({ "a": range(300) }));
    assert_eq!(err, EvalError::OperationBudget { limit: 100_000 });
}

#[test]
fn cat_doubling_a_string_runs_out_of_bytes() {
    let rule = json!({"reduce": [
        range(40),
        {"cat": [{"var": "accumulator"}, {"var": "accumulator"}]},
        "0123456789abcdef"
    ]});
    let err = fails_quickly(&compile(&rule), &json!({}));
    assert_eq!(err, EvalError::BytesBudget { limit: 4_194_304 });
}

#[test]
fn cat_of_a_large_string_many_times_runs_out_of_bytes() {
    let rule = json!({"reduce": [
        {"var": "n"},
        {"cat": [{"var": "accumulator"}, "x"]},
        {"var": "big"}
    ]});
    let data = json!({"n": range(1000), "big": "y".repeat(100_000)});
    let err = fails_quickly(&compile(&rule), &data);
    assert_eq!(err, EvalError::BytesBudget { limit: 4_194_304 });
}

#[test]
fn returning_many_copies_of_the_data_runs_out_of_bytes() {
    // Doubling references to one large string is cheap; turning 4096 of them into JSON
    // is what would cost, and the byte budget stops it.
    let rule = json!({"reduce": [
        range(12),
        {"merge": [{"var": "accumulator"}, {"var": "accumulator"}]},
        [{"var": "big"}]
    ]});
    let data = json!({"big": "z".repeat(10_000)});
    let logic = compile(&rule);
    let err = fails_quickly(&logic, &data);
    assert_eq!(err, EvalError::BytesBudget { limit: 4_194_304 });
    // Matching needs no copies, so it succeeds.
    assert!(logic.matches(&data).unwrap());
}

#[test]
fn nesting_values_without_end_is_refused_not_a_stack_overflow() {
    let rule = json!({"reduce": [range(5000), [{"var": "accumulator"}], 0]});
    let err = fails_quickly(&compile(&rule), &json!({}));
    assert_eq!(
        err,
        EvalError::TooDeep {
            limit: MAX_VALUE_DEPTH
        }
    );
    let rule = json!({"reduce": [range(5000), {"var": ""}, 0]});
    let err = fails_quickly(&compile(&rule), &json!({}));
    assert!(matches!(err, EvalError::TooDeep { .. }), "{err:?}");
}

/// `[[[...1...]]]`, built without the `json!` macro (which copies recursively).
fn nested_arrays(levels: usize) -> Value {
    let mut data = json!(1);
    for _ in 0..levels {
        data = Value::Array(vec![data]);
    }
    data
}

/// Drops a deep value without recursing (serde_json's own drop recurses per level).
fn drop_deep(value: Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

#[test]
fn deeply_nested_data_is_refused_not_a_stack_overflow() {
    let data = nested_arrays(2000);
    for rule in [
        json!({"var": ""}),
        json!({"cat": [{"var": ""}]}),
        json!({"==": [{"var": ""}, "1"]}),
    ] {
        let err = fails_quickly(&compile(&rule), &data);
        assert!(matches!(err, EvalError::TooDeep { .. }), "{rule}: {err:?}");
    }
    // Reading a path into it is fine.
    let logic = compile(&json!({"var": "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"}));
    assert!(logic.matches(&data).unwrap());
    drop_deep(data);
}

#[test]
fn searching_huge_text_costs_operations() {
    let limits = Limits {
        max_operations: 1_000,
        ..Limits::default()
    };
    let logic = Logic::compile(&json!({"in": ["needle", {"var": "text"}]}), &limits).unwrap();
    assert!(!logic.matches(&json!({"text": "hay".repeat(100)})).unwrap());
    let err = logic
        .matches(&json!({"text": "hay".repeat(100_000)}))
        .unwrap_err();
    assert_eq!(err, EvalError::OperationBudget { limit: 1_000 });
}

#[test]
fn every_evaluation_gets_a_fresh_budget() {
    let limits = Limits {
        max_operations: 1_000,
        ..Limits::default()
    };
    let logic = Logic::compile(
        &json!({"map": [{"var": "a"}, {"+": [{"var": ""}, 1]}]}),
        &limits,
    )
    .unwrap();
    let data = json!({ "a": range(150) });
    let (_, used) = logic.evaluate_counted(&data).unwrap();
    assert!(used > 500 && used <= 1_000, "used {used}");
    for _ in 0..5 {
        logic.evaluate(&data).unwrap();
    }
    let err = logic.evaluate(&json!({ "a": range(400) })).unwrap_err();
    assert_eq!(err.to_string(), "operation budget of 1000 exhausted");
}

#[test]
fn a_rule_over_the_size_limit_is_refused() {
    let limits = Limits {
        max_rule_bytes: 1_000,
        ..Limits::default()
    };
    let small = json!({"in": [{"var": "x"}, ["a", "b"]]});
    assert!(Logic::compile(&small, &limits).is_ok());
    let big = json!({"in": [{"var": "x"}, vec!["abcdefgh"; 200]]});
    let err = Logic::compile(&big, &limits).unwrap_err();
    assert_eq!(err.path, "");
    assert!(err.message.contains("1000 bytes"), "{}", err.message);
    // The default is 64 KiB.
    let huge = json!({"in": [{"var": "x"}, vec!["abcdefgh"; 10_000]]});
    let err = Logic::compile(&huge, &Limits::default()).unwrap_err();
    assert!(err.message.contains("65536 bytes"), "{}", err.message);
}

/// `{"!": [{"!": [... {"var": "x"} ...]}]}`, built without the `json!` macro.
fn nested_not(levels: usize) -> Value {
    let mut rule = json!({"var": "x"});
    for _ in 0..levels {
        let mut map = serde_json::Map::new();
        map.insert("!".to_owned(), Value::Array(vec![rule]));
        rule = Value::Object(map);
    }
    rule
}

#[test]
fn a_rule_over_the_nesting_limit_is_refused_with_its_path() {
    // Each {"!": [...]} is two levels (object and array); the var object is one more.
    assert!(Logic::compile(&nested_not(31), &Limits::default()).is_ok());
    let err = Logic::compile(&nested_not(32), &Limits::default()).unwrap_err();
    assert!(err.message.contains("64 levels"), "{}", err.message);
    assert_eq!(err.path, "![0].".repeat(31) + "![0]");
    // A huge limit is capped, so compiling and evaluating cannot exhaust the stack.
    let limits = Limits {
        max_depth: usize::MAX,
        ..Limits::default()
    };
    let too_deep = nested_not(1000);
    let err = Logic::compile(&too_deep, &limits).unwrap_err();
    assert!(
        err.message.contains(&format!("{HARD_MAX_DEPTH} levels")),
        "{}",
        err.message
    );
    drop_deep(too_deep);
    let deepest = Logic::compile(&nested_not(HARD_MAX_DEPTH / 2 - 1), &limits).unwrap();
    assert_eq!(deepest.evaluate(&json!({"x": 1})).unwrap(), json!(false));
}

#[test]
fn unknown_operators_are_refused_with_their_path() {
    let err = Logic::compile(
        &json!({"and": [{"==": [1, 1]}, {"foo": [1]}]}),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(err.path, "and[1]");
    assert_eq!(err.message, "unknown operator \"foo\"");
    assert_eq!(err.to_string(), "and[1]: unknown operator \"foo\"");
    let err = Logic::compile(
        &json!({"if": [{"var": "a"}, {"var": {"bar": 1}}, 0]}),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(err.path, "if[1].var");
}

/// Data with a 400,000-character string under `big` (and a second, equal one under `twin`),
/// and 20,000 items to loop over: every string operator applied to `big` once per item must
/// be paid for by the length it reads, not only by the (small) result it builds.
fn long_text_data(unit: &str) -> Value {
    let big = unit.repeat(400_000 / unit.chars().count());
    json!({"items": range(20_000), "big": big, "twin": big.clone()})
}

/// A `reduce` over the 20,000 items whose step evaluates `step` (with the long text in the
/// accumulator) and keeps the accumulator as it is.
fn step_over_long_text(step: Value) -> Value {
    json!({"reduce": [
        {"var": "items"},
        {"if": [step, {"var": "accumulator"}, {"var": "accumulator"}]},
        {"var": "big"}
    ]})
}

/// Fails with a budget error (however long it takes: timings are measured in benchmarks).
fn fails_on_budget(rule: &Value, data: &Value) -> EvalError {
    let err = compile(rule).evaluate(data).unwrap_err();
    assert!(err.is_budget(), "{err:?}");
    err
}

#[test]
fn every_string_operator_pays_for_the_text_it_reads() {
    let acc = json!({"var": "accumulator"});
    let twin = json!({"var": "twin"});
    let steps = [
        ("substr", json!({"substr": [acc, -1]})),
        ("substr, negative length", json!({"substr": [acc, 1, -1]})),
        ("==", json!({"==": [acc, twin]})),
        ("===", json!({"===": [acc, twin]})),
        ("!=", json!({"!=": [acc, twin]})),
        ("<", json!({"<": [acc, twin]})),
        ("<=, three arguments", json!({"<=": ["a", acc, twin]})),
        ("+", json!({"+": [acc, 1]})),
        ("*", json!({"*": [acc, 2]})),
        ("-", json!({"-": [acc, 1]})),
        ("max", json!({"max": [acc, 1]})),
        ("in (text)", json!({"in": ["needle", acc]})),
        ("in (list)", json!({"in": [acc, [twin, twin]]})),
        ("var length", json!({"var": "accumulator.length"})),
        ("missing_some", json!({"missing_some": [1, acc]})),
        ("var with a path read from the data", json!({"var": acc})),
        (
            "missing with a key read from the data",
            json!({"missing": [acc]}),
        ),
    ];
    for unit in ["x", "é"] {
        let data = long_text_data(unit);
        for (name, step) in &steps {
            let rule = step_over_long_text(step.clone());
            let err = compile(&rule).evaluate(&data).unwrap_err();
            assert!(err.is_budget(), "{name} over {unit:?} text: {err:?}");
        }
    }
}

#[test]
fn a_short_string_operation_costs_no_more_than_before() {
    // Thousands of steps on short text stay within the budget: the charge follows length.
    let rule = json!({"reduce": [
        {"var": "items"},
        {"+": [{"var": "accumulator"}, {"substr": ["12345", 1, 1]}]},
        0
    ]});
    let data = json!({"items": range(5_000)});
    assert_eq!(compile(&rule).evaluate(&data).unwrap(), json!(10_000));
}

#[test]
fn array_operators_pay_per_item_over_large_lists() {
    let data = json!({"items": range(200_000)});
    for rule in [
        json!({"map": [{"var": "items"}, {"var": ""}]}),
        json!({"filter": [{"var": "items"}, true]}),
        json!({"all": [{"var": "items"}, {">=": [{"var": ""}, 0]}]}),
        json!({"none": [{"var": "items"}, {"<": [{"var": ""}, 0]}]}),
        json!({"some": [{"var": "items"}, {"<": [{"var": ""}, 0]}]}),
        json!({"reduce": [{"var": "items"}, {"var": "current"}, 0]}),
        json!({"merge": [{"var": "items"}, {"var": "items"}]}),
        json!({"in": [-1, {"var": "items"}]}),
        json!({"cat": [{"var": "items"}]}),
        json!({"missing": {"var": "items"}}),
    ] {
        fails_on_budget(&rule, &data);
    }
}
