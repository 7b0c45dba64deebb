//! Saving and loading the lexical and entity indexes: an rkyv archive behind
//! a checksummed header, validated once and read from a memory map. The
//! BM25 image holds each shard's arrays as they are in memory (forward index,
//! postings, tombstones), so a load is sequential copies plus one pass that
//! checks every index and recomputes lengths and statistics: no tokenizing,
//! no per-posting hashing.
//!
//! Image layout (little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic (one per kind of index)
//!      8     4  format version
//!     12     4  reserved, zero
//!     16     8  body length in bytes
//!     24     4  CRC32C of the body
//!     28     4  CRC32C of bytes 0..28
//!     32     …  body: the rkyv archive (16-byte aligned in the file)
//! ```
//!
//! A file is written under a temporary name, fsynced, renamed into place and
//! its directory fsynced, so a crash leaves the old file or the new one. A
//! damaged file is a typed [`ImageFault`]; the owner then rebuilds the index
//! from the store's documents ([`LexicalIndex::load_or_rebuild`]).
//!
//! Not here: when to save (the checkpoint's owner).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use memmap2::Mmap;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::recall::lexical::error::{ImageFault, LexicalError};
use crate::recall::lexical::index::{LexicalConfig, LexicalIndex};
use crate::recall::lexical::shard::{Shard, ShardParts};
use crate::recall::lexical::tokenizer::TermDict;

/// Header size; a multiple of 16 so the archive stays aligned.
pub(crate) const HEADER_BYTES: usize = 32;

const LEXICAL_MAGIC: [u8; 8] = *b"NXLEX\0\0\x01";
const LEXICAL_VERSION: u32 = 1;

/// The archived form of a [`LexicalIndex`]: live documents only.
#[derive(Archive, Serialize, Deserialize, Debug)]
struct LexicalImage {
    stemming: bool,
    /// 0 none, 1 Lucene, 2 Snowball.
    stop_words: u8,
    /// Term id → term.
    terms: Vec<String>,
    /// Surface form → term id.
    surfaces: Vec<SurfaceImage>,
    shards: Vec<ShardImage>,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
struct SurfaceImage {
    surface: String,
    term: u32,
}

/// One namespace's arrays.
#[derive(Archive, Serialize, Deserialize, Debug)]
struct ShardImage {
    namespace: String,
    parts: ShardParts,
}

/// How an index came to be: read from its file or rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadSource {
    /// The saved file was valid.
    Loaded,
    /// The file was missing or unusable (the reason), so the index was
    /// rebuilt from the documents.
    Rebuilt(String),
}

/// What [`LexicalIndex::load_or_rebuild`] did, for the start-up report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Loaded or rebuilt (and why).
    pub source: LoadSource,
    /// Time taken.
    pub elapsed: Duration,
}

impl LexicalIndex {
    /// The index as a self-checking image (header + archive).
    pub fn to_image(&self) -> Vec<u8> {
        let image = self.image();
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(&image).expect("archiving into memory cannot fail");
        frame(LEXICAL_MAGIC, LEXICAL_VERSION, &body)
    }

    /// An index from an image made by [`LexicalIndex::to_image`]; its
    /// tokenizer settings must be `config`'s.
    pub fn from_image(config: LexicalConfig, image: &[u8]) -> Result<Self, LexicalError> {
        config.validate()?;
        let body = open_frame(LEXICAL_MAGIC, LEXICAL_VERSION, image)?;
        with_aligned(body, |body| {
            let archived = rkyv::access::<ArchivedLexicalImage, rkyv::rancor::Error>(body)
                .map_err(|e| ImageFault::Invalid(e.to_string()))?;
            Self::from_archived(config, archived)
        })
    }

