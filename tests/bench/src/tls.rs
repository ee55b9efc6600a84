//! `tether bench raft --tls`: what client-side TLS costs the commit path — a plain and an
//! HTTPS cluster, one after the other in one run, each measured through a follower (one
//! client's latency, then many clients' throughput); the `raft-tls` section.

use crate::raft::{
    sequential, throughput_run, BenchCluster, RaftBenchArgs, TetherPut, ThroughputRun,
};
use crate::report::{write_markdown_section, Latency};
use anyhow::{Context, Result};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether_api::{Client, Target};

/// Commit latency and throughput over plain HTTP and over HTTPS, one cluster after the
/// other in one run: what TLS on the client side costs.
#[derive(Serialize, Debug)]
pub(crate) struct TlsSideBySide {
    /// Plain HTTP, one client through a follower.
    pub(crate) plain_one_client: Latency,
    /// HTTPS, one client through a follower.
    pub(crate) tls_one_client: Latency,
    /// Plain HTTP, `clients` at once.
    pub(crate) plain_concurrent: ThroughputRun,
    /// HTTPS, `clients` at once.
    pub(crate) tls_concurrent: ThroughputRun,
}

/// One cluster, plain or HTTPS: one client's commit latency and `clients` clients'
/// throughput, through a follower.
async fn commit_over(
    tls: bool,
    args: &RaftBenchArgs,
    clients: usize,
    next_id: &(impl Fn() -> String + Clone + Send + Sync + 'static),
) -> Result<(Latency, ThroughputRun)> {
    let cluster = BenchCluster::start(false, |c| {
        c.http.per_client_per_second = 0;
        if tls {
            tether_devkit::pki::serve_https(c).expect("an HTTPS certificate");
        }
    })
    .await?;
    let follower = (cluster.procs.iter())
        .find(|p| p.id != cluster.leader)
        .context("a follower")?;
    let client = Client::new(&follower.url, &cluster.token);
    for _ in 0..300 {
        client
            .revoke(&Target::Session(next_id()), "warm-up", None)
            .await?;
    }
    let target = TetherPut(client);
    let one = sequential(&target, args.requests, next_id).await?;
    let run = throughput_run(&target, clients, Duration::from_secs(args.seconds), next_id).await;
    eprintln!(
        "bench: {} one client {one:?}; {clients} clients {:.0}/s {:?}",
        if tls { "https" } else { "http" },
        run.per_second,
        run.latency
    );
    Ok((one, run))
}

/// `tether bench raft --tls`: plain and HTTPS side by side; the `raft-tls` section.
pub(crate) async fn tls_side_by_side(args: &RaftBenchArgs) -> Result<()> {
    let counter = Arc::new(AtomicU64::new(0));
    let next_id = move || format!("bench-{}", counter.fetch_add(1, Ordering::Relaxed));
    let clients = args.clients.iter().copied().max().unwrap_or(1);
    let (plain_one_client, plain_concurrent) = commit_over(false, args, clients, &next_id).await?;
    let (tls_one_client, tls_concurrent) = commit_over(true, args, clients, &next_id).await?;
    let side = TlsSideBySide {
        plain_one_client,
        tls_one_client,
        plain_concurrent,
        tls_concurrent,
    };
    let ratio = |tls: u64, plain: u64| tls as f64 / plain.max(1) as f64;
    let ms = |us: u64| us as f64 / 1000.0;
    let body = format!(
        "\nClient-side TLS (HTTPS with the cluster CA pinned) against plain HTTP, 3 node processes on loopback, fsync on, two clusters one after the other in one run ({}):\n\n| | plain | HTTPS | HTTPS / plain |\n|---|---|---|---|\n| commit, 1 client via a follower, p50 | {:.2} ms | {:.2} ms | {:.2}× |\n| commit, 1 client, p99 | {:.2} ms | {:.2} ms | {:.2}× |\n| {} clients, throughput | {:.0}/s | {:.0}/s | {:.2}× |\n| {} clients, commit p99 | {:.2} ms | {:.2} ms | {:.2}× |\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        ms(side.plain_one_client.p50_us),
        ms(side.tls_one_client.p50_us),
        ratio(side.tls_one_client.p50_us, side.plain_one_client.p50_us),
        ms(side.plain_one_client.p99_us),
        ms(side.tls_one_client.p99_us),
        ratio(side.tls_one_client.p99_us, side.plain_one_client.p99_us),
        clients,
        side.plain_concurrent.per_second,
        side.tls_concurrent.per_second,
        side.tls_concurrent.per_second / side.plain_concurrent.per_second.max(1.0),
        clients,
        ms(side.plain_concurrent.latency.p99_us),
        ms(side.tls_concurrent.latency.p99_us),
        ratio(side.tls_concurrent.latency.p99_us, side.plain_concurrent.latency.p99_us),
    );
    let json = args.json.with_file_name("raft-tls.json");
    crate::report::write_json(&json, &side)?;
    write_markdown_section(&args.markdown, "raft-tls", &body)?;
    println!("{}", serde_json::to_string_pretty(&side)?);
    Ok(())
}
