//! The router's condition waits: each watches the nodes' openraft metrics and returns as
//! soon as the condition holds, or fails at its timeout with what the nodes looked like.

use super::{Router, RouterError};
use openraft::{RaftMetrics, ServerState};
use std::collections::BTreeMap;
use std::time::Duration;
use tether_store::{NodeId, NodeInfo};
use tokio::sync::watch;
use tokio::time::Instant;

type Metrics = RaftMetrics<NodeId, NodeInfo>;

/// One line per node: who it thinks leads, its state, term and applied index.
fn summary(seen: &BTreeMap<NodeId, Metrics>) -> String {
    seen.iter()
        .map(|(id, m)| {
            format!(
                "{id}: {:?} term {} leader {:?} log {:?} applied {:?} snapshot {:?} purged {:?}",
                m.state,
                m.current_term,
                m.current_leader,
                m.last_log_index,
                m.last_applied.map(|l| l.index),
                m.snapshot.map(|l| l.index),
                m.purged.map(|l| l.index),
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The leader every node in `seen` agrees on, if it is one of them and leads.
fn agreed_leader(seen: &BTreeMap<NodeId, Metrics>) -> Option<NodeId> {
    let leader = seen.values().next()?.current_leader?;
    let agreed = seen.values().all(|m| m.current_leader == Some(leader));
    let leads = seen
        .get(&leader)
        .is_some_and(|m| m.state == ServerState::Leader);
    (agreed && leads).then_some(leader)
}

impl Router {
    /// Waits until `cond`, given the metrics of every node in `ids`, returns `Some`.
    pub async fn wait_until<T>(
        &self,
        ids: &[NodeId],
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&BTreeMap<NodeId, Metrics>) -> Option<T>,
    ) -> Result<T, RouterError> {
        let deadline = Instant::now() + timeout;
        let mut watches: Vec<(NodeId, watch::Receiver<Metrics>)> = ids
            .iter()
            .map(|&id| Ok((id, self.raft(id)?.metrics())))
            .collect::<Result<_, RouterError>>()?;
        loop {
            let seen: BTreeMap<NodeId, Metrics> = watches
                .iter_mut()
                .map(|(id, rx)| (*id, rx.borrow_and_update().clone()))
                .collect();
            if let Some(value) = cond(&seen) {
                return Ok(value);
            }
            let timed_out = || RouterError::Timeout {
                what: what.to_owned(),
                timeout,
                seen: summary(&seen),
            };
            if watches.is_empty() {
                return Err(timed_out());
            }
            let changed = futures::future::select_all(
                watches
                    .iter_mut()
                    .map(|(_, rx)| Box::pin(async move { rx.changed().await })),
            );
            let stopped = match tokio::time::timeout_at(deadline, changed).await {
                Err(_) => return Err(timed_out()),
                Ok((Err(_), index, _)) => Some(index),
                Ok(_) => None,
            };
            if let Some(index) = stopped {
                // That node stopped while we waited.
                return Err(RouterError::NotRunning(watches[index].0));
            }
        }
    }

    /// Waits until one node `id` satisfies `cond` and returns its metrics then.
    pub async fn wait_for(
        &self,
        id: NodeId,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&Metrics) -> bool,
    ) -> Result<Metrics, RouterError> {
        self.wait_until(&[id], timeout, what, |seen| {
            seen.get(&id).filter(|m| cond(m)).cloned()
        })
        .await
    }

    /// Waits until every running node agrees on one leader, which is running and leads.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, RouterError> {
        let ids = self.running_ids();
        self.wait_for_leader_among(&ids, timeout).await
    }

    /// Waits until the nodes in `ids` agree on a leader among them that leads. With `ids`
    /// the majority side of a partition, this is the new leader: the cut-off old one is not
    /// in `ids`, even while it still believes it leads.
    pub async fn wait_for_leader_among(
        &self,
        ids: &[NodeId],
        timeout: Duration,
    ) -> Result<NodeId, RouterError> {
        let what = format!("a leader agreed on by {ids:?}");
        self.wait_until(ids, timeout, &what, agreed_leader).await
    }

    /// Waits until node `id` knows some leader (maybe itself), and returns it.
    pub async fn wait_known_leader(
        &self,
        id: NodeId,
        timeout: Duration,
    ) -> Result<NodeId, RouterError> {
        let m = self
            .wait_for(id, timeout, "a known leader", |m| {
                m.current_leader.is_some()
            })
            .await?;
        m.current_leader.ok_or(RouterError::NotRunning(id))
    }

    /// Waits until node `id` knows a leader other than a killed node, and returns it.
    pub async fn wait_running_leader(
        &self,
        id: NodeId,
        timeout: Duration,
    ) -> Result<NodeId, RouterError> {
        let hub = self.hub.clone();
        let m = self
            .wait_for(id, timeout, "a running leader", |m| {
                m.current_leader.is_some_and(|l| hub.running(l).is_some())
            })
            .await?;
        m.current_leader.ok_or(RouterError::NotRunning(id))
    }

    /// Waits until node `id` has applied the log up to `index`.
    pub async fn wait_applied(
        &self,
        id: NodeId,
        index: u64,
        timeout: Duration,
    ) -> Result<Metrics, RouterError> {
        let what = format!("node {id} to apply index {index}");
        self.wait_for(id, timeout, &what, |m| {
            m.last_applied.is_some_and(|l| l.index >= index)
        })
        .await
    }

    /// Waits until every node in `ids` has applied the log up to `index`.
    pub async fn wait_all_applied(
        &self,
        ids: &[NodeId],
        index: u64,
        timeout: Duration,
    ) -> Result<(), RouterError> {
        let what = format!("{ids:?} to apply index {index}");
        self.wait_until(ids, timeout, &what, |seen| {
            seen.values()
                .all(|m| m.last_applied.is_some_and(|l| l.index >= index))
                .then_some(())
        })
        .await
    }
}
