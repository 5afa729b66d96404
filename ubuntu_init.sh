#!/usr/bin/env bash
# ubuntu_init.sh: a bare Ubuntu (or Debian) host -> a cassio node running
# under systemd.
#
#   sudo ./ubuntu_init.sh                           # the first node of a new cluster
#   sudo ./ubuntu_init.sh --seeds 10.0.0.1:9000     # a node joining that cluster
#   sudo ./ubuntu_init.sh --help                    # every option
#
# Run from a checkout of cassio. It builds the binaries (installing the build
# tools and, if cargo is missing, Rust through rustup), or takes built ones
# with --bin-dir; installs them to /usr/local/bin; creates the `cassio`
# system user; writes /etc/cassio/cassio.toml (an existing one is kept) and
# the unit cassio.service; then enables and starts the node and waits until
# it answers. Run it again to upgrade: the binaries are replaced and the node
# restarted; its config and data stay.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: sudo ./ubuntu_init.sh [OPTIONS]

  --name NAME               node name, unique in the cluster [short host name]
  --address IP              address the other hosts reach this one at
                            [the source address of the default route]
  --seeds HOST:PORT,...     nodes of the cluster to join; without it this node
                            starts a new cluster (it is its own seed)
  --cluster-name NAME       [cassio]
  --replication-factor N    copies of each key [3]
  --native-port PORT        peers and cassio clients [9000]
  --resp-port PORT          Redis-protocol clients [6379]
  --http-port PORT|off      metrics and probes over HTTP (/metrics, /health,
                            /ready) [9180]; off turns them off
  --password-file FILE      the cluster's password, from FILE's first line
                            (kept out of the process list and shell history);
                            every node of the cluster needs the same one
  --tls-cert FILE           PEM certificate chain (this host's first) and its
  --tls-key FILE            private key: the Redis-protocol port then speaks
                            TLS only (redis-cli --tls); both or neither.
                            Copied to /etc/cassio on every run (a rerun
                            renews them)
  --tls-ca FILE             PEM certificate of the CA that signed every
                            node's certificate (needs --tls-cert): the native
                            port (peers, cassio) speaks TLS too; the same on
                            every node
  --bind IP                 interface the ports listen on [0.0.0.0: all]
  --data-dir DIR            [/var/lib/cassio]
  --bin-dir DIR             install cassio-node (and cassio) from DIR instead
                            of building them
  --root DIR                install into DIR instead of /: files only, no user,
                            no systemctl (for images and tests)
  --no-start                install everything, but do not start the node
  -h, --help                this text
EOF
}

die() {
    echo "ubuntu_init.sh: $*" >&2
    exit 2
}
say() { echo "== $*"; }

name=$(hostname -s 2>/dev/null || echo node1)
address=""
seeds=""
cluster_name=cassio
replication_factor=3
native_port=9000
resp_port=6379
http_port=9180
password_file=""
tls_cert=""
tls_key=""
tls_ca=""
bind_ip=0.0.0.0
data_dir=/var/lib/cassio
bin_dir=""
root=""
start=1

while [ $# -gt 0 ]; do
    option=$1
    case "$option" in
        -h | --help) usage; exit 0 ;;
        --no-start) start=0; shift; continue ;;
        --name | --address | --seeds | --cluster-name | --replication-factor | --native-port | \
            --resp-port | --http-port | --password-file | --tls-cert | --tls-key | --tls-ca | --bind | \
            --data-dir | --bin-dir | --root) ;;
        *) die "unknown option '$option' (see --help)" ;;
    esac
    [ $# -ge 2 ] || die "$option needs a value"
    value=$2
    shift 2
    case "$option" in
        --name) name=$value ;;
        --address) address=$value ;;
        --seeds) seeds=$value ;;
        --cluster-name) cluster_name=$value ;;
        --replication-factor) replication_factor=$value ;;
        --native-port) native_port=$value ;;
        --resp-port) resp_port=$value ;;
        --http-port) http_port=$value ;;
        --password-file) password_file=$value ;;
        --tls-cert) tls_cert=$value ;;
        --tls-key) tls_key=$value ;;
        --tls-ca) tls_ca=$value ;;
        --bind) bind_ip=$value ;;
        --data-dir) data_dir=$value ;;
        --bin-dir) bin_dir=$value ;;
        --root) root=${value%/} ;;
    esac
done

