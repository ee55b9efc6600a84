//! `/v1/cluster`: the cluster as this node sees it, and membership changes.

use super::{Admin, ApiError, ApiJson, AppState};
use axum::extract::{Path, State};
use axum::Json;
use std::time::Duration;
use tether_api::types::{AddMemberRequest, ClusterView, MemberView};
use tether_raft::RaftNode;
use tether_store::{NodeId, NodeInfo};

/// How long a membership change may take (a learner catching up included).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the cluster view from a node's status.
pub async fn cluster_view(raft: &RaftNode) -> Result<ClusterView, ApiError> {
    let status = raft.status();
    let committed = raft.committed_index().await?;
    let applied = status.applied_index;
    let members = status
        .members
        .iter()
        .map(|m| MemberView {
            id: m.id,
            raft_addr: m.info.raft_addr.clone(),
            http_addr: m.info.http_addr.clone(),
            voter: m.voter,
            matched_index: m.matched_index,
        })
        .collect();
    Ok(ClusterView {
        id: status.id,
        state: status.state,
        leader: status.leader,
        term: status.term,
        members,
        last_log_index: status.last_log_index,
        commit_index: committed,
        applied_index: applied,
        lag: committed.unwrap_or(0).saturating_sub(applied.unwrap_or(0)),
        snapshot_index: status.snapshot_index,
        purged_index: status.purged_index,
        revocations: raft.view().read().len(),
    })
}

pub(super) async fn status(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<ClusterView>, ApiError> {
    Ok(Json(cluster_view(&state.raft).await?))
}

pub(super) async fn add_member(
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

pub(super) async fn remove_member(
    State(state): State<AppState>,
    Admin(admin): Admin,
    path: Result<Path<NodeId>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ClusterView>, ApiError> {
    let Path(id) = path?;
    if !state.raft.status().is_member(id) {
        return Err(ApiError::not_found(format!("node {id} is not a member")));
    }
    state.raft.remove_member(id, MEMBERSHIP_TIMEOUT).await?;
    tracing::info!(id, by = %admin.sub, "member removed");
    Ok(Json(cluster_view(&state.raft).await?))
}
