//! The `nexus` command line (`nexus-it`, the very same `nexus_cli::main`)
//! as a user runs it: a subprocess against a real daemon, every subcommand
//! in text and in `--json`, and the failures a user meets: nexusd not
//! running, bad flags, a forget naming nothing, feedback on an unknown
//! recall, an engine down, bad import lines. What is asserted is what
//! scripts rely on: exit codes (0 ok, 1 failed, 2 usage or daemon down),
//! errors as one `nexus: ...` line on stderr, and the JSON fields.
//!
//! Rendering details (units, truncation, grouping rules) are unit-tested in
//! the cli crate; the JSON-lines format itself in transfer's own tests.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use nexus_tests::{Daemon, TestDir, wait_for_exit};
use serde_json::Value;

use crate::{BINARIES, start, start_with_env};

/// Daemon flags of these tests: no chunking, so one text is one memory.
const FLAGS: &[&str] = &["--chunk-tokens", "0"];

/// One run of `nexus`: its exit code and what it printed.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `nexus --socket socket args` with stdin from /dev/null.
fn nexus(socket: &Path, args: &[&str]) -> Run {
    nexus_with(socket, args, None, &[])
}

/// Runs `nexus --socket socket args` in a clean environment (no
/// NEXUS_SOCKET, NEXUS_NAMESPACE, COLUMNS) plus `env`, with `stdin` piped
/// in (None: /dev/null); the wait for its exit is bounded.
fn nexus_with(socket: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(BINARIES.cli);
    command
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("NEXUS_SOCKET")
        .env_remove("NEXUS_NAMESPACE")
        .env_remove("NEXUS_DAEMON_UID")
        .env_remove("COLUMNS")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", BINARIES.cli));
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        pipe.write_all(text.as_bytes()).expect("writing nexus's stdin");
    }
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_for_exit(&mut child, &format!("nexus {args:?} to exit"));
    Run {
        code: status
            .code()
            .unwrap_or_else(|| panic!("nexus {args:?} was killed: {status:?}")),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Checks the exit code; returns stdout.
#[track_caller]
fn check(run: &Run, code: i32) -> String {
    assert_eq!(
        run.code, code,
        "exit code of nexus\n--- stdout:\n{}--- stderr:\n{}",
        run.stdout, run.stderr
    );
    run.stdout.clone()
}

/// Checks a success with `--json`: exit 0, stdout one JSON object.
#[track_caller]
fn check_json(run: &Run) -> Value {
    let stdout = check(run, 0);
    assert_eq!(stdout.lines().count(), 1, "one line of JSON: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Checks a failure: `code`, nothing on stdout, and one line on stderr,
/// `nexus: ...`, holding each of `words`. Returns that line.
#[track_caller]
fn check_error(run: &Run, code: i32, words: &[&str]) -> String {
    check(run, code);
    assert_eq!(run.stdout, "", "a failure prints nothing on stdout");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", run.stderr);
    assert!(lines[0].starts_with("nexus: "), "{:?}", lines[0]);
    for word in words {
        assert!(lines[0].contains(word), "{:?} lacks {word:?}", lines[0]);
    }
    lines[0].to_owned()
}

fn texts(recall: &Value) -> Vec<&str> {
    hits(recall)
        .iter()
        .map(|hit| hit["text"].as_str().expect("text"))
        .collect()
}

fn hits(recall: &Value) -> &Vec<Value> {
    recall["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits array: {recall}"))
}

#[test]
fn remember_takes_text_from_the_argument_or_stdin_with_every_flag() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    let text = check(&nexus(&socket, &["remember", "Caroline went hiking in the Alps"]), 0);
    assert!(text.starts_with("remembered as id "), "{text}");
    let json = check_json(&nexus(
        &socket,
        &[
            "remember",
            "--json",
            "Melanie paints the lake",
            "--namespace",
            "art",
            "--key",
            "melanie",
            "--tag",
            "who=melanie",
            "--tag",
            "kind=hobby",
            "--importance",
            "2.5",
            "--source",
            "chat",
            "--created-at",
            "2024-05-01T12:00:00Z",
        ],
    ));
    let id = json["id"].as_u64().expect("an id");
    assert_eq!(
        (json["chunk_ids"].clone(), json["duplicate"].clone()),
        (Value::Array(vec![]), Value::Null)
    );
    // Both stdin forms: `-`, and no TEXT with stdin not a terminal.
    check(
        &nexus_with(&socket, &["remember", "-"], Some("Oscar is a puppy\n"), &[]),
        0,
    );
    let env = [("NEXUS_NAMESPACE", "pets")];
    check(
        &nexus_with(&socket, &["remember"], Some("Oscar chases the ball\n"), &env),
        0,
    );
    let empty = nexus_with(&socket, &["remember"], Some("\n"), &[]);
    check_error(&empty, 1, &["text is empty"]);

    let art = check_json(&nexus(
        &socket,
        &["recall", "--json", "paints the lake", "--namespace", "art"],
    ));
    let hit = &hits(&art)[0];
    assert_eq!(hit["id"].as_u64(), Some(id));
    assert_eq!(hit["tags"], serde_json::json!({"who": "melanie", "kind": "hobby"}));
    assert_eq!(hit["created_at"], "2024-05-01T12:00:00Z");
    let default = check_json(&nexus(&socket, &["recall", "--json", "Oscar puppy"]));
    assert_eq!(
        texts(&default)[0],
        "Oscar is a puppy",
        "stdin text, trailing newline dropped"
    );
    let pets = check_json(&nexus_with(&socket, &["recall", "--json", "Oscar ball"], None, &env));
    assert_eq!(
        texts(&pets),
        ["Oscar chases the ball"],
        "$NEXUS_NAMESPACE is the default namespace"
    );
}

#[test]
fn recall_prints_its_request_id_route_and_one_line_per_result_and_json_has_every_field() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    check(
        &nexus(
            &socket,
            &["remember", "Caroline went hiking in the hills", "--tag", "who=caroline"],
        ),
        0,
    );
    check(&nexus(&socket, &["remember", "Melanie painted a lake at sunrise"]), 0);
    let text = check(
        &nexus(
            &socket,
            &["recall", "hiking in the hills", "--route", "full", "-k", "1"],
        ),
        0,
    )
    .to_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("request ") && lines[0].contains("route full: forced by the request"),
        "{text}"
    );
    assert_eq!(lines.len(), 2, "-k 1: one result line: {text}");
    assert!(
        lines[1].contains("default") && lines[1].ends_with("Caroline went hiking in the hills"),
        "{text}"
    );

    let json = check_json(&nexus(
        &socket,
        &["recall", "--json", "hiking in the hills", "--route", "smart"],
    ));
    assert!(json["request_id"].as_u64().is_some_and(|id| id > 0), "{json}");
    assert_eq!(json["route"], "smart");
    assert_eq!(json["route_reason"], "forced by the request");
    assert_eq!(json["degraded"], Value::Null);
    let hit = &hits(&json)[0];
    for field in ["id", "score", "text", "namespace", "tags", "created_at", "why"] {
        assert!(hit.get(field).is_some(), "hit lacks {field}: {hit}");
    }
    assert_eq!(hit["text"], "Caroline went hiking in the hills");
    assert_eq!(hit["tags"]["who"], "caroline");
    assert!(hit["why"]["lexical"].as_f64().is_some_and(|v| v > 0.0), "{hit}");
    let created = hit["created_at"].as_str().expect("a time");
    assert!(created.ends_with('Z') && created.contains('T'), "RFC 3339: {created}");
    let filtered = check_json(&nexus(&socket, &["recall", "--json", "lake", "--tag", "who=caroline"]));
    assert!(
        !texts(&filtered).contains(&"Melanie painted a lake at sunrise"),
        "{filtered}"
    );
}

