//! Node identity in the mesh: what a peer holding a node's files, a certificate for a node
//! that is no member, or a certificate from another CA can make a node do.

use std::time::Duration;
use tether_api::types::AddMemberRequest;
use tether_api::Target;
use tether_tests::TestCluster;

fn session(id: &str) -> Target {
    Target::Session(id.into())
}

/// The TLS identity a node's config points at: what a thief of its files would hold.
fn identity_of(config: &tether_node::config::NodeConfig) -> tether_raft::TlsIdentity {
    tether_raft::TlsIdentity {
        ca_cert_pem: std::fs::read_to_string(&config.tls.ca_cert).unwrap(),
        node: tether_raft::CertPair {
            cert_pem: std::fs::read_to_string(&config.tls.cert).unwrap(),
            key_pem: std::fs::read_to_string(&config.tls.key).unwrap(),
        },
    }
}

#[tokio::test]
async fn a_peer_may_send_only_what_its_certificate_names_and_the_membership_allows() {
    use tether_raft::network::{call_as, CallError};
    use tether_raft::rpc::{Reply, Request};
    let cluster = TestCluster::start(3).await;
    cluster
        .client(1)
        .revoke(&session("kept"), "x", None)
        .await
        .unwrap();
    let leader = cluster.leader().await;
    let member = 1 + leader % 3;
    let other = 6 - leader - member;
    let config = tether_node::config::NodeConfig::load(&cluster.node(member).config_path).unwrap();
    let holder = identity_of(&config);
    let addr = cluster.node(leader).raft.to_string();
    let t = Duration::from_secs(2);

    // What a follower asks of the leader is answered.
    let read = call_as(&holder, &addr, leader, &Request::ReadIndex, t).await;
    assert!(matches!(read, Ok(Reply::ReadIndex(Ok(_)))), "{read:?}");
    // An expiry with a far-future clock would drop every revocation: only the leader
    // proposes those.
    let expire = Request::Write(tether_store::Command::Expire { now: u64::MAX / 2 });
    let expire = call_as(&holder, &addr, leader, &expire, t).await;
    assert!(matches!(expire, Err(CallError::Refused(..))), "{expire:?}");
    // A member may not speak for another.
    let forged = Request::Signal {
        from: other,
        payload: b"{}".to_vec(),
    };
    let forged = call_as(&holder, &addr, leader, &forged, t).await;
    assert!(matches!(forged, Err(CallError::Refused(..))), "{forged:?}");
    // A certificate from the cluster's own CA, for a node that is no member, gets nothing.
    let (http, raft) = tether_devkit::free_addrs().unwrap();
    let stranger = identity_of(&cluster.secrets.node_config(9, http, raft, &[]).unwrap());
    let stranger = call_as(&stranger, &addr, leader, &Request::ReadIndex, t).await;
    assert!(
        matches!(stranger, Err(CallError::Refused(..))),
        "{stranger:?}"
    );
    // A dialer that expects one node and reaches another refuses it.
    let wrong = call_as(&holder, &addr, other, &Request::ReadIndex, t).await;
    assert!(
        matches!(wrong, Err(CallError::Unreachable(..))),
        "{wrong:?}"
    );

    let refusals = tether_devkit::metrics::scrape(cluster.node(leader).http)
        .await
        .unwrap()
        .unlabelled()["tether_raft_peer_refusals_total"];
    assert!(refusals >= 3.0, "{refusals} refusals counted");
    // Nothing was dropped on the way.
    let listed = cluster
        .client(other)
        .list(&[("kind", "session"), ("consistent", "true")])
        .await
        .unwrap();
    assert!(listed.items.iter().any(|r| r.target == "kept"));
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_can_neither_join_nor_send_rpcs() {
    let mut cluster = TestCluster::start(3).await;
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = tether_devkit::Secrets::ensure(foreign_dir.path()).unwrap();
    let (http, raft) = tether_devkit::free_addrs().unwrap();
    let config = foreign.node_config(4, http, raft, &[]).unwrap();

    // RPCs from the foreign identity are refused at the handshake.
    let identity = identity_of(&config);
    let target = cluster.node(1).raft.to_string();
    let refused = tether_raft::network::probe(&identity, &target, Duration::from_secs(2)).await;
    assert!(
        refused.is_err(),
        "a foreign certificate got an answer: {refused:?}"
    );

    // Joining fails: the leader cannot replicate to it, and it never becomes a voter.
    cluster.adopt(&foreign_dir.path().join("node4/config.toml"));
    let joined = cluster
        .client(1)
        .add_member(&AddMemberRequest {
            id: 4,
            raft_addr: raft,
            http_addr: http,
            timeout_ms: Some(2_000),
        })
        .await;
    assert_eq!(joined.unwrap_err().code(), Some("unavailable"));
    let view = cluster.client(1).cluster().await.unwrap();
    assert!(view.members.iter().all(|m| m.id != 4 || !m.voter));
    cluster
        .client(1)
        .revoke(&session("still-works"), "x", None)
        .await
        .unwrap();
}
