//! The chaos suite's scenarios: one fault each, with where it lands (the nodes it hits,
//! chosen from the leader and the seed) and which nodes it leaves without a quorum.

use rand::rngs::StdRng;
use rand::Rng;

/// A fault and where it lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A follower cut off from every other node, then healed.
    IsolateFollower,
    /// The leader cut off from every other node, then healed.
    IsolateLeader,
    /// `kill -9` of the leader, then a restart.
    KillLeader,
    /// `kill -9` of a majority (the leader among them): every node, the survivors too,
    /// is without a quorum until they restart.
    KillMajority,
    /// `kill -9` of every node, then a restart of all (acknowledged writes are on disk).
    KillAll,
    /// `SIGSTOP` of the leader for the fault phase (clamped to 1–10 s), then `SIGCONT`: a
    /// frozen leader wakes believing it leads, and its read barrier must not pass.
    PauseLeader,
    /// `SIGSTOP` of a follower, then `SIGCONT`.
    PauseFollower,
    /// The nodes shuffled by the seed and split into a minority and a majority that cannot
    /// hear each other.
    RandomHalves,
    /// What the leader sends to the other nodes is dropped, what they send it is not.
    OneWayLeader,
    /// Every node drops every third packet it sends to each other node (a lossy mesh).
    LossyLinks,
    /// Once the robot drives: the robot cut off from every gateway, and its session
    /// revoked meanwhile (it can only stop by its lease running out), then healed.
    RobotCut,
    /// Once the robot drives: the console ↔ robot media cut (the robot must stop by its
    /// control-loss timeout), then healed.
    MediaCut,
    /// Five nodes in a shuffled ring, each hearing only its two neighbours: every node sees a
    /// majority, no two see the same one (Jepsen's majorities ring).
    Ring,
    /// The nodes split into two minorities that cannot hear each other, and one node (the
    /// bridge) that hears both.
    Bridge,
    /// Every directed node-to-node link through a seeded userspace relay that delays (with
    /// jitter), drops, duplicates and reorders packets.
    BadLinks,
    /// What the leader sends limited to a trickle (tbf), clients' answers included.
    ThrottledLeader,
    /// A follower cut off while the others take enough writes to compact their logs past
    /// it: healed, it must catch up by snapshot.
    SnapshotCatchUp,
    /// Once the robot drives: its gateway cut off from the other nodes (it still hears the
    /// robot), and its session revoked through the majority: only the lease can stop it.
    GatewayMinority,
    /// Once the robot drives: its console cut off from every gateway (media still flows),
    /// and its session revoked meanwhile: the gateways must stop the robot without the
    /// console's help.
    ConsoleCut,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 19] = [
        Scenario::IsolateFollower,
        Scenario::IsolateLeader,
        Scenario::KillLeader,
        Scenario::KillMajority,
        Scenario::KillAll,
        Scenario::PauseLeader,
        Scenario::PauseFollower,
        Scenario::RandomHalves,
        Scenario::OneWayLeader,
        Scenario::LossyLinks,
        Scenario::RobotCut,
        Scenario::MediaCut,
        Scenario::Ring,
        Scenario::Bridge,
        Scenario::BadLinks,
        Scenario::ThrottledLeader,
        Scenario::SnapshotCatchUp,
        Scenario::GatewayMinority,
        Scenario::ConsoleCut,
    ];

    /// Whether the fault is on the robot's paths (it needs the robot and its consoles).
    pub fn on_robot(self) -> bool {
        matches!(
            self,
            Scenario::RobotCut
                | Scenario::MediaCut
                | Scenario::GatewayMinority
                | Scenario::ConsoleCut
        )
    }

    /// The fewest gateway nodes the fault makes sense with (a ring of three is no cut).
    pub fn min_nodes(self) -> u64 {
        match self {
            Scenario::Ring => 5,
            _ => 3,
        }
    }

    /// Whether a majority of the nodes stays connected to each other throughout the fault,
    /// so that revocations must keep committing through it (`majority_available`; after an
    /// election, where the fault took the leader). Not the ring and the bridge: a majority
    /// is connected there, but not every one of its nodes can reach the leader.
    pub fn keeps_quorum(self) -> bool {
        matches!(
            self,
            Scenario::IsolateFollower
                | Scenario::IsolateLeader
                | Scenario::KillLeader
                | Scenario::PauseLeader
                | Scenario::OneWayLeader
                | Scenario::RandomHalves
                | Scenario::GatewayMinority
                | Scenario::PauseFollower
                | Scenario::LossyLinks
                | Scenario::BadLinks
                | Scenario::ThrottledLeader
                | Scenario::SnapshotCatchUp
                | Scenario::RobotCut
                | Scenario::MediaCut
                | Scenario::ConsoleCut
        )
    }

    /// Whether the nodes' QUIC traffic must pass the relays ([`crate::relay`]), which are
    /// installed before the nodes start.
    pub fn uses_relays(self) -> bool {
        self == Scenario::BadLinks
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::IsolateFollower => "isolate-follower",
            Scenario::IsolateLeader => "isolate-leader",
            Scenario::KillLeader => "kill-leader",
            Scenario::KillMajority => "kill-majority",
            Scenario::KillAll => "kill-all",
            Scenario::PauseLeader => "pause-leader",
            Scenario::PauseFollower => "pause-follower",
            Scenario::RandomHalves => "random-halves",
            Scenario::OneWayLeader => "one-way-leader",
            Scenario::LossyLinks => "lossy-links",
            Scenario::RobotCut => "robot-cut",
            Scenario::MediaCut => "media-cut",
            Scenario::Ring => "ring",
            Scenario::Bridge => "bridge",
            Scenario::BadLinks => "bad-links",
            Scenario::ThrottledLeader => "throttled-leader",
            Scenario::SnapshotCatchUp => "snapshot-catch-up",
            Scenario::GatewayMinority => "gateway-minority",
            Scenario::ConsoleCut => "console-cut",
        }
    }

    /// Every scenario's name, for help and errors.
    pub fn names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
        names.join(", ")
    }

    /// The scenario called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Which nodes a node fault hits and which of them (or others) are left without a quorum.
