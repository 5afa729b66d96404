//! The ring: which nodes hold a key, as a pure function of the membership
//! view and the key.
//!
//! - Owner: the node whose vnode vector has the largest inner product with
//!   the key's vector (an exact tie goes to the smaller node id).
//! - Ring order: all nodes sorted by id; every node derives the same order
//!   from membership alone.
//! - Replicas: the owner, then the next distinct nodes along the ring order
//!   (wrapping), until `replication_factor` nodes or every node.
//!
//! Vnode coordinates are stored dimension by dimension (structure of arrays)
//! so scoring a key against every vnode is a vectorizable loop.

use super::vector::{DIMENSIONS, Vector, key_vector};
use crate::types::NodeId;

#[derive(Clone, Debug, Default)]
pub struct Ring {
    /// Nodes in ring order (sorted by id).
    nodes: Vec<NodeId>,
    /// `coordinates[d][j]`: coordinate `d` of vnode `j`.
    coordinates: [Vec<f32>; DIMENSIONS],
    /// `vnode_node[j]`: index into `nodes` of vnode `j`'s node.
    vnode_node: Vec<u32>,
}

impl Ring {
    /// Builds the ring from each node's id and vnode vectors. Nodes without
    /// vnodes cannot own keys but still hold replicas by ring order.
    pub fn new<'a>(members: impl IntoIterator<Item = (NodeId, &'a [Vector])>) -> Ring {
        let mut members: Vec<(NodeId, &[Vector])> = members.into_iter().collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|a, b| a.0 == b.0);
        let mut ring = Ring::default();
        for (index, (id, vnodes)) in members.into_iter().enumerate() {
            ring.nodes.push(id);
            for v in vnodes {
                for (d, coordinate) in v.iter().enumerate() {
                    ring.coordinates[d].push(*coordinate);
                }
                ring.vnode_node.push(index as u32);
            }
        }
        ring
    }

    /// A hash of the whole ring (nodes and their vnode vectors) and the
    /// replication factor: two nodes with the same fingerprint give every
    /// key the same replicas.
    pub fn fingerprint(&self, replication_factor: usize) -> u64 {
        use std::hash::Hasher;
        let mut h = fnv::FnvHasher::default();
        h.write_u64(replication_factor as u64);
        for node in &self.nodes {
            h.write(node.as_str().as_bytes());
            h.write_u8(0);
        }
        for owner in &self.vnode_node {
            h.write_u32(*owner);
        }
        for dimension in &self.coordinates {
            for coordinate in dimension {
                h.write_u32(coordinate.to_bits());
            }
        }
        h.finish()
    }

    /// Nodes in ring order.
    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Index (in ring order) of the node owning a key with vector `v`.
    pub fn owner_index(&self, v: &Vector) -> Option<usize> {
        /// Vnodes scored at once, in a stack buffer (no allocation per key).
        const CHUNK: usize = 64;
        let vnodes = self.vnode_node.len();
        let mut best: Option<(f32, u32)> = None;
        let mut scores = [0f32; CHUNK];
        for start in (0..vnodes).step_by(CHUNK) {
            let len = CHUNK.min(vnodes - start);
            let scores = &mut scores[..len];
            scores.fill(0.0);
            for (d, coordinates) in self.coordinates.iter().enumerate() {
                let k = v[d];
                for (score, c) in scores.iter_mut().zip(&coordinates[start..start + len]) {
                    *score += k * c;
                }
            }
            for (offset, &score) in scores.iter().enumerate() {
                let node = self.vnode_node[start + offset];
                let wins = match best {
                    None => true,
                    Some((b, b_node)) => score > b || (score == b && node < b_node),
                };
                if wins {
                    best = Some((score, node));
                }
            }
        }
        best.map(|(_, node)| node as usize)
    }

    /// The replicas of `key` as a set, in no particular order: every node when
    /// the replication factor covers the cluster (no placement needed), else
    /// as [`Ring::replicas`]. The coordinator asks them all at once, so order
    /// does not matter to it.
    pub fn replica_set(&self, key: &[u8], replication_factor: usize) -> Vec<&NodeId> {
        self.replica_set_indexes(key, replication_factor)
            .map(|i| &self.nodes[i])
            .collect()
    }

    /// Ring-order indexes of [`Ring::replica_set`].
    pub fn replica_set_indexes(
        &self,
        key: &[u8],
        replication_factor: usize,
    ) -> impl Iterator<Item = usize> + use<> {
        let n = self.nodes.len();
        let (start, count) = if replication_factor >= n {
            (0, n)
        } else {
            self.replica_span(&key_vector(key), replication_factor)
        };
        ring_walk(start, count, n)
    }

    /// The node owning `key`.
    pub fn owner(&self, key: &[u8]) -> Option<&NodeId> {
        self.owner_index(&key_vector(key)).map(|i| &self.nodes[i])
    }

    /// The replicas of `key`: owner first, then along the ring order.
    pub fn replicas(&self, key: &[u8], replication_factor: usize) -> Vec<&NodeId> {
        self.replica_indexes(&key_vector(key), replication_factor)
            .map(|i| &self.nodes[i])
            .collect()
    }

    /// Estimated fraction of keys each node (in ring order) owns as first
    /// replica, from `samples` fixed sample keys (the same on every node).
    pub fn ownership(&self, samples: u32) -> Vec<f64> {
        let mut counts = vec![0u64; self.nodes.len()];
        for i in 0..samples {
            let v = key_vector(format!("cassio-ownership-sample-{i}").as_bytes());
            if let Some(owner) = self.owner_index(&v) {
                counts[owner] += 1;
            }
        }
        counts
            .iter()
            .map(|&c| c as f64 / f64::from(samples.max(1)))
            .collect()
    }

    /// Ring-order indexes of the replicas of a key with vector `v`.
    pub fn replica_indexes(
        &self,
        v: &Vector,
        replication_factor: usize,
    ) -> impl Iterator<Item = usize> + use<> {
        let (start, count) = self.replica_span(v, replication_factor);
        ring_walk(start, count, self.nodes.len())
    }

    /// The owner's ring index and how many nodes from it hold a key with
    /// vector `v`; (0, 0) on an empty ring.
    fn replica_span(&self, v: &Vector, replication_factor: usize) -> (usize, usize) {
        self.owner_index(v).map_or((0, 0), |owner| {
            (owner, replication_factor.min(self.nodes.len()))
        })
    }
}

