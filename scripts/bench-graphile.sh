#!/usr/bin/env bash
# Drain throughput of sluice against Graphile Worker 0.18, in one session on one PostgreSQL:
# rounds alternating `sluice bench --spawn --phased` (one `sluice worker` draining EVENTS
# events with one `log` rule, full trace kept) and Graphile Worker draining as many no-op
# jobs (concurrency 24, local queue 500, batched completions; finished jobs deleted), each
# on a fresh database. Prints each run and the median ratio.
#
#   cargo build --release && scripts/bench-graphile.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
server=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
events=${EVENTS:-50000}
rounds=${ROUNDS:-3}
sluice=${SLUICE:-target/release/sluice}
peer=${GRAPHILE_DIR:-/tmp/sluice-graphile}
if [ ! -d "$peer/node_modules/graphile-worker" ]; then
    mkdir -p "$peer"
    (cd "$peer" && npm init -y >/dev/null && npm install --silent graphile-worker@0.18 >/dev/null)
fi
cp "$here/graphile/drain.js" "$peer/drain.js"
fresh() { PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }
drop() { PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $1"; }
declare -a ours theirs
for round in $(seq 1 "$rounds"); do
    fresh sluice_bench_drain
    rate=$("$sluice" bench --spawn --phased --events "$events" --actions log --json \
        --database-url "$server/sluice_bench_drain" | jq -r .drain_rate)
    drop sluice_bench_drain
    printf 'sluice   round %d: drain %8.0f/s\n' "$round" "$rate"
    ours+=("$rate")
    fresh graphile_bench_drain
    rate=$(cd "$peer" && DATABASE_URL="$server/graphile_bench_drain" JOBS="$events" node drain.js | tail -n 1 | jq -r .rate)
    drop graphile_bench_drain
    printf 'graphile round %d: drain %8.0f/s\n' "$round" "$rate"
    theirs+=("$rate")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
s=$(median "${ours[@]}")
g=$(median "${theirs[@]}")
echo "median drain: sluice $s/s, Graphile Worker $g/s, ratio $(awk -v s="$s" -v g="$g" 'BEGIN {printf "%.2f", s/g}')"
