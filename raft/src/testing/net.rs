//! The router's in-memory transport: openraft's `RaftNetwork` delivering each RPC by a direct
//! call into the target's `Raft`, through a table of cut and delayed links.
//!
//! A link is directed. A request from `a` to `b` travels on `a → b` and its reply on `b → a`:
//! a cut request link loses the request (the sender sees `Unreachable`, as for a dead peer); a
//! cut reply link loses only the reply (the target has acted on the request, the sender sees
//! a network error). Each leg waits out its link's delay first and is checked after it, so a
//! cut made while a message is under way still loses it. Every request and reply is encoded
//! and decoded with Tether's wire codec on the way, as the QUIC transport does.

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tether_store::codec::{decode, encode};
use tether_store::{NodeId, NodeInfo};
use tether_store_rocks::{Raft, TypeConfig};

/// How many RPCs of each kind a node has received (requests delivered into its `Raft`), and
/// how many sent to it were lost on a cut link or because it was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RpcStats {
    /// AppendEntries requests delivered (heartbeats included).
    pub append_entries: u64,
    /// RequestVote requests delivered.
    pub vote: u64,
    /// InstallSnapshot chunks delivered.
    pub install_snapshot: u64,
    /// Requests to this node that were lost: cut link, or the node down.
    pub lost: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// Cut and delayed links.
#[derive(Default)]
struct Links {
    cut: BTreeSet<(NodeId, NodeId)>,
    delay: BTreeMap<(NodeId, NodeId), Duration>,
}

/// What the router and every node's network share: the running nodes and the links.
#[derive(Default)]
pub(super) struct Hub {
    running: Mutex<BTreeMap<NodeId, Raft>>,
    links: Mutex<Links>,
    stats: Mutex<BTreeMap<NodeId, RpcStats>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Makes `raft` the node RPCs to `id` reach.
    pub(super) fn set_running(&self, id: NodeId, raft: Raft) {
        lock(&self.running).insert(id, raft);
    }

    /// Takes node `id` off the network; RPCs to it are lost from now on.
    pub(super) fn take_running(&self, id: NodeId) -> Option<Raft> {
        lock(&self.running).remove(&id)
    }

    /// The running node `id`.
    pub(super) fn running(&self, id: NodeId) -> Option<Raft> {
        lock(&self.running).get(&id).cloned()
    }

    /// Ids of the running nodes.
    pub(super) fn running_ids(&self) -> Vec<NodeId> {
        lock(&self.running).keys().copied().collect()
    }

    /// Cuts (`cut == true`) or restores the directed link `from → to`.
    pub(super) fn set_cut(&self, from: NodeId, to: NodeId, cut: bool) {
        let mut links = lock(&self.links);
        if cut {
            links.cut.insert((from, to));
        } else {
            links.cut.remove(&(from, to));
        }
    }

    /// Delays every message on `from → to` by `delay` (zero removes the delay).
    pub(super) fn set_delay(&self, from: NodeId, to: NodeId, delay: Duration) {
        let mut links = lock(&self.links);
        if delay.is_zero() {
            links.delay.remove(&(from, to));
        } else {
            links.delay.insert((from, to), delay);
        }
    }

    /// Restores every link and removes every delay.
    pub(super) fn heal(&self) {
        let mut links = lock(&self.links);
        links.cut.clear();
        links.delay.clear();
    }

    /// Whether `from → to` is cut now.
    pub(super) fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        lock(&self.links).cut.contains(&(from, to))
    }

    fn delay(&self, from: NodeId, to: NodeId) -> Option<Duration> {
        lock(&self.links).delay.get(&(from, to)).copied()
    }

    /// What node `id` has received so far.
    pub(super) fn stats(&self, id: NodeId) -> RpcStats {
        lock(&self.stats).get(&id).copied().unwrap_or_default()
    }

    fn count(&self, id: NodeId, kind: Option<Kind>) {
        let mut stats = lock(&self.stats);
        let s = stats.entry(id).or_default();
        match kind {
            Some(Kind::AppendEntries) => s.append_entries += 1,
            Some(Kind::Vote) => s.vote += 1,
            Some(Kind::InstallSnapshot) => s.install_snapshot += 1,
            None => s.lost += 1,
        }
    }
}

