//! The chaos laboratory: network namespaces on a bridge ([`netns`]) and a cluster of real
//! `tether` node processes placed in them ([`cluster`]), so that faults are kernel-level
//! and per host. The history, the checkers and the report live in `tether-chaos` (pure).

pub mod cluster;
mod nemesis;
pub mod netns;
mod recorder;
pub mod relay;
pub mod robots;
pub mod run;
pub mod scenario;
mod sessions;
