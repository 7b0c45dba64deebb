//! nexusd's answers as the small JSON objects a model reads: what it needs
//! to use a memory (id, text, score, time, tags, a short reason) and nothing
//! that only costs context (vectors, per-factor arrays, server timings).
//!
//! What it does not do: talk to nexusd, or word failures (`failure` does).

use jiff::Timestamp;
use nexus_client::RecallAnswer;
use nexus_client::wire::{Counter, MemoryTag, RecallHit, RememberReport, Route, Signal, StatsReport};
use serde_json::{Map, Value, json};

/// The most characters of a memory's text a recall result carries: about a
/// page, enough to answer from, while 50 results stay near 100 KB. A longer
/// text ends with a marker saying how long it is.
pub const MAX_TEXT_CHARS: usize = 2_000;

/// How many of a result's scoring factors its `reason` names.
const REASON_FACTORS: usize = 2;

/// A recall's answer: the request id (what feedback names), the route, and
/// the results best first.
pub fn recall_json(answer: &RecallAnswer) -> Value {
    let results: Vec<Value> = answer.hits.iter().map(hit_json).collect();
    let mut object = json!({
        "recall_id": answer.request_id,
        "route": route_name(answer.route),
        "results": results,
    });
    if let Some(degraded) = &answer.degraded {
        object["degraded"] = json!(degraded);
    }
    object
}

/// One result: never its vector, its text cut at [`MAX_TEXT_CHARS`].
pub fn hit_json(hit: &RecallHit) -> Value {
    json!({
        "id": hit.id,
        "text": truncate_text(&hit.text),
        "score": rounded(hit.score),
        "created_at": rfc3339(hit.created_at_ms),
        "namespace": hit.namespace,
        "tags": tags_json(&hit.tags),
        "reason": reason(&hit.why),
    })
}

/// `text` whole when it has at most [`MAX_TEXT_CHARS`] characters, else its
/// first `MAX_TEXT_CHARS` and a marker with the full length.
pub fn truncate_text(text: &str) -> String {
    let Some((cut, _)) = text.char_indices().nth(MAX_TEXT_CHARS) else {
        return text.to_owned();
    };
    let total = text.chars().count();
    format!(
        "{}… [truncated: {MAX_TEXT_CHARS} of {total} characters shown]",
        &text[..cut]
    )
}

/// The names of the factors that contributed most to a score, largest
/// first ("vector, lexical"); factors that added nothing are left out.
pub fn reason(why: &[Signal]) -> String {
    let mut factors: Vec<&Signal> = why.iter().filter(|signal| signal.value > 0.0).collect();
    factors.sort_by(|a, b| b.value.total_cmp(&a.value));
    let names: Vec<&str> = factors
        .iter()
        .take(REASON_FACTORS)
        .map(|signal| signal.name.as_str())
        .collect();
    names.join(", ")
}

/// What a remember stored: the id, and what preprocessing did (a long text
/// stored as chunks, a near-duplicate found), only when it did something.
pub fn remember_json(report: &RememberReport, namespace: &str) -> Value {
    let mut object = json!({
        "id": report.ids.first().copied(),
        "namespace": namespace,
    });
    if let Some(note) = report.notes.iter().find(|note| note.input == 0) {
        if !note.chunk_ids.is_empty() {
            object["chunk_ids"] = json!(note.chunk_ids);
        }
        if let Some(duplicate) = &note.duplicate {
            object["near_duplicate_of"] = json!(duplicate.original);
            object["duplicate_action"] = json!(format!("{:?}", duplicate.action).to_lowercase());
        }
    }
    object
}

/// A compact summary of nexusd's counters: how much is stored, how recalls
/// were answered, how long it has run. A counter this build of nexusd does
/// not report is left out rather than shown as 0.
pub fn stats_json(stats: &StatsReport) -> Value {
    let counters = &stats.counters;
    let mut object = Map::new();
    for name in ["memories", "namespaces", "uptime_s"] {
        if let Some(value) = find(counters, name) {
            object.insert(name.to_owned(), json!(value));
        }
    }
    let routes: Map<String, Value> = counters
        .iter()
        .filter_map(|counter| Some((counter.name.strip_prefix("route_")?.to_owned(), json!(counter.value))))
        .collect();
    object.insert("recalls_by_route".to_owned(), Value::Object(routes));
    object.insert("cache_hit_rate".to_owned(), cache_hit_rate(counters));
    Value::Object(object)
}

/// Cache hits over lookups, 0 to 1 (rounded); null before the first lookup
/// or when nexusd does not report its cache.
fn cache_hit_rate(counters: &[Counter]) -> Value {
    let Some(misses) = find(counters, "cache_misses") else {
        return Value::Null;
    };
    let hits = find(counters, "cache_hits_exact").unwrap_or(0) + find(counters, "cache_hits_semantic").unwrap_or(0);
    let lookups = hits + misses;
    if lookups == 0 {
        return Value::Null;
    }
    json!(round4(hits as f64 / lookups as f64))
}

/// A route in the words `recall`'s `route` argument takes.
fn route_name(route: Route) -> &'static str {
    match route {
        Route::None => "none",
        Route::CacheOnly => "cache",
        Route::SmartRouting => "smart",
        Route::FullPipeline => "full",
        Route::MaximumIntelligence => "max",
    }
}

fn find(counters: &[Counter], name: &str) -> Option<u64> {
    counters
        .iter()
        .find(|counter| counter.name == name)
        .map(|counter| counter.value)
}

