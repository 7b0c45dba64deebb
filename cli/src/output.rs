//! How answers look: text for a person (tables, thousands separators,
//! units, text cut to the terminal's width) and, with `--json`, one JSON
//! object per command for a program.
//!
//! Rendering only: every function here takes a value the daemon already
//! returned and writes it; none talks to the daemon or decides an exit code.

use std::io::{self, IsTerminal, Write};

use jiff::Timestamp;
use nexus_client::RecallAnswer;
use nexus_client::wire::{
    Counter, DuplicateAction, HealthReport, MemoryTag, RecallHit, RememberReport, Route, StatsReport,
};
use serde_json::{Map, Value, json};

/// Width assumed for a terminal whose `$COLUMNS` is unknown: wide enough
/// for a result line's fields and some of its text.
const DEFAULT_TERMINAL_COLUMNS: usize = 100;

/// The fewest characters of a memory's text a compact result line keeps,
/// however narrow the terminal.
const MIN_TEXT_COLUMNS: usize = 20;

/// Where answers go and in which form.
pub struct Output<W: Write> {
    writer: W,
    json: bool,
    /// Columns to fit result lines in; `None` when not writing to a terminal
    /// (a pipe or file gets every text whole).
    width: Option<usize>,
}

impl Output<io::Stdout> {
    /// Stdout: JSON when `json`, else text cut to the terminal's width when
    /// stdout is a terminal (`$COLUMNS`, else 100 columns).
    pub fn stdout(json: bool) -> Self {
        let stdout = io::stdout();
        let width = stdout.is_terminal().then(|| {
            std::env::var("COLUMNS")
                .ok()
                .and_then(|columns| columns.trim().parse().ok())
                .filter(|&columns: &usize| columns > 0)
                .unwrap_or(DEFAULT_TERMINAL_COLUMNS)
        });
        Self::new(stdout, json, width)
    }
}

impl<W: Write> Output<W> {
    /// Output to `writer`.
    pub fn new(writer: W, json: bool, width: Option<usize>) -> Self {
        Self { writer, json, width }
    }

    /// True when `--json` was given.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Writes `json()` as one line with `--json`, else runs `human`.
    pub fn emit(
        &mut self,
        json: impl FnOnce() -> Value,
        human: impl FnOnce(&mut W, Option<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.json {
            writeln!(self.writer, "{}", json())?;
        } else {
            human(&mut self.writer, self.width)?;
        }
        self.writer.flush()
    }

    /// The writer itself (completions, progress lines).
    pub fn writer(&mut self) -> &mut W {
        &mut self.writer
    }
}

// ---- remember ----------------------------------------------------------

/// `remember`'s text: the id, then what preprocessing did.
pub fn remember_human(w: &mut impl Write, report: &RememberReport) -> io::Result<()> {
    let Some(id) = report.ids.first() else {
        return writeln!(w, "nothing was stored");
    };
    writeln!(w, "remembered as id {id}")?;
    for note in &report.notes {
        if !note.chunk_ids.is_empty() {
            let ids: Vec<String> = note.chunk_ids.iter().map(u64::to_string).collect();
            writeln!(w, "  stored as {} chunks: {}", note.chunk_ids.len(), ids.join(", "))?;
        }
        if let Some(duplicate) = &note.duplicate {
            let action = match duplicate.action {
                DuplicateAction::Linked => "stored and linked to it",
                DuplicateAction::Skipped => "not stored: the id above is the original's",
                DuplicateAction::Merged => "stored in its place (same key)",
            };
            writeln!(
                w,
                "  near-duplicate of {} (similarity {:.2}): {action}",
                duplicate.original, duplicate.similarity
            )?;
        }
    }
    Ok(())
}

/// `remember --json`: `{"id", "chunk_ids", "duplicate"}`.
pub fn remember_json(report: &RememberReport) -> Value {
    let note = report.notes.iter().find(|note| note.input == 0);
    let duplicate = note.and_then(|note| note.duplicate).map(|duplicate| {
        json!({
            "original": duplicate.original,
            "similarity": f32_json(duplicate.similarity),
            "action": match duplicate.action {
                DuplicateAction::Linked => "linked",
                DuplicateAction::Skipped => "skipped",
                DuplicateAction::Merged => "merged",
            },
        })
    });
    json!({
        "id": report.ids.first(),
        "chunk_ids": note.map(|note| note.chunk_ids.clone()).unwrap_or_default(),
        "duplicate": duplicate,
    })
}

// ---- recall ------------------------------------------------------------

/// The `--route` name of a route; `None` for `Route::None`.
pub fn route_name(route: Route) -> Option<&'static str> {
    match route {
        Route::None => None,
        Route::CacheOnly => Some("cache"),
        Route::SmartRouting => Some("smart"),
        Route::FullPipeline => Some("full"),
        Route::MaximumIntelligence => Some("max"),
    }
}

