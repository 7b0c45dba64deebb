//! A WAL record kept as its archived bytes: validated once, then read in place.
//!
//! Memories written since the last snapshot live in these records, the way
//! snapshot memories live in the snapshot's map: the state points at
//! `(record, index)` instead of holding an owned copy of each memory. A live
//! write encodes its record once, and the same bytes go to the WAL and into
//! the state; replay keeps each payload where it lies in the segment's memory
//! map and applies it without decoding or copying. So there is no per-field
//! allocation on either path.
//!
//! A record stays in memory while any memory in it is live (a batch of 1,000
//! with 999 forgotten keeps the whole batch), until a checkpoint moves the
//! live memories into the new snapshot; this is the price of one allocation
//! per record instead of several per memory.

use rkyv::api::high::HighSerializer;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

use crate::store::model::{ArchivedWalRecord, WalRecord, WalRecordRef};
use crate::store::wal::{KeptPayload, ReplayPayload};

/// Alignment of archived records (matches the WAL's payload alignment).
const ALIGN: usize = 16;

/// Bytes that are not an archived [`WalRecord`] (a WAL payload that passed
/// its checksum but not validation: a bug or a deliberately forged segment).
#[derive(Debug, thiserror::Error)]
#[error("the payload is not a valid WAL record: {0}")]
pub struct DamagedRecord(#[source] rkyv::rancor::Error);

/// An archived [`WalRecord`] whose bytes passed bytecheck validation.
pub struct LoggedRecord {
    /// Never mutated after validation.
    bytes: Bytes,
}

/// Where a record's bytes are.
enum Bytes {
    /// Encoded by this process (a live write), or copied.
    Owned(AlignedVec<ALIGN>),
    /// In a WAL segment's memory map (replay).
    Kept(KeptPayload),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(bytes) => bytes,
            Self::Kept(payload) => payload,
        }
    }
}

impl LoggedRecord {
    /// Encodes `record`. Not validated again (in release builds): rkyv's
    /// serializer output for a type is a valid archive of that type, which is
    /// the contract `rkyv::access_unchecked` relies on; validating it would be
    /// a second pass over every byte of a batch for nothing.
    pub fn encode(record: &WalRecord) -> Self {
        Self::serialized(record, owned_size_hint(record))
    }

    /// Encodes a Remember straight from borrowed memories (same bytes as the
    /// owned [`WalRecord`] would give; see [`WalRecordRef`]).
    pub fn encode_ref(record: &WalRecordRef<'_>) -> Self {
        let WalRecordRef::Remember(memories) = record;
        let hint = memories
            .iter()
            .map(|m| {
                let strings = [m.namespace, m.text, m.key.unwrap_or(""), m.source.unwrap_or("")];
                let tags = m.tags.iter().map(|t| (t.key, t.value));
                memory_size_hint(strings, tags, m.vector.map_or(0, <[_]>::len))
            })
            .sum::<usize>()
            .saturating_add(PER_ITEM_OVERHEAD);
        Self::serialized(record, hint)
    }

    fn serialized<T>(value: &T, size_hint: usize) -> Self
    where
        T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec<ALIGN>, ArenaHandle<'a>, rkyv::rancor::Error>>,
    {
        let buffer = AlignedVec::<ALIGN>::with_capacity(size_hint);
        let bytes = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(value, buffer)
            .expect("serializing into a growable buffer cannot fail");
        debug_assert!(
            rkyv::access::<ArchivedWalRecord, rkyv::rancor::Error>(&bytes).is_ok(),
            "rkyv's own output validates"
        );
        Self {
            bytes: Bytes::Owned(bytes),
        }
    }

    /// Validates a payload being replayed and keeps it where it lies.
    pub fn replayed(payload: &ReplayPayload<'_>) -> Result<Self, DamagedRecord> {
        if !(payload.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Self::copied(payload);
        }
        Self::validated(Bytes::Kept(payload.keep()))
    }

    /// Copies bytes (an archived `WalRecord`) and validates them.
    pub fn copied(payload: &[u8]) -> Result<Self, DamagedRecord> {
        let mut bytes = AlignedVec::<ALIGN>::with_capacity(payload.len());
        bytes.extend_from_slice(payload);
        Self::validated(Bytes::Owned(bytes))
    }

    /// The one way in for bytes this process did not just serialize.
    fn validated(bytes: Bytes) -> Result<Self, DamagedRecord> {
        rkyv::access::<ArchivedWalRecord, rkyv::rancor::Error>(&bytes).map_err(DamagedRecord)?;
        Ok(Self { bytes })
    }

    /// The record, read in place.
    pub fn record(&self) -> &ArchivedWalRecord {
        // SAFETY: `bytes` are a valid `ArchivedWalRecord`: either rkyv's own
        // serialization of a `WalRecord` (`encode`) or bytes that passed full
        // bytecheck validation (`validated`, used for everything else). They
        // do not change afterwards: owned bytes are private and only lent out as
        // `&[u8]`; kept WAL bytes are never rewritten (see `KeptPayload`).
        // Both are 16-aligned (`AlignedVec<16>`; `replayed` copies otherwise),
        // which meets the archive's alignment.
        unsafe { rkyv::access_unchecked::<ArchivedWalRecord>(&self.bytes) }
    }

