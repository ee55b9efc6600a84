//! The hub's vocabulary: who is on a connection, the actions the shell performs, and the
//! steps that hand a decision back to the shell for I/O in the middle.

#[cfg(doc)]
use super::HubCore; // for the doc links
use crate::codes::{AuditEvent, CloseCode};
use crate::mesh::NodeSignal;
use crate::protocol::{LastSession, RelayFrame, ServerFrame};
use crate::rooms::{ConnId, NodeId, Side};

/// Who is on an authenticated connection (from the verified token's claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An operator's console, or a robot owner's (an operator token without a session).
    Operator {
        /// The operator id (`sub`).
        subject: String,
        /// The session the token is for (`sid`); `None` for an owner's token.
        session_id: Option<String>,
        /// The token's id (`jti`), checked against revocations.
        token_id: String,
    },
    /// A robot agent.
    Robot {
        /// The robot id (`sub`).
        robot_id: String,
        /// The token's id (`jti`), checked against revocations.
        token_id: String,
    },
    /// An admin subscribed to session-end notices; joins nothing.
    Watcher {
        /// The admin's id (`sub`), echoed in `auth_ok`.
        subject: String,
        /// The token's id (`jti`), checked against revocations.
        token_id: String,
    },
}

impl Identity {
    /// The side of a session this identity may join; `None` for a watcher.
    pub fn side(&self) -> Option<Side> {
        match self {
            Self::Operator { .. } => Some(Side::Operator),
            Self::Robot { .. } => Some(Side::Robot),
            Self::Watcher { .. } => None,
        }
    }

    /// The `role` of `auth_ok`.
    pub fn role(&self) -> &'static str {
        match self {
            Self::Operator { .. } => "operator",
            Self::Robot { .. } => "robot",
            Self::Watcher { .. } => "watcher",
        }
    }

    /// The `subject` of `auth_ok`: the token's `sub`.
    pub fn subject(&self) -> &str {
        match self {
            Self::Operator { subject, .. } | Self::Watcher { subject, .. } => subject,
            Self::Robot { robot_id, .. } => robot_id,
        }
    }

    /// The token's id (`jti`).
    pub fn token_id(&self) -> &str {
        match self {
            Self::Operator { token_id, .. }
            | Self::Robot { token_id, .. }
            | Self::Watcher { token_id, .. } => token_id,
        }
    }

    /// Whether `other` may replace this identity on a re-authentication: the same role, the
    /// same subject and (for operators) the same session.
    pub fn same_principal(&self, other: &Identity) -> bool {
        match (self, other) {
            (
                Self::Operator {
                    subject: a,
                    session_id: sa,
                    ..
                },
                Self::Operator {
                    subject: b,
                    session_id: sb,
                    ..
                },
            ) => a == b && sa == sb,
            (Self::Robot { robot_id: a, .. }, Self::Robot { robot_id: b, .. })
            | (Self::Watcher { subject: a, .. }, Self::Watcher { subject: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// What `auth_ok` tells a connection beyond who it is (looked up by the shell).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Welcome {
    /// For a robot with an active session: `session_assigned` follows `auth_ok`.
    pub assigned_session: Option<String>,
    /// For a robot: where its most recent session stands.
    pub last_session: Option<LastSession>,
    /// How long the token has left, in milliseconds.
    pub expires_in_ms: u64,
}

impl Welcome {
    /// A welcome with only the token's remaining lifetime.
    pub fn expiring_in(expires_in_ms: u64) -> Self {
        Self {
            expires_in_ms,
            ..Self::default()
        }
    }
}

/// A credential that was revoked, as the hub matches it against its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A token id (`jti`).
    TokenId(&'a str),
    /// A subject: an operator, a robot or an admin (`sub`).
    Subject(&'a str),
}

/// How a relayed frame reached this node, so the shell times it in the right histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayPath {
    /// Both peers are on this node.
    Local,
    /// The sender is on another node.
    FromPeerNode,
}

impl RelayPath {
    /// The `path` label of `tether_relay_seconds`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::FromPeerNode => "from_peer_node",
        }
    }
}

/// Something the shell does, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Queue a frame on a connection (dropped if the connection is gone).
    Send(ConnId, ServerFrame),
    /// Queue a relayed frame on a connection, timed from when it reached this node.
    Relay {
        /// The receiving connection.
        to: ConnId,
        /// The frame, unchanged.
        frame: RelayFrame,
        /// How it got here.
        path: RelayPath,
    },
    /// Queue a close; the connection's writer stops there, so anything for it must come
    /// before.
    Close(ConnId, CloseCode, String),
    /// Send a message to another node; the answer is not needed. Awaiting it in place keeps
    /// the order the gateway always had; dropping it on failure is fine.
    ToNode(NodeId, NodeSignal),
    /// Send a message to every other member; the answers are not needed.
    Broadcast(NodeSignal),
    /// Write an audit record.
    Audit {
        /// The record's name.
        event: AuditEvent,
        /// The session it is about.
        session_id: String,
        /// The details (a JSON object).
        detail: serde_json::Value,
    },
}

