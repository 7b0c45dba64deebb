//! Immutable HNSW segments: a graph's flat arrays as one little-endian image,
//! built in memory or read in place from a memory-mapped file.
//!
//! File layout: a 128-byte header, then nine sections, each starting on a
//! 64-byte boundary (offsets follow from the header's counts, so they are
//! not stored), in this order:
//!
//! | section | type | count |
//! |---|---|---|
//! | codes | i8 | n·dim |
//! | scales | f32 | n |
//! | ids | u64 | n |
//! | levels | u8 | n |
//! | upper_offsets | u32 | n |
//! | l0 (count + links) | u32 | n·(m0+1) |
//! | upper (count + links) | u32 | n_upper |
//! | sorted_ids | u64 | n |
//! | sorted_locals | u32 | n |
//!
//! Header (all little-endian): magic `NXANNSEG` (0..8), version u32 (8),
//! header length u32 (12), dim (16), n (20), m (24), m0 (28), entry (32),
//! max_level (36), n_upper (40), reserved u32 (44), body length u64 (48),
//! body CRC32C u32 (56), zeros up to the header CRC32C u32 at 124 (over bytes
//! 0..124). `sorted_ids`/`sorted_locals` map an id to its node(s) so a delete
//! finds it by binary search without a hash map rebuilt at start-up.
//!
//! Loading checks, in order: length, magic, version, header checksum, the
//! counts against their limits, the body's length and checksum, then every
//! structure a search will follow (levels, offsets, link counts and targets,
//! finite scales, codes ≠ −128, the id table). A file that fails any check is
//! an [`AnnError::CorruptSegment`], never a panic; a file that passes can be
//! searched with no further checks. Written to a temp file, fsynced, renamed,
//! directory fsynced; a segment file is never modified afterwards (it may be
//! mapped). Tombstones are not in the file: they change, the file does not
//! (the owner re-applies deletes after loading).

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use memmap2::{Advice, Mmap, MmapMut};

use crate::recall::ann::bytes::{CACHE_LINE_BYTES, Plain, cast, cast_mut};
use crate::recall::ann::error::{AnnError, SegmentFault};
use crate::recall::ann::hnsw::{FlatGraph, GraphArrays, MAX_LEVEL, MAX_SEGMENT_NODES, NO_UPPER};

/// First bytes of a segment file.
pub const MAGIC: [u8; 8] = *b"NXANNSEG";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Header bytes (the body starts here, on a cache line).
pub const HEADER_BYTES: usize = 128;
/// Largest dimension a segment may have: keeps the i32 dot product of codes
/// exact (127² · 4096 < 2³¹ with a wide margin) and bounds a corrupt header.
pub const MAX_DIM: usize = 4096;
/// Largest `m` (links per node above level 0) a segment may have.
pub const MAX_M: usize = 128;

/// Offset of the header checksum (the header's last four bytes).
const HEADER_CRC_OFFSET: usize = HEADER_BYTES - 4;

/// An immutable graph segment plus its (mutable) tombstones.
pub struct Segment {
    bytes: Bytes,
    header: Header,
    layout: Layout,
    dead: Vec<AtomicU64>,
    dead_count: AtomicUsize,
}

/// The image: anonymous memory (built or copied here; page-aligned, backed
/// by huge pages where the kernel allows: a search touches ~600 random rows,
/// and with 4 KiB pages most of them also miss the TLB), or a file's map.
enum Bytes {
    Owned(Mmap),
    Mapped(Mmap),
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("n", &self.header.n)
            .field("dim", &self.header.dim)
            .field("dead", &self.dead_count())
            .field("mapped", &matches!(self.bytes, Bytes::Mapped(_)))
            .finish()
    }
}

/// The header's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    dim: u32,
    n: u32,
    m: u32,
    m0: u32,
    entry: u32,
    max_level: u32,
    n_upper: u32,
    body_len: u64,
    body_crc: u32,
}

