//! One chaos run: a lab cluster, a workload of concurrent revocations, sessions and a
//! robot driving over WebRTC (every call recorded invoke → ok / fail / info), one seeded
//! kind of fault in rounds with traffic before, during, between and after, a final read of
//! every node once healed, and the checkers of `tether-chaos` over the saved history. The
//! report directory gets `history.jsonl`, `nemesis.jsonl`, `summary.json`, the node, robot
//! and console logs, and `index.html`.
//!
//! Long file: a run is one sequence (lab, workload, rounds of the fault, final reads,
//! checks, report) whose steps share its state; read top to bottom.

use crate::cluster::LabCluster;
use crate::nemesis::{caught_up_by_snapshot, Aftermath, Fault};
use crate::recorder::{now_ms, recorded_revoke, Recorder};
use crate::scenario::FaultPlan;
pub use crate::scenario::Scenario;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_api::ClientError;
use tether_chaos::check::{self, Params, Validity, Verdict};
use tether_chaos::history::{Body, History, Op, RevocationKey, RevokeKind};

/// How a run goes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The fault.
    pub scenario: Scenario,
    /// Seeds the workload's choices (nodes, pauses).
    pub seed: u64,
    /// Gateway nodes (3 or 5).
    pub nodes: u64,
    /// Traffic before the fault, during it and after healing, each (and between rounds).
    pub phase: Duration,
    /// Times the fault is inflicted and healed, with traffic between (at least 1; a
    /// snapshot catch-up is one long fault).
    pub rounds: u32,
    /// Concurrent admin clients.
    pub writers: usize,
    /// Concurrent operators (start, join, end or revoke-and-rejoin sessions).
    pub operators: usize,
    /// A robot agent and consoles driving it over WebRTC, each in a namespace of its own;
    /// their sessions are revoked while they drive.
    pub robots: bool,
    /// The node a node fault hits, instead of the scenario's choice (the chaos suite's own
    /// tests aim a fault at the robot's gateway).
    pub target: Option<u64>,
    /// Where the report goes (emptied first: the run owns it).
    pub report: PathBuf,
    /// The `tether` binary the nodes run.
    pub bin: PathBuf,
    /// Print a progress line to stderr while the run goes.
    pub progress: bool,
}

/// What a run found.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// The scenario.
    pub scenario: &'static str,
    /// The seed.
    pub seed: u64,
    /// The command that reproduces the run.
    pub reproduce: String,
    /// Operations by outcome (`ok`, `fail`, `info`).
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Every checker's verdict.
    pub verdicts: Vec<Verdict>,
    /// Figures of the fault itself (packets relayed, log indexes of a snapshot catch-up).
    pub fault: serde_json::Map<String, serde_json::Value>,
    /// Why the run did not test what its scenario says, if it did not (then not valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub premise_failed: Option<String>,
    /// Whether every checker found the history valid (and the premise held).
    pub valid: bool,
}

/// One admin client: revokes unique token ids on random nodes until `stop`.
async fn writer(
    cluster: Arc<LabCluster>,
    recorder: Recorder,
    index: usize,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
    let process = format!("admin-{index}");
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    for n in 0u64.. {
        if *stop.borrow() {
            return;
        }
        let node = ids[rng.random_range(0..ids.len())];
        let target = format!("jti-{index}-{n}");
        let what = (RevokeKind::Token, target.as_str());
        recorded_revoke(&cluster, &recorder, &process, node, what, "chaos").await;
        // A short, seeded pause keeps the load steady rather than flat out.
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..25))).await;
    }
}

/// Every revocation node `id` holds, page by page.
async fn read_all(cluster: &LabCluster, id: u64) -> Result<Vec<RevocationKey>, ClientError> {
    let client = cluster.client(id);
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_owned())];
        if let Some(a) = &after {
            query.push(("after", a.clone()));
        }
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = client.list(&query).await?;
        keys.extend(page.items.iter().map(|e| {
            let kind = match e.kind.as_str() {
                "session" => RevokeKind::Session,
                "operator" => RevokeKind::Operator,
                _ => RevokeKind::Token,
            };
            RevocationKey::new(kind, &e.target)
        }));
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(keys),
        }
    }
}

