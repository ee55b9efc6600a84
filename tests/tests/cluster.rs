//! End-to-end tests of the replicated revocation store through the real binary and HTTP.

use std::collections::BTreeSet;
use std::time::Duration;
use tether_api::types::AddMemberRequest;
use tether_api::Target;
use tether_tests::{wait_until, TestCluster, WAIT};

fn session(id: &str) -> Target {
    Target::Session(id.into())
}

async fn has_session(cluster: &TestCluster, node: u64, sid: &str) -> bool {
    cluster
        .client(node)
        .list(&[("kind", "session"), ("limit", "1000")])
        .await
        .map(|page| page.items.iter().any(|r| r.target == sid))
        .unwrap_or(false)
}

#[tokio::test]
async fn a_revocation_posted_to_a_follower_reaches_every_node_and_is_idempotent() {
    let cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    let first = cluster
        .client(follower)
        .revoke(&session("s-1"), "stolen laptop", None)
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.revocation.reason, "stolen laptop");
    assert_eq!(first.revocation.revoked_by, "test-admin");
    assert!(
        first.revocation.expires_at.is_some(),
        "session revocations expire by default"
    );
    let cluster = &cluster;
    for id in cluster.running() {
        wait_until("the revocation on every node", WAIT, || async move {
            has_session(cluster, id, "s-1").await.then_some(())
        })
        .await;
    }
    let again = cluster
        .client(cluster.leader().await)
        .revoke(&session("s-1"), "again", None)
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(
        again.revocation.reason, "stolen laptop",
        "the first entry stands"
    );
    assert_eq!(again.revocation.revoked_at, first.revocation.revoked_at);
}

#[tokio::test]
async fn killing_the_leader_elects_another_and_commits_again_within_a_second() {
    let mut cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    let survivor = cluster.running().into_iter().find(|id| *id != old).unwrap();
    cluster.kill(old);
    let killed = std::time::Instant::now();
    let client = cluster.client(survivor);
    let r = client
        .revoke(&session("after-failover"), "failover", None)
        .await
        .unwrap();
    let elapsed = killed.elapsed();
    assert!(r.created);
    assert!(
        elapsed < Duration::from_secs(1),
        "commit resumed after {elapsed:?}"
    );
    let view = cluster
        .wait_view(survivor, "a new leader", |v| {
            v.leader.is_some_and(|l| l != old)
        })
        .await;
    assert_ne!(view.leader, Some(old));
}

#[tokio::test]
async fn every_acknowledged_revocation_survives_kill_9_of_every_node() {
    // Small snapshots, so the restart also recovers from a snapshot and a purged log.
    let mut cluster = TestCluster::start_with(3, |c| {
        c.raft.snapshot_logs = 40;
        c.raft.keep_logs = 5;
    })
    .await;
    let clients: Vec<_> = cluster
        .running()
        .into_iter()
        .map(|id| cluster.client(id))
        .collect();
    // Writers on every node; kill everything while they are still writing.
    let writers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(w, client)| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    let sid = format!("w{w}-{i}");
                    match client
                        .revoke(&Target::Session(sid.clone()), "crash test", None)
                        .await
                    {
                        Ok(_) => acked.push(sid),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    wait_until("some acknowledged writes", WAIT, || async {
        let page = clients[0].list(&[("limit", "200")]).await.ok()?;
        (page.items.len() >= 100).then_some(())
    })
    .await;
    for id in cluster.running() {
        cluster.kill(id);
    }
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() >= 100);
    for id in 1..=3 {
        cluster.restart(id);
    }
    let leader = cluster.leader().await;
    for id in cluster.running() {
        let client = cluster.client(id);
        let acked = &acked;
        wait_until("every acknowledged revocation on every node", WAIT, || {
            let client = client.clone();
            async move {
                let mut seen = BTreeSet::new();
                let mut after: Option<String> = None;
                loop {
                    let mut q = vec![("kind", "session"), ("limit", "1000")];
                    if let Some(a) = after.as_deref() {
                        q.push(("after", a));
                    }
                    let page = client.list(&q).await.ok()?;
                    seen.extend(page.items.into_iter().map(|r| r.target));
                    match page.next {
                        Some(n) => after = Some(n),
                        None => break,
                    }
                }
                acked.is_subset(&seen).then_some(())
            }
        })
        .await;
    }
    assert!(leader > 0);
}

#[tokio::test]
async fn a_node_that_was_down_catches_up_through_a_snapshot() {
    let mut cluster = TestCluster::start_with(3, |c| {
        c.raft.snapshot_logs = 500;
        c.raft.keep_logs = 50;
    })
    .await;
    let leader = cluster.leader().await;
    let down = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    cluster.kill(down);
    let client = cluster.client(leader);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    client
                        .revoke(&Target::Token(format!("jti-{w}-{i}")), "bulk", None)
                        .await
                        .expect("write while one node is down");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    cluster.restart(down);
    let target = cluster.client(leader).cluster().await.unwrap();
    let caught_up = cluster
        .wait_view(down, "the restarted node to catch up", |v| {
            v.revocations == 2400 && v.applied_index >= target.applied_index
        })
        .await;
    assert_eq!(caught_up.revocations, 2400);
    assert!(
        cluster.log(down).contains("snapshot installed"),
        "the lagging node should have been sent a snapshot"
    );
}

