//! `tether chaos run`: the chaos suite's scenarios against real node processes in network
//! namespaces (root needed), with a report directory per scenario and an index over them;
//! `--soak` keeps running seeded random scenarios for a duration. `tether chaos report`
//! re-checks a saved run and redraws its page.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tether_chaos::check::{check_all, Params, Validity};
use tether_chaos_lab::run::{render_page, run, scenario_dir, RunOptions, Scenario, Summary};

#[derive(Subcommand)]
pub(crate) enum ChaosCmd {
    /// Run one scenario, or all of them; exits non-zero when a checker finds a violation.
    Run(ChaosRunArgs),
    /// Re-check a saved run's history.jsonl and redraw its index.html.
    Report {
        /// The run's report directory (one scenario's).
        dir: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct ChaosRunArgs {
    /// A scenario's name (see docs/chaos.md: isolate-follower, isolate-leader, kill-leader,
    /// kill-majority, kill-all, pause-leader, pause-follower, random-halves, one-way-leader,
    /// lossy-links, robot-cut, media-cut, ring, bridge, bad-links, throttled-leader,
    /// snapshot-catch-up, gateway-minority, console-cut), or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Seeds the workload and the choice of fault targets (a soak derives one per run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Gateway nodes (scenarios that need more are skipped, with a note).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    nodes: u64,
    /// Seconds of traffic before the fault, during each round of it, between rounds and
    /// after healing, each.
    #[arg(long, default_value_t = 4, conflicts_with = "duration")]
    phase_s: u64,
    /// Times each scenario inflicts and heals its fault (snapshot-catch-up: once).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Seconds per scenario, split evenly into before, the rounds, the gaps between them
    /// and after (instead of --phase-s).
    #[arg(long)]
    duration: Option<u64>,
    /// Keep running random scenarios (seeded from --seed, each with a seed of its own) for
    /// this long, e.g. `2h`; stops at the first violation and keeps its report.
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "scenario")]
    soak: Option<Duration>,
    /// Concurrent admin clients writing revocations.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Concurrent operators starting, joining, ending and revoking sessions.
    #[arg(long, default_value_t = 2)]
    operators: usize,
    /// Leave out the robot agent and the consoles driving it over WebRTC.
    #[arg(long)]
    no_robots: bool,
    /// Where the reports go (one folder per scenario, and index.html over them).
    #[arg(long, default_value = "target/chaos")]
    report: PathBuf,
}

pub(crate) async fn chaos(command: ChaosCmd) -> Result<()> {
    let args = match command {
        ChaosCmd::Run(args) => args,
        ChaosCmd::Report { dir } => return report(&dir),
    };
    tether_chaos_lab::netns::Lab::available()
        .map_err(|why| anyhow::anyhow!("the chaos suite cannot run here: {why}"))?;
    let runnable = |s: &Scenario| {
        let fits = s.min_nodes() <= args.nodes && (!s.on_robot() || !args.no_robots);
        if !fits {
            eprintln!(
                "chaos: skipping {} (needs {} nodes{})",
                s.name(),
                s.min_nodes(),
                if s.on_robot() { " and the robot" } else { "" }
            );
        }
        fits
    };
    let phase = match args.duration {
        Some(total) => Duration::from_secs((total / u64::from(2 * args.rounds + 1)).max(1)),
        None => Duration::from_secs(args.phase_s),
    };
    let bin = std::env::current_exe()?;
    let options = |scenario: Scenario, seed: u64, report: PathBuf| RunOptions {
        scenario,
        seed,
        nodes: args.nodes,
        phase,
        rounds: args.rounds,
        writers: args.writers,
        operators: args.operators,
        robots: !args.no_robots,
        target: None,
        report,
        bin: bin.clone(),
        progress: true,
    };

    let mut summaries = Vec::new();
    if let Some(soak) = args.soak {
        let all: Vec<Scenario> = Scenario::ALL.into_iter().filter(runnable).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
        let until = std::time::Instant::now() + soak;
        for k in 0u64.. {
            if std::time::Instant::now() >= until {
                break;
            }
            let scenario = all[rng.random_range(0..all.len())];
            let seed = rng.random::<u64>() >> 16;
            let dir = args.report.join(format!("{k:04}-{}", scenario.name()));
            eprintln!("chaos soak #{k}: {} (seed {seed}) …", scenario.name());
            let summary = run(&options(scenario, seed, dir.clone())).await?;
            let valid = summary.valid;
            summaries.push((dir, summary));
            if !valid {
                break;
            }
            // Keep only failing reports: a soak runs for hours.
            let _ = std::fs::remove_dir_all(&summaries.last().expect("pushed").0);
        }
    } else {
        let scenarios: Vec<Scenario> = match args.scenario.as_str() {
            "all" => Scenario::ALL.into_iter().filter(runnable).collect(),
            name => vec![Scenario::parse(name).with_context(|| {
                format!("no scenario {name:?} ({}, or all)", Scenario::names())
            })?],
        };
        for scenario in scenarios {
            eprintln!("chaos: {} (seed {}) …", scenario.name(), args.seed);
            let dir = scenario_dir(&args.report, scenario);
            let summary = run(&options(scenario, args.seed, dir.clone())).await?;
            summaries.push((dir, summary));
        }
        let values: Vec<Value> = summaries
            .iter()
            .filter_map(|(_, s)| serde_json::to_value(s).ok())
            .collect();
        std::fs::write(
            args.report.join("index.html"),
            tether_chaos::report::render_index(&values),
        )?;
    }

    println!("{}", table(summaries.iter().map(|(_, s)| s)));
    let failed: Vec<String> = summaries
        .iter()
        .filter(|(_, s)| !s.valid)
        .map(|(dir, s)| format!("{} ({})", s.scenario, dir.display()))
        .collect();
    if !failed.is_empty() {
        bail!("checkers found violations in {}", failed.join(", "));
    }
    println!("reports: {}", args.report.join("index.html").display());
    Ok(())
}

