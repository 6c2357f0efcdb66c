#!/usr/bin/env bash
# Ingest and drain with and without access control (every request carrying a key): see
# bench-ab.sh.
exec "$(dirname "$0")/bench-ab.sh" --auth "$@"
