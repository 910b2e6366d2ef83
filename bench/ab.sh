#!/usr/bin/env bash
# Two tsunagi binaries under the same room load in one run: BASE_BIN (e.g. a copy of main's
# build) as the reference and this tree's build, alternating rounds (tsunagi-bench's --peer-url
# side is the base), each on its own temp SQLite with the settings of bench/run.sh. Prints
# medians, CPU per delivery of each (/proc/PID/stat over the window) and new/base ratios.
#
#   BASE_BIN=/tmp/base/tsunagi bench/ab.sh [tsunagi-bench args…]
#   e.g. BASE_BIN=/tmp/base/tsunagi bench/ab.sh --rounds 4 --duration 10s            (closed loop)
#        BASE_BIN=/tmp/base/tsunagi bench/ab.sh --rounds 4 --duration 10s --rate 100 (paced)
#
# JSON lines land in $BENCH_OUT (default target/bench/ab.jsonl), the servers' logs beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

: "${BASE_BIN:?BASE_BIN=path of the reference tsunagi binary}"
OUT=${BENCH_OUT:-target/bench/ab.jsonl}
mkdir -p "$(dirname "$OUT")"
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"

cargo build --release --all-targets --quiet

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || echo "server pid $p had already exited" >&2; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1; logs in $LOGS" >&2
  exit 1
}

export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
room="bench-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"

# start NAME BINARY: sets port_NAME and pid_NAME
start() {
  local port
  port=$(free_port)
  TSUNAGI_LISTEN=127.0.0.1:$port \
    TSUNAGI_DATABASE_URL="sqlite://$tmp/$1.db" \
    TSUNAGI_SEND_RATE=0 \
    TSUNAGI_CONNECTIONS_PER_ADDRESS=0 \
    TSUNAGI_LOG=warn \
    "$2" serve >"$LOGS/ab-$1.log" 2>&1 &
  pids+=("$!")
  printf -v "pid_$1" %s "$!"
  printf -v "port_$1" %s "$port"
  wait_port "$port"
}
start base "$BASE_BIN"
start new "$BIN/tsunagi"

# the base needs the room too (tsunagi-bench creates it on --url only)
admin=$("$BIN"/tsunagi token --sub bench-admin --role admin)
curl -fsS -o /dev/null -X POST "http://127.0.0.1:$port_base/api/v1/rooms" \
  -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
  -d "{\"id\":\"$room\",\"name\":\"$room\"}"

"$BIN"/tsunagi-bench --url "http://127.0.0.1:$port_new" --create-room --room "$room" \
  --peer-url "http://127.0.0.1:$port_base" --server-pid "$pid_new" --peer-pid "$pid_base" \
  --json "$@" | tee -a "$OUT" | grep '"summary"' >/dev/null
echo "(\"peer\" above is the base binary, \"tsunagi\" this tree's)" >&2
echo "base: $(usage "$pid_base")" >&2
echo "new:  $(usage "$pid_new")" >&2
echo "JSON lines: $OUT" >&2
