//! The `tether` command line: node, dev cluster, revoke, tokens, cluster membership, bench.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_node::auth::Role;
use tether_node::client::{Client, Target};
use tether_node::config::NodeConfig;
use tether_node::dev::{self, ClusterFile, ClusterFileNode, NodeProcess, Secrets};

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Clustered teleoperation gateway for robots"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one gateway node.
    Node {
        /// The node's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Override `http_addr`.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
        /// Override `raft_addr`.
        #[arg(long)]
        raft: Option<std::net::SocketAddr>,
        /// Override `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Run a local cluster on loopback until Ctrl-C.
    Dev {
        /// Number of nodes (3 to 5 for a real quorum).
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[command(flatten)]
        dir: DirArg,
        /// Start from scratch: delete the directory first.
        #[arg(long)]
        fresh: bool,
    },
    /// Revoke a session, a token or an operator.
    Revoke {
        #[command(flatten)]
        target: TargetArgs,
        /// Why (shown to the operator).
        #[arg(long)]
        reason: String,
        /// When the entry may be dropped (RFC 3339 UTC).
        #[arg(long)]
        expires_at: Option<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Lift an operator revocation.
    Lift {
        /// The operator.
        #[arg(long)]
        operator: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Cluster membership and status.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// The audit ledger.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Run a robot agent (a simulated robot) against the given gateways.
    Agent(AgentArgs),
    /// Drive a robot from the command line (the headless operator console).
    Console(ConsoleArgs),
    /// Benchmarks; results go to JSON and docs/benchmarks.md.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// Gateways' HTTP URLs, comma-separated; the agent fails over across them.
    #[arg(long, value_delimiter = ',', required = true)]
    gateway: Vec<String>,
    /// The robot's id (the subject of its token).
    #[arg(long)]
    robot_id: String,
    /// The robot token (`tether token mint --robot ID`).
    #[arg(long, env = "TETHER_ROBOT_TOKEN", hide_env_values = true)]
    token: String,
    /// Write events (JSON lines, CLOCK_MONOTONIC ms) to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Silence on the control channel longer than this stops the robot.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    control_timeout: Duration,
    /// The address WebRTC binds (its only ICE candidate).
    #[arg(long, default_value = "127.0.0.1")]
    rtc_ip: std::net::IpAddr,
}

#[derive(Args)]
struct ConsoleArgs {
    /// A gateway's HTTP URL.
    #[arg(long)]
    gateway: String,
    /// The operator token (`tether token mint --operator ID`).
    #[arg(long, env = "TETHER_OPERATOR_TOKEN", hide_env_values = true)]
    token: String,
    /// The robot to drive.
    #[arg(long)]
    robot_id: String,
    /// Write events (JSON lines, CLOCK_MONOTONIC ms) to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Forward speed sent 20 times a second, −1..1.
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    linear: f64,
    /// Turn rate, −1..1.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    angular: f64,
    /// End the session and exit after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Present this token on the session channel instead of the session's own.
    #[arg(long, hide = true)]
    auth_token: Option<String>,
    /// The address WebRTC binds.
    #[arg(long, default_value = "127.0.0.1")]
    rtc_ip: std::net::IpAddr,
}

#[derive(Args)]
struct DirArg {
    /// The dev cluster directory (keys, configs, data, cluster.json).
    #[arg(long, default_value = ".tether", env = "TETHER_DIR")]
    dir: PathBuf,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// A session id.
    #[arg(long)]
    session: Option<String>,
    /// A token id (jti).
    #[arg(long)]
    token: Option<String>,
    /// An operator.
    #[arg(long)]
    operator: Option<String>,
}

#[derive(Args)]
struct ConnArgs {
    /// A node's HTTP URL; default: the first node in `DIR/cluster.json`.
    #[arg(long)]
    node: Option<String>,
    /// An admin token; default: the one in `DIR/cluster.json`.
    #[arg(long, env = "TETHER_ADMIN_TOKEN")]
    admin_token: Option<String>,
    #[command(flatten)]
    dir: DirArg,
}

impl ConnArgs {
    fn client(&self) -> Result<Client> {
        let file = ClusterFile::load(&self.dir.dir);
        let node = match (&self.node, &file) {
            (Some(node), _) => node.clone(),
            (None, Ok(f)) => f
                .nodes
                .first()
                .context("cluster.json lists no node")?
                .http
                .to_string(),
            (None, Err(e)) => bail!(
                "no --node given and {}/cluster.json unreadable: {e}",
                self.dir.dir.display()
            ),
        };
        let token = match (&self.admin_token, &file) {
            (Some(t), _) => t.clone(),
            (None, Ok(f)) => f.admin_token.clone(),
            (None, Err(e)) => bail!(
                "no --admin-token given and {}/cluster.json unreadable: {e}",
                self.dir.dir.display()
            ),
        };
        Ok(Client::new(&node, &token))
    }
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a token signed by the cluster key in DIR.
    Mint {
        /// An admin token (subject `admin`).
        #[arg(long, group = "who")]
        admin: bool,
        /// An operator token for this operator id.
        #[arg(long, group = "who")]
        operator: Option<String>,
        /// A robot token for this robot id.
        #[arg(long, group = "who")]
        robot: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Show the cluster as one node sees it.
    Status {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Add a voter (it must be running, started with its own config).
    Add {
        /// Node id.
        #[arg(long)]
        id: u64,
        /// Its QUIC address.
        #[arg(long)]
        raft: String,
        /// Its HTTP address.
        #[arg(long)]
        http: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Remove a voter.
    Remove {
        /// Node id.
        #[arg(long)]
        id: u64,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check a ledger's hash chain: a node's (`--node`, default the first in cluster.json)
    /// or a file's (`--file`).
    Verify {
        /// A ledger file (`DATA_DIR/audit.jsonl`).
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Revocation commit latency and throughput on a fresh 3-node loopback cluster.
    Raft(tether_node::bench::RaftBenchArgs),
    /// Join denial, admitted joins, relay latency and revoke → close on a fresh cluster.
    Signaling(tether_node::bench_signaling::SignalingBenchArgs),
    /// Revoke, control loss and lease expiry → robot safe-stop, over real WebRTC.
    Robot(tether_node::bench_robot::RobotBenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Node {
            config,
            http,
            raft,
            data_dir,
        } => {
            tether_node::telemetry::init_logging("info,openraft=warn");
            let mut config = NodeConfig::load(&config)?;
            config.http_addr = http.unwrap_or(config.http_addr);
            config.raft_addr = raft.unwrap_or(config.raft_addr);
            config.data_dir = data_dir.unwrap_or(config.data_dir);
            config.validate()?;
            let node = tether_node::start_node(config).await?;
            wait_for_signal().await;
            tracing::info!("stopping");
            node.shutdown().await;
            Ok(())
        }
        Cmd::Dev { nodes, dir, fresh } => dev_cluster(nodes, &dir.dir, fresh).await,
        Cmd::Revoke {
            target,
            reason,
            expires_at,
            conn,
        } => {
            let target = match (target.session, target.token, target.operator) {
                (Some(s), _, _) => Target::Session(s),
                (_, Some(t), _) => Target::Token(t),
                (_, _, Some(o)) => Target::Operator(o),
                _ => bail!("give --session, --token or --operator"),
            };
            let r = conn
                .client()?
                .revoke(&target, &reason, expires_at.as_deref())
                .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Cmd::Lift { operator, conn } => {
            let r = conn.client()?.lift(&operator).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        Cmd::Token {
            command:
                TokenCmd::Mint {
                    admin,
                    operator,
                    robot,
                    ttl,
                    dir,
                },
        } => {
            let (sub, role) = match (admin, operator, robot) {
                (true, _, _) => ("admin".to_owned(), Role::Admin),
                (_, Some(o), _) => (o, Role::Operator),
                (_, _, Some(r)) => (r, Role::Robot),
                _ => bail!("give --admin, --operator ID or --robot ID"),
            };
            println!(
                "{}",
                Secrets::open(&dir.dir)?.mint(&sub, role, Duration::from_secs(ttl))?
            );
            Ok(())
        }
        Cmd::Cluster { command } => {
            let view = match command {
                ClusterCmd::Status { conn } => conn.client()?.cluster().await?,
                ClusterCmd::Add {
                    id,
                    raft,
                    http,
                    conn,
                } => conn.client()?.add_member(id, &raft, &http, None).await?,
                ClusterCmd::Remove { id, conn } => conn.client()?.remove_member(id).await?,
            };
            println!("{}", serde_json::to_string_pretty(&view)?);
            Ok(())
        }
        Cmd::Audit {
            command: AuditCmd::Verify { file, conn },
        } => {
            let records = match file {
                Some(path) => tether_node::audit::read(&path)?,
                None => conn.client()?.audit_all().await?,
            };
            match tether_node::audit::verify(&records) {
                Ok(n) => {
                    println!("ok: {n} records, chain intact");
                    Ok(())
                }
                Err(e) => bail!("audit ledger broken: {e}"),
            }
        }
        Cmd::Agent(args) => run_agent(args).await,
        Cmd::Console(args) => run_console(args).await,
        Cmd::Bench {
            command: BenchCmd::Raft(args),
        } => tether_node::bench::raft(args).await,
        Cmd::Bench {
            command: BenchCmd::Signaling(args),
        } => tether_node::bench_signaling::signaling(args).await,
        Cmd::Bench {
            command: BenchCmd::Robot(args),
        } => tether_node::bench_robot::robot(args).await,
    }
}

fn events_log(path: Option<&Path>) -> Result<tether_agent::events::EventLog> {
    Ok(match path {
        Some(p) => tether_agent::events::EventLog::open(p)
            .with_context(|| format!("opening {}", p.display()))?,
        None => tether_agent::events::EventLog::disabled(),
    })
}

async fn run_agent(args: AgentArgs) -> Result<()> {
    tether_node::telemetry::init_logging("info,webrtc=error,rtc=error");
    let public_key = fetch_token_key(&args.gateway).await?;
    let verifier = tether_node::auth::Verifier::from_pem(public_key.as_bytes())?;
    let claims = verifier
        .verify(&args.token)
        .context("the robot token does not verify with the cluster's key")?;
    if claims.role != Role::Robot || claims.sub != args.robot_id {
        bail!(
            "the token is a {:?} token for {:?}, not a robot token for {:?}",
            claims.role,
            claims.sub,
            args.robot_id
        );
    }
    let agent = tether_agent::robot::Agent::new(
        tether_agent::robot::AgentOptions {
            gateways: args.gateway,
            token: args.token,
            safety: tether_agent::safety::SafetyConfig {
                control_timeout: args.control_timeout,
            },
            rtc_ip: args.rtc_ip,
            events: events_log(args.events.as_deref())?,
        },
        std::sync::Arc::new(tether_node::auth::SessionTokenCheck(verifier)),
    );
    tracing::info!(robot = %args.robot_id, "robot agent started (safe-stop until driven)");
    tokio::select! {
        _ = agent.run() => Ok(()),
        _ = wait_for_signal() => Ok(()),
    }
}

/// The cluster's token key, from the first gateway that answers.
async fn fetch_token_key(gateways: &[String]) -> Result<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for _round in 0..30 {
        for gateway in gateways {
            let url = format!("{}/v1/token-key", tether_agent::signal::http_url(gateway));
            if let Ok(response) = client.get(&url).send().await {
                if let Ok(body) = response.json::<serde_json::Value>().await {
                    if let Some(pem) = body["public_key_pem"].as_str() {
                        return Ok(pem.to_owned());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("no gateway served its token key: {}", gateways.join(", "))
}

async fn run_console(args: ConsoleArgs) -> Result<()> {
    tether_node::telemetry::init_logging("warn,rtc=error,webrtc=error");
    let options = tether_agent::console::ConsoleOptions {
        gateway: args.gateway,
        operator_token: args.token,
        robot_id: args.robot_id,
        linear: args.linear,
        angular: args.angular,
        duration: args.duration,
        auth_token: args.auth_token,
        rtc_ip: args.rtc_ip,
        events: events_log(args.events.as_deref())?,
    };
    let outcome = tether_agent::console::run(options, |s| {
        println!("session {}", s.session_id);
    })
    .await?;
    use tether_agent::console::Outcome;
    match &outcome {
        Outcome::Finished => println!("session ended"),
        Outcome::Revoked(reason) => println!("revoked: {reason}"),
        Outcome::Terminated(reason) => println!("terminated: {reason}"),
        Outcome::AuthDenied(reason) => println!("auth denied by the robot: {reason}"),
    }
    std::process::exit(outcome.exit_code());
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The robot and operator `tether dev` sets up.
const DEV_ROBOT: &str = "robot-1";
const DEV_OPERATOR: &str = "operator-1";

async fn dev_cluster(n: u64, dir: &Path, fresh: bool) -> Result<()> {
    if n == 0 {
        bail!("--nodes must be at least 1");
    }
    if fresh && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    dev::generate(&dir, n)?;
    let secrets = Secrets::open(&dir)?;
    let admin_token = secrets.mint("admin", Role::Admin, Duration::from_secs(30 * 24 * 3600))?;
    let bin = std::env::current_exe()?;
    let mut procs = Vec::new();
    for id in 1..=n {
        procs.push(NodeProcess::spawn(&bin, &dev::config_path(&dir, id))?);
    }
    let leader = dev::wait_for_leader(&procs, &admin_token, Duration::from_secs(30)).await?;
    let file = ClusterFile {
        nodes: procs
            .iter()
            .map(|p| ClusterFileNode {
                id: p.id,
                pid: p.pid().unwrap_or(0),
                http: p.http,
                raft: p.raft,
                config: p.config_path.clone(),
            })
            .collect(),
        admin_token: admin_token.clone(),
    };
    std::fs::write(
        dir.join("cluster.json"),
        serde_json::to_string_pretty(&file)?,
    )?;
    println!("Tether dev cluster: {n} nodes, leader is node {leader}.");
    for p in &procs {
        println!(
            "  node {}  http://{}  (quic {}, log {})",
            p.id,
            p.http,
            p.raft,
            p.config_path.with_file_name("node.log").display()
        );
    }
    // One simulated robot, connected to every node, so the console has something to drive.
    let robot_token = secrets.mint(DEV_ROBOT, Role::Robot, Duration::from_secs(30 * 24 * 3600))?;
    let operator_token = secrets.mint(
        DEV_OPERATOR,
        Role::Operator,
        Duration::from_secs(30 * 24 * 3600),
    )?;
    let gateways: Vec<_> = procs.iter().map(|p| p.http).collect();
    let agent_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))?;
    let mut agent = dev::agent_command(
        &bin,
        &gateways,
        DEV_ROBOT,
        &robot_token,
        Some(&dir.join("agent-events.jsonl")),
    );
    let rtc_ip = dev::outbound_ip();
    agent
        .arg("--rtc-ip")
        .arg(rtc_ip.to_string())
        .stdout(agent_log.try_clone()?)
        .stderr(agent_log);
    let _agent = dev::ChildProcess::spawn(agent)?;
    println!(
        "  robot agent {DEV_ROBOT} (simulated; WebRTC on {rtc_ip}; log {})",
        dir.join("agent.log").display()
    );
    println!();
    println!("Web Console (operator {DEV_OPERATOR}, robot {DEV_ROBOT}):");
    println!(
        "  http://{}/?robot={DEV_ROBOT}&token={operator_token}",
        procs[0].http
    );
    println!();
    println!("Admin token:\n{admin_token}");
    println!("Cluster file: {}", dir.join("cluster.json").display());
    println!(
        "Revoke a session: tether revoke --session SESSION_ID --reason demo --dir {}",
        dir.display()
    );
    println!("Ctrl-C stops every node.");
    wait_for_signal().await;
    for p in &mut procs {
        p.stop(Duration::from_secs(3));
    }
    Ok(())
}
