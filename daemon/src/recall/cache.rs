//! The recall cache: answers already computed for a query, served again
//! without running the engines, and never served once a write could have
//! changed them.
//!
//! Two levels, both behind `&self` (the cache is `Send + Sync`, sharded so
//! concurrent recalls rarely meet on a lock):
//! - **L1 exact**: a [`CacheKey`] (the query text [`normalise`]d, the
//!   namespace, the filters — tags as a set, time range —, k, the route or
//!   engine choice, and a hash of the query vector's bits) → the answer.
//!   The key's 64-bit hash picks the shard and the slot; equality always
//!   compares the full key, never the hash alone.
//! - **L2 semantic**: on an L1 miss, among the answers cached for the same
//!   *scope* (the key without its text and vector: namespace, filters, k,
//!   route, vector given or not), the one whose query embedding is the most
//!   similar to the query's, if its cosine is at least
//!   [`CacheConfig::semantic_threshold`].
//!
//! # Freshness: epochs and the stamp rule
//!
//! [`Epochs`] counts writes: a counter per namespace, bumped after every
//! write to it, and a global one for writes that span namespaces. A
//! [`Stamp`] is the pair read by [`Epochs::current`]; every entry carries the
//! stamp it was computed under, and [`Cache::get`] serves an entry only if
//! its stamp equals the caller's current one (a stale entry is removed and
//! counted in [`CacheStats::stale`]).
//!
//! **The stamp rule: read the stamp BEFORE computing the answer, and insert
//! the answer under that stamp** (not under one read afterwards). A write
//! makes its memory visible to the engines and only then bumps the epoch, so
//! either the reader's stamp read saw the bump (then the compute that follows
//! sees the write), or it did not (then the answer is stored under the old
//! stamp, which no later lookup matches). Reading the stamp after computing
//! would let an answer that missed a write be stored under the new epoch and
//! served as fresh. `tests::concurrent_writes_never_serve_stale_answers`
//! checks this with writers, computing readers and lookups in parallel.
//!
//! A recall over every namespace ([`ALL_NAMESPACES`], the empty namespace)
//! gets a stamp that changes on a write to any namespace.
//!
//! # Use
//!
//! ```text
//! recall:  stamp = epochs.current(ns)              // first
//!          key = KeyRef::new(&parts)               // no allocation
//!          if let Some(hit) = cache.get(&key, embedding, stamp) { answer from hit }
//!          else { answer = engines(..); cache.insert(key.to_owned_key(), embedding, stamp, answer, bytes) }
//! write:   apply, make visible to every engine, then epochs.bump(ns) (or bump_all)
//! ```
//!
//! # Bounds and complexity
//!
//! - Entries and bytes: [`CacheConfig::max_entries`] and
//!   [`CacheConfig::max_bytes`] are never exceeded: each of the (up to 8)
//!   shards gets an equal share, rounded down, and evicts its least recently
//!   used entries past it (evictions are counted). An entry is charged the caller's byte estimate plus what the
//!   cache holds for it (key strings, embedding, bookkeeping); one larger than
//!   `max_bytes / 8` is not cached (it would flush an eighth of the cache).
//! - L2: at most [`MAX_SEMANTIC_PER_SCOPE`] embeddings per scope, most
//!   recent first, and only for entries still in L1, so L2 never holds more
//!   than L1.
//! - L1 operations are O(1) amortised (a hash map and an intrusive LRU list
//!   per shard); an L2 lookup is O(`MAX_SEMANTIC_PER_SCOPE` × dimension).
//! - [`Epochs`] holds one counter per namespace ever written; the store
//!   bounds namespaces. A lookup with a [`KeyRef`] allocates nothing (the
//!   text is normalised on the fly), so a cache hit can stay allocation-free.
//!
//! Not here: deciding when to consult the cache (the router), building
//! answers (the pipeline), bumping epochs on writes (whoever applies writes
//! calls [`Epochs::bump`]).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};

/// Embeddings kept per scope for the semantic level. A lookup compares the
/// query with every one of them (64 × 384 floats is about 25 k
/// multiply-adds, a few microseconds), so this bounds the cost of an L2 miss;
/// a scope's recent queries are the ones likely to be asked again.
pub const MAX_SEMANTIC_PER_SCOPE: usize = 64;

/// Shards of each level: enough that a handful of cores rarely meet on one
/// lock, few enough that each shard's share of the byte bound
/// (`max_bytes / 8`) still fits the largest admitted entry.
const MAX_SHARDS: usize = 8;

/// Smallest byte bound accepted: below this the cache could hold next to
/// nothing and would only cost time.
pub const MIN_MAX_BYTES: usize = 1024;

/// An entry charged more than `max_bytes / OVERSIZE_DIVISOR` is not cached:
/// one answer may not flush more than one shard's share of the cache.
pub const OVERSIZE_DIVISOR: usize = 8;

/// Bytes charged per entry on top of the caller's estimate and the key's
/// strings: the entry, its slot, its map cell and its reference count.
const ENTRY_OVERHEAD_BYTES: usize = 160;

/// Slack on the similarity comparison: an embedding compared with itself
/// gives 1.0 only up to rounding, and a threshold of 1.0 must still match it.
const SIMILARITY_EPSILON: f32 = 1e-6;

/// The namespace of a recall over every namespace: its stamp changes on a
/// write to any namespace.
pub const ALL_NAMESPACES: &str = "";

/// How the cache is bounded and whether its semantic level runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Entries held at most (split over the shards).
    pub max_entries: usize,
    /// Bytes charged at most (split over the shards).
    pub max_bytes: usize,
    /// Cosine similarity a cached query embedding needs to answer another
    /// query, in (0, 1].
    pub semantic_threshold: f32,
    /// Whether the semantic level (L2) runs at all.
    pub semantic: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 4096,
            max_bytes: 16 << 20,
            semantic_threshold: 0.95,
            semantic: true,
        }
    }
}

/// A [`CacheConfig`] field out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheConfigError {
    /// `semantic_threshold` is not in (0, 1].
    #[error("cache semantic_threshold must be in (0, 1], got {got}")]
    SemanticThreshold {
        /// The value given.
        got: f32,
    },
    /// `max_entries` is 0.
    #[error("cache max_entries must be at least 1, got 0")]
    MaxEntries,
    /// `max_bytes` is below [`MIN_MAX_BYTES`].
    #[error("cache max_bytes must be at least {min} bytes, got {got}")]
    MaxBytes {
        /// The value given.
        got: usize,
        /// The least accepted.
        min: usize,
    },
}

impl CacheConfig {
    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), CacheConfigError> {
        let threshold = self.semantic_threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(CacheConfigError::SemanticThreshold { got: threshold });
        }
        if self.max_entries == 0 {
            return Err(CacheConfigError::MaxEntries);
        }
        if self.max_bytes < MIN_MAX_BYTES {
            return Err(CacheConfigError::MaxBytes {
                got: self.max_bytes,
                min: MIN_MAX_BYTES,
            });
        }
        Ok(())
    }

    /// The largest charge an entry may have to be cached.
    pub fn max_entry_bytes(&self) -> usize {
        self.max_bytes / OVERSIZE_DIVISOR
    }
}

/// The write epochs of one namespace and of the whole store, read together
/// (see the module docs for how stamps keep answers fresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    namespace: u64,
    global: u64,
}

/// Write counters: one per namespace, one for writes spanning namespaces,
/// and one counting every write (the epoch of [`ALL_NAMESPACES`]).
#[derive(Debug, Default)]
pub struct Epochs {
    namespaces: RwLock<HashMap<String, AtomicU64>>,
    any_write: AtomicU64,
    global: AtomicU64,
}

impl Epochs {
    /// No writes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a write to `namespace`; call it after the write is visible to
    /// the engines. [`ALL_NAMESPACES`] bumps every namespace.
    pub fn bump(&self, namespace: &str) {
        if namespace == ALL_NAMESPACES {
            return self.bump_all();
        }
        // AcqRel: pairs with the Acquire loads in `current`, so a reader whose
        // stamp includes this bump also sees the write made before it.
        self.with_counter(namespace, |counter| counter.fetch_add(1, Ordering::AcqRel));
        self.any_write.fetch_add(1, Ordering::AcqRel);
    }

    /// Records a write that may touch every namespace (a batch across
    /// namespaces, a restore): every stamp changes.
    pub fn bump_all(&self) {
        // Pairs with the Acquire load of `global` in `current`.
        self.global.fetch_add(1, Ordering::AcqRel);
    }

