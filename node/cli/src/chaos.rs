//! `tether chaos run`: the chaos suite's scenarios against real node processes in network
//! namespaces (root needed), with a report directory per scenario.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use tether_chaos_lab::run::{run, scenario_dir, RunOptions, Scenario};

#[derive(Subcommand)]
pub(crate) enum ChaosCmd {
    /// Run one scenario, or all of them; exits non-zero when a checker finds a violation.
    Run(ChaosRunArgs),
}

#[derive(Args)]
pub(crate) struct ChaosRunArgs {
    /// A scenario's name (see docs/chaos.md: isolate-follower, isolate-leader, kill-leader,
    /// kill-majority, kill-all, pause-leader, pause-follower, random-halves, one-way-leader,
    /// lossy-links, robot-cut, media-cut), or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Seeds the workload and the choice of fault targets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Gateway nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// Seconds of traffic before the fault, during it and after healing, each.
    #[arg(long, default_value_t = 4)]
    phase_s: u64,
    /// Concurrent admin clients writing revocations.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Concurrent operators starting, joining, ending and revoking sessions.
    #[arg(long, default_value_t = 2)]
    operators: usize,
    /// Leave out the robot agent and the consoles driving it over WebRTC.
    #[arg(long)]
    no_robots: bool,
    /// Where the reports go (one folder per scenario).
    #[arg(long, default_value = "target/chaos")]
    report: PathBuf,
}

pub(crate) async fn chaos(command: ChaosCmd) -> Result<()> {
    let ChaosCmd::Run(args) = command;
    tether_chaos_lab::netns::Lab::available()
        .map_err(|why| anyhow::anyhow!("the chaos suite cannot run here: {why}"))?;
    let scenarios: Vec<Scenario> = match args.scenario.as_str() {
        "all" => Scenario::ALL.to_vec(),
        name => vec![Scenario::parse(name)
            .with_context(|| format!("no scenario {name:?} ({}, or all)", Scenario::names()))?],
    };
    let bin = std::env::current_exe()?;
    let mut failed = Vec::new();
    for scenario in scenarios {
        eprintln!("chaos: {} (seed {}) …", scenario.name(), args.seed);
        let options = RunOptions {
            scenario,
            seed: args.seed,
            nodes: args.nodes,
            phase: Duration::from_secs(args.phase_s),
            writers: args.writers,
            operators: args.operators,
            robots: !args.no_robots,
            target: None,
            report: scenario_dir(&args.report, scenario),
            bin: bin.clone(),
        };
        let summary = run(&options).await?;
        println!(
            "{:<18} {}  ops {:?}",
            scenario.name(),
            if summary.valid { "valid  " } else { "INVALID" },
            summary.outcomes
        );
        for v in &summary.verdicts {
            println!("    {:<22} {:?} {:?}", v.checker, v.valid, v.counts);
        }
        if !summary.valid {
            failed.push(scenario.name());
        }
    }
    if !failed.is_empty() {
        bail!(
            "checkers found violations in {}; see {}",
            failed.join(", "),
            args.report.display()
        );
    }
    Ok(())
}
