//! Limits that hold under abuse, through real sockets against a multi-process cluster:
//! readers that stop reading, revocations that overtake a backlog, sockets that never
//! authenticate, and floods of denied joins.

use serde_json::json;
use std::time::Duration;
use tether_api::Target;
use tether_node::auth::Role;
use tether_tests::{joined_pair as pair, wait_until, Seen, SignalClient, TestCluster, SDP, WAIT};

/// An SDP offer of about 30 KB (a valid one, padded), so a few hundred fill a socket.
fn big_offer() -> serde_json::Value {
    let padded = format!("{SDP}a=x-pad:{}\r\n", "p".repeat(30_000));
    json!({"type": "offer", "sdp": padded})
}

/// Whether `node` counts at least one `name` (unlabelled) in its metrics.
async fn counted(cluster: &TestCluster, node: u64, name: &str) -> bool {
    let scrape = tether_devkit::metrics::scrape(cluster.node(node).http).await;
    scrape.is_ok_and(|s| s.unlabelled().get(name).is_some_and(|v| *v >= 1.0))
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_peer_carries_on() {
    let cluster = TestCluster::start_with(3, |c| {
        c.sessions.frames_per_second = 10_000;
        c.sessions.frame_burst = 10_000;
        c.sessions.outbound_queue_frames = 256;
        c.sessions.write_stall_ms = 2_000;
    })
    .await;
    let (mut r, _stalled, _, _) = pair(&cluster, 1, 1, "alice", "robot-slow").await;
    // The operator never reads again; the robot offers far more than its socket can buffer
    // (offers to a full queue are dropped without a word to the robot, so it need not read
    // until its peer is gone).
    let offer = big_offer();
    let mut gone = false;
    // In batches far smaller than the robot's own queue: once its peer is gone, each
    // offer is answered with an error, and the robot must read those in time too.
    for _ in 0..50 {
        for _ in 0..20 {
            r.send(offer.clone()).await;
        }
        // The robot reads what it is sent meanwhile, as a live client does.
        while let Ok(seen) = tokio::time::timeout(Duration::from_millis(5), r.next()).await {
            match seen {
                Seen::Frame(f) if f["type"] == "peer_left" => gone = true,
                Seen::Frame(_) => {}
                Seen::Closed(code) => panic!("the robot was closed ({code}), not its stalled peer"),
            }
        }
        if gone {
            break;
        }
    }
    while !gone {
        match r.next().await {
            Seen::Frame(f) if f["type"] == "peer_left" => gone = true,
            Seen::Frame(_) => {}
            Seen::Closed(code) => panic!("the robot was closed ({code}), not its stalled peer"),
        }
    }
    assert!(counted(&cluster, 1, "tether_signal_too_slow_total").await);
    r.send(json!({"type": "ping"})).await;
    r.expect("pong").await;
}

#[tokio::test]
async fn a_revocation_overtakes_the_frames_a_slow_client_has_not_read() {
    let cluster = TestCluster::start_with(3, |c| {
        c.sessions.frames_per_second = 10_000;
        c.sessions.frame_burst = 10_000;
        c.sessions.outbound_queue_frames = 5_000;
        c.sessions.write_stall_ms = 30_000;
    })
    .await;
    let (mut r, mut o, sid, _) = pair(&cluster, 1, 1, "alice", "robot-backlog").await;
    let offer = big_offer();
    let sent = 1_000;
    for _ in 0..sent {
        r.send(offer.clone()).await;
    }
    // Past what the sockets buffer, offers wait in the node's queue for the operator.
    cluster
        .client(2)
        .revoke(&Target::Session(sid), "overtake", None)
        .await
        .unwrap();
    let mut offers = 0;
    loop {
        match o.next().await {
            Seen::Frame(f) if f["type"] == "offer" => offers += 1,
            Seen::Frame(f) if f["type"] == "revoked" => break,
            Seen::Frame(_) => {}
            Seen::Closed(code) => panic!("closed ({code}) before `revoked`"),
        }
    }
    assert!(
        offers < sent,
        "`revoked` waited behind all {sent} queued offers"
    );
    assert_eq!(o.closed().await, 4001);
}

#[tokio::test]
async fn sockets_that_never_authenticate_cannot_take_the_room_of_those_that_do() {
    let cluster = TestCluster::start_with(3, |c| {
        c.sessions.max_unauthenticated = 2;
        c.sessions.auth_timeout_ms = 60_000;
    })
    .await;
    let http = cluster.node(1).http;
    let idle = [
        SignalClient::connect(http).await,
        SignalClient::connect(http).await,
    ];
    let refused = match tokio_tungstenite::connect_async(format!("ws://{http}/v1/signal")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("a third unauthenticated socket was let in: {other:?}"),
    };
    assert_eq!(refused, 503);
    let scrape = tether_devkit::metrics::scrape(http).await.unwrap();
    assert!(scrape
        .text
        .contains(r#"tether_signal_refused_total{reason="unauthenticated"} 1"#));
    // A socket that authenticates gives its slot back: many more can follow it.
    drop(idle);
    let robot = cluster.token("robot-room", Role::Robot);
    let mut authed = Vec::new();
    for _ in 0..5 {
        let client = wait_until("a slot to authenticate in", WAIT, || async {
            SignalClient::try_connect(http).await
        })
        .await;
        authed.push(client.authenticate(&robot).await);
    }
}

#[tokio::test]
async fn a_flood_of_denied_joins_neither_costs_quorum_rounds_nor_fills_the_ledger() {
    let cluster = TestCluster::start_with(3, |c| {
        c.sessions.frames_per_second = 10_000;
        c.sessions.frame_burst = 10_000;
    })
    .await;
    let session = cluster.create_session(1, "mallory", "robot-flood").await;
    let mut flooder = SignalClient::authed(cluster.node(1).http, &session.token).await;
    let barriers = |scrape: &tether_devkit::metrics::Scrape| {
        (scrape.unlabelled())
            .get("tether_raft_read_barriers_total")
            .copied()
            .unwrap_or(0.0)
    };
    let before = tether_devkit::metrics::scrape(cluster.node(1).http)
        .await
        .unwrap();
    // In rounds of 100, each read before the next: a client that never reads its answers
    // is cut off (4006) long before a thousand.
    let flood = 1_000;
    for round in 0..flood / 100 {
        for i in 0..100 {
            let sid = format!("ses_other_{round}_{i}");
            flooder
                .send(json!({"type": "join", "session_id": sid}))
                .await;
        }
        for _ in 0..100 {
            flooder.expect_error("forbidden").await;
        }
    }
    let after = tether_devkit::metrics::scrape(cluster.node(1).http)
        .await
        .unwrap();
    // Refused from the token alone: not one read barrier for the whole flood (the lease
    // desk's are the only others, and no robot is connected).
    assert_eq!(barriers(&after), barriers(&before));
    let held_back = after.unlabelled()["tether_audit_suppressed_total"];
    assert!(held_back >= 700.0, "{held_back} denials held back");
    let ledger = wait_until("the ledger to be written", WAIT, || async {
        let records = cluster.client(1).audit_all().await.ok()?;
        let denials: Vec<_> = (records.into_iter())
            .filter(|r| r.event == "JOIN_DENIED")
            .collect();
        (denials.len() >= 100).then_some(denials)
    })
    .await;
    assert!(ledger.len() < 300, "{} denial records", ledger.len());
    // The next denial written once the limit allows tells how many were held back.
    let flooder = tokio::sync::Mutex::new(flooder);
    let told = wait_until("a record of the denials held back", WAIT, || async {
        let mut f = flooder.lock().await;
        f.send(json!({"type": "join", "session_id": "ses_after"}))
            .await;
        f.expect_error("forbidden").await;
        let records = cluster.client(1).audit_all().await.ok()?;
        let told: u64 = (records.iter())
            .filter_map(|r| r.detail["held_back_before"].as_u64())
            .sum();
        (told >= 700).then_some(told)
    })
    .await;
    // (The polls' own joins may add to it, once the limit holds them back too.)
    assert!(
        told as f64 >= held_back,
        "{told} told, {held_back} held back"
    );
    let mut flooder = flooder.into_inner();
    // The flooder's own session still works.
    flooder
        .send(json!({"type": "join", "session_id": session.session_id}))
        .await;
    flooder.expect("joined").await;
}
