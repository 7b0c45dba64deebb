//! Import and export of memories as JSON lines: the library behind
//! `nexus import` and `nexus export`.
//!
//! # The format
//!
//! One line is one memory, a JSON object:
//!
//! ```text
//! {"id": 7, "text": "…", "namespace": "agent", "key": "k", "tags": {"topic": "x", "seen": ["a", "b"]},
//!  "vector": [0.25, -1.5], "created_at": "2026-11-30T16:34:26.123Z", "importance": 1.0, "source": "chat"}
//! ```
//!
//! Only `text` is required. `namespace` defaults to the import's default
//! namespace, `importance` to 1.0, `created_at` to the time the daemon
//! stores the memory. A tag value is a string, or an array of strings when
//! the memory carries the key more than once (export writes an array only
//! then; import accepts both). `created_at` is RFC 3339 (jiff's parser, which
//! also takes ISO 8601's other spellings as long as they carry an offset);
//! export writes UTC with exactly three fractional digits, the store's
//! precision, so a time round-trips exactly (sub-millisecond digits on
//! import are dropped toward the past). Vector components and importance are
//! written as the shortest decimal that parses back to the same `f32`.
//! Export adds `id`; import ignores it (except as the hint below). Any other
//! field makes the line bad, naming the field: a typo such as `"nameSpace"`
//! would otherwise put memories in the wrong place without a word.
//!
//! # Import
//!
//! Lines are read with a bound on their length ([`MAX_LINE_BYTES`]: a longer
//! line is reported by its number and skipped without being held in
//! memory), parsed, and batched into Remember requests bounded by count
//! ([`ImportOptions::batch`]) and by their estimated encoded size, on a
//! connection of the import's own (8 MiB rings, so frames up to 4 MiB, and
//! several batches in the request ring at once). Up to
//! [`ImportOptions::in_flight`] batches are sent ahead of their answers: the
//! daemon serves one connection's requests in order, one at a time, so
//! the next batch is waiting when it finishes one while this side parses the
//! ones after. A batch counts as imported only when the daemon acknowledged
//! it, which by default is after fsync.
//!
//! A bad line (invalid JSON, no `text`, a bad time, a wrong type) is
//! reported with its number and skipped, or, with `strict`, stops the import
//! (the lines before it are imported, none after). A batch the daemon refuses
//! as a whole (a vector of the wrong dimension, a text over its limit) is
//! sent again one memory at a time to find the bad lines. Because the batches
//! behind it were already stored by then, a line of a refused batch whose key
//! a later stored line also wrote is not sent again (the later line wins, as
//! it would have in order); `strict` sends one batch at a time, so nothing
//! after its first bad line is ever stored. When the store has no vector
//! dimension yet and a refused batch mixes dimensions, its lines of the
//! batch's most common dimension are sent first, so one odd line cannot fix
//! the store's dimension for the whole file.
//!
//! **Re-running an import** is safe for lines with a `key`: the daemon
//! replaces the memory of that key in that namespace (same id, new content).
//! A line without a key is stored again as a new memory: under the default
//! duplicates policy (`keep`) the copy is linked to the first
//! (`nexus.duplicate_of`) and recall shows one of the two, under `skip` it is
//! not stored (counted in [`ImportReport::duplicates_not_stored`]). The
//! chunks of a long text after the first have no key (the daemon gives the
//! key to the first chunk), so they too are stored again.
//!
//! **The daemon's own tags.** `nexus.chunk` ("i/n") and `nexus.group` are
//! kept as given: a chunk is short enough not to be chunked again (as long
//! as the receiving daemon's chunk size is not smaller than the sender's),
//! so the chunks stay linked. `nexus.duplicate_of` is dropped: it names the
//! original by an id of the exporting store, which means another memory (or
//! nothing) here; the daemon recomputes the link when it stores the line. It
//! only compares a memory with memories already stored, not with others of
//! the same request, so a line whose original is in the batch being filled
//! (by the exported `id`) starts a new batch, and the link comes back.
//!
//! # Export
//!
//! Pages through `List` (every namespace, or one), in (namespace, id) order,
//! writing each memory as a line through a buffer: the store is never held
//! whole. A reader that stops reading (`nexus export | head`) ends the export
//! with [`TransferError::ClosedPipe`], which the CLI treats as success.
//!
//! Not here: command-line flags and printing the report (the CLI), and the
//! checks of the daemon's limits (nexusd refuses what they do not allow;
//! this module only checks what needs no configuration to know).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::io::{self, BufRead, BufWriter, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nexus_client::wire::{
    DuplicateAction, ErrorCode, ListPage, ListRequest, MemoryInput, MemoryTag, RememberReport, RememberRequest,
    Request, RequestBody, ResponseBody, Status, StoredMemory,
};
use nexus_client::{Client, ClientError, ConnectOptions, Connection};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Memories per Remember request by default: large enough that the per
/// request costs (a round trip, one WAL record and its fsync) are spread
/// thin, small enough that a refused batch is quick to retry line by line.
pub const DEFAULT_BATCH: usize = 1000;

/// Batches sent ahead of their answers by default: two keep the daemon busy
/// (one being stored, one waiting in the ring); a few more absorb this side's
/// pauses. Each is at most [`BATCH_BUDGET_BYTES`], so four fit the ring.
pub const DEFAULT_IN_FLIGHT: usize = 4;

/// Longest line import reads (16 MiB): far above any memory a daemon
/// accepts (64 KiB of text by default), low enough that one runaway line
/// (a file without newlines) cannot take the memory of the machine.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Bad lines an [`ImportReport`] lists (all are counted): enough to see
/// what is wrong, bounded when every line of a big file is.
pub const MAX_BAD_LINES: usize = 100;

/// The daemon's tag on a near-duplicate, naming its original's id: dropped
/// on import (see the module docs).
pub const DUPLICATE_TAG: &str = "nexus.duplicate_of";

/// The import connection's rings, both of them (8 MiB each): a frame is at
/// most half the smaller ring, so frames up to 4 MiB, and the request ring
/// holds [`DEFAULT_IN_FLIGHT`] batches of [`BATCH_BUDGET_BYTES`] at once.
const IMPORT_RING_BYTES: u32 = 8 << 20;

/// Estimated encoded bytes per batch at most (1 MiB): a quarter of the
/// import ring's largest frame, so the estimate's error never matters, and
/// lowered to half the frame if a daemon grants a smaller ring.
const BATCH_BUDGET_BYTES: usize = 1 << 20;

/// How long one batch may take, from being sent to its answer: a batch of
/// 1,000 at the engines' fill rate (~3 k memories/s) takes ~0.3 s; two
/// minutes leave room for the graph builders' back-pressure and a slow disk,
/// and still report a daemon that hangs.
const BATCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Retries of a batch the daemon answered `Busy` or `DeadlineExceeded`
/// (its memory budget or queues were full), with a doubling pause from
/// [`BUSY_PAUSE`]: about 6 s in all before the import gives up.
const BUSY_RETRIES: u32 = 5;

/// The first pause before retrying a busy batch.
const BUSY_PAUSE: Duration = Duration::from_millis(200);

/// Export's output buffer: a few pages' worth of lines per write.
const EXPORT_BUFFER_BYTES: usize = 256 << 10;

