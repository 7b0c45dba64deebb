//! The WAL's file operations behind a trait, so tests can make the disk fail.
//!
//! Two implementations: [`RealFs`] (std + `fallocate`) and [`FaultyFs`], which wraps it
//! and fails chosen operations: the N-th write with ENOSPC, the N-th fdatasync with EIO
//! (or stuck until released, as on a dying disk), or every write and allocation while
//! "the disk is full". Tests drive it through
//! [`Faults`]; [`test_fs_from_env`] builds it from `NEXUS_FAULT_INJECT` for the
//! daemon under test (`nexusd-it`) so end-to-end tests can break a real daemon.
//!
//! Not here: a simulated disk that drops unsynced writes at a crash (the trait leaves
//! room for one; it is future work), and any policy about what an error means (the
//! writer and replay decide that).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, fallocate};
use nix::sys::uio::pwritev;
use rkyv::util::AlignedVec;

use super::WalError;

/// Environment variable read by [`test_fs_from_env`] (the test daemon only):
/// comma-separated `write-enospc-after:<n>`, `fsync-eio-after:<n>`, `fsync-hang-after:<n>`,
/// `disk-full`, `disk-full-while:<path>`, `emfile-while:<path>` (see [`FaultyFs::from_spec`]).
pub const FAULT_INJECT_ENV: &str = "NEXUS_FAULT_INJECT";

/// Largest scratch-probe sample count [`measure_fdatasync`] accepts: each sample is a
/// real fdatasync (~0.4 ms, 9 ms at p99 here), so this bounds a probe to minutes.
const MAX_PROBE_SAMPLES: usize = 100_000;
/// Bytes appended before each probe fdatasync: one page, as in RESEARCH.md's baseline.
const PROBE_WRITE_BYTES: usize = 4096;

/// A directory entry as the WAL needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalDirEntry {
    pub name: String,
    pub len_bytes: u64,
}

/// The file-system operations the WAL performs. Paths are absolute or relative to the
/// process's working directory; errors are plain `io::Error`s (the callers add context).
pub trait WalFs: Send + Sync + fmt::Debug {
    /// `mkdir -p`.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a file that must not exist yet, open for reading and writing.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file for reading and writing.
    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Reads a whole file into a 16-aligned buffer; fails with `InvalidData` rather than
    /// allocate for a file longer than `max_bytes`.
    fn read_all(&self, path: &Path, max_bytes: u64) -> io::Result<FileBytes>;
    /// The regular files in `dir` (not recursive).
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<WalDirEntry>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsync of the directory itself, so created, renamed and removed entries persist.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Opens a directory to sync it later without needing a new file descriptor.
    fn open_dir(&self, dir: &Path) -> io::Result<Arc<dyn WalDir>>;
}

/// A directory held open (see [`WalFs::open_dir`]): the writer keeps the WAL
/// directory's so that running out of file descriptors can never stop it from
/// making a new segment's entry durable.
pub trait WalDir: Send + Sync + fmt::Debug {
    /// fsync of the directory.
    fn sync(&self) -> io::Result<()>;
}

/// A whole file's bytes, 16-aligned: mapped read-only (replay reads segments
/// of up to 1 GiB once, front to back: no copy, no zeroed buffer) or owned.
#[derive(Debug)]
pub enum FileBytes {
    /// A read-only memory map of the file.
    Mapped(memmap2::Mmap),
    /// Bytes in memory (empty files; other `WalFs` implementations).
    Owned(AlignedVec<16>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(map) => map,
            Self::Owned(bytes) => bytes,
        }
    }
}

