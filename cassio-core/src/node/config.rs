//! A node's configuration: one serde struct whose field names are the
//! daemon's flags (`--replication-factor` is `replication_factor`), with
//! defaults that serve a single node on 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::coordinator::ConsistencyLevel;
use crate::error::{Error, Result};
use crate::net::TlsFiles;
use crate::proto::FRAME_BYTES_LIMIT;
use crate::storage::StorageConfig;
use crate::types::Secret;

/// Room in a frame for everything but the key and value.
const FRAME_OVERHEAD_BYTES: usize = 4096;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name, unique in the cluster (`--name`).
    pub name: String,
    /// Nodes only talk to nodes of the same cluster name.
    pub cluster_name: String,
    /// When set (`--password`), every client and peer must give it: in the
    /// native handshake, and on the Redis port with AUTH (or HELLO's AUTH)
    /// before any other command. Every node of a cluster needs the same.
    /// Sent in the clear on a port without TLS (`tls`): there, use it on a
    /// network you trust.
    pub password: Option<Secret>,
    /// Native protocol address for clients and peers (`--listen`); port 0
    /// picks a free port.
    pub listen: SocketAddr,
    /// The native address peers and clients reach this node at
    /// (`--broadcast`), gossiped in place of the bound one: needed when
    /// `listen` binds every interface (0.0.0.0 or ::) or sits behind
    /// address translation, as Cassandra's `broadcast_address`. Port 0
    /// takes the bound port. Default: the address `listen` bound.
    #[serde(deserialize_with = "resolve_optional")]
    pub broadcast: Option<SocketAddr>,
    /// Redis-protocol address (`--resp`). Bound to every interface, it is
    /// announced under the broadcast (or listen) host.
    pub resp: Option<SocketAddr>,
    /// HTTP address for operators (`--http`): `/metrics` (Prometheus),
    /// `/health` and `/ready` (probes). It serves no data and asks no
    /// password. Default: off.
    pub http: Option<SocketAddr>,
    /// Native addresses of nodes to join through (`--seeds A,B`).
    #[serde(deserialize_with = "resolve_all")]
    pub seeds: Vec<SocketAddr>,
    /// Where this node keeps its data (`--data-dir`); default
    /// `./cassio-data/NAME`.
    pub data_dir: Option<PathBuf>,
    /// Copies of each key (`--replication-factor`).
    pub replication_factor: u32,
    /// Placement vectors this node draws once; fixed after first start.
    pub vnodes: u32,
    /// Period of gossip rounds.
    pub gossip_interval_ms: u64,
    /// Phi above which a peer is marked DOWN.
    pub phi_convict_threshold: f64,
    /// Largest native-protocol frame accepted.
    pub frame_bytes_max: usize,
    /// Deadline for one peer request (gossip exchange, later replica calls).
    pub peer_request_timeout_ms: u64,
    /// Consistency level of reads that do not name one.
    pub read_consistency: ConsistencyLevel,
    /// Consistency level of writes that do not name one.
    pub write_consistency: ConsistencyLevel,
    /// A write gets `QuorumNotReached` if its level is not met in this time.
    pub write_timeout_ms: u64,
    /// A read gets `QuorumNotReached` if its level is not met in this time.
    pub read_timeout_ms: u64,
    /// A read asks only the replicas its level needs (this node's own copy
    /// first, when it holds one); if they have not all answered in this
    /// time, it asks the key's other live replicas too (Cassandra's
    /// speculative retry). 0 asks every live replica at once: each read then
    /// compares, and repairs, every copy, for a replica's worth more work.
    pub read_speculative_retry_ms: u64,
    /// Keep hints for replicas that miss a write, and replay them.
    pub hinted_handoff: bool,
    /// Hints older than this are dropped (anti-entropy must cover them).
    pub hint_window_ms: u64,
    /// Hints kept at most (bytes on disk); beyond it new hints are dropped.
    pub hints_bytes_max: u64,
    /// Each node repairs against its live peers this often (anti-entropy,
    /// as `cassio repair`), first at a random time in the second half of
    /// the first interval so that nodes do not all start at once; 0 turns
    /// it off. Keep it under `storage.gc_grace_ms`: a replica that missed a
    /// delete must get the tombstone before compaction may purge it.
    pub repair_interval_ms: u64,
    /// A new node (empty storage, no peer known, not among its own seeds)
    /// joins by streaming: it starts JOINING and turns NORMAL once the nodes
    /// holding data have sent it its keys. `false` starts it NORMAL at once:
    /// for the nodes of a new cluster, which all start empty (as
    /// Cassandra's `auto_bootstrap`).
    pub bootstrap: bool,
    /// Threads serving Redis-protocol connections, each with its own
    /// runtime (`--client-threads`); 0 serves them on the node's own thread.
    /// Default: one per core, at most 8.
    pub client_threads: usize,
    /// Client connections open at once at most, Redis-protocol and native
    /// together (`--max-clients`, as Redis's `maxclients`); one more is
    /// answered `-ERR max number of clients reached` (or its native
    /// handshake refused) and closed. Peers never count. Default: 10,000.
    pub max_clients: usize,
    /// TLS (`--tls-cert-file` and `--tls-key-file`, Redis's names; `[tls]`
    /// in a config file): the Redis-protocol port then speaks only TLS, and
    /// a plain-text client is told so; with the cluster's CA as well
    /// (`--tls-ca-cert-file`), the native port too. The HTTP port stays
    /// plain text. Default: off.
    pub tls: Option<TlsFiles>,
    pub storage: StorageConfig,
}

