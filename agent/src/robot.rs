//! The robot agent: stays connected to a gateway (failing over across the given ones, and
//! re-authenticating as its token is renewed), joins the sessions assigned to it, asks for
//! leases, answers the console's WebRTC offer with a video track, and feeds the safety core
//! from signaling (leases, revocations) and the DataChannels (auth, control). The core, not
//! WebRTC state, decides when the robot moves.

use crate::actuator::SimulatedRobot;
use crate::events::EventLog;
use crate::gateway::{self, Connection, GatewayEvent, Reauth};
use crate::guard::SafetyGuard;
use crate::link::SessionMessage;
use crate::safety::{Credentials, DenyReason, Effect, SafetyConfig, StopCause};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_api::signal::{Incoming, SignalError, SignalSocket};
use tether_signaling::protocol::ClientFrame;
use tokio::sync::mpsc;
use webrtc::peer_connection::RTCIceCandidateInit;

pub use crate::gateway::TokenSource;

mod session;

/// Checks a session token presented on the `session` channel: signature, expiry, kind
/// (a session token, nothing else). The node binary implements it with the cluster's
/// public key; the core does the rest. `Credentials::expires_in` is the token's `exp` minus
/// wall-clock now.
pub trait TokenCheck: Send + Sync {
    /// The verified claims, or why not.
    fn check(&self, token: &str) -> Result<Credentials, DenyReason>;
}

/// How the agent runs.
pub struct AgentOptions {
    /// Gateways' HTTP base URLs, tried in turn.
    pub gateways: Vec<String>,
    /// Where the robot token comes from; read again every second, and sent on the live
    /// connection when it changes. Reconnects use the newest.
    pub token: TokenSource,
    /// Safety tunables.
    pub safety: SafetyConfig,
    /// The address WebRTC binds (its only host candidate).
    pub rtc_ip: IpAddr,
    /// Where events go.
    pub events: EventLog,
}

/// How long connecting to one gateway may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the token source is read again.
const TOKEN_POLL: Duration = Duration::from_secs(1);

/// A running agent.
pub struct Agent {
    options: AgentOptions,
    guard: Arc<SafetyGuard>,
    robot: SimulatedRobot,
    check: Arc<dyn TokenCheck>,
    peer: Mutex<Option<PeerHandle>>,
    /// The newest token read from the source (kept when a later read fails).
    token: Mutex<Option<String>>,
    /// Whether the last read of the token source failed (so a failing file warns once).
    token_failing: AtomicBool,
}

/// Commands to a peer's task.
enum PeerCommand {
    Candidate(RTCIceCandidateInit),
    Notify(SessionMessage),
    Close,
}

struct PeerHandle {
    session_id: String,
    commands: mpsc::UnboundedSender<PeerCommand>,
}

/// What a gateway frame asks of the connection loop.
#[derive(Debug, Default)]
struct Reply {
    /// Frames to send.
    send: Vec<ClientFrame>,
    /// Ask for a lease now (a new session, or a join admitted).
    ask_lease: bool,
    /// An offer to answer.
    offer: Option<String>,
}

impl Agent {
    /// Boots the safety core (in safe-stop) with a simulated robot.
    pub fn new(options: AgentOptions, check: Arc<dyn TokenCheck>) -> Arc<Self> {
        let robot = SimulatedRobot::new();
        let guard = Arc::new(SafetyGuard::start(
            options.safety,
            Box::new(robot.clone()),
            options.events.clone(),
        ));
        Arc::new(Self {
            options,
            guard,
            robot,
            check,
            peer: Mutex::new(None),
            token: Mutex::new(None),
            token_failing: AtomicBool::new(false),
        })
    }

    /// The simulated robot, for inspection.
    pub fn robot(&self) -> &SimulatedRobot {
        &self.robot
    }