#[tokio::test]
async fn a_member_can_be_added_and_another_removed() {
    let mut cluster = TestCluster::start(3).await;
    cluster
        .client(1)
        .revoke(&session("before-join"), "x", None)
        .await
        .unwrap();
    let (http, raft) = tether_devkit::free_addrs().unwrap();
    let config = cluster.secrets.node_config(4, http, raft, &[]).unwrap();
    let path = tether_devkit::config_path(cluster.dir.path(), 4);
    assert_eq!(config.id, 4);
    cluster.adopt(&path);
    let view = cluster
        .client(2)
        .add_member(&AddMemberRequest {
            id: 4,
            raft_addr: raft,
            http_addr: http,
            timeout_ms: None,
        })
        .await
        .unwrap();
    assert!(view.members.iter().any(|m| m.id == 4 && m.voter));
    cluster
        .wait_view(4, "the new member to hold the earlier revocation", |v| {
            v.revocations == 1
        })
        .await;
    let leader = cluster.leader().await;
    let removed = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader && *id != 4)
        .unwrap();
    let view = cluster.client(leader).remove_member(removed).await.unwrap();
    assert!(view.members.iter().all(|m| m.id != removed));
    assert_eq!(view.members.len(), 3);
    cluster
        .client(4)
        .revoke(&session("after-remove"), "x", None)
        .await
        .unwrap();
}

#[tokio::test]
async fn operator_revocations_are_listed_by_kind_and_can_be_lifted() {
    let cluster = TestCluster::start(3).await;
    let c = cluster.client(cluster.follower().await);
    let r = c
        .revoke(
            &Target::Operator("did:op:7".into()),
            "left the company",
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        r.revocation.expires_at, None,
        "operator revocations last until lifted"
    );
    c.revoke(
        &Target::Token("jti-1".into()),
        "leaked",
        Some("2099-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    let ops = c
        .list(&[("kind", "operator"), ("consistent", "true")])
        .await
        .unwrap();
    assert_eq!(ops.items.len(), 1);
    assert_eq!(ops.items[0].target, "did:op:7");
    let tokens = c
        .list(&[("kind", "token"), ("consistent", "true")])
        .await
        .unwrap();
    assert_eq!(
        tokens.items[0].expires_at.as_deref(),
        Some("2099-01-01T00:00:00.000Z")
    );
    c.lift("did:op:7").await.unwrap();
    assert_eq!(
        c.lift("did:op:7").await.unwrap_err().code(),
        Some("not_found")
    );
    let ops = c
        .list(&[("kind", "operator"), ("consistent", "true")])
        .await
        .unwrap();
    assert!(ops.items.is_empty());
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let cluster = TestCluster::start(3).await;
    let base = format!("http://{}", cluster.node(1).http);
    let http = tether_api::tls::http();
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    cluster
        .client(1)
        .revoke(&session("m"), "x", None)
        .await
        .unwrap();
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        tether_node::telemetry::names::RAFT_TERM,
        tether_node::telemetry::names::RAFT_LEADER,
        tether_node::telemetry::names::RAFT_APPLIED_INDEX,
        tether_node::telemetry::names::REVOCATIONS_STORED,
        tether_node::telemetry::names::REVOCATION_COMMIT_SECONDS,
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn repeated_leader_kills_and_restarts_keep_the_cluster_writable() {
    let mut cluster = TestCluster::start(3).await;
    for round in 0..4 {
        let leader = cluster.leader().await;
        let survivor = cluster
            .running()
            .into_iter()
            .find(|id| *id != leader)
            .unwrap();
        cluster.kill(leader);
        let result = cluster
            .client(survivor)
            .revoke(&session(&format!("round-{round}")), "churn", None)
            .await;
        if let Err(e) = result {
            let logs: Vec<_> = (1..=3)
                .map(|id| format!("--- node {id}\n{}", cluster.log(id)))
                .collect();
            panic!(
                "round {round}: no commit after killing leader {leader}: {e}\n{}",
                logs.join("\n")
            );
        }
        cluster.restart(leader);
    }
}

#[tokio::test]
async fn concurrent_writes_forwarded_together_each_get_their_own_answer() {
    let cluster = TestCluster::start(3).await;
    let follower = cluster.follower().await;
    let client = cluster.client(follower);
    // All at once, so the follower forwards them to the leader in batches.
    let writes = (0..300).map(|i| {
        let client = client.clone();
        async move {
            let sid = format!("together-{i}");
            let answer = client
                .revoke(&session(&sid), &format!("reason {i}"), None)
                .await
                .unwrap();
            (i, sid, answer)
        }
    });
    let answers = futures::future::join_all(writes).await;
    for (i, sid, answer) in &answers {
        assert!(answer.created, "{sid}");
        assert_eq!(
            &answer.revocation.target, sid,
            "its own answer, not another's"
        );
        assert_eq!(answer.revocation.reason, format!("reason {i}"));
    }
    let metrics = cluster.metrics(follower).await.unwrap();
    let forwarded = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
    let (sum, count) = (
        forwarded("tether_raft_forward_batch_size_sum"),
        forwarded("tether_raft_forward_batch_size_count"),
    );
    // At least once each (a write may be sent again after a failed call).
    assert!(sum >= 300.0, "every write was forwarded: {sum}");
    assert!(
        count < 300.0,
        "some were forwarded together ({count} calls)"
    );
    let answers = &answers;
    for id in cluster.running() {
        let client = cluster.client(id);
        wait_until("every write on every node", WAIT, || {
            let client = client.clone();
            async move {
                let page = client
                    .list(&[("kind", "session"), ("limit", "1000")])
                    .await
                    .ok()?;
                let seen: BTreeSet<_> = page.items.into_iter().map(|r| r.target).collect();
                answers
                    .iter()
                    .all(|(_, sid, _)| seen.contains(sid))
                    .then_some(())
            }
        })
        .await;
    }
}
