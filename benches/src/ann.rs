//! `nexus-bench ann`: the ANN index's recall@10 against exact search and its
//! one-thread speed, for a range of search efforts, beside an exact int8
//! scan of the same vectors in the same run (issue 9, item 8).
//!
//! Data: the deterministic clustered set (`synthetic::Mixture`, a seeded
//! Gaussian mixture of [`DEFAULT_CLUSTERS`] clusters on the unit sphere, with
//! its own query stream), or real embeddings from raw little-endian f32
//! files (`--data`, `--queries`; without `--queries`, queries are the data's
//! own rows after the first `--vectors`, or the first rows when none are left).
//! Ground truth is an exact f32 cosine scan. Every query is run once to
//! score recall (and warm the caches), then again, timed, on one thread.
//! The index is built once with the shipped settings (the graph alone:
//! the tail is sealed), so every `ef` is measured on the same graph.
//!
//! Not here: the daemon. This measures the `recall::ann` data structure
//! directly; the recall pipeline's cost comes on top.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nexus_daemon::recall::ann::synthetic::Mixture;
use nexus_daemon::recall::ann::{self, AnnConfig, AnnIndex, Rows, SearchParams};
use serde::Serialize;

use crate::error::BenchError;

/// Clusters of the synthetic set (100 vectors per cluster at 100,000).
/// Calibrated: FAISS 1.15 `IndexHNSWFlat` (M=16, ef_construction=200,
/// ef=32) reaches recall@10 0.993 on this set here, the difficulty of the set
/// RESEARCH.md's reference figures (0.994) were measured on. With 100
/// clusters (1,000 vectors each, `--clusters 100`) the same FAISS index
/// reaches only 0.873: neighbours inside a large isotropic Gaussian cluster
/// are nearly equidistant, a harder set than real embeddings.
pub const DEFAULT_CLUSTERS: usize = 1000;
/// Per-component noise of the synthetic set, relative to the spread of the
/// cluster centres: points of one cluster have cosine ≈ 0.5 with each other
/// and ≈ 0 with other clusters'.
pub const DEFAULT_SPREAD: f64 = 1.0;
/// Seed of the synthetic set.
pub const DEFAULT_SEED: u64 = 9;
/// Queries of the synthetic set.
pub const DEFAULT_QUERIES: usize = 1000;
/// Search efforts tried, besides the shipped one.
pub const DEFAULT_EFS: [usize; 7] = [16, 24, 32, 48, 64, 96, 128];
/// Queries timed for the exact int8 scan (it is ~1,000× slower than the
/// graph; a few hundred give a stable rate).
pub const EXACT_SCAN_QUERIES: usize = 200;
/// Results compared: recall@10.
const K: usize = 10;

/// What to measure.
#[derive(Debug, Clone)]
pub struct AnnBenchConfig {
    /// Vectors indexed (rows of `--data`: at most this many).
    pub vectors: usize,
    /// Dimensions.
    pub dim: usize,
    /// Raw f32 rows to index instead of the synthetic set.
    pub data: Option<PathBuf>,
    /// Raw f32 rows to query with.
    pub queries_file: Option<PathBuf>,
    /// Synthetic queries (or a cap on the file's).
    pub queries: usize,
    /// Clusters of the synthetic set.
    pub clusters: usize,
    /// Search efforts tried.
    pub efs: Vec<usize>,
    /// Links per node (None: shipped).
    pub m: Option<usize>,
    /// Build effort (None: shipped).
    pub ef_construction: Option<usize>,
    /// Candidates re-ranked exactly (None: shipped).
    pub rerank: Option<usize>,
}

impl Default for AnnBenchConfig {
    fn default() -> Self {
        Self {
            vectors: 100_000,
            dim: 384,
            data: None,
            queries_file: None,
            queries: DEFAULT_QUERIES,
            clusters: DEFAULT_CLUSTERS,
            efs: DEFAULT_EFS.to_vec(),
            m: None,
            ef_construction: None,
            rerank: None,
        }
    }
}

/// Recall and speed at one search effort.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnnSetting {
    /// Search effort (candidates kept and re-ranked).
    pub ef: usize,
    /// Mean fraction of the exact top 10 found in the top 10.
    pub recall_at_10: f64,
    /// Queries per second of wall time, one thread.
    pub qps: f64,
    /// Queries per second of the thread's CPU time: what `qps` would be on
    /// an idle machine (this one is shared; other builds steal the core).
    pub cpu_qps: f64,
}

