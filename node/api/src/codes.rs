//! The HTTP API's stable error codes and the error body every failed request answers.
//!
//! One enum, one place: the server builds errors from it, clients branch on it, and
//! `docs/api.md` lists the same codes. Signaling codes live beside the signaling frames
//! (`tether_signaling::codes`).

use serde::{Deserialize, Serialize};

/// The JSON body of every error response.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    /// Stable, snake_case; clients branch on this.
    pub code: String,
    /// For humans; may change.
    pub message: String,
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $status:literal;)*) => {
        /// A stable error code with the HTTP status it is answered with.
        #[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, for documentation checks.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The wire form.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status answered with this code.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// The code with this wire form.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// The body parsed but a value is wrong.
    InvalidRequest = "invalid_request", 400;
    /// The body is not JSON.
    InvalidJson = "invalid_json", 400;
    /// The body is larger than `http.max_body_bytes`.
    PayloadTooLarge = "payload_too_large", 413;
    /// The body is not `application/json`.
    UnsupportedMediaType = "unsupported_media_type", 415;
    /// No bearer token.
    MissingToken = "missing_token", 401;
    /// The token's `exp` has passed.
    TokenExpired = "token_expired", 401;
    /// The token does not verify.
    InvalidToken = "invalid_token", 401;
    /// The token's role may not do this.
    Forbidden = "forbidden", 403;
    /// The site policy does not let this operator drive this robot.
    PolicyDenied = "policy_denied", 403;
    /// The operator is revoked.
    OperatorRevoked = "operator_revoked", 403;
    /// The session belongs to another operator.
    Unauthorized = "unauthorized", 403;
    /// No such resource.
    NotFound = "not_found", 404;
    /// No such session.
    SessionNotFound = "session_not_found", 404;
    /// The robot already has an active session.
    RobotBusy = "robot_busy", 409;
    /// The session has already ended.
    SessionAlreadyTerminated = "session_already_terminated", 409;
    /// The change conflicts with the current state (membership, an id in use).
    Conflict = "conflict", 409;
    /// No leader or no quorum; nothing was decided.
    Unavailable = "unavailable", 503;
    /// `/readyz`: no leader known.
    NotReady = "not_ready", 503;
    /// The node holds as many signaling connections as it may.
    TooManyConnections = "too_many_connections", 503;
    /// A bug or an I/O failure on the node.
    Internal = "internal", 500;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_form_and_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!((400..600).contains(&code.status()));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }
}