/// Byte ranges of the sections, from the start of the image.
#[derive(Debug, Clone)]
struct Layout {
    codes: Range<usize>,
    scales: Range<usize>,
    ids: Range<usize>,
    levels: Range<usize>,
    upper_offsets: Range<usize>,
    l0: Range<usize>,
    upper: Range<usize>,
    sorted_ids: Range<usize>,
    sorted_locals: Range<usize>,
}

impl Segment {
    /// Opens and validates a segment file, mapping it.
    pub fn open(path: &Path) -> Result<Self, AnnError> {
        let io = |source| AnnError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: segment files are written once (temp file + rename) and never
        // modified or truncated afterwards (module docs), so the mapped bytes
        // do not change while mapped. Validation below covers any content.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(Bytes::Mapped(map)).map_err(|reason| corrupt(path, reason))
    }

    /// Validates an image held in memory (a copy is made, page-aligned).
    pub fn from_image(image: &[u8]) -> Result<Self, AnnError> {
        let mut bytes = anonymous(image.len())?;
        bytes.copy_from_slice(image);
        let bytes = bytes.make_read_only().map_err(in_memory)?;
        Self::parse(Bytes::Owned(bytes)).map_err(|reason| corrupt(Path::new(IN_MEMORY), reason))
    }

    /// Writes the image to `path` durably (temp file, fsync, rename, fsync of
    /// the directory).
    pub fn write_to(&self, path: &Path) -> Result<(), AnnError> {
        let io = |source| AnnError::Io {
            path: path.to_path_buf(),
            source,
        };
        let temp = temp_path(path);
        let mut file = File::create(&temp).map_err(io)?;
        file.write_all(self.image()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&temp, path).map_err(io)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)
    }

    /// The whole image: header and body, as written to a file.
    pub fn image(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Owned(map) | Bytes::Mapped(map) => map,
        }
    }

    /// Nodes, dead or alive.
    pub fn len(&self) -> usize {
        self.header.n as usize
    }

    /// Never true: a segment holds at least one node.
    pub fn is_empty(&self) -> bool {
        self.header.n == 0
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.header.dim as usize
    }

    /// Links per node above level 0.
    pub fn m(&self) -> usize {
        self.header.m as usize
    }

    /// Nodes deleted since it was built or loaded.
    pub fn dead_count(&self) -> usize {
        self.dead_count.load(Ordering::Relaxed)
    }

    /// Whether the image is a memory map of a file.
    pub fn is_mapped(&self) -> bool {
        matches!(self.bytes, Bytes::Mapped(_))
    }

    /// The graph, for searching.
    pub(crate) fn graph(&self) -> FlatGraph<'_> {
        let bytes = self.image();
        let layout = &self.layout;
        FlatGraph {
            dim: self.header.dim as usize,
            m: self.header.m as usize,
            m0: self.header.m0 as usize,
            codes: section(bytes, &layout.codes),
            scales: section(bytes, &layout.scales),
            ids: section(bytes, &layout.ids),
            levels: section(bytes, &layout.levels),
            upper_offsets: section(bytes, &layout.upper_offsets),
            l0: section(bytes, &layout.l0),
            upper: section(bytes, &layout.upper),
            entry: self.header.entry,
            max_level: self.header.max_level as u8,
        }
    }

    /// Whether node `local` is deleted (out of range counts as deleted).
    #[inline]
    pub(crate) fn is_dead(&self, local: u32) -> bool {
        let word = self.dead.get(local as usize / 64);
        // Relaxed: a delete sets the bit under the index's write lock, and a
        // search takes the read lock after it (that lock orders the two).
        word.is_none_or(|w| w.load(Ordering::Relaxed) & (1 << (local % 64)) != 0)
    }

    /// Marks node `local` deleted; true if it was alive.
    pub(crate) fn mark_dead(&self, local: u32) -> bool {
        let Some(word) = self.dead.get(local as usize / 64) else {
            return false;
        };
        let bit = 1 << (local % 64);
        let was_alive = word.fetch_or(bit, Ordering::Relaxed) & bit == 0;
        if was_alive {
            self.dead_count.fetch_add(1, Ordering::Relaxed);
        }
        was_alive
    }

    /// The nodes holding `id` (several only if all but one are dead).
    pub(crate) fn locals_of(&self, id: u64) -> impl Iterator<Item = u32> + '_ {
        let bytes = self.image();
        let sorted_ids: &[u64] = section(bytes, &self.layout.sorted_ids);
        let sorted_locals: &[u32] = section(bytes, &self.layout.sorted_locals);
        let start = sorted_ids.partition_point(|x| *x < id);
        let end = start + sorted_ids[start..].partition_point(|x| *x == id);
        sorted_locals.get(start..end).unwrap_or(&[]).iter().copied()
    }

    /// A segment of `arrays` (built by this process: trusted, not re-checked).
    pub(crate) fn from_arrays(arrays: &GraphArrays) -> Result<Self, AnnError> {
        let (entry, max_level) = arrays
            .entry
            .ok_or_else(|| AnnError::InvalidConfig("empty segment".into()))?;
        let too_large = || AnnError::SegmentTooLarge {
            max: MAX_SEGMENT_NODES,
            got: arrays.len(),
        };
        let mut header = Header {
            dim: u32::try_from(arrays.dim).map_err(|_| too_large())?,
            n: u32::try_from(arrays.len()).map_err(|_| too_large())?,
            m: arrays.m as u32,
            m0: arrays.m0 as u32,
            entry,
            max_level: u32::from(max_level),
            n_upper: u32::try_from(arrays.upper.len()).map_err(|_| too_large())?,
            body_len: 0,
            body_crc: 0,
        };
        let layout = Layout::of(&header).ok_or_else(too_large)?;
        let mut bytes = anonymous(layout.end())?;
        write_sections(&mut bytes, &layout, arrays);
        header.body_len = (layout.end() - HEADER_BYTES) as u64;
        header.body_crc = crc32c::crc32c(&bytes[HEADER_BYTES..]);
        header.write(&mut bytes);
        let bytes = bytes.make_read_only().map_err(in_memory)?;
        Ok(Self::with_parts(Bytes::Owned(bytes), header, layout))
    }

    fn with_parts(bytes: Bytes, header: Header, layout: Layout) -> Self {
        Self {
            dead: (0..(header.n as usize).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            dead_count: AtomicUsize::new(0),
            bytes,
            header,
            layout,
        }
    }

    fn parse(bytes: Bytes) -> Result<Self, SegmentFault> {
        let image = match &bytes {
            Bytes::Owned(map) | Bytes::Mapped(map) => map,
        };
        let header = Header::read(image)?;
        let layout = Layout::of(&header).ok_or_else(|| invalid("section sizes overflow"))?;
        let expected = layout.end() as u64;
        if header.body_len != expected - HEADER_BYTES as u64 || image.len() as u64 != expected {
            return Err(SegmentFault::LengthMismatch {
                expected,
                found: image.len() as u64,
            });
        }
        let found = crc32c::crc32c(&image[HEADER_BYTES..]);
        if found != header.body_crc {
            return Err(SegmentFault::BodyChecksum {
                expected: header.body_crc,
                found,
            });
        }
        validate(image, &header, &layout)?;
        Ok(Self::with_parts(bytes, header, layout))
    }
}

