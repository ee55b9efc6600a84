//! The server side of the node-to-node transport: accepts QUIC connections from peers that
//! present a cluster certificate and answers each stream's request.

use crate::rpc::{read_frame, write_frame, Reply, Request};
use crate::shared::Shared;
use std::sync::Arc;

/// Accepts connections until the endpoint closes.
pub(crate) async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
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
            loop {
                let (mut send, mut recv) = match conn.accept_bi().await {
                    Ok(streams) => streams,
                    Err(_) => break,
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let request: Request = match read_frame(&mut recv).await {
                        Ok(request) => request,
                        Err(e) => {
                            tracing::debug!(error = %e, "bad node request");
                            return;
                        }
                    };
                    let reply = handle(&shared, request).await;
                    if let Err(e) = write_frame(&mut send, &reply).await {
                        tracing::debug!(error = %e, "could not send node reply");
                    }
                });
            }
        });
    }
}

async fn handle(shared: &Shared, request: Request) -> Reply {
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
        Request::Signal { from, payload } => {
            let handler = shared.signal_handler.get().cloned();
            match handler {
                Some(handler) => Reply::Signal(handler(from, payload).await),
                None => Reply::Signal(Vec::new()),
            }
        }
    }
}
