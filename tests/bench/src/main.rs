//! `tether-bench`: the benchmark harness. Starts real node processes (the `tether` binary
//! built beside it), drives them, and writes JSON plus a section of `docs/benchmarks.md`.
//! `./x bench WHAT` and `tether bench WHAT` both run it.

mod etcd;
mod raft;
mod report;
mod robot;
mod signaling;
mod tls;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tether-bench", about = "Tether's benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: BenchCmd,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Revocation commit latency and throughput on a fresh 3-node loopback cluster.
    Raft(raft::RaftBenchArgs),
    /// Join denial, admitted joins, relay latency and revoke → close on a fresh cluster.
    Signaling(signaling::SignalingBenchArgs),
    /// Revoke, control loss and lease expiry → robot safe-stop, over real WebRTC.
    Robot(robot::RobotBenchArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cli.command {
            BenchCmd::Raft(args) => raft::raft(args).await,
            BenchCmd::Signaling(args) => signaling::signaling(args).await,
            BenchCmd::Robot(args) => robot::robot(args).await,
        }
    })
}
