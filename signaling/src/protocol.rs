//! The signaling frames: JSON text frames with a `type` field.

use crate::codes::ErrorCode;
use serde::{Deserialize, Serialize};

/// The largest accepted frame, in bytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// The largest accepted SDP, in bytes.
pub const MAX_SDP_BYTES: usize = 32 * 1024;
/// The largest accepted ICE candidate line, in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// What a client (console or robot) sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// First frame: a bearer token (a session token, a robot token or an admin token).
    /// Sent again on an authenticated connection, with a fresh token of the same subject
    /// and role, it extends the connection past the old token's expiry.
    Auth {
        /// The JWT.
        token: String,
    },
    /// Join a session's room.
    Join {
        /// The session.
        session_id: String,
    },
    /// An SDP offer for the peer.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// An SDP answer for the peer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// An ICE candidate for the peer.
    Candidate {
        /// The candidate line (`candidate:…`), empty for end-of-candidates.
        candidate: String,
        /// The media stream id.
        #[serde(default)]
        sdp_mid: Option<String>,
        /// The m-line index.
        #[serde(default)]
        sdp_mline_index: Option<u16>,
    },
    /// Leave the room (the connection stays).
    Leave,
    /// Keep-alive; answered with `pong`.
    Ping,
    /// (Robots) asks for a lease on its session. `nonce` is the robot's own, increasing per
    /// request; the gateway echoes it in `lease` only after a quorum confirmed the session
    /// is still active, and the robot counts the lease from when it sent this request.
    LeaseRequest {
        /// The robot's session.
        session_id: String,
        /// Echoed in the `lease` that answers it.
        nonce: u64,
    },
}

/// Something relayed unchanged to the other peer of a session.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RelayFrame {
    /// An SDP offer.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// An ICE candidate.
    Candidate {
        /// The candidate line.
        candidate: String,
        /// The media stream id.
        #[serde(default)]
        sdp_mid: Option<String>,
        /// The m-line index.
        #[serde(default)]
        sdp_mline_index: Option<u16>,
    },
}

/// What the gateway sends.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The token was accepted.
    AuthOk {
        /// `operator`, `robot` or `watcher`.
        role: String,
        /// The operator, robot or admin id.
        subject: String,
        /// How long the token has left: the connection closes (`4004`) at that instant
        /// unless a fresh `auth` extends it.
        expires_in_ms: u64,
        /// (Robots) the outcome of the robot's most recent session, so that a robot that
        /// reconnects (to this gateway or another) learns that its session ended meanwhile.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_session: Option<LastSession>,
    },
    /// A session for this robot has started.
    SessionAssigned {
        /// The session.
        session_id: String,
    },
    /// The join was admitted.
    Joined {
        /// The session.
        session_id: String,
        /// Whether the other peer is already in the room.
        peer_present: bool,
    },
    /// The other peer joined.
    PeerJoined {
        /// The session.
        session_id: String,
    },
    /// The other peer left or disconnected.
    PeerLeft {
        /// The session.
        session_id: String,
    },
    /// A relayed offer.
    Offer {
        /// The SDP.
        sdp: String,
    },
    /// A relayed answer.
    Answer {
        /// The SDP.
        sdp: String,
    },
    /// A relayed candidate.
    Candidate {
        /// The candidate line.
        candidate: String,
        /// The media stream id.
        sdp_mid: Option<String>,
        /// The m-line index.
        sdp_mline_index: Option<u16>,
    },
    /// The session was revoked; the connection closes next.
    Revoked {
        /// The session.
        session_id: String,
        /// The admin's reason.
        reason: String,
    },
    /// The session was terminated by its operator; the connection closes next.
    Terminated {
        /// The session.
        session_id: String,
        /// Why, e.g. `client_request`.
        reason: String,
    },
    /// The answer to a `lease_request`: the robot may act on control for this session until
    /// `ttl_ms` after it sent the request that carried `nonce` (never from receipt).
    Lease {
        /// The session.
        session_id: String,
        /// Lease lifetime, counted from the robot's request.
        ttl_ms: u64,
        /// The request's nonce.
        nonce: u64,
    },
    /// (Watchers) a session ended: the seed's `SessionTerminated` notification.
    SessionTerminated {
        /// The session.
        session_id: String,
        /// Its operator.
        operator: String,
        /// Its robot.
        robot: String,
        /// When it ended (RFC 3339).
        terminated_at: String,
        /// How long it lasted.
        duration_seconds: u64,
        /// `client_request`, or the revocation's reason.
        reason: String,
    },
    /// Answer to `ping`.
    Pong,
    /// A refused frame; see `docs/signaling.md` for codes.
    Error {
        /// Stable code.
        code: String,
        /// For people.
        message: String,
    },
}

