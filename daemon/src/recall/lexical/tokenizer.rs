//! The lexical tokenizer: Unicode words (UAX #29), lowercased, English
//! possessives stripped, optional stop-word removal, and terms interned to
//! dense u32 ids, with optional Snowball (English) stemming.
//!
//! The same word boundaries serve the entity extractor and the chunker
//! ([`word_spans`]), so "a token" means one thing across the daemon.
//!
//! Allocation: normalising a word writes into a caller's scratch `String`;
//! looking a term up goes through the dictionary's map of surface forms
//! (`&str` keys, no allocation). Only a surface form never seen by the index,
//! with stemming on, is stemmed at query time, and the stemmer may allocate
//! for it (rust-stemmers returns a `Cow`): a word the index has never seen
//! is rare in a query and usually absent from every document anyway.
//!
//! Not here: scoring (`index.rs`), entities (`entities.rs`).

use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};
use unicode_segmentation::UnicodeSegmentation;

/// Lucene's `EnglishAnalyzer` default stop set: the 33 function words whose
/// postings are longest and whose weight is near zero. Sorted.
pub const LUCENE_STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with",
];

/// The Snowball project's English stop list (snowballstem.org,
/// `english/stop.txt`), made for its English stemmer: pronouns, auxiliaries,
/// contractions, question words. Its `'s` contractions ("it's", "what's")
/// are left out: [`normalize_word`] strips `'s`, leaving words already here.
/// Sorted.
pub const SNOWBALL_STOP_WORDS: [&str; 161] = [
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can't",
    "cannot",
    "could",
    "couldn't",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "hadn't",
    "has",
    "hasn't",
    "have",
    "haven't",
    "having",
    "he",
    "he'd",
    "he'll",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "its",
    "itself",
    "me",
    "more",
    "most",
    "mustn't",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "ought",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "shan't",
    "she",
    "she'd",
    "she'll",
    "should",
    "shouldn't",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "they'd",
    "they'll",
    "they're",
    "they've",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "wasn't",
    "we",
    "we'd",
    "we'll",
    "we're",
    "we've",
    "were",
    "weren't",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "with",
    "won't",
    "would",
    "wouldn't",
    "you",
    "you'd",
    "you'll",
    "you're",
    "you've",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Which words are not indexed or searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWords {
    /// Every word is a term.
    None,
    /// [`LUCENE_STOP_WORDS`].
    Lucene,
    /// [`SNOWBALL_STOP_WORDS`].
    Snowball,
}

impl StopWords {
    /// Whether a normalised word is a stop word of this list.
    pub fn contains(self, term: &str) -> bool {
        match self {
            Self::None => false,
            Self::Lucene => LUCENE_STOP_WORDS.binary_search(&term).is_ok(),
            Self::Snowball => SNOWBALL_STOP_WORDS.binary_search(&term).is_ok(),
        }
    }
}

/// Longest term kept, in bytes: longer "words" (base64 blobs, hashes pasted
/// into a memory) would bloat the dictionary and never match a query.
pub const MAX_TERM_BYTES: usize = 64;

/// The word tokens of `text`: UAX #29 words holding at least one letter or
/// digit, with their byte offsets. Punctuation and spaces are not tokens.
/// Apostrophes inside a word (`don't`, `Caroline's`) and decimal points in a
/// number (`3.5`) stay inside it, as UAX #29 says.
pub fn word_spans(text: &str) -> impl Iterator<Item = (usize, &str)> + '_ {
    text.split_word_bound_indices()
        .filter(|(_, word)| word.chars().any(char::is_alphanumeric))
}

/// How words become terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenizerConfig {
    /// Reduce words to their Snowball English stem ("painting" → "paint").
    pub stemming: bool,
    /// Words left out.
    pub stop_words: StopWords,
}

impl Default for TokenizerConfig {
    /// Stemming and stop-word removal on: measured on the developers' LoCoMo
    /// conversations (`locomo_eval.rs`), the standard English analyzer chain.
    fn default() -> Self {
        Self {
            stemming: true,
            stop_words: StopWords::Snowball,
        }
    }
}

