//! `tether bench signaling`: join denial, admitted joins, relay latency with many concurrent
//! sessions (one node and across nodes), and revoke → close-frame latency, on a fresh
//! 3-node loopback cluster with real WebSocket clients.

use crate::auth::Role;
use crate::bench::{histogram, write_markdown_section, BenchCluster, Latency};
use crate::client::{Client, Target};
use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `tether bench signaling`.
#[derive(clap::Args, Debug)]
pub struct SignalingBenchArgs {
    /// Concurrent sessions for the relay measurement.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Trials for the join and revoke measurements.
    #[arg(long, default_value_t = 200)]
    pub trials: usize,
    /// Lease lifetime on the nodes (every robot gets a lease each quarter of it).
    #[arg(long, default_value_t = 1000)]
    pub lease_ttl_ms: u64,
    /// Where the markdown table goes (its `signaling` section is replaced).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub markdown: PathBuf,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/signaling.json")]
    pub json: PathBuf,
}

/// Everything `tether bench signaling` measured.
#[derive(Serialize, Debug)]
pub struct SignalingReport {
    /// When.
    pub when: String,
    /// Join denied for a revoked session, client round trip on loopback.
    pub join_denial_round_trip: Latency,
    /// Share of denials the node itself decided within 50 µs (its histogram).
    pub join_denial_server_within_50us: f64,
    /// Connect + auth + join → `joined`.
    pub admitted_join: Latency,
    /// Offer relayed operator → robot with `sessions` sessions live, both on one node.
    pub relay_one_node: Latency,
    /// The same with robots on node 1 and operators on node 2.
    pub relay_across_nodes: Latency,
    /// Revoke answered (HTTP 200) → `revoked` frame at the operator.
    pub revoke_to_close_frame: Latency,
    /// Revoke posted → `revoked` frame at the operator (commit included).
    pub revoke_posted_to_close_frame: Latency,
    /// Concurrent sessions in the relay runs.
    pub sessions: usize,
}

async fn connect(http: SocketAddr, token: &str) -> Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/v1/signal")).await?;
    send(&mut ws, json!({"type": "auth", "token": token})).await?;
    expect(&mut ws, "auth_ok").await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, frame: Value) -> Result<()> {
    ws.send(Message::Text(frame.to_string().into())).await?;
    Ok(())
}

/// The next frame of `kind`, skipping leases and presence notices.
async fn expect(ws: &mut Ws, kind: &str) -> Result<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("timed out")?
            .context("closed")??;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t)?;
            if v["type"] == kind {
                return Ok(v);
            }
            if !matches!(
                v["type"].as_str(),
                Some("lease" | "peer_joined" | "session_assigned" | "peer_left")
            ) {
                bail!("expected {kind}, got {v}");
            }
        }
    }
}

struct Pair {
    sid: String,
    robot: Ws,
    operator: Ws,
}