/// Bytes of memories per List page export asks for first: the daemon's own
/// maximum, which fits a default ring's frame; halved (down to one memory
/// per page) when a client's ring is smaller.
const EXPORT_PAGE_BYTES: u32 = 256 << 10;

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Namespace of the lines that name none.
    pub namespace: String,
    /// Memories per Remember request at most ([`DEFAULT_BATCH`]).
    pub batch: usize,
    /// Stop at the first bad line instead of skipping it.
    pub strict: bool,
    /// Whether to draw a progress bar on stderr.
    pub progress: Progress,
    /// Batches sent ahead of their answers ([`DEFAULT_IN_FLIGHT`]; at least
    /// 1). `strict` always uses 1, so nothing after a bad line is stored.
    pub in_flight: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            batch: DEFAULT_BATCH,
            strict: false,
            progress: Progress::Hidden,
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }
}

/// Whether import shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Progress {
    /// Nothing drawn (stderr is not a terminal, or `--no-progress`).
    #[default]
    Hidden,
    /// A bar on stderr with memories/s and, given the input's size, an ETA.
    Bar {
        /// The input's size in bytes, when known (a file, not a pipe).
        total_bytes: Option<u64>,
    },
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Lines read (blank lines are not counted).
    pub lines: u64,
    /// Lines the daemon acknowledged as stored (durably, under its fsync
    /// policy), near-duplicates it linked or merged included; a line of a
    /// retried batch that a later line of the same key replaced counts too.
    pub imported: u64,
    /// Bad lines skipped (the first [`MAX_BAD_LINES`] are in `bad_lines`).
    pub skipped: u64,
    /// Lines the daemon did not store because they nearly duplicate a
    /// stored memory and its duplicates policy is `skip`.
    pub duplicates_not_stored: u64,
    /// The first bad lines, in order.
    pub bad_lines: Vec<BadLine>,
    /// From the start to the last acknowledgement.
    pub elapsed: Duration,
}

/// A line that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// Its number, from 1.
    pub line: u64,
    /// What is wrong with it (the parser's or the daemon's words).
    pub reason: String,
}

/// Why an import or export stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The input could not be read.
    #[error("reading the input failed at line {line}: {source}")]
    Read {
        /// The line being read.
        line: u64,
        /// The OS error.
        source: io::Error,
    },
    /// The import's own connection could not be opened.
    #[error("cannot open the import's connection to nexusd: {source}")]
    Connect {
        /// Why.
        source: ClientError,
    },
    /// The daemon failed a batch for a reason no line can fix (it stopped,
    /// its disk is full, it did not answer in time).
    #[error(
        "nexusd failed the batch of lines {first_line}-{last_line}: {source}; {imported} lines were imported \
         (re-running the import is safe for lines with a key)"
    )]
    Daemon {
        /// The batch's first line.
        first_line: u64,
        /// The batch's last line.
        last_line: u64,
        /// Lines acknowledged before the failure.
        imported: u64,
        /// The client's error.
        source: ClientError,
    },
    /// A bad line under `strict`.
    #[error("line {line}: {reason} (strict: the import stopped here; the {imported} lines before it were imported)")]
    Strict {
        /// The bad line.
        line: u64,
        /// What is wrong with it.
        reason: String,
        /// Lines acknowledged before it.
        imported: u64,
    },
    /// Listing the memories failed.
    #[error("listing the memories failed after {written} were exported: {source}")]
    List {
        /// Memories written before.
        written: u64,
        /// The client's error.
        source: ClientError,
    },
    /// A stored memory's time cannot be written as RFC 3339.
    #[error(
        "memory {id}: its created_at ({created_at_ms} ms since 1970) is outside the times the export format \
         can write (about the years -9999 to 9999)"
    )]
    TimeOutOfRange {
        /// The memory.
        id: u64,
        /// Its time.
        created_at_ms: i64,
    },
    /// The output could not be written.
    #[error("writing the export failed after {written} memories: {source}")]
    Write {
        /// Memories written before.
        written: u64,
        /// The OS error.
        source: io::Error,
    },
    /// The reader of the output went away (`nexus export | head`): not a
    /// failure of the export, which the CLI ends quietly.
    #[error("the output was closed after {written} memories (its reader stopped reading)")]
    ClosedPipe {
        /// Memories written before.
        written: u64,
    },
}

impl TransferError {
    /// True when the output's reader went away: the CLI exits with success.
    pub fn is_closed_pipe(&self) -> bool {
        matches!(self, Self::ClosedPipe { .. })
    }

    /// The client's error inside, for a diagnosis by the daemon's error code.
    pub fn client_error(&self) -> Option<&ClientError> {
        match self {
            Self::Connect { source } | Self::Daemon { source, .. } | Self::List { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Imports JSON lines from `input` into the daemon `client` is connected to
/// (through a connection of its own, to the same socket: see the module
/// docs); returns what was imported, skipped and why.
pub fn import(client: &Client, input: impl BufRead, options: &ImportOptions) -> Result<ImportReport, TransferError> {
    let started = Instant::now();
    let connection = connect_for_import(client)?;
    let mut importer = Importer::new(client, connection, options, started);
    let mut reader = LineReader::new(input);
    let result = import_lines(&mut importer, &mut reader);
    importer.meter.finish();
    result?;
    importer.report.elapsed = started.elapsed();
    Ok(importer.report)
}

/// Exports the memories of `namespace` (`None` or "": every namespace) to
/// `out`, one line each; returns how many were written.
pub fn export(client: &Client, out: impl Write, namespace: Option<&str>) -> Result<u64, TransferError> {
    let mut out = BufWriter::with_capacity(EXPORT_BUFFER_BYTES, out);
    let mut written = 0;
    let mut request = ListRequest {
        namespace: namespace.unwrap_or_default().into(),
        after: None,
        limit: 0,
        max_bytes: EXPORT_PAGE_BYTES,
    };
    loop {
        let page = list_page(client, &mut request, written)?;
        for memory in &page.memories {
            write_line(&mut out, memory).map_err(|error| output_error(error, written))?;
            written += 1;
        }
        match page.next {
            Some(next) => request.after = Some(next),
            None => break,
        }
    }
    out.flush()
        .map_err(|error| output_error(TransferError::from_io(error), written))?;
    Ok(written)
}

// The line format.

/// One line as import reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    text: String,
    namespace: Option<String>,
    key: Option<String>,
    tags: Option<TagsIn>,
    vector: Option<Vec<f32>>,
    created_at: Option<String>,
    importance: Option<f32>,
    source: Option<String>,
    /// The id it was exported with: only a hint (see the module docs).
    id: Option<u64>,
}

/// A parsed line: the memory to send, and what the batching needs to know.
#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    memory: MemoryInput,
    /// The id the line was exported with.
    exported_id: Option<u64>,
    /// The exported id of the original it was a near-duplicate of.
    duplicate_of: Option<u64>,
}

/// Parses one line into a memory, or says what is wrong with it.
fn parse_line(bytes: &[u8], default_namespace: &str) -> Result<Parsed, String> {
    let line: LineIn = serde_json::from_slice(bytes).map_err(json_reason)?;
    let namespace = line.namespace.unwrap_or_else(|| default_namespace.to_owned());
    if namespace.is_empty() {
        return Err("the namespace is empty (name one in the line, or give the import a default)".into());
    }
    let mut tags = line.tags.map(|tags| tags.0).unwrap_or_default();
    let duplicate_of = (tags.iter().find(|tag| tag.key == DUPLICATE_TAG)).and_then(|tag| tag.value.parse().ok());
    tags.retain(|tag| tag.key != DUPLICATE_TAG);
    if let Some(index) = (line.vector.iter().flatten()).position(|x| !x.is_finite()) {
        return Err(format!("vector[{index}] is not a finite 32-bit number"));
    }
    let importance = line.importance.unwrap_or(1.0);
    if !importance.is_finite() {
        return Err("importance is not a finite 32-bit number".into());
    }
    let created_at_ms = line.created_at.as_deref().map(parse_time).transpose()?;
    let memory = MemoryInput {
        key: line.key,
        namespace,
        text: line.text,
        vector: line.vector,
        tags,
        created_at_ms,
        importance,
        source: line.source,
    };
    Ok(Parsed {
        memory,
        exported_id: line.id,
        duplicate_of,
    })
}

/// serde_json's message without its "at line 1 column N" (the line is ours
/// to number), the column kept.
fn json_reason(error: serde_json::Error) -> String {
    let message = error.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(head, _)| head);
    format!("{message} (column {})", error.column())
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (floored).
fn parse_time(text: &str) -> Result<i64, String> {
    let time: jiff::Timestamp =
        (text.parse()).map_err(|e| format!("created_at {text:?} is not an RFC 3339 time: {e}"))?;
    // Floor, not jiff's truncation toward 1970: a time before 1970 with
    // sub-millisecond digits stays in the millisecond it falls in.
    let ms = time.as_nanosecond().div_euclid(1_000_000);
    i64::try_from(ms).map_err(|_| format!("created_at {text:?} is out of range"))
}

/// An RFC 3339 UTC time with milliseconds, written without an allocation.
struct Rfc3339Millis(jiff::Timestamp);

impl Rfc3339Millis {
    fn new(id: u64, created_at_ms: i64) -> Result<Self, TransferError> {
        jiff::Timestamp::from_millisecond(created_at_ms)
            .map(Self)
            .map_err(|_| TransferError::TimeOutOfRange { id, created_at_ms })
    }
}

impl fmt::Display for Rfc3339Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.0)
    }
}

