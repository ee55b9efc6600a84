//! The core a Raft member's local API ([`crate::RaftNode`]) and its QUIC server
//! ([`crate::server`]) both act on: the openraft handle, the leader's batcher and the
//! gateway's signal handler.

use crate::rpc::ForwardError;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, LogId};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tether_store::{Command, NodeId, NodeInfo, Response};
use tether_store_rocks::Raft;

/// Handles a signaling message from another node and returns the answer.
pub type SignalHandler =
    Arc<dyn Fn(NodeId, Vec<u8>) -> futures::future::BoxFuture<'static, Vec<u8>> + Send + Sync>;

/// What both the local API (`RaftNode`) and the QUIC server act on.
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) batcher: crate::batch::Batcher,
    pub(crate) signal_handler: std::sync::OnceLock<SignalHandler>,
}

impl Shared {
    pub(crate) async fn write_as_leader(&self, command: Command) -> Result<Response, ForwardError> {
        self.batcher.write(command).await
    }

    pub(crate) async fn read_index_as_leader(&self) -> Result<Option<LogId<NodeId>>, ForwardError> {
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ForwardError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(ForwardError::Unavailable(e.to_string())),
        }
    }

    pub(crate) async fn add_member_as_leader(
        &self,
        id: NodeId,
        node: NodeInfo,
        timeout: Duration,
    ) -> Result<(), ForwardError> {
        let added = self
            .raft
            .add_learner(id, node, false)
            .await
            .map_err(client_write_error)?;
        // openraft's own "blocking" add counts a learner within `replication_lag_threshold`
        // entries as caught up, even one never reached; wait for a real acknowledgement of
        // the entry that added it.
        let target = added.log_id.index;
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|matched| matched.index >= target)
                },
                "new learner caught up",
            )
            .await
            .map_err(|_| {
                ForwardError::Unavailable(format!(
                    "node {id} did not catch up within {timeout:?}; it stays a learner until removed"
                ))
            })?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(client_write_error)?;
        Ok(())
    }

    pub(crate) async fn remove_member_as_leader(&self, id: NodeId) -> Result<(), ForwardError> {
        let is_voter = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(client_write_error)?;
        Ok(())
    }
}

pub(crate) fn client_write_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ForwardError::NotLeader {
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ForwardError::Invalid(e.to_string())
        }
        RaftError::Fatal(e) => ForwardError::Unavailable(e.to_string()),
    }
}