    /// The stamp a recall of `namespace` reads before computing its answer.
    /// Takes a read lock and two or three atomic loads; allocates nothing.
    pub fn current(&self, namespace: &str) -> Stamp {
        // Acquire: pairs with the AcqRel increments in `bump`/`bump_all`.
        let namespace_epoch = if namespace == ALL_NAMESPACES {
            self.any_write.load(Ordering::Acquire)
        } else {
            let counters = self.namespaces.read().unwrap_or_else(PoisonError::into_inner);
            counters
                .get(namespace)
                .map_or(0, |counter| counter.load(Ordering::Acquire))
        };
        Stamp {
            namespace: namespace_epoch,
            global: self.global.load(Ordering::Acquire),
        }
    }

    /// Runs `f` on the counter of `namespace`, creating it at 0 if new.
    fn with_counter(&self, namespace: &str, f: impl FnOnce(&AtomicU64) -> u64) {
        // The map only ever gains counters and every counter is an atomic, so
        // a poisoned lock still guards a consistent map.
        {
            let counters = self.namespaces.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(counter) = counters.get(namespace) {
                f(counter);
                return;
            }
        }
        let mut counters = self.namespaces.write().unwrap_or_else(PoisonError::into_inner);
        f(counters.entry(namespace.to_owned()).or_default());
    }
}

/// Lowercases `text`, collapses runs of whitespace to one space and trims
/// it: queries differing only in case or spacing share an L1 entry.
pub fn normalise(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    // The sink never breaks, so the result is always Continue.
    let _ = normalised_pieces(text, |piece| {
        bytes.extend_from_slice(piece);
        ControlFlow::Continue(())
    });
    String::from_utf8(bytes).expect("whole lowercased characters are UTF-8")
}

/// Feeds the UTF-8 of `normalise(text)` to `sink` in pieces, allocating
/// nothing; stops early when `sink` breaks. ASCII words without capitals
/// (most query words) go through as they are.
fn normalised_pieces(text: &str, mut sink: impl FnMut(&[u8]) -> ControlFlow<()>) -> ControlFlow<()> {
    for (word_idx, word) in text.split_whitespace().enumerate() {
        if word_idx > 0 {
            sink(b" ")?;
        }
        if word.bytes().all(|byte| byte.is_ascii() && !byte.is_ascii_uppercase()) {
            sink(word.as_bytes())?;
        } else {
            lowercase_pieces(word, &mut sink)?;
        }
    }
    ControlFlow::Continue(())
}

/// Feeds the UTF-8 of `word` lowercased to `sink`, through a stack buffer.
fn lowercase_pieces(word: &str, sink: &mut impl FnMut(&[u8]) -> ControlFlow<()>) -> ControlFlow<()> {
    // Room for the longest lowercase mapping of one character (3 chars of
    // up to 4 bytes) after the buffer's flush threshold.
    const FLUSH_AT: usize = 48;
    let mut buffer = [0_u8; FLUSH_AT + 12];
    let mut filled = 0;
    for ch in word.chars() {
        if ch.is_ascii() {
            // Skips `to_lowercase`'s general mapping for the common case.
            buffer[filled] = ch.to_ascii_lowercase() as u8;
            filled += 1;
        } else {
            for lower in ch.to_lowercase() {
                filled += lower.encode_utf8(&mut buffer[filled..]).len();
            }
        }
        if filled >= FLUSH_AT {
            sink(&buffer[..filled])?;
            filled = 0;
        }
    }
    sink(&buffer[..filled])
}

/// True when `normalise(raw) == normalised`, without building the string.
fn normalises_to(raw: &str, normalised: &str) -> bool {
    let mut rest = normalised.as_bytes();
    let matched = normalised_pieces(raw, |piece| match rest.strip_prefix(piece) {
        Some(after) => {
            rest = after;
            ControlFlow::Continue(())
        }
        None => ControlFlow::Break(()),
    });
    matched.is_continue() && rest.is_empty()
}

/// What a recall's cache key is made of, borrowed from the request. Turn it
/// into a [`KeyRef`] to look up (no allocation) or a [`CacheKey`] to insert.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyParts<'a> {
    /// The query text as the client sent it (normalised by the key).
    pub text: &'a str,
    /// The namespace searched ([`ALL_NAMESPACES`] = all).
    pub namespace: &'a str,
    /// Required tags (key, value), in any order, duplicates allowed.
    pub tags: &'a [(&'a str, &'a str)],
    /// Creation time range `[start_ms, end_ms)`, if any.
    pub created: Option<(i64, i64)>,
    /// Results asked for.
    pub k: u32,
    /// The route or engine choice, encoded by the caller.
    pub route: u8,
    /// The query vector, if the client gave one.
    pub vector: Option<&'a [f32]>,
}

/// A key that can look up entries: a [`CacheKey`] or a [`KeyRef`].
pub trait LookupKey: sealed::Sealed {
    /// The full key's hash (shard and slot).
    fn key_hash(&self) -> u64;
    /// The scope's hash (the key without text and vector).
    fn scope_hash(&self) -> u64;
    /// True when `stored` is the same key (compares every field).
    fn matches(&self, stored: &CacheKey) -> bool;
    /// True when `stored` has the same scope (compares every scope field).
    fn matches_scope(&self, stored: &CacheKey) -> bool;
}

mod sealed {
    /// Only this module's key types can look up entries.
    pub trait Sealed {}
    impl Sealed for super::CacheKey {}
    impl Sealed for super::KeyRef<'_> {}
}

/// An owned cache key: the normalised text, the scope's fields (tags sorted
/// and deduplicated) and the precomputed hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    key_hash: u64,
    scope_hash: u64,
    text: Box<str>,
    namespace: Box<str>,
    tags: Box<[(Box<str>, Box<str>)]>,
    created: Option<(i64, i64)>,
    k: u32,
    route: u8,
    vector_hash: Option<u64>,
}

impl CacheKey {
    /// Builds the key of `parts` (normalises the text, sorts the tags).
    pub fn new(parts: &KeyParts<'_>) -> Self {
        KeyRef::new(parts).to_owned_key()
    }

    /// The normalised query text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Heap bytes the key holds (charged to its entry).
    fn heap_bytes(&self) -> usize {
        let tag_cells = self.tags.len() * size_of::<(Box<str>, Box<str>)>();
        let tag_texts: usize = self.tags.iter().map(|(key, value)| key.len() + value.len()).sum();
        self.text.len() + self.namespace.len() + tag_cells + tag_texts
    }

    /// True when the scope fields other than tags equal `stored`'s.
    fn same_plain_scope(&self, stored: &CacheKey) -> bool {
        self.namespace == stored.namespace
            && self.created == stored.created
            && self.k == stored.k
            && self.route == stored.route
            && self.vector_hash.is_some() == stored.vector_hash.is_some()
    }
}

impl LookupKey for CacheKey {
    fn key_hash(&self) -> u64 {
        self.key_hash
    }

    fn scope_hash(&self) -> u64 {
        self.scope_hash
    }

    fn matches(&self, stored: &CacheKey) -> bool {
        self == stored
    }

    fn matches_scope(&self, stored: &CacheKey) -> bool {
        self.scope_hash == stored.scope_hash && self.same_plain_scope(stored) && self.tags == stored.tags
    }
}

/// A borrowed cache key for lookups: hashes computed from the raw parts
/// (text normalised on the fly), so building one allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    key_hash: u64,
    scope_hash: u64,
    parts: KeyParts<'a>,
    vector_hash: Option<u64>,
}

impl<'a> KeyRef<'a> {
    /// Hashes `parts` (O(text + tags² + vector), no allocation).
    pub fn new(parts: &KeyParts<'a>) -> Self {
        let tag_hash = distinct_tags_hash(parts.tags);
        let scope = ScopeFields {
            namespace: parts.namespace,
            tag_hash,
            created: parts.created,
            k: parts.k,
            route: parts.route,
            has_vector: parts.vector.is_some(),
        };
        let scope_hash = scope.hash();
        let vector_hash = parts.vector.map(vector_bits_hash);
        let key_hash = key_hash(scope_hash, |feed| normalised_pieces(parts.text, feed), vector_hash);
        Self {
            key_hash,
            scope_hash,
            parts: *parts,
            vector_hash,
        }
    }

