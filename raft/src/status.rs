//! What a Raft member reports about itself, as plain data: the HTTP API, `/metrics` and the
//! lease loop read this instead of reaching into openraft's metrics.

use tether_store::{NodeId, NodeInfo};

/// One member of the current configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Its addresses.
    pub info: NodeInfo,
    /// Voter (true) or learner.
    pub voter: bool,
    /// On the leader: the last log index replicated to this member.
    pub matched_index: Option<u64>,
}

/// A member's view of the cluster at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Applied index on this node.
    pub applied_index: Option<u64>,
    /// The last log index this node's latest snapshot covers.
    pub snapshot_index: Option<u64>,
    /// The last log index this node has purged (compacted away): a follower behind it can
    /// only catch up from this node by snapshot.
    pub purged_index: Option<u64>,
    /// The members of the current configuration, by id.
    pub members: Vec<MemberStatus>,
}

impl RaftStatus {
    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader == Some(self.id)
    }

    /// Whether `id` is in the current configuration.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.members.iter().any(|m| m.id == id)
    }
}
