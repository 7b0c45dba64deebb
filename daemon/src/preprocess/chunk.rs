//! Chunking of long texts into overlapping pieces of about
//! [`DEFAULT_MAX_TOKENS`] tokens, each a byte range of the original, so the
//! pieces can be embedded and indexed as memories of their own and a recall
//! can put the original back together ([`reassemble`]).
//!
//! A token is a word of the lexical tokenizer ([`word_spans`]). A chunk ends
//! just before a word, preferably after a paragraph break, else after a
//! sentence end, else anywhere, searching back from its token limit over at
//! most [`ChunkConfig::boundary_window_tokens`] words. The next chunk starts
//! [`ChunkConfig::overlap_tokens`] words before that end, so a sentence cut
//! at a boundary is whole in one of the two. The first chunk starts at byte
//! 0 and the last ends at the text's end, so nothing is lost between them.
//!
//! Not here: storing chunks as linked memories (the store, on Remember).

use crate::recall::lexical::word_spans;

/// Tokens per chunk at most: about a paragraph or two, long enough to hold
/// an answer with its context, short enough that one chunk's embedding is
/// about one topic (DESIGN.md §5: ≈ 400).
pub const DEFAULT_MAX_TOKENS: usize = 400;

/// Tokens shared by consecutive chunks (DESIGN.md §5: 20), so a sentence
/// cut at a boundary is whole in one of them.
pub const DEFAULT_OVERLAP_TOKENS: usize = 20;

/// How far back from its limit a chunk's end looks for a sentence or
/// paragraph end: a tenth of a chunk; past that, a chunk would shrink more
/// than a clean boundary is worth.
pub const DEFAULT_BOUNDARY_WINDOW_TOKENS: usize = 40;

/// Chunking settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// See [`DEFAULT_MAX_TOKENS`]; a text of at most this many tokens is one chunk.
    pub max_tokens: usize,
    /// See [`DEFAULT_OVERLAP_TOKENS`]; less than `max_tokens - boundary_window_tokens`.
    pub overlap_tokens: usize,
    /// See [`DEFAULT_BOUNDARY_WINDOW_TOKENS`].
    pub boundary_window_tokens: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            max_tokens: DEFAULT_MAX_TOKENS,
            overlap_tokens: DEFAULT_OVERLAP_TOKENS,
            boundary_window_tokens: DEFAULT_BOUNDARY_WINDOW_TOKENS,
        }
    }
}

impl ChunkConfig {
    /// Checks that every chunk makes progress past its predecessor.
    pub fn validate(&self) -> Result<(), super::PreprocessConfigError> {
        if self.max_tokens == 0 || self.overlap_tokens + self.boundary_window_tokens >= self.max_tokens {
            return Err(super::PreprocessConfigError::ChunkWithoutProgress {
                overlap_tokens: self.overlap_tokens,
                boundary_window_tokens: self.boundary_window_tokens,
                max_tokens: self.max_tokens,
            });
        }
        Ok(())
    }
}

/// One piece of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Position among the text's chunks, from 0.
    pub index: u32,
    /// First byte in the original text.
    pub start: usize,
    /// One past the last byte in the original text.
    pub end: usize,
    /// Tokens in the chunk.
    pub tokens: u32,
}

/// Reusable word offsets of one chunking.
#[derive(Debug, Default)]
pub struct ChunkScratch {
    words: Vec<(usize, usize)>,
}

impl ChunkScratch {
    /// An empty scratch.
    pub fn new() -> Self {
        Self::default()
    }
}

/// What kind of boundary the gap between two words is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    Word,
    Sentence,
    Paragraph,
}

/// The chunks of `text` into `out` (cleared first). A text of at most
/// `max_tokens` tokens (or none) is one chunk covering all of it. `config`
/// must be valid ([`ChunkConfig::validate`]).
pub fn chunk(text: &str, config: &ChunkConfig, scratch: &mut ChunkScratch, out: &mut Vec<Chunk>) {
    debug_assert!(config.validate().is_ok(), "{config:?}");
    out.clear();
    let words = &mut scratch.words;
    words.clear();
    words.extend(word_spans(text).map(|(start, word)| (start, start + word.len())));
    let mut first = 0;
    loop {
        let remaining = words.len() - first;
        let start = if first == 0 { 0 } else { words[first].0 };
        if remaining <= config.max_tokens {
            push(out, start, text.len(), remaining);
            return;
        }
        let end_word = best_end(text, words, first, config);
        push(out, start, words[end_word].0, end_word - first);
        first = end_word - config.overlap_tokens;
    }
}

fn push(out: &mut Vec<Chunk>, start: usize, end: usize, tokens: usize) {
    out.push(Chunk {
        index: u32::try_from(out.len()).expect("fewer than 2^32 chunks"),
        start,
        end,
        tokens: u32::try_from(tokens).expect("chunks are short"),
    });
}

/// The word before which the chunk starting at word `first` ends: the
/// strongest boundary in the window below the token limit, the latest
/// among equals.
fn best_end(text: &str, words: &[(usize, usize)], first: usize, config: &ChunkConfig) -> usize {
    let limit = first + config.max_tokens;
    let lowest = limit - config.boundary_window_tokens;
    (lowest..=limit)
        .rev()
        .max_by_key(|&end| (boundary_before(text, words, end), end))
        .expect("the window is not empty")
}

