//! Owning the socket path: one live daemon per socket, and a socket file that
//! appears only when the daemon is ready.
//!
//! A lock file beside the socket (`<socket>.lock`, `flock`ed for the daemon's
//! life) decides ownership: if we hold it, any socket file at the path is a
//! stale leftover of a crashed daemon and is replaced; if we cannot take it,
//! another daemon is alive and we refuse to start. The socket is bound under
//! a temporary name, given its mode, put in listening state and only then
//! renamed into place, so a client never sees a socket that refuses it.
//! Serving connections is `server.rs`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
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
    _lock: Flock<File>,
}

impl BoundSocket {
    /// Takes `path`: lock, replace a stale socket, bind, chmod, listen, publish.
    pub fn bind(path: &Path, mode: u32) -> Result<Self, ListenError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| ListenError::Io { op, path, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        }
        let lock_path = with_suffix(path, ".lock");
        let lock = take_lock(&lock_path)?;
        remove_stale(path).map_err(io("remove stale socket", path))?;
        let temp_path = with_suffix(path, &format!(".{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temp_path);
        let listener = UnixListener::bind(&temp_path).map_err(io("bind", &temp_path))?;
        let publish = std::fs::set_permissions(&temp_path, std::fs::Permissions::from_mode(mode))
            .and_then(|()| std::fs::rename(&temp_path, path));
        if let Err(source) = publish {
            let _ = std::fs::remove_file(&temp_path);
            return Err(ListenError::Io {
                op: "publish socket",
                path: path.to_path_buf(),
                source,
            });
        }
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// Removes the socket file (shutdown began); the lock stays held.
    pub fn unpublish(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// The published path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    /// Removes the socket file while we still hold the lock, so we never
    /// delete a successor's socket.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn take_lock(lock_path: &Path) -> Result<Flock<File>, ListenError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
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
}