#[test]
fn recall_explain_breaks_each_score_into_its_factors() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    check(&nexus(&socket, &["remember", "Caroline went hiking in the hills"]), 0);
    let text = check(
        &nexus(&socket, &["recall", "hiking hills", "--explain", "--route", "full"]),
        0,
    )
    .to_owned();
    assert!(
        text.contains("1. memory ") && text.contains("   Caroline went hiking in the hills"),
        "{text}"
    );
    let factors: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("     "))
        .map(str::trim)
        .collect();
    let lexical = factors
        .iter()
        .find_map(|line| line.strip_prefix("lexical"))
        .unwrap_or_else(|| panic!("no lexical factor: {text}"));
    let value: f32 = lexical.trim().parse().unwrap_or_else(|e| panic!("{lexical:?}: {e}"));
    assert!(
        lexical.trim().starts_with('+') && value > 0.0,
        "a signed contribution: {text}"
    );
    assert!(factors.len() >= 2, "several factors: {text}");
}

#[test]
fn recall_since_and_until_keep_memories_created_in_that_span() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    for (text, at) in [
        ("trip to Rome in January", "2024-01-15T10:00:00Z"),
        ("trip to Oslo in March", "2024-03-15T10:00:00Z"),
        ("trip to Lima in June", "2024-06-15T10:00:00Z"),
    ] {
        check(&nexus(&socket, &["remember", text, "--created-at", at]), 0);
    }
    let recall = |extra: &[&str]| {
        let mut args = vec!["recall", "--json", "trip", "--route", "full"];
        args.extend_from_slice(extra);
        let json = check_json(&nexus(&socket, &args));
        let mut found: Vec<String> = texts(&json).iter().map(|t| t.to_string()).collect();
        found.sort();
        found
    };
    assert_eq!(
        recall(&["--since", "2024-02-01", "--until", "2024-03-31"]),
        ["trip to Oslo in March"]
    );
    assert_eq!(
        recall(&["--until", "2024-03-15"]),
        ["trip to Oslo in March", "trip to Rome in January"],
        "a date includes its whole day"
    );
    assert_eq!(
        recall(&["--since", "2024-03-15T10:00:00.001Z"]),
        ["trip to Lima in June"]
    );
    let backwards = nexus(
        &socket,
        &["recall", "trip", "--since", "2024-06-01", "--until", "2024-01-01"],
    );
    check_error(&backwards, 2, &["--since is after --until"]);
    check_error(
        &nexus(&socket, &["recall", "trip", "--since", "last week"]),
        2,
        &["RFC 3339"],
    );
}