impl Serialize for Rfc3339Millis {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Tags as import reads them: an object whose values are a string or an
/// array of strings (the same key repeated).
#[derive(Debug, Default)]
struct TagsIn(Vec<MemoryTag>);

impl<'de> Deserialize<'de> for TagsIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TagsVisitor)
    }
}

struct TagsVisitor;

impl<'de> Visitor<'de> for TagsVisitor {
    type Value = TagsIn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object of tags, {"key": "value"} or {"key": ["value", ...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TagsIn, A::Error> {
        let mut tags = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let TagValues(values) = map.next_value()?;
            tags.extend(values.into_iter().map(|value| MemoryTag {
                key: key.clone(),
                value,
            }));
        }
        Ok(TagsIn(tags))
    }
}

/// The values of one tag key.
struct TagValues(Vec<String>);

impl<'de> Deserialize<'de> for TagValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TagValuesVisitor)
    }
}

struct TagValuesVisitor;

impl<'de> Visitor<'de> for TagValuesVisitor {
    type Value = TagValues;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tag value: a string, or an array of strings")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<TagValues, E> {
        Ok(TagValues(vec![value.to_owned()]))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<TagValues, E> {
        Ok(TagValues(vec![value]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TagValues, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element::<String>()? {
            values.push(value);
        }
        Ok(TagValues(values))
    }
}

/// One line as export writes it (field order is the output's).
#[derive(Serialize)]
struct LineOut<'a> {
    id: u64,
    namespace: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    text: &'a str,
    #[serde(skip_serializing_if = "TagsOut::is_empty")]
    tags: TagsOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vector: Option<&'a [f32]>,
    created_at: Rfc3339Millis,
    importance: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

/// A memory's tags as an object: keys in the order they first appear, a
/// repeated key's values as an array.
struct TagsOut<'a>(&'a [MemoryTag]);

impl TagsOut<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for TagsOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let tags = self.0;
        let mut map = serializer.serialize_map(None)?;
        // Tags per memory are few (the daemon's limit is 32): the quadratic
        // grouping allocates only for a repeated key.
        for (index, tag) in tags.iter().enumerate() {
            if tags[..index].iter().any(|earlier| earlier.key == tag.key) {
                continue;
            }
            let same_key = || tags[index..].iter().filter(|other| other.key == tag.key);
            if same_key().nth(1).is_none() {
                map.serialize_entry(&tag.key, &tag.value)?;
            } else {
                let values: Vec<&str> = same_key().map(|other| other.value.as_str()).collect();
                map.serialize_entry(&tag.key, &values)?;
            }
        }
        map.end()
    }
}

/// Writes `memory` as one line.
fn write_line(out: &mut impl Write, memory: &StoredMemory) -> Result<(), TransferError> {
    let line = LineOut {
        id: memory.id,
        namespace: &memory.namespace,
        key: memory.key.as_deref(),
        text: &memory.text,
        tags: TagsOut(&memory.tags),
        vector: memory.vector.as_deref(),
        created_at: Rfc3339Millis::new(memory.id, memory.created_at_ms)?,
        importance: memory.importance,
        source: memory.source.as_deref(),
    };
    serde_json::to_writer(&mut *out, &line).map_err(|e| TransferError::from_io(io::Error::from(e)))?;
    out.write_all(b"\n").map_err(TransferError::from_io)
}

impl TransferError {
    /// An output error before its count is known (see [`output_error`]).
    fn from_io(source: io::Error) -> Self {
        Self::Write { written: 0, source }
    }
}

/// Puts the count in an output error, and names a closed pipe.
fn output_error(error: TransferError, written: u64) -> TransferError {
    match error {
        TransferError::Write { source, .. } if source.kind() == io::ErrorKind::BrokenPipe => {
            TransferError::ClosedPipe { written }
        }
        TransferError::Write { source, .. } => TransferError::Write { written, source },
        other => other,
    }
}

/// One page of the listing; halves the page's bytes while the answer does
/// not fit the client's response ring.
fn list_page(client: &Client, request: &mut ListRequest, written: u64) -> Result<ListPage, TransferError> {
    loop {
        match client.list(request.clone()) {
            Ok(page) => return Ok(page),
            Err(ClientError::Status { code, .. })
                if code == ErrorCode::FrameTooLarge as u32 && request.max_bytes > 1 =>
            {
                // A page always holds one memory: at 1 byte, a memory that
                // still does not fit is reported below.
                request.max_bytes /= 2;
            }
            Err(source) => return Err(TransferError::List { written, source }),
        }
    }
}

// Reading lines.

/// Lines of the input, each at most [`MAX_LINE_BYTES`] held in memory.
struct LineReader<R> {
    input: R,
    /// The current line, without its line ending.
    buffer: Vec<u8>,
    /// The current line's number, from 1.
    number: u64,
    /// Bytes consumed so far (for the progress bar).
    offset: u64,
}

/// What the current line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// Something to parse, in the reader's buffer.
    Content,
    /// Only whitespace.
    Blank,
    /// Over [`MAX_LINE_BYTES`]: skipped to its end, not kept.
    TooLong,
}

