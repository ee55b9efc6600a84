//! Sessions over HTTP: create (with a session token), end by their own operator (seed 002),
//! refresh the token, list.

use super::{bearer_claims, check_id, ApiError, ApiJson, AppState, Operator, RequestId};
use crate::auth::{Claims, Role};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::Json;
use std::time::Duration;
use tether_api::time::{now_ms, rfc3339};
use tether_api::types::{CreateSession, SessionEnded, SessionList, SessionToken, SessionView};
use tether_api::ErrorCode;
use tether_store::{Command, Response as Applied, Session};

/// The state machine's refusal as an API error: its codes are API codes.
fn refused(code: &str, message: String) -> ApiError {
    ApiError::new(
        ErrorCode::parse(code).unwrap_or(ErrorCode::Internal),
        message,
    )
}

fn mint(state: &AppState, session: &Session) -> Result<SessionToken, ApiError> {
    let minter = state
        .minter
        .as_ref()
        .ok_or_else(|| ApiError::internal("this node has no signing key (auth.private_key)"))?;
    let claims = Claims::session(
        &session.operator,
        &session.id,
        &session.robot,
        &session.token_id,
        Duration::from_secs(state.config.sessions.token_ttl_s),
    );
    Ok(SessionToken {
        session_id: session.id.clone(),
        token: minter.mint(&claims)?,
        expires_at: rfc3339(claims.exp * 1000),
    })
}

/// `POST /v1/sessions`: policy, one controlling session per robot, a session token. The
/// state machine checks the operator and the login token against revocations when it
/// applies the start, so a start is as linearizable as a join (S2).
pub(super) async fn create(
    State(state): State<AppState>,
    Operator(op): Operator,
    request: RequestId,
    ApiJson(body): ApiJson<CreateSession>,
) -> Result<Json<SessionToken>, ApiError> {
    check_id("robot_id", &body.robot_id)?;
    if !state.config.sessions.allows(&op.sub, &body.robot_id) {
        return Err(ApiError::new(
            ErrorCode::PolicyDenied,
            format!("operator {} may not drive robot {}", op.sub, body.robot_id),
        ));
    }
    let command = Command::StartSession {
        id: format!("ses_{}", uuid::Uuid::new_v4().simple()),
        operator: op.sub.clone(),
        robot: body.robot_id,
        token_id: uuid::Uuid::new_v4().to_string(),
        login_token_id: Some(op.jti.clone()),
        node: state.raft.id(),
        at: now_ms(),
    };
    match state.commit_once(request, command).await? {
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
pub(super) async fn terminate(
    State(state): State<AppState>,
    Operator(op): Operator,
    request: RequestId,
    Path(sid): Path<String>,
) -> Result<Json<SessionEnded>, ApiError> {
    let command = Command::EndSession {
        id: sid.clone(),
        operator: op.sub.clone(),
        at: now_ms(),
    };
    match state.commit_once(request, command).await? {
        Applied::SessionEnded(s) => {
            let ended = s.ended_at.unwrap_or(s.created_at);
            Ok(Json(SessionEnded {
                success: true,
                session_id: s.id,
                terminated_at: rfc3339(ended),
                duration_seconds: ended.saturating_sub(s.created_at) / 1000,
            }))
        }
        Applied::SessionRefused { code, message } => Err(refused(&code, message)),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

/// `POST /v1/sessions/{sid}/refresh`: a fresh token while the session is active. Like a
/// join (S2): decided after a read barrier, on state that includes every revocation
/// acknowledged before the request — of the session, its token, the operator or the login
/// token that asks.
pub(super) async fn refresh(
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
    let (session, denied) = {
        let view = state.raft.view().read();
        let denied = crate::auth::denial(&view, &op).cloned();
        (view.session(&sid).cloned(), denied)
    };
    if let Some(r) = denied {
        return Err(ApiError::new(
            ErrorCode::CredentialRevoked,
            format!("this token is revoked ({}): {}", r.kind.as_str(), r.reason),
        ));
    }
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
        Some(s)
            if state
                .raft
                .view()
                .read()
                .denial(Some(&s.id), Some(&s.token_id), None)
                .is_some() =>
        {
            Err(refused(
                "session_already_terminated",
                format!("session {sid} is revoked"),
            ))
        }
        Some(s) => Ok(Json(mint(&state, &s)?)),
    }
}

/// `GET /v1/sessions`: all for an admin, one's own for an operator.
pub(super) async fn list(
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Json<SessionList>, ApiError> {
    let claims = bearer_claims(&parts, &state)?;
    let owner = match claims.role {
        Role::Admin => None,
        Role::Operator => Some(claims.sub),
        // A robot token never gets past `bearer_claims` (its audience is the robot's link).
        Role::Robot => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
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
    Ok(Json(SessionList { items }))
}