/// The boundary in the gap between word `end - 1` and word `end`.
fn boundary_before(text: &str, words: &[(usize, usize)], end: usize) -> Boundary {
    let gap = &text[words[end - 1].1..words[end].0];
    if gap.contains("\n\n") || gap.contains("\r\n\r\n") {
        Boundary::Paragraph
    } else if gap.contains(['.', '!', '?', '\n', '\u{3002}']) {
        Boundary::Sentence
    } else {
        Boundary::Word
    }
}

/// The original text from its chunks' texts (in index order): the first
/// chunk whole, then each next chunk from where the previous one ended.
/// None if the chunks do not tile a text (a gap, or out of order).
pub fn reassemble<'a>(chunks: impl IntoIterator<Item = (&'a Chunk, &'a str)>) -> Option<String> {
    let mut text = String::new();
    let mut covered = 0;
    for (chunk, chunk_text) in chunks {
        if chunk.start > covered || chunk.end < covered || chunk_text.len() != chunk.end - chunk.start {
            return None;
        }
        text.push_str(chunk_text.get(covered - chunk.start..)?);
        covered = chunk.end;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(text: &str, config: &ChunkConfig) -> Vec<Chunk> {
        let mut out = Vec::new();
        chunk(text, config, &mut ChunkScratch::new(), &mut out);
        out
    }

    fn small() -> ChunkConfig {
        ChunkConfig {
            max_tokens: 10,
            overlap_tokens: 2,
            boundary_window_tokens: 3,
        }
    }

    #[track_caller]
    fn assert_reassembles(text: &str, chunks: &[Chunk]) {
        let pieces: Vec<(&Chunk, &str)> = chunks.iter().map(|c| (c, &text[c.start..c.end])).collect();
        assert_eq!(reassemble(pieces).as_deref(), Some(text));
    }

    #[test]
    fn a_short_text_is_one_chunk() {
        assert_eq!(
            chunks("Hello there, world.", &ChunkConfig::default()),
            [Chunk {
                index: 0,
                start: 0,
                end: 19,
                tokens: 3
            }]
        );
        assert_eq!(chunks("", &ChunkConfig::default()).len(), 1);
    }

    #[test]
    fn chunks_overlap_and_reassemble_exactly() {
        let text: String = (0..1000).map(|i| format!("w{i} ")).collect();
        let text = format!("  {text}  ");
        let found = chunks(&text, &ChunkConfig::default());
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|c| c.tokens as usize <= DEFAULT_MAX_TOKENS));
        assert_eq!((found[0].start, found.last().unwrap().end), (0, text.len()));
        for pair in found.windows(2) {
            // The overlap: the next chunk starts 20 words before this one ends.
            let shared = &text[pair[1].start..pair[0].end];
            assert_eq!(word_spans(shared).count(), DEFAULT_OVERLAP_TOKENS, "{shared:?}");
        }
        assert_reassembles(&text, &found);
    }

    #[test]
    fn chunks_end_at_sentence_and_paragraph_ends() {
        let text = "One two three four five six seven. Eight nine ten eleven twelve thirteen fourteen";
        let found = chunks(text, &small());
        assert!(text[..found[0].end].ends_with("seven. "), "{:?}", &text[..found[0].end]);
        assert_reassembles(text, &found);
        let text = "a b c d e f g. h\n\ni j k l m n o p q r s t";
        let found = chunks(text, &small());
        assert!(text[..found[0].end].ends_with("h\n\n"), "{:?}", &text[..found[0].end]);
        assert_reassembles(text, &found);
        // No boundary in the window: cut at the token limit, on whitespace.
        let text = "a b c d e f g h i j k l m n o";
        let found = chunks(text, &small());
        assert_eq!(&text[found[0].start..found[0].end], "a b c d e f g h i j ");
        assert_reassembles(text, &found);
    }

    #[test]
    fn unicode_text_reassembles_on_char_boundaries() {
        let text: String = (0..300).map(|i| format!("Ça {i}. 東京タワー 😀 ")).collect();
        let found = chunks(&text, &ChunkConfig::default());
        assert!(found.len() > 1);
        assert_reassembles(&text, &found);
    }

    #[test]
    fn reassembly_refuses_a_gap() {
        let text = "a b c d e f g h i j k l m n o";
        let found = chunks(text, &small());
        let pieces = [(&found[0], &text[found[0].start..found[0].end])];
        assert!(reassemble(pieces).is_some());
        let wrong_length = [(&found[0], "a")];
        assert_eq!(reassemble(wrong_length), None);
        let after_gap = Chunk {
            index: 1,
            start: found[0].end + 1,
            end: text.len(),
            tokens: 0,
        };
        let gap = [
            (&found[0], &text[..found[0].end]),
            (&after_gap, &text[after_gap.start..]),
        ];
        assert_eq!(reassemble(gap), None);
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(ChunkConfig::default().validate().is_ok());
        let no_progress = ChunkConfig {
            max_tokens: 10,
            overlap_tokens: 8,
            boundary_window_tokens: 2,
        };
        assert!(no_progress.validate().is_err());
    }
}
