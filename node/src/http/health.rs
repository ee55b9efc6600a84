//! Health (`/healthz`), readiness (`/readyz`: a leader is known) and `/metrics`.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tether_api::ErrorCode;

pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.raft.status().leader {
        Some(leader) => {
            Json(serde_json::json!({ "status": "ready", "leader": leader })).into_response()
        }
        None => ApiError::new(ErrorCode::NotReady, "no leader known").into_response(),
    }
}

pub(super) async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    crate::telemetry::update_gauges(&state.raft);
    let counts = state.hub.counts();
    metrics::gauge!(crate::telemetry::names::SIGNAL_AUTHENTICATED).set(counts.connections as f64);
    metrics::gauge!(crate::telemetry::names::SIGNAL_ROOMS).set(counts.rooms as f64);
    metrics::gauge!(crate::telemetry::names::SIGNAL_ROOM_MEMBERS).set(counts.room_members as f64);
    metrics::gauge!(crate::telemetry::names::SIGNAL_TASKS).set(counts.tasks as f64);
    metrics::gauge!(crate::telemetry::names::SIGNAL_TIMERS).set(counts.timers as f64);
    metrics::gauge!(crate::telemetry::names::RUNTIME_ALIVE_TASKS).set(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as f64,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
