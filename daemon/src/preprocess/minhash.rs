//! MinHash signatures of texts and the LSH banding that finds candidate
//! near-duplicates without comparing against every memory.
//!
//! A text's features are its word 3-shingles (three consecutive tokens of
//! the lexical tokenizer's, lowercased; a text of one or two tokens is one
//! shingle of all of them). Each shingle is hashed once (FNV-1a over the
//! lowercased characters of its words, then a SplitMix64 finaliser); hash
//! function i maps it to the high 32 bits of `a_i·x + b_i` (odd `a_i`,
//! multiply-shift), and the signature keeps each function's minimum. Two
//! signatures agree at a position with probability equal to the Jaccard
//! similarity of the shingle sets, so the share of agreeing positions
//! estimates it (standard error √(J(1−J)/64) ≈ 0.057 at J = 0.7).
//!
//! All constants derive from a seed through SplitMix64, so signatures are
//! the same on every machine and across restarts (they may be persisted).
//!
//! LSH: the signature is cut into `bands` bands of `rows` rows; two texts
//! become candidates when one band is equal, which happens with probability
//! 1 − (1 − J^rows)^bands. [`LshParams::for_threshold`] picks the largest
//! `rows` (fewest false candidates) that still finds a pair at the threshold
//! with probability ≥ [`LSH_MIN_RECALL_AT_THRESHOLD`].
//!
//! Not here: the per-namespace index and the policy (`dedup.rs`).

use crate::recall::ann::synthetic::SplitMix64;
use crate::recall::lexical::word_spans;

/// Hash functions per signature: 64 × 4 bytes a memory, a 0.057 standard
/// error at J = 0.7; 128 would halve the variance for twice the memory and
/// time, which a 0.7 threshold does not need.
pub const NUM_HASHES: usize = 64;

/// Words per shingle: 3-word shingles are the usual choice for short
/// natural-language texts (1-word sets make unrelated texts look alike).
pub const SHINGLE_WORDS: usize = 3;

/// A pair of texts exactly at the threshold must become LSH candidates with
/// at least this probability (pairs above it, more often).
pub const LSH_MIN_RECALL_AT_THRESHOLD: f64 = 0.98;

/// The seed of the shipped hash functions. Changing it changes every
/// signature: persisted signatures would no longer compare.
pub const DEFAULT_SEED: u64 = 0x6d69_6e68_6173_6831;

/// A text's MinHash signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    mins: [u32; NUM_HASHES],
    /// The text had no token: it resembles nothing.
    empty: bool,
}

impl Default for Signature {
    fn default() -> Self {
        Self {
            mins: [u32::MAX; NUM_HASHES],
            empty: true,
        }
    }
}

impl Signature {
    /// A signature with these minima (a text with tokens), for tests that
    /// need buckets no text would give.
    #[cfg(test)]
    pub(crate) fn from_mins(mins: [u32; NUM_HASHES]) -> Self {
        Self { mins, empty: false }
    }

    /// The per-function minima.
    pub fn mins(&self) -> &[u32; NUM_HASHES] {
        &self.mins
    }

    /// Whether the text had no token.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Estimated Jaccard similarity of the two texts' shingle sets (0 when
    /// either text had no token).
    pub fn jaccard(&self, other: &Self) -> f64 {
        if self.empty || other.empty {
            return 0.0;
        }
        let equal = self.mins.iter().zip(&other.mins).filter(|(a, b)| a == b).count();
        equal as f64 / NUM_HASHES as f64
    }
}

/// The seeded hash functions.
#[derive(Debug, Clone)]
pub struct MinHasher {
    seed: u64,
    multipliers: [u64; NUM_HASHES],
    offsets: [u64; NUM_HASHES],
}

impl MinHasher {
    /// Hash functions drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut hasher = Self {
            seed,
            multipliers: [0; NUM_HASHES],
            offsets: [0; NUM_HASHES],
        };
        for i in 0..NUM_HASHES {
            hasher.multipliers[i] = rng.next_u64() | 1;
            hasher.offsets[i] = rng.next_u64();
        }
        hasher
    }

    /// The seed the functions were drawn from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The signature of `text` into `out`. Allocates nothing.
    pub fn signature(&self, text: &str, out: &mut Signature) {
        *out = Signature::default();
        let mut window = [0u64; SHINGLE_WORDS];
        let mut seen = 0usize;
        for (_, word) in word_spans(text) {
            window.rotate_left(1);
            window[SHINGLE_WORDS - 1] = word_hash(word);
            seen += 1;
            if seen >= SHINGLE_WORDS {
                self.add_shingle(shingle_hash(&window), out);
            }
        }
        if (1..SHINGLE_WORDS).contains(&seen) {
            self.add_shingle(shingle_hash(&window[SHINGLE_WORDS - seen..]), out);
        }
    }

    fn add_shingle(&self, shingle: u64, out: &mut Signature) {
        out.empty = false;
        for ((min, &a), &b) in out.mins.iter_mut().zip(&self.multipliers).zip(&self.offsets) {
            let value = (a.wrapping_mul(shingle).wrapping_add(b) >> 32) as u32;
            *min = (*min).min(value);
        }
    }
}

