//! `tether bench robot`: how fast the robot stops. A real agent process (robot connected to
//! node 1) and in-process consoles over real WebRTC on a fresh 3-node cluster; times come
//! from the agent's events file and this process, both on CLOCK_MONOTONIC.
//!
//! - revoke → safe-stop: a console drives, the session is revoked through node 3;
//! - control loss → safe-stop: the console falls silent (its task is dropped mid-drive);
//! - lease expiry → safe-stop: iptables cuts the robot off from every gateway;
//! - a lease anchored on a stalled link: the robot's link is held 3 s (its TCP connection
//!   kept, so a backlog of requests and leases is delivered on release), then released; no
//!   command may be applied later than TTL after the lease request that preceded the grant.

use crate::raft::BenchCluster;
use crate::report::{histogram, ms, write_markdown_section, Latency};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tether_agent::console::{ConsoleOptions, Outcome};
use tether_agent::events::{millis, monotonic_now, EventLog, EventsReader};
use tether_api::{Client, Target};
use tether_node::auth::Role;

/// `tether bench robot`.
#[derive(clap::Args, Debug)]
pub(crate) struct RobotBenchArgs {
    /// Trials of revoke → safe-stop.
    #[arg(long, default_value_t = 100)]
    pub(crate) trials: usize,
    /// Trials of control loss → safe-stop.
    #[arg(long, default_value_t = 30)]
    pub(crate) control_loss_trials: usize,
    /// Trials of lease expiry → safe-stop (needs root for iptables; 0 skips).
    #[arg(long, default_value_t = 10)]
    pub(crate) lease_trials: usize,
    /// Trials of a stalled link (held 3 s, then released; needs root for iptables; 0 skips).
    #[arg(long, default_value_t = 3)]
    pub(crate) stall_trials: usize,
    /// Where the markdown table goes (its `robot` section is replaced).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub(crate) markdown: PathBuf,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/robot.json")]
    pub(crate) json: PathBuf,
}

/// Everything `tether bench robot` measured.
#[derive(Serialize, Debug)]
pub(crate) struct RobotReport {
    /// When.
    pub(crate) when: String,
    /// Revoke posted (request sent) → robot safe-stop.
    pub(crate) revoke_posted_to_safe_stop: Latency,
    /// Revoke accepted (HTTP 200 received) → robot safe-stop; negative samples (the robot
    /// stopped before the admin saw the 200) count as 0.
    pub(crate) revoke_accepted_to_safe_stop: Latency,
    /// Trials where the robot had stopped before the 200 reached the admin.
    pub(crate) stopped_before_accepted: usize,
    /// Last applied command → safe-stop (control-loss timeout included).
    pub(crate) control_loss_to_safe_stop: Latency,
    /// The control-loss timeout.
    pub(crate) control_timeout_ms: u64,
    /// Cut from every gateway → safe-stop, ms, per trial.
    pub(crate) lease_expiry_ms: Vec<f64>,
    /// The lease TTL.
    pub(crate) lease_ttl_ms: u64,
    /// The stalled-link trials.
    pub(crate) stalled_link: Vec<StallTrial>,
    /// Over the whole run: the largest (command applied − the request time of the newest
    /// lease received before it), ms; the bound says below the TTL.
    pub(crate) worst_command_after_anchor_ms: f64,
    /// Commands applied beyond TTL (+1 ms of stamping tolerance) after their anchor.
    pub(crate) commands_beyond_anchor: usize,
}

/// One stalled-link trial.
#[derive(Serialize, Debug)]
pub(crate) struct StallTrial {
    /// Hold begun → lease-expiry safe-stop, ms.
    pub(crate) hold_to_safe_stop_ms: f64,
    /// The last command applied during the hold, after the last lease request answered
    /// before the hold (its anchor), ms; the bound says below the TTL.
    pub(crate) last_command_after_anchor_ms: f64,
    /// Leases that arrived after the hold already spent (request time + TTL passed): they
    /// granted nothing.
    pub(crate) spent_leases_dropped: usize,
    /// Release → the robot armed again, ms.
    pub(crate) release_to_rearmed_ms: f64,
}

