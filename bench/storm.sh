#!/usr/bin/env bash
# Reconnect storm (docs/performance.md): tsunagi-bench storm starts the server on a fresh
# SQLite file, connects BENCH_CLIENTS clients (default 10 000, 50 per room), has 20 HTTP senders
# post throughout, kills the server with -9 and starts it again; every client reconnects with
# socket.io-client's backoff and syncs. Each round runs the storm without admission
# (TSUNAGI_HANDSHAKES_PENDING=0 TSUNAGI_HISTORY_READS=0) and with the defaults, alternating.
#
#   bench/storm.sh                        2 rounds of 10 000 clients
#   BENCH_ROUNDS=3 BENCH_CLIENTS=5000 bench/storm.sh
#
# One JSON line per run goes to $BENCH_OUT (default target/bench/storm.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-2}
CLIENTS=${BENCH_CLIENTS:-10000}
OUT=${BENCH_OUT:-target/bench/storm.jsonl}
mkdir -p "$(dirname "$OUT")"
cargo build --release --all-targets --quiet
# the bench raises its own descriptor limit (10 000 sockets and more); the server inherits it
ulimit -n 20000 2>/dev/null || true
status=0
for round in $(seq "$ROUNDS"); do
  echo "== round $round: no admission ==" >&2
  target/release/tsunagi-bench storm --clients "$CLIENTS" --label no-admission \
    --env TSUNAGI_HANDSHAKES_PENDING=0 --env TSUNAGI_HISTORY_READS=0 | tee -a "$OUT" || status=1
  echo "== round $round: admission (defaults) ==" >&2
  target/release/tsunagi-bench storm --clients "$CLIENTS" --label admission | tee -a "$OUT" || status=1
done
exit $status