/// Why a message did not arrive.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("link {0} -> {1} is cut")]
    Cut(NodeId, NodeId),
    #[error("node {0} is down")]
    Down(NodeId),
    #[error("reply from {0} to {1} lost: link {0} -> {1} is cut")]
    Reply(NodeId, NodeId),
    #[error("codec: {0}")]
    Codec(String),
}

/// openraft's network factory for node `from`.
pub(super) struct Factory {
    pub(super) hub: Arc<Hub>,
    pub(super) from: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Link;

    async fn new_client(&mut self, target: NodeId, _node: &NodeInfo) -> Link {
        Link {
            hub: self.hub.clone(),
            from: self.from,
            target,
        }
    }
}

/// openraft's client for one peer: the link `from → target` and back.
pub(super) struct Link {
    hub: Arc<Hub>,
    from: NodeId,
    target: NodeId,
}

/// Passes a value through the wire codec, as the QUIC transport would.
fn wire<T: Serialize + DeserializeOwned>(value: &T) -> Result<T, Lost> {
    let bytes = encode(value).map_err(|e| Lost::Codec(e.to_string()))?;
    decode(&bytes).map_err(|e| Lost::Codec(e.to_string()))
}

fn network_error<E: std::error::Error>(lost: &Lost) -> RPCError<NodeId, NodeInfo, E> {
    match lost {
        Lost::Cut(..) | Lost::Down(_) => RPCError::Unreachable(Unreachable::new(lost)),
        Lost::Reply(..) | Lost::Codec(_) => RPCError::Network(NetworkError::new(lost)),
    }
}

impl Link {
    /// Carries `request` to the target, calls `handle` there and carries the reply back.
    async fn deliver<Q, P, E, F, Fut>(
        &self,
        kind: Kind,
        request: Q,
        handle: F,
    ) -> Result<P, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Q: Serialize + DeserializeOwned,
        P: Serialize + DeserializeOwned,
        E: std::error::Error,
        F: FnOnce(Raft, Q) -> Fut,
        Fut: Future<Output = Result<P, RaftError<NodeId, E>>>,
    {
        let (from, to) = (self.from, self.target);
        if let Some(delay) = self.hub.delay(from, to) {
            tokio::time::sleep(delay).await;
        }
        let raft = if self.hub.is_cut(from, to) {
            Err(Lost::Cut(from, to))
        } else {
            self.hub.running(to).ok_or(Lost::Down(to))
        };
        let raft = match raft {
            Ok(raft) => raft,
            Err(lost) => {
                self.hub.count(to, None);
                return Err(network_error(&lost));
            }
        };
        let request = wire(&request).map_err(|e| network_error(&e))?;
        self.hub.count(to, Some(kind));
        let reply = match handle(raft, request).await {
            Ok(reply) => wire(&reply).map_err(|e| network_error(&e))?,
            // The target is shutting down: as good as unreachable.
            Err(RaftError::Fatal(_)) => return Err(network_error(&Lost::Down(to))),
            Err(e) => return Err(RPCError::RemoteError(RemoteError::new(to, e))),
        };
        if let Some(delay) = self.hub.delay(to, from) {
            tokio::time::sleep(delay).await;
        }
        if self.hub.is_cut(to, from) {
            return Err(network_error(&Lost::Reply(to, from)));
        }
        Ok(reply)
    }
}

impl RaftNetwork<TypeConfig> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.deliver(Kind::AppendEntries, rpc, |raft, rpc| async move {
            raft.append_entries(rpc).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.deliver(Kind::InstallSnapshot, rpc, |raft, rpc| async move {
            raft.install_snapshot(rpc).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.deliver(
            Kind::Vote,
            rpc,
            |raft, rpc| async move { raft.vote(rpc).await },
        )
        .await
    }

    fn backoff(&self) -> Backoff {
        // After `Unreachable`: retry soon, so a healed link is used again within a few ms.
        Backoff::new(std::iter::repeat(Duration::from_millis(10)))
    }
}