/// Which stage a run is in, for the progress line.
#[derive(Clone, Default)]
struct Stage(Arc<Mutex<&'static str>>);

impl Stage {
    fn set(&self, stage: &'static str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = stage;
    }

    fn get(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Prints `scenario  stage  seconds  ok/fail/info  commands` to stderr every second until
/// aborted (in place on a terminal, a line every 5 s otherwise).
async fn progress(
    scenario: &'static str,
    stage: Stage,
    recorder: Recorder,
    robot: Option<Arc<tether_agent::events::EventsReader>>,
) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let began = tokio::time::Instant::now();
    for tick in 1u64.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !tty && tick % 5 != 0 {
            continue;
        }
        let [ok, fail, info] = recorder.tally();
        let commands = robot.as_ref().map_or(0, |r| {
            r.read()
                .iter()
                .filter(|e| e["event"] == "command_applied")
                .count()
        });
        let line = format!(
            "  {scenario:<18} {:<9} {:>5.1} s  ok {ok} fail {fail} info {info}  robot commands {commands}",
            stage.get(),
            began.elapsed().as_secs_f64()
        );
        if tty {
            eprint!("\r{line:<100}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Runs one scenario and writes its report; the summary says whether it passed.
pub async fn run(options: &RunOptions) -> std::io::Result<Summary> {
    let scenario = options.scenario;
    if options.nodes < scenario.min_nodes() {
        return Err(std::io::Error::other(format!(
            "{} needs at least {} nodes (--nodes {})",
            scenario.name(),
            scenario.min_nodes(),
            scenario.min_nodes()
        )));
    }
    if scenario.on_robot() && !options.robots {
        return Err(std::io::Error::other(format!(
            "{} needs the robot (leave out --no-robots)",
            scenario.name()
        )));
    }
    // A report of its own: the agent and the consoles append to their event files, and an
    // earlier run's events would join this history.
    match std::fs::remove_dir_all(&options.report) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(&options.report)?;
    let extra: &[&str] = if options.robots {
        &[crate::robots::ROBOT_HOST, crate::robots::CONSOLE_HOST]
    } else {
        &[]
    };
    let mut cluster = LabCluster::prepare(&options.bin, options.nodes, extra, |c| {
        // Elections within a few hundred ms keep the run short.
        c.raft.election_min_ms = 300;
        c.raft.election_max_ms = 600;
        if scenario == Scenario::SnapshotCatchUp {
            // Compaction every few dozen writes, so a follower cut off for seconds falls
            // behind the leader's log.
            c.raft.snapshot_logs = 64;
            c.raft.keep_logs = 16;
        }
        if scenario == Scenario::BadLinks {
            // A cluster configured for its links: openraft gives up on an append-entries
            // call after one heartbeat interval, which 15–40 ms each way with 5 % loss
            // often outlasts at the default (see docs/chaos.md, "Found by the suite").
            c.raft.heartbeat_ms = 150;
            c.raft.election_min_ms = 500;
            c.raft.election_max_ms = 900;
        }
    })?;
    if scenario.uses_relays() {
        cluster.start_relays(options.seed).await?;
    }
    cluster.start_nodes()?;
    let leader = match cluster.wait_for_leader(Duration::from_secs(30)).await {
        Ok(leader) => leader,
        Err(e) => {
            // The logs say why; the lab goes with the cluster.
            for node in &cluster.nodes {
                let log = options.report.join(format!("node{}.log", node.id));
                std::fs::write(log, cluster.log(node.id))?;
            }
            let dir = options.report.display();
            let relayed = match &cluster.relays {
                Some(r) => format!("; packets relayed per link: {:?}", r.packets()),
                None => String::new(),
            };
            return Err(std::io::Error::other(format!(
                "{e} (node logs in {dir}{relayed})"
            )));
        }
    };
    let robot = match options.robots {
        true => Some(crate::robots::start_robot(&cluster, &options.report)?),
        false => None,
    };
    let mut rng = StdRng::seed_from_u64(options.seed);
    let recorder = Recorder::default();
    let stage = Stage::default();
    stage.set("before");
    let ticker = options.progress.then(|| {
        tokio::spawn(progress(
            scenario.name(),
            stage.clone(),
            recorder.clone(),
            robot.as_ref().map(|r| r.events()),
        ))
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(cluster);
    let writers: Vec<_> = (0..options.writers)
        .map(|i| {
            tokio::spawn(writer(
                shared.clone(),
                recorder.clone(),
                i,
                options.seed,
                stop_rx.clone(),
            ))
        })
        .chain(robot.as_ref().map(|r| {
            tokio::spawn(crate::robots::drive(
                shared.clone(),
                recorder.clone(),
                r.events(),
                options.report.clone(),
                options.seed,
                stop_rx.clone(),
            ))
        }))
        .chain((0..options.operators).map(|i| {
            tokio::spawn(crate::sessions::operator(
                shared.clone(),
                recorder.clone(),
                i,
                options.seed,
                stop_rx.clone(),
            ))
        }))
        .collect();

    // Traffic before the fault. With a robot, the fault waits until it drives (or 10 s): a
    // fault on its paths needs it, and a node fault should find it in a session.
    tokio::time::sleep(options.phase).await;
    if let Some(r) = &robot {
        crate::robots::wait_driving(&r.events(), now_ms(), Duration::from_secs(10)).await;
    }
    stage.set("fault");
    let rounds = match scenario {
        Scenario::SnapshotCatchUp => 1,
        _ => options.rounds.max(1),
    };
    let mut aftermath = Aftermath::default();
    for round in 0..rounds {
        if round > 0 {
            // Healed traffic between the rounds; the next fault, like the first, finds the
            // robot driving (a revoked session is replaced by a console's next one).
            stage.set("between");
            tokio::time::sleep(options.phase).await;
            if let Some(r) = &robot {
                crate::robots::wait_driving(&r.events(), now_ms(), Duration::from_secs(10)).await;
            }
            stage.set("fault");
        }
        let target = fault_target(&shared, scenario, robot.as_ref(), leader, &mut rng).await;
        let target = options.target.unwrap_or(target);
        let plan = FaultPlan::new(scenario, target, options.nodes, &mut rng);
        // A session the node to be cut off knows, to be revoked while it cannot hear.
        let probe = match scenario {
            Scenario::IsolateFollower | Scenario::IsolateLeader | Scenario::RandomHalves => {
                crate::sessions::probe_before(&shared, &recorder, plan.hit[0]).await
            }
            _ => None,
        };
        let fault = Fault {
            cluster: &shared,
            recorder: &recorder,
            robot: robot.as_ref(),
            scenario,
            plan: &plan,
            hold: options.phase,
            seed: options.seed.wrapping_add(u64::from(round)),
        };
        let this = fault.inflict(probe).await?;
        aftermath.premise_failed = aftermath.premise_failed.or(this.premise_failed);
        aftermath.facts.extend(this.facts);
    }
    stage.set("healed");
    // Traffic after healing outlasts the checkers' grace, so liveness has something to see;
    // a robot needs a few seconds to drive again (a console reconnects, a new session
    // arms), so at least 4 s besides the grace.
    let healed_at = now_ms();
    let grace_ms = Params::default().heal_grace_ms;
    let after = options.phase.max(Duration::from_secs(4));
    tokio::time::sleep(after + Duration::from_millis(grace_ms as u64)).await;
    if let Some(r) = &robot {
        // Consoles that backed off through several faults (every node killed, twice) may
        // take longer to drive again: the traffic goes on until the robot arms after the
        // grace (at most 20 s more), so liveness judges its recovery, not the run's length.
        let since = healed_at + grace_ms;
        if crate::robots::wait_driving(&r.events(), since, Duration::from_secs(20))
            .await
            .is_some()
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let _ = stop_tx.send(true);
    stage.set("checking");
    for w in writers {
        let _ = w.await;
    }

    // Healed: every node must hold every acknowledged revocation.
    let cluster = shared;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    settle(&cluster).await;
    caught_up_by_snapshot(&cluster, &mut aftermath).await;
    for node in 1..=options.nodes {
        let revocations = read_all(&cluster, node).await.unwrap_or_default();
        recorder.push(
            "final-read",
            Some(node),
            Body::Ok {
                op: Op::Read { node, revocations },
            },
        );
    }
    if let Some(robot) = &robot {
        crate::robots::robot_history(&cluster, robot, &recorder);
    }
    if let Some(t) = ticker {
        t.abort();
        if options.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!();
        }
    }
    drop(robot);
    let history = recorder.history();
    // Without robots, liveness does not ask for applied commands.
    let params = Params {
        robots_drive: options.robots,
        ..Params::default()
    };
    let verdicts = check::check_all(&history, &params);
    let summary = summarize(options, &history, verdicts, aftermath);
    write_report(&options.report, &cluster, &history, &summary)?;
    Ok(summary)
}

/// Where a round's fault lands: the leader as it is now, a follower, or the robot's
/// gateway (`leader` when none is known).
async fn fault_target(
    cluster: &LabCluster,
    scenario: Scenario,
    robot: Option<&crate::robots::Robot>,
    leader: u64,
    rng: &mut StdRng,
) -> u64 {
    let leader = cluster
        .wait_for_leader(Duration::from_secs(5))
        .await
        .unwrap_or(leader);
    let nodes = cluster.nodes.len() as u64;
    let followers: Vec<u64> = (1..=nodes).filter(|id| *id != leader).collect();
    match scenario {
        Scenario::IsolateFollower | Scenario::PauseFollower | Scenario::SnapshotCatchUp => {
            followers[rng.random_range(0..followers.len())]
        }
        Scenario::GatewayMinority => robot
            .and_then(|r| crate::robots::gateway_of(cluster, r))
            .unwrap_or(leader),
        _ => leader,
    }
}

/// Writes the history, the nemesis log, the node logs, `summary.json` and `index.html`.
fn write_report(
    dir: &Path,
    cluster: &LabCluster,
    history: &History,
    summary: &Summary,
) -> std::io::Result<()> {
    tether_chaos::history::write_jsonl(&dir.join("history.jsonl"), history)
        .map_err(std::io::Error::other)?;
    let nemesis_log = History::new(
        history
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e.body,
                    Body::Nemesis { .. } | Body::QuorumLost { .. } | Body::QuorumKept { .. }
                )
            })
            .cloned()
            .collect(),
    );
    tether_chaos::history::write_jsonl(&dir.join("nemesis.jsonl"), &nemesis_log)
        .map_err(std::io::Error::other)?;
    for node in &cluster.nodes {
        std::fs::write(
            dir.join(format!("node{}.log", node.id)),
            cluster.log(node.id),
        )?;
    }
    let summary = serde_json::to_value(summary).map_err(std::io::Error::other)?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_vec_pretty(&summary).map_err(std::io::Error::other)?,
    )?;
    render_page(dir, history, &summary)
}

/// Draws `index.html` in `dir` from a history and its summary (also for a saved report).
pub fn render_page(
    dir: &Path,
    history: &History,
    summary: &serde_json::Value,
) -> std::io::Result<()> {
    let mut files: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f != "index.html")
        .collect();
    files.sort();
    let page =
        tether_chaos::report::render(history, summary, &files).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("index.html"), page)
}

/// Waits until every node has applied as far as the leader has committed (or 10 s).
async fn settle(cluster: &LabCluster) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let mut views = Vec::new();
        for node in &cluster.nodes {
            views.push(cluster.client(node.id).cluster().await.ok());
        }
        let commit = views.iter().flatten().filter_map(|v| v.commit_index).max();
        if views
            .iter()
            .all(|v| v.as_ref().is_some_and(|v| v.applied_index >= commit))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summarize(
    options: &RunOptions,
    history: &History,
    verdicts: Vec<Verdict>,
    aftermath: Aftermath,
) -> Summary {
    let mut outcomes = std::collections::BTreeMap::new();
    for e in &history.events {
        let key = match e.body {
            Body::Ok { .. } => "ok",
            Body::Fail { .. } => "fail",
            Body::Info { .. } => "info",
            _ => continue,
        };
        *outcomes.entry(key.to_owned()).or_insert(0) += 1;
    }
    let valid = aftermath.premise_failed.is_none()
        && verdicts
            .iter()
            .all(|v| !matches!(v.valid, Validity::Invalid));
    Summary {
        scenario: options.scenario.name(),
        seed: options.seed,
        reproduce: format!(
            "tether chaos run --scenario {} --seed {} --nodes {} --phase-s {} --rounds {} --report {}",
            options.scenario.name(),
            options.seed,
            options.nodes,
            options.phase.as_secs(),
            options.rounds,
            options.report.display()
        ),
        outcomes,
        verdicts,
        fault: aftermath.facts,
        premise_failed: aftermath.premise_failed,
        valid,
    }
}

/// The report directory for one scenario of a run rooted at `root`.
pub fn scenario_dir(root: &Path, scenario: Scenario) -> PathBuf {
    root.join(scenario.name())
}
