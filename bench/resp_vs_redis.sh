#!/usr/bin/env bash
# RESP throughput, cassio vs redis-server, in one run on one machine:
# the same `redis-benchmark -t set,get -n N -c C -q` (with and without -P 16)
# against redis-server (appendonly yes, appendfsync everysec; always with
# SYNC=batch), a single cassio node (periodic commit-log sync; batch with
# SYNC=batch) and a 3-node RF 3 cassio cluster at QUORUM.
# A second redis-server, set up like the first and measured the same way, is
# the control: its ratio to the first shows how far this machine's noise
# alone moves a ratio. Every row runs ROUNDS times, the servers taking turns
# in an order rotated every round (ROUNDS=4 puts each server in each place
# once); it prints each server's median ops/s and the median and
# range of the per-round ratios to redis. Stops what it started.
#
#   bench/resp_vs_redis.sh                    # N=200000 C=50 ROUNDS=4
#   N=50000 ROUNDS=1 bench/resp_vs_redis.sh   # quicker
#   CLIENT_THREADS=1 bench/resp_vs_redis.sh   # cassio-node --client-threads 1
#   KEYSPACE=1000000 bench/resp_vs_redis.sh   # random keys out of a million (-r)
#   RESULTS=runs.txt bench/resp_vs_redis.sh   # also keep every run: row|server|round|ops/s|client CPU %
#   BENCH_THREADS=2 bench/resp_vs_redis.sh    # redis-benchmark --threads 2 (one thread can
#                                             # be the bottleneck on 2 cores)
#   SYNC=batch bench/resp_vs_redis.sh         # durable writes: cassio's batch sync
#                                             # mode against appendfsync always
#   TLS=1 bench/resp_vs_redis.sh              # every server's port speaks TLS
#   READ_SPECULATIVE_RETRY_MS=0 bench/...     # reads ask every live replica
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
C=${C:-50}
ROUNDS=${ROUNDS:-4}
keyspace=${KEYSPACE:+-r $KEYSPACE}
threads=()
if [ -n "${CLIENT_THREADS:-}" ]; then threads=(--client-threads "$CLIENT_THREADS"); fi
source "bench/common.sh"

redis() { # name port
    mkdir -p "$work/$1"
    local port=(--port "$2")
    if [ -n "${TLS:-}" ]; then
        port=(--port 0 --tls-port "$2" --tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key"
            --tls-auth-clients no)
    fi
    redis-server "${port[@]}" --bind 127.0.0.1 --appendonly yes --appendfsync "$appendfsync" \
        --save "" --dir "$work/$1" --daemonize no >"$work/$1.log" 2>&1 &
    pids+=($!)
}
redis_port=$(free_port); control_port=$(free_port)
redis redis "$redis_port"
redis control "$control_port"

solo_native=$(free_port); solo_resp=$(free_port)
node solo "$solo_native" "$solo_resp" "$solo_native" "${threads[@]}"
c1=$(free_port); c2=$(free_port); c3=$(free_port); r1=$(free_port); r2=$(free_port); r3=$(free_port)
node c1 "$c1" "$r1" "$c1" "${threads[@]}"
node c2 "$c2" "$r2" "$c1" "${threads[@]}"
node c3 "$c3" "$r3" "$c1" "${threads[@]}"
for port in "$redis_port" "$control_port" "$solo_resp" "$r1" "$r2" "$r3"; do wait_pong "$port"; done
# Let the cluster see all three nodes before measuring.
wait_members "$r1" 3 UP,NORMAL # joined, not JOINING: pending replicas count

# The servers take turns in a different order every round (rotated by one
# place), and each run starts once the page cache holds no dirty pages: a
# run that follows a write-heavy one otherwise shares the machine with that
# run's writeback, and in a fixed order the same server always paid for it.
servers=(redis:"$redis_port" cassio-1:"$solo_resp" control:"$control_port" cassio-3Q:"$r1")
results="$work/results" # row|server|round|ops/s|client CPU %
for round in $(seq 1 "$ROUNDS"); do
    for pipeline in "" "-P 16"; do
        for test in set get; do
            row="$(echo "$test" | tr a-z A-Z)${pipeline:+ ${pipeline// /}}"
            for turn in 0 1 2 3; do
                server=${servers[$(((turn + round) % 4))]}
                sync
                rate=$(ops "${server#*:}" "$test" "$keyspace $pipeline")
                echo "$row|${server%%:*}|$round|$rate|$(cat "$work/client_cpu")" >>"$results"
            done
        done
    done
    echo "round $round of $ROUNDS done" >&2
done
if [ -n "${RESULTS:-}" ]; then cp "$results" "$RESULTS"; fi

# Per row: each server's median ops/s; each ratio's median over the rounds
# and its range (lowest-highest).
awk -F'|' -v rounds="$ROUNDS" '
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function range(list,   n, a, i, lo, hi) {
        n = split(list, a, " "); lo = hi = a[1]
        for (i = 2; i <= n; i++) { if (a[i] + 0 < lo + 0) lo = a[i]; if (a[i] + 0 > hi + 0) hi = a[i] }
        return sprintf("%.2f-%.2f", lo, hi)
    }
    { ops[$1 "|" $2] = ops[$1 "|" $2] " " $4; cpu[$1 "|" $2] = cpu[$1 "|" $2] " " $5; at[$1 "|" $2 "|" $3] = $4; if (!($1 in seen)) { seen[$1] = 1; rows[++n] = $1 } }
    END {
        printf "%-10s %9s %9s %9s %9s | %-16s %-16s %-16s\n", "row", "redis", "control", "cassio-1", "cassio-3Q", "control/redis", "cassio-1/redis", "cassio-3Q/redis"
        for (i = 1; i <= n; i++) {
            row = rows[i]
            printf "%-10s %9.0f %9.0f %9.0f %9.0f |", row, median(ops[row "|redis"]), median(ops[row "|control"]), median(ops[row "|cassio-1"]), median(ops[row "|cassio-3Q"])
            split("control cassio-1 cassio-3Q", servers, " ")
            for (s = 1; s <= 3; s++) {
                ratios = ""
                for (r = 1; r <= rounds; r++) ratios = ratios " " at[row "|" servers[s] "|" r] / at[row "|redis|" r]
                printf " %.3f (%s)  ", median(ratios), range(ratios)
            }
            printf "\n"
        }
        printf "\nredis-benchmark CPU, %% of one core (median): near 100%% x threads, the client set the pace\n"
        printf "%-10s %9s %9s %9s %9s\n", "row", "redis", "control", "cassio-1", "cassio-3Q"
        for (i = 1; i <= n; i++) {
            row = rows[i]
            printf "%-10s %9.0f %9.0f %9.0f %9.0f\n", row, median(cpu[row "|redis"]), median(cpu[row "|control"]), median(cpu[row "|cassio-1"]), median(cpu[row "|cassio-3Q"])
        }
    }' "$results"
echo "N=$N C=$C ROUNDS=$ROUNDS SYNC=$SYNC${BENCH_THREADS:+ BENCH_THREADS=$BENCH_THREADS} (redis appendfsync $appendfsync)${KEYSPACE:+ KEYSPACE=$KEYSPACE}${TLS:+ TLS}; control: a second redis-server; cassio-1: one node; cassio-3Q: 3 nodes, RF 3, QUORUM, via node c1's RESP port"
