//! The memory store as the tests see it: building memories, recalling a
//! namespace whole, checking refusals, and the ledger of writes a restarted
//! daemon is compared against.
//!
//! The ledger is the crash tests' oracle. Writers record every batch they
//! sent and, for the acknowledged ones, the ids the daemon returned; after a
//! restart [`check_namespace`] demands that each acknowledged batch is there
//! with the same ids and texts, and that every batch (acknowledged or not)
//! is visible whole or not at all. It knows nothing of how the daemon was
//! stopped; the tests decide that.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};

use nexus_client::wire::{
    EngineChoice, ErrorCode, MemoryInput, MemoryTag, RecallHit, RecallRequest, RequestBody, Status,
};
use nexus_client::{Client, ClientError};

/// Memories per batch the writers send (one Remember, one WAL record).
pub const BATCH_MEMORIES: usize = 3;

/// Recall's largest `k` (`Limits::default().max_k`); a namespace the ledger
/// checks must hold fewer memories than this, so one recall sees them all.
pub const MAX_K: u32 = 1000;

/// The term every ledger memory contains, so one text recall returns them all.
pub const COMMON_TERM: &str = "mem";

/// A memory with a namespace and a text, nothing else.
pub fn memory(namespace: &str, text: &str) -> MemoryInput {
    MemoryInput {
        namespace: namespace.to_owned(),
        text: text.to_owned(),
        importance: 1.0,
        ..MemoryInput::default()
    }
}

/// A tag.
pub fn tag(key: &str, value: &str) -> MemoryTag {
    MemoryTag {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

/// Recalls up to [`MAX_K`] memories of `namespace` matching `text`; panics on error.
#[track_caller]
pub fn recall(client: &Client, namespace: &str, text: &str) -> Vec<RecallHit> {
    // The exact scan, named: every memory holding a word of `text`, raw
    // (a fused answer hides near-duplicates linked on Remember, and the
    // dense engine ranks every memory of the namespace), which is what
    // these ledgers check against.
    let query = RecallRequest {
        namespace: namespace.to_owned(),
        text: Some(text.to_owned()),
        k: MAX_K,
        engine: Some(EngineChoice::Scan),
        ..RecallRequest::default()
    };
    client
        .recall(query)
        .unwrap_or_else(|e| panic!("recall {text:?} in {namespace:?} failed: {e}"))
}

/// Checks that `result` is the daemon's refusal with `expected`; returns its message.
#[track_caller]
pub fn check_status<T: Debug>(result: Result<T, ClientError>, expected: ErrorCode) -> String {
    match result {
        Err(ClientError::Status { code, message }) => {
            assert_eq!(
                code, expected as u32,
                "expected {expected:?} ({}), got code {code}: {message}",
                expected as u32
            );
            message
        }
        other => panic!("expected the daemon to refuse with {expected:?}, got {other:?}"),
    }
}

/// Sends `body` (described by `what`) and checks that it is refused with
/// `expected`; returns the daemon's message.
#[track_caller]
pub fn check_refused(client: &Client, what: &str, body: RequestBody, expected: ErrorCode) -> String {
    let answer = client
        .call(body, None)
        .unwrap_or_else(|e| panic!("{what}: the call failed in transport: {e}"));
    match answer.status {
        Status::Error { code, message } => {
            assert_eq!(
                code, expected as u32,
                "{what}: expected {expected:?} ({}), got code {code}: {message}",
                expected as u32
            );
            message
        }
        other => panic!("{what}: expected {expected:?}, the daemon answered {other:?}"),
    }
}

/// One batch a writer sent.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Unique within its namespace; written into every text as `b<id>`.
    pub id: u64,
    /// The texts sent, in order.
    pub texts: Vec<String>,
    /// The ids the daemon returned, if it acknowledged the batch.
    pub ids: Option<Vec<u64>>,
}

/// Every batch sent to one namespace.
#[derive(Debug, Clone, Default)]
pub struct NamespaceLedger {
    /// The namespace.
    pub namespace: String,
    /// The batches, acknowledged or not.
    pub batches: Vec<Batch>,
}

impl NamespaceLedger {
    /// An empty ledger for `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            batches: Vec::new(),
        }
    }

    /// Batches acknowledged.
    pub fn acked(&self) -> usize {
        self.batches.iter().filter(|b| b.ids.is_some()).count()
    }

    /// Sends one batch of `texts` (each must contain `b<id>` as its second
    /// word, see [`batch_texts`]) and records it; returns the outcome.
    pub fn remember(&mut self, client: &Client, id: u64, texts: Vec<String>) -> Result<Vec<u64>, ClientError> {
        let memories = texts
            .iter()
            .map(|text| MemoryInput {
                tags: vec![tag("batch", &id.to_string())],
                ..memory(&self.namespace, text)
            })
            .collect();
        let result = client.remember(memories);
        let ids = result.as_ref().ok().cloned();
        if let Some(ids) = &ids {
            assert_eq!(ids.len(), texts.len(), "one id per memory of batch {id}");
        }
        self.batches.push(Batch { id, texts, ids });
        result
    }
}