/// The lease anchor check over the events: for each applied command, how long after the
/// request time of the newest lease received before it. Returns (worst, beyond TTL + 1 ms).
fn anchor_margins(events: &[Value], ttl_ms: f64) -> (f64, usize) {
    // The file interleaves two writers (the agent's network task and the safety core's
    // writer thread): go by time.
    let mut events: Vec<&Value> = events.iter().collect();
    events.sort_by(|a, b| t_ms(a).total_cmp(&t_ms(b)));
    let mut requested: std::collections::HashMap<(String, u64), f64> = Default::default();
    let mut anchor: std::collections::HashMap<String, f64> = Default::default();
    let (mut worst, mut beyond) = (0.0f64, 0);
    for e in events {
        let sid = e["session_id"].as_str().unwrap_or_default().to_owned();
        let nonce = e["nonce"].as_u64().unwrap_or(0);
        match e["event"].as_str() {
            Some("lease_requested") => {
                requested.insert((sid, nonce), t_ms(e));
            }
            Some("lease_received") => {
                if let Some(at) = requested.get(&(sid.clone(), nonce)) {
                    let a = anchor.entry(sid).or_insert(*at);
                    *a = a.max(*at);
                }
            }
            Some("command_applied") => {
                let after = anchor.get(&sid).map_or(f64::INFINITY, |a| t_ms(e) - a);
                worst = worst.max(after);
                if after > ttl_ms + 1.0 {
                    beyond += 1;
                }
            }
            _ => {}
        }
    }
    (worst, beyond)
}

/// The agent's events file, read incrementally (re-reading it whole every poll would
/// load the 2-core machine the robot and nodes run on).
struct Events(EventsReader);

impl Events {
    fn read(&self) -> Vec<Value> {
        self.0.read()
    }

    /// Waits (polling the file) for the first event matching `pred`.
    async fn wait(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let every = Duration::from_millis(2);
        tether_devkit::wait::poll_every(what, Duration::from_secs(30), every, || {
            let found = self.0.find(&pred);
            async move { found }
        })
        .await
        .map_err(anyhow::Error::msg)
    }
}

fn t_ms(e: &Value) -> f64 {
    e["t_ms"].as_f64().unwrap_or(0.0)
}

fn is(e: &Value, event: &str, sid: &str) -> bool {
    e["event"] == event && e["session_id"] == sid
}

/// One driving console, in this process.
struct Drive {
    session_id: String,
    task: tokio::task::JoinHandle<Result<Outcome, tether_agent::console::ConsoleError>>,
}

async fn drive(gateway: &str, operator_token: &str) -> Result<Drive> {
    let (sid_tx, sid_rx) = tokio::sync::oneshot::channel();
    let options = ConsoleOptions {
        gateway: gateway.to_owned(),
        operator_token: operator_token.to_owned(),
        robot_id: ROBOT.into(),
        linear: 0.2,
        angular: 0.0,
        duration: None,
        auth_token: None,
        rtc_ip: "127.0.0.1".parse().expect("an address"),
        events: EventLog::disabled(),
    };
    let task = tokio::spawn(tether_agent::console::run(options, move |s| {
        let _ = sid_tx.send(s.session_id.clone());
    }));
    let session_id = sid_rx
        .await
        .context("the console did not create a session")?;
    Ok(Drive { session_id, task })
}

const ROBOT: &str = "bench-robot";

