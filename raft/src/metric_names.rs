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
/// `tether_raft_read_barriers_total`, counter: read barriers asked of this node (joins,
/// lease batches, consistent reads, forwarded writes).
pub const RAFT_READ_BARRIERS_TOTAL: &str = "tether_raft_read_barriers_total";
/// `tether_raft_read_index_rounds_total`, counter: read-index rounds those barriers cost
/// (concurrent barriers share one).
pub const RAFT_READ_INDEX_ROUNDS_TOTAL: &str = "tether_raft_read_index_rounds_total";
/// `tether_raft_peer_refusals_total`, counter: node-to-node requests refused because the
/// peer's certificate, membership or command did not allow them.
pub const RAFT_PEER_REFUSALS_TOTAL: &str = "tether_raft_peer_refusals_total";
