//! Sessions and signaling through real WebSocket clients against a multi-process cluster.

use serde_json::json;
use std::time::Duration;
use tether_api::Target;
use tether_node::auth::Role;
use tether_tests::{joined_pair as pair, wait_until, SignalClient, TestCluster, SDP, WAIT};

async fn exchange(r: &mut SignalClient, o: &mut SignalClient) {
    o.send(json!({"type": "offer", "sdp": SDP})).await;
    assert_eq!(r.expect("offer").await["sdp"], SDP);
    r.send(json!({"type": "answer", "sdp": SDP})).await;
    assert_eq!(o.expect("answer").await["sdp"], SDP);
    for i in 0..50 {
        let c = format!(
            "candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host",
            40000 + i
        );
        o.send(json!({"type": "candidate", "candidate": c, "sdp_mid": "0", "sdp_mline_index": 0}))
            .await;
        r.send(json!({"type": "candidate", "candidate": c, "sdp_mid": "0", "sdp_mline_index": 0}))
            .await;
    }
    for i in 0..50 {
        let want = format!(
            "candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host",
            40000 + i
        );
        assert_eq!(
            r.expect("candidate").await["candidate"],
            want.as_str(),
            "in order, none lost"
        );
        assert_eq!(
            o.expect("candidate").await["candidate"],
            want.as_str(),
            "in order, none lost"
        );
    }
}

#[tokio::test]
async fn sdp_and_candidates_are_relayed_both_ways_on_one_node_and_across_nodes() {
    let cluster = TestCluster::start(3).await;
    let (mut r, mut o, _, _) = pair(&cluster, 1, 1, "alice", "robot-a").await;
    exchange(&mut r, &mut o).await;
    let (mut r, mut o, _, _) = pair(&cluster, 2, 3, "bob", "robot-b").await;
    exchange(&mut r, &mut o).await;
    o.send(json!({"type": "ping"})).await;
    o.expect("pong").await;
    o.send(json!({"type": "leave"})).await;
    r.expect("peer_left").await;
}