impl<R: BufRead> LineReader<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            buffer: Vec::new(),
            number: 0,
            offset: 0,
        }
    }

    /// Reads the next line; `None` at the end of the input.
    fn next_line(&mut self) -> io::Result<Option<LineKind>> {
        self.buffer.clear();
        let (mut any, mut too_long) = (false, false);
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                break;
            }
            any = true;
            let newline = available.iter().position(|&byte| byte == b'\n');
            let piece = &available[..newline.unwrap_or(available.len())];
            if !too_long && self.buffer.len() + piece.len() > MAX_LINE_BYTES {
                too_long = true;
                self.buffer = Vec::new();
            }
            if !too_long {
                self.buffer.extend_from_slice(piece);
            }
            let used = piece.len() + usize::from(newline.is_some());
            self.input.consume(used);
            self.offset += used as u64;
            if newline.is_some() {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.number += 1;
        Ok(Some(self.classify(too_long)))
    }

    fn classify(&mut self, too_long: bool) -> LineKind {
        if too_long {
            return LineKind::TooLong;
        }
        if self.buffer.last() == Some(&b'\r') {
            self.buffer.pop();
        }
        // A byte order mark some editors put first.
        if self.number == 1 && self.buffer.starts_with(b"\xEF\xBB\xBF") {
            self.buffer.drain(..3);
        }
        if self.buffer.iter().all(u8::is_ascii_whitespace) {
            LineKind::Blank
        } else {
            LineKind::Content
        }
    }
}

// Importing.

/// The import's loop: each line to the importer, then the last batch.
fn import_lines<R: BufRead>(importer: &mut Importer<'_>, reader: &mut LineReader<R>) -> Result<(), TransferError> {
    loop {
        let kind = reader.next_line().map_err(|source| TransferError::Read {
            line: reader.number + 1,
            source,
        })?;
        let line = reader.number;
        match kind {
            None => break,
            Some(LineKind::Blank) => continue,
            Some(LineKind::TooLong) => {
                importer.report.lines += 1;
                importer.unparsable(line, format!("the line is longer than {MAX_LINE_BYTES} bytes"))?;
            }
            Some(LineKind::Content) => {
                importer.report.lines += 1;
                match parse_line(&reader.buffer, &importer.options.namespace) {
                    Ok(parsed) => importer.push(line, parsed)?,
                    Err(reason) => importer.unparsable(line, reason)?,
                }
            }
        }
        importer.pending.end_offset = reader.offset;
    }
    importer.finish()
}

/// Opens the import's connection: same socket as `client`, larger rings
/// (the shared client's are the default 1 MiB, and its calls take turns).
fn connect_for_import(client: &Client) -> Result<Connection, TransferError> {
    let options = ConnectOptions {
        name: "nexus import".into(),
        request_ring_bytes: IMPORT_RING_BYTES,
        response_ring_bytes: IMPORT_RING_BYTES,
        ..ConnectOptions::default()
    };
    Connection::connect(client.path(), options).map_err(|source| TransferError::Connect { source })
}

/// Memories on their way to one Remember request.
#[derive(Debug, Default)]
struct Batch {
    memories: Vec<MemoryInput>,
    /// The line of each memory.
    lines: Vec<u64>,
    /// The exported ids of its lines (to keep a near-duplicate out of its
    /// original's batch).
    exported_ids: HashSet<u64>,
    /// Estimated encoded bytes.
    estimated_bytes: usize,
    /// Input bytes read when its last line was (for the progress bar).
    end_offset: u64,
}

impl Batch {
    fn push(&mut self, line: u64, parsed: Parsed, bytes: usize) {
        self.exported_ids.extend(parsed.exported_id);
        self.memories.push(parsed.memory);
        self.lines.push(line);
        self.estimated_bytes += bytes;
    }

    fn first_line(&self) -> u64 {
        self.lines.first().copied().unwrap_or(0)
    }

    fn last_line(&self) -> u64 {
        self.lines.last().copied().unwrap_or(0)
    }

    /// Splits off its second half (a batch too large for a frame).
    fn split_half(&mut self) -> Batch {
        let at = self.memories.len() / 2;
        let memories = self.memories.split_off(at);
        let estimated_bytes = memories.iter().map(estimate_bytes).sum();
        self.estimated_bytes -= estimated_bytes;
        Batch {
            memories,
            lines: self.lines.split_off(at),
            exported_ids: HashSet::new(),
            estimated_bytes,
            end_offset: self.end_offset,
        }
    }
}

/// A batch handed to the daemon, its answer awaited.
struct Sent {
    request_id: u64,
    batch: Batch,
}

/// How the daemon answered one batch.
enum Answer {
    Stored(RememberReport),
    Refused { code: u32, message: String },
}

/// What a refusal means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Something in a memory (or the batch's size): find the bad lines.
    Content,
    /// The daemon was too busy: send it again after a pause.
    Busy,
    /// Nothing a line can fix: stop.
    Fatal,
}

fn classify(code: u32) -> Refusal {
    match ErrorCode::from_u32(code) {
        Some(
            ErrorCode::InvalidArgument
            | ErrorCode::DimensionMismatch
            | ErrorCode::BatchTooLarge
            | ErrorCode::FrameTooLarge,
        ) => Refusal::Content,
        Some(ErrorCode::Busy | ErrorCode::DeadlineExceeded) => Refusal::Busy,
        _ => Refusal::Fatal,
    }
}

/// The import's state: the batch being filled, the batches sent, the report.
struct Importer<'a> {
    client: &'a Client,
    connection: Connection,
    options: &'a ImportOptions,
    report: ImportReport,
    pending: Batch,
    in_flight: VecDeque<Sent>,
    max_in_flight: usize,
    /// Memories per batch (halved when the daemon finds a batch too large).
    batch_limit: usize,
    /// Estimated bytes per batch (lowered when a frame is too small).
    budget_bytes: usize,
    meter: Meter,
}

impl<'a> Importer<'a> {
    fn new(client: &'a Client, connection: Connection, options: &'a ImportOptions, started: Instant) -> Self {
        Self {
            client,
            connection,
            options,
            report: ImportReport::default(),
            pending: Batch::default(),
            in_flight: VecDeque::new(),
            max_in_flight: if options.strict { 1 } else { options.in_flight.max(1) },
            batch_limit: options.batch.max(1),
            budget_bytes: BATCH_BUDGET_BYTES,
            meter: Meter::new(options.progress, started),
        }
    }

    /// Adds a parsed line to the batch, sending the batch first when full.
    fn push(&mut self, line: u64, parsed: Parsed) -> Result<(), TransferError> {
        let bytes = estimate_bytes(&parsed.memory);
        let pending = &self.pending;
        let full = pending.memories.len() >= self.batch_limit
            || REQUEST_ENVELOPE_BYTES + pending.estimated_bytes + bytes > self.budget_bytes;
        // The daemon compares a memory only with memories already stored.
        let original_in_batch = parsed.duplicate_of.is_some_and(|id| pending.exported_ids.contains(&id));
        if !pending.memories.is_empty() && (full || original_in_batch) {
            self.send_pending()?;
        }
        self.pending.push(line, parsed, bytes);
        Ok(())
    }

