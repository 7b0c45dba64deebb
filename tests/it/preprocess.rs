//! Preprocessing on Remember, through a real daemon: long texts stored as
//! linked chunks that put the text back together, near-duplicates linked
//! (default), skipped or merged as configured and reported per memory, and
//! a recall that shows one of a memory and its linked near-duplicate.

use nexus_client::Client;
use nexus_client::wire::{DuplicateAction, MemoryTag, RecallRequest, RememberReport};
use nexus_daemon::preprocess::remember::{CHUNK_TAG, GROUP_TAG};
use nexus_tests::store::{memory, tag};

use crate::start;

/// A text of `words` words, each naming its position ("w0017"), in
/// sentences of ten.
fn long_text(words: usize) -> String {
    let mut text = String::new();
    for n in 0..words {
        text.push_str(&format!("w{n:04}"));
        text.push_str(if n % 10 == 9 { ". " } else { " " });
    }
    text.trim_end().to_owned()
}

fn recall(client: &Client, namespace: &str, text: &str, k: u32) -> Vec<(u64, String)> {
    let hits = client
        .recall(RecallRequest {
            namespace: namespace.into(),
            text: Some(text.into()),
            k,
            ..RecallRequest::default()
        })
        .expect("a recall");
    hits.into_iter().map(|hit| (hit.id, hit.text)).collect()
}

const STORY: &str = "Caroline went hiking in the mountains last weekend with her dog Max, \
and they camped by the lake under the stars before walking back on Sunday";

// Issue 9, item 4: a text of ~1,000 words was one memory, embedded and
// ranked as a whole; now it is chunks of about 400 words.
#[test]
fn a_long_text_is_stored_as_linked_chunks_that_reassemble_into_it() {
    let daemon = start(&[]);
    let client = daemon.client();
    let text = long_text(1000);
    let report = client
        .remember_report(vec![memory("docs", &text), memory("docs", "a short note")])
        .expect("remember");
    let RememberReport { ids, notes } = report;
    assert_eq!(notes.len(), 1, "only the long text has a note: {notes:?}");
    let chunks = &notes[0].chunk_ids;
    assert!(
        (3..=4).contains(&chunks.len()),
        "1,000 words in ~400-word chunks: {chunks:?}"
    );
    assert_eq!(ids[0], chunks[0], "the memory's id is its first chunk's");
    assert!(!chunks.contains(&ids[1]), "the short note is a memory of its own");

    // A word near the end is found in the last chunk, not the whole text.
    let found = recall(&client, "docs", "w0990", 1);
    assert_eq!(found[0].0, *chunks.last().unwrap(), "{found:?}");
    assert!(found[0].1.len() < text.len() / 2, "a chunk, not the whole text");

    // The hit carries its chunk's tags; the group tag brings every chunk
    // back, and the labels put them in order.
    let hit = client
        .recall(RecallRequest {
            namespace: "docs".into(),
            text: Some("w0001".into()),
            k: 1,
            ..RecallRequest::default()
        })
        .expect("recall")
        .remove(0);
    assert_eq!(hit.id, chunks[0]);
    let group = tag_value(&hit.tags, GROUP_TAG);
    let all = client
        .recall(RecallRequest {
            namespace: "docs".into(),
            text: Some("w0001 w0500 w0999".into()),
            k: 50,
            filter: vec![tag(GROUP_TAG, &group)],
            ..RecallRequest::default()
        })
        .expect("recall by group");
    assert_eq!(all.len(), chunks.len(), "every chunk and nothing else");
    let mut pieces: Vec<(usize, String)> = all
        .iter()
        .map(|hit| {
            let label = tag_value(&hit.tags, CHUNK_TAG);
            let index = label.split('/').next().and_then(|i| i.parse().ok()).expect("i/n");
            (index, hit.text.clone())
        })
        .collect();
    pieces.sort();
    assert_eq!(reassemble(&pieces), text, "the chunks put the text back together");
}

fn tag_value(tags: &[MemoryTag], key: &str) -> String {
    let found = tags.iter().find(|t| t.key == key);
    found
        .map(|t| t.value.clone())
        .unwrap_or_else(|| panic!("no {key} tag in {tags:?}"))
}

