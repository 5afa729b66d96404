//! The peers a node last knew, kept in `DATA_DIR/peers` like Cassandra's
//! `system.peers`: each peer's whole gossip state (generation, status,
//! addresses, vnode vectors). After a restart the node starts from this
//! view: its ring holds every peer, down until heard from, so a peer that
//! is still down stays a replica (it gets hints, and ALL waits for it)
//! instead of being forgotten, and the node can coordinate even when no
//! peer answers. It contacts the peers besides its seeds.
//!
//! Layout: magic u32, version u32, CRC32 of the payload u32, then the
//! payload: the list of (node, state), bincode-encoded. An unreadable file
//! is reported and ignored (the node relearns its peers through gossip).
//! The first format, a `name address` line per peer, is still read, as
//! addresses to contact.

use std::net::SocketAddr;
use std::path::Path;

use crate::cluster::EndpointState;
use crate::error::{Error, Result};
use crate::proto;
use crate::types::NodeId;

const FILE_NAME: &str = "peers";
const MAGIC: u32 = 0xCA55_10EE;
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 12;

/// What the file held.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct KnownPeers {
    /// Each peer's last gossip state.
    pub(crate) states: Vec<(NodeId, EndpointState)>,
    /// Addresses from a file of the first format.
    pub(crate) addresses: Vec<(NodeId, SocketAddr)>,
}

impl KnownPeers {
    pub(crate) fn is_empty(&self) -> bool {
        self.states.is_empty() && self.addresses.is_empty()
    }

    /// Every known peer's native address.
    pub(crate) fn contacts(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        let from_states = self.states.iter().map(|(_, state)| state.native_addr.value);
        from_states.chain(self.addresses.iter().map(|(_, addr)| *addr))
    }
}

pub(crate) fn load(data_dir: &Path) -> Result<KnownPeers> {
    let path = data_dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KnownPeers::default()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    if bytes.get(..4) != Some(&MAGIC.to_le_bytes()[..]) {
        return Ok(KnownPeers {
            states: Vec::new(),
            addresses: first_format(&path, &bytes),
        });
    }
    match decode(&bytes) {
        Ok(states) => Ok(KnownPeers {
            states,
            addresses: Vec::new(),
        }),
        Err(reason) => {
            tracing::warn!(file = %path.display(), %reason, "ignoring an unreadable peers file; peers are relearned through gossip");
            Ok(KnownPeers::default())
        }
    }
}

fn decode(bytes: &[u8]) -> std::result::Result<Vec<(NodeId, EndpointState)>, String> {
    let field = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or("shorter than its header")
    };
    let version = field(4)?;
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads {VERSION}"
        ));
    }
    let payload = &bytes[HEADER_BYTES.min(bytes.len())..];
    if crc32fast::hash(payload) != field(8)? {
        return Err("checksum mismatch".into());
    }
    proto::decode(payload).map_err(|e| e.to_string())
}

/// `name address` lines; unreadable lines are skipped with a warning.
fn first_format(path: &Path, bytes: &[u8]) -> Vec<(NodeId, SocketAddr)> {
    let mut peers = Vec::new();
    for (number, line) in String::from_utf8_lossy(bytes).lines().enumerate() {
        let parsed = line
            .split_once(' ')
            .and_then(|(name, addr)| Some((NodeId::new(name), addr.parse::<SocketAddr>().ok()?)));
        match parsed {
            Some(peer) => peers.push(peer),
            None => {
                tracing::warn!(file = %path.display(), line = number + 1, "ignoring an unreadable peers line")
            }
        }
    }
    peers
}

pub(crate) fn store(data_dir: &Path, states: &[(NodeId, EndpointState)]) -> Result<()> {
    let payload = proto::encode(&states)?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&MAGIC.to_le_bytes());
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    crate::storage::write_atomically(&data_dir.join(FILE_NAME), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{NodeStatus, Versioned};

    fn state(port: u16) -> EndpointState {
        let versioned = |value, version| Versioned { value, version };
        EndpointState {
            generation: 7,
            heartbeat: 40,
            status: versioned(NodeStatus::Normal, 1),
            native_addr: Versioned {
                value: SocketAddr::from(([127, 0, 0, 1], port)),
                version: 2,
            },
            resp_addr: Versioned {
                value: None,
                version: 3,
            },
            vnodes: Versioned {
                value: Vec::new(),
                version: 4,
            },
            load_bytes: Versioned {
                value: 123,
                version: 5,
            },
        }
    }

    #[test]
    fn round_trips_and_reads_the_first_format() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let states = vec![
            (NodeId::from("n1"), state(9001)),
            (NodeId::from("n2"), state(9002)),
        ];
        store(dir.path(), &states).unwrap();
        let known = load(dir.path()).unwrap();
        assert_eq!(known.states, states);
        let contacts: Vec<_> = known.contacts().map(|addr| addr.port()).collect();
        assert_eq!(contacts, [9001, 9002]);

        std::fs::write(dir.path().join(FILE_NAME), "n1 127.0.0.1:9001\nnonsense\n").unwrap();
        let known = load(dir.path()).unwrap();
        assert_eq!(
            known.addresses,
            vec![(NodeId::from("n1"), "127.0.0.1:9001".parse().unwrap())]
        );
    }

    #[test]
    fn a_damaged_file_is_ignored_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &[(NodeId::from("n1"), state(9001))]).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(load(dir.path()).unwrap().is_empty(), "checksum mismatch");
        std::fs::write(&path, &bytes[..6]).unwrap();
        assert!(load(dir.path()).unwrap().is_empty(), "truncated header");
    }
}
