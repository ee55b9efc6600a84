//! openraft storage for Tether on RocksDB: the type configuration, the log store and the
//! state machine store around the pure [`tether_store::ReplicatedState`].
//!
//! Layering: the only crate that depends on `rocksdb`; it knows nothing about the network.

pub mod rocks;

pub use rocks::{open, LogStore, StateMachineStore, StoreError};

use std::io::Cursor;
use tether_store::{Command, NodeId, NodeInfo, Response};

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
