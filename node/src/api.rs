//! The HTTP API: revocations, cluster membership and status, health and metrics.
//!
//! Every handler answers JSON; every error is an [`ApiError`] with a stable code. Writes are
//! answered only after commit, from any node.

use crate::auth::{unix_now, Claims, Role, Verifier};
use crate::config::NodeConfig;
use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};
use tether_raft::RaftNode;
use tether_store::model::UnixMillis;
use tether_store::{Command, NodeId, NodeInfo, Response as Applied, Revocation, RevocationKind};

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
        .route("/v1/revocations", post(revoke).get(list_revocations))
        .route("/v1/revocations/operator/{id}", delete(lift_operator))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/cluster/members", post(add_member))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route(
            "/v1/sessions",
            post(crate::sessions::create).get(crate::sessions::list),
        )
        .route("/v1/sessions/{sid}", delete(crate::sessions::terminate))
        .route("/v1/sessions/{sid}/refresh", post(crate::sessions::refresh))
        .route("/v1/signal", get(crate::sessions::signal))
        .route("/v1/audit", get(audit))
        .route("/v1/token-key", get(token_key))
        .route("/", get(crate::console::index))
        .route("/console/{file}", get(crate::console::asset))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `GET /v1/token-key`: the public key that verifies every Tether token (public data).
async fn token_key(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "alg": "EdDSA", "public_key_pem": &*state.public_key_pem }))
}

/// A JSON body whose rejections become [`ApiError`]s.
pub struct ApiJson<T>(pub T);

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

/// The verified claims of an admin token.
pub struct Admin(pub Claims);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = bearer_claims(parts, &state.verifier)?;
        if claims.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs an admin token",
            ));
        }
        Ok(Self(claims))
    }
}

pub(crate) fn bearer_claims(parts: &Parts, verifier: &Verifier) -> Result<Claims, ApiError> {
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

/// Formats milliseconds since the epoch as RFC 3339 UTC.
pub fn rfc3339(ms: UnixMillis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn parse_rfc3339(text: &str) -> Result<UnixMillis, ApiError> {
    let t = humantime::parse_rfc3339_weak(text).map_err(|e| {
        ApiError::invalid(format!(
            "expires_at: {e} (want RFC 3339 UTC, e.g. 2026-12-01T10:00:00Z)"
        ))
    })?;
    Ok(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64)
}

fn now_ms() -> UnixMillis {
    unix_now().as_millis() as u64
}

/// A revocation as the API shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RevocationView {
    /// `session`, `token` or `operator`.
    pub kind: RevocationKind,
    /// The revoked sid, jti or operator.
    pub target: String,
    /// RFC 3339.
    pub revoked_at: String,
    /// Why.
    pub reason: String,
    /// The admin who revoked.
    pub revoked_by: String,
    /// RFC 3339, or null when it lasts until lifted.
    pub expires_at: Option<String>,
}

impl From<&Revocation> for RevocationView {
    fn from(r: &Revocation) -> Self {
        Self {
            kind: r.kind,
            target: r.target.clone(),
            revoked_at: rfc3339(r.revoked_at),
            reason: r.reason.clone(),
            revoked_by: r.revoked_by.clone(),
            expires_at: r.expires_at.map(rfc3339),
        }
    }
}

/// `POST /v1/revocations`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    session_id: Option<String>,
    jti: Option<String>,
    operator: Option<String>,
    reason: String,
    expires_at: Option<String>,
}

/// The answer to a revocation.
#[derive(Serialize, Deserialize, Debug)]
pub struct RevokeResponse {
    /// The entry as committed.
    pub revocation: RevocationView,
    /// False when the target was already revoked (the call is idempotent).
    pub created: bool,
}

pub(crate) fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to {MAX_ID_LEN} characters without control characters"
        )));
    }
    Ok(())
}