async fn create_session(
    cluster: &BenchCluster,
    node: usize,
    operator: &str,
    robot: &str,
) -> Result<Value> {
    let http = cluster.procs[node].http;
    let response = reqwest::Client::new()
        .post(format!("http://{http}/v1/sessions"))
        .bearer_auth(
            cluster
                .secrets
                .mint(operator, Role::Operator, Duration::from_secs(3600))?,
        )
        .json(&json!({ "robot_id": robot }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "session: {}",
        response.text().await?
    );
    Ok(response.json().await?)
}

async fn pair(
    cluster: &BenchCluster,
    robot_node: usize,
    operator_node: usize,
    n: usize,
) -> Result<Pair> {
    let robot_id = format!("bench-robot-{robot_node}-{operator_node}-{n}");
    let mut robot = connect(
        cluster.procs[robot_node].http,
        &cluster
            .secrets
            .mint(&robot_id, Role::Robot, Duration::from_secs(3600))?,
    )
    .await?;
    let session =
        create_session(cluster, operator_node, &format!("bench-op-{n}"), &robot_id).await?;
    let sid = session["session_id"].as_str().context("sid")?.to_owned();
    send(&mut robot, json!({"type": "join", "session_id": sid})).await?;
    expect(&mut robot, "joined").await?;
    let mut operator = connect(
        cluster.procs[operator_node].http,
        session["token"].as_str().context("token")?,
    )
    .await?;
    send(&mut operator, json!({"type": "join", "session_id": sid})).await?;
    expect(&mut operator, "joined").await?;
    Ok(Pair {
        sid,
        robot,
        operator,
    })
}

const SDP: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";

/// Sets up `n` sessions, then has every operator send five offers while all are live;
/// measures send → receipt at the robot.
async fn relay(
    cluster: &BenchCluster,
    robot_node: usize,
    operator_node: usize,
    n: usize,
) -> Result<Latency> {
    let mut pairs = Vec::new();
    for i in 0..n {
        pairs.push(pair(cluster, robot_node, operator_node, i).await?);
    }
    // Every session sends an offer every 200 ms, the sessions spread evenly over that
    // period: steady load from all sessions at once rather than one synchronized burst.
    let tasks: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            let offset = Duration::from_micros((i as u64 * 200_000) / n.max(1) as u64);
            tokio::spawn(async move {
                let mut h = histogram();
                let start = tokio::time::Instant::now() + offset;
                for k in 0..5u32 {
                    tokio::time::sleep_until(start + Duration::from_millis(200) * k).await;
                    let t = Instant::now();
                    send(&mut p.operator, json!({"type": "offer", "sdp": SDP})).await?;
                    expect(&mut p.robot, "offer").await?;
                    h.record(t.elapsed().as_micros() as u64)?;
                }
                Ok::<_, anyhow::Error>((h, p))
            })
        })
        .collect();
    let mut all = histogram();
    let mut keep = Vec::new();
    for t in tasks {
        let (h, p) = t.await??;
        all.add(&h)?;
        keep.push(p);
    }
    // End the sessions so the robots are free and the next run starts clean.
    let admin = Client::new(&cluster.procs[0].http.to_string(), &cluster.token);
    for p in &keep {
        admin
            .revoke(&Target::Session(p.sid.clone()), "bench done", None)
            .await?;
    }
    Ok(Latency::from(&all))
}

fn share_within(metrics: &str, name: &str, bound: &str) -> f64 {
    let value = |suffix: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{suffix}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let within = value(&format!("_bucket{{le=\"{bound}\"}}"));
    let count = value("_count");
    if count == 0.0 {
        0.0
    } else {
        within / count
    }
}

