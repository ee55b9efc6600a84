//! `tether bench signaling`: join denial, admitted joins, relay latency with many concurrent
//! sessions (one node and across nodes), and revoke → close-frame latency, on a fresh
//! 3-node loopback cluster with real WebSocket clients.
//!
//! Long file: one benchmark, measured in stages that share the cluster and its clients;
//! the report code lives in `report.rs`.

use crate::raft::BenchCluster;
use crate::report::{histogram, write_markdown_section, Latency};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tether_api::signal::{Incoming, SignalSocket};
use tether_api::types::SessionToken;
use tether_api::{Client, Target};
use tether_devkit::fixtures::SDP;
use tether_devkit::metrics::Scrape;
use tether_node::auth::Role;

type Ws = SignalSocket;

/// `tether bench signaling`.
#[derive(clap::Args, Debug)]
pub(crate) struct SignalingBenchArgs {
    /// Concurrent sessions for the relay measurement.
    #[arg(long, default_value_t = 1000)]
    pub(crate) sessions: usize,
    /// In the relay runs, each session sends an offer this often (ms); 1,000 sessions at
    /// 200 ms make 5,000 relays a second.
    #[arg(long, default_value_t = 200)]
    pub(crate) relay_period_ms: u64,
    /// Offers each session sends in a relay run (samples = sessions × offers).
    #[arg(long, default_value_t = 10)]
    pub(crate) relay_offers: u32,
    /// Trials for the join and revoke measurements.
    #[arg(long, default_value_t = 200)]
    pub(crate) trials: usize,
    /// Idle authenticated connections held open on one node at once (0 skips).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) connections: usize,
    /// Lease lifetime on the nodes (every robot asks for a lease each quarter of it).
    #[arg(long, default_value_t = 1000)]
    pub(crate) lease_ttl_ms: u64,
    /// Where the markdown table goes (its `signaling` section is replaced).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub(crate) markdown: PathBuf,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/signaling.json")]
    pub(crate) json: PathBuf,
}

/// Everything `tether bench signaling` measured.
#[derive(Serialize, Debug)]
pub(crate) struct SignalingReport {
    /// When.
    pub(crate) when: String,
    /// Join denied for a revoked session, client round trip on loopback.
    pub(crate) join_denial_round_trip: Latency,
    /// Share of denials the node itself decided within 50 µs (its histogram).
    pub join_denial_server_within_50us: f64,
    /// Connect + auth + join → `joined`.
    pub(crate) admitted_join: Latency,
    /// Offer relayed operator → robot with `sessions` sessions live, both on one node.
    pub(crate) relay_one_node: Latency,
    /// The same with robots on node 1 and operators on node 2.
    pub(crate) relay_across_nodes: Latency,
    /// Revoke answered (HTTP 200) → `revoked` frame at the operator.
    pub(crate) revoke_to_close_frame: Latency,
    /// Revoke posted → `revoked` frame at the operator (commit included).
    pub(crate) revoke_posted_to_close_frame: Latency,
    /// Concurrent sessions in the relay runs.
    pub(crate) sessions: usize,
    /// Offers relayed per second in the relay runs (all sessions together).
    pub(crate) relays_per_second: u64,
    /// The robots' lease lifetime: each robot got a lease every quarter of it meanwhile.
    pub(crate) lease_ttl_ms: u64,
    /// Many connections on one node.
    pub(crate) many: Option<ManyConnections>,
    /// Server side, one node: share of relays from frame read to peer socket written
    /// within 1 ms, and the bucket bound (s) holding 99% of them.
    pub(crate) relay_server_one_node: (f64, f64),
    /// Server side, the robot's node: share of relays from QUIC arrival to socket written
    /// within 1 ms, and the 99% bucket bound (s).
    pub(crate) relay_server_from_peer_node: (f64, f64),
}

/// `connections` authenticated sockets held open on one node.
#[derive(Serialize, Debug)]
pub(crate) struct ManyConnections {
    /// Sockets opened and authenticated.
    pub(crate) connections: usize,
    /// How long opening and authenticating all of them took, seconds.
    pub(crate) open_seconds: f64,
    /// The node's resident memory before, MiB.
    pub(crate) rss_before_mib: f64,
    /// And with every socket open, MiB.
    pub(crate) rss_after_mib: f64,
    /// Ping round trips on a sample of the sockets while all are open.
    pub(crate) ping: Latency,
}