    /// Writes the image to `path` durably (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), LexicalError> {
        write_durably(path, &self.to_image())
    }

    /// Maps and loads the index saved at `path`.
    pub fn load(config: LexicalConfig, path: &Path) -> Result<Self, LexicalError> {
        let map = map_file(path)?;
        Self::from_image(config, &map)
    }

    /// The index saved at `path`, or, when it is missing, corrupt or built
    /// with other tokenizer settings, one rebuilt from `documents` (memory
    /// id, namespace, text). Only an invalid `config` is an error.
    pub fn load_or_rebuild<'a, I>(
        config: LexicalConfig,
        path: &Path,
        documents: impl FnOnce() -> I,
    ) -> Result<(Self, LoadReport), LexicalError>
    where
        I: IntoIterator<Item = (u64, &'a str, &'a str)>,
    {
        config.validate()?;
        let started = Instant::now();
        let (index, source) = match Self::load(config, path) {
            Ok(index) => (index, LoadSource::Loaded),
            Err(error) => (
                Self::rebuild(config, documents())?,
                LoadSource::Rebuilt(error.to_string()),
            ),
        };
        let elapsed = started.elapsed();
        Ok((index, LoadReport { source, elapsed }))
    }

    fn image(&self) -> LexicalImage {
        LexicalImage {
            stemming: self.config().tokenizer.stemming,
            stop_words: self.config().tokenizer.stop_words as u8,
            terms: self.dict.terms().map(str::to_owned).collect(),
            surfaces: self
                .dict
                .surfaces()
                .map(|(surface, term)| SurfaceImage {
                    surface: surface.to_owned(),
                    term,
                })
                .collect(),
            shards: self
                .shards
                .iter()
                .map(|(name, shard)| ShardImage {
                    namespace: name.to_string(),
                    parts: shard.to_parts(),
                })
                .collect(),
        }
    }

    fn from_archived(config: LexicalConfig, image: &ArchivedLexicalImage) -> Result<Self, LexicalError> {
        let saved = (image.stemming, image.stop_words);
        let wanted = (config.tokenizer.stemming, config.tokenizer.stop_words as u8);
        if saved != wanted {
            return Err(ImageFault::Invalid(format!(
                "built with (stemming, stop words) = {saved:?}, configured {wanted:?}"
            ))
            .into());
        }
        let dict = TermDict::from_parts(
            config.tokenizer.stemming,
            image.terms.iter().map(|t| t.as_str()),
            image.surfaces.iter().map(|s| (s.surface.as_str(), s.term.to_native())),
        )
        .ok_or_else(|| ImageFault::Invalid("a surface form names a term out of range".into()))?;
        let n_terms = dict.len();
        let mut index = Self::with_dict(config, dict);
        for shard in image.shards.iter() {
            index.load_shard(shard, n_terms)?;
        }
        Ok(index)
    }

    fn load_shard(&mut self, shard: &ArchivedShardImage, n_terms: usize) -> Result<(), LexicalError> {
        let namespace = shard.namespace.as_str();
        let invalid = |what: String| ImageFault::Invalid(format!("namespace {namespace:?}: {what}"));
        let parts =
            rkyv::deserialize::<ShardParts, rkyv::rancor::Error>(&shard.parts).map_err(|e| invalid(e.to_string()))?;
        let shard = Shard::from_parts(parts, n_terms).map_err(|fault| invalid(fault.to_string()))?;
        self.add_shard(namespace, shard)
            .map_err(|id| invalid(format!("memory {id} is in two namespaces")))?;
        Ok(())
    }
}

/// Header + `body`.
pub(crate) fn frame(magic: [u8; 8], version: u32, body: &[u8]) -> Vec<u8> {
    let mut image = Vec::with_capacity(HEADER_BYTES + body.len());
    image.extend_from_slice(&magic);
    image.extend_from_slice(&version.to_le_bytes());
    image.extend_from_slice(&0u32.to_le_bytes());
    image.extend_from_slice(&(body.len() as u64).to_le_bytes());
    image.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let header_crc = crc32c::crc32c(&image[..28]);
    image.extend_from_slice(&header_crc.to_le_bytes());
    image.extend_from_slice(body);
    image
}

/// The body of an image, once its header and checksums are verified.
pub(crate) fn open_frame(magic: [u8; 8], version: u32, image: &[u8]) -> Result<&[u8], ImageFault> {
    let header = image.get(..HEADER_BYTES).ok_or(ImageFault::Truncated {
        len: image.len() as u64,
        header: HEADER_BYTES as u64,
    })?;
    let field = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    if header[..8] != magic {
        return Err(ImageFault::BadMagic);
    }
    if crc32c::crc32c(&header[..28]) != field(28) {
        return Err(ImageFault::HeaderChecksum);
    }
    if field(8) != version {
        return Err(ImageFault::UnsupportedVersion {
            found: field(8),
            supported: version,
        });
    }
    let expected = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let body = &image[HEADER_BYTES..];
    if body.len() as u64 != expected {
        return Err(ImageFault::LengthMismatch {
            expected,
            found: body.len() as u64,
        });
    }
    let found = crc32c::crc32c(body);
    if found != field(24) {
        return Err(ImageFault::BodyChecksum {
            expected: field(24),
            found,
        });
    }
    Ok(body)
}

/// Runs `read` on `body` at the archive's alignment (copying it only if the
/// caller's buffer is not aligned, as a `Vec<u8>` may not be).
pub(crate) fn with_aligned<T>(body: &[u8], read: impl FnOnce(&[u8]) -> T) -> T {
    const ALIGN: usize = 16;
    if (body.as_ptr() as usize).is_multiple_of(ALIGN) {
        return read(body);
    }
    let mut aligned = AlignedVec::<ALIGN>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    read(&aligned)
}

/// Maps `path` read-only.
pub(crate) fn map_file(path: &Path) -> Result<Mmap, LexicalError> {
    let file = File::open(path).map_err(io("open", path))?;
    // SAFETY: index files are written once under a temporary name and
    // renamed into place ([`write_durably`]); nothing modifies or truncates
    // them afterwards, and the map lives only while the index is read.
    unsafe { Mmap::map(&file) }.map_err(io("mmap", path))
}

/// Writes `bytes` to `path` so a crash leaves the old file or the new one.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), LexicalError> {
    let temp = path.with_extension("tmp");
    let written = (|| {
        let mut file = File::create(&temp).map_err(io("create", &temp))?;
        file.write_all(bytes).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("fsync", &temp))?;
        std::fs::rename(&temp, path).map_err(io("rename", &temp))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LexicalError + 'a {
    move |source| LexicalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
