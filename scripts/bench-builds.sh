#!/usr/bin/env bash
# Two builds of sluice side by side: rounds alternating `sluice bench --spawn --phased` with
# binary A and binary B on a fresh PostgreSQL database each run, then the median ingest and
# drain of each and their ratios (B / A). For before/after figures of one change:
#
#   git stash -u && cargo build --release && cp target/release/sluice /tmp/sluice-before
#   git stash pop && cargo build --release
#   scripts/bench-builds.sh /tmp/sluice-before target/release/sluice
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 <binary A> <binary B> [extra bench flags]" >&2
    exit 2
fi
a=$1 b=$2
shift 2
server=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
events=${EVENTS:-50000}
rounds=${ROUNDS:-3}
declare -a a_ingest a_drain b_ingest b_drain
for round in $(seq 1 "$rounds"); do
    for side in A B; do
        bin=$a
        [ "$side" = B ] && bin=$b
        db="sluice_bench_builds"
        PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        report=$("$bin" bench --spawn --phased --events "$events" --actions log --json \
            --database-url "$server/$db" "$@")
        ingest=$(jq -r .ingest_rate <<<"$report")
        drain=$(jq -r .drain_rate <<<"$report")
        printf '%s round %d: ingest %8.0f/s  drain %8.0f/s\n' "$side" "$round" "$ingest" "$drain"
        if [ "$side" = A ]; then a_ingest+=("$ingest"); a_drain+=("$drain"); else b_ingest+=("$ingest"); b_drain+=("$drain"); fi
        PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v x="$1" -v y="$2" 'BEGIN {printf "%.2f", y/x}'; }
ai=$(median "${a_ingest[@]}"); ad=$(median "${a_drain[@]}")
bi=$(median "${b_ingest[@]}"); bd=$(median "${b_drain[@]}")
printf 'median ingest: A %.0f/s, B %.0f/s, B/A %s\n' "$ai" "$bi" "$(ratio "$ai" "$bi")"
printf 'median drain:  A %.0f/s, B %.0f/s, B/A %s\n' "$ad" "$bd" "$(ratio "$ad" "$bd")"
