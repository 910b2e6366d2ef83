#!/usr/bin/env bash
# Reconnect storm, scale-out (docs/performance.md): two tsunagi instances on PostgreSQL (a fresh
# database) and the Redis bus (a fresh prefix) behind a real nginx run from deploy/nginx.conf.
# BENCH_CLIENTS clients (default 10 000, 50 per room) connect through nginx (least_conn spreads
# them), 20 HTTP senders post through it throughout; then one instance is killed with -9 and not
# started again. Its clients reconnect with socket.io-client's backoff, land on the survivor
# through nginx, join and `sync`; every client must end with every acked message of its room,
# once, in order (tsunagi-bench storm --ports … --front …).
#
#   bench/storm_scaleout.sh                      1 round of 10 000 clients
#   BENCH_ROUNDS=2 BENCH_CLIENTS=5000 bench/storm_scaleout.sh
#   bench/storm_scaleout.sh --dir /tmp/storm     extra arguments go to tsunagi-bench storm (here:
#                                                keep the instances' logs)
#
# PG: BENCH_PG (default postgres://postgres@127.0.0.1:5432); Redis: BENCH_REDIS (default
# redis://127.0.0.1:6379); nginx: NGINX (default nginx on PATH or /usr/sbin/nginx).
# BENCH_SKIP_BUILD=1: no cargo build first. JSON lines land in $BENCH_OUT (default
# target/bench/storm_scaleout.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

ROUNDS=${BENCH_ROUNDS:-1}
CLIENTS=${BENCH_CLIENTS:-10000}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS:-redis://127.0.0.1:6379}
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
OUT=${BENCH_OUT:-target/bench/storm_scaleout.jsonl}
mkdir -p "$(dirname "$OUT")"
[ -x "$NGINX" ] || { echo "nginx not found (apt-get install nginx, or NGINX=path)" >&2; exit 1; }
[ "${BENCH_SKIP_BUILD:-0}" = 1 ] || cargo build --release --all-targets --quiet
# the bench raises its own descriptor limit; nginx holds two descriptors per client
ulimit -n 20000 2>/dev/null || true

tmp=$(mktemp -d)
nginx_pid=
dbs=()
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
  wait 2>/dev/null || true
  for db in "${dbs[@]}"; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

status=0
for round in $(seq "$ROUNDS"); do
  suffix=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
  db="tsunagi_storm_$suffix"
  psql -q "$PG/postgres" -c "CREATE DATABASE $db" >/dev/null
  dbs+=("$db")
  p1=$(free_port); p2=$(free_port); front=$(free_port)
  nginx_conf "$tmp" "$front" "$p1" "$p2" >"$tmp/nginx.conf"
  "$NGINX" -p "$tmp" -c "$tmp/nginx.conf" -g 'daemon off;' >"$tmp/nginx.log" 2>&1 &
  nginx_pid=$!
  echo "== round $round: 2 instances (ports $p1, $p2) behind nginx (port $front) ==" >&2
  "$BIN"/tsunagi-bench storm --clients "$CLIENTS" --label scale-out \
    --ports "$p1,$p2" --front "http://127.0.0.1:$front" \
    --env "TSUNAGI_DATABASE_URL=$PG/$db" --env "TSUNAGI_REDIS_URL=$REDIS" \
    --env "TSUNAGI_REDIS_PREFIX=bench-storm-$suffix" \
    --env "TSUNAGI_TRUSTED_PROXIES=127.0.0.1/32" "$@" | tee -a "$OUT" || status=1
  kill "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" 2>/dev/null || true
  nginx_pid=
done
exit $status
