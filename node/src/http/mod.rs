//! The HTTP API: one module per resource, the router, and what every handler shares
//! (state, the JSON body and bearer-token extractors, input limits).
//!
//! Every handler answers JSON; every error is an [`ApiError`] with a stable code from
//! [`tether_api::ErrorCode`]. Writes are answered only after commit, from any node.
//! Layering: `http` calls into `gateway` (the signaling upgrade, hub counts); the gateway
//! never calls back into `http`.

mod audit;
mod cluster;
mod console;
pub mod error;
mod health;
pub mod limits;
pub mod listen;
mod revocations;
mod sessions;
mod signal;

pub use cluster::cluster_view;
pub use error::ApiError;

use crate::auth::{Audience, Claims, TokenKind, Verifier};
use crate::config::NodeConfig;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use tether_api::ErrorCode;
use tether_raft::RaftNode;
use tether_store::{Command, Response as Applied};

/// Longest accepted id (sid, jti, operator) and reason.
const MAX_ID_LEN: usize = 256;
const MAX_REASON_LEN: usize = 1024;
const MAX_PAGE: usize = 1000;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The Raft member.
    pub raft: Arc<RaftNode>,
    /// Verifies bearer tokens.
    pub verifier: Verifier,
    /// The public half of the token key, served so robots can check session tokens.
    pub public_key_pem: Arc<str>,
    /// The node's configuration.
    pub config: Arc<NodeConfig>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Mints session tokens, if this node has the private key.
    pub minter: Option<crate::auth::Minter>,
    /// Signaling.
    pub hub: Arc<crate::gateway::Hub>,
    /// This node's audit ledger.
    pub audit: crate::audit::AuditLog,
    /// Per-client rate limits.
    pub limits: Arc<limits::HttpLimits>,
}

impl AppState {
    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.config.http.write_timeout_ms)
    }

    /// Commits a command through the leader and returns what applying it answered.
    pub(crate) async fn commit(&self, command: Command) -> Result<Applied, ApiError> {
        Ok(self.raft.write(command, self.write_timeout()).await?)
    }

    /// Commits `command` at most once for `request` (every retry of this write, by the Raft
    /// layer across leader changes or by the client with the same `Idempotency-Key`, gets
    /// the first answer) and returns that answer.
    pub(crate) async fn commit_once(
        &self,
        request: RequestId,
        command: Command,
    ) -> Result<Applied, ApiError> {
        let once = Command::once(request.0, tether_api::time::now_ms(), command);
        Ok(self.commit(once).await?.into_original())
    }
}

/// The id that makes a write idempotent: the client's `Idempotency-Key` header (retries of
/// one intended write send the same key; keys are remembered for
/// [`tether_store::REQUEST_RETENTION_MS`]), or a fresh one.
pub(crate) struct RequestId(pub String);

/// The header a client sets to make its retries of one write idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(Self(format!("req_{}", uuid::Uuid::new_v4().simple())));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty() && k.len() <= MAX_ID_LEN && k.chars().all(|c| c.is_ascii_graphic())
            })
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Idempotency-Key must be 1 to {MAX_ID_LEN} visible ASCII characters"
                ))
            })?;
        // Namespaced, so a client's key can never collide with a generated one.
        Ok(Self(format!("key_{key}")))
    }
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    let limit = state.config.http.max_body_bytes;
    Router::new()
        .route(
            "/v1/revocations",
            post(revocations::revoke).get(revocations::list),
        )
        .route(
            "/v1/revocations/operator/{id}",
            delete(revocations::lift_operator),
        )
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
        .route("/v1/sessions", post(sessions::create).get(sessions::list))
        .route("/v1/sessions/{sid}", delete(sessions::terminate))
        .route("/v1/sessions/{sid}/refresh", post(sessions::refresh))
        .route("/v1/signal", get(signal::upgrade))
        .route("/v1/audit", get(audit::page))
        .route("/v1/token-key", get(token_key))
        .route("/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::render_metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        // A body trickled in slower than this is cut off (the head has its own deadline,
        // in the listener).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            Duration::from_millis(state.config.http.body_timeout_ms),
        ))
        .with_state(state)
}

/// `GET /v1/token-key`: the public key that verifies every Tether token (public data).
async fn token_key(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "alg": "EdDSA", "public_key_pem": &*state.public_key_pem }))
}

/// A JSON body whose rejections become [`ApiError`]s.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// The verified claims of a bearer token of one of `kinds`.
fn claims_of_kind(
    parts: &Parts,
    state: &AppState,
    kinds: &[TokenKind],
) -> Result<Claims, ApiError> {
    let claims = bearer_claims(parts, state)?;
    if !claims.kind().is_some_and(|k| kinds.contains(&k)) {
        let wanted = kinds
            .iter()
            .map(|k| format!("{k:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(" or ");
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this needs an {wanted} token"),
        ));
    }
    Ok(claims)
}

/// The verified claims of an admin token.
pub(crate) struct Admin(pub Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        claims_of_kind(parts, state, &[TokenKind::Admin]).map(Self)
    }
}

/// The verified claims of an operator's login token (never a session token: see
/// [`bearer_claims`]).
pub(crate) struct Operator(pub Claims);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        claims_of_kind(parts, state, &[TokenKind::Login]).map(Self)
    }
}

/// The claims of the request's bearer token, if it may use the HTTP API at all: verified,
/// of the api audience (a session token authenticates one session on `/v1/signal` and on
/// the robot's channel, a robot token only its robot's connection), and not revoked by its
/// id, its session or its subject — from the applied state, with no I/O (S1).
fn bearer_claims(parts: &Parts, state: &AppState) -> Result<Claims, ApiError> {
    let claims = verified_bearer(parts, &state.verifier)?;
    if claims.aud != Audience::Api {
        return Err(ApiError::new(
            ErrorCode::WrongAudience,
            "this token is not for the HTTP API: use an admin or operator login token",
        ));
    }
    if let Some(r) = crate::auth::denial(&state.raft.view().read(), &claims) {
        return Err(ApiError::new(
            ErrorCode::CredentialRevoked,
            format!("this token is revoked ({}): {}", r.kind.as_str(), r.reason),
        ));
    }
    Ok(claims)
}

fn verified_bearer(parts: &Parts, verifier: &Verifier) -> Result<Claims, ApiError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(crate::auth::AuthError::Missing)?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(crate::auth::AuthError::Missing)?;
    Ok(verifier.verify(token.trim())?)
}

pub(crate) fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to {MAX_ID_LEN} characters without control characters"
        )));
    }
    Ok(())
}
