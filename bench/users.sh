#!/usr/bin/env bash
# The users-read benchmark of docs/benchmarks.md: `GET /api/v1/users/{id}` requests/s served from
# L1, from L2 (Redis) and from the database, side by side in one run. Starts three tsunagi
# servers on one database kind, registers the accounts on each, runs tsunagi-bench users against
# them (alternating rounds, medians), prints the table with the ratios to the uncached server and
# each server's peak RSS and CPU time, and stops them; then the same on PostgreSQL when
# BENCH_DATABASE_URL is set.
#
#   bench/users.sh [tsunagi-bench users args…]     e.g. bench/users.sh --rounds 5 --duration 20s
#
# The three servers (everything else default; argon2 cut to 256 KiB × 1 so that registering is
# quick, which changes nothing on the read path):
#   l1        default cache settings, no Redis: after the warm-up every GET is an L1 hit;
#   l2        TSUNAGI_REDIS_URL=$BENCH_REDIS_URL (default redis://127.0.0.1:6379) under a prefix
#             of its own, TSUNAGI_CACHE_L1_CAPACITY=0: L1 keeps nothing, every GET reads Redis;
#   uncached  no Redis, TSUNAGI_CACHE_L1_CAPACITY=0: every GET loads the row from the database.
# tsunagi-bench checks each window on the server's /metrics (--expect) and says so when a server
# was not served by the layer it stands for, and reports the server's CPU time per request
# (--pid), which the other work on a shared machine disturbs less than requests/s. A server that
# does not start is reported, with its log, and left out of the run.
#
# A failed check, or a run that ends without its summary, fails the script (exit 1) once both
# database kinds have run.
#
# SQLite: a file per server in a temp directory. BENCH_DATABASE_URL=postgres://… (an empty
# database): the three servers share it, each with accounts of its own. BENCH_SQLITE=0 skips
# SQLite. JSON lines land in $BENCH_OUT (default target/bench/users.jsonl), logs beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

OUT=${BENCH_OUT:-target/bench/users.jsonl}
REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
mkdir -p "$(dirname "$OUT")"
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"

# the same build as the tests (dev features unified), so switching between them rebuilds nothing
cargo build --release --all-targets --quiet

tmp=$(mktemp -d)
pids=()
prefixes=()
failed=()
stop_servers() {
  for p in "${pids[@]}"; do
    if ! kill "$p" 2>/dev/null; then
      wait "$p" && rc=0 || rc=$?
      echo "server pid $p had already exited (status $rc); logs: $LOGS" >&2
    else
      wait "$p" 2>/dev/null || true
    fi
  done
  pids=()
}
cleanup() {
  stop_servers
  # the L2 entries would expire by themselves (TSUNAGI_CACHE_L2_TTL_S); drop them now
  if command -v redis-cli >/dev/null; then
    for prefix in "${prefixes[@]}"; do
      redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" 2>/dev/null |
        xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT


export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# start NAME LOG DATABASE_URL [VAR=value…]: a server on a free port; sets $port and $pid, or
# returns 1 (with its log) when it exits or does not listen within 10 s.
start() {
  local name=$1 log=$2 db=$3
  shift 3
  port=$(free_port)
  env TSUNAGI_LISTEN="127.0.0.1:$port" TSUNAGI_DATABASE_URL="$db" TSUNAGI_LOG=warn \
    TSUNAGI_ARGON2_MEMORY_KIB=256 TSUNAGI_ARGON2_ITERATIONS=1 "$@" \
    "$BIN"/tsunagi serve >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      pids+=("$pid")
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" && rc=0 || rc=$?
      echo "!! $name did not start (exit status $rc); its log ($log):" >&2
      sed 's/^/   /' "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  echo "!! $name does not listen on port $port after 10 s; its log ($log):" >&2
  sed 's/^/   /' "$log" >&2
  return 1
}

# one_kind LABEL DB_L1 DB_L2 DB_UNCACHED [tsunagi-bench args…]
one_kind() {
  local label=$1 db_l1=$2 db_l2=$3 db_none=$4
  shift 4
  local prefix="tsunagi-bench-users-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
  prefixes+=("$prefix")
  local targets=() names=() spids=()
  echo "== $label ==" >&2
  # one after another: on a shared PostgreSQL database the first one runs the migrations alone
  if start l1 "$LOGS/users-$label-l1.log" "$db_l1"; then
    targets+=(--target "l1=http://127.0.0.1:$port" --expect l1=l1 --pid "l1=$pid")
    names+=(l1) spids+=("$pid")
  fi
  if start l2 "$LOGS/users-$label-l2.log" "$db_l2" \
    TSUNAGI_REDIS_URL="$REDIS_URL" TSUNAGI_REDIS_PREFIX="$prefix" TSUNAGI_CACHE_L1_CAPACITY=0; then
    targets+=(--target "l2=http://127.0.0.1:$port" --expect l2=l2 --pid "l2=$pid")
    names+=(l2) spids+=("$pid")
  else
    echo "!! l2 is not measured on $label" >&2
  fi
  if start uncached "$LOGS/users-$label-uncached.log" "$db_none" TSUNAGI_CACHE_L1_CAPACITY=0; then
    targets+=(--target "uncached=http://127.0.0.1:$port" --expect uncached=store --pid "uncached=$pid")
    names+=(uncached) spids+=("$pid")
  fi
  if [ "${#names[@]}" = 0 ]; then
    echo "!! no server started on $label" >&2
    return 1
  fi
  # a failed check makes tsunagi-bench exit non-zero (after its summary); no summary at all is
  # a failure too. Either is reported after the servers' usage, and fails the script at the end.
  local status=0
  "$BIN"/tsunagi-bench users "${targets[@]}" "$@" |
    sed -u "s/^{/{\"db\":\"$label\",/" | tee -a "$OUT" | grep '"users_summary"' >/dev/null ||
    status=$?
  for i in "${!names[@]}"; do
    echo "${names[$i]}: $(usage "${spids[$i]}")" >&2
    if grep -qiE 'warn|error' "$LOGS/users-$label-${names[$i]}.log"; then
      echo "${names[$i]} logged:" >&2
      grep -iE 'warn|error' "$LOGS/users-$label-${names[$i]}.log" | tail -10 | sed 's/^/   /' >&2
    fi
  done
  stop_servers
  if [ "$status" != 0 ]; then
    echo "!! tsunagi-bench users failed on $label (status $status): see CHECK FAILED or the error above" >&2
    failed+=("$label")
  fi
  echo >&2
}

if [ "${BENCH_SQLITE:-1}" != 0 ]; then
  one_kind sqlite "sqlite://$tmp/l1.db" "sqlite://$tmp/l2.db" "sqlite://$tmp/uncached.db" "$@"
fi
if [ -n "${BENCH_DATABASE_URL:-}" ]; then
  one_kind postgres "$BENCH_DATABASE_URL" "$BENCH_DATABASE_URL" "$BENCH_DATABASE_URL" "$@"
fi
echo "JSON lines: $OUT" >&2
if [ "${#failed[@]}" != 0 ]; then
  echo "!! bench/users.sh failed on: ${failed[*]}" >&2
  exit 1
fi
