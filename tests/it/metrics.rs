//! Observability as an operator sees it (issue 11): the metrics endpoint of a
//! real daemon, scraped over its Unix socket with raw HTTP, answers valid
//! OpenMetrics text whose figures match what the test did (recalls per
//! route, remembers, fdatasyncs, connected clients, memories per
//! namespace); anything but `GET /metrics` is a 404; a silent client is cut
//! at the read deadline while a concurrent scrape is served, and more than
//! eight at once are refused with 503; `--log-format json` writes one JSON
//! object per line, and at `debug` one per request naming its id and route.
//!
//! The text is checked by a strict parser of the OpenMetrics text format
//! written here ([`parse`]): metadata before samples, every family once,
//! sample names the family's with its type's suffixes, label syntax and
//! escapes, histograms cumulative with `+Inf` equal to `_count`, `# EOF` last.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nexus_client::wire::{RecallRequest, Route};
use nexus_tests::store::memory;
use nexus_tests::{BOUNDED_WAIT, Daemon, TestDir};

use crate::BINARIES;

/// Recalls forced onto SmartRouting (which never answers from the cache).
const SMART_RECALLS: usize = 3;

/// What the test writes: namespace → texts.
const WRITTEN: [(&str, &[&str]); 2] = [
    (
        "alpha",
        &[
            "Caroline went hiking in the hills",
            "Melanie painted a lake at sunrise",
            "Caroline adopted a puppy named Oscar",
        ],
    ),
    ("beta \"quoted\"", &["a note about trains", "a note about rivers"]),
];

/// A daemon with its metrics on `metrics.sock` in its temp dir, and that path.
fn start_with_metrics(extra_args: &[&str]) -> (Daemon, PathBuf) {
    let dir = TestDir::new();
    let metrics = dir.path().join("metrics.sock");
    let socket_arg = metrics.to_str().expect("a UTF-8 temp path").to_owned();
    let mut args = vec!["--metrics-socket", socket_arg.as_str()];
    args.extend_from_slice(extra_args);
    (Daemon::start_in(BINARIES, dir, &args), metrics)
}