/// A count a checker kept.
fn count(s: &Summary, checker: &str, key: &str) -> u64 {
    s.verdicts
        .iter()
        .find(|v| v.checker == checker)
        .and_then(|v| v.counts.get(key).copied())
        .unwrap_or(0)
}

/// The worst `figure` of the bounded-control checker under `bound` (`push` or `lease`).
fn worst(s: &Summary, bound: &str, figure: &str) -> String {
    let detail = s
        .verdicts
        .iter()
        .find(|v| v.checker == "bounded_control")
        .map(|v| &v.detail[bound][figure]);
    match detail.and_then(|d| d["max"].as_f64()) {
        Some(ms) => format!("{ms:.1}"),
        None => "-".into(),
    }
}

/// The one-screen summary: a row per run.
fn table<'a>(summaries: impl Iterator<Item = &'a Summary>) -> String {
    let mut out = format!(
        "{:<18} {:<8} {:>6} {:>5} {:>5} {:>6} {:>4} {:>5} {:>17} {:>17}\n",
        "scenario",
        "verdict",
        "ok",
        "fail",
        "info",
        "acked",
        "lost",
        "stale",
        "ack→last cmd ms",
        "ack→safe-stop ms"
    );
    for s in summaries {
        let outcome = |k: &str| s.outcomes.get(k).copied().unwrap_or(0);
        let pair =
            |figure: &str| format!("{}/{}", worst(s, "push", figure), worst(s, "lease", figure));
        out.push_str(&format!(
            "{:<18} {:<8} {:>6} {:>5} {:>5} {:>6} {:>4} {:>5} {:>17} {:>17}\n",
            s.scenario,
            if s.valid { "valid" } else { "INVALID" },
            outcome("ok"),
            outcome("fail"),
            outcome("info"),
            count(s, "no_lost_revocation", "acknowledged"),
            count(s, "no_lost_revocation", "lost"),
            count(s, "no_stale_admission", "stale"),
            pair("ack_to_last_command_ms"),
            pair("ack_to_safe_stop_ms"),
        ));
        for v in s.verdicts.iter().filter(|v| !v.is_valid()) {
            out.push_str(&format!("    {:<22} {:?}\n", v.checker, v.valid));
        }
        if let Some(why) = &s.premise_failed {
            out.push_str(&format!("    premise failed: {why}\n"));
        }
    }
    out.push_str("(worst figures: push bound / lease bound; - where none)\n");
    out
}

/// Re-checks `dir/history.jsonl` with the default bounds and redraws `dir/index.html`.
fn report(dir: &Path) -> Result<()> {
    let history = tether_chaos::history::read_jsonl(&dir.join("history.jsonl"))
        .with_context(|| format!("reading {}", dir.join("history.jsonl").display()))?;
    let mut summary: Value = std::fs::read(dir.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}));
    let robots = history
        .events
        .iter()
        .any(|e| matches!(e.body, tether_chaos::history::Body::CommandApplied { .. }));
    let params = Params {
        robots_drive: robots,
        ..Params::default()
    };
    let verdicts = check_all(&history, &params);
    let valid = verdicts.iter().all(|v| v.valid != Validity::Invalid)
        && summary["premise_failed"].is_null();
    for v in &verdicts {
        println!("{:<22} {:?} {:?}", v.checker, v.valid, v.counts);
    }
    summary["verdicts"] = serde_json::to_value(&verdicts)?;
    summary["valid"] = json!(valid);
    render_page(dir, &history, &summary)?;
    println!("redrawn: {}", dir.join("index.html").display());
    if !valid {
        bail!("checkers found violations");
    }
    Ok(())
}
