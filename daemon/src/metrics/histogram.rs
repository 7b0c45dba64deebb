//! A fixed-bucket histogram of integer observations, lock-free, that both
//! the Prometheus exposition and `Stats` read.
//!
//! Why not `prometheus_client::metrics::histogram::Histogram`: its `observe`
//! takes a mutex (every recall on every worker would meet on it), and it
//! keeps its buckets private, so `Stats` could not estimate a p50 or p99 from
//! it. This one is a row of relaxed atomic counters: an observation is a
//! binary search over at most [`MAX_BUCKETS`] bounds and two `fetch_add`s,
//! with no lock and no allocation, and a [`Snapshot`] of it both encodes
//! itself through prometheus-client's encoder (so the exposition text is the
//! crate's, not ours) and estimates quantiles.
//!
//! Observations are integers in a fine unit (nanoseconds, parts per million)
//! and are divided into the exposition's base unit (seconds, ratio) only when
//! encoded: a division by a power of ten is correctly rounded, so a bound of
//! 1 000 ns is written `le="0.000001"`, never `1.0000000000000002e-6`.
//!
//! Not here: which histograms the daemon keeps (`metrics/mod.rs`) or how
//! they are named and labelled (`metrics/exposition.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::exemplar::Exemplar;

/// Most buckets a histogram can have, the `+Inf` one included: enough for
/// five bounds a decade over seven decades, and a fixed size so a histogram
/// can be built in a `const` (the WAL's is a `static`).
pub const MAX_BUCKETS: usize = 40;

/// Latency bucket bounds in nanoseconds, 1 µs to 10 s at 1, 2, 3, 5, 7 per
/// decade: a cache hit (µs) and a checkpoint (s) both land in a bucket no
/// more than twice as wide as its lower bound, so an estimated quantile is
/// off by less than that bucket's width.
pub const LATENCY_BOUNDS_NS: [u64; 36] = [
    1_000,
    2_000,
    3_000,
    5_000,
    7_000,
    10_000,
    20_000,
    30_000,
    50_000,
    70_000,
    100_000,
    200_000,
    300_000,
    500_000,
    700_000,
    1_000_000,
    2_000_000,
    3_000_000,
    5_000_000,
    7_000_000,
    10_000_000,
    20_000_000,
    30_000_000,
    50_000_000,
    70_000_000,
    100_000_000,
    200_000_000,
    300_000_000,
    500_000_000,
    700_000_000,
    1_000_000_000,
    2_000_000_000,
    3_000_000_000,
    5_000_000_000,
    7_000_000_000,
    10_000_000_000,
];

/// Nanoseconds in the exposition's unit, the second.
pub const NS_PER_SECOND: f64 = 1e9;

/// Fill bounds in parts per million (1 %, 5 %, 10 %, 25 %, 50 %, 75 %,
/// 90 %, full): a ring at a few percent is a client keeping up, one near
/// full a client about to wait for room.
pub const OCCUPANCY_BOUNDS_PPM: [u64; 8] = [10_000, 50_000, 100_000, 250_000, 500_000, 750_000, 900_000, 1_000_000];

/// Parts per million in the exposition's unit, the ratio.
pub const PPM_PER_RATIO: f64 = 1e6;

