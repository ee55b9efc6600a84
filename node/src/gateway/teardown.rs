//! Session starts and ends, and credential revocations, from the state machine, applied to
//! this node's connections (S4): the robot hears of a new session; an ended one's
//! connections are told why and closed, watchers and the robot's owner get a notice, and
//! the audit ledger records it; a connection whose token id or subject is revoked (a
//! robot's, a watcher's, an owner's) is closed with the reason.
//!
//! After a snapshot or a missed event, the hub re-checks against the applied state: only
//! the sessions it last saw active and that have ended since are torn down (not every
//! session ended in the last day, which would close robots serving newer sessions and
//! rewrite audit records), and every connection's credential is checked again.

use super::Hub;
use crate::telemetry::names;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;
use tether_api::time::rfc3339;
use tether_signaling::hub::{Action, Credential, EndedSession};
use tether_store::{
    ReplicatedState, Revocation, RevocationKind, Session, SessionEvent, SessionState,
};
use tokio::sync::broadcast::error::RecvError;

impl Hub {
    /// Applies session starts and ends to this node's connections (S4).
    pub(super) async fn teardown_loop(
        self: Arc<Self>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut events = self.raft.session_events();
        // What is active now; events from here on keep it current.
        {
            let state = self.raft.view().read();
            *self.active() = state
                .sessions()
                .filter(|s| s.state == SessionState::Active)
                .map(|s| s.id.clone())
                .collect();
        }
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = stopped.wait_for(|s| *s) => return,
            };
            match event {
                Ok(SessionEvent::Started(s)) => {
                    self.active().insert(s.id.clone());
                    self.act(Instant::now(), |core| {
                        core.session_started(&s.id, &s.operator, &s.robot)
                    })
                    .await
                }
                Ok(SessionEvent::Ended(session)) => {
                    self.active().remove(&session.id);
                    self.tear_down(&session, false).await
                }
                Ok(SessionEvent::Revoked(entry)) => self.credential_revoked(&entry).await,
                Ok(SessionEvent::Reset) | Err(RecvError::Lagged(_)) => self.recheck().await,
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Tears down one ended session here. With `quiet`, a session with no connection here
    /// is skipped without an audit record (the re-check after a snapshot or a missed event).
    async fn tear_down(&self, session: &Session, quiet: bool) {
        let started = Instant::now();
        let ended = {
            let state = self.raft.view().read();
            self.ended_session(&state, session)
        };
        let mut connections = 0;
        self.act(started, |core| {
            let mut actions = core.session_ended(&ended, quiet);
            for action in &mut actions {
                if let Action::Audit { event, detail, .. } = action {
                    if *event == tether_signaling::codes::AuditEvent::Teardown {
                        connections = detail["connections"].as_u64().unwrap_or(0);
                        detail["micros"] = (started.elapsed().as_micros() as u64).into();
                    }
                }
            }
            actions
        })
        .await;
        if connections > 0 {
            tracing::info!(session_id = %session.id, state = ?session.state, connections, micros = started.elapsed().as_micros() as u64, "session torn down");
        }
        metrics::histogram!(names::TEARDOWN_SECONDS).record(started.elapsed().as_secs_f64());
    }

    /// The ended session as the core needs it, read from the applied state.
    fn ended_session(&self, state: &ReplicatedState, session: &Session) -> EndedSession {
        let ended_at = session.ended_at.unwrap_or(session.created_at);
        EndedSession {
            id: session.id.clone(),
            operator: session.operator.clone(),
            robot: session.robot.clone(),
            revoked: session.state == SessionState::Revoked,
            reason: session.end_reason.clone().unwrap_or_default(),
            created_at_ms: session.created_at,
            ended_at_ms: ended_at,
            terminated_at: rfc3339(ended_at),
            owner: self
                .config
                .sessions
                .owner_of(&session.robot)
                .map(str::to_owned),
            robot_moved_on: state
                .active_session_of(&session.robot)
                .is_some_and(|s| s.id != session.id),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.known_active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the connections that presented a revoked token id or subject. Session ids
    /// need nothing here: the revocation ended the session, and its teardown follows.
    async fn credential_revoked(&self, entry: &Revocation) {
        let credential = match entry.kind {
            RevocationKind::Token => Credential::TokenId(&entry.target),
            RevocationKind::Operator => Credential::Subject(&entry.target),
            RevocationKind::Session => return,
        };
        let mut closed = 0;
        self.act(Instant::now(), |core| {
            let actions = core.credential_revoked(credential, &entry.reason);
            closed = actions
                .iter()
                .filter(|a| matches!(a, Action::Close(..)))
                .count();
            actions
        })
        .await;
        if closed > 0 {
            metrics::counter!(names::SIGNAL_CREDENTIAL_REVOKED_TOTAL).increment(closed as u64);
            tracing::info!(kind = entry.kind.as_str(), target = %entry.target, closed, "connections of a revoked credential closed");
        }
    }

    /// Brings the hub in line with the applied state after a snapshot install or missed
    /// events: tears down the sessions it saw active that have ended, announces the ones
    /// that started, and closes connections whose credential is revoked.
    async fn recheck(&self) {
        let (ended, started, revoked) = {
            let state = self.raft.view().read();
            let now_active: HashSet<String> = state
                .sessions()
                .filter(|s| s.state == SessionState::Active)
                .map(|s| s.id.clone())
                .collect();
            let mut known = self.active();
            let (ended, started) = changed_since(&known, &now_active);
            let ended: Vec<Session> = ended
                .iter()
                .filter_map(|id| state.session(id).cloned())
                .collect();
            let started: Vec<Session> = started
                .iter()
                .filter_map(|id| state.session(id).cloned())
                .collect();
            *known = now_active;
            let revoked: Vec<Revocation> = self
                .shell()
                .core
                .credentials()
                .filter_map(|(sub, jti)| state.denial(None, Some(jti), Some(sub)).cloned())
                .collect();
            (ended, started, revoked)
        };
        for session in ended {
            self.tear_down(&session, true).await;
        }
        for s in started {
            self.act(Instant::now(), |core| {
                core.session_started(&s.id, &s.operator, &s.robot)
            })
            .await;
        }
        for entry in revoked {
            self.credential_revoked(&entry).await;
        }
    }
}

/// The sessions to tear down and to announce after a re-check: those seen active that no
/// longer are, and those active that were not seen. Sessions that were already ended when
/// last seen are in neither (tearing them down again would close robots serving newer
/// sessions and write their audit records twice). Sorted, for a deterministic order.
fn changed_since(
    known: &HashSet<String>,
    now_active: &HashSet<String>,
) -> (Vec<String>, Vec<String>) {
    let mut ended: Vec<String> = known.difference(now_active).cloned().collect();
    let mut started: Vec<String> = now_active.difference(known).cloned().collect();
    ended.sort();
    started.sort();
    (ended, started)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_recheck_touches_only_sessions_that_changed_since_last_seen() {
        // s-old ended long ago (not active then, not now), s-kept is still active, s-gone
        // ended meanwhile, s-new started meanwhile.
        let known = set(&["s-kept", "s-gone"]);
        let now = set(&["s-kept", "s-new"]);
        assert_eq!(
            changed_since(&known, &now),
            (vec!["s-gone".to_string()], vec!["s-new".to_string()])
        );
        assert_eq!(changed_since(&now, &now), (vec![], vec![]));
    }
}
