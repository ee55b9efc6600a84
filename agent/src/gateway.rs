//! The robot agent's gateway connection without its I/O: the gateway's frames read
//! defensively (a malformed frame is dropped, never a panic), where the robot token comes
//! from, and what one connection remembers (the token it authenticated with and when that
//! expires, the joins awaiting an answer).

use crate::safety::StopCause;
use serde_json::Value;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tether_signaling::protocol::{LastSession, ServerFrame};

/// What the agent acts on, read from one gateway frame.
#[derive(Clone, Debug, PartialEq)]
pub enum GatewayEvent {
    /// `auth_ok`: the token holds for `expires_in` more. `ended` names the robot's most
    /// recent session, with why it stopped, if it was revoked or terminated meanwhile.
    AuthOk {
        expires_in: Duration,
        ended: Option<(String, StopCause, String)>,
    },
    /// `session_assigned`.
    Assigned { session_id: String },
    /// `joined`: a join was admitted.
    Joined { session_id: String },
    /// `lease`: the answer to the `lease_request` that carried `nonce`.
    Lease {
        session_id: String,
        ttl: Duration,
        nonce: u64,
    },
    /// A relayed offer.
    Offer { sdp: String },
    /// A relayed ICE candidate.
    Candidate {
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    },
    /// `revoked` / `terminated`: the session ended.
    Ended {
        session_id: String,
        cause: StopCause,
        reason: String,
    },
    /// `error`: a refused frame.
    Error { code: String, message: String },
    /// A frame the agent has nothing to do with (`pong`, `peer_joined`, …).
    Other,
}

/// Reads a gateway frame; `None` when it does not have the shape the protocol gives it
/// (a missing field, a wrong type, an empty session id, an unknown type).
pub fn read(frame: &Value) -> Option<GatewayEvent> {
    let frame: ServerFrame = serde_json::from_value(frame.clone()).ok()?;
    let sid = |s: String| (!s.is_empty() && s.len() <= 256).then_some(s);
    Some(match frame {
        ServerFrame::AuthOk {
            expires_in_ms,
            last_session,
            ..
        } => GatewayEvent::AuthOk {
            expires_in: Duration::from_millis(expires_in_ms),
            ended: last_ended(last_session).ok()?,
        },
        ServerFrame::SessionAssigned { session_id } => GatewayEvent::Assigned {
            session_id: sid(session_id)?,
        },
        ServerFrame::Joined { session_id, .. } => GatewayEvent::Joined {
            session_id: sid(session_id)?,
        },
        ServerFrame::Lease {
            session_id,
            ttl_ms,
            nonce,
        } => GatewayEvent::Lease {
            session_id: sid(session_id)?,
            ttl: Duration::from_millis(ttl_ms),
            nonce,
        },
        ServerFrame::Offer { sdp } => GatewayEvent::Offer { sdp },
        ServerFrame::Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
        } => GatewayEvent::Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
        },
        ServerFrame::Revoked { session_id, reason } => GatewayEvent::Ended {
            session_id: sid(session_id)?,
            cause: StopCause::Revoked,
            reason,
        },
        ServerFrame::Terminated { session_id, reason } => GatewayEvent::Ended {
            session_id: sid(session_id)?,
            cause: StopCause::Terminated,
            reason,
        },
        ServerFrame::Error { code, message } => GatewayEvent::Error { code, message },
        _ => GatewayEvent::Other,
    })
}

/// The ended session `auth_ok` names, if it names one; `Err` when `last_session` is
/// malformed (an empty id, an unknown state).
fn last_ended(last: Option<LastSession>) -> Result<Option<(String, StopCause, String)>, ()> {
    let Some(last) = last else { return Ok(None) };
    if last.session_id.is_empty() {
        return Err(());
    }
    let cause = match last.state.as_str() {
        "revoked" => StopCause::Revoked,
        "terminated" => StopCause::Terminated,
        "active" => return Ok(None),
        _ => return Err(()),
    };
    Ok(Some((
        last.session_id,
        cause,
        last.reason.unwrap_or_default(),
    )))
}

