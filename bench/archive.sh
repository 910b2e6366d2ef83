#!/usr/bin/env bash
# The archiving benchmark of docs/benchmarks.md: what a pass moving a million messages to cold
# storage costs the senders. Starts tsunagi (release binary, TSUNAGI_SEND_RATE=0,
# TSUNAGI_ARCHIVE_AFTER=0 so only the measured pass moves, everything else default), runs
# `tsunagi-bench archive` against it (fill a million messages through the store, then closed-loop
# senders in three windows: quiet, while the pass runs, quiet again), prints the server's peak
# RSS and CPU time, and stops it; on SQLite (a temp file, synchronous=FULL, cold storage
# archive.db beside it), then on PostgreSQL when BENCH_DATABASE_URL names an empty database
# (cold storage: the month-partitioned table in it).
#
#   bench/archive.sh [tsunagi-bench archive args…]   e.g. bench/archive.sh --messages 200000
#
# A failed check (failed sends, a pass not done) fails the script (exit 1) once both database
# kinds have run. BENCH_SQLITE=0 skips SQLite. JSON lines land in $BENCH_OUT (default
# target/bench/archive.jsonl), the server's logs beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

OUT=${BENCH_OUT:-target/bench/archive.jsonl}
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
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  pid=
}
cleanup() {
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT

export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# one_kind LABEL DATABASE_URL [tsunagi-bench archive args…]
one_kind() {
  local label=$1 db=$2
  shift 2
  local log="$LOGS/archive-$label.log"
  echo "== $label ==" >&2
  local port
  port=$(free_port)
  TSUNAGI_LISTEN="127.0.0.1:$port" TSUNAGI_DATABASE_URL="$db" TSUNAGI_LOG=warn \
    TSUNAGI_SEND_RATE=0 TSUNAGI_ARCHIVE_AFTER=0 \
    "$BIN/tsunagi" serve >"$log" 2>&1 &
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
  "$BIN/tsunagi-bench" archive --url "http://127.0.0.1:$port" --database-url "$db" \
    --pid "$pid" "$@" | tee -a "$OUT" | grep '"archive_summary"' >/dev/null || status=$?
  echo "tsunagi: $(usage "$pid")" >&2
  if grep -qiE 'warn|error' "$log"; then
    echo "tsunagi logged:" >&2
    grep -iE 'warn|error' "$log" | tail -10 | sed 's/^/   /' >&2
  fi
  stop_server
  if [ "$status" != 0 ]; then
    echo "!! tsunagi-bench archive failed on $label (status $status)" >&2
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
  echo "!! bench/archive.sh failed on: ${failed[*]}" >&2
  exit 1
fi
