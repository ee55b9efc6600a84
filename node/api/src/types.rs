//! The HTTP API's request and response bodies (`docs/api.md`), shared by the server and
//! every client so the two cannot drift.

use crate::time::rfc3339;
use serde::{Deserialize, Serialize};
use tether_store::{NodeId, Revocation, RevocationKind, Session, SessionState};

/// A revocation as the API shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RevocationView {
    /// `session`, `token` or `operator`.
    pub kind: RevocationKind,
    /// The revoked sid, jti or operator.
    pub target: String,
    /// RFC 3339.
    pub revoked_at: String,
    /// Why.
    pub reason: String,
    /// The admin who revoked.
    pub revoked_by: String,
    /// RFC 3339, or null when it lasts until lifted.
    pub expires_at: Option<String>,
}

impl From<&Revocation> for RevocationView {
    fn from(r: &Revocation) -> Self {
        Self {
            kind: r.kind,
            target: r.target.clone(),
            revoked_at: rfc3339(r.revoked_at),
            reason: r.reason.clone(),
            revoked_by: r.revoked_by.clone(),
            expires_at: r.expires_at.map(rfc3339),
        }
    }
}

/// `POST /v1/revocations`: exactly one of `session_id`, `jti`, `operator`.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Revoke a session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Revoke a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Revoke an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// Why (1 to 1,024 characters).
    pub reason: String,
    /// RFC 3339; when the entry may be dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The answer to a revocation.
#[derive(Serialize, Deserialize, Debug)]
pub struct RevokeResponse {
    /// The entry as committed.
    pub revocation: RevocationView,
    /// False when the target was already revoked (the call is idempotent).
    pub created: bool,
}

/// `GET /v1/revocations` query.
#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `session`, `token` or `operator`.
    pub kind: Option<String>,
    /// Page size (1 to 1,000; default 100).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// Confirm with the leader before reading, so the page reflects every committed write.
    pub consistent: Option<bool>,
}

/// A page of revocations.
#[derive(Serialize, Deserialize, Debug)]
pub struct ListResponse {
    /// The entries, in key order.
    pub items: Vec<RevocationView>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<String>,
}

/// One member in `GET /v1/cluster`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Node id.
    pub id: NodeId,
    /// QUIC address.
    pub raft_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
    /// On the leader: the last log index replicated to this member.
    pub matched_index: Option<u64>,
}

/// `GET /v1/cluster`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClusterView {
    /// This node.
    pub id: NodeId,
    /// Leader, follower, candidate or learner.
    pub state: String,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// The members of the current configuration.
    pub members: Vec<MemberView>,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Committed index as known to this node.
    pub commit_index: Option<u64>,
    /// Applied index on this node.
    pub applied_index: Option<u64>,
    /// Committed but not yet applied here.
    pub lag: u64,
    /// The last log index this node's latest snapshot covers.
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    /// The last log index compacted away here: a follower behind it catches up by snapshot.
    #[serde(default)]
    pub purged_index: Option<u64>,
    /// Stored revocations on this node.
    pub revocations: usize,
}

/// `POST /v1/cluster/members`.
#[derive(Deserialize, Serialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The new node's id.
    pub id: NodeId,
    /// Its QUIC address.
    pub raft_addr: std::net::SocketAddr,
    /// Its HTTP address.
    pub http_addr: std::net::SocketAddr,
    /// How long to wait for the new node to catch up and be promoted (default 30 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// `GET /v1/audit` query.
#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records with `seq` greater than this.
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// One record of a node's hash-chained audit ledger.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in this node's ledger, from 1.
    pub seq: u64,
    /// When (RFC 3339).
    pub at: String,
    /// The node that wrote it.
    pub node: u64,
    /// `SESSION_STARTED`, `SESSION_REVOKED`, `SESSION_TERMINATED`, `JOIN_DENIED`, `TEARDOWN`.
    pub event: String,
    /// The session concerned.
    pub session_id: String,
    /// Event details.
    pub detail: serde_json::Value,
    /// The previous record's hash.
    pub prev: String,
    /// SHA-256 over this record without `hash`.
    pub hash: String,
}

/// A page of audit records.
#[derive(Serialize, Deserialize, Debug)]
pub struct AuditPage {
    /// The records, by `seq`.
    pub items: Vec<AuditRecord>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<u64>,
}

/// `POST /v1/sessions`.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The robot to drive.
    pub robot_id: String,
}

/// A new (or refreshed) session token.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SessionToken {
    /// The session id.
    pub session_id: String,
    /// The session token (JWT with `sid`, `robot`, `jti`).
    pub token: String,
    /// When the token expires (RFC 3339); refresh before.
    pub expires_at: String,
}

/// The answer to `DELETE /v1/sessions/{sid}`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SessionEnded {
    /// Always true.
    pub success: bool,
    /// The session.
    pub session_id: String,
    /// RFC 3339.
    pub terminated_at: String,
    /// How long it lasted.
    pub duration_seconds: u64,
}

/// A session as the API shows it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SessionView {
    /// Id.
    pub session_id: String,
    /// Operator.
    pub operator: String,
    /// Robot.
    pub robot_id: String,
    /// `active`, `terminated` or `revoked`.
    pub state: SessionState,
    /// The node that created it.
    pub node: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once ended.
    pub ended_at: Option<String>,
    /// Why it ended.
    pub end_reason: Option<String>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.id.clone(),
            operator: s.operator.clone(),
            robot_id: s.robot.clone(),
            state: s.state,
            node: s.node,
            created_at: rfc3339(s.created_at),
            ended_at: s.ended_at.map(rfc3339),
            end_reason: s.end_reason.clone(),
        }
    }
}

/// `GET /v1/sessions`.
#[derive(Serialize, Deserialize, Debug)]
pub struct SessionList {
    /// The sessions the caller may see.
    pub items: Vec<SessionView>,
}
