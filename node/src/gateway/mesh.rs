//! The gateway's messages to and from other nodes' gateways ([`tether_signaling::mesh`]),
//! carried by the Raft layer's shared QUIC connection (`RaftNode::signal`).

use super::{Hub, Remote};
use std::time::{Duration, Instant};
use tether_signaling::mesh::{self, NodeSignal, SignalAnswer};
use tether_signaling::rooms::NodeId;

/// How long a message to another node may take.
const RELAY_TIMEOUT: Duration = Duration::from_millis(500);

/// Relays in a row to one node that got no answer before that node counts as gone: its
/// members are dropped from the rooms here (their peers hear `peer_left`), so that later
/// frames fail at once instead of each waiting out [`RELAY_TIMEOUT`]. A live node's members
/// come back with their next join (a robot that fails over rejoins on another node).
const RELAY_FAILURES_BEFORE_GONE: u32 = 3;

/// How often the rooms are checked against the cluster's membership.
const MEMBERSHIP_CHECK: Duration = Duration::from_secs(1);

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

    /// Counts a forwarded relay's outcome; the node counts as gone after
    /// [`RELAY_FAILURES_BEFORE_GONE`] failures in a row.
    pub(super) async fn relay_outcome(&self, node: NodeId, delivered_or_answered: bool) {
        let gone = {
            let mut failures = self
                .relay_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if delivered_or_answered {
                failures.remove(&node);
                false
            } else {
                let n = failures.entry(node).or_default();
                *n += 1;
                if *n >= RELAY_FAILURES_BEFORE_GONE {
                    failures.remove(&node);
                    true
                } else {
                    false
                }
            }
        };
        if gone {
            tracing::warn!(
                node,
                "relays to a node keep failing: dropping its members from the rooms here"
            );
            self.act(Instant::now(), |core| core.node_gone(node)).await;
        }
    }

    /// Drops the members of nodes that left the cluster from the rooms, every
    /// [`MEMBERSHIP_CHECK`].
    pub(super) async fn membership_loop(
        self: std::sync::Arc<Self>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(MEMBERSHIP_CHECK) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let members = self.raft.other_members();
            self.act(Instant::now(), |core| core.members_now(&members))
                .await;
        }
    }

    /// A message from node `from`'s gateway: decoded, handed to the core, answered.
    pub(super) fn on_node_signal(&self, from: NodeId, payload: &[u8]) -> Vec<u8> {
        let arrived = Instant::now();
        let answer = match mesh::decode(payload) {
            // A late presence for a session this node knows has ended must not recreate its
            // room (the core also remembers recent teardowns; this covers older ones).
            Ok(NodeSignal::Presence {
                session_id,
                joined: true,
                ..
            }) if self
                .raft
                .view()
                .read()
                .session(&session_id)
                .is_some_and(|s| s.state != tether_store::SessionState::Active) =>
            {
                SignalAnswer::default()
            }
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
