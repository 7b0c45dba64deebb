//! Entity extraction: the names, numbers, dates, e-mail addresses, URLs and
//! configured keywords of a text, as byte spans into it.
//!
//! Rules, in the order they claim text:
//! 1. whitespace-separated chunks: URLs (`http://`, `https://`, `www.`),
//!    e-mail addresses, ISO dates (`2023-05-08`, with an optional time);
//! 2. UAX #29 words (the tokenizer's, [`word_spans`]) outside those spans:
//!    - dates: `8 May, 2023`, `8th May 2023`, `May 8`, `May 8, 2023`,
//!      `May 2023`, a full month name alone (not "May", a verb as often),
//!      weekday names; month and weekday names must be capitalised;
//!    - numbers: a word starting with a digit (`2023`, `3.5`, `1,000`, `8th`);
//!    - names: runs of capitalised words joined by single spaces
//!      ("Caroline Smith"), trimmed of a possessive `'s`; a capitalised
//!      function word or common sentence opener ("The", "Hey", "I'm") never
//!      starts or joins a name, which is what keeps sentence-initial words out;
//! 3. configured keyword lists (case-insensitive literal matches on word
//!    boundaries, labelled): literal lists cover what deployments asked for
//!    (product names, ticket prefixes) without a regex dependency; a pattern
//!    language can come later if someone needs one.
//!
//! Extraction allocates nothing per token: spans go into the caller's vector
//! and the word offsets into a reusable scratch. Keys ([`EntityExtractor::key`])
//! normalise a span for the entity index (lowercase names, ISO dates).
//!
//! Not here: which memories share an entity (`entity_index.rs`).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::recall::lexical::error::LexicalError;
use crate::recall::lexical::tokenizer::{SNOWBALL_STOP_WORDS, word_spans};

/// What an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// A run of capitalised words.
    Name,
    /// A number.
    Number,
    /// A date, a month or a weekday.
    Date,
    /// An e-mail address.
    Email,
    /// A URL.
    Url,
    /// A match of the configured keyword list with this index.
    Keyword(u16),
}

/// One entity: its kind and byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntitySpan {
    /// What it is.
    pub kind: EntityKind,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl EntitySpan {
    /// The entity's text.
    pub fn text<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.end]
    }
}

/// A labelled list of keywords to find as entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeywordList {
    /// What the keywords are ("product", "project").
    pub label: String,
    /// The keywords, matched case-insensitively on word boundaries.
    pub keywords: Vec<String>,
}

/// Keyword lists a configuration may hold at most (labels are u16 and each
/// list is one more automaton pattern set to scan every text with).
pub const MAX_KEYWORD_LISTS: usize = 256;

/// Keywords in all lists at most: the automaton's size, built once.
pub const MAX_KEYWORDS: usize = 100_000;

/// Capitalised words that are not names when they open one: common sentence
/// openers and interjections of conversational text, beside the Snowball
/// stop list. Sorted.
const NON_NAME_OPENERS: [&str; 64] = [
    "absolutely",
    "actually",
    "also",
    "anyway",
    "awesome",
    "bye",
    "can",
    "cheers",
    "congrats",
    "congratulations",
    "cool",
    "dear",
    "definitely",
    "great",
    "haha",
    "hello",
    "hey",
    "hi",
    "hmm",
    "honestly",
    "hope",
    "just",
    "last",
    "let",
    "lol",
    "love",
    "may",
    "maybe",
    "might",
    "must",
    "next",
    "nice",
    "oh",
    "ok",
    "okay",
    "perfect",
    "please",
    "plus",
    "right",
    "so",
    "sorry",
    "sounds",
    "still",
    "sure",
    "thank",
    "thanks",
    "that",
    "though",
    "today",
    "tomorrow",
    "tonight",
    "totally",
    "true",
    "well",
    "what",
    "wow",
    "yay",
    "yeah",
    "yep",
    "yes",
    "yesterday",
    "yet",
    "you",
    "yup",
];

