//! The tokenizer of a model2vec directory: reads Hugging Face `tokenizer.json` (a
//! WordPiece model) and turns text into token ids exactly as `tokenizers` does with
//! `add_special_tokens=False`: added tokens are split out first (on the raw text, or on
//! the normalised text for `normalized: true` ones), the rest is normalised,
//! pre-tokenized into words, and each word becomes its greedy longest-match WordPiece
//! tokens (`##` continuations), or one unknown token when it cannot be covered or is
//! longer than `max_input_chars_per_word`.
//!
//! Not here: padding, truncation settings and post-processors of tokenizer.json (the
//! embedder never adds special tokens, and model2vec sets its own truncation, which the
//! caller passes as `max_tokens`); other tokenizer models (BPE, Unigram), which give
//! [`ModelError::Unsupported`].

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

use super::EmbedScratch;
use super::normalizer::{Normalizer, PreTokenizer, type_of};
use super::static_model::ModelError;

/// The WordPiece default for `continuing_subword_prefix`.
const DEFAULT_CONTINUATION_PREFIX: &str = "##";
/// The WordPiece default for `max_input_chars_per_word`: longer words become one
/// unknown token (WordPiece's greedy search is quadratic in the word's length).
const DEFAULT_MAX_INPUT_CHARS_PER_WORD: usize = 100;

pub(super) struct Tokenizer {
    normalizer: Normalizer,
    pre_tokenizer: PreTokenizer,
    wordpiece: WordPiece,
    /// Added tokens matched in the raw text (`normalized: false`, e.g. `[PAD]`).
    raw_added: Option<AddedTokens>,
    /// Added tokens matched in the normalised text (`normalized: true`).
    normalized_added: Option<AddedTokens>,
    /// Every token string with its id: the model vocabulary and the added tokens.
    n_tokens: usize,
    median_token_chars: usize,
}

struct WordPiece {
    /// Tokens that may start a word.
    vocab: HashMap<Box<str>, u32>,
    /// Tokens that continue a word, keyed without their prefix (`##ing` as `ing`).
    continuation: HashMap<Box<str>, u32>,
    unk_id: u32,
    max_input_chars_per_word: usize,
    /// No vocabulary entry is longer, so longer candidates are not looked up.
    max_token_bytes: usize,
}

struct AddedTokens {
    matcher: AhoCorasick,
    /// Indexed by the matcher's pattern id.
    tokens: Vec<AddedToken>,
}

#[derive(Debug, Clone)]
struct AddedToken {
    id: u32,
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
}

/// A piece of text between added tokens, or an added token.
enum Piece<'t> {
    Text(&'t str),
    Token(u32),
}

impl Tokenizer {
    pub(super) fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let root: Value = serde_json::from_slice(bytes).map_err(|source| ModelError::Json {
            file: "tokenizer.json",
            source,
        })?;
        let normalizer = Normalizer::from_json(root.get("normalizer").unwrap_or(&Value::Null))?;
        let pre_tokenizer = PreTokenizer::from_json(root.get("pre_tokenizer").unwrap_or(&Value::Null))?;
        let model = root.get("model").ok_or(ModelError::MissingField {
            file: "tokenizer.json",
            field: "model",
        })?;
        let (wordpiece, vocab_strings) = WordPiece::from_json(model)?;
        let added = parse_added_tokens(root.get("added_tokens"))?;
        let (n_tokens, median_token_chars) = count_tokens(vocab_strings, &added);
        let (normalized, raw): (Vec<_>, Vec<_>) = added.into_iter().partition(|t| t.normalized);
        let normalized_added = AddedTokens::build(normalized, Some(&normalizer))?;
        Ok(Self {
            raw_added: AddedTokens::build(raw, None)?,
            normalized_added,
            normalizer,
            pre_tokenizer,
            wordpiece,
            n_tokens,
            median_token_chars,
        })
    }

    /// Number of distinct tokens (what model2vec calls the vocabulary).
    pub(super) fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// The median length in characters of the vocabulary's tokens (model2vec cuts a
    /// text to `max_length` times this many characters before tokenizing it).
    pub(super) fn median_token_chars(&self) -> usize {
        self.median_token_chars
    }

    pub(super) fn unk_id(&self) -> u32 {
        self.wordpiece.unk_id
    }

    /// The largest id any token can produce.
    pub(super) fn max_id(&self) -> u32 {
        let vocab = self
            .wordpiece
            .vocab
            .values()
            .chain(self.wordpiece.continuation.values());
        let added = [&self.raw_added, &self.normalized_added]
            .into_iter()
            .flatten()
            .flat_map(|a| &a.tokens);
        vocab.copied().chain(added.map(|t| t.id)).max().unwrap_or(0)
    }

    /// Tokenizes `text` into `scratch.ids`, keeping at most `max_tokens` ids.
    pub(super) fn encode(&self, text: &str, max_tokens: usize, scratch: &mut EmbedScratch) {
        let EmbedScratch { text_a, text_b, ids } = scratch;
        ids.clear();
        if max_tokens == 0 {
            return;
        }
        for_each_piece(self.raw_added.as_ref(), text, |piece| match piece {
            Piece::Token(id) => push_id(ids, id, max_tokens),
            Piece::Text(raw) => {
                let normalized = self.normalizer.normalize(raw, text_a, text_b);
                self.encode_normalized(normalized, max_tokens, ids)
            }
        });
    }

    /// Returns `false` once `max_tokens` ids are collected.
    fn encode_normalized(&self, text: &str, max_tokens: usize, ids: &mut Vec<u32>) -> bool {
        for_each_piece(self.normalized_added.as_ref(), text, |piece| match piece {
            Piece::Token(id) => push_id(ids, id, max_tokens),
            Piece::Text(text) => self
                .pre_tokenizer
                .for_each_word(text, |word| self.wordpiece.push_word(word, ids, max_tokens)),
        })
    }
}

