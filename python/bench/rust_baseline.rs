//! The Rust side of python/bench/bench_client.py: the same recalls and the
//! same remember batches through `nexus_client::Client`, so the Python
//! package's overhead is measured against the client it wraps, on the same
//! daemon in the same run. Not a criterion bench: it prints one JSON line the
//! Python script reads. Usage: `rust_baseline SOCKET N_RECALLS N_REMEMBER BATCH NAMESPACE`
//! (0 recalls or 0 memories skips that part; memories go to NAMESPACE).

use std::time::{Duration, Instant};

use nexus_client::wire::{MemoryInput, RecallRequest, Route};
use nexus_client::{Client, ConnectOptions};

/// The query set both sides use (bench_client.py builds the same strings).
const N_QUERIES: usize = 50;

/// The rings the Python package asks for (8 MiB each), so both sides speak alike.
const RING_BYTES: u32 = 8 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, n_recalls, n_remember, batch, namespace] = args.as_slice() else {
        return Err("usage: rust_baseline SOCKET N_RECALLS N_REMEMBER BATCH NAMESPACE".into());
    };
    let (n_recalls, n_remember, batch): (usize, usize, usize) =
        (n_recalls.parse()?, n_remember.parse()?, batch.parse()?);
    let options = ConnectOptions {
        request_ring_bytes: RING_BYTES,
        response_ring_bytes: RING_BYTES,
        ..ConnectOptions::default()
    };
    let client = Client::connect_with(socket, options)?;
    let (mut cache_only, mut smart, mut rate) = (0, 0, 0.0);
    if n_recalls > 0 {
        cache_only = median_recall_ns(&client, n_recalls, Route::CacheOnly)?;
        smart = median_recall_ns(&client, n_recalls, Route::SmartRouting)?;
    }
    if n_remember > 0 {
        rate = remember_rate(&client, n_remember, batch, namespace)?;
    }
    println!("{{\"recall_cache_only_ns\": {cache_only}, \"recall_smart_ns\": {smart}, \"remember_per_s\": {rate:.1}}}");
    Ok(())
}

fn median_recall_ns(client: &Client, n_recalls: usize, route: Route) -> Result<u128, nexus_client::ClientError> {
    let mut samples = Vec::with_capacity(n_recalls);
    for i in 0..n_recalls {
        let request = RecallRequest {
            route: Some(route),
            ..RecallRequest::new("bench", format!("what about topic {}", i % N_QUERIES), 5)
        };
        let started = Instant::now();
        client.recall(request)?;
        samples.push(started.elapsed());
    }
    Ok(median(&mut samples).as_nanos())
}

fn remember_rate(
    client: &Client,
    n_remember: usize,
    batch: usize,
    namespace: &str,
) -> Result<f64, nexus_client::ClientError> {
    let memories: Vec<MemoryInput> = (0..n_remember)
        .map(|i| MemoryInput::new(namespace, format!("bulk memory {i} about topic {}", i % N_QUERIES)))
        .collect();
    let started = Instant::now();
    for chunk in memories.chunks(batch.max(1)) {
        client.remember(chunk.to_vec())?;
    }
    Ok(n_remember as f64 / started.elapsed().as_secs_f64())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}