#[test]
fn forget_deletes_by_id_tags_and_namespace_and_refuses_to_name_nothing() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    let remember = |text: &str, extra: &[&str]| {
        let mut args = vec!["remember", "--json", text];
        args.extend_from_slice(extra);
        check_json(&nexus(&socket, &args))["id"].as_u64().expect("an id")
    };
    let first = remember("one", &[]);
    remember("two", &["--tag", "batch=b"]);
    remember("three", &["--tag", "batch=b", "--namespace", "other"]);
    remember("four", &["--namespace", "gone"]);
    assert_eq!(daemon.stats_counter("memories"), 4);
    check_error(
        &nexus(&socket, &["forget"]),
        2,
        &["forget needs", "--id", "nothing was deleted"],
    );
    check_error(
        &nexus(&socket, &["forget", "--id", "1", "--namespace", "x"]),
        2,
        &["cannot be used with"],
    );
    assert_eq!(daemon.stats_counter("memories"), 4, "a refused forget deletes nothing");

    let id = first.to_string();
    assert_eq!(check(&nexus(&socket, &["forget", "--id", &id]), 0), "forgot 1 memory\n");
    let tagged = check_json(&nexus(
        &socket,
        &["forget", "--json", "--tag", "batch=b", "--namespace", "default"],
    ));
    assert_eq!(tagged["forgotten"], 1, "only the default namespace's tagged memory");
    assert_eq!(
        check_json(&nexus(&socket, &["forget", "--json", "--namespace", "gone"]))["forgotten"],
        1
    );
    assert_eq!(
        check_json(&nexus(&socket, &["forget", "--json", "--tag", "batch=b"]))["forgotten"],
        1
    );
    assert_eq!(daemon.stats_counter("memories"), 0);
}

#[test]
fn feedback_judges_a_result_of_a_recall_and_an_unknown_recall_is_an_error() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    check(&nexus(&socket, &["remember", "Caroline went hiking in the hills"]), 0);
    let recall = check_json(&nexus(&socket, &["recall", "--json", "hiking", "--route", "full"]));
    let request_id = recall["request_id"].as_u64().expect("request id").to_string();
    let memory_id = hits(&recall)[0]["id"].as_u64().expect("id").to_string();
    let text = check(
        &nexus(&socket, &["feedback", &memory_id, "--recall", &request_id, "--useful"]),
        0,
    );
    assert_eq!(
        text,
        format!("noted: memory {memory_id} was useful for recall {request_id}\n")
    );
    let json = check_json(&nexus(
        &socket,
        &[
            "feedback",
            "--json",
            &memory_id,
            "--recall",
            &request_id,
            "--not-useful",
        ],
    ));
    assert_eq!(json["useful"], false);
    let unknown = nexus(&socket, &["feedback", &memory_id, "--recall", "12345", "--useful"]);
    check_error(&unknown, 1, &["feedback failed: ", "12345"]);
    let no_verdict = nexus(&socket, &["feedback", &memory_id, "--recall", &request_id]);
    check_error(&no_verdict, 2, &["--useful"]);
}