/// The months' English names, January first (entity keys and the LoCoMo
/// evaluation's session dates both read them).
pub const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Reusable word offsets of one extraction.
#[derive(Debug, Default)]
pub struct ExtractScratch {
    words: Vec<(usize, usize)>,
}

impl ExtractScratch {
    /// An empty scratch.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Finds entities; built once from the configured keyword lists.
#[derive(Debug, Clone, Default)]
pub struct EntityExtractor {
    keywords: Option<AhoCorasick>,
    /// Pattern index → its list's index.
    keyword_list: Vec<u16>,
    labels: Vec<String>,
}

impl EntityExtractor {
    /// An extractor with the built-in rules and `lists` of keywords.
    pub fn new(lists: &[KeywordList]) -> Result<Self, LexicalError> {
        let total: usize = lists.iter().map(|l| l.keywords.len()).sum();
        if lists.len() > MAX_KEYWORD_LISTS || total > MAX_KEYWORDS {
            return Err(LexicalError::InvalidConfig(format!(
                "{} keyword lists with {total} keywords (at most {MAX_KEYWORD_LISTS} lists, {MAX_KEYWORDS} keywords)",
                lists.len()
            )));
        }
        let mut extractor = Self {
            labels: lists.iter().map(|l| l.label.clone()).collect(),
            ..Self::default()
        };
        let mut patterns = Vec::with_capacity(total);
        for (list, keywords) in lists.iter().enumerate() {
            for keyword in keywords.keywords.iter().filter(|k| !k.trim().is_empty()) {
                patterns.push(keyword.trim());
                extractor.keyword_list.push(list as u16);
            }
        }
        if !patterns.is_empty() {
            let automaton = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .map_err(|e| LexicalError::InvalidConfig(format!("keyword lists: {e}")))?;
            extractor.keywords = Some(automaton);
        }
        Ok(extractor)
    }

    /// The label of keyword list `list`.
    pub fn label(&self, list: u16) -> Option<&str> {
        self.labels.get(list as usize).map(String::as_str)
    }

    /// The entities of `text` into `out` (cleared first), ordered by start.
    pub fn extract(&self, text: &str, scratch: &mut ExtractScratch, out: &mut Vec<EntitySpan>) {
        out.clear();
        chunk_entities(text, out);
        let claimed = out.len();
        collect_words(text, &out[..claimed], &mut scratch.words);
        word_entities(text, &scratch.words, out);
        self.keyword_entities(text, out);
        out.sort_by_key(|s| (s.start, s.end));
    }

    /// Writes the entity index's key of `span` into `out` (cleared first):
    /// a kind prefix and a normalised form, so "Caroline" and "CAROLINE",
    /// or "8 May, 2023" and "2023-05-08", are one entity.
    pub fn key(&self, text: &str, span: &EntitySpan, out: &mut String) {
        out.clear();
        let raw = span.text(text);
        match span.kind {
            EntityKind::Name => {
                out.push_str("n:");
                push_lower_words(raw, out);
            }
            EntityKind::Number => {
                out.push_str("#:");
                out.extend(raw.chars().filter(|&c| c != ',').flat_map(char::to_lowercase));
            }
            EntityKind::Date => {
                out.push_str("d:");
                push_date_key(raw, out);
            }
            EntityKind::Email => {
                out.push_str("e:");
                out.extend(raw.chars().flat_map(char::to_lowercase));
            }
            EntityKind::Url => {
                out.push_str("u:");
                out.extend(raw.trim_end_matches('/').chars().flat_map(char::to_lowercase));
            }
            EntityKind::Keyword(list) => {
                out.push_str("k:");
                out.push_str(self.label(list).unwrap_or(""));
                out.push(':');
                push_lower_words(raw, out);
            }
        }
    }

