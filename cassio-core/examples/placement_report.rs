//! Placement report: balance and movement of cassio's vector placement beside
//! consistent hashing (256 random tokens per node) and the seed project's
//! digit-vector scheme, on the same keys.
//!
//! ```text
//! cargo run --release -p cassio-core --example placement_report [-- --keys N --json]
//! ```
//!
//! For N nodes and each scheme: max/mean keys per node as owner and as
//! replica (RF 3, capped at N), and the fraction of keys whose replica set
//! changes when node N+1 joins, beside the ideal RF/(N+1) (the share the new
//! node must take).

use std::hash::Hasher;

use cassio_core::ring::{DIMENSIONS, Ring, Vector, key_vector, random_vnode_vectors};
use cassio_core::types::NodeId;
use rand::{Rng, SeedableRng};

const REPLICATION_FACTOR: usize = 3;
const CLUSTER_SIZES: [usize; 5] = [3, 5, 10, 20, 50];
const TOKENS_PER_NODE: usize = 256;

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    h.finish()
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Per-key inputs every scheme may use, computed once.
struct Keys {
    vectors: Vec<Vector>,
    hashes: Vec<u64>,
    digits: Vec<[f32; 10]>,
}

impl Keys {
    fn new(count: usize) -> Keys {
        let mut keys = Keys {
            vectors: Vec::with_capacity(count),
            hashes: Vec::with_capacity(count),
            digits: Vec::with_capacity(count),
        };
        for i in 0..count {
            let key = format!("key{i}");
            keys.vectors.push(key_vector(key.as_bytes()));
            keys.hashes.push(fnv64(key.as_bytes()));
            keys.digits
                .push(digit_vector(&format!("{:010}", fnv1a32(key.as_bytes()))));
        }
        keys
    }

    fn len(&self) -> usize {
        self.hashes.len()
    }
}

/// The first ten decimal digits of `text` as a vector (zero-padded).
fn digit_vector(text: &str) -> [f32; 10] {
    let mut v = [0f32; 10];
    for (slot, d) in v
        .iter_mut()
        .zip(text.chars().filter_map(|c| c.to_digit(10)))
    {
        *slot = d as f32;
    }
    v
}

fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("node-{i:02}"))
}

fn node_rng(i: usize, salt: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(fnv64(node_id(i).as_str().as_bytes()) ^ salt)
}

/// A placement over nodes 0..n: the replica node indexes of key `k`.
trait Placement: Sync {
    fn replicas(&self, keys: &Keys, k: usize, rf: usize, out: &mut Vec<usize>);
}

struct VectorPlacement(Ring);

impl Placement for VectorPlacement {
    fn replicas(&self, keys: &Keys, k: usize, rf: usize, out: &mut Vec<usize>) {
        // Node ids sort like their indexes ("node-07" < "node-12"), so ring
        // order indexes are node indexes.
        out.extend(self.0.replica_indexes(&keys.vectors[k], rf));
    }
}

fn vector_placement(n: usize, vnodes: usize) -> VectorPlacement {
    let members: Vec<(NodeId, Vec<Vector>)> = (0..n)
        .map(|i| {
            (
                node_id(i),
                random_vnode_vectors(vnodes, &mut node_rng(i, 1)),
            )
        })
        .collect();
    VectorPlacement(Ring::new(
        members.iter().map(|(id, v)| (id.clone(), &v[..])),
    ))
}

struct TokenRing(Vec<(u64, usize)>);

impl Placement for TokenRing {
    fn replicas(&self, keys: &Keys, k: usize, rf: usize, out: &mut Vec<usize>) {
        let start = self.0.partition_point(|(t, _)| *t < keys.hashes[k]);
        for step in 0..self.0.len() {
            let node = self.0[(start + step) % self.0.len()].1;
            if !out.contains(&node) {
                out.push(node);
                if out.len() == rf {
                    break;
                }
            }
        }
    }
}

fn token_ring(n: usize) -> TokenRing {
    let mut tokens: Vec<(u64, usize)> = (0..n)
        .flat_map(|i| {
            let mut rng = node_rng(i, 2);
            (0..TOKENS_PER_NODE)
                .map(move |_| (rng.random(), i))
                .collect::<Vec<_>>()
        })
        .collect();
    tokens.sort_unstable();
    TokenRing(tokens)
}

/// The seed project's scheme: node vector = digits of "ip:port" over their
/// sum; key vector = digits of its FNV-1a-32; nodes ranked by dot product
/// (ties by index), the top RF are the replicas.
struct DigitPlacement(Vec<[f32; 10]>);

impl Placement for DigitPlacement {
    fn replicas(&self, keys: &Keys, k: usize, rf: usize, out: &mut Vec<usize>) {
        let key = &keys.digits[k];
        let mut ranked: Vec<(f32, usize)> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(key).map(|(a, b)| a * b).sum(), i))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        out.extend(ranked.iter().take(rf).map(|(_, i)| *i));
    }
}

