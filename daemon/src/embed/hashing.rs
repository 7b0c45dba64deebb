//! The fallback embedder for when the model is disabled: feature hashing of the
//! normalised words (the BERT normaliser and pre-tokenizer of the static model) and of
//! their character n-grams, signed, summed and L2-normalised.
//!
//! It knows no meaning, only surface overlap (shared words, shared word parts such as
//! "remember"/"remembered"), but it is deterministic across runs, machines and Rust
//! versions (FNV-1a, not std's hasher), costs no memory, and fills the same slot.
//!
//! Not here: anything learned; the static model is in static_model.rs.

use super::normalizer::{Normalizer, PreTokenizer};
use super::static_model::MAX_DIM;
use super::{EmbedError, EmbedScratch, Embedder, ModelIdentity, check_dim, l2_normalize, truncate_chars};

/// Longest character n-gram allowed: longer ones are nearly whole words, which are
/// hashed anyway.
pub const MAX_NGRAM_CHARS: usize = 8;
/// Words longer than this many characters contribute their word feature only: their
/// n-grams would cost more than the rest of a short text together.
const MAX_NGRAM_WORD_CHARS: usize = 32;
/// Characters read per allowed word: a text is cut to `max_words` times this before
/// normalising, so a huge text costs no more than a long one (words average ~5).
const CHARS_PER_WORD_BUDGET: usize = 16;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Seeds that keep word features and n-gram features apart.
const WORD_SEED: u8 = 0x01;
const NGRAM_SEED: u8 = 0x02;
/// Virtual characters marking a word's start and end inside n-grams.
const WORD_START: u8 = 0x1c;
const WORD_END: u8 = 0x1d;

/// Parameters of the hashing embedder (they are part of its identity).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HashingConfig {
    /// Vector dimension (number of hash buckets).
    pub dim: usize,
    /// Shortest and longest character n-grams hashed besides whole words; `0` as the
    /// shortest disables n-grams.
    pub min_ngram_chars: usize,
    pub max_ngram_chars: usize,
    /// Weight of one n-gram relative to one whole word.
    pub ngram_weight: f32,
    /// At most this many words of a text are hashed (bounds the cost of one call).
    pub max_words: usize,
}

impl Default for HashingConfig {
    /// 256 dimensions like the default model, 3–5-grams at half a word's weight.
    fn default() -> Self {
        Self {
            dim: 256,
            min_ngram_chars: 3,
            max_ngram_chars: 5,
            ngram_weight: 0.5,
            max_words: 512,
        }
    }
}

/// A configuration the hashing embedder cannot use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HashingConfigError {
    #[error("hashing dimension {dim} is outside 1..={MAX_DIM}")]
    Dimension { dim: usize },
    #[error("n-gram lengths {min}..={max} are not within 1..={MAX_NGRAM_CHARS} (or min 0 to disable)")]
    NgramRange { min: usize, max: usize },
    #[error("n-gram weight {weight} is not a finite non-negative number")]
    NgramWeight { weight: f32 },
}

/// See the module docs.
#[derive(Debug)]
pub struct HashingEmbedder {
    config: HashingConfig,
    normalizer: Normalizer,
    identity: ModelIdentity,
}

impl HashingEmbedder {
    pub fn new(config: HashingConfig) -> Result<Self, HashingConfigError> {
        validate(&config)?;
        let params = format!(
            "hashing-v1 dim={} ngrams={}..={} ngram_weight={} max_words={}",
            config.dim, config.min_ngram_chars, config.max_ngram_chars, config.ngram_weight, config.max_words
        );
        let identity = ModelIdentity {
            name: "hashing".to_owned(),
            checksum: crc32c::crc32c(params.as_bytes()),
            dim: config.dim as u32,
        };
        Ok(Self {
            config,
            normalizer: Normalizer::bert_uncased(),
            identity,
        })
    }

