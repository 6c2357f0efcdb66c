//! JSONLogic cost per event: rules compiled once, then evaluated against realistic
//! payloads, as the worker does. Run with
//! `cargo bench -p sluice-core --bench evaluate -- --warm-up-time 1 --measurement-time 3`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use sluice_core::logic::{Limits, Logic};

/// An `order.created` payload: a customer and 20 line items.
fn order() -> Value {
    let categories = ["books", "music", "games", "garden"];
    let items: Vec<Value> = (0..20)
        .map(|i| {
            json!({
                "sku": format!("SKU-{i:04}"),
                "category": categories[i % categories.len()],
                "qty": (i % 7) + 1,
                "price": 3.5 + i as f64 * 1.25,
            })
        })
        .collect();
    json!({
        "order_id": "ord-20240305-0001",
        "amount": 250,
        "currency": "EUR",
        "status": "paid",
        "user_id": "user-456",
        "customer": {
            "id": 456,
            "email": "ana@example.com",
            "country": "PT",
            "tier": "gold",
            "tags": ["newsletter", "vip"],
            "blocked": false
        },
        "items": items,
        "created_at": "2024-03-05T10:00:00Z"
    })
}

fn rules() -> Vec<(&'static str, Value)> {
    vec![
        // The seed's quick-start rule.
        ("seed_amount", json!({">=": [{"var": "amount"}, 50]})),
        // Several comparisons over nested paths, with `in` on a list and on an array.
        (
            "and_in_nested",
            json!({"and": [
                {">=": [{"var": "amount"}, 50]},
                {"in": [{"var": "customer.country"}, ["PT", "ES", "FR", "DE"]]},
                {"==": [{"var": "status"}, "paid"]},
                {"!": {"var": "customer.blocked"}},
                {"in": ["vip", {"var": "customer.tags"}]},
                {"<=": [1, {"var": "items.length"}, 100]}
            ]}),
        ),
        // Iterating 20 items: some big line, and the total of the books over 100.
        (
            "some_filter_reduce",
            json!({"and": [
                {"some": [{"var": "items"}, {">": [{"var": "qty"}, 5]}]},
                {">": [
                    {"reduce": [
                        {"filter": [{"var": "items"}, {"==": [{"var": "category"}, "books"]}]},
                        {"+": [
                            {"var": "accumulator"},
                            {"*": [{"var": "current.qty"}, {"var": "current.price"}]}
                        ]},
                        0
                    ]},
                    100
                ]}
            ]}),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let data = order();
    let limits = Limits::default();
    for (name, rule) in rules() {
        let logic = Logic::compile(&rule, &limits).expect("benchmark rules compile");
        assert!(
            logic.matches(&data).expect("benchmark rules evaluate"),
            "{name} should match the sample order"
        );
        c.bench_function(&format!("matches/{name}"), |b| {
            b.iter(|| logic.matches(black_box(&data)))
        });
        c.bench_function(&format!("evaluate/{name}"), |b| {
            b.iter(|| logic.evaluate(black_box(&data)))
        });
        c.bench_function(&format!("explain/{name}"), |b| {
            b.iter(|| logic.explain(black_box(&data)))
        });
        c.bench_function(&format!("compile/{name}"), |b| {
            b.iter(|| Logic::compile(black_box(&rule), &limits))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
