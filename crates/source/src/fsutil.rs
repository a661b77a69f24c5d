//! Atomic file replacement, shared by the schema history and the snapshot progress file.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A failed file operation, naming what was done and to which file.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct FileError {
    /// What was being done.
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

fn err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> FileError + 'p {
    move |source| FileError {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `dir/name` so that a crash leaves either the old or the new contents:
/// write a temporary file, fsync it, rename it into place, fsync the directory.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FileError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(err("creating", &tmp))?;
    f.write_all(bytes).map_err(err("writing", &tmp))?;
    f.sync_all().map_err(err("syncing", &tmp))?;
    fs::rename(&tmp, &path).map_err(err("renaming into place", &path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("syncing directory", dir))
}
