//! `tether-bench raft`: revocation commit latency and throughput on a fresh loopback
//! cluster, etcd side by side when installed, and leader failover.

use crate::etcd::{EtcdCluster, EtcdSideBySide, Put};
use crate::report::{histogram, ms, write_markdown_section, Latency};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_api::{Client, Target};
use tether_devkit::cluster::{wait_for_leader, LocalCluster};
use tether_devkit::{NodeProcess, Secrets};

/// `tether bench raft`.
#[derive(clap::Args, Debug)]
pub(crate) struct RaftBenchArgs {
    /// Sequential revocations in the one-client latency run.
    #[arg(long, default_value_t = 3000)]
    pub(crate) requests: u64,
    /// Concurrency levels for the throughput runs.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub(crate) clients: Vec<usize>,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 3)]
    pub(crate) seconds: u64,
    /// Leader kills for the failover measurement.
    #[arg(long, default_value_t = 5)]
    pub(crate) failovers: usize,
    /// Turn fsync off (to see what it costs; never how a site runs). Results then go only
    /// to the JSON file.
    #[arg(long)]
    pub(crate) no_fsync: bool,
    /// Keep the cluster directory (configs, data, node logs) and print its path.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Skip the leader-kill measurement.
    #[arg(long)]
    pub(crate) no_failover: bool,
    /// Measure only what client-side TLS costs: a plain and an HTTPS cluster, one after
    /// the other (the `raft-tls` section).
    #[arg(long)]
    pub(crate) tls: bool,
    /// An etcd binary to measure side by side (Debian's `etcd-server`); skipped if absent.
    #[arg(long, default_value = "/usr/bin/etcd")]
    pub(crate) etcd: Option<PathBuf>,
    /// Where the markdown table goes (its `raft` section is replaced).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub(crate) markdown: PathBuf,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/raft.json")]
    pub(crate) json: PathBuf,
}

/// One throughput run.
#[derive(Serialize, Debug)]
pub(crate) struct ThroughputRun {
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// Committed revocations per second.
    pub(crate) per_second: f64,
    /// Latency under that load.
    pub(crate) latency: Latency,
    /// Requests that failed.
    pub(crate) errors: u64,
}

/// Everything `tether bench raft` measured.
#[derive(Serialize, Debug)]
pub(crate) struct RaftBenchReport {
    /// When (RFC 3339).
    pub(crate) when: String,
    /// Machine notes.
    pub(crate) machine: String,
    /// One client, posting to a follower.
    pub(crate) commit_one_client: Latency,
    /// One client, posting to the leader (no forwarding hop), for comparison.
    pub(crate) commit_one_client_leader: Latency,
    /// Throughput runs.
    pub(crate) throughput: Vec<ThroughputRun>,
    /// Leader `kill -9` → next revocation committed, in ms, per trial.
    pub(crate) failover_ms: Vec<u64>,
    /// etcd measured the same way in the same run, when its binary is installed.
    pub(crate) etcd: Option<EtcdSideBySide>,
}

/// A fresh 3-node loopback cluster of real processes for a benchmark.
pub(crate) struct BenchCluster {
    /// Keys, configs, data, logs.
    pub(crate) dir: tempfile::TempDir,
    /// The cluster secrets.
    pub(crate) secrets: Secrets,
    /// An admin token.
    pub(crate) token: String,
    /// The `tether` binary.
    pub(crate) bin: PathBuf,
    /// The node processes, ids 1..=3.
    pub(crate) procs: Vec<NodeProcess>,
    /// The leader at start.
    pub(crate) leader: u64,
}

impl BenchCluster {
    /// Generates, tweaks and starts the cluster, and waits for a leader.
    pub(crate) async fn start(
        keep: bool,
        tweak: impl Fn(&mut tether_node::config::NodeConfig),
    ) -> Result<Self> {
        let bin = tether_devkit::tether_bin()?;
        let LocalCluster {
            mut dir,
            secrets,
            admin_token,
            bin,
            nodes,
        } = LocalCluster::spawn("tether-bench-", "bench", &bin, 3, tweak)?;
        if nodes.iter().any(|n| n.url.starts_with("https://")) {
            // The harness's clients pin the cluster CA, as a site's would.
            tether_api::tls::install_ca(&std::fs::read(secrets.ca_cert())?)?;
        }
        if keep {
            dir.disable_cleanup(true);
            eprintln!("bench: cluster directory {}", dir.path().display());
        }
        let leader = wait_for_leader(&nodes, &admin_token, Duration::from_secs(30)).await?;
        Ok(Self {
            dir,
            secrets,
            token: admin_token,
            bin,
            procs: nodes,
            leader,
        })
    }
}

