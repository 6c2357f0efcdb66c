#!/usr/bin/env bash
# Raw PostgreSQL single-row upserts at the same concurrency as `sluice bench` (default 32
# clients, 20 s): the ingest baseline of BENCHMARKS.md.
set -euo pipefail
url=${PGBENCH_URL:-postgres://postgres@127.0.0.1:5432/sluice_bench}
clients=${CLIENTS:-32}
seconds=${SECONDS_TO_RUN:-20}
psql "$url" -q <<'SQL'
DROP TABLE IF EXISTS pgbench_events;
CREATE TABLE pgbench_events (
    id BIGSERIAL PRIMARY KEY,
    external_id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    payload JSONB NOT NULL,
    received_count BIGINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
SQL
pgbench "$url" -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$(dirname "$0")/pgbench-upsert.sql" | grep -E 'tps|latency'