/// An open segment (or scratch) file.
pub trait WalFile: Send + fmt::Debug {
    /// `pwrite` until every byte is written.
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()>;
    /// Writes `pieces` one after another from `offset`, every byte (`pwritev`):
    /// one write, without first copying the pieces into one buffer.
    fn write_pieces_at(&mut self, pieces: &[&[u8]], offset: u64) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Reserves `[offset, offset + len_bytes)` (`fallocate`, mode 0: the file grows).
    /// `Unsupported` if the file system cannot; callers treat that as "no prealloc".
    fn allocate(&mut self, offset: u64, len_bytes: u64) -> io::Result<()>;
    /// `ftruncate`.
    fn set_len(&mut self, len_bytes: u64) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

#[derive(Debug)]
struct RealFile(File);

#[derive(Debug)]
struct RealDir(File);

impl WalDir for RealDir {
    fn sync(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl WalFs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn read_all(&self, path: &Path, max_bytes: u64) -> io::Result<FileBytes> {
        let file = File::open(path)?;
        let len_bytes = file.metadata()?.len();
        if len_bytes > max_bytes {
            let message = format!(
                "{} is {len_bytes} bytes, more than the {max_bytes} allowed",
                path.display()
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        if len_bytes == 0 {
            // mmap refuses empty files.
            return Ok(FileBytes::Owned(AlignedVec::new()));
        }
        // SAFETY: the WAL's files are only written by this process's one WAL
        // writer, and read_all is called before the writer starts (replay) or on
        // sealed segments it no longer writes; the data directory is locked
        // (flock) against other daemons. So the mapped bytes are not changed
        // while read (a change would only fail a checksum) and never truncated
        // below a byte that is read: replay cuts a torn tail, salvages, or gives
        // back a killed writer's preallocated zeros only after its scan and only
        // past the last valid record, and the payloads
        // it keeps (`KeptPayload`) all lie before that point; truncation would
        // SIGBUS only on pages wholly past the new end. The map is
        // page-aligned, so payloads stay 16-aligned.
        let map = unsafe { memmap2::MmapOptions::new().len(len_bytes as usize).map(&file) }?;
        // One pass front to back: ask for read-ahead.
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(FileBytes::Mapped(map))
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<WalDirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if let (true, Some(name)) = (metadata.is_file(), entry.file_name().to_str()) {
                entries.push(WalDirEntry {
                    name: name.to_owned(),
                    len_bytes: metadata.len(),
                });
            }
        }
        Ok(entries)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn open_dir(&self, dir: &Path) -> io::Result<Arc<dyn WalDir>> {
        Ok(Arc::new(RealDir(File::open(dir)?)))
    }
}

/// Most pieces one `pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

impl WalFile for RealFile {
    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }

    fn write_pieces_at(&mut self, pieces: &[&[u8]], mut offset: u64) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|piece| IoSlice::new(piece)).collect();
        let mut remaining = &mut slices[..];
        IoSlice::advance_slices(&mut remaining, 0); // drop leading empty pieces
        while !remaining.is_empty() {
            let at = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let batch = remaining.len().min(IOV_MAX);
            let written = match pwritev(&self.0, &remaining[..batch], at) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(written) => written,
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(io::Error::from(errno)),
            };
            offset += written as u64;
            IoSlice::advance_slices(&mut remaining, written);
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn allocate(&mut self, offset: u64, len_bytes: u64) -> io::Result<()> {
        let to_off = |value: u64| i64::try_from(value).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        match fallocate(&self.0, FallocateFlags::empty(), to_off(offset)?, to_off(len_bytes)?) {
            Ok(()) => Ok(()),
            Err(Errno::EOPNOTSUPP) => Err(io::Error::from(io::ErrorKind::Unsupported)),
            Err(errno) => Err(io::Error::from(errno)),
        }
    }

    fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        self.0.set_len(len_bytes)
    }
}

/// The switches of a [`FaultyFs`], shared with the test that flips them.
///
/// Countdowns: 0 is disarmed; `n` makes the n-th matching operation from now fail once.
#[derive(Debug, Default)]
pub struct Faults {
    write_enospc_countdown: AtomicU64,
    sync_eio_countdown: AtomicU64,
    sync_hang_countdown: AtomicU64,
    disk_full: AtomicBool,
    /// While set, opening files and directories fails with EMFILE.
    out_of_fds: AtomicBool,
    /// The disk is also full while this file exists (a switch a test flips
    /// from outside the daemon's process).
    disk_full_while: OnceLock<PathBuf>,
    /// Opening files and directories fails with EMFILE while this file exists.
    emfile_while: OnceLock<PathBuf>,
    writes: AtomicU64,
    syncs: AtomicU64,
    /// Set by [`Faults::release_hung_syncs`]; hung fdatasyncs wait for it.
    hang_released: Mutex<bool>,
    hang_released_changed: Condvar,
}

impl Faults {
    /// The `nth` write from now (1 = the next) writes half its bytes, then fails with
    /// ENOSPC, once.
    pub fn fail_write_with_enospc(&self, nth: u64) {
        self.write_enospc_countdown.store(nth, Ordering::SeqCst);
    }

