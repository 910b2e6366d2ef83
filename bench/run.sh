#!/usr/bin/env bash
# One command for docs/benchmarks.md: starts tsunagi (temp SQLite, synchronous=FULL, no rate
# limit, no per-address connection limit: every client comes from 127.0.0.1) and the in-memory Socket.IO peer (bench/peer), runs the same loads against both with
# tsunagi-bench (alternating rounds, medians), prints tsunagi/peer ratios and the servers' peak
# RSS and CPU time, and stops both. Each run reports the server's CPU time per delivery over its
# window (/proc/PID/stat).
#
#   bench/run.sh [tsunagi-bench args…]     e.g. bench/run.sh --rounds 5 --duration 20s
#
# Two loads run: closed loop (each sender keeps --in-flight sends unacked: the throughput each
# server reaches) and paced (BENCH_PACED_RATE msgs/s per sender, default 100, 0 skips it: the
# latency of both at the same offered load). Extra args go to both. JSON lines land in
# $BENCH_OUT (default target/bench/last.jsonl: one JSON document per load, `--json`).
# BENCH_DATABASE_URL=postgres://… runs tsunagi on that (empty) PostgreSQL database instead of a
# temp SQLite file. Each load draws its seconds into $BENCH_PLOTS/$BENCH_NAME-closed.svg and
# -paced.svg (defaults: target/bench, room). bench/many_rooms.sh runs it with --rooms.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

PACED_RATE=${BENCH_PACED_RATE:-100}
OUT=${BENCH_OUT:-target/bench/last.jsonl}
PLOTS=${BENCH_PLOTS:-target/bench}
NAME=${BENCH_NAME:-room}
mkdir -p "$PLOTS"
mkdir -p "$(dirname "$OUT")"
# the servers' logs stay beside it for a look after the run (absolute: the peer runs elsewhere)
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"

# cargo decides whether anything needs rebuilding
# the same build as the tests (dev features unified), so switching between them rebuilds nothing
cargo build --release --all-targets --quiet
if [ ! -d bench/peer/node_modules ]; then
  (cd bench/peer && npm ci --no-audit --no-fund --silent)
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    # a server that is already gone failed mid-run: say how it ended
    if ! kill "$p" 2>/dev/null; then
      wait "$p" && rc=0 || rc=$?
      echo "server pid $p had already exited (status $rc); logs: $LOGS" >&2
    fi
  done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1; logs in $LOGS:" >&2
  cat "$LOGS"/*.log >&2
  exit 1
}

export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
t_port=$(free_port)
p_port=$(free_port)

TSUNAGI_LISTEN=127.0.0.1:$t_port \
  TSUNAGI_DATABASE_URL="${BENCH_DATABASE_URL:-sqlite://$tmp/b.db}" \
  TSUNAGI_SEND_RATE=0 \
  TSUNAGI_CONNECTIONS_PER_ADDRESS=0 \
  TSUNAGI_LOG=warn \
  "$BIN"/tsunagi serve >"$LOGS/tsunagi.log" 2>&1 &
t_pid=$!
pids+=("$t_pid")
(cd bench/peer && PORT=$p_port exec node server.js >"$LOGS/peer.log" 2>&1) &
p_pid=$!
pids+=("$p_pid")
wait_port "$t_port"
wait_port "$p_port"

# bench PLOT-SUFFIX ARGS…: the table shows on stderr, the JSON document goes to $OUT
bench() {
  local plot="$PLOTS/$NAME-$1.svg"
  shift
  "$BIN"/tsunagi-bench --url "http://127.0.0.1:$t_port" --create-room \
    --peer-url "http://127.0.0.1:$p_port" --server-pid "$t_pid" --peer-pid "$p_pid" --json --plot "$plot" "$@" |
    tee -a "$OUT" | grep '"summary"' >/dev/null
}

echo "== closed loop: throughput ==" >&2
bench closed "$@"
if [ "$PACED_RATE" != 0 ]; then
  echo >&2
  echo "== paced: $PACED_RATE msgs/s per sender: latency at equal load ==" >&2
  bench paced --rate "$PACED_RATE" "$@"
fi

echo >&2
echo "tsunagi: $(usage "$t_pid")" >&2
echo "peer:    $(usage "$p_pid")" >&2
if grep -qiE 'warn|error' "$LOGS/tsunagi.log"; then
  echo "tsunagi logged:" >&2
  grep -iE 'warn|error' "$LOGS/tsunagi.log" | tail -20 >&2
fi
echo "JSON lines: $OUT" >&2
