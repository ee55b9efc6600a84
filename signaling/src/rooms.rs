//! Rooms: which connection holds which side of which session, on this node or another.
//!
//! Pure bookkeeping. The node calls in on every join, leave, disconnect, presence message
//! and teardown, and acts on what comes back (whom to notify, where to relay, what to
//! close). A room disappears as soon as neither side is present, so nothing leaks.

use std::collections::HashMap;

/// A local connection id.
pub type ConnId = u64;
/// A gateway node id.
pub type NodeId = u64;

/// Which end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The operator's console.
    Operator,
    /// The robot agent.
    Robot,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Self {
        match self {
            Self::Operator => Self::Robot,
            Self::Robot => Self::Operator,
        }
    }
}

/// Where a side of a session is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// On this node.
    Local(ConnId),
    /// On another node.
    Remote(NodeId),
}

#[derive(Debug, Default, Clone)]
struct Room {
    operator: Option<Location>,
    robot: Option<Location>,
}

impl Room {
    fn slot(&mut self, side: Side) -> &mut Option<Location> {
        match side {
            Side::Operator => &mut self.operator,
            Side::Robot => &mut self.robot,
        }
    }

    fn get(&self, side: Side) -> Option<Location> {
        match side {
            Side::Operator => self.operator,
            Side::Robot => self.robot,
        }
    }

    fn is_empty(&self) -> bool {
        self.operator.is_none() && self.robot.is_none()
    }
}

/// The result of a local join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// Where the other side is, if present.
    pub peer: Option<Location>,
    /// A previous local connection on the same side, replaced by this one (a resume after a
    /// dropped socket); the caller closes it.
    pub replaced: Option<ConnId>,
}

/// The result of a local leave or disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    /// The session left.
    pub session_id: String,
    /// The side that left.
    pub side: Side,
    /// The other side, to be told `peer_left`.
    pub peer: Option<Location>,
}

/// Every room this node knows of.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: HashMap<String, Room>,
    conns: HashMap<ConnId, (String, Side)>,
}

impl Rooms {
    /// Puts a local connection in a session's room. A connection is in at most one room; it
    /// leaves its previous one first (returned too, for notifications).
    pub fn join(&mut self, conn: ConnId, session_id: &str, side: Side) -> (Joined, Option<Left>) {
        let previous = self.leave(conn);
        let room = self.rooms.entry(session_id.to_owned()).or_default();
        let replaced = match room.slot(side).replace(Location::Local(conn)) {
            Some(Location::Local(old)) if old != conn => Some(old),
            _ => None,
        };
        if let Some(old) = replaced {
            self.conns.remove(&old);
        }
        let peer = room.get(side.other());
        self.conns.insert(conn, (session_id.to_owned(), side));
        (Joined { peer, replaced }, previous)
    }

    /// Takes a local connection out of its room (leave or disconnect).
    pub fn leave(&mut self, conn: ConnId) -> Option<Left> {
        let (session_id, side) = self.conns.remove(&conn)?;
        let room = self.rooms.get_mut(&session_id)?;
        if room.get(side) == Some(Location::Local(conn)) {
            *room.slot(side) = None;
        }
        let peer = room.get(side.other());
        if room.is_empty() {
            self.rooms.remove(&session_id);
        }
        Some(Left {
            session_id,
            side,
            peer,
        })
    }

    /// The session and the other side's location for a local connection (for relay).
    pub fn peer_of(&self, conn: ConnId) -> Option<(&str, Side, Option<Location>)> {
        let (session_id, side) = self.conns.get(&conn)?;
        let room = self.rooms.get(session_id)?;
        Some((session_id, *side, room.get(side.other())))
    }

    /// The local connection holding `side` of a session, if any.
    pub fn local(&self, session_id: &str, side: Side) -> Option<ConnId> {
        match self.rooms.get(session_id)?.get(side) {
            Some(Location::Local(conn)) => Some(conn),
            _ => None,
        }
    }

    /// Another node says `side` of a session joined there. Returns the local connection of
    /// the other side, to be told `peer_joined`. A local holder of the same side is
    /// displaced (returned second) – the session moved nodes.
    pub fn remote_joined(
        &mut self,
        session_id: &str,
        side: Side,
        node: NodeId,
    ) -> (Option<ConnId>, Option<ConnId>) {
        let room = self.rooms.entry(session_id.to_owned()).or_default();
        let displaced = match room.slot(side).replace(Location::Remote(node)) {
            Some(Location::Local(old)) => Some(old),
            _ => None,
        };
        if let Some(old) = displaced {
            self.conns.remove(&old);
        }
        let notify = match room.get(side.other()) {
            Some(Location::Local(conn)) => Some(conn),
            _ => None,
        };
        (notify, displaced)
    }