/// The measurement (also the `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnReport {
    /// "synthetic" or the data file's name.
    pub dataset: String,
    /// Vectors indexed.
    pub vectors: usize,
    /// Dimensions.
    pub dim: usize,
    /// Queries.
    pub queries: usize,
    /// The int8 kernel ("avx2", "scalar").
    pub kernel: String,
    /// Links per node.
    pub m: usize,
    /// Build effort.
    pub ef_construction: usize,
    /// Candidates re-ranked exactly.
    pub rerank: usize,
    /// Seconds to build the graph of every vector, one thread.
    pub build_seconds: f64,
    /// Seconds to insert every vector into the tail (the write path).
    pub insert_seconds: f64,
    /// Segment bytes per vector (codes, scale, id, links, id table); the f32
    /// vectors are the store's.
    pub bytes_per_vector: f64,
    /// The shipped search effort.
    pub default: AnnSetting,
    /// Every effort tried, ascending.
    pub settings: Vec<AnnSetting>,
    /// Queries per second of an exact int8 scan (plus the same re-rank).
    pub exact_int8_qps: f64,
    /// The same per second of CPU time.
    pub exact_int8_cpu_qps: f64,
    /// Its recall@10 (int8 ordering, f32 re-rank of the top `ef`).
    pub exact_int8_recall_at_10: f64,
    /// `default.qps / exact_int8_qps`.
    pub speedup_over_exact: f64,
    /// `default.cpu_qps / exact_int8_cpu_qps`.
    pub cpu_speedup_over_exact: f64,
}

/// Runs the benchmark.
pub fn run_ann(config: &AnnBenchConfig) -> Result<AnnReport, BenchError> {
    let (dataset, base, queries) = load(config)?;
    let dim = config.dim;
    let truth = exact_top_k(&base, &queries, dim);
    let mut index_config = AnnConfig::new(dim);
    index_config.hnsw.m = config.m.unwrap_or(index_config.hnsw.m);
    index_config.hnsw.ef_construction = config.ef_construction.unwrap_or(index_config.hnsw.ef_construction);
    index_config.rerank = config.rerank.unwrap_or(index_config.rerank);
    let index = AnnIndex::new(index_config.clone()).map_err(invalid)?;
    let inserting = Instant::now();
    for (id, row) in base.chunks_exact(dim).enumerate() {
        index.insert(id as u64, row).map_err(invalid)?;
    }
    let insert_seconds = inserting.elapsed().as_secs_f64();
    let building = Instant::now();
    index.seal().map_err(invalid)?;
    let build_seconds = building.elapsed().as_secs_f64();
    let rows = Rows { values: &base, dim };
    let mut efs = config.efs.clone();
    efs.push(index_config.ef_search);
    efs.sort_unstable();
    efs.dedup();
    let settings: Vec<AnnSetting> = efs
        .iter()
        .map(|ef| measure(&index, &rows, &queries, &truth, *ef, false))
        .collect();
    let exact_queries = &queries[..queries.len().min(EXACT_SCAN_QUERIES * dim)];
    let exact = measure(&index, &rows, exact_queries, &truth, index_config.ef_search, true);
    let default = *settings
        .iter()
        .find(|s| s.ef == index_config.ef_search)
        .expect("the shipped ef is measured");
    let n = base.len() / dim;
    Ok(AnnReport {
        dataset,
        vectors: n,
        dim,
        queries: queries.len() / dim,
        kernel: index.kernel().name().to_owned(),
        m: index_config.hnsw.m,
        ef_construction: index_config.hnsw.ef_construction,
        rerank: index_config.rerank,
        build_seconds,
        insert_seconds,
        bytes_per_vector: index.stats().segment_bytes as f64 / n as f64,
        default,
        speedup_over_exact: default.qps / exact.qps,
        cpu_speedup_over_exact: default.cpu_qps / exact.cpu_qps,
        settings,
        exact_int8_qps: exact.qps,
        exact_int8_cpu_qps: exact.cpu_qps,
        exact_int8_recall_at_10: exact.recall_at_10,
    })
}

/// The report as a table.
pub fn ann_table(report: &AnnReport) -> String {
    let mut out = format!(
        "ANN ({}): {} × {}-d, {} queries, kernel {}, M={} ef_construction={} rerank={}\n\
         build {:.1} s (one thread), inserts {:.2} s, {:.0} bytes/vector in segments\n\n\
         {:>5}  {:>10}  {:>10}  {:>14}\n",
        report.dataset,
        report.vectors,
        report.dim,
        report.queries,
        report.kernel,
        report.m,
        report.ef_construction,
        report.rerank,
        report.build_seconds,
        report.insert_seconds,
        report.bytes_per_vector,
        "ef",
        "recall@10",
        "queries/s",
        "per CPU second"
    );
    for setting in &report.settings {
        let mark = if setting.ef == report.default.ef {
            "  (default)"
        } else {
            ""
        };
        out += &format!(
            "{:>5}  {:>10.4}  {:>10.0}  {:>14.0}{mark}\n",
            setting.ef, setting.recall_at_10, setting.qps, setting.cpu_qps
        );
    }
    out += &format!(
        "exact int8 scan: {:.0} queries/s, {:.0} per CPU second (recall@10 {:.4}); \
         default is {:.1}× faster ({:.1}× per CPU second)\n",
        report.exact_int8_qps,
        report.exact_int8_cpu_qps,
        report.exact_int8_recall_at_10,
        report.speedup_over_exact,
        report.cpu_speedup_over_exact
    );
    out
}

