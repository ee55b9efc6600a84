//! The gateway's hub without I/O: who is connected, who is in which room, and what to
//! send, relay, close or audit for each thing that happens.
//!
//! Events in, actions out. The node's gateway is a shell around [`HubCore`]: it owns the
//! sockets, the clock, the replicated state and the node-to-node calls, feeds the core what
//! happened and performs the [`Action`]s it returns, **in order** (the order carries
//! guarantees: a notice before a close, a session's own closes before notices to others).
//! Where a decision needs I/O in the middle (a join's admission and presence broadcast, a
//! relay to another node), the core returns a step saying what to ask, and the shell calls
//! back with the result.

mod credentials;
mod teardown;
#[cfg(test)]
mod tests;
mod types;

pub use teardown::EndedSession;
pub use types::{
    Action, CoreCounts, Credential, FrameStep, Identity, JoinRequest, JoinStep, RelayPath,
    RelayStep, Welcome,
};

use crate::codes::{AuditEvent, CloseCode, ErrorCode};
use crate::mesh::{NodeSignal, SignalAnswer};
use crate::protocol::{error_frame, ClientFrame, RelayFrame, ServerFrame};
use crate::rooms::{ConnId, Left, Location, NodeId, Rooms, Side};
use std::collections::BTreeMap;

/// The hub's state: rooms, authenticated connections and which connection is each robot's.
///
/// Ordered maps, so that the order of actions (e.g. teardown notices) is deterministic.
#[derive(Debug, Default)]
pub struct HubCore {
    rooms: Rooms,
    conns: BTreeMap<ConnId, Identity>,
    robots: BTreeMap<String, ConnId>,
    /// Sessions recently torn down (here or on a node that said so), oldest first: a late
    /// presence for one of them must not recreate its room.
    ended: std::collections::VecDeque<String>,
    ended_set: std::collections::HashSet<String>,
}

/// How many ended sessions the core remembers (the shell also checks the replicated state).
const ENDED_REMEMBERED: usize = 4096;

impl HubCore {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// A refused authentication (`conn` is not registered): the error frame, then the close.
    pub fn auth_refused(
        conn: ConnId,
        close: CloseCode,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Vec<Action> {
        let message = message.into();
        vec![
            Action::Send(conn, error_frame(code, message.clone())),
            Action::Close(conn, close, message),
        ]
    }

    /// A connection authenticated as `identity`: `auth_ok` (with the token's remaining
    /// lifetime and, for a robot, its last session), registration, and for a robot with an
    /// active session (looked up by the shell) `session_assigned`. A new connection of a
    /// robot already connected takes over the robot's leases and session notices; the older
    /// one stays open.
    pub fn authenticated(
        &mut self,
        conn: ConnId,
        identity: Identity,
        welcome: Welcome,
    ) -> Vec<Action> {
        let mut actions = vec![Action::Send(
            conn,
            ServerFrame::AuthOk {
                role: identity.role().into(),
                subject: identity.subject().into(),
                expires_in_ms: welcome.expires_in_ms,
                last_session: welcome.last_session,
            },
        )];
        if let Identity::Robot { robot_id, .. } = &identity {
            self.robots.insert(robot_id.clone(), conn);
        }
        self.conns.insert(conn, identity);
        if let Some(session_id) = welcome.assigned_session {
            actions.push(Action::Send(
                conn,
                ServerFrame::SessionAssigned { session_id },
            ));
        }
        actions
    }

    /// Dispatches a valid frame from an authenticated connection.
    pub fn frame(&mut self, conn: ConnId, frame: ClientFrame) -> FrameStep {
        let relay = |f: RelayFrame| match self.relay(conn, f) {
            RelayStep::Done(actions) => FrameStep::Done(actions),
            RelayStep::Forward { node, signal } => FrameStep::Forward { node, signal },
        };
        match frame {
            // A fresh token is verified by the shell, which calls `reauthenticated`; an
            // `auth` that reaches the core is one the shell did not take.
            ClientFrame::Auth { .. } => FrameStep::Done(vec![Action::Send(
                conn,
                error_frame(ErrorCode::AlreadyAuthenticated, "auth comes once"),
            )]),
            ClientFrame::LeaseRequest { session_id, nonce } => {
                self.lease_requested(conn, session_id, nonce)
            }
            ClientFrame::Ping => FrameStep::Done(vec![Action::Send(conn, ServerFrame::Pong)]),
            ClientFrame::Offer { sdp } => relay(RelayFrame::Offer { sdp }),
            ClientFrame::Answer { sdp } => relay(RelayFrame::Answer { sdp }),
            ClientFrame::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => relay(RelayFrame::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
            }),
            ClientFrame::Leave => FrameStep::Done(self.leave(conn)),
            ClientFrame::Join { session_id } => match self.join_requested(conn) {
                JoinRequest::Done(actions) => FrameStep::Done(actions),
                JoinRequest::Admit { identity, side } => FrameStep::Admit {
                    session_id,
                    identity,
                    side,
                },
            },
        }
    }