/// A process's resident memory in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Opens `n` robot connections on node 1 (64 at a time), then pings a sample of them.
async fn many_connections(cluster: &BenchCluster, n: usize) -> Result<ManyConnections> {
    let node = &cluster.procs[0];
    let pid = node.pid().context("node 1 is running")?;
    let rss_before_mib = rss_mib(pid);
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(64) {
        let opening: Vec<_> = chunk
            .iter()
            .map(|i| {
                let token = cluster.secrets.mint(
                    &format!("bench-idle-{i}"),
                    Role::Robot,
                    Duration::from_secs(3600),
                );
                let http = node.http;
                async move { connect(http, &token?).await }
            })
            .collect();
        for ws in futures::future::join_all(opening).await {
            sockets.push(ws?);
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    let rss_after_mib = rss_mib(pid);
    let mut ping = histogram();
    let step = (n / 1000).max(1);
    for ws in sockets.iter_mut().step_by(step) {
        let t = Instant::now();
        send(ws, json!({"type": "ping"})).await?;
        expect(ws, "pong").await?;
        ping.record(t.elapsed().as_micros() as u64)?;
    }
    Ok(ManyConnections {
        connections: sockets.len(),
        open_seconds,
        rss_before_mib,
        rss_after_mib,
        ping: Latency::from(&ping),
    })
}

async fn connect(http: SocketAddr, token: &str) -> Result<Ws> {
    let mut ws = SignalSocket::connect(&http.to_string()).await?;
    ws.authenticate(token).await?;
    Ok(ws)
}

async fn send(ws: &mut Ws, frame: Value) -> Result<()> {
    ws.send_json(&frame).await?;
    Ok(())
}

/// The next frame of `kind`, skipping leases and presence notices.
async fn expect(ws: &mut Ws, kind: &str) -> Result<Value> {
    loop {
        let incoming = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("timed out")?;
        let Incoming::Frame(v) = incoming else {
            bail!("closed while waiting for {kind}: {incoming:?}");
        };
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
) -> Result<SessionToken> {
    let token = cluster
        .secrets
        .mint(operator, Role::Operator, Duration::from_secs(3600))?;
    let client = Client::new(&cluster.procs[node].http.to_string(), &token);
    Ok(client.create_session(robot).await?)
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
    let sid = session.session_id.clone();
    send(&mut robot, json!({"type": "join", "session_id": sid})).await?;
    expect(&mut robot, "joined").await?;
    let mut operator = connect(cluster.procs[operator_node].http, &session.token).await?;
    send(&mut operator, json!({"type": "join", "session_id": sid})).await?;
    expect(&mut operator, "joined").await?;
    Ok(Pair {
        sid,
        robot,
        operator,
    })
}

/// Sets up `n` sessions, then has every operator send `offers` offers, one every `period`,
/// while all are live; measures send → receipt at the robot. Each robot asks for a lease
/// every `lease_every` meanwhile (as agents do), so relays share the node with the lease
/// traffic.
async fn relay(
    cluster: &BenchCluster,
    robot_node: usize,
    operator_node: usize,
    n: usize,
    period: Duration,
    offers: u32,
    lease_every: Duration,
) -> Result<Latency> {
    let mut pairs = Vec::new();
    for i in 0..n {
        pairs.push(pair(cluster, robot_node, operator_node, i).await?);
    }
    // The sessions are spread evenly over the period: steady load from all sessions at once
    // rather than one synchronized burst. One start for all, 200 ms ahead (ample for
    // spawning them): the first offers must not race the spawning of the rest.
    let begin = tokio::time::Instant::now() + Duration::from_millis(200);
    let tasks: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, mut p)| {
            let offset = period * i as u32 / n.max(1) as u32;
            tokio::spawn(async move {
                let mut h = histogram();
                let start = begin + offset;
                let mut asked: Option<tokio::time::Instant> = None;
                for k in 0..offers {
                    tokio::time::sleep_until(start + period * k).await;
                    if asked.is_none_or(|at| at.elapsed() >= lease_every) {
                        asked = Some(tokio::time::Instant::now());
                        let ask =
                            json!({"type": "lease_request", "session_id": p.sid, "nonce": k + 1});
                        send(&mut p.robot, ask).await?;
                    }
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

/// Runs `work` to completion on a single-threaded runtime of its own thread.
fn on_own_thread<T: Send>(work: impl std::future::Future<Output = Result<T>> + Send) -> Result<T> {
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(work)
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the load generator panicked"))?
        })
    })
}

/// Node `i`'s `/metrics`.
async fn scrape(cluster: &BenchCluster, i: usize) -> Result<Scrape> {
    Ok(tether_devkit::metrics::scrape(cluster.procs[i].http).await?)
}

/// Runs the signaling benchmark.
pub(crate) async fn signaling(args: SignalingBenchArgs) -> Result<()> {
    let cluster = BenchCluster::start(false, |c| {
        c.sessions.lease_ttl_ms = args.lease_ttl_ms;
        c.sessions.max_connections = 20_000;
        c.sessions.max_unauthenticated = 20_000;
        // The harness drives connections far harder than a console does, all from one
        // address.
        c.sessions.frames_per_second = 1_000_000;
        c.sessions.frame_burst = 1_000_000;
        c.http.per_client_per_second = 0;
        c.http.writes_per_token_per_second = 0;
    })
    .await?;
    let http = cluster.procs[0].http;

    // Join denial: a revoked session, joined again and again.
    let p = pair(&cluster, 0, 0, 900_000).await?;
    let token = create_session(&cluster, 0, "bench-denied", "bench-denied-robot").await?;
    let denied_sid = token.session_id.clone();
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
    let (within, _) = scrape(&cluster, 0).await?.histogram_shares(
        tether_node::telemetry::names::JOIN_DENIAL_SECONDS,
        "",
        0.000_05,
    );
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
        let sid = &session.session_id;
        let t = Instant::now();
        let mut ws = connect(cluster.procs[1].http, &session.token).await?;
        send(&mut ws, json!({"type": "join", "session_id": sid})).await?;
        expect(&mut ws, "joined").await?;
        admitted.record(t.elapsed().as_micros() as u64)?;
    }
    eprintln!("bench: admitted join {:?}", Latency::from(&admitted));

    let period = Duration::from_millis(args.relay_period_ms);
    let relay_one_node = on_own_thread(relay(
        &cluster,
        0,
        0,
        args.sessions,
        period,
        args.relay_offers,
        Duration::from_millis(args.lease_ttl_ms / 4),
    ))?;
    eprintln!("bench: relay on one node {relay_one_node:?}");
    let relay_across_nodes = on_own_thread(relay(
        &cluster,
        1,
        2,
        args.sessions,
        period,
        args.relay_offers,
        Duration::from_millis(args.lease_ttl_ms / 4),
    ))?;
    eprintln!("bench: relay across nodes {relay_across_nodes:?}");
    let relay_server_one_node = scrape(&cluster, 0).await?.histogram_shares(
        tether_node::telemetry::names::RELAY_SECONDS,
        "path=\"local\",",
        0.001,
    );
    let relay_server_from_peer_node = scrape(&cluster, 1).await?.histogram_shares(
        tether_node::telemetry::names::RELAY_SECONDS,
        "path=\"from_peer_node\",",
        0.001,
    );
    eprintln!(
        "bench: relay server side: one node {relay_server_one_node:?}, from a peer node {relay_server_from_peer_node:?}"
    );

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

    let many = if args.connections > 0 {
        let m = many_connections(&cluster, args.connections).await?;
        eprintln!("bench: many connections {m:?}");
        Some(m)
    } else {
        None
    };

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
        relays_per_second: args.sessions as u64 * 1000 / args.relay_period_ms.max(1),
        lease_ttl_ms: args.lease_ttl_ms,
        many,
        relay_server_one_node,
        relay_server_from_peer_node,
    };
    crate::report::write_json(&args.json, &report)?;
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
        "### Signaling (`tether bench signaling`, {})\n\n3 node processes on loopback, real WebSocket clients in one process (the relay load generator runs its {} sockets on one thread of its own); relay runs with {} concurrent sessions relaying {} offers a second in all, while each robot asks for (and gets) a lease every {} ms.\n\n| measurement | samples | p50 ms | p99 ms | max ms | target |\n|---|---|---|---|---|---|\n",
        r.when,
        2 * r.sessions,
        r.sessions,
        r.relays_per_second,
        r.lease_ttl_ms / 4
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
    s += &format!(
        "\nRelay inside the nodes (frame read → peer's socket written; across nodes, from the QUIC arrival on the robot's node): {:.1}% within 1 ms on one node (99% within {} ms), {:.1}% within 1 ms from a peer node (99% within {} ms). The difference from the end-to-end figures above is the load generator's sockets and the client side of the loopback, on the same 2 cores.\n",
        r.relay_server_one_node.0 * 100.0,
        r.relay_server_one_node.1 * 1000.0,
        r.relay_server_from_peer_node.0 * 100.0,
        r.relay_server_from_peer_node.1 * 1000.0,
    );
    if let Some(m) = &r.many {
        s += &format!(
            "\n{} idle authenticated connections on one node (target 10,000): opened in {:.1} s; node memory {:.0} → {:.0} MiB ({:.1} KiB per connection); ping round trip on {} of them meanwhile p50 {} / p99 {} ms.\n",
            m.connections,
            m.open_seconds,
            m.rss_before_mib,
            m.rss_after_mib,
            (m.rss_after_mib - m.rss_before_mib) * 1024.0 / m.connections.max(1) as f64,
            m.ping.count,
            ms(m.ping.p50_us),
            ms(m.ping.p99_us)
        );
    }
    s
}
