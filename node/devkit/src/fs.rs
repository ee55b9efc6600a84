//! Small file helpers: writing a file with its folders, and node config files.

use std::io;
use std::path::{Path, PathBuf};
use tether_node::config::NodeConfig;

/// Writes `text` to `path`, creating its parent directories. Readable by its owner only
/// (mode 0600): among these files are the CA key, the signing key and node keys.
pub(crate) fn write(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A file that existed keeps its mode on open: narrow it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

/// Writes a config as TOML.
pub fn save_config(path: &Path, config: &NodeConfig) -> io::Result<()> {
    write(path, &toml::to_string(config).map_err(io::Error::other)?)
}

/// The config path of node `id` in a dev directory.
pub fn config_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}")).join("config.toml")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_secrets_are_readable_by_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = crate::Secrets::ensure(dir.path()).unwrap();
        for file in ["ca-key.pem", "signing-key.pem"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} has mode {mode:o}");
        }
        let (_, key) = secrets.issue_https(&["127.0.0.1"]).unwrap();
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }
}
