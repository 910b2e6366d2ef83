#!/usr/bin/env bash
# The webhooks benchmark of docs/benchmarks.md: acked sends/s of closed-loop senders with and
# without 3 webhooks registered on their room (alternating rounds, medians), and deliveries/s to a
# receiver inside tsunagi-bench. Starts tsunagi (release binary, TSUNAGI_SEND_RATE=0,
# TSUNAGI_WEBHOOK_ALLOW_PRIVATE=true for the local receiver, everything else default), runs
# `tsunagi-bench webhooks`, prints the server's peak RSS and CPU time, and stops it; on SQLite,
# then on PostgreSQL when BENCH_DATABASE_URL names an empty database.
#
#   bench/webhooks.sh [tsunagi-bench webhooks args…]   e.g. bench/webhooks.sh --rounds 5
#
# BENCH_SQLITE=0 skips SQLite. JSON lines land in $BENCH_OUT (default target/bench/webhooks.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

OUT=${BENCH_OUT:-target/bench/webhooks.jsonl}
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

one_kind() {
  local label=$1 db=$2
  shift 2
  local log="$LOGS/webhooks-$label.log"
  echo "== $label ==" >&2
  local port
  port=$(free_port)
  TSUNAGI_LISTEN="127.0.0.1:$port" TSUNAGI_DATABASE_URL="$db" TSUNAGI_LOG=warn \
    TSUNAGI_SEND_RATE=0 TSUNAGI_WEBHOOK_ALLOW_PRIVATE=true \
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
  "$BIN/tsunagi-bench" webhooks --url "http://127.0.0.1:$port" "$@" | tee -a "$OUT" \
    | grep '"webhooks_summary"' >/dev/null || status=$?
  echo "tsunagi: $(usage "$pid")" >&2
  stop_server
  if [ "$status" != 0 ]; then
    echo "!! tsunagi-bench webhooks failed on $label (status $status)" >&2
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
  echo "!! bench/webhooks.sh failed on: ${failed[*]}" >&2
  exit 1
fi