/// Every structure a search follows, checked once.
fn validate(image: &[u8], header: &Header, layout: &Layout) -> Result<(), SegmentFault> {
    let typed = |range: &Range<usize>| range.end <= image.len() && range.start.is_multiple_of(CACHE_LINE_BYTES);
    let ranges = [
        &layout.codes,
        &layout.scales,
        &layout.ids,
        &layout.l0,
        &layout.sorted_ids,
    ];
    if !ranges.into_iter().all(typed) || !(image.as_ptr() as usize).is_multiple_of(8) {
        return Err(invalid("misaligned image"));
    }
    let graph = FlatGraph {
        dim: header.dim as usize,
        m: header.m as usize,
        m0: header.m0 as usize,
        codes: section(image, &layout.codes),
        scales: section(image, &layout.scales),
        ids: section(image, &layout.ids),
        levels: section(image, &layout.levels),
        upper_offsets: section(image, &layout.upper_offsets),
        l0: section(image, &layout.l0),
        upper: section(image, &layout.upper),
        entry: header.entry,
        max_level: header.max_level as u8,
    };
    validate_values(&graph)?;
    validate_links(&graph)?;
    validate_id_table(
        &graph,
        section(image, &layout.sorted_ids),
        section(image, &layout.sorted_locals),
    )
}

