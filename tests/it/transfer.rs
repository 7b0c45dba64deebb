//! Import and export as JSON lines, through real daemons: a store exported,
//! imported into a fresh daemon and exported again comes back the same line
//! for line (ids aside); bad lines are reported by number and skipped, or
//! stop a strict import with nothing after them stored; re-importing keyed
//! lines replaces instead of duplicating; export can be limited to one
//! namespace and ends quietly on a closed pipe.
//!
//! The library functions are called directly (`nexus_cli::transfer`), with
//! clients of harness daemons; the `nexus` subcommands only add flags.

use std::collections::HashMap;
use std::io::Cursor;

use nexus_cli::transfer::{self, BadLine, ImportOptions, ImportReport, TransferError};
use nexus_client::Client;
use nexus_client::wire::{MemoryInput, MemoryTag};
use serde_json::Value;

use crate::start;

/// Imports `text` with `options`.
fn import(client: &Client, text: &str, options: &ImportOptions) -> Result<ImportReport, TransferError> {
    transfer::import(client, Cursor::new(text.as_bytes()), options)
}

/// Exports `namespace` (None: all) and parses each line.
fn export(client: &Client, namespace: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    let written = transfer::export(client, &mut out, namespace).expect("export");
    let text = String::from_utf8(out).expect("the export is UTF-8");
    let lines: Vec<Value> = (text.lines())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len() as u64, written, "one line per memory counted");
    lines
}

/// The `text` of each exported line.
fn texts(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|line| line["text"].as_str().expect("a text"))
        .collect()
}

/// Checks an import's counts and its bad lines' numbers.
#[track_caller]
fn check_report(report: &ImportReport, imported: u64, bad: &[u64]) {
    let bad_lines: Vec<u64> = report.bad_lines.iter().map(|bad| bad.line).collect();
    assert_eq!((report.imported, bad_lines.as_slice()), (imported, bad), "{report:#?}");
    assert_eq!(report.skipped, bad.len() as u64, "{report:#?}");
    assert_eq!(report.lines, imported + bad.len() as u64, "{report:#?}");
}

/// A reproducible generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A float with all 24 bits of mantissa in use, of magnitude 1e-3..1e3.
    fn float(&mut self) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        let scale = [1e-3, 0.1, 1.0, 7.0, 1e3][self.below(5) as usize];
        (unit * 2.0 - 1.0) * scale
    }
}

const WORDS: [&str; 48] = [
    "river",
    "lantern",
    "copper",
    "meadow",
    "violet",
    "harbor",
    "engine",
    "quartz",
    "saddle",
    "thistle",
    "orbit",
    "pepper",
    "glacier",
    "wander",
    "ember",
    "falcon",
    "marble",
    "tundra",
    "velvet",
    "cobalt",
    "juniper",
    "anchor",
    "prairie",
    "sonnet",
    "crimson",
    "beacon",
    "willow",
    "granite",
    "lagoon",
    "mosaic",
    "nectar",
    "pylon",
    "Zürich",
    "café",
    "naïve",
    "東京",
    "記憶",
    "данные",
    "память",
    "λόγος",
    "🚀",
    "✓",
    "tab\there",
    "quote\"d",
    "back\\slash",
    "new\nline",
    "emoji🙂mix",
    "ß",
];

fn sentence(rng: &mut Rng, words: usize) -> String {
    let picked: Vec<&str> = (0..words)
        .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
        .collect();
    picked.join(" ")
}

/// ~300 memories: three namespaces, keys, tags (one key repeated), 8-d
/// vectors on half of them, explicit times (one before 1970) on most,
/// importance, sources and unicode.
fn varied_memories(rng: &mut Rng) -> Vec<MemoryInput> {
    let namespaces = ["agent", "user-42", "ünï space"];
    (0..300)
        .map(|i| {
            let mut tags = vec![MemoryTag {
                key: "topic".into(),
                value: WORDS[i % WORDS.len()].into(),
            }];
            if i % 5 == 0 {
                for day in ["mon", "tue"] {
                    tags.push(MemoryTag {
                        key: "seen".into(),
                        value: day.into(),
                    });
                }
            }
            MemoryInput {
                key: (i % 3 == 0).then(|| format!("key-{i}")),
                vector: (i % 2 == 0).then(|| (0..8).map(|_| rng.float()).collect()),
                tags,
                created_at_ms: match i % 7 {
                    0 => None,
                    1 => Some(-86_400_123 - i as i64),
                    _ => Some(1_700_000_000_000 + rng.below(10_000_000_000) as i64),
                },
                importance: 0.05 + rng.below(2000) as f32 / 997.0,
                source: (i % 4 == 1).then(|| format!("chat-{}", i % 11)),
                ..MemoryInput::new(namespaces[i % 3], format!("{i}: {}", sentence(rng, 12 + i % 20)))
            }
        })
        .collect()
}