/// Where a robot's most recent session stands, as told in `auth_ok`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LastSession {
    /// The session.
    pub session_id: String,
    /// `active`, `revoked` or `terminated`.
    pub state: String,
    /// Why it ended, when it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<RelayFrame> for ServerFrame {
    fn from(f: RelayFrame) -> Self {
        match f {
            RelayFrame::Offer { sdp } => Self::Offer { sdp },
            RelayFrame::Answer { sdp } => Self::Answer { sdp },
            RelayFrame::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => Self::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
            },
        }
    }
}

/// A frame that failed validation, with its stable code.
///
/// `code` stays a `&'static str` field so that callers can pass it on as text; it is only
/// ever produced from an [`ErrorCode`] (by [`FrameError::new`]), which
/// [`FrameError::error_code`] gives back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FrameError {
    /// Stable code: an [`ErrorCode`]'s wire form.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl FrameError {
    /// A failure with this code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str(),
            message: message.into(),
        }
    }

    /// The code as the enum. A hand-built error with a code no [`ErrorCode`] has reads as
    /// [`ErrorCode::InvalidFrame`].
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::parse(self.code).unwrap_or(ErrorCode::InvalidFrame)
    }

    /// The `error` frame for this failure.
    pub fn to_frame(&self) -> ServerFrame {
        ServerFrame::Error {
            code: self.code.into(),
            message: self.message.clone(),
        }
    }
}

/// The `error` frame with this code and message.
pub fn error_frame(code: ErrorCode, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error {
        code: code.as_str().into(),
        message: message.into(),
    }
}

/// Parses and validates one text frame.
pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::new(
            ErrorCode::FrameTooLarge,
            format!("frames are limited to {MAX_FRAME_BYTES} bytes"),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| FrameError::new(ErrorCode::InvalidJson, e.to_string()))?;
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| FrameError::new(ErrorCode::InvalidFrame, "a frame needs a string `type`"))?;
    const KNOWN: [&str; 8] = [
        "auth",
        "join",
        "offer",
        "answer",
        "candidate",
        "leave",
        "ping",
        "lease_request",
    ];
    if !KNOWN.contains(&kind) {
        return Err(FrameError::new(
            ErrorCode::UnknownType,
            format!("unknown frame type {kind:?}"),
        ));
    }
    let frame: ClientFrame = serde_json::from_value(value)
        .map_err(|e| FrameError::new(ErrorCode::InvalidFrame, e.to_string()))?;
    validate(&frame)?;
    Ok(frame)
}

