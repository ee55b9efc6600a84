//! A local cluster on loopback: per-node configs on free ports, `cluster.json`, and waiting
//! for an agreed leader. Used by `tether dev`, the bench harness and the test fixture alike.

pub use crate::fs::{config_path, save_config};
use crate::pki::Secrets;
use crate::process::NodeProcess;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_node::config::{MemberConfig, NodeConfig};

/// `cluster.json`: what `tether dev` started, for people and tools.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClusterFile {
    /// The nodes.
    pub nodes: Vec<ClusterFileNode>,
    /// An admin token for the API.
    pub admin_token: String,
}

/// One node in `cluster.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClusterFileNode {
    /// Node id.
    pub id: u64,
    /// OS process id.
    pub pid: u32,
    /// HTTP address.
    pub http: SocketAddr,
    /// QUIC address.
    pub raft: SocketAddr,
    /// The config file, to restart it with `tether node --config`.
    pub config: PathBuf,
}

impl ClusterFile {
    /// Reads `dir/cluster.json`.
    pub fn load(dir: &Path) -> io::Result<Self> {
        let text = std::fs::read_to_string(dir.join("cluster.json"))?;
        serde_json::from_str(&text).map_err(io::Error::other)
    }
}

/// A free loopback TCP port and a free UDP port (probed, then released).
pub fn free_addrs() -> io::Result<(SocketAddr, SocketAddr)> {
    let tcp = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let udp = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    Ok((tcp, udp))
}

/// Generates secrets and `n` node configs (ids 1..=n) on free loopback ports, or reuses the
/// configs already in `dir`.
pub fn generate(dir: &Path, n: u64) -> io::Result<Vec<NodeConfig>> {
    let secrets = Secrets::ensure(dir)?;
    if (1..=n).all(|id| config_path(dir, id).exists()) {
        return (1..=n)
            .map(|id| NodeConfig::load(&config_path(dir, id)).map_err(io::Error::other))
            .collect();
    }
    let mut members = Vec::new();
    for id in 1..=n {
        let (http_addr, raft_addr) = free_addrs()?;
        members.push(MemberConfig {
            id,
            raft_addr,
            http_addr,
        });
    }
    members
        .iter()
        .map(|m| secrets.node_config(m.id, m.http_addr, m.raft_addr, &members))
        .collect()
}

/// Waits until every running node in `procs` names the same leader; returns its id.
pub async fn wait_for_leader(
    procs: &[NodeProcess],
    admin_token: &str,
    timeout: Duration,
) -> io::Result<u64> {
    let deadline = tokio::time::Instant::now() + timeout;
    let clients: Vec<_> = procs
        .iter()
        .filter(|p| p.is_running())
        .map(|p| tether_api::Client::new(&p.url, admin_token))
        .collect();
    loop {
        let mut leaders = Vec::new();
        for c in &clients {
            leaders.push(c.cluster().await.ok().and_then(|v| v.leader));
        }
        if let Some(Some(first)) = leaders.first() {
            if leaders.iter().all(|l| *l == Some(*first)) {
                return Ok(*first);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no agreed leader within {timeout:?} (seen {leaders:?})"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `n` real node processes on loopback in a fresh temp directory, with an admin token;
/// every process is killed when this drops. The test fixture and the bench harness both
/// start from it.
pub struct LocalCluster {
    /// Keys, configs, data, logs; removed on drop unless kept.
    pub dir: tempfile::TempDir,
    /// The cluster secrets.
    pub secrets: Secrets,
    /// An admin token valid for an hour.
    pub admin_token: String,
    /// The `tether` binary the nodes run.
    pub bin: PathBuf,
    /// The node processes, in id order (index = id - 1).
    pub nodes: Vec<NodeProcess>,
}

impl LocalCluster {
    /// Generates configs for nodes 1..=n in a temp dir named `prefix…`, lets `tweak` edit
    /// each, mints an admin token for subject `admin`, and spawns `bin node` for each. Does
    /// not wait for a leader.
    pub fn spawn(
        prefix: &str,
        admin: &str,
        bin: &Path,
        n: u64,
        tweak: impl Fn(&mut NodeConfig),
    ) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        for mut config in generate(dir.path(), n)? {
            tweak(&mut config);
            save_config(&config_path(dir.path(), config.id), &config)?;
        }
        let secrets = Secrets::open(dir.path())?;
        let admin_token = secrets.mint(
            admin,
            tether_node::auth::Role::Admin,
            Duration::from_secs(3600),
        )?;
        let nodes = (1..=n)
            .map(|id| NodeProcess::spawn(bin, &config_path(dir.path(), id)))
            .collect::<io::Result<_>>()?;
        Ok(Self {
            dir,
            secrets,
            admin_token,
            bin: bin.to_owned(),
            nodes,
        })
    }

    /// Waits until every running node names the same leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> io::Result<u64> {
        wait_for_leader(&self.nodes, &self.admin_token, timeout).await
    }
}
