//! Session starts and ends from the state machine, applied to this node's connections
//! (S4): the robot hears of a new session; an ended one's connections are told why and
//! closed, watchers and the robot's owner get a notice, and the audit ledger records it.

use super::Hub;
use crate::telemetry::names;
use std::sync::Arc;
use std::time::Instant;
use tether_api::time::rfc3339;
use tether_signaling::hub::{Action, EndedSession};
use tether_store::{ReplicatedState, Session, SessionEvent, SessionState};
use tokio::sync::broadcast::error::RecvError;

impl Hub {
    /// Applies session starts and ends to this node's connections (S4).
    pub(super) async fn teardown_loop(
        self: Arc<Self>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut events = self.raft.session_events();
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = stopped.wait_for(|s| *s) => return,
            };
            match event {
                Ok(SessionEvent::Started(s)) => {
                    self.act(Instant::now(), |core| {
                        core.session_started(&s.id, &s.operator, &s.robot)
                    })
                    .await
                }
                Ok(SessionEvent::Ended(session)) => self.tear_down(&session, false).await,
                Ok(SessionEvent::Reset) | Err(RecvError::Lagged(_)) => {
                    self.tear_down_all_ended().await
                }
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

    async fn tear_down_all_ended(&self) {
        let ended: Vec<Session> = {
            let state = self.raft.view().read();
            state
                .sessions()
                .filter(|s| s.state != SessionState::Active)
                .cloned()
                .collect()
        };
        for session in ended {
            self.tear_down(&session, true).await;
        }
    }
}