    /// The encoded bytes (what the WAL writes).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true for a valid record; here for completeness.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl std::fmt::Debug for LoggedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedRecord")
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// Archive bytes per memory (and per record) beyond its strings and vector.
const PER_ITEM_OVERHEAD: usize = 128;

/// A close upper estimate of a record's archived size, so encoding does not
/// grow (and copy) its buffer: a batch of 1,000 memories is ~3 MB.
fn owned_size_hint(record: &WalRecord) -> usize {
    match record {
        WalRecord::Remember(memories) => memories
            .iter()
            .map(|m| {
                let strings = [
                    m.namespace.as_str(),
                    m.text.as_str(),
                    m.key.as_deref().unwrap_or(""),
                    m.source.as_deref().unwrap_or(""),
                ];
                let tags = m.tags.iter().map(|t| (t.key.as_str(), t.value.as_str()));
                memory_size_hint(strings, tags, m.vector.as_ref().map_or(0, Vec::len))
            })
            .sum::<usize>()
            .saturating_add(PER_ITEM_OVERHEAD),
        WalRecord::Forget(ids) => ids.len() * 8 + PER_ITEM_OVERHEAD,
        WalRecord::Feedback { .. } => PER_ITEM_OVERHEAD,
    }
}

/// A close upper estimate of one memory's archived size: its strings
/// (namespace, text, key, source), tags and vector, plus fixed overhead.
fn memory_size_hint<'a>(strings: [&str; 4], tags: impl Iterator<Item = (&'a str, &'a str)>, dimension: usize) -> usize {
    let strings: usize = strings.iter().map(|s| s.len()).sum();
    let tags: usize = tags.map(|(key, value)| key.len() + value.len() + 16).sum();
    strings + tags + dimension * 4 + PER_ITEM_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{ArchivedWalRecord, StoredMemory};

    fn remember(texts: &[&str]) -> WalRecord {
        WalRecord::Remember(
            texts
                .iter()
                .enumerate()
                .map(|(i, text)| StoredMemory {
                    id: i as u64 + 1,
                    key: None,
                    namespace: "ns".into(),
                    text: (*text).into(),
                    vector: Some(vec![0.5; 8]),
                    tags: vec![],
                    created_at_ms: 7,
                    importance: 1.0,
                    source: None,
                })
                .collect(),
        )
    }

    #[test]
    fn an_encoded_record_reads_back_in_place_and_from_a_payload_copy() {
        let record = remember(&["first", "second"]);
        let logged = LoggedRecord::encode(&record);
        let copied = LoggedRecord::copied(logged.bytes()).unwrap();
        for view in [&logged, &copied] {
            let ArchivedWalRecord::Remember(memories) = view.record() else {
                panic!("a Remember record")
            };
            assert_eq!(memories.len(), 2);
            assert_eq!(memories[1].text.as_str(), "second");
            assert_eq!(memories[1].id.to_native(), 2);
        }
        let back = rkyv::deserialize::<WalRecord, rkyv::rancor::Error>(copied.record()).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn a_remember_encoded_from_borrowed_memories_is_byte_identical_to_the_owned_one() {
        let mut record = remember(&["first", "a second, longer text than fits inline"]);
        if let WalRecord::Remember(memories) = &mut record {
            memories[0].key = Some("k".into());
            memories[0].source = Some("chat".into());
            memories[1].tags = vec![crate::store::model::StoredTag {
                key: "topic".into(),
                value: "travel".into(),
            }];
            memories[1].vector = None;
        }
        let owned = LoggedRecord::encode(&record);
        let ArchivedWalRecord::Remember(archived) = owned.record() else {
            panic!("a Remember record")
        };
        let borrowed = WalRecordRef::Remember(archived.iter().map(crate::store::model::MemoryRef::of).collect());
        let again = LoggedRecord::encode_ref(&borrowed);
        assert_eq!(again.bytes(), owned.bytes());
        assert!(LoggedRecord::copied(again.bytes()).is_ok());
    }

    #[test]
    fn damaged_payloads_are_refused_not_trusted() {
        let logged = LoggedRecord::encode(&remember(&["hello world"]));
        let mut bytes = logged.bytes().to_vec();
        let at = bytes
            .windows(11)
            .position(|w| w == b"hello world")
            .expect("the text is in the record");
        bytes[at] = 0xff; // no longer UTF-8
        let error = LoggedRecord::copied(&bytes).unwrap_err();
        assert!(error.to_string().starts_with("the payload is not a valid WAL record"));
        assert!(LoggedRecord::copied(&[]).is_err());
        assert!(LoggedRecord::copied(&[0xff; 3]).is_err());
    }
}
