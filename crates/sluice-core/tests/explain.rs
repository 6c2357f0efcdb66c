//! Explanations: data-driven cases for every operator family (`explain_cases.json`: the rule,
//! the data, the summary a person reads, and nodes of the tree by JSON pointer), and the
//! bound on their size whatever the data.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use sluice_core::logic::{Limits, Logic};

#[test]
fn every_operator_family_explains_itself() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("explain_cases.json")).expect("cases are JSON");
    let mut families = std::collections::BTreeSet::new();
    for case in &cases {
        let logic = Logic::compile(&case["rule"], &Limits::default()).unwrap();
        let explained = logic.explain(&case["data"]).unwrap();
        assert_eq!(
            explained.result,
            logic.evaluate(&case["data"]).unwrap(),
            "explaining changes nothing: {}",
            case["rule"]
        );
        assert_eq!(
            explained.summary, case["summary"],
            "summary of {}",
            case["rule"]
        );
        let tree = serde_json::to_value(&explained.tree).unwrap();
        for node in case["nodes"].as_array().unwrap() {
            let at = node["at"].as_str().unwrap();
            let found = tree
                .pointer(at)
                .unwrap_or_else(|| panic!("{} has no node at {at}: {tree}", case["rule"]));
            for (key, wanted) in node["is"].as_object().unwrap() {
                assert_eq!(
                    &found[key], wanted,
                    "{key} at {at} of {}: {tree}",
                    case["rule"]
                );
            }
        }
        families.insert(case["family"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        families.into_iter().collect::<Vec<_>>(),
        [
            "arithmetic",
            "array",
            "comparison",
            "data",
            "literal",
            "logic",
            "string"
        ]
    );
}

fn size(explained: &sluice_core::logic::Explained) -> usize {
    serde_json::to_string(&explained.tree).unwrap().len()
}

#[test]
fn loops_show_a_few_items_and_count_the_rest() {
    let items: Vec<Value> = (0..20_000)
        .map(|i| json!({"qty": i % 7, "sku": format!("SKU-{i}")}))
        .collect();
    let data = json!({ "items": items });
    let rule = json!({"map": [{"var": "items"}, {"cat": [{"var": "sku"}, ":", {"*": [{"var": "qty"}, 2]}]}]});
    let generous = Limits {
        max_operations: 1_000_000,
        ..Limits::default()
    };
    let explained = Logic::compile(&rule, &generous)
        .unwrap()
        .explain(&data)
        .unwrap();
    let tree = serde_json::to_value(&explained.tree).unwrap();
    assert_eq!(tree["count"], 20_000);
    assert_eq!(tree["items"].as_array().unwrap().len(), 3);
    assert_eq!(tree["value_cut"], true, "a 20,000-item result is previewed");
    assert!(size(&explained) < 8 * 1024, "{} bytes", size(&explained));
    assert!(
        explained.summary.contains("20000 items checked"),
        "{}",
        explained.summary
    );
}

#[test]
fn no_data_makes_an_explanation_larger_than_64_kib() {
    let long = "x".repeat(1_000_000);
    let items: Vec<Value> = (0..2_000)
        .map(|i| json!({"n": i, "text": format!("item {i} {}", "y".repeat(500))}))
        .collect();
    let data = json!({ "items": items, "long": long });
    let wide: Vec<Value> = (0..1_400)
        .map(|i| json!({"==": [{"var": format!("k{i}")}, {"var": "long"}]}))
        .collect();
    let nested_loops = json!({"some": [{"var": "items"}, {"some": [{"var": "items"}, {"==": [{"var": "n"}, -1]}]}]});
    let generous = Limits {
        max_operations: 10_000_000,
        ..Limits::default()
    };
    for rule in [
        json!({"or": wide}),
        json!({"and": [false, {"or": (0..3000).map(|i| json!({"var": format!("k{i}")})).collect::<Vec<_>>()}]}),
        json!({"==": [{"var": "long"}, {"cat": [{"var": "long"}, "!"]}]}),
        json!({"map": [{"var": "items"}, {"var": "text"}]}),
        json!({"map": [{"var": "items"}, {"cat": [{"var": "text"}, {"var": "n"}]}]}),
        nested_loops,
    ] {
        let logic = Logic::compile(&rule, &generous).unwrap();
        let explained = logic.explain(&data).unwrap();
        assert!(
            size(&explained) < 64 * 1024,
            "{} bytes for {}",
            size(&explained),
            &rule.to_string()[..80.min(rule.to_string().len())]
        );
        assert!(explained.summary.chars().count() <= 601);
        // Only the 1,400 comparisons of long strings fill the budget; it says so.
        assert_eq!(
            explained.truncated,
            rule.get("or").is_some(),
            "{}",
            explained.summary
        );
    }
}

#[test]
fn explaining_is_charged_to_the_same_budget() {
    let items: Vec<Value> = (0..1000).map(|i| json!(i)).collect();
    let rule = json!({"map": [{"var": "items"}, {"cat": [{"var": ""}, {"var": ""}]}]});
    let data = json!({ "items": items });
    let small = Limits {
        max_operations: 2_000,
        ..Limits::default()
    };
    let logic = Logic::compile(&rule, &small).unwrap();
    let plain = logic.evaluate(&data).unwrap_err();
    let explained = logic.explain(&data).unwrap_err();
    assert!(
        plain.is_budget() && explained.is_budget(),
        "{plain} / {explained}"
    );
}