    /// The `nth` fdatasync from now (1 = the next) fails with EIO, once. Later syncs
    /// succeed, as on Linux after the kernel dropped the dirty pages: a WAL that
    /// retried would wrongly believe its data safe.
    pub fn fail_sync_with_eio(&self, nth: u64) {
        self.sync_eio_countdown.store(nth, Ordering::SeqCst);
    }

    /// The `nth` fdatasync from now (1 = the next) does not return until
    /// [`Faults::release_hung_syncs`] (then it succeeds), as on a disk that
    /// stopped answering. Nothing in the WAL can cancel it: only bounds around
    /// the waits for the writer thread keep the daemon responsive.
    pub fn hang_sync(&self, nth: u64) {
        self.sync_hang_countdown.store(nth, Ordering::SeqCst);
    }

    /// Lets hung fdatasyncs return (and later ones not hang).
    pub fn release_hung_syncs(&self) {
        *self.hang_released.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.hang_released_changed.notify_all();
    }

    /// While set, every write and allocation fails with ENOSPC.
    pub fn set_disk_full(&self, full: bool) {
        self.disk_full.store(full, Ordering::SeqCst);
    }

    /// While set, creating or opening a file or a directory fails with EMFILE,
    /// as when the process has used up its file descriptors.
    pub fn set_out_of_fds(&self, out: bool) {
        self.out_of_fds.store(out, Ordering::SeqCst);
    }

    /// The disk is full (as [`Faults::set_disk_full`]) whenever `marker` exists.
    pub fn disk_full_while_exists(&self, marker: PathBuf) {
        let _ = self.disk_full_while.set(marker);
    }

    /// Creating or opening a file, and opening a directory to sync it, fail
    /// with EMFILE (the process is out of file descriptors) whenever `marker` exists.
    pub fn emfile_while_exists(&self, marker: PathBuf) {
        let _ = self.emfile_while.set(marker);
    }

    /// Writes attempted so far (failed ones included).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// fdatasyncs attempted so far (failed ones included).
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// How the next write goes: whole, not at all (disk full), or half then ENOSPC
    /// (the countdown: a write that ran out of space midway, as real ones do).
    fn before_write(&self) -> WriteFate {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.is_disk_full() {
            return WriteFate::Refused;
        }
        match fires(&self.write_enospc_countdown) {
            true => WriteFate::HalfThenFull,
            false => WriteFate::Whole,
        }
    }

    fn before_allocate(&self) -> io::Result<()> {
        match self.is_disk_full() {
            true => Err(io::Error::from(Errno::ENOSPC)),
            false => Ok(()),
        }
    }

    fn is_disk_full(&self) -> bool {
        self.disk_full.load(Ordering::SeqCst) || self.disk_full_while.get().is_some_and(|marker| marker.exists())
    }

    /// Before the process would take a new file descriptor.
    fn before_open(&self) -> io::Result<()> {
        let out = self.out_of_fds.load(Ordering::SeqCst);
        match out || self.emfile_while.get().is_some_and(|marker| marker.exists()) {
            true => Err(io::Error::from(Errno::EMFILE)),
            false => Ok(()),
        }
    }

    fn before_sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if fires(&self.sync_hang_countdown) {
            self.wait_until_released();
        }
        match fires(&self.sync_eio_countdown) {
            true => Err(io::Error::from(Errno::EIO)),
            false => Ok(()),
        }
    }

    fn wait_until_released(&self) {
        let released = self.hang_released.lock().unwrap_or_else(PoisonError::into_inner);
        let waited = self.hang_released_changed.wait_while(released, |released| !*released);
        drop(waited.unwrap_or_else(PoisonError::into_inner));
    }
}

enum WriteFate {
    Whole,
    Refused,
    HalfThenFull,
}

/// Decrements an armed countdown; true when it reaches zero now.
fn fires(countdown: &AtomicU64) -> bool {
    let previous = countdown.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    previous == Ok(1)
}

/// [`RealFs`] with injectable failures; see [`Faults`].
#[derive(Debug, Clone, Default)]
pub struct FaultyFs {
    faults: Arc<Faults>,
}

