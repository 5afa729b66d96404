#!/usr/bin/env bash
# How long `cassio repair` takes: three cassio-node processes (RF 3, hinted
# handoff off so that only repair heals), KEYS distinct keys of 100 bytes
# written through redis-benchmark. Repair runs once with the replicas in
# sync, then after one node was stopped while every key was overwritten
# (it must receive about KEYS cells), then once more (nothing to do).
# There is no peer system here to compare with (Cassandra is not in this
# machine's registries), so it prints times, not ratios. Stops what it
# started.
#
#   bench/repair_time.sh                 # KEYS=100000
#   KEYS=1000000 bench/repair_time.sh    # the figures in BENCHMARKS.md
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-100000}
source "bench/common.sh"
cargo build --release -q -p cassio-cli
printf 'hinted_handoff = false\n[storage]\nsync_mode = "periodic"\n' >"$work/node.toml"

declare -A native resp pid
for n in a b c; do native[$n]=$(free_port); resp[$n]=$(free_port); done
start() { # name
    node "$1" "${native[$1]}" "${resp[$1]}" "${native[a]}" --gossip-interval-ms 200
    pid[$1]=${pids[-1]}
}
for n in a b c; do start "$n"; done
for n in a b c; do wait_pong "${resp[$n]}"; done
wait_members "${resp[a]}" 3 UP

write_every_key() {
    redis-benchmark -p "${resp[a]}" -t set -r "$KEYS" -n $((KEYS * 3)) -d 100 -c 50 -P 16 -q >/dev/null 2>&1
}
repair() { # name
    local t0 t1 out
    t0=$(date +%s.%N)
    out=$(target/release/cassio --host "127.0.0.1:${native[$1]}" repair)
    t1=$(date +%s.%N)
    echo "$(python3 -c "print(f'{$t1 - $t0:.2f}')") s: $out"
}

write_every_key
echo "in sync, repair on a:  $(repair a)"
kill "${pid[c]}"
wait "${pid[c]}" 2>/dev/null || true
wait_members "${resp[a]}" 1 DOWN
write_every_key
start c
wait_pong "${resp[c]}"
wait_members "${resp[c]}" 3 UP
wait_members "${resp[a]}" 3 UP
echo "c missed every write, repair on c: $(repair c)"
echo "right after, repair on c: $(repair c)"