/// Runs the robot benchmark.
pub(crate) async fn robot(args: RobotBenchArgs) -> Result<()> {
    let cluster = BenchCluster::start(false, |c| c.http.per_client_per_second = 0).await?;
    let http = |id: u64| format!("http://{}", cluster.procs[id as usize - 1].http);
    let events = Events(EventsReader::new(
        cluster.dir.path().join("agent-events.jsonl"),
    ));
    let robot_token = cluster
        .secrets
        .mint(ROBOT, Role::Robot, Duration::from_secs(3600))?;
    let operator =
        cluster
            .secrets
            .mint("bench-operator", Role::Operator, Duration::from_secs(3600))?;
    let log = std::fs::File::create(cluster.dir.path().join("agent.log"))?;
    let gateways: Vec<_> = cluster.procs.iter().map(|p| p.http).collect();
    let mut command = tether_devkit::agent_command(
        &cluster.bin,
        &gateways,
        ROBOT,
        &robot_token,
        Some(events.0.path()),
    );
    command.stdout(log.try_clone()?).stderr(log);
    let _agent = tether_devkit::ChildProcess::spawn(command)?;
    events
        .wait("the agent to connect", |e| {
            e["event"] == "gateway_connected"
        })
        .await?;
    let admin = Client::new(&http(3), &cluster.token);

    // Revoke → safe-stop.
    let (mut posted, mut accepted) = (histogram(), histogram());
    let mut before = 0;
    for i in 0..args.trials {
        let d = drive(&http(2), &operator).await?;
        events
            .wait("the robot to arm", |e| is(e, "armed", &d.session_id))
            .await?;
        let sent = millis(monotonic_now());
        admin
            .revoke(&Target::Session(d.session_id.clone()), "bench", None)
            .await?;
        let answered = millis(monotonic_now());
        let stop = events
            .wait("safe-stop", |e| {
                is(e, "safe_stop", &d.session_id) && e["cause"] == "revoked"
            })
            .await?;
        let _ = d.task.await;
        posted.record(((t_ms(&stop) - sent) * 1000.0).max(1.0) as u64)?;
        let after = t_ms(&stop) - answered;
        if after < 0.0 {
            before += 1;
        }
        accepted.record((after * 1000.0).max(1.0) as u64)?;
        if (i + 1) % 20 == 0 {
            eprintln!("bench robot: {} revoke trials", i + 1);
        }
    }

    // Control loss → safe-stop.
    let mut loss = histogram();
    for _ in 0..args.control_loss_trials {
        let d = drive(&http(2), &operator).await?;
        events
            .wait("commands", |e| {
                is(e, "command_applied", &d.session_id) && e["seq"].as_u64() >= Some(3)
            })
            .await?;
        // Silence without a goodbye: the console's task (and its WebRTC driver) stop here.
        d.task.abort();
        let stop = events
            .wait("control-loss safe-stop", |e| {
                is(e, "safe_stop", &d.session_id) && e["cause"] == "control_loss"
            })
            .await?;
        let last = events
            .read()
            .into_iter()
            .filter(|e| is(e, "command_applied", &d.session_id))
            .map(|e| t_ms(&e))
            .fold(0.0, f64::max);
        loss.record(((t_ms(&stop) - last) * 1000.0).max(1.0) as u64)?;
        terminate(&http(2), &operator, &d.session_id).await?;
    }

    // Lease expiry → safe-stop, with the robot cut off from every gateway.
    let mut lease = Vec::new();
    for _ in 0..args.lease_trials {
        let d = drive(&http(2), &operator).await?;
        events
            .wait("commands", |e| {
                is(e, "command_applied", &d.session_id) && e["seq"].as_u64() >= Some(3)
            })
            .await?;
        let ports: Vec<u16> = gateways.iter().map(|a| a.port()).collect();
        let cut = tether_devkit::drop_ports("tcp", &ports, "bench-robot")
            .context("iptables (run as root, or pass --lease-trials 0)")?;
        let cut_at = millis(monotonic_now());
        let stop = events
            .wait("lease-expiry safe-stop", |e| {
                is(e, "safe_stop", &d.session_id) && e["cause"] == "lease_expired"
            })
            .await?;
        lease.push(((t_ms(&stop) - cut_at) * 10.0).round() / 10.0);
        cut.heal();
        d.task.abort();
        terminate(&http(2), &operator, &d.session_id).await?;
        events
            .wait("the agent to reconnect", |e| {
                e["event"] == "gateway_connected" && t_ms(e) > t_ms(&stop)
            })
            .await?;
    }

    // A stalled link: held, then released with its backlog.
    let mut stalled = Vec::new();
    for _ in 0..args.stall_trials {
        let d = drive(&http(2), &operator).await?;
        events
            .wait("commands", |e| {
                is(e, "command_applied", &d.session_id) && e["seq"].as_u64() >= Some(3)
            })
            .await?;
        let ports: Vec<u16> = gateways.iter().map(|a| a.port()).collect();
        let hold = tether_devkit::drop_ports("tcp", &ports, "bench-robot-stall")
            .context("iptables (run as root, or pass --stall-trials 0)")?;
        let held_at = millis(monotonic_now());
        // The hold is the scenario itself (a fixed 3 s), not a wait for a condition.
        tokio::time::sleep(Duration::from_secs(3)).await;
        hold.heal();
        let released_at = millis(monotonic_now());
        let rearmed = events
            .wait("the robot to arm again after the release", |e| {
                is(e, "armed", &d.session_id) && t_ms(e) > released_at
            })
            .await?;
        let trial: Vec<Value> = events
            .read()
            .into_iter()
            .filter(|e| e["session_id"] == d.session_id.as_str())
            .collect();
        let stop = trial
            .iter()
            .find(|e| {
                e["event"] == "safe_stop" && e["cause"] == "lease_expired" && t_ms(e) > held_at
            })
            .context("no lease-expiry stop during the hold")?;
        let requested: std::collections::HashMap<u64, f64> = trial
            .iter()
            .filter(|e| e["event"] == "lease_requested")
            .map(|e| (e["nonce"].as_u64().unwrap_or(0), t_ms(e)))
            .collect();
        let anchor_before_hold = trial
            .iter()
            .filter(|e| e["event"] == "lease_received" && t_ms(e) <= held_at)
            .filter_map(|e| requested.get(&e["nonce"].as_u64().unwrap_or(0)).copied())
            .fold(f64::NEG_INFINITY, f64::max);
        let last_in_hold = trial
            .iter()
            .filter(|e| {
                e["event"] == "command_applied" && t_ms(e) > held_at && t_ms(e) < released_at
            })
            .map(t_ms)
            .fold(held_at, f64::max);
        let spent = trial
            .iter()
            .filter(|e| e["event"] == "lease_received" && t_ms(e) > released_at)
            .filter(|e| {
                requested
                    .get(&e["nonce"].as_u64().unwrap_or(0))
                    .is_some_and(|at| t_ms(e) >= at + 1000.0)
            })
            .count();
        let round = |v: f64| (v * 10.0).round() / 10.0;
        stalled.push(StallTrial {
            hold_to_safe_stop_ms: round(t_ms(stop) - held_at),
            last_command_after_anchor_ms: round(last_in_hold - anchor_before_hold),
            spent_leases_dropped: spent,
            release_to_rearmed_ms: round(t_ms(&rearmed) - released_at),
        });
        d.task.abort();
        terminate(&http(2), &operator, &d.session_id).await?;
    }
    let (worst_anchor, beyond) = anchor_margins(&events.read(), 1000.0);

    let report = RobotReport {
        when: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        revoke_posted_to_safe_stop: (&posted).into(),
        revoke_accepted_to_safe_stop: (&accepted).into(),
        stopped_before_accepted: before,
        control_loss_to_safe_stop: (&loss).into(),
        control_timeout_ms: 300,
        lease_expiry_ms: lease,
        lease_ttl_ms: 1000,
        stalled_link: stalled,
        worst_command_after_anchor_ms: (worst_anchor * 10.0).round() / 10.0,
        commands_beyond_anchor: beyond,
    };
    crate::report::write_json(&args.json, &report)?;
    write_markdown_section(&args.markdown, "robot", &markdown(&report))?;
    println!("{}", markdown(&report));
    Ok(())
}