    /// A join from `conn`: nothing for a connection that is gone, `forbidden` for a
    /// watcher, otherwise the identity and side to admit.
    pub fn join_requested(&self, conn: ConnId) -> JoinRequest {
        let Some(identity) = self.conns.get(&conn) else {
            return JoinRequest::Done(Vec::new());
        };
        match identity.side() {
            Some(side) => JoinRequest::Admit {
                identity: identity.clone(),
                side,
            },
            None => JoinRequest::Done(vec![Action::Send(
                conn,
                error_frame(ErrorCode::Forbidden, "watchers do not join sessions"),
            )]),
        }
    }

    /// Admission refused the join: a `JOIN_DENIED` record, then the error frame. `side` is
    /// the one [`JoinRequest::Admit`] gave (the connection may be gone by now).
    pub fn join_denied(
        &self,
        conn: ConnId,
        session_id: &str,
        side: Side,
        code: ErrorCode,
        message: &str,
    ) -> Vec<Action> {
        vec![
            Action::Audit {
                event: AuditEvent::JoinDenied,
                session_id: session_id.into(),
                detail: serde_json::json!({ "code": code, "side": side }),
            },
            Action::Send(conn, error_frame(code, message)),
        ]
    }

    /// Admission let `conn` into `session_id`: it takes its side of the room (leaving its
    /// previous room, replacing a previous connection on the same side), and the other
    /// nodes are to be told. A connection torn down during admission is not let in.
    pub fn join_admitted(&mut self, conn: ConnId, session_id: &str) -> JoinStep {
        let Some(side) = self.conns.get(&conn).and_then(Identity::side) else {
            return JoinStep::default();
        };
        let (joined, previous) = self.rooms.join(conn, session_id, side);
        let mut actions = previous.map(|l| self.announce_left(l)).unwrap_or_default();
        if let Some(old) = joined.replaced.filter(|c| self.conns.contains_key(c)) {
            actions.push(Action::Close(
                old,
                CloseCode::Replaced,
                "replaced by a newer connection".into(),
            ));
        }
        JoinStep {
            actions,
            presence: Some(NodeSignal::Presence {
                session_id: session_id.into(),
                side,
                joined: true,
            }),
        }
    }

    /// The other nodes' answers to a join's presence broadcast (those that answered):
    /// `joined` for the connection, with the peer's presence here or on the first node
    /// that has it, and `peer_joined` for a peer on this node. Nothing if the connection
    /// is no longer in that room (closed, replaced or torn down meanwhile).
    pub fn presence_answers(
        &mut self,
        conn: ConnId,
        session_id: &str,
        answers: Vec<(NodeId, SignalAnswer)>,
    ) -> Vec<Action> {
        if !self.conns.contains_key(&conn) {
            return Vec::new();
        }
        let Some((sid, side, mut peer)) = self.rooms.peer_of(conn) else {
            return Vec::new();
        };
        if sid != session_id {
            return Vec::new();
        }
        for (node, answer) in answers {
            if peer.is_none() && answer.present.contains(&side.other()) {
                // The peer's slot was empty, so nobody is displaced; the one to notify is
                // `conn` itself, which gets `joined` below.
                self.rooms.remote_joined(session_id, side.other(), node);
                peer = Some(Location::Remote(node));
            }
        }
        let mut actions = vec![Action::Send(
            conn,
            ServerFrame::Joined {
                session_id: session_id.into(),
                peer_present: peer.is_some(),
            },
        )];
        if let Some(Location::Local(other)) = peer {
            actions.extend(self.send(
                other,
                ServerFrame::PeerJoined {
                    session_id: session_id.into(),
                },
            ));
        }
        actions
    }