/// What the core holds: each must return to zero once every connection has closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreCounts {
    /// Authenticated connections.
    pub connections: usize,
    /// Session rooms with at least one member (here or, as seen from here, elsewhere).
    pub rooms: usize,
    /// Local members of those rooms.
    pub room_members: usize,
}

/// What to do with a client frame, see [`HubCore::frame`].
#[derive(Debug, Clone, PartialEq)]
pub enum FrameStep {
    /// Perform these; the frame is handled.
    Done(Vec<Action>),
    /// A join: run admission (S1, S2) for `identity`, then call [`HubCore::join_admitted`]
    /// or [`HubCore::join_denied`].
    Admit {
        /// The session asked for.
        session_id: String,
        /// Who asks.
        identity: Identity,
        /// The side it would take.
        side: Side,
    },
    /// A robot asks for a lease on `session_id`: once a quorum confirmed (a read barrier that
    /// began after this request arrived) that the robot's active session is `session_id`,
    /// send [`ServerFrame::Lease`] echoing `nonce`; otherwise send nothing.
    Lease {
        /// The robot.
        robot_id: String,
        /// The session it asks for.
        session_id: String,
        /// Echoed in the lease.
        nonce: u64,
    },
    /// A relay to a peer on another node: send `signal` to `node`, then call
    /// [`HubCore::relay_result`] before reading the connection's next frame (order is kept
    /// per sender).
    Forward {
        /// The peer's node.
        node: NodeId,
        /// The relay message.
        signal: NodeSignal,
    },
}

/// What to do with a join, see [`HubCore::join_requested`].
#[derive(Debug, Clone, PartialEq)]
pub enum JoinRequest {
    /// Refused (or the connection is gone): perform these and stop.
    Done(Vec<Action>),
    /// Run admission for this identity and side.
    Admit {
        /// Who asks.
        identity: Identity,
        /// The side it would take.
        side: Side,
    },
}

/// The first half of an admitted join, see [`HubCore::join_admitted`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JoinStep {
    /// Perform these first (the previous room's `peer_left`, the replaced connection's
    /// close).
    pub actions: Vec<Action>,
    /// Broadcast this to every other member node, collect the answers that came back and
    /// pass them to [`HubCore::presence_answers`]. `None`: the join was dropped (the
    /// connection is gone) and there is nothing more to do.
    pub presence: Option<NodeSignal>,
}

/// What to do with a relayed frame, see [`HubCore::relay`].
#[derive(Debug, Clone, PartialEq)]
pub enum RelayStep {
    /// Perform these (a local delivery, or an error for the sender).
    Done(Vec<Action>),
    /// Send `signal` to `node`, then call [`HubCore::relay_result`].
    Forward {
        /// The peer's node.
        node: NodeId,
        /// The relay message.
        signal: NodeSignal,
    },
}