    /// A line that cannot be parsed: counted; under `strict`, the lines
    /// before it (the batch being filled, those in flight) are stored and
    /// the import stops.
    fn unparsable(&mut self, line: u64, reason: String) -> Result<(), TransferError> {
        if self.options.strict {
            self.send_pending()?;
        }
        self.refused_line(line, reason)
    }

    /// A line the daemon cannot take: counted; under `strict`, the batches
    /// sent before it are waited for and the import stops (the batch being
    /// filled, after it, is never sent).
    fn refused_line(&mut self, line: u64, reason: String) -> Result<(), TransferError> {
        if self.options.strict {
            self.drain()?;
            let imported = self.report.imported;
            return Err(TransferError::Strict { line, reason, imported });
        }
        self.report.skipped += 1;
        // Bad lines are found out of order (a refused batch is retried after
        // later lines were parsed): keep the first ones by number.
        let bad_lines = &mut self.report.bad_lines;
        let at = bad_lines.partition_point(|bad| bad.line < line);
        if at < MAX_BAD_LINES {
            bad_lines.insert(at, BadLine { line, reason });
            bad_lines.truncate(MAX_BAD_LINES);
        }
        Ok(())
    }

    /// Sends the last batch and waits for every answer.
    fn finish(&mut self) -> Result<(), TransferError> {
        self.send_pending()?;
        self.drain()
    }

    fn send_pending(&mut self) -> Result<(), TransferError> {
        let end_offset = self.pending.end_offset;
        let batch = std::mem::take(&mut self.pending);
        self.pending.end_offset = end_offset;
        if batch.memories.is_empty() {
            return Ok(());
        }
        self.send(batch)
    }

    /// Hands `batch` to the daemon once there is room in flight; a batch too
    /// large for a frame is split in two.
    fn send(&mut self, mut batch: Batch) -> Result<(), TransferError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.receive_one()?;
        }
        let mut request = remember_request(std::mem::take(&mut batch.memories));
        let submitted = self.connection.submit(&mut request, Instant::now() + BATCH_TIMEOUT);
        batch.memories = take_memories(request);
        match submitted {
            Ok(request_id) => {
                self.in_flight.push_back(Sent { request_id, batch });
                Ok(())
            }
            Err(ClientError::FrameTooLarge { max }) => self.split_and_send(batch, max),
            Err(source) => Err(self.daemon_error(&batch, source)),
        }
    }

    /// A batch over the frame: lower the budget below the frame, send halves.
    fn split_and_send(&mut self, mut batch: Batch, max_frame_bytes: u64) -> Result<(), TransferError> {
        let half_frame = usize::try_from(max_frame_bytes / 2).unwrap_or(usize::MAX);
        self.budget_bytes = self.budget_bytes.min(half_frame).max(1);
        if batch.memories.len() == 1 {
            let reason = format!(
                "the memory is larger than the largest request nexusd accepts ({max_frame_bytes} bytes encoded)"
            );
            return self.refused_line(batch.first_line(), reason);
        }
        let second = batch.split_half();
        self.send(batch)?;
        self.send(second)
    }

    /// Waits for every batch in flight.
    fn drain(&mut self) -> Result<(), TransferError> {
        while !self.in_flight.is_empty() {
            self.receive_one()?;
        }
        Ok(())
    }

    /// Takes the oldest batch's answer; after a refusal, drains the batches
    /// behind it and retries the refused ones in order.
    fn receive_one(&mut self) -> Result<(), TransferError> {
        let Some(sent) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let answer = self.answer(&sent)?;
        let (code, message) = match answer {
            Answer::Stored(report) => {
                self.stored(&sent.batch, &report);
                return Ok(());
            }
            Answer::Refused { code, message } => (code, message),
        };
        // The batches behind it were stored or refused already: learn which.
        let mut window = vec![(sent.batch, Some((code, message)))];
        while let Some(next) = self.in_flight.pop_front() {
            match self.answer(&next)? {
                Answer::Stored(report) => {
                    self.stored(&next.batch, &report);
                    window.push((next.batch, None));
                }
                Answer::Refused { code, message } => window.push((next.batch, Some((code, message)))),
            }
        }
        self.retry_refused(window)
    }

    /// Retries each refused batch of `window` (in order), skipping lines
    /// whose key a later stored batch of the window wrote.
    fn retry_refused(&mut self, window: Vec<(Batch, Option<(u32, String)>)>) -> Result<(), TransferError> {
        let mut later_keys: Vec<HashSet<(String, String)>> = vec![HashSet::new(); window.len()];
        for index in (0..window.len().saturating_sub(1)).rev() {
            let (next, next_refusal) = &window[index + 1];
            let mut keys = later_keys[index + 1].clone();
            if next_refusal.is_none() {
                keys.extend(next.memories.iter().filter_map(namespace_key));
            }
            later_keys[index] = keys;
        }
        for ((batch, refusal), superseded) in window.into_iter().zip(later_keys) {
            if let Some((code, message)) = refusal {
                self.retry(batch, code, message, &superseded)?;
            }
        }
        Ok(())
    }

    /// Retries one refused batch as its refusal says.
    fn retry(
        &mut self,
        mut batch: Batch,
        code: u32,
        message: String,
        superseded: &HashSet<(String, String)>,
    ) -> Result<(), TransferError> {
        let before = batch.memories.len();
        drop_superseded(&mut batch, superseded);
        self.report.imported += (before - batch.memories.len()) as u64;
        if batch.memories.is_empty() {
            return Ok(());
        }
        match classify(code) {
            Refusal::Fatal => Err(self.daemon_error(&batch, ClientError::Status { code, message })),
            Refusal::Busy => self.retry_busy(batch),
            Refusal::Content => {
                if code == ErrorCode::BatchTooLarge as u32 {
                    self.batch_limit = (batch.memories.len() / 2).max(1);
                }
                self.send_singly(batch)
            }
        }
    }

    /// Sends a batch the daemon was too busy for again, after pauses.
    fn retry_busy(&mut self, batch: Batch) -> Result<(), TransferError> {
        let mut pause = BUSY_PAUSE;
        for _ in 0..BUSY_RETRIES {
            std::thread::sleep(pause);
            pause *= 2;
            let memories = batch.memories.clone();
            match self.call(memories) {
                Ok(Answer::Stored(report)) => {
                    self.stored(&batch, &report);
                    return Ok(());
                }
                Ok(Answer::Refused { code, .. }) if classify(code) == Refusal::Busy => continue,
                Ok(Answer::Refused { code, message }) => return self.retry(batch, code, message, &HashSet::new()),
                Err(source) => return Err(self.daemon_error(&batch, source)),
            }
        }
        let source = ClientError::Status {
            code: ErrorCode::Busy as u32,
            message: format!("still busy after {BUSY_RETRIES} retries"),
        };
        Err(self.daemon_error(&batch, source))
    }

    /// Sends a refused batch's memories one at a time: each one refused is
    /// a bad line.
    fn send_singly(&mut self, batch: Batch) -> Result<(), TransferError> {
        let order = retry_order(&batch.memories, || self.store_dimension());
        for index in order {
            let single = Batch {
                memories: vec![batch.memories[index].clone()],
                lines: vec![batch.lines[index]],
                end_offset: batch.end_offset,
                ..Batch::default()
            };
            match self.call(single.memories.clone()) {
                Ok(Answer::Stored(report)) => self.stored(&single, &report),
                Ok(Answer::Refused { code, message }) if classify(code) == Refusal::Content => {
                    self.refused_line(single.first_line(), format!("nexusd refused it: {message}"))?;
                }
                Ok(Answer::Refused { code, message }) => self.retry(single, code, message, &HashSet::new())?,
                Err(source) => return Err(self.daemon_error(&single, source)),
            }
        }
        Ok(())
    }

    /// The store's vector dimension (0: none yet, or unknown).
    fn store_dimension(&self) -> u64 {
        let stats = self.client.stats().ok();
        stats
            .and_then(|stats| nexus_client::counter(&stats, "dimension"))
            .unwrap_or(0)
    }

    /// One Remember, answered before the next (the retry paths: nothing is
    /// in flight then).
    fn call(&mut self, memories: Vec<MemoryInput>) -> Result<Answer, ClientError> {
        let mut request = remember_request(memories);
        let response = self
            .connection
            .call(&mut request, Some(BATCH_TIMEOUT))?
            .to_owned_response();
        Ok(answer_of(response.status, response.body))
    }

    /// The answer to `sent` (answers come in the order batches were sent).
    fn answer(&mut self, sent: &Sent) -> Result<Answer, TransferError> {
        let received = self
            .connection
            .recv(Some(BATCH_TIMEOUT))
            .map(|guard| guard.to_owned_response());
        let response = received.map_err(|source| self.daemon_error(&sent.batch, source))?;
        if response.request_id != sent.request_id {
            let message = format!(
                "answer to request {} while waiting for {}",
                response.request_id, sent.request_id
            );
            return Err(self.daemon_error(&sent.batch, ClientError::Protocol(message)));
        }
        Ok(answer_of(response.status, response.body))
    }

    /// Counts an acknowledged batch.
    fn stored(&mut self, batch: &Batch, report: &RememberReport) {
        let skipped = (report.notes.iter())
            .filter(|note| note.duplicate.is_some_and(|d| d.action == DuplicateAction::Skipped))
            .count() as u64;
        self.report.imported += batch.memories.len() as u64 - skipped;
        self.report.duplicates_not_stored += skipped;
        self.meter.update(self.report.imported, batch.end_offset);
    }

    fn daemon_error(&self, batch: &Batch, source: ClientError) -> TransferError {
        TransferError::Daemon {
            first_line: batch.first_line(),
            last_line: batch.last_line(),
            imported: self.report.imported,
            source,
        }
    }
}

