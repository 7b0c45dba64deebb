//! The README's five-minute tour, run as written: every `$ nexus …` line of
//! the tour's `console` blocks runs against a fresh daemon (as `nexus-it`,
//! with `NEXUS_SOCKET` pointing at it, so the commands need no `--socket`),
//! and what it prints must match the lines the README shows under it. In
//! the README's expected output, `...` stands for any text within a line,
//! and a line that is only `...` for any number of lines (times, uptimes:
//! what differs from run to run). The README's client example must also be
//! the compiled `client/examples/quickstart.rs`, word for word.

use std::path::Path;
use std::process::Command;

use crate::{BINARIES, start};

/// The section of the README that holds the tour.
const TOUR_HEADING: &str = "## A five-minute tour";

/// One `$ command` of the tour and the output the README shows for it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of the section that starts with `heading`, up to the next `## `.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?} section"));
    let rest = &text[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The fenced blocks of `language` in `text`, as their lines.
fn blocks(text: &str, language: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) if info.trim() == language => current = Some(Vec::new()),
            (Some(_), Some("")) => blocks.push(current.take().expect("inside a block")),
            (Some(lines), _) => lines.push(line.to_owned()),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```{language} block");
    blocks
}

fn steps(section: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for block in blocks(section, "console") {
        for line in block {
            match line.strip_prefix("$ ") {
                Some(command) => steps.push(Step {
                    command: command.to_owned(),
                    expected: Vec::new(),
                }),
                None => steps
                    .last_mut()
                    .expect("a console block starts with a `$ ` command")
                    .expected
                    .push(line),
            }
        }
    }
    steps
}

/// Splits a command line as a POSIX shell would for the tour's simple
/// commands: words, "double-quoted" and 'single-quoted' strings.
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "unbalanced quotes in {command:?}");
    words.extend(word);
    words
}

/// Whether `line` matches `pattern`, where `...` stands for any text.
fn line_matches(pattern: &str, line: &str) -> bool {
    let mut pieces = pattern.split("...");
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    for (i, piece) in pieces.iter().enumerate() {
        if i + 1 == pieces.len() {
            return rest.ends_with(piece);
        }
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Whether `lines` match `patterns`, where a pattern line `...` stands for
/// any number of lines.
fn lines_match(patterns: &[String], lines: &[&str]) -> bool {
    match patterns.split_first() {
        None => lines.is_empty(),
        Some((pattern, rest)) if pattern.trim() == "..." => {
            (0..=lines.len()).any(|skip| lines_match(rest, &lines[skip..]))
        }
        Some((pattern, rest)) => match lines.split_first() {
            Some((line, lines)) => line_matches(pattern.trim_end(), line.trim_end()) && lines_match(rest, lines),
            None => false,
        },
    }
}

#[test]
fn the_readme_tour_runs_as_written_and_prints_what_it_shows() {
    let tour = steps(section(&readme(), TOUR_HEADING));
    assert!(tour.len() >= 8, "the tour has {} commands", tour.len());
    let daemon = start(&[]);
    for step in &tour {
        let words = words(&step.command);
        assert_eq!(
            words[0], "nexus",
            "the tour runs only nexus commands: {:?}",
            step.command
        );
        let output = Command::new(BINARIES.cli)
            .args(&words[1..])
            .env("NEXUS_SOCKET", daemon.socket_path())
            .env_remove("NEXUS_NAMESPACE")
            .current_dir(daemon.dir().path())
            .output()
            .expect("run nexus");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "$ {}\nfailed: {stderr}", step.command);
        let printed: Vec<&str> = stdout.lines().collect();
        assert!(
            lines_match(&step.expected, &printed),
            "$ {}\nREADME shows:\n{}\nit printed:\n{stdout}",
            step.command,
            step.expected.join("\n")
        );
    }
}

#[test]
fn the_readme_client_example_is_the_compiled_one() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/examples/quickstart.rs");
    let example = std::fs::read_to_string(example).expect("client/examples/quickstart.rs");
    // The example's own doc comment stays out of the README.
    let code: Vec<&str> = example
        .lines()
        .skip_while(|line| line.starts_with("//!") || line.is_empty())
        .collect();
    let readme = readme();
    let shown = blocks(&readme, "rust");
    assert!(
        shown
            .iter()
            .any(|block| block.iter().map(String::as_str).eq(code.iter().copied())),
        "README.md must show client/examples/quickstart.rs (without its //! lines) in a ```rust block"
    );
}

#[test]
fn the_tour_matcher_takes_wildcards_and_nothing_else() {
    assert!(line_matches("up ... s", "up 12 s"));
    assert!(line_matches("a...c...e", "abcde"));
    assert!(!line_matches("up ... s", "up 12 ms!"));
    assert!(!line_matches("exact", "exactly"));
    let patterns: Vec<String> = ["one", "...", "four"].map(String::from).to_vec();
    assert!(lines_match(&patterns, &["one", "two", "three", "four"]));
    assert!(lines_match(&patterns, &["one", "four"]));
    assert!(!lines_match(&patterns, &["one", "four", "five"]));
    assert_eq!(
        words(r#"nexus recall "who has a pet" -k 2 --tag 'a=b c'"#),
        ["nexus", "recall", "who has a pet", "-k", "2", "--tag", "a=b c"]
    );
}
