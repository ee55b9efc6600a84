//! Issue 9 end to end: a revoked credential stops working everywhere (HTTP, signaling, open
//! connections), tokens stay in their audience, expiry holds on open connections, a robot
//! that reconnects hears how its last session ended, and retried writes apply once. Each
//! test drives the real `tether` binary in a 3-node cluster.

use serde_json::json;
use std::time::Duration;
use tether_api::{ClientError, Target};
use tether_node::auth::{Claims, Role};
use tether_tests::{SignalClient, TestCluster};

/// The API error code of a failed call.
fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Api { body, .. }) => body.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A token with the given claims, and its id.
fn mint(cluster: &TestCluster, claims: Claims) -> (String, String) {
    let jti = claims.jti.clone();
    (
        cluster
            .secrets
            .minter()
            .expect("minter")
            .mint(&claims)
            .expect("mint"),
        jti,
    )
}

#[tokio::test]
async fn a_session_token_is_not_an_http_credential_nor_a_robot_token_an_api_one() {
    let cluster = TestCluster::start(3).await;
    let session = cluster.create_session(1, "alice", "robot-aud").await;
    // Before audiences, a session token created sessions: after its session was revoked by
    // sid it could start another one for the same robot and drive again.
    let as_operator = cluster.client_with(2, &session.token);
    assert_eq!(
        code(as_operator.create_session("robot-aud").await),
        "wrong_audience"
    );
    assert_eq!(
        code(as_operator.refresh_session(&session.session_id).await),
        "wrong_audience"
    );
    assert_eq!(
        code(as_operator.end_session(&session.session_id).await),
        "wrong_audience"
    );
    let robot = cluster.client_with(1, &cluster.token("robot-aud", Role::Robot));
    assert_eq!(code(robot.sessions().await), "wrong_audience");
    // A login token cannot join a session on /v1/signal: only the session token does.
    let mut login = SignalClient::authed(
        cluster.node(1).http,
        &cluster.token("alice", Role::Operator),
    )
    .await;
    login
        .send(json!({"type": "join", "session_id": session.session_id}))
        .await;
    login.expect_error("forbidden").await;
}

#[tokio::test]
async fn a_login_token_revoked_by_jti_can_no_longer_create_refresh_or_end_sessions() {
    let cluster = TestCluster::start(3).await;
    let (login, jti) = mint(
        &cluster,
        Claims::new("bob", Role::Operator, Duration::from_secs(600)),
    );
    let bob = cluster.client_with(1, &login);
    let session = bob.create_session("robot-j").await.expect("a session");
    cluster
        .client(2)
        .revoke(&Target::Token(jti), "laptop stolen", None)
        .await
        .expect("revoke the login token");
    for node in [1, 2, 3] {
        let bob = cluster.client_with(node, &login);
        assert_eq!(
            code(bob.create_session("robot-k").await),
            "credential_revoked",
            "node {node}"
        );
        assert_eq!(
            code(bob.refresh_session(&session.session_id).await),
            "credential_revoked"
        );
        assert_eq!(
            code(bob.end_session(&session.session_id).await),
            "credential_revoked"
        );
    }
    // The revocation named the login token, not bob: a fresh login token still works.
    let fresh = cluster.client_with(3, &cluster.token("bob", Role::Operator));
    fresh
        .refresh_session(&session.session_id)
        .await
        .expect("refresh with a fresh token");
    fresh.end_session(&session.session_id).await.expect("end");
}

#[tokio::test]
async fn an_admin_token_revoked_by_jti_no_longer_administers_and_its_watch_closes() {
    let cluster = TestCluster::start(3).await;
    let (token, jti) = mint(
        &cluster,
        Claims::new("ada", Role::Admin, Duration::from_secs(600)),
    );
    let ada = cluster.client_with(1, &token);
    ada.cluster().await.expect("ada administers");
    let mut watch = SignalClient::authed(cluster.node(2).http, &token).await;
    cluster
        .client(3)
        .revoke(&Target::Token(jti), "ada left", None)
        .await
        .expect("revoke ada's token");
    assert_eq!(watch.expect("error").await["code"], "credential_revoked");
    assert_eq!(watch.closed().await, 4005);
    for node in [1, 2, 3] {
        let ada = cluster.client_with(node, &token);
        assert_eq!(code(ada.cluster().await), "credential_revoked");
        assert_eq!(
            code(ada.revoke(&Target::Operator("x".into()), "r", None).await),
            "credential_revoked"
        );
    }
    let mut again = SignalClient::connect(cluster.node(1).http).await;
    again.send(json!({"type": "auth", "token": token})).await;
    again.expect_error("credential_revoked").await;
    assert_eq!(again.closed().await, 4401);
}

