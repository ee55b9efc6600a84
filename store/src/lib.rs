//! Tether's replicated state: the revocation model, its pure state machine, and the openraft
//! log storage and state machine on RocksDB.
//!
//! Layering: this crate knows nothing about the network or HTTP. It is the only crate that
//! depends on `rocksdb`.

pub mod codec;
pub mod model;
pub mod rocks;
pub mod state;

pub use model::{
    Command, NodeId, NodeInfo, Response, Revocation, RevocationKind, Session, SessionState,
};
pub use rocks::{open, LogStore, SessionEvent, StateMachineStore, StoreError};
pub use state::{ReplicatedState, StateView};

use std::io::Cursor;

openraft::declare_raft_types!(
    /// openraft's type configuration for Tether.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The openraft handle specialised to Tether.
pub type Raft = openraft::Raft<TypeConfig>;
