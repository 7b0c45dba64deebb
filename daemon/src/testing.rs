//! Test support shared by the daemon's own tests and the end-to-end harness
//! (`tests/src`): one temporary-directory helper, so every test that needs a
//! scratch directory gets the same naming, permissions and clean-up.
//!
//! Compiled into the library (the harness is another crate) but hidden from
//! its docs; nothing in the daemon's serving path uses it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh, private (0700) directory under the system temp dir, removed with
/// everything in it on drop. Unique per process and call:
/// `nexus-<label>-<pid>-<n>`.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates the directory; `label` says which test made it (it shows in
    /// the path when a test fails and keeps it).
    pub fn new(label: &str) -> Self {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("nexus-{label}-{}-{n}", std::process::id()));
        // A leftover of an earlier process with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
