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

tether_signaling::stable_codes! {
    /// A stable error code of the HTTP API, with the status it is answered with.
    ErrorCode {
    /// The body parsed but a value is wrong.
    InvalidRequest = "invalid_request";
    /// The body is not JSON.
    InvalidJson = "invalid_json";
    /// The body is larger than `http.max_body_bytes`.
    PayloadTooLarge = "payload_too_large";
    /// The body is not `application/json`.
    UnsupportedMediaType = "unsupported_media_type";
    /// No bearer token.
    MissingToken = "missing_token";
    /// The token's `exp` has passed.
    TokenExpired = "token_expired";
    /// The token does not verify.
    InvalidToken = "invalid_token";
    /// The token is for another use: a session token or a robot token on the HTTP API.
    WrongAudience = "wrong_audience";
    /// The token's id, its session or its subject is revoked.
    CredentialRevoked = "credential_revoked";
    /// The token's role may not do this.
    Forbidden = "forbidden";
    /// The site policy does not let this operator drive this robot.
    PolicyDenied = "policy_denied";
    /// The operator is revoked.
    OperatorRevoked = "operator_revoked";
    /// The session belongs to another operator.
    Unauthorized = "unauthorized";
    /// No such resource.
    NotFound = "not_found";
    /// No such session.
    SessionNotFound = "session_not_found";
    /// The robot already has an active session.
    RobotBusy = "robot_busy";
    /// The session has already ended.
    SessionAlreadyTerminated = "session_already_terminated";
    /// The change conflicts with the current state (membership, an id in use).
    Conflict = "conflict";
    /// No leader or no quorum; nothing was decided.
    Unavailable = "unavailable";
    /// `/readyz`: no leader known.
    NotReady = "not_ready";
    /// The node holds as many signaling connections as it may.
    TooManyConnections = "too_many_connections";
    /// Too many requests from this address, or writes with this token: retry after the
    /// `Retry-After` seconds.
    RateLimited = "rate_limited";
    /// A bug or an I/O failure on the node.
    Internal = "internal";
    }
}

impl ErrorCode {
    /// The HTTP status answered with this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::InvalidJson => 400,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::MissingToken => 401,
            ErrorCode::TokenExpired => 401,
            ErrorCode::InvalidToken => 401,
            ErrorCode::WrongAudience => 401,
            ErrorCode::CredentialRevoked => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::PolicyDenied => 403,
            ErrorCode::OperatorRevoked => 403,
            ErrorCode::Unauthorized => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::SessionNotFound => 404,
            ErrorCode::RobotBusy => 409,
            ErrorCode::SessionAlreadyTerminated => 409,
            ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::NotReady => 503,
            ErrorCode::TooManyConnections => 503,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
        }
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