    /// Another node says `side` of a session left there. Returns the local connection of the
    /// other side, to be told `peer_left`.
    pub fn remote_left(&mut self, session_id: &str, side: Side, node: NodeId) -> Option<ConnId> {
        let room = self.rooms.get_mut(session_id)?;
        if room.get(side) != Some(Location::Remote(node)) {
            return None;
        }
        *room.slot(side) = None;
        let notify = match room.get(side.other()) {
            Some(Location::Local(conn)) => Some(conn),
            _ => None,
        };
        if room.is_empty() {
            self.rooms.remove(session_id);
        }
        notify
    }

    /// Forgets every trace of `node` (it left the cluster or was declared dead). Returns the
    /// local connections whose peer was there, with their session, for `peer_left`.
    pub fn forget_node(&mut self, node: NodeId) -> Vec<(ConnId, String)> {
        let mut notify = Vec::new();
        self.rooms.retain(|session_id, room| {
            for side in [Side::Operator, Side::Robot] {
                if room.get(side) == Some(Location::Remote(node)) {
                    *room.slot(side) = None;
                    if let Some(Location::Local(conn)) = room.get(side.other()) {
                        notify.push((conn, session_id.clone()));
                    }
                }
            }
            !room.is_empty()
        });
        notify
    }

    /// The other nodes this node's rooms place a member on.
    pub fn remote_nodes(&self) -> std::collections::BTreeSet<NodeId> {
        self.rooms
            .values()
            .flat_map(|room| [room.operator, room.robot])
            .filter_map(|l| match l {
                Some(Location::Remote(node)) => Some(node),
                _ => None,
            })
            .collect()
    }

    /// Tears a session down: removes its room and returns its local connections.
    pub fn close_session(&mut self, session_id: &str) -> Vec<ConnId> {
        let Some(room) = self.rooms.remove(session_id) else {
            return Vec::new();
        };
        let locals: Vec<_> = [room.operator, room.robot]
            .into_iter()
            .filter_map(|l| match l {
                Some(Location::Local(conn)) => Some(conn),
                _ => None,
            })
            .collect();
        for conn in &locals {
            self.conns.remove(conn);
        }
        locals
    }

    /// Rooms with anyone in them.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Local connections in a room.
    pub fn member_count(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_local_peers_find_each_other_and_the_room_goes_when_both_leave() {
        let mut r = Rooms::default();
        let (j, _) = r.join(1, "s", Side::Operator);
        assert_eq!(
            j,
            Joined {
                peer: None,
                replaced: None
            }
        );
        let (j, _) = r.join(2, "s", Side::Robot);
        assert_eq!(j.peer, Some(Location::Local(1)));
        assert_eq!(
            r.peer_of(1),
            Some(("s", Side::Operator, Some(Location::Local(2))))
        );
        let left = r.leave(1).unwrap();
        assert_eq!(left.peer, Some(Location::Local(2)));
        assert_eq!(r.room_count(), 1);
        assert!(r.leave(2).is_some());
        assert_eq!((r.room_count(), r.member_count()), (0, 0));
        assert!(r.leave(2).is_none());
    }

    #[test]
    fn a_rejoin_on_the_same_side_replaces_the_old_connection() {
        let mut r = Rooms::default();
        r.join(1, "s", Side::Robot);
        let (j, _) = r.join(7, "s", Side::Robot);
        assert_eq!(j.replaced, Some(1));
        assert!(r.leave(1).is_none(), "the replaced connection is gone");
        assert_eq!(r.local("s", Side::Robot), Some(7));
    }

    #[test]
    fn joining_another_room_leaves_the_first() {
        let mut r = Rooms::default();
        r.join(1, "a", Side::Operator);
        let (_, left) = r.join(1, "b", Side::Operator);
        assert_eq!(left.unwrap().session_id, "a");
        assert_eq!(r.room_count(), 1);
    }

    #[test]
    fn remote_presence_is_tracked_and_forgotten() {
        let mut r = Rooms::default();
        r.join(1, "s", Side::Operator);
        assert_eq!(r.remote_joined("s", Side::Robot, 9), (Some(1), None));
        assert_eq!(r.peer_of(1).unwrap().2, Some(Location::Remote(9)));
        assert_eq!(r.remote_left("s", Side::Robot, 8), None, "not where it was");
        assert_eq!(r.remote_left("s", Side::Robot, 9), Some(1));
        r.remote_joined("s", Side::Robot, 9);
        assert_eq!(r.forget_node(9), vec![(1, "s".to_owned())]);
        assert_eq!(r.peer_of(1).unwrap().2, None);
    }

    #[test]
    fn teardown_returns_local_connections_and_leaves_nothing() {
        let mut r = Rooms::default();
        r.join(1, "s", Side::Operator);
        r.remote_joined("s", Side::Robot, 3);
        r.join(2, "t", Side::Robot);
        assert_eq!(r.close_session("s"), vec![1]);
        assert!(r.peer_of(1).is_none());
        assert_eq!((r.room_count(), r.member_count()), (1, 1));
        assert!(r.close_session("s").is_empty());
    }
}
