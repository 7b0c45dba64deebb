//! The daemon's figures as OpenMetrics text (what Prometheus scrapes), in
//! Prometheus' naming: prefix `nexus_`, base units in names (`_seconds`,
//! `_bytes`, `_ratio`), counters exposed as `<name>_total`.
//!
//! One scrape is a [`Scrape`]: the Stats report, the histograms and the
//! memories per namespace, read beforehand, then encoded by
//! prometheus-client's text encoder through a [`Collector`] over them. The
//! Stats report is the one source of the counters and gauges, so the
//! endpoint and `nexus stats` cannot disagree; each Stats name is mapped
//! here to a Prometheus family (see [`family_of`]): monotonic ones become
//! counters, the rest gauges, times are converted to seconds, and names
//! that carry a label in them (`<engine>_breaker_state`, `route_<route>`,
//! `cache_hits_<level>`) become one labelled family.
//!
//! What this module does not do: read the daemon's state (the endpoint in
//! `telemetry.rs` builds the [`Scrape`]) or serve it.

use std::borrow::Cow;
use std::collections::HashMap;

use nexus_shm_protocol::wire::{Counter, StatsReport};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::histogram::Snapshot;
use super::{Operation, RouteLabel};

/// The `Content-Type` of what [`Scrape::encode`] writes (OpenMetrics 1.0
/// text; Prometheus asks for it first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Namespaces that get a label of their own in `nexus_namespace_memories`.
/// Namespaces are chosen by clients, so their number is unbounded, and each
/// label value is a time series Prometheus keeps: the largest 256 are shown
/// and the rest summed under [`OTHER_NAMESPACES`].
pub const MAX_NAMESPACE_LABELS: usize = 256;

/// The label value of the namespaces past [`MAX_NAMESPACE_LABELS`]. A real
/// namespace of this name is always counted there too, so no label value
/// appears twice.
pub const OTHER_NAMESPACES: &str = "_other";

/// Every figure one scrape shows, read before encoding (a [`Collector`]
/// owns what it encodes).
#[derive(Debug)]
pub struct Scrape {
    /// What the Stats operation reports now.
    pub stats: StatsReport,
    /// Recall latency by route.
    pub recall_latency: Vec<(RouteLabel, Snapshot)>,
    /// Latency of the other operations.
    pub request_latency: Vec<(Operation, Snapshot)>,
    /// The WAL's fdatasync latency.
    pub wal_fsync: Snapshot,
    /// Request-ring fill when a burst began.
    pub request_ring_occupancy: Snapshot,
    /// Live memories per namespace.
    pub namespaces: NamespaceMemories,
}

/// Live memories per namespace, bounded to [`MAX_NAMESPACE_LABELS`] labels.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NamespaceMemories {
    /// The largest namespaces, by name.
    pub labelled: Vec<(String, u64)>,
    /// Memories of every other namespace, if any was left out.
    pub other: Option<u64>,
}

impl NamespaceMemories {
    /// The `limit` largest of `sizes` (ties by name), the rest summed.
    /// Copies only the names it keeps.
    pub fn largest<'a>(sizes: impl Iterator<Item = (&'a str, u64)>, limit: usize) -> Self {
        let mut other = None;
        let mut kept: Vec<(&str, u64)> = Vec::new();
        for (name, memories) in sizes {
            match name == OTHER_NAMESPACES {
                true => *other.get_or_insert(0) += memories,
                false => kept.push((name, memories)),
            }
        }
        if kept.len() > limit {
            let largest_first = |a: &(&str, u64), b: &(&str, u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
            kept.select_nth_unstable_by(limit, largest_first);
            *other.get_or_insert(0) += kept[limit..].iter().map(|(_, memories)| memories).sum::<u64>();
            kept.truncate(limit);
        }
        kept.sort_unstable();
        Self {
            labelled: kept.into_iter().map(|(name, n)| (name.to_owned(), n)).collect(),
            other,
        }
    }
}

