//! `GET /v1/audit`: this node's hash-chained audit ledger, page by page.

use super::{Admin, ApiError, AppState, MAX_PAGE};
use axum::extract::{Query, State};
use axum::Json;
use tether_api::types::{AuditPage, AuditQuery};

pub(super) async fn page(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
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
    Ok(Json(AuditPage { items, next }))
}