#[tokio::test]
async fn a_robot_token_revoked_is_closed_at_once_and_gets_no_more_leases() {
    let cluster = TestCluster::start(3).await;
    let (token, jti) = mint(
        &cluster,
        Claims::new("robot-t", Role::Robot, Duration::from_secs(600)),
    );
    let mut r = SignalClient::authed(cluster.node(1).http, &token).await;
    let session = cluster.create_session(2, "alice", "robot-t").await;
    r.expect("session_assigned").await;
    r.send(json!({"type": "join", "session_id": session.session_id}))
        .await;
    r.expect("joined").await;
    r.ask_lease(&session.session_id, 1).await;
    r.expect("lease").await;
    cluster
        .client(3)
        .revoke(&Target::Token(jti.clone()), "robot stolen", None)
        .await
        .expect("revoke the robot's token");
    let error = r.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["message"].as_str()),
        (Some("credential_revoked"), Some("robot stolen"))
    );
    assert_eq!(r.closed().await, 4005);
    // It cannot come back with it, on any node.
    for node in [1, 2, 3] {
        let mut again = SignalClient::connect(cluster.node(node).http).await;
        again.send(json!({"type": "auth", "token": token})).await;
        again.expect_error("credential_revoked").await;
    }
    // The revocation lasts as long as any token could (7 days and a minute at least).
    let listed = cluster
        .client(1)
        .list(&[("kind", "token")])
        .await
        .expect("list");
    let entry = listed
        .items
        .iter()
        .find(|e| e.target == jti)
        .expect("listed");
    let expires =
        tether_api::time::parse_rfc3339(entry.expires_at.as_deref().expect("an expiry")).unwrap();
    let week = 7 * 24 * 3600 * 1000;
    assert!(expires >= tether_api::time::now_ms() + week, "{entry:?}");
}

#[tokio::test]
async fn a_robot_revoked_by_subject_is_closed_and_refused_everywhere() {
    let cluster = TestCluster::start(3).await;
    let token = cluster.token("robot-s", Role::Robot);
    let mut r = SignalClient::authed(cluster.node(2).http, &token).await;
    cluster
        .client(1)
        .revoke(&Target::Operator("robot-s".into()), "decommissioned", None)
        .await
        .unwrap();
    assert_eq!(r.expect("error").await["code"], "credential_revoked");
    assert_eq!(r.closed().await, 4005);
    // Node 3 refuses it from its own applied state (S1), once it has applied that far.
    (cluster.client(3))
        .list(&[("kind", "operator"), ("consistent", "true")])
        .await
        .unwrap();
    let mut again = SignalClient::connect(cluster.node(3).http).await;
    again.send(json!({"type": "auth", "token": token})).await;
    again.expect_error("credential_revoked").await;
}

#[tokio::test]
async fn a_connection_closes_at_its_tokens_expiry_unless_a_fresh_auth_extends_it() {
    let cluster = TestCluster::start(3).await;
    let short = |sub: &str| {
        mint(
            &cluster,
            Claims::new(sub, Role::Robot, Duration::from_secs(2)),
        )
        .0
    };
    // One robot lets its token run out: closed with 4004 (the leeway of a verification is
    // not a grace period for open connections).
    let mut idle = SignalClient::connect(cluster.node(1).http).await;
    idle.send(json!({"type": "auth", "token": short("robot-e1")}))
        .await;
    let ok = idle.expect("auth_ok").await;
    assert!(ok["expires_in_ms"].as_u64().unwrap() <= 2000, "{ok}");
    let started = std::time::Instant::now();
    assert_eq!(idle.expect("error").await["code"], "token_expired");
    assert_eq!(idle.closed().await, 4004);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Another re-authenticates before: it stays, past the first token's expiry.
    let mut kept = SignalClient::authed(cluster.node(2).http, &short("robot-e2")).await;
    let fresh = cluster.token("robot-e2", Role::Robot);
    kept.send(json!({"type": "auth", "token": fresh})).await;
    assert!(
        kept.expect("auth_ok").await["expires_in_ms"]
            .as_u64()
            .unwrap()
            > 3_000_000
    );
    // A token for someone else is refused and the connection keeps its own.
    kept.send(json!({"type": "auth", "token": cluster.token("robot-x", Role::Robot)}))
        .await;
    kept.expect_error("reauth_mismatch").await;
    tokio::time::sleep(Duration::from_millis(2500)).await; // past the first token's exp
    kept.send(json!({"type": "ping"})).await;
    kept.expect("pong").await;
}