impl Scrape {
    /// The OpenMetrics text (ends with `# EOF`).
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("nexus");
        registry.register_collector(Box::new(self));
        let mut text = String::with_capacity(64 << 10);
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }

    fn encode_histograms(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Recall latency from pick-up to the reply, by the route that answered \
                    (refused: answered with an error).";
        let mut family = descriptor(encoder, "recall_duration_seconds", help, MetricType::Histogram)?;
        for (route, snapshot) in &self.recall_latency {
            snapshot.encode(family.encode_family(&[("route", route.name())])?)?;
        }
        let help = "Latency from pick-up to the reply of every operation but Recall, by operation.";
        let mut family = descriptor(encoder, "request_duration_seconds", help, MetricType::Histogram)?;
        for (operation, snapshot) in &self.request_latency {
            snapshot.encode(family.encode_family(&[("op", operation.name())])?)?;
        }
        let help = "Duration of the WAL writer's fdatasync calls.";
        let family = descriptor(encoder, "wal_fsync_duration_seconds", help, MetricType::Histogram)?;
        self.wal_fsync.encode(family)?;
        let help = "How full a shared-memory session's request ring was (used bytes / capacity) \
                    when the session began a burst of requests.";
        let family = descriptor(encoder, "request_ring_occupancy_ratio", help, MetricType::Histogram)?;
        self.request_ring_occupancy.encode(family)
    }

    fn encode_namespaces(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let help = "Live memories per namespace (the largest 256; the rest summed under namespace=\"_other\").";
        let mut family = descriptor(encoder, "namespace_memories", help, MetricType::Gauge)?;
        let other = self.namespaces.other.map(|n| (OTHER_NAMESPACES, n));
        let all = (self.namespaces.labelled.iter().map(|(name, n)| (name.as_str(), *n))).chain(other);
        for (namespace, memories) in all {
            ConstGauge::new(memories).encode(family.encode_family(&[("namespace", namespace)])?)?;
        }
        Ok(())
    }

    /// `nexus_cache_lookups_total`: hits and misses, so that
    /// `rate(nexus_cache_hits_total) / rate(nexus_cache_lookups_total)` is the hit rate.
    fn encode_cache_lookups(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let read = |name: &str| (self.stats.counters.iter()).find(|c| c.name == name).map(|c| c.value);
        let parts = [
            read("cache_hits_exact"),
            read("cache_hits_semantic"),
            read("cache_misses"),
        ];
        let Some(lookups) = parts.into_iter().sum::<Option<u64>>() else {
            return Ok(());
        };
        let help = "Recall cache lookups (hits and misses).";
        ConstCounter::new(lookups).encode(descriptor(encoder, "cache_lookups", help, MetricType::Counter)?)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_histograms(&mut encoder)?;
        self.encode_namespaces(&mut encoder)?;
        self.encode_cache_lookups(&mut encoder)?;
        for family in stats_families(&self.stats.counters) {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// Starts a family: `name` ending in `_seconds` or `_bytes` gets that
/// unit's `# UNIT` line.
fn descriptor<'s>(
    encoder: &'s mut DescriptorEncoder,
    name: &'s str,
    help: &str,
    metric_type: MetricType,
) -> Result<MetricEncoder<'s>, std::fmt::Error> {
    const SECONDS: &Unit = &Unit::Seconds;
    const BYTES: &Unit = &Unit::Bytes;
    let (base, unit) = match (name.strip_suffix("_seconds"), name.strip_suffix("_bytes")) {
        (Some(base), _) => (base, Some(SECONDS)),
        (_, Some(base)) => (base, Some(BYTES)),
        _ => (name, None),
    };
    encoder.encode_descriptor(base, help, unit, metric_type)
}

/// One Prometheus family made of Stats values.
#[derive(Debug)]
struct Family {
    /// Without the prefix, and without `_total` for a counter (the encoder adds it).
    name: String,
    help: Cow<'static, str>,
    metric_type: MetricType,
    /// Label name, for families made of several Stats values.
    label: Option<&'static str>,
    samples: Vec<(Option<String>, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Count(u64),
    Seconds(f64),
}

impl Family {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = descriptor(encoder, &self.name, &self.help, self.metric_type)?;
        for (label_value, value) in &self.samples {
            match (self.label, label_value) {
                (Some(label), Some(label_value)) => {
                    let labels = [(label, label_value.as_str())];
                    self.encode_value(*value, family.encode_family(&labels)?)?;
                }
                _ => return self.encode_value(*value, family),
            }
        }
        Ok(())
    }

