//! Entity links: normalised entity → the memories whose text holds it, per
//! namespace, and "related memories" = those sharing at least one entity
//! with a given memory (or with a query's text), ranked and bounded.
//!
//! Ranking: each shared entity adds its IDF, ln(1 + N / df), so sharing a
//! rare name counts more than sharing the speaker's name that is in every
//! turn. Bounds: a memory keeps at most [`EntityConfig::max_entities_per_memory`]
//! entities, only the most recent [`EntityConfig::max_postings_per_entity`]
//! memories of each entity are visited, and at most
//! [`EntityConfig::max_related`] are returned, so the fan-out of one lookup
//! is bounded whatever the data.
//!
//! Member lists are kept sorted by memory id (ids grow with time, so the
//! tail is the most recent). Updated in place by insert and delete, visible
//! at once; persisted with the same checksummed framing as the BM25 index.
//!
//! Not here: finding entities in text (`entities.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use rkyv::{Archive, Deserialize, Serialize};

use crate::recall::lexical::entities::{EntityExtractor, EntitySpan, ExtractScratch};
use crate::recall::lexical::error::{ImageFault, LexicalError};
use crate::recall::lexical::id_map::IdMap;
use crate::recall::lexical::persist::{
    LoadReport, LoadSource, frame, map_file, open_frame, with_aligned, write_durably,
};

/// See [`EntityConfig::max_related`].
pub const DEFAULT_MAX_RELATED: usize = 16;
/// See [`EntityConfig::max_postings_per_entity`].
pub const DEFAULT_MAX_POSTINGS_PER_ENTITY: usize = 512;
/// See [`EntityConfig::max_entities_per_memory`].
pub const DEFAULT_MAX_ENTITIES_PER_MEMORY: usize = 64;

const ENTITY_MAGIC: [u8; 8] = *b"NXENT\0\0\x01";
const ENTITY_VERSION: u32 = 1;

/// The entity index's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityConfig {
    /// Related memories returned at most: query expansion adds them to a
    /// recall's candidates, and a few good links beat many weak ones.
    pub max_related: usize,
    /// Memories visited per entity at most (the most recent): an entity in
    /// thousands of memories links everything and costs a scan of them.
    pub max_postings_per_entity: usize,
    /// Entities kept per memory at most (the first ones in the text): a
    /// pasted table of numbers must not cost thousands of postings.
    pub max_entities_per_memory: usize,
}

impl Default for EntityConfig {
    fn default() -> Self {
        Self {
            max_related: DEFAULT_MAX_RELATED,
            max_postings_per_entity: DEFAULT_MAX_POSTINGS_PER_ENTITY,
            max_entities_per_memory: DEFAULT_MAX_ENTITIES_PER_MEMORY,
        }
    }
}

/// A memory linked to another through shared entities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Related {
    /// The linked memory.
    pub id: u64,
    /// Entities shared.
    pub shared: u32,
    /// Sum of the shared entities' IDF (higher is a stronger link).
    pub score: f32,
}

/// Reusable buffers of insertion and lookups.
#[derive(Debug, Default)]
pub struct EntityScratch {
    extract: ExtractScratch,
    spans: Vec<EntitySpan>,
    key: String,
    entities: Vec<u32>,
    scores: IdMap<u64, (f32, u32)>,
}

impl EntityScratch {
    /// Empty buffers.
    pub fn new() -> Self {
        Self::default()
    }
}

/// One namespace's links.
#[derive(Debug, Default)]
struct EntityShard {
    /// Entity id → memory ids holding it, sorted.
    members: IdMap<u32, Vec<u64>>,
    /// Memory id → its entity ids (distinct).
    entities_of: IdMap<u64, Box<[u32]>>,
}

/// Entities → memories, per namespace.
#[derive(Debug)]
pub struct EntityIndex {
    extractor: EntityExtractor,
    config: EntityConfig,
    key_ids: HashMap<Box<str>, u32>,
    keys: Vec<Box<str>>,
    shard_of_name: HashMap<Box<str>, u32>,
    shards: Vec<(Box<str>, EntityShard)>,
    home: IdMap<u64, u32>,
    scratch: EntityScratch,
}

