#!/usr/bin/env bash
# Ingest and drain of a plain sluice against one started with extra bench flags (e.g.
# `--auth`, `--schema`), alternated in one session so the two see the same machine:
# `sluice bench --spawn --phased` on a fresh PostgreSQL database each run. Prints one line
# per run and the median ingest ratio (with flags / without).
#
#   scripts/bench-ab.sh --schema
set -euo pipefail
if [ $# -eq 0 ]; then
    echo "usage: $0 <bench flags for the B side, e.g. --auth or --schema>" >&2
    exit 2
fi
server=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
events=${EVENTS:-30000}
rounds=${ROUNDS:-3}
sluice=${SLUICE:-target/release/sluice}
declare -a plain_rates flag_rates
for round in $(seq 1 "$rounds"); do
    for mode in plain flags; do
        db="sluice_bench_ab_${mode}_${round}"
        PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        flags=()
        [ "$mode" = flags ] && flags=("$@")
        report=$("$sluice" bench --spawn --phased --events "$events" --json \
            --database-url "$server/$db" "${flags[@]}")
        ingest=$(jq -r .ingest_rate <<<"$report")
        drain=$(jq -r .drain_rate <<<"$report")
        printf '%-5s round %d: ingest %8.0f/s  drain %8.0f/s\n' "$mode" "$round" "$ingest" "$drain"
        if [ "$mode" = flags ]; then flag_rates+=("$ingest"); else plain_rates+=("$ingest"); fi
        PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(median "${plain_rates[@]}")
f=$(median "${flag_rates[@]}")
echo "median ingest: without $p/s, with $* $f/s, ratio $(awk -v f="$f" -v p="$p" 'BEGIN {printf "%.3f", f/p}')"
