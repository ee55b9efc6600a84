//! The nemesis: inflicts one scenario's fault on a running lab for its hold time, with
//! traffic flowing, and records it: the fault's start and stop, the nodes it left without a
//! quorum, and what the scenario's premise needs (a snapshot catch-up really happened, the
//! relays really carried the mesh).

use crate::cluster::LabCluster;
use crate::recorder::{now_ms, recorded_revoke, Recorder};
use crate::relay::Impairment;
use crate::robots::{Robot, CONSOLE_HOST};
use crate::scenario::{FaultPlan, Scenario};
use crate::sessions::Probe;
use serde_json::json;
use std::io;
use std::time::Duration;
use tether_chaos::history::{Body, Phase, RevokeKind};

/// What a fault needs from the run.
pub(crate) struct Fault<'a> {
    pub(crate) cluster: &'a LabCluster,
    pub(crate) recorder: &'a Recorder,
    pub(crate) robot: Option<&'a Robot>,
    pub(crate) scenario: Scenario,
    pub(crate) plan: &'a FaultPlan,
    /// How long the fault lasts.
    pub(crate) hold: Duration,
    pub(crate) seed: u64,
}

/// What the fault leaves for the summary.
#[derive(Default)]
pub(crate) struct Aftermath {
    /// Why the run did not test what its scenario says (the run is then invalid).
    pub(crate) premise_failed: Option<String>,
    /// Figures of the fault itself (packets through the relays, log indexes).
    pub(crate) facts: serde_json::Map<String, serde_json::Value>,
}

/// The bad mesh of `bad-links`: every packet delayed 15–40 ms, 5 % lost, 5 % duplicated, 5 %
/// held back to be overtaken.
const BAD_LINK: Impairment = Impairment {
    delay: Duration::from_millis(15),
    jitter: Duration::from_millis(25),
    loss: 0.05,
    duplicate: 0.05,
    reorder: 0.05,
    blackhole: false,
};

/// What `throttled-leader` leaves the leader to send.
const THROTTLE_KBIT: u32 = 200;