is_port() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_port "$native_port" || die "--native-port must be 1-65535, got '$native_port'"
is_port "$resp_port" || die "--resp-port must be 1-65535, got '$resp_port'"
[ "$native_port" != "$resp_port" ] || die "--native-port and --resp-port must differ"
if [ "$http_port" != off ]; then
    is_port "$http_port" || die "--http-port must be 1-65535 or off, got '$http_port'"
    [ "$http_port" != "$native_port" ] && [ "$http_port" != "$resp_port" ] ||
        die "--http-port must differ from --native-port and --resp-port"
fi
password=""
if [ -n "$password_file" ]; then
    [ -r "$password_file" ] || die "cannot read --password-file '$password_file'"
    IFS= read -r password <"$password_file" || true
    password=${password%$'\r'} # a file saved with Windows line ends
    [ -n "$password" ] || die "--password-file '$password_file' holds no password on its first line"
    if [[ $password =~ [[:cntrl:]] ]]; then
        die "the password in '$password_file' holds a control character (a tab, say); use printable characters"
    fi
fi
if [ -n "$tls_cert" ] || [ -n "$tls_key" ]; then
    [ -n "$tls_cert" ] && [ -n "$tls_key" ] ||
        die "--tls-cert and --tls-key go together (a certificate and its private key)"
    [ -r "$tls_cert" ] || die "cannot read --tls-cert '$tls_cert'"
    [ -r "$tls_key" ] || die "cannot read --tls-key '$tls_key'"
fi
if [ -n "$tls_ca" ]; then
    [ -n "$tls_cert" ] || die "--tls-ca needs --tls-cert and --tls-key (this node's own certificate)"
    [ -r "$tls_ca" ] || die "cannot read --tls-ca '$tls_ca'"
