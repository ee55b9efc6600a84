//! Tether's replicated state: the revocation and session model and its pure state machine.
//!
//! Layering: no I/O, no clock, no openraft, no RocksDB. `tether-store-rocks` (in `rocks/`)
//! puts this state machine behind openraft's storage traits on RocksDB; everything here
//! builds and tests in seconds without it.

pub mod codec;
pub mod model;
mod requests;
mod sessions;
pub mod state;

pub use model::{
    AppliedRequest, Command, NodeId, NodeInfo, Response, Revocation, RevocationKind, Session,
    SessionState, UnixMillis, REQUEST_RETENTION_MS,
};
pub use state::{session_events, Mutation, ReplicatedState, SessionEvent, StateView};