impl Header {
    fn read(image: &[u8]) -> Result<Self, SegmentFault> {
        if image.len() < HEADER_BYTES {
            return Err(SegmentFault::Truncated {
                len: image.len() as u64,
                header: HEADER_BYTES as u64,
            });
        }
        if image[..8] != MAGIC {
            return Err(SegmentFault::BadMagic);
        }
        let u32_at = |offset: usize| u32::from_le_bytes(image[offset..offset + 4].try_into().expect("4 bytes"));
        if u32_at(8) != VERSION {
            return Err(SegmentFault::UnsupportedVersion {
                found: u32_at(8),
                supported: VERSION,
            });
        }
        if crc32c::crc32c(&image[..HEADER_CRC_OFFSET]) != u32_at(HEADER_CRC_OFFSET) {
            return Err(SegmentFault::HeaderChecksum);
        }
        let header = Self {
            dim: u32_at(16),
            n: u32_at(20),
            m: u32_at(24),
            m0: u32_at(28),
            entry: u32_at(32),
            max_level: u32_at(36),
            n_upper: u32_at(40),
            body_len: u64::from_le_bytes(image[48..56].try_into().expect("8 bytes")),
            body_crc: u32_at(56),
        };
        header.check_limits(u32_at(12))?;
        Ok(header)
    }

    fn check_limits(&self, header_len: u32) -> Result<(), SegmentFault> {
        let in_range = |value: u32, low: usize, high: usize| (low..=high).contains(&(value as usize));
        let problem = if header_len as usize != HEADER_BYTES {
            Some(format!("header length {header_len}, expected {HEADER_BYTES}"))
        } else if !in_range(self.dim, 1, MAX_DIM) {
            Some(format!("dimension {} outside 1..={MAX_DIM}", self.dim))
        } else if !in_range(self.m, 2, MAX_M) || !in_range(self.m0, self.m as usize, 2 * MAX_M) {
            Some(format!(
                "m {} / m0 {} outside 2..={MAX_M} / m..={}",
                self.m,
                self.m0,
                2 * MAX_M
            ))
        } else if !in_range(self.n, 1, MAX_SEGMENT_NODES) || self.entry >= self.n {
            Some(format!("{} nodes with entry {}", self.n, self.entry))
        } else if self.max_level > u32::from(MAX_LEVEL) {
            Some(format!("max level {} above {MAX_LEVEL}", self.max_level))
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(SegmentFault::Invalid(p)))
    }