impl WordPiece {
    /// Returns the WordPiece model and every vocabulary string (for counting tokens).
    fn from_json(model: &Value) -> Result<(Self, Vec<&str>), ModelError> {
        let kind = type_of(model, "model")?;
        if kind != "WordPiece" {
            return Err(ModelError::Unsupported {
                component: "tokenizer model",
                kind: kind.to_owned(),
            });
        }
        let vocab_json = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or(ModelError::InvalidField {
                file: "tokenizer.json",
                field: "model.vocab",
                reason: "expected an object of token → id",
            })?;
        let prefix = optional_str(model, "continuing_subword_prefix")?.unwrap_or(DEFAULT_CONTINUATION_PREFIX);
        let unk = optional_str(model, "unk_token")?.ok_or(ModelError::MissingField {
            file: "tokenizer.json",
            field: "model.unk_token",
        })?;
        let max_input_chars_per_word = optional_usize(model, "max_input_chars_per_word")?;
        let mut wordpiece = Self {
            vocab: HashMap::with_capacity(vocab_json.len()),
            continuation: HashMap::new(),
            unk_id: 0,
            max_input_chars_per_word: max_input_chars_per_word.unwrap_or(DEFAULT_MAX_INPUT_CHARS_PER_WORD),
            max_token_bytes: 0,
        };
        for (token, id) in vocab_json {
            wordpiece.insert(token, json_id(id, "model.vocab")?, prefix);
        }
        wordpiece.unk_id = *wordpiece
            .vocab
            .get(unk)
            .ok_or_else(|| ModelError::MissingUnkToken { token: unk.to_owned() })?;
        Ok((wordpiece, vocab_json.keys().map(String::as_str).collect()))
    }

    fn insert(&mut self, token: &str, id: u32, prefix: &str) {
        self.max_token_bytes = self.max_token_bytes.max(token.len());
        if let Some(rest) = token.strip_prefix(prefix).filter(|_| !prefix.is_empty()) {
            self.continuation.insert(rest.into(), id);
        }
        self.vocab.insert(token.into(), id);
    }

    /// Appends the tokens of one word; returns `false` once `max_tokens` ids are collected.
    fn push_word(&self, word: &str, ids: &mut Vec<u32>, max_tokens: usize) -> bool {
        let mark = ids.len();
        if exceeds_chars(word, self.max_input_chars_per_word) {
            return push_id(ids, self.unk_id, max_tokens);
        }
        let mut start = 0;
        while start < word.len() {
            let Some((id, end)) = self.longest_match(word, start) else {
                ids.truncate(mark);
                return push_id(ids, self.unk_id, max_tokens);
            };
            ids.push(id);
            start = end;
        }
        if ids.len() >= max_tokens {
            ids.truncate(max_tokens);
            return false;
        }
        true
    }

    /// The longest vocabulary entry at `word[start..]`, with where it ends.
    fn longest_match(&self, word: &str, start: usize) -> Option<(u32, usize)> {
        let map = if start == 0 { &self.vocab } else { &self.continuation };
        let mut end = word.len().min(start + self.max_token_bytes);
        while !word.is_char_boundary(end) {
            end -= 1;
        }
        while end > start {
            if let Some(&id) = map.get(&word[start..end]) {
                return Some((id, end));
            }
            end = word[..end].char_indices().next_back().map_or(start, |(idx, _)| idx);
        }
        None
    }
}

impl AddedTokens {
    /// Patterns of `normalized: true` tokens are themselves normalised first, as the
    /// reference does, so they match the normalised text.
    fn build(tokens: Vec<AddedToken>, normalizer: Option<&Normalizer>) -> Result<Option<Self>, ModelError> {
        let (mut a, mut b) = (String::new(), String::new());
        let mut patterns = Vec::with_capacity(tokens.len());
        let mut kept = Vec::with_capacity(tokens.len());
        for token in tokens {
            let pattern = normalizer.map_or(token.content.as_str(), |n| n.normalize(&token.content, &mut a, &mut b));
            // An empty pattern would match between every two characters; the
            // reference's matcher rejects it, so such a token is never produced.
            if !pattern.is_empty() {
                patterns.push(pattern.to_owned());
                kept.push(token);
            }
        }
        if kept.is_empty() {
            return Ok(None);
        }
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| ModelError::AddedTokens { reason: e.to_string() })?;
        Ok(Some(Self { matcher, tokens: kept }))
    }
}

