//! The robot side end to end: a real `tether agent` and a real `tether console` talking
//! WebRTC on loopback through a real cluster. Video flows, control moves the simulated robot,
//! and the robot safe-stops on revoke (S5), on control loss (S6) and on lease expiry (S7).

use serde_json::Value;
use std::time::Duration;
use tether_agent::events::{millis, monotonic_now};
use tether_api::Target;
use tether_node::auth::Claims;
use tether_tests::TestCluster;

fn t_ms(e: &Value) -> f64 {
    e["t_ms"].as_f64().expect("t_ms")
}

#[tokio::test]
async fn video_and_control_flow_and_a_revoke_safe_stops_the_robot_and_ends_the_console() {
    let cluster = TestCluster::start(3).await;
    // Robot on node 1, console on node 2, revoke through node 3.
    let robot = cluster.agent("robot-v", &[1]).await;
    let mut console = cluster.console(2, "alice", "robot-v", &["--linear", "0.5"]);
    let sid = console.session_id().await;
    console.events.wait("video_frame", |_| true).await;
    robot
        .events
        .wait("armed", |e| e["session_id"] == sid.as_str())
        .await;
    let applied = robot
        .events
        .wait("command_applied", |e| e["seq"].as_u64() >= Some(3))
        .await;
    assert_eq!(applied["linear"], 0.5);

    let accepted = millis(monotonic_now());
    cluster
        .client(3)
        .revoke(&Target::Session(sid.clone()), "badge expired", None)
        .await
        .expect("revoking");
    let stop = robot
        .events
        .wait("safe_stop", |e| e["cause"] == "revoked")
        .await;
    assert_eq!(stop["session_id"], sid.as_str());
    assert!(t_ms(&stop) - accepted < 1000.0, "safe-stop took too long");
    // Nothing is applied after the stop, even if commands were in flight.
    let late = robot
        .events
        .read()
        .into_iter()
        .filter(|e| e["event"] == "command_applied" && t_ms(e) > t_ms(&stop))
        .count();
    assert_eq!(late, 0);
    let (code, out) = console.exit().await;
    assert_eq!(code, 3, "the console exits with the revoked code: {out}");
    assert!(out.contains("revoked: badge expired"), "{out}");
}

#[tokio::test]
async fn killing_the_console_stops_the_robot_on_control_loss() {
    let cluster = TestCluster::start(3).await;
    let robot = cluster.agent("robot-c", &[1, 2, 3]).await;
    let mut console = cluster.console(1, "alice", "robot-c", &[]);
    robot
        .events
        .wait("command_applied", |e| e["seq"].as_u64() >= Some(3))
        .await;
    console.process.kill();
    let stop = robot
        .events
        .wait("safe_stop", |e| e["cause"] == "control_loss")
        .await;
    let last_command = robot
        .events
        .read()
        .into_iter()
        .filter(|e| e["event"] == "command_applied")
        .map(|e| t_ms(&e))
        .fold(0.0, f64::max);
    let gap = t_ms(&stop) - last_command;
    // The timeout is 300 ms; the watchdog fires at the deadline, within a small margin.
    assert!(
        (300.0..450.0).contains(&gap),
        "control loss stopped the robot {gap} ms after its last command"
    );
}