    /// A frame for `conn`'s peer: delivered here, forwarded to the peer's node, or refused
    /// (`not_joined`, `peer_not_present`).
    pub fn relay(&self, conn: ConnId, frame: RelayFrame) -> RelayStep {
        let refuse =
            |code, message| RelayStep::Done(vec![Action::Send(conn, error_frame(code, message))]);
        match self.rooms.peer_of(conn) {
            None => refuse(ErrorCode::NotJoined, "join a session first"),
            Some((_, _, None)) => {
                refuse(ErrorCode::PeerNotPresent, "the other peer is not connected")
            }
            Some((_, _, Some(Location::Local(other)))) => RelayStep::Done(
                self.conns
                    .contains_key(&other)
                    .then_some(Action::Relay {
                        to: other,
                        frame,
                        path: RelayPath::Local,
                    })
                    .into_iter()
                    .collect(),
            ),
            Some((session_id, side, Some(Location::Remote(node)))) => RelayStep::Forward {
                node,
                signal: NodeSignal::Relay {
                    session_id: session_id.into(),
                    to: side.other(),
                    frame,
                },
            },
        }
    }

    /// How a forwarded relay went: `delivered` is the answer's, `false` when there was no
    /// answer (a timeout, an unreachable node or an undecodable reply).
    pub fn relay_result(&self, conn: ConnId, delivered: bool) -> Vec<Action> {
        if delivered {
            return Vec::new();
        }
        vec![Action::Send(
            conn,
            error_frame(
                ErrorCode::RelayFailed,
                "the peer's node did not take the frame",
            ),
        )]
    }

    /// A message from node `from`'s gateway: the answer to send back, and what to do here.
    pub fn node_signal(&mut self, from: NodeId, signal: NodeSignal) -> (SignalAnswer, Vec<Action>) {
        match signal {
            NodeSignal::Presence {
                session_id,
                side,
                joined: true,
            } if self.has_ended(&session_id) => {
                let _ = side;
                (SignalAnswer::default(), Vec::new())
            }
            NodeSignal::Ended { session_id } => {
                for side in [Side::Operator, Side::Robot] {
                    let _ = self.rooms.remote_left(&session_id, side, from);
                }
                self.remember_ended(&session_id);
                (SignalAnswer::default(), Vec::new())
            }
            NodeSignal::Presence {
                session_id,
                side,
                joined,
            } => {
                let mut actions = Vec::new();
                let notify = if joined {
                    let (notify, displaced) = self.rooms.remote_joined(&session_id, side, from);
                    if let Some(old) = displaced.filter(|c| self.conns.contains_key(c)) {
                        actions.push(Action::Close(
                            old,
                            CloseCode::Replaced,
                            "joined on another node".into(),
                        ));
                    }
                    notify.map(|c| {
                        (
                            c,
                            ServerFrame::PeerJoined {
                                session_id: session_id.clone(),
                            },
                        )
                    })
                } else {
                    self.rooms.remote_left(&session_id, side, from).map(|c| {
                        (
                            c,
                            ServerFrame::PeerLeft {
                                session_id: session_id.clone(),
                            },
                        )
                    })
                };
                if let Some((conn, frame)) = notify {
                    actions.extend(self.send(conn, frame));
                }
                let present = [Side::Operator, Side::Robot]
                    .into_iter()
                    .filter(|s| self.rooms.local(&session_id, *s).is_some())
                    .collect();
                let answer = SignalAnswer {
                    present,
                    delivered: false,
                };
                (answer, actions)
            }
            NodeSignal::Relay {
                session_id,
                to,
                frame,
            } => {
                let target = self
                    .rooms
                    .local(&session_id, to)
                    .filter(|c| self.conns.contains_key(c));
                let answer = SignalAnswer {
                    present: Vec::new(),
                    delivered: target.is_some(),
                };
                let actions = target
                    .map(|to| Action::Relay {
                        to,
                        frame,
                        path: RelayPath::FromPeerNode,
                    })
                    .into_iter()
                    .collect();
                (answer, actions)
            }
        }
    }

    /// `conn` left its room (the connection stays): its peer is told.
    pub fn leave(&mut self, conn: ConnId) -> Vec<Action> {
        self.rooms
            .leave(conn)
            .map(|l| self.announce_left(l))
            .unwrap_or_default()
    }

