//! Small file helpers: writing a file with its folders, and node config files.

use std::io;
use std::path::{Path, PathBuf};
use tether_node::config::NodeConfig;

/// Writes `text` to `path`, creating its parent directories.
pub(crate) fn write(path: &Path, text: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)
}

/// Writes a config as TOML.
pub fn save_config(path: &Path, config: &NodeConfig) -> io::Result<()> {
    write(path, &toml::to_string(config).map_err(io::Error::other)?)
}

/// The config path of node `id` in a dev directory.
pub fn config_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}")).join("config.toml")
}
