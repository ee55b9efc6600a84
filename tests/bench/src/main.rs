//! `tether-bench`: the benchmark harness. Starts real node processes (the `tether` binary
//! built beside it), drives them, and writes JSON plus a section of `docs/benchmarks.md`.
//! `./x bench WHAT` and `tether bench WHAT` both run it.

mod etcd;
mod raft;
mod report;
mod robot;
mod signaling;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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

/// The `tether` binary to benchmark: `TETHER_BIN`, else the one beside this executable.
pub(crate) fn tether_bin() -> Result<PathBuf> {
    if let Ok(bin) = std::env::var("TETHER_BIN") {
        return Ok(bin.into());
    }
    let bin = std::env::current_exe()?.with_file_name("tether");
    if !bin.exists() {
        bail!(
            "{} not found: build it (`cargo build --release --bin tether`) or set TETHER_BIN",
            bin.display()
        );
    }
    Ok(bin)
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
