//! Robots in a chaos run: a real robot agent in its own namespace and headless consoles in
//! another, driving over WebRTC between the two namespaces (host candidates on their
//! namespace addresses), while the runner revokes their sessions through random nodes.
//! The agent's events file joins the history: applied commands, safe-stops, and the leases
//! it received from the gateway it was connected to.

use crate::cluster::LabCluster;
use crate::recorder::{recorded_revoke, Recorder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tether_agent::events::EventsReader;
use tether_chaos::history::{Body, Op, RevokeKind};
use tether_devkit::ChildProcess;
use tether_node::auth::Role;
use tether_store::SessionState;

/// The lab hosts robots and consoles run in.
pub const ROBOT_HOST: &str = "robot-1";
/// See [`ROBOT_HOST`].
pub const CONSOLE_HOST: &str = "console-1";
/// The robot's id.
pub const ROBOT: &str = "r1";

/// The robot agent process; killed on drop.
pub(crate) struct Robot {
    _agent: ChildProcess,
    /// Read incrementally: the runner polls it every 20 ms for a whole run.
    events: Arc<EventsReader>,
}

impl Robot {
    /// Its events file, as read so far.
    pub(crate) fn events(&self) -> Arc<EventsReader> {
        self.events.clone()
    }
}

/// Starts the robot agent in its namespace, failing over across every node.
pub(crate) fn start_robot(cluster: &LabCluster, dir: &Path) -> std::io::Result<Robot> {
    let token = cluster
        .secrets
        .mint(ROBOT, Role::Robot, Duration::from_secs(3600))?;
    let events = dir.join("robot-events.jsonl");
    let log = std::fs::File::create(dir.join("robot.log"))?;
    let mut command = cluster.lab.command(ROBOT_HOST, cluster.bin());
    command
        .args([
            "agent",
            "--gateway",
            &cluster.gateways(),
            "--robot-id",
            ROBOT,
        ])
        .arg("--rtc-ip")
        .arg(cluster.lab.host(ROBOT_HOST).addr.to_string())
        .arg("--events")
        .arg(&events)
        .env("TETHER_ROBOT_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(Robot {
        _agent: ChildProcess::spawn(command)?,
        events: Arc::new(EventsReader::new(events)),
    })
}

