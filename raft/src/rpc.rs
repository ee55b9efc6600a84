//! The node-to-node protocol: one request and one reply per QUIC bidirectional stream,
//! each a single postcard frame ended by finishing the stream.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::LogId;
use serde::{Deserialize, Serialize};
use tether_store::codec::{decode, encode, CodecError};
use tether_store::{Command, NodeId, NodeInfo, Response};
use tether_store_rocks::TypeConfig;

/// Log entries in one append at most (openraft's `max_payload_entries`).
pub const MAX_ENTRIES_PER_APPEND: u64 = 16;
/// Commands in one log entry (the leader's batches) or one forwarding call at most.
pub const MAX_COMMANDS_PER_ENTRY: usize = 512;
/// The largest frame accepted, sized to what Raft sends: an append of
/// [`MAX_ENTRIES_PER_APPEND`] entries of [`MAX_COMMANDS_PER_ENTRY`] commands, each at most
/// the ~2 KiB the HTTP API lets a command grow to (its ids and reason limits; a test in
/// `tether-node` checks the product), is 16 MiB; a snapshot chunk is 3 MiB.
pub const MAX_FRAME: usize = 20 * 1024 * 1024;

/// What one node asks another.
#[derive(Serialize, Deserialize, Debug)]
pub enum Request {
    /// Raft: replicate entries / heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft: request a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write forwarded to the leader.
    Write(Command),
    /// Writes forwarded to the leader together (answered one by one, in order).
    WriteBatch(Vec<Command>),
    /// Ask the leader for a linearizable read index (S2).
    ReadIndex,
    /// Ask the leader to add a voter.
    AddMember {
        /// The new node's id.
        id: NodeId,
        /// Its addresses.
        node: NodeInfo,
        /// How long the leader waits for it to catch up before giving up.
        timeout_ms: u64,
    },
    /// Ask the leader to remove a voter.
    RemoveMember {
        /// The node to remove.
        id: NodeId,
    },
    /// An opaque signaling message for the gateway layer on the receiving node.
    Signal {
        /// The sending node.
        from: NodeId,
        /// The message, encoded by the gateway layer.
        payload: Vec<u8>,
    },
}

/// Why a forwarded request was not done.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not (or no longer) the leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// Who the receiver thinks leads.
        leader: Option<NodeId>,
    },
    /// The leader could not reach a quorum or failed otherwise.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request was refused as invalid.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The answer to a [`Request`], variant for variant.
#[derive(Serialize, Deserialize, Debug)]
pub enum Reply {
    /// To [`Request::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// To [`Request::Write`]: the applied response.
    Write(Result<Response, ForwardError>),
    /// To [`Request::WriteBatch`]: each write's response, in the request's order.
    WriteBatch(Vec<Result<Response, ForwardError>>),
    /// To [`Request::ReadIndex`]: the log id to apply up to before reading.
    ReadIndex(Result<Option<LogId<NodeId>>, ForwardError>),
    /// To membership requests.
    Membership(Result<(), ForwardError>),
    /// To [`Request::Signal`]: the gateway layer's answer.
    Signal(Vec<u8>),
    /// To any request the peer may not send ([`crate::peer::authorize`]): why.
    Refused(String),
}

/// Writes one frame and finishes the stream.
pub async fn write_frame<T: Serialize>(
    send: &mut quinn::SendStream,
    value: &T,
) -> Result<(), FrameError> {
    let bytes = encode(value)?;
    send.write_all(&bytes)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))?;
    send.finish().map_err(|e| FrameError::Io(e.to_string()))?;
    Ok(())
}

/// Reads one frame up to the end of the stream.
pub async fn read_frame<T: serde::de::DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<T, FrameError> {
    let bytes = recv
        .read_to_end(MAX_FRAME)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))?;
    Ok(decode(&bytes)?)
}

/// A frame could not be moved or understood.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error("stream: {0}")]
    Io(String),
    /// The bytes did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
}