#[tokio::test]
async fn a_robot_that_reconnects_hears_how_its_last_session_ended() {
    let cluster = TestCluster::start(3).await;
    let token = cluster.token("robot-f", Role::Robot);
    let r = SignalClient::authed(cluster.node(1).http, &token).await;
    let session = cluster.create_session(1, "alice", "robot-f").await;
    // The robot loses its gateway; meanwhile the session is revoked.
    drop(r);
    cluster
        .client(2)
        .revoke(&Target::Session(session.session_id.clone()), "unsafe", None)
        .await
        .unwrap();
    // It fails over to another node: auth_ok tells it the session was revoked.
    let mut r = SignalClient::connect(cluster.node(3).http).await;
    r.send(json!({"type": "auth", "token": token})).await;
    let ok = r.expect("auth_ok").await;
    assert_eq!(
        ok["last_session"]["session_id"],
        session.session_id.as_str(),
        "{ok}"
    );
    assert_eq!(ok["last_session"]["state"], "revoked");
    assert_eq!(ok["last_session"]["reason"], "unsafe");
    // And a join for it is refused with the reason's code.
    r.send(json!({"type": "join", "session_id": session.session_id}))
        .await;
    r.expect_error("session_revoked").await;
}

#[tokio::test]
async fn a_write_retried_with_its_idempotency_key_applies_once() {
    let cluster = TestCluster::start(3).await;
    let alice = cluster.client_with(1, &cluster.token("alice", Role::Operator));
    // A start whose answer was lost, retried (on another node): its session, not robot_busy.
    let first = alice
        .with_idempotency_key("start-1")
        .create_session("robot-i")
        .await
        .unwrap();
    let retried = cluster
        .client_with(2, &cluster.token("alice", Role::Operator))
        .with_idempotency_key("start-1")
        .create_session("robot-i")
        .await
        .expect("the retry answers the first start");
    assert_eq!(retried.session_id, first.session_id);
    assert_eq!(
        code(alice.create_session("robot-i").await),
        "robot_busy",
        "a new start is refused"
    );
    // An end retried: success twice; a new end is refused.
    let end = alice.with_idempotency_key("end-1");
    end.end_session(&first.session_id).await.unwrap();
    end.end_session(&first.session_id)
        .await
        .expect("the retry answers the end");
    assert_eq!(
        code(alice.end_session(&first.session_id).await),
        "session_already_terminated"
    );
    // A lift retried after a later revocation must not lift that one.
    let admin = cluster.client(3);
    let op = Target::Operator("mallory".into());
    admin.revoke(&op, "first", None).await.unwrap();
    admin
        .with_idempotency_key("lift-1")
        .lift("mallory")
        .await
        .unwrap();
    admin.revoke(&op, "second", None).await.unwrap();
    admin
        .with_idempotency_key("lift-1")
        .lift("mallory")
        .await
        .expect("the retry answers the lift");
    let listed = admin.list(&[("kind", "operator")]).await.unwrap();
    assert!(
        listed
            .items
            .iter()
            .any(|e| e.target == "mallory" && e.reason == "second"),
        "{listed:?}"
    );
    // A bad key is refused with a clear code.
    assert_eq!(
        code(
            alice
                .with_idempotency_key("")
                .create_session("robot-z")
                .await
        ),
        "invalid_request"
    );
}