impl FaultyFs {
    /// No fault armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The switches, to arm from a test.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// Parses a [`FAULT_INJECT_ENV`] spec: `write-enospc-after:<n>` (n writes succeed,
    /// the next fails), `fsync-eio-after:<n>` (likewise for fdatasync),
    /// `fsync-hang-after:<n>` (n fdatasyncs return, the next never does), `disk-full`,
    /// `disk-full-while:<path>` (full while that file exists), `emfile-while:<path>`
    /// (opening files fails with EMFILE while that file exists); comma-separated.
    pub fn from_spec(spec: &str) -> Result<Self, WalError> {
        let fs = Self::new();
        for item in spec.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            let bad = |reason: &str| WalError::BadFaultSpec {
                spec: spec.to_owned(),
                reason: reason.to_owned(),
            };
            let (name, count) = item.split_once(':').unwrap_or((item, ""));
            let after = || count.parse::<u64>().map_err(|_| bad("expected <fault>:<count>"));
            match name {
                "write-enospc-after" => fs.faults.fail_write_with_enospc(after()? + 1),
                "fsync-eio-after" => fs.faults.fail_sync_with_eio(after()? + 1),
                "fsync-hang-after" => fs.faults.hang_sync(after()? + 1),
                "disk-full" if count.is_empty() => fs.faults.set_disk_full(true),
                "disk-full-while" if !count.is_empty() => fs.faults.disk_full_while_exists(count.into()),
                "emfile-while" if !count.is_empty() => fs.faults.emfile_while_exists(count.into()),
                _ => {
                    return Err(bad(
                        "known faults: write-enospc-after:<n>, fsync-eio-after:<n>, fsync-hang-after:<n>, \
                         disk-full, disk-full-while:<path>, emfile-while:<path>",
                    ));
                }
            }
        }
        Ok(fs)
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn WalFile>,
    faults: Arc<Faults>,
}