    /// Runs until the process ends: connect, serve, fail over, repeat.
    pub async fn run(self: Arc<Self>) {
        let gateways = &self.options.gateways;
        let mut backoff = Duration::from_millis(50);
        for attempt in 0.. {
            let gateway = &gateways[attempt % gateways.len()];
            match self.fresh_token().await {
                None => tracing::warn!("no robot token to connect with"),
                Some(token) => {
                    match tokio::time::timeout(CONNECT_TIMEOUT, connect(gateway, &token)).await {
                        Ok(Ok((auth_ok, socket))) => {
                            backoff = Duration::from_millis(50);
                            self.serve_gateway(gateway, token, auth_ok, socket).await;
                        }
                        Ok(Err(e)) => tracing::warn!(%gateway, error = %e, "gateway refused"),
                        Err(_) => tracing::warn!(%gateway, "gateway did not answer in time"),
                    }
                }
            }
            // Try the next gateway at once; pause only after a full round failed.
            if (attempt + 1) % gateways.len() == 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// The token source's token now, or the newest one read before if it cannot be read.
    async fn fresh_token(&self) -> Option<String> {
        let mut newest = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match self.options.token.read().await {
            Ok(token) => {
                self.token_failing.store(false, Ordering::Relaxed);
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
                newest = Some(token);
            }
            Err(e) if !self.token_failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(error = %e, "reading the robot token; keeping the last one");
            }
            Err(e) => tracing::debug!(error = %e, "reading the robot token"),
        }
        newest
    }

    /// One authenticated gateway connection, until it closes.
    async fn serve_gateway(
        self: &Arc<Self>,
        gateway: &str,
        token: String,
        auth_ok: Value,
        socket: SignalSocket,
    ) {
        tracing::info!(%gateway, "connected to gateway");
        self.options
            .events
            .now("gateway_connected", json!({ "gateway": gateway }));
        let (tx, mut rx) = socket.split();
        let mut conn = Connection::new(token);
        self.on_frame(&auth_ok, &mut conn);
        // Ask for a lease at once: this gateway has granted this connection nothing yet.
        let mut lease_at = tokio::time::Instant::now();
        let mut token_poll = tokio::time::interval(TOKEN_POLL);
        token_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                incoming = rx.next() => match incoming {
                    Incoming::Frame(frame) => {
                        let reply = self.on_frame(&frame, &mut conn);
                        for frame in &reply.send {
                            tx.send(frame);
                        }
                        if let Some(sdp) = reply.offer {
                            self.on_offer(sdp, tx.clone());
                        }
                        if reply.ask_lease {
                            lease_at = tokio::time::Instant::now();
                        }
                    }
                    Incoming::Closed(code) => {
                        tracing::info!(%gateway, code, "gateway connection closed");
                        break;
                    }
                },
                _ = tokio::time::sleep_until(lease_at) => {
                    // Stamped before the core stamps the request, so the events file never
                    // shows an anchor later than the one the core uses (benchmarks check
                    // the lease bound against it).
                    let asked_at = crate::events::monotonic_now();
                    if let Some((session_id, nonce)) = self.guard.lease_request() {
                        self.options.events.record(
                            asked_at,
                            "lease_requested",
                            json!({ "session_id": session_id, "nonce": nonce }),
                        );
                        tx.send(&ClientFrame::LeaseRequest { session_id, nonce });
                    }
                    lease_at = tokio::time::Instant::now() + self.guard.lease_period();
                }
                _ = token_poll.tick() => {
                    let Some(fresh) = self.fresh_token().await else { continue };
                    match conn.reauth(&fresh, std::time::Instant::now()) {
                        Reauth::Send => {
                            tracing::info!(%gateway, "re-authenticating with the renewed robot token");
                            tx.send(&ClientFrame::Auth { token: fresh });
                        }
                        Reauth::Warn { left } => tracing::warn!(
                            left_s = left.as_secs(),
                            "the robot token expires soon and its source holds no newer one"
                        ),
                        Reauth::Nothing => {}
                    }
                }
            }
        }
    }

    /// Acts on one gateway frame; what to send back is left to the caller.
    fn on_frame(&self, frame: &Value, conn: &mut Connection) -> Reply {
        let mut reply = Reply::default();
        let Some(event) = gateway::read(frame) else {
            tracing::debug!(kind = %frame["type"], "ignoring a malformed gateway frame");
            return reply;
        };
        match event {
            GatewayEvent::AuthOk { expires_in, ended } => {
                conn.authenticated(expires_in, std::time::Instant::now());
                // Failing over while the session was revoked: this is where the robot hears.
                if let Some((session_id, cause, reason)) = ended {
                    self.session_ended(&session_id, cause, reason);
                }
            }
            GatewayEvent::Assigned { session_id } => {
                let effects = self.guard.assign(&session_id);
                self.carry_out(&effects);
                conn.joining(&session_id);
                reply.send.push(ClientFrame::Join { session_id });
                reply.ask_lease = true;
            }
            GatewayEvent::Joined { session_id } => {
                conn.joined(&session_id);
                reply.ask_lease = true;
            }
            GatewayEvent::Lease {
                session_id,
                ttl,
                nonce,
            } => {
                self.guard.lease(&session_id, ttl, nonce);
                self.options.events.now(
                    "lease_received",
                    json!({ "session_id": session_id, "nonce": nonce, "ttl_ms": ttl.as_millis() as u64 }),
                );
            }
            GatewayEvent::Offer { sdp } => reply.offer = Some(sdp),
            GatewayEvent::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => {
                let candidate = RTCIceCandidateInit {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                    ..Default::default()
                };
                self.to_peer(None, PeerCommand::Candidate(candidate));
            }
            GatewayEvent::Ended {
                session_id,
                cause,
                reason,
            } => self.session_ended(&session_id, cause, reason),
            GatewayEvent::Error { code, message } => match gateway::join_ended(&code) {
                Some(cause) => match conn.join_refused() {
                    Some(session_id) => self.session_ended(&session_id, cause, message),
                    None => tracing::warn!(%code, %message, "gateway error for no join"),
                },
                None => tracing::warn!(%code, %message, "gateway error"),
            },
            GatewayEvent::Other => {}
        }
        reply
    }

    /// The gateway says `session_id` ended (current or not): stop first (synchronously,
    /// under the core's lock), then tell the console and hang up.
    fn session_ended(&self, session_id: &str, cause: StopCause, reason: String) {
        let effects = self.guard.end_session(session_id, cause);
        let session_id = session_id.to_owned();
        let notice = if cause == StopCause::Revoked {
            SessionMessage::Revoked {
                session_id: session_id.clone(),
                reason,
            }
        } else {
            SessionMessage::Terminated {
                session_id: session_id.clone(),
                reason,
            }
        };
        self.to_peer(Some(&session_id), PeerCommand::Notify(notice));
        self.carry_out(&effects);
    }

    /// Carries out the network side of the core's effects.
    fn carry_out(&self, effects: &[Effect]) {
        for effect in effects {
            if let Effect::ClosePeer { session_id } = effect {
                self.to_peer(Some(session_id), PeerCommand::Close);
            }
        }
    }

    /// Sends to the current peer (if it serves `session_id`, when given).
    fn to_peer(&self, session_id: Option<&str>, command: PeerCommand) {
        let peer = self.peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peer.as_ref() {
            if session_id.is_none_or(|s| s == p.session_id) {
                let _ = p.commands.send(command);
            }
        }
    }
}

