#!/usr/bin/env bash
# The sensor-readings benchmark of docs/benchmarks.md: starts tsunagi (release binary,
# TSUNAGI_SEND_RATE=0, TSUNAGI_WRITE_RATE=0, everything else default), runs
# `tsunagi-bench readings` against it (two measurements, alternating rounds, medians), prints the
# server's peak RSS and CPU time, and stops it; on SQLite (a temp file, synchronous=FULL), then on
# PostgreSQL when BENCH_DATABASE_URL names an empty database.
#
#   bench/readings.sh [tsunagi-bench readings args…]   e.g. bench/readings.sh --rounds 5 --duration 20s
#
# 1. ingest: readings/s written through the write-behind buffer (HTTP producers posting batches,
#    then one ?durable=true write), against one INSERT … ON CONFLICT per reading in autocommit
#    straight into the same database (the baseline connects to it with the server's URL);
# 2. priority: `send` → ack latency of paced Socket.IO senders, quiet and under a reading flood.
#
# A failed check (failed requests or sends), or a run that ends without its summary, fails the
# script (exit 1) once both database kinds have run. BENCH_SQLITE=0 skips SQLite. JSON lines land
# in $BENCH_OUT (default target/bench/readings.jsonl), the server's logs beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

OUT=${BENCH_OUT:-target/bench/readings.jsonl}
mkdir -p "$(dirname "$OUT")"
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"

# the same build as the tests (dev features unified), so switching between them rebuilds nothing
cargo build --release --all-targets --quiet

tmp=$(mktemp -d)
pid=
failed=()
stop_server() {
  if [ -n "$pid" ]; then
    if ! kill "$pid" 2>/dev/null; then
      wait "$pid" && rc=0 || rc=$?
      echo "server pid $pid had already exited (status $rc); logs: $LOGS" >&2
    else
      wait "$pid" 2>/dev/null || true
    fi
  fi
  pid=
}
cleanup() {
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT

export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# one_kind LABEL DATABASE_URL [tsunagi-bench readings args…]
one_kind() {
  local label=$1 db=$2
  shift 2
  local log="$LOGS/readings-$label.log"
  echo "== $label ==" >&2
  local port
  port=$(free_port)
  TSUNAGI_LISTEN="127.0.0.1:$port" TSUNAGI_DATABASE_URL="$db" TSUNAGI_LOG=warn \
    TSUNAGI_SEND_RATE=0 TSUNAGI_WRITE_RATE=0 \
    "$BIN"/tsunagi serve >"$log" 2>&1 &
  pid=$!
  local up=
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "!! tsunagi did not start on $label; its log ($log):" >&2
    sed 's/^/   /' "$log" >&2
    stop_server
    failed+=("$label")
    return 0
  fi
  local status=0
  "$BIN"/tsunagi-bench readings --url "http://127.0.0.1:$port" --database-url "$db" \
    --pid "$pid" "$@" | tee -a "$OUT" | grep '"readings_summary"' >/dev/null || status=$?
  echo "tsunagi: $(usage "$pid")" >&2
  if grep -qiE 'warn|error' "$log"; then
    echo "tsunagi logged:" >&2
    grep -iE 'warn|error' "$log" | tail -10 | sed 's/^/   /' >&2
  fi
  stop_server
  if [ "$status" != 0 ]; then
    echo "!! tsunagi-bench readings failed on $label (status $status): see CHECK FAILED or the error above" >&2
    failed+=("$label")
  fi
  echo >&2
}

if [ "${BENCH_SQLITE:-1}" != 0 ]; then
  one_kind sqlite "sqlite://$tmp/b.db" "$@"
fi
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  one_kind postgres "$BENCH_DATABASE_URL" "$@"
fi
echo "JSON lines: $OUT" >&2
if [ "${#failed[@]}" != 0 ]; then
  echo "!! bench/readings.sh failed on: ${failed[*]}" >&2
  exit 1
fi
