//! The client side of the node-to-node transport: one QUIC connection per peer, a stream per
//! RPC, and openraft's `RaftNetwork` on top.

use crate::rpc::{read_frame, write_frame, Reply, Request};
use crate::tls::{node_name, SERVER_NAME};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_store::{NodeId, NodeInfo};
use tether_store_rocks::TypeConfig;

/// How long a connection attempt may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No connection could be made.
    #[error("peer {0} unreachable: {1}")]
    Unreachable(NodeId, String),
    /// The connection broke or the reply did not decode.
    #[error("peer {0}: {1}")]
    Network(NodeId, String),
    /// No reply in time.
    #[error("peer {0} timed out")]
    Timeout(NodeId),
    /// The peer refused to act for this node ([`crate::peer::Refusal`]).
    #[error("peer {0} refused: {1}")]
    Refused(NodeId, String),
}

struct PeerSlot {
    addr: String,
    conn: tokio::sync::Mutex<Option<quinn::Connection>>,
}

/// Connections to every peer, shared by Raft replication, forwarding and (later) signaling.
pub struct Peers {
    id: NodeId,
    endpoint: quinn::Endpoint,
    slots: Mutex<HashMap<NodeId, Arc<PeerSlot>>>,
}

impl Peers {
    /// Uses `endpoint` (with its default client config set) to reach peers.
    pub fn new(id: NodeId, endpoint: quinn::Endpoint) -> Self {
        Self {
            id,
            endpoint,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, target: NodeId, addr: &str) -> Arc<PeerSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get(&target) {
            Some(slot) if slot.addr == addr => slot.clone(),
            _ => {
                let slot = Arc::new(PeerSlot {
                    addr: addr.to_owned(),
                    conn: tokio::sync::Mutex::new(None),
                });
                slots.insert(target, slot.clone());
                slot
            }
        }
    }

    async fn connection(&self, target: NodeId, addr: &str) -> Result<quinn::Connection, CallError> {
        let slot = self.slot(target, addr);
        let mut guard = slot.conn.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        let socket: SocketAddr = addr
            .parse()
            .map_err(|e| CallError::Unreachable(target, format!("bad address {addr}: {e}")))?;
        let connecting = self
            .endpoint
            // Node 0 is "any node" (an operator's probe); otherwise the peer must be the
            // node meant, not merely one of the cluster.
            .connect(
                socket,
                &if target == 0 {
                    SERVER_NAME.to_owned()
                } else {
                    node_name(target)
                },
            )
            .map_err(|e| CallError::Unreachable(target, e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| CallError::Unreachable(target, "connect timed out".into()))?
            .map_err(|e| CallError::Unreachable(target, e.to_string()))?;
        tracing::debug!(from = self.id, to = target, %addr, "connected to peer");
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the cached connection to `target` if it is still `stale` (in-flight calls on
    /// it finish or time out on their own).
    async fn forget(&self, target: NodeId, stale: &quinn::Connection) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&target)
            .cloned();
        if let Some(slot) = slot {
            let mut guard = slot.conn.lock().await;
            if guard
                .as_ref()
                .is_some_and(|c| c.stable_id() == stale.stable_id())
            {
                *guard = None;
            }
        }
    }

    /// Sends one request to a peer and waits for its reply.
    pub async fn call(
        &self,
        target: NodeId,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let mut used = None;
        let result = tokio::time::timeout(timeout, async {
            let conn = self.connection(target, addr).await?;
            used = Some(conn.clone());
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| CallError::Network(target, e.to_string()))?;
            write_frame(&mut send, request)
                .await
                .map_err(|e| CallError::Network(target, e.to_string()))?;
            match read_frame::<Reply>(&mut recv).await {
                Ok(Reply::Refused(why)) => Err(CallError::Refused(target, why)),
                Ok(reply) => Ok(reply),
                Err(e) => Err(CallError::Network(target, e.to_string())),
            }
        })
        .await
        .unwrap_or(Err(CallError::Timeout(target)));
        let broken = matches!(&result, Err(e) if !matches!(e, CallError::Refused(..)));
        if let (true, Some(conn)) = (broken, used) {
            // A connection to a peer's previous incarnation (killed and restarted on the same
            // address) never answers, and QUIC would only notice at its idle timeout: make
            // the next call connect afresh.
            self.forget(target, &conn).await;
        }
        if let Err(e) = &result {
            let kind = match e {
                CallError::Unreachable(..) => "unreachable",
                CallError::Network(..) => "network",
                CallError::Timeout(_) => "timeout",
                CallError::Refused(..) => "refused",
            };
            metrics::counter!(crate::metric_names::RAFT_RPC_ERRORS_TOTAL, "kind" => kind)
                .increment(1);
        }
        result
    }
}

