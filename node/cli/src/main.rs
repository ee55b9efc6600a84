//! The `tether` command line: node, dev cluster, revoke, tokens, cluster membership, agent,
//! console; `tether bench` hands over to the separate `tether-bench` binary.

mod chaos;
mod dev;
mod robot;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tether_api::{Client, Target};
use tether_devkit::{ClusterFile, Secrets};
use tether_node::auth::Role;
use tether_node::config::NodeConfig;

#[derive(Parser)]
#[command(
    name = "tether",
    version,
    about = "Clustered teleoperation gateway for robots"
)]
struct Cli {
    /// The CA certificate (PEM) that nodes' HTTPS certificates must chain to, pinned for
    /// every client this command makes (the agent, the console, admin commands); without
    /// it, `https://` nodes are checked against the system's roots.
    #[arg(long, global = true, env = "TETHER_CA")]
    ca: Option<PathBuf>,
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
    /// The chaos suite: real partitions and kills against nodes in network namespaces.
    Chaos {
        #[command(subcommand)]
        command: chaos::ChaosCmd,
    },
    /// Benchmarks (`tether bench raft|signaling|robot …`): runs `tether-bench`, the
    /// harness binary built beside this one; results go to JSON and docs/benchmarks.md.
    #[command(disable_help_flag = true)]
    Bench {
        /// Passed to `tether-bench` unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Args)]
pub(crate) struct AgentArgs {
    /// Gateways' HTTP URLs, comma-separated; the agent fails over across them.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) gateway: Vec<String>,
    /// The robot's id (the subject of its token).
    #[arg(long)]
    pub(crate) robot_id: String,
    /// The robot token (`tether token mint --robot ID`).
    #[arg(
        long,
        env = "TETHER_ROBOT_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file"
    )]
    pub(crate) token: Option<String>,
    /// Read the robot token from this file (instead of `--token`), again every second: a
    /// renewed token written there is sent on the live connection, so the robot stays
    /// connected past the old token's expiry.
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
    /// Write events (JSON lines, CLOCK_MONOTONIC ms) to this file.
    #[arg(long)]
    pub(crate) events: Option<PathBuf>,
    /// Silence on the control channel longer than this stops the robot.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub(crate) control_timeout: Duration,
    /// The longest a lease counts for, whatever TTL a gateway grants (milliseconds).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) max_lease_ms: u64,
    /// The address WebRTC binds (its only ICE candidate).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) rtc_ip: std::net::IpAddr,
}

#[derive(Args)]
pub(crate) struct ConsoleArgs {
    /// A gateway's HTTP URL.
    #[arg(long)]
    pub(crate) gateway: String,
    /// The operator token (`tether token mint --operator ID`).
    #[arg(long, env = "TETHER_OPERATOR_TOKEN", hide_env_values = true)]
    pub(crate) token: String,
    /// The robot to drive.
    #[arg(long)]
    pub(crate) robot_id: String,
    /// Write events (JSON lines, CLOCK_MONOTONIC ms) to this file.
    #[arg(long)]
    pub(crate) events: Option<PathBuf>,
    /// Forward speed sent 20 times a second, −1..1.
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    pub(crate) linear: f64,
    /// Turn rate, −1..1.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub(crate) angular: f64,
    /// End the session and exit after this long (default: until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// Present this token on the session channel instead of the session's own.
    #[arg(long, hide = true)]
    pub(crate) auth_token: Option<String>,
    /// The address WebRTC binds.
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) rtc_ip: std::net::IpAddr,
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
        /// Lifetime in seconds (at most 7 days: nodes refuse longer-lived tokens, and a token
        /// revocation lasts that long).
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    if let Some(ca) = &cli.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading --ca {}", ca.display()))?;
        tether_api::tls::install_ca(&pem).with_context(|| format!("--ca {}", ca.display()))?;
    }
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
        Cmd::Dev { nodes, dir, fresh } => dev::dev_cluster(nodes, &dir.dir, fresh).await,
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
            let max = tether_node::auth::MAX_TOKEN_TTL.as_secs();
            if ttl == 0 || ttl > max {
                bail!("--ttl must be 1 to {max} seconds (the nodes refuse longer-lived tokens: auth.max_token_ttl_s)");
            }
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
                } => {
                    let request = tether_api::types::AddMemberRequest {
                        id,
                        raft_addr: raft.parse().context("--raft must be host:port")?,
                        http_addr: http.parse().context("--http must be host:port")?,
                        timeout_ms: None,
                    };
                    conn.client()?.add_member(&request).await?
                }
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
        Cmd::Agent(args) => robot::run_agent(args).await,
        Cmd::Console(args) => robot::run_console(args).await,
        Cmd::Bench { args } => run_bench(args),
        Cmd::Chaos { command } => chaos::chaos(command).await,
    }
}

/// Runs the bench harness binary that the build puts beside `tether`, with `args`.
fn run_bench(args: Vec<std::ffi::OsString>) -> Result<()> {
    let exe = std::env::current_exe()?;
    let bench = exe.with_file_name("tether-bench");
    if !bench.exists() {
        bail!(
            "{} not found: build it with `cargo build --release --bin tether-bench` (./x bench does)",
            bench.display()
        );
    }
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&bench).args(args).exec();
    Err(err).with_context(|| format!("running {}", bench.display()))
}

pub(crate) async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