/// The texts of batch `id`: `mem b<id> m<j>` then `padding_words` filler words.
pub fn batch_texts(id: u64, len: usize, padding_words: usize) -> Vec<String> {
    (0..len)
        .map(|j| {
            let mut text = format!("{COMMON_TERM} b{id} m{j}");
            for word in 0..padding_words {
                text.push_str(&format!(" filler{word}"));
            }
            text
        })
        .collect()
}

/// How a writer's run ended.
#[derive(Debug)]
pub struct WriterRun {
    /// What it sent.
    pub ledger: NamespaceLedger,
    /// The error that stopped it (`None`: it reached its batch limit).
    pub ended_by: Option<ClientError>,
}

/// Writes batches of [`BATCH_MEMORIES`] to `namespace` until the daemon
/// fails a call or `max_batches` were acknowledged. Batch ids are
/// `writer * 1_000_000 + n`, so writers sharing a namespace never collide.
/// `progress` counts acknowledged batches across writers.
pub fn write_batches(
    client: &Client,
    namespace: &str,
    writer: u64,
    max_batches: u64,
    padding_words: usize,
    progress: &AtomicU64,
) -> WriterRun {
    let mut ledger = NamespaceLedger::new(namespace);
    for n in 0..max_batches {
        let id = writer * 1_000_000 + n;
        let texts = batch_texts(id, BATCH_MEMORIES, padding_words);
        if let Err(error) = ledger.remember(client, id, texts) {
            return WriterRun {
                ledger,
                ended_by: Some(error),
            };
        }
        progress.fetch_add(1, Ordering::Relaxed);
    }
    WriterRun { ledger, ended_by: None }
}

/// Runs one [`write_batches`] thread per client (writer `i` writes to
/// `namespace(i)`), calls `meanwhile` with their shared progress counter
/// while they write, then waits for every writer. Returns what `meanwhile`
/// returned and each writer's run, in client order.
pub fn with_writers<R>(
    clients: &[Client],
    namespace: impl Fn(u64) -> String + Sync,
    max_batches: u64,
    padding_words: usize,
    meanwhile: impl FnOnce(&AtomicU64) -> R,
) -> (R, Vec<WriterRun>) {
    let progress = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let writers: Vec<_> = clients
            .iter()
            .zip(0..)
            .map(|(client, writer)| {
                let (progress, namespace) = (&progress, &namespace);
                scope.spawn(move || {
                    write_batches(client, &namespace(writer), writer, max_batches, padding_words, progress)
                })
            })
            .collect();
        let outcome = meanwhile(&progress);
        let runs = writers
            .into_iter()
            .map(|writer| writer.join().expect("a writer thread panicked"))
            .collect();
        (outcome, runs)
    })
}

/// Checks the daemon's view of a namespace against its ledger: every
/// acknowledged batch is there with the same ids and texts, every batch is
/// visible whole or not at all, and nothing else is there. Returns how many
/// memories are visible. `context` goes into every failure message.
#[track_caller]
pub fn check_namespace(client: &Client, ledger: &NamespaceLedger, context: &str) -> usize {
    let namespace = &ledger.namespace;
    let hits = recall(client, namespace, COMMON_TERM);
    assert!(
        hits.len() < MAX_K as usize,
        "{context}: {namespace} holds {} memories, too many to check with one recall",
        hits.len()
    );
    let mut visible: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    let mut seen_ids = BTreeSet::new();
    for hit in &hits {
        assert!(
            seen_ids.insert(hit.id),
            "{context}: id {} recalled twice in {namespace}",
            hit.id
        );
        assert_eq!(&hit.namespace, namespace, "{context}: a hit from another namespace");
        let batch = batch_of(&hit.text)
            .unwrap_or_else(|| panic!("{context}: {namespace} holds a memory no writer sent: {:?}", hit.text));
        visible.entry(batch).or_default().push((hit.id, hit.text.clone()));
    }
    for batch in &ledger.batches {
        let found = visible.remove(&batch.id).unwrap_or_default();
        match &batch.ids {
            Some(ids) => {
                let mut expected: Vec<(u64, String)> = ids.iter().copied().zip(batch.texts.iter().cloned()).collect();
                expected.sort();
                let mut found = found;
                found.sort();
                assert_eq!(
                    found, expected,
                    "{context}: acknowledged batch {} in {namespace} is not intact (found vs expected (id, text))",
                    batch.id
                );
            }
            None => {
                let mut texts: Vec<&String> = found.iter().map(|(_, text)| text).collect();
                texts.sort();
                let mut sent: Vec<&String> = batch.texts.iter().collect();
                sent.sort();
                assert!(
                    texts.is_empty() || texts == sent,
                    "{context}: unacknowledged batch {} in {namespace} is partly visible: {} of {} memories: {texts:?}",
                    batch.id,
                    texts.len(),
                    sent.len()
                );
            }
        }
    }
    assert!(
        visible.is_empty(),
        "{context}: {namespace} holds batches no writer sent: {:?}",
        visible.keys().collect::<Vec<_>>()
    );
    hits.len()
}

/// The batch id in a ledger text (`mem b<id> ...`).
fn batch_of(text: &str) -> Option<u64> {
    let mut words = text.split(' ');
    (words.next()? == COMMON_TERM).then_some(())?;
    words.next()?.strip_prefix('b')?.parse().ok()
}

/// A small seeded PRNG (splitmix64): reproducible random delays without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}