/// Drives sessions until `stop`: a console starts one and drives it; once the robot has
/// armed for it, after a seeded pause, an admin revokes it through a random node (recorded
/// in the history); the console must then end with `revoked`.
pub(crate) async fn drive(
    cluster: Arc<LabCluster>,
    recorder: Recorder,
    robot_events: Arc<EventsReader>,
    dir: PathBuf,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xd21e);
    let Ok(login) = cluster
        .secrets
        .mint("driver", Role::Operator, Duration::from_secs(3600))
    else {
        return;
    };
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    for k in 0u64.. {
        if *stop.borrow() {
            return;
        }
        let node = ids[rng.random_range(0..ids.len())];
        let log = match std::fs::File::create(dir.join(format!("console-{k}.log"))) {
            Ok(f) => f,
            Err(_) => return,
        };
        let mut command = cluster.lab.command(CONSOLE_HOST, cluster.bin());
        command
            .args(["console", "--gateway"])
            .arg(format!("http://{}", cluster.node(node).http))
            .args(["--robot-id", ROBOT, "--rtc-ip"])
            .arg(cluster.lab.host(CONSOLE_HOST).addr.to_string())
            .arg("--events")
            .arg(dir.join(format!("console-{k}.jsonl")))
            .env("TETHER_OPERATOR_TOKEN", &login)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file clones"))
            .stderr(log);
        let Ok(mut console) = ChildProcess::spawn(command) else {
            return;
        };
        // The robot arms for a session it has not armed for before.
        let seen: Vec<String> = robot_events
            .read()
            .iter()
            .filter(|e| e["event"] == "armed")
            .filter_map(|e| e["session_id"].as_str().map(str::to_owned))
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let session = loop {
            let armed = robot_events.read().into_iter().find_map(|e| {
                let sid = e["session_id"].as_str()?.to_owned();
                (e["event"] == "armed" && !seen.contains(&sid)).then_some(sid)
            });
            // A console that gave up (its gateway was down) ends the wait: the next tries.
            let gave_up = console.try_wait().is_some();
            if armed.is_some()
                || gave_up
                || tokio::time::Instant::now() > deadline
                || *stop.borrow()
            {
                break armed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(sid) = session else {
            // No drive this round (a fault may hold it up): the console goes, the next
            // tries; a session it started without arming goes too, or the robot stays busy.
            console.kill();
            let leftovers = cluster
                .client(ids[rng.random_range(0..ids.len())])
                .sessions()
                .await;
            let leftovers = (leftovers.map(|l| l.items).unwrap_or_default().into_iter())
                .filter(|s| s.robot_id == ROBOT && s.state == SessionState::Active);
            for s in leftovers {
                revoke_until_acknowledged(&cluster, &recorder, &mut rng, &s.session_id, &stop)
                    .await;
            }
            continue;
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        revoke_until_acknowledged(&cluster, &recorder, &mut rng, &sid, &stop).await;
        // The console ends on its own when told; a stuck one is killed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while console.try_wait().is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        console.kill();
    }
}

/// Revokes session `sid` (recorded) until a node acknowledges it, as an admin would retry:
/// a session left active (its revocation lost with a killed majority, or its console gone
/// before it armed) keeps the robot busy, and sessions do not end on their own yet (issue
/// 13's idle timeout).
async fn revoke_until_acknowledged(
    cluster: &LabCluster,
    recorder: &Recorder,
    rng: &mut StdRng,
    sid: &str,
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    loop {
        let node = ids[rng.random_range(0..ids.len())];
        let what = (RevokeKind::Session, sid);
        let acknowledged =
            recorded_revoke(cluster, recorder, "driver-admin", node, what, "chaos drive").await;
        if acknowledged || *stop.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The robot's observations as history events: applied commands, safe-stops, and the
/// leases it received, each lease attributed to the gateway it was connected to then.
pub(crate) fn robot_history(cluster: &LabCluster, robot: &Robot, recorder: &Recorder) {
    let mut gateway: Option<u64> = None;
    for e in robot.events.read() {
        let t = e["t_ms"].as_f64().unwrap_or(0.0);
        let sid = e["session_id"].as_str().unwrap_or_default().to_owned();
        let body = match e["event"].as_str().unwrap_or_default() {
            "gateway_connected" => {
                gateway = e["gateway"].as_str().and_then(|g| cluster.node_at(g));
                continue;
            }
            "command_applied" => Body::CommandApplied {
                robot: ROBOT.into(),
                session_id: sid,
                seq: e["seq"].as_u64().unwrap_or(0),
            },
            "safe_stop" => Body::SafeStop {
                robot: ROBOT.into(),
                session_id: (!sid.is_empty()).then_some(sid),
                cause: e["cause"].as_str().unwrap_or_default().to_owned(),
            },
            "lease_received" => Body::Ok {
                op: Op::lease(ROBOT, &sid, e["nonce"].as_u64().unwrap_or(0)),
            },
            _ => continue,
        };
        recorder.push_at(t, &format!("robot-{ROBOT}"), gateway, body);
    }
}

/// The gateway node the robot is connected to now (its latest `gateway_connected`).
pub(crate) fn gateway_of(cluster: &LabCluster, robot: &Robot) -> Option<u64> {
    let events = robot.events.read();
    let connected = events
        .iter()
        .rev()
        .find(|e| e["event"] == "gateway_connected")?;
    cluster.node_at(connected["gateway"].as_str()?)
}

/// The session the robot armed for most recently at or after `since_ms`, waiting up to
/// `timeout` for one.
pub(crate) async fn wait_driving(
    events: &EventsReader,
    since_ms: f64,
    timeout: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let armed = events
            .read()
            .into_iter()
            .filter(|e| e["event"] == "armed")
            .filter(|e| e["t_ms"].as_f64().unwrap_or(0.0) >= since_ms)
            .filter_map(|e| e["session_id"].as_str().map(str::to_owned))
            .next_back();
        if armed.is_some() || tokio::time::Instant::now() > deadline {
            return armed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fault on the robot's paths for `hold`: the media to the console (`media`), or every
/// gateway — and then the session it drives is revoked meanwhile, so that only its lease
/// running out can stop it. Recorded as `control_cut` start and stop.
pub(crate) async fn cut_robot(
    cluster: &LabCluster,
    recorder: &Recorder,
    robot: &Robot,
    media: bool,
    hold: Duration,
    seed: u64,
) -> std::io::Result<()> {
    use tether_chaos::history::{CutLink, Phase};
    let link = if media {
        CutLink::Media
    } else {
        CutLink::Gateway
    };
    let driving = wait_driving(&robot.events, 0.0, Duration::from_secs(1)).await;
    let from: Vec<String> = if media {
        vec![CONSOLE_HOST.to_owned()]
    } else {
        cluster.nodes.iter().map(|n| n.host.clone()).collect()
    };
    let from: Vec<&str> = from.iter().map(String::as_str).collect();
    let cut = cluster.lab.cut(ROBOT_HOST, &from)?;
    let process = format!("robot-{ROBOT}");
    recorder.push(
        &process,
        None,
        Body::ControlCut {
            robot: ROBOT.into(),
            link,
            phase: Phase::Start,
        },
    );
    if let (false, Some(sid)) = (media, driving) {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xc07);
        let node = cluster.nodes[rng.random_range(0..cluster.nodes.len())].id;
        let what = (RevokeKind::Session, sid.as_str());
        recorded_revoke(
            cluster,
            recorder,
            "nemesis-admin",
            node,
            what,
            "robot cut off",
        )
        .await;
    }
    tokio::time::sleep(hold.min(Duration::from_secs(3))).await;
    cut.heal();
    recorder.push(
        &process,
        None,
        Body::ControlCut {
            robot: ROBOT.into(),
            link,
            phase: Phase::Stop,
        },
    );
    Ok(())
}
