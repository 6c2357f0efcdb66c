#!/usr/bin/env bash
# Instructions `sluice api` executes per ingested event, counted by valgrind's callgrind:
# repeatable on a shared, noisy machine where throughput is not (the same binary gives the
# same count within ~1%). Runs the api under callgrind twice, posting N1 and then N2 events
# (the bench's ~350-byte payload, 8 keep-alive connections), and divides the difference by
# N2 - N1, so start-up and migrations cancel out. Counts user-space instructions only: the
# kernel's TCP work and PostgreSQL's are not in it. Needs valgrind and python3.
#
#   cargo build --release && scripts/api-instructions.sh target/release/sluice [other-build]
set -euo pipefail
server=${PG_SERVER:-postgres://postgres@127.0.0.1:5432}
n1=${N1:-500}
n2=${N2:-2500}
port=${PORT:-18187}
client=$(mktemp --suffix=.py)
out=$(mktemp -d)
trap 'rm -rf "$client" "$out"' EXIT
cat >"$client" <<'PY'
import http.client, sys, threading, time
n, port, connections = int(sys.argv[1]), int(sys.argv[2]), 8
run = str(time.time())
def post(first):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(first, n, connections):
        body = ('{"id":"cg-%s-%d","type":"order.created","data":{"amount":%d,"currency":"EUR",'
                '"customer":{"id":"cus_%d","country":"BR","tier":"standard"},"items":[{"sku":"sku-%d",'
                '"qty":1,"price":19.9},{"sku":"sku-2","qty":1,"price":5.5}],"created_by":"bench"}}'
                ) % (run, i, i % 1000, i % 5000, i % 97)
        c.request("POST", "/events", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        if r.status != 201:
            sys.exit(f"unexpected {r.status}")
threads = [threading.Thread(target=post, args=(t,)) for t in range(connections)]
for t in threads: t.start()
for t in threads: t.join()
PY
instructions() { # binary, events
    PGOPTIONS=--client-min-messages=warning psql -q "$server/postgres" \
        -c "DROP DATABASE IF EXISTS sluice_bench_callgrind" -c "CREATE DATABASE sluice_bench_callgrind"
    DATABASE_URL="$server/sluice_bench_callgrind" PORT=$port valgrind --tool=callgrind \
        --callgrind-out-file="$out/callgrind.out" "$1" api >/dev/null 2>"$out/valgrind.log" &
    local api=$!
    for _ in $(seq 1 600); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
    python3 "$client" "$2" "$port"
    kill -INT "$api"
    wait "$api" || true
    awk '/^(summary|totals):/ {print $2; exit}' "$out/callgrind.out"
}
for binary in "$@"; do
    a=$(instructions "$binary" "$n1")
    b=$(instructions "$binary" "$n2")
    echo "$binary: $(( (b - a) / (n2 - n1) )) instructions per event"
done
PGOPTIONS=--client-min-messages=warning psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS sluice_bench_callgrind"
