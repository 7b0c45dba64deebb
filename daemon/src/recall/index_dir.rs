//! Where an engine keeps its saved index: `<data_dir>/index/<engine>/`, a
//! set of immutable files and a `MANIFEST` naming them and the LSN they
//! cover.
//!
//! Crash safety: files are written under new names (temp file, fsync,
//! rename), then the manifest is replaced the same way, then files it no
//! longer lists are deleted. A kill at any moment leaves the old manifest
//! with its files, or the new one with its files; leftovers of an
//! interrupted save are deleted by the next save. A manifest that is
//! missing, does not parse, fails its checksum, names a missing file, or was
//! made with other settings (`identity`) makes the engine rebuild from the
//! store.
//!
//! Not here: what the files hold (each engine's own format and checks).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An engine's index directory.
#[derive(Debug, Clone)]
pub struct IndexDir {
    dir: PathBuf,
}

/// What a saved index is: the LSN it covers, what made it, its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Every change up to this LSN is in the files (later ones may be too:
    /// applying a change twice leaves the same index).
    pub lsn: u64,
    /// The settings and model the files were made with; another identity
    /// means rebuild.
    pub identity: String,
    /// File names in the directory, in the engine's order.
    pub files: Vec<String>,
}

const MANIFEST: &str = "MANIFEST";
const MAGIC: &str = "nexus-index 1";

impl IndexDir {
    /// The directory of `engine` under `data_dir` (not created yet).
    pub fn new(data_dir: &Path, engine: &str) -> Self {
        Self {
            dir: data_dir.join("index").join(engine),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A file of the index.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The saved manifest; `Ok(None)` when there is none, `Err` (the reason)
    /// when it is unusable.
    pub fn read_manifest(&self) -> Result<Option<Manifest>, String> {
        let path = self.dir.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let manifest = parse(&text).ok_or_else(|| format!("{} is damaged", path.display()))?;
        if let Some(missing) = manifest.files.iter().find(|f| !self.dir.join(f).is_file()) {
            return Err(format!("{} names {missing}, which is missing", path.display()));
        }
        Ok(Some(manifest))
    }

    /// Writes `bytes` as the new file `name` durably (the name must be new:
    /// files are never rewritten in place).
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        write_durably(&self.dir.join(name), bytes)
    }

    /// Makes `manifest` the saved index, then deletes the files it does not
    /// list (an earlier save's, or an interrupted one's).
    pub fn commit(&self, manifest: &Manifest) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        write_durably(&self.dir.join(MANIFEST), render(manifest).as_bytes())?;
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name != MANIFEST && !manifest.files.iter().any(|f| *f == name) {
                let _ = std::fs::remove_file(self.dir.join(&*name));
            }
        }
        Ok(())
    }

    /// Deletes the saved index (it will be rebuilt at the next start).
    pub fn discard(&self) {
        let _ = std::fs::remove_file(self.dir.join(MANIFEST));
    }
}

fn render(manifest: &Manifest) -> String {
    let mut body = format!("{MAGIC}\nlsn {}\nidentity {}\n", manifest.lsn, manifest.identity);
    for file in &manifest.files {
        body.push_str(&format!("file {file}\n"));
    }
    let crc = crc32c::crc32c(body.as_bytes());
    body.push_str(&format!("crc {crc:08x}\n"));
    body
}

fn parse(text: &str) -> Option<Manifest> {
    let (body, crc_line) = text.trim_end_matches('\n').rsplit_once('\n')?;
    let body = format!("{body}\n");
    let crc = u32::from_str_radix(crc_line.strip_prefix("crc ")?, 16).ok()?;
    if crc32c::crc32c(body.as_bytes()) != crc {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let lsn = lines.next()?.strip_prefix("lsn ")?.parse().ok()?;
    let identity = lines.next()?.strip_prefix("identity ")?.to_owned();
    let files = lines
        .map(|line| line.strip_prefix("file ").map(str::to_owned))
        .collect::<Option<Vec<_>>>()?;
    if files.iter().any(|f| f.contains('/') || f.is_empty() || f == MANIFEST) {
        return None;
    }
    Some(Manifest { lsn, identity, files })
}

/// Writes `bytes` to `path` so a crash leaves the old file or the new one.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    #[test]
    fn a_manifest_round_trips_and_a_damaged_one_is_refused() {
        let temp = TempDir::new("index-dir");
        let dir = IndexDir::new(temp.path(), "lexical");
        assert_eq!(dir.read_manifest(), Ok(None));
        dir.write_file("a-1.bin", b"hello").expect("write");
        let manifest = Manifest {
            lsn: 42,
            identity: "k1=1.2 b=0.75".into(),
            files: vec!["a-1.bin".into()],
        };
        dir.commit(&manifest).expect("commit");
        assert_eq!(dir.read_manifest(), Ok(Some(manifest.clone())));

        // A later save's leftovers are deleted when a manifest stops listing them.
        dir.write_file("b-2.bin", b"world").expect("write");
        let next = Manifest {
            lsn: 50,
            files: vec!["b-2.bin".into()],
            ..manifest
        };
        dir.commit(&next).expect("commit");
        assert!(!dir.file("a-1.bin").exists());

        let path = dir.file(MANIFEST);
        let text = std::fs::read_to_string(&path).unwrap().replace("lsn 50", "lsn 51");
        std::fs::write(&path, text).unwrap();
        assert!(dir.read_manifest().unwrap_err().contains("damaged"));

        dir.commit(&next).expect("commit");
        std::fs::remove_file(dir.file("b-2.bin")).unwrap();
        assert!(dir.read_manifest().unwrap_err().contains("missing"));
    }
}
