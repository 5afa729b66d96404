# shellcheck shell=bash
# Shared by the bench scripts (sourced, not run): checks SYNC, installs
# redis-tools if missing, builds cassio-node, keeps a scratch directory and
# the PIDs of what the script starts, and stops exactly those on exit.

# SYNC: cassio's commit-log sync mode, and redis's matching appendfsync.
SYNC=${SYNC:-periodic}
case "$SYNC" in
    periodic) appendfsync=everysec ;;
    batch) appendfsync=always ;;
    *) echo "SYNC must be periodic or batch, not '$SYNC'" >&2; exit 2 ;;
esac

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "installing redis-server and redis-tools (Debian packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
fi
cargo build --release -q -p cassio-node

work=$(mktemp -d)
pids=()
cleanup() {
    # A stopped (SIGSTOP) node would never act on the signal to end.
    for pid in "${pids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
# READ_SPECULATIVE_RETRY_MS=0: reads ask every live replica (the read path
# before reads asked only the replicas their level needs).
{
    if [ -n "${READ_SPECULATIVE_RETRY_MS:-}" ]; then
        echo "read_speculative_retry_ms = $READ_SPECULATIVE_RETRY_MS"
    fi
    printf '[storage]\nsync_mode = "%s"\n' "$SYNC"
} >"$work/node.toml"

# TLS=1: every Redis-protocol port speaks TLS, with a self-signed
# certificate for 127.0.0.1 made here; redis-cli and redis-benchmark trust it.
tls_client=()
tls_node=()
if [ -n "${TLS:-}" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
    tls_client=(--tls --cacert "$work/tls.crt")
    tls_node=(--tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key")
fi

# Starts a cassio node in SYNC mode on loopback: name, native port, RESP
# port, seed's native port, then any further cassio-node flags.
node() {
    local name=$1 native=$2 resp=$3 seed=$4
    shift 4
    target/release/cassio-node --config "$work/node.toml" --name "$name" \
        --listen "127.0.0.1:$native" --resp "127.0.0.1:$resp" --data-dir "$work/$name" \
        --seeds "127.0.0.1:$seed" --log error "${tls_node[@]}" "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_pong() { # port
    for _ in $(seq 1 100); do
        [ "$(redis-cli "${tls_client[@]}" -p "$1" ping 2>/dev/null)" = "PONG" ] && return 0
        sleep 0.1
    done
    echo "nothing answers PING on port $1" >&2
    return 1
}

# Waits until node at RESP port $1 sees $2 members in state $3 (UP or DOWN).
wait_members() { # port count state
    for _ in $(seq 1 150); do
        [ "$(redis-cli "${tls_client[@]}" -p "$1" info | grep -c ",$3,")" = "$2" ] && return 0
        sleep 0.2
    done
    echo "port $1 did not see $2 members $3" >&2
    return 1
}

# BENCH_THREADS=N: redis-benchmark runs N threads (its --threads) instead
# of one. One thread is the issue's command; on a 2-core machine it can be
# the bottleneck itself (see BENCHMARKS.md): every server then scores what
# the client can send.
bench_threads=()
if [ -n "${BENCH_THREADS:-}" ]; then bench_threads=(--threads "$BENCH_THREADS"); fi

# Requests per second of one `redis-benchmark -n $N -c $C` run, 0 if it
# failed: port, test, extra arguments (one string, split on spaces).
# Leaves in $work/client_cpu the share of one core the benchmark client used
# meanwhile (user + system over elapsed, %): near 100 with one thread, the
# client, not the server, set the pace.
ops() {
    local rate TIMEFORMAT=%P
    # shellcheck disable=SC2086 # $3 holds several arguments
    { time redis-benchmark "${tls_client[@]}" "${bench_threads[@]}" -p "$1" -t "$2" -n "$N" -c "$C" -q $3 \
        >"$work/bench.out" 2>/dev/null; } 2>"$work/client_cpu" || true
    rate=$(tr '\r' '\n' <"$work/bench.out" |
        awk -F'[: ]+' -v t="$(echo "$2" | tr a-z A-Z)" '$1 == t { print $2 }' | tail -1) || true
    echo "${rate:-0}"
}
