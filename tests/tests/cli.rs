//! The command line as a newcomer uses it: `tether dev`, then `tether revoke`, `tether token
//! mint` and `tether cluster status` from the same directory; Ctrl-C stops every node.

use std::process::{Command, Stdio};
use std::time::Duration;
use tether_devkit::ClusterFile;
use tether_tests::{tether_bin, wait_until, WAIT};

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tether(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(tether_bin())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("running tether")
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[tokio::test]
async fn dev_cluster_then_revoke_mint_and_status_from_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = KillOnDrop(
        Command::new(tether_bin())
            .args(["dev", "--nodes", "3", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let file: ClusterFile = wait_until("cluster.json", WAIT, || async {
        ClusterFile::load(dir.path()).ok()
    })
    .await;
    assert_eq!(file.nodes.len(), 3);
    assert!(file.nodes.iter().all(|n| n.config.exists() && alive(n.pid)));

    let out = tether(
        dir.path(),
        &["revoke", "--session", "cli-1", "--reason", "from the cli"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["revocation"]["target"], "cli-1");
    assert_eq!(body["created"], true);

    let out = tether(dir.path(), &["cluster", "status"]);
    assert!(out.status.success());
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 3);
    assert!(view["leader"].is_u64());

    let out = tether(
        dir.path(),
        &["token", "mint", "--operator", "alice", "--ttl", "60"],
    );
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    assert_eq!(token.trim().split('.').count(), 3);

    let out = tether(
        dir.path(),
        &[
            "revoke",
            "--operator",
            "alice",
            "--reason",
            "r",
            "--admin-token",
            token.trim(),
        ],
    );
    assert!(!out.status.success(), "an operator token must not revoke");
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));

    // Ctrl-C stops every node.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || dev.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    for n in &file.nodes {
        wait_until(
            "node processes to exit",
            Duration::from_secs(10),
            || async { (!alive(n.pid)).then_some(()) },
        )
        .await;
    }
}
