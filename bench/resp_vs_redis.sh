#!/usr/bin/env bash
# RESP throughput, cassio vs redis-server, in one run on one machine:
# the same `redis-benchmark -t set,get -n N -c C -q` (with and without -P 16)
# against redis-server (appendonly yes, appendfsync everysec), a single cassio
# node (periodic commit-log sync) and a 3-node RF 3 cassio cluster at QUORUM.
# Prints ops/s per row and the ratio cassio / redis. Stops what it started.
#
#   bench/resp_vs_redis.sh                    # N=200000 C=50
#   N=50000 bench/resp_vs_redis.sh            # quicker
#   CLIENT_THREADS=1 bench/resp_vs_redis.sh   # cassio-node --client-threads 1
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
C=${C:-50}
threads=()
if [ -n "${CLIENT_THREADS:-}" ]; then threads=(--client-threads "$CLIENT_THREADS"); fi

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "installing redis-server and redis-tools (Debian packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release -q -p cassio-node

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_pong() {
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p "$1" ping 2>/dev/null)" = "PONG" ] && return 0
        sleep 0.1
    done
    echo "nothing answers PING on port $1" >&2
    return 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
    --save "" --dir "$work" --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)

node() { # name native resp seed
    target/release/cassio-node --name "$1" --listen "127.0.0.1:$2" --resp "127.0.0.1:$3" \
        --data-dir "$work/$1" --seeds "127.0.0.1:$4" --log error "${threads[@]}" >"$work/$1.log" 2>&1 &
    pids+=($!)
}
solo_native=$(free_port); solo_resp=$(free_port)
node solo "$solo_native" "$solo_resp" "$solo_native"
c1=$(free_port); c2=$(free_port); c3=$(free_port); r1=$(free_port); r2=$(free_port); r3=$(free_port)
node c1 "$c1" "$r1" "$c1"
node c2 "$c2" "$r2" "$c1"
node c3 "$c3" "$r3" "$c1"
for port in "$redis_port" "$solo_resp" "$r1" "$r2" "$r3"; do wait_pong "$port"; done
# Let the cluster see all three nodes before measuring.
for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$r1" info | grep -c ',UP,')" = "3" ] && break
    sleep 0.2
done

ops() { # port, extra args, test -> requests per second
    redis-benchmark -p "$1" -t "$3" -n "$N" -c "$C" -q $2 2>/dev/null | tr '\r' '\n' |
        awk -F'[: ]+' -v t="$(echo "$3" | tr a-z A-Z)" '$1 == t { print $2 }' | tail -1
}

printf '%-24s %12s %12s %12s %10s %10s\n' "row" "redis" "cassio-1" "cassio-3Q" "1/redis" "3Q/redis"
for pipeline in "" "-P 16"; do
    for test in set get; do
        redis_ops=$(ops "$redis_port" "$pipeline" "$test")
        solo_ops=$(ops "$solo_resp" "$pipeline" "$test")
        trio_ops=$(ops "$r1" "$pipeline" "$test")
        label="$(echo "$test" | tr a-z A-Z) ${pipeline:-(no pipeline)}"
        awk -v l="$label" -v r="$redis_ops" -v s="$solo_ops" -v t="$trio_ops" \
            'BEGIN { printf "%-24s %12.0f %12.0f %12.0f %10.3f %10.3f\n", l, r, s, t, s / r, t / r }'
    done
done
echo "N=$N C=$C; cassio-1: one node; cassio-3Q: 3 nodes, RF 3, QUORUM, via node c1's RESP port"
