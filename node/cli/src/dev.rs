//! `tether dev`: a local cluster on loopback with one simulated robot, until Ctrl-C.

use crate::wait_for_signal;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Duration;
use tether_devkit::{ClusterFile, ClusterFileNode, NodeProcess, Secrets};
use tether_node::auth::{Role, MAX_TOKEN_TTL};

/// The robot and operator `tether dev` sets up.
const DEV_ROBOT: &str = "robot-1";
const DEV_OPERATOR: &str = "operator-1";

pub(crate) async fn dev_cluster(n: u64, dir: &Path, fresh: bool) -> Result<()> {
    if n == 0 {
        bail!("--nodes must be at least 1");
    }
    if fresh && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    tether_devkit::generate(&dir, n)?;
    let secrets = Secrets::open(&dir)?;
    // The longest lifetime the nodes accept: a dev cluster's tokens last its week.
    let admin_token = secrets.mint("admin", Role::Admin, MAX_TOKEN_TTL)?;
    let bin = std::env::current_exe()?;
    let mut procs = Vec::new();
    for id in 1..=n {
        procs.push(NodeProcess::spawn(
            &bin,
            &tether_devkit::config_path(&dir, id),
        )?);
    }
    let leader =
        tether_devkit::cluster::wait_for_leader(&procs, &admin_token, Duration::from_secs(30))
            .await?;
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
    let robot_token = secrets.mint(DEV_ROBOT, Role::Robot, MAX_TOKEN_TTL)?;
    let operator_token = secrets.mint(DEV_OPERATOR, Role::Operator, MAX_TOKEN_TTL)?;
    let gateways: Vec<_> = procs.iter().map(|p| p.http).collect();
    let agent_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))?;
    let mut agent = tether_devkit::agent_command(
        &bin,
        &gateways,
        DEV_ROBOT,
        &robot_token,
        Some(&dir.join("agent-events.jsonl")),
    );
    let rtc_ip = tether_devkit::outbound_ip();
    agent
        .arg("--rtc-ip")
        .arg(rtc_ip.to_string())
        .stdout(agent_log.try_clone()?)
        .stderr(agent_log);
    let _agent = tether_devkit::ChildProcess::spawn(agent)?;
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
