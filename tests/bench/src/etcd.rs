//! etcd beside Tether in `tether bench raft`: a 3-member etcd cluster (Debian's
//! `etcd-server`) on loopback with its default durability (fsync on), driven the same way
//! as Tether: puts posted to a follower over etcd's JSON gateway, one client sequentially
//! and many concurrently, so the two are compared in one run on one machine.

use crate::report::Latency;
use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tether_devkit::ChildProcess;

/// Something the load loops can write one key to.
pub(crate) trait Put: Clone + Send + Sync + 'static {
    /// Writes `key`; `Ok` after the system acknowledged it.
    fn put(&self, key: String) -> impl std::future::Future<Output = Result<()>> + Send;
}

/// A running 3-member etcd cluster; killed on drop.
pub(crate) struct EtcdCluster {
    _members: Vec<ChildProcess>,
    /// A follower's put endpoint.
    pub(crate) follower: EtcdPut,
}

/// Puts through one member's JSON gateway.
#[derive(Clone)]
pub(crate) struct EtcdPut {
    http: reqwest::Client,
    url: String,
}

impl Put for EtcdPut {
    async fn put(&self, key: String) -> Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let response = self
            .http
            .post(format!("{}/v3/kv/put", self.url))
            .json(&json!({ "key": b64.encode(key), "value": b64.encode("bench") }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("etcd put: {}", response.status());
        }
        Ok(())
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdCluster {
    /// Starts three members of `bin` under `dir` and waits until one is leader.
    pub(crate) async fn start(bin: &Path, dir: &Path) -> Result<Self> {
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
            .collect();
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.join(format!("etcd{i}.log")))?;
            let mut command = Command::new(bin);
            command
                .arg("--name")
                .arg(format!("e{i}"))
                .arg("--data-dir")
                .arg(dir.join(format!("etcd{i}")))
                .arg("--listen-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--advertise-client-urls")
                .arg(format!("http://127.0.0.1:{client}"))
                .arg("--listen-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{peer}"))
                .arg("--initial-cluster")
                .arg(initial.join(","))
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg("tether-bench")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            members.push(ChildProcess::spawn(command).context("starting etcd")?);
        }
        let http = tether_api::tls::http();
        let urls: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        let follower = loop {
            if let Some(url) = find_follower(&http, &urls).await {
                break url;
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not elect a leader within 30 s (logs in {})",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Ok(Self {
            _members: members,
            follower: EtcdPut {
                http,
                url: follower,
            },
        })
    }
}

/// The client URL of a member that is not the leader, once there is a leader.
async fn find_follower(http: &reqwest::Client, urls: &[String]) -> Option<String> {
    for url in urls {
        let status: Value = http
            .post(format!("{url}/v3/maintenance/status"))
            .json(&json!({}))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let leader = status["leader"].as_str()?;
        if leader != "0" && status["header"]["member_id"].as_str() != Some(leader) {
            return Some(url.clone());
        }
    }
    None
}

/// Tether's and etcd's figures from the same run.
#[derive(serde::Serialize, Debug)]
pub(crate) struct EtcdSideBySide {
    /// One client, sequential puts to a follower.
    pub(crate) one_client: Latency,
    /// Puts per second and latency with `clients` concurrent clients.
    pub(crate) concurrent_per_second: f64,
    /// Their latency.
    pub(crate) concurrent_latency: Latency,
    /// How many clients.
    pub(crate) clients: usize,
}