#[test]
fn a_scrape_is_valid_openmetrics_and_counts_what_the_clients_did() {
    let (daemon, metrics) = start_with_metrics(&["--chunk-tokens", "0", "--duplicates", "off"]);
    let client = daemon.client();
    for (namespace, texts) in WRITTEN {
        let memories = texts.iter().map(|text| memory(namespace, text)).collect();
        client.remember(memories).expect("remember");
    }
    for text in ["hiking", "painted", "puppy"].iter().cycle().take(SMART_RECALLS) {
        let query = RecallRequest {
            route: Some(Route::SmartRouting),
            ..RecallRequest::new("alpha", *text, 5)
        };
        client.recall(query).expect("a smart recall");
    }
    for _ in 0..2 {
        // The second of two identical auto-routed recalls is a cache hit.
        client
            .recall(RecallRequest::new("alpha", "who went hiking", 5))
            .expect("recall");
    }

    let answer = check_get(&metrics, "/metrics", 200);
    assert_eq!(
        answer.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let exposition = parse(&answer.body);

    let smart = exposition.value("nexus_recall_duration_seconds_count", &[("route", "smart")]);
    assert!(smart >= SMART_RECALLS as f64, "smart recalls: {smart}");
    let cache = exposition.value("nexus_recall_duration_seconds_count", &[("route", "cache")]);
    assert!(cache >= 1.0, "cache hits: {cache}");
    let remembers = exposition.value("nexus_request_duration_seconds_count", &[("op", "remember")]);
    assert_eq!(remembers, WRITTEN.len() as f64);
    assert!(exposition.value("nexus_wal_fsync_duration_seconds_count", &[]) > 0.0);
    assert!(exposition.value("nexus_connections_open", &[]) >= 1.0);
    let requests = (WRITTEN.len() + SMART_RECALLS + 2) as f64;
    assert!(exposition.value("nexus_requests_total", &[]) >= requests);
    assert!(exposition.value("nexus_cache_hits_total", &[("level", "exact")]) >= 1.0);
    assert!(exposition.value("nexus_cache_lookups_total", &[]) >= 2.0);
    for (namespace, texts) in WRITTEN {
        let memories = exposition.value("nexus_namespace_memories", &[("namespace", namespace)]);
        assert_eq!(memories, texts.len() as f64, "memories of {namespace:?}");
    }
    assert_eq!(exposition.family("nexus_engine_breaker_state").kind, "gauge");
    // The same figures in Stats, for `nexus stats`.
    assert!(daemon.stats_counter("latency_recall_smart_count") >= SMART_RECALLS as u64);
    assert!(daemon.stats_counter("latency_recall_smart_p99_us") >= daemon.stats_counter("latency_recall_smart_p50_us"));
    for (name, family) in &exposition.families {
        assert!(family.help, "{name} has no HELP");
        let counter = family.kind == "counter";
        assert!(!name.ends_with("_total"), "family {name} is named with _total");
        for sample in &family.samples {
            if counter {
                assert!(sample.name.ends_with("_total"), "counter sample {}", sample.name);
            }
        }
    }
}

#[test]
fn anything_but_get_metrics_is_a_404() {
    let (_daemon, metrics) = start_with_metrics(&[]);
    check_get(&metrics, "/", 404);
    check_get(&metrics, "/metrics/extra", 404);
    let answer = exchange(&metrics, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    check_get(&metrics, "/metrics?name=x", 200);
}

#[test]
fn a_silent_client_is_cut_at_the_deadline_while_another_scrape_is_served() {
    let (_daemon, metrics) = start_with_metrics(&[]);
    let mut silent = UnixStream::connect(&metrics).expect("connect");
    silent.write_all(b"GET /metr").expect("half a request line");
    // Served while the silent client holds its connection.
    parse(&check_get(&metrics, "/metrics", 200).body);
    silent.set_read_timeout(Some(BOUNDED_WAIT)).expect("timeout");
    let mut answer = String::new();
    silent
        .read_to_string(&mut answer)
        .expect("the daemon closes the connection at its deadline (not our timeout)");
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
}

#[test]
fn more_than_eight_scrapers_at_once_are_refused_and_served_again_later() {
    let (_daemon, metrics) = start_with_metrics(&[]);
    let silent: Vec<UnixStream> = (0..8)
        .map(|_| {
            let mut stream = UnixStream::connect(&metrics).expect("connect");
            stream.write_all(b"GET").expect("a partial request");
            stream
        })
        .collect();
    // Answered at once, before it even sends its request.
    let mut ninth = UnixStream::connect(&metrics).expect("connect");
    ninth.set_read_timeout(Some(BOUNDED_WAIT)).expect("timeout");
    let mut refused = String::new();
    ninth.read_to_string(&mut refused).expect("the refusal, then the end");
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    for mut stream in silent {
        stream.set_read_timeout(Some(BOUNDED_WAIT)).expect("timeout");
        let mut cut = String::new();
        stream.read_to_string(&mut cut).expect("cut at the deadline");
    }
    check_get(&metrics, "/metrics", 200);
}

#[test]
fn json_logs_are_one_object_per_line_and_name_each_request_at_debug() {
    let daemon = crate::start(&["--log-format", "json", "--log", "debug"]);
    let client = daemon.client();
    client
        .remember(vec![memory("logs", "a line to find")])
        .expect("remember");
    let query = RecallRequest {
        route: Some(Route::SmartRouting),
        ..RecallRequest::new("logs", "find", 3)
    };
    client.recall(query).expect("recall");
    let log = daemon.stderr_text();
    // Only whole lines: the daemon may be writing the next one.
    let complete = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
    let lines: Vec<serde_json::Value> = (complete.lines())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|line| line["level"].is_string() && line["message"].is_string())
    );
    assert!(lines.iter().any(|line| line["message"] == "nexusd ready"), "{log}");
    let recall = (lines.iter())
        .find(|line| line["message"] == "request answered" && line["span"]["op"] == "recall")
        .unwrap_or_else(|| panic!("no request line for the recall in:\n{log}"));
    assert_eq!(recall["span"]["route"], "smart", "{recall}");
    assert!(recall["span"]["id"].is_u64(), "{recall}");
    assert!(recall["latency_us"].is_u64(), "{recall}");
    assert_eq!(recall["status"], "ok");
}

/// An HTTP answer.
struct Answer {
    content_type: String,
    body: String,
}

/// `GET target`; checks the status and that the body is as long as announced.
#[track_caller]
fn check_get(socket: &Path, target: &str, status: u16) -> Answer {
    let request = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let text = exchange(socket, request.as_bytes());
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(
        status_line.starts_with(&format!("HTTP/1.1 {status} ")),
        "{target}: {status_line}"
    );
    let headers: BTreeMap<String, String> = lines
        .filter_map(|line| line.split_once(": "))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect();
    assert_eq!(headers["content-length"], body.len().to_string(), "{target}");
    Answer {
        content_type: headers["content-type"].clone(),
        body: body.to_owned(),
    }
}

/// Sends `request` and reads until the daemon closes (one request per connection).
#[track_caller]
fn exchange(socket: &Path, request: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    stream.set_read_timeout(Some(BOUNDED_WAIT)).expect("timeout");
    stream.write_all(request).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("the whole answer");
    answer
}

/// A parsed exposition: family name → its metadata and samples.
#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, Family>,
}

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Exposition {
    #[track_caller]
    fn family(&self, name: &str) -> &Family {
        (self.families.get(name)).unwrap_or_else(|| panic!("no family {name}"))
    }

    /// The value of the sample `name` with exactly `labels`.
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let samples = self.families.values().flat_map(|family| &family.samples);
        let mut found = samples.filter(|s| s.name == name && s.labels == wanted);
        found
            .next()
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
            .value
    }
}