impl EntityIndex {
    /// An empty index finding entities with `extractor`.
    pub fn new(extractor: EntityExtractor, config: EntityConfig) -> Self {
        Self {
            extractor,
            config,
            key_ids: HashMap::new(),
            keys: Vec::new(),
            shard_of_name: HashMap::new(),
            shards: Vec::new(),
            home: IdMap::default(),
            scratch: EntityScratch::default(),
        }
    }

    /// An index of `documents` (memory id, namespace, text).
    pub fn rebuild<'a>(
        extractor: EntityExtractor,
        config: EntityConfig,
        documents: impl IntoIterator<Item = (u64, &'a str, &'a str)>,
    ) -> Self {
        let mut index = Self::new(extractor, config);
        for (id, namespace, text) in documents {
            index.insert(id, namespace, text);
        }
        index
    }

    /// Links memory `id` of `namespace` to the entities of `text`,
    /// replacing what it held before.
    pub fn insert(&mut self, id: u64, namespace: &str, text: &str) {
        self.delete(id);
        let mut scratch = std::mem::take(&mut self.scratch);
        self.extractor.extract(text, &mut scratch.extract, &mut scratch.spans);
        scratch.entities.clear();
        for span in &scratch.spans {
            self.extractor.key(text, span, &mut scratch.key);
            let entity = self.intern(&scratch.key);
            if !scratch.entities.contains(&entity) && scratch.entities.len() < self.config.max_entities_per_memory {
                scratch.entities.push(entity);
            }
        }
        self.link(id, namespace, &scratch.entities);
        self.scratch = scratch;
    }

    /// Memories linked (with at least one entity, or none).
    pub fn len(&self) -> usize {
        self.home.len()
    }

    /// Whether no memory is linked.
    pub fn is_empty(&self) -> bool {
        self.home.is_empty()
    }

    /// Unlinks memory `id`; false if it was not indexed.
    pub fn delete(&mut self, id: u64) -> bool {
        let Some(shard) = self.home.remove(&id) else {
            return false;
        };
        let shard = &mut self.shards[shard as usize].1;
        for entity in shard.entities_of.remove(&id).unwrap_or_default() {
            let Some(members) = shard.members.get_mut(&entity) else {
                continue;
            };
            if let Ok(at) = members.binary_search(&id) {
                members.remove(at);
            }
            if members.is_empty() {
                shard.members.remove(&entity);
            }
        }
        true
    }

    /// The normalised entity keys of memory `id` ("n:caroline", "d:2023-05-08").
    pub fn entities_of(&self, id: u64) -> impl Iterator<Item = &str> {
        let shard = self.home.get(&id).map(|&s| &self.shards[s as usize].1);
        let entities = shard.and_then(|s| s.entities_of.get(&id)).map_or(&[][..], |e| &e[..]);
        entities.iter().map(|&e| &*self.keys[e as usize])
    }

    /// The memories of `namespace` holding the entity with normalised `key`,
    /// by increasing id.
    pub fn memories_with(&self, namespace: &str, key: &str) -> &[u64] {
        let found = self.shard(namespace).zip(self.key_ids.get(key));
        found
            .and_then(|(shard, entity)| shard.members.get(entity))
            .map_or(&[], |m| &m[..])
    }

    /// Memories of the same namespace sharing at least one entity with
    /// memory `id`, strongest link first (ties by id), into `out`.
    pub fn related(&self, id: u64, scratch: &mut EntityScratch, out: &mut Vec<Related>) {
        out.clear();
        let Some(&shard) = self.home.get(&id) else { return };
        let shard = &self.shards[shard as usize].1;
        let entities = shard.entities_of.get(&id).map_or(&[][..], |e| &e[..]);
        self.rank_links(shard, entities, Some(id), &mut scratch.scores, out);
    }

    /// Memories of `namespace` sharing at least one entity with `text` (a
    /// query), strongest link first, into `out`: query expansion.
    pub fn related_to_text(&self, namespace: &str, text: &str, scratch: &mut EntityScratch, out: &mut Vec<Related>) {
        out.clear();
        let Some(shard) = self.shard(namespace) else { return };
        self.extractor.extract(text, &mut scratch.extract, &mut scratch.spans);
        scratch.entities.clear();
        for span in &scratch.spans {
            self.extractor.key(text, span, &mut scratch.key);
            if let Some(&entity) = self.key_ids.get(scratch.key.as_str())
                && !scratch.entities.contains(&entity)
            {
                scratch.entities.push(entity);
            }
        }
        self.rank_links(shard, &scratch.entities, None, &mut scratch.scores, out);
    }

    /// Scores every memory sharing one of `entities` (bounded per entity)
    /// and keeps the best `max_related`.
    fn rank_links(
        &self,
        shard: &EntityShard,
        entities: &[u32],
        exclude: Option<u64>,
        scores: &mut IdMap<u64, (f32, u32)>,
        out: &mut Vec<Related>,
    ) {
        scores.clear();
        let n = shard.entities_of.len() as f32;
        for entity in entities {
            let Some(members) = shard.members.get(entity) else {
                continue;
            };
            let idf = (1.0 + n / members.len() as f32).ln();
            let recent = &members[members.len().saturating_sub(self.config.max_postings_per_entity)..];
            for &member in recent.iter().filter(|&&m| Some(m) != exclude) {
                let entry = scores.entry(member).or_default();
                entry.0 += idf;
                entry.1 += 1;
            }
        }
        out.extend(
            scores
                .iter()
                .map(|(&id, &(score, shared))| Related { id, shared, score }),
        );
        out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        out.truncate(self.config.max_related);
    }

    fn shard(&self, namespace: &str) -> Option<&EntityShard> {
        self.shard_of_name.get(namespace).map(|&s| &self.shards[s as usize].1)
    }

    fn intern(&mut self, key: &str) -> u32 {
        if let Some(&id) = self.key_ids.get(key) {
            return id;
        }
        let id = u32::try_from(self.keys.len()).expect("fewer than 2^32 distinct entities");
        self.keys.push(key.into());
        self.key_ids.insert(key.into(), id);
        id
    }

    /// Records that memory `id` of `namespace` holds `entities` (distinct).
    fn link(&mut self, id: u64, namespace: &str, entities: &[u32]) {
        let shard = match self.shard_of_name.get(namespace) {
            Some(&shard) => shard,
            None => {
                let shard = u32::try_from(self.shards.len()).expect("fewer than 2^32 namespaces");
                self.shards.push((namespace.into(), EntityShard::default()));
                self.shard_of_name.insert(namespace.into(), shard);
                shard
            }
        };
        let links = &mut self.shards[shard as usize].1;
        for &entity in entities {
            let members = links.members.entry(entity).or_default();
            let at = members.partition_point(|&m| m < id);
            members.insert(at, id);
        }
        links.entities_of.insert(id, entities.into());
        self.home.insert(id, shard);
    }
}