    /// The owned key, for an insert.
    pub fn to_owned_key(&self) -> CacheKey {
        let mut tags: Vec<(Box<str>, Box<str>)> = self
            .parts
            .tags
            .iter()
            .map(|&(key, value)| (key.into(), value.into()))
            .collect();
        tags.sort_unstable();
        tags.dedup();
        CacheKey {
            key_hash: self.key_hash,
            scope_hash: self.scope_hash,
            text: normalise(self.parts.text).into_boxed_str(),
            namespace: self.parts.namespace.into(),
            tags: tags.into_boxed_slice(),
            created: self.parts.created,
            k: self.parts.k,
            route: self.parts.route,
            vector_hash: self.vector_hash,
        }
    }

    /// True when this key's tags, as a set, equal `stored`'s (sorted, unique).
    fn same_tags(&self, stored: &CacheKey) -> bool {
        let found = |&(key, value): &(&str, &str)| {
            stored
                .tags
                .binary_search_by(|(k, v)| (&**k, &**v).cmp(&(key, value)))
                .is_ok()
        };
        distinct_tags(self.parts.tags).count() == stored.tags.len() && self.parts.tags.iter().all(found)
    }
}

impl LookupKey for KeyRef<'_> {
    fn key_hash(&self) -> u64 {
        self.key_hash
    }

    fn scope_hash(&self) -> u64 {
        self.scope_hash
    }

    fn matches(&self, stored: &CacheKey) -> bool {
        self.key_hash == stored.key_hash
            && self.vector_hash == stored.vector_hash
            && self.matches_scope(stored)
            && normalises_to(self.parts.text, &stored.text)
    }

    fn matches_scope(&self, stored: &CacheKey) -> bool {
        let parts = &self.parts;
        self.scope_hash == stored.scope_hash
            && parts.namespace == &*stored.namespace
            && parts.created == stored.created
            && parts.k == stored.k
            && parts.route == stored.route
            && parts.vector.is_some() == stored.vector_hash.is_some()
            && self.same_tags(stored)
    }
}

/// Which level answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The same normalised query and scope (L1).
    Exact,
    /// A similar query embedding in the same scope (L2).
    Semantic,
}

/// A cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<V> {
    /// The answer.
    pub value: V,
    /// The level that found it.
    pub level: Level,
    /// Cosine similarity of the query embeddings (1.0 for an exact hit).
    pub similarity: f32,
}

/// Counters since the cache was made, and its current size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered by L1.
    pub hits_exact: u64,
    /// Lookups answered by L2.
    pub hits_semantic: u64,
    /// Lookups answered by neither.
    pub misses: u64,
    /// Entries found under an old stamp and removed.
    pub stale: u64,
    /// Entries removed to respect the bounds.
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes charged now.
    pub bytes: u64,
}

/// The recall cache (see the module docs).
pub struct Cache<V> {
    config: CacheConfig,
    shard_mask: usize,
    shard_max_entries: usize,
    shard_max_bytes: usize,
    exact: Box<[ExactShard<V>]>,
    semantic: Box<[Mutex<Scopes<V>>]>,
}

impl<V: Clone> Cache<V> {
    /// An empty cache bounded by `config` (checked).
    pub fn new(config: CacheConfig) -> Result<Self, CacheConfigError> {
        config.validate()?;
        let n_shards = 1 << MAX_SHARDS.min(config.max_entries).ilog2();
        Ok(Self {
            shard_mask: n_shards - 1,
            shard_max_entries: config.max_entries / n_shards,
            shard_max_bytes: config.max_bytes / n_shards,
            exact: (0..n_shards).map(|_| ExactShard::default()).collect(),
            semantic: (0..n_shards).map(|_| Mutex::default()).collect(),
            config,
        })
    }

    /// The configuration the cache runs with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The answer cached for `key` under `stamp`: L1 first, then (with an
    /// `embedding`) L2. Entries under another stamp are never returned; they
    /// are removed and counted as stale.
    pub fn get<K: LookupKey + ?Sized>(&self, key: &K, embedding: Option<&[f32]>, stamp: Stamp) -> Option<Hit<V>> {
        let shard = self.exact_shard(key.key_hash());
        match shard.get(key, stamp) {
            Exact::Hit(value) => {
                shard.counters.hits_exact.fetch_add(1, Ordering::Relaxed);
                return Some(Hit {
                    value,
                    level: Level::Exact,
                    similarity: 1.0,
                });
            }
            Exact::Stale(entry) => {
                shard.counters.stale.fetch_add(1, Ordering::Relaxed);
                self.forget_semantic(&entry);
            }
            Exact::Absent => {}
        }
        let hit = embedding.and_then(|query| self.get_semantic(key, query, stamp));
        let counter = if hit.is_some() {
            &shard.counters.hits_semantic
        } else {
            &shard.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Caches `value` as the answer for `key`, computed under `stamp`.
    ///
    /// **`stamp` must be the one read BEFORE the answer was computed** (see
    /// the module docs): that is what makes a concurrent write invalidate it.
    /// `bytes` estimates the value's size; `embedding` is the query's (unit
    /// length, normalised again here), kept for L2. Returns false when the
    /// entry is too large to cache.
    pub fn insert(&self, key: CacheKey, embedding: Option<Vec<f32>>, stamp: Stamp, value: V, bytes: usize) -> bool {
        let embedding = embedding.filter(|_| self.config.semantic).and_then(unit_vector);
        let embedding_bytes = embedding.as_ref().map_or(0, |e| size_of_val::<[f32]>(e));
        let charge_bytes = [bytes, key.heap_bytes(), embedding_bytes, ENTRY_OVERHEAD_BYTES]
            .into_iter()
            .fold(0, usize::saturating_add);
        if charge_bytes > self.config.max_entry_bytes() {
            return false;
        }
        let entry = Arc::new(Entry {
            key,
            stamp,
            value,
            embedding,
            charge_bytes,
        });
        // L2 first: an entry evicted from L1 right after its insert is then
        // already in L2, where the eviction removes it (no orphan in L2).
        if entry.embedding.is_some() {
            self.remember_semantic(&entry);
        }
        let shard = self.exact_shard(entry.key.key_hash);
        let removed = shard.insert(entry, self.shard_max_entries, self.shard_max_bytes);
        for old in &removed {
            self.forget_semantic(old);
        }
        true
    }

    /// Whether an exact lookup of `key` under `stamp` would hit now; for the
    /// router. Touches no counter and no recency.
    pub fn predict<K: LookupKey + ?Sized>(&self, key: &K, stamp: Stamp) -> bool {
        let lru = self.exact_shard(key.key_hash()).lock();
        lru.find(key).is_some_and(|slot_idx| lru.entry(slot_idx).stamp == stamp)
    }

    /// Drops every entry (counters are kept).
    pub fn clear(&self) {
        // L1 before L2: an insert adds to L2 before L1, so an entry racing the
        // clear either survives in L1 or leaves no trace in L2.
        for shard in self.exact.iter() {
            *shard.lock() = Lru::default();
        }
        for scopes in self.semantic.iter() {
            lock_or_reset(scopes).clear();
        }
    }

    /// Counters and current size.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in self.exact.iter() {
            shard.counters.add_to(&mut stats);
            let lru = shard.lock();
            stats.entries += lru.len() as u64;
            stats.bytes += lru.bytes as u64;
        }
        stats
    }

    fn exact_shard(&self, key_hash: u64) -> &ExactShard<V> {
        // Truncation intended: the low bits pick the shard.
        &self.exact[key_hash as usize & self.shard_mask]
    }