/// Runs every query twice (recall, then timed) at one effort.
fn measure(
    index: &AnnIndex,
    rows: &Rows<'_>,
    queries: &[f32],
    truth: &[Vec<u64>],
    ef: usize,
    exact: bool,
) -> AnnSetting {
    let params = SearchParams {
        ef: Some(ef),
        exact,
        ..SearchParams::top(K)
    };
    let dim = rows.dim;
    let mut found = 0usize;
    for (query, expected) in queries.chunks_exact(dim).zip(truth) {
        let hits = index.search(query, &params, rows).expect("queries are valid vectors");
        found += hits.iter().filter(|h| expected.contains(&h.id)).count();
    }
    let started = Instant::now();
    let cpu_started = thread_cpu_seconds();
    let mut checksum = 0u64;
    for query in queries.chunks_exact(dim) {
        let hits = index.search(query, &params, rows).expect("queries are valid vectors");
        checksum = checksum.wrapping_add(hits.first().map_or(0, |h| h.id));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - cpu_started;
    std::hint::black_box(checksum);
    let n_queries = queries.len() / dim;
    AnnSetting {
        ef,
        recall_at_10: found as f64 / (n_queries * K) as f64,
        qps: n_queries as f64 / elapsed,
        cpu_qps: n_queries as f64 / cpu,
    }
}

/// The base rows and the query rows, and the dataset's name.
fn load(config: &AnnBenchConfig) -> Result<(String, Vec<f32>, Vec<f32>), BenchError> {
    let dim = config.dim;
    if dim == 0 || config.vectors == 0 || config.queries == 0 {
        return Err(BenchError::InvalidArgument(
            "--dim, --vectors and --query-count must be at least 1".into(),
        ));
    }
    let Some(data) = &config.data else {
        let mixture = Mixture {
            dim,
            clusters: config.clusters.max(1),
            spread: DEFAULT_SPREAD,
            seed: DEFAULT_SEED,
        };
        return Ok((
            format!("synthetic, {} clusters", mixture.clusters),
            mixture.sample(config.vectors, 1),
            mixture.sample(config.queries, 2),
        ));
    };
    let mut rows = read_f32_rows(data, dim)?;
    let name = data
        .file_name()
        .map_or_else(|| data.display().to_string(), |n| n.to_string_lossy().into_owned());
    let queries = match &config.queries_file {
        Some(file) => read_f32_rows(file, dim)?,
        None if rows.len() > config.vectors * dim => rows.split_off(config.vectors * dim),
        None => rows[..rows.len().min(config.queries * dim)].to_vec(),
    };
    rows.truncate(config.vectors * dim);
    let queries = queries[..queries.len().min(config.queries * dim)].to_vec();
    Ok((name, rows, queries))
}

/// A file of little-endian f32, `dim` per row.
fn read_f32_rows(path: &Path, dim: usize) -> Result<Vec<f32>, BenchError> {
    let bytes = std::fs::read(path)?;
    if bytes.len() % (4 * dim) != 0 || bytes.is_empty() {
        return Err(BenchError::InvalidArgument(format!(
            "{}: {} bytes is not a whole number of {dim}-d f32 rows",
            path.display(),
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// For each query, the ids (row numbers) of its `K` nearest rows by exact
/// f32 cosine.
fn exact_top_k(base: &[f32], queries: &[f32], dim: usize) -> Vec<Vec<u64>> {
    let inverse_norms: Vec<f32> = base
        .chunks_exact(dim)
        .map(|r| 1.0 / dot(r, r).sqrt().max(f32::MIN_POSITIVE))
        .collect();
    queries
        .chunks_exact(dim)
        .map(|query| {
            let mut scored: Vec<(f32, u64)> = base
                .chunks_exact(dim)
                .zip(&inverse_norms)
                .enumerate()
                .map(|(id, (row, inverse))| (dot(row, query) * inverse, id as u64))
                .collect();
            let k = K.min(scored.len());
            scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            scored[..k].iter().map(|(_, id)| *id).collect()
        })
        .collect()
}

/// f32 dot product in 16 partial sums (vectorised by the compiler).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut sums = [0.0f32; 16];
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for lane in 0..16 {
            sums[lane] += x[lane] * y[lane];
        }
    }
    let rest = a.len() / 16 * 16;
    sums.iter().sum::<f32>() + a[rest..].iter().zip(&b[rest..]).map(|(x, y)| x * y).sum::<f32>()
}

fn invalid(error: ann::AnnError) -> BenchError {
    BenchError::InvalidArgument(error.to_string())
}

/// This thread's CPU time, seconds.
fn thread_cpu_seconds() -> f64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    now.tv_sec() as f64 + now.tv_nsec() as f64 * 1e-9
}
