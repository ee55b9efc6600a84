//! One chaos run: a lab cluster, a workload of concurrent revocations on random nodes
//! (every call recorded invoke → ok / fail / info), one seeded fault per scenario with
//! traffic before, during and after it, a final read of every node once healed, and the
//! checkers of `tether-chaos` over the saved history. The report directory gets
//! `history.jsonl`, `summary.json` and the node logs.

use crate::cluster::LabCluster;
use crate::scenario::FaultPlan;
pub use crate::scenario::Scenario;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_api::{ClientError, Target};
use tether_chaos::check::{self, Params, Validity, Verdict};
use tether_chaos::history::{Body, Event, History, Op, Phase, RevocationKey, RevokeKind};

/// How a run goes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The fault.
    pub scenario: Scenario,
    /// Seeds the workload's choices (nodes, pauses).
    pub seed: u64,
    /// Gateway nodes (3 or 5).
    pub nodes: u64,
    /// Traffic before the fault, during it and after healing, each.
    pub phase: Duration,
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
    /// Where the report goes.
    pub report: PathBuf,
    /// The `tether` binary the nodes run.
    pub bin: PathBuf,
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
    /// Whether every checker found the history valid.
    pub valid: bool,
}

/// The shared, append-only history of a run.
#[derive(Clone, Default)]
pub(crate) struct Recorder(Arc<Mutex<Vec<Event>>>);

impl Recorder {
    pub(crate) fn push(&self, process: &str, node: Option<u64>, body: Body) {
        self.push_at(now_ms(), process, node, body);
    }

