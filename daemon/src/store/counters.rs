//! The store's counters for Stats: sizes, start-up, checkpoints, the WAL
//! (with its fdatasync latency histogram) and the followers.
//!
//! Plain names and numbers; the handler turns them into the wire's counters.

use std::borrow::Cow;

use crate::store::Store;
use crate::store::wal::WalStats;

/// One named value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterValue {
    /// Stable name (`snake_case`).
    pub name: Cow<'static, str>,
    /// Its value now.
    pub value: u64,
}

impl Store {
    /// Counters for Stats.
    pub fn counters(&self) -> Vec<CounterValue> {
        let inner = &self.inner;
        let state = self.read();
        let wal = self.wal().map(|wal| wal.stats()).ok();
        let report = &inner.report;
        let mut counters = vec![
            counter("memories", state.len() as u64),
            counter("namespaces", state.namespace_count() as u64),
            counter("dimension", u64::from(state.ids().dimension())),
            counter("applied_lsn", state.applied_lsn()),
            counter("last_checkpoint_lsn", inner.checkpoints.last_lsn()),
            counter("checkpoints_total", inner.checkpoints.total()),
            counter("snapshot_load_ms", report.snapshot_load.as_millis() as u64),
            counter("replay_records", report.replayed_records),
            counter("replay_ms", report.replay.as_millis() as u64),
            counter("torn_records_truncated", report.torn_records),
            counter("follower_panics", inner.followers.panics()),
        ];
        counters.extend(wal.map(|stats| wal_counters(&stats)).unwrap_or_default());
        counters
    }
}

/// WAL counters, with the fdatasync latency histogram as one counter per
/// log2 bucket (`wal_fsync_le_<upper bound>_ns`).
fn wal_counters(stats: &WalStats) -> Vec<CounterValue> {
    let mut counters = vec![
        counter("wal_bytes", stats.bytes_on_disk),
        counter("wal_segments", stats.segments),
        counter("wal_durable_lsn", stats.durable_lsn),
        counter("wal_records_acked", stats.records_acked),
        counter("wal_record_bytes", stats.record_bytes),
        counter("wal_records_failed", stats.records_failed),
        counter("wal_groups", stats.groups),
        counter("wal_fsyncs", stats.fsyncs),
        counter("wal_failed", u64::from(stats.failed)),
    ];
    for (upper_bound_ns, count) in &stats.fsync_latency_ns {
        counters.push(CounterValue {
            name: Cow::Owned(format!("wal_fsync_le_{upper_bound_ns}_ns")),
            value: *count,
        });
    }
    counters
}

fn counter(name: &'static str, value: u64) -> CounterValue {
    CounterValue {
        name: Cow::Borrowed(name),
        value,
    }
}