/// `recall`'s text: the request id (what `feedback` names), the route and
/// why, any degradation, then one compact line per result, or with
/// `explain` each result's factors as an indented breakdown.
pub fn recall_human(w: &mut impl Write, answer: &RecallAnswer, explain: bool, width: Option<usize>) -> io::Result<()> {
    match route_name(answer.route) {
        Some(route) => writeln!(
            w,
            "request {}, route {route}: {}",
            answer.request_id, answer.route_reason
        )?,
        None => writeln!(w, "request {}", answer.request_id)?,
    }
    if let Some(reason) = &answer.degraded {
        writeln!(w, "degraded: {reason}")?;
    }
    if answer.hits.is_empty() {
        return writeln!(w, "no memory matches");
    }
    let id_width = answer
        .hits
        .iter()
        .map(|hit| hit.id.to_string().len())
        .max()
        .unwrap_or(1);
    for (rank, hit) in answer.hits.iter().enumerate() {
        if explain {
            explained_hit(w, rank + 1, hit)?;
        } else {
            compact_hit(w, hit, id_width, width)?;
        }
    }
    Ok(())
}

fn compact_hit(w: &mut impl Write, hit: &RecallHit, id_width: usize, width: Option<usize>) -> io::Result<()> {
    let fields = format!(
        "{:>id_width$}  {:.4}  {}  {}  ",
        hit.id,
        hit.score,
        human_time(hit.created_at_ms),
        hit.namespace
    );
    let text = one_line(&hit.text);
    let text = match width {
        Some(width) => truncate(
            &text,
            width.saturating_sub(fields.chars().count()).max(MIN_TEXT_COLUMNS),
        ),
        None => text,
    };
    writeln!(w, "{fields}{text}")
}

fn explained_hit(w: &mut impl Write, rank: usize, hit: &RecallHit) -> io::Result<()> {
    writeln!(
        w,
        "{rank}. memory {}  score {:.4}  created {}  namespace {}",
        hit.id,
        hit.score,
        human_time(hit.created_at_ms),
        hit.namespace
    )?;
    if !hit.tags.is_empty() {
        writeln!(w, "   tags: {}", tags_text(&hit.tags))?;
    }
    for line in hit.text.lines() {
        writeln!(w, "   {line}")?;
    }
    let name_width = hit.why.iter().map(|signal| signal.name.len()).max().unwrap_or(0);
    for signal in &hit.why {
        writeln!(w, "     {:<name_width$}  {:+.4}", signal.name, signal.value)?;
    }
    if hit.why.is_empty() {
        writeln!(w, "     (no factor breakdown: the engine scored alone)")?;
    }
    Ok(())
}

/// `recall --json`: request id, route, reason, degradation and the hits
/// (tags and factors as objects, times in RFC 3339).
pub fn recall_json(answer: &RecallAnswer) -> Value {
    let hits: Vec<Value> = answer
        .hits
        .iter()
        .map(|hit| {
            let why: Map<String, Value> = hit
                .why
                .iter()
                .map(|signal| (signal.name.clone(), f32_json(signal.value)))
                .collect();
            json!({
                "id": hit.id,
                "score": f32_json(hit.score),
                "text": hit.text,
                "namespace": hit.namespace,
                "tags": tags_json(&hit.tags),
                "created_at": rfc3339(hit.created_at_ms),
                "why": why,
            })
        })
        .collect();
    json!({
        "request_id": answer.request_id,
        "route": route_name(answer.route),
        "route_reason": answer.route_reason,
        "degraded": answer.degraded,
        "hits": hits,
    })
}

// ---- stats -------------------------------------------------------------

/// The sections of `nexus stats`, in print order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Connections,
    Requests,
    Routes,
    Cache,
    Store,
    Engines,
    Mining,
    Process,
    Other,
}

impl Section {
    const ALL: [Section; 9] = [
        Self::Connections,
        Self::Requests,
        Self::Routes,
        Self::Cache,
        Self::Store,
        Self::Engines,
        Self::Mining,
        Self::Process,
        Self::Other,
    ];

