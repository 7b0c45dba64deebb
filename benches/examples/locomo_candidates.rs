//! Dumps, for every LoCoMo question, each engine's deep candidate list as the
//! daemon ranks it: the training data of the fusion weights
//! (`benches/fit/fit_fusion.py`, see BENCHMARKS.md "Fitting the fusion").
//!
//! Usage: `locomo_candidates SOCKET DATA.json OUT.jsonl [DEPTH]`, against a
//! running nexusd (text-only memories, the built-in embedder). Writes one
//! JSON line per turn (`{"turn": …}`) and per question (`{"question": …}`),
//! each question with the `lexical` and `dense` lists: memory id, score and
//! the engine's signals. Ids are the daemon's, so the fitting script sees the
//! id adjacency the daemon sees.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use nexus_benches::eval::load_locomo;
use nexus_client::wire::{EngineChoice, MemoryInput, RecallRequest, RequestBody, ResponseBody};
use nexus_client::{Client, ConnectOptions};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, data, out, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: locomo_candidates SOCKET DATA.json OUT.jsonl [DEPTH]");
    };
    let depth: u32 = rest.first().map_or(Ok(100), |d| d.parse())?;
    let dataset = load_locomo(Path::new(data))?;
    let options = ConnectOptions {
        name: "locomo_candidates".into(),
        request_ring_bytes: 4 << 20,
        response_ring_bytes: 4 << 20,
        timeout: Duration::from_secs(60),
        ..ConnectOptions::default()
    };
    let client = Client::connect_with(Path::new(socket), options)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(out)?);
    for conversation in &dataset.conversations {
        let ns = &conversation.sample_id;
        for batch in conversation.turns.chunks(500) {
            let memories: Vec<MemoryInput> = (batch.iter())
                .map(|turn| MemoryInput {
                    key: Some(turn.dia_id.clone()),
                    namespace: ns.clone(),
                    text: turn.text.clone(),
                    created_at_ms: Some(turn.created_at_ms),
                    importance: 1.0,
                    ..MemoryInput::default()
                })
                .collect();
            let ids = client.remember(memories)?;
            for (id, turn) in ids.iter().zip(batch) {
                let line = json!({"turn": {"conv": ns, "dia": turn.dia_id, "id": id, "created_ms": turn.created_at_ms, "text": turn.text}});
                writeln!(out, "{line}")?;
            }
        }
    }
    // Let the dense graph take in the tail (as the eval's settle does).
    loop {
        let stats = client.stats()?;
        let tail = nexus_client::counter(&stats, "dense_tail").unwrap_or(0);
        if tail == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for conversation in &dataset.conversations {
        for question in &conversation.questions {
            let mut lists = serde_json::Map::new();
            for (name, engine) in [("lexical", EngineChoice::Lexical), ("dense", EngineChoice::Dense)] {
                let request = RecallRequest {
                    namespace: conversation.sample_id.clone(),
                    text: Some(question.text.clone()),
                    k: depth,
                    engine: Some(engine),
                    ..RecallRequest::default()
                };
                let response = client.call(RequestBody::Recall(request), Some(Duration::from_secs(60)))?;
                let ResponseBody::Recalled(hits) = response.body else {
                    anyhow::bail!("{name}: answered {:?}", response.status);
                };
                let list: Vec<_> = (hits.iter()).map(|hit| json!([hit.id, hit.score])).collect();
                lists.insert(name.into(), list.into());
            }
            let line = json!({"question": {"conv": conversation.sample_id, "text": question.text,
                "category": question.category, "evidence": question.evidence, "lists": lists}});
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