impl WalFs for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealFs.create_dir_all(dir)
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        self.faults.before_open()?;
        let inner = RealFs.create_new(path)?;
        Ok(Box::new(FaultyFile {
            inner,
            faults: Arc::clone(&self.faults),
        }))
    }

    fn open_rw(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        self.faults.before_open()?;
        let inner = RealFs.open_rw(path)?;
        Ok(Box::new(FaultyFile {
            inner,
            faults: Arc::clone(&self.faults),
        }))
    }

    fn read_all(&self, path: &Path, max_bytes: u64) -> io::Result<FileBytes> {
        RealFs.read_all(path, max_bytes)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<WalDirEntry>> {
        RealFs.list_dir(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        RealFs.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealFs.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.faults.before_open()?;
        RealFs.sync_dir(dir)
    }

    fn open_dir(&self, dir: &Path) -> io::Result<Arc<dyn WalDir>> {
        self.faults.before_open()?;
        RealFs.open_dir(dir)
    }
}

impl WalFile for FaultyFile {
    /// One write, as far as the faults are concerned.
    fn write_pieces_at(&mut self, pieces: &[&[u8]], offset: u64) -> io::Result<()> {
        self.write_all_at(&pieces.concat(), offset)
    }

    fn write_all_at(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        match self.faults.before_write() {
            WriteFate::Whole => self.inner.write_all_at(bytes, offset),
            WriteFate::Refused => Err(io::Error::from(Errno::ENOSPC)),
            WriteFate::HalfThenFull => {
                self.inner.write_all_at(&bytes[..bytes.len() / 2], offset)?;
                Err(io::Error::from(Errno::ENOSPC))
            }
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.faults.before_sync()?;
        self.inner.sync_data()
    }

    fn allocate(&mut self, offset: u64, len_bytes: u64) -> io::Result<()> {
        self.faults.before_allocate()?;
        self.inner.allocate(offset, len_bytes)
    }

    fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        self.inner.set_len(len_bytes)
    }
}

/// For the daemon under test only (`nexusd-it`; the shipped `nexusd` never calls
/// this): a [`FaultyFs`] armed from [`FAULT_INJECT_ENV`] when it is set, else [`RealFs`].
///
/// # Panics
///
/// If the variable holds an invalid spec: a fault test that silently ran without
/// its fault would pass for the wrong reason.
pub fn test_fs_from_env() -> Arc<dyn WalFs> {
    if let Ok(spec) = std::env::var(FAULT_INJECT_ENV) {
        let fs = FaultyFs::from_spec(&spec).unwrap_or_else(|error| panic!("{FAULT_INJECT_ENV}: {error}"));
        // Runs before the daemon installs its log subscriber, so straight to stderr.
        eprintln!("WAL fault injection armed: {spec}");
        return Arc::new(fs);
    }
    Arc::new(RealFs)
}

/// Times `samples` rounds of "append 4 KiB + fdatasync" on a scratch file in `dir`
/// (deleted afterwards): the bare cost a group commit amortises.
pub fn measure_fdatasync(dir: &Path, samples: usize) -> Result<Vec<Duration>, WalError> {
    if samples > MAX_PROBE_SAMPLES {
        return Err(WalError::InvalidConfig(format!(
            "{samples} probe samples; at most {MAX_PROBE_SAMPLES}"
        )));
    }
    let path = dir.join(format!(".nexus-fdatasync-probe-{}", std::process::id()));
    let result = probe_file(&path, samples);
    let removed = std::fs::remove_file(&path).map_err(|source| WalError::io("remove", &path, source));
    let latencies = result?;
    removed?;
    Ok(latencies)
}

/// Largest chunk and most chunks [`measure_sync_writes`] accepts (256 MiB in all).
const MAX_BANDWIDTH_CHUNK_BYTES: usize = 64 << 20;
const MAX_BANDWIDTH_PROBE_BYTES: usize = 256 << 20;

/// The disk's durable write rate as the WAL sees it for a big group: a scratch file
/// in `dir` is preallocated (`fallocate`, untimed, like a WAL segment), then each of
/// `chunks` writes of `chunk_bytes` is timed with its fdatasync. Returns each
/// chunk's duration; the file is removed.
pub fn measure_sync_writes(dir: &Path, chunk_bytes: usize, chunks: usize) -> Result<Vec<Duration>, WalError> {
    if chunk_bytes == 0
        || chunk_bytes > MAX_BANDWIDTH_CHUNK_BYTES
        || chunk_bytes.saturating_mul(chunks) > MAX_BANDWIDTH_PROBE_BYTES
    {
        return Err(WalError::InvalidConfig(format!(
            "{chunks} chunks of {chunk_bytes} bytes; at most {MAX_BANDWIDTH_PROBE_BYTES} bytes in chunks of at most {MAX_BANDWIDTH_CHUNK_BYTES}"
        )));
    }
    let path = dir.join(format!(".nexus-bandwidth-probe-{}", std::process::id()));
    let result = bandwidth_probe_file(&path, chunk_bytes, chunks);
    let removed = std::fs::remove_file(&path).map_err(|source| WalError::io("remove", &path, source));
    let durations = result?;
    removed?;
    Ok(durations)
}

fn bandwidth_probe_file(path: &PathBuf, chunk_bytes: usize, chunks: usize) -> Result<Vec<Duration>, WalError> {
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(path);
    let mut file = RealFile(file.map_err(|source| WalError::io("create", path, source))?);
    let total = (chunk_bytes * chunks) as u64;
    match file.allocate(0, total) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::Unsupported => {}
        Err(source) => return Err(WalError::io("fallocate", path, source)),
    }
    file.sync_data().map_err(|source| WalError::SyncFailed {
        path: path.clone(),
        source,
    })?;
    let chunk = vec![0x5A_u8; chunk_bytes];
    let offsets = (0..chunks).map(|n| (n * chunk_bytes) as u64);
    timed_synced_writes(&file.0, path, &chunk, offsets)
}

fn probe_file(path: &PathBuf, samples: usize) -> Result<Vec<Duration>, WalError> {
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(path);
    let file = file.map_err(|source| WalError::io("create", path, source))?;
    let page = [0xA5_u8; PROBE_WRITE_BYTES];
    let offsets = (0..samples).map(|n| (n * PROBE_WRITE_BYTES) as u64);
    timed_synced_writes(&file, path, &page, offsets)
}

/// Times "write `bytes` at the offset, then fdatasync", once per offset.
fn timed_synced_writes(
    file: &File,
    path: &PathBuf,
    bytes: &[u8],
    offsets: impl Iterator<Item = u64>,
) -> Result<Vec<Duration>, WalError> {
    offsets
        .map(|offset| {
            let started = Instant::now();
            file.write_all_at(bytes, offset)
                .map_err(|source| WalError::io("write", path, source))?;
            file.sync_data().map_err(|source| WalError::SyncFailed {
                path: path.clone(),
                source,
            })?;
            Ok(started.elapsed())
        })
        .collect()
}
