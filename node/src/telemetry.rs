//! Logging and Prometheus metrics setup, and the gauges refreshed on each scrape.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tether_raft::RaftNode;
use tether_store::RevocationKind;

/// Every metric name the node exports, in one place: code and tests use these.
pub mod names {
    pub use tether_raft::metric_names::*;

    /// `tether_signal_connections`, gauge: open signaling WebSockets (authenticated or not).
    pub const SIGNAL_CONNECTIONS: &str = "tether_signal_connections";
    /// `tether_signal_authenticated`, gauge: authenticated signaling connections.
    pub const SIGNAL_AUTHENTICATED: &str = "tether_signal_authenticated";
    /// `tether_http_tls_handshake_failures_total`, counter: HTTPS handshakes that failed or
    /// timed out.
    pub const HTTP_TLS_HANDSHAKE_FAILURES_TOTAL: &str = "tether_http_tls_handshake_failures_total";
    /// `tether_http_tls_reloads_total`, counter by `result` (`ok`, `error`): HTTPS
    /// certificate reloads after its files changed.
    pub const HTTP_TLS_RELOADS_TOTAL: &str = "tether_http_tls_reloads_total";
    /// `tether_http_rate_limited_total`, counter by `limit` (`per_address`,
    /// `writes_per_token`): requests answered `429 rate_limited`.
    pub const HTTP_RATE_LIMITED_TOTAL: &str = "tether_http_rate_limited_total";
    /// `tether_audit_suppressed_total`, counter: join-denial audit records held back by
    /// the ledger's rate limit (the next one written carries `held_back_before`).
    pub const AUDIT_SUPPRESSED_TOTAL: &str = "tether_audit_suppressed_total";
    /// `tether_signal_too_slow_total`, counter: connections closed because they left too
    /// many frames unread (close 4006) or a write stalled.
    pub const SIGNAL_TOO_SLOW_TOTAL: &str = "tether_signal_too_slow_total";
    /// `tether_signal_refused_total`, counter by `reason`: upgrades refused for want of a
    /// slot (`full`, `unauthenticated`).
    pub const SIGNAL_REFUSED_TOTAL: &str = "tether_signal_refused_total";
    /// `tether_signal_rooms`, gauge: session rooms with a member.
    pub const SIGNAL_ROOMS: &str = "tether_signal_rooms";
    /// `tether_signal_room_members`, gauge: members of those rooms.
    pub const SIGNAL_ROOM_MEMBERS: &str = "tether_signal_room_members";
    /// `tether_signal_tasks`, gauge: per-connection tasks.
    pub const SIGNAL_TASKS: &str = "tether_signal_tasks";
    /// `tether_signal_timers`, gauge: armed per-connection timers.
    pub const SIGNAL_TIMERS: &str = "tether_signal_timers";
    /// `tether_signal_rate_limited_total`, counter: frames over the rate limit.
    pub const SIGNAL_RATE_LIMITED_TOTAL: &str = "tether_signal_rate_limited_total";
    /// `tether_signal_token_expired_total`, counter: connections closed at their token's expiry.
    pub const SIGNAL_TOKEN_EXPIRED_TOTAL: &str = "tether_signal_token_expired_total";
    /// `tether_signal_credential_revoked_total`, counter: connections closed because their
    /// token id or subject was revoked.
    pub const SIGNAL_CREDENTIAL_REVOKED_TOTAL: &str = "tether_signal_credential_revoked_total";
    /// `tether_joins_total`, counter by `result` (admitted, denied).
    pub const JOINS_TOTAL: &str = "tether_joins_total";
    /// `tether_join_denial_seconds`, histogram: the local deny check (S1).
    pub const JOIN_DENIAL_SECONDS: &str = "tether_join_denial_seconds";
    /// `tether_relay_seconds`, histogram by `path` (local, from_peer_node): frame reached this node → written.
    pub const RELAY_SECONDS: &str = "tether_relay_seconds";
    /// `tether_teardown_seconds`, histogram: one session's teardown on this node.
    pub const TEARDOWN_SECONDS: &str = "tether_teardown_seconds";
    /// `tether_lease_rounds_total`, counter by `result` (renewed, no_quorum): one quorum
    /// check answering a batch of robots' lease requests.
    pub const LEASE_ROUNDS_TOTAL: &str = "tether_lease_rounds_total";
    /// `tether_leases_granted_total`, counter: leases sent to robots.
    pub const LEASES_GRANTED_TOTAL: &str = "tether_leases_granted_total";

    /// `tether_revocation_commit_seconds`, histogram: POST /v1/revocations → committed.
    pub const REVOCATION_COMMIT_SECONDS: &str = "tether_revocation_commit_seconds";
    /// `tether_revocations_total`, counter by `kind`: new revocations.
    pub const REVOCATIONS_TOTAL: &str = "tether_revocations_total";
    /// `tether_revocations_stored`, gauge by `kind`: live revocations.
    pub const REVOCATIONS_STORED: &str = "tether_revocations_stored";
    /// `tether_raft_term`, gauge.
    pub const RAFT_TERM: &str = "tether_raft_term";
    /// `tether_raft_leader`, gauge: the known leader (0: none).
    pub const RAFT_LEADER: &str = "tether_raft_leader";
    /// `tether_raft_is_leader`, gauge: 1 on the leader.
    pub const RAFT_IS_LEADER: &str = "tether_raft_is_leader";
    /// `tether_raft_last_log_index`, gauge.
    pub const RAFT_LAST_LOG_INDEX: &str = "tether_raft_last_log_index";
    /// `tether_raft_applied_index`, gauge.
    pub const RAFT_APPLIED_INDEX: &str = "tether_raft_applied_index";
    /// `tether_runtime_alive_tasks`, gauge: tokio tasks alive.
    pub const RUNTIME_ALIVE_TASKS: &str = "tether_runtime_alive_tasks";
}

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
                    0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// Installs the `tracing` subscriber for a binary; `RUST_LOG` overrides the default level.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Copies Raft and store state into gauges.
pub fn update_gauges(raft: &RaftNode) {
    let m = raft.status();
    metrics::gauge!(names::RAFT_TERM).set(m.term as f64);
    metrics::gauge!(names::RAFT_LEADER).set(m.leader.unwrap_or(0) as f64);
    metrics::gauge!(names::RAFT_IS_LEADER).set(f64::from(u8::from(m.is_leader())));
    metrics::gauge!(names::RAFT_LAST_LOG_INDEX).set(m.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!(names::RAFT_APPLIED_INDEX).set(m.applied_index.unwrap_or(0) as f64);
    let view = raft.view().read();
    for kind in RevocationKind::ALL {
        metrics::gauge!(names::REVOCATIONS_STORED, "kind" => kind.as_str())
            .set(view.count(kind) as f64);
    }
}
