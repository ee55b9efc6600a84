//! Child processes that die with their parent and are killed on drop: gateway nodes, robot
//! agents, consoles.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tether_node::config::NodeConfig;

/// The `tether` binary to run: `TETHER_BIN`, else `tether` beside the running executable or
/// one folder up (a test executable sits in `target/<profile>/deps/`).
pub fn tether_bin() -> io::Result<PathBuf> {
    if let Ok(bin) = std::env::var("TETHER_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("tether");
    let above = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("tether"));
    [Some(beside), above]
        .into_iter()
        .flatten()
        .find(|bin| bin.exists())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no tether binary beside {}: build it (`cargo build --release --bin tether`) or set TETHER_BIN",
                    exe.display()
                ),
            )
        })
}

/// A node running as a child process; killed when dropped.
pub struct NodeProcess {
    /// Node id.
    pub id: u64,
    /// Its config file.
    pub config_path: PathBuf,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its base URL: `https://` when it serves TLS, else `http://`.
    pub url: String,
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
            url: match config.http.tls {
                Some(_) => format!("https://{}", config.http_addr),
                None => format!("http://{}", config.http_addr),
            },
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
