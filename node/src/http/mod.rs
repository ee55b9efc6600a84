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
mod revocations;
mod sessions;
mod signal;

pub use cluster::cluster_view;
pub use error::ApiError;

use crate::auth::{Claims, Role, Verifier};
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
}

impl AppState {
    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.config.http.write_timeout_ms)
    }

    /// Commits a command through the leader and returns what applying it answered.
    pub(crate) async fn commit(&self, command: Command) -> Result<Applied, ApiError> {
        Ok(self.raft.write(command, self.write_timeout()).await?)
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
        .layer(axum::extract::DefaultBodyLimit::max(limit))
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

/// The verified claims of a bearer token, which must have `role`.
fn claims_with_role(parts: &Parts, state: &AppState, role: Role) -> Result<Claims, ApiError> {
    let claims = bearer_claims(parts, &state.verifier)?;
    if claims.role != role {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this needs an {role:?} token").to_lowercase(),
        ));
    }
    Ok(claims)
}

/// The verified claims of an admin token.
pub(crate) struct Admin(pub Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        claims_with_role(parts, state, Role::Admin).map(Self)
    }
}

/// The verified claims of an operator token (a plain one or a session token).
pub(crate) struct Operator(pub Claims);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        claims_with_role(parts, state, Role::Operator).map(Self)
    }
}

fn bearer_claims(parts: &Parts, verifier: &Verifier) -> Result<Claims, ApiError> {
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
