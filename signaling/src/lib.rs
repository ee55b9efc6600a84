//! Tether's signaling core, without I/O: the WebSocket frame schema and its validation
//! ([`protocol`]), the stable codes ([`codes`]), the room logic ([`rooms`]), rate limits
//! ([`rate`]), the lease schedule ([`lease`]), the node-to-node messages ([`mesh`]) and the
//! hub that ties them together ([`hub`]): every decision the gateway makes about a
//! connection, as events in and actions out.
//!
//! **`signaling` knows nothing about Raft, HTTP or sockets**: the node feeds it frames,
//! verified identities, replicated-state lookups and an explicit `now`, and performs the
//! actions it returns. That keeps the gateway a thin I/O shell, and lets a whole cluster of
//! hubs be simulated deterministically in a unit test (`tests/simulation.rs`).

#![warn(missing_docs)]

pub mod codes;
pub mod hub;
pub mod lease;
pub mod mesh;
pub mod protocol;
pub mod rate;
pub mod rooms;