    fn keyword_entities(&self, text: &str, out: &mut Vec<EntitySpan>) {
        let Some(automaton) = &self.keywords else { return };
        for found in automaton.find_iter(text) {
            let before = text[..found.start()].chars().next_back();
            let after = text[found.end()..].chars().next();
            if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric) {
                continue;
            }
            out.push(EntitySpan {
                kind: EntityKind::Keyword(self.keyword_list[found.pattern().as_usize()]),
                start: found.start(),
                end: found.end(),
            });
        }
    }
}

/// URLs, e-mail addresses and ISO dates, found per whitespace-separated chunk.
fn chunk_entities(text: &str, out: &mut Vec<EntitySpan>) {
    for chunk in text.split(char::is_whitespace).filter(|c| !c.is_empty()) {
        let offset = chunk.as_ptr() as usize - text.as_ptr() as usize;
        let trimmed = chunk
            .trim_start_matches(['(', '[', '{', '<', '"', '\'', '\u{201c}', '\u{2018}'])
            .trim_end_matches([
                '.', ',', ';', ':', '!', '?', ')', ']', '}', '>', '"', '\'', '\u{201d}', '\u{2019}',
            ]);
        let start = offset + (trimmed.as_ptr() as usize - chunk.as_ptr() as usize);
        let found = if is_url(trimmed) {
            Some((EntityKind::Url, trimmed.len()))
        } else if is_email(trimmed) {
            Some((EntityKind::Email, trimmed.len()))
        } else {
            iso_date_len(trimmed).map(|len| (EntityKind::Date, len))
        };
        if let Some((kind, len)) = found {
            out.push(EntitySpan {
                kind,
                start,
                end: start + len,
            });
        }
    }
}

fn is_url(chunk: &str) -> bool {
    let starts = |prefix: &str| {
        chunk.len() > prefix.len()
            && chunk
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    starts("http://") || starts("https://") || starts("www.")
}

fn is_email(chunk: &str) -> bool {
    let Some((local, domain)) = chunk.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty() && local.chars().all(|c| c.is_alphanumeric() || "._%+-".contains(c));
    let labels_ok = domain
        .split('.')
        .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'));
    let tld_ok = domain
        .rsplit_once('.')
        .is_some_and(|(_, tld)| tld.len() >= 2 && tld.chars().all(char::is_alphabetic));
    local_ok && labels_ok && tld_ok
}

/// Length of an ISO date (`YYYY-MM-DD`, then an optional `T` or space-less
/// time) at the start of `chunk`, if it is one.
fn iso_date_len(chunk: &str) -> Option<usize> {
    let b = chunk.as_bytes();
    let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = digits(0..4) && b.get(4) == Some(&b'-') && digits(5..7) && b.get(7) == Some(&b'-') && digits(8..10);
    if !shape || b.get(10).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    let day = (b[8] - b'0') * 10 + (b[9] - b'0');
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let time = b.get(10) == Some(&b'T') && digits(11..13) && b.get(13) == Some(&b':') && digits(14..16);
    Some(if time { chunk.len() } else { 10 })
}

/// The word offsets of `text` outside the `claimed` spans (sorted).
fn collect_words(text: &str, claimed: &[EntitySpan], words: &mut Vec<(usize, usize)>) {
    words.clear();
    let mut next_claim = 0;
    for (start, word) in word_spans(text) {
        let end = start + word.len();
        while claimed.get(next_claim).is_some_and(|c| c.end <= start) {
            next_claim += 1;
        }
        if claimed.get(next_claim).is_some_and(|c| c.start < end) {
            continue;
        }
        words.push((start, end));
    }
}

/// Dates, numbers and names among `words`.
fn word_entities(text: &str, words: &[(usize, usize)], out: &mut Vec<EntitySpan>) {
    let words = Words { text, words };
    let mut i = 0;
    while i < words.len() {
        let (kind, last) = if let Some(last) = words.date_at(i) {
            (Some(EntityKind::Date), last)
        } else if words.word(i).starts_with(|c: char| c.is_ascii_digit()) {
            (Some(EntityKind::Number), i)
        } else if words.opens_name(i) {
            (Some(EntityKind::Name), words.name_end(i))
        } else {
            (None, i)
        };
        if let Some(kind) = kind {
            let end = words.words[last].1;
            let end = if kind == EntityKind::Name {
                trim_possessive(text, end)
            } else {
                end
            };
            out.push(EntitySpan {
                kind,
                start: words.words[i].0,
                end,
            });
        }
        i = last + 1;
    }
}

/// The words of a text with the helpers the date and name rules need.
struct Words<'a> {
    text: &'a str,
    words: &'a [(usize, usize)],
}

