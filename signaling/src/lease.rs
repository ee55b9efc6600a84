//! The lease desk (S7): robots ask for leases (`lease_request` with a nonce of their own),
//! the gateway answers a whole batch after one quorum check that began after every request
//! in it arrived. Pure: the shell owns the quorum check and the clock.
//!
//! A robot counts a lease from when it *sent* the request, so a lease that waited behind a
//! stalled link or a slow quorum check grants no time beyond "TTL after the request that
//! preceded the quorum contact". The desk keeps one pending request per connection (the
//! newest: its anchor is the latest), so a robot that floods requests costs one answer per
//! round.

use crate::rooms::ConnId;
use std::collections::BTreeMap;

/// One robot's pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseAsk {
    /// The robot's connection.
    pub conn: ConnId,
    /// The robot.
    pub robot_id: String,
    /// The session it asks a lease for.
    pub session_id: String,
    /// Its nonce, echoed in the lease.
    pub nonce: u64,
}

/// The requests waiting for the next quorum check.
#[derive(Debug, Default)]
pub struct LeaseDesk {
    pending: BTreeMap<ConnId, LeaseAsk>,
}

impl LeaseDesk {
    /// An empty desk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files a request, replacing an older one of the same connection. True when the desk
    /// was empty (the shell wakes its lease task).
    pub fn ask(&mut self, ask: LeaseAsk) -> bool {
        let was_empty = self.pending.is_empty();
        match self.pending.get(&ask.conn) {
            // An older nonce arriving late does not displace a newer one.
            Some(newer) if newer.session_id == ask.session_id && newer.nonce > ask.nonce => {}
            _ => {
                self.pending.insert(ask.conn, ask);
            }
        }
        was_empty
    }

    /// Every pending request, in connection order; the desk is empty afterwards. The shell
    /// starts its quorum check after this call, so every request taken preceded it.
    pub fn take(&mut self) -> Vec<LeaseAsk> {
        std::mem::take(&mut self.pending).into_values().collect()
    }

    /// The connection closed: its request is dropped.
    pub fn forget(&mut self, conn: ConnId) {
        self.pending.remove(&conn);
    }

    /// How many requests wait.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none wait.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(conn: ConnId, session: &str, nonce: u64) -> LeaseAsk {
        LeaseAsk {
            conn,
            robot_id: format!("r{conn}"),
            session_id: session.into(),
            nonce,
        }
    }

    #[test]
    fn requests_are_batched_one_per_connection_newest_first() {
        let mut desk = LeaseDesk::new();
        assert!(
            desk.ask(ask(1, "s1", 1)),
            "the first request wakes the shell"
        );
        assert!(!desk.ask(ask(2, "s2", 7)));
        assert!(!desk.ask(ask(1, "s1", 2)));
        // A stale nonce arriving after a newer one is ignored.
        assert!(!desk.ask(ask(1, "s1", 1)));
        assert_eq!(desk.len(), 2);
        assert_eq!(desk.take(), vec![ask(1, "s1", 2), ask(2, "s2", 7)]);
        assert!(desk.is_empty());
        assert!(
            desk.ask(ask(2, "s2", 8)),
            "empty again: the next request wakes"
        );
    }

    #[test]
    fn a_new_session_replaces_the_old_request_whatever_its_nonce() {
        let mut desk = LeaseDesk::new();
        desk.ask(ask(1, "s1", 9));
        desk.ask(ask(1, "s2", 1));
        assert_eq!(desk.take(), vec![ask(1, "s2", 1)]);
    }

    #[test]
    fn a_closed_connection_leaves_nothing_behind() {
        let mut desk = LeaseDesk::new();
        desk.ask(ask(1, "s1", 1));
        desk.forget(1);
        assert!(desk.take().is_empty());
    }
}