    fn semantic_shard(&self, scope_hash: u64) -> MutexGuard<'_, Scopes<V>> {
        // The high bits, so a scope's shard is independent of key shards.
        lock_or_reset(&self.semantic[(scope_hash >> 32) as usize & self.shard_mask])
    }

    /// The most similar fresh entry of `key`'s scope, removing stale ones.
    fn get_semantic<K: LookupKey + ?Sized>(&self, key: &K, query: &[f32], stamp: Stamp) -> Option<Hit<V>> {
        if !self.config.semantic {
            return None;
        }
        let query_norm = dot(query, query).sqrt();
        if !(query_norm.is_finite() && query_norm > 0.0) {
            return None;
        }
        let (best, stale) = {
            let mut scopes = self.semantic_shard(key.scope_hash());
            let list = scopes.get_mut(&key.scope_hash())?;
            let found = self.scan_scope(list, key, query, query_norm, stamp);
            list.retain(|entry| !found.1.iter().any(|old| Arc::ptr_eq(old, entry)));
            found
        };
        for entry in &stale {
            self.remove_stale_exact(entry);
        }
        best.map(|(entry, similarity)| Hit {
            value: entry.value.clone(),
            level: Level::Semantic,
            similarity,
        })
    }

    /// Scans one scope list: the best entry at or above the threshold, and
    /// the entries of this scope under another stamp.
    fn scan_scope<K: LookupKey + ?Sized>(
        &self,
        list: &VecDeque<Arc<Entry<V>>>,
        key: &K,
        query: &[f32],
        query_norm: f32,
        stamp: Stamp,
    ) -> (Option<Scored<V>>, Vec<Arc<Entry<V>>>) {
        let mut best: Option<Scored<V>> = None;
        let mut stale = Vec::new();
        for entry in list {
            // Scope equality is checked only where it decides something: lists
            // are keyed by scope hash, so it almost always holds.
            if entry.stamp != stamp {
                if key.matches_scope(&entry.key) {
                    stale.push(Arc::clone(entry));
                }
                continue;
            }
            let Some(similarity) = entry.similarity(query, query_norm) else {
                continue;
            };
            let better = best
                .as_ref()
                .is_none_or(|(_, best_similarity)| similarity > *best_similarity);
            if similarity + SIMILARITY_EPSILON >= self.config.semantic_threshold
                && better
                && key.matches_scope(&entry.key)
            {
                best = Some((Arc::clone(entry), similarity.min(1.0)));
            }
        }
        (best, stale)
    }

    /// Removes `entry` from L1 if it is still there (found stale through L2).
    fn remove_stale_exact(&self, entry: &Arc<Entry<V>>) {
        let shard = self.exact_shard(entry.key.key_hash);
        if shard.lock().remove_if_same(entry) {
            shard.counters.stale.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds `entry` to its scope's L2 list, dropping the oldest past the bound.
    fn remember_semantic(&self, entry: &Arc<Entry<V>>) {
        let mut scopes = self.semantic_shard(entry.key.scope_hash);
        let list = scopes.entry(entry.key.scope_hash).or_default();
        list.push_front(Arc::clone(entry));
        list.truncate(MAX_SEMANTIC_PER_SCOPE);
    }

    /// Removes `entry` from L2 (it left L1).
    fn forget_semantic(&self, entry: &Arc<Entry<V>>) {
        if entry.embedding.is_none() {
            return;
        }
        let mut scopes = self.semantic_shard(entry.key.scope_hash);
        let Some(list) = scopes.get_mut(&entry.key.scope_hash) else {
            return;
        };
        if let Some(position) = list.iter().position(|other| Arc::ptr_eq(other, entry)) {
            list.remove(position);
        }
        if list.is_empty() {
            scopes.remove(&entry.key.scope_hash);
        }
    }
}

/// One cached answer, shared by L1 and (with an embedding) L2.
struct Entry<V> {
    key: CacheKey,
    stamp: Stamp,
    value: V,
    /// The query's embedding, unit length.
    embedding: Option<Box<[f32]>>,
    charge_bytes: usize,
}

impl<V> Entry<V> {
    /// Cosine between this entry's embedding and `query` (of norm
    /// `query_norm`); None without an embedding or with another dimension.
    fn similarity(&self, query: &[f32], query_norm: f32) -> Option<f32> {
        let embedding = self.embedding.as_deref().filter(|e| e.len() == query.len())?;
        Some(dot(embedding, query) / query_norm)
    }
}

/// An entry and its query's similarity to a lookup's.
type Scored<V> = (Arc<Entry<V>>, f32);

/// Per-scope L2 lists, keyed by scope hash (scopes whose hashes collide
/// share a list; lookups compare the full scope).
type Scopes<V> = HashMap<u64, VecDeque<Arc<Entry<V>>>, Prehashed>;

/// One L1 shard: its LRU and its share of the counters.
struct ExactShard<V> {
    lru: Mutex<Lru<V>>,
    counters: Counters,
}

impl<V> Default for ExactShard<V> {
    fn default() -> Self {
        Self {
            lru: Mutex::new(Lru::default()),
            counters: Counters::default(),
        }
    }
}

/// What an L1 lookup found.
enum Exact<V> {
    Hit(V),
    Stale(Arc<Entry<V>>),
    Absent,
}

impl<V: Clone> ExactShard<V> {
    fn lock(&self) -> MutexGuard<'_, Lru<V>> {
        lock_or_reset(&self.lru)
    }

    /// Looks `key` up; a hit becomes the most recent, a stale entry is removed.
    fn get<K: LookupKey + ?Sized>(&self, key: &K, stamp: Stamp) -> Exact<V> {
        let mut lru = self.lock();
        let Some(slot_idx) = lru.find(key) else {
            return Exact::Absent;
        };
        if lru.entry(slot_idx).stamp != stamp {
            return Exact::Stale(lru.remove(slot_idx));
        }
        lru.touch(slot_idx);
        Exact::Hit(lru.entry(slot_idx).value.clone())
    }

    /// Inserts `entry`, then evicts past the bounds; returns what left.
    fn insert(&self, entry: Arc<Entry<V>>, max_entries: usize, max_bytes: usize) -> Vec<Arc<Entry<V>>> {
        let mut lru = self.lock();
        let mut removed: Vec<_> = lru.insert(entry).into_iter().collect();
        let mut evictions = 0;
        while lru.len() > max_entries || lru.bytes > max_bytes {
            let Some(old) = lru.pop_oldest() else { break };
            removed.push(old);
            evictions += 1;
        }
        debug_assert!(lru.len() <= max_entries && lru.bytes <= max_bytes);
        self.counters.evictions.fetch_add(evictions, Ordering::Relaxed);
        removed
    }
}

/// A shard's share of the counters (summed by [`Cache::stats`]); kept per
/// shard so concurrent lookups do not all write one cache line.
#[derive(Default)]
struct Counters {
    hits_exact: AtomicU64,
    hits_semantic: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    evictions: AtomicU64,
}

impl Counters {
    fn add_to(&self, stats: &mut CacheStats) {
        stats.hits_exact += self.hits_exact.load(Ordering::Relaxed);
        stats.hits_semantic += self.hits_semantic.load(Ordering::Relaxed);
        stats.misses += self.misses.load(Ordering::Relaxed);
        stats.stale += self.stale.load(Ordering::Relaxed);
        stats.evictions += self.evictions.load(Ordering::Relaxed);
    }
}

/// No slot (end of the recency list).
const NIL: u32 = u32::MAX;

/// A slab of entries with a hash index and an intrusive recency list (most
/// recent at `head`). One entry per key hash: a full 64-bit collision between
/// two keys (keyed SipHash) makes the newer replace the older, and lookups
/// compare the full key, so a collision costs a miss, never a wrong answer.
struct Lru<V> {
    index: HashMap<u64, u32, Prehashed>,
    slots: Vec<Slot<V>>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    bytes: usize,
}

struct Slot<V> {
    entry: Option<Arc<Entry<V>>>,
    prev: u32,
    next: u32,
}

impl<V> Default for Lru<V> {
    fn default() -> Self {
        Self {
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
        }
    }
}

impl<V> Lru<V> {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn find<K: LookupKey + ?Sized>(&self, key: &K) -> Option<u32> {
        let slot_idx = *self.index.get(&key.key_hash())?;
        key.matches(&self.entry(slot_idx).key).then_some(slot_idx)
    }

    fn entry(&self, slot_idx: u32) -> &Arc<Entry<V>> {
        self.slots[slot_idx as usize]
            .entry
            .as_ref()
            .expect("indexed slots hold an entry")
    }

    /// Adds `entry` as the most recent; returns the entry it replaced.
    fn insert(&mut self, entry: Arc<Entry<V>>) -> Option<Arc<Entry<V>>> {
        let replaced = self
            .index
            .get(&entry.key.key_hash)
            .copied()
            .map(|slot_idx| self.remove(slot_idx));
        self.bytes += entry.charge_bytes;
        let key_hash = entry.key.key_hash;
        let slot = Slot {
            entry: Some(entry),
            prev: NIL,
            next: NIL,
        };
        let slot_idx = match self.free.pop() {
            Some(slot_idx) => {
                self.slots[slot_idx as usize] = slot;
                slot_idx
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("a shard holds fewer than 2^32 entries")
            }
        };
        self.index.insert(key_hash, slot_idx);
        self.push_front(slot_idx);
        self.debug_check();
        replaced
    }

    /// Takes the entry out of `slot_idx`.
    fn remove(&mut self, slot_idx: u32) -> Arc<Entry<V>> {
        self.unlink(slot_idx);
        let entry = self.slots[slot_idx as usize]
            .entry
            .take()
            .expect("removed slots hold an entry");
        self.index.remove(&entry.key.key_hash);
        self.free.push(slot_idx);
        self.bytes -= entry.charge_bytes;
        self.debug_check();
        entry
    }