fn remember_request(memories: Vec<MemoryInput>) -> Request {
    Request {
        request_id: 0,
        deadline_ns: 0,
        body: RequestBody::Remember(RememberRequest { memories }),
    }
}

/// The memories back out of a request built by [`remember_request`].
fn take_memories(request: Request) -> Vec<MemoryInput> {
    match request.body {
        RequestBody::Remember(remember) => remember.memories,
        _ => Vec::new(),
    }
}

fn answer_of(status: Status, body: ResponseBody) -> Answer {
    match (status, body) {
        (Status::Error { code, message }, _) => Answer::Refused { code, message },
        (_, ResponseBody::Remembered(report)) => Answer::Stored(report),
        // An Ok answer of another kind: the daemon broke the protocol.
        (_, _) => Answer::Refused {
            code: ErrorCode::Internal as u32,
            message: "the answer to a Remember is not a Remember's".into(),
        },
    }
}

fn namespace_key(memory: &MemoryInput) -> Option<(String, String)> {
    Some((memory.namespace.clone(), memory.key.clone()?))
}

/// Drops the memories whose (namespace, key) is in `superseded`.
fn drop_superseded(batch: &mut Batch, superseded: &HashSet<(String, String)>) {
    if superseded.is_empty() {
        return;
    }
    let keep: Vec<bool> = (batch.memories.iter())
        .map(|memory| namespace_key(memory).is_none_or(|key| !superseded.contains(&key)))
        .collect();
    let mut flags = keep.iter();
    batch.memories.retain(|_| *flags.next().unwrap_or(&true));
    let mut flags = keep.iter();
    batch.lines.retain(|_| *flags.next().unwrap_or(&true));
}

/// The order to send a refused batch's memories in: as read, except that
/// when the store has no dimension yet and the batch mixes dimensions, the
/// memories of its most common dimension go first (the first vector stored
/// fixes the store's); of two as common, the one seen first.
fn retry_order(memories: &[MemoryInput], store_dimension: impl FnOnce() -> u64) -> Vec<usize> {
    // (dimension, count, first seen at): a batch has few dimensions.
    let mut dimensions: Vec<(usize, usize, usize)> = Vec::new();
    for (index, memory) in memories.iter().enumerate() {
        let Some(vector) = &memory.vector else { continue };
        match dimensions.iter_mut().find(|(dimension, ..)| *dimension == vector.len()) {
            Some((_, count, _)) => *count += 1,
            None => dimensions.push((vector.len(), 1, index)),
        }
    }
    let natural: Vec<usize> = (0..memories.len()).collect();
    if dimensions.len() < 2 || store_dimension() != 0 {
        return natural;
    }
    let common = (dimensions.into_iter())
        .max_by_key(|&(_, count, first)| (count, std::cmp::Reverse(first)))
        .map_or(0, |(dimension, ..)| dimension);
    let has_common = |index: &usize| memories[*index].vector.as_ref().is_some_and(|v| v.len() == common);
    let (mut first, rest): (Vec<usize>, Vec<usize>) = natural.into_iter().partition(has_common);
    first.extend(rest);
    first
}

/// A Remember request's encoded bytes besides its memories (measured: 104).
const REQUEST_ENVELOPE_BYTES: usize = 128;

/// A memory's encoded size, estimated from above: its bytes, plus rkyv's
/// per-string and per-memory overhead (relative pointers, lengths,
/// alignment), so a batch within the budget is within the frame.
fn estimate_bytes(memory: &MemoryInput) -> usize {
    const PER_STRING: usize = 16;
    const PER_MEMORY: usize = 96;
    let optional = |text: &Option<String>| text.as_ref().map_or(0, |text| text.len() + PER_STRING);
    let tags: usize = (memory.tags.iter())
        .map(|tag| tag.key.len() + tag.value.len() + 2 * PER_STRING)
        .sum();
    let vector = memory.vector.as_ref().map_or(0, |vector| 4 * vector.len() + PER_STRING);
    memory.text.len()
        + memory.namespace.len()
        + 2 * PER_STRING
        + optional(&memory.key)
        + optional(&memory.source)
        + tags
        + vector
        + PER_MEMORY
}

// Progress.

/// The progress bar, when one is drawn.
struct Meter {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Meter {
    fn new(progress: Progress, started: Instant) -> Self {
        let bar = match progress {
            Progress::Hidden => None,
            Progress::Bar { total_bytes } => Some(progress_bar(total_bytes)),
        };
        Self { bar, started }
    }

