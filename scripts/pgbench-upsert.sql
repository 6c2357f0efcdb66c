-- pgbench script: one durable single-row upsert per transaction, the raw-PostgreSQL baseline
-- sluice's ingest is compared with (BENCHMARKS.md). Same shape as an event: a unique id, a
-- type and a ~350-byte JSON payload, deduplicated by a unique constraint.
\set n random(1, 1000000000)
INSERT INTO pgbench_events (external_id, type, payload, received_count)
VALUES ('pg-' || :client_id || '-' || :n, 'bench', '{"amount": 250, "currency": "EUR", "customer": {"id": "cus_1", "country": "BR", "tier": "standard"}, "items": [{"sku": "sku-1", "qty": 1, "price": 19.9}, {"sku": "sku-2", "qty": 1, "price": 5.5}], "created_by": "bench"}', 1)
ON CONFLICT (external_id) DO UPDATE SET received_count = pgbench_events.received_count + 1;
