//! The seeded generator behind noise inputs (`role: noise`): SplitMix64 (Steele, Lea and
//! Flood, 2014; the seeding generator of xoshiro) for uniform 64-bit words, the Box–Muller
//! transform for N(0, 1). Deterministic from the seed on every machine up to the last bits of
//! `ln`/`cos` (compare draws with a tolerance across CPUs). Small, allocation-free, no
//! dependency; the quality a diffusion or flow head's start noise needs, not cryptographic.

use crate::manifest::{NoiseDistribution, NoiseGenerator};

/// Draws for one noise input.
#[derive(Debug, Clone)]
pub struct NoiseSource {
    spec: NoiseGenerator,
    state: u64,
}

impl NoiseSource {
    pub fn new(spec: &NoiseGenerator) -> Self {
        Self {
            spec: spec.clone(),
            state: spec.seed,
        }
    }

    /// Back to the first draw of the seed.
    pub fn reseed(&mut self) {
        self.state = self.spec.seed;
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so `ln` is finite.
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Fills `out` with fresh draws.
    pub fn fill(&mut self, out: &mut [f32]) {
        match self.spec.distribution {
            NoiseDistribution::StandardNormal => {
                for pair in out.chunks_mut(2) {
                    let r = (-2.0 * self.unit().ln()).sqrt();
                    let theta = std::f64::consts::TAU * self.unit();
                    pair[0] = (r * theta.cos()) as f32;
                    if let Some(second) = pair.get_mut(1) {
                        *second = (r * theta.sin()) as f32;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(seed: u64) -> NoiseSource {
        NoiseSource::new(&NoiseGenerator {
            distribution: NoiseDistribution::StandardNormal,
            seed,
        })
    }

    #[test]
    fn draws_are_standard_normal_and_repeat_from_the_seed() {
        let mut a = source(7);
        let mut x = vec![0.0f32; 100_001];
        a.fill(&mut x);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        // Standard errors: 1/sqrt(n) ≈ 0.003 for the mean, sqrt(2/n) ≈ 0.0045 for the variance.
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!((var - 1.0).abs() < 0.025, "variance {var}");
        let within_1 = x.iter().filter(|v| v.abs() < 1.0).count() as f64 / n;
        assert!((within_1 - 0.6827).abs() < 0.01, "P(|x| < 1) = {within_1}");
        assert!(x.iter().all(|v| v.is_finite()));
        let mut again = vec![0.0f32; 100_001];
        a.reseed();
        a.fill(&mut again);
        assert_eq!(x, again, "reseeded: the same draws");
        let mut other = vec![0.0f32; 16];
        source(8).fill(&mut other);
        assert_ne!(&x[..16], &other[..], "another seed: other draws");
        let mut next = vec![0.0f32; 16];
        a.fill(&mut next);
        assert_ne!(&x[..16], &next[..], "the next fill: fresh draws");
    }
}
