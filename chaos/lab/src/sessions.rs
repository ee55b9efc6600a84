//! The session workload of a chaos run: operators start sessions on random nodes, join them
//! over signaling with their session tokens, and either end them or have them revoked and
//! then try to rejoin (which every node must refuse). Every call goes in the history, so
//! `no_stale_admission` and `liveness` have something to judge.

use crate::cluster::LabCluster;
use crate::recorder::{completion, recorded_revoke, Recorder};
use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tether_api::signal::{Incoming, SignalSocket};
use tether_api::Client;
use tether_chaos::history::{Body, Op, RevokeKind, Side};
use tether_node::auth::{Claims, Role};

/// How long a join may take before its outcome counts as unknown.
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The token id (`jti`) a JWT carries.
fn token_id(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["jti"].as_str().map(str::to_owned)
}

/// One join over signaling: `Ok` when admitted, `Err(Some(code))` when denied, `Err(None)`
/// when the outcome is unknown (no answer in time, a lost socket).
async fn join(
    cluster: &LabCluster,
    node: u64,
    token: &str,
    sid: &str,
) -> Result<(), Option<String>> {
    let attempt = async {
        let mut ws = SignalSocket::connect(&cluster.node(node).http.to_string())
            .await
            .map_err(|_| None)?;
        if let Err(e) = ws.authenticate(token).await {
            // A refused auth names its code first ("session_revoked: …").
            let text = e.to_string();
            let code = text
                .split(':')
                .find(|s| s.contains('_'))
                .map(|s| s.trim().to_owned());
            return Err(code);
        }
        ws.send_json(&serde_json::json!({"type": "join", "session_id": sid}))
            .await
            .map_err(|_| None)?;
        loop {
            match ws.next().await {
                Incoming::Frame(f) if f["type"] == "joined" => return Ok(()),
                Incoming::Frame(f) if f["type"] == "error" => {
                    return Err(f["code"].as_str().map(str::to_owned))
                }
                Incoming::Frame(_) => continue,
                Incoming::Closed(_) => return Err(None),
            }
        }
    };
    tokio::time::timeout(JOIN_TIMEOUT, attempt)
        .await
        .unwrap_or(Err(None))
}

fn join_completion(op: Op, result: Result<(), Option<String>>) -> Body {
    match result {
        Ok(()) => Body::Ok { op },
        // A denial, `unavailable` included (the node failed closed): nothing was admitted.
        Err(Some(code)) => Body::Fail {
            op,
            error: Some(code),
        },
        Err(None) => Body::Info {
            op,
            error: Some("no answer".into()),
        },
    }
}

/// One operator: start, join, then end or revoke-and-rejoin, on random nodes, until `stop`.
pub(crate) async fn operator(
    cluster: Arc<LabCluster>,
    recorder: Recorder,
    index: usize,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5e55_1015 ^ index as u64);
    let process = format!("operator-{index}");
    let admin_process = format!("operator-{index}-admin");
    let name = format!("op-{index}");
    let claims = Claims::new(&name, Role::Operator, Duration::from_secs(3600));
    let login_jti = claims.jti.clone();
    let Ok(login) = cluster
        .secrets
        .minter()
        .and_then(|m| m.mint(&claims).map_err(std::io::Error::other))
    else {
        return;
    };
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let pick = |rng: &mut StdRng| ids[rng.random_range(0..ids.len())];
    for n in 0u64.. {
        if *stop.borrow() {
            return;
        }
        // Start a session for a robot of its own (never busy).
        let node = pick(&mut rng);
        let robot = format!("robot-{index}-{n}");
        let mut op = Op::StartSession {
            operator: name.clone(),
            robot: robot.clone(),
            session_id: None,
            token_id: None,
            credential: Some(login_jti.clone()),
        };
        recorder.push(&process, Some(node), Body::Invoke { op: op.clone() });
        let client = Client::with_timeout(
            &cluster.node(node).http.to_string(),
            &login,
            Duration::from_secs(5),
        );
        let started = client.create_session(&robot).await;
        let session = match started {
            Ok(s) => {
                if let Op::StartSession {
                    session_id,
                    token_id: jti,
                    ..
                } = &mut op
                {
                    *session_id = Some(s.session_id.clone());
                    *jti = token_id(&s.token);
                }
                recorder.push(&process, Some(node), Body::Ok { op });
                s
            }
            Err(e) => {
                recorder.push(&process, Some(node), completion(op, Err(e)));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let sid = session.session_id.clone();
        let jti = token_id(&session.token);
        let join_op = || Op::Join {
            session_id: sid.clone(),
            side: Side::Operator,
            credential: jti.clone(),
        };
        let node = pick(&mut rng);
        recorder.push(&process, Some(node), Body::Invoke { op: join_op() });
        let joined = join(&cluster, node, &session.token, &sid).await;
        recorder.push(&process, Some(node), join_completion(join_op(), joined));
        if rng.random_bool(0.5) {
            let node = pick(&mut rng);
            let op = Op::EndSession {
                session_id: sid.clone(),
            };
            recorder.push(&process, Some(node), Body::Invoke { op: op.clone() });
            let ended = Client::with_timeout(
                &cluster.node(node).http.to_string(),
                &login,
                Duration::from_secs(5),
            )
            .end_session(&sid)
            .await
            .map(|_| ());
            recorder.push(&process, Some(node), completion(op, ended));
            continue;
        }
        // Revoke it, then try to come back on a random node: a stale admission if let in.
        let node = pick(&mut rng);
        let what = (RevokeKind::Session, sid.as_str());
        if recorded_revoke(&cluster, &recorder, &admin_process, node, what, "chaos").await {
            // Every node must refuse it now, a node cut off from the quorum included (it
            // cannot know of the revocation, and must fail closed).
            for node in ids.iter().copied() {
                recorder.push(&process, Some(node), Body::Invoke { op: join_op() });
                let rejoined = join(&cluster, node, &session.token, &sid).await;
                recorder.push(&process, Some(node), join_completion(join_op(), rejoined));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..40))).await;
    }
}