#[derive(Debug, PartialEq)]
pub(crate) struct FaultPlan {
    /// The nodes the fault acts on.
    pub(crate) hit: Vec<u64>,
    /// The nodes without contact with a quorum while it lasts (what `fail_closed` holds to
    /// admitting nothing). Left empty where that is not certain: a ring, a lossy mesh.
    pub(crate) quorum_lost: Vec<u64>,
    /// For a partition: each node whose namespace gets the rules, and the nodes it is cut
    /// off from (both ways).
    pub(crate) cuts: Vec<(u64, Vec<u64>)>,
}

impl FaultPlan {
    pub(crate) fn new(scenario: Scenario, target: u64, nodes: u64, rng: &mut StdRng) -> Self {
        let all: Vec<u64> = (1..=nodes).collect();
        let minority = (nodes as usize - 1) / 2;
        let others =
            |of: &[u64]| -> Vec<u64> { all.iter().copied().filter(|i| !of.contains(i)).collect() };
        let (hit, quorum_lost, cuts) = match scenario {
            Scenario::IsolateFollower
            | Scenario::IsolateLeader
            | Scenario::SnapshotCatchUp
            | Scenario::GatewayMinority => {
                (vec![target], vec![target], vec![(target, others(&[target]))])
            }
            Scenario::KillLeader
            | Scenario::PauseLeader
            | Scenario::PauseFollower
            // The leader hears the others but cannot answer: no acknowledgement reaches it.
            | Scenario::OneWayLeader => (vec![target], vec![target], Vec::new()),
            Scenario::KillMajority => {
                // The target (the leader) and enough others to leave a minority standing.
                let mut hit = vec![target];
                let mut rest = others(&[target]);
                while hit.len() < nodes as usize - minority {
                    hit.push(rest.remove(rng.random_range(0..rest.len())));
                }
                hit.sort_unstable();
                (hit, all.clone(), Vec::new())
            }
            Scenario::KillAll => (all.clone(), all.clone(), Vec::new()),
            Scenario::RandomHalves => {
                let mut hit = shuffled(&all, rng);
                hit.truncate(minority.max(1));
                hit.sort_unstable();
                let cuts = hit.iter().map(|h| (*h, others(&hit))).collect();
                (hit.clone(), hit, cuts)
            }
            Scenario::Ring => {
                // Each node loses the two that are not its neighbours; placing the rules at
                // one end of each such pair cuts it both ways.
                let order = shuffled(&all, rng);
                let n = order.len();
                let cuts = (0..n)
                    .filter(|_| n > 3)
                    .map(|i| (order[i], vec![order[(i + 2) % n]]))
                    .collect();
                (all.clone(), Vec::new(), cuts)
            }
            Scenario::Bridge => {
                // left | bridge | right, each side with the bridge a majority.
                let order = shuffled(&all, rng);
                let (left, rest) = order.split_at(minority.max(1));
                let right = rest[1..].to_vec();
                let cuts = left.iter().map(|l| (*l, right.clone())).collect();
                let mut hit: Vec<u64> = left.iter().copied().chain(right).collect();
                hit.sort_unstable();
                (hit, Vec::new(), cuts)
            }
            Scenario::LossyLinks | Scenario::BadLinks => (all.clone(), Vec::new(), Vec::new()),
            Scenario::ThrottledLeader => (vec![target], Vec::new(), Vec::new()),
            Scenario::RobotCut | Scenario::MediaCut | Scenario::ConsoleCut => {
                (Vec::new(), Vec::new(), Vec::new())
            }
        };
        Self {
            hit,
            quorum_lost,
            cuts,
        }
    }
}

