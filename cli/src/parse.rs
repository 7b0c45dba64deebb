//! Arguments clap cannot type by itself: `K=V` tags, times (RFC 3339 or a
//! date), vector files, and the text of `remember` from stdin.
//!
//! Everything here is local and bounded: nothing talks to the daemon, and
//! every read stops at a named limit. What the daemon checks anyway (a
//! vector's dimension, k's maximum, importance's range) is left to it, so
//! there is one source of truth for those rules.

use std::io::Read;
use std::path::Path;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use nexus_client::wire::{MemoryTag, TimeRange};

/// The most bytes `remember` reads from stdin: nexusd's default maximum
/// frame (`max_frame_bytes`, 8 MiB). A longer text could not travel in one
/// request anyway; `nexus import` is the way for bulk input.
pub const MAX_STDIN_TEXT_BYTES: u64 = 8 << 20;

/// The most bytes of a `--vector-file`: the largest dimension nexusd accepts
/// (65,536) as JSON with full-precision numbers is about 1.5 MiB, as raw f32
/// 256 KiB; 4 MiB leaves room for whitespace and never holds a runaway file.
pub const MAX_VECTOR_FILE_BYTES: u64 = 4 << 20;

const MS_PER_DAY: i64 = 86_400_000;

/// A `--tag K=V` (clap value parser): the key must not be empty, the value may.
pub fn tag(arg: &str) -> Result<MemoryTag, String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE (e.g. who=caroline), got {arg:?}"))?;
    if key.is_empty() {
        return Err(format!("the tag's KEY is empty in {arg:?} (expected KEY=VALUE)"));
    }
    Ok(MemoryTag {
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// A point in time given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBound {
    /// Milliseconds since the Unix epoch (a date: its midnight, UTC).
    pub ms: i64,
    /// True when only a date was given, so `--until` includes that whole day.
    pub whole_day: bool,
}

/// An RFC 3339 time (`2024-05-01T12:00:00Z`, `...+02:00`) or a date
/// (`2024-05-01`, midnight UTC) (clap value parser).
pub fn time_bound(arg: &str) -> Result<TimeBound, String> {
    if let Ok(timestamp) = arg.parse::<Timestamp>() {
        return Ok(TimeBound {
            ms: timestamp.as_millisecond(),
            whole_day: false,
        });
    }
    let date: Date = arg
        .parse()
        .map_err(|_| format!("expected an RFC 3339 time (2024-05-01T12:00:00Z) or a date (2024-05-01), got {arg:?}"))?;
    let midnight = date
        .to_zoned_datetime(TimeZone::UTC)
        .map_err(|e| format!("{arg}: {e}"))?;
    Ok(TimeBound {
        ms: midnight.timestamp().as_millisecond(),
        whole_day: true,
    })
}

/// `--since`/`--until` as the daemon's half-open range: both ends are
/// inclusive for the user (`--until 2024-05-01` includes all of May 1st), an
/// open end reaches the end of time. `None` when neither is given.
pub fn created_range(since: Option<TimeBound>, until: Option<TimeBound>) -> Result<Option<TimeRange>, String> {
    if since.is_none() && until.is_none() {
        return Ok(None);
    }
    let start_ms = since.map_or(i64::MIN, |since| since.ms);
    let end_ms = until.map_or(i64::MAX, |until| {
        let after = if until.whole_day { MS_PER_DAY } else { 1 };
        until.ms.saturating_add(after)
    });
    if start_ms >= end_ms {
        return Err("--since is after --until: nothing can match (both ends are inclusive)".into());
    }
    Ok(Some(TimeRange { start_ms, end_ms }))
}

/// Reads a `--vector-file`: raw little-endian f32 when the name ends in
/// `.f32`, else a JSON array of numbers. Every component must be finite.
pub fn vector_file(path: &Path) -> Result<Vec<f32>, String> {
    let bytes = read_bounded(path, MAX_VECTOR_FILE_BYTES)?;
    let vector = if path.extension().is_some_and(|ext| ext == "f32") {
        raw_f32(&bytes)?
    } else {
        serde_json::from_slice::<Vec<f32>>(&bytes)
            .map_err(|e| format!("expected a JSON array of numbers (or a .f32 file of raw little-endian f32): {e}"))?
    };
    if vector.is_empty() {
        return Err("the vector is empty".into());
    }
    if let Some(index) = vector.iter().position(|x| !x.is_finite()) {
        return Err(format!(
            "component {index} is {} (components must be finite f32)",
            vector[index]
        ));
    }
    Ok(vector)
}

/// Reads the text of `remember` from `input` (stdin), at most
/// [`MAX_STDIN_TEXT_BYTES`]; the trailing newline a shell adds is dropped.
pub fn stdin_text(input: impl Read) -> Result<String, String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_STDIN_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_STDIN_TEXT_BYTES {
        return Err(format!(
            "more than {MAX_STDIN_TEXT_BYTES} bytes, the most one request carries: split the text, or use `nexus import`"
        ));
    }
    let mut text = String::from_utf8(bytes).map_err(|e| format!("the text is not UTF-8: {e}"))?;
    let kept = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(kept);
    Ok(text)
}