    fn title(self) -> &'static str {
        match self {
            Self::Connections => "connections",
            Self::Requests => "requests",
            Self::Routes => "recall routes and latency",
            Self::Cache => "cache",
            Self::Store => "store and WAL",
            Self::Engines => "engines and breakers",
            Self::Mining => "mining and learning",
            Self::Process => "process",
            Self::Other => "other",
        }
    }

    /// Where a counter belongs, by its name (ARCHITECTURE.md, "Stats
    /// counters"); a name no rule knows goes to "other", so new counters
    /// show up before this table learns them.
    fn of(name: &str) -> Self {
        let starts = |prefixes: &[&str]| prefixes.iter().any(|prefix| name.starts_with(prefix));
        if starts(&["process_"]) || name == "uptime_s" {
            Self::Process
        } else if starts(&[
            "connections_",
            "handshakes_",
            "refused_",
            "clients_disconnected_",
            "memory_charged_",
            "memory_budget_",
        ]) || matches!(name, "fd_limit" | "wakeups_sent")
        {
            Self::Connections
        } else if starts(&["route_", "latency_recall_", "recall_", "recalls_"]) {
            Self::Routes
        } else if starts(&["requests_", "request_", "frames_", "latency_"]) {
            Self::Requests
        } else if starts(&["cache_"]) {
            Self::Cache
        } else if starts(&["wal_", "snapshot_", "replay_", "checkpoint"])
            || matches!(
                name,
                "memories"
                    | "namespaces"
                    | "dimension"
                    | "applied_lsn"
                    | "last_checkpoint_lsn"
                    | "torn_records_truncated"
                    | "follower_panics"
            )
        {
            Self::Store
        } else if name.contains("_breaker_") || starts(&["lexical_", "dense_", "vector_", "scan_"]) {
            Self::Engines
        } else if starts(&["mining_", "learning_"]) {
            Self::Mining
        } else {
            Self::Other
        }
    }
}

/// `stats`' text: one table, grouped by section, values with thousands
/// separators and units; the cache's hit rate computed from its counters.
pub fn stats_human(w: &mut impl Write, stats: &StatsReport) -> io::Result<()> {
    let rows = stats_rows(stats);
    let name_width = rows.iter().map(|(_, name, _)| name.len()).max().unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|(_, _, value)| value.chars().count())
        .max()
        .unwrap_or(0);
    let mut current = None;
    for (section, name, value) in &rows {
        if current != Some(*section) {
            if current.is_some() {
                writeln!(w)?;
            }
            writeln!(w, "{}", section.title())?;
            current = Some(*section);
        }
        writeln!(w, "  {name:<name_width$}  {value:>value_width$}")?;
    }
    Ok(())
}

/// `stats --json`: one object, counter name → value.
pub fn stats_json(stats: &StatsReport) -> Value {
    let counters: Map<String, Value> = stats
        .counters
        .iter()
        .map(|counter| (counter.name.clone(), json!(counter.value)))
        .collect();
    Value::Object(counters)
}

/// (section, label, formatted value) in print order: sections in
/// `Section::ALL` order, counters in the daemon's order within each, a
/// latency histogram's three counters folded into one row.
fn stats_rows(stats: &StatsReport) -> Vec<(Section, String, String)> {
    let mut rows = Vec::with_capacity(stats.counters.len() + 1);
    for section in Section::ALL {
        if section == Section::Cache {
            rows.extend(cache_hit_rate(&stats.counters).map(|value| (section, "hit rate".to_owned(), value)));
        }
        let counters = stats
            .counters
            .iter()
            .filter(|counter| Section::of(&counter.name) == section);
        rows.extend(section_rows(section, counters));
    }
    rows
}

/// One section's rows; a latency histogram's row stands where its first
/// counter does.
fn section_rows<'a>(section: Section, counters: impl Iterator<Item = &'a Counter>) -> Vec<(Section, String, String)> {
    let mut rows: Vec<(Section, String, Option<String>)> = Vec::new();
    let mut latencies: Vec<Latency<'a>> = Vec::new();
    for counter in counters {
        let Some((label, part)) = latency_part(&counter.name) else {
            let value = counter_value(&counter.name, counter.value);
            rows.push((section, counter.name.clone(), Some(value)));
            continue;
        };
        let index = latencies
            .iter()
            .position(|latency| latency.label == label)
            .unwrap_or_else(|| {
                latencies.push(Latency::new(label));
                // Filled with the summary once all three counters are read.
                rows.push((section, format!("latency {}", label.replace('_', " ")), None));
                latencies.len() - 1
            });
        latencies[index].values[part] = Some(counter.value);
    }
    let mut summaries = latencies.iter().map(Latency::summary);
    (rows.into_iter())
        .map(|(section, label, value)| (section, label, value.or_else(|| summaries.next()).unwrap_or_default()))
        .collect()
}

