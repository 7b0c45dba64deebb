//! Weighted fusion: the score of every candidate the engines proposed, as a
//! weighted sum of factors, computed with SIMD over struct-of-arrays, then
//! the best k.
//!
//! A recall gathers a few dozen to a few hundred candidates. Each gets one
//! value per [`Factor`], all in `[0, 1]`, filled by the pipeline
//! (`pipeline.rs` says how each is measured): the engines' similarities
//! normalised per list, the conversation context, recency, importance, the
//! learned preference, novelty (diversity) and date proximity. The score is
//! `Σ weight[f] · value[f]`, summed in factor order.
//!
//! Two paths compute it and rank identically: [`score_simd`] (eight
//! candidates per step with `wide::f32x8`, one column per factor) and
//! [`score_scalar`] (one candidate at a time, the reference). Both do the
//! same IEEE operations in the same order for each candidate (a multiply,
//! then an add, never a fused multiply-add), so their scores are equal bit
//! for bit (property test below) and so are their rankings. [`top_k`] picks
//! the best k: selection then sort, O(n + k log k); ties go to the lower id.
//!
//! Weights are [`Weights`]: defaults fitted on `../shared/data/locomo-dev`
//! (BENCHMARKS.md, "Fitting the fusion"), configurable, and renormalised
//! when a factor has no source in a recall (an engine missing): its weight
//! is spread over the others in proportion, so scores keep their scale.

use wide::f32x8;

/// The factors of a score, in summation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Factor {
    /// Vector similarity (dense or client vectors), min-max normalised over
    /// the engine's list.
    Vector = 0,
    /// BM25 score over the best BM25 score of the list.
    Lexical,
    /// Written next to a strong hit, in the same namespace and session.
    Context,
    /// How recent the memory is, halving every half-life.
    Recency,
    /// The importance the client gave, clamped to `[0, 1]`.
    Importance,
    /// Learned from feedback: 0.5 neutral, towards 1 useful, 0 not useful.
    Preference,
    /// Novelty: how unlike its near-duplicates the memory is (mining).
    Diversity,
    /// Created close to a date the query names.
    Date,
}

/// How many factors a score has.
pub const FACTORS: usize = 8;

impl Factor {
    /// Every factor, in summation order.
    pub const ALL: [Factor; FACTORS] = [
        Factor::Vector,
        Factor::Lexical,
        Factor::Context,
        Factor::Recency,
        Factor::Importance,
        Factor::Preference,
        Factor::Diversity,
        Factor::Date,
    ];

    /// The name in answers (`why`), config and Stats.
    pub fn name(self) -> &'static str {
        match self {
            Factor::Vector => "vector",
            Factor::Lexical => "lexical",
            Factor::Context => "context",
            Factor::Recency => "recency",
            Factor::Importance => "importance",
            Factor::Preference => "preference",
            Factor::Diversity => "diversity",
            Factor::Date => "date",
        }
    }
}

/// One weight per factor (non-negative, finite).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights(pub [f32; FACTORS]);

impl Default for Weights {
    /// Fitted on locomo-dev by leave-one-conversation-out grid search over
    /// vector/lexical/context (BENCHMARKS.md); the factors that data cannot
    /// fit (no recency questions, no importance, no feedback, no
    /// near-duplicates) get small weights that break ties without
    /// overriding relevance.
    fn default() -> Self {
        let mut w = [0.0; FACTORS];
        w[Factor::Vector as usize] = 0.4;
        w[Factor::Lexical as usize] = 1.0;
        w[Factor::Context as usize] = 0.7;
        w[Factor::Recency as usize] = 0.02;
        w[Factor::Importance as usize] = 0.02;
        w[Factor::Preference as usize] = 0.2;
        w[Factor::Diversity as usize] = 0.02;
        w[Factor::Date as usize] = 0.3;
        Self(w)
    }
}

/// Why a set of weights cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("fusion weight {factor} = {value} must be finite and not negative")]
pub struct BadWeight {
    /// The factor's name.
    pub factor: &'static str,
    /// The value given.
    pub value: f32,
}

impl Weights {
    /// The weight of `factor`.
    pub fn get(&self, factor: Factor) -> f32 {
        self.0[factor as usize]
    }

    /// Refuses a negative, infinite or NaN weight, naming it.
    pub fn validate(&self) -> Result<(), BadWeight> {
        for factor in Factor::ALL {
            let value = self.get(factor);
            if !value.is_finite() || value < 0.0 {
                return Err(BadWeight {
                    factor: factor.name(),
                    value,
                });
            }
        }
        Ok(())
    }