/// Parses OpenMetrics text strictly; panics naming the first line that breaks the format.
#[track_caller]
fn parse(text: &str) -> Exposition {
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("no # EOF at the end"));
    let mut exposition = Exposition::default();
    let mut current: Option<String> = None;
    let mut seen_samples = std::collections::BTreeSet::new();
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (keyword, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(keyword), Some(name), Some(rest)) = (keyword, name, rest) else {
                panic!("bad metadata line {line:?}")
            };
            check_metric_name(name, line);
            if current.as_deref() != Some(name) {
                let fresh = exposition.families.insert(name.to_owned(), Family::default()).is_none();
                assert!(fresh, "family {name} appears twice");
                current = Some(name.to_owned());
            }
            let family = exposition.families.get_mut(name).expect("inserted");
            assert!(family.samples.is_empty(), "metadata after samples: {line:?}");
            match keyword {
                "HELP" => family.help = true,
                "TYPE" => {
                    let kinds = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    assert!(kinds.contains(&rest), "bad type {line:?}");
                    family.kind = rest.to_owned();
                }
                "UNIT" => assert!(name.ends_with(&format!("_{rest}")), "{name} does not end with its unit"),
                _ => panic!("unknown metadata {line:?}"),
            }
            continue;
        }
        let family_name = current
            .clone()
            .unwrap_or_else(|| panic!("sample before any family: {line:?}"));
        let family = exposition.families.get_mut(&family_name).expect("current");
        let sample = parse_sample(line);
        let suffixes: &[&str] = match family.kind.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            other => panic!("no TYPE (or {other:?}) before {line:?}"),
        };
        let suffix = (sample.name.strip_prefix(family_name.as_str()))
            .unwrap_or_else(|| panic!("{line:?} is not a sample of {family_name}"));
        assert!(
            suffixes.contains(&suffix),
            "{line:?}: suffix {suffix:?} in a {}",
            family.kind
        );
        let key = format!("{}{:?}", sample.name, sample.labels);
        assert!(seen_samples.insert(key), "sample repeated: {line:?}");
        family.samples.push(sample);
    }
    for (name, family) in &exposition.families {
        if family.kind == "histogram" {
            check_histogram(name, family);
        }
    }
    exposition
}

#[track_caller]
fn check_metric_name(name: &str, line: &str) {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    assert!(
        first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "bad metric name in {line:?}"
    );
}

/// `name{label="value",...} value`, with `\\`, `\"` and `\n` escapes in values.
#[track_caller]
fn parse_sample(line: &str) -> Sample {
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line:?}"));
    let name = &line[..name_end];
    check_metric_name(name, line);
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut label_name = String::new();
        loop {
            let (_, c) = chars.next().unwrap_or_else(|| panic!("unterminated labels: {line:?}"));
            match c {
                '}' if label_name.is_empty() => break,
                '=' => {
                    assert!(
                        matches!(chars.next(), Some((_, '"'))),
                        "label value not quoted: {line:?}"
                    );
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('"') => break,
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => panic!("bad escape {other:?} in {line:?}"),
                            },
                            Some(c) => value.push(c),
                            None => panic!("unterminated label value: {line:?}"),
                        }
                    }
                    check_metric_name(&label_name, line);
                    assert!(
                        labels.insert(std::mem::take(&mut label_name), value).is_none(),
                        "label repeated: {line:?}"
                    );
                    match chars.next() {
                        Some((_, ',')) => {}
                        Some((end, '}')) => {
                            rest = &inner[end + 1..];
                            break;
                        }
                        other => panic!("expected , or }} after a label, got {other:?}: {line:?}"),
                    }
                }
                c => label_name.push(c),
            }
        }
    }
    let value_text = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("no space before the value: {line:?}"));
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        text => text.parse().unwrap_or_else(|_| panic!("bad value {text:?}: {line:?}")),
    };
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

/// One label set of a histogram: its `(le, cumulative count)` buckets and `_count`.
type Series = (Vec<(f64, f64)>, Option<f64>);

/// Buckets ascending and cumulative, ending at `+Inf` with `_count`.
#[track_caller]
fn check_histogram(name: &str, family: &Family) {
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for sample in &family.samples {
        let mut labels = sample.labels.clone();
        let le = labels.remove("le");
        let entry = series.entry(format!("{labels:?}")).or_default();
        match (sample.name.strip_prefix(name), le) {
            (Some("_bucket"), Some(le)) => {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le")
                };
                entry.0.push((bound, sample.value));
            }
            (Some("_count"), None) => entry.1 = Some(sample.value),
            (Some("_sum" | "_created"), None) => {}
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
    for (labels, (buckets, count)) in series {
        assert!(
            buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}{labels}: {buckets:?}"
        );
        let last = buckets.last().unwrap_or_else(|| panic!("{name}{labels}: no buckets"));
        assert_eq!(last.0, f64::INFINITY, "{name}{labels}: the last bucket is +Inf");
        assert_eq!(Some(last.1), count, "{name}{labels}: +Inf equals _count");
    }
}