#[tokio::test]
async fn a_revocation_by_sid_jti_or_operator_tears_down_both_peers_and_no_node_admits_again() {
    let cluster = TestCluster::start(3).await;
    for (i, kind) in ["sid", "jti", "operator"].into_iter().enumerate() {
        let operator = format!("op-{kind}");
        let robot = format!("robot-{i}");
        let (mut r, mut o, sid, token) = pair(&cluster, 1, 2, &operator, &robot).await;
        let target = match kind {
            "sid" => Target::Session(sid.clone()),
            "jti" => {
                let sessions: serde_json::Value = tether_api::tls::http()
                    .get(format!("http://{}/v1/sessions", cluster.node(3).http))
                    .bearer_auth(&cluster.admin_token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert!(sessions["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["session_id"] == sid.as_str()));
                Target::Token(token_id(&token))
            }
            _ => Target::Operator(operator.clone()),
        };
        cluster
            .client(3)
            .revoke(&target, &format!("test {kind}"), None)
            .await
            .unwrap();
        for peer in [&mut r, &mut o] {
            let f = peer.expect("revoked").await;
            assert_eq!(f["session_id"], sid.as_str());
            assert_eq!(f["reason"], format!("test {kind}").as_str());
            assert_eq!(peer.closed().await, 4001);
        }
        for node in 1..=3 {
            let mut again = SignalClient::connect(cluster.node(node).http).await;
            again.send(json!({"type": "auth", "token": token})).await;
            // Every credential check consults the revocations: the session token of a
            // revoked session is refused at auth already, as its session's revocation.
            again.expect_error("session_revoked").await;
            assert_eq!(again.closed().await, 4001);
        }
    }
    for node in 1..=3 {
        // Every node's ledger holds the revocations and its teardowns, chained intact.
        let url = format!("http://{}", cluster.node(node).http);
        wait_until("audit records", WAIT, || async {
            let records = cluster.client(node).audit_all().await.ok()?;
            let revoked = records
                .iter()
                .filter(|r| r.event == "SESSION_REVOKED")
                .count();
            let teardowns = records.iter().filter(|r| r.event == "TEARDOWN").count();
            (revoked == 3 && teardowns == 3).then_some(())
        })
        .await;
        let verify = std::process::Command::new(cluster.bin())
            .args([
                "audit",
                "verify",
                "--node",
                &url,
                "--admin-token",
                &cluster.admin_token,
            ])
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
        cluster.wait_signaling_idle(node).await;
    }
}

/// The jti claim of a JWT (payload is base64url JSON).
fn token_id(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = decode_b64url(payload);
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

fn decode_b64url(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn only_its_operator_terminates_a_session_and_both_peers_and_the_owner_are_told() {
    let cluster = TestCluster::start_with(3, |c| {
        c.sessions.owners.insert("robot-t".into(), "olga".into());
    })
    .await;
    let mut watcher = SignalClient::authed(cluster.node(3).http, &cluster.admin_token).await;
    // The robot's owner and another operator, listening with plain operator tokens.
    let mut owner =
        SignalClient::authed(cluster.node(1).http, &cluster.token("olga", Role::Operator)).await;
    let mut bystander = SignalClient::authed(
        cluster.node(3).http,
        &cluster.token("mallory", Role::Operator),
    )
    .await;
    let (mut r, mut o, sid, _) = pair(&cluster, 1, 2, "alice", "robot-t").await;
    let http = tether_api::tls::http();
    let delete = |node: u64, who: &str, sid: &str| {
        http.delete(format!(
            "http://{}/v1/sessions/{sid}",
            cluster.node(node).http
        ))
        .bearer_auth(cluster.token(who, Role::Operator))
        .send()
    };
    let other = delete(3, "mallory", &sid).await.unwrap();
    assert_eq!(other.status(), 403);
    assert_eq!(
        other.json::<serde_json::Value>().await.unwrap()["code"],
        "unauthorized"
    );
    let unknown = delete(3, "alice", "ses_nope").await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<serde_json::Value>().await.unwrap()["code"],
        "session_not_found"
    );
    let ok = delete(3, "alice", &sid).await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["session_id"], sid.as_str());
    assert!(body["terminated_at"].is_string() && body["duration_seconds"].is_u64());
    for peer in [&mut r, &mut o] {
        let f = peer.expect("terminated").await;
        assert_eq!(f["reason"], "client_request");
        assert_eq!(peer.closed().await, 4002);
    }
    let notice = watcher.expect("session_terminated").await;
    assert_eq!(notice["session_id"], sid.as_str());
    assert_eq!(notice["operator"], "alice");
    assert_eq!(notice["robot"], "robot-t");
    assert_eq!(notice["reason"], "client_request");
    assert!(notice["terminated_at"].is_string() && notice["duration_seconds"].is_u64());
    let told = owner.expect("session_terminated").await;
    assert_eq!(told, notice, "the owner gets the seed's notification");
    // Node 3 has sent its notices (the watcher there has one): none went to the bystander.
    bystander.send(json!({"type": "ping"})).await;
    bystander.expect("pong").await;
    let twice = delete(1, "alice", &sid).await.unwrap();
    assert_eq!(twice.status(), 409);
    assert_eq!(
        twice.json::<serde_json::Value>().await.unwrap()["code"],
        "session_already_terminated"
    );
    // The robot is free for a new session.
    cluster.create_session(1, "bob", "robot-t").await;
    drop((watcher, owner, bystander, r, o));
    for node in 1..=3 {
        cluster.wait_signaling_idle(node).await;
    }
}

#[tokio::test]
async fn bad_tokens_and_bad_frames_get_clear_codes() {
    let cluster = TestCluster::start_with(3, |c| c.sessions.auth_timeout_ms = 300).await;
    let http = cluster.node(1).http;

    let mut silent = SignalClient::connect(http).await;
    silent.expect_error("auth_timeout").await;
    assert_eq!(silent.closed().await, 4408);

    for (token, code) in [("not-a-token".to_owned(), "invalid_token")] {
        let mut c = SignalClient::connect(http).await;
        c.send(json!({"type": "auth", "token": token})).await;
        c.expect_error(code).await;
        assert_eq!(c.closed().await, 4401);
    }
    // An admin connects as a watcher and may not join.
    let mut watcher = SignalClient::authed(http, &cluster.admin_token).await;
    watcher
        .send(json!({"type": "join", "session_id": "s"}))
        .await;
    watcher.expect_error("forbidden").await;

    let mut early = SignalClient::connect(http).await;
    early.send(json!({"type": "join", "session_id": "s"})).await;
    early.expect_error("unauthenticated").await;

    let mut op = SignalClient::authed(http, &cluster.token("eve", Role::Operator)).await;
    op.send_text("{nope".into()).await;
    op.expect_error("invalid_json").await;
    op.send(json!({"type": "dance"})).await;
    op.expect_error("unknown_type").await;
    op.send(json!({"type": "offer", "sdp": "hello"})).await;
    op.expect_error("invalid_sdp").await;
    op.send(json!({"type": "offer", "sdp": SDP})).await;
    op.expect_error("not_joined").await;
    // A token that names no session, or another one, is refused from the token alone.
    op.send(json!({"type": "join", "session_id": "ses_missing"}))
        .await;
    op.expect_error("forbidden").await;
    let ghost = tether_node::auth::Claims::session(
        "eve",
        "ses_missing",
        "robot-x",
        "jti-ghost",
        Duration::from_secs(60),
    );
    let ghost = cluster.secrets.minter().unwrap().mint(&ghost).unwrap();
    let mut ghost = SignalClient::authed(http, &ghost).await;
    ghost
        .send(json!({"type": "join", "session_id": "ses_missing"}))
        .await;
    ghost.expect_error("session_not_found").await;
    let session = cluster.create_session(1, "alice", "robot-x").await;
    op.send(json!({"type": "join", "session_id": session.session_id}))
        .await;
    op.expect_error("forbidden").await;
}

#[tokio::test]
async fn floods_and_oversized_frames_are_cut_off_without_harming_other_sessions() {
    let cluster = TestCluster::start_with(3, |c| {
        c.sessions.frames_per_second = 300;
        c.sessions.frame_burst = 300;
    })
    .await;
    let (mut r, mut o, _, _) = pair(&cluster, 1, 1, "alice", "robot-f").await;
    let mut flooder = SignalClient::authed(
        cluster.node(1).http,
        &cluster.token("flood", Role::Operator),
    )
    .await;
    for _ in 0..1000 {
        flooder.send(json!({"type": "ping"})).await;
    }
    assert_eq!(flooder.closed().await, 4029);
    let mut big =
        SignalClient::authed(cluster.node(1).http, &cluster.token("big", Role::Operator)).await;
    big.send_text(format!(
        "{{\"type\":\"offer\",\"sdp\":\"{}\"}}",
        "a".repeat(100_000)
    ))
    .await;
    assert_ne!(big.closed().await, 1000);
    exchange(&mut r, &mut o).await;
}

#[tokio::test]
async fn a_node_cut_off_from_the_quorum_refuses_joins_and_stops_leases() {
    let mut cluster = TestCluster::start(3).await;
    let mut r =
        SignalClient::authed(cluster.node(1).http, &cluster.token("robot-q", Role::Robot)).await;
    let session = cluster.create_session(1, "alice", "robot-q").await;
    r.expect("session_assigned").await;
    r.ask_lease(&session.session_id, 7).await;
    let lease = r.expect("lease").await;
    assert_eq!(lease["session_id"], session.session_id.as_str());
    assert_eq!(lease["ttl_ms"], 1000);
    assert_eq!(lease["nonce"], 7, "the robot's own nonce comes back");
    cluster.kill(2);
    cluster.kill(3);
    let mut o = SignalClient::authed(cluster.node(1).http, &session.token).await;
    // A join the token cannot make is refused from local state at once: no quorum round
    // (which would fail here with `unavailable`) is spent on it.
    for other in ["ses_other", "ses_another"] {
        o.send(json!({"type": "join", "session_id": other})).await;
        o.expect_error("forbidden").await;
    }
    o.send(json!({"type": "join", "session_id": session.session_id}))
        .await;
    // Leases already in flight may still arrive on the robot; the operator's join fails closed.
    o.expect_error("unavailable").await;
    // Without a quorum the node grants no lease: the robot hears none for over a lease.
    let leases = r
        .leases_within(&session.session_id, Duration::from_millis(1500))
        .await;
    assert_eq!(leases, 0, "no lease may be granted without a quorum");
}

#[tokio::test]
async fn a_dropped_robot_rejoins_through_admission_and_a_full_node_refuses_more_sockets() {
    let cluster = TestCluster::start_with(3, |c| c.sessions.max_connections = 4).await;
    let http = cluster.node(1).http;
    let (r, mut o, sid, _) = pair(&cluster, 1, 1, "alice", "robot-re").await;
    drop(r);
    o.expect("peer_left").await;
    let mut again = SignalClient::authed(http, &cluster.token("robot-re", Role::Robot)).await;
    assert_eq!(
        again.expect("session_assigned").await["session_id"],
        sid.as_str()
    );
    again.send(json!({"type": "join", "session_id": sid})).await;
    assert_eq!(again.expect("joined").await["peer_present"], true);
    o.expect("peer_joined").await;
    exchange(&mut again, &mut o).await;

    let _third = SignalClient::connect(http).await;
    let _fourth = SignalClient::connect(http).await;
    let refused = wait_until("the node to be full", WAIT, || async {
        match tokio_tungstenite::connect_async(format!("ws://{http}/v1/signal")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Some(response.status().as_u16())
            }
            _ => None,
        }
    })
    .await;
    assert_eq!(refused, 503);
}

#[tokio::test]
async fn a_live_node_partitioned_into_a_minority_fails_closed_and_stops_leases() {
    let cluster = TestCluster::start(3).await;
    // Cut off the leader itself: it keeps believing it leads for a while, which is the
    // hardest case for S2.
    let cut = cluster.leader().await;
    let mut r = SignalClient::authed(
        cluster.node(cut).http,
        &cluster.token("robot-p", Role::Robot),
    )
    .await;
    let session = cluster.create_session(cut, "alice", "robot-p").await;
    let sid = session.session_id.clone();
    r.expect("session_assigned").await;
    r.ask_lease(&sid, 1).await;
    r.expect("lease").await;
    let isolation = cluster.isolate(cut);
    // The majority revokes; the cut-off node cannot hear it.
    let majority = cluster.running().into_iter().find(|id| *id != cut).unwrap();
    cluster
        .client(majority)
        .revoke(&Target::Session(sid.clone()), "partitioned", None)
        .await
        .unwrap();
    let mut o = SignalClient::authed(cluster.node(cut).http, &session.token).await;
    o.send(json!({"type": "join", "session_id": sid})).await;
    o.expect_error("unavailable").await;
    let leases = r.leases_within(&sid, Duration::from_millis(1500)).await;
    assert_eq!(leases, 0, "a node without a quorum grants no lease");
    // Healed, it learns the revocation and tears the session down.
    isolation.heal();
    for peer in [&mut r, &mut o] {
        assert_eq!(peer.expect("revoked").await["reason"], "partitioned");
        assert_eq!(peer.closed().await, 4001);
    }
    let mut late = SignalClient::connect(cluster.node(cut).http).await;
    late.send(json!({"type": "auth", "token": session.token}))
        .await;
    late.expect_error("session_revoked").await;
}

#[tokio::test]
async fn a_node_removed_from_the_cluster_has_its_members_dropped_from_the_other_nodes_rooms() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let gone = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    let stays = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader && *id != gone)
        .unwrap();
    // The robot on the node that will be removed, the operator on another.
    let (_r, mut o, _sid, _) = pair(&cluster, gone, stays, "alice", "robot-gone").await;
    cluster.client(leader).remove_member(gone).await.unwrap();
    // Before, the room kept the removed node's robot forever and relays to it stalled.
    o.expect("peer_left").await;
    o.send(json!({"type": "offer", "sdp": SDP})).await;
    o.expect_error("peer_not_present").await;
}
