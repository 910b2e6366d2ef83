#!/usr/bin/env bash
# One command for docs/scaling.md: one tsunagi instance behind nginx against three behind nginx,
# in the same run, on PostgreSQL (a fresh database per setup) and Redis (a random prefix per
# setup). nginx runs from deploy/nginx.conf with only its `# test:` lines rewritten (as
# tests/node/harness.js startBehindNginx does). tsunagi-bench scale alternates the setups in each
# round and prints medians, the servers' CPU per delivery (instances summed, nginx apart) and
# Redis commands per send.
#
#   bench/scale.sh                    all four loads, 3 rounds each
#   BENCH_ROUNDS=5 BENCH_DURATION=20s bench/scale.sh
#
# Loads: (a) one room, 60 clients, 12 senders: closed loop, then paced at BENCH_BIG_RATE/s per
# sender (default 50); (b) 200 rooms x 25 clients, BENCH_MANY_SENDERS senders per room (default
# 1): paced at BENCH_MANY_RATE/s per sender (default 4), then closed loop. BENCH_LOADS picks some
# (e.g. "big-closed many-paced"). PG: BENCH_PG (default postgres://postgres@127.0.0.1:5432);
# Redis: BENCH_REDIS (default redis://127.0.0.1:6379). JSON lines go to $BENCH_OUT (default
# target/bench/scale.jsonl), the servers' and nginx's logs beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS:-redis://127.0.0.1:6379}
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-10s}
LOADS=${BENCH_LOADS:-big-closed big-paced many-paced many-closed}
OUT=${BENCH_OUT:-target/bench/scale.jsonl}
NGINX=${NGINX:-/usr/sbin/nginx}
mkdir -p "$(dirname "$OUT")"
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"

cargo build --release --all-targets --quiet

tmp=$(mktemp -d)
pids=()
nginx_masters=()
dbs=()
cleanup() {
  for m in "${nginx_masters[@]}"; do kill -QUIT "$m" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    if ! kill "$p" 2>/dev/null; then
      echo "server pid $p had already exited; logs: $LOGS" >&2
    fi
  done
  wait 2>/dev/null || true
  for db in "${dbs[@]}"; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
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

# setup NAME N: N instances on one fresh database and Redis prefix, nginx in front. Sets
# url_NAME, servers_NAME (pids, comma-separated), nginx_NAME (worker pids) and ports_NAME.
setup() {
  local name=$1 n=$2 db ports=() spids=() prefix port i dir conf master
  db="tsunagi_scale_${name}_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
  psql -q "$PG/postgres" -c "CREATE DATABASE $db" >/dev/null
  dbs+=("$db")
  prefix="bench-scale-$name-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
  for i in $(seq "$n"); do
    port=$(free_port)
    # one at a time: the first runs the migrations
    TSUNAGI_LISTEN=127.0.0.1:$port \
      TSUNAGI_DATABASE_URL="$PG/$db" \
      TSUNAGI_REDIS_URL="$REDIS" \
      TSUNAGI_REDIS_PREFIX="$prefix" \
      TSUNAGI_SEND_RATE=0 \
      TSUNAGI_CONNECTIONS_PER_ADDRESS=0 \
      TSUNAGI_LOG=warn \
      "$BIN"/tsunagi serve >"$LOGS/scale-$name-$i.log" 2>&1 &
    pids+=("$!")
    spids+=("$!")
    ports+=("$port")
    wait_port "$port"
  done
  dir=$tmp/nginx-$name
  mkdir -p "$dir"
  port=$(free_port)
  conf=$dir/nginx.conf
  nginx_conf "$dir" "$port" "${ports[@]}" >"$conf"
  "$NGINX" -p "$dir" -c "$conf" -g 'daemon off;' >"$LOGS/scale-$name-nginx.log" 2>&1 &
  master=$!
  nginx_masters+=("$master")
  wait_port "$port"
  # the workers do the proxying; the master only supervises
  local workers=""
  for _ in $(seq 50); do
    workers=$(pgrep -P "$master" -d, || true)
    [ -n "$workers" ] && break
    sleep 0.1
  done
  printf -v "url_$name" '%s' "http://127.0.0.1:$port"
  printf -v "servers_$name" '%s' "$(IFS=,; echo "${spids[*]}")"
  printf -v "nginx_$name" '%s' "$workers"
  printf -v "ports_$name" '%s' "${ports[*]}"
}

ulimit -n 20000 2>/dev/null || true
setup one 1
setup three 3

scale() {
  "$BIN"/tsunagi-bench scale \
    --target "one=$url_one" --server-pids "one=$servers_one" --proxy-pids "one=$nginx_one" \
    --target "three=$url_three" --server-pids "three=$servers_three" --proxy-pids "three=$nginx_three" \
    --redis-url "$REDIS" --rounds "$ROUNDS" --duration "$DURATION" --json "$@" | tee -a "$OUT" |
    grep '"scale_summary"' >/dev/null
}

status=0
for load in $LOADS; do
  echo >&2
  echo "== $load ==" >&2
  case $load in
    big-closed) scale --rooms 1 --clients-per-room 60 --senders-per-room 12 || status=1 ;;
    big-paced) scale --rooms 1 --clients-per-room 60 --senders-per-room 12 --rate "${BENCH_BIG_RATE:-50}" || status=1 ;;
    many-paced) scale --rooms 200 --clients-per-room 25 --senders-per-room "${BENCH_MANY_SENDERS:-1}" --rate "${BENCH_MANY_RATE:-4}" || status=1 ;;
    many-closed) scale --rooms 200 --clients-per-room 25 --senders-per-room "${BENCH_MANY_SENDERS:-1}" --in-flight 4 || status=1 ;;
    *) echo "unknown load $load" >&2; exit 2 ;;
  esac
done

# what the instances counted: gap fills, bus traffic, slow-consumer disconnects
echo >&2
for name in one three; do
  ports_var=ports_$name
  for p in ${!ports_var}; do
    echo "$name :$p $(curl -s "http://127.0.0.1:$p/metrics" | grep -E '^tsunagi_(delivery_gap|bus_(published|received|dropped|publish_errors)|slow_consumer)' | tr '\n' ' ')" >&2
  done
done
if grep -qiE 'warn|error' "$LOGS"/scale-*.log; then
  echo "the servers logged:" >&2
  grep -iE 'warn|error' "$LOGS"/scale-*.log | tail -20 >&2
fi
echo "JSON lines: $OUT" >&2
exit $status
