//! HTTPS and WSS against a cluster that serves them: clients that pin the cluster CA get
//! through, others do not, a new certificate is picked up without a restart, and slow
//! clients cannot hold connections open.

use serde_json::json;
use tether_api::Target;
use tether_node::auth::Role;
use tether_tests::{wait_until, SignalClient, TestCluster, SDP, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn https_cluster() -> TestCluster {
    TestCluster::start_with(3, |c| {
        tether_devkit::pki::serve_https(c).expect("an HTTPS certificate");
        c.http.header_timeout_ms = 500;
        c.http.body_timeout_ms = 500;
    })
    .await
}

/// The certificate node `http` presents to a client trusting the cluster CA.
async fn presented_certificate(cluster: &TestCluster, http: std::net::SocketAddr) -> Vec<u8> {
    let ca = std::fs::read(cluster.secrets.ca_cert()).unwrap();
    let config = tether_api::tls::config_for(Some(&ca)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (_, session) = tls.get_ref();
    session.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn clients_that_pin_the_cluster_ca_use_https_and_wss_and_others_get_nothing() {
    let cluster = https_cluster().await;
    let node = cluster.node(1);
    assert!(node.url.starts_with("https://"), "{}", node.url);
    // The admin API over HTTPS (the test process pins the cluster CA).
    cluster
        .client(1)
        .revoke(&Target::Token("jti-tls".into()), "tls", None)
        .await
        .unwrap();
    // A client that trusts only the system's roots refuses the node's certificate.
    let system = tether_api::tls::config_for(None).unwrap();
    let untrusting = reqwest::Client::builder()
        .tls_backend_preconfigured(system)
        .build()
        .unwrap();
    let refused = untrusting.get(format!("{}/healthz", node.url)).send().await;
    assert!(refused.is_err(), "{refused:?}");
    // Plain HTTP to the TLS port gets no answer.
    let plain = (tether_api::tls::http())
        .get(format!("http://{}/healthz", node.http))
        .send()
        .await;
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "{plain:?}"
    );

    // Signaling over WSS, across nodes: a robot on node 1, its operator on node 2.
    let mut robot = SignalClient::connect_to(&node.url)
        .await
        .authenticate(&cluster.token("robot-tls", Role::Robot))
        .await;
    let session = cluster.create_session(2, "alice", "robot-tls").await;
    robot.expect("session_assigned").await;
    robot
        .send(json!({"type": "join", "session_id": session.session_id}))
        .await;
    robot.expect("joined").await;
    let mut operator = SignalClient::connect_to(&cluster.node(2).url)
        .await
        .authenticate(&session.token)
        .await;
    operator
        .send(json!({"type": "join", "session_id": session.session_id}))
        .await;
    operator.expect("joined").await;
    robot.expect("peer_joined").await;
    operator.send(json!({"type": "offer", "sdp": SDP})).await;
    assert_eq!(robot.expect("offer").await["sdp"], SDP);
    cluster
        .client(3)
        .revoke(&Target::Session(session.session_id.clone()), "tls", None)
        .await
        .unwrap();
    robot.expect("revoked").await;
    operator.expect("revoked").await;
}

#[tokio::test]
async fn a_new_certificate_is_served_without_a_restart() {
    let cluster = https_cluster().await;
    let http = cluster.node(1).http;
    let before = presented_certificate(&cluster, http).await;
    let (cert_file, _) = cluster
        .secrets
        .issue_https(&["127.0.0.1", "localhost"])
        .unwrap();
    let after = wait_until("the new certificate to be served", WAIT, || async {
        let now = presented_certificate(&cluster, http).await;
        (now != before).then_some(now)
    })
    .await;
    let file = std::fs::read(cert_file).unwrap();
    let file = rustls::pki_types::pem::PemObject::from_pem_slice(&file)
        .map(|c: rustls::pki_types::CertificateDer| c.to_vec())
        .unwrap();
    assert_eq!(after, file, "the node serves the file's certificate");
    // And the cluster is none the worse for it.
    cluster.client(1).cluster().await.unwrap();
}

#[tokio::test]
async fn a_client_that_sends_its_request_slowly_is_cut_off_and_others_are_served() {
    let cluster = TestCluster::start_with(3, |c| {
        c.http.header_timeout_ms = 300;
        c.http.body_timeout_ms = 300;
    })
    .await;
    let http = cluster.node(1).http;
    // Slowloris: half a request head, then nothing.
    let mut slow_head = tokio::net::TcpStream::connect(http).await.unwrap();
    slow_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: tether\r\n")
        .await
        .unwrap();
    // A body trickled: the head promises 100 bytes, 10 come.
    let mut slow_body = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST /v1/revocations HTTP/1.1\r\nHost: tether\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"jti\":\"x",
        cluster.admin_token
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    // An idle connection that never sends anything.
    let mut idle = tokio::net::TcpStream::connect(http).await.unwrap();

    for (what, socket) in [
        ("half a head", &mut slow_head),
        ("a trickled body", &mut slow_body),
        ("an idle connection", &mut idle),
    ] {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(WAIT, socket.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{what} was held open");
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408") || answer.contains(" 4"),
            "{what}: {answer}"
        );
    }
    // Nothing was written, and the node serves honest clients.
    let listed = cluster
        .client(1)
        .list(&[("kind", "token"), ("consistent", "true")])
        .await
        .unwrap();
    assert!(listed.items.is_empty());
}
