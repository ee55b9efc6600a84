//! A cluster of real `tether` node processes, each in its own namespace of a [`Lab`]: nodes
//! bind and advertise their namespace addresses, so a partition is a rule in a node's own
//! namespace and the nodes see exactly what real hosts would.

use crate::netns::Lab;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tether_api::Client;
use tether_devkit::{config_path, save_config, ChildProcess, Secrets};
use tether_node::auth::Role;
use tether_node::config::{MemberConfig, NodeConfig};

/// The HTTP and QUIC ports every node uses inside its own namespace (its address is its
/// own, so fixed ports cannot collide).
const HTTP_PORT: u16 = 7080;
const RAFT_PORT: u16 = 7081;

/// One node process in its namespace.
pub struct LabNode {
    /// Its id.
    pub id: u64,
    /// The lab host (namespace) it runs in.
    pub host: String,
    /// Its HTTP address (reachable from this process through the bridge).
    pub http: SocketAddr,
    config: PathBuf,
    /// Behind a lock so that a nemesis can kill and restart it while clients share the
    /// cluster.
    child: std::sync::Mutex<Option<ChildProcess>>,
}

impl LabNode {
    fn child(&self) -> std::sync::MutexGuard<'_, Option<ChildProcess>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child().is_some()
    }
}

/// `n` nodes in hosts `n1..=nN` of a fresh lab, with their secrets in a temp dir; every
/// process is killed and the lab removed on drop.
pub struct LabCluster {
    /// The namespaces (dropped after the nodes: fields drop in order).
    pub nodes: Vec<LabNode>,
    /// The relays on the node-to-node links, when the run impairs them (their DNAT rules go
    /// before the lab).
    pub relays: Option<crate::relay::Relays>,
    /// The lab.
    pub lab: Lab,
    /// Keys, configs, data, logs.
    pub dir: tempfile::TempDir,
    /// The cluster secrets.
    pub secrets: Secrets,
    /// An admin token valid for an hour.
    pub admin_token: String,
    bin: PathBuf,
}

impl LabCluster {
    /// Builds the lab, writes the node configs (every member at its namespace address),
    /// lets `tweak` edit each, and starts every node. Does not wait for a leader.
    pub fn start(bin: &Path, n: u64, tweak: impl Fn(&mut NodeConfig)) -> io::Result<Self> {
        Self::start_with_hosts(bin, n, &[], tweak)
    }

    /// [`Self::start`], with more hosts (robots, consoles) in the lab beside the nodes.
    pub fn start_with_hosts(
        bin: &Path,
        n: u64,
        extra_hosts: &[&str],
        tweak: impl Fn(&mut NodeConfig),
    ) -> io::Result<Self> {
        let cluster = Self::prepare(bin, n, extra_hosts, tweak)?;
        cluster.start_nodes()?;
        Ok(cluster)
    }

