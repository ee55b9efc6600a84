//! The server side of the node-to-node transport: accepts QUIC connections from peers that
//! present a cluster certificate (after a retry that proves their address), and answers
//! each stream's request if that peer may send it ([`crate::peer`]).

use crate::peer::authorize;
use crate::rpc::{read_frame, write_frame, Reply, Request};
use crate::shared::Shared;
use rustls::pki_types::CertificateDer;
use std::collections::BTreeSet;
use std::sync::Arc;
use tether_store::NodeId;

/// Accepts connections until the endpoint closes.
pub(crate) async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        // Address validation: a spoofed source never sees the retry token, so it cannot
        // make this node start handshakes (and their crypto) on its behalf.
        if !incoming.remote_address_validated() && incoming.may_retry() {
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    // A peer without a cluster certificate ends here.
                    tracing::warn!(error = %e, "refused node connection");
                    metrics::counter!(crate::metric_names::RAFT_HANDSHAKE_FAILURES_TOTAL)
                        .increment(1);
                    return;
                }
            };
            let Some(cert) = peer_certificate(&conn) else {
                conn.close(1u32.into(), b"no certificate");
                return;
            };
            let cert = Arc::new(cert);
            loop {
                let (mut send, mut recv) = match conn.accept_bi().await {
                    Ok(streams) => streams,
                    Err(_) => break,
                };
                let (shared, cert) = (shared.clone(), cert.clone());
                let remote = conn.remote_address();
                tokio::spawn(async move {
                    let request: Request = match read_frame(&mut recv).await {
                        Ok(request) => request,
                        Err(e) => {
                            tracing::debug!(error = %e, "bad node request");
                            return;
                        }
                    };
                    let reply = match authorize(&cert, &members(&shared), &request) {
                        Ok(peer) => handle(&shared, peer, request).await,
                        Err(refusal) => {
                            tracing::warn!(%remote, %refusal, "refused a peer's request");
                            metrics::counter!(crate::metric_names::RAFT_PEER_REFUSALS_TOTAL)
                                .increment(1);
                            Reply::Refused(refusal.to_string())
                        }
                    };
                    if let Err(e) = write_frame(&mut send, &reply).await {
                        tracing::debug!(error = %e, "could not send node reply");
                    }
                });
            }
        });
    }
}

/// The leaf certificate the peer presented (the handshake verified its chain).
fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let chain = *identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.into_iter().next()
}

/// The current members, voters and learners, as this node knows them.
fn members(shared: &Shared) -> BTreeSet<NodeId> {
    let metrics = shared.raft.metrics();
    let metrics = metrics.borrow();
    let membership = metrics.membership_config.membership();
    membership.nodes().map(|(id, _)| *id).collect()
}

/// Acts on a request from `peer`, which [`authorize`] has checked may send it.
async fn handle(shared: &Shared, peer: NodeId, request: Request) -> Reply {
    let raft = &shared.raft;
    match request {
        Request::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
        Request::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
        Request::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
        Request::Write(command) => Reply::Write(shared.write_as_leader(command).await),
        // Polled in order, so the writes reach the leader's batcher in order.
        Request::WriteBatch(commands) => Reply::WriteBatch(
            futures::future::join_all(commands.into_iter().map(|c| shared.write_as_leader(c)))
                .await,
        ),
        Request::ReadIndex => Reply::ReadIndex(shared.read_index_as_leader().await),
        Request::AddMember {
            id,
            node,
            timeout_ms,
        } => Reply::Membership(
            shared
                .add_member_as_leader(id, node, std::time::Duration::from_millis(timeout_ms))
                .await,
        ),
        Request::RemoveMember { id } => Reply::Membership(shared.remove_member_as_leader(id).await),
        Request::Signal { payload, .. } => {
            let handler = shared.signal_handler.get().cloned();
            match handler {
                Some(handler) => Reply::Signal(handler(peer, payload).await),
                None => Reply::Signal(Vec::new()),
            }
        }
    }
}
