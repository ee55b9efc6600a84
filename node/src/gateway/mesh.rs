//! The gateway's messages to and from other nodes' gateways ([`tether_signaling::mesh`]),
//! carried by the Raft layer's shared QUIC connection (`RaftNode::signal`).

use super::{Hub, Remote};
use std::time::{Duration, Instant};
use tether_signaling::mesh::{self, NodeSignal, SignalAnswer};
use tether_signaling::rooms::NodeId;

/// How long a message to another node may take.
const RELAY_TIMEOUT: Duration = Duration::from_millis(500);

impl Hub {
    /// One message to `node`; its answer, or `None` when it could not be had.
    pub(super) async fn signal(&self, node: NodeId, message: &NodeSignal) -> Option<SignalAnswer> {
        let answer = self
            .raft
            .signal(node, mesh::encode(message), RELAY_TIMEOUT)
            .await
            .ok()?;
        mesh::decode_answer(&answer).ok()
    }

    /// One message to every other member, at once; the answers of those that answered.
    pub(super) async fn broadcast(&self, message: &NodeSignal) -> Vec<(NodeId, SignalAnswer)> {
        let calls = self
            .raft
            .other_members()
            .into_iter()
            .map(|node| async move { self.signal(node, message).await.map(|a| (node, a)) });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Sends what actions asked for, in order; answers are not needed.
    pub(super) async fn send_remote(&self, remote: Vec<Remote>) {
        for message in remote {
            match message {
                Remote::To(node, signal) => {
                    let _ = self.signal(node, &signal).await;
                }
                Remote::Everyone(signal) => {
                    let _ = self.broadcast(&signal).await;
                }
            }
        }
    }

    /// A message from node `from`'s gateway: decoded, handed to the core, answered.
    pub(super) fn on_node_signal(&self, from: NodeId, payload: &[u8]) -> Vec<u8> {
        let arrived = Instant::now();
        let answer = match mesh::decode(payload) {
            Ok(signal) => {
                let mut shell = self.shell();
                let (answer, actions) = shell.core.node_signal(from, signal);
                let remote = self.perform(&shell, actions, arrived);
                debug_assert!(remote.is_empty(), "a node message never asks for another");
                answer
            }
            Err(e) => {
                tracing::warn!(from, error = %e, "bad signaling message from a node");
                SignalAnswer::default()
            }
        };
        mesh::encode_answer(&answer)
    }
}