/// Counts of observations at or below each bound, plus their sum.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive), strictly increasing, in the observations' unit.
    bounds: &'static [u64],
    /// Observation units per exposition unit.
    units_per_base: f64,
    /// `counts[i]`: observations in (bounds[i-1], bounds[i]];
    /// `counts[bounds.len()]`: the ones above every bound (`+Inf`).
    counts: [AtomicU64; MAX_BUCKETS],
    /// Sum of every observation (wraps after 584 years of nanoseconds).
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (strictly increasing, fewer than
    /// [`MAX_BUCKETS`]), whose observations are `units_per_base` to the
    /// exposition's unit (`1e9` for nanoseconds reported as seconds).
    pub const fn new(bounds: &'static [u64], units_per_base: f64) -> Self {
        assert!(
            !bounds.is_empty() && bounds.len() < MAX_BUCKETS,
            "1..MAX_BUCKETS bounds"
        );
        let mut i = 1;
        while i < bounds.len() {
            assert!(bounds[i - 1] < bounds[i], "bounds must be strictly increasing");
            i += 1;
        }
        Self {
            bounds,
            units_per_base,
            counts: [const { AtomicU64::new(0) }; MAX_BUCKETS],
            sum: AtomicU64::new(0),
        }
    }

    /// Counts one observation. Lock-free and allocation-free: it runs on
    /// every request.
    #[inline]
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        // Relaxed: counts are read for reporting only; a scrape that sees
        // the count before the sum is off by one observation, never torn.
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        let used = &self.counts[..=self.bounds.len()];
        Snapshot {
            bounds: self.bounds,
            units_per_base: self.units_per_base,
            counts: used.iter().map(|count| count.load(Ordering::Relaxed)).collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    bounds: &'static [u64],
    units_per_base: f64,
    /// One per bound, then `+Inf`; not cumulative.
    counts: Vec<u64>,
    sum: u64,
}

impl Snapshot {
    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// An estimate of the `q` quantile (0..=1) in the observations' unit,
    /// as Prometheus' `histogram_quantile` makes it: the bucket holding the
    /// rank, linearly interpolated between its bounds. 0 when empty; the
    /// highest bound when the rank falls in `+Inf`.
    pub fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (bucket, &in_bucket) in self.counts.iter().enumerate() {
            if in_bucket > 0 && (below + in_bucket) as f64 >= rank {
                let Some(&upper) = self.bounds.get(bucket) else {
                    return self.bounds[self.bounds.len() - 1];
                };
                let lower = if bucket == 0 { 0 } else { self.bounds[bucket - 1] };
                let fraction = ((rank - below as f64) / in_bucket as f64).clamp(0.0, 1.0);
                return lower + ((upper - lower) as f64 * fraction) as u64;
            }
            below += in_bucket;
        }
        self.bounds[self.bounds.len() - 1]
    }

    /// The bounds in the exposition's unit, each with its (non-cumulative)
    /// count; the encoder accumulates them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = self.bounds.iter().map(|&bound| bound as f64 / self.units_per_base);
        let bounds = bounds.chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().copied()).collect()
    }
}

impl EncodeMetric for Snapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let sum = self.sum as f64 / self.units_per_base;
        let no_exemplars: Option<&HashMap<usize, Exemplar<NoLabelSet, f64>>> = None;
        encoder.encode_histogram(sum, self.count(), &self.buckets(), no_exemplars)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static BOUNDS: [u64; 3] = [10, 20, 40];

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_holds_it() {
        let histogram = Histogram::new(&BOUNDS, 1.0);
        for value in [0, 10, 11, 20, 40, 41, u64::MAX / 2] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts, vec![2, 2, 1, 2], "le is inclusive; the rest is +Inf");
        assert_eq!(snapshot.count(), 7);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_histogram_quantile() {
        let histogram = Histogram::new(&BOUNDS, 1.0);
        for _ in 0..100 {
            histogram.observe(15);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.quantile(0.5), 15, "half-way through (10, 20]");
        assert_eq!(snapshot.quantile(1.0), 20);
        assert_eq!(Histogram::new(&BOUNDS, 1.0).snapshot().quantile(0.99), 0, "empty");
        histogram.observe(1_000);
        assert_eq!(histogram.snapshot().quantile(1.0), 40, "+Inf answers the highest bound");
    }

    #[test]
    fn latency_bounds_are_written_as_round_seconds() {
        let histogram = Histogram::new(&LATENCY_BOUNDS_NS, NS_PER_SECOND);
        let buckets = histogram.snapshot().buckets();
        assert_eq!(buckets[0].0.to_string(), "0.000001");
        assert_eq!(buckets[14].0.to_string(), "0.0007");
        assert_eq!(buckets[35].0.to_string(), "10");
        assert_eq!(buckets[36].0, f64::INFINITY);
        assert!(LATENCY_BOUNDS_NS.len() < MAX_BUCKETS && OCCUPANCY_BOUNDS_PPM.len() < MAX_BUCKETS);
    }
}
