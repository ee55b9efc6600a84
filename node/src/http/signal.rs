//! `GET /v1/signal`: the WebSocket upgrade into the signaling gateway, refused with
//! `too_many_connections` when the node is full or too many sockets have yet to
//! authenticate (the slots are taken before the upgrade, so the limits hold under a burst).

use super::{ApiError, AppState};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use tether_api::ErrorCode;

/// Per-connection WebSocket read and write buffer size.
const WS_BUFFER_BYTES: usize = 8 * 1024;

/// `GET /v1/signal`: upgrades to a signaling WebSocket.
pub(super) async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let slots = match state.hub.reserve_socket() {
        Ok(slots) => slots,
        Err(none) => {
            metrics::counter!(crate::telemetry::names::SIGNAL_REFUSED_TOTAL, "reason" => none.reason())
                .increment(1);
            return ApiError::new(ErrorCode::TooManyConnections, none.message()).into_response();
        }
    };
    let hub = state.hub.clone();
    // Signaling frames are small: 8 KiB buffers instead of tungstenite's 128 KiB ones keep
    // 10,000 idle connections in tens of MiB rather than a gigabyte.
    ws.read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(tether_signaling::protocol::MAX_FRAME_BYTES)
        .max_frame_size(tether_signaling::protocol::MAX_FRAME_BYTES)
        .on_upgrade(move |socket| hub.serve(socket, slots))
}
