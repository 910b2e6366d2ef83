#!/usr/bin/env bash
# Durable sends on PostgreSQL, tsunagi against the durable Node peer (bench/peer-durable:
# socket.io 4 + Redis adapter + pg, one transaction per send, ack after COMMIT), same
# PostgreSQL and Redis, same tsunagi-bench load, alternating rounds, medians and ratios.
#
#   bench/durable.sh [tsunagi-bench args…]     e.g. bench/durable.sh --rounds 5 --duration 20s
#
# tsunagi runs as a scale-out deployment would: PostgreSQL (a fresh database) and the Redis bus
# (TSUNAGI_REDIS_URL, a fresh prefix). The peer gets a fresh database of its own and the Redis
# adapter. Loads: one room of 50 clients, 10 of them senders (tsunagi-bench's defaults): closed
# loop (16 unacked sends per sender: each server's throughput), then paced at BENCH_PACED_RATE
# msgs/s per sender (default 20, under the peer's capacity; 0 skips it: latency at equal load). Extra args go to both runs.
# PG: BENCH_PG (default postgres://postgres@127.0.0.1:5432); Redis: BENCH_REDIS (default
# redis://127.0.0.1:6379). JSON lines land in $BENCH_OUT (default target/bench/durable.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS:-redis://127.0.0.1:6379}
PACED_RATE=${BENCH_PACED_RATE:-20}
OUT=${BENCH_OUT:-target/bench/durable.jsonl}
mkdir -p "$(dirname "$OUT")"
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"

cargo build --release --all-targets --quiet
if [ ! -d bench/peer-durable/node_modules ]; then
  (cd bench/peer-durable && npm ci --no-audit --no-fund --silent)
fi

pids=()
dbs=()
cleanup() {
  for p in "${pids[@]}"; do
    if ! kill "$p" 2>/dev/null; then
      wait "$p" && rc=0 || rc=$?
      echo "server pid $p had already exited (status $rc); logs: $LOGS" >&2
    fi
  done
  wait 2>/dev/null || true
  for db in "${dbs[@]}"; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1; logs in $LOGS:" >&2
  cat "$LOGS"/durable-*.log >&2
  exit 1
}

suffix=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
for db in "tsunagi_durable_$suffix" "peer_durable_$suffix"; do
  psql -q "$PG/postgres" -c "CREATE DATABASE $db" >/dev/null
  dbs+=("$db")
done

export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
t_port=$(free_port)
p_port=$(free_port)

TSUNAGI_LISTEN=127.0.0.1:$t_port \
  TSUNAGI_DATABASE_URL="$PG/tsunagi_durable_$suffix" \
  TSUNAGI_REDIS_URL="$REDIS" \
  TSUNAGI_REDIS_PREFIX="bench-durable-$suffix" \
  TSUNAGI_SEND_RATE=0 \
  TSUNAGI_CONNECTIONS_PER_ADDRESS=0 \
  TSUNAGI_LOG=warn \
  "$BIN"/tsunagi serve >"$LOGS/durable-tsunagi.log" 2>&1 &
t_pid=$!
pids+=("$t_pid")
(cd bench/peer-durable && PORT=$p_port PEER_DATABASE_URL="$PG/peer_durable_$suffix" \
  PEER_REDIS_URL="$REDIS" PEER_REDIS_KEY="bench-peer-$suffix" \
  exec node server.js >"$LOGS/durable-peer.log" 2>&1) &
p_pid=$!
pids+=("$p_pid")
wait_port "$t_port"
wait_port "$p_port"

bench() {
  "$BIN"/tsunagi-bench --url "http://127.0.0.1:$t_port" --create-room \
    --peer-url "http://127.0.0.1:$p_port" --json "$@" | tee -a "$OUT" | grep '"summary"' >/dev/null
}

echo "== closed loop: throughput (load average before: $(cut -d' ' -f1-3 /proc/loadavg)) ==" >&2
bench "$@"
if [ "$PACED_RATE" != 0 ]; then
  echo >&2
  echo "== paced: $PACED_RATE msgs/s per sender: latency at equal load ==" >&2
  bench --rate "$PACED_RATE" "$@"
fi

echo >&2
echo "tsunagi: $(usage "$t_pid")" >&2
echo "peer:    $(usage "$p_pid")" >&2
echo "tsunagi commit batches: $(curl -s "http://127.0.0.1:$t_port/metrics" | grep -E '^tsunagi_commit_batch_size_(sum|count)' | tr '\n' ' ')" >&2
if grep -qiE 'warn|error' "$LOGS/durable-tsunagi.log"; then
  echo "tsunagi logged:" >&2
  grep -iE 'warn|error' "$LOGS/durable-tsunagi.log" | tail -20 >&2
fi
if grep -qiE 'error|failed' "$LOGS/durable-peer.log"; then
  echo "peer logged:" >&2
  grep -iE 'error|failed' "$LOGS/durable-peer.log" | sort | uniq -c | tail -10 >&2
fi
echo "JSON lines: $OUT" >&2