impl Fault<'_> {
    /// The fault's targets as the history names them.
    fn targets(&self) -> Vec<String> {
        match self.scenario {
            Scenario::RobotCut | Scenario::MediaCut => {
                vec![format!("robot-{}", crate::robots::ROBOT)]
            }
            Scenario::ConsoleCut => vec![CONSOLE_HOST.to_owned()],
            _ => self.plan.hit.iter().map(|id| format!("n{id}")).collect(),
        }
    }

    fn record(&self, phase: Phase) {
        let node = (self.plan.hit.len() == 1).then(|| self.plan.hit[0]);
        let body = Body::Nemesis {
            fault: self.scenario.name().to_owned(),
            targets: self.targets(),
            phase,
        };
        self.recorder.push("nemesis", node, body);
    }

    fn robot(&self) -> io::Result<&Robot> {
        self.robot.ok_or_else(|| {
            io::Error::other(format!(
                "{} needs the robot (leave out --no-robots)",
                self.scenario.name()
            ))
        })
    }

    /// A node other than the ones the fault hits, chosen by the seed.
    fn bystander(&self) -> u64 {
        let spared: Vec<u64> = (self.cluster.nodes.iter().map(|n| n.id))
            .filter(|id| !self.plan.hit.contains(id))
            .collect();
        match spared.len() {
            0 => self.cluster.nodes[0].id,
            n => spared[(self.seed % n as u64) as usize],
        }
    }

    /// Revokes the session the robot drives, through `node` (recorded).
    async fn revoke_driving(&self, node: u64, reason: &str) -> io::Result<()> {
        let robot = self.robot()?;
        let events = robot.events();
        if let Some(sid) = crate::robots::wait_driving(&events, 0.0, Duration::from_secs(1)).await {
            let what = (RevokeKind::Session, sid.as_str());
            let (cluster, recorder) = (self.cluster, self.recorder);
            recorded_revoke(cluster, recorder, "nemesis-admin", node, what, reason).await;
        }
        Ok(())
    }

    /// Inflicts the fault, holds it, heals it. `probe` is a session the cut-off node knows,
    /// revoked while it cannot hear (isolations only).
    pub(crate) async fn inflict(&self, probe: Option<Probe>) -> io::Result<Aftermath> {
        let mut after = Aftermath::default();
        let c = self.cluster;
        self.record(Phase::Start);
        let start = now_ms();
        // Where a majority stays connected, a prober keeps writing through it for as long as
        // the fault lasts, so `majority_available` has attempts to judge even when every
        // workload writer happened to pick the node the fault took.
        let majority: Vec<u64> = (c.nodes.iter().map(|n| n.id))
            .filter(|id| !self.plan.quorum_lost.contains(id))
            .collect();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // When the fault is in effect (its rules installed, its nodes killed or frozen):
        // the windows the checkers judge start there, not when the nemesis began (a
        // loaded machine takes a while to install a partition's rules).
        let mut began = start;
        let act = async {
            let acted = self.act(probe, &mut after, &mut began).await;
            let _ = stop.send(true);
            acted
        };
        let prober = async {
            if self.scenario.keeps_quorum() {
                self.probe_majority(&majority, stopped).await;
            }
        };
        let (acted, ()) = tokio::join!(act, prober);
        acted?;
        // A cut-off node, a killed one and a frozen one alike have no contact with a quorum
        // meanwhile (with a majority killed, the survivors have none either).
        // A bridge's sides and a ring's nodes may hear no leader (not certainly no quorum):
        // their robots are held to the lease bound, their admissions not judged.
        let end = now_ms();
        let uncertain: &[u64] = match self.scenario {
            Scenario::Bridge | Scenario::Ring => &self.plan.hit,
            _ => &[],
        };
        let certain = self.plan.quorum_lost.iter().map(|id| (id, true));
        for (id, certain) in certain.chain(uncertain.iter().map(|id| (id, false))) {
            let window = Body::QuorumLost {
                from_ms: began,
                to_ms: end,
                certain,
            };
            self.recorder.push("nemesis", Some(*id), window);
        }
        if self.scenario.keeps_quorum() {
            let window = Body::QuorumKept {
                from_ms: began,
                to_ms: end,
                nodes: majority,
            };
            self.recorder.push("nemesis", None, window);
        }
        self.record(Phase::Stop);
        if matches!(
            self.scenario,
            Scenario::KillLeader | Scenario::KillMajority | Scenario::KillAll
        ) {
            for id in &self.plan.hit {
                c.restart(*id)?;
            }
        }
        Ok(after)
    }

    /// Revokes a fresh token through the nodes of `majority` in turn, about ten times a
    /// second, until `stopped` turns true (recorded as process `nemesis-prober`).
    async fn probe_majority(
        &self,
        majority: &[u64],
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut turn = self.seed as usize;
        for n in 0u64.. {
            if *stopped.borrow() || majority.is_empty() {
                return;
            }
            turn = turn.wrapping_add(1);
            let node = majority[turn % majority.len()];
            let target = format!("prober-{n}");
            let what = (RevokeKind::Token, target.as_str());
            recorded_revoke(
                self.cluster,
                self.recorder,
                "nemesis-prober",
                node,
                what,
                "probe",
            )
            .await;
            let pause = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                _ = pause => {}
                _ = stopped.changed() => return,
            }
        }
    }

    /// The fault itself: inflicts it, holds it, heals it.
    async fn act(
        &self,
        probe: Option<Probe>,
        after: &mut Aftermath,
        began: &mut f64,
    ) -> io::Result<()> {
        let c = self.cluster;
        match self.scenario {
            Scenario::RobotCut | Scenario::MediaCut => {
                let media = self.scenario == Scenario::MediaCut;
                crate::robots::cut_robot(
                    c,
                    self.recorder,
                    self.robot()?,
                    media,
                    self.hold,
                    self.seed,
                )
                .await?;
            }
            Scenario::ConsoleCut => {
                let gateways = c.hosts_except(&[]);
                let gateways: Vec<&str> = gateways.iter().map(String::as_str).collect();
                let cut = c.lab.cut(CONSOLE_HOST, &gateways)?;
                *began = now_ms();
                self.revoke_driving(self.bystander(), "console cut off")
                    .await?;
                tokio::time::sleep(self.hold.min(Duration::from_secs(3))).await;
                cut.heal();
            }
            Scenario::IsolateFollower
            | Scenario::IsolateLeader
            | Scenario::RandomHalves
            | Scenario::Ring
            | Scenario::Bridge
            | Scenario::SnapshotCatchUp
            | Scenario::GatewayMinority => {
                let until = tokio::time::Instant::now() + self.hold;
                let mut cuts = Vec::new();
                for (id, from) in &self.plan.cuts {
                    let hosts: Vec<&str> = from.iter().map(|f| c.node(*f).host.as_str()).collect();
                    cuts.push(c.lab.cut(&c.node(*id).host, &hosts)?);
                }
                *began = now_ms();
                if let Some(probe) = probe {
                    // Past the election timeout, so even a cut-off leader must know.
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    crate::sessions::probe_during(c, self.recorder, self.plan.hit[0], probe).await;
                }
                match self.scenario {
                    Scenario::GatewayMinority => {
                        self.revoke_driving(self.bystander(), "gateway in a minority")
                            .await?
                    }
                    Scenario::SnapshotCatchUp => {
                        self.outrun(self.plan.hit[0], after).await;
                    }
                    _ => {}
                }
                tokio::time::sleep_until(until).await;
                drop(cuts);
            }
            Scenario::OneWayLeader | Scenario::LossyLinks => {
                let mut cuts = Vec::new();
                for id in &self.plan.hit {
                    let others = c.hosts_except(&[*id]);
                    let others: Vec<&str> = others.iter().map(String::as_str).collect();
                    let host = &c.node(*id).host;
                    cuts.push(match self.scenario {
                        Scenario::OneWayLeader => c.lab.cut_one_way(host, &others)?,
                        _ => c.lab.lossy(host, &others, 3)?,
                    });
                }
                *began = now_ms();
                tokio::time::sleep(self.hold).await;
                drop(cuts);
            }
            Scenario::BadLinks => {
                let relays = c.relays.as_ref().ok_or_else(|| {
                    io::Error::other("bad-links runs on a cluster started with relays")
                })?;
                let before: u64 = relays.packets().values().sum();
                relays.impair_all(BAD_LINK);
                *began = now_ms();
                tokio::time::sleep(self.hold).await;
                relays.heal();
                let during = relays.packets().values().sum::<u64>() - before;
                after
                    .facts
                    .insert("relayed_packets_during_fault".into(), json!(during));
                if during == 0 {
                    after.premise_failed = Some("no node-to-node packet passed the relays".into());
                }
            }
            Scenario::ThrottledLeader => {
                let throttle = c
                    .lab
                    .throttle(&c.node(self.plan.hit[0]).host, THROTTLE_KBIT)?;
                *began = now_ms();
                after
                    .facts
                    .insert("leader_rate_kbit".into(), json!(THROTTLE_KBIT));
                tokio::time::sleep(self.hold).await;
                drop(throttle);
            }
            Scenario::KillLeader | Scenario::KillMajority | Scenario::KillAll => {
                for id in &self.plan.hit {
                    c.kill(*id);
                }
                *began = now_ms();
                tokio::time::sleep(self.hold).await;
            }
            Scenario::PauseLeader | Scenario::PauseFollower => {
                for id in &self.plan.hit {
                    c.pause(*id, true);
                }
                *began = now_ms();
                tokio::time::sleep(
                    self.hold
                        .clamp(Duration::from_secs(1), Duration::from_secs(10)),
                )
                .await;
                for id in &self.plan.hit {
                    c.pause(*id, false);
                }
            }
        }
        Ok(())
    }

    /// Holds the cut on `follower` while revoking through the majority (recorded, like any
    /// write) until it has compacted its log past where the follower stopped (or three hold
    /// times), so that healed the follower can only catch up by snapshot. The workload's own
    /// writers cannot be relied on for it: those that picked the cut-off node wait out
    /// their timeouts.
    async fn outrun(&self, follower: u64, after: &mut Aftermath) {
        let c = self.cluster;
        let stopped_at = c.client(follower).cluster().await.ok();
        let stopped_at = stopped_at.and_then(|v| v.last_log_index).unwrap_or(0);
        let deadline = tokio::time::Instant::now() + self.hold * 3;
        let mut purged = 0;
        for n in 0u64.. {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            let node = self.bystander();
            let view = c.client(node).cluster().await.ok();
            purged = view.and_then(|v| v.purged_index).unwrap_or(0);
            if purged > stopped_at {
                break;
            }
            let target = format!("outrun-{n}");
            let what = (RevokeKind::Token, target.as_str());
            recorded_revoke(c, self.recorder, "nemesis-admin", node, what, "outrun").await;
        }
        after.facts.insert("follower".into(), json!(follower));
        after
            .facts
            .insert("follower_log_end_at_cut".into(), json!(stopped_at));
        after
            .facts
            .insert("majority_purged_before_heal".into(), json!(purged));
        if purged <= stopped_at {
            after.premise_failed = Some(format!(
                "the majority never compacted past the cut-off follower's log end {stopped_at}"
            ));
        }
    }
}

/// After healing and settling: whether the follower `outrun` left behind caught up by a
/// snapshot (its latest snapshot lies past its log end at the cut).
pub(crate) async fn caught_up_by_snapshot(cluster: &LabCluster, after: &mut Aftermath) {
    let (Some(follower), Some(end)) = (
        after.facts.get("follower").and_then(|v| v.as_u64()),
        after
            .facts
            .get("follower_log_end_at_cut")
            .and_then(|v| v.as_u64()),
    ) else {
        return;
    };
    let view = cluster.client(follower).cluster().await.ok();
    let snapshot = view.and_then(|v| v.snapshot_index).unwrap_or(0);
    after
        .facts
        .insert("follower_snapshot_after_heal".into(), json!(snapshot));
    if snapshot <= end && after.premise_failed.is_none() {
        after.premise_failed = Some(format!(
            "the healed follower's snapshot ({snapshot}) does not pass its log end at the cut ({end})"
        ));
    }
}