    /// An empty recency list and a zero charge go with an empty index.
    fn debug_check(&self) {
        let empty = self.index.is_empty();
        debug_assert_eq!(empty, self.head == NIL, "head set iff entries");
        debug_assert_eq!(empty, self.tail == NIL, "tail set iff entries");
        debug_assert!(!empty || self.bytes == 0, "no entries, no bytes");
    }

    /// Removes `entry` if it is still the one cached for its key.
    fn remove_if_same(&mut self, entry: &Arc<Entry<V>>) -> bool {
        let Some(&slot_idx) = self.index.get(&entry.key.key_hash) else {
            return false;
        };
        let same = Arc::ptr_eq(self.entry(slot_idx), entry);
        if same {
            self.remove(slot_idx);
        }
        same
    }

    fn pop_oldest(&mut self) -> Option<Arc<Entry<V>>> {
        (self.tail != NIL).then(|| self.remove(self.tail))
    }

    /// Makes `slot_idx` the most recent.
    fn touch(&mut self, slot_idx: u32) {
        if self.head != slot_idx {
            self.unlink(slot_idx);
            self.push_front(slot_idx);
        }
    }

    fn push_front(&mut self, slot_idx: u32) {
        let old_head = self.head;
        let slot = &mut self.slots[slot_idx as usize];
        (slot.prev, slot.next) = (NIL, old_head);
        match old_head {
            NIL => self.tail = slot_idx,
            _ => self.slots[old_head as usize].prev = slot_idx,
        }
        self.head = slot_idx;
    }

    fn unlink(&mut self, slot_idx: u32) {
        let Slot { prev, next, .. } = self.slots[slot_idx as usize];
        match prev {
            NIL => self.head = next,
            _ => self.slots[prev as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            _ => self.slots[next as usize].prev = prev,
        }
    }
}

/// Hashing for maps keyed by a hash the cache already computed (keyed
/// SipHash, well mixed): the key is used as it is instead of hashed again.
type Prehashed = BuildHasherDefault<PrehashedHasher>;

#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this hasher; fold anything else in.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
}

/// Dot product over eight independent lanes, so the compiler can vectorise
/// it (a single running sum of floats cannot be reordered).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0.0_f32; LANES];
    for (a_chunk, b_chunk) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += a_chunk[lane] * b_chunk[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Locks `mutex`; if a panic poisoned it, starts that shard over empty (a
/// panic mid-update may have broken its links; a cache may always forget).
fn lock_or_reset<T: Default>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| {
        let mut guard = poisoned.into_inner();
        *guard = T::default();
        mutex.clear_poison();
        guard
    })
}

/// The scope fields hashed together.
struct ScopeFields<'a> {
    namespace: &'a str,
    tag_hash: (u64, usize),
    created: Option<(i64, i64)>,
    k: u32,
    route: u8,
    has_vector: bool,
}

impl ScopeFields<'_> {
    fn hash(&self) -> u64 {
        let mut hasher = hash_keys().build_hasher();
        self.namespace.hash(&mut hasher);
        self.tag_hash.hash(&mut hasher);
        (self.created, self.k, self.route, self.has_vector).hash(&mut hasher);
        hasher.finish()
    }
}

/// Keys of every hash the cache computes: random per process, so clients
/// cannot aim collisions at a shard.
fn hash_keys() -> &'static RandomState {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    KEYS.get_or_init(RandomState::new)
}

/// The key's hash: its scope's, its normalised text's, its vector's.
/// `text` feeds the normalised text's bytes in pieces of any size.
fn key_hash(
    scope_hash: u64,
    text: impl FnOnce(&mut dyn FnMut(&[u8]) -> ControlFlow<()>) -> ControlFlow<()>,
    vector_hash: Option<u64>,
) -> u64 {
    let mut hasher = hash_keys().build_hasher();
    scope_hash.hash(&mut hasher);
    let mut blocks = HashBlocks {
        hasher: &mut hasher,
        block: [0; HASH_BLOCK_BYTES],
        filled: 0,
    };
    // The sink never breaks, so the result is always Continue.
    let _ = text(&mut |piece| {
        blocks.push(piece);
        ControlFlow::Continue(())
    });
    blocks.finish();
    hasher.write_u8(0xff);
    vector_hash.hash(&mut hasher);
    hasher.finish()
}

/// Bytes per `write` when hashing a text: whatever pieces it arrives in, the
/// hasher sees the same fixed blocks, so the borrowed key (pieces of a
/// normalisation) and the owned key (one stored string) hash alike.
const HASH_BLOCK_BYTES: usize = 64;

/// Regroups pieces of bytes into fixed blocks for a hasher.
struct HashBlocks<'h, H: Hasher> {
    hasher: &'h mut H,
    block: [u8; HASH_BLOCK_BYTES],
    filled: usize,
}

impl<H: Hasher> HashBlocks<'_, H> {
    fn push(&mut self, mut piece: &[u8]) {
        while !piece.is_empty() {
            let taken = piece.len().min(HASH_BLOCK_BYTES - self.filled);
            self.block[self.filled..self.filled + taken].copy_from_slice(&piece[..taken]);
            (self.filled, piece) = (self.filled + taken, &piece[taken..]);
            if self.filled == HASH_BLOCK_BYTES {
                self.hasher.write(&self.block);
                self.filled = 0;
            }
        }
    }

    fn finish(self) {
        self.hasher.write(&self.block[..self.filled]);
    }
}

/// The tags in order, skipping repeats of an earlier tag (O(tags²): tag
/// filters are a handful long).
fn distinct_tags<'t>(tags: &'t [(&'t str, &'t str)]) -> impl Iterator<Item = &'t (&'t str, &'t str)> {
    tags.iter()
        .enumerate()
        .filter(|&(idx, tag)| !tags[..idx].contains(tag))
        .map(|(_, tag)| tag)
}

/// A hash of the tags as a set (order and repeats ignored), with its size.
fn distinct_tags_hash(tags: &[(&str, &str)]) -> (u64, usize) {
    distinct_tags(tags).fold((0, 0), |(sum, count), tag| {
        (sum.wrapping_add(hash_keys().hash_one(tag)), count + 1)
    })
}

/// A hash of a vector's bits (keyed: equal bits, equal hash; a client cannot
/// craft another vector with the same hash without the process's keys).
fn vector_bits_hash(vector: &[f32]) -> u64 {
    let mut hasher = hash_keys().build_hasher();
    hasher.write_usize(vector.len());
    for x in vector {
        hasher.write_u32(x.to_bits());
    }
    hasher.finish()
}

