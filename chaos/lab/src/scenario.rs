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
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Scenario; 12] = [
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
    ];

    /// Whether the fault is on the robot's paths (it needs the robot and its consoles).
    pub fn on_robot(self) -> bool {
        matches!(self, Scenario::RobotCut | Scenario::MediaCut)
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
pub(crate) struct FaultPlan {
    /// The nodes the fault acts on.
    pub(crate) hit: Vec<u64>,
    /// The nodes without contact with a quorum while it lasts (what `fail_closed` holds to
    /// admitting nothing). Left empty where that is not certain: a ring, a lossy mesh.
    pub(crate) quorum_lost: Vec<u64>,
}

impl FaultPlan {
    pub(crate) fn new(scenario: Scenario, target: u64, nodes: u64, rng: &mut StdRng) -> Self {
        let all: Vec<u64> = (1..=nodes).collect();
        let minority = (nodes as usize - 1) / 2;
        let (hit, quorum_lost) = match scenario {
            Scenario::IsolateFollower
            | Scenario::IsolateLeader
            | Scenario::KillLeader
            | Scenario::PauseLeader
            | Scenario::PauseFollower
            // The leader hears the others but cannot answer: no acknowledgement reaches it.
            | Scenario::OneWayLeader => (vec![target], vec![target]),
            Scenario::KillMajority => {
                // The target (the leader) and enough others to leave a minority standing.
                let mut hit = vec![target];
                let mut rest: Vec<u64> = all.iter().copied().filter(|i| *i != target).collect();
                while hit.len() < nodes as usize - minority {
                    hit.push(rest.remove(rng.random_range(0..rest.len())));
                }
                hit.sort_unstable();
                (hit, all.clone())
            }
            Scenario::KillAll => (all.clone(), all.clone()),
            Scenario::RandomHalves => {
                let mut rest = all.clone();
                let mut hit = Vec::new();
                while hit.len() < minority.max(1) {
                    hit.push(rest.remove(rng.random_range(0..rest.len())));
                }
                hit.sort_unstable();
                (hit.clone(), hit)
            }
            Scenario::LossyLinks => (all.clone(), Vec::new()),
            Scenario::RobotCut | Scenario::MediaCut => (vec![target], Vec::new()),
        };
        Self { hit, quorum_lost }
    }
}