impl RevokeRequest {
    fn into_command(
        self,
        admin: &Claims,
        config: &NodeConfig,
        now: UnixMillis,
    ) -> Result<Command, ApiError> {
        let targets = [
            (RevocationKind::Session, self.session_id),
            (RevocationKind::Token, self.jti),
            (RevocationKind::Operator, self.operator),
        ];
        let mut given = targets.into_iter().filter_map(|(k, v)| v.map(|v| (k, v)));
        let (kind, target) = match (given.next(), given.next()) {
            (Some(one), None) => one,
            (None, _) => {
                return Err(ApiError::invalid(
                    "give exactly one of session_id, jti, operator (none given)",
                ))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "give exactly one of session_id, jti, operator (several given)",
                ))
            }
        };
        check_id(kind.as_str(), &target)?;
        let reason = self.reason.trim().to_owned();
        if reason.is_empty() || reason.len() > MAX_REASON_LEN {
            return Err(ApiError::invalid(format!(
                "reason must be 1 to {MAX_REASON_LEN} characters"
            )));
        }
        let expires_at = match self.expires_at {
            Some(text) => {
                let at = parse_rfc3339(&text)?;
                if at <= now {
                    return Err(ApiError::invalid("expires_at is in the past"));
                }
                Some(at)
            }
            // A session or token revocation outlives any token it could match; an operator
            // revocation lasts until lifted.
            None if kind == RevocationKind::Operator => None,
            None => Some(now + config.http.default_revocation_ttl_s * 1000),
        };
        Ok(Command::Revoke {
            kind,
            target,
            reason,
            revoked_by: admin.sub.clone(),
            at: now,
            expires_at,
        })
    }
}

async fn revoke(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<RevokeRequest>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let command = body.into_command(&admin, &state.config, now_ms())?;
    let started = Instant::now();
    let applied = state.commit(command).await?;
    metrics::histogram!("tether_revocation_commit_seconds").record(started.elapsed().as_secs_f64());
    match applied {
        Applied::Revoked { entry, created, .. } => {
            metrics::counter!("tether_revocations_total", "kind" => entry.kind.as_str())
                .increment(u64::from(created));
            tracing::debug!(kind = entry.kind.as_str(), target = %entry.target, created, by = %admin.sub, "revoked");
            Ok(Json(RevokeResponse {
                revocation: (&entry).into(),
                created,
            }))
        }
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

/// `GET /v1/revocations` query.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    kind: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    /// Confirm with the leader before reading, so the page reflects every committed write.
    consistent: Option<bool>,
}

/// A page of revocations.
#[derive(Serialize, Deserialize, Debug)]
pub struct ListResponse {
    /// The entries, in key order.
    pub items: Vec<RevocationView>,
    /// Pass as `after` for the next page; null at the end.
    pub next: Option<String>,
}

fn parse_kind(text: &str) -> Result<RevocationKind, ApiError> {
    RevocationKind::parse(text).ok_or_else(|| {
        ApiError::invalid(format!(
            "kind must be session, token or operator, not {text:?}"
        ))
    })
}

async fn list_revocations(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let Query(q) = query?;
    let kind = q.kind.as_deref().map(parse_kind).transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let after = match q.after.as_deref() {
        Some(cursor) => {
            let (k, target) = cursor
                .split_once(':')
                .ok_or_else(|| ApiError::invalid("after must be a cursor from a previous page"))?;
            Some((parse_kind(k)?, target.to_owned()))
        }
        None => None,
    };
    if q.consistent.unwrap_or(false) {
        state
            .raft
            .read_barrier(Duration::from_millis(state.config.http.write_timeout_ms))
            .await?;
    }
    let entries = state.raft.view().read().list(kind, after, limit);
    let next = (entries.len() == limit)
        .then(|| {
            entries
                .last()
                .map(|e| format!("{}:{}", e.kind.as_str(), e.target))
        })
        .flatten();
    Ok(Json(ListResponse {
        items: entries.iter().map(RevocationView::from).collect(),
        next,
    }))
}

async fn lift_operator(
    State(state): State<AppState>,
    Admin(admin): Admin,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(operator) = path?;
    check_id("operator", &operator)?;
    let command = Command::Lift {
        operator: operator.clone(),
        lifted_by: admin.sub.clone(),
    };
    let applied = state.commit(command).await?;
    match applied {
        Applied::Lifted(Some(entry)) => {
            tracing::info!(%operator, by = %admin.sub, "operator revocation lifted");
            Ok(Json(
                serde_json::json!({ "lifted": RevocationView::from(&entry) }),
            ))
        }
        Applied::Lifted(None) => Err(ApiError::not_found(format!(
            "operator {operator:?} is not revoked"
        ))),
        other => Err(ApiError::internal(format!(
            "unexpected apply result {other:?}"
        ))),
    }
}

/// One member in `GET /v1/cluster`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Node id.
    pub id: NodeId,
    /// QUIC address.
    pub raft_addr: String,
    /// HTTP address.
    pub http_addr: String,
    /// Voter (true) or learner.
    pub voter: bool,
    /// On the leader: the last log index replicated to this member.
    pub matched_index: Option<u64>,
}

/// `GET /v1/cluster`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClusterView {
    /// This node.
    pub id: NodeId,
    /// Leader, follower, candidate or learner.
    pub state: String,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// The members of the current configuration.
    pub members: Vec<MemberView>,
    /// Last log index on this node.
    pub last_log_index: Option<u64>,
    /// Committed index as known to this node.
    pub commit_index: Option<u64>,
    /// Applied index on this node.
    pub applied_index: Option<u64>,
    /// Committed but not yet applied here.
    pub lag: u64,
    /// Stored revocations on this node.
    pub revocations: usize,
}