/// A config file may name hosts where it gives peers' addresses
/// (`"db1.internal:9000"`); they are resolved once, at start, as the flags
/// are ([`crate::net::parse_host_port`]).
fn resolve_all<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| crate::net::parse_host_port(text).map_err(serde::de::Error::custom))
        .collect()
}

fn resolve_optional<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| crate::net::parse_host_port(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// Most client threads a node may run.
const CLIENT_THREADS_MAX: usize = 256;

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "node1".to_string(),
            cluster_name: "cassio".to_string(),
            password: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            broadcast: None,
            resp: Some(SocketAddr::from(([127, 0, 0, 1], 6379))),
            http: None,
            seeds: Vec::new(),
            data_dir: None,
            replication_factor: 3,
            vnodes: 256,
            gossip_interval_ms: 1000,
            phi_convict_threshold: 8.0,
            frame_bytes_max: 16 * 1024 * 1024 + 128 * 1024,
            peer_request_timeout_ms: 2000,
            read_consistency: ConsistencyLevel::Quorum,
            write_consistency: ConsistencyLevel::Quorum,
            write_timeout_ms: 2000,
            read_timeout_ms: 5000,
            read_speculative_retry_ms: 20,
            hinted_handoff: true,
            hint_window_ms: 3 * 60 * 60 * 1000,
            hints_bytes_max: 256 * 1024 * 1024,
            repair_interval_ms: 24 * 60 * 60 * 1000,
            bootstrap: true,
            client_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            max_clients: 10_000,
            tls: None,
            storage: StorageConfig::default(),
        }
    }
}