/// Calls `f` for the text pieces and added tokens of `text`, in order, until it
/// returns `false` (the reference's `find_matches`, with its strip and word rules).
fn for_each_piece(added: Option<&AddedTokens>, text: &str, mut f: impl FnMut(Piece<'_>) -> bool) -> bool {
    let Some(added) = added else {
        return f(Piece::Text(text));
    };
    let mut done = 0;
    for found in added.matcher.find_iter(text) {
        let token = &added.tokens[found.pattern().as_usize()];
        let (mut start, mut stop) = (found.start(), found.end());
        if token.single_word && !stands_alone(text, start, stop) {
            continue;
        }
        if token.lstrip {
            start = trailing_space_start(&text[..start]).max(done);
        }
        if token.rstrip {
            stop += leading_space_len(&text[stop..]);
        }
        if done < start && !f(Piece::Text(&text[done..start])) {
            return false;
        }
        if !f(Piece::Token(token.id)) {
            return false;
        }
        done = stop;
    }
    done >= text.len() || f(Piece::Text(&text[done..]))
}

/// `single_word` tokens only count when no word character touches them (the
/// reference's regex `\w`, approximated by alphanumeric, marks and `_`).
fn stands_alone(text: &str, start: usize, stop: usize) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    !text[..start].chars().next_back().is_some_and(is_word) && !text[stop..].chars().next().is_some_and(is_word)
}

fn trailing_space_start(text: &str) -> usize {
    text.trim_end_matches(char::is_whitespace).len()
}

fn leading_space_len(text: &str) -> usize {
    text.len() - text.trim_start_matches(char::is_whitespace).len()
}

/// Returns `false` once `max_tokens` ids are collected.
fn push_id(ids: &mut Vec<u32>, id: u32, max_tokens: usize) -> bool {
    if ids.len() < max_tokens {
        ids.push(id);
    }
    ids.len() < max_tokens
}

fn exceeds_chars(word: &str, max_chars: usize) -> bool {
    if word.len() <= max_chars {
        return false; // a char is at least one byte
    }
    word.chars().nth(max_chars).is_some()
}

fn parse_added_tokens(value: Option<&Value>) -> Result<Vec<AddedToken>, ModelError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let invalid = |reason| ModelError::InvalidField {
        file: "tokenizer.json",
        field: "added_tokens",
        reason,
    };
    let items = value.as_array().ok_or(invalid("expected an array"))?;
    items
        .iter()
        .map(|item| {
            let flag = |name: &str| item.get(name).and_then(Value::as_bool).unwrap_or(false);
            Ok(AddedToken {
                id: json_id(item.get("id").ok_or(invalid("a token has no id"))?, "added_tokens")?,
                content: item
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or(invalid("a token has no content"))?
                    .to_owned(),
                single_word: flag("single_word"),
                lstrip: flag("lstrip"),
                rstrip: flag("rstrip"),
                normalized: flag("normalized"),
            })
        })
        .collect()
}

/// Distinct token strings, and the median of their lengths in characters (numpy's
/// median, truncated to an integer, as model2vec computes it).
fn count_tokens(vocab: Vec<&str>, added: &[AddedToken]) -> (usize, usize) {
    let mut seen: std::collections::HashSet<&str> = vocab.into_iter().collect();
    seen.extend(added.iter().map(|t| t.content.as_str()));
    let mut lengths: Vec<usize> = seen.iter().map(|t| t.chars().count()).collect();
    lengths.sort_unstable();
    let n = lengths.len();
    let median = match n {
        0 => 0,
        _ if n % 2 == 1 => lengths[n / 2],
        _ => (lengths[n / 2 - 1] + lengths[n / 2]) / 2,
    };
    (n, median)
}

fn json_id(value: &Value, field: &'static str) -> Result<u32, ModelError> {
    value
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or(ModelError::InvalidField {
            file: "tokenizer.json",
            field,
            reason: "token ids must be integers below 2^32",
        })
}

fn optional_str<'v>(value: &'v Value, field: &'static str) -> Result<Option<&'v str>, ModelError> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ModelError::InvalidField {
            file: "tokenizer.json",
            field,
            reason: "expected a string",
        }),
    }
}

fn optional_usize(value: &Value, field: &'static str) -> Result<Option<usize>, ModelError> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or(ModelError::InvalidField {
                file: "tokenizer.json",
                field,
                reason: "expected a non-negative integer",
            }),
    }
}
