//! The names of the metrics the Raft layer records, in one place (the node re-exports
//! them beside its own in `tether_node::telemetry::names`).

/// `tether_raft_batch_size`, histogram: commands per log entry on the leader.
pub const RAFT_BATCH_SIZE: &str = "tether_raft_batch_size";
/// `tether_raft_forward_batch_size`, histogram: writes per forwarding call on a follower.
pub const RAFT_FORWARD_BATCH_SIZE: &str = "tether_raft_forward_batch_size";
/// `tether_raft_handshake_failures_total`, counter: peer TLS handshakes refused.
pub const RAFT_HANDSHAKE_FAILURES_TOTAL: &str = "tether_raft_handshake_failures_total";
/// `tether_raft_rpc_errors_total`, counter: node-to-node calls that failed.
pub const RAFT_RPC_ERRORS_TOTAL: &str = "tether_raft_rpc_errors_total";
