#!/usr/bin/env bash
# Soak: `sluice serve` on PostgreSQL under a steady RATE events/s for SECONDS, to show that
# claims and latency do not degrade as dead row versions would accumulate. Every minute it
# samples the claim and completion statements' mean time (pg_stat_statements, when the
# server has it loaded) and the dead tuples of `events` and `event_queue`; at the end, the
# ingest→processed latency per minute of the run, from the stored events.
#
#   cargo build --release && RATE=2000 SECONDS_TO_RUN=600 scripts/soak.sh
set -euo pipefail
server=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
rate=${RATE:-2000}
seconds=${SECONDS_TO_RUN:-600}
sluice=${SLUICE:-target/release/sluice}
db=sluice_soak
q() { PGOPTIONS=--client-min-messages=warning psql "$server/$1" -qAtF ' | ' -c "$2"; }
q postgres "DROP DATABASE IF EXISTS $db"
q postgres "CREATE DATABASE $db"
stats=no
if q "$db" "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>/dev/null && q "$db" "SELECT pg_stat_statements_reset()" >/dev/null 2>&1; then stats=yes; fi
"$sluice" bench --spawn --events $((rate * seconds)) --rate "$rate" --json \
    --database-url "$server/$db" > /tmp/sluice-soak-report.json &
bench=$!
echo "minute | claim ms/call | completion ms/call | events dead | queue live | queue dead"
minute=0
while kill -0 "$bench" 2>/dev/null && [ "$minute" -lt $((seconds / 60)) ]; do
    sleep 60
    minute=$((minute + 1))
    timing="- | -"
    if [ "$stats" = yes ]; then
        timing=$(q "$db" "SELECT COALESCE(round(max(CASE WHEN query LIKE 'WITH due%' THEN mean_exec_time END)::numeric, 2)::text, '-') || ' | ' || COALESCE(round(max(CASE WHEN query LIKE 'WITH u AS%' THEN mean_exec_time END)::numeric, 2)::text, '-') FROM pg_stat_statements")
        q "$db" "SELECT pg_stat_statements_reset()" >/dev/null
    fi
    tuples=$(q "$db" "SELECT (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'events') || ' | ' || (SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'event_queue') || ' | ' || (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'event_queue')")
    echo "$minute | $timing | $tuples"
done
wait "$bench"
jq -c '{ingest_rate, drain_rate, latency_ms_p50, latency_ms_p95, latency_ms_p99, latency_ms_max, server_peak_rss_mb, processed, failed}' /tmp/sluice-soak-report.json
echo "minute | events | p50 ms | p99 ms | max ms"
q "$db" "SELECT row_number() OVER (ORDER BY m), n, p50, p99, mx FROM (SELECT date_trunc('minute', created_at) m, count(*) n, round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1) p50, round((percentile_cont(0.99) WITHIN GROUP (ORDER BY ms))::numeric, 1) p99, round(max(ms)::numeric, 1) mx FROM (SELECT created_at, extract(epoch FROM processed_at - created_at) * 1000 AS ms FROM events WHERE processed_at IS NOT NULL) e GROUP BY 1) t ORDER BY m"
q postgres "DROP DATABASE IF EXISTS $db"
