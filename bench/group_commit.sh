#!/usr/bin/env bash
# Group commit on SQLite (synchronous=FULL): the same binary with the default
# TSUNAGI_GROUP_COMMIT_MAX against TSUNAGI_GROUP_COMMIT_MAX=1 (one transaction, one fsync, per
# send), each on its own temp database, same load, alternating rounds (tsunagi-bench scale),
# medians. Prints the fsyncs of each server during the run (strace -c -f, when strace is there
# and BENCH_STRACE=1) and each server's commit batch sizes (tsunagi_commit_batch_size).
#
#   bench/group_commit.sh                  100 rooms x 1 client, every client sending
#   BENCH_ROUNDS=5 BENCH_DURATION=20s bench/group_commit.sh
#
# Load: 100 concurrent senders, each in a room of its own (--rooms 100 --clients-per-room 1):
# the measure is the committer, so fan-out is kept at one delivery per send (100 senders in one
# room of 100 would deliver 100 copies of every message and measure the fan-out instead).
# BENCH_IN_FLIGHT unacked sends per sender (default 1: 100 sends waiting at most).
# BENCH_SKIP_BUILD=1: no cargo build first (CARGO_TARGET_DIR=DIR runs DIR/release's binaries).
# JSON lines land in $BENCH_OUT (default target/bench/group_commit.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10s}
IN_FLIGHT=${BENCH_IN_FLIGHT:-1}
OUT=${BENCH_OUT:-target/bench/group_commit.jsonl}
mkdir -p "$(dirname "$OUT")"
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"
rm -f "$LOGS"/group-commit-*.strace

[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || cargo build --release --all-targets --quiet

tmp=$(mktemp -d)
pids=()
tracers=()
cleanup() {
  for p in "${tracers[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    if ! kill "$p" 2>/dev/null; then
      echo "server pid $p had already exited; logs: $LOGS" >&2
    fi
  done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1; logs in $LOGS" >&2
  exit 1
}

export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# start NAME MAX: one server on a fresh SQLite file; MAX empty keeps the default.
start() {
  local name=$1 max=$2 port
  port=$(free_port)
  env ${max:+TSUNAGI_GROUP_COMMIT_MAX=$max} \
    TSUNAGI_LISTEN=127.0.0.1:$port \
    TSUNAGI_DATABASE_URL="sqlite://$tmp/$name.db" \
    TSUNAGI_SQLITE_SYNCHRONOUS=FULL \
    TSUNAGI_SEND_RATE=0 \
    TSUNAGI_CONNECTIONS_PER_ADDRESS=0 \
    TSUNAGI_LOG=warn \
    "$BIN"/tsunagi serve >"$LOGS/group-commit-$name.log" 2>&1 &
  pids+=("$!")
  printf -v "pid_$name" '%s' "$!"
  printf -v "port_$name" '%s' "$port"
  wait_port "$port"
}

start batched ""
start single 1

if [ "${BENCH_STRACE:-0}" = 1 ] && command -v strace >/dev/null; then
  for name in batched single; do
    pid_var=pid_$name
    strace -c -f -e trace=fsync,fdatasync -p "${!pid_var}" -o "$LOGS/group-commit-$name.strace" &
    tracers+=("$!")
  done
fi

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$BIN"/tsunagi-bench scale \
  --target "batched=http://127.0.0.1:$port_batched" --server-pids "batched=$pid_batched" \
  --target "single=http://127.0.0.1:$port_single" --server-pids "single=$pid_single" \
  --rooms 100 --clients-per-room 1 --senders-per-room 1 --in-flight "$IN_FLIGHT" \
  --rounds "$ROUNDS" --duration "$DURATION" --json "$@" | tee -a "$OUT" |
  grep '"scale_summary"' >/dev/null

for p in "${tracers[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${tracers[@]}"; do wait "$p" 2>/dev/null || true; done
tracers=()
echo >&2
for name in batched single; do
  port_var=port_$name
  pid_var=pid_$name
  echo "$name: $(usage "${!pid_var}"); $(curl -s "http://127.0.0.1:${!port_var}/metrics" |
    grep -E '^tsunagi_commit_batch_size_(sum|count)' | tr '\n' ' ')" >&2
  if [ -s "$LOGS/group-commit-$name.strace" ]; then
    echo "  fsyncs over the whole run: $(awk '/fsync|fdatasync/ {print $4, $NF}' "$LOGS/group-commit-$name.strace" | tr '\n' ' ')" >&2
  fi
done
echo "JSON lines: $OUT" >&2