/// FNV-1a over the lowercased characters of `word`, with the same
/// possessive and apostrophe folding as the lexical tokenizer's terms.
fn word_hash(word: &str) -> u64 {
    let word = word
        .strip_suffix("'s")
        .or_else(|| word.strip_suffix("\u{2019}s"))
        .filter(|w| !w.is_empty())
        .unwrap_or(word);
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for c in word.chars().flat_map(char::to_lowercase) {
        let c = if c == '\u{2019}' { '\'' } else { c };
        for byte in (c as u32).to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// One hash of an ordered run of word hashes.
fn shingle_hash(words: &[u64]) -> u64 {
    let mut hash = 0u64;
    for &word in words {
        hash = finalize(hash.rotate_left(23) ^ word);
    }
    hash
}

/// SplitMix64's finaliser: spreads every input bit over the output.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How a signature is cut into bands for LSH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LshParams {
    /// Bands (a candidate shares at least one).
    pub bands: usize,
    /// Signature positions per band.
    pub rows: usize,
}

impl LshParams {
    /// The bands for a Jaccard `threshold` in (0, 1]: the largest `rows`
    /// whose bands find a pair at the threshold with probability at least
    /// [`LSH_MIN_RECALL_AT_THRESHOLD`].
    pub fn for_threshold(threshold: f64) -> Self {
        (1..=NUM_HASHES)
            .rev()
            .map(|rows| Self {
                bands: NUM_HASHES / rows,
                rows,
            })
            .find(|p| p.candidate_probability(threshold) >= LSH_MIN_RECALL_AT_THRESHOLD)
            .unwrap_or(Self {
                bands: NUM_HASHES,
                rows: 1,
            })
    }

    /// Probability that two texts of Jaccard similarity `jaccard` share a band.
    pub fn candidate_probability(&self, jaccard: f64) -> f64 {
        1.0 - (1.0 - jaccard.powi(self.rows as i32)).powi(self.bands as i32)
    }

    /// The bucket key of band `band` of `signature`.
    pub fn band_key(&self, signature: &Signature, band: usize) -> u64 {
        let rows = &signature.mins[band * self.rows..(band + 1) * self.rows];
        let mut hash = finalize(band as u64 ^ 0x6c73_685f_6261_6e64);
        for &row in rows {
            hash = finalize(hash.rotate_left(29) ^ u64::from(row));
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(text: &str) -> Signature {
        let mut out = Signature::default();
        MinHasher::new(DEFAULT_SEED).signature(text, &mut out);
        out
    }

    /// Exact Jaccard of the 3-shingle sets, for comparison.
    fn exact_jaccard(a: &str, b: &str) -> f64 {
        let shingles = |t: &str| -> std::collections::HashSet<Vec<String>> {
            let words: Vec<String> = word_spans(t).map(|(_, w)| w.to_lowercase()).collect();
            words.windows(3).map(<[String]>::to_vec).collect()
        };
        let (a, b) = (shingles(a), shingles(b));
        a.intersection(&b).count() as f64 / a.union(&b).count() as f64
    }

    fn words(seed: u64, n: usize) -> String {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| format!("w{} ", rng.next_u64() % 5000)).collect()
    }

    #[test]
    fn identical_texts_estimate_one_and_disjoint_near_zero() {
        let text = "Caroline went to the LGBTQ support group yesterday and it was powerful";
        assert_eq!(signature(text).jaccard(&signature(text)), 1.0);
        assert_eq!(
            signature(text).jaccard(&signature(
                "CAROLINE went to the lgbtq SUPPORT group yesterday, and it was powerful!"
            )),
            1.0
        );
        let disjoint = signature(&words(1, 200)).jaccard(&signature(&words(2, 200)));
        assert!(disjoint < 0.05, "{disjoint}");
        assert_eq!(signature("").jaccard(&signature("")), 0.0);
        assert!(signature("").is_empty() && !signature("one").is_empty());
        assert_eq!(signature("two words").jaccard(&signature("Two Words")), 1.0);
    }

    #[test]
    fn the_estimate_tracks_the_exact_jaccard() {
        let base = words(3, 300);
        let tokens: Vec<&str> = base.split_whitespace().collect();
        for changed in [10, 30, 60, 120] {
            let mut edited = tokens.clone();
            for i in (0..changed).map(|i| i * tokens.len() / changed) {
                edited[i] = "edited";
            }
            let edited = edited.join(" ");
            let (estimate, exact) = (
                signature(&base).jaccard(&signature(&edited)),
                exact_jaccard(&base, &edited),
            );
            // Four standard errors at 64 hashes.
            assert!(
                (estimate - exact).abs() < 4.0 * (exact * (1.0 - exact) / 64.0).sqrt() + 0.02,
                "{estimate} vs {exact}"
            );
        }
    }

    #[test]
    fn signatures_are_deterministic_and_seeded() {
        let text = words(4, 100);
        assert_eq!(signature(&text), signature(&text));
        let mut other = Signature::default();
        MinHasher::new(DEFAULT_SEED + 1).signature(&text, &mut other);
        assert_ne!(signature(&text), other);
        // Fixed values: a change of hashing would silently break persisted signatures.
        assert_eq!(
            signature("the quick brown fox").mins()[..2],
            [81_845_175, 2_753_735_038]
        );
    }

    #[test]
    fn lsh_bands_fit_the_threshold() {
        let p = LshParams::for_threshold(0.7);
        assert!(p.bands * p.rows <= NUM_HASHES);
        assert!(p.candidate_probability(0.7) >= LSH_MIN_RECALL_AT_THRESHOLD);
        assert!(p.candidate_probability(0.2) < 0.1, "{p:?}");
        let stricter = LshParams::for_threshold(0.9);
        assert!(stricter.rows >= p.rows);
    }
}