fn digit_placement(n: usize) -> DigitPlacement {
    DigitPlacement(
        (0..n)
            .map(|i| {
                let mut v = digit_vector(&format!("127.0.0.1:{}", 9000 + i));
                let sum: f32 = v.iter().sum();
                v.iter_mut().for_each(|c| *c /= sum);
                v
            })
            .collect(),
    )
}

struct Row {
    scheme: String,
    nodes: usize,
    owner_max_over_mean: f64,
    replica_max_over_mean: f64,
    moved_fraction: f64,
    ideal_fraction: f64,
}

/// Owner counts, replica counts and moved keys for `before` (n nodes) and
/// `after` (n + 1 nodes), over the keys in `range`.
fn measure(
    keys: &Keys,
    range: std::ops::Range<usize>,
    n: usize,
    before: &dyn Placement,
    after: &dyn Placement,
) -> (Vec<u64>, Vec<u64>, u64) {
    let rf = REPLICATION_FACTOR.min(n);
    let (mut owners, mut replicas, mut moved) = (vec![0u64; n], vec![0u64; n], 0u64);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for k in range {
        a.clear();
        b.clear();
        before.replicas(keys, k, rf, &mut a);
        after.replicas(keys, k, REPLICATION_FACTOR.min(n + 1), &mut b);
        owners[a[0]] += 1;
        a.iter().for_each(|&r| replicas[r] += 1);
        a.sort_unstable();
        b.sort_unstable();
        moved += u64::from(a != b);
    }
    (owners, replicas, moved)
}

fn row(
    scheme: String,
    keys: &Keys,
    n: usize,
    before: &dyn Placement,
    after: &dyn Placement,
) -> Row {
    let half = keys.len() / 2;
    let ((o1, r1, m1), (o2, r2, m2)) = std::thread::scope(|s| {
        let first = s.spawn(|| measure(keys, 0..half, n, before, after));
        let second = measure(keys, half..keys.len(), n, before, after);
        (first.join().expect("worker"), second)
    });
    let max_over_mean = |a: Vec<u64>, b: Vec<u64>| {
        let counts: Vec<u64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let mean = counts.iter().sum::<u64>() as f64 / n as f64;
        *counts.iter().max().expect("nodes") as f64 / mean
    };
    Row {
        scheme,
        nodes: n,
        owner_max_over_mean: max_over_mean(o1, o2),
        replica_max_over_mean: max_over_mean(r1, r2),
        moved_fraction: (m1 + m2) as f64 / keys.len() as f64,
        ideal_fraction: REPLICATION_FACTOR.min(n + 1) as f64 / (n + 1) as f64,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let key_count: usize = flag("--keys")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let vnode_counts: Vec<usize> = flag("--vnodes")
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 64, 128, 256]);
    let json = args.iter().any(|a| a == "--json");
    let keys = Keys::new(key_count);
    assert_eq!(DIMENSIONS, 10);

    let mut rows = Vec::new();
    for &n in &CLUSTER_SIZES {
        for &v in &vnode_counts {
            let (before, after) = (vector_placement(n, v), vector_placement(n + 1, v));
            rows.push(row(
                format!("cassio vectors, {v} vnodes"),
                &keys,
                n,
                &before,
                &after,
            ));
        }
        let (before, after) = (token_ring(n), token_ring(n + 1));
        rows.push(row(
            format!("consistent hashing, {TOKENS_PER_NODE} tokens"),
            &keys,
            n,
            &before,
            &after,
        ));
        let (before, after) = (digit_placement(n), digit_placement(n + 1));
        rows.push(row(
            "seed digit vectors".to_string(),
            &keys,
            n,
            &before,
            &after,
        ));
        if !json {
            eprintln!("measured N = {n}");
        }
    }

    if json {
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    r#"{{"scheme":"{}","nodes":{},"owner_max_over_mean":{:.4},"replica_max_over_mean":{:.4},"moved_fraction":{:.4},"ideal_fraction":{:.4},"moved_over_ideal":{:.4}}}"#,
                    r.scheme,
                    r.nodes,
                    r.owner_max_over_mean,
                    r.replica_max_over_mean,
                    r.moved_fraction,
                    r.ideal_fraction,
                    r.moved_fraction / r.ideal_fraction
                )
            })
            .collect();
        println!(
            r#"{{"keys":{key_count},"replication_factor":{REPLICATION_FACTOR},"rows":[{}]}}"#,
            items.join(",")
        );
        return;
    }
    println!(
        "placement report: {key_count} keys, RF {REPLICATION_FACTOR}; moved = keys whose replica set changes when one node joins"
    );
    println!(
        "{:<34} {:>4} {:>11} {:>13} {:>8} {:>8} {:>12}",
        "scheme", "N", "owner max/μ", "replica max/μ", "moved", "ideal", "moved/ideal"
    );
    for r in &rows {
        println!(
            "{:<34} {:>4} {:>11.3} {:>13.3} {:>8.4} {:>8.4} {:>12.2}",
            r.scheme,
            r.nodes,
            r.owner_max_over_mean,
            r.replica_max_over_mean,
            r.moved_fraction,
            r.ideal_fraction,
            r.moved_fraction / r.ideal_fraction
        );
    }
}