/// The archived form of an [`EntityIndex`].
#[derive(Archive, Serialize, Deserialize, Debug)]
struct EntityImage {
    /// Entity id → normalised key.
    keys: Vec<String>,
    shards: Vec<EntityShardImage>,
}

#[derive(Archive, Serialize, Deserialize, Debug)]
struct EntityShardImage {
    namespace: String,
    /// Memory ids, increasing.
    ids: Vec<u64>,
    /// Where each memory's entities start (one extra at the end).
    starts: Vec<u32>,
    entities: Vec<u32>,
}

impl EntityIndex {
    /// The index as a self-checking image (header + archive).
    pub fn to_image(&self) -> Vec<u8> {
        let image = EntityImage {
            keys: self.keys.iter().map(|k| k.to_string()).collect(),
            shards: self
                .shards
                .iter()
                .map(|(name, shard)| shard_image(name, shard))
                .collect(),
        };
        let body = rkyv::to_bytes::<rkyv::rancor::Error>(&image).expect("archiving into memory cannot fail");
        frame(ENTITY_MAGIC, ENTITY_VERSION, &body)
    }

    /// An index from an image made by [`EntityIndex::to_image`].
    pub fn from_image(extractor: EntityExtractor, config: EntityConfig, image: &[u8]) -> Result<Self, LexicalError> {
        let body = open_frame(ENTITY_MAGIC, ENTITY_VERSION, image)?;
        with_aligned(body, |body| {
            let archived = rkyv::access::<ArchivedEntityImage, rkyv::rancor::Error>(body)
                .map_err(|e| ImageFault::Invalid(e.to_string()))?;
            let mut index = Self::new(extractor, config);
            for key in archived.keys.iter() {
                index.intern(key.as_str());
            }
            for shard in archived.shards.iter() {
                index.load_shard(shard)?;
            }
            Ok(index)
        })
    }

