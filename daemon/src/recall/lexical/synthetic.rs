//! Deterministic synthetic text for the lexical index's benchmark and
//! tests: sentences of words drawn from a Zipfian distribution over a fixed
//! vocabulary, as natural text's word frequencies are (a few words in most
//! documents, a long tail of rare ones).
//!
//! The vocabulary is 100 common English words (the most frequent ranks,
//! function words first, as in real text, so the stop list has work to do)
//! followed by generated pronounceable words that are unique by
//! construction. The same seed gives the same text on every machine
//! (SplitMix64, no platform RNG). Not a language model: the words have the
//! right frequencies, not the right order.

use crate::recall::ann::synthetic::SplitMix64;

/// The most frequent ranks: common English words, roughly by frequency.
const COMMON_WORDS: [&str; 100] = [
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "with", "as", "i",
    "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word", "but", "what", "some", "we",
    "can", "out", "other", "were", "all", "there", "when", "up", "use", "your", "how", "said", "an", "each", "she",
    "which", "do", "their", "time", "if", "will", "way", "about", "many", "then", "them", "write", "would", "like",
    "so", "these", "her", "long", "make", "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go",
    "come", "did", "number", "sound", "no", "most", "people", "my", "over", "know", "water", "than", "call", "first",
    "who", "may", "down", "side", "been", "now", "find", "work",
];

const ONSETS: [&str; 16] = [
    "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
];
const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];

/// A Zipfian word source.
#[derive(Debug, Clone)]
pub struct ZipfText {
    words: Vec<String>,
    /// Cumulative probability of ranks 0..=i.
    cumulative: Vec<f64>,
    rng: SplitMix64,
}

impl ZipfText {
    /// `vocabulary` words (≥ 100) with frequency ∝ 1/rank^`exponent`
    /// (about 1 for English), drawn with `seed`.
    pub fn new(vocabulary: usize, exponent: f64, seed: u64) -> Self {
        let mut words: Vec<String> = COMMON_WORDS.iter().map(|w| (*w).to_owned()).collect();
        let generated = (0..)
            .map(generated_word)
            .filter(|w| !COMMON_WORDS.contains(&w.as_str()));
        words.extend(generated.take(vocabulary.saturating_sub(COMMON_WORDS.len())));
        let mut total = 0.0;
        let cumulative = (1..=words.len())
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(exponent);
                total
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|c| c / total)
            .collect();
        Self {
            words,
            cumulative,
            rng: SplitMix64::new(seed),
        }
    }

    /// A word drawn with the caller's `rng` (so one shared vocabulary can
    /// serve many independent, reproducible streams).
    pub fn word_with(&self, rng: &mut SplitMix64) -> &str {
        let u = rng.next_unit();
        let rank = self.cumulative.partition_point(|&c| c < u).min(self.words.len() - 1);
        &self.words[rank]
    }

    /// The next word.
    pub fn word(&mut self) -> &str {
        let u = self.rng.next_unit();
        let rank = self.cumulative.partition_point(|&c| c < u).min(self.words.len() - 1);
        &self.words[rank]
    }

    /// A sentence of `min_words..=max_words` words, capitalised, ending in a full stop.
    pub fn sentence(&mut self, min_words: usize, max_words: usize) -> String {
        let span = (max_words - min_words + 1) as u64;
        let n = min_words + (self.rng.next_u64() % span) as usize;
        let mut text = String::new();
        for i in 0..n {
            if i > 0 {
                text.push(' ');
            }
            let word = self.word().to_owned();
            text.push_str(&word);
        }
        if let Some(first) = text.get(..1) {
            let upper = first.to_ascii_uppercase();
            text.replace_range(..1, &upper);
        }
        text.push('.');
        text
    }
}

/// The `i`-th generated word: two or more consonant-vowel syllables, the
/// index written in base 80 (unique for every `i`; the caller drops the few
/// that are common words, "make" or "time").
fn generated_word(i: usize) -> String {
    let mut word = String::new();
    let mut rest = i + ONSETS.len() * VOWELS.len(); // at least two syllables
    while rest > 0 {
        let syllable = rest % (ONSETS.len() * VOWELS.len());
        word.push_str(ONSETS[syllable / VOWELS.len()]);
        word.push_str(VOWELS[syllable % VOWELS.len()]);
        rest /= ONSETS.len() * VOWELS.len();
    }
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_deterministic_zipfian_and_words_are_unique() {
        let mut a = ZipfText::new(20_000, 1.0, 1);
        let mut b = ZipfText::new(20_000, 1.0, 1);
        assert_eq!(a.sentence(5, 20), b.sentence(5, 20));
        let unique: std::collections::HashSet<&String> = a.words.iter().collect();
        assert_eq!(unique.len(), a.words.len());
        let the = (0..10_000).filter(|_| a.word() == "the").count();
        // Rank 1 of 20,000 at exponent 1: 1/H(20000) ≈ 9.3 %.
        assert!((700..1200).contains(&the), "{the}");
    }
}
