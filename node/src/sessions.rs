//! Sessions over HTTP: create (with a session token), end by their own operator (seed 002),
//! refresh the token, list; and the WebSocket signaling endpoint.

use crate::api::{rfc3339, ApiJson, AppState};
use crate::auth::{Claims, Role};
use crate::error::ApiError;
use crate::gateway::now_ms;
use axum::extract::{FromRequestParts, Path, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tether_store::{Command, Response as Applied, Session};

/// The verified claims of an operator token (a plain one or a session token).
pub struct Operator(pub Claims);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = crate::api::bearer_claims(parts, &state.verifier)?;
        if claims.role != Role::Operator {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs an operator token",
            ));
        }
        Ok(Self(claims))
    }
}

/// `POST /v1/sessions`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    robot_id: String,
}

/// A new (or refreshed) session token.
#[derive(Serialize, Deserialize, Debug)]
pub struct SessionToken {
    /// The session id.
    pub session_id: String,
    /// The session token (JWT with `sid`, `robot`, `jti`).
    pub token: String,
    /// When the token expires (RFC 3339); refresh before.
    pub expires_at: String,
}

/// A session as the API shows it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SessionView {
    /// Id.
    pub session_id: String,
    /// Operator.
    pub operator: String,
    /// Robot.
    pub robot_id: String,
    /// `active`, `terminated` or `revoked`.
    pub state: tether_store::SessionState,
    /// The node that created it.
    pub node: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, once ended.
    pub ended_at: Option<String>,
    /// Why it ended.
    pub end_reason: Option<String>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.id.clone(),
            operator: s.operator.clone(),
            robot_id: s.robot.clone(),
            state: s.state,
            node: s.node,
            created_at: rfc3339(s.created_at),
            ended_at: s.ended_at.map(rfc3339),
            end_reason: s.end_reason.clone(),
        }
    }
}

fn refused(code: &str, message: String) -> ApiError {
    let (status, code) = match code {
        "robot_busy" => (StatusCode::CONFLICT, "robot_busy"),
        "conflict" => (StatusCode::CONFLICT, "conflict"),
        "operator_revoked" => (StatusCode::FORBIDDEN, "operator_revoked"),
        "unauthorized" => (StatusCode::FORBIDDEN, "unauthorized"),
        "session_not_found" => (StatusCode::NOT_FOUND, "session_not_found"),
        "session_already_terminated" => (StatusCode::CONFLICT, "session_already_terminated"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    ApiError::new(status, code, message)
}

fn mint(state: &AppState, session: &Session) -> Result<SessionToken, ApiError> {
    let minter = state
        .minter
        .as_ref()
        .ok_or_else(|| ApiError::internal("this node has no signing key (auth.private_key)"))?;
    let mut claims = Claims::new(
        &session.operator,
        Role::Operator,
        Duration::from_secs(state.config.sessions.token_ttl_s),
    );
    claims.jti = session.token_id.clone();
    claims.sid = Some(session.id.clone());
    claims.robot = Some(session.robot.clone());
    Ok(SessionToken {
        session_id: session.id.clone(),
        token: minter.mint(&claims)?,
        expires_at: rfc3339(claims.exp * 1000),
    })
}

/// `POST /v1/sessions`: policy, one controlling session per robot, a session token.
pub async fn create(
    State(state): State<AppState>,
    Operator(op): Operator,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<Json<SessionToken>, ApiError> {
    crate::api::check_id("robot_id", &body.robot_id)?;
    if !state.config.sessions.allows(&op.sub, &body.robot_id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "policy_denied",
            format!("operator {} may not drive robot {}", op.sub, body.robot_id),
        ));
    }
    let command = Command::StartSession {
        id: format!("ses_{}", uuid::Uuid::new_v4().simple()),
        operator: op.sub.clone(),
        robot: body.robot_id,
        token_id: uuid::Uuid::new_v4().to_string(),
        node: state.raft.id(),
        at: now_ms(),
    };
    match state.commit(command).await? {
        Applied::SessionStarted(session) => {
            tracing::info!(session_id = %session.id, operator = %session.operator, robot = %session.robot, "session started");
            Ok(Json(mint(&state, &session)?))
        }
        Applied::SessionRefused { code, message } => Err(refused(&code, message)),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

/// `DELETE /v1/sessions/{sid}`: the session's own operator ends it.
pub async fn terminate(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(sid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let command = Command::EndSession {
        id: sid.clone(),
        operator: op.sub.clone(),
        at: now_ms(),
    };
    match state.commit(command).await? {
        Applied::SessionEnded(s) => {
            let ended = s.ended_at.unwrap_or(s.created_at);
            Ok(Json(serde_json::json!({
                "success": true,
                "session_id": s.id,
                "terminated_at": rfc3339(ended),
                "duration_seconds": ended.saturating_sub(s.created_at) / 1000,
            })))
        }
        Applied::SessionRefused { code, message } => Err(refused(&code, message)),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

/// `POST /v1/sessions/{sid}/refresh`: a fresh token while the session is active.
pub async fn refresh(
    State(state): State<AppState>,
    Operator(op): Operator,
    Path(sid): Path<String>,
) -> Result<Json<SessionToken>, ApiError> {
    state
        .raft
        .read_barrier(Duration::from_millis(
            state.config.sessions.admission_timeout_ms,
        ))
        .await?;
    let session = state.raft.view().read().session(&sid).cloned();
    match session {
        None => Err(refused("session_not_found", format!("no session {sid}"))),
        Some(s) if s.operator != op.sub => Err(refused(
            "unauthorized",
            format!("session {sid} is not yours"),
        )),
        Some(s) if s.state != tether_store::SessionState::Active => Err(refused(
            "session_already_terminated",
            format!("session {sid} has ended"),
        )),
        Some(s) => Ok(Json(mint(&state, &s)?)),
    }
}

/// `GET /v1/sessions`: all for an admin, one's own for an operator.
pub async fn list(
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = crate::api::bearer_claims(&parts, &state.verifier)?;
    let owner = match claims.role {
        Role::Admin => None,
        Role::Operator => Some(claims.sub),
        Role::Robot => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "robots cannot list sessions",
            ))
        }
    };
    let view = state.raft.view().read();
    let items: Vec<SessionView> = view
        .sessions()
        .filter(|s| owner.as_ref().is_none_or(|o| *o == s.operator))
        .map(SessionView::from)
        .collect();
    Ok(Json(serde_json::json!({ "items": items })))
}

/// Per-connection WebSocket read and write buffer size.
const WS_BUFFER_BYTES: usize = 8 * 1024;

/// `GET /v1/signal`: upgrades to a signaling WebSocket.
pub async fn signal(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    if !state.hub.has_room_for_one_more() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "this node is full; try another",
        )
        .into_response();
    }
    let hub = state.hub.clone();
    // Signaling frames are small: 8 KiB buffers instead of tungstenite's 128 KiB ones keep
    // 10,000 idle connections in tens of MiB rather than a gigabyte.
    ws.read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(tether_signaling::protocol::MAX_FRAME_BYTES)
        .max_frame_size(tether_signaling::protocol::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| hub.serve(socket))
}