#[tokio::test]
async fn an_agent_cut_off_from_every_gateway_stops_when_its_lease_runs_out() {
    let cluster = TestCluster::start(3).await;
    let robot = cluster.agent("robot-l", &[1, 2, 3]).await;
    let _console = cluster.console(2, "alice", "robot-l", &[]);
    robot
        .events
        .wait("command_applied", |e| e["seq"].as_u64() >= Some(3))
        .await;
    // The console keeps driving over WebRTC; only the gateways fall silent.
    let cut = cluster.cut_gateways();
    let cut_at = millis(monotonic_now());
    let stop = robot
        .events
        .wait("safe_stop", |e| e["cause"] == "lease_expired")
        .await;
    let after = t_ms(&stop) - cut_at;
    assert!(
        after <= 1000.0 + 100.0,
        "lease expiry stopped the robot {after} ms after the cut (TTL 1000 ms)"
    );
    // Control still arrives, but without a lease nothing is applied.
    let applied_after = robot
        .events
        .read()
        .into_iter()
        .filter(|e| e["event"] == "command_applied" && t_ms(e) > t_ms(&stop))
        .count();
    assert_eq!(applied_after, 0);
    // Healed, the agent reconnects, leases resume and the robot drives again.
    cut.heal();
    robot.events.wait("armed", |e| t_ms(e) > t_ms(&stop)).await;
}

#[tokio::test]
async fn the_robot_refuses_a_revoked_session_token_on_a_new_channel() {
    let cluster = TestCluster::start(3).await;
    let robot = cluster.agent("robot-r", &[1]).await;
    let mut first = cluster.console(1, "alice", "robot-r", &[]);
    let old_sid = first.session_id().await;
    robot
        .events
        .wait("auth_ok", |e| e["session_id"] == old_sid.as_str())
        .await;
    cluster
        .client(1)
        .revoke(&Target::Session(old_sid.clone()), "stolen laptop", None)
        .await
        .expect("revoking");
    assert_eq!(first.exit().await.0, 3);
    // A console with a fresh session presents a (validly signed) token for the revoked one.
    let claims = Claims::session(
        "alice",
        old_sid.clone(),
        "robot-r",
        "jti-stale",
        Duration::from_secs(300),
    );
    let stale = cluster
        .secrets
        .minter()
        .expect("minter")
        .mint(&claims)
        .expect("minting");
    let mut second = cluster.console(1, "alice", "robot-r", &["--auth-token", &stale]);
    let denied = robot
        .events
        .wait("auth_denied", |e| e["reason"] == "revoked")
        .await;
    assert!(denied["session_id"] != old_sid.as_str());
    let (code, out) = second.exit().await;
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("auth denied by the robot: revoked"), "{out}");
}

#[tokio::test]
async fn after_a_transient_network_loss_the_console_reconnects_and_authenticates_again() {
    let cluster = TestCluster::start(3).await;
    // The robot's media alone lives on 127.0.0.2, so it can be cut without touching signaling.
    let robot = cluster
        .agent_with("robot-n", &[1], &["--rtc-ip", "127.0.0.2"])
        .await;
    let mut console = cluster.console(2, "alice", "robot-n", &[]);
    let sid = console.session_id().await;
    robot
        .events
        .wait("command_applied", |e| e["seq"].as_u64() >= Some(3))
        .await;
    let cut = cluster.cut_media("127.0.0.2".parse().unwrap());
    // The robot stops on its own; the console notices and starts over.
    robot
        .events
        .wait("safe_stop", |e| e["cause"] == "control_loss")
        .await;
    console.events.wait("reconnecting", |_| true).await;
    cut.heal();
    // A new PeerConnection, a new `session` channel, a second auth, and the robot drives.
    let second_auth = tether_tests::wait_until("a second auth_ok", tether_tests::WAIT, || {
        let auths: Vec<Value> = robot
            .events
            .read()
            .into_iter()
            .filter(|e| e["event"] == "auth_ok" && e["session_id"] == sid.as_str())
            .collect();
        async move { auths.get(1).cloned() }
    })
    .await;
    robot
        .events
        .wait("armed", |e| t_ms(e) > t_ms(&second_auth))
        .await;
    robot
        .events
        .wait("command_applied", |e| t_ms(e) > t_ms(&second_auth))
        .await;
    // After a revoke, reconnecting is refused: the console ends with the revoked code.
    cluster
        .client(1)
        .revoke(&Target::Session(sid.clone()), "end of shift", None)
        .await
        .expect("revoking");
    assert_eq!(console.exit().await.0, 3);
}
