//! Tether's client-facing contracts: the HTTP wire types and error codes, and the one HTTP
//! client and the one signaling client.
//!
//! The clients are behind the `client` feature, so the server links no HTTP or WebSocket
//! client. Layering: the server (`tether-node`) and every client (agent, CLI, tests, bench) depend
//! on this crate; it depends on no server code (no axum), so a client never links the
//! gateway to get a DTO.

#[cfg(feature = "client")]
pub mod client;
pub mod codes;
#[cfg(feature = "client")]
pub mod signal;
pub mod time;
#[cfg(feature = "client")]
pub mod tls;
pub mod types;

#[cfg(feature = "client")]
pub use client::{Client, ClientError, Target};
pub use codes::{ErrorBody, ErrorCode};
