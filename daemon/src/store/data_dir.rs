//! The data directory: private to the daemon, and held by one daemon at a time.
//!
//! Whoever can write the directory could replace the WAL or a snapshot under
//! the daemon, so it must be a directory owned by the daemon's uid that
//! neither its group nor others can write; and two daemons on one directory
//! would interleave their WALs, so an exclusive flock on `<dir>/LOCK` is held
//! for the store's life. Not here: what lives in the directory (`wal/`,
//! `snapshot.rs`).

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// Creating it (or a parent) failed.
    #[error("the data directory {path} cannot be created: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Its metadata cannot be read.
    #[error("the data directory {path} cannot be read: {source}")]
    Stat {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The path exists and is something else.
    #[error("the data directory {path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Another uid owns it.
    #[error("the data directory {path} is owned by uid {owner}, not by nexusd's uid {uid}")]
    WrongOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective uid.
        uid: u32,
    },
    /// Its group or others may write it.
    #[error(
        "the data directory {path} is writable by its group or others (mode {mode:o}); make it private (chmod 700)"
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// `LOCK` cannot be opened (or is a symlink).
    #[error("cannot open {path} (a symlink is refused): {source}")]
    LockFile {
        /// `<dir>/LOCK`.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon holds the lock.
    #[error("the data directory {path} is in use by another nexusd (pid {pid}, {errno})")]
    InUse {
        /// The directory.
        path: PathBuf,
        /// What the holder wrote into `LOCK` ("unknown" if nothing).
        pid: String,
        /// What flock said.
        #[source]
        errno: nix::errno::Errno,
    },
}

/// One daemon per data directory: an exclusive flock on `<dir>/LOCK`, after
/// checking (or creating) the directory as private (see [`create_private`]).
///
/// `LOCK` is opened 0600, never through a symlink (`O_NOFOLLOW`: a link
/// planted there cannot make us create or clobber another file) and never
/// truncated before the flock is ours, so a running daemon's lock file stays
/// as it is; once held, it records our pid for the next daemon's error.
pub(super) fn lock(dir: &Path) -> Result<Flock<File>, DataDirError> {
    use std::io::Read;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    create_private(dir)?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| DataDirError::LockFile { path, source })?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(file, errno)| {
        let mut holder = String::new();
        let _ = (&file).take(32).read_to_string(&mut holder);
        let pid = Some(holder.trim()).filter(|pid| !pid.is_empty()).unwrap_or("unknown");
        DataDirError::InUse {
            path: dir.to_path_buf(),
            pid: pid.to_owned(),
            errno,
        }
    })?;
    let pid = format!("{}\n", std::process::id());
    // Best effort: the pid only improves another daemon's error message.
    let _ = lock.set_len(0).and_then(|()| lock.write_all_at(pid.as_bytes(), 0));
    Ok(lock)
}

/// Creates the data directory 0700 (with missing parents), or checks a
/// pre-existing one: a directory owned by the daemon's uid that neither its
/// group nor others can write.
fn create_private(dir: &Path) -> Result<(), DataDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let path = || dir.to_path_buf();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DataDirError::Create { path: path(), source })?;
    let meta = std::fs::metadata(dir).map_err(|source| DataDirError::Stat { path: path(), source })?;
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory { path: path() });
    }
    if meta.uid() != uid {
        return Err(DataDirError::WrongOwner {
            path: path(),
            owner: meta.uid(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(DataDirError::NotPrivate { path: path(), mode });
    }
    Ok(())
}