/// Lowercases `word` into `out` (cleared first), folds the typographic
/// apostrophe to `'` and strips an English possessive (`'s`, or a trailing
/// `'`). Returns false if nothing is left or the term is too long.
pub fn normalize_word(word: &str, out: &mut String) -> bool {
    out.clear();
    if word.is_ascii() {
        out.push_str(word);
        out.make_ascii_lowercase();
    } else {
        push_lowercase(word, out);
    }
    if out.ends_with("'s") {
        out.truncate(out.len() - 2);
    }
    while out.ends_with('\'') {
        out.pop();
    }
    !out.is_empty() && out.len() <= MAX_TERM_BYTES
}

/// `word` lowercased onto `out`, typographic apostrophes folded to `'`.
fn push_lowercase(word: &str, out: &mut String) {
    for c in word.chars() {
        match c {
            '\u{2019}' | '\u{2018}' => out.push('\''),
            c if c.is_ascii() => out.push(c.to_ascii_lowercase()),
            c => out.extend(c.to_lowercase()),
        }
    }
}

/// Terms to dense u32 ids. With stemming, many surface forms share one term
/// (its stem); every surface form seen while indexing is remembered, so a
/// query word the index has seen is found without stemming or allocating.
pub struct TermDict {
    stemmer: Option<Stemmer>,
    /// Lowercased surface form → term id.
    surfaces: HashMap<Box<str>, u32>,
    /// Stem → term id (only with stemming: without it a term is its surface).
    stems: HashMap<Box<str>, u32>,
    /// Term id → the term (the stem, or the surface form).
    terms: Vec<Box<str>>,
}

impl std::fmt::Debug for TermDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TermDict")
            .field("stemming", &self.stemmer.is_some())
            .field("terms", &self.terms.len())
            .field("surfaces", &self.surfaces.len())
            .finish()
    }
}

impl TermDict {
    /// An empty dictionary.
    pub fn new(stemming: bool) -> Self {
        Self {
            stemmer: stemming.then(|| Stemmer::create(Algorithm::English)),
            surfaces: HashMap::new(),
            stems: HashMap::new(),
            terms: Vec::new(),
        }
    }

    /// Whether terms are stems.
    pub fn stemming(&self) -> bool {
        self.stemmer.is_some()
    }

    /// Distinct terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether no term was added.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The term with id `id`.
    pub fn term(&self, id: u32) -> Option<&str> {
        self.terms.get(id as usize).map(|t| &**t)
    }

    /// The id of a normalised surface form, adding it (and its stem) if new.
    pub fn intern(&mut self, surface: &str) -> u32 {
        if let Some(&id) = self.surfaces.get(surface) {
            return id;
        }
        let id = match &self.stemmer {
            None => self.push_term(surface),
            Some(stemmer) => {
                let stem = stemmer.stem(surface);
                match self.stems.get(&*stem) {
                    Some(&id) => id,
                    None => {
                        let id = self.push_term(&stem);
                        self.stems.insert(stem.into(), id);
                        id
                    }
                }
            }
        };
        self.surfaces.insert(surface.into(), id);
        id
    }

    /// The id of a normalised surface form, if the index knows its term.
    pub fn lookup(&self, surface: &str) -> Option<u32> {
        if let Some(&id) = self.surfaces.get(surface) {
            return Some(id);
        }
        let stemmer = self.stemmer.as_ref()?;
        self.stems.get(&*stemmer.stem(surface)).copied()
    }

    fn push_term(&mut self, term: &str) -> u32 {
        let id = u32::try_from(self.terms.len()).expect("fewer than 2^32 distinct terms");
        self.terms.push(term.into());
        id
    }

    /// Every (surface form, term id), for persistence.
    pub(crate) fn surfaces(&self) -> impl Iterator<Item = (&str, u32)> {
        self.surfaces.iter().map(|(s, &id)| (&**s, id))
    }

    /// Every term in id order, for persistence.
    pub(crate) fn terms(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| &**t)
    }

    /// A dictionary from its persisted parts; None if a surface names a
    /// term id out of range.
    pub(crate) fn from_parts<'a>(
        stemming: bool,
        terms: impl Iterator<Item = &'a str>,
        surfaces: impl Iterator<Item = (&'a str, u32)>,
    ) -> Option<Self> {
        let mut dict = Self::new(stemming);
        dict.terms = terms.map(Box::from).collect();
        if stemming {
            dict.stems = dict.terms.iter().zip(0u32..).map(|(t, id)| (t.clone(), id)).collect();
        }
        for (surface, id) in surfaces {
            if id as usize >= dict.terms.len() {
                return None;
            }
            dict.surfaces.insert(surface.into(), id);
        }
        Some(dict)
    }
}

