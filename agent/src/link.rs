//! Messages on the two DataChannels between a console and a robot (`docs/robot.md`):
//! `session` (reliable: auth, notices, telemetry) and `control` (unordered: drive commands).

use crate::safety::Command;
use serde::{Deserialize, Serialize};

/// The reliable channel's label.
pub const SESSION_CHANNEL: &str = "session";
/// The unreliable, unordered channel's label.
pub const CONTROL_CHANNEL: &str = "control";

/// A message on the `session` channel, either way.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionMessage {
    /// Console → robot: the session token; first, and on every re-opened channel.
    Auth { token: String },
    /// Console → robot: stop now, and stay stopped (latched) until `rearm`.
    Estop,
    /// Console → robot: the operator clears the e-stop latch; honoured only on the
    /// authenticated channel. The next fresh command moves the robot again.
    Rearm,
    /// Robot → console: authenticated.
    AuthOk { session_id: String },
    /// Robot → console: refused.
    AuthDenied { reason: String },
    /// Robot → console: telemetry.
    State {
        armed: bool,
        cause: Option<String>,
        x: f64,
        y: f64,
        heading: f64,
    },
    /// Robot → console: the session was revoked; the robot is stopped and hangs up.
    Revoked { session_id: String, reason: String },
    /// Robot → console: the session ended; likewise.
    Terminated { session_id: String, reason: String },
}

impl SessionMessage {
    /// As JSON text.
    pub fn render(&self) -> String {
        serde_json::to_string(self).expect("session messages always serialize")
    }
}

/// A drive command on the `control` channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControlMessage {
    /// Increasing from 1 within a session.
    pub seq: u64,
    /// Forward speed, −1..1.
    pub linear: f64,
    /// Turn rate, −1..1.
    pub angular: f64,
}

impl ControlMessage {
    /// Parses and validates a command: finite speeds within −1..1, `seq` from 1.
    pub fn parse(text: &[u8]) -> Option<Command> {
        let m: ControlMessage = serde_json::from_slice(text).ok()?;
        let in_range = |v: f64| v.is_finite() && (-1.0..=1.0).contains(&v);
        (m.seq >= 1 && in_range(m.linear) && in_range(m.angular)).then_some(Command {
            seq: m.seq,
            linear: m.linear,
            angular: m.angular,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shapes() {
        assert_eq!(
            SessionMessage::Auth { token: "t".into() }.render(),
            r#"{"type":"auth","token":"t"}"#
        );
        let denied: SessionMessage =
            serde_json::from_str(r#"{"type":"auth_denied","reason":"revoked"}"#).unwrap();
        assert_eq!(
            denied,
            SessionMessage::AuthDenied {
                reason: "revoked".into()
            }
        );
        assert!(serde_json::from_str::<SessionMessage>(r#"{"type":"dance"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<SessionMessage>(r#"{"type":"rearm"}"#).unwrap(),
            SessionMessage::Rearm
        );
        assert_eq!(SessionMessage::Rearm.render(), r#"{"type":"rearm"}"#);
    }

    #[test]
    fn control_commands_are_validated() {
        let ok = ControlMessage::parse(br#"{"seq":3,"linear":0.5,"angular":-1}"#).unwrap();
        assert_eq!((ok.seq, ok.linear, ok.angular), (3, 0.5, -1.0));
        for bad in [
            &br#"{"seq":0,"linear":0,"angular":0}"#[..],
            br#"{"seq":1,"linear":2,"angular":0}"#,
            br#"{"seq":1,"linear":0}"#,
            br#"{"seq":1,"linear":0,"angular":0,"boost":true}"#,
            b"not json",
        ] {
            assert!(ControlMessage::parse(bad).is_none());
        }
    }
}