/// One latency histogram as Stats reports it: `latency_<label>_p50_us`,
/// `latency_<label>_p99_us`, `latency_<label>_count`.
struct Latency<'a> {
    label: &'a str,
    /// p50 (µs), p99 (µs), count, in [`LATENCY_SUFFIXES`] order.
    values: [Option<u64>; 3],
}

/// The suffixes of a latency histogram's counters, in `Latency::values` order.
const LATENCY_SUFFIXES: [&str; 3] = ["_p50_us", "_p99_us", "_count"];

impl<'a> Latency<'a> {
    fn new(label: &'a str) -> Self {
        Self {
            label,
            values: [None; 3],
        }
    }

    /// `p50 250.0 µs p99 1.2 ms (12 requests)`, or `no requests yet`.
    fn summary(&self) -> String {
        let [p50, p99, count] = self.values;
        if count == Some(0) {
            return "no requests yet".into();
        }
        let quantile = |name: &str, us: Option<u64>| us.map(|us| format!("{name} {}", counter_value("x_us", us)));
        let mut parts: Vec<String> = [quantile("p50", p50), quantile("p99", p99)]
            .into_iter()
            .flatten()
            .collect();
        if let Some(count) = count {
            let noun = if count == 1 { "request" } else { "requests" };
            parts.push(format!("({} {noun})", thousands(count)));
        }
        parts.join(" ")
    }
}

/// `latency_<label><suffix>` → (label, index of the suffix).
fn latency_part(name: &str) -> Option<(&str, usize)> {
    let rest = name.strip_prefix("latency_")?;
    LATENCY_SUFFIXES
        .iter()
        .enumerate()
        .find_map(|(index, suffix)| rest.strip_suffix(suffix).map(|label| (label, index)))
}

/// Hits (exact + semantic) over lookups (hits + misses); `None` when the
/// daemon reports no cache counters.
fn cache_hit_rate(counters: &[Counter]) -> Option<String> {
    let find = |name: &str| counters.iter().find(|c| c.name == name).map(|c| c.value);
    let misses = find("cache_misses")?;
    let hits = find("cache_hits_exact").unwrap_or(0) + find("cache_hits_semantic").unwrap_or(0);
    let lookups = hits + misses;
    if lookups == 0 {
        return Some("- (no lookups yet)".into());
    }
    let percent = hits as f64 * 100.0 / lookups as f64;
    Some(format!(
        "{percent:.1} % ({} of {} lookups)",
        thousands(hits),
        thousands(lookups)
    ))
}