    /// Writes the image to `path` durably (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), LexicalError> {
        write_durably(path, &self.to_image())
    }

    /// Maps and loads the index saved at `path`.
    pub fn load(extractor: EntityExtractor, config: EntityConfig, path: &Path) -> Result<Self, LexicalError> {
        Self::from_image(extractor, config, &map_file(path)?)
    }

    /// The index saved at `path`, or, when it is missing or corrupt, one
    /// rebuilt from `documents` (memory id, namespace, text).
    pub fn load_or_rebuild<'a, I>(
        extractor: EntityExtractor,
        config: EntityConfig,
        path: &Path,
        documents: impl FnOnce() -> I,
    ) -> (Self, LoadReport)
    where
        I: IntoIterator<Item = (u64, &'a str, &'a str)>,
    {
        let started = Instant::now();
        let (index, source) = match Self::load(extractor.clone(), config, path) {
            Ok(index) => (index, LoadSource::Loaded),
            Err(error) => (
                Self::rebuild(extractor, config, documents()),
                LoadSource::Rebuilt(error.to_string()),
            ),
        };
        let elapsed = started.elapsed();
        (index, LoadReport { source, elapsed })
    }

    fn load_shard(&mut self, shard: &ArchivedEntityShardImage) -> Result<(), LexicalError> {
        let invalid = |what: &str| ImageFault::Invalid(format!("namespace {:?}: {what}", shard.namespace.as_str()));
        let (starts, entities) = (&shard.starts, &shard.entities);
        if starts.len() != shard.ids.len() + 1 || starts[starts.len() - 1].to_native() as usize != entities.len() {
            return Err(invalid("array lengths disagree").into());
        }
        if entities.iter().any(|e| e.to_native() as usize >= self.keys.len()) {
            return Err(invalid("an entity id is out of range").into());
        }
        let mut linked = Vec::new();
        for (at, id) in shard.ids.iter().enumerate() {
            let (from, to) = (starts[at].to_native() as usize, starts[at + 1].to_native() as usize);
            if from > to || to > entities.len() || self.home.contains_key(&id.to_native()) {
                return Err(invalid("bad offsets or a memory id twice").into());
            }
            linked.clear();
            linked.extend(entities[from..to].iter().map(|e| e.to_native()));
            self.link(id.to_native(), shard.namespace.as_str(), &linked);
        }
        Ok(())
    }
}

