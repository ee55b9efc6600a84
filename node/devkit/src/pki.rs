//! Dev and test secrets in one directory: a cluster CA, node certificates naming their node
//! id, HTTPS certificates for the nodes' clients, and the token-signing key; token minting
//! for fixtures.

use crate::fs::write;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_node::auth::{generate_signing_key, Claims, Minter, Role};
use tether_node::config::{
    AuthConfig, HttpSection, HttpsConfig, MemberConfig, NodeConfig, RaftSection, TlsConfig,
};

/// The cluster-wide secrets in a dev directory.
pub struct Secrets {
    dir: PathBuf,
}

impl Secrets {
    /// Creates the CA and token signing key in `dir` unless they exist.
    pub fn ensure(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let s = Self { dir: dir.into() };
        if !s.ca_key().exists() {
            let ca = tether_raft::generate_ca().map_err(io::Error::other)?;
            write(&s.ca_cert(), &ca.cert_pem)?;
            write(&s.ca_key(), &ca.key_pem)?;
        }
        if !s.signing_key().exists() {
            let (private, public) = generate_signing_key().map_err(io::Error::other)?;
            write(&s.signing_key(), &private)?;
            write(&s.signing_pub(), &public)?;
        }
        Ok(s)
    }

    /// Issues (again) the HTTPS certificate clients see, from the cluster CA, for `names`
    /// (IP addresses and DNS names), to `https.pem` and `https-key.pem`; returns their paths.
    pub fn issue_https(&self, names: &[&str]) -> io::Result<(PathBuf, PathBuf)> {
        let names = names.iter().map(|n| n.to_string()).collect();
        let pair =
            tether_raft::tls::issue_server_cert(&std::fs::read_to_string(self.ca_key())?, names)
                .map_err(io::Error::other)?;
        let (cert, key) = (self.dir.join("https.pem"), self.dir.join("https-key.pem"));
        // The key first: a node reloading between the two writes sees a pair that does not
        // match and keeps its old one until the next check.
        write(&key, &pair.key_pem)?;
        write(&cert, &pair.cert_pem)?;
        Ok((cert, key))
    }

    /// Opens the secrets of an existing dev directory.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let s = Self { dir: dir.into() };
        if !s.signing_key().exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} has no signing key: run `tether dev --dir {}` first",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        Ok(s)
    }

    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    fn signing_key(&self) -> PathBuf {
        self.dir.join("signing-key.pem")
    }
    fn signing_pub(&self) -> PathBuf {
        self.dir.join("signing-pub.pem")
    }

    /// Mints a token for `sub` with `role`, living `ttl` (at most
    /// [`tether_node::auth::MAX_TOKEN_TTL`], which nodes refuse to exceed).
    pub fn mint(&self, sub: &str, role: Role, ttl: Duration) -> io::Result<String> {
        if ttl > tether_node::auth::MAX_TOKEN_TTL {
            return Err(io::Error::other(format!(
                "a token may live at most {} s",
                tether_node::auth::MAX_TOKEN_TTL.as_secs()
            )));
        }
        let minter = Minter::from_pem(std::fs::read_to_string(self.signing_key())?.as_bytes())
            .map_err(io::Error::other)?;
        minter
            .mint(&Claims::new(sub, role, ttl))
            .map_err(io::Error::other)
    }

    /// Minter for custom claims (tests forge expired tokens with it).
    pub fn minter(&self) -> io::Result<Minter> {
        Minter::from_pem(std::fs::read_to_string(self.signing_key())?.as_bytes())
            .map_err(io::Error::other)
    }

    /// Writes a node's certificate, key and config under `dir/node{id}` and returns the config.
    pub fn node_config(
        &self,
        id: u64,
        http: SocketAddr,
        raft: SocketAddr,
        members: &[MemberConfig],
    ) -> io::Result<NodeConfig> {
        let node_dir = self.dir.join(format!("node{id}"));
        let pair = tether_raft::issue_node_cert(&std::fs::read_to_string(self.ca_key())?, id)
            .map_err(io::Error::other)?;
        write(&node_dir.join("cert.pem"), &pair.cert_pem)?;
        write(&node_dir.join("key.pem"), &pair.key_pem)?;
        let config = NodeConfig {
            id,
            http_addr: http,
            raft_addr: raft,
            data_dir: node_dir.join("data"),
            initial_members: members.to_vec(),
            tls: TlsConfig {
                ca_cert: self.ca_cert(),
                cert: node_dir.join("cert.pem"),
                key: node_dir.join("key.pem"),
            },
            auth: AuthConfig {
                public_key: self.signing_pub(),
                private_key: Some(self.signing_key()),
                max_token_ttl_s: tether_node::auth::MAX_TOKEN_TTL.as_secs(),
            },
            raft: RaftSection::default(),
            http: HttpSection::default(),
            sessions: Default::default(),
        };
        crate::fs::save_config(&node_dir.join("config.toml"), &config)?;
        Ok(config)
    }
}

/// Makes the node of `config` serve HTTPS with a certificate for its loopback address, from
/// the cluster CA of its own secrets (beside `config.tls.ca_cert`), issued on first use. For
/// the test clusters that run with TLS; the clients must trust that CA.
pub fn serve_https(config: &mut NodeConfig) -> io::Result<()> {
    let dir = (config.tls.ca_cert.parent())
        .ok_or_else(|| io::Error::other("the CA certificate has no directory"))?;
    let secrets = Secrets { dir: dir.into() };
    let (cert, key) = (dir.join("https.pem"), dir.join("https-key.pem"));
    let (cert, key) = if cert.exists() && key.exists() {
        (cert, key)
    } else {
        secrets.issue_https(&["127.0.0.1", "localhost"])?
    };
    config.http.tls = Some(HttpsConfig {
        cert,
        key,
        reload_ms: 200,
    });
    Ok(())
}
