#!/usr/bin/env bash
# Many rooms: bench/run.sh with 100 rooms x 10 clients, one sender per room (tsunagi and the
# Node peer, alternating rounds, medians), plots in $BENCH_PLOTS/many-rooms-closed.svg and
# -paced.svg. The paced load is BENCH_PACED_RATE (default 10) msgs/s per sender: 1 000 sends/s
# in all, as the one-room paced load, spread over 100 rooms.
#
#   bench/many_rooms.sh                          3 rounds of 2 s + 10 s per load
#   bench/many_rooms.sh --rounds 1 --duration 2s  extra arguments go to tsunagi-bench
#   BENCH_ROOMS=200 BENCH_PER_ROOM=25 bench/many_rooms.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rooms=${BENCH_ROOMS:-100}
per_room=${BENCH_PER_ROOM:-10}
BENCH_NAME=${BENCH_NAME:-many-rooms} BENCH_PACED_RATE=${BENCH_PACED_RATE:-10} \
  BENCH_OUT=${BENCH_OUT:-target/bench/many_rooms.jsonl} \
  exec bench/run.sh --rooms "$rooms" --clients $((rooms * per_room)) --senders "$rooms" "$@"