fn shard_image(name: &str, shard: &EntityShard) -> EntityShardImage {
    let mut ids: Vec<u64> = shard.entities_of.keys().copied().collect();
    ids.sort_unstable();
    let mut image = EntityShardImage {
        namespace: name.to_owned(),
        starts: Vec::with_capacity(ids.len() + 1),
        entities: Vec::new(),
        ids,
    };
    image.starts.push(0);
    for id in &image.ids {
        image.entities.extend_from_slice(&shard.entities_of[id]);
        image
            .starts
            .push(u32::try_from(image.entities.len()).expect("fewer than 2^32 links in a namespace"));
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> EntityIndex {
        EntityIndex::rebuild(
            EntityExtractor::default(),
            EntityConfig::default(),
            [
                (1, "a", "Caroline went to the LGBTQ support group on 8 May, 2023."),
                (2, "a", "Melanie painted a sunrise with Caroline."),
                (3, "a", "On 2023-05-08 the LGBTQ center opened."),
                (4, "a", "Nothing capitalised here at all"),
                (5, "b", "Caroline of another namespace, LGBTQ too."),
            ],
        )
    }

    fn related_ids(index: &EntityIndex, id: u64) -> Vec<u64> {
        let mut out = Vec::new();
        index.related(id, &mut EntityScratch::new(), &mut out);
        out.iter().map(|r| r.id).collect()
    }

    #[test]
    fn memories_sharing_an_entity_are_linked_within_their_namespace() {
        let index = index();
        // 3 shares the date and LGBTQ (two entities), 2 shares only Caroline.
        assert_eq!(related_ids(&index, 1), [3, 2]);
        assert_eq!(related_ids(&index, 4), Vec::<u64>::new());
        assert_eq!(related_ids(&index, 5), Vec::<u64>::new());
        assert_eq!(index.memories_with("a", "n:caroline"), [1, 2]);
        assert_eq!(index.memories_with("b", "n:caroline"), [5]);
        let keys: Vec<&str> = index.entities_of(1).collect();
        assert_eq!(keys, ["n:caroline", "n:lgbtq", "d:2023-05-08"]);
    }

    #[test]
    fn a_query_expands_through_its_entities() {
        let index = index();
        let mut out = Vec::new();
        index.related_to_text(
            "a",
            "What did Caroline do on May 8, 2023?",
            &mut EntityScratch::new(),
            &mut out,
        );
        let ids: Vec<u64> = out.iter().map(|r| r.id).collect();
        // "May 8, 2023" is the same day as "8 May, 2023" and "2023-05-08".
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(out[0].shared, 2);
    }

    #[test]
    fn delete_unlinks_and_fan_out_is_bounded() {
        let mut index = index();
        assert!(index.delete(3));
        assert_eq!(related_ids(&index, 1), [2]);
        let config = EntityConfig {
            max_related: 3,
            max_postings_per_entity: 5,
            ..EntityConfig::default()
        };
        let mut crowd = EntityIndex::new(EntityExtractor::default(), config);
        for id in 1..=100 {
            crowd.insert(id, "ns", "Caroline again");
        }
        // Only the 5 most recent holders of "Caroline" are visited, 3 returned.
        assert_eq!(related_ids(&crowd, 1), [96, 97, 98]);
    }

    #[test]
    fn image_round_trip_and_corruption() {
        let index = index();
        let image = index.to_image();
        let loaded = EntityIndex::from_image(EntityExtractor::default(), EntityConfig::default(), &image).unwrap();
        for id in 1..=5 {
            assert_eq!(related_ids(&loaded, id), related_ids(&index, id));
            assert_eq!(
                loaded.entities_of(id).collect::<Vec<_>>(),
                index.entities_of(id).collect::<Vec<_>>()
            );
        }
        let mut bad = image.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let error = EntityIndex::from_image(EntityExtractor::default(), EntityConfig::default(), &bad);
        assert!(matches!(
            error,
            Err(LexicalError::Corrupt(ImageFault::BodyChecksum { .. }))
        ));
        let lexical = crate::recall::lexical::LexicalIndex::new(Default::default())
            .unwrap()
            .to_image();
        let error = EntityIndex::from_image(EntityExtractor::default(), EntityConfig::default(), &lexical);
        assert!(matches!(error, Err(LexicalError::Corrupt(ImageFault::BadMagic))));
    }
}