    /// [`Self::start_with_hosts`] without starting the nodes, so that the network can be
    /// prepared first ([`Self::start_relays`]); [`Self::start_nodes`] starts them.
    pub fn prepare(
        bin: &Path,
        n: u64,
        extra_hosts: &[&str],
        tweak: impl Fn(&mut NodeConfig),
    ) -> io::Result<Self> {
        let mut names: Vec<String> = (1..=n).map(|id| format!("n{id}")).collect();
        names.extend(extra_hosts.iter().map(|h| (*h).to_owned()));
        let lab = Lab::create(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
        let dir = tempfile::Builder::new().prefix("tether-chaos-").tempdir()?;
        let secrets = Secrets::ensure(dir.path())?;
        let members: Vec<MemberConfig> = (1..=n)
            .map(|id| {
                let addr = IpAddr::V4(lab.host(&format!("n{id}")).addr);
                MemberConfig {
                    id,
                    raft_addr: SocketAddr::new(addr, RAFT_PORT),
                    http_addr: SocketAddr::new(addr, HTTP_PORT),
                }
            })
            .collect();
        let mut nodes = Vec::new();
        for m in &members {
            let mut config = secrets.node_config(m.id, m.http_addr, m.raft_addr, &members)?;
            // The lab's own bridge, which nothing but its processes can reach: plain HTTP
            // by the explicit opt-out (its faults are about the cluster, not the transport).
            config.http.allow_plaintext = true;
            // The workload's admin clients all write from the runner's address, faster
            // than a site's clients would: the lab tests the cluster, not its rate limits.
            config.http.per_client_per_second = 0;
            config.http.writes_per_token_per_second = 0;
            tweak(&mut config);
            let path = config_path(dir.path(), m.id);
            save_config(&path, &config)?;
            nodes.push(LabNode {
                id: m.id,
                host: format!("n{}", m.id),
                http: m.http_addr,
                config: path,
                child: Default::default(),
            });
        }
        let admin_token = secrets.mint("admin", Role::Admin, Duration::from_secs(3600))?;
        Ok(Self {
            nodes,
            relays: None,
            lab,
            dir,
            secrets,
            admin_token,
            bin: bin.to_owned(),
        })
    }

    /// Starts every node that is not running.
    pub fn start_nodes(&self) -> io::Result<()> {
        for node in &self.nodes {
            self.restart(node.id)?;
        }
        Ok(())
    }

    /// Puts a seeded relay on every directed node-to-node link ([`crate::relay`]); before
    /// [`Self::start_nodes`], or the nodes' flows bypass them.
    pub async fn start_relays(&mut self, seed: u64) -> io::Result<()> {
        let nodes: Vec<crate::relay::RelayedNode<'_>> = self
            .nodes
            .iter()
            .map(|n| crate::relay::RelayedNode {
                id: n.id,
                host: &n.host,
                raft: SocketAddr::new(n.http.ip(), RAFT_PORT),
            })
            .collect();
        let relays = crate::relay::Relays::start(&self.lab, &nodes, seed).await?;
        self.relays = Some(relays);
        Ok(())
    }

    /// Node `id`.
    ///
    /// # Panics
    /// If there is no such node (a bug in the caller).
    pub fn node(&self, id: u64) -> &LabNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Starts node `id` in its namespace if it is not running, logging to `node.log`
    /// beside its config.
    pub fn restart(&self, id: u64) -> io::Result<()> {
        let node = self.node(id);
        let mut child = node.child();
        if child.is_some() {
            return Ok(());
        }
        let config = &node.config;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_file_name("node.log"))?;
        let mut command = self.lab.command(&node.host, &self.bin);
        command
            .arg("node")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        *child = Some(ChildProcess::spawn(command)?);
        Ok(())
    }

    /// `kill -9` of node `id`.
    pub fn kill(&self, id: u64) {
        if let Some(mut child) = self.node(id).child().take() {
            child.kill();
        }
    }

    /// Freezes node `id` (`SIGSTOP`: its sockets stay open, it answers nothing) or thaws it
    /// (`SIGCONT`).
    pub fn pause(&self, id: u64, frozen: bool) {
        use nix::sys::signal::{kill, Signal};
        let signal = if frozen {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        if let Some(pid) = self.node(id).child().as_ref().and_then(ChildProcess::pid) {
            let _ = kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }

    /// The `tether` binary the nodes run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The hosts of every node but `except`.
    pub fn hosts_except(&self, except: &[u64]) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| !except.contains(&n.id))
            .map(|n| n.host.clone())
            .collect()
    }

    /// Every node's HTTP URL, comma-separated (for agents that fail over across them).
    pub fn gateways(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("http://{}", n.http))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose HTTP address is `addr` (`host:port`), if any.
    pub fn node_at(&self, addr: &str) -> Option<u64> {
        self.nodes
            .iter()
            .find(|n| addr.contains(&n.http.to_string()))
            .map(|n| n.id)
    }

    /// An admin client of node `id`.
    pub fn client(&self, id: u64) -> Client {
        Client::with_timeout(
            &self.node(id).http.to_string(),
            &self.admin_token,
            Duration::from_secs(10),
        )
    }

    /// Node `id`'s log so far.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.node(id).config.with_file_name("node.log")).unwrap_or_default()
    }

    /// Waits until every running node names the same leader; returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> io::Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let view = self.client(node.id).cluster().await.ok();
                seen.push(view.and_then(|v| v.leader));
            }
            if let Some(Some(leader)) = seen.first().copied() {
                if seen.iter().all(|s| *s == Some(leader)) {
                    return Ok(leader);
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no agreed leader within {timeout:?} (seen {seen:?})"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LabCluster {
    fn drop(&mut self) {
        // Processes first: a namespace is only gone once nothing runs in it.
        for node in &self.nodes {
            if let Some(mut child) = node.child().take() {
                child.kill();
            }
        }
    }
}
