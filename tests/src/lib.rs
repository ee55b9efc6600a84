//! The cluster fixture: real `tether node` processes on loopback, each with its own temp
//! directory and free ports, condition-based waits, faults as methods, teardown on drop.
//! Shared by the end-to-end tests here and the chaos suite.
//!
//! Long file: the one harness every end-to-end test uses (the cluster, the signaling
//! client, the agent and console processes); splitting it would split their helpers.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_api::signal::SignalSocket;
use tether_api::types::{ClusterView, SessionToken};
use tether_api::Client;
use tether_devkit::cluster::{wait_for_leader, LocalCluster};
use tether_devkit::{ChildProcess, Isolation, NodeProcess, Secrets};
use tether_node::auth::Role;
use tether_node::config::NodeConfig;

pub use tether_api::signal::Incoming as Seen;
pub use {tether_api, tether_devkit, tether_node};

pub mod webdriver;

/// How long a wait may take before a test fails; generous, because CI is a shared 2-core box.
pub const WAIT: Duration = Duration::from_secs(30);

/// The `tether` binary under test (see [`tether_devkit::tether_bin`]); panics if it is
/// not built.
pub fn tether_bin() -> PathBuf {
    tether_devkit::tether_bin().unwrap_or_else(|e| panic!("{e}"))
}

pub use tether_devkit::fixtures::{unsigned_token, SDP};

/// Polls `check` until it yields `Some`, or panics with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match tether_devkit::wait::poll_until(what, timeout, &mut check).await {
        Ok(v) => v,
        Err(why) => panic!("{why}"),
    }
}

/// A cluster of node processes.
pub struct TestCluster {
    /// The cluster directory (keys, configs, data, logs); removed on drop.
    pub dir: tempfile::TempDir,
    /// The node processes, in id order (index = id - 1).
    pub nodes: Vec<NodeProcess>,
    /// An admin token.
    pub admin_token: String,
    /// The cluster's secrets.
    pub secrets: Secrets,
    bin: PathBuf,
}