fn validate(frame: &ClientFrame) -> Result<(), FrameError> {
    match frame {
        ClientFrame::Auth { token } if token.is_empty() || token.len() > 8192 => Err(
            FrameError::new(ErrorCode::InvalidFrame, "token must be 1 to 8192 bytes"),
        ),
        ClientFrame::Join { session_id } | ClientFrame::LeaseRequest { session_id, .. }
            if session_id.is_empty() || session_id.len() > 256 =>
        {
            Err(FrameError::new(
                ErrorCode::InvalidFrame,
                "session_id must be 1 to 256 bytes",
            ))
        }
        ClientFrame::Offer { sdp } | ClientFrame::Answer { sdp } => check_sdp(sdp),
        ClientFrame::Candidate {
            candidate, sdp_mid, ..
        } => {
            if candidate.len() > MAX_CANDIDATE_BYTES
                || sdp_mid.as_ref().is_some_and(|m| m.len() > 256)
            {
                return Err(FrameError::new(
                    ErrorCode::InvalidCandidate,
                    "candidate too long",
                ));
            }
            let line = candidate.strip_prefix("a=").unwrap_or(candidate);
            if !candidate.is_empty() && !line.starts_with("candidate:") {
                return Err(FrameError::new(
                    ErrorCode::InvalidCandidate,
                    "a candidate starts with `candidate:` (or is empty for end-of-candidates)",
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Minimal SDP sanity: size, version line first, an origin and at least one media section.
fn check_sdp(sdp: &str) -> Result<(), FrameError> {
    let bad = |m: &str| Err(FrameError::new(ErrorCode::InvalidSdp, m));
    if sdp.len() > MAX_SDP_BYTES {
        return bad("SDP too large");
    }
    if !sdp.starts_with("v=0") {
        return bad("SDP must start with v=0");
    }
    if !sdp.lines().any(|l| l.starts_with("o=")) {
        return bad("SDP has no o= line");
    }
    if !sdp.lines().any(|l| l.starts_with("m=")) {
        return bad("SDP has no media section");
    }
    if sdp
        .chars()
        .any(|c| c.is_control() && c != '\r' && c != '\n')
    {
        return bad("SDP contains control characters");
    }
    Ok(())
}

/// Renders a server frame as JSON text.
pub fn render(frame: &ServerFrame) -> String {
    serde_json::to_string(frame).expect("server frames always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n";

    #[test]
    fn well_formed_frames_parse() {
        assert_eq!(parse(r#"{"type":"ping"}"#).unwrap(), ClientFrame::Ping);
        assert_eq!(
            parse(r#"{"type":"join","session_id":"s1"}"#).unwrap(),
            ClientFrame::Join {
                session_id: "s1".into()
            }
        );
        let offer = serde_json::json!({"type": "offer", "sdp": SDP}).to_string();
        assert!(matches!(parse(&offer).unwrap(), ClientFrame::Offer { .. }));
        let cand = r#"{"type":"candidate","candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdp_mid":"0","sdp_mline_index":0}"#;
        assert!(matches!(
            parse(cand).unwrap(),
            ClientFrame::Candidate { .. }
        ));
        assert!(
            parse(r#"{"type":"candidate","candidate":""}"#).is_ok(),
            "end of candidates"
        );
    }

    #[test]
    fn bad_frames_get_stable_codes() {
        let code = |t: &str| parse(t).unwrap_err().code;
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code(r#"{"kind":"ping"}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"dance"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"join"}"#), "invalid_frame");
        assert_eq!(
            code(r#"{"type":"join","session_id":"s","extra":1}"#),
            "invalid_frame"
        );
        assert_eq!(code(r#"{"type":"offer","sdp":"hello"}"#), "invalid_sdp");
        assert_eq!(
            code(r#"{"type":"answer","sdp":"v=0\r\no=x\r\n"}"#),
            "invalid_sdp"
        );
        assert_eq!(
            code(r#"{"type":"candidate","candidate":"rm -rf"}"#),
            "invalid_candidate"
        );
        let huge = format!(
            r#"{{"type":"offer","sdp":"{}"}}"#,
            "a".repeat(MAX_FRAME_BYTES)
        );
        assert_eq!(code(&huge), "frame_too_large");
    }

    #[test]
    fn frame_errors_carry_their_code_as_the_enum_and_as_text() {
        let e = parse("{").unwrap_err();
        assert_eq!(
            (e.code, e.error_code()),
            ("invalid_json", ErrorCode::InvalidJson)
        );
        let e = FrameError::new(ErrorCode::InvalidSdp, "bad");
        assert_eq!(e.to_string(), "invalid_sdp: bad");
        assert_eq!(e.to_frame(), error_frame(ErrorCode::InvalidSdp, "bad"));
        let hand_built = FrameError {
            code: "not_a_code",
            message: String::new(),
        };
        assert_eq!(hand_built.error_code(), ErrorCode::InvalidFrame);
    }

    #[test]
    fn server_frames_render_with_their_type() {
        let text = render(&ServerFrame::Revoked {
            session_id: "s".into(),
            reason: "r".into(),
        });
        assert_eq!(text, r#"{"type":"revoked","session_id":"s","reason":"r"}"#);
        assert_eq!(render(&ServerFrame::Pong), r#"{"type":"pong"}"#);
    }
}