/// Runs the raft benchmark.
pub(crate) async fn raft(args: RaftBenchArgs) -> Result<()> {
    if args.tls {
        return crate::tls::tls_side_by_side(&args).await;
    }
    let BenchCluster {
        dir: _dir,
        token,
        bin,
        mut procs,
        leader,
        ..
    } = BenchCluster::start(args.keep, |c| {
        c.raft.fsync = !args.no_fsync;
        // One address sends every request: no per-client limit.
        c.http.per_client_per_second = 0;
    })
    .await?;
    let follower = procs
        .iter()
        .find(|p| p.id != leader)
        .context("a follower")?;
    let client = Client::new(&follower.http.to_string(), &token);
    eprintln!(
        "bench: leader {leader}, posting to follower {}",
        follower.id
    );

    let counter = Arc::new(AtomicU64::new(0));
    let next_id = {
        let counter = counter.clone();
        move || format!("bench-{}", counter.fetch_add(1, Ordering::Relaxed))
    };
    for _ in 0..300 {
        client
            .revoke(&Target::Session(next_id()), "warm-up", None)
            .await?;
    }

    let tether = TetherPut(client.clone());
    let commit_one_client = sequential(&tether, args.requests, &next_id).await?;
    eprintln!("bench: one client via a follower {commit_one_client:?}");
    let leader_http = procs
        .iter()
        .find(|p| p.id == leader)
        .context("leader")?
        .http;
    let leader_client = Client::new(&leader_http.to_string(), &token);
    let commit_one_client_leader =
        sequential(&TetherPut(leader_client), args.requests, &next_id).await?;
    eprintln!("bench: one client at the leader {commit_one_client_leader:?}");

    let mut throughput = Vec::new();
    for &clients in &args.clients {
        let run = throughput_run(
            &tether,
            clients,
            Duration::from_secs(args.seconds),
            &next_id,
        )
        .await;
        eprintln!(
            "bench: {clients} clients {:.0}/s {:?}",
            run.per_second, run.latency
        );
        throughput.push(run);
    }

    let etcd = match (&args.etcd, args.no_fsync) {
        (Some(bin), false) if bin.exists() => {
            let dir = tempfile::Builder::new()
                .prefix("tether-bench-etcd-")
                .tempdir()?;
            let cluster = EtcdCluster::start(bin, dir.path()).await?;
            let target = &cluster.follower;
            for _ in 0..300 {
                target.put(next_id()).await?;
            }
            let one_client = sequential(target, args.requests, &next_id).await?;
            let clients = args.clients.iter().copied().max().unwrap_or(1);
            let run =
                throughput_run(target, clients, Duration::from_secs(args.seconds), &next_id).await;
            let side = EtcdSideBySide {
                one_client,
                concurrent_per_second: run.per_second,
                concurrent_latency: run.latency,
                clients,
            };
            eprintln!("bench: etcd {side:?}");
            Some(side)
        }
        _ => None,
    };

    let trials = if args.no_failover { 0 } else { args.failovers };
    let failover_ms = failovers(&mut procs, &bin, &token, trials, &next_id).await?;
    eprintln!("bench: failover {failover_ms:?} ms");

    let report = RaftBenchReport {
        when: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        machine: format!(
            "{} cores, loopback, 3 node processes, fsync on",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0)
        ),
        commit_one_client,
        commit_one_client_leader,
        throughput,
        failover_ms,
        etcd,
    };
    crate::report::write_json(&args.json, &report)?;
    if !args.no_fsync {
        write_markdown_section(&args.markdown, "raft", &raft_markdown(&report))?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// Tether as a [`Put`] target: a session revocation per key.
#[derive(Clone)]
pub(crate) struct TetherPut(pub(crate) Client);

impl Put for TetherPut {
    async fn put(&self, key: String) -> Result<()> {
        self.0.revoke(&Target::Session(key), "bench", None).await?;
        Ok(())
    }
}

pub(crate) async fn sequential<P: Put>(
    target: &P,
    requests: u64,
    next_id: &impl Fn() -> String,
) -> Result<Latency> {
    let mut h = histogram();
    for _ in 0..requests {
        let started = Instant::now();
        target.put(next_id()).await?;
        h.record(started.elapsed().as_micros() as u64)?;
    }
    Ok(Latency::from(&h))
}

pub(crate) async fn throughput_run<P: Put>(
    target: &P,
    clients: usize,
    duration: Duration,
    next_id: &(impl Fn() -> String + Clone + Send + 'static),
) -> ThroughputRun {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let target = target.clone();
            let next_id = next_id.clone();
            tokio::spawn(async move {
                let mut h = histogram();
                let mut errors = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match target.put(next_id()).await {
                        Ok(_) => {
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => errors += 1,
                    }
                }
                (h, errors)
            })
        })
        .collect();
    let mut all = histogram();
    let mut errors = 0;
    for task in tasks {
        if let Ok((h, e)) = task.await {
            let _ = all.add(&h);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ThroughputRun {
        clients,
        per_second: all.len() as f64 / elapsed,
        latency: Latency::from(&all),
        errors,
    }
}

/// Kills the leader with SIGKILL and times how long until a revocation posted to a
/// survivor commits; restarts the killed node and waits for it to rejoin between trials.
async fn failovers(
    procs: &mut [NodeProcess],
    bin: &Path,
    token: &str,
    trials: usize,
    next_id: &impl Fn() -> String,
) -> Result<Vec<u64>> {
    let mut results = Vec::new();
    for _ in 0..trials {
        let leader = wait_for_leader(procs, token, Duration::from_secs(30)).await?;
        wait_caught_up(procs, token).await?;
        let index = procs
            .iter()
            .position(|p| p.id == leader)
            .context("leader process")?;
        let survivor = procs
            .iter()
            .find(|p| p.id != leader)
            .context("a survivor")?;
        let client = Client::new(&survivor.http.to_string(), token);
        procs[index].kill();
        let killed = Instant::now();
        loop {
            if client
                .revoke(&Target::Session(next_id()), "failover", None)
                .await
                .is_ok()
            {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("no commit within 30 s of killing the leader");
            }
        }
        results.push(killed.elapsed().as_millis() as u64);
        procs[index].start(bin)?;
    }
    Ok(results)
}

/// Waits until every running node has applied everything committed, so a failover trial
/// measures the election and not a restarted node's catch-up.
async fn wait_caught_up(procs: &[NodeProcess], token: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut applied = Vec::new();
        for p in procs.iter().filter(|p| p.is_running()) {
            let view = Client::new(&p.http.to_string(), token).cluster().await.ok();
            applied.push(view.map(|v| (v.applied_index, v.commit_index)));
        }
        let first = applied.first().cloned().flatten();
        if first.is_some()
            && applied
                .iter()
                .all(|a| *a == first && a.is_some_and(|(x, c)| x == c))
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nodes did not catch up: {applied:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn raft_markdown(r: &RaftBenchReport) -> String {
    let mut s = format!(
        "### Revocation commit (`tether bench raft`, {})\n\n{}. Posted to a follower over HTTP; 200 only after commit.\n\n",
        r.when, r.machine
    );
    s += "| load | req/s | p50 ms | p99 ms | max ms | errors |\n|---|---|---|---|---|---|\n";
    for (label, c) in [
        (
            "1 client, sequential, posted to a follower",
            &r.commit_one_client,
        ),
        (
            "1 client, sequential, posted to the leader (no forwarding hop)",
            &r.commit_one_client_leader,
        ),
    ] {
        s += &format!(
            "| {label} ({} requests) | — | {} | {} | {} | 0 |\n",
            c.count,
            ms(c.p50_us),
            ms(c.p99_us),
            ms(c.max_us)
        );
    }
    for t in &r.throughput {
        s += &format!(
            "| {} concurrent clients | {:.0} | {} | {} | {} | {} |\n",
            t.clients,
            t.per_second,
            ms(t.latency.p50_us),
            ms(t.latency.p99_us),
            ms(t.latency.max_us),
            t.errors
        );
    }
    let mut f = r.failover_ms.clone();
    f.sort_unstable();
    s += &format!(
        "\nLeader `kill -9` → next revocation committed via a survivor: {} ms over {} trials (max {} ms).\n",
        f.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        f.len(),
        f.last().copied().unwrap_or(0)
    );
    if let Some(e) = &r.etcd {
        let tether = r
            .throughput
            .iter()
            .find(|t| t.clients == e.clients)
            .map_or(0.0, |t| t.per_second);
        s += &format!(
            "\netcd 3.4 (Debian's etcd-server, 3 members on loopback, fsync on), the same run, puts posted to a follower over its JSON gateway: 1 client p50 {:.2} / p99 {:.2} ms (Tether {:.2} / {:.2}); {} clients {:.0} req/s at p99 {:.2} ms. Tether / etcd throughput at {} clients: **{:.2}×**.\n",
            e.one_client.p50_us as f64 / 1000.0,
            e.one_client.p99_us as f64 / 1000.0,
            r.commit_one_client.p50_us as f64 / 1000.0,
            r.commit_one_client.p99_us as f64 / 1000.0,
            e.clients,
            e.concurrent_per_second,
            e.concurrent_latency.p99_us as f64 / 1000.0,
            e.clients,
            tether / e.concurrent_per_second.max(1.0),
        );
    }
    s += "\nReference (brief, etcd 3.4 on this machine kind, 3 nodes, puts to a follower): 1 client p50 0.94 ms / p99 1.82 ms; 256 clients 6,863 req/s at p99 67 ms.\n";
    s
}
