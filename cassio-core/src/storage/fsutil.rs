//! Small filesystem helpers with the error context the engine reports.

use std::fs::File;
use std::path::Path;

use crate::error::{Error, Result};

/// Creates a directory and its parents unless it exists. A file in its
/// place is named as such (the OS only says "File exists").
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists && !dir.is_dir() {
            let not_a_directory = std::io::Error::other("exists and is not a directory");
            Error::io(dir, not_a_directory)
        } else {
            Error::io(dir, e)
        }
    })
}

/// Fsyncs a directory so that file creations, renames and deletions in it
/// survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename over
/// the target, fsync the directory. A crash leaves the old or the new file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    sync_dir(dir)
}