#[test]
fn stats_groups_the_counters_and_json_has_every_one_by_name() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    check(&nexus(&socket, &["remember", "one memory"]), 0);
    check(&nexus(&socket, &["recall", "one"]), 0);
    check(&nexus(&socket, &["recall", "one"]), 0);
    let text = check(&nexus(&socket, &["stats"]), 0);
    for title in [
        "connections",
        "requests",
        "recall routes and latency",
        "cache",
        "store and WAL",
        "process",
    ] {
        assert!(text.lines().any(|line| line == title), "section {title:?} in\n{text}");
    }
    let hit_rate = text
        .lines()
        .find(|line| line.trim_start().starts_with("hit rate"))
        .expect("a hit rate");
    assert!(hit_rate.contains("% (") && hit_rate.contains("lookups"), "{hit_rate}");
    let json = check_json(&nexus(&socket, &["stats", "--json"]));
    let counters = json.as_object().expect("an object");
    assert_eq!(counters["memories"], 1);
    assert!(counters["requests_total"].as_u64().is_some_and(|n| n >= 3), "{json}");
    assert!(counters.len() > 50, "every counter: {}", counters.len());
}

#[test]
fn health_exits_0_when_healthy_1_when_an_engine_is_down_and_2_when_nexusd_is() {
    let mut daemon = start(FLAGS);
    let socket = daemon.socket_path();
    let text = check(&nexus(&socket, &["health"]), 0);
    assert!(text.starts_with("healthy: nexusd "), "{text}");
    assert_eq!(check_json(&nexus(&socket, &["health", "--json"]))["status"], "healthy");
    daemon.kill();
    let down = nexus(&socket, &["health"]);
    check_error(&down, 2, &["nexusd is not running"]);
    let json = nexus(&socket, &["health", "--json"]);
    check(&json, 2);
    let status: Value = serde_json::from_str(&json.stdout).expect("JSON even when down");
    assert_eq!(status["status"], "down");

    // One failure opens the dense engine's breaker: degraded, named.
    let flags = ["--chunk-tokens", "0", "--breaker-failures", "1"];
    let faulty = start_with_env(&flags, &[("NEXUS_TEST_FAULTS", "dense=fail")]);
    let socket = faulty.socket_path();
    check(&nexus(&socket, &["remember", "Caroline went hiking"]), 0);
    let recall = check_json(&nexus(&socket, &["recall", "--json", "hiking", "--route", "full"]));
    assert!(
        recall["degraded"].as_str().is_some_and(|r| r.contains("dense")),
        "{recall}"
    );
    let degraded = nexus(&socket, &["health"]);
    let text = check(&degraded, 1);
    assert!(text.starts_with("degraded: "), "{text}");
    assert!(
        text.lines().skip(1).any(|line| line.contains("dense")),
        "each reason printed: {text}"
    );
    let json = nexus(&socket, &["health", "--json"]);
    check(&json, 1);
    let status: Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(status["status"], "degraded");
    assert!(!status["degraded"].as_array().expect("reasons").is_empty(), "{status}");
}

#[test]
fn flush_checkpoint_and_ping_answer_in_text_and_json() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    check(&nexus(&socket, &["remember", "one memory"]), 0);
    assert!(check(&nexus(&socket, &["flush"]), 0).starts_with("durable up to log position "));
    assert!(check_json(&nexus(&socket, &["flush", "--json"]))["durable_lsn"].as_u64() >= Some(1));
    assert!(check(&nexus(&socket, &["checkpoint"]), 0).starts_with("snapshot covers log position "));
    assert!(check_json(&nexus(&socket, &["checkpoint", "--json"]))["checkpoint_lsn"].as_u64() >= Some(1));
    let pings = check(&nexus(&socket, &["ping", "--count", "2"]), 0);
    assert_eq!(
        pings.lines().filter(|line| line.starts_with("pong from ")).count(),
        2,
        "{pings}"
    );
    assert!(
        pings
            .lines()
            .last()
            .is_some_and(|line| line.starts_with("2 round trips: min ")),
        "{pings}"
    );
    let json = check_json(&nexus(&socket, &["ping", "--json", "--count", "3"]));
    assert_eq!(json["count"], 3);
    assert!(json["median_us"].as_f64().is_some_and(|us| us > 0.0), "{json}");
    check_error(&nexus(&socket, &["ping", "--count", "0"]), 2, &["--count"]);
}