    /// `conn`'s socket closed: it is forgotten, and its peer told.
    pub fn disconnected(&mut self, conn: ConnId) -> Vec<Action> {
        if let Some(Identity::Robot { robot_id, .. }) = self.conns.remove(&conn) {
            if self.robots.get(&robot_id) == Some(&conn) {
                self.robots.remove(&robot_id);
            }
        }
        self.leave(conn)
    }

    /// The cluster's other members are now `members`: the rooms forget every node that is
    /// not among them (removed from the cluster), and their local peers hear `peer_left`.
    pub fn members_now(&mut self, members: &[NodeId]) -> Vec<Action> {
        let gone: Vec<NodeId> = self
            .rooms
            .remote_nodes()
            .into_iter()
            .filter(|n| !members.contains(n))
            .collect();
        gone.into_iter().flat_map(|n| self.node_gone(n)).collect()
    }

    /// Node `node` left the cluster or was declared dead (the shell calls this when it is
    /// no longer a member, or after repeated relays to it failed): its peers' rooms forget
    /// it, and their local peers hear `peer_left`.
    pub fn node_gone(&mut self, node: NodeId) -> Vec<Action> {
        self.rooms
            .forget_node(node)
            .into_iter()
            .flat_map(|(conn, session_id)| self.send(conn, ServerFrame::PeerLeft { session_id }))
            .collect()
    }

    /// A session started (in this node's applied state): a `SESSION_STARTED` record, and
    /// `session_assigned` for the robot if it is connected here.
    pub fn session_started(&self, session_id: &str, operator: &str, robot: &str) -> Vec<Action> {
        let mut actions = vec![Action::Audit {
            event: AuditEvent::SessionStarted,
            session_id: session_id.into(),
            detail: serde_json::json!({ "operator": operator, "robot": robot }),
        }];
        if let Some(conn) = self.robots.get(robot) {
            actions.push(Action::Send(
                *conn,
                ServerFrame::SessionAssigned {
                    session_id: session_id.into(),
                },
            ));
        }
        actions
    }

    /// Whether `session_id` was torn down recently (see [`ENDED_REMEMBERED`]).
    pub fn has_ended(&self, session_id: &str) -> bool {
        self.ended_set.contains(session_id)
    }

    fn remember_ended(&mut self, session_id: &str) {
        if !self.ended_set.insert(session_id.to_owned()) {
            return;
        }
        self.ended.push_back(session_id.to_owned());
        if self.ended.len() > ENDED_REMEMBERED {
            if let Some(oldest) = self.ended.pop_front() {
                self.ended_set.remove(&oldest);
            }
        }
    }

    /// Who is on `conn`, if it is authenticated and not torn down.
    pub fn identity(&self, conn: ConnId) -> Option<&Identity> {
        self.conns.get(&conn)
    }

    /// Every authenticated connection's subject and token id, for a re-check against
    /// revocations (after a snapshot install).
    pub fn credentials(&self) -> impl Iterator<Item = (&str, &str)> {
        self.conns.values().map(|i| (i.subject(), i.token_id()))
    }

    /// The connection that gets `robot_id`'s leases and session notices.
    pub fn robot_conn(&self, robot_id: &str) -> Option<ConnId> {
        self.robots.get(robot_id).copied()
    }

    /// What the core holds, for metrics and leak checks.
    pub fn counts(&self) -> CoreCounts {
        CoreCounts {
            connections: self.conns.len(),
            rooms: self.rooms.room_count(),
            room_members: self.rooms.member_count(),
        }
    }

    /// A frame for a connection, if it is still registered.
    fn send(&self, conn: ConnId, frame: ServerFrame) -> Option<Action> {
        self.conns
            .contains_key(&conn)
            .then_some(Action::Send(conn, frame))
    }

    /// Tells the peer of a connection that left: `peer_left` here, and every other node
    /// hears of the leave. Not only the peer's node: every node recorded this side's
    /// location when it joined, and one not told would keep a stale peer (a later join
    /// there would see `peer_present: true` and its relays fail).
    fn announce_left(&self, left: Left) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(Location::Local(other)) = left.peer {
            actions.extend(self.send(
                other,
                ServerFrame::PeerLeft {
                    session_id: left.session_id.clone(),
                },
            ));
        }
        actions.push(Action::Broadcast(NodeSignal::Presence {
            session_id: left.session_id,
            side: left.side,
            joined: false,
        }));
        actions
    }
}
