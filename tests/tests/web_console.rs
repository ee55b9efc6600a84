//! The Web Console in Debian's headless Chromium, driven over WebDriver, against a real
//! cluster and a real robot agent: video frames arrive, a key press moves the simulated
//! robot, and a revoke shows the banner and stops the robot.

use std::time::Duration;
use tether_api::Target;
use tether_node::auth::Role;
use tether_tests::webdriver::Browser;
use tether_tests::{wait_until, TestCluster, WAIT};

#[tokio::test]
async fn the_browser_sees_video_drives_the_robot_and_shows_a_revoke() {
    assert!(
        Browser::available(),
        "chromium and chromium-driver are needed (`./x test` installs them)"
    );
    let cluster = TestCluster::start(3).await;
    let robot = cluster.agent("robot-w", &[1]).await;
    let browser = Browser::start(&cluster.dir.path().join("chromedriver.log")).await;
    let token = cluster.token("olivia", Role::Operator);
    browser
        .goto(&format!(
            "http://{}/?robot=robot-w&token={token}",
            cluster.node(2).http
        ))
        .await;
    browser.click("#start").await;

    // Live, with decoded video frames.
    let session_id = wait_until("live video in the browser", WAIT, || async {
        let t = browser.eval("return window.tether;").await;
        (t["state"] == "live" && t["framesDecoded"].as_u64() > Some(10))
            .then(|| t["sessionId"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    robot
        .events
        .wait("auth_ok", |e| e["session_id"] == session_id.as_str())
        .await;

    // Holding W drives the robot forward.
    browser.press("w", Duration::from_millis(600)).await;
    robot
        .events
        .wait("command_applied", |e| e["linear"] == 1.0)
        .await;

    // A revoke from any node: the banner shows the reason and the robot stops.
    cluster
        .client(3)
        .revoke(&Target::Session(session_id.clone()), "shift over", None)
        .await
        .expect("revoking");
    robot
        .events
        .wait("safe_stop", |e| e["cause"] == "revoked")
        .await;
    let banner = wait_until("the revoked banner", WAIT, || async {
        let b = browser
            .eval(
                "const b = document.getElementById('banner');
                 return {text: b.textContent, revoked: b.classList.contains('revoked'),
                         hidden: b.hidden, state: window.tether.state,
                         padDisabled: document.getElementById('pad-up').disabled};",
            )
            .await;
        (b["revoked"] == true && b["state"] == "ended").then_some(b)
    })
    .await;
    assert!(
        banner["text"]
            .as_str()
            .unwrap_or_default()
            .contains("shift over"),
        "{banner}"
    );
    assert_eq!(banner["hidden"], false);
    assert_eq!(banner["padDisabled"], true);
}