/// The error codes that refuse a join because its session has ended.
pub fn join_ended(code: &str) -> Option<StopCause> {
    match code {
        "session_revoked" => Some(StopCause::Revoked),
        "session_terminated" => Some(StopCause::Terminated),
        _ => None,
    }
}

/// Where the agent's robot token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// This token, for the life of the process.
    Fixed(String),
    /// Whatever this file holds (trimmed), read again every second: a token minted anew
    /// and written there keeps the robot connected past the old one's expiry.
    File(PathBuf),
}

/// Never prints the token itself.
impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Fixed(_) => f.write_str("Fixed(<token>)"),
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl TokenSource {
    /// The token as of now.
    pub async fn read(&self) -> std::io::Result<String> {
        match self {
            TokenSource::Fixed(token) => Ok(token.clone()),
            TokenSource::File(path) => {
                let text = tokio::fs::read_to_string(path).await?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is empty", path.display()),
                    ));
                }
                Ok(token.to_owned())
            }
        }
    }
}

/// What to do about the connection's token, checked every second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reauth {
    /// Send `auth` with the fresh token.
    Send,
    /// Nothing newer, and less than a third of the token's lifetime is left (said once).
    Warn { left: Duration },
    /// Nothing to do.
    Nothing,
}

/// What one gateway connection remembers.
#[derive(Debug)]
pub struct Connection {
    /// The token last sent in `auth` on this connection.
    token: String,
    /// When the accepted token expires, and the lifetime it had when accepted.
    expiry: Option<(Instant, Duration)>,
    /// Joins sent and not yet answered, oldest first.
    joins: VecDeque<String>,
    warned: bool,
}

impl Connection {
    /// A connection that authenticated with `token`.
    pub fn new(token: String) -> Self {
        Self {
            token,
            expiry: None,
            joins: VecDeque::new(),
            warned: false,
        }
    }

    /// `auth_ok` came at `now`: the token holds for `expires_in`.
    pub fn authenticated(&mut self, expires_in: Duration, now: Instant) {
        self.expiry = Some((now + expires_in, expires_in));
        self.warned = false;
    }

    /// A join for `session_id` was sent.
    pub fn joining(&mut self, session_id: &str) {
        self.joins.push_back(session_id.to_owned());
    }

    /// `joined` came for `session_id`.
    pub fn joined(&mut self, session_id: &str) {
        if let Some(at) = self.joins.iter().position(|s| s == session_id) {
            self.joins.remove(at);
        }
    }

    /// A join was refused: the session it was for (joins are answered in order).
    pub fn join_refused(&mut self) -> Option<String> {
        self.joins.pop_front()
    }

