//! The memory model: what a stored memory is, what a client asks to store
//! ([`NewMemory`]), the WAL record bodies, and the limits every write is
//! checked against.
//!
//! Validation turns the [`NewMemory`]s of a Remember (borrowing the request's
//! bytes, which the handler already copied out of shared memory and
//! validated) into [`MemoryRef`]s still borrowing them, or a specific error
//! naming the offending field; `MemoryRef` and `WalRecordRef` serialize in
//! exactly the owned types' archived layout, so a WAL record is encoded
//! straight from the request. Nothing here touches disk (the WAL is `wal/`,
//! snapshots `snapshot.rs`) or decides ids (`ids.rs`); errors are `error.rs`.

use rkyv::rancor::{Fallible, Source};
use rkyv::rend::f32_le;
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, Map, SerializeWith};
use rkyv::{Archive, Deserialize, Place, Serialize};

use crate::store::error::{StoreError, Subject};

/// A label on a stored memory.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredTag {
    /// Label name.
    pub key: String,
    /// Label value.
    pub value: String,
}

/// A memory as the WAL and snapshots hold it (ids assigned, time resolved).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StoredMemory {
    /// Daemon-assigned, monotonic, never reused.
    pub id: u64,
    /// Client key for idempotent upsert (unique within a namespace).
    pub key: Option<String>,
    /// Scope.
    pub namespace: String,
    /// The text.
    pub text: String,
    /// Embedding (dimension fixed per store).
    pub vector: Option<Vec<f32>>,
    /// Labels.
    pub tags: Vec<StoredTag>,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Scoring weight.
    pub importance: f32,
    /// Provenance.
    pub source: Option<String>,
}

/// One WAL record. A client batch is one record: durable whole or not at all.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum WalRecord {
    /// Insert or replace (same id) these memories.
    Remember(Vec<StoredMemory>),
    /// Delete these ids (resolved from the request's filter before logging).
    Forget(Vec<u64>),
    /// A recalled memory was (not) useful.
    Feedback {
        /// The memory judged.
        memory_id: u64,
        /// The recall it came from.
        recall_request_id: u64,
        /// The judgement.
        useful: bool,
    },
}

/// Limits on writes and queries. Each bounds memory or time per request.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Bytes of text per memory (64 KiB: a long chunk; bigger belongs in chunking).
    pub max_text_bytes: usize,
    /// Tags per memory.
    pub max_tags: usize,
    /// Bytes of one tag key or value.
    pub max_tag_bytes: usize,
    /// Bytes of a namespace, key or source.
    pub max_name_bytes: usize,
    /// Largest vector dimension accepted (4096 covers common embedders).
    pub max_dimension: u32,
    /// Memories per Remember request.
    pub max_batch: usize,
    /// Results per Recall.
    pub max_k: u32,
    /// Ids per Forget.
    pub max_forget_ids: usize,
    /// Bytes of a recall's query text (64 KiB, a memory's largest text: any
    /// stored text can be used as a query). Recall's cost per memory does not
    /// grow with the query, but the query's term table does.
    pub max_query_bytes: usize,
    /// Dimension fixed by configuration (0: fixed by the first vector stored).
    pub dimension: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text_bytes: 64 * 1024,
            max_tags: 32,
            max_tag_bytes: 256,
            max_name_bytes: 256,
            max_dimension: 4096,
            max_batch: 10_000,
            max_k: 1000,
            max_forget_ids: 100_000,
            max_query_bytes: 64 * 1024,
            dimension: 0,
        }
    }
}

/// A memory a client asks to store, borrowing the request's bytes (nothing
/// is copied until the WAL record is encoded). Built by the handler from the
/// wire, or by a test.
#[derive(Debug, Clone, Default)]
pub struct NewMemory<'a> {
    /// Scope (required).
    pub namespace: &'a str,
    /// The text.
    pub text: &'a str,
    /// Client key for an idempotent upsert.
    pub key: Option<&'a str>,
    /// Embedding, little-endian as archived (read in place).
    pub vector: Option<&'a [f32_le]>,
    /// Labels.
    pub tags: Vec<TagRef<'a>>,
    /// When it happened, ms since the Unix epoch (default: when it is stored).
    pub created_at_ms: Option<i64>,
    /// Scoring weight.
    pub importance: f32,
    /// Provenance.
    pub source: Option<&'a str>,
}