/// A counter's value with its unit, read from the name's suffix.
fn counter_value(name: &str, value: u64) -> String {
    if name.ends_with("_breaker_state") {
        return match value {
            0 => "closed".into(),
            1 => "open".into(),
            2 => "half-open".into(),
            other => other.to_string(),
        };
    }
    // A histogram bucket (`wal_fsync_le_1000_ns`) counts events; its unit
    // belongs to the bound in its name, not to the value.
    if name.contains("_le_") || name.ends_with("_total") {
        return thousands(value);
    }
    if name == "process_pid" {
        return value.to_string();
    }
    if name.ends_with("_bytes") {
        return bytes(value);
    }
    const TIME_UNITS: [(&str, &str, u64); 4] = [
        ("_ns", "ns", 1),
        ("_us", "µs", 1_000),
        ("_ms", "ms", 1_000_000),
        ("_s", "s", 1_000_000_000),
    ];
    match TIME_UNITS.iter().find(|(suffix, _, _)| name.ends_with(suffix)) {
        Some((_, unit, _)) if value == 0 => format!("0 {unit}"),
        Some(&(_, _, ns_per_unit)) => duration_ns(u128::from(value) * u128::from(ns_per_unit)),
        None => thousands(value),
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `64.0 MiB`.
fn bytes(value: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if value < 1024 {
        return format!("{value} B");
    }
    let mut scaled = value as f64 / 1024.0;
    let mut unit = 0;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    format!("{scaled:.1} {}", UNITS[unit])
}

/// A duration in the unit that reads best: `850 ns`, `41.2 µs`, `3.4 ms`,
/// `2.50 s`, `4 min 05 s`, `3 h 07 min`, `2 d 05 h`.
fn duration_ns(ns: u128) -> String {
    const US: u128 = 1_000;
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000_000_000;
    let seconds = ns / S;
    match ns {
        0..US => format!("{ns} ns"),
        US..MS => format!("{:.1} µs", ns as f64 / US as f64),
        MS..S => format!("{:.1} ms", ns as f64 / MS as f64),
        _ if seconds < 60 => format!("{:.2} s", ns as f64 / S as f64),
        _ if seconds < 3_600 => format!("{} min {:02} s", seconds / 60, seconds % 60),
        _ if seconds < 86_400 => format!("{} h {:02} min", seconds / 3_600, seconds % 3_600 / 60),
        _ => format!("{} d {:02} h", seconds / 86_400, seconds % 86_400 / 3_600),
    }
}

/// A duration the daemon reports in whole seconds: `0 s`, `42 s`, then as
/// [`duration_ns`] (`4 min 05 s`, ...): no false precision below a second.
fn whole_seconds(seconds: u64) -> String {
    if seconds < 60 {
        format!("{seconds} s")
    } else {
        duration_ns(u128::from(seconds) * 1_000_000_000)
    }
}

// ---- health ------------------------------------------------------------

/// What `health` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    /// Serving reads and writes, every engine up.
    Healthy,
    /// Serving, with something below par (writes refused, an engine down).
    Degraded,
    /// Not serving, or not reachable.
    Down,
}

impl HealthStatus {
    /// The word printed and put in `--json`'s `status`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }

    /// The verdict on a report: a daemon that serves reads but refuses every
    /// write (its WAL stopped) is not healthy, and a probe must say so.
    pub fn of(report: &HealthReport) -> Self {
        if !report.serving {
            Self::Down
        } else if report.write_failure.is_some() || !report.degraded.is_empty() {
            Self::Degraded
        } else {
            Self::Healthy
        }
    }
}

/// Each reason a report is not healthy, one line each.
pub fn health_reasons(report: &HealthReport) -> Vec<String> {
    let mut reasons = Vec::with_capacity(report.degraded.len() + 2);
    if !report.serving {
        reasons.push("not serving: nexusd is shutting down".to_owned());
    }
    if let Some(failure) = &report.write_failure {
        reasons.push(format!("refusing writes: {failure}"));
    }
    reasons.extend(report.degraded.iter().cloned());
    reasons
}

/// `health`'s text: the verdict with version and uptime, then each reason.
pub fn health_human(w: &mut impl Write, socket: &str, report: &HealthReport) -> io::Result<()> {
    let status = HealthStatus::of(report);
    writeln!(
        w,
        "{}: nexusd {} on {socket}, up {}",
        status.word(),
        report.version,
        whole_seconds(report.uptime_s)
    )?;
    for reason in health_reasons(report) {
        writeln!(w, "  {reason}")?;
    }
    Ok(())
}

/// `health --json`: `{"status", "socket", "version", "uptime_s",
/// "write_failure", "degraded", "reasons"}`.
pub fn health_json(socket: &str, report: &HealthReport) -> Value {
    json!({
        "status": HealthStatus::of(report).word(),
        "socket": socket,
        "serving": report.serving,
        "version": report.version,
        "uptime_s": report.uptime_s,
        "write_failure": report.write_failure,
        "degraded": report.degraded,
        "reasons": health_reasons(report),
    })
}

// ---- shared helpers ----------------------------------------------------

/// Milliseconds since the epoch as RFC 3339 (UTC); the number itself when
/// it is outside jiff's range.
pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// A compact UTC time for result lines: `2024-05-01 12:00:07Z`.
fn human_time(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
}

/// An f32 as the shortest decimal that reads back as the same f32
/// (`0.1`, not the f64 widening's `0.10000000149011612`).
fn f32_json(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn tags_json(tags: &[MemoryTag]) -> Value {
    let object: Map<String, Value> = tags
        .iter()
        .map(|tag| (tag.key.clone(), Value::String(tag.value.clone())))
        .collect();
    Value::Object(object)
}

fn tags_text(tags: &[MemoryTag]) -> String {
    let pairs: Vec<String> = tags.iter().map(|tag| format!("{}={}", tag.key, tag.value)).collect();
    pairs.join(" ")
}

/// Whitespace runs (newlines included) as single spaces: one result, one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max_chars` characters, the last one `…` when cut.
fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_client::wire::{DuplicateNote, RememberNote, Signal};

    fn render(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut buffer = Vec::new();
        f(&mut buffer).unwrap();
        String::from_utf8(buffer).unwrap()
    }

    fn counter(name: &str, value: u64) -> Counter {
        Counter {
            name: name.into(),
            value,
        }
    }

    fn hit(id: u64, text: &str) -> RecallHit {
        RecallHit {
            id,
            score: 0.8125,
            text: text.into(),
            namespace: "default".into(),
            tags: vec![MemoryTag {
                key: "who".into(),
                value: "caroline".into(),
            }],
            created_at_ms: 1_714_521_600_000,
            why: vec![
                Signal {
                    name: "lexical".into(),
                    value: 0.5,
                },
                Signal {
                    name: "recency".into(),
                    value: 0.3125,
                },
            ],
        }
    }

    fn answer(hits: Vec<RecallHit>) -> RecallAnswer {
        RecallAnswer {
            request_id: 42,
            route: Route::SmartRouting,
            route_reason: "a short query".into(),
            degraded: Some("dense: circuit breaker open".into()),
            hits,
        }
    }

    #[test]
    fn numbers_get_separators_and_units_from_their_names() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(counter_value("wal_bytes", 67_108_864), "64.0 MiB");
        assert_eq!(counter_value("cache_bytes", 512), "512 B");
        assert_eq!(counter_value("process_cpu_ns", 75_888_000), "75.9 ms");
        assert_eq!(counter_value("latency_smart_p50_us", 412), "412.0 µs");
        assert_eq!(counter_value("replay_ms", 0), "0 ms");
        assert_eq!(counter_value("uptime_s", 3_725), "1 h 02 min");
        assert_eq!(counter_value("wal_fsync_le_1000_ns", 12_345), "12,345");
        assert_eq!(counter_value("requests_total", 1_000), "1,000");
        assert_eq!(counter_value("dense_breaker_state", 1), "open");
        assert_eq!(counter_value("process_pid", 123_456), "123456");
        assert_eq!(counter_value("memories", 100_000), "100,000");
    }

    #[test]
    fn stats_are_grouped_with_the_cache_hit_rate_and_unknown_counters_last() {
        let stats = StatsReport {
            counters: vec![
                counter("uptime_s", 5),
                counter("brand_new_counter", 7),
                counter("cache_hits_exact", 1),
                counter("cache_hits_semantic", 1),
                counter("cache_misses", 2),
                counter("connections_open", 3),
                counter("latency_recall_full_p50_us", 800),
                counter("latency_recall_full_p99_us", 2_500),
                counter("latency_recall_full_count", 1_200),
                counter("latency_recall_max_p50_us", 0),
                counter("latency_recall_max_p99_us", 0),
                counter("latency_recall_max_count", 0),
                counter("latency_remember_p50_us", 40),
                counter("dense_breaker_state", 0),
                counter("wal_bytes", 2048),
                counter("mining_clusters", 4),
                counter("requests_total", 12_000),
            ],
        };
        let text = render(|w| stats_human(w, &stats));
        let titles: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with(' ') && !line.is_empty())
            .collect();
        assert_eq!(
            titles,
            [
                "connections",
                "requests",
                "recall routes and latency",
                "cache",
                "store and WAL",
                "engines and breakers",
                "mining and learning",
                "process",
                "other"
            ]
        );
        assert!(
            text.contains("hit rate") && text.contains("50.0 % (2 of 4 lookups)"),
            "{text}"
        );
        assert!(text.contains("12,000") && text.contains("2.0 KiB"), "{text}");
        let latency: Vec<&str> = text.lines().filter(|line| line.starts_with("  latency")).collect();
        assert_eq!(latency.len(), 3, "one row per histogram: {text}");
        assert!(latency[0].trim_start().starts_with("latency remember") && latency[0].ends_with("p50 40.0 µs"));
        assert!(
            latency[1].contains("latency recall full")
                && latency[1].ends_with("p50 800.0 µs p99 2.5 ms (1,200 requests)")
        );
        assert!(latency[2].contains("latency recall max") && latency[2].ends_with("no requests yet"));
        let last = text.lines().last().unwrap();
        assert!(last.contains("brand_new_counter") && last.ends_with(" 7"), "{text}");
        let json = stats_json(&stats);
        assert_eq!(json["requests_total"], 12_000);
        assert_eq!(json.as_object().unwrap().len(), stats.counters.len());
    }

    #[test]
    fn a_recall_shows_the_request_id_route_degradation_and_one_line_per_result() {
        let long = "Caroline went hiking in the hills\nand then she painted the lake at sunrise, twice";
        let text = render(|w| recall_human(w, &answer(vec![hit(7, long), hit(12, "short")]), false, Some(80)));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "request 42, route smart: a short query");
        assert_eq!(lines[1], "degraded: dense: circuit breaker open");
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[2].starts_with(" 7  0.8125  2024-05-01 00:00:00Z  default  Caroline"),
            "{text}"
        );
        assert!(lines[2].ends_with('…') && lines[2].chars().count() == 80, "{text}");
        let piped = render(|w| recall_human(w, &answer(vec![hit(7, long)]), false, None));
        assert!(
            piped.contains("and then she painted the lake at sunrise, twice"),
            "{piped}"
        );
        let empty = render(|w| recall_human(w, &answer(vec![]), false, None));
        assert!(empty.ends_with("no memory matches\n"), "{empty}");
    }

    #[test]
    fn explain_breaks_each_score_into_its_factors() {
        let text = render(|w| recall_human(w, &answer(vec![hit(7, "Caroline went hiking")]), true, None));
        assert!(
            text.contains("1. memory 7  score 0.8125  created 2024-05-01 00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("   tags: who=caroline"), "{text}");
        assert!(text.contains("     lexical  +0.5000\n     recency  +0.3125"), "{text}");
    }

    #[test]
    fn recall_json_has_tags_and_factors_as_objects_and_rfc3339_times() {
        let json = recall_json(&answer(vec![hit(7, "x")]));
        assert_eq!(json["request_id"], 42);
        assert_eq!(json["route"], "smart");
        assert_eq!(json["degraded"], "dense: circuit breaker open");
        let hit = &json["hits"][0];
        assert_eq!(hit["tags"]["who"], "caroline");
        assert_eq!(hit["why"]["lexical"], 0.5);
        assert_eq!(hit["created_at"], "2024-05-01T00:00:00Z");
        assert_eq!(f32_json(0.1).to_string(), "0.1", "no f64 widening noise");
        assert_eq!(f32_json(f32::NAN), Value::Null);
    }

    #[test]
    fn remember_reports_chunks_and_duplicates() {
        let report = RememberReport {
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
        let text = render(|w| remember_human(w, &report));
        assert_eq!(
            text,
            "remembered as id 5\n  stored as 2 chunks: 5, 6\n  near-duplicate of 2 (similarity 0.90): stored and linked to it\n"
        );
        let json = remember_json(&report);
        assert_eq!(json["id"], 5);
        assert_eq!(json["chunk_ids"], json!([5, 6]));
        assert_eq!(json["duplicate"]["action"], "linked");
    }

    // Regression (issue 7, scenario 11): `nexus health` exited 0 for a daemon
    // whose WAL had stopped accepting writes.
    #[test]
    fn health_is_degraded_by_refused_writes_or_a_degraded_engine() {
        let mut report = HealthReport {
            serving: true,
            uptime_s: 7,
            version: "0.1.0".into(),
            write_failure: None,
            degraded: vec![],
        };
        assert_eq!(HealthStatus::of(&report), HealthStatus::Healthy);
        report.degraded = vec!["dense: circuit breaker open".into()];
        assert_eq!(HealthStatus::of(&report), HealthStatus::Degraded);
        report.degraded.clear();
        report.write_failure = Some("fdatasync of 1.wal failed".into());
        assert_eq!(HealthStatus::of(&report), HealthStatus::Degraded);
        let text = render(|w| health_human(w, "/s", &report));
        assert_eq!(
            text,
            "degraded: nexusd 0.1.0 on /s, up 7 s\n  refusing writes: fdatasync of 1.wal failed\n"
        );
        report.serving = false;
        assert_eq!(HealthStatus::of(&report), HealthStatus::Down);
        assert_eq!(health_json("/s", &report)["status"], "down");
    }
}