impl TestCluster {
    /// Starts `n` nodes with default configs and waits for a leader.
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` nodes after letting `tweak` edit each config. Every test's clients share
    /// one address and write faster than a site's would: the per-client limits start off
    /// (the tests of those limits turn them on).
    pub async fn start_with(n: u64, tweak: impl Fn(&mut NodeConfig)) -> Self {
        let tweak = |c: &mut NodeConfig| {
            c.http.per_client_per_second = 0;
            c.http.writes_per_token_per_second = 0;
            tweak(c);
        };
        let LocalCluster {
            dir,
            secrets,
            admin_token,
            bin,
            nodes,
        } = LocalCluster::spawn("tether-test-", "test-admin", &tether_bin(), n, tweak)
            .expect("starting the cluster");
        if nodes.iter().any(|n| n.url.starts_with("https://")) {
            // This process's clients pin the cluster CA, as a site's would.
            let ca = std::fs::read(secrets.ca_cert()).expect("the cluster CA");
            tether_api::tls::install_ca(&ca).expect("a usable CA");
        }
        let cluster = Self {
            dir,
            nodes,
            admin_token,
            secrets,
            bin,
        };
        cluster.leader().await;
        cluster
    }

    /// The `tether` binary this cluster runs.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Node `id`'s process.
    pub fn node(&self, id: u64) -> &NodeProcess {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    fn node_mut(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("no such node")
    }

    /// An admin client for node `id`.
    pub fn client(&self, id: u64) -> Client {
        self.client_with(id, &self.admin_token)
    }

    /// A client for node `id` with any token.
    pub fn client_with(&self, id: u64, token: &str) -> Client {
        Client::new(&self.node(id).url, token)
    }

    /// Node `id`'s unlabelled metrics (`/metrics`), by name.
    pub async fn metrics(&self, id: u64) -> Option<std::collections::HashMap<String, f64>> {
        let scrape = tether_devkit::metrics::scrape(self.node(id).http)
            .await
            .ok()?;
        Some(scrape.unlabelled())
    }

    /// Waits until node `id` holds nothing for signaling: no connections, rooms, room
    /// members, per-connection tasks or timers (no leaks after teardowns).
    pub async fn wait_signaling_idle(&self, id: u64) {
        const HELD: [&str; 6] = [
            tether_node::telemetry::names::SIGNAL_CONNECTIONS,
            tether_node::telemetry::names::SIGNAL_AUTHENTICATED,
            tether_node::telemetry::names::SIGNAL_ROOMS,
            tether_node::telemetry::names::SIGNAL_ROOM_MEMBERS,
            tether_node::telemetry::names::SIGNAL_TASKS,
            tether_node::telemetry::names::SIGNAL_TIMERS,
        ];
        wait_until(
            &format!("node {id} to release everything"),
            WAIT,
            || async {
                let m = self.metrics(id).await?;
                // A gauge never touched on this node is not exported yet: zero.
                HELD.iter()
                    .all(|name| m.get(*name).is_none_or(|v| *v == 0.0))
                    .then_some(())
            },
        )
        .await
    }

    /// Waits until every running node agrees on a leader and returns it.
    pub async fn leader(&self) -> u64 {
        wait_for_leader(&self.nodes, &self.admin_token, WAIT)
            .await
            .expect("a leader")
    }

    /// A running node that is not the leader.
    pub async fn follower(&self) -> u64 {
        let leader = self.leader().await;
        self.nodes
            .iter()
            .find(|n| n.id != leader && n.is_running())
            .expect("a running follower")
            .id
    }

    /// Ids of the running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// `kill -9` node `id`.
    pub fn kill(&mut self, id: u64) {
        self.node_mut(id).kill();
    }

    /// Restarts node `id` from its config and data.
    pub fn restart(&mut self, id: u64) {
        let bin = self.bin.clone();
        self.node_mut(id).start(&bin).expect("restarting node");
    }

    /// Adds a process for a new node (already configured) to the fixture.
    pub fn adopt(&mut self, config_path: &Path) -> u64 {
        let p = NodeProcess::spawn(&self.bin, config_path).expect("spawning node");
        let id = p.id;
        self.nodes.push(p);
        id
    }

    /// Waits until node `id`'s cluster view satisfies `check`.
    pub async fn wait_view(
        &self,
        id: u64,
        what: &str,
        check: impl Fn(&ClusterView) -> bool,
    ) -> ClusterView {
        let client = self.client(id);
        wait_until(what, WAIT, || {
            let client = client.clone();
            let check = &check;
            async move { client.cluster().await.ok().filter(|v| check(v)) }
        })
        .await
    }

    /// The log file of node `id`.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.node(id).config_path.with_file_name("node.log"))
            .unwrap_or_default()
    }
}

/// A signaling WebSocket client for tests: [`SignalSocket`] with waits that fail the test.
pub struct SignalClient {
    socket: SignalSocket,
}

impl SignalClient {
    /// Connects to `/v1/signal` on `http` (host:port).
    pub async fn connect(http: std::net::SocketAddr) -> Self {
        Self::connect_to(&http.to_string()).await
    }

    /// Connects to `/v1/signal` of the node at `url` (`https://` for WSS).
    pub async fn connect_to(url: &str) -> Self {
        let socket = SignalSocket::connect(url).await.expect("websocket connect");
        Self { socket }
    }

    /// Connects to `/v1/signal`, or `None` if the node refuses the upgrade.
    pub async fn try_connect(http: std::net::SocketAddr) -> Option<Self> {
        let socket = SignalSocket::connect(&http.to_string()).await.ok()?;
        Some(Self { socket })
    }

    /// Connects and authenticates; panics unless `auth_ok` comes back.
    pub async fn authed(http: std::net::SocketAddr, token: &str) -> Self {
        Self::connect(http).await.authenticate(token).await
    }

    /// Authenticates with `token`; panics unless `auth_ok` comes back.
    pub async fn authenticate(mut self, token: &str) -> Self {
        self.send(serde_json::json!({"type": "auth", "token": token}))
            .await;
        self.expect("auth_ok").await;
        self
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: serde_json::Value) {
        self.send_text(frame.to_string()).await;
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: String) {
        // A send on a socket the server closed fails; the test then sees the close.
        let _ = self.socket.send_text(text).await;
    }

    /// The next frame or close, within [`WAIT`].
    pub async fn next(&mut self) -> Seen {
        self.next_before(tokio::time::Instant::now() + WAIT).await
    }

    async fn next_before(&mut self, deadline: tokio::time::Instant) -> Seen {
        tokio::time::timeout_at(deadline, self.socket.next())
            .await
            .expect("timed out waiting for a signaling frame")
    }