/// Checks one memory of a batch and returns it, still borrowing the
/// request's bytes, without an id yet.
pub fn validate_memory<'a>(
    index: usize,
    input: NewMemory<'a>,
    limits: &Limits,
    now_ms: i64,
) -> Result<MemoryRef<'a>, StoreError> {
    let name = |field: &'static str, text: &str| check_len(index, field, text.len(), limits.max_name_bytes);
    if input.namespace.is_empty() {
        return Err(StoreError::EmptyNamespace { index });
    }
    name("namespace", input.namespace)?;
    check_len(index, "text", input.text.len(), limits.max_text_bytes)?;
    if let Some(key) = input.key {
        name("key", key)?;
    }
    if let Some(source) = input.source {
        name("source", source)?;
    }
    check_tags(index, &input.tags, limits)?;
    if !input.importance.is_finite() {
        return Err(StoreError::NotFinite {
            subject: Subject::Memory(index),
            field: "importance",
        });
    }
    if let Some(vector) = input.vector {
        let subject = Subject::Memory(index);
        check_vector_values(subject, vector.len(), vector.iter().map(|x| x.to_native()), limits)?;
    }
    Ok(MemoryRef {
        id: 0,
        key: input.key,
        namespace: input.namespace,
        text: input.text,
        vector: input.vector,
        tags: input.tags,
        created_at_ms: input.created_at_ms.unwrap_or(now_ms),
        importance: input.importance,
        source: input.source,
    })
}

/// A memory's tags: few enough, each short enough.
fn check_tags(index: usize, tags: &[TagRef<'_>], limits: &Limits) -> Result<(), StoreError> {
    if tags.len() > limits.max_tags {
        return Err(StoreError::TooManyTags {
            index,
            len: tags.len(),
            max: limits.max_tags,
        });
    }
    for tag in tags {
        check_len(index, "tag", tag.key.len().max(tag.value.len()), limits.max_tag_bytes)?;
    }
    Ok(())
}

/// A tag filter (of a recall or a Forget) of more tags than a memory may
/// carry matches nothing; refusing it bounds the work per memory.
pub fn check_filter_len(len: usize, limits: &Limits) -> Result<(), StoreError> {
    if len > limits.max_tags {
        return Err(StoreError::FilterTooLong {
            len,
            max: limits.max_tags,
        });
    }
    Ok(())
}

/// Checks a vector's values and size (not yet its match with the store's dimension).
pub fn check_vector(subject: Subject, vector: &[f32], limits: &Limits) -> Result<(), StoreError> {
    check_vector_values(subject, vector.len(), vector.iter().copied(), limits)
}

fn check_vector_values(
    subject: Subject,
    len: usize,
    mut values: impl Iterator<Item = f32>,
    limits: &Limits,
) -> Result<(), StoreError> {
    if len == 0 || len > limits.max_dimension as usize {
        return Err(StoreError::BadDimension {
            subject,
            got: len,
            max: limits.max_dimension,
        });
    }
    if values.any(|x| !x.is_finite()) {
        return Err(StoreError::NotFinite {
            subject,
            field: "vector",
        });
    }
    Ok(())
}

fn check_len(index: usize, field: &'static str, len: usize, max: usize) -> Result<(), StoreError> {
    if len > max {
        Err(StoreError::FieldTooLong { index, field, len, max })
    } else {
        Ok(())
    }
}

/// Archives a borrowed `&str` exactly as a `String` field archives
/// (`ArchivedString`), so a borrowed view can be written in an owned type's layout.
pub struct AsArchivedString;

impl<'a> ArchiveWith<&'a str> for AsArchivedString {
    type Archived = ArchivedString;
    type Resolver = StringResolver;

    fn resolve_with(field: &&'a str, resolver: StringResolver, out: Place<ArchivedString>) {
        ArchivedString::resolve_from_str(field, resolver, out);
    }
}

impl<'a, S> SerializeWith<&'a str, S> for AsArchivedString
where
    S: Fallible + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &&'a str, serializer: &mut S) -> Result<StringResolver, S::Error> {
        ArchivedString::serialize_from_str(field, serializer)
    }
}

