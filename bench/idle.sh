#!/usr/bin/env bash
# RSS per idle socket: starts tsunagi (temp SQLite, no per-address connection limit and no
# room-creation rate limit (the rooms are made by one admin token): every
# socket comes from 127.0.0.0/8, connection cap above the socket count) and the Node peer
# (bench/peer), then `tsunagi-bench idle` opens N WebSockets on each in turn, every one CONNECTed
# with its own token and joined to a room (50 per room), and reports each server's
# (RSS after − RSS before) / N, how long connecting took, and that every socket still answered
# heartbeats after a hold past the ping interval. Stops both.
#
#   bench/idle.sh [tsunagi-bench idle args…]     e.g. bench/idle.sh --sockets 100000 --checkpoint 10000
#
# BENCH_TSUNAGI_BIN: another tsunagi binary (e.g. a baseline build) instead of target/release's.
# BENCH_TSUNAGI_ENV: extra environment for tsunagi only, e.g. "MALLOC_ARENA_MAX=2".
# BENCH_SKIP_BUILD=1: no cargo build first. BENCH_PEER=0: tsunagi alone. BENCH_NODE_HEAP_MB: the peer's --max-old-space-size (default 8192).
# JSON lines land in $BENCH_OUT (default target/bench/idle.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

OUT=${BENCH_OUT:-target/bench/idle.jsonl}
mkdir -p "$(dirname "$OUT")"
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"

# BENCH_SKIP_BUILD=1: use the binaries as they are
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || cargo build --release --all-targets --quiet
if [ "${BENCH_PEER:-1}" != 0 ] && [ ! -d bench/peer/node_modules ]; then
  (cd bench/peer && npm ci --no-audit --no-fund --silent)
fi
# BENCH_BIN_DIR: where tsunagi and tsunagi-bench are (default: the release build)
BIN=${BENCH_BIN_DIR:-$BIN}
TSUNAGI=${BENCH_TSUNAGI_BIN:-$BIN/tsunagi}

# the servers need a descriptor per socket (tsunagi raises its own limit as root; node cannot)
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do
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
  cat "$LOGS"/idle-*.log >&2
  exit 1
}

export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
t_port=$(free_port)
# shellcheck disable=SC2086 # BENCH_TSUNAGI_ENV is a list of NAME=VALUE words
env ${BENCH_TSUNAGI_ENV:-} \
  TSUNAGI_LISTEN=127.0.0.1:$t_port \
  TSUNAGI_DATABASE_URL="sqlite://$tmp/b.db" \
  TSUNAGI_CONNECTIONS_PER_ADDRESS=0 \
  TSUNAGI_WRITE_RATE=0 \
  TSUNAGI_MAX_CONNECTIONS=250000 \
  TSUNAGI_LOG=warn \
  "$TSUNAGI" serve >"$LOGS/idle-tsunagi.log" 2>&1 &
t_pid=$!
pids+=("$t_pid")
wait_port "$t_port"
peer=()
if [ "${BENCH_PEER:-1}" != 0 ]; then
  p_port=$(free_port)
  (cd bench/peer && PORT=$p_port exec node --max-old-space-size="${BENCH_NODE_HEAP_MB:-8192}" server.js \
    >"$LOGS/idle-peer.log" 2>&1) &
  p_pid=$!
  pids+=("$p_pid")
  wait_port "$p_port"
  peer=(--peer-url "http://127.0.0.1:$p_port" --peer-pid "$p_pid")
fi

echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)" >&2
"$BIN"/tsunagi-bench idle --url "http://127.0.0.1:$t_port" --pid "$t_pid" "${peer[@]}" "$@" |
  tee -a "$OUT"
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if grep -qiE 'warn|error' "$LOGS/idle-tsunagi.log"; then
  echo "tsunagi logged:" >&2
  grep -iE 'warn|error' "$LOGS/idle-tsunagi.log" | tail -20 >&2
fi
echo "JSON lines: $OUT" >&2
