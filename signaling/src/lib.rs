//! Tether's signaling core, without I/O: the WebSocket frame schema and its validation, the
//! room logic (who is in which session, where their peer is), and rate limits.
//!
//! **`signaling` knows nothing about Raft, HTTP or sockets**: the node feeds it frames and
//! an explicit `now`, and acts on the decisions it returns.

pub mod protocol;
pub mod rate;
pub mod rooms;
