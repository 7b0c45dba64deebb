//! Retrieval quality of the built-in model on the developers' LoCoMo conversations:
//! evidence recall@10 with exact cosine within each conversation (categories 1–4), as
//! ../shared/data/README.md defines it, for the shipped int8 model and for the f16
//! original it was quantised from. Skips (with a message) when ../shared is absent,
//! as it is in a user's clone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{EmbedScratch, Embedder, StaticModel};

/// The original's figure in ../shared/RESEARCH.md is 0.483; the shipped model must
/// not fall more than this below the original measured in the same run.
const MAX_RECALL_LOSS: f64 = 0.005;
const K: usize = 10;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

struct Question {
    conv: String,
    category: u64,
    evidence: Vec<String>,
    text: String,
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn embed_all(model: &dyn Embedder, texts: &[&str]) -> Vec<Vec<f32>> {
    let mut scratch = EmbedScratch::new();
    texts
        .iter()
        .map(|t| {
            let mut v = vec![0.0; model.dim()];
            model.embed(t, &mut scratch, &mut v).expect("dim");
            v
        })
        .collect()
}

/// Mean evidence recall@K over questions, overall and per category.
fn recall_at_k(model: &dyn Embedder, turns: &[Value], questions: &[Question]) -> (f64, HashMap<u64, f64>) {
    let turn_texts: Vec<&str> = turns.iter().map(|t| t["text"].as_str().expect("text")).collect();
    let turn_vectors = embed_all(model, &turn_texts);
    let question_texts: Vec<&str> = questions.iter().map(|q| q.text.as_str()).collect();
    let question_vectors = embed_all(model, &question_texts);
    let (mut sum, mut per_category) = (0.0, HashMap::<u64, (f64, usize)>::new());
    for (q, qv) in questions.iter().zip(&question_vectors) {
        let mut scored: Vec<(f32, usize)> = (0..turns.len())
            .filter(|&i| turns[i]["conv"].as_str() == Some(q.conv.as_str()))
            .map(|i| (qv.iter().zip(&turn_vectors[i]).map(|(a, b)| a * b).sum(), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let found = scored
            .iter()
            .take(K)
            .filter(|(_, i)| q.evidence.iter().any(|e| turns[*i]["id"] == **e))
            .count();
        let recall = found as f64 / q.evidence.len() as f64;
        sum += recall;
        let entry = per_category.entry(q.category).or_default();
        entry.0 += recall;
        entry.1 += 1;
    }
    let per_category = per_category.into_iter().map(|(c, (s, n))| (c, s / n as f64)).collect();
    (sum / questions.len() as f64, per_category)
}

fn load_questions(path: &Path, turn_ids: &[&str]) -> Vec<Question> {
    read_jsonl(path)
        .into_iter()
        .filter(|q| (1..=4).contains(&q["category"].as_u64().unwrap_or(0)))
        .map(|q| Question {
            conv: q["conv"].as_str().expect("conv").to_owned(),
            category: q["category"].as_u64().expect("category"),
            evidence: q["evidence"]
                .as_array()
                .expect("evidence")
                .iter()
                .filter_map(|e| e.as_str().filter(|e| turn_ids.contains(e)).map(str::to_owned))
                .collect(),
            text: q["question"].as_str().expect("question").to_owned(),
        })
        .filter(|q| !q.evidence.is_empty())
        .collect()
}

#[test]
fn shipped_model_keeps_the_originals_locomo_recall() {
    let data = data_dir();
    if !data.join("locomo-dev.turns.jsonl").is_file() || !data.join("minilm-static-256").is_dir() {
        eprintln!(
            "skipped: {} is absent (developers' data, not in a user's clone)",
            data.display()
        );
        return;
    }
    let turns = read_jsonl(&data.join("locomo-dev.turns.jsonl"));
    let turn_ids: Vec<&str> = turns.iter().map(|t| t["id"].as_str().expect("id")).collect();
    let questions = load_questions(&data.join("locomo-dev.questions.jsonl"), &turn_ids);
    let original = StaticModel::from_dir(&data.join("minilm-static-256")).expect("f16 original loads");
    let shipped = StaticModel::builtin().expect("shipped model loads");
    let (r_original, c_original) = recall_at_k(&original, &turns, &questions);
    let (r_shipped, c_shipped) = recall_at_k(&shipped, &turns, &questions);
    eprintln!("LoCoMo dev, {} questions, evidence recall@{K}:", questions.len());
    eprintln!("  f16 original {r_original:.4}  per category {c_original:?}");
    eprintln!("  int8 shipped {r_shipped:.4}  per category {c_shipped:?}");
    assert!(
        r_shipped >= r_original - MAX_RECALL_LOSS,
        "int8 {r_shipped:.4} vs f16 {r_original:.4}"
    );
}
