//! A local cluster on loopback: key and certificate generation, per-node configs, and the
//! node processes. Used by `tether dev`, `tether bench` and the test fixture alike.

use crate::auth::{generate_signing_key, Claims, Minter, Role};
use crate::config::{AuthConfig, HttpSection, MemberConfig, NodeConfig, RaftSection, TlsConfig};
use serde::{Deserialize, Serialize};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

fn write(path: &Path, text: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)
}

/// A free loopback TCP port and a free UDP port (probed, then released).
pub fn free_addrs() -> io::Result<(SocketAddr, SocketAddr)> {
    let tcp = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let udp = UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    Ok((tcp, udp))
}

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

    /// Mints a token for `sub` with `role`.
    pub fn mint(&self, sub: &str, role: Role, ttl: Duration) -> io::Result<String> {
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
        let pair = tether_raft::issue_node_cert(
            &std::fs::read_to_string(self.ca_key())?,
            &format!("node{id}"),
        )
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
            },
            raft: RaftSection::default(),
            http: HttpSection::default(),
            sessions: Default::default(),
        };
        save_config(&node_dir.join("config.toml"), &config)?;
        Ok(config)
    }
}

/// Writes a config as TOML.
pub fn save_config(path: &Path, config: &NodeConfig) -> io::Result<()> {
    write(path, &toml::to_string(config).map_err(io::Error::other)?)
}

/// The config path of node `id` in a dev directory.
pub fn config_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}")).join("config.toml")
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

/// A node running as a child process; killed when dropped.
pub struct NodeProcess {
    /// Node id.
    pub id: u64,
    /// Its config file.
    pub config_path: PathBuf,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its QUIC address.
    pub raft: SocketAddr,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts `bin node --config path`, logging to `node{id}.log` beside the config.
    pub fn spawn(bin: &Path, config_path: &Path) -> io::Result<Self> {
        let config = NodeConfig::load(config_path).map_err(io::Error::other)?;
        let mut p = Self {
            id: config.id,
            config_path: config_path.into(),
            http: config.http_addr,
            raft: config.raft_addr,
            child: None,
        };
        p.start(bin)?;
        Ok(p)
    }

    /// (Re)starts the process if it is not running.
    pub fn start(&mut self, bin: &Path) -> io::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let log_path = self.config_path.with_file_name("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut command = Command::new(bin);
        command
            .arg("node")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut command);
        self.child = Some(command.spawn()?);
        Ok(())
    }

    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `kill -9`, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` before `kill -9`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Signals the process (SIGSTOP/SIGCONT for pauses).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = self.child.as_ref() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A helper process (a robot agent, a console) killed when dropped.
pub struct ChildProcess {
    child: Option<Child>,
}

impl ChildProcess {
    /// Spawns `command`; it dies with this process too.
    pub fn spawn(mut command: Command) -> io::Result<Self> {
        die_with_parent(&mut command);
        Ok(Self {
            child: Some(command.spawn()?),
        })
    }

    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// `kill -9`, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This machine's address on its default route (no packet is sent), or loopback when it
/// has none. `tether dev` binds the robot's WebRTC there: an ordinary browser ignores
/// loopback ICE candidates, so a robot on 127.0.0.1 could not be reached from it.
pub fn outbound_ip() -> std::net::IpAddr {
    let local = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr());
    match local {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip(),
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    }
}

/// `tether agent` for `robot_id` against `gateways`, writing events to `events`.
pub fn agent_command(
    bin: &Path,
    gateways: &[SocketAddr],
    robot_id: &str,
    token: &str,
    events: Option<&Path>,
) -> Command {
    let mut command = Command::new(bin);
    let gateways: Vec<String> = gateways.iter().map(|a| format!("http://{a}")).collect();
    command
        .arg("agent")
        .arg("--gateway")
        .arg(gateways.join(","))
        .arg("--robot-id")
        .arg(robot_id)
        .env("TETHER_ROBOT_TOKEN", token)
        .stdin(Stdio::null());
    if let Some(events) = events {
        command.arg("--events").arg(events);
    }
    command
}

/// Packets dropped with iptables (a kernel-level partition on loopback); healed on drop.
pub struct Isolation {
    rules: Vec<Vec<String>>,
}

impl Isolation {
    fn iptables(action: &str, rule: &[String]) -> io::Result<()> {
        let status = Command::new("iptables").arg(action).args(rule).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "iptables {action} {rule:?}: {status}"
            )))
        }
    }

    /// Heals the partition.
    pub fn heal(mut self) {
        self.remove();
    }

    fn remove(&mut self) {
        for rule in self.rules.drain(..) {
            let _ = Self::iptables("-D", &rule);
        }
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Drops every `proto` packet to or from `ports` on this host until healed (needs root and
/// iptables). `what` tags the rules so a stray one is recognisable.
pub fn drop_ports(proto: &str, ports: &[u16], what: &str) -> io::Result<Isolation> {
    let matches: Vec<(&str, String)> = ports
        .iter()
        .flat_map(|p| [("--dport", p.to_string()), ("--sport", p.to_string())])
        .collect();
    drop_matching(proto, &matches, what)
}

/// Drops every `proto` packet from or to `addr` (a loopback address such as 127.0.0.2
/// that one process binds) until healed.
pub fn drop_address(proto: &str, addr: std::net::IpAddr, what: &str) -> io::Result<Isolation> {
    let addr = addr.to_string();
    drop_matching(proto, &[("-s", addr.clone()), ("-d", addr)], what)
}

/// One INPUT rule per `(flag, value)` match, each dropping `proto`.
fn drop_matching(proto: &str, matches: &[(&str, String)], what: &str) -> io::Result<Isolation> {
    let tag = format!("tether-{}-{what}", std::process::id());
    let mut isolation = Isolation { rules: Vec::new() };
    for (flag, value) in matches {
        let rule: Vec<String> = [
            "INPUT",
            "-p",
            proto,
            flag,
            value,
            "-m",
            "comment",
            "--comment",
            &tag,
            "-j",
            "DROP",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        Isolation::iptables("-I", &rule)?;
        isolation.rules.push(rule);
    }
    Ok(isolation)
}

/// Asks the kernel to kill the child when the spawning thread's process dies, so a killed
/// test run leaves no nodes behind.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
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
        .map(|p| crate::client::Client::new(&p.http.to_string(), admin_token))
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