    /// Adds one word's features to `out`.
    fn add_word(&self, word: &str, out: &mut [f32]) {
        add_feature(fnv(fnv(FNV_OFFSET, &[WORD_SEED]), word.as_bytes()), 1.0, out);
        if self.config.min_ngram_chars == 0 {
            return;
        }
        // Char boundaries of the word, with virtual start/end markers around it.
        let mut bounds = [0usize; MAX_NGRAM_WORD_CHARS + 1];
        let mut n_chars = 0;
        for (idx, _) in word.char_indices() {
            if n_chars == MAX_NGRAM_WORD_CHARS {
                return;
            }
            bounds[n_chars] = idx;
            n_chars += 1;
        }
        bounds[n_chars] = word.len();
        let n_virtual = n_chars + 2;
        for start in 0..n_virtual {
            for len in self.config.min_ngram_chars..=self.config.max_ngram_chars {
                if start + len > n_virtual {
                    break;
                }
                let hash = ngram_hash(word, &bounds[..=n_chars], start, start + len);
                add_feature(hash, self.config.ngram_weight, out);
            }
        }
    }
}

impl Embedder for HashingEmbedder {
    fn dim(&self) -> usize {
        self.config.dim
    }

    fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    fn embed(&self, text: &str, scratch: &mut EmbedScratch, out: &mut [f32]) -> Result<usize, EmbedError> {
        check_dim(self.config.dim, out)?;
        out.fill(0.0);
        let text = truncate_chars(text, self.config.max_words.saturating_mul(CHARS_PER_WORD_BUDGET));
        let normalized = self
            .normalizer
            .normalize(text, &mut scratch.text_a, &mut scratch.text_b);
        let mut n_words = 0;
        PreTokenizer::Bert.for_each_word(normalized, |word| {
            self.add_word(word, out);
            n_words += 1;
            n_words < self.config.max_words
        });
        l2_normalize(out);
        // Opposite signs may cancel exactly; then there is no vector.
        Ok(if out.iter().any(|&x| x != 0.0) { n_words } else { 0 })
    }
}

fn validate(config: &HashingConfig) -> Result<(), HashingConfigError> {
    if config.dim == 0 || config.dim > MAX_DIM {
        return Err(HashingConfigError::Dimension { dim: config.dim });
    }
    let (min, max) = (config.min_ngram_chars, config.max_ngram_chars);
    if min != 0 && (min > max || max > MAX_NGRAM_CHARS) {
        return Err(HashingConfigError::NgramRange { min, max });
    }
    if !(config.ngram_weight.is_finite() && config.ngram_weight >= 0.0) {
        return Err(HashingConfigError::NgramWeight {
            weight: config.ngram_weight,
        });
    }
    Ok(())
}

/// Hash of virtual characters `start..end` of `<word>` (0 is the start marker,
/// `bounds.len()` the end marker, `i` in between is the word's char `i - 1`).
fn ngram_hash(word: &str, bounds: &[usize], start: usize, end: usize) -> u64 {
    let n_chars = bounds.len() - 1;
    let mut hash = fnv(FNV_OFFSET, &[NGRAM_SEED]);
    if start == 0 {
        hash = fnv(hash, &[WORD_START]);
    }
    let first = start.max(1) - 1;
    let last = (end - 1).min(n_chars);
    if first < last {
        hash = fnv(hash, &word.as_bytes()[bounds[first]..bounds[last]]);
    }
    if end == n_chars + 2 {
        hash = fnv(hash, &[WORD_END]);
    }
    hash
}

