//! Percentiles from nanosecond samples and the number formats the tables share.
//! Each benchmark renders its own table (`*_table` in its module); this module
//! depends on none of them.
//!
//! Percentiles use the nearest-rank method on the sorted samples: p50 of
//! 1..=100 is 50, p99.9 of 1,000 samples is the 999th. No interpolation, so
//! every figure reported is a latency that really happened. JSON shapes are
//! the report structs' serde derives (see each benchmark module).

use std::time::Duration;

use serde::Serialize;

/// Latency percentiles and throughput of one transport.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Median round trip, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile, nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile, nanoseconds.
    pub p999_ns: u64,
    /// Requests completed per second of measured time.
    pub throughput_per_s: f64,
}

impl Summary {
    /// Sorts `samples_ns` in place and summarises them; `busy` is the wall
    /// time during which `completed` requests were measured.
    pub fn from_samples(samples_ns: &mut [u64], completed: u64, busy: Duration) -> Self {
        samples_ns.sort_unstable();
        let busy_s = busy.as_secs_f64();
        Self {
            p50_ns: percentile(samples_ns, 0.50),
            p99_ns: percentile(samples_ns, 0.99),
            p999_ns: percentile(samples_ns, 0.999),
            throughput_per_s: if busy_s > 0.0 { completed as f64 / busy_s } else { 0.0 },
        }
    }
}

/// The `quantile` (0..=1) of already sorted samples, nearest rank; 0 when empty.
pub fn percentile(sorted_ns: &[u64], quantile: f64) -> u64 {
    if sorted_ns.is_empty() {
        return 0;
    }
    debug_assert!(sorted_ns.is_sorted(), "percentile needs sorted samples");
    let rank = (quantile.clamp(0.0, 1.0) * sorted_ns.len() as f64).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1]
}

/// `numerator / denominator`, or 0 when the denominator is 0 (nothing measured).
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Nanoseconds as microseconds with two decimals.
pub fn micros(ns: u64) -> String {
    format!("{:.2} µs", ns as f64 / 1000.0)
}

/// 1234567.8 -> "1,234,568".
pub fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), 500);
        assert_eq!(percentile(&samples, 0.99), 990);
        assert_eq!(percentile(&samples, 0.999), 999);
        assert_eq!(percentile(&samples, 1.0), 1000);
        assert_eq!(percentile(&samples, 0.0), 1);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn summary_sorts_and_counts() {
        let mut samples = vec![30, 10, 20];
        let s = Summary::from_samples(&mut samples, 3, Duration::from_millis(1));
        assert_eq!((s.p50_ns, s.p99_ns, s.p999_ns), (20, 30, 30));
        assert!((s.throughput_per_s - 3000.0).abs() < 1e-6);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(1_234_567.4), "1,234,567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1000.0), "1,000");
    }
}
