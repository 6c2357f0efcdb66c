//! The JsonLogic conformance suite (tests.json from jwadhams/json-logic, vendored unchanged
//! under tests/data/jsonlogic): every case must pass.
#![allow(clippy::unwrap_used)]

mod jsonlogic_support;

use jsonlogic_support::{load_cases, run_cases};

#[test]
fn passes_every_conformance_case() {
    let cases = load_cases("tests.json");
    assert_eq!(cases.len(), 277, "tests.json should hold 277 cases");
    let failures = run_cases(&cases);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
