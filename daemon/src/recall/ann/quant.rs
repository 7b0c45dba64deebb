//! Int8 quantisation with a per-vector scale.
//!
//! A vector is first made unit length (the index ranks by cosine), then each
//! component is divided by `scale = max|x_i| / 127` and rounded, so the
//! largest component maps to ±127 and every code uses the full range. A cast
//! scaled by the vector's norm instead (`x_i · 127 / ‖x‖`) leaves a unit
//! vector's components, typically ≪ 1, in a few codes near zero: measured in
//! RESEARCH.md ("Vector search") as recall 0.879 against 0.998 for max-abs.
//! The unit vector is recovered as `scale · code`, so the cosine of two
//! vectors is `scale_a · scale_b · Σ code_a · code_b` (see `distance`).
//!
//! Codes stay in −127..=127 (never −128): the SIMD kernel's sign trick needs
//! it, and segment loading rejects a −128.

use crate::recall::ann::error::AnnError;

/// The largest code magnitude.
pub const CODE_MAX: i8 = 127;

/// Checks `vector` (its dimension, finite, not zero) and returns its norm
/// (in f64: the square of a large f32 overflows f32, that of a tiny one underflows).
pub fn checked_norm(vector: &[f32], dim: usize) -> Result<f64, AnnError> {
    if vector.len() != dim {
        return Err(AnnError::DimensionMismatch {
            expected: dim,
            got: vector.len(),
        });
    }
    if let Some(index) = vector.iter().position(|x| !x.is_finite()) {
        return Err(AnnError::NonFinite { index });
    }
    let norm = vector.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Err(AnnError::ZeroVector);
    }
    Ok(norm)
}

/// Quantises `vector` (made unit length) into `codes` (same length) and
/// returns the scale; errors as [`checked_norm`].
pub fn quantize(vector: &[f32], codes: &mut [i8]) -> Result<f32, AnnError> {
    let norm = checked_norm(vector, codes.len())?;
    Ok(quantize_with_norm(vector, norm, codes))
}

/// [`quantize`] for a vector already checked, with its norm.
pub fn quantize_with_norm(vector: &[f32], norm: f64, codes: &mut [i8]) -> f32 {
    let max_abs = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let code_max = f64::from(CODE_MAX);
    // max_abs > 0 because norm > 0, so the inverse is finite; in f64 so that
    // neither a huge nor a subnormal vector overflows.
    let inverse = code_max / f64::from(max_abs);
    for (code, x) in codes.iter_mut().zip(vector) {
        *code = (f64::from(*x) * inverse).round().clamp(-code_max, code_max) as i8;
    }
    // The unit vector's max over 127: between 1/(127·√dim) and 1/127.
    (f64::from(max_abs) / norm / code_max) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_component_maps_to_full_range() {
        let mut codes = [0i8; 4];
        let scale = quantize(&[0.1, -0.4, 0.2, 0.0], &mut codes).unwrap();
        assert_eq!(codes[1], -127);
        assert!(codes.iter().all(|c| *c > i8::MIN));
        // Recovered unit vector ≈ the input over its norm.
        let norm = (0.01f32 + 0.16 + 0.04).sqrt();
        for (c, x) in codes.iter().zip([0.1f32, -0.4, 0.2, 0.0]) {
            assert!((f32::from(*c) * scale - x / norm).abs() < 0.5 * scale + 1e-6);
        }
    }

    #[test]
    fn bad_vectors_are_typed_errors() {
        let mut codes = [0i8; 2];
        assert!(matches!(quantize(&[0.0, 0.0], &mut codes), Err(AnnError::ZeroVector)));
        assert!(matches!(
            quantize(&[1.0, f32::NAN], &mut codes),
            Err(AnnError::NonFinite { index: 1 })
        ));
        assert!(matches!(
            quantize(&[1.0], &mut codes),
            Err(AnnError::DimensionMismatch { expected: 2, got: 1 })
        ));
    }

    #[test]
    fn tiny_and_huge_vectors_quantize() {
        let mut codes = [0i8; 3];
        quantize(&[1e-30, 0.0, -1e-30], &mut codes).unwrap();
        assert_eq!(codes, [127, 0, -127]);
        quantize(&[3e38, 3e38, 0.0], &mut codes).unwrap();
        assert_eq!(codes, [127, 127, 0]);
    }
}
