//! Tether's Raft layer: openraft over QUIC (quinn) with mutual TLS from a cluster CA, write
//! forwarding to the leader, and the linearizable-read barrier behind S2.
//!
//! Layering: depends on `tether-store` for the types and `tether-store-rocks` for storage; knows nothing about HTTP,
//! tokens or signaling. The node-to-node connection it owns is the one later shared by the
//! signaling relay.

mod barrier;
mod batch;
mod forward;
pub mod metric_names;
pub mod network;
pub mod node;
pub mod peer;
mod queue;
pub mod rpc;
mod server;
mod shared;
pub mod status;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use node::{RaftNode, RaftNodeConfig, RaftNodeError, RaftTiming, SignalHandler};
pub use rpc::ForwardError;
pub use status::{MemberStatus, RaftStatus};
pub use tls::{generate_ca, issue_node_cert, CertPair, TlsIdentity};