fn tags_json(tags: &[MemoryTag]) -> Value {
    Value::Object(tags.iter().map(|tag| (tag.key.clone(), json!(tag.value))).collect())
}

/// An f32 score with four decimals: more is noise to a model, and it keeps
/// f64 widening artefacts (0.10000000149) out of the answer.
fn rounded(score: f32) -> Value {
    if score.is_finite() {
        json!(round4(f64::from(score)))
    } else {
        Value::Null
    }
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC); a time jiff cannot
/// represent stays a number rather than failing the answer.
fn rfc3339(ms: i64) -> Value {
    match Timestamp::from_millisecond(ms) {
        Ok(timestamp) => json!(timestamp.to_string()),
        Err(_) => json!(ms),
    }
}

#[cfg(test)]
mod tests {
    use nexus_client::wire::{DuplicateAction, DuplicateNote, RememberNote};

    use super::*;

    fn signal(name: &str, value: f32) -> Signal {
        Signal {
            name: name.into(),
            value,
        }
    }

    fn hit(id: u64, text: &str) -> RecallHit {
        RecallHit {
            id,
            score: 0.1,
            text: text.into(),
            namespace: "agent-1".into(),
            tags: vec![MemoryTag {
                key: "who".into(),
                value: "caroline".into(),
            }],
            created_at_ms: 1_714_521_600_000,
            why: vec![signal("recency", 0.05), signal("vector", 0.6), signal("lexical", 0.2)],
        }
    }

    #[test]
    fn a_recall_answer_has_its_id_route_and_small_results() {
        let answer = RecallAnswer {
            request_id: 42,
            route: Route::SmartRouting,
            route_reason: "a short query".into(),
            degraded: None,
            hits: vec![hit(7, "Caroline adopted a dog")],
        };
        let json = recall_json(&answer);
        assert_eq!(json["recall_id"], 42);
        assert_eq!(json["route"], "smart");
        assert!(json.get("degraded").is_none(), "only when degraded");
        let result = &json["results"][0];
        assert_eq!(result["id"], 7);
        assert_eq!(result["text"], "Caroline adopted a dog");
        assert_eq!(result["score"], json!(0.1), "no f64 widening noise");
        assert_eq!(result["created_at"], "2024-05-01T00:00:00Z");
        assert_eq!(result["tags"], json!({"who": "caroline"}));
        assert_eq!(result["reason"], "vector, lexical");
        let keys: Vec<&String> = result.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["created_at", "id", "namespace", "reason", "score", "tags", "text"],
            "no vector, no factor arrays"
        );
    }

    #[test]
    fn long_texts_are_cut_at_a_char_boundary_with_a_marker() {
        let short = "é".repeat(MAX_TEXT_CHARS);
        assert_eq!(truncate_text(&short), short, "exactly the limit stays whole");
        let long = "é".repeat(MAX_TEXT_CHARS + 500);
        let cut = truncate_text(&long);
        assert!(cut.starts_with(&short));
        assert!(
            cut.ends_with("… [truncated: 2000 of 2500 characters shown]"),
            "{}",
            &cut[cut.len() - 60..]
        );
        assert!(cut.chars().count() < MAX_TEXT_CHARS + 60);
    }

    #[test]
    fn the_reason_names_the_top_two_contributing_factors() {
        assert_eq!(reason(&[signal("a", 0.1), signal("b", 0.3), signal("c", 0.2)]), "b, c");
        assert_eq!(
            reason(&[signal("a", 0.0), signal("b", 0.3)]),
            "b",
            "a zero adds nothing"
        );
        assert_eq!(reason(&[signal("a", f32::NAN)]), "");
        assert_eq!(reason(&[]), "");
    }

    #[test]
    fn remember_reports_chunks_and_duplicates_only_when_they_happened() {
        let plain = RememberReport {
            ids: vec![5],
            notes: vec![],
        };
        assert_eq!(remember_json(&plain, "tour"), json!({"id": 5, "namespace": "tour"}));
        let noted = RememberReport {
            ids: vec![5],
            notes: vec![RememberNote {
                input: 0,
                chunk_ids: vec![5, 6],
                duplicate: Some(DuplicateNote {
                    original: 2,
                    similarity: 0.9,
                    action: DuplicateAction::Linked,
                }),
            }],
        };
        let json = remember_json(&noted, "tour");
        assert_eq!(json["chunk_ids"], json!([5, 6]));
        assert_eq!(
            (json["near_duplicate_of"].clone(), json["duplicate_action"].clone()),
            (json!(2), json!("linked"))
        );
    }

    #[test]
    fn stats_summarise_memories_routes_cache_and_uptime() {
        let counter = |name: &str, value: u64| Counter {
            name: name.into(),
            value,
        };
        let stats = StatsReport {
            counters: vec![
                counter("connections_open", 3),
                counter("memories", 120),
                counter("namespaces", 2),
                counter("route_cache_only", 1),
                counter("route_smart", 6),
                counter("cache_hits_exact", 2),
                counter("cache_hits_semantic", 1),
                counter("cache_misses", 5),
                counter("uptime_s", 30),
            ],
        };
        let expected = json!({
            "memories": 120,
            "namespaces": 2,
            "uptime_s": 30,
            "recalls_by_route": {"cache_only": 1, "smart": 6},
            "cache_hit_rate": 0.375,
        });
        assert_eq!(stats_json(&stats), expected);
        let fresh = StatsReport {
            counters: vec![counter("cache_misses", 0)],
        };
        assert_eq!(stats_json(&fresh)["cache_hit_rate"], Value::Null);
    }
}