/// openraft's network factory over [`Peers`].
#[derive(Clone)]
pub struct NetworkFactory {
    pub(crate) peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerNetwork {
        PeerNetwork {
            peers: self.peers.clone(),
            target,
            addr: node.raft_addr.clone(),
        }
    }
}

/// openraft's view of one peer.
pub struct PeerNetwork {
    peers: Arc<Peers>,
    target: NodeId,
    addr: String,
}

impl PeerNetwork {
    async fn rpc<E: std::error::Error>(
        &self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Reply, RPCError<NodeId, NodeInfo, E>> {
        let ttl = option.hard_ttl();
        self.peers
            .call(self.target, &self.addr, &request, ttl)
            .await
            .map_err(|e| match e {
                CallError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Network(..) | CallError::Refused(..) => {
                    RPCError::Network(NetworkError::new(&e))
                }
                CallError::Timeout(_) => RPCError::Timeout(Timeout {
                    action: openraft::network::RPCTypes::AppendEntries,
                    id: self.peers.id,
                    target: self.target,
                    timeout: ttl,
                }),
            })
    }

    fn remote<E>(&self, e: E) -> RPCError<NodeId, NodeInfo, E>
    where
        E: std::error::Error,
    {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

fn unexpected<E: std::error::Error>(reply: &Reply) -> RPCError<NodeId, NodeInfo, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "unexpected reply {reply:?}"
    ))))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        match self.rpc(Request::AppendEntries(rpc), &option).await? {
            Reply::AppendEntries(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.rpc(Request::InstallSnapshot(rpc), &option).await? {
            Reply::InstallSnapshot(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        match self.rpc(Request::Vote(rpc), &option).await? {
            Reply::Vote(r) => r.map_err(|e| self.remote(e)),
            other => Err(unexpected(&other)),
        }
    }

    fn backoff(&self) -> Backoff {
        // After `Unreachable`: retry soon (a restarted node should rejoin quickly), then back
        // off to half a second.
        Backoff::new(
            [25u64, 50, 100, 200]
                .into_iter()
                .chain(std::iter::repeat(500))
                .map(Duration::from_millis),
        )
    }
}

/// Connects to `addr` with `identity` and asks for a read index: `Ok` only if the peer
/// accepted the TLS handshake and answered. Used by operators' checks and by the tests that
/// prove a foreign certificate is refused.
pub async fn probe(
    identity: &crate::tls::TlsIdentity,
    addr: &str,
    timeout: Duration,
) -> Result<Reply, CallError> {
    call_as(identity, addr, 0, &Request::ReadIndex, timeout).await
}

/// Connects to `addr` with `identity`, expecting node `target` there (0: any node of the
/// cluster), and sends `request`: what a peer holding that identity could make the node
/// do. The tests of the peer policy ([`crate::peer`]) use it.
pub async fn call_as(
    identity: &crate::tls::TlsIdentity,
    addr: &str,
    target: NodeId,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, CallError> {
    let mut endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|e| CallError::Unreachable(0, e.to_string()))?;
    endpoint.set_default_client_config(
        identity
            .client_config()
            .map_err(|e| CallError::Unreachable(0, e.to_string()))?,
    );
    let peers = Peers::new(0, endpoint.clone());
    let result = peers.call(target, addr, request, timeout).await;
    endpoint.close(0u32.into(), b"probe done");
    result
}