    fn write(&self, image: &mut [u8]) {
        let header = &mut image[..HEADER_BYTES];
        header.fill(0);
        header[..8].copy_from_slice(&MAGIC);
        let fields = [
            (8, VERSION),
            (12, HEADER_BYTES as u32),
            (16, self.dim),
            (20, self.n),
            (24, self.m),
            (28, self.m0),
            (32, self.entry),
            (36, self.max_level),
            (40, self.n_upper),
            (56, self.body_crc),
        ];
        for (offset, value) in fields {
            header[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        }
        header[48..56].copy_from_slice(&self.body_len.to_le_bytes());
        let crc = crc32c::crc32c(&header[..HEADER_CRC_OFFSET]);
        header[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    }
}

impl Layout {
    /// Section ranges for `header`'s counts; None on overflow.
    fn of(header: &Header) -> Option<Self> {
        let n = header.n as usize;
        let mut cursor = HEADER_BYTES;
        let mut next = |bytes: usize| -> Option<Range<usize>> {
            let start = cursor.checked_next_multiple_of(CACHE_LINE_BYTES)?;
            cursor = start.checked_add(bytes)?;
            Some(start..cursor)
        };
        Some(Self {
            codes: next(n.checked_mul(header.dim as usize)?)?,
            scales: next(n.checked_mul(4)?)?,
            ids: next(n.checked_mul(8)?)?,
            levels: next(n)?,
            upper_offsets: next(n.checked_mul(4)?)?,
            l0: next(n.checked_mul(header.m0 as usize + 1)?.checked_mul(4)?)?,
            upper: next((header.n_upper as usize).checked_mul(4)?)?,
            sorted_ids: next(n.checked_mul(8)?)?,
            sorted_locals: next(n.checked_mul(4)?)?,
        })
    }

    fn end(&self) -> usize {
        self.sorted_locals.end
    }
}

/// The section at `range` as `[T]`; empty if it does not cast (which
/// validation rules out before any search).
fn section<'a, T: Plain>(image: &'a [u8], range: &Range<usize>) -> &'a [T] {
    image.get(range.clone()).and_then(cast).unwrap_or(&[])
}

fn write_sections(image: &mut [u8], layout: &Layout, arrays: &GraphArrays) {
    fn put<T: Plain>(image: &mut [u8], range: &Range<usize>, values: &[T]) {
        let target = cast_mut::<T>(&mut image[range.clone()]).expect("sections are aligned for their type");
        target.copy_from_slice(values);
    }
    let mut sorted: Vec<(u64, u32)> = arrays
        .ids
        .iter()
        .enumerate()
        .map(|(local, id)| (*id, local as u32))
        .collect();
    sorted.sort_unstable();
    let sorted_ids: Vec<u64> = sorted.iter().map(|(id, _)| *id).collect();
    let sorted_locals: Vec<u32> = sorted.iter().map(|(_, local)| *local).collect();
    put(image, &layout.codes, &arrays.codes);
    put(image, &layout.scales, &arrays.scales);
    put(image, &layout.ids, &arrays.ids);
    put(image, &layout.levels, &arrays.levels);
    put(image, &layout.upper_offsets, &arrays.upper_offsets);
    put(image, &layout.l0, &arrays.l0);
    put(image, &layout.upper, &arrays.upper);
    put(image, &layout.sorted_ids, &sorted_ids);
    put(image, &layout.sorted_locals, &sorted_locals);
}

/// Scales finite and non-negative, codes never −128 (the SIMD kernel's
/// precondition), every array of the length the header implies.
fn validate_values(graph: &FlatGraph<'_>) -> Result<(), SegmentFault> {
    let n = graph.len();
    let lengths_ok = graph.codes.len() == n * graph.dim
        && graph.ids.len() == n
        && graph.levels.len() == n
        && graph.upper_offsets.len() == n
        && graph.l0.len() == n * (graph.m0 + 1);
    if !lengths_ok {
        return Err(invalid("section lengths disagree with the header"));
    }
    if let Some(node) = graph.scales.iter().position(|s| !s.is_finite() || *s < 0.0) {
        return Err(SegmentFault::Invalid(format!(
            "node {node}: bad scale {}",
            graph.scales[node]
        )));
    }
    if let Some(at) = graph.codes.iter().position(|c| *c == i8::MIN) {
        return Err(SegmentFault::Invalid(format!("node {}: code -128", at / graph.dim)));
    }
    Ok(())
}