impl Words<'_> {
    fn len(&self) -> usize {
        self.words.len()
    }

    fn word(&self, i: usize) -> &str {
        &self.text[self.words[i].0..self.words[i].1]
    }

    /// Whether word `i` and the next are separated by spaces and at most a
    /// comma, on one line (so they may form one date).
    fn joined(&self, i: usize) -> bool {
        let Some(next) = self.words.get(i + 1) else {
            return false;
        };
        let gap = &self.text[self.words[i].1..next.0];
        gap.len() <= 3 && !gap.contains('\n') && matches!(gap.trim(), "" | ",")
    }

    /// Whether word `i` and the next are separated by exactly one space.
    fn spaced(&self, i: usize) -> bool {
        self.words
            .get(i + 1)
            .is_some_and(|next| &self.text[self.words[i].1..next.0] == " ")
    }

    /// The last word of a date starting at word `i`, if one does.
    fn date_at(&self, i: usize) -> Option<usize> {
        let word = self.word(i);
        let next_is = |test: fn(&str) -> bool| self.joined(i) && test(self.word(i + 1));
        let with_year = |last: usize| {
            if self.joined(last) && is_year(self.word(last + 1)) {
                last + 1
            } else {
                last
            }
        };
        if is_day(word) && next_is(|w| month_of(w).is_some()) {
            return Some(with_year(i + 1));
        }
        if let Some(month) = month_of(word) {
            if next_is(is_day) {
                return Some(with_year(i + 1));
            }
            if next_is(is_year) {
                return Some(i + 1);
            }
            let full_name = word.len() == MONTHS[month as usize - 1].len();
            return (full_name && month != 5).then_some(i);
        }
        is_weekday(word).then_some(i)
    }

    /// Whether word `i` can open a name.
    fn opens_name(&self, i: usize) -> bool {
        let word = self.word(i);
        word.starts_with(char::is_uppercase) && !is_non_name(word)
    }

    /// The last word of the name opened at word `i`.
    fn name_end(&self, i: usize) -> usize {
        let mut last = i;
        while self.spaced(last) && self.opens_name(last + 1) && !self.ends_possessive(last) {
            let next = self.word(last + 1);
            if month_of(next).is_some() || is_weekday(next) {
                break;
            }
            last += 1;
        }
        last
    }

    fn ends_possessive(&self, i: usize) -> bool {
        trim_possessive(self.text, self.words[i].1) != self.words[i].1
    }
}

/// `end` moved before a trailing `'s`, `’s` or `'` of the word ending there.
fn trim_possessive(text: &str, end: usize) -> usize {
    let head = &text[..end];
    for suffix in ["'s", "\u{2019}s", "'", "\u{2019}"] {
        if let Some(rest) = head.strip_suffix(suffix)
            && !rest.is_empty()
        {
            return rest.len();
        }
    }
    end
}

/// Whether a capitalised word is a function word or sentence opener (its
/// part before an apostrophe, case-insensitively: "I'm", "The").
fn is_non_name(word: &str) -> bool {
    let stem = word.split(['\'', '\u{2019}']).next().unwrap_or(word);
    let search = |list: &[&str]| list.binary_search_by(|probe| cmp_lowercase(probe, stem)).is_ok();
    search(&SNOWBALL_STOP_WORDS) || search(&NON_NAME_OPENERS)
}

/// `probe` (lowercase) against `word` lowercased, without allocating.
fn cmp_lowercase(probe: &str, word: &str) -> std::cmp::Ordering {
    probe.bytes().cmp(word.bytes().map(|b| b.to_ascii_lowercase()))
}