/// A text of `words` words, each naming its position: chunked by the daemon.
fn long_text(words: usize) -> String {
    let words: Vec<String> = (0..words).map(|n| format!("w{n:04}")).collect();
    words.join(" ")
}

const STORY: &str = "Caroline went hiking in the mountains last weekend with her dog Max, \
and they camped by the lake under the stars before walking back on Sunday";

/// An exported line with its id removed, and a `nexus.duplicate_of` id
/// translated through `ids` (old id → new id) when given.
fn comparable(line: &Value, ids: Option<&HashMap<u64, u64>>) -> Value {
    let mut line = line.clone();
    let object = line.as_object_mut().expect("an object");
    object.remove("id");
    let original = object
        .get_mut("tags")
        .and_then(|tags| tags.get_mut(transfer::DUPLICATE_TAG));
    if let (Some(original), Some(ids)) = (original, ids) {
        let old: u64 = original.as_str().and_then(|id| id.parse().ok()).expect("an id");
        *original = Value::String(ids[&old].to_string());
    }
    line
}

fn tag_count(lines: &[Value], key: &str) -> usize {
    lines.iter().filter(|line| line["tags"].get(key).is_some()).count()
}

// The ids differ between the two stores: a daemon hands out its own ids
// (one counter per store, never reused), and import cannot choose them.
// Everything else, including the link a near-duplicate carries, must come
// back: the link names the original's new id.
#[test]
fn a_store_exported_and_imported_into_a_fresh_daemon_exports_the_same_lines() {
    let first = start(&[]);
    let client = first.large_client();
    let mut rng = Rng(0x5EED_1234_ABCD_0042);
    for batch in varied_memories(&mut rng).chunks(50) {
        client.remember(batch.to_vec()).expect("remember");
    }
    let long = MemoryInput {
        key: Some("the-long-one".into()),
        tags: vec![MemoryTag {
            key: "kind".into(),
            value: "document".into(),
        }],
        ..MemoryInput::new("agent", long_text(1000))
    };
    client.remember(vec![long]).expect("the long text");
    // A near-duplicate of a memory stored before it: linked by the daemon.
    client
        .remember(vec![MemoryInput::new("trips", STORY)])
        .expect("original");
    client
        .remember(vec![MemoryInput::new("trips", format!("{STORY}."))])
        .expect("near-duplicate");

    let exported = export(&client, None);
    assert!(
        exported.len() > 300,
        "300 memories, the chunks and the pair: {}",
        exported.len()
    );
    assert!(tag_count(&exported, "nexus.chunk") >= 3, "the long text is chunks");
    assert_eq!(
        tag_count(&exported, transfer::DUPLICATE_TAG),
        1,
        "one linked near-duplicate"
    );
    assert!(
        exported.iter().any(|line| line["tags"]["seen"].is_array()),
        "a repeated key"
    );

    let second = start(&[]);
    let client = second.large_client();
    let dump: String = exported.iter().map(|line| format!("{line}\n")).collect();
    // Small batches: many in flight, and the near-duplicate's original in
    // the batch being filled when the duplicate comes.
    let options = ImportOptions {
        batch: 16,
        ..ImportOptions::default()
    };
    let report = import(&client, &dump, &options).expect("import");
    check_report(&report, exported.len() as u64, &[]);
    assert_eq!(report.duplicates_not_stored, 0);

    let again = export(&client, None);
    assert_eq!(again.len(), exported.len());
    let ids: HashMap<u64, u64> = (exported.iter().zip(&again))
        .map(|(old, new)| (old["id"].as_u64().expect("id"), new["id"].as_u64().expect("id")))
        .collect();
    for (index, (old, new)) in exported.iter().zip(&again).enumerate() {
        assert_eq!(comparable(old, Some(&ids)), comparable(new, None), "line {}", index + 1);
    }
}

