//! Small file helpers.

use std::io;
use std::path::Path;

/// Writes `text` to `path`, creating its parent directories.
pub(crate) fn write(path: &Path, text: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)
}