/// Turns text into term ids with one reusable buffer.
#[derive(Debug, Default)]
pub struct TokenScratch {
    word: String,
}

impl TokenScratch {
    /// An empty scratch.
    pub fn new() -> Self {
        Self::default()
    }

    /// `word` normalised ([`normalize_word`]) into the buffer, if anything
    /// is left of it.
    pub fn normalize(&mut self, word: &str) -> Option<&str> {
        normalize_word(word, &mut self.word).then_some(self.word.as_str())
    }
}

/// Calls `each` with every term id of `text` (in order, repeats included),
/// adding new terms to `dict`: the indexing side.
pub fn intern_terms(
    config: TokenizerConfig,
    dict: &mut TermDict,
    text: &str,
    scratch: &mut TokenScratch,
    mut each: impl FnMut(u32),
) {
    for (_, word) in word_spans(text) {
        if normalize_word(word, &mut scratch.word) && !config.stop_words.contains(&scratch.word) {
            each(dict.intern(&scratch.word));
        }
    }
}

/// Calls `each` with every token of `text` that survives normalisation and
/// stop-word removal, as its term id if the index knows it: the query side.
/// Returns the number of such tokens.
pub fn lookup_terms(
    config: TokenizerConfig,
    dict: &TermDict,
    text: &str,
    scratch: &mut TokenScratch,
    mut each: impl FnMut(Option<u32>),
) -> usize {
    let mut tokens = 0;
    for (_, word) in word_spans(text) {
        if normalize_word(word, &mut scratch.word) && !config.stop_words.contains(&scratch.word) {
            tokens += 1;
            each(dict.lookup(&scratch.word));
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut out = String::new();
        let mut words = Vec::new();
        for (_, word) in word_spans(text) {
            if normalize_word(word, &mut out) {
                words.push(out.clone());
            }
        }
        words
    }

    #[test]
    fn stop_words_are_sorted() {
        assert!(LUCENE_STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(SNOWBALL_STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn punctuation_is_not_a_token_and_case_folds() {
        assert_eq!(
            words("Hey Mel!  Good to see you -- really?"),
            ["hey", "mel", "good", "to", "see", "you", "really"]
        );
    }

    #[test]
    fn apostrophes_keep_contractions_and_strip_possessives() {
        assert_eq!(
            words("Caroline's dog doesn't bark; James' cat I’m sure"),
            ["caroline", "dog", "doesn't", "bark", "james", "cat", "i'm", "sure"]
        );
    }

    #[test]
    fn numbers_stay_whole() {
        assert_eq!(
            words("3.5 km, 1,000 people on 2023-05-08 at 1:56 pm"),
            [
                "3.5", "km", "1,000", "people", "on", "2023", "05", "08", "at", "1", "56", "pm"
            ]
        );
    }

    #[test]
    fn unicode_words_lowercase_and_split() {
        assert_eq!(
            words("Ça va? ÉCOLE Straße, Ἀθῆναι; 東京タワー"),
            ["ça", "va", "école", "straße", "ἀθῆναι", "東", "京", "タワー"]
        );
    }

    #[test]
    fn stemming_merges_surface_forms_and_lookup_needs_no_new_entry() {
        let mut dict = TermDict::new(true);
        let paint = dict.intern("painting");
        assert_eq!(dict.intern("paints"), paint);
        assert_eq!(dict.term(paint), Some("paint"));
        // "painted" was never indexed: found through its stem.
        assert_eq!(dict.lookup("painted"), Some(paint));
        assert_eq!(dict.lookup("sculpture"), None);
        let mut plain = TermDict::new(false);
        assert_ne!(plain.intern("painting"), plain.intern("paints"));
    }

    #[test]
    fn stop_words_are_dropped_only_when_asked() {
        let mut dict = TermDict::new(false);
        let mut scratch = TokenScratch::new();
        let mut count = |config| {
            let mut n = 0;
            intern_terms(config, &mut dict, "The cat is on the mat", &mut scratch, |_| n += 1);
            n
        };
        assert_eq!(
            count(TokenizerConfig {
                stemming: false,
                stop_words: StopWords::Lucene
            }),
            2
        );
        assert_eq!(
            count(TokenizerConfig {
                stemming: false,
                stop_words: StopWords::None
            }),
            6
        );
    }
}