/// Archives a borrowed slice exactly as a `Vec` field archives (`ArchivedVec`).
pub struct AsArchivedVec;

impl<'a, T: Archive> ArchiveWith<&'a [T]> for AsArchivedVec {
    type Archived = ArchivedVec<T::Archived>;
    type Resolver = VecResolver;

    fn resolve_with(field: &&'a [T], resolver: VecResolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(field.len(), resolver, out);
    }
}

impl<'a, T, S> SerializeWith<&'a [T], S> for AsArchivedVec
where
    T: Serialize<S>,
    S: Fallible + Allocator + Writer + ?Sized,
{
    fn serialize_with(field: &&'a [T], serializer: &mut S) -> Result<VecResolver, S::Error> {
        ArchivedVec::serialize_from_slice(field, serializer)
    }
}

/// A memory borrowed from archived bytes (a snapshot, a WAL record, a
/// request), serialized in exactly [`StoredMemory`]'s archived layout: writing
/// it needs no owned copy of its text, vector or tags.
#[derive(Archive, Serialize, Debug, Clone)]
#[rkyv(as = ArchivedStoredMemory, serialize_bounds(__S: Writer + Allocator, __S::Error: Source))]
pub struct MemoryRef<'a> {
    /// See [`StoredMemory`].
    #[rkyv(omit_bounds)]
    pub id: u64,
    #[rkyv(omit_bounds, with = Map<AsArchivedString>)]
    pub key: Option<&'a str>,
    #[rkyv(omit_bounds, with = AsArchivedString)]
    pub namespace: &'a str,
    #[rkyv(omit_bounds, with = AsArchivedString)]
    pub text: &'a str,
    #[rkyv(omit_bounds, with = Map<AsArchivedVec>)]
    pub vector: Option<&'a [f32_le]>,
    #[rkyv(omit_bounds)]
    pub tags: Vec<TagRef<'a>>,
    #[rkyv(omit_bounds)]
    pub created_at_ms: i64,
    #[rkyv(omit_bounds)]
    pub importance: f32,
    #[rkyv(omit_bounds, with = Map<AsArchivedString>)]
    pub source: Option<&'a str>,
}

/// A tag borrowed from archived bytes, in [`StoredTag`]'s archived layout.
#[derive(Archive, Serialize, Debug, Clone, Copy)]
#[rkyv(as = ArchivedStoredTag, serialize_bounds(__S: Writer + Allocator, __S::Error: Source))]
pub struct TagRef<'a> {
    #[rkyv(omit_bounds, with = AsArchivedString)]
    pub key: &'a str,
    #[rkyv(omit_bounds, with = AsArchivedString)]
    pub value: &'a str,
}

impl<'a> MemoryRef<'a> {
    /// A view of an archived memory.
    pub fn of(memory: &'a ArchivedStoredMemory) -> Self {
        Self {
            id: memory.id.to_native(),
            key: memory.key.as_ref().map(|k| k.as_str()),
            namespace: memory.namespace.as_str(),
            text: memory.text.as_str(),
            vector: memory.vector.as_ref().map(|v| v.as_slice()),
            tags: memory
                .tags
                .iter()
                .map(|t| TagRef {
                    key: t.key.as_str(),
                    value: t.value.as_str(),
                })
                .collect(),
            created_at_ms: memory.created_at_ms.to_native(),
            importance: memory.importance.to_native(),
            source: memory.source.as_ref().map(|s| s.as_str()),
        }
    }
}

/// A [`WalRecord`] borrowing its memories, serialized in exactly its archived
/// layout: a Remember is encoded straight from the request's archived bytes.
#[derive(Archive, Serialize, Debug, Clone)]
#[rkyv(as = ArchivedWalRecord, serialize_bounds(__S: Writer + Allocator, __S::Error: Source))]
pub enum WalRecordRef<'a> {
    /// See [`WalRecord::Remember`].
    Remember(#[rkyv(omit_bounds)] Vec<MemoryRef<'a>>),
}
