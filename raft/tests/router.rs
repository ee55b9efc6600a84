//! Raft-level behaviour on the in-process router (`tether_raft::testing`): failover, the
//! read barrier without a quorum, writes following the leader, catch-up by snapshot (and a
//! restart from it), slow links, and a cut-off node rejoining with a higher term. No
//! processes, no QUIC; real RocksDB stores in a temporary directory.
#![cfg(feature = "testing")]

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use std::time::Duration;
use tether_raft::testing::{revoke, Router};
use tether_raft::RaftTiming;
use tether_store::{Command, NodeId, RevocationKind};

/// Generous bound for every wait: the conditions usually hold within a few hundred ms.
const T: Duration = Duration::from_secs(5);

fn others(router: &Router, id: NodeId) -> Vec<NodeId> {
    router.ids().into_iter().filter(|&n| n != id).collect()
}

fn revoked(router: &Router, id: NodeId, sid: &str) -> bool {
    router
        .view(id)
        .expect("known node")
        .read()
        .get(RevocationKind::Session, sid)
        .is_some()
}

/// Commits `command` on `id`, which must lead, and returns the entry's index.
async fn commit(router: &Router, id: NodeId, command: Command) -> u64 {
    let written = router.write(id, command).await.expect("running");
    written.expect("committed").log_id.index
}

fn assert_forward_to(result: Result<(), String>, leader: NodeId) {
    assert_eq!(result, Err(format!("forward to {leader}")));
}