/// `vector` scaled to unit length; None if it is zero or not finite.
fn unit_vector(mut vector: Vec<f32>) -> Option<Box<[f32]>> {
    let norm = dot(&vector, &vector).sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return None;
    }
    vector.iter_mut().for_each(|x| *x /= norm);
    Some(vector.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicBool;

    /// An answer in the tests: the stamp it was computed under and the data
    /// version it saw.
    type Answer = (Stamp, u64);

    fn parts<'a>(text: &'a str, namespace: &'a str) -> KeyParts<'a> {
        KeyParts {
            text,
            namespace,
            k: 8,
            ..KeyParts::default()
        }
    }

    fn key(text: &str, namespace: &str) -> CacheKey {
        CacheKey::new(&parts(text, namespace))
    }

    fn cache() -> Cache<u64> {
        Cache::new(CacheConfig::default()).expect("default config is valid")
    }

    /// A unit vector in the plane of the first two axes at `angle` radians.
    fn embedding_at(angle: f32) -> Vec<f32> {
        let mut embedding = vec![0.0; 16];
        (embedding[0], embedding[1]) = (angle.cos(), angle.sin());
        embedding
    }

    /// Looks `parts` up borrowed (the allocation-free path) and owned, checks
    /// both agree, and returns the hit.
    #[track_caller]
    fn check_get(
        cache: &Cache<u64>,
        parts: &KeyParts<'_>,
        embedding: Option<&[f32]>,
        stamp: Stamp,
    ) -> Option<Hit<u64>> {
        let borrowed = cache.get(&KeyRef::new(parts), embedding, stamp);
        let owned = cache.get(&CacheKey::new(parts), embedding, stamp);
        assert_eq!(borrowed, owned, "borrowed and owned keys disagree");
        borrowed
    }

    #[test]
    fn exact_hit_returns_the_inserted_answer() {
        let (cache, epochs) = (cache(), Epochs::new());
        let stamp = epochs.current("work");
        assert!(cache.insert(key("where is the cat", "work"), None, stamp, 7, 100));
        let hit = check_get(&cache, &parts("where is the cat", "work"), None, stamp).expect("exact hit");
        assert_eq!((hit.value, hit.level, hit.similarity), (7, Level::Exact, 1.0));
        assert!(cache.predict(&KeyRef::new(&parts("where is the cat", "work")), stamp));
        let stats = cache.stats();
        assert_eq!((stats.hits_exact, stats.misses, stats.entries), (2, 0, 1));
    }

    #[test]
    fn case_and_whitespace_differences_hit_the_same_entry() {
        let (cache, stamp) = (cache(), Epochs::new().current("work"));
        cache.insert(key("Where is  the\tCAT ", "work"), None, stamp, 7, 100);
        assert_eq!(normalise("  Where is  the\tCAT \n"), "where is the cat");
        for text in ["where is the cat", "  WHERE IS THE CAT", "where\n\nis the   cat"] {
            let hit = check_get(&cache, &parts(text, "work"), None, stamp);
            assert_eq!(hit.map(|hit| hit.value), Some(7), "{text:?}");
        }
        assert!(check_get(&cache, &parts("where is the dog", "work"), None, stamp).is_none());
    }

    #[test]
    fn another_namespace_filter_k_route_or_vector_misses() {
        let (cache, epochs) = (cache(), Epochs::new());
        let tags = [("topic", "pets"), ("lang", "en")];
        let base = KeyParts {
            tags: &tags,
            created: Some((0, 100)),
            ..parts("cat", "work")
        };
        cache.insert(CacheKey::new(&base), None, epochs.current("work"), 7, 100);
        let vector = [0.5_f32, 0.5];
        let other_tags = [("topic", "cars")];
        let misses = [
            KeyParts {
                namespace: "home",
                ..base
            },
            KeyParts {
                tags: &other_tags,
                ..base
            },
            KeyParts { tags: &[], ..base },
            KeyParts {
                created: Some((0, 99)),
                ..base
            },
            KeyParts { created: None, ..base },
            KeyParts { k: 9, ..base },
            KeyParts { route: 2, ..base },
            KeyParts {
                vector: Some(&vector),
                ..base
            },
        ];
        for miss in &misses {
            let stamp = epochs.current(miss.namespace);
            assert_eq!(check_get(&cache, miss, None, stamp), None, "{miss:?}");
        }
        // Tags are a set: order and repeats do not matter.
        let same_tags = [("lang", "en"), ("topic", "pets"), ("lang", "en")];
        let hit = check_get(
            &cache,
            &KeyParts {
                tags: &same_tags,
                ..base
            },
            None,
            epochs.current("work"),
        );
        assert_eq!(hit.map(|hit| hit.value), Some(7));
    }

    #[test]
    fn the_same_vector_hits_and_another_vector_misses() {
        let (cache, stamp) = (cache(), Epochs::new().current("work"));
        let (vector, other) = ([0.25_f32, 0.5], [0.25_f32, 0.5000001]);
        let with_vector = KeyParts {
            vector: Some(&vector),
            ..parts("cat", "work")
        };
        cache.insert(CacheKey::new(&with_vector), None, stamp, 7, 100);
        assert_eq!(
            check_get(&cache, &with_vector, None, stamp).map(|hit| hit.value),
            Some(7)
        );
        let with_other = KeyParts {
            vector: Some(&other),
            ..with_vector
        };
        assert_eq!(check_get(&cache, &with_other, None, stamp), None);
    }

    #[test]
    fn a_similar_query_embedding_hits_above_the_threshold_and_misses_below() {
        let (cache, stamp) = (cache(), Epochs::new().current("work"));
        cache.insert(key("where is the cat", "work"), Some(embedding_at(0.0)), stamp, 7, 100);
        // cos(0.2) = 0.980 ≥ 0.95: the cached answer, marked semantic.
        let close = embedding_at(0.2);
        let hit = check_get(&cache, &parts("where's my cat", "work"), Some(&close), stamp).expect("semantic hit");
        assert_eq!((hit.value, hit.level), (7, Level::Semantic));
        assert!((hit.similarity - 0.2_f32.cos()).abs() < 1e-5, "{}", hit.similarity);
        // cos(0.4) = 0.921 < 0.95: a miss.
        let far = embedding_at(0.4);
        assert_eq!(
            check_get(&cache, &parts("where's my cat", "work"), Some(&far), stamp),
            None
        );
        // Without an embedding there is no semantic level.
        assert_eq!(check_get(&cache, &parts("where's my cat", "work"), None, stamp), None);
        let stats = cache.stats();
        assert_eq!((stats.hits_semantic, stats.misses), (2, 4));
    }

    #[test]
    fn the_most_similar_cached_query_wins() {
        let (cache, stamp) = (cache(), Epochs::new().current("work"));
        cache.insert(key("a", "work"), Some(embedding_at(0.25)), stamp, 1, 100);
        cache.insert(key("b", "work"), Some(embedding_at(0.05)), stamp, 2, 100);
        cache.insert(key("c", "work"), Some(embedding_at(-0.2)), stamp, 3, 100);
        let query = embedding_at(0.0);
        let hit = check_get(&cache, &parts("d", "work"), Some(&query), stamp).expect("semantic hit");
        assert_eq!(hit.value, 2);
    }

    #[test]
    fn a_semantic_match_never_crosses_scopes() {
        let (cache, epochs) = (cache(), Epochs::new());
        let tags = [("topic", "pets")];
        let base = KeyParts {
            tags: &tags,
            ..parts("where is the cat", "work")
        };
        let embedding = embedding_at(0.0);
        cache.insert(
            CacheKey::new(&base),
            Some(embedding.clone()),
            epochs.current("work"),
            7,
            100,
        );
        let vector = [1.0_f32];
        let other_scopes = [
            KeyParts {
                namespace: "home",
                ..base
            },
            KeyParts { tags: &[], ..base },
            KeyParts { k: 3, ..base },
            KeyParts { route: 1, ..base },
            KeyParts {
                created: Some((0, 1)),
                ..base
            },
            KeyParts {
                vector: Some(&vector),
                ..base
            },
        ];
        for other in &other_scopes {
            let other = KeyParts {
                text: "where's my cat",
                ..*other
            };
            let stamp = epochs.current(other.namespace);
            assert_eq!(check_get(&cache, &other, Some(&embedding), stamp), None, "{other:?}");
        }
        let same_scope = KeyParts {
            text: "where's my cat",
            ..base
        };
        let hit = check_get(&cache, &same_scope, Some(&embedding), epochs.current("work"));
        assert_eq!(hit.map(|hit| hit.level), Some(Level::Semantic));
    }

    #[test]
    fn semantic_off_in_the_config_means_exact_only() {
        let config = CacheConfig {
            semantic: false,
            ..CacheConfig::default()
        };
        let cache = Cache::<u64>::new(config).expect("valid");
        let stamp = Epochs::new().current("work");
        cache.insert(key("cat", "work"), Some(embedding_at(0.0)), stamp, 7, 100);
        let embedding = embedding_at(0.0);
        assert_eq!(
            check_get(&cache, &parts("a cat", "work"), Some(&embedding), stamp),
            None
        );
        assert_eq!(
            check_get(&cache, &parts("cat", "work"), None, stamp).map(|hit| hit.value),
            Some(7)
        );
    }

    #[test]
    fn a_write_to_the_namespace_makes_its_cached_answers_unservable() {
        let (cache, epochs) = (cache(), Epochs::new());
        let embedding = embedding_at(0.0);
        cache.insert(
            key("cat", "work"),
            Some(embedding.clone()),
            epochs.current("work"),
            7,
            100,
        );
        cache.insert(
            key("dog", "work"),
            Some(embedding_at(1.5)),
            epochs.current("work"),
            8,
            100,
        );
        cache.insert(key("cat", "home"), None, epochs.current("home"), 9, 100);
        epochs.bump("work");
        let stamp = epochs.current("work");
        assert!(!cache.predict(&key("cat", "work"), stamp));
        assert_eq!(check_get(&cache, &parts("cat", "work"), None, stamp), None);
        assert_eq!(
            check_get(&cache, &parts("a dog", "work"), Some(&embedding_at(1.5)), stamp),
            None
        );
        // The other namespace's answer is still served.
        let home = check_get(&cache, &parts("cat", "home"), None, epochs.current("home"));
        assert_eq!(home.map(|hit| hit.value), Some(9));
        let stats = cache.stats();
        assert_eq!((stats.stale, stats.entries), (2, 1), "stale entries are removed");
        // A fresh answer under the new stamp is served again.
        cache.insert(key("cat", "work"), Some(embedding), stamp, 10, 100);
        assert_eq!(
            check_get(&cache, &parts("cat", "work"), None, stamp).map(|hit| hit.value),
            Some(10)
        );
    }

    #[test]
    fn a_write_spanning_namespaces_makes_every_cached_answer_unservable() {
        let (cache, epochs) = (cache(), Epochs::new());
        cache.insert(key("cat", "work"), None, epochs.current("work"), 7, 100);
        cache.insert(key("cat", "home"), None, epochs.current("home"), 8, 100);
        epochs.bump_all();
        for namespace in ["work", "home"] {
            assert_eq!(
                check_get(&cache, &parts("cat", namespace), None, epochs.current(namespace)),
                None
            );
        }
    }

    #[test]
    fn a_recall_over_all_namespaces_is_invalidated_by_a_write_to_any() {
        let epochs = Epochs::new();
        let (all, work) = (epochs.current(ALL_NAMESPACES), epochs.current("work"));
        epochs.bump("home");
        assert_ne!(epochs.current(ALL_NAMESPACES), all);
        assert_eq!(
            epochs.current("work"),
            work,
            "another namespace's write keeps this stamp"
        );
        let all = epochs.current(ALL_NAMESPACES);
        epochs.bump(ALL_NAMESPACES);
        assert_ne!(epochs.current(ALL_NAMESPACES), all);
        assert_ne!(epochs.current("work"), work, "a bump of every namespace reaches each");
    }

    #[test]
    fn entries_and_bytes_stay_within_the_bounds_and_evictions_are_counted() {
        let config = CacheConfig {
            max_entries: 40,
            max_bytes: 8 * 1024,
            ..CacheConfig::default()
        };
        let cache = Cache::<u64>::new(config.clone()).expect("valid");
        let stamp = Epochs::new().current("work");
        let n_inserts = 500_u64;
        for n in 0..n_inserts {
            let bytes = (n as usize * 37) % 600;
            let embedding = (n % 2 == 0).then(|| embedding_at(n as f32));
            assert!(cache.insert(key(&format!("query {n}"), "work"), embedding, stamp, n, bytes));
            let stats = cache.stats();
            assert!(stats.entries <= config.max_entries as u64, "{stats:?}");
            assert!(stats.bytes <= config.max_bytes as u64, "{stats:?}");
        }
        let stats = cache.stats();
        assert_eq!(
            stats.evictions + stats.entries,
            n_inserts,
            "every insert is held or evicted"
        );
        assert!(stats.evictions > 0);
        // The latest insert is always kept.
        let last = format!("query {}", n_inserts - 1);
        assert_eq!(
            check_get(&cache, &parts(&last, "work"), None, stamp).map(|hit| hit.value),
            Some(n_inserts - 1)
        );
    }

    #[test]
    fn a_recently_read_entry_survives_eviction() {
        let cache = Cache::<u64>::new(CacheConfig {
            max_entries: 16,
            ..CacheConfig::default()
        })
        .expect("valid");
        let stamp = Epochs::new().current("work");
        assert_eq!(cache.shard_max_entries, 2);
        // Three keys of shard 0, which holds two.
        let keys: Vec<String> = (0..)
            .map(|n| format!("q{n}"))
            .filter(|text| key(text, "work").key_hash as usize & cache.shard_mask == 0)
            .take(3)
            .collect();
        cache.insert(key(&keys[0], "work"), None, stamp, 0, 10);
        cache.insert(key(&keys[1], "work"), None, stamp, 1, 10);
        assert!(check_get(&cache, &parts(&keys[0], "work"), None, stamp).is_some());
        cache.insert(key(&keys[2], "work"), None, stamp, 2, 10);
        assert!(cache.predict(&key(&keys[0], "work"), stamp), "read recently: kept");
        assert!(
            !cache.predict(&key(&keys[1], "work"), stamp),
            "least recently used: evicted"
        );
    }

    #[test]
    fn an_oversize_answer_is_not_cached() {
        let config = CacheConfig {
            max_bytes: 64 * 1024,
            ..CacheConfig::default()
        };
        let cache = Cache::<u64>::new(config).expect("valid");
        let stamp = Epochs::new().current("work");
        assert!(!cache.insert(key("cat", "work"), None, stamp, 7, 8 * 1024 + 1));
        assert_eq!(check_get(&cache, &parts("cat", "work"), None, stamp), None);
        assert_eq!(cache.stats().entries, 0);
        assert!(cache.insert(key("cat", "work"), None, stamp, 7, 4 * 1024));
    }

    #[test]
    fn a_scope_keeps_its_most_recent_embeddings_only() {
        let (cache, stamp) = (cache(), Epochs::new().current("work"));
        let n_queries = MAX_SEMANTIC_PER_SCOPE + 10;
        for n in 0..n_queries {
            cache.insert(
                key(&format!("query {n}"), "work"),
                Some(embedding_at(n as f32 * 0.01)),
                stamp,
                n as u64,
                10,
            );
        }
        let scopes = cache.semantic_shard(key("x", "work").scope_hash);
        let held: usize = scopes.values().map(VecDeque::len).sum();
        assert_eq!(held, MAX_SEMANTIC_PER_SCOPE);
        drop(scopes);
        // The oldest left L2 but still answers exactly.
        assert!(check_get(&cache, &parts("query 0", "work"), None, stamp).is_some());
    }

    #[test]
    fn clear_drops_every_entry_and_keeps_the_counters() {
        let (cache, stamp) = (cache(), Epochs::new().current("work"));
        cache.insert(key("cat", "work"), Some(embedding_at(0.0)), stamp, 7, 100);
        assert!(check_get(&cache, &parts("cat", "work"), None, stamp).is_some());
        cache.clear();
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.hits_exact), (0, 0, 2));
        assert_eq!(
            check_get(&cache, &parts("a cat", "work"), Some(&embedding_at(0.0)), stamp),
            None
        );
    }

    /// The default config with one edit, validated.
    fn validate_edited(edit: impl FnOnce(&mut CacheConfig)) -> Result<(), CacheConfigError> {
        let mut config = CacheConfig::default();
        edit(&mut config);
        config.validate()
    }

    #[test]
    fn config_errors_name_the_bad_field() {
        let message = |result: Result<(), CacheConfigError>| result.expect_err("invalid").to_string();
        assert_eq!(validate_edited(|_| ()), Ok(()));
        for threshold in [0.0, -0.5, 1.01, f32::NAN] {
            let error = message(validate_edited(|c| c.semantic_threshold = threshold));
            assert!(error.contains("semantic_threshold"), "{error}");
        }
        assert_eq!(validate_edited(|c| c.semantic_threshold = 1.0), Ok(()));
        assert!(message(validate_edited(|c| c.max_entries = 0)).contains("max_entries"));
        assert!(message(validate_edited(|c| c.max_bytes = MIN_MAX_BYTES - 1)).contains("max_bytes"));
        let too_small = CacheConfig {
            max_bytes: 1,
            ..CacheConfig::default()
        };
        assert!(Cache::<u64>::new(too_small).is_err());
    }

    /// An answer whose clone panics on demand, to poison a shard's lock.
    #[derive(Debug, PartialEq)]
    struct Bomb(bool);

    impl Clone for Bomb {
        fn clone(&self) -> Self {
            assert!(!self.0, "bomb");
            Bomb(false)
        }
    }

    #[test]
    fn a_panic_under_a_shard_lock_empties_that_shard_instead_of_wedging_it() {
        let cache = Cache::<Bomb>::new(CacheConfig::default()).expect("valid");
        let stamp = Epochs::new().current("work");
        cache.insert(key("cat", "work"), None, stamp, Bomb(true), 100);
        let lookup = std::panic::catch_unwind(|| cache.get(&key("cat", "work"), None, stamp));
        assert!(lookup.is_err(), "the clone panicked under the lock");
        assert_eq!(
            cache.get(&key("cat", "work"), None, stamp),
            None,
            "the shard starts over empty"
        );
        cache.insert(key("cat", "work"), None, stamp, Bomb(false), 100);
        assert_eq!(
            cache.get(&key("cat", "work"), None, stamp).map(|hit| hit.value),
            Some(Bomb(false))
        );
    }

    #[test]
    fn the_cache_can_be_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Cache<Arc<[u8]>>>();
        shared::<Epochs>();
    }

    proptest! {
        /// The allocation-free normalisation (ASCII fast path, pieces) gives
        /// the plain definition's text: lowercase, whitespace collapsed, trimmed.
        #[test]
        fn normalise_is_lowercase_with_collapsed_whitespace(text in "\\PC{0,40}|[a-zA-Z \t\n\u{3a3}\u{130}]{0,80}") {
            let words: Vec<String> = text.split_whitespace().map(|w| w.chars().flat_map(char::to_lowercase).collect()).collect();
            let expected = words.join(" ");
            prop_assert_eq!(normalise(&text), expected.clone());
            prop_assert!(normalises_to(&text, &expected));
            let longer = format!("{expected}x");
            prop_assert!(!normalises_to(&text, &longer));
            prop_assert_eq!(expected.is_empty(), normalises_to(&text, ""));
        }

        /// A borrowed key built from any spelling of a query matches the owned
        /// key of another spelling (same hash, equal), and only then.
        #[test]
        fn borrowed_and_owned_keys_agree(
            words in prop::collection::vec("[a-zA-ZéÉİß ]{0,6}", 0..5),
            spaces in prop::collection::vec("[ \t\n]{1,3}", 5),
            tags in prop::collection::vec((0..3_u8, 0..2_u8), 0..4),
            other_text in "[a-z ]{0,8}",
        ) {
            let text_a: String = words.iter().zip(&spaces).map(|(w, s)| format!("{w}{s}")).collect();
            let text_b = words.join(" ").to_uppercase();
            let names: Vec<(String, String)> = tags.iter().map(|(k, v)| (format!("k{k}"), format!("v{v}"))).collect();
            let tags_a: Vec<(&str, &str)> = names.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let tags_b: Vec<(&str, &str)> = tags_a.iter().rev().copied().collect();
            let a = KeyParts { tags: &tags_a, ..parts(&text_a, "ns") };
            let b = KeyParts { tags: &tags_b, ..parts(&text_b, "ns") };
            let same_text = normalise(&text_a) == normalise(&text_b);
            let owned_b = CacheKey::new(&b);
            prop_assert_eq!(KeyRef::new(&a).matches(&owned_b), same_text);
            prop_assert_eq!(CacheKey::new(&a) == owned_b, same_text);
            if same_text {
                prop_assert_eq!(KeyRef::new(&a).key_hash, owned_b.key_hash);
            }
            prop_assert!(KeyRef::new(&a).matches_scope(&owned_b));
            let other = KeyParts { text: &other_text, ..a };
            prop_assert_eq!(KeyRef::new(&other).matches(&owned_b), normalise(&other_text) == normalise(&text_b));
        }

        /// Random inserts, lookups and writes over two namespaces against a
        /// model: a lookup returns a value only if it is the latest inserted
        /// for that key under the current stamp; with room for every key it
        /// returns exactly those.
        #[test]
        fn lookups_agree_with_a_model(
            roomy in any::<bool>(),
            ops in prop::collection::vec((0..4_u8, 0..6_usize, any::<u64>()), 1..200),
        ) {
            let max_entries = if roomy { 4096 } else { 2 };
            let cache = Cache::<u64>::new(CacheConfig { max_entries, ..CacheConfig::default() }).expect("valid");
            let epochs = Epochs::new();
            let namespaces = ["work", "home"];
            let texts = ["a", "b", "c"];
            let mut model: HashMap<usize, (Stamp, u64)> = HashMap::new();
            for (op, key_idx, value) in ops {
                let (text, namespace) = (texts[key_idx % 3], namespaces[key_idx / 3]);
                let stamp = epochs.current(namespace);
                match op {
                    0 => {
                        prop_assert!(cache.insert(key(text, namespace), None, stamp, value, 16));
                        model.insert(key_idx, (stamp, value));
                    }
                    1 => {
                        let got = cache.get(&KeyRef::new(&parts(text, namespace)), None, stamp).map(|hit| hit.value);
                        let expected = model.get(&key_idx).filter(|(at, _)| *at == stamp).map(|&(_, v)| v);
                        if roomy || got.is_some() {
                            prop_assert_eq!(got, expected);
                        }
                    }
                    2 => epochs.bump(namespace),
                    _ => if value % 4 == 0 { epochs.bump_all() },
                }
                prop_assert!(cache.stats().entries <= max_entries as u64);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Writers change a namespace's data then bump its epoch; computing
        /// readers read the stamp, then the data, and cache what they saw under
        /// that stamp; other readers look up. Every answer served was computed
        /// under the stamp of the lookup, and saw every write whose bump that
        /// stamp includes (no answer from before a visible write is served).
        #[test]
        fn concurrent_writes_never_serve_stale_answers(
            n_writers in 1..3_usize,
            n_computers in 1..3_usize,
            n_readers in 1..3_usize,
            n_ops in 20..200_usize,
        ) {
            let cache = Cache::<Answer>::new(CacheConfig::default()).expect("valid");
            let epochs = Epochs::new();
            let namespaces = ["work", "home"];
            // The data version of each namespace: what an answer "saw".
            let versions = [AtomicU64::new(0), AtomicU64::new(0)];
            let violated = AtomicBool::new(false);
            std::thread::scope(|scope| {
                for writer in 0..n_writers {
                    let (epochs, versions) = (&epochs, &versions);
                    scope.spawn(move || write_loop(epochs, versions, &namespaces, writer, n_ops));
                }
                for computer in 0..n_computers {
                    let (cache, epochs, versions) = (&cache, &epochs, &versions);
                    scope.spawn(move || compute_loop(cache, epochs, versions, &namespaces, computer, n_ops));
                }
                for reader in 0..n_readers {
                    let (cache, epochs, violated) = (&cache, &epochs, &violated);
                    scope.spawn(move || read_loop(cache, epochs, &namespaces, reader, n_ops, violated));
                }
            });
            prop_assert!(!violated.load(Ordering::Relaxed));
        }
    }

    /// A write: the data changes (visible to engines), then the epoch moves.
    fn write_loop(epochs: &Epochs, versions: &[AtomicU64; 2], namespaces: &[&str; 2], seed: usize, n_ops: usize) {
        for op in 0..n_ops {
            match (op + seed) % 5 {
                4 => {
                    versions
                        .iter()
                        .for_each(|version| _ = version.fetch_add(1, Ordering::Relaxed));
                    epochs.bump_all();
                }
                n => {
                    versions[n % 2].fetch_add(1, Ordering::Relaxed);
                    epochs.bump(namespaces[n % 2]);
                }
            }
            std::thread::yield_now();
        }
    }

    /// A recall that misses: stamp first, then compute, then insert under
    /// the stamp read first.
    fn compute_loop(
        cache: &Cache<Answer>,
        epochs: &Epochs,
        versions: &[AtomicU64; 2],
        namespaces: &[&str; 2],
        seed: usize,
        n_ops: usize,
    ) {
        for op in 0..n_ops {
            let ns_idx = (op + seed) % 2;
            let stamp = epochs.current(namespaces[ns_idx]);
            let seen = versions[ns_idx].load(Ordering::Relaxed);
            let text = format!("query {}", op % 3);
            cache.insert(
                key(&text, namespaces[ns_idx]),
                Some(embedding_at(0.0)),
                stamp,
                (stamp, seen),
                64,
            );
        }
    }

    /// Lookups, exact and semantic: whatever is served must have been computed
    /// under this stamp and seen every write that stamp includes.
    fn read_loop(
        cache: &Cache<Answer>,
        epochs: &Epochs,
        namespaces: &[&str; 2],
        seed: usize,
        n_ops: usize,
        violated: &AtomicBool,
    ) {
        let embedding = embedding_at(0.1);
        for op in 0..n_ops {
            let namespace = namespaces[(op + seed) % 2];
            let stamp = epochs.current(namespace);
            // Every write included in the stamp bumped exactly one counter.
            let writes_in_stamp = stamp.namespace + stamp.global;
            let text = if op % 2 == 0 {
                format!("query {}", op % 3)
            } else {
                format!("other {op}")
            };
            let Some(hit) = cache.get(&KeyRef::new(&parts(&text, namespace)), Some(&embedding), stamp) else {
                continue;
            };
            let (computed_under, seen) = hit.value;
            if computed_under != stamp || seen < writes_in_stamp {
                violated.store(true, Ordering::Relaxed);
            }
        }
    }
}