    /// These weights with the factors in `missing` (a bit per factor)
    /// zeroed and their share spread over the rest in proportion.
    pub fn renormalised(&self, missing: u32) -> Weights {
        let total: f32 = self.0.iter().sum();
        let mut out = self.0;
        for factor in Factor::ALL {
            if missing & (1 << factor as u32) != 0 {
                out[factor as usize] = 0.0;
            }
        }
        let kept: f32 = out.iter().sum();
        if kept > 0.0 && total > kept {
            let scale = total / kept;
            out.iter_mut().for_each(|w| *w *= scale);
        }
        Weights(out)
    }
}

/// The candidates' factor values, one column per factor, padded with zeros
/// to a multiple of eight rows (the SIMD width).
#[derive(Debug, Clone, Default)]
pub struct Features {
    ids: Vec<u64>,
    columns: [Vec<f32>; FACTORS],
}

/// Lanes per SIMD step.
const LANES: usize = 8;

impl Features {
    /// Empty, with room for `n` candidates.
    pub fn with_capacity(n: usize) -> Self {
        let padded = n.next_multiple_of(LANES);
        Self {
            ids: Vec::with_capacity(n),
            columns: std::array::from_fn(|_| Vec::with_capacity(padded)),
        }
    }

    /// Adds a candidate with every factor 0; returns its row.
    pub fn push(&mut self, id: u64) -> usize {
        let row = self.ids.len();
        self.ids.push(id);
        if self.columns[0].len() <= row {
            for column in &mut self.columns {
                column.resize(row + LANES, 0.0);
            }
        }
        row
    }

    /// Sets one value (clamped to `[0, 1]`; NaN counts as 0).
    pub fn set(&mut self, row: usize, factor: Factor, value: f32) {
        let value = if value.is_nan() { 0.0 } else { value.clamp(0.0, 1.0) };
        self.columns[factor as usize][row] = value;
    }

    /// One value.
    pub fn get(&self, row: usize, factor: Factor) -> f32 {
        self.columns[factor as usize][row]
    }

    /// The candidates' ids, by row.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// How many candidates.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// No candidates.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Each factor's contribution to row `row`'s score under `weights`.
    pub fn contributions(&self, row: usize, weights: &Weights) -> [f32; FACTORS] {
        std::array::from_fn(|f| weights.0[f] * self.columns[f][row])
    }

    fn padded_len(&self) -> usize {
        self.ids.len().next_multiple_of(LANES)
    }
}

/// Every candidate's score, eight at a time: `out[row]` for each row.
pub fn score_simd(features: &Features, weights: &Weights, out: &mut Vec<f32>) {
    let padded = features.padded_len();
    out.clear();
    out.resize(padded, 0.0);
    let w: [f32x8; FACTORS] = std::array::from_fn(|f| f32x8::splat(weights.0[f]));
    for start in (0..padded).step_by(LANES) {
        let mut acc = f32x8::ZERO;
        for (f, weight) in w.iter().enumerate() {
            let lane: [f32; LANES] = features.columns[f][start..start + LANES]
                .try_into()
                .expect("columns are padded to whole lanes");
            // A multiply then an add, as the scalar path does: no fused
            // multiply-add, so both round identically.
            acc += *weight * f32x8::from(lane);
        }
        out[start..start + LANES].copy_from_slice(&acc.to_array());
    }
    out.truncate(features.len());
}

/// Every candidate's score, one at a time (the reference for [`score_simd`]).
pub fn score_scalar(features: &Features, weights: &Weights, out: &mut Vec<f32>) {
    out.clear();
    for row in 0..features.len() {
        let mut acc = 0.0f32;
        for f in 0..FACTORS {
            acc += weights.0[f] * features.columns[f][row];
        }
        out.push(acc);
    }
}