    /// The token source holds `fresh` at `now`: whether to re-authenticate.
    pub fn reauth(&mut self, fresh: &str, now: Instant) -> Reauth {
        if fresh != self.token {
            self.token = fresh.to_owned();
            // Its `auth_ok` (or the gateway's error) answers this; no warning meanwhile.
            self.warned = true;
            return Reauth::Send;
        }
        match self.expiry {
            Some((until, lifetime))
                if !self.warned && until.saturating_duration_since(now) < lifetime / 3 =>
            {
                self.warned = true;
                Reauth::Warn {
                    left: until.saturating_duration_since(now),
                }
            }
            _ => Reauth::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_missing_fields_or_of_the_wrong_shape_are_dropped() {
        let lease = json!({"type": "lease", "session_id": "ses_1", "ttl_ms": 1000, "nonce": 7});
        assert_eq!(
            read(&lease),
            Some(GatewayEvent::Lease {
                session_id: "ses_1".into(),
                ttl: Duration::from_secs(1),
                nonce: 7
            })
        );
        for bad in [
            json!({"type": "lease", "session_id": "ses_1", "ttl_ms": 1000}),
            json!({"type": "lease", "session_id": "ses_1", "nonce": 7}),
            json!({"type": "lease", "session_id": "", "ttl_ms": 1000, "nonce": 7}),
            json!({"type": "lease", "session_id": "ses_1", "ttl_ms": -1, "nonce": 7}),
            json!({"type": "lease", "session_id": 5, "ttl_ms": 1000, "nonce": 7}),
            json!({"type": "session_assigned"}),
            json!({"type": "revoked", "session_id": "ses_1"}),
            json!({"type": "auth_ok", "role": "robot", "subject": "r"}),
            json!({"type": "auth_ok", "role": "robot", "subject": "r", "expires_in_ms": 1,
                   "last_session": {"session_id": "ses_1", "state": "paused"}}),
            json!({"type": "error", "code": "session_revoked"}),
            json!({"type": "dance"}),
            json!("lease"),
            json!(null),
        ] {
            assert_eq!(read(&bad), None, "{bad}");
        }
        assert_eq!(read(&json!({"type": "pong"})), Some(GatewayEvent::Other));
    }

    #[test]
    fn auth_ok_says_whether_the_last_session_ended() {
        let auth_ok = |last: Value| {
            json!({"type": "auth_ok", "role": "robot", "subject": "r", "expires_in_ms": 60000,
                   "last_session": last})
        };
        assert_eq!(
            read(&auth_ok(
                json!({"session_id": "ses_1", "state": "revoked", "reason": "x"})
            )),
            Some(GatewayEvent::AuthOk {
                expires_in: Duration::from_secs(60),
                ended: Some(("ses_1".into(), StopCause::Revoked, "x".into()))
            })
        );
        assert!(matches!(
            read(&auth_ok(
                json!({"session_id": "ses_1", "state": "terminated"})
            )),
            Some(GatewayEvent::AuthOk {
                ended: Some((_, StopCause::Terminated, _)),
                ..
            })
        ));
        for quiet in [
            json!({"session_id": "ses_1", "state": "active"}),
            json!(null),
        ] {
            assert!(matches!(
                read(&auth_ok(quiet)),
                Some(GatewayEvent::AuthOk { ended: None, .. })
            ));
        }
    }

    #[test]
    fn a_refused_join_names_the_oldest_join_in_flight() {
        let mut c = Connection::new("t".into());
        c.joining("ses_1");
        c.joining("ses_2");
        c.joined("ses_1");
        assert_eq!(c.join_refused().as_deref(), Some("ses_2"));
        assert_eq!(c.join_refused(), None);
        assert_eq!(join_ended("session_revoked"), Some(StopCause::Revoked));
        assert_eq!(
            join_ended("session_terminated"),
            Some(StopCause::Terminated)
        );
        assert_eq!(join_ended("unavailable"), None);
    }

    #[test]
    fn a_changed_token_is_sent_and_an_unchanged_one_near_expiry_is_warned_about_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Connection::new("old".into());
        c.authenticated(s(90), t0);
        assert_eq!(c.reauth("old", t0 + s(10)), Reauth::Nothing);
        assert_eq!(c.reauth("old", t0 + s(61)), Reauth::Warn { left: s(29) });
        assert_eq!(c.reauth("old", t0 + s(62)), Reauth::Nothing);
        assert_eq!(c.reauth("new", t0 + s(63)), Reauth::Send);
        // Until the answer comes, the old expiry stands but is not warned about again.
        assert_eq!(c.reauth("new", t0 + s(64)), Reauth::Nothing);
        c.authenticated(s(90), t0 + s(64));
        assert_eq!(c.reauth("new", t0 + s(65)), Reauth::Nothing);
        assert_eq!(c.reauth("new", t0 + s(135)), Reauth::Warn { left: s(19) });
    }
}