/// The month (1–12) a capitalised full or three-letter name ("Sept" too) names.
fn month_of(word: &str) -> Option<u8> {
    if !word.starts_with(char::is_uppercase) || word.len() < 3 {
        return None;
    }
    let index = MONTHS.iter().position(|m| {
        m.len() >= word.len()
            && m.as_bytes()[..word.len()].eq_ignore_ascii_case(word.as_bytes())
            && (word.len() == 3 || word.len() == m.len() || word.eq_ignore_ascii_case("sept"))
    })?;
    Some(index as u8 + 1)
}

fn is_weekday(word: &str) -> bool {
    word.starts_with(char::is_uppercase) && WEEKDAYS.iter().any(|d| d.eq_ignore_ascii_case(word))
}

/// A day of the month: 1–31, optionally with an ordinal suffix ("8th").
fn is_day(word: &str) -> bool {
    let digits = word.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &word[digits.len()..];
    let suffix_ok = suffix.is_empty() || ["st", "nd", "rd", "th"].iter().any(|s| s.eq_ignore_ascii_case(suffix));
    suffix_ok && (1..=2).contains(&digits.len()) && digits.parse::<u8>().is_ok_and(|d| (1..=31).contains(&d))
}

fn is_year(word: &str) -> bool {
    word.len() == 4 && word.parse::<u16>().is_ok_and(|y| (1000..=2999).contains(&y))
}

/// Lowercased words of `raw` joined by single spaces.
fn push_lower_words(raw: &str, out: &mut String) {
    for (n, word) in raw.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
}