    fn encode_value(&self, value: Value, sample: MetricEncoder) -> Result<(), std::fmt::Error> {
        match (self.metric_type, value) {
            (MetricType::Counter, Value::Count(n)) => ConstCounter::new(n).encode(sample),
            (MetricType::Counter, Value::Seconds(s)) => ConstCounter::new(s).encode(sample),
            (_, Value::Count(n)) => ConstGauge::new(n).encode(sample),
            (_, Value::Seconds(s)) => ConstGauge::new(s).encode(sample),
        }
    }
}

/// Where one Stats value goes.
#[derive(Debug, PartialEq)]
struct Placement {
    family: String,
    metric_type: MetricType,
    /// Label name and value.
    label: Option<(&'static str, String)>,
    value: Value,
}

/// The Stats values as families, in the report's order; a value that
/// appears twice (it should not) is shown once.
fn stats_families(counters: &[Counter]) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for counter in counters {
        let Some(placement) = family_of(&counter.name, counter.value) else {
            continue;
        };
        let slot = *index.entry(placement.family.clone()).or_insert_with(|| {
            families.push(Family {
                help: help(&counter.name, &placement),
                name: placement.family.clone(),
                metric_type: placement.metric_type,
                label: placement.label.as_ref().map(|(name, _)| *name),
                samples: Vec::new(),
            });
            families.len() - 1
        });
        let family = &mut families[slot];
        let label_value = placement.label.map(|(_, value)| value);
        let repeated = family.samples.iter().any(|(seen, _)| *seen == label_value);
        if !repeated && (family.label.is_some() == label_value.is_some()) {
            family.samples.push((label_value, placement.value));
        }
    }
    families
}

/// Stats values that only ever grow (exposed as `nexus_<name>_total`);
/// every other value is a gauge. `*_total` names lose the suffix first.
const COUNTERS: &[&str] = &[
    "connections_total",
    "handshakes_refused",
    "requests_total",
    "requests_failed",
    "recalls_degraded",
    "frames_rejected",
    "clients_disconnected_bad_frames",
    "clients_disconnected_stalled",
    "clients_disconnected_corrupt",
    "clients_disconnected_idle",
    "handshakes_evicted",
    "refused_fd_reserve",
    "refused_uid_share",
    "refused_memory_budget",
    "wakeups_sent",
    "process_cpu_ns",
    "checkpoints_total",
    "follower_panics",
    "wal_records_acked",
    "wal_record_bytes",
    "wal_records_failed",
    "wal_groups",
    "wal_fsyncs",
    "cache_misses",
    "cache_stale",
    "cache_evictions",
];

/// Suffixes of per-engine Stats values that only ever grow.
const COUNTER_SUFFIXES: &[&str] = &["_writes_held_back", "_writes_held_back_us"];

/// Time units in Stats names, with their length in seconds.
const TIME_SUFFIXES: &[(&str, f64)] = &[("_ns", 1e9), ("_us", 1e6), ("_ms", 1e3), ("_s", 1.0)];

/// The family, type, label and value a Stats value becomes; `None` for
/// values the exposition shows otherwise (the `latency_*` quantiles and the
/// `wal_fsync_le_*` buckets are histograms there).
fn family_of(name: &str, value: u64) -> Option<Placement> {
    if name.starts_with("latency_") || name.starts_with("wal_fsync_le_") {
        return None;
    }
    let labelled = |family: &str, metric_type, label, label_value: &str| {
        Some(Placement {
            family: family.to_owned(),
            metric_type,
            label: Some((label, label_value.to_owned())),
            value: Value::Count(value),
        })
    };
    if let Some(engine) = name.strip_suffix("_breaker_state") {
        return labelled("engine_breaker_state", MetricType::Gauge, "engine", engine);
    }
    if let Some(engine) = name.strip_suffix("_breaker_opened") {
        return labelled("engine_breaker_opened", MetricType::Counter, "engine", engine);
    }
    if let Some(route) = name.strip_prefix("route_") {
        return labelled("routed_recalls", MetricType::Counter, "route", route);
    }
    if let Some(level) = name.strip_prefix("cache_hits_") {
        return labelled("cache_hits", MetricType::Counter, "level", level);
    }
    let counter = COUNTERS.contains(&name) || COUNTER_SUFFIXES.iter().any(|suffix| name.ends_with(suffix));
    let metric_type = if counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    };
    let (family, value) = in_seconds(name, value);
    let family = match counter {
        true => family.strip_suffix("_total").unwrap_or(&family).to_owned(),
        false => family,
    };
    Some(Placement {
        family: sanitized(&family),
        metric_type,
        label: None,
        value,
    })
}