    /// The next frame, which must have `type` = `kind`; returns it.
    /// Lease renewals arrive on their own schedule and are skipped unless asked for.
    pub async fn expect(&mut self, kind: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.next_before(deadline).await {
                Seen::Frame(f) if f["type"] == kind => return f,
                Seen::Frame(f) if f["type"] == "lease" => continue,
                other => panic!("expected a {kind} frame, got {other:?}"),
            }
        }
    }

    /// The next frame must be an `error` with this code.
    pub async fn expect_error(&mut self, code: &str) {
        let f = self.expect("error").await;
        assert_eq!(f["code"], code, "{f}");
    }

    /// (A robot) asks for a lease on `session_id` with `nonce`.
    pub async fn ask_lease(&mut self, session_id: &str, nonce: u64) {
        self.send(
            serde_json::json!({"type": "lease_request", "session_id": session_id, "nonce": nonce}),
        )
        .await;
    }

    /// (A robot) asks for a lease on `session_id` every 100 ms for `window`, like an agent
    /// does; how many `lease` frames answer (other frames are skipped).
    pub async fn leases_within(&mut self, session_id: &str, window: Duration) -> usize {
        let mut leases = 0;
        let mut nonce = 1_000_000;
        let mut ask = tokio::time::interval(Duration::from_millis(100));
        let _ = tokio::time::timeout(window, async {
            loop {
                tokio::select! {
                    _ = ask.tick() => {
                        nonce += 1;
                        self.ask_lease(session_id, nonce).await;
                    }
                    seen = self.next() => match seen {
                        Seen::Frame(f) if f["type"] == "lease" => leases += 1,
                        Seen::Closed(_) => break,
                        Seen::Frame(_) => {}
                    },
                }
            }
        })
        .await;
        leases
    }

    /// Skips frames until the connection closes; returns the close code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            if let Seen::Closed(code) = self.next().await {
                return code;
            }
        }
    }
}

impl TestCluster {
    /// A token for `sub` with `role`, valid for an hour.
    pub fn token(&self, sub: &str, role: Role) -> String {
        self.secrets
            .mint(sub, role, Duration::from_secs(3600))
            .expect("minting a token")
    }

    /// Creates a session for `operator` on `robot` through node `id`.
    pub async fn create_session(&self, id: u64, operator: &str, robot: &str) -> SessionToken {
        self.client_with(id, &self.token(operator, Role::Operator))
            .create_session(robot)
            .await
            .expect("POST /v1/sessions")
    }
}

impl TestCluster {
    /// Cuts node `id` off from every other node (needs root and iptables, which `./x test`
    /// installs).
    pub fn isolate(&self, id: u64) -> Isolation {
        let port = self.node(id).raft.port();
        tether_devkit::drop_ports("udp", &[port], &format!("{id}")).expect("iptables (root needed)")
    }

    /// Cuts WebRTC to and from a robot whose media binds `addr` (`--rtc-ip`): a transient
    /// network loss between console and robot, with signaling untouched.
    pub fn cut_media(&self, addr: std::net::IpAddr) -> Isolation {
        tether_devkit::drop_address("udp", addr, "media").expect("iptables (root needed)")
    }

    /// Cuts every client off from every node's HTTP and WebSocket port: a robot agent then
    /// hears no gateway at all, while WebRTC between console and robot goes on.
    pub fn cut_gateways(&self) -> Isolation {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.http.port()).collect();
        tether_devkit::drop_ports("tcp", &ports, "gateways").expect("iptables (root needed)")
    }
}

/// A process's events file (`--events`): JSON lines with `t_ms` and `event`.
pub struct EventsFile(tether_agent::events::EventsReader);

impl EventsFile {
    fn new(path: PathBuf) -> Self {
        Self(tether_agent::events::EventsReader::new(path))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Every event written so far.
    pub fn read(&self) -> Vec<serde_json::Value> {
        self.0.read()
    }

    /// Waits for the first event named `event` for which `matches` holds; returns it.
    pub async fn wait(
        &self,
        event: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_until(
            &format!("event {event} in {}", self.path().display()),
            WAIT,
            || {
                let found = self.0.find(|e| e["event"] == event && matches(e));
                async move { found }
            },
        )
        .await
    }
}

/// A `tether agent` process for one simulated robot; killed on drop.
pub struct AgentProcess {
    /// Its events.
    pub events: EventsFile,
    /// The process.
    pub process: ChildProcess,
}

impl TestCluster {
    /// Starts a robot agent for `robot` against the nodes `gateways` (in failover order)
    /// and waits until it is connected.
    pub async fn agent(&self, robot: &str, gateways: &[u64]) -> AgentProcess {
        self.agent_with(robot, gateways, &[]).await
    }