impl NodeConfig {
    /// The data directory, defaulted from the name.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("cassio-data").join(&self.name))
    }

    /// The native address this node announces, given the one `listen` bound.
    pub fn announced_native(&self, bound: SocketAddr) -> SocketAddr {
        match self.broadcast {
            Some(b) if b.port() == 0 => SocketAddr::new(b.ip(), bound.port()),
            Some(b) => b,
            None => bound,
        }
    }

    /// The RESP address this node announces, given the one `resp` bound and
    /// the announced native address: an address on every interface is
    /// reached at the native address's host.
    pub fn announced_resp(bound: SocketAddr, native: SocketAddr) -> SocketAddr {
        if bound.ip().is_unspecified() {
            SocketAddr::new(native.ip(), bound.port())
        } else {
            bound
        }
    }

    /// Rejects nonsense with a sentence naming the flag.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::InvalidConfig(msg));
        if self.name.is_empty()
            || self
                .name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return fail(format!(
                "--name must be non-empty without spaces, got {:?}",
                self.name
            ));
        }
        if self.cluster_name.is_empty() {
            return fail("--cluster-name must not be empty".into());
        }
        if self.replication_factor == 0 {
            return fail("--replication-factor must be at least 1, got 0".into());
        }
        if !(1..=4096).contains(&self.vnodes) {
            return fail(format!(
                "--vnodes must be between 1 and 4096, got {}",
                self.vnodes
            ));
        }
        if self.gossip_interval_ms < 10 {
            return fail(format!(
                "--gossip-interval-ms must be at least 10, got {}",
                self.gossip_interval_ms
            ));
        }
        if self.phi_convict_threshold.is_nan() || self.phi_convict_threshold <= 0.0 {
            return fail(format!(
                "--phi-convict-threshold must be above 0, got {}",
                self.phi_convict_threshold
            ));
        }
        if !(1024..=FRAME_BYTES_LIMIT).contains(&self.frame_bytes_max) {
            return fail(format!(
                "frame_bytes_max must be between 1024 and {FRAME_BYTES_LIMIT}, got {}",
                self.frame_bytes_max
            ));
        }
        // A replica write carries key + value + cell header in one frame.
        let needed =
            self.storage.value_bytes_max + crate::storage::KEY_BYTES_MAX + FRAME_OVERHEAD_BYTES;
        if self.frame_bytes_max < needed {
            return fail(format!(
                "frame_bytes_max ({}) must hold the largest value (storage.value_bytes_max {}) plus a key and headers: at least {needed}",
                self.frame_bytes_max, self.storage.value_bytes_max
            ));
        }
        if self
            .password
            .as_ref()
            .is_some_and(|p| p.expose().is_empty())
        {
            return fail(
                "--password is empty: give a password, or leave it out for a cluster without one"
                    .into(),
            );
        }
        if self.peer_request_timeout_ms == 0 {
            return fail("peer_request_timeout_ms must be at least 1, got 0".into());
        }
        if self.write_timeout_ms == 0 || self.read_timeout_ms == 0 {
            return fail("write_timeout_ms and read_timeout_ms must be at least 1".into());
        }
        if self.read_consistency == ConsistencyLevel::Any {
            return fail("read_consistency ANY is for writes only; use ONE or higher".into());
        }
        if self.client_threads > CLIENT_THREADS_MAX {
            return fail(format!(
                "--client-threads must be at most {CLIENT_THREADS_MAX}, got {}",
                self.client_threads
            ));
        }
        if let Some(tls) = &self.tls
            && tls.ca_cert_file.is_none()
            && self.resp.is_none()
        {
            return fail(
                "TLS files are given but the Redis-protocol port is off (--resp) and no CA (--tls-ca-cert-file) turns TLS on for the native port: TLS would serve nothing"
                    .into(),
            );
        }
        if self.max_clients == 0 {
            return fail("--max-clients must be at least 1, got 0".into());
        }
        match self.broadcast {
            None if self.listen.ip().is_unspecified() => {
                return fail(format!(
                    "--listen {} binds every interface: say which address peers and clients reach this node at with --broadcast HOST:PORT",
                    self.listen
                ));
            }
            Some(b) if b.ip().is_unspecified() => {
                return fail(format!(
                    "--broadcast {b} is no address peers can reach: give this node's own IP or host name"
                ));
            }
            _ => {}
        }
        let named = [
            ("--listen", Some(self.listen)),
            ("--resp", self.resp),
            ("--http", self.http),
        ];
        for (i, (flag, addr)) in named.iter().enumerate() {
            for (other, other_addr) in &named[i + 1..] {
                if let (Some(a), Some(b)) = (addr, other_addr)
                    && a == b
                    && a.port() != 0
                {
                    return fail(format!("{flag} and {other} must differ, both are {a}"));
                }
            }
        }
        self.storage.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_nonsense_is_named() {
        NodeConfig::default().validate().unwrap();
        let config = NodeConfig {
            replication_factor: 0,
            ..NodeConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid configuration: --replication-factor must be at least 1, got 0"
        );
        let config = NodeConfig {
            name: "a b".into(),
            ..NodeConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--name")
        );
        let config = NodeConfig {
            max_clients: 0,
            ..NodeConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid configuration: --max-clients must be at least 1, got 0"
        );
        // Settings only the config file (or NodeConfig) has are named by
        // their key, not as flags cassio-node does not take.
        let config = NodeConfig {
            write_timeout_ms: 0,
            ..NodeConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid configuration: write_timeout_ms and read_timeout_ms must be at least 1"
        );
    }

    #[test]
    fn every_interface_needs_a_broadcast_address() {
        let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let config = NodeConfig {
            listen: any,
            ..NodeConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--listen 0.0.0.0:9000 binds every interface")
        );
        let config = NodeConfig {
            broadcast: Some(any),
            ..NodeConfig::default()
        };
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--broadcast 0.0.0.0:9000")
        );

        let config = NodeConfig {
            listen: any,
            broadcast: Some("10.0.0.7:0".parse().unwrap()),
            ..NodeConfig::default()
        };
        config.validate().unwrap();
        let native = config.announced_native("0.0.0.0:9042".parse().unwrap());
        assert_eq!(
            native,
            "10.0.0.7:9042".parse().unwrap(),
            "port 0 takes the bound port"
        );
        assert_eq!(
            NodeConfig::announced_resp("0.0.0.0:6379".parse().unwrap(), native),
            "10.0.0.7:6379".parse().unwrap()
        );
        assert_eq!(
            NodeConfig::announced_resp("127.0.0.1:6379".parse().unwrap(), native),
            "127.0.0.1:6379".parse().unwrap(),
            "an address of one interface is announced as bound"
        );
        let bound = "127.0.0.1:9000".parse().unwrap();
        assert_eq!(NodeConfig::default().announced_native(bound), bound);
    }
}
