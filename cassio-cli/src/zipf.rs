//! Request distributions for `cassio bench`, as YCSB defines them: uniform,
//! zipfian (Gray et al.'s generator, theta 0.99, scrambled by hashing so hot
//! items are spread over the key space) and latest (zipfian over recency).

use rand::Rng;

pub(crate) const THETA: f64 = 0.99;

pub(crate) struct Zipfian {
    items: u64,
    zetan: f64,
    alpha: f64,
    eta: f64,
    half_pow_theta: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

impl Zipfian {
    pub(crate) fn new(items: u64) -> Zipfian {
        let items = items.max(2);
        let zetan = zeta(items, THETA);
        let zeta2 = zeta(2, THETA);
        Zipfian {
            items,
            zetan,
            alpha: 1.0 / (1.0 - THETA),
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - THETA)) / (1.0 - zeta2 / zetan),
            half_pow_theta: 0.5f64.powf(THETA),
        }
    }

    /// A rank in 0..items; 0 is the most popular.
    pub(crate) fn next(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1;
        }
        ((self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64)
            .min(self.items - 1)
    }
}

/// Spreads a rank over the key space (YCSB's scrambled zipfian).
pub(crate) fn scramble(rank: u64, items: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in rank.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % items.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn zipfian_is_skewed_toward_low_ranks() {
        let z = Zipfian::new(1000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let draws: Vec<u64> = (0..100_000).map(|_| z.next(&mut rng)).collect();
        assert!(draws.iter().all(|&d| d < 1000));
        let top_ten = draws.iter().filter(|&&d| d < 10).count();
        assert!(
            top_ten > 30_000,
            "the 10 hottest of 1000 items get a large share: {top_ten}"
        );
    }
}
