//! Placement: key vectors, node (vnode) vectors, the ring order and replica
//! lists. Pure functions of the membership view and the key; no IO except
//! loading and storing a node's own vnode vectors.

mod placement;
mod vector;

pub use placement::Ring;
pub use vector::{DIMENSIONS, Vector, key_vector, load_or_create_vnodes, random_vnode_vectors};