/// Joins chunks that overlap by a few words back into one text.
fn reassemble(pieces: &[(usize, String)]) -> String {
    let mut text = pieces[0].1.clone();
    for (_, next) in &pieces[1..] {
        // The longest suffix of `text` that starts `next`.
        let overlap = (1..=next.len().min(text.len()))
            .rev()
            .find(|n| next.is_char_boundary(*n) && text.ends_with(&next[..*n]))
            .unwrap_or(0);
        text.push_str(&next[overlap..]);
    }
    text
}

// Issue 9, item 4: a near-duplicate was stored silently; by default it is
// stored and linked, reported, and recall shows only one of the two.
#[test]
fn a_near_duplicate_is_kept_linked_reported_and_shown_once() {
    let daemon = start(&[]);
    let client = daemon.client();
    let original = client.remember(vec![memory("trips", STORY)]).expect("original")[0];
    let again = format!("{STORY}.");
    let report = client.remember_report(vec![memory("trips", &again)]).expect("again");
    let note = report.notes.first().expect("a note for the near-duplicate");
    let duplicate = note.duplicate.expect("found");
    assert_eq!(
        (duplicate.original, duplicate.action),
        (original, DuplicateAction::Linked)
    );
    assert!(duplicate.similarity >= 0.7, "{duplicate:?}");
    assert_ne!(report.ids[0], original, "kept: a memory of its own");

    let found = recall(&client, "trips", "hiking mountains dog", 10);
    let ids: Vec<u64> = found.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 1, "one of the two is shown: {found:?}");

    // Another namespace's copy is not a duplicate of it.
    let other = client.remember_report(vec![memory("elsewhere", STORY)]).expect("other");
    assert!(other.notes.is_empty(), "{:?}", other.notes);
}

#[test]
fn with_duplicates_skip_a_near_duplicate_is_not_stored_and_its_original_is_named() {
    let daemon = start(&["--duplicates", "skip"]);
    let client = daemon.client();
    let original = client.remember(vec![memory("trips", STORY)]).expect("original")[0];
    let report = client
        .remember_report(vec![
            memory("trips", &format!("{STORY}!")),
            memory("trips", "unrelated"),
        ])
        .expect("again");
    assert_eq!(report.ids[0], original, "the skipped memory's id is its original's");
    let note = &report.notes[0];
    assert_eq!(note.duplicate.map(|d| d.action), Some(DuplicateAction::Skipped));
    // (The dense engine ranks every memory of the namespace: count texts.)
    let found = recall(&client, "trips", "hiking mountains dog", 10);
    assert_eq!(
        found.iter().filter(|(_, t)| t.contains("hiking")).count(),
        1,
        "{found:?}"
    );
    let found = recall(&client, "trips", "unrelated", 10);
    assert!(
        found.iter().any(|(_, t)| t == "unrelated"),
        "the rest of the batch is stored: {found:?}"
    );
}

#[test]
fn with_duplicates_merge_a_near_duplicate_replaces_its_keyed_original() {
    let daemon = start(&["--duplicates", "merge"]);
    let client = daemon.client();
    let keyed = nexus_client::wire::MemoryInput {
        key: Some("weekend".into()),
        ..memory("trips", STORY)
    };
    let original = client.remember(vec![keyed]).expect("original")[0];
    let newer = format!("{STORY} again");
    let report = client.remember_report(vec![memory("trips", &newer)]).expect("newer");
    assert_eq!(report.ids[0], original, "the original's id, its key reused");
    assert_eq!(
        report.notes[0].duplicate.map(|d| d.action),
        Some(DuplicateAction::Merged)
    );
    let found = recall(&client, "trips", "hiking mountains dog", 10);
    assert_eq!(found, vec![(original, newer)], "one memory, with the newer text");
}

#[test]
fn nexusd_refuses_an_unknown_duplicates_policy_embedder_or_bm25_setting_and_names_it() {
    let mut daemon = start(&[]);
    daemon.kill();
    for (args, key) in [
        (&["--duplicates", "sometimes"][..], "duplicates"),
        (&["--embedder", "/no/such/model/dir"][..], "embedder"),
        (&["--bm25-b", "2"][..], "bm25_b"),
    ] {
        daemon.set_args(args);
        let (status, stderr) = daemon.run_to_exit();
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("invalid setting {key}")), "{args:?}: {stderr}");
    }
}
