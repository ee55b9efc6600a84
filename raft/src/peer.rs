//! What a peer may ask: which node its certificate names, and which requests that node may
//! send. A certificate from the cluster CA is not enough: it must name the node id the
//! request claims (the leader of an append, the candidate of a vote, the sender of a
//! signal, the node starting a session), that node must be a current member, and a
//! forwarded write may carry only what a client could have asked for — never an `Expire`
//! (only the leader proposes one, with its own clock) or a ready-made `Batch`.

use crate::rpc::Request;
use crate::tls::node_name;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::ParsedCertificate;
use std::collections::BTreeSet;
use tether_store::{Command, NodeId};

/// Why a peer's request was refused (logged, counted and sent back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The certificate did not parse.
    #[error("unreadable peer certificate")]
    Unreadable,
    /// The certificate does not name the node the request claims to come from.
    #[error("the certificate does not name node {0}")]
    NotNamed(NodeId),
    /// The certificate names no current member.
    #[error("the certificate names no member of this cluster")]
    NoMember,
    /// The node the certificate names is not (or no longer) a member.
    #[error("node {0} is not a member of this cluster")]
    NotMember(NodeId),
    /// A node that has not joined a cluster yet takes only Raft's own messages.
    #[error("this node has not joined a cluster yet")]
    NotJoined,
    /// The request carries a command a peer may not forward.
    #[error("a peer may not forward {0}")]
    Command(&'static str),
}

/// Which node the peer presenting `cert` is, as far as `request` is concerned, given the
/// current `members` (voters and learners; empty on a node that has not joined yet).
pub fn authorize(
    cert: &CertificateDer<'_>,
    members: &BTreeSet<NodeId>,
    request: &Request,
) -> Result<NodeId, Refusal> {
    let cert = ParsedCertificate::try_from(cert).map_err(|_| Refusal::Unreadable)?;
    let names = |id: NodeId| {
        ServerName::try_from(node_name(id))
            .is_ok_and(|name| rustls::client::verify_server_name(&cert, &name).is_ok())
    };
    let raft_message = matches!(
        request,
        Request::AppendEntries(_) | Request::Vote(_) | Request::InstallSnapshot(_)
    );
    let peer = match claimed_sender(request) {
        Some(claimed) if names(claimed) => claimed,
        Some(claimed) => return Err(Refusal::NotNamed(claimed)),
        None => (members.iter().copied())
            .find(|id| names(*id))
            .ok_or(Refusal::NoMember)?,
    };
    if members.is_empty() {
        // A new node learns its cluster from the leader's first append: until then, only
        // Raft's messages (from whichever node its certificate names) make sense.
        return if raft_message {
            Ok(peer)
        } else {
            Err(Refusal::NotJoined)
        };
    }
    if !members.contains(&peer) {
        return Err(Refusal::NotMember(peer));
    }
    match request {
        Request::Write(command) => forwardable(command, peer)?,
        Request::WriteBatch(commands) => {
            for command in commands {
                forwardable(command, peer)?;
            }
        }
        _ => {}
    }
    Ok(peer)
}

/// The node a request says it comes from, where it says one.
fn claimed_sender(request: &Request) -> Option<NodeId> {
    match request {
        Request::AppendEntries(rpc) => rpc.vote.leader_id().voted_for(),
        Request::Vote(rpc) => rpc.vote.leader_id().voted_for(),
        Request::InstallSnapshot(rpc) => rpc.vote.leader_id().voted_for(),
        Request::Signal { from, .. } => Some(*from),
        Request::Write(command) => started_by(command),
        Request::WriteBatch(commands) => commands.iter().find_map(started_by),
        Request::ReadIndex | Request::AddMember { .. } | Request::RemoveMember { .. } => None,
    }
}

/// The node a `StartSession` names as its creator.
fn started_by(command: &Command) -> Option<NodeId> {
    match command {
        Command::StartSession { node, .. } => Some(*node),
        Command::Once { command, .. } => started_by(command),
        _ => None,
    }
}