#[test]
fn import_reports_bad_lines_by_number_and_export_writes_what_is_stored() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    let dir = TestDir::new();
    let file = dir.path().join("memories.jsonl");
    let lines = [
        r#"{"text": "Caroline went hiking", "key": "c", "tags": {"who": "caroline"}}"#,
        r#"{"text": "Melanie paints", "key": "m", "namespace": "art"}"#,
        r#"{"text": "#,
        r#"{"namespace": "art"}"#,
        r#"{"text": "Oscar is a puppy", "key": "o", "created_at": "2024-05-01T00:00:00Z"}"#,
    ];
    std::fs::write(&file, lines.join("\n") + "\n").expect("writing the import file");
    let path = file.to_str().expect("a UTF-8 path");

    let run = nexus(&socket, &["import", "--json", "--no-progress", path]);
    let summary: Value = serde_json::from_str(&check(&run, 1)).expect("a JSON summary");
    assert_eq!(
        (summary["lines"].as_u64(), summary["imported"].as_u64()),
        (Some(5), Some(3)),
        "{summary}"
    );
    assert_eq!(summary["skipped"], 2);
    let bad: Vec<u64> = summary["bad_lines"]
        .as_array()
        .expect("bad lines")
        .iter()
        .map(|bad| bad["line"].as_u64().expect("a number"))
        .collect();
    assert_eq!(bad, [3, 4]);
    let stderr: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(stderr.len(), 2, "one line per bad line: {}", run.stderr);
    assert!(
        stderr[0].starts_with("nexus: import: line 3 skipped: "),
        "{}",
        run.stderr
    );
    assert!(
        stderr[1].starts_with("nexus: import: line 4 skipped: "),
        "{}",
        run.stderr
    );
    assert_eq!(daemon.stats_counter("memories"), 3);

    // Keyed lines: running the import again replaces them instead of adding copies.
    let strict = nexus(&socket, &["import", "--strict", "--no-progress", path]);
    check_error(&strict, 1, &["import failed: line 3", "strict"]);
    assert_eq!(daemon.stats_counter("memories"), 3);
    let good = lines[0].to_owned() + "\n";
    let piped = nexus_with(
        &socket,
        &["import", "--no-progress", "--namespace", "piped", "-"],
        Some(&good),
        &[],
    );
    assert!(
        check(&piped, 0).starts_with("imported 1 of 1 lines in "),
        "{}",
        piped.stdout
    );
    check_error(
        &nexus(&socket, &["import", "/nonexistent/file.jsonl"]),
        1,
        &["opening the import file"],
    );

    let art = check(&nexus(&socket, &["export", "--namespace", "art"]), 0);
    assert_eq!(art.lines().count(), 1, "{art}");
    let line: Value = serde_json::from_str(art.trim_end()).expect("a JSON line");
    assert_eq!(
        (line["text"].as_str(), line["namespace"].as_str()),
        (Some("Melanie paints"), Some("art"))
    );
    let output = dir.path().join("all.jsonl");
    let output_arg = output.to_str().expect("a UTF-8 path");
    let json = check_json(&nexus(&socket, &["export", "--json", "--output", output_arg]));
    assert_eq!(json["exported"], 4, "three imported, one piped: {json}");
    let written = std::fs::read_to_string(&output).expect("the export file");
    assert_eq!(written.lines().count(), 4);
}