/// Signed feature hashing: the top bit picks the sign, the rest the bucket.
fn add_feature(hash: u64, weight: f32, out: &mut [f32]) {
    let bucket = ((hash & (u64::MAX >> 1)) % out.len() as u64) as usize;
    out[bucket] += if hash >> 63 == 1 { -weight } else { weight };
}

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embed(e: &HashingEmbedder, text: &str) -> (Vec<f32>, usize) {
        let mut out = vec![0.0; e.dim()];
        let n = e
            .embed(text, &mut EmbedScratch::new(), &mut out)
            .expect("right dimension");
        (out, n)
    }

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn hashing_is_deterministic_normalised_and_case_insensitive() {
        let e = HashingEmbedder::new(HashingConfig::default()).expect("valid config");
        let (a, n) = embed(&e, "Caroline went to the LGBTQ support group.");
        assert_eq!(n, 8);
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        assert_eq!(a, embed(&e, "caroline went to the lgbtq support group.").0);
        // A fixed value pins the hash across Rust versions and machines.
        assert_eq!(
            e.identity().to_string(),
            format!("hashing@{:08x}/256", e.identity().checksum)
        );
        let (b, _) = embed(&e, "Caroline attended a support group");
        let (c, _) = embed(&e, "quarterly revenue forecast spreadsheet");
        assert!(
            cosine(&a, &b) > cosine(&a, &c) + 0.2,
            "{} vs {}",
            cosine(&a, &b),
            cosine(&a, &c)
        );
    }

    #[test]
    fn ngrams_relate_word_forms() {
        let e = HashingEmbedder::new(HashingConfig::default()).expect("valid config");
        let (a, _) = embed(&e, "remembering");
        let (b, _) = embed(&e, "remembered");
        let (c, _) = embed(&e, "spreadsheet");
        assert!(
            cosine(&a, &b) > 0.3 && cosine(&a, &c) < 0.2,
            "{} {}",
            cosine(&a, &b),
            cosine(&a, &c)
        );
    }

    #[test]
    fn nothing_to_hash_gives_zero_vector_and_zero_count() {
        let e = HashingEmbedder::new(HashingConfig::default()).expect("valid config");
        for text in ["", "   \t\n", "\u{0}\u{200b}"] {
            let (v, n) = embed(&e, text);
            assert_eq!(n, 0, "{text:?}");
            assert!(v.iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn dimension_is_configurable_and_checked() {
        let e = HashingEmbedder::new(HashingConfig {
            dim: 64,
            ..HashingConfig::default()
        })
        .expect("valid");
        assert_eq!(e.dim(), 64);
        assert_eq!(embed(&e, "x").0.len(), 64);
        let err = e.embed("x", &mut EmbedScratch::new(), &mut [0.0; 63]).unwrap_err();
        assert_eq!(err, EmbedError::DimensionMismatch { expected: 64, got: 63 });
        let bad = HashingConfig {
            dim: 0,
            ..HashingConfig::default()
        };
        assert!(matches!(
            HashingEmbedder::new(bad),
            Err(HashingConfigError::Dimension { dim: 0 })
        ));
        let bad = HashingConfig {
            min_ngram_chars: 4,
            max_ngram_chars: 2,
            ..HashingConfig::default()
        };
        assert!(matches!(
            HashingEmbedder::new(bad),
            Err(HashingConfigError::NgramRange { .. })
        ));
        let no_ngrams = HashingConfig {
            min_ngram_chars: 0,
            ..HashingConfig::default()
        };
        assert_eq!(
            embed(&HashingEmbedder::new(no_ngrams).expect("valid"), "hello world").1,
            2
        );
    }

    #[test]
    fn hash_values_are_stable() {
        // FNV-1a test vector: changing the hash would silently change stored vectors.
        assert_eq!(fnv(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        let e = HashingEmbedder::new(HashingConfig {
            dim: 16,
            min_ngram_chars: 0,
            ..HashingConfig::default()
        })
        .expect("valid");
        let (v, _) = embed(&e, "memory");
        let expected_bucket = ((fnv(fnv(FNV_OFFSET, &[WORD_SEED]), b"memory") & (u64::MAX >> 1)) % 16) as usize;
        assert!((v[expected_bucket].abs() - 1.0).abs() < 1e-6);
    }
}