/// Levels, upper offsets, link counts and targets: what a search follows.
fn validate_links(graph: &FlatGraph<'_>) -> Result<(), SegmentFault> {
    let n = graph.len();
    if graph.levels.get(graph.entry as usize) != Some(&graph.max_level) {
        return Err(invalid("entry node is not on the top level"));
    }
    for node in 0..n as u32 {
        let level = graph.levels[node as usize];
        let offset = graph.upper_offsets[node as usize];
        let block_end = offset as u64 + u64::from(level) * (graph.m as u64 + 1);
        let upper_ok = match level {
            0 => offset == NO_UPPER,
            _ => level <= graph.max_level && offset != NO_UPPER && block_end <= graph.upper.len() as u64,
        };
        if !upper_ok {
            return Err(SegmentFault::Invalid(format!(
                "node {node}: level {level} with upper offset {offset}"
            )));
        }
        for layer in 0..=level {
            validate_list(graph, node, layer)?;
        }
    }
    Ok(())
}

/// One list: its count within capacity, every target a node that exists on
/// that level.
fn validate_list(graph: &FlatGraph<'_>, node: u32, layer: u8) -> Result<(), SegmentFault> {
    let (start, capacity) = match layer {
        0 => (node as usize * (graph.m0 + 1), graph.m0),
        _ => (
            graph.upper_offsets[node as usize] as usize + (layer as usize - 1) * (graph.m + 1),
            graph.m,
        ),
    };
    let array = if layer == 0 { graph.l0 } else { graph.upper };
    let count = array[start] as usize;
    if count > capacity {
        return Err(SegmentFault::Invalid(format!(
            "node {node} level {layer}: {count} links, at most {capacity}"
        )));
    }
    let bad = array[start + 1..start + 1 + count]
        .iter()
        .find(|t| graph.levels.get(**t as usize).is_none_or(|l| *l < layer));
    match bad {
        Some(target) => Err(SegmentFault::Invalid(format!(
            "node {node} level {layer}: bad link to {target}"
        ))),
        None => Ok(()),
    }
}

/// The id table: sorted, each node once, agreeing with `ids`.
fn validate_id_table(graph: &FlatGraph<'_>, sorted_ids: &[u64], sorted_locals: &[u32]) -> Result<(), SegmentFault> {
    let n = graph.len();
    if sorted_ids.len() != n || sorted_locals.len() != n {
        return Err(invalid("id table length"));
    }
    if sorted_ids.windows(2).any(|w| w[0] > w[1]) {
        return Err(invalid("id table not sorted"));
    }
    let mut seen = vec![false; n];
    for (id, local) in sorted_ids.iter().zip(sorted_locals) {
        let local = *local as usize;
        if graph.ids.get(local) != Some(id) || std::mem::replace(&mut seen[local], true) {
            return Err(SegmentFault::Invalid(format!(
                "id table entry for id {id} names node {local}"
            )));
        }
    }
    Ok(())
}

/// Name used in errors about an image held in memory.
const IN_MEMORY: &str = "<memory>";

/// `len` zero bytes of anonymous memory, page-aligned, asked to be backed by
/// huge pages (best effort: the kernel may refuse, and searching works the
/// same, only slower).
fn anonymous(len: usize) -> Result<MmapMut, AnnError> {
    let map = MmapMut::map_anon(len.max(1)).map_err(in_memory)?;
    let _ = map.advise(Advice::HugePage);
    Ok(map)
}

fn in_memory(source: std::io::Error) -> AnnError {
    AnnError::Io {
        path: PathBuf::from(IN_MEMORY),
        source,
    }
}

fn invalid(reason: &str) -> SegmentFault {
    SegmentFault::Invalid(reason.to_owned())
}

fn corrupt(path: &Path, reason: SegmentFault) -> AnnError {
    AnnError::CorruptSegment {
        path: path.to_path_buf(),
        reason,
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
