//! Writes N memories as JSON lines, the input of `nexus import`, for
//! measuring import throughput: short texts (100–200 bytes, words drawn
//! from a fixed list by a seeded generator, so two runs write the same
//! file), four namespaces, a topic tag, a time per memory, and optionally
//! keys and client vectors.
//!
//! ```text
//! cargo run --release -p nexus-benches --example gen_jsonl -- 100000 > /tmp/memories.jsonl
//! cargo run --release -p nexus-benches --example gen_jsonl -- 100000 --vectors 384 --keys --seed 7
//! ```
//!
//! Not here: the import itself (`nexus import`, `nexus_cli::transfer`).

use std::io::{BufWriter, Write};

const USAGE: &str = "usage: gen_jsonl COUNT [--seed N] [--vectors DIM] [--keys]  (JSON lines on stdout)";

const WORDS: &[&str] = &[
    "the",
    "user",
    "prefers",
    "dark",
    "mode",
    "and",
    "short",
    "answers",
    "meeting",
    "moved",
    "to",
    "thursday",
    "project",
    "deadline",
    "is",
    "next",
    "week",
    "remember",
    "that",
    "she",
    "likes",
    "green",
    "tea",
    "in",
    "the",
    "morning",
    "deploy",
    "failed",
    "because",
    "of",
    "a",
    "missing",
    "config",
    "key",
    "database",
    "migration",
    "finished",
    "after",
    "two",
    "hours",
    "customer",
    "asked",
    "about",
    "pricing",
    "for",
    "teams",
    "travel",
    "plans",
    "include",
    "lisbon",
    "in",
    "june",
    "allergic",
    "peanuts",
    "birthday",
    "on",
    "march",
    "ninth",
    "favorite",
    "editor",
    "vim",
    "with",
    "tabs",
    "set",
    "four",
    "spaces",
    "budget",
    "approved",
    "quarter",
    "hiring",
    "backend",
    "engineer",
    "laptop",
    "battery",
    "replaced",
    "warranty",
    "expires",
    "soon",
    "weekly",
    "review",
    "friday",
    "afternoon",
    "prefers",
    "email",
    "over",
    "calls",
    "timezone",
    "berlin",
    "kids",
    "school",
    "starts",
    "september",
    "gym",
    "tuesdays",
];

const NAMESPACES: &[&str] = &["agent", "user-alice", "user-bob", "project-x"];

/// Options from the command line.
struct Options {
    count: u64,
    seed: u64,
    vector_dimension: usize,
    keys: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_args()?;
    let mut rng = Rng(options.seed.max(1));
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    // 2026-01-01T00:00:00Z, one memory every 7 seconds from there.
    let start_s: i64 = 1_767_225_600;
    for n in 0..options.count {
        let line = line(n, &mut rng, &options, start_s + 7 * n as i64);
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

fn parse_args() -> Result<Options, Box<dyn std::error::Error>> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let (mut count, mut seed, mut vector_dimension, mut keys) = (None, 42, 0, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Long("seed") => seed = parser.value()?.parse()?,
            Long("vectors") => vector_dimension = parser.value()?.parse()?,
            Long("keys") => keys = true,
            Value(value) if count.is_none() => count = Some(value.parse()?),
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("{}\n{USAGE}", other.unexpected()).into()),
        }
    }
    let count = count.ok_or(USAGE)?;
    Ok(Options {
        count,
        seed,
        vector_dimension,
        keys,
    })
}

/// One memory as import reads it (f32 vectors, written as the shortest
/// decimal that reads back the same, as `nexus export` writes them).
#[derive(serde::Serialize)]
struct Line {
    text: String,
    namespace: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    tags: Tags,
    #[serde(skip_serializing_if = "Option::is_none")]
    vector: Option<Vec<f32>>,
    created_at: String,
    importance: f32,
}

#[derive(serde::Serialize)]
struct Tags {
    topic: &'static str,
}

/// Memory `n`.
fn line(n: u64, rng: &mut Rng, options: &Options, created_s: i64) -> Line {
    let target_bytes = 100 + rng.below(101) as usize;
    let mut text = format!("note {n}:");
    while text.len() < target_bytes {
        text.push(' ');
        text.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    let vector = (options.vector_dimension > 0).then(|| {
        (0..options.vector_dimension)
            .map(|_| (rng.below(2_000_001) as f32 - 1_000_000.0) / 1_000_000.0)
            .collect()
    });
    Line {
        text,
        namespace: NAMESPACES[(n % 4) as usize],
        key: options.keys.then(|| format!("memory-{n}")),
        tags: Tags {
            topic: WORDS[rng.below(WORDS.len() as u64) as usize],
        },
        vector,
        created_at: rfc3339(created_s),
        importance: 0.5 + rng.below(100) as f32 / 100.0,
    }
}

/// Seconds since 1970 as an RFC 3339 UTC time (Howard Hinnant's
/// days-to-civil algorithm; no time crate for a generator).
fn rfc3339(seconds: i64) -> String {
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let (hour, minute, second) = (second_of_day / 3600, second_of_day / 60 % 60, second_of_day % 60);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

/// xorshift64: reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
