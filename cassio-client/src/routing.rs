//! Token-aware routing: the client keeps the cluster's placement inputs
//! (members and their vnode vectors) and computes a key's replicas itself, as
//! Cassandra's drivers do, so a request goes straight to a replica and the
//! coordinator reads and writes its own copy without a network hop.

use std::collections::HashMap;
use std::net::SocketAddr;

use cassio_core::proto::Topology;
use cassio_core::ring::Ring;
use cassio_core::types::NodeId;

#[derive(Default)]
pub(crate) struct Routes {
    ring: Ring,
    replication_factor: usize,
    addrs: HashMap<NodeId, SocketAddr>,
    up: Vec<NodeId>,
}

impl Routes {
    pub(crate) fn new(topology: &Topology) -> Routes {
        let ring = Ring::new(
            topology
                .members
                .iter()
                .filter(|m| m.owns_data)
                .map(|m| (m.node.clone(), &m.vnodes[..])),
        );
        Routes {
            ring,
            replication_factor: topology.replication_factor as usize,
            addrs: topology
                .members
                .iter()
                .map(|m| (m.node.clone(), m.native_addr))
                .collect(),
            up: topology
                .members
                .iter()
                .filter(|m| m.up)
                .map(|m| m.node.clone())
                .collect(),
        }
    }

    /// Where to send a request for `key`: its live replicas (owner first),
    /// then every other live node, then the rest.
    pub(crate) fn candidates(&self, key: Option<&[u8]>) -> Vec<SocketAddr> {
        let mut order: Vec<&NodeId> = Vec::new();
        if let Some(key) = key {
            order.extend(
                self.ring
                    .replicas(key, self.replication_factor)
                    .into_iter()
                    .filter(|n| self.up.contains(n)),
            );
        }
        order.extend(
            self.up
                .iter()
                .filter(|n| !order.contains(n))
                .collect::<Vec<_>>(),
        );
        let mut addrs: Vec<SocketAddr> = order
            .iter()
            .filter_map(|n| self.addrs.get(*n).copied())
            .collect();
        let mut rest: Vec<SocketAddr> = self
            .addrs
            .values()
            .copied()
            .filter(|a| !addrs.contains(a))
            .collect();
        rest.sort();
        addrs.extend(rest);
        addrs
    }
}