/// A date span as `YYYY-MM-DD`, `MM-DD`, `YYYY-MM`, a month or a weekday
/// name, lowercase; what cannot be parsed, lowercased as written.
fn push_date_key(raw: &str, out: &mut String) {
    if iso_date_len(raw).is_some() {
        out.push_str(&raw[..10]);
        return;
    }
    let (mut year, mut month, mut day) = (None, None, None);
    for (_, word) in word_spans(raw) {
        if is_year(word) {
            year = Some(word);
        } else if is_day(word) {
            day = word
                .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                .parse::<u8>()
                .ok();
        } else if let Some(m) = month_of(word) {
            month = Some(m);
        }
    }
    match (year, month, day) {
        (Some(y), Some(m), Some(d)) => out.push_str(&format!("{y}-{m:02}-{d:02}")),
        (None, Some(m), Some(d)) => out.push_str(&format!("{m:02}-{d:02}")),
        (Some(y), Some(m), None) => out.push_str(&format!("{y}-{m:02}")),
        (None, Some(m), None) => out.push_str(MONTHS[m as usize - 1]),
        _ => out.extend(raw.chars().flat_map(char::to_lowercase)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entities(extractor: &EntityExtractor, text: &str) -> Vec<(EntityKind, String)> {
        let mut out = Vec::new();
        extractor.extract(text, &mut ExtractScratch::new(), &mut out);
        out.iter().map(|s| (s.kind, s.text(text).to_owned())).collect()
    }

    fn names(text: &str) -> Vec<String> {
        entities(&EntityExtractor::default(), text)
            .into_iter()
            .filter(|(k, _)| *k == EntityKind::Name)
            .map(|(_, t)| t)
            .collect()
    }

    #[test]
    fn lists_are_sorted() {
        assert!(NON_NAME_OPENERS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn multi_word_names_without_sentence_openers() {
        assert_eq!(
            names("The meeting with Caroline Smith went well. Hey Mel!"),
            ["Caroline Smith", "Mel"]
        );
        assert_eq!(
            names("I'm sure Caroline's dog met Melanie. Yesterday we saw The Beatles"),
            ["Caroline", "Melanie", "Beatles"]
        );
        assert_eq!(
            names("Caroline: I went to a LGBTQ support group in New York City."),
            ["Caroline", "LGBTQ", "New York City"]
        );
        // Sentence punctuation ends a name.
        assert_eq!(names("I met Anna. Bob came later"), ["Anna", "Bob"]);
    }

    #[test]
    fn dates_in_their_usual_forms() {
        let found = entities(
            &EntityExtractor::default(),
            "1:56 pm on 8 May, 2023; then May 8, June 2024, on 2023-05-08T13:56:00, the 3rd of March, every Monday in December",
        );
        let dates: Vec<&str> = found
            .iter()
            .filter(|(k, _)| *k == EntityKind::Date)
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(
            dates,
            [
                "8 May, 2023",
                "May 8",
                "June 2024",
                "2023-05-08T13:56:00",
                "March",
                "Monday",
                "December"
            ]
        );
        let numbers: Vec<&str> = found
            .iter()
            .filter(|(k, _)| *k == EntityKind::Number)
            .map(|(_, t)| t.as_str())
            .collect();
        assert_eq!(numbers, ["1", "56", "3rd"]);
        // "May" alone is a verb as often as a month.
        assert!(entities(&EntityExtractor::default(), "May I come? We may.").is_empty());
    }

    #[test]
    fn emails_urls_and_numbers() {
        let found = entities(
            &EntityExtractor::default(),
            "mail (bob.smith+x@example.co.uk), see https://example.com/a?b=1. or www.rust-lang.org; 3.5 kg for 1,000 people",
        );
        assert_eq!(
            found,
            [
                (EntityKind::Email, "bob.smith+x@example.co.uk".to_owned()),
                (EntityKind::Url, "https://example.com/a?b=1".to_owned()),
                (EntityKind::Url, "www.rust-lang.org".to_owned()),
                (EntityKind::Number, "3.5".to_owned()),
                (EntityKind::Number, "1,000".to_owned()),
            ]
        );
    }

    #[test]
    fn configured_keywords_match_on_word_boundaries() {
        let extractor = EntityExtractor::new(&[KeywordList {
            label: "project".into(),
            keywords: vec!["nexus".into(), "support group".into()],
        }])
        .unwrap();
        let found = entities(&extractor, "the Support Group of NEXUS, not nexusd");
        let found: Vec<_> = found.into_iter().filter(|(k, _)| *k != EntityKind::Name).collect();
        assert_eq!(
            found,
            [
                (EntityKind::Keyword(0), "Support Group".to_owned()),
                (EntityKind::Keyword(0), "NEXUS".to_owned()),
            ]
        );
        let mut key = String::new();
        let span = EntitySpan {
            kind: EntityKind::Keyword(0),
            start: 4,
            end: 17,
        };
        extractor.key("the Support Group", &span, &mut key);
        assert_eq!(key, "k:project:support group");
    }

    #[test]
    fn keys_normalise_names_and_dates() {
        let extractor = EntityExtractor::default();
        let key = |text: &str| {
            let mut spans = Vec::new();
            extractor.extract(text, &mut ExtractScratch::new(), &mut spans);
            let mut key = String::new();
            extractor.key(text, &spans[0], &mut key);
            key
        };
        assert_eq!(key("8 May, 2023"), "d:2023-05-08");
        assert_eq!(key("May 8th 2023"), "d:2023-05-08");
        assert_eq!(key("2023-05-08"), "d:2023-05-08");
        assert_eq!(key("Sept 3"), "d:09-03");
        assert_eq!(key("Caroline  SMITH's"), "n:caroline");
        assert_eq!(key("CAROLINE Smith"), "n:caroline smith");
        assert_eq!(key("1,000"), "#:1000");
    }

    #[test]
    fn unicode_and_empty_text_do_not_panic() {
        let extractor = EntityExtractor::default();
        assert!(entities(&extractor, "").is_empty());
        assert_eq!(
            names("Über Zoë traf Ångström in Москва."),
            ["Über Zoë", "Ångström", "Москва"]
        );
        let _ = entities(&extractor, "é@é.éé http://é ’s 's ' 2023-13-45 www.");
    }
}