/// Whether `peer` may forward `command` to the leader: what a client asked of it, in its
/// own name.
fn forwardable(command: &Command, peer: NodeId) -> Result<(), Refusal> {
    match command {
        Command::Revoke { .. } | Command::Lift { .. } | Command::EndSession { .. } => Ok(()),
        Command::StartSession { node, .. } if *node == peer => Ok(()),
        Command::StartSession { .. } => Err(Refusal::Command("a session in another node's name")),
        Command::Once { command, .. } => match **command {
            Command::Once { .. } => Err(Refusal::Command("a nested once")),
            ref inner => forwardable(inner, peer),
        },
        Command::Expire { .. } => Err(Refusal::Command("an expiry (the leader proposes those)")),
        Command::Batch(_) => Err(Refusal::Command("a batch (the leader builds those)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{generate_ca, issue_node_cert};
    use rustls::pki_types::pem::PemObject;
    use tether_store::RevocationKind;

    fn cert_for(id: NodeId) -> CertificateDer<'static> {
        let ca = generate_ca().unwrap();
        let pair = issue_node_cert(&ca.key_pem, id).unwrap();
        CertificateDer::from_pem_slice(pair.cert_pem.as_bytes()).unwrap()
    }

    fn members(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn revoke() -> Command {
        Command::Revoke {
            kind: RevocationKind::Token,
            target: "jti".into(),
            reason: "r".into(),
            revoked_by: "admin".into(),
            at: 1,
            expires_at: None,
        }
    }

    fn start(node: NodeId) -> Command {
        Command::StartSession {
            id: "s".into(),
            operator: "op".into(),
            robot: "r".into(),
            token_id: "t".into(),
            login_token_id: None,
            node,
            at: 1,
        }
    }

    fn vote(candidate: NodeId) -> Request {
        Request::Vote(openraft::raft::VoteRequest::new(
            openraft::Vote::new(3, candidate),
            None,
        ))
    }

    #[test]
    fn a_member_is_the_node_its_certificate_names() {
        let cert = cert_for(2);
        let all = members(&[1, 2, 3]);
        assert_eq!(authorize(&cert, &all, &Request::ReadIndex), Ok(2));
        assert_eq!(authorize(&cert, &all, &vote(2)), Ok(2));
        let signal = Request::Signal {
            from: 2,
            payload: vec![],
        };
        assert_eq!(authorize(&cert, &all, &signal), Ok(2));
        assert_eq!(authorize(&cert, &all, &Request::Write(revoke())), Ok(2));
        assert_eq!(authorize(&cert, &all, &Request::Write(start(2))), Ok(2));
    }

    #[test]
    fn a_peer_claiming_another_nodes_id_is_refused() {
        let cert = cert_for(2);
        let all = members(&[1, 2, 3]);
        assert_eq!(authorize(&cert, &all, &vote(3)), Err(Refusal::NotNamed(3)));
        let signal = Request::Signal {
            from: 3,
            payload: vec![],
        };
        assert_eq!(authorize(&cert, &all, &signal), Err(Refusal::NotNamed(3)));
        let batch = Request::WriteBatch(vec![revoke(), Command::once("q", 1, start(3))]);
        assert_eq!(authorize(&cert, &all, &batch), Err(Refusal::NotNamed(3)));
    }

    #[test]
    fn a_certificate_of_no_current_member_is_refused() {
        let removed = cert_for(4);
        let all = members(&[1, 2, 3]);
        assert_eq!(
            authorize(&removed, &all, &Request::ReadIndex),
            Err(Refusal::NoMember)
        );
        assert_eq!(
            authorize(&removed, &all, &vote(4)),
            Err(Refusal::NotMember(4))
        );
        let garbage = CertificateDer::from(vec![0u8; 16]);
        assert_eq!(
            authorize(&garbage, &all, &Request::ReadIndex),
            Err(Refusal::Unreadable)
        );
    }

    #[test]
    fn a_peer_may_not_forward_what_only_the_leader_proposes() {
        let cert = cert_for(2);
        let all = members(&[1, 2, 3]);
        let refused = |command: Command| authorize(&cert, &all, &Request::Write(command));
        assert!(matches!(
            refused(Command::Expire { now: u64::MAX }),
            Err(Refusal::Command(_))
        ));
        assert!(matches!(
            refused(Command::Batch(vec![revoke()])),
            Err(Refusal::Command(_))
        ));
        assert!(matches!(
            refused(Command::once("q", 1, Command::Expire { now: 9 })),
            Err(Refusal::Command(_))
        ));
        assert!(matches!(
            refused(Command::once("q", 1, Command::once("r", 1, revoke()))),
            Err(Refusal::Command(_))
        ));
        assert_eq!(refused(Command::once("q", 1, revoke())), Ok(2));
        let mixed = Request::WriteBatch(vec![revoke(), Command::Expire { now: 9 }]);
        assert!(matches!(
            authorize(&cert, &all, &mixed),
            Err(Refusal::Command(_))
        ));
    }

    #[test]
    fn a_node_that_has_not_joined_takes_only_raft_messages() {
        let cert = cert_for(1);
        let none = BTreeSet::new();
        assert_eq!(authorize(&cert, &none, &vote(1)), Ok(1));
        assert_eq!(authorize(&cert, &none, &vote(2)), Err(Refusal::NotNamed(2)));
        assert_eq!(
            authorize(&cert, &none, &Request::Write(revoke())),
            Err(Refusal::NoMember)
        );
        let signal = Request::Signal {
            from: 1,
            payload: vec![],
        };
        assert_eq!(authorize(&cert, &none, &signal), Err(Refusal::NotJoined));
    }
}
