//! Deterministic data for the index's tests and `nexus-bench ann`: a seeded
//! random generator and a clustered set of unit vectors (a Gaussian mixture).
//!
//! The same seed gives the same vectors on every machine (SplitMix64 and a
//! Box–Muller transform in f64, no platform RNG), so a recall figure can be
//! reproduced. Not a general-purpose RNG.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, statistically fine for
/// level draws and test data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1] (never 0, so its logarithm is finite).
    pub fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller; one of the pair is dropped for simplicity).
    pub fn next_gaussian(&mut self) -> f64 {
        let (u, v) = (self.next_unit(), self.next_unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A Gaussian mixture on the unit sphere: `clusters` centres with standard
/// normal components, each point a centre plus normal noise of standard
/// deviation `spread` per component, then normalised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mixture {
    /// Dimensions.
    pub dim: usize,
    /// Number of centres.
    pub clusters: usize,
    /// Noise standard deviation relative to the centres' (1.0).
    pub spread: f64,
    /// Seed of the centres (the points take their own seeds).
    pub seed: u64,
}

impl Mixture {
    /// `n` points drawn with `stream` (different streams, different points
    /// of the same mixture: a base set and its queries), row-major.
    pub fn sample(&self, n: usize, stream: u64) -> Vec<f32> {
        let centres = self.centres();
        let mut rng = SplitMix64::new(self.seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        let mut out = Vec::with_capacity(n * self.dim);
        let mut point = vec![0f64; self.dim];
        for _ in 0..n {
            let cluster = (rng.next_u64() % self.clusters.max(1) as u64) as usize;
            let centre = &centres[cluster * self.dim..(cluster + 1) * self.dim];
            for (p, c) in point.iter_mut().zip(centre) {
                *p = c + self.spread * rng.next_gaussian();
            }
            let norm = point.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
            out.extend(point.iter().map(|x| (x / norm) as f32));
        }
        out
    }

    fn centres(&self) -> Vec<f64> {
        let mut rng = SplitMix64::new(self.seed);
        (0..self.clusters.max(1) * self.dim)
            .map(|_| rng.next_gaussian())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_vectors_unit_length() {
        let mixture = Mixture {
            dim: 8,
            clusters: 3,
            spread: 0.5,
            seed: 7,
        };
        let (a, b) = (mixture.sample(10, 1), mixture.sample(10, 1));
        assert_eq!(a, b);
        assert_ne!(a, mixture.sample(10, 2));
        for row in a.chunks(8) {
            let norm: f32 = row.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-5);
        }
    }
}
