//! Owning the socket path: one live daemon per socket, and a socket file that
//! appears only when the daemon is ready.
//!
//! A lock file beside the socket (`<socket>.lock`, `flock`ed for the daemon's
//! life) decides ownership: if we hold it, any socket file at the path is a
//! stale leftover of a crashed daemon and is replaced; if we cannot take it,
//! another daemon is alive and we refuse to start. The socket is bound under
//! a temporary name, given its mode, put in listening state and only then
//! renamed into place, so a client never sees a socket that refuses it.
//! The lock file is opened without following a symlink and without
//! truncating (another daemon's lock must survive our attempt to take it),
//! and the socket file is removed only while it is still the one we bound
//! (same device and inode), never a successor's or a stranger's.
//! Serving connections is `server.rs`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Why the socket could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Another daemon holds the socket's lock.
    #[error("another nexusd is already serving {path} (its lock {lock} is held)")]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A filesystem or socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What we tried.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The bound socket, its lock, and the duty to remove the file at the end.
pub struct BoundSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we bound: what `path` must still
    /// name for us to remove it.
    identity: FileIdentity,
    _lock: Flock<File>,
}

/// A file's device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
}

impl BoundSocket {
    /// Takes `path`: lock, replace a stale socket, bind, chmod, listen, publish.
    pub fn bind(path: &Path, mode: u32) -> Result<Self, ListenError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| ListenError::Io { op, path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_socket_dir(dir, mode).map_err(io("create directory", dir))?;
        }
        let lock_path = with_suffix(path, ".lock");
        let lock = take_lock(&lock_path)?;
        remove_stale(path).map_err(io("remove stale socket", path))?;
        let temp_path = with_suffix(path, &format!(".{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temp_path);
        let listener = UnixListener::bind(&temp_path).map_err(io("bind", &temp_path))?;
        let identity = std::fs::symlink_metadata(&temp_path).map(|meta| FileIdentity::of(&meta));
        let publish = identity.and_then(|identity| {
            std::fs::set_permissions(&temp_path, std::fs::Permissions::from_mode(mode))?;
            std::fs::rename(&temp_path, path)?;
            Ok(identity)
        });
        let identity = match publish {
            Ok(identity) => identity,
            Err(source) => {
                let _ = std::fs::remove_file(&temp_path);
                return Err(ListenError::Io {
                    op: "publish socket",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            identity,
            _lock: lock,
        })
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Removes the socket file (shutdown began) if it is still ours; the
    /// lock stays held.
    pub fn unpublish(&self) {
        self.remove_if_ours();
    }

    /// Removes the file at our path only if it is the socket we bound. A
    /// file someone put in its place (another daemon started without our
    /// lock, an operator's replacement) is left alone. The check and the
    /// unlink are two steps; only a process that can write the directory
    /// could swap the file between them.
    fn remove_if_ours(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if FileIdentity::of(&meta) == self.identity => {
                let _ = std::fs::remove_file(&self.path);
            }
            Ok(_) => tracing::warn!(
                path = %self.path.display(),
                "the socket path now names another file; leaving it in place"
            ),
            Err(_) => {}
        }
    }

    /// The published path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    /// Removes the socket file (if still ours) while we still hold the lock,
    /// so we never delete a successor's socket.
    fn drop(&mut self) {
        self.remove_if_ours();
    }
}

impl FileIdentity {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Opens the lock file (0600, never through a symlink, never truncated)
/// and flocks it.
fn take_lock(lock_path: &Path) -> Result<Flock<File>, ListenError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(lock_path)
        .map_err(|source| ListenError::Io {
            op: "open lock",
            path: lock_path.to_path_buf(),
            source,
        })?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| match errno {
        nix::errno::Errno::EWOULDBLOCK => ListenError::AlreadyRunning {
            path: lock_path.with_extension(""),
            lock: lock_path.to_path_buf(),
        },
        other => ListenError::Io {
            op: "lock",
            path: lock_path.to_path_buf(),
            source: other.into(),
        },
    })
}

/// With the lock held, a socket file at `path` belongs to a dead daemon.
/// Anything that is not a socket is left alone (refusing is safer than
/// deleting a user's file).
fn remove_stale(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates the socket's directory if missing: private to the daemon's uid,
/// plus the search bit for the group or others when `socket_mode` lets
/// them connect (they must reach the socket to use it).
fn create_socket_dir(dir: &Path, socket_mode: u32) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let group_search = if socket_mode & 0o060 != 0 { 0o010 } else { 0 };
    let other_search = if socket_mode & 0o006 != 0 { 0o001 } else { 0 };
    std::fs::set_permissions(
        dir,
        std::fs::Permissions::from_mode(0o700 | group_search | other_search),
    )
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_is_refused_and_a_stale_socket_replaced() {
        let dir = std::env::temp_dir().join(format!("nexus-listener-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("d.sock");
        // A stale socket: bound by someone who died (the listener is dropped, the file stays).
        std::fs::create_dir_all(&dir).unwrap();
        drop(UnixListener::bind(&path).unwrap());
        let first = BoundSocket::bind(&path, 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            BoundSocket::bind(&path, 0o600),
            Err(ListenError::AlreadyRunning { .. })
        ));
        drop(first);
        assert!(!path.exists(), "the socket file is removed at the end");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_socket_that_replaced_ours_is_not_removed() {
        let dir = std::env::temp_dir().join(format!("nexus-listener-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let ours = BoundSocket::bind(&path, 0o600).unwrap();
        std::fs::remove_file(&path).unwrap();
        let _theirs = UnixListener::bind(&path).unwrap();
        ours.unpublish();
        drop(ours);
        assert!(path.exists(), "another socket at our path is left alone");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
        let dir = std::env::temp_dir().join(format!("nexus-listener-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("d.sock");
        let victim = dir.join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, with_suffix(&path, ".lock")).unwrap();
        assert!(matches!(
            BoundSocket::bind(&path, 0o600),
            Err(ListenError::Io { op: "open lock", .. })
        ));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
