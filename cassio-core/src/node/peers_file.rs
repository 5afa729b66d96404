//! The peers a node last knew, kept in `DATA_DIR/peers` (one `name address`
//! per line), like Cassandra's `system.peers`. After a restart the node
//! contacts them besides its seeds, and it knows it was part of a larger
//! cluster, so it waits to relearn the ring before coordinating instead of
//! believing it is alone.

use std::net::SocketAddr;
use std::path::Path;

use crate::error::{Error, Result};
use crate::types::NodeId;

const FILE_NAME: &str = "peers";

pub(crate) fn load(data_dir: &Path) -> Result<Vec<(NodeId, SocketAddr)>> {
    let path = data_dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut peers = Vec::new();
    for (number, line) in text.lines().enumerate() {
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
    Ok(peers)
}

pub(crate) fn store(data_dir: &Path, peers: &[(NodeId, SocketAddr)]) -> Result<()> {
    let text: String = peers
        .iter()
        .map(|(name, addr)| format!("{name} {addr}\n"))
        .collect();
    crate::storage::write_atomically(&data_dir.join(FILE_NAME), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let peers = vec![(NodeId::from("n1"), "127.0.0.1:9001".parse().unwrap())];
        store(dir.path(), &peers).unwrap();
        assert_eq!(load(dir.path()).unwrap(), peers);
        std::fs::write(dir.path().join(FILE_NAME), "n1 127.0.0.1:9001\nnonsense\n").unwrap();
        assert_eq!(load(dir.path()).unwrap(), peers);
    }
}
