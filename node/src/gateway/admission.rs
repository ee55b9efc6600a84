//! Join admission: the deny check from local applied state (S1: no I/O, no await; what the
//! token alone decides before the session is even looked up), then the read barrier before admitting (S2: a node that cannot confirm with a quorum fails
//! closed with `unavailable`), then the room and the presence broadcast.

use super::Hub;
use crate::telemetry::names;
use std::time::{Duration, Instant};
use tether_signaling::codes::ErrorCode;
use tether_signaling::hub::Identity;
use tether_signaling::rooms::{ConnId, Side};
use tether_store::{Session, SessionState};

/// Why a join was refused.
#[derive(Debug)]
struct Denied {
    code: ErrorCode,
    message: String,
}

fn denied(code: ErrorCode, message: impl Into<String>) -> Denied {
    Denied {
        code,
        message: message.into(),
    }
}

impl Hub {
    /// The deny check from local applied state (S1): no I/O, no await.
    fn check_local(
        &self,
        identity: &Identity,
        session_id: &str,
    ) -> Result<Option<Session>, Denied> {
        let state = self.raft.view().read();
        // What the token alone decides comes first, so a join the token cannot make is
        // refused without the read barrier's quorum round (a flood of joins for other
        // sessions costs the leader nothing).
        match identity {
            Identity::Operator {
                subject,
                session_id: token_sid,
                token_id,
            } => {
                if token_sid.as_deref() != Some(session_id) {
                    return Err(denied(
                        ErrorCode::Forbidden,
                        "this token is not for that session",
                    ));
                }
                if let Some(r) = state.denial(None, Some(token_id), Some(subject)) {
                    return Err(denied(
                        ErrorCode::SessionRevoked,
                        format!("revoked: {}", r.reason),
                    ));
                }
            }
            Identity::Robot { robot_id, token_id } => {
                if let Some(r) = state.denial(None, Some(token_id), Some(robot_id)) {
                    return Err(denied(
                        ErrorCode::CredentialRevoked,
                        format!("this robot's token is revoked: {}", r.reason),
                    ));
                }
            }
            Identity::Watcher { .. } => {
                return Err(denied(
                    ErrorCode::Forbidden,
                    "watchers do not join sessions",
                ))
            }
        }
        let Some(session) = state.session(session_id) else {
            return Ok(None);
        };
        if let Some(r) = state.denial(
            Some(&session.id),
            Some(&session.token_id),
            Some(&session.operator),
        ) {
            return Err(denied(
                ErrorCode::SessionRevoked,
                format!("revoked: {}", r.reason),
            ));
        }
        match session.state {
            SessionState::Active => {}
            SessionState::Revoked => {
                return Err(denied(ErrorCode::SessionRevoked, "the session was revoked"))
            }
            SessionState::Terminated => {
                return Err(denied(
                    ErrorCode::SessionTerminated,
                    "the session has ended",
                ))
            }
        }
        let theirs = match identity {
            Identity::Operator { subject, .. } => *subject == session.operator,
            Identity::Robot { robot_id, .. } => *robot_id == session.robot,
            Identity::Watcher { .. } => false,
        };
        if !theirs {
            return Err(denied(
                ErrorCode::Forbidden,
                "this token is not for that session",
            ));
        }
        Ok(Some(session.clone()))
    }

    /// Admits a join only once this node is known to be current (S2).
    async fn admit(&self, identity: &Identity, session_id: &str) -> Result<Session, Denied> {
        let started = Instant::now();
        if let Err(d) = self.check_local(identity, session_id) {
            metrics::histogram!(names::JOIN_DENIAL_SECONDS).record(started.elapsed().as_secs_f64());
            return Err(d);
        }
        let timeout = Duration::from_millis(self.config.sessions.admission_timeout_ms);
        let barrier = if crate::planted::is(crate::planted::PlantedBug::AdmitWithoutBarrier) {
            Ok(())
        } else {
            self.raft.read_barrier(timeout).await
        };
        if let Err(e) = barrier {
            return Err(denied(
                ErrorCode::Unavailable,
                format!("cannot confirm the session with a quorum: {e}"),
            ));
        }
        match self.check_local(identity, session_id)? {
            Some(session) => Ok(session),
            None => Err(denied(
                ErrorCode::SessionNotFound,
                format!("no session {session_id}"),
            )),
        }
    }

    /// A join the core handed over for admission: admitted or denied, then (admitted) the
    /// room, the presence broadcast and `joined` with what the other nodes answered.
    pub(super) async fn join(
        &self,
        conn: ConnId,
        session_id: String,
        identity: Identity,
        side: Side,
    ) {
        if let Err(d) = self.admit(&identity, &session_id).await {
            metrics::counter!(names::JOINS_TOTAL, "result" => "denied").increment(1);
            tracing::info!(%session_id, code = %d.code, "join denied");
            self.act(Instant::now(), |core| {
                core.join_denied(conn, &session_id, side, d.code, &d.message)
            })
            .await;
            return;
        }
        metrics::counter!(names::JOINS_TOTAL, "result" => "admitted").increment(1);
        let (remote, presence) = {
            let mut shell = self.shell();
            let step = shell.core.join_admitted(conn, &session_id);
            (
                self.perform(&shell, step.actions, Instant::now()),
                step.presence,
            )
        };
        self.send_remote(remote).await;
        let Some(presence) = presence else {
            return;
        };
        // Tell the other nodes, and learn whether the peer is connected to one of them.
        let answers = self.broadcast(&presence).await;
        self.act(Instant::now(), |core| {
            core.presence_answers(conn, &session_id, answers)
        })
        .await;
    }
}
