#!/usr/bin/env bash
# Ingest and drain with and without access control, alternated in one session so the two
# see the same machine: `sluice bench --spawn --phased` on a fresh PostgreSQL database each
# run, with `--auth` (AUTH=api_key, every request carries a key) and without. Prints one
# line per run and the median ratio.
set -euo pipefail
server=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
events=${EVENTS:-30000}
rounds=${ROUNDS:-3}
sluice=${SLUICE:-target/release/sluice}
declare -a plain_rates auth_rates
for round in $(seq 1 "$rounds"); do
    for mode in plain auth; do
        db="sluice_bench_auth_${mode}_${round}"
        PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        flags=()
        [ "$mode" = auth ] && flags=(--auth)
        report=$("$sluice" bench --spawn --phased --events "$events" --json \
            --database-url "$server/$db" "${flags[@]}")
        ingest=$(jq -r .ingest_rate <<<"$report")
        drain=$(jq -r .drain_rate <<<"$report")
        printf '%-5s round %d: ingest %8.0f/s  drain %8.0f/s\n' "$mode" "$round" "$ingest" "$drain"
        if [ "$mode" = auth ]; then auth_rates+=("$ingest"); else plain_rates+=("$ingest"); fi
        PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(median "${plain_rates[@]}")
a=$(median "${auth_rates[@]}")
echo "median ingest: without keys $p/s, with keys $a/s, ratio $(awk -v a="$a" -v p="$p" 'BEGIN {printf "%.3f", a/p}')"
