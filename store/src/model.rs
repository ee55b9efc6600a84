//! The replicated data model: revocations, the commands that change them and the answers.
//!
//! Every timestamp inside a command is chosen by the node that proposes it, never read from
//! a clock while applying, so every node applies the same log to the same state.
//!
//! The types are encoded with postcard (not self-describing): adding a variant or a field
//! changes the disk and wire format. Before 1.0 the format changes freely: nodes of
//! different versions neither share a cluster nor read each other's data directories.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Raft node id.
pub type NodeId = u64;

/// Milliseconds since the UNIX epoch.
pub type UnixMillis = u64;

/// How to reach a node: its QUIC (Raft) address and its HTTP address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// UDP address of the node's QUIC endpoint.
    pub raft_addr: String,
    /// TCP address of the node's HTTP API.
    pub http_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} http={}", self.raft_addr, self.http_addr)
    }
}

/// What a revocation is keyed by.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// A session id (`sid`).
    Session,
    /// A token id (`jti`).
    Token,
    /// An operator (token subject or DID).
    Operator,
}

impl RevocationKind {
    /// Every kind, in key order.
    pub const ALL: [RevocationKind; 3] = [Self::Session, Self::Token, Self::Operator];

    /// The stable lower-case name used in URLs, JSON and keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Token => "token",
            Self::Operator => "operator",
        }
    }

    /// Parses [`RevocationKind::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One revocation entry, as stored and as returned by the API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// What the target is.
    pub kind: RevocationKind,
    /// The revoked sid, jti or operator id.
    pub target: String,
    /// When it was first revoked.
    pub revoked_at: UnixMillis,
    /// Why, in the admin's words.
    pub reason: String,
    /// The subject of the admin token that revoked it.
    pub revoked_by: String,
    /// After this instant the entry is dropped by the replicated cleanup. `None`: kept until
    /// lifted (operators) .
    pub expires_at: Option<UnixMillis>,
}

/// How long an ended session stays listed before the replicated cleanup drops it.
pub const SESSION_RETENTION_MS: UnixMillis = 24 * 3600 * 1000;

/// How long an applied request id is remembered, from the `at` of the [`Command::Once`] that
/// first applied it: a retry must be applied within this window to be answered from memory;
/// a later one (after an [`Command::Expire`] past it) is applied anew.
pub const REQUEST_RETENTION_MS: UnixMillis = 10 * 60 * 1000;

/// A remembered request: the answer a [`Command::Once`] got, kept so that its retries get
/// the same answer without changing anything again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AppliedRequest {
    /// The request id.
    pub request: String,
    /// When the replicated cleanup may forget it: the first `at` plus
    /// [`REQUEST_RETENTION_MS`].
    pub expires_at: UnixMillis,
    /// The answer the request got when it was applied.
    pub response: Response,
}

/// Where a session is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The operator may drive the robot.
    Active,
    /// Ended by its operator.
    Terminated,
    /// Ended by a revocation.
    Revoked,
}

/// One teleoperation session: one operator driving one robot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session id (`sid`).
    pub id: String,
    /// The operator who created it.
    pub operator: String,
    /// The robot it drives.
    pub robot: String,
    /// The id (`jti`) of the session's token; refreshed tokens keep it.
    pub token_id: String,
    /// The node that created it.
    pub node: NodeId,
    /// When it started.
    pub created_at: UnixMillis,
    /// Active, terminated or revoked.
    pub state: SessionState,
    /// When it ended.
    pub ended_at: Option<UnixMillis>,
    /// Why it ended: `client_request`, or the revocation's reason.
    pub end_reason: Option<String>,
}

