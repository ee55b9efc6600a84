//! The session table of the state machine and its indexes: each robot's active and latest
//! session, and ended sessions by the instant the cleanup may drop them.
//!
//! Every index is an ordered map or set, so iteration (and with it every answer and
//! mutation list built from it) is the same on every node.

use crate::model::{Session, SessionState, UnixMillis, SESSION_RETENTION_MS};
use std::collections::{BTreeMap, BTreeSet};

/// Retained sessions (active, and ended ones until their retention runs out), indexed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sessions {
    by_id: BTreeMap<String, Session>,
    /// The active session of each busy robot.
    active_by_robot: BTreeMap<String, String>,
    /// Every retained session of each robot by `(created_at, id)`: the last is the latest.
    by_robot: BTreeMap<String, BTreeSet<(UnixMillis, String)>>,
    /// Ended sessions by the instant they may be dropped.
    by_expiry: BTreeSet<(UnixMillis, String)>,
}

impl Sessions {
    /// One session.
    pub(crate) fn get(&self, sid: &str) -> Option<&Session> {
        self.by_id.get(sid)
    }

    /// Every session, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Session> {
        self.by_id.values()
    }

    /// How many sessions are retained.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The id of the robot's active session.
    pub(crate) fn active_id_of(&self, robot: &str) -> Option<&str> {
        self.active_by_robot.get(robot).map(String::as_str)
    }

    /// Every active session, by robot.
    pub(crate) fn active(&self) -> impl Iterator<Item = &Session> {
        self.active_by_robot
            .values()
            .filter_map(|sid| self.by_id.get(sid))
    }

    /// The robot's retained session with the greatest `(created_at, id)`.
    pub(crate) fn latest_of(&self, robot: &str) -> Option<&Session> {
        let (_, sid) = self.by_robot.get(robot)?.last()?;
        self.by_id.get(sid)
    }

    /// Inserts (or replaces) a session, in any state and in any order.
    pub(crate) fn insert(&mut self, session: Session) {
        self.remove(&session.id);
        match session.ended_at {
            None => {
                self.active_by_robot
                    .insert(session.robot.clone(), session.id.clone());
            }
            Some(at) => {
                self.by_expiry
                    .insert((retained_until(at), session.id.clone()));
            }
        }
        self.by_robot
            .entry(session.robot.clone())
            .or_default()
            .insert((session.created_at, session.id.clone()));
        self.by_id.insert(session.id.clone(), session);
    }

    /// Ends an active session; `None` when it is unknown or already ended.
    pub(crate) fn end(
        &mut self,
        sid: &str,
        state: SessionState,
        reason: &str,
        at: UnixMillis,
    ) -> Option<Session> {
        let session = self.by_id.get_mut(sid)?;
        if session.state != SessionState::Active {
            return None;
        }
        session.state = state;
        session.ended_at = Some(at);
        session.end_reason = Some(reason.to_owned());
        let session = session.clone();
        if self.active_id_of(&session.robot) == Some(sid) {
            self.active_by_robot.remove(&session.robot);
        }
        self.by_expiry
            .insert((retained_until(at), session.id.clone()));
        Some(session)
    }

    /// Drops every ended session retained only until `now` or earlier; returns their ids.
    pub(crate) fn drop_due(&mut self, now: UnixMillis) -> Vec<String> {
        let due: Vec<String> = self
            .by_expiry
            .iter()
            .take_while(|(until, _)| *until <= now)
            .map(|(_, sid)| sid.clone())
            .collect();
        for sid in &due {
            self.remove(sid);
        }
        due
    }

    /// The earliest instant at which an ended session may be dropped.
    pub(crate) fn next_expiry(&self) -> Option<UnixMillis> {
        self.by_expiry.first().map(|(until, _)| *until)
    }

    /// Removes a session from the table and every index.
    fn remove(&mut self, sid: &str) -> Option<Session> {
        let session = self.by_id.remove(sid)?;
        if self.active_id_of(&session.robot) == Some(sid) {
            self.active_by_robot.remove(&session.robot);
        }
        if let Some(at) = session.ended_at {
            self.by_expiry
                .remove(&(retained_until(at), session.id.clone()));
        }
        if let Some(of_robot) = self.by_robot.get_mut(&session.robot) {
            of_robot.remove(&(session.created_at, session.id.clone()));
            if of_robot.is_empty() {
                self.by_robot.remove(&session.robot);
            }
        }
        Some(session)
    }
}

/// Until when a session that ended at `at` is retained.
fn retained_until(at: UnixMillis) -> UnixMillis {
    at.saturating_add(SESSION_RETENTION_MS)
}
