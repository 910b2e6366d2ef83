#!/usr/bin/env bash
# What encryption at rest (TSUNAGI_ENCRYPTION_KEYS, PROTOCOL.md §7) costs a send: two tsunagi
# servers, each on a fresh database of its own — one without keys ("tsunagi" in the output), one
# with a key ("peer") — and the same closed loop against both with tsunagi-bench, alternating
# rounds (the encrypted one first in each), medians. The ratio tsunagi/peer is off/on.
#
#   bench/at_rest.sh [tsunagi-bench args…]        e.g. bench/at_rest.sh --rounds 2 --duration 10s
#   BENCH_PG=postgres://postgres@127.0.0.1:5432 bench/at_rest.sh …   two fresh PostgreSQL databases
#
# JSON lines land in $BENCH_OUT (default target/bench/at_rest.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

OUT=${BENCH_OUT:-target/bench/at_rest.jsonl}
mkdir -p "$(dirname "$OUT")"
LOGS=$(cd "$(dirname "$OUT")" && pwd)
: >"$OUT"
cargo build --release --all-targets --quiet

tmp=$(mktemp -d)
pids=()
dbs=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${dbs[@]}"; do
    psql "$BENCH_PG/postgres" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

database() {
  if [ -n "${BENCH_PG:-}" ]; then
    local name="tsunagi_bench_at_rest_$1_$$"
    psql "$BENCH_PG/postgres" -qc "CREATE DATABASE $name" >/dev/null
    dbs+=("$name")
    echo "$BENCH_PG/$name"
  else
    echo "sqlite://$tmp/$1/b.db"
  fi
}

wait_port() {
  for _ in $(seq 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1; logs in $LOGS" >&2
  exit 1
}

export TSUNAGI_JWT_SECRET="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
KEY="bench:$(head -c 32 /dev/urandom | base64)"
off_port=$(free_port)
on_port=$(free_port)
start() { # name port keys
  mkdir -p "$tmp/$1"
  TSUNAGI_LISTEN=127.0.0.1:$2 TSUNAGI_DATABASE_URL="$(database "$1")" TSUNAGI_SEND_RATE=0 \
    TSUNAGI_LOG=warn TSUNAGI_ENCRYPTION_KEYS="$3" \
    "$BIN"/tsunagi serve >"$LOGS/at_rest_$1.log" 2>&1 &
  pids+=("$!")
}
start off "$off_port" ""
start on "$on_port" "$KEY"
wait_port "$off_port"
wait_port "$on_port"

room="bench-rest-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
admin=$("$BIN"/tsunagi token --sub bench-admin --role admin)
curl -sf -o /dev/null -H "authorization: Bearer $admin" -H 'content-type: application/json' \
  -d "{\"id\":\"$room\"}" "http://127.0.0.1:$on_port/api/v1/rooms"

echo "== closed loop: encryption off (tsunagi) and on (peer) ==" >&2
"$BIN"/tsunagi-bench --url "http://127.0.0.1:$off_port" --create-room --room "$room" \
  --peer-url "http://127.0.0.1:$on_port" --json "$@" | tee -a "$OUT" | grep '"summary"' >/dev/null

# the check that the "on" server sealed what it stored and the "off" one did not
count='SELECT count(*) FILTER (WHERE content_key IS NULL), count(content_key) FROM messages'
for name in off on; do
  if [ -n "${BENCH_PG:-}" ]; then
    got=$(psql "$BENCH_PG/tsunagi_bench_at_rest_${name}_$$" -Atc "$count")
  else
    got=$(sqlite3 "$tmp/$name/b.db" "$count")
  fi
  echo "$name: messages stored plaintext|sealed = $got" >&2
done
echo "JSON lines: $OUT" >&2
