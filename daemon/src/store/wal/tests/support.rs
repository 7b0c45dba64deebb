//! Shared test helpers: a temporary directory, a recording committer, `check_replay`,
//! and raw segment writing for damage tests.
//!
//! Not here: assertions about a particular area (each test module has its own).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::super::record::encode_into;
use super::super::segment::{self, SEGMENT_HEADER_BYTES, create_segment};
use super::super::{Committer, Lsn, RealFs, ReplayReport, Wal, WalConfig, WalError, WalFs, replay};

/// How long a test waits for something asynchronous before failing as hung.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// A test's directory (the crate's one temp-dir helper), with the WAL's paths in it.
#[derive(Debug)]
pub struct TempDir(crate::testing::TempDir);

impl TempDir {
    pub fn new(name: &str) -> Self {
        Self(crate::testing::TempDir::new(&format!("wal-{name}")))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn wal_dir(&self) -> PathBuf {
        segment::wal_dir(self.path())
    }

    /// The segment file whose first LSN is `first_lsn`.
    pub fn segment(&self, first_lsn: Lsn) -> PathBuf {
        self.wal_dir().join(segment::segment_name(first_lsn))
    }
}

/// What the committer heard about one ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Durable { lsn: Lsn, ticket: u64 },
    Failed { ticket: u64, error: String },
}

/// Records every outcome; optionally holds the writer inside the first `durable` call
/// until the test releases it (so appends pile up in the queue).
#[derive(Debug)]
pub struct Recorder {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    gate: Option<mpsc::Receiver<()>>,
}

impl Recorder {
    pub fn new() -> (Self, Arc<Mutex<Vec<Outcome>>>) {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                outcomes: Arc::clone(&outcomes),
                gate: None,
            },
            outcomes,
        )
    }

    /// Like `new`, plus the sender that releases the first `durable` call.
    pub fn gated() -> (Self, Arc<Mutex<Vec<Outcome>>>, mpsc::Sender<()>) {
        let (recorder, outcomes) = Self::new();
        let (release, gate) = mpsc::channel();
        (
            Self {
                gate: Some(gate),
                ..recorder
            },
            outcomes,
            release,
        )
    }
}

impl Committer for Recorder {
    type Ticket = u64;

    fn durable(&mut self, lsn: Lsn, ticket: u64) {
        if let Some(gate) = self.gate.take() {
            gate.recv_timeout(WATCHDOG).expect("test releases the gate");
        }
        self.outcomes.lock().unwrap().push(Outcome::Durable { lsn, ticket });
    }

    fn failed(&mut self, ticket: u64, error: &Arc<WalError>) {
        self.outcomes.lock().unwrap().push(Outcome::Failed {
            ticket,
            error: error.to_string(),
        });
    }
}

/// A config for tests: small segments unless changed.
pub fn config(dir: &TempDir) -> WalConfig {
    WalConfig {
        segment_bytes: 64 << 10,
        ..WalConfig::new(dir.path())
    }
}

pub fn start(config: WalConfig, fs: Arc<dyn WalFs>, next_lsn: Lsn) -> (Wal<u64>, Arc<Mutex<Vec<Outcome>>>) {
    let (recorder, outcomes) = Recorder::new();
    (Wal::start(config, fs, next_lsn, recorder).expect("start WAL"), outcomes)
}

/// A deterministic payload of a size that varies with `i` (empty ones included).
pub fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 300) as usize;
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

/// Waits until `outcomes` holds `count` entries (fails as hung after [`WATCHDOG`]).
pub fn wait_for_outcomes(outcomes: &Mutex<Vec<Outcome>>, count: usize) -> Vec<Outcome> {
    let started = Instant::now();
    loop {
        let seen = outcomes.lock().unwrap().clone();
        if seen.len() >= count {
            return seen;
        }
        assert!(started.elapsed() < WATCHDOG, "hung: {} of {count} outcomes", seen.len());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Records as replay handed them over.
pub type Replayed = Vec<(Lsn, Vec<u8>)>;

/// Replays `dir` and returns the report and every applied record.
pub fn replay_all(
    dir: &Path,
    fs: &dyn WalFs,
    after_lsn: Lsn,
    salvage: bool,
) -> Result<(ReplayReport, Replayed), WalError> {
    let mut records = Vec::new();
    let report = replay(dir, fs, after_lsn, salvage, |lsn, payload| {
        assert!(
            (payload.as_ptr() as usize).is_multiple_of(16),
            "payload of {lsn} is 16-aligned"
        );
        records.push((lsn, payload.to_vec()));
        Ok(())
    })?;
    Ok((report, records))
}

/// Replays `dir` with RealFs and checks the records applied are exactly `expected`.
#[track_caller]
pub fn check_replay(dir: &TempDir, after_lsn: Lsn, expected: &[(Lsn, Vec<u8>)]) -> ReplayReport {
    let (report, records) = replay_all(dir.path(), &RealFs, after_lsn, false).expect("replay");
    assert_eq!(records.len(), expected.len(), "record count");
    assert_eq!(records, expected);
    report
}

/// `(lsn, payload(lsn))` for each LSN of `lsns`.
pub fn expected(lsns: impl IntoIterator<Item = Lsn>) -> Vec<(Lsn, Vec<u8>)> {
    lsns.into_iter().map(|lsn| (lsn, payload(lsn))).collect()
}

/// Writes a segment the way a crashed writer leaves it: header, `payload(lsn)` records
/// for `lsns`, preallocated zeros up to 64 KiB, no shutdown. Returns each record's
/// start offset.
pub fn write_raw_segment(dir: &TempDir, lsns: std::ops::RangeInclusive<Lsn>) -> Vec<u64> {
    let wal_dir = dir.wal_dir();
    std::fs::create_dir_all(&wal_dir).unwrap();
    let dir = RealFs.open_dir(&wal_dir).expect("open the WAL directory");
    let mut active = create_segment(&RealFs, &*dir, &wal_dir, *lsns.start(), 64 << 10).expect("create segment");
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for lsn in lsns {
        offsets.push((SEGMENT_HEADER_BYTES + bytes.len()) as u64);
        encode_into(&mut bytes, active.salt, lsn, &payload(lsn));
    }
    active.file.write_all_at(&bytes, SEGMENT_HEADER_BYTES as u64).unwrap();
    active.file.sync_data().unwrap();
    offsets
}

/// Appends `payload(lsn)` for each LSN, flushes, and checks every ack.
pub async fn append_and_flush(wal: &Wal<u64>, outcomes: &Mutex<Vec<Outcome>>, lsns: std::ops::RangeInclusive<Lsn>) {
    let already = outcomes.lock().unwrap().len();
    for lsn in lsns.clone() {
        wal.append(payload(lsn), lsn).await.expect("append");
    }
    wal.flush().await.expect("flush");
    let seen = outcomes.lock().unwrap()[already..].to_vec();
    let acks: Vec<Outcome> = lsns.map(|lsn| Outcome::Durable { lsn, ticket: lsn }).collect();
    assert_eq!(seen, acks);
}
