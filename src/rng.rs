//! Counter-based random numbers (Philox4x32-10, Salmon et al. 2011): the uniform for (seed, sequence,
//! step) is a pure function of those three numbers, so the CPU and GPU samplers draw the same values
//! in any order, and a seed reproduces a generation whatever the batch composition.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds: four 32-bit outputs from a 128-bit counter and a 64-bit key.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let p0 = (M0 as u64) * (c[0] as u64);
        let p1 = (M1 as u64) * (c[2] as u64);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// A uniform in [0, 1) with 53 random bits for (seed, stream, step).
/// Streams separate sequences (or purposes); steps are decoding positions.
pub fn uniform(seed: u64, stream: u64, step: u64) -> f64 {
    let x = philox4x32_10([step as u32, (step >> 32) as u32, stream as u32, (stream >> 32) as u32], [seed as u32, (seed >> 32) as u32]);
    let bits = ((x[0] as u64) << 21) | ((x[1] as u64) >> 11);
    bits as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 R=10).
    #[test]
    fn philox_known_answers() {
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
        assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        assert_eq!(
            philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn uniforms_are_in_range_and_roughly_uniform() {
        let n = 100_000;
        let mut bins = [0usize; 10];
        for i in 0..n {
            let u = uniform(7, i % 13, i / 13);
            assert!((0.0..1.0).contains(&u));
            bins[(u * 10.0) as usize] += 1;
        }
        // each bin ~ Binomial(n, 0.1): sd ≈ 95; 6 sd is a failure only for a broken generator
        for b in bins {
            assert!((b as f64 - 10_000.0).abs() < 600.0, "{bins:?}");
        }
    }
}