/// `all` in a seeded random order.
fn shuffled(all: &[u64], rng: &mut StdRng) -> Vec<u64> {
    let mut rest = all.to_vec();
    let mut order = Vec::new();
    while !rest.is_empty() {
        order.push(rest.remove(rng.random_range(0..rest.len())));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    fn plan(scenario: Scenario, nodes: u64, seed: u64) -> FaultPlan {
        FaultPlan::new(scenario, 1, nodes, &mut StdRng::seed_from_u64(seed))
    }

    /// Who hears whom under a plan's cuts.
    fn hears(plan: &FaultPlan, nodes: u64) -> Vec<BTreeSet<u64>> {
        (1..=nodes)
            .map(|a| {
                (1..=nodes)
                    .filter(|b| {
                        !plan.cuts.iter().any(|(x, from)| {
                            (*x == a && from.contains(b)) || (*x == *b && from.contains(&a))
                        })
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_name_parses_back_to_its_scenario() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Some(s));
        }
        assert_eq!(Scenario::parse("nope"), None);
    }

    #[test]
    fn in_a_ring_every_node_hears_a_majority_and_no_two_hear_the_same_one() {
        for seed in 0..20 {
            let p = plan(Scenario::Ring, 5, seed);
            let views = hears(&p, 5);
            assert!(views.iter().all(|v| v.len() == 3), "{views:?}");
            let distinct: BTreeSet<_> = views.iter().collect();
            assert_eq!(distinct.len(), 5, "{views:?}");
            assert!(p.quorum_lost.is_empty());
        }
    }

    #[test]
    fn a_bridge_leaves_one_node_hearing_everyone_and_the_sides_apart() {
        for nodes in [3, 5] {
            for seed in 0..20 {
                let p = plan(Scenario::Bridge, nodes, seed);
                let views = hears(&p, nodes);
                let everyone = views.iter().filter(|v| v.len() == nodes as usize).count();
                assert_eq!(everyone, 1, "{nodes} nodes: {views:?}");
                // Every node still hears a majority (itself, its side, the bridge).
                assert!(
                    views.iter().all(|v| v.len() as u64 > nodes / 2),
                    "{views:?}"
                );
                assert_eq!(p.hit.len() as u64, nodes - 1);
            }
        }
    }

    #[test]
    fn random_halves_cut_a_minority_off_from_the_rest() {
        let p = plan(Scenario::RandomHalves, 5, 3);
        assert_eq!(p.hit.len(), 2);
        assert_eq!(p.quorum_lost, p.hit);
        let views = hears(&p, 5);
        for h in &p.hit {
            assert_eq!(views[*h as usize - 1].len(), 2, "{views:?}");
        }
    }

    #[test]
    fn an_isolated_node_is_cut_from_every_other_and_loses_its_quorum() {
        for s in [
            Scenario::IsolateLeader,
            Scenario::SnapshotCatchUp,
            Scenario::GatewayMinority,
        ] {
            let p = plan(s, 3, 1);
            assert_eq!(p.cuts, vec![(1, vec![2, 3])]);
            assert_eq!(p.quorum_lost, vec![1]);
        }
    }

    #[test]
    fn a_majority_killed_leaves_every_node_without_a_quorum() {
        let p = plan(Scenario::KillMajority, 5, 9);
        assert_eq!(p.hit.len(), 3);
        assert!(p.hit.contains(&1));
        assert_eq!(p.quorum_lost, vec![1, 2, 3, 4, 5]);
    }
}