/// The rows of the best `k` scores, best first; ties go to the lower id.
pub fn top_k(ids: &[u64], scores: &[f32], k: usize) -> Vec<usize> {
    let better = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(ids[*a].cmp(&ids[*b]));
    let mut rows: Vec<usize> = (0..scores.len().min(ids.len())).collect();
    if k < rows.len() {
        if k == 0 {
            return Vec::new();
        }
        rows.select_nth_unstable_by(k - 1, better);
        rows.truncate(k);
    }
    rows.sort_unstable_by(better);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn features(rows: &[(u64, [f32; FACTORS])]) -> Features {
        let mut features = Features::with_capacity(rows.len());
        for (id, values) in rows {
            let row = features.push(*id);
            for factor in Factor::ALL {
                features.set(row, factor, values[factor as usize]);
            }
        }
        features
    }

    #[test]
    fn the_score_is_the_weighted_sum_and_the_best_come_first() {
        let mut rows = [(1, [0.0; FACTORS]), (2, [0.0; FACTORS]), (3, [0.0; FACTORS])];
        rows[0].1[Factor::Lexical as usize] = 1.0;
        rows[1].1[Factor::Vector as usize] = 1.0;
        rows[2].1[Factor::Lexical as usize] = 0.5;
        rows[2].1[Factor::Vector as usize] = 0.5;
        let features = features(&rows);
        let mut w = [0.0; FACTORS];
        w[Factor::Lexical as usize] = 1.0;
        w[Factor::Vector as usize] = 0.4;
        let mut scores = Vec::new();
        score_simd(&features, &Weights(w), &mut scores);
        assert_eq!(scores, vec![1.0, 0.4, 0.7]);
        assert_eq!(top_k(features.ids(), &scores, 2), vec![0, 2]);
        assert_eq!(features.contributions(2, &Weights(w))[Factor::Vector as usize], 0.2);
    }

    #[test]
    fn ties_go_to_the_lower_id_and_k_bounds_the_answer() {
        let features = features(&[(9, [0.5; FACTORS]), (4, [0.5; FACTORS]), (7, [0.5; FACTORS])]);
        let mut scores = Vec::new();
        score_scalar(&features, &Weights::default(), &mut scores);
        assert_eq!(top_k(features.ids(), &scores, 10), vec![1, 2, 0]);
        assert_eq!(top_k(features.ids(), &scores, 1), vec![1]);
        assert!(top_k(features.ids(), &scores, 0).is_empty());
    }

    #[test]
    fn a_missing_factor_gives_its_weight_to_the_others_in_proportion() {
        let weights = Weights::default();
        let without_vector = weights.renormalised(1 << Factor::Vector as u32);
        assert_eq!(without_vector.get(Factor::Vector), 0.0);
        let total = |w: &Weights| w.0.iter().sum::<f32>();
        assert!((total(&weights) - total(&without_vector)).abs() < 1e-5);
        let ratio = without_vector.get(Factor::Lexical) / without_vector.get(Factor::Context);
        assert!((ratio - weights.get(Factor::Lexical) / weights.get(Factor::Context)).abs() < 1e-5);
        assert_eq!(weights.renormalised(0), weights);
    }

    #[test]
    fn bad_weights_and_values_are_named_or_clamped() {
        let mut w = Weights::default();
        w.0[Factor::Recency as usize] = -1.0;
        let error = w.validate().unwrap_err();
        assert_eq!(error.factor, "recency");
        assert!(error.to_string().contains("recency = -1"), "{error}");
        let mut features = Features::with_capacity(1);
        let row = features.push(1);
        features.set(row, Factor::Lexical, f32::NAN);
        features.set(row, Factor::Vector, 7.0);
        assert_eq!(features.get(row, Factor::Lexical), 0.0);
        assert_eq!(features.get(row, Factor::Vector), 1.0);
    }

    proptest! {
        /// The SIMD path scores every candidate exactly as the scalar path
        /// does, so both rank identically, whatever the count (padding) and values.
        #[test]
        fn simd_and_scalar_paths_score_and_rank_identically(
            rows in proptest::collection::vec((0u64..50, proptest::array::uniform8(0.0f32..=1.0)), 0..300),
            weights in proptest::array::uniform8(0.0f32..3.0),
            k in 0usize..40,
        ) {
            let features = features(&rows);
            let weights = Weights(weights);
            let (mut simd, mut scalar) = (Vec::new(), Vec::new());
            score_simd(&features, &weights, &mut simd);
            score_scalar(&features, &weights, &mut scalar);
            prop_assert_eq!(simd.len(), rows.len());
            for (a, b) in simd.iter().zip(&scalar) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
            prop_assert_eq!(top_k(features.ids(), &simd, k), top_k(features.ids(), &scalar, k));
        }

        /// top_k returns the k best by (score desc, id asc), as a full sort would.
        #[test]
        fn top_k_agrees_with_a_full_sort(
            scores in proptest::collection::vec(0.0f32..1.0, 0..200),
            k in 0usize..250,
        ) {
            let ids: Vec<u64> = (0..scores.len() as u64).map(|i| (i * 7919) % 1000).collect();
            let mut sorted: Vec<usize> = (0..scores.len()).collect();
            sorted.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then(ids[*a].cmp(&ids[*b])));
            sorted.truncate(k);
            prop_assert_eq!(top_k(&ids, &scores, k), sorted);
        }
    }
}