/// Connects to `gateway` and authenticates with `token`: the `auth_ok` frame (it says how
/// long the token holds and where the robot's last session stands) and the socket.
async fn connect(gateway: &str, token: &str) -> Result<(Value, SignalSocket), SignalError> {
    let mut socket = SignalSocket::connect(gateway).await?;
    let auth_ok = socket.authenticate(token).await?;
    Ok((auth_ok, socket))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts any token as a session token for the session the token names.
    struct Accept;

    impl TokenCheck for Accept {
        fn check(&self, token: &str) -> Result<Credentials, DenyReason> {
            Ok(Credentials {
                session_id: token.into(),
                token_id: format!("jti-{token}"),
                operator: "alice".into(),
                expires_in: Duration::from_secs(3600),
            })
        }
    }

    fn agent() -> Arc<Agent> {
        Agent::new(
            AgentOptions {
                gateways: vec!["http://127.0.0.1:9".into()],
                token: TokenSource::Fixed("robot-token".into()),
                safety: SafetyConfig::default(),
                rtc_ip: std::net::Ipv4Addr::LOCALHOST.into(),
                events: EventLog::disabled(),
            },
            Arc::new(Accept),
        )
    }

    fn auth_ok(last_session: Value) -> Value {
        json!({"type": "auth_ok", "role": "robot", "subject": "r", "expires_in_ms": 60_000,
               "last_session": last_session})
    }

    fn assigned(sid: &str) -> Value {
        json!({"type": "session_assigned", "session_id": sid})
    }

    fn denied_as_revoked(agent: &Agent, peer: u64, sid: &str) -> bool {
        matches!(
            agent.guard.authenticate(peer, agent.check.check(sid))[..],
            [Effect::AuthDenied {
                reason: DenyReason::Revoked,
                ..
            }]
        )
    }

    #[test]
    fn a_robot_that_fails_over_while_its_session_is_revoked_still_hears_it() {
        let agent = agent();
        let mut conn = Connection::new("robot-token".into());
        let reply = agent.on_frame(&assigned("ses_1"), &mut conn);
        assert_eq!(
            reply.send,
            vec![ClientFrame::Join {
                session_id: "ses_1".into()
            }]
        );
        assert!(reply.ask_lease);
        assert!(matches!(
            agent.guard.authenticate(1, agent.check.check("ses_1"))[..],
            [Effect::AuthOk { .. }]
        ));
        // The connection dropped; on another gateway, auth_ok says the session was revoked
        // meanwhile (the `revoked` frame went to the dead connection).
        let mut conn = Connection::new("robot-token".into());
        let reply = agent.on_frame(
            &auth_ok(json!({"session_id": "ses_1", "state": "revoked", "reason": "r"})),
            &mut conn,
        );
        assert!(reply.send.is_empty());
        assert_eq!(agent.guard.status().cause, Some(StopCause::Revoked));
        assert_eq!(agent.guard.lease_request(), None);
        assert!(denied_as_revoked(&agent, 2, "ses_1"));
        // A session that is not the current one is remembered: assigned later, refused.
        agent.on_frame(
            &auth_ok(json!({"session_id": "ses_0", "state": "terminated"})),
            &mut conn,
        );
        agent.on_frame(&assigned("ses_0"), &mut conn);
        assert!(denied_as_revoked(&agent, 3, "ses_0"));
        // An active last session changes nothing.
        agent.on_frame(&assigned("ses_2"), &mut conn);
        agent.on_frame(
            &auth_ok(json!({"session_id": "ses_2", "state": "active"})),
            &mut conn,
        );
        assert!(agent.guard.lease_request().is_some());
    }

    #[test]
    fn a_join_refused_because_the_session_ended_stops_and_latches() {
        let agent = agent();
        let mut conn = Connection::new("robot-token".into());
        agent.on_frame(&assigned("ses_1"), &mut conn);
        // Other refusals are only logged.
        let unavailable = json!({"type": "error", "code": "unavailable", "message": "m"});
        agent.on_frame(&unavailable, &mut conn);
        assert!(agent.guard.lease_request().is_some());
        let revoked = json!({"type": "error", "code": "session_revoked", "message": "m"});
        agent.on_frame(&revoked, &mut conn);
        assert_eq!(agent.guard.status().cause, Some(StopCause::Revoked));
        assert!(denied_as_revoked(&agent, 1, "ses_1"));
        // A second refusal with no join in flight ends nothing else.
        agent.on_frame(&assigned("ses_2"), &mut conn);
        agent.on_frame(
            &json!({"type": "joined", "session_id": "ses_2", "peer_present": false}),
            &mut conn,
        );
        let terminated = json!({"type": "error", "code": "session_terminated", "message": "m"});
        agent.on_frame(&terminated, &mut conn);
        assert!(agent.guard.lease_request().is_some());
    }

    #[test]
    fn malformed_gateway_frames_change_nothing() {
        let agent = agent();
        let mut conn = Connection::new("robot-token".into());
        agent.on_frame(&assigned("ses_1"), &mut conn);
        let (sid, nonce) = agent.guard.lease_request().unwrap();
        for bad in [
            json!({"type": "lease", "session_id": sid, "ttl_ms": 1000}),
            json!({"type": "lease", "session_id": sid, "nonce": nonce}),
            json!({"type": "lease", "ttl_ms": 1000, "nonce": nonce}),
            json!({"type": "revoked"}),
            json!({"type": "session_assigned", "session_id": ""}),
            json!({"type": "auth_ok"}),
            json!({"type": 7}),
            json!([1, 2]),
        ] {
            let reply = agent.on_frame(&bad, &mut conn);
            assert!(reply.send.is_empty() && !reply.ask_lease && reply.offer.is_none());
        }
        let status = agent.guard.status();
        assert_eq!(status.session_id.as_deref(), Some("ses_1"));
        assert_eq!(status.cause, Some(StopCause::Boot));
        // The well-formed lease still counts.
        agent.on_frame(
            &json!({"type": "lease", "session_id": sid, "ttl_ms": 1000, "nonce": nonce}),
            &mut conn,
        );
        agent.guard.authenticate(1, agent.check.check("ses_1"));
        let command = crate::safety::Command {
            seq: 1,
            linear: 0.1,
            angular: 0.0,
        };
        assert!(agent.guard.control(1, command).len() == 2);
        // From another PeerConnection, nothing.
        let command = crate::safety::Command { seq: 2, ..command };
        assert!(agent.guard.control(2, command).is_empty());
    }
}