/// A session the cut-off node knows as active, whose revocation it cannot hear.
pub(crate) struct Probe {
    sid: String,
    token: String,
    jti: Option<String>,
}

/// Before a node is cut off: starts a session through another node and waits until the
/// node to be cut off has applied it (up to 5 s).
pub(crate) async fn probe_before(
    cluster: &LabCluster,
    recorder: &Recorder,
    cut: u64,
) -> Option<Probe> {
    let other = cluster.nodes.iter().map(|n| n.id).find(|id| *id != cut)?;
    let claims = Claims::new("prober", Role::Operator, Duration::from_secs(3600));
    let login = cluster.secrets.minter().ok()?.mint(&claims).ok()?;
    let client = Client::with_timeout(
        &cluster.node(other).http.to_string(),
        &login,
        Duration::from_secs(5),
    );
    let mut op = Op::StartSession {
        operator: "prober".into(),
        robot: "robot-probe".into(),
        session_id: None,
        token_id: None,
        credential: Some(claims.jti.clone()),
    };
    recorder.push("probe", Some(other), Body::Invoke { op: op.clone() });
    let session = client.create_session("robot-probe").await.ok()?;
    let jti = token_id(&session.token);
    if let Op::StartSession {
        session_id,
        token_id,
        ..
    } = &mut op
    {
        *session_id = Some(session.session_id.clone());
        *token_id = jti.clone();
    }
    recorder.push("probe", Some(other), Body::Ok { op });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        let known = cluster
            .client(cut)
            .sessions()
            .await
            .ok()
            .is_some_and(|l| l.items.iter().any(|s| s.session_id == session.session_id));
        if known {
            return Some(Probe {
                sid: session.session_id,
                token: session.token,
                jti,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Once the node is cut off: revokes the probe's session through the majority, then joins
/// it on the cut-off node, which cannot confirm with a quorum and must refuse.
pub(crate) async fn probe_during(
    cluster: &LabCluster,
    recorder: &Recorder,
    cut: u64,
    probe: Probe,
) {
    let Some(other) = cluster.nodes.iter().map(|n| n.id).find(|id| *id != cut) else {
        return;
    };
    let what = (RevokeKind::Session, probe.sid.as_str());
    if !recorded_revoke(cluster, recorder, "probe-admin", other, what, "probe").await {
        return;
    }
    let join_op = Op::Join {
        session_id: probe.sid.clone(),
        side: Side::Operator,
        credential: probe.jti.clone(),
    };
    recorder.push(
        "probe",
        Some(cut),
        Body::Invoke {
            op: join_op.clone(),
        },
    );
    let joined = join(cluster, cut, &probe.token, &probe.sid).await;
    recorder.push("probe", Some(cut), join_completion(join_op, joined));
}