/// `foo_ms` → `foo_seconds` with the value converted; other names as they are.
fn in_seconds(name: &str, value: u64) -> (String, Value) {
    for (suffix, per_second) in TIME_SUFFIXES {
        if let Some(base) = name.strip_suffix(suffix) {
            return (format!("{base}_seconds"), Value::Seconds(value as f64 / per_second));
        }
    }
    (name.to_owned(), Value::Count(value))
}

/// A valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`): Stats names are
/// `snake_case` already; anything else becomes `_`.
fn sanitized(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The `# HELP` text of a family.
fn help(stat: &str, placement: &Placement) -> Cow<'static, str> {
    let known = match placement.family.as_str() {
        "engine_breaker_state" => "Circuit breaker of each engine: 0 closed, 1 open, 2 half-open (on trial).",
        "engine_breaker_opened" => "Times each engine's circuit breaker opened after repeated failures.",
        "routed_recalls" => "Recalls by the route the router chose (or the request forced).",
        "cache_hits" => "Recall cache hits, by level (exact: L1, semantic: L2).",
        _ => match stat {
            "uptime_s" => "Time since the daemon started.",
            "connections_open" => "Clients connected now.",
            "connections_total" => "Connections that completed a handshake.",
            "handshakes_refused" => "Handshakes refused (bad bytes, version, uid, capacity) or timed out.",
            "requests_total" => "Requests answered.",
            "requests_failed" => "Requests answered with an error code.",
            "recalls_degraded" => "Recalls answered without a failed engine (the answer says degraded).",
            "frames_rejected" => "Frames rejected as malformed, oversize or of unknown kind.",
            "clients_disconnected_bad_frames" => "Connections closed for sending too many bad frames.",
            "clients_disconnected_stalled" => "Connections closed because their response ring stayed full.",
            "clients_disconnected_corrupt" => "Connections closed because the shared ring state was corrupt.",
            "clients_disconnected_idle" => "Connections closed after idle_timeout without a request.",
            "handshakes_evicted" => "Connections dropped before their hello to make room for newer ones.",
            "refused_fd_reserve" => "Connections refused to keep fd_reserve descriptors for the store.",
            "refused_uid_share" => "Handshakes refused because the uid held its max_clients_per_uid.",
            "refused_memory_budget" => "Handshakes and frames refused to stay within memory_budget_bytes.",
            "wakeups_sent" => "Futex wake-ups sent to clients.",
            "process_cpu_ns" => "User and system CPU time of the daemon.",
            "process_rss_bytes" => "Resident memory of the daemon.",
            "process_open_fds" => "Open file descriptors of the daemon.",
            "memories" => "Live memories.",
            "namespaces" => "Namespaces with live memories.",
            "checkpoints_total" => "Checkpoints (snapshots) written.",
            "follower_panics" => "Panics caught in index followers.",
            "wal_records_acked" => "WAL records acknowledged durable.",
            "wal_record_bytes" => "Bytes of WAL records acknowledged.",
            "wal_records_failed" => "WAL records failed (not acknowledged).",
            "wal_groups" => "WAL commit groups written.",
            "wal_fsyncs" => "WAL fdatasync calls.",
            "wal_failed" => "1 when the WAL failed and refuses writes.",
            "cache_misses" => "Recall cache lookups that found nothing.",
            "cache_stale" => "Recall cache entries found stale (written since) and removed.",
            "cache_evictions" => "Recall cache entries evicted to respect its bounds.",
            "cache_entries" => "Recall cache entries held.",
            "cache_bytes" => "Recall cache bytes held.",
            _ => return Cow::Owned(format!("nexus stats value {stat}.")),
        },
    };
    Cow::Borrowed(known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::{Histogram, LATENCY_BOUNDS_NS, NS_PER_SECOND};

    fn placement(name: &str, value: u64) -> (String, MetricType, Option<(&'static str, String)>, Value) {
        let p = family_of(name, value).expect("shown");
        (p.family, p.metric_type, p.label, p.value)
    }

    #[test]
    fn monotonic_stats_become_counters_without_a_doubled_total() {
        assert_eq!(
            placement("requests_total", 7),
            ("requests".into(), MetricType::Counter, None, Value::Count(7))
        );
        assert_eq!(placement("wakeups_sent", 1).1, MetricType::Counter);
        assert_eq!(placement("dense_writes_held_back", 1).1, MetricType::Counter);
        assert_eq!(placement("connections_open", 3).1, MetricType::Gauge);
        assert_eq!(placement("memories", 3).1, MetricType::Gauge);
    }

    #[test]
    fn times_are_converted_to_seconds() {
        assert_eq!(
            placement("process_cpu_ns", 1_500_000_000),
            (
                "process_cpu_seconds".into(),
                MetricType::Counter,
                None,
                Value::Seconds(1.5)
            )
        );
        assert_eq!(placement("uptime_s", 4).3, Value::Seconds(4.0));
        assert_eq!(placement("replay_ms", 250).3, Value::Seconds(0.25));
        assert_eq!(placement("lexical_terms", 9).0, "lexical_terms", "not a time");
    }

    #[test]
    fn names_with_an_engine_route_or_level_in_them_become_labels() {
        assert_eq!(
            placement("dense_breaker_state", 1),
            (
                "engine_breaker_state".into(),
                MetricType::Gauge,
                Some(("engine", "dense".into())),
                Value::Count(1)
            )
        );
        assert_eq!(placement("route_cache_only", 2).2, Some(("route", "cache_only".into())));
        assert_eq!(placement("cache_hits_semantic", 2).0, "cache_hits");
        assert!(family_of("latency_recall_cache_p50_us", 1).is_none());
        assert!(family_of("wal_fsync_le_1024_ns", 1).is_none());
    }

    #[test]
    fn the_largest_namespaces_are_labelled_and_the_rest_summed() {
        let sizes = [("a", 5), ("b", 1), ("c", 9), ("_other", 2), ("d", 5)];
        let bounded = NamespaceMemories::largest(sizes.into_iter(), 2);
        assert_eq!(
            bounded.labelled,
            vec![("a".into(), 5), ("c".into(), 9)],
            "ties go by name"
        );
        assert_eq!(bounded.other, Some(1 + 2 + 5), "b, d and the namespace called _other");
        let few = NamespaceMemories::largest([("x", 1)].into_iter(), 2);
        assert_eq!((few.labelled.len(), few.other), (1, None));
    }

    #[test]
    fn a_scrape_is_openmetrics_text() {
        let latency = Histogram::new(&LATENCY_BOUNDS_NS, NS_PER_SECOND);
        latency.observe(1_500);
        let counter = |name: &str, value| Counter {
            name: name.into(),
            value,
        };
        let scrape = Scrape {
            stats: StatsReport {
                counters: vec![
                    counter("requests_total", 3),
                    counter("connections_open", 1),
                    counter("cache_hits_exact", 2),
                    counter("cache_hits_semantic", 1),
                    counter("cache_misses", 4),
                    counter("lexical_breaker_state", 0),
                    counter("dense_breaker_state", 1),
                ],
            },
            recall_latency: vec![(RouteLabel::Cache, latency.snapshot())],
            request_latency: vec![(Operation::Remember, latency.snapshot())],
            wal_fsync: latency.snapshot(),
            request_ring_occupancy: latency.snapshot(),
            namespaces: NamespaceMemories {
                labelled: vec![("a \"quoted\" one".into(), 2)],
                other: None,
            },
        };
        let text = scrape.encode().expect("encodes");
        for line in [
            "# TYPE nexus_recall_duration_seconds histogram",
            "# UNIT nexus_recall_duration_seconds seconds",
            "nexus_recall_duration_seconds_bucket{le=\"0.000002\",route=\"cache\"} 1",
            "nexus_recall_duration_seconds_count{route=\"cache\"} 1",
            "nexus_request_duration_seconds_count{op=\"remember\"} 1",
            "nexus_wal_fsync_duration_seconds_sum 0.0000015",
            "# TYPE nexus_requests counter",
            "nexus_requests_total 3",
            "nexus_connections_open 1",
            "nexus_cache_lookups_total 7",
            "nexus_cache_hits_total{level=\"semantic\"} 1",
            "nexus_engine_breaker_state{engine=\"dense\"} 1",
            "nexus_namespace_memories{namespace=\"a \\\"quoted\\\" one\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