fn forward_target<T>(
    result: Result<T, RaftError<NodeId, ClientWriteError<NodeId, tether_store::NodeInfo>>>,
) -> Result<(), String> {
    match result {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(format!("forward to {}", f.leader_id.map_or(0, |l| l)))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_elects_a_new_leader_and_the_old_one_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start_cluster(dir.path(), 3, &Router::fast_timing())
        .await
        .unwrap();
    let old = router.wait_for_leader(T).await.unwrap();
    let before = commit(&router, old, revoke("before")).await;
    router
        .wait_all_applied(&router.ids(), before, T)
        .await
        .unwrap();

    router.isolate(old);
    let stale_raft = router.raft(old).unwrap();
    let stale = tokio::spawn(async move { stale_raft.client_write(revoke("stale")).await });
    let majority = others(&router, old);
    let new = router.wait_for_leader_among(&majority, T).await.unwrap();
    assert_ne!(new, old);
    let after = commit(&router, new, revoke("after")).await;
    router.wait_all_applied(&majority, after, T).await.unwrap();

    // The old leader still believes it leads, but commits nothing on its own.
    assert_eq!(router.metrics(old).unwrap().current_leader, Some(old));
    let committed = router
        .raft(old)
        .unwrap()
        .with_raft_state(|st| st.committed.map(|l| l.index))
        .await
        .unwrap();
    assert_eq!(committed, Some(before));
    assert!(
        !stale.is_finished(),
        "a write on the cut-off leader returned"
    );
    assert!(!revoked(&router, old, "stale") && !revoked(&router, old, "after"));

    // Healed, it follows the new leader: its own entry is dropped and its client told
    // where to go.
    router.heal();
    let stale = tokio::time::timeout(T, stale).await.unwrap().unwrap();
    assert_forward_to(forward_target(stale), new);
    router
        .wait_all_applied(&router.ids(), after, T)
        .await
        .unwrap();
    let reference = router.state(new).unwrap();
    for id in router.ids() {
        assert!(
            !revoked(&router, id, "stale"),
            "node {id} applied the stale write"
        );
        assert!(revoked(&router, id, "after"));
        assert_eq!(router.state(id).unwrap(), reference, "node {id} diverged");
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_barrier_needs_a_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start_cluster(dir.path(), 3, &Router::fast_timing())
        .await
        .unwrap();
    let old = router.wait_for_leader(T).await.unwrap();
    let first = commit(&router, old, revoke("r1")).await;
    router
        .wait_all_applied(&router.ids(), first, T)
        .await
        .unwrap();

    router.isolate(old);
    // On the cut-off leader the barrier fails (after one heartbeat interval), both the
    // read index Tether's barrier asks for and openraft's own linearizable read.
    let quorum_not_enough = |e: &RaftError<NodeId, CheckIsLeaderError<NodeId, _>>| {
        matches!(
            e,
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))
        )
    };
    let stale = router.raft(old).unwrap();
    let err = stale.get_read_log_id().await.unwrap_err();
    assert!(quorum_not_enough(&err), "{err}");
    let err = stale.ensure_linearizable().await.unwrap_err();
    assert!(quorum_not_enough(&err), "{err}");

    // The majority side elects a leader and serves linearizable reads.
    let majority = others(&router, old);
    let new = router.wait_for_leader_among(&majority, T).await.unwrap();
    let second = commit(&router, new, revoke("r2")).await;
    let read = router
        .raft(new)
        .unwrap()
        .ensure_linearizable()
        .await
        .unwrap();
    assert!(read.is_some_and(|l| l.index >= second));

    // A follower there is sent to the leader; Tether's barrier asks the leader for the read
    // index and waits until the follower has applied it, then reads locally.
    let follower = *majority.iter().find(|&&n| n != new).unwrap();
    let err = router
        .raft(follower)
        .unwrap()
        .get_read_log_id()
        .await
        .unwrap_err();
    match err {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => {
            assert_eq!(f.leader_id, Some(new))
        }
        other => panic!("follower answered {other}"),
    }
    let (read, _) = router.raft(new).unwrap().get_read_log_id().await.unwrap();
    router
        .wait_applied(follower, read.unwrap().index, T)
        .await
        .unwrap();
    assert!(revoked(&router, follower, "r2"));

    // The old leader still fails closed and has not seen the write.
    assert!(quorum_not_enough(
        &stale.get_read_log_id().await.unwrap_err()
    ));
    assert!(!revoked(&router, old, "r2"));
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_follow_the_leader_across_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start_cluster(dir.path(), 3, &Router::fast_timing())
        .await
        .unwrap();
    let first = router.wait_for_leader(T).await.unwrap();
    let follower = others(&router, first)[0];

    // A follower refuses a write and names the leader; routed from it, the write lands there.
    assert_forward_to(
        forward_target(router.write(follower, revoke("w1")).await.unwrap()),
        first,
    );
    let (by, _) = router
        .write_routed(follower, revoke("w1"), T)
        .await
        .unwrap();
    assert_eq!(by, first);

    // The leader dies; the same follower's next write reaches the new leader.
    router.kill(first).await.unwrap();
    let rest = others(&router, first);
    let second = router.wait_for_leader_among(&rest, T).await.unwrap();
    assert_ne!(second, first);
    let (by, written) = router
        .write_routed(follower, revoke("w2"), T)
        .await
        .unwrap();
    assert_eq!(by, second);

    // Restarted from its data, the old leader follows: it has both writes and forwards.
    router.restart(first).await.unwrap();
    router
        .wait_applied(first, written.log_id.index, T)
        .await
        .unwrap();
    assert!(revoked(&router, first, "w1") && revoked(&router, first, "w2"));
    router
        .wait_for(first, T, "the new leader known", |m| {
            m.current_leader == Some(second)
        })
        .await
        .unwrap();
    assert_forward_to(
        forward_target(router.write(first, revoke("w3")).await.unwrap()),
        second,
    );
    let (by, _) = router.write_routed(first, revoke("w3"), T).await.unwrap();
    assert_eq!(by, second);
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let timing = RaftTiming {
        snapshot_logs: 5,
        keep_logs: 0,
        ..Router::fast_timing()
    };
    let router = Router::start_cluster(dir.path(), 3, &timing).await.unwrap();
    let leader = router.wait_for_leader(T).await.unwrap();
    let lagging = others(&router, leader)[0];
    let start = commit(&router, leader, revoke("s0")).await;
    router
        .wait_all_applied(&router.ids(), start, T)
        .await
        .unwrap();

    router.isolate(lagging);
    let behind = router.metrics(lagging).unwrap().last_log_index.unwrap();
    let mut last = start;
    for i in 0..24u64 {
        let command = match i % 3 {
            0 => revoke(&format!("sid-{i}")),
            1 => Command::StartSession {
                id: format!("session-{i}"),
                operator: format!("op-{i}"),
                robot: format!("robot-{i}"),
                token_id: format!("jti-{i}"),
                login_token_id: None,
                node: leader,
                at: 2_000 + i,
            },
            _ => Command::EndSession {
                id: format!("session-{}", i - 1),
                operator: format!("op-{}", i - 1),
                at: 3_000 + i,
            },
        };
        last = commit(&router, leader, command).await;
    }
    // The leader has purged the entries the lagging node would need next: only a snapshot
    // can bring it up.
    router
        .wait_for(leader, T, "the log purged past the lagging node", |m| {
            m.purged.is_some_and(|p| p.index > behind + 1)
        })
        .await
        .unwrap();
    let chunks_before = router.rpc_stats(lagging).install_snapshot;

    router.heal();
    router.wait_applied(lagging, last, T).await.unwrap();
    assert!(
        router.rpc_stats(lagging).install_snapshot > chunks_before,
        "caught up without a snapshot"
    );
    assert!(router.metrics(lagging).unwrap().snapshot.is_some());
    router
        .wait_all_applied(&router.ids(), last, T)
        .await
        .unwrap();
    let reference = router.state(leader).unwrap();
    assert_eq!(reference.sessions().count(), 8);
    for id in router.ids() {
        assert_eq!(router.state(id).unwrap(), reference, "node {id} diverged");
    }

    // Restarted from a store that holds a received snapshot and no log below it, the node
    // comes back with the same state and keeps following.
    router.kill(lagging).await.unwrap();
    let rest = others(&router, lagging);
    let leader = router.wait_for_leader_among(&rest, T).await.unwrap();
    let after = commit(&router, leader, revoke("after-restart")).await;
    router.restart(lagging).await.unwrap();
    router
        .wait_all_applied(&router.ids(), after, T)
        .await
        .unwrap();
    let reference = router.state(leader).unwrap();
    for id in router.ids() {
        assert_eq!(router.state(id).unwrap(), reference, "node {id} diverged");
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoining_node_with_a_higher_term_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let router = Router::start_cluster(dir.path(), 3, &Router::fast_timing())
        .await
        .unwrap();
    let leader = router.wait_for_leader(T).await.unwrap();
    let cut_off = others(&router, leader)[0];
    let term = router.metrics(leader).unwrap().current_term;
    router.isolate(cut_off);
    let mut last = 0;
    for i in 0..5 {
        last = commit(&router, leader, revoke(&format!("x{i}"))).await;
    }
    // Alone, it stands for election again and again (openraft 0.9 has no pre-vote).
    router
        .wait_for(cut_off, T, "the cut-off node's term to rise", |m| {
            m.current_term >= term + 2
        })
        .await
        .unwrap();

    // Back, its higher term may depose the leader; its shorter log cannot win, so a node
    // with every committed write leads next, and the write after it commits everywhere.
    router.heal();
    let next = router.wait_for_leader(T).await.unwrap();
    assert_ne!(next, cut_off);
    let (_, written) = router
        .write_routed(cut_off, revoke("after"), T)
        .await
        .unwrap();
    assert!(written.log_id.index > last);
    router
        .wait_all_applied(&router.ids(), written.log_id.index, T)
        .await
        .unwrap();
    let reference = router.state(next).unwrap();
    for id in router.ids() {
        assert_eq!(router.state(id).unwrap(), reference, "node {id} diverged");
    }
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_links_commit_until_the_rpc_timeout_then_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let timing = Router::fast_timing();
    let router = Router::start_cluster(dir.path(), 3, &timing).await.unwrap();
    let leader = router.wait_for_leader(T).await.unwrap();
    let followers = others(&router, leader);

    // A round trip well inside the heartbeat interval: writes and reads go through.
    for &f in &followers {
        router.delay(leader, f, Duration::from_millis(2));
        router.delay(f, leader, Duration::from_millis(2));
    }
    let index = commit(&router, leader, revoke("slow")).await;
    let read = router.raft(leader).unwrap().ensure_linearizable().await;
    assert!(read.unwrap().is_some_and(|l| l.index >= index));

    // Replies slower than the heartbeat interval (openraft's RPC timeout): the leader can no
    // longer confirm its leadership, and the read barrier fails closed.
    let slow = Duration::from_millis(timing.heartbeat_ms * 2);
    for &f in &followers {
        router.delay(f, leader, slow);
    }
    let err = router
        .raft(leader)
        .unwrap()
        .get_read_log_id()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))
        ),
        "{err}"
    );
    router.heal();
    router.wait_for_leader(T).await.unwrap();
    router.shutdown().await;
}