fn raw_f32(bytes: &[u8]) -> Result<Vec<f32>, String> {
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "{} bytes is not a whole number of little-endian f32 (4 bytes each)",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect())
}

fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "larger than {max_bytes} bytes, more than any vector nexusd accepts"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_need_a_key_and_an_equals_sign() {
        let parsed = tag("who=caroline=x").unwrap();
        assert_eq!((parsed.key.as_str(), parsed.value.as_str()), ("who", "caroline=x"));
        assert_eq!(tag("empty=").unwrap().value, "");
        assert!(tag("who").unwrap_err().contains("KEY=VALUE"));
        assert!(tag("=x").unwrap_err().contains("KEY is empty"));
    }

    #[test]
    fn times_are_rfc3339_or_whole_days_in_utc() {
        let exact = time_bound("2024-05-01T12:00:00+02:00").unwrap();
        assert_eq!(
            exact,
            TimeBound {
                ms: 1_714_557_600_000,
                whole_day: false
            }
        );
        let day = time_bound("2024-05-01").unwrap();
        assert_eq!(
            day,
            TimeBound {
                ms: 1_714_521_600_000,
                whole_day: true
            }
        );
        assert!(time_bound("yesterday").unwrap_err().contains("RFC 3339"));
        assert!(time_bound("2024-02-30").is_err());
    }

    #[test]
    fn since_and_until_are_inclusive_and_may_be_open() {
        let day = time_bound("2024-05-01").unwrap();
        let range = created_range(Some(day), Some(day)).unwrap().unwrap();
        assert_eq!((range.start_ms, range.end_ms), (day.ms, day.ms + MS_PER_DAY));
        let exact = time_bound("2024-05-01T00:00:00Z").unwrap();
        assert_eq!(created_range(None, Some(exact)).unwrap().unwrap().end_ms, exact.ms + 1);
        assert_eq!(created_range(Some(exact), None).unwrap().unwrap().end_ms, i64::MAX);
        assert_eq!(created_range(None, None).unwrap(), None);
        let later = time_bound("2024-06-01").unwrap();
        assert!(
            created_range(Some(later), Some(day))
                .unwrap_err()
                .contains("after --until")
        );
    }

    #[test]
    fn vector_files_are_json_or_raw_f32_and_finite() {
        let dir = std::env::temp_dir().join(format!("nexus-cli-vectors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let json = dir.join("v.json");
        std::fs::write(&json, "[0.5, -1, 2e0]").unwrap();
        assert_eq!(vector_file(&json).unwrap(), [0.5, -1.0, 2.0]);
        let raw = dir.join("v.f32");
        let bytes: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(&raw, &bytes).unwrap();
        assert_eq!(vector_file(&raw).unwrap(), [1.5, -2.0]);
        std::fs::write(&raw, &bytes[..7]).unwrap();
        assert!(vector_file(&raw).unwrap_err().contains("whole number"));
        std::fs::write(&raw, f32::NAN.to_le_bytes()).unwrap();
        assert!(vector_file(&raw).unwrap_err().contains("finite"));
        std::fs::write(&json, "[\"a\"]").unwrap();
        assert!(vector_file(&json).unwrap_err().contains("JSON array"));
        std::fs::write(&json, "[]").unwrap();
        assert!(vector_file(&json).unwrap_err().contains("empty"));
        assert!(vector_file(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stdin_text_drops_the_shells_newline_and_is_bounded() {
        assert_eq!(stdin_text("two\nlines\n".as_bytes()).unwrap(), "two\nlines");
        assert!(stdin_text(&[0xff, 0xfe][..]).unwrap_err().contains("UTF-8"));
        let huge = std::io::repeat(b'a').take(MAX_STDIN_TEXT_BYTES + 10);
        assert!(stdin_text(huge).unwrap_err().contains("nexus import"));
    }
}