    /// An event observed at `t_ms` (another process's events file, same clock).
    pub(crate) fn push_at(&self, t_ms: f64, process: &str, node: Option<u64>, body: Body) {
        let event = Event {
            t_ms,
            process: process.to_owned(),
            node,
            body,
        };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    fn history(&self) -> History {
        History::new(self.0.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// CLOCK_MONOTONIC in milliseconds, the clock of every history and events file.
fn now_ms() -> f64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as f64 * 1000.0 + ts.tv_nsec() as f64 / 1e6
}

/// An answer's outcome: a 4xx definitely did nothing; a timeout, a 5xx or a lost
/// connection may have (the write can still commit).
pub(crate) fn completion(op: Op, result: Result<(), ClientError>) -> Body {
    match result {
        Ok(()) => Body::Ok { op },
        Err(ClientError::Api { status, body }) if status < 500 => Body::Fail {
            op,
            error: Some(body.code),
        },
        Err(e) => Body::Info {
            op,
            error: Some(e.to_string()),
        },
    }
}

/// Revokes `kind`/`target` through node `node` as `process`, recording the invoke and its
/// completion; true when acknowledged.
pub(crate) async fn recorded_revoke(
    cluster: &LabCluster,
    recorder: &Recorder,
    process: &str,
    node: u64,
    (kind, target): (RevokeKind, &str),
    reason: &str,
) -> bool {
    let op = Op::revoke(kind, target);
    recorder.push(process, Some(node), Body::Invoke { op: op.clone() });
    let what = match kind {
        RevokeKind::Session => Target::Session(target.to_owned()),
        RevokeKind::Token => Target::Token(target.to_owned()),
        RevokeKind::Operator => Target::Operator(target.to_owned()),
    };
    let result = cluster
        .client(node)
        .revoke(&what, reason, None)
        .await
        .map(|_| ());
    let acknowledged = result.is_ok();
    recorder.push(process, Some(node), completion(op, result));
    acknowledged
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

/// Runs one scenario and writes its report; the summary says whether it passed.
pub async fn run(options: &RunOptions) -> std::io::Result<Summary> {
    std::fs::create_dir_all(&options.report)?;
    let extra: &[&str] = if options.robots {
        &[crate::robots::ROBOT_HOST, crate::robots::CONSOLE_HOST]
    } else {
        &[]
    };
    let cluster = LabCluster::start_with_hosts(&options.bin, options.nodes, extra, |c| {
        // Elections within a few hundred ms keep the run short.
        c.raft.election_min_ms = 300;
        c.raft.election_max_ms = 600;
    })?;
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let robot = match options.robots {
        true => Some(crate::robots::start_robot(&cluster, &options.report)?),
        false => None,
    };
    let mut rng = StdRng::seed_from_u64(options.seed);
    let followers: Vec<u64> = (1..=options.nodes).filter(|id| *id != leader).collect();
    let target = match options.scenario {
        Scenario::IsolateFollower | Scenario::PauseFollower => {
            followers[rng.random_range(0..followers.len())]
        }
        _ => leader,
    };
    let target = options.target.unwrap_or(target);
    let plan = FaultPlan::new(options.scenario, target, options.nodes, &mut rng);
    if options.scenario.on_robot() && !options.robots {
        return Err(std::io::Error::other(format!(
            "{} needs the robot (leave out --no-robots)",
            options.scenario.name()
        )));
    }
    let recorder = Recorder::default();
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

    // Traffic before, then the fault, then traffic after healing.
    tokio::time::sleep(options.phase).await;
    let fault = options.scenario.name().to_owned();
    let on_robot = options.scenario.on_robot();
    let targets = if on_robot {
        vec![format!("robot-{}", crate::robots::ROBOT)]
    } else {
        plan.hit.iter().map(|id| format!("n{id}")).collect()
    };
    let nemesis = |phase| Body::Nemesis {
        fault: fault.clone(),
        targets: targets.clone(),
        phase,
    };
    let node_of_fault = (!on_robot && plan.hit.len() == 1).then_some(target);
    // With a robot, the fault waits until it drives (or 10 s): a fault on its paths needs
    // it, and a node fault should find it in a session.
    {
        if let Some(r) = &robot {
            crate::robots::wait_driving(&r.events(), now_ms(), Duration::from_secs(10)).await;
        }
    }
    // A session the node to be cut off knows, to be revoked while it cannot hear.
    let probe = match options.scenario {
        Scenario::IsolateFollower | Scenario::IsolateLeader | Scenario::RandomHalves => {
            crate::sessions::probe_before(&shared, &recorder, plan.hit[0]).await
        }
        _ => None,
    };
    recorder.push("nemesis", node_of_fault, nemesis(Phase::Start));
    let fault_start = now_ms();
    match options.scenario {
        Scenario::RobotCut | Scenario::MediaCut => {
            let r = robot.as_ref().expect("checked above");
            crate::robots::cut_robot(
                &shared,
                &recorder,
                r,
                options.scenario == Scenario::MediaCut,
                options.phase,
                options.seed,
            )
            .await?;
        }
        Scenario::IsolateFollower | Scenario::IsolateLeader | Scenario::RandomHalves => {
            // From the other nodes only: robots and consoles still reach it, as clients
            // of a node in a minority would.
            let others = shared.hosts_except(&plan.hit);
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            let mut cuts = Vec::new();
            for id in &plan.hit {
                cuts.push(shared.lab.cut(&shared.node(*id).host, &others)?);
            }
            let until = tokio::time::Instant::now() + options.phase;
            if let Some(probe) = probe {
                // Past the election timeout, so even a cut-off leader must know.
                tokio::time::sleep(Duration::from_millis(700)).await;
                crate::sessions::probe_during(&shared, &recorder, plan.hit[0], probe).await;
            }
            tokio::time::sleep_until(until).await;
            drop(cuts);
        }
        Scenario::OneWayLeader | Scenario::LossyLinks => {
            let mut cuts = Vec::new();
            for id in &plan.hit {
                let others = shared.hosts_except(&[*id]);
                let others: Vec<&str> = others.iter().map(String::as_str).collect();
                let host = &shared.node(*id).host;
                cuts.push(match options.scenario {
                    Scenario::OneWayLeader => shared.lab.cut_one_way(host, &others)?,
                    _ => shared.lab.lossy(host, &others, 3)?,
                });
            }
            tokio::time::sleep(options.phase).await;
            drop(cuts);
        }
        Scenario::KillLeader | Scenario::KillMajority | Scenario::KillAll => {
            for id in &plan.hit {
                shared.kill(*id);
            }
            tokio::time::sleep(options.phase).await;
        }
        Scenario::PauseLeader | Scenario::PauseFollower => {
            for id in &plan.hit {
                shared.pause(*id, true);
            }
            let pause = options
                .phase
                .clamp(Duration::from_secs(1), Duration::from_secs(10));
            tokio::time::sleep(pause).await;
            for id in &plan.hit {
                shared.pause(*id, false);
            }
        }
    }
    // A cut-off node, a killed one and a frozen one alike have no contact with a quorum
    // meanwhile (with a majority killed, the survivors have none either).
    let fault_end = now_ms();
    for id in &plan.quorum_lost {
        recorder.push(
            "nemesis",
            Some(*id),
            Body::QuorumLost {
                from_ms: fault_start,
                to_ms: fault_end,
            },
        );
    }
    recorder.push("nemesis", node_of_fault, nemesis(Phase::Stop));
    if matches!(
        options.scenario,
        Scenario::KillLeader | Scenario::KillMajority | Scenario::KillAll
    ) {
        for id in &plan.hit {
            shared.restart(*id)?;
        }
    }
    // Traffic after healing outlasts the checkers' grace, so liveness has something to see;
    // a robot needs a few seconds to drive again (a console reconnects, a new session
    // arms), so at least 4 s besides the grace.
    let after = options.phase.max(Duration::from_secs(4));
    tokio::time::sleep(after + Duration::from_millis(Params::default().heal_grace_ms as u64)).await;
    let _ = stop_tx.send(true);
    for w in writers {
        let _ = w.await;
    }

    // Healed: every node must hold every acknowledged revocation.
    let cluster = shared;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    settle(&cluster).await;
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
    drop(robot);
    let history = recorder.history();
    tether_chaos::history::write_jsonl(&options.report.join("history.jsonl"), &history)
        .map_err(std::io::Error::other)?;
    let nemesis_log = History::new(
        history
            .events
            .iter()
            .filter(|e| matches!(e.body, Body::Nemesis { .. } | Body::QuorumLost { .. }))
            .cloned()
            .collect(),
    );
    tether_chaos::history::write_jsonl(&options.report.join("nemesis.jsonl"), &nemesis_log)
        .map_err(std::io::Error::other)?;
    for node in 1..=options.nodes {
        std::fs::write(
            options.report.join(format!("node{node}.log")),
            cluster.log(node),
        )?;
    }
    // Without robots, liveness does not ask for applied commands.
    let params = Params {
        robots_drive: options.robots,
        ..Params::default()
    };
    let verdicts = check::check_all(&history, &params);
    let summary = summarize(options, &history, verdicts);
    std::fs::write(
        options.report.join("summary.json"),
        serde_json::to_vec_pretty(&summary).map_err(std::io::Error::other)?,
    )?;
    Ok(summary)
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

fn summarize(options: &RunOptions, history: &History, verdicts: Vec<Verdict>) -> Summary {
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
    let valid = verdicts
        .iter()
        .all(|v| !matches!(v.valid, Validity::Invalid));
    Summary {
        scenario: options.scenario.name(),
        seed: options.seed,
        reproduce: format!(
            "tether chaos run --scenario {} --seed {} --nodes {} --phase-s {} --report {}",
            options.scenario.name(),
            options.seed,
            options.nodes,
            options.phase.as_secs(),
            options.report.display()
        ),
        outcomes,
        verdicts,
        valid,
    }
}

/// The report directory for one scenario of a run rooted at `root`.
pub fn scenario_dir(root: &Path, scenario: Scenario) -> PathBuf {
    root.join(scenario.name())
}