fi
[[ $replication_factor =~ ^[1-9][0-9]*$ ]] || die "--replication-factor must be a positive number, got '$replication_factor'"
[[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may hold letters, digits, '.', '_' and '-', got '$name'"
[[ $cluster_name =~ ^[A-Za-z0-9._-]+$ ]] || die "--cluster-name may hold letters, digits, '.', '_' and '-', got '$cluster_name'"
[[ $data_dir == /* ]] || die "--data-dir must be an absolute path, got '$data_dir'"
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    die "run it as root (sudo), or with --root DIR to install into a directory"
fi

if [ -z "$address" ]; then
    address=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "src") { print $(i + 1); exit } }') || true
    [ -n "$address" ] || address=$(hostname -I 2>/dev/null | awk '{ print $1 }') || true
    [ -n "$address" ] || die "cannot tell this host's address; give it with --address IP"
fi
[[ $address =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "--address must be an IPv4 address, got '$address'"
if [ "$address" = 0.0.0.0 ]; then die "--address 0.0.0.0 is no address other hosts can reach"; fi
# Without seeds this node starts a new cluster: it is its own seed.
[ -n "$seeds" ] || seeds="$address:$native_port"
for seed in ${seeds//,/ }; do
    [[ $seed =~ ^[A-Za-z0-9._-]+:[0-9]+$ ]] || die "--seeds takes HOST:PORT,... ; '$seed' is not HOST:PORT"
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The binaries: built here, or taken from --bin-dir.
if [ -z "$bin_dir" ]; then
    [ -f "$repo/Cargo.toml" ] || die "run it from a cassio checkout, or give built binaries with --bin-dir"
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
        say "installing build tools (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential curl ca-certificates >/dev/null
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        # Debian's and Ubuntu's cargo packages are older than the 2024
        # edition this workspace needs.
        say "installing Rust (rustup, minimal profile)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
        PATH="$HOME/.cargo/bin:$PATH"
    fi
    say "building cassio (release; a few minutes the first time)"
    (cd "$repo" && cargo build --release --locked -p cassio-node -p cassio-cli)
    bin_dir="$repo/target/release"
fi
[ -x "$bin_dir/cassio-node" ] || die "no executable cassio-node in $bin_dir"
"$bin_dir/cassio-node" --version >/dev/null || die "$bin_dir/cassio-node does not run on this host"

say "installing binaries to $root/usr/local/bin"
install -d "$root/usr/local/bin"
install -m 0755 "$bin_dir/cassio-node" "$root/usr/local/bin/cassio-node"
if [ -x "$bin_dir/cassio" ]; then
    install -m 0755 "$bin_dir/cassio" "$root/usr/local/bin/cassio"
else
    echo "   (no cassio CLI in $bin_dir; only the daemon is installed)"
fi

if [ -z "$root" ]; then
    if ! id -u cassio >/dev/null 2>&1; then
        say "creating the system user cassio"
        useradd --system --home-dir "$data_dir" --no-create-home --shell /usr/sbin/nologin cassio
    fi
    install -d -o cassio -g cassio -m 0750 "$data_dir"
else
    install -d -m 0750 "$root$data_dir"
fi

config="$root/etc/cassio/cassio.toml"
install -d "$root/etc/cassio"
# The TLS pair is checked before anything is installed; the config to
# write is checked with it where it is now.
tls_given=()
if [ -n "$tls_cert" ]; then
    tls_given=(CASSIO_TLS_CERT_FILE="$tls_cert" CASSIO_TLS_KEY_FILE="$tls_key")
    if [ -n "$tls_ca" ]; then tls_given+=(CASSIO_TLS_CA_CERT_FILE="$tls_ca"); fi
    env "${tls_given[@]}" "$bin_dir/cassio-node" --check-config >/dev/null ||
        die "--tls-cert, --tls-key${tls_ca:+ and --tls-ca} do not make a usable TLS setting (see above); nothing was installed in $root/etc/cassio"
fi
if [ -f "$config" ]; then
    say "keeping $config (edit it, or remove it to write a new one)"
    if [ -n "$password_file" ]; then
        echo "   (--password-file was not applied: the kept config's password, if any, stays)"
    fi
    if [ -n "$tls_cert" ] && ! grep -q '^\[tls\]' "$config"; then
        echo "   (the kept config has no [tls] section: the installed certificate is not used)"
    elif [ -n "$tls_ca" ] && ! grep -q '^ca_cert_file' "$config"; then
        echo "   (the kept config has no ca_cert_file: the installed CA is not used, the native port stays plain text)"
    fi
    # It may hold a password: readable by root and the cassio group only,
    # as this script writes it (older versions left it world-readable).
    chmod 0640 "$config"
    if [ -z "$root" ]; then chgrp cassio "$config"; fi
else
    say "writing $config"
    seed_list=""
    for seed in ${seeds//,/ }; do seed_list="$seed_list${seed_list:+, }\"$seed\""; done
    # Staged in a private temporary file, then installed readable by root
    # and the cassio group only: it may hold the password.
    staged=$(mktemp)
    trap 'rm -f "$staged"' EXIT
    cat >"$staged" <<EOF
# cassio-node settings (every key is also a --flag and a CASSIO_* variable;
# \`cassio-node --help\` lists them). Written by ubuntu_init.sh.
name = "$name"
cluster_name = "$cluster_name"
# Peers and cassio clients; announced to the cluster as \`broadcast\`.
listen = "$bind_ip:$native_port"
broadcast = "$address:$native_port"
# Redis-protocol clients (redis-cli -h $address -p $resp_port).
resp = "$bind_ip:$resp_port"
seeds = [$seed_list]
data_dir = "$data_dir"
replication_factor = $replication_factor
EOF
    if [ "$http_port" != off ]; then
        cat >>"$staged" <<EOF
# Metrics (Prometheus) and probes: curl http://$address:$http_port/ready
http = "$bind_ip:$http_port"
EOF
    fi
    if [ -n "$password" ]; then
        # A TOML basic string: backslashes, then quotes, escaped.
        escaped=${password//\\/\\\\}
        escaped=${escaped//\"/\\\"}
        {
            echo "# Clients and peers must give it (redis-cli -a, cassio --password)."
            printf 'password = "%s"\n' "$escaped"
        } >>"$staged"
    fi
    if [ -n "$tls_cert" ]; then
        # A table: after every plain key.
        cat >>"$staged" <<EOF
# TLS on the Redis-protocol port (redis-cli --tls --cacert CA -h $address -p $resp_port).
[tls]
cert_file = "/etc/cassio/tls.crt"
key_file = "/etc/cassio/tls.key"
EOF
        if [ -n "$tls_ca" ]; then
            cat >>"$staged" <<EOF
# The native port (peers, cassio --tls-ca-cert-file /etc/cassio/ca.crt) too.
ca_cert_file = "/etc/cassio/ca.crt"
EOF
        fi
    fi
    # Checked before it is installed: a rerun keeps whatever is installed.
    env "${tls_given[@]}" "$bin_dir/cassio-node" --config "$staged" --check-config >/dev/null ||
        die "the config written from these options is not valid (see above); nothing was installed in $root/etc/cassio"
    if [ -z "$root" ]; then
        install -m 0640 -o root -g cassio "$staged" "$config"
    else
        install -m 0640 "$staged" "$config"
    fi
fi
if [ -n "$tls_cert" ]; then
    # The key readable by root and the cassio group only, as the config.
    say "installing $root/etc/cassio/tls.crt and tls.key"
    install -m 0644 "$tls_cert" "$root/etc/cassio/tls.crt"
    if [ -n "$tls_ca" ]; then install -m 0644 "$tls_ca" "$root/etc/cassio/ca.crt"; fi
    if [ -z "$root" ]; then
        install -m 0640 -o root -g cassio "$tls_key" "$root/etc/cassio/tls.key"
    else
        install -m 0640 "$tls_key" "$root/etc/cassio/tls.key"
    fi
fi
tls_on=""
if grep -q '^\[tls\]' "$config"; then tls_on=1; fi

unit="$root/etc/systemd/system/cassio.service"
say "writing $unit"
install -d "$root/etc/systemd/system"
cat >"$unit" <<'EOF'
[Unit]
Description=cassio database node
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=cassio
Group=cassio
ExecStart=/usr/local/bin/cassio-node --config /etc/cassio/cassio.toml
# SIGTERM flushes storage before the node exits.
KillSignal=SIGTERM
TimeoutStopSec=120
# A crash restarts the node; a refused configuration (exit 2) does not
# loop, and a decommissioned node exits 0 and stays stopped.
Restart=on-failure
RestartSec=5
RestartPreventExitStatus=2
LimitNOFILE=1048576
NoNewPrivileges=true
ProtectSystem=full
PrivateTmp=true

[Install]
WantedBy=multi-user.target
EOF

# The config may have been kept: check it as the daemon will read it.
# Under --root the config's TLS files are at the root, not at /etc/cassio.
tls_under_root=()
if [ -n "$root" ] && [ -n "$tls_on" ]; then
    tls_under_root=(CASSIO_TLS_CERT_FILE="$root/etc/cassio/tls.crt" CASSIO_TLS_KEY_FILE="$root/etc/cassio/tls.key")
    if grep -q '^ca_cert_file' "$config"; then
        tls_under_root+=(CASSIO_TLS_CA_CERT_FILE="$root/etc/cassio/ca.crt")
    fi
fi
env "${tls_under_root[@]}" "$bin_dir/cassio-node" --config "$config" --check-config >/dev/null ||
    die "$config is not valid (see above)"
if [ -n "$root" ]; then
    say "installed into $root; start it there with: cassio-node --config /etc/cassio/cassio.toml"
    exit 0
fi

systemctl daemon-reload
if [ "$start" = 0 ]; then
    systemctl enable cassio.service >/dev/null
    say "installed; start it with: systemctl start cassio"
    exit 0
fi
say "starting cassio.service"
systemctl enable cassio.service >/dev/null
systemctl restart cassio.service
probe_ip=$address
[ "$bind_ip" = 0.0.0.0 ] || probe_ip=$bind_ip
for _ in $(seq 1 60); do
    if systemctl is-failed --quiet cassio.service; then
        journalctl -u cassio.service -t cassio-node -n 1 --no-pager -o cat >&2 || true
        die "cassio.service failed to start (the reason is above; journalctl -u cassio)"
    fi
    if (exec 3<>"/dev/tcp/$probe_ip/$native_port") 2>/dev/null; then
        say "cassio is up: node $name at $address:$native_port (Redis protocol on port $resp_port${tls_on:+, TLS})"
        if [ -x /usr/local/bin/cassio ]; then
            [ -z "$password" ] || export CASSIO_PASSWORD=$password
            if grep -q '^ca_cert_file' "$config"; then
                export CASSIO_TLS_CA_CERT_FILE=/etc/cassio/ca.crt
            fi
            /usr/local/bin/cassio --host "$address:$native_port" status || true
        fi
        echo "   Other hosts reach it through TCP ports $native_port and $resp_port; open them between the cluster's hosts only."
        if [ "$http_port" != off ]; then
            echo "   Metrics and probes: http://$address:$http_port/metrics, /health, /ready (no password: open it to your scraper only)."
        fi
        echo "   Logs: journalctl -u cassio -f"
        if [ "$seeds" != "$address:$native_port" ]; then
            echo "   Once it shows NORMAL (UN), run 'cassio --host HOST:$native_port cleanup' for each older node: they still hold the keys they handed over."
        fi
        exit 0
    fi
    sleep 1
done
systemctl --no-pager status cassio.service || true
die "the node did not answer on $address:$native_port within 60 s; see journalctl -u cassio"