/// `count` ring indexes from `start` on, wrapping around a ring of `n`.
fn ring_walk(start: usize, count: usize, n: usize) -> impl Iterator<Item = usize> + use<> {
    (0..count).map(move |step| (start + step) % n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::vector::random_vnode_vectors;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn axis(d: usize, sign: f32) -> Vector {
        let mut v = [0.0; DIMENSIONS];
        v[d] = sign;
        v
    }

    #[test]
    fn fingerprint_is_placement_not_input_order() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let a = random_vnode_vectors(8, &mut rng);
        let b = random_vnode_vectors(8, &mut rng);
        let ring = Ring::new([(NodeId::from("a"), &a[..]), (NodeId::from("b"), &b[..])]);
        let reversed = Ring::new([(NodeId::from("b"), &b[..]), (NodeId::from("a"), &a[..])]);
        assert_eq!(ring.fingerprint(3), reversed.fingerprint(3));
        assert_ne!(
            ring.fingerprint(3),
            ring.fingerprint(2),
            "replication factor"
        );
        let redrawn = random_vnode_vectors(8, &mut rng);
        let moved = Ring::new([
            (NodeId::from("a"), &a[..]),
            (NodeId::from("b"), &redrawn[..]),
        ]);
        assert_ne!(ring.fingerprint(3), moved.fingerprint(3), "new vnodes");
        let grown = Ring::new([
            (NodeId::from("a"), &a[..]),
            (NodeId::from("b"), &b[..]),
            (NodeId::from("c"), &redrawn[..]),
        ]);
        assert_ne!(ring.fingerprint(3), grown.fingerprint(3), "a new node");
    }

    #[test]
    fn owner_is_the_largest_inner_product() {
        let a = [axis(0, 1.0)];
        let b = [axis(1, 1.0)];
        let c = [axis(0, -1.0), axis(2, 1.0)];
        let ring = Ring::new([
            (NodeId::from("c"), &c[..]),
            (NodeId::from("a"), &a[..]),
            (NodeId::from("b"), &b[..]),
        ]);
        assert_eq!(
            ring.nodes(),
            &[NodeId::from("a"), NodeId::from("b"), NodeId::from("c")]
        );
        let mut near_b = [0.1; DIMENSIONS];
        near_b[1] = 0.9;
        assert_eq!(ring.owner_index(&near_b), Some(1));
        assert_eq!(ring.owner_index(&axis(0, -1.0)), Some(2));
        assert_eq!(ring.owner_index(&axis(2, 1.0)), Some(2));
        // Replicas continue along the ring order and wrap.
        let replicas: Vec<_> = ring.replica_indexes(&axis(2, 1.0), 2).collect();
        assert_eq!(replicas, vec![2, 0]);
        // RF larger than the cluster is capped at the cluster.
        assert_eq!(ring.replica_indexes(&near_b, 5).count(), 3);
    }

    #[test]
    fn exact_ties_go_to_the_smaller_node_id() {
        let same = [axis(0, 1.0)];
        let ring = Ring::new([
            (NodeId::from("z"), &same[..]),
            (NodeId::from("m"), &same[..]),
        ]);
        assert_eq!(ring.owner_index(&axis(0, 1.0)), Some(0));
        assert_eq!(ring.nodes()[0], NodeId::from("m"));
    }

    #[test]
    fn replica_set_is_the_replicas_in_any_order() {
        let (_, ring) = random_ring(5, 3);
        for key in [&b"a"[..], b"b", b"user:7"] {
            let mut set = ring.replica_set(key, 3);
            let mut list = ring.replicas(key, 3);
            set.sort();
            list.sort();
            assert_eq!(set, list);
            assert_eq!(ring.replica_set(key, 5).len(), 5);
        }
    }

    #[test]
    fn empty_ring_places_nothing() {
        let ring = Ring::new(std::iter::empty());
        assert!(ring.owner(b"k").is_none());
        assert!(ring.replicas(b"k", 3).is_empty());
    }

    fn random_ring(n: usize, seed: u64) -> (Vec<(NodeId, Vec<Vector>)>, Ring) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let members: Vec<_> = (0..n)
            .map(|i| {
                (
                    NodeId::new(format!("node-{i}")),
                    random_vnode_vectors(8, &mut rng),
                )
            })
            .collect();
        let ring = Ring::new(members.iter().map(|(id, v)| (id.clone(), &v[..])));
        (members, ring)
    }

    proptest! {
        #[test]
        fn replicas_are_distinct_and_capped(n in 1usize..12, rf in 1usize..6, seed in any::<u64>(), key in any::<Vec<u8>>()) {
            let (_, ring) = random_ring(n, seed);
            let replicas = ring.replicas(&key, rf);
            prop_assert_eq!(replicas.len(), rf.min(n));
            let mut unique = replicas.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), replicas.len());
            prop_assert_eq!(Some(replicas[0]), ring.owner(&key));
        }

        #[test]
        fn every_node_computes_the_same_replicas(n in 1usize..12, seed in any::<u64>(), key in any::<Vec<u8>>()) {
            let (mut members, ring) = random_ring(n, seed);
            // Another node learns the same membership in another order.
            members.reverse();
            let other = Ring::new(members.iter().map(|(id, v)| (id.clone(), &v[..])));
            prop_assert_eq!(ring.replicas(&key, 3), other.replicas(&key, 3));
        }
    }
}
