//! Teardown (S4): when a session ends, every connection of it on this node is told why and
//! closed, its room is freed, and watchers and the robot's owner get a notice.

use super::{Action, HubCore, Identity};
use crate::codes::{AuditEvent, CloseCode};
use crate::mesh::NodeSignal;
use crate::protocol::ServerFrame;
use crate::rooms::Side;

/// An ended session, as the shell read it from the replicated state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSession {
    /// The session.
    pub id: String,
    /// Its operator.
    pub operator: String,
    /// Its robot.
    pub robot: String,
    /// Revoked by an admin (`true`) or terminated by its operator.
    pub revoked: bool,
    /// The end reason (`client_request`, or the revocation's reason); empty if none.
    pub reason: String,
    /// When it started, in ms since the epoch.
    pub created_at_ms: u64,
    /// When it ended, in ms since the epoch (`created_at_ms` if the state has no end time).
    pub ended_at_ms: u64,
    /// `ended_at_ms` in RFC 3339, for the notice (formatted by the caller).
    pub terminated_at: String,
    /// The operator who owns the robot (from the node's configuration), told of the end.
    pub owner: Option<String>,
    /// The robot has another active session now: its connections outside this session's
    /// room belong to that one and are left alone (a re-check after a snapshot would
    /// otherwise close a robot in the middle of its next session).
    pub robot_moved_on: bool,
}

impl HubCore {
    /// Tells every connection of an ended session why, closes it and frees its room; tells
    /// watchers and the robot's owner. The session's connections are the room's members,
    /// operators whose token names the session (joined or not) and the robot's connections.
    ///
    /// With `quiet`, a session with no connection here yields nothing, not even an audit
    /// record (the re-check after a snapshot or a missed event).
    ///
    /// Order: each of the session's connections gets the notice (if it is told), then
    /// `revoked`/`terminated`, then its close, since a writer stops at the close; those come
    /// before the notices to others (S4 first); then `SESSION_REVOKED`/`SESSION_TERMINATED`
    /// and `TEARDOWN` (`{"connections": n}`; the shell adds its timing).
    pub fn session_ended(&mut self, session: &EndedSession, quiet: bool) -> Vec<Action> {
        let reason = &session.reason;
        let (frame, code) = if session.revoked {
            let frame = ServerFrame::Revoked {
                session_id: session.id.clone(),
                reason: reason.clone(),
            };
            (frame, CloseCode::Revoked)
        } else {
            let frame = ServerFrame::Terminated {
                session_id: session.id.clone(),
                reason: reason.clone(),
            };
            (frame, CloseCode::Terminated)
        };
        let local_sides: Vec<_> = [Side::Operator, Side::Robot]
            .into_iter()
            .filter(|side| self.rooms.local(&session.id, *side).is_some())
            .collect();
        let mut targets = self.rooms.close_session(&session.id);
        for (id, identity) in &self.conns {
            let holds = match identity {
                Identity::Operator { session_id, .. } => {
                    session_id.as_deref() == Some(session.id.as_str())
                }
                Identity::Robot { robot_id, .. } => {
                    *robot_id == session.robot && !session.robot_moved_on
                }
                Identity::Watcher { .. } => false,
            };
            if holds && !targets.contains(id) {
                targets.push(*id);
            }
        }
        if quiet && targets.is_empty() {
            return Vec::new();
        }
        let notice = ServerFrame::SessionTerminated {
            session_id: session.id.clone(),
            operator: session.operator.clone(),
            robot: session.robot.clone(),
            terminated_at: session.terminated_at.clone(),
            duration_seconds: session.ended_at_ms.saturating_sub(session.created_at_ms) / 1000,
            reason: reason.clone(),
        };
        // Watchers hear of every session; operators of sessions on the robots they own.
        let told = |identity: &Identity| match identity {
            Identity::Watcher { .. } => true,
            Identity::Operator { subject, .. } => session.owner.as_deref() == Some(subject),
            Identity::Robot { .. } => false,
        };
        let mut actions = Vec::new();
        for conn in &targets {
            if let Some(identity) = self.conns.get(conn) {
                if told(identity) {
                    actions.push(Action::Send(*conn, notice.clone()));
                }
                actions.push(Action::Send(*conn, frame.clone()));
                actions.push(Action::Close(*conn, code, reason.clone()));
            }
        }
        for (id, identity) in &self.conns {
            if told(identity) && !targets.contains(id) {
                actions.push(Action::Send(*id, notice.clone()));
            }
        }
        for conn in &targets {
            self.conns.remove(conn);
        }
        self.robots.retain(|_, c| !targets.contains(c));
        let event = if session.revoked {
            AuditEvent::SessionRevoked
        } else {
            AuditEvent::SessionTerminated
        };
        actions.push(Action::Audit {
            event,
            session_id: session.id.clone(),
            detail: serde_json::json!({
                "operator": session.operator,
                "robot": session.robot,
                "reason": reason,
            }),
        });
        actions.push(Action::Audit {
            event: AuditEvent::Teardown,
            session_id: session.id.clone(),
            detail: serde_json::json!({ "connections": targets.len() }),
        });
        // The other nodes tear down on their own when they apply the end; telling them now
        // covers one that lags (its room would otherwise keep this node's members).
        if !local_sides.is_empty() {
            actions.push(Action::Broadcast(NodeSignal::Ended {
                session_id: session.id.clone(),
            }));
        }
        self.remember_ended(&session.id);
        actions
    }
}
