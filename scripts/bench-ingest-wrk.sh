#!/usr/bin/env bash
# Ingest of `sluice api` driven by wrk (a C load generator, like pgbench's own client)
# against pgbench's single-row upserts, in one session on one PostgreSQL: rounds alternating
# wrk (32 connections, POST /events with a unique id and the bench's payload, each request a
# new event) and scripts/pgbench-baseline.sh (32 clients). Prints each run and the median
# ratio. Needs wrk (`apt-get install wrk`).
#
#   cargo build --release && scripts/bench-ingest-wrk.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
server=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
seconds=${SECONDS_TO_RUN:-10}
rounds=${ROUNDS:-3}
connections=${CONNECTIONS:-32}
sluice=${SLUICE:-target/release/sluice}
port=${PORT:-18181}
fresh() { PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }
drop() { PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $1"; }
declare -a ours theirs
for round in $(seq 1 "$rounds"); do
    fresh sluice_bench_wrk
    DATABASE_URL="$server/sluice_bench_wrk" PORT=$port "$sluice" api >/dev/null 2>&1 &
    api=$!
    for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
    rate=$(wrk -t2 -c"$connections" -d"${seconds}s" -s "$here/wrk/post-events.lua" "http://127.0.0.1:$port" \
        | awk '/^Requests\/sec/ {print $2} /unexpected/ {print > "/dev/stderr"}')
    kill "$api"; wait "$api" || true
    drop sluice_bench_wrk
    printf 'sluice   round %d: ingest %8.0f/s\n' "$round" "$rate"
    ours+=("$rate")
    fresh sluice_bench_pgbench
    rate=$(PGBENCH_URL="$server/sluice_bench_pgbench" CLIENTS=$connections SECONDS_TO_RUN=$seconds \
        "$here/pgbench-baseline.sh" 2>/dev/null | awk '/^tps/ {print $3}')
    drop sluice_bench_pgbench
    printf 'pgbench  round %d: %8.0f tps\n' "$round" "$rate"
    theirs+=("$rate")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
s=$(median "${ours[@]}")
p=$(median "${theirs[@]}")
echo "median: sluice $s events/s, pgbench $p tps, ratio $(awk -v s="$s" -v p="$p" 'BEGIN {printf "%.2f", s/p}')"