/// Builds the cluster view from a node's metrics.
pub async fn cluster_view(raft: &RaftNode) -> Result<ClusterView, ApiError> {
    let m = raft.raft().metrics().borrow().clone();
    let committed = raft
        .raft()
        .with_raft_state(|st| st.committed.map(|l| l.index))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let applied = m.last_applied.map(|l| l.index);
    let membership = m.membership_config.membership();
    let voters: std::collections::BTreeSet<_> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .map(|(id, node)| MemberView {
            id: *id,
            raft_addr: node.raft_addr.clone(),
            http_addr: node.http_addr.clone(),
            voter: voters.contains(id),
            matched_index: m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten().map(|l| l.index)),
        })
        .collect();
    Ok(ClusterView {
        id: m.id,
        state: format!("{:?}", m.state).to_lowercase(),
        leader: m.current_leader,
        term: m.current_term,
        members,
        last_log_index: m.last_log_index,
        commit_index: committed,
        applied_index: applied,
        lag: committed.unwrap_or(0).saturating_sub(applied.unwrap_or(0)),
        revocations: raft.view().read().len(),
    })
}

async fn cluster_status(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(cluster_view(&state.raft).await?))
}

/// `POST /v1/cluster/members`.
#[derive(Deserialize, Serialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The new node's id.
    pub id: NodeId,
    /// Its QUIC address.
    pub raft_addr: std::net::SocketAddr,
    /// Its HTTP address.
    pub http_addr: std::net::SocketAddr,
    /// How long to wait for the new node to catch up and be promoted (default 30 s).
    pub timeout_ms: Option<u64>,
}

/// How long a membership change may take (a learner catching up included).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

async fn add_member(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<AddMemberRequest>,
) -> Result<Json<ClusterView>, ApiError> {
    if body.id == 0 {
        return Err(ApiError::invalid("id must be non-zero"));
    }
    let node = NodeInfo {
        raft_addr: body.raft_addr.to_string(),
        http_addr: body.http_addr.to_string(),
    };
    let timeout = body
        .timeout_ms
        .map_or(MEMBERSHIP_TIMEOUT, Duration::from_millis);
    state.raft.add_member(body.id, node, timeout).await?;
    tracing::info!(id = body.id, by = %admin.sub, "member added");
    Ok(Json(cluster_view(&state.raft).await?))
}

async fn remove_member(
    State(state): State<AppState>,
    Admin(admin): Admin,
    path: Result<Path<NodeId>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ClusterView>, ApiError> {
    let Path(id) = path?;
    let known = state
        .raft
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_node(&id)
        .is_some();
    if !known {
        return Err(ApiError::not_found(format!("node {id} is not a member")));
    }
    state.raft.remove_member(id, MEMBERSHIP_TIMEOUT).await?;
    tracing::info!(id, by = %admin.sub, "member removed");
    Ok(Json(cluster_view(&state.raft).await?))
}

/// `GET /v1/audit` query.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records with `seq` greater than this.
    after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

async fn audit(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be 1 to {MAX_PAGE}")));
    }
    let path = state.audit.path().to_owned();
    let records = tokio::task::spawn_blocking(move || crate::audit::read(&path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let after = q.after.unwrap_or(0);
    let items: Vec<_> = records
        .into_iter()
        .filter(|r| r.seq > after)
        .take(limit)
        .collect();
    let next = (items.len() == limit)
        .then(|| items.last().map(|r| r.seq))
        .flatten();
    Ok(Json(serde_json::json!({ "items": items, "next": next })))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let m = state.raft.raft().metrics().borrow().clone();
    match m.current_leader {
        Some(leader) => {
            Json(serde_json::json!({ "status": "ready", "leader": leader })).into_response()
        }
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "no leader known",
        )
        .into_response(),
    }
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::telemetry::update_gauges(&state.raft);
    let counts = state.hub.counts();
    metrics::gauge!("tether_signal_authenticated").set(counts.connections as f64);
    metrics::gauge!("tether_signal_rooms").set(counts.rooms as f64);
    metrics::gauge!("tether_signal_room_members").set(counts.room_members as f64);
    metrics::gauge!("tether_signal_tasks").set(counts.tasks as f64);
    metrics::gauge!("tether_signal_timers").set(counts.timers as f64);
    metrics::gauge!("tether_runtime_alive_tasks").set(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as f64,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