/// Ends a session the benchmark left behind (a silent console cannot).
async fn terminate(gateway: &str, operator: &str, session_id: &str) -> Result<()> {
    match Client::new(gateway, operator).end_session(session_id).await {
        Ok(_) => Ok(()),
        Err(e) if e.status() == Some(409) => Ok(()),
        Err(e) => bail!("ending {session_id}: {e}"),
    }
}

fn markdown(r: &RobotReport) -> String {
    let row = |name: &str, l: &Latency, target: &str| {
        format!(
            "| {name} | {} | {} | {} | {} | {target} |\n",
            l.count,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us)
        )
    };
    let mut s = format!("### Robot safe-stop (`tether bench robot`, {})\n\n", r.when);
    s += "Robot agent as its own process on node 1, consoles in the bench process over real WebRTC through node 2, revokes through node 3; times from the agent's events file (CLOCK_MONOTONIC).\n\n";
    s +=
        "| measurement | trials | p50 ms | p99 ms | max ms | target |\n|---|---|---|---|---|---|\n";
    s += &row(
        "revoke posted → robot safe-stop",
        &r.revoke_posted_to_safe_stop,
        "p99 ≤ 20 ms",
    );
    s += &row(
        "revoke accepted (200) → robot safe-stop",
        &r.revoke_accepted_to_safe_stop,
        "",
    );
    s += &row(
        &format!(
            "control loss → safe-stop (last command → stop; timeout {} ms)",
            r.control_timeout_ms
        ),
        &r.control_loss_to_safe_stop,
        &format!("p99 ≤ {} ms", r.control_timeout_ms + 15),
    );
    s += &format!(
        "\nThe robot had stopped before the admin received the 200 in {} of {} revoke trials (counted as 0).\n",
        r.stopped_before_accepted, r.revoke_accepted_to_safe_stop.count
    );
    let worst = r.lease_expiry_ms.iter().copied().fold(0.0, f64::max);
    s += &format!(
        "\nRobot cut off from every gateway (iptables) → lease-expiry safe-stop, TTL {} ms: {} ms over {} trials (worst {worst} ms; target ≤ TTL + 100 ms every time).\n",
        r.lease_ttl_ms,
        r.lease_expiry_ms
            .iter()
            .map(|v| format!("{v}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.lease_expiry_ms.len()
    );
    if !r.stalled_link.is_empty() {
        s += &format!(
            "\nA lease anchored on a stalled link (the robot's link held 3 s, its TCP connection kept, then released with its backlog; TTL {} ms):\n\n",
            r.lease_ttl_ms
        );
        s += "| trial | hold → safe-stop ms | last command after its anchor ms | spent leases dropped | release → armed again ms |\n|---|---|---|---|---|\n";
        for (i, t) in r.stalled_link.iter().enumerate() {
            s += &format!(
                "| {} | {} | {} | {} | {} |\n",
                i + 1,
                t.hold_to_safe_stop_ms,
                t.last_command_after_anchor_ms,
                t.spent_leases_dropped,
                t.release_to_rearmed_ms
            );
        }
    }
    s += &format!(
        "\nOver the whole run, every applied command against the request time of the newest lease received before it: worst {} ms after its anchor (target < TTL {} ms); {} commands beyond it.\n",
        r.worst_command_after_anchor_ms, r.lease_ttl_ms, r.commands_beyond_anchor
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_anchor_check_finds_a_command_past_ttl_after_its_request() {
        let e = |t: f64, event: &str, nonce: u64| json!({"t_ms": t, "event": event, "session_id": "s", "nonce": nonce});
        // Out of time order, as two writers leave them.
        let events = vec![
            e(0.0, "lease_requested", 1),
            e(10.0, "command_applied", 0),
            e(5.0, "lease_received", 1),
            e(900.0, "command_applied", 0),
            e(100.0, "lease_requested", 2),
        ];
        assert_eq!(anchor_margins(&events, 1000.0), (900.0, 0));
        // A backlog: the lease for the request made at 100 arrives at 1500, already spent.
        // A command applied after it (as when leases counted from receipt) is caught.
        let mut backlog = events.clone();
        backlog.push(e(1500.0, "lease_received", 2));
        backlog.push(e(1520.0, "command_applied", 0));
        assert_eq!(anchor_margins(&backlog, 1000.0), (1420.0, 1));
    }
}
