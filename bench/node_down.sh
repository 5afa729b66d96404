#!/usr/bin/env bash
# Writes while a replica is down: the same `redis-benchmark -t set -n N -c C
# -r KEYSPACE -q` (with and without -P 16) against node c1 of a 3-node RF 3
# cassio cluster at QUORUM, first with all three nodes up, then with c3
# stopped and seen DOWN, when every write also stores a hint for c3 on the
# coordinator. Prints ops/s of both and the ratio down / up: what losing
# one node of three costs the writes that go on. Then restarts c3 and times
# how long until c1 has replayed every hint to it. Stops what it started.
#
# STOP=1: c3 is stopped with SIGSTOP instead, and measured at once: up but
# silent, as a hung process is, before gossip marks it DOWN (the default
# phi threshold here). Writes to it time out and the peer is marked
# stalled; then c3 is continued (SIGCONT) and the replay timed.
#
#   bench/node_down.sh                  # N=200000 C=50 KEYSPACE=1000000
#   SYNC=batch bench/node_down.sh       # with batch (fsync per group) commits
#   STOP=1 bench/node_down.sh           # c3 hung, not dead
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
C=${C:-50}
KEYSPACE=${KEYSPACE:-1000000}
source "bench/common.sh"

# A low threshold so c3 is seen DOWN within seconds of being stopped.
down_fast=(--phi-convict-threshold 4)
c3_was=down c3_back=restarted
if [ -n "${STOP:-}" ]; then down_fast=() c3_was=stopped c3_back="was continued"; fi
c1=$(free_port); c2=$(free_port); c3=$(free_port); r1=$(free_port); r2=$(free_port); r3=$(free_port)
node c1 "$c1" "$r1" "$c1" "${down_fast[@]}"
node c2 "$c2" "$r2" "$c1" "${down_fast[@]}"
node c3 "$c3" "$r3" "$c1" "${down_fast[@]}"
c3_pid=${pids[-1]}
for port in "$r1" "$r2" "$r3"; do wait_pong "$port"; done
wait_members "$r1" 3 UP,NORMAL # joined, not JOINING: pending replicas count

declare -A args=([SET]="" [SET-P16]="-P 16") up down
for row in SET SET-P16; do up[$row]=$(ops "$r1" set "-r $KEYSPACE ${args[$row]}"); done
if [ -n "${STOP:-}" ]; then
    kill -STOP "$c3_pid"
else
    kill "$c3_pid"
    wait "$c3_pid" 2>/dev/null || true
    wait_members "$r1" 1 DOWN
fi
for row in SET SET-P16; do down[$row]=$(ops "$r1" set "-r $KEYSPACE ${args[$row]}"); done
stat() { redis-cli -p "$r1" info | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }
hints=$(stat hints_stored)
c3_seen=$(redis-cli -p "$r1" info | tr -d '\r' | awk -F, '$1 == "member:c3" { print $3 }')

if [ -n "${STOP:-}" ]; then
    kill -CONT "$c3_pid"
else
    node c3 "$c3" "$r3" "$c1" "${down_fast[@]}"
fi
restarted=$(date +%s.%N)
replay="not finished in 300 s"
for _ in $(seq 1 3000); do
    if [ "$(stat hints_replayed)" -ge "$hints" ]; then
        replay="$(python3 -c "import time; print(round(time.time() - $restarted, 1))") s"
        break
    fi
    sleep 0.1
done

printf "%-10s %10s %10s %8s\n" row "all up" "c3 $c3_was" "down/up"
for row in SET SET-P16; do
    printf "%-10s %10.0f %10.0f %8.3f\n" "$row" "${up[$row]}" "${down[$row]}" \
        "$(python3 -c "print(${down[$row]} / ${up[$row]} if ${up[$row]} else 0)")"
done
echo "N=$N C=$C KEYSPACE=$KEYSPACE SYNC=$SYNC; 3 nodes, RF 3, QUORUM, via c1"
echo "c1 saw c3 $c3_seen when the writes ended; hints stored for c3: $hints; all replayed $replay after c3 $c3_back (its start and gossip included)"
