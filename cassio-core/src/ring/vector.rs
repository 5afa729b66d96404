//! Key and node vectors.
//!
//! A key's vector: for each of [`DIMENSIONS`] dimensions, FNV-1a (64-bit) over
//! the dimension's index byte followed by the key, passed through MurmurHash3's
//! 64-bit finalizer, mapped to [-1, 1]; then L2-normalized.
//!
//! The finalizer matters: in FNV-1a the last bytes of the input reach the
//! high bits only through one or two multiplications by the FNV prime (about
//! 2^40), so keys that differ only at the end (`user:41`, `user:42`) would
//! get nearly the same coordinates and pile onto one node. A node draws its vnode vectors once from the same
//! distribution (uniform in the cube, normalized), so every Voronoi cell has
//! the same expected share of keys, and keeps them in its data directory.

use std::hash::Hasher;
use std::path::Path;

use rand::Rng;

use crate::error::{Error, Result};

pub const DIMENSIONS: usize = 10;

/// A unit vector in placement space.
pub type Vector = [f32; DIMENSIONS];

/// The placement vector of `key`.
pub fn key_vector(key: &[u8]) -> Vector {
    let mut v = [0f32; DIMENSIONS];
    for (d, coordinate) in v.iter_mut().enumerate() {
        let mut h = fnv::FnvHasher::default();
        h.write(&[d as u8]);
        h.write(key);
        *coordinate = unit_interval(avalanche(h.finish()));
    }
    normalize(v)
}

/// MurmurHash3's fmix64: every input bit affects every output bit.
fn avalanche(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Maps 64 hash bits to [-1, 1] using the top 53 (an f64's mantissa).
fn unit_interval(bits: u64) -> f32 {
    ((bits >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
}

fn normalize(mut v: Vector) -> Vector {
    let norm = v.iter().map(|c| c * c).sum::<f32>().sqrt();
    if norm > f32::EPSILON {
        v.iter_mut().for_each(|c| *c /= norm);
    } else {
        // Probability ~0; any fixed unit vector keeps placement a function.
        v = [0.0; DIMENSIONS];
        v[0] = 1.0;
    }
    v
}

/// `count` vnode vectors drawn from the key distribution.
pub fn random_vnode_vectors(count: usize, rng: &mut impl Rng) -> Vec<Vector> {
    (0..count)
        .map(|_| {
            let mut v = [0f32; DIMENSIONS];
            v.iter_mut().for_each(|c| *c = unit_interval(rng.random()));
            normalize(v)
        })
        .collect()
}

const FILE_NAME: &str = "vnodes";
const MAGIC: u32 = 0xCA55_10EC;
const VERSION: u32 = 1;

/// The node's vnode vectors from `dir`, drawn and stored on first start.
/// A different `count` than stored is an error: changing it would move data
/// without streaming it.
pub fn load_or_create_vnodes(dir: &Path, count: usize, rng: &mut impl Rng) -> Result<Vec<Vector>> {
    let path = dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let vectors = decode(&path, &bytes)?;
            if vectors.len() != count {
                return Err(Error::InvalidConfig(format!(
                    "{} holds {} vnodes but the configuration asks for {count}; vnodes cannot change once a node has data",
                    path.display(),
                    vectors.len()
                )));
            }
            Ok(vectors)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::storage::create_dir(dir)?;
            let vectors = random_vnode_vectors(count, rng);
            crate::storage::write_atomically(&path, &encode(&vectors))?;
            Ok(vectors)
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

fn encode(vectors: &[Vector]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + vectors.len() * DIMENSIONS * 4);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(vectors.len() as u32).to_le_bytes());
    for c in vectors.iter().flatten() {
        out.extend_from_slice(&c.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Vec<Vector>> {
    let corrupt = |offset: usize, reason: &str| Error::Corrupt {
        file: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_string(),
    };
    let word = |at: usize| -> Result<u32> {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| corrupt(at, "truncated"))
    };
    if bytes.len() < 16 {
        return Err(corrupt(0, "vnode file too short"));
    }
    let body = bytes.len() - 4;
    let (expected, got) = (word(body)?, crc32fast::hash(&bytes[..body]));
    if expected != got {
        return Err(Error::ChecksumMismatch {
            file: path.to_path_buf(),
            offset: 0,
            expected,
            got,
        });
    }
    if word(0)? != MAGIC {
        return Err(corrupt(0, "not a cassio vnode file (bad magic)"));
    }
    if word(4)? != VERSION {
        return Err(Error::UnsupportedVersion {
            file: path.to_path_buf(),
            found: word(4)?,
            supported: VERSION,
        });
    }
    let count = word(8)? as usize;
    if 12 + count * DIMENSIONS * 4 != body {
        return Err(corrupt(8, "vnode count does not match the file's length"));
    }
    Ok((0..count)
        .map(|i| {
            let mut v = [0f32; DIMENSIONS];
            for (d, c) in v.iter_mut().enumerate() {
                let at = 12 + (i * DIMENSIONS + d) * 4;
                *c = f32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
            }
            v
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn key_vectors_are_unit_length_and_stable() {
        let v = key_vector(b"user:42");
        let norm: f32 = v.iter().map(|c| c * c).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(v, key_vector(b"user:42"));
        assert_ne!(v, key_vector(b"user:43"));
    }

    /// Regression: with plain FNV-1a, `user:0`..`user:299` all landed on two
    /// of three nodes (the last bytes barely reach FNV's high bits).
    #[test]
    fn keys_differing_only_at_the_end_spread_out() {
        let v0 = key_vector(b"user:40");
        let v1 = key_vector(b"user:41");
        let dot: f32 = v0.iter().zip(&v1).map(|(a, b)| a * b).sum();
        assert!(
            dot < 0.9,
            "neighbouring keys must not share a direction: {dot}"
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let members: Vec<_> = (0..3)
            .map(|i| {
                (
                    crate::types::NodeId::new(format!("n{i}")),
                    random_vnode_vectors(16, &mut rng),
                )
            })
            .collect();
        let ring = crate::ring::Ring::new(members.iter().map(|(id, v)| (id.clone(), &v[..])));
        let mut counts = [0u32; 3];
        for i in 0..300 {
            counts[ring
                .owner_index(&key_vector(format!("user:{i}").as_bytes()))
                .unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| c > 50),
            "300 sequential keys over 3 nodes: {counts:?}"
        );
    }

    #[test]
    fn vnodes_persist_and_count_changes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let first = load_or_create_vnodes(dir.path(), 8, &mut rng).unwrap();
        let again = load_or_create_vnodes(dir.path(), 8, &mut rng).unwrap();
        assert_eq!(first, again, "vectors are drawn once");
        let err = load_or_create_vnodes(dir.path(), 16, &mut rng).unwrap_err();
        assert!(err.to_string().contains("holds 8 vnodes"), "{err}");
        let mut bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        bytes[20] ^= 1;
        std::fs::write(dir.path().join(FILE_NAME), bytes).unwrap();
        assert!(matches!(
            load_or_create_vnodes(dir.path(), 8, &mut rng),
            Err(Error::ChecksumMismatch { .. })
        ));
    }
}