#[test]
fn a_vector_of_the_wrong_dimension_is_refused_naming_the_dimension() {
    let daemon = start(FLAGS);
    let socket = daemon.socket_path();
    let dir = TestDir::new();
    let json_vector = dir.path().join("three.json");
    std::fs::write(&json_vector, "[0.1, 0.2, 0.3]").expect("vector file");
    let raw_vector = dir.path().join("four.f32");
    let raw: Vec<u8> = [0.1f32, 0.2, 0.3, 0.4].iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&raw_vector, raw).expect("vector file");
    let three = json_vector.to_str().expect("UTF-8");
    check(
        &nexus(&socket, &["remember", "three numbers", "--vector-file", three]),
        0,
    );
    let four = raw_vector.to_str().expect("UTF-8");
    let refused = nexus(&socket, &["remember", "four numbers", "--vector-file", four]);
    check_error(
        &refused,
        1,
        &["remember failed: ", "dimension 4", "dimension 3", "`nexus stats`"],
    );
    let by_vector = check_json(&nexus(
        &socket,
        &[
            "recall",
            "--json",
            "numbers",
            "--engine",
            "vector",
            "--vector-file",
            three,
        ],
    ));
    assert_eq!(texts(&by_vector), ["three numbers"]);
    let missing = nexus(&socket, &["remember", "x", "--vector-file", "/nonexistent.json"]);
    check_error(&missing, 1, &["reading the vector file /nonexistent.json"]);
}

#[test]
fn a_daemon_that_is_not_running_is_one_line_naming_the_start_command_and_exit_2() {
    let dir = TestDir::new();
    let socket = dir.socket_path();
    let path = socket.display().to_string();
    let start_command = format!("start it with `nexusd --socket {path}`");
    let not_running = format!("nexus: nexusd is not running on {path}: ");
    for args in [
        &["stats"][..],
        &["remember", "x"],
        &["recall", "x"],
        &["ping"],
        &["export"],
    ] {
        let line = check_error(&nexus(&socket, args), 2, &[&start_command, "systemctl start nexusd"]);
        assert!(line.starts_with(&not_running), "{args:?}: {line}");
    }
}

/// A socket that accepts but never answers (a hung daemon) is "down" for
/// the probe once `--timeout-ms` passed, not a hang.
#[test]
fn health_of_a_socket_that_never_answers_is_down_after_the_timeout() {
    let dir = TestDir::new();
    let socket = dir.socket_path();
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("binding a silent socket");
    let run = nexus(&socket, &["health", "--timeout-ms", "200"]);
    check_error(&run, 2, &["handshake", "did not answer", "--timeout-ms"]);
}

#[test]
fn bad_command_lines_are_one_line_usage_errors_with_exit_2() {
    let dir = TestDir::new();
    let socket = dir.socket_path();
    check_error(&nexus(&socket, &["recall"]), 2, &["<QUERY>", "usage: nexus recall"]);
    check_error(
        &nexus(&socket, &["recall", "x", "--route", "fast"]),
        2,
        &["'fast'", "cache, smart, full, max"],
    );
    check_error(
        &nexus(&socket, &["recall", "x", "--tag", "nokey"]),
        2,
        &["--tag", "KEY=VALUE"],
    );
    check_error(&nexus(&socket, &["remember", "x", "--tag", "=v"]), 2, &["KEY is empty"]);
    check_error(&nexus(&socket, &["recal", "x"]), 2, &["'recal'", "recall"]);
    check_error(&nexus(&socket, &["stats", "--frobnicate"]), 2, &["--frobnicate"]);
    check_error(&nexus(&socket, &["remember"]), 1, &["text is empty"]);
    let help = nexus(&socket, &["recall", "--help"]);
    assert!(check(&help, 0).contains("--explain"), "help on stdout, exit 0");
    let version = nexus(&socket, &["--version"]);
    assert!(check(&version, 0).starts_with("nexus "), "{version:?}");
}

#[test]
fn completions_print_a_script_for_each_shell() {
    let dir = TestDir::new();
    let socket = dir.socket_path();
    let bash = nexus(&socket, &["completions", "bash"]);
    let script = check(&bash, 0);
    assert!(
        script.contains("complete") && script.contains("nexus") && script.contains("recall"),
        "{script}"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let run = nexus(&socket, &["completions", shell]);
        assert!(check(&run, 0).contains("remember"), "{shell}");
    }
    check_error(&nexus(&socket, &["completions", "tcsh"]), 2, &["'tcsh'"]);
}

/// Written to a pipe (a script), a result line carries its text whole: only
/// a terminal's lines are cut to its width.
#[test]
fn piped_results_keep_their_whole_text() {
    let daemon: Daemon = start(FLAGS);
    let socket = daemon.socket_path();
    let long = "word ".repeat(60).trim_end().to_owned() + " end";
    check(&nexus(&socket, &["remember", &long]), 0);
    let text = check(&nexus(&socket, &["recall", "word end", "-k", "50"]), 0);
    assert!(text.lines().any(|line| line.ends_with(&long)), "{text}");
}
