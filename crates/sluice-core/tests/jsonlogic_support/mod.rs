//! Shared by the JSONLogic table tests: loads a `[rule, data, expected]` table (strings are
//! section headers) and runs every case, reporting each failure in full.

use serde_json::Value;
use sluice_core::logic::{Limits, Logic};
use std::path::PathBuf;

/// Loads `tests/data/jsonlogic/<name>` and returns its cases, headers dropped.
pub fn load_cases(name: &str) -> Vec<(Value, Value, Value)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jsonlogic")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let table: Vec<Value> = serde_json::from_str(&text).expect("table is a JSON array");
    table
        .into_iter()
        .filter(|entry| !entry.is_string())
        .map(|entry| match entry {
            Value::Array(mut parts) if parts.len() == 3 => {
                let expected = parts.pop().expect("three parts");
                let data = parts.pop().expect("three parts");
                let rule = parts.pop().expect("three parts");
                (rule, data, expected)
            }
            other => panic!("not a [rule, data, expected] case: {other}"),
        })
        .collect()
}

/// Runs every case and returns one line per failure.
pub fn run_cases(cases: &[(Value, Value, Value)]) -> Vec<String> {
    let mut failures = Vec::new();
    for (index, (rule, data, expected)) in cases.iter().enumerate() {
        let got = Logic::compile(rule, &Limits::default())
            .map_err(|e| format!("compile error: {e}"))
            .and_then(|logic| logic.evaluate(data).map_err(|e| format!("eval error: {e}")));
        let ok = match &got {
            Ok(value) => json_equal(value, expected),
            Err(_) => false,
        };
        if !ok {
            failures.push(format!(
                "case {index}: rule {rule} data {data} expected {expected} got {}",
                match got {
                    Ok(value) => value.to_string(),
                    Err(e) => e,
                }
            ));
        }
    }
    failures
}

/// JSON equality with numbers compared by value (1 == 1.0) and object keys in any order.
pub fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}
