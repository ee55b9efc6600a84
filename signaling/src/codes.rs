//! The signaling vocabulary as types: WebSocket close codes, `error` frame codes and the
//! audit events the hub records.
//!
//! One enum per vocabulary, so that a typo is a compile error rather than a code no client
//! branches on; `docs/signaling.md` lists the same codes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A WebSocket close code the gateway closes a connection with (see `docs/signaling.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// The first frame was not a valid `auth`.
    AuthFailed,
    /// No `auth` frame in time.
    AuthTimeout,
    /// The session was revoked.
    Revoked,
    /// The session was terminated by its operator.
    Terminated,
    /// Another connection took this side of the session.
    Replaced,
    /// Too many frames too fast, repeatedly.
    RateLimited,
    /// The connection's token expired and no fresh `auth` came before.
    TokenExpired,
    /// The connection's credential (its token id or its subject) was revoked.
    CredentialRevoked,
    /// The client stopped reading: its outbound queue overflowed.
    TooSlow,
}

impl CloseCode {
    /// Every close code, for documentation checks.
    pub const ALL: &'static [CloseCode] = &[
        Self::AuthFailed,
        Self::AuthTimeout,
        Self::Revoked,
        Self::Terminated,
        Self::Replaced,
        Self::RateLimited,
        Self::TokenExpired,
        Self::CredentialRevoked,
        Self::TooSlow,
    ];

    /// The number on the wire (the 4000–4999 range is the application's).
    pub fn code(self) -> u16 {
        match self {
            Self::AuthFailed => 4401,
            Self::AuthTimeout => 4408,
            Self::Revoked => 4001,
            Self::Terminated => 4002,
            Self::Replaced => 4003,
            Self::RateLimited => 4029,
            Self::TokenExpired => 4004,
            Self::CredentialRevoked => 4005,
            Self::TooSlow => 4006,
        }
    }

    /// The close code with this number.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// Declares an enum of stable wire codes: the variants with their docs and wire forms,
/// `ALL`, `as_str`, `parse`, serde in snake_case. The one shape for every code table
/// (these signaling codes; the HTTP API's in `tether-api`).
#[macro_export]
macro_rules! stable_codes {
    ($(#[$meta:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident = $code:literal;)* }) => {
        $(#[$meta])*
        #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$doc])* $variant,)*
        }

        impl $name {
            /// Every code, for documentation checks.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The wire form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $code,)* }
            }

            /// The code with this wire form.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($code => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stable_codes! {
    /// A stable code of a signaling `error` frame. Clients branch on it.
    ErrorCode {
    /// The frame is not JSON.
    InvalidJson = "invalid_json";
    /// The frame does not follow the schema.
    InvalidFrame = "invalid_frame";
    /// The frame's `type` is not one the gateway knows.
    UnknownType = "unknown_type";
    /// The SDP failed the sanity checks.
    InvalidSdp = "invalid_sdp";
    /// The ICE candidate failed the sanity checks.
    InvalidCandidate = "invalid_candidate";
    /// The frame is larger than the limit.
    FrameTooLarge = "frame_too_large";
    /// The first frame was not `auth`.
    Unauthenticated = "unauthenticated";
    /// No `auth` frame in time.
    AuthTimeout = "auth_timeout";
    /// The `auth` frame carried no token.
    MissingToken = "missing_token";
    /// The token's `exp` has passed.
    TokenExpired = "token_expired";
    /// The token does not verify.
    InvalidToken = "invalid_token";
    /// A second `auth` frame.
    AlreadyAuthenticated = "already_authenticated";
    /// An admin token, or a token for another session or robot.
    Forbidden = "forbidden";
    /// The session, its token or its operator was revoked.
    SessionRevoked = "session_revoked";
    /// The session has ended.
    SessionTerminated = "session_terminated";
    /// No such session.
    SessionNotFound = "session_not_found";
    /// This node cannot confirm with a quorum: it fails closed.
    Unavailable = "unavailable";
    /// A relayed frame before any `join`.
    NotJoined = "not_joined";
    /// A relayed frame while the other peer is not connected.
    PeerNotPresent = "peer_not_present";
    /// The peer's node did not take a relayed frame.
    RelayFailed = "relay_failed";
    /// Too many frames too fast.
    RateLimited = "rate_limited";
    /// The connection's token (its id or its subject) was revoked.
    CredentialRevoked = "credential_revoked";
    /// The token is for another use (a login token on `/v1/signal`, a session token on the
    /// HTTP API, a robot token on a robot's `session` channel).
    WrongAudience = "wrong_audience";
    /// A fresh `auth` on an authenticated connection named another subject or role.
    ReauthMismatch = "reauth_mismatch";
    /// A bug or an I/O failure on the node (e.g. the verifier's key could not be read).
    Internal = "internal";
    }
}

/// An audit record the hub asks for; the node's audit log writes it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditEvent {
    /// A session started (seen in this node's applied state).
    SessionStarted,
    /// A session was revoked.
    SessionRevoked,
    /// A session was terminated by its operator.
    SessionTerminated,
    /// This node closed an ended session's connections.
    Teardown,
    /// A join was refused.
    JoinDenied,
}

impl AuditEvent {
    /// Every event, for documentation checks.
    pub const ALL: &'static [AuditEvent] = &[
        Self::SessionStarted,
        Self::SessionRevoked,
        Self::SessionTerminated,
        Self::Teardown,
        Self::JoinDenied,
    ];

    /// The name in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionStarted => "SESSION_STARTED",
            Self::SessionRevoked => "SESSION_REVOKED",
            Self::SessionTerminated => "SESSION_TERMINATED",
            Self::Teardown => "TEARDOWN",
            Self::JoinDenied => "JOIN_DENIED",
        }
    }
}

impl fmt::Display for AuditEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_keep_their_numbers() {
        let numbers: Vec<u16> = CloseCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(
            numbers,
            [4401, 4408, 4001, 4002, 4003, 4029, 4004, 4005, 4006]
        );
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(*c));
            assert_eq!(c.to_string(), c.code().to_string());
        }
        assert_eq!(CloseCode::from_code(1000), None);
    }

    #[test]
    fn every_error_code_round_trips_through_its_wire_form_display_and_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert_eq!(code.to_string(), code.as_str());
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), *code);
        }
        assert_eq!(ErrorCode::parse("nope"), None);
        assert_eq!(ErrorCode::ALL.len(), 25);
    }

    #[test]
    fn docs_signaling_lists_every_code() {
        // `internal` is left out: it is the HTTP API's code, reused for a verifier failure.
        let docs = include_str!("../../docs/signaling.md");
        for code in ErrorCode::ALL.iter().filter(|c| **c != ErrorCode::Internal) {
            assert!(
                docs.contains(&format!("`{code}`")),
                "{code} is not documented"
            );
        }
        for close in CloseCode::ALL {
            assert!(
                docs.contains(&format!("| {close} |")),
                "{close} is not documented"
            );
        }
    }

    #[test]
    fn audit_events_keep_their_log_names() {
        for e in AuditEvent::ALL {
            let json = serde_json::to_string(e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(e.to_string(), e.as_str());
        }
        assert_eq!(AuditEvent::JoinDenied.as_str(), "JOIN_DENIED");
        assert_eq!(AuditEvent::Teardown.as_str(), "TEARDOWN");
    }
}
