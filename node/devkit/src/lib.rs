//! Tether's development kit: what `tether dev`, the end-to-end tests, the bench harness and
//! the chaos suite share to run real node processes on one machine.
//!
//! Layering: above `tether-node` and `tether-api`; nothing in the gateway depends on it.

pub mod cluster;
pub mod fixtures;
mod fs;
pub mod metrics;
pub mod netfault;
pub mod pki;
pub mod process;
pub mod wait;

pub use cluster::{free_addrs, generate, ClusterFile, ClusterFileNode};
pub use fs::{config_path, save_config};
pub use netfault::{drop_address, drop_ports, Isolation};
pub use pki::Secrets;
pub use process::{agent_command, outbound_ip, tether_bin, ChildProcess, NodeProcess};