    /// [`Self::agent`] with `extra` arguments.
    pub async fn agent_with(&self, robot: &str, gateways: &[u64], extra: &[&str]) -> AgentProcess {
        let token = self.token(robot, Role::Robot);
        let addrs: Vec<_> = gateways.iter().map(|id| self.node(*id).http).collect();
        let events = EventsFile::new(self.dir.path().join(format!("{robot}-events.jsonl")));
        let log =
            std::fs::File::create(self.dir.path().join(format!("{robot}.log"))).expect("agent log");
        let mut command =
            tether_devkit::agent_command(&self.bin, &addrs, robot, &token, Some(events.path()));
        command
            .args(extra)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let process = ChildProcess::spawn(command).expect("spawning the agent");
        events.wait("gateway_connected", |_| true).await;
        AgentProcess { events, process }
    }

    /// Starts `tether console` as `operator` for `robot` through node `id`, with `extra`
    /// arguments.
    pub fn console(&self, id: u64, operator: &str, robot: &str, extra: &[&str]) -> ConsoleProcess {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let events = EventsFile::new(self.dir.path().join(format!("console-{n}-events.jsonl")));
        let stdout = self.dir.path().join(format!("console-{n}.out"));
        let mut command = std::process::Command::new(&self.bin);
        command
            .arg("console")
            .arg("--gateway")
            .arg(format!("http://{}", self.node(id).http))
            .arg("--robot-id")
            .arg(robot)
            .arg("--events")
            .arg(events.path())
            .args(extra)
            .env(
                "TETHER_OPERATOR_TOKEN",
                self.token(operator, Role::Operator),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("console stdout"))
            .stderr(std::fs::File::create(stdout.with_extension("err")).expect("console stderr"));
        let process = ChildProcess::spawn(command).expect("spawning the console");
        ConsoleProcess {
            events,
            stdout,
            process,
        }
    }
}

/// A `tether console` process; killed on drop.
pub struct ConsoleProcess {
    /// Its events.
    pub events: EventsFile,
    /// Its standard output, as a file.
    pub stdout: PathBuf,
    /// The process.
    pub process: ChildProcess,
}

impl ConsoleProcess {
    /// The id of the session it created.
    pub async fn session_id(&self) -> String {
        let e = self.events.wait("session_created", |_| true).await;
        e["session_id"].as_str().expect("session id").to_owned()
    }

    /// Waits for it to exit; returns its exit code and what it printed.
    pub async fn exit(&mut self) -> (i32, String) {
        let process = &mut self.process;
        let code = wait_until("the console to exit", WAIT, || {
            let code = process.try_wait().map(|s| s.code().unwrap_or(-1));
            async move { code }
        })
        .await;
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        (code, out)
    }
}

/// A robot on node `robot_node` and an operator on node `operator_node`, both joined.
pub async fn joined_pair(
    cluster: &TestCluster,
    robot_node: u64,
    operator_node: u64,
    operator: &str,
    robot: &str,
) -> (SignalClient, SignalClient, String, String) {
    let mut r = SignalClient::authed(
        cluster.node(robot_node).http,
        &cluster.token(robot, Role::Robot),
    )
    .await;
    let session = cluster.create_session(operator_node, operator, robot).await;
    let sid = session.session_id.clone();
    let token = session.token.clone();
    assert_eq!(
        r.expect("session_assigned").await["session_id"],
        sid.as_str()
    );
    r.send(serde_json::json!({"type": "join", "session_id": sid}))
        .await;
    assert_eq!(r.expect("joined").await["peer_present"], false);
    let mut o = SignalClient::authed(cluster.node(operator_node).http, &token).await;
    o.send(serde_json::json!({"type": "join", "session_id": sid}))
        .await;
    assert_eq!(o.expect("joined").await["peer_present"], true);
    r.expect("peer_joined").await;
    (r, o, sid, token)
}
