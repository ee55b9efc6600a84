//! The API's error type: an HTTP status, a stable machine-readable `code`, and a message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tether_api::{ErrorBody, ErrorCode};

/// An error answered to an HTTP client: a code (which fixes the status) and a message.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with this code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`: the body parsed but a value is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// 503 `unavailable`: no leader or no quorum; nothing was decided.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code: self.code.as_str().into(),
            message: self.message,
        };
        (status, Json(body)).into_response()
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        let code = match e {
            AuthError::Missing => ErrorCode::MissingToken,
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Invalid(_) => ErrorCode::InvalidToken,
            AuthError::Key(_) => return Self::internal(e.to_string()),
        };
        Self::new(code, e.to_string())
    }
}

impl From<tether_raft::RaftNodeError> for ApiError {
    fn from(e: tether_raft::RaftNodeError) -> Self {
        use tether_raft::RaftNodeError;
        match e {
            RaftNodeError::Unavailable(_) => Self::unavailable(e.to_string()),
            RaftNodeError::Invalid(_) => Self::new(ErrorCode::Conflict, e.to_string()),
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        let code = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::InvalidRequest,
            _ => ErrorCode::InvalidJson,
        };
        Self::new(code, r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        Self::invalid(r.body_text())
    }
}