    fn update(&self, imported: u64, offset: u64) {
        let Some(bar) = &self.bar else {
            return;
        };
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = imported as f64 / seconds;
        // A retried batch is acknowledged after later ones: never go back.
        bar.set_position(offset.max(bar.position()));
        bar.set_message(format!("{imported} memories, {rate:.0}/s"));
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The bar when the input's size is known: bytes read of the total, the
/// rate in memories/s, and the time left.
const BAR_TEMPLATE: &str = "{bar:30} {bytes}/{total_bytes} · {msg} · ETA {eta}";

/// The spinner when it is not (a pipe).
const SPINNER_TEMPLATE: &str = "{spinner} {bytes} read · {msg} · {elapsed}";

fn progress_bar(total_bytes: Option<u64>) -> ProgressBar {
    let target = ProgressDrawTarget::stderr();
    let (bar, template) = match total_bytes {
        Some(total) => (ProgressBar::with_draw_target(Some(total), target), BAR_TEMPLATE),
        None => (ProgressBar::with_draw_target(None, target), SPINNER_TEMPLATE),
    };
    // The templates are constants: a failure is a bug caught by the tests,
    // and the default style is an acceptable fallback.
    let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn parse(line: &str) -> Parsed {
        parse_line(line.as_bytes(), "default").unwrap_or_else(|reason| panic!("{line}: {reason}"))
    }

    #[track_caller]
    fn refused(line: &str) -> String {
        match parse_line(line.as_bytes(), "default") {
            Ok(parsed) => panic!("{line} parsed: {parsed:?}"),
            Err(reason) => reason,
        }
    }

    fn tag(key: &str, value: &str) -> MemoryTag {
        MemoryTag {
            key: key.into(),
            value: value.into(),
        }
    }

    fn stored(tags: Vec<MemoryTag>) -> StoredMemory {
        StoredMemory {
            id: 7,
            namespace: "agent".into(),
            text: "hello".into(),
            tags,
            created_at_ms: 1_764_520_466_123,
            importance: 1.0,
            ..StoredMemory::default()
        }
    }

    fn line_of(memory: &StoredMemory) -> String {
        let mut out = Vec::new();
        write_line(&mut out, memory).expect("written");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn only_text_is_required_and_the_rest_takes_its_defaults() {
        let parsed = parse(r#"{"text": "the sky is blue"}"#);
        assert_eq!(parsed.memory, MemoryInput::new("default", "the sky is blue"));
        assert_eq!((parsed.exported_id, parsed.duplicate_of), (None, None));
    }

    #[test]
    fn a_tag_value_is_a_string_or_an_array_for_a_repeated_key() {
        let parsed = parse(r#"{"text": "t", "tags": {"topic": "sky", "seen": ["mon", "tue"], "none": []}}"#);
        let expected = vec![tag("topic", "sky"), tag("seen", "mon"), tag("seen", "tue")];
        assert_eq!(parsed.memory.tags, expected);
        let reason = refused(r#"{"text": "t", "tags": {"n": 3}}"#);
        assert!(reason.contains("a string, or an array of strings"), "{reason}");
        let reason = refused(r#"{"text": "t", "tags": ["a"]}"#);
        assert!(reason.contains("an object of tags"), "{reason}");
    }

    #[test]
    fn export_writes_a_repeated_key_as_an_array_in_first_appearance_order() {
        let memory = stored(vec![tag("b", "1"), tag("a", "x"), tag("b", "2"), tag("c", "")]);
        let line = line_of(&memory);
        assert!(line.contains(r#""tags":{"b":["1","2"],"a":"x","c":""}"#), "{line}");
        let parsed = parse(&line);
        assert_eq!(
            parsed.memory.tags,
            vec![tag("b", "1"), tag("b", "2"), tag("a", "x"), tag("c", "")]
        );
        // Grouped once, the order is stable: a second round trip changes nothing.
        let again = StoredMemory {
            tags: parsed.memory.tags,
            ..memory
        };
        assert_eq!(line_of(&again), line);
    }

    #[test]
    fn a_full_line_round_trips_through_export_and_import() {
        let memory = StoredMemory {
            key: Some("k1".into()),
            vector: Some(vec![0.1, -2.5e-8, 3.4028235e38, f32::MIN_POSITIVE]),
            importance: 0.7,
            source: Some("chat ✓".into()),
            text: "line one\nline \"two\" ünïcödé 🚀".into(),
            ..stored(vec![tag("topic", "sky")])
        };
        let line = line_of(&memory);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line}");
        assert!(line.starts_with(r#"{"id":7,"namespace":"agent","key":"k1","#), "{line}");
        assert!(line.contains(r#""created_at":"2025-11-30T16:34:26.123Z""#), "{line}");
        let parsed = parse(&line);
        let expected = MemoryInput {
            key: memory.key.clone(),
            namespace: memory.namespace.clone(),
            text: memory.text.clone(),
            vector: memory.vector.clone(),
            tags: memory.tags.clone(),
            created_at_ms: Some(memory.created_at_ms),
            importance: memory.importance,
            source: memory.source.clone(),
        };
        assert_eq!(parsed.memory, expected);
        assert_eq!(parsed.exported_id, Some(7));
    }

    #[test]
    fn created_at_round_trips_at_millisecond_precision() {
        let cases = [
            0,
            1,
            -1,
            999,
            -999,
            1_764_520_466_123,
            -62_135_596_800_000, // 0001-01-01
            jiff::Timestamp::MIN.as_second() * 1000,
            jiff::Timestamp::MAX.as_second() * 1000,
            i64::from(u32::MAX) * 7 + 13,
        ];
        for ms in cases {
            let text = Rfc3339Millis::new(1, ms).expect("in range").to_string();
            assert_eq!(parse_time(&text), Ok(ms), "{ms} written as {text}");
            if (-62_135_596_800_000..=jiff::Timestamp::MAX.as_second() * 1000).contains(&ms) {
                assert_eq!(text.len(), "2025-11-30T16:34:26.123Z".len(), "{text}");
            }
        }
        assert!(matches!(
            Rfc3339Millis::new(9, i64::MAX),
            Err(TransferError::TimeOutOfRange { id: 9, .. })
        ));
    }

    #[test]
    fn created_at_with_an_offset_or_finer_digits_becomes_utc_milliseconds() {
        assert_eq!(
            parse_time("2025-11-30T18:34:26.123+02:00"),
            parse_time("2025-11-30T16:34:26.123Z")
        );
        assert_eq!(parse_time("1970-01-01T00:00:00.0019Z"), Ok(1));
        assert_eq!(
            parse_time("1969-12-31T23:59:59.9991Z"),
            Ok(-1),
            "floored, not truncated"
        );
        for bad in ["yesterday", "2025-11-30", "2025-11-30T16:34:26", "2025-13-01T00:00:00Z"] {
            let reason = refused(&format!(r#"{{"text": "t", "created_at": "{bad}"}}"#));
            assert!(reason.contains("is not an RFC 3339 time"), "{bad}: {reason}");
        }
    }

    #[test]
    fn an_unknown_field_is_an_error_that_names_it() {
        let reason = refused(r#"{"text": "t", "nameSpace": "agent"}"#);
        assert!(reason.contains("unknown field `nameSpace`"), "{reason}");
        assert!(!reason.contains("at line"), "our line numbers, not serde's: {reason}");
    }

    #[test]
    fn missing_text_wrong_types_and_non_finite_numbers_are_bad_lines() {
        for (line, wanted) in [
            (r#"{"namespace": "a"}"#, "missing field `text`"),
            (r#"{"text": 3}"#, "invalid type"),
            (r#"{"text": "t", "importance": "high"}"#, "invalid type"),
            (r#"{"text": "t", "vector": [1, "x"]}"#, "invalid type"),
            (r#"{"text": "t", "vector": [1, 1e39]}"#, "vector[1] is not a finite"),
            (r#"{"text": "t", "importance": 1e39}"#, "importance is not a finite"),
            (r#"{"text": "t", "namespace": ""}"#, "the namespace is empty"),
            (r#"{"text": "t""#, "EOF"),
            ("[1, 2]", "invalid type"),
            (r#"{"text": "t"} trailing"#, "trailing characters"),
        ] {
            let reason = refused(line);
            assert!(reason.contains(wanted), "{line}: {reason}");
        }
    }

    #[test]
    fn the_duplicate_tag_is_dropped_and_kept_as_a_hint() {
        let parsed =
            parse(r#"{"id": 12, "text": "t", "tags": {"a": "1", "nexus.duplicate_of": "5", "nexus.chunk": "0/2"}}"#);
        assert_eq!(parsed.memory.tags, vec![tag("a", "1"), tag("nexus.chunk", "0/2")]);
        assert_eq!((parsed.exported_id, parsed.duplicate_of), (Some(12), Some(5)));
    }

    /// A xorshift generator: reproducible inputs without a dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn vector_components_round_trip_bit_for_bit() {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::MIN,
            f32::EPSILON,
            1e-45,
            -0.0,
            0.1,
            1.0 / 3.0,
        ];
        while values.len() < 200_000 {
            let value = f32::from_bits(xorshift(&mut state) as u32);
            if value.is_finite() {
                values.push(value);
            }
        }
        for chunk in values.chunks(1000) {
            let memory = StoredMemory {
                vector: Some(chunk.to_vec()),
                ..stored(Vec::new())
            };
            let back = parse(&line_of(&memory)).memory.vector.expect("a vector");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(chunk));
        }
    }

    #[test]
    fn the_estimate_is_never_below_the_encoded_size() {
        let memories = [
            MemoryInput::new("n", ""),
            MemoryInput::new("a namespace", "a text of some length ünïcödé"),
            MemoryInput {
                key: Some("k".into()),
                source: Some("s".into()),
                vector: Some(vec![0.5; 384]),
                tags: (0..32).map(|i| tag(&format!("key{i}"), "v")).collect(),
                ..MemoryInput::new("n", "t")
            },
        ];
        for count in [1, 10, 1000] {
            for memory in &memories {
                let batch = vec![memory.clone(); count];
                let estimate: usize = batch.iter().map(estimate_bytes).sum();
                let encoded = nexus_client::wire::encode_to_vec(&remember_request(batch)).len();
                assert!(
                    REQUEST_ENVELOPE_BYTES + estimate >= encoded,
                    "{count} x {memory:?}: {estimate} < {encoded}"
                );
            }
        }
    }

    fn read_all(input: &[u8], capacity: usize) -> Vec<(u64, LineKind, Vec<u8>)> {
        let mut reader = LineReader::new(io::BufReader::with_capacity(capacity, input));
        let mut lines = Vec::new();
        while let Some(kind) = reader.next_line().expect("read") {
            lines.push((reader.number, kind, reader.buffer.clone()));
        }
        assert_eq!(reader.offset, input.len() as u64, "every byte consumed");
        lines
    }

    #[test]
    fn lines_are_numbered_with_crlf_blank_lines_and_a_byte_order_mark() {
        let input = b"\xEF\xBB\xBF{\"a\"}\r\n\n  \t\nlast";
        let lines = read_all(input, 3);
        let kinds: Vec<(u64, LineKind, &[u8])> = lines.iter().map(|(n, k, b)| (*n, *k, b.as_slice())).collect();
        assert_eq!(
            kinds,
            vec![
                (1, LineKind::Content, &b"{\"a\"}"[..]),
                (2, LineKind::Blank, &b""[..]),
                (3, LineKind::Blank, &b"  \t"[..]),
                (4, LineKind::Content, &b"last"[..]),
            ]
        );
        assert!(read_all(b"", 8).is_empty());
        assert_eq!(read_all(b"x\n", 8).len(), 1, "a final newline ends the last line");
    }

    #[test]
    fn a_line_over_the_limit_is_reported_by_number_without_being_kept() {
        let mut input = b"{\"text\": \"first\"}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 1));
        input.extend_from_slice(b"\n{\"text\": \"third\"}\n");
        let mut reader = LineReader::new(io::BufReader::with_capacity(64 << 10, input.as_slice()));
        assert_eq!(reader.next_line().expect("read"), Some(LineKind::Content));
        assert_eq!(reader.next_line().expect("read"), Some(LineKind::TooLong));
        assert_eq!(reader.number, 2);
        assert!(reader.buffer.capacity() <= MAX_LINE_BYTES, "not held whole");
        assert_eq!(reader.next_line().expect("read"), Some(LineKind::Content));
        assert_eq!(
            (reader.number, reader.buffer.as_slice()),
            (3, &b"{\"text\": \"third\"}"[..])
        );
    }

    #[test]
    fn a_refused_batch_retries_its_most_common_dimension_first_only_in_a_store_without_one() {
        let with = |dimension: usize| MemoryInput {
            vector: Some(vec![0.5; dimension]),
            ..MemoryInput::new("n", "t")
        };
        let memories = [with(3), MemoryInput::new("n", "no vector"), with(4), with(4)];
        assert_eq!(retry_order(&memories, || 0), vec![2, 3, 0, 1]);
        assert_eq!(
            retry_order(&memories, || 4),
            vec![0, 1, 2, 3],
            "the store's dimension is set"
        );
        assert_eq!(retry_order(&memories[1..], || panic!("not asked")), vec![0, 1, 2]);
        assert_eq!(
            retry_order(&[with(5), with(4), with(4), with(5)], || 0),
            vec![0, 3, 1, 2],
            "a tie: first seen"
        );
    }

    #[test]
    fn a_line_a_later_batch_replaced_is_not_retried() {
        let keyed = |key: &str| MemoryInput {
            key: Some(key.into()),
            ..MemoryInput::new("n", "t")
        };
        let mut batch = Batch::default();
        for (line, memory) in [keyed("a"), MemoryInput::new("n", "t"), keyed("b")]
            .into_iter()
            .enumerate()
        {
            batch.push(
                line as u64 + 1,
                Parsed {
                    memory,
                    exported_id: None,
                    duplicate_of: None,
                },
                1,
            );
        }
        let superseded = HashSet::from([("n".to_owned(), "b".to_owned()), ("other".to_owned(), "a".to_owned())]);
        drop_superseded(&mut batch, &superseded);
        assert_eq!(batch.lines, vec![1, 2]);
        assert_eq!(batch.memories[0].key.as_deref(), Some("a"));
    }

    #[test]
    fn output_errors_name_a_closed_pipe_apart() {
        let closed = output_error(TransferError::from_io(io::ErrorKind::BrokenPipe.into()), 3);
        assert!(closed.is_closed_pipe());
        assert!(matches!(closed, TransferError::ClosedPipe { written: 3 }));
        let full = output_error(TransferError::from_io(io::Error::from_raw_os_error(28)), 5);
        assert!(matches!(full, TransferError::Write { written: 5, .. }) && !full.is_closed_pipe());
    }

    #[test]
    fn the_progress_templates_are_valid() {
        for template in [BAR_TEMPLATE, SPINNER_TEMPLATE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