/// Eleven lines, five bad: invalid JSON (2), no text (4), a bad time (5),
/// a vector of the wrong dimension amid good ones of one batch (7), a tag of
/// the wrong type (10).
const WITH_BAD_LINES: &str = r#"{"text": "good one", "vector": [0.1, 0.2, 0.3]}
{"text": "broken
{"text": "good two", "vector": [0.4, 0.5, 0.6]}
{"namespace": "elsewhere"}
{"text": "good three", "created_at": "yesterday"}
{"text": "good four", "vector": [0.7, 0.8, 0.9]}
{"text": "wrong dimension", "vector": [1.0, 2.0]}
{"text": "good five", "vector": [1.1, 1.2, 1.3]}
{"text": "good six"}
{"text": "good seven", "tags": {"n": 1}}
{"text": "good eight", "created_at": "2025-01-02T03:04:05.678+01:00"}
"#;

#[test]
fn bad_lines_are_reported_by_number_and_every_good_line_is_imported() {
    let daemon = start(&[]);
    let client = daemon.client();
    let report = import(&client, WITH_BAD_LINES, &ImportOptions::default()).expect("import");
    check_report(&report, 6, &[2, 4, 5, 7, 10]);
    let reason = |line: u64| -> &str {
        let bad = report.bad_lines.iter().find(|bad| bad.line == line).expect("reported");
        &bad.reason
    };
    assert!(reason(4).contains("missing field `text`"), "{}", reason(4));
    assert!(reason(5).contains("RFC 3339"), "{}", reason(5));
    assert!(reason(7).contains("dimension"), "{}", reason(7));
    assert!(
        reason(10).contains("a string, or an array of strings"),
        "{}",
        reason(10)
    );

    let stored = export(&client, None);
    let mut texts = texts(&stored);
    texts.sort_unstable();
    assert_eq!(
        texts,
        [
            "good eight",
            "good five",
            "good four",
            "good one",
            "good six",
            "good two"
        ]
    );
    let eight = stored.iter().find(|line| line["text"] == "good eight").expect("stored");
    assert_eq!(
        eight["created_at"], "2025-01-02T02:04:05.678Z",
        "in UTC, to the millisecond"
    );
    assert_eq!(eight["namespace"], "default");
}

#[test]
fn strict_stops_at_the_first_bad_line_and_stores_nothing_after_it() {
    let daemon = start(&[]);
    let client = daemon.client();
    let strict = ImportOptions {
        strict: true,
        ..ImportOptions::default()
    };
    match import(&client, WITH_BAD_LINES, &strict) {
        Err(TransferError::Strict {
            line: 2, imported: 1, ..
        }) => {}
        other => panic!("expected a stop at line 2 after one line: {other:?}"),
    }
    assert_eq!(texts(&export(&client, None)), ["good one"]);

    // A line only the daemon finds bad stops it too (in its own namespace).
    let refused_third = r#"{"namespace": "s", "text": "a", "vector": [1.0, 2.0, 3.0]}
{"namespace": "s", "text": "b", "vector": [1.0, 2.0, 3.0]}
{"namespace": "s", "text": "c", "vector": [1.0, 2.0]}
{"namespace": "s", "text": "d"}
"#;
    match import(&client, refused_third, &strict) {
        Err(TransferError::Strict {
            line: 3,
            imported: 2,
            reason,
        }) => {
            assert!(reason.contains("dimension"), "{reason}")
        }
        other => panic!("expected a stop at line 3 after two lines: {other:?}"),
    }
    assert_eq!(texts(&export(&client, Some("s"))), ["a", "b"]);
}

// One odd vector first in a file must not fix the store's dimension and
// turn every later line away.
#[test]
fn an_odd_first_vector_does_not_fix_a_fresh_stores_dimension() {
    let daemon = start(&[]);
    let client = daemon.client();
    let mut file = String::from("{\"text\": \"odd\", \"vector\": [1.0, 2.0]}\n");
    for n in 0..5 {
        file.push_str(&format!("{{\"text\": \"line {n}\", \"vector\": [0.5, 0.25, {n}.0]}}\n"));
    }
    let report = import(&client, &file, &ImportOptions::default()).expect("import");
    check_report(&report, 5, &[1]);
    assert_eq!(daemon.stats_counter("dimension"), 3);
}

// Batches are sent ahead of their answers: when one is refused, those
// behind it are already stored, and retrying its lines must not undo a
// later line of the same key.
#[test]
fn a_refused_batch_is_retried_without_undoing_a_later_line_of_the_same_key() {
    let daemon = start(&[]);
    let client = daemon.client();
    let file = r#"{"text": "a", "vector": [1.0, 2.0, 3.0]}
{"text": "b", "vector": [1.0, 2.0, 3.0]}
{"key": "k", "text": "old"}
{"text": "two dimensions", "vector": [1.0, 2.0]}
{"key": "k", "text": "new"}
{"text": "c"}
"#;
    let options = ImportOptions {
        batch: 2,
        ..ImportOptions::default()
    };
    let report = import(&client, file, &options).expect("import");
    check_report(&report, 5, &[4]);
    let stored = export(&client, None);
    assert_eq!(texts(&stored), ["a", "b", "new", "c"]);
}

#[test]
fn importing_keyed_lines_twice_leaves_one_memory_per_key() {
    let daemon = start(&[]);
    let client = daemon.client();
    let file = |version: &str| {
        let mut file = String::new();
        for n in 0..5 {
            let line = format!(r#"{{"key": "k{n}", "text": "keyed memory number {n} {version}"}}"#);
            file.push_str(&line);
            file.push('\n');
        }
        file.push_str(&format!("{{\"text\": \"{STORY}\"}}\n"));
        file
    };
    let report = import(&client, &file("first"), &ImportOptions::default()).expect("first run");
    check_report(&report, 6, &[]);
    let before = export(&client, None);
    let report = import(&client, &file("second"), &ImportOptions::default()).expect("second run");
    check_report(&report, 6, &[]);

    let after = export(&client, None);
    let keyed: Vec<&Value> = after.iter().filter(|line| line.get("key").is_some()).collect();
    assert_eq!(keyed.len(), 5, "one memory per key: {after:#?}");
    for line in &keyed {
        let old = before
            .iter()
            .find(|old| old["key"] == line["key"])
            .expect("there before");
        assert_eq!(line["id"], old["id"], "replaced in place, same id");
        assert!(line["text"].as_str().expect("text").ends_with("second"), "{line}");
    }
    // A line without a key is stored again, linked to the first copy
    // (the default duplicates policy, `keep`): what the module docs promise.
    let copies: Vec<&Value> = after.iter().filter(|line| line["text"] == STORY).collect();
    assert_eq!(copies.len(), 2, "{copies:#?}");
    assert_eq!(
        copies[1]["tags"][transfer::DUPLICATE_TAG],
        copies[0]["id"].to_string(),
        "{copies:#?}"
    );
}

#[test]
fn export_of_one_namespace_writes_only_its_memories_even_through_a_small_ring() {
    let daemon = start(&[]);
    let writer = daemon.large_client();
    let mut rng = Rng(7);
    let memories: Vec<MemoryInput> = (0..240)
        .map(|i| MemoryInput::new(["a", "b"][i % 2], format!("{i} {}", sentence(&mut rng, 30))))
        .collect();
    writer.remember(memories).expect("remember");
    // The test client's response ring holds 8 KiB frames: pages shrink to fit.
    let small = daemon.client();
    let only_a = export(&small, Some("a"));
    assert_eq!(only_a.len(), 120);
    assert!(only_a.iter().all(|line| line["namespace"] == "a"));
    let all = export(&small, None);
    assert_eq!(all.len(), 240);
    assert_eq!(&all[..120], only_a.as_slice(), "in (namespace, id) order");
}

#[test]
fn export_to_a_closed_pipe_ends_quietly_with_its_own_error() {
    let daemon = start(&[]);
    let client = daemon.client();
    let memories: Vec<MemoryInput> = (0..50).map(|i| MemoryInput::new("a", format!("memory {i}"))).collect();
    client.remember(memories).expect("remember");
    let (reader, writer) = std::io::pipe().expect("a pipe");
    // `nexus export | head` after head exited.
    drop(reader);
    let error = transfer::export(&client, writer, None).expect_err("nobody reads");
    assert!(error.is_closed_pipe(), "{error}");
    assert!(
        matches!(error, TransferError::ClosedPipe { .. }),
        "distinguishable: {error:?}"
    );
}

#[test]
fn a_too_long_line_is_skipped_by_number_and_the_lines_around_it_are_imported() {
    let daemon = start(&[]);
    let client = daemon.client();
    let long = "x".repeat(transfer::MAX_LINE_BYTES + 10);
    let file = format!("{{\"text\": \"before\"}}\n{long}\n{{\"text\": \"after\"}}\n");
    let report = import(&client, &file, &ImportOptions::default()).expect("import");
    check_report(&report, 2, &[2]);
    assert_eq!(
        report.bad_lines,
        [BadLine {
            line: 2,
            reason: format!("the line is longer than {} bytes", transfer::MAX_LINE_BYTES),
        }]
    );
    assert_eq!(texts(&export(&client, None)), ["before", "after"]);
}