/// Runs the signaling benchmark.
pub async fn signaling(args: SignalingBenchArgs) -> Result<()> {
    let cluster = BenchCluster::start(false, |c| {
        c.sessions.lease_ttl_ms = args.lease_ttl_ms;
        c.sessions.max_connections = 20_000;
        // The harness drives connections far harder than a console does.
        c.sessions.frames_per_second = 1_000_000;
        c.sessions.frame_burst = 1_000_000;
    })
    .await?;
    let http = cluster.procs[0].http;

    // Join denial: a revoked session, joined again and again.
    let p = pair(&cluster, 0, 0, 900_000).await?;
    let token = create_session(&cluster, 0, "bench-denied", "bench-denied-robot").await?;
    let denied_sid = token["session_id"].as_str().context("sid")?.to_owned();
    Client::new(&http.to_string(), &cluster.token)
        .revoke(&Target::Session(denied_sid.clone()), "bench", None)
        .await?;
    drop(p);
    let mut op = connect(
        http,
        &cluster
            .secrets
            .mint("bench-denied", Role::Operator, Duration::from_secs(3600))?,
    )
    .await?;
    let mut denial = histogram();
    for _ in 0..args.trials * 5 {
        let t = Instant::now();
        send(&mut op, json!({"type": "join", "session_id": denied_sid})).await?;
        expect(&mut op, "error").await?;
        denial.record(t.elapsed().as_micros() as u64)?;
    }
    let metrics = reqwest::get(format!("http://{http}/metrics"))
        .await?
        .text()
        .await?;
    let within = share_within(&metrics, "tether_join_denial_seconds", "0.00005");
    eprintln!(
        "bench: join denial {:?}, server ≤ 50 µs: {:.1}%",
        Latency::from(&denial),
        within * 100.0
    );

    // Admitted joins end to end.
    let mut admitted = histogram();
    for i in 0..args.trials {
        let robot = format!("bench-admit-{i}");
        let session = create_session(&cluster, 1, &format!("bench-admit-op-{i}"), &robot).await?;
        let sid = session["session_id"].as_str().context("sid")?;
        let t = Instant::now();
        let mut ws = connect(
            cluster.procs[1].http,
            session["token"].as_str().context("token")?,
        )
        .await?;
        send(&mut ws, json!({"type": "join", "session_id": sid})).await?;
        expect(&mut ws, "joined").await?;
        admitted.record(t.elapsed().as_micros() as u64)?;
    }
    eprintln!("bench: admitted join {:?}", Latency::from(&admitted));

    let relay_one_node = relay(&cluster, 0, 0, args.sessions).await?;
    eprintln!("bench: relay on one node {relay_one_node:?}");
    let relay_across_nodes = relay(&cluster, 1, 2, args.sessions).await?;
    eprintln!("bench: relay across nodes {relay_across_nodes:?}");

    // Revoke answered → revoked frame at the operator (commit → close on loopback).
    let admin = Client::new(&cluster.procs[2].http.to_string(), &cluster.token);
    let mut revoke = histogram();
    let mut posted_to_frame = histogram();
    for i in 0..args.trials.min(100) {
        let mut p = pair(&cluster, 0, 1, 800_000 + i).await?;
        let posted = Instant::now();
        admin
            .revoke(&Target::Session(p.sid.clone()), "bench", None)
            .await?;
        let answered = Instant::now();
        expect(&mut p.operator, "revoked").await?;
        revoke.record(answered.elapsed().as_micros() as u64)?;
        posted_to_frame.record(posted.elapsed().as_micros() as u64)?;
        drop(p.robot);
    }
    eprintln!(
        "bench: revoke answered → revoked frame {:?}",
        Latency::from(&revoke)
    );

    let report = SignalingReport {
        when: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        join_denial_round_trip: Latency::from(&denial),
        join_denial_server_within_50us: within,
        admitted_join: Latency::from(&admitted),
        relay_one_node,
        relay_across_nodes,
        revoke_to_close_frame: Latency::from(&revoke),
        revoke_posted_to_close_frame: Latency::from(&posted_to_frame),
        sessions: args.sessions,
    };
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    write_markdown_section(&args.markdown, "signaling", &markdown(&report))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn markdown(r: &SignalingReport) -> String {
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    let row = |what: &str, l: &Latency, target: &str| {
        format!(
            "| {what} | {} | {} | {} | {} | {target} |\n",
            l.count,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us)
        )
    };
    let mut s = format!(
        "### Signaling (`tether bench signaling`, {})\n\n3 node processes on loopback, real WebSocket clients in one process; relay runs with {} concurrent sessions.\n\n| measurement | samples | p50 ms | p99 ms | max ms | target |\n|---|---|---|---|---|---|\n",
        r.when, r.sessions
    );
    s += &row(
        "join denied (revoked sid), client round trip",
        &r.join_denial_round_trip,
        "server p99 ≤ 0.05",
    );
    s += &row(
        "admitted join: connect + auth + join",
        &r.admitted_join,
        "p99 ≤ 2",
    );
    s += &row(
        "relay offer, both peers on one node",
        &r.relay_one_node,
        "p99 ≤ 1",
    );
    s += &row(
        "relay offer, peers on different nodes",
        &r.relay_across_nodes,
        "p99 ≤ 2",
    );
    s += &row(
        "revoke answered (200) → `revoked` frame at the console",
        &r.revoke_to_close_frame,
        "p99 ≤ 10",
    );
    s += &row(
        "revoke posted → `revoked` frame (commit included)",
        &r.revoke_posted_to_close_frame,
        "seed: < 500",
    );
    s += &format!(
        "\nServer-side join denial decided within 50 µs (node histogram): {:.1}% of denials.\n",
        r.join_denial_server_within_50us * 100.0
    );
    s
}