/// A change to the replicated state; the payload of a Raft log entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Revoke a target. Idempotent: revoking it again keeps the first entry and extends its
    /// expiry to the later of the two.
    Revoke {
        /// What to revoke.
        kind: RevocationKind,
        /// The sid, jti or operator id.
        target: String,
        /// Why.
        reason: String,
        /// Who.
        revoked_by: String,
        /// When, chosen by the proposing node.
        at: UnixMillis,
        /// When the entry may be dropped; `None` keeps it until lifted.
        expires_at: Option<UnixMillis>,
    },
    /// Lift an operator revocation.
    Lift {
        /// The operator id.
        operator: String,
        /// The admin lifting it.
        lifted_by: String,
    },
    /// Drop every revocation, ended session and remembered request whose expiry is at or
    /// before `now`. Proposed periodically by the leader; deterministic because `now` is in
    /// the log.
    Expire {
        /// The cut-off instant.
        now: UnixMillis,
    },
    /// Several commands in one log entry, applied in order: the leader groups concurrent
    /// writes so they share one fsync and one replication round.
    Batch(Vec<Command>),
    /// Start a session, unless the operator or the login token is revoked or the robot is
    /// busy.
    StartSession {
        /// New session id.
        id: String,
        /// The operator.
        operator: String,
        /// The robot.
        robot: String,
        /// The session token's id.
        token_id: String,
        /// The id (`jti`) of the operator's login token that asks, checked against token
        /// revocations at apply (linearizable, S2); `None` when there is none to check.
        login_token_id: Option<String>,
        /// The node creating it.
        node: NodeId,
        /// When.
        at: UnixMillis,
    },
    /// End a session at its own operator's request.
    EndSession {
        /// The session.
        id: String,
        /// Who asks; must be the session's operator.
        operator: String,
        /// When.
        at: UnixMillis,
    },
    /// Apply `command` at most once per `request` id: while the id is remembered (see
    /// [`REQUEST_RETENTION_MS`]), applying it again changes nothing and answers
    /// [`Response::Replayed`] with the first answer. Retries (across leader changes, or
    /// from clients) carry the same id; a genuinely new write carries a new one. The id
    /// alone identifies the request: reusing it for another command gets the first answer.
    Once {
        /// The request id, unique per intended write.
        request: String,
        /// When, chosen by the proposing node; the id is remembered until
        /// `at + REQUEST_RETENTION_MS`.
        at: UnixMillis,
        /// The command to apply once.
        command: Box<Command>,
    },
}

impl Command {
    /// For a [`Command::Revoke`], the entry it proposes (as stored when it is new).
    pub fn proposed_revocation(&self) -> Option<Revocation> {
        let Command::Revoke {
            kind,
            target,
            reason,
            revoked_by,
            at,
            expires_at,
        } = self
        else {
            return None;
        };
        Some(Revocation {
            kind: *kind,
            target: target.clone(),
            revoked_at: *at,
            reason: reason.clone(),
            revoked_by: revoked_by.clone(),
            expires_at: *expires_at,
        })
    }

    /// Wraps `command` so that it is applied at most once per `request` id.
    pub fn once(request: impl Into<String>, at: UnixMillis, command: Command) -> Command {
        Command::Once {
            request: request.into(),
            at,
            command: Box::new(command),
        }
    }
}

/// The answer to an applied [`Command`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub enum Response {
    /// Nothing to say (membership entries, blanks).
    #[default]
    None,
    /// The revocation as it now stands; `created` is false when it already existed.
    Revoked {
        /// The stored entry.
        entry: Revocation,
        /// Whether this command created it.
        created: bool,
        /// Active sessions this revocation ended.
        ended: Vec<Session>,
    },
    /// An operator revocation was lifted (`Some`), or there was none (`None`).
    Lifted(Option<Revocation>),
    /// How many revocation entries the cleanup dropped.
    Expired(u64),
    /// The answers to a [`Command::Batch`], in order.
    Batch(Vec<Response>),
    /// A session started.
    SessionStarted(Session),
    /// A session (or its end) was refused; `code` is the API's error code.
    SessionRefused {
        /// `operator_revoked`, `credential_revoked`, `robot_busy`, `conflict`,
        /// `session_not_found`, `unauthorized` or `session_already_terminated`.
        code: String,
        /// For people.
        message: String,
    },
    /// A session ended at its operator's request.
    SessionEnded(Session),
    /// A [`Command::Once`] whose request id was already applied: the first answer, as it
    /// was then. Nothing changed this time, and [`crate::session_events`] yields nothing for
    /// it (the first application already published its events); callers answering a client
    /// use [`Response::original`].
    Replayed(Box<Response>),
}

impl Response {
    /// The answer without its [`Response::Replayed`] wrapper: what the request got when it
    /// was first applied.
    pub fn original(&self) -> &Response {
        match self {
            Response::Replayed(first) => first.original(),
            other => other,
        }
    }

    /// [`Response::original`], by value.
    pub fn into_original(self) -> Response {
        match self {
            Response::Replayed(first) => first.into_original(),
            other => other,
        }
    }

    /// Whether this answer is a replay of a remembered request.
    pub fn is_replay(&self) -> bool {
        matches!(self, Response::Replayed(_))
    }
}
