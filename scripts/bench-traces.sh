#!/usr/bin/env bash
# What OpenTelemetry tracing costs: rounds alternating `sluice bench --spawn --phased` with
#   before  - a build without tracing (optional: pass it as the first argument),
#   off     - this build, no OTEL_* variables (tracing off),
#   on      - this build exporting every span over OTLP/HTTP to a local receiver (the bench's
#             receiver, which answers 200 to anything, on 127.0.0.1:$OTLP_PORT), every trace
#             sampled and the batch queue large enough that no span is dropped,
# each on a fresh PostgreSQL database, then the median ingest and drain of each and the
# ratios to `off`.
#
#   scripts/bench-traces.sh [/tmp/sluice-before] target/release/sluice
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 [<binary without tracing>] <binary>" >&2
    exit 2
fi
before=""
if [ $# -ge 2 ]; then before=$1; shift; fi
bin=$1
shift
server=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
events=${EVENTS:-30000}
rounds=${ROUNDS:-3}
port=${OTLP_PORT:-4318}
"$bin" bench --serve-receiver "$port" 2>/dev/null &
receiver=$!
trap 'kill $receiver 2>/dev/null' EXIT
sides="off on"
[ -n "$before" ] && sides="before off on"
declare -A ingest drain
for round in $(seq 1 "$rounds"); do
    for side in $sides; do
        db="sluice_bench_traces"
        PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
        run=$bin
        [ "$side" = before ] && run=$before
        if [ "$side" = on ]; then
            report=$(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$port" OTEL_SERVICE_NAME=sluice-bench \
                OTEL_BSP_MAX_QUEUE_SIZE=65536 \
                "$run" bench --spawn --phased --events "$events" --actions log --json \
                --database-url "$server/$db" "$@")
        else
            report=$(env -u OTEL_EXPORTER_OTLP_ENDPOINT "$run" bench --spawn --phased \
                --events "$events" --actions log --json --database-url "$server/$db" "$@")
        fi
        i=$(jq -r .ingest_rate <<<"$report")
        d=$(jq -r .drain_rate <<<"$report")
        printf '%-6s round %d: ingest %8.0f/s  drain %8.0f/s\n' "$side" "$round" "$i" "$d"
        ingest[$side]="${ingest[$side]:-} $i"
        drain[$side]="${drain[$side]:-} $d"
        PGOPTIONS=--client-min-messages=warning psql "$server/postgres" -qc "DROP DATABASE IF EXISTS $db"
    done
done
median() { printf '%s\n' $@ | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off_i=$(median ${ingest[off]}); off_d=$(median ${drain[off]})
for side in $sides; do
    i=$(median ${ingest[$side]}); d=$(median ${drain[$side]})
    printf 'median %-6s ingest %8.0f/s (%s of off)  drain %8.0f/s (%s of off)\n' "$side" "$i" \
        "$(awk -v x="$off_i" -v y="$i" 'BEGIN {printf "%.2f", y/x}')" "$d" \
        "$(awk -v x="$off_d" -v y="$d" 'BEGIN {printf "%.2f", y/x}')"
done
