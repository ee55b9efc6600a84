//! The robot agent: stays connected to a gateway (failing over across the given ones),
//! joins the sessions assigned to it, answers the console's WebRTC offer with a video track,
//! and feeds the safety core from signaling (leases, revocations) and the DataChannels
//! (auth, control). The core, not WebRTC state, decides when the robot moves.

use crate::actuator::SimulatedRobot;
use crate::events::EventLog;
use crate::guard::SafetyGuard;
use crate::link::{ControlMessage, SessionMessage, CONTROL_CHANNEL, SESSION_CHANNEL};
use crate::safety::{Credentials, DenyReason, Effect, SafetyConfig, StopCause};
use crate::video::TestPattern;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_api::signal::{self, Incoming, SignalSender};
use tether_signaling::protocol::ClientFrame;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription,
};

/// Checks a session token presented on the `session` channel: signature, expiry, role.
/// The node binary implements it with the cluster's public key; the core does the rest.
pub trait TokenCheck: Send + Sync {
    /// The verified claims, or why not.
    fn check(&self, token: &str) -> Result<Credentials, DenyReason>;
}

/// How the agent runs.
pub struct AgentOptions {
    /// Gateways' HTTP base URLs, tried in turn.
    pub gateways: Vec<String>,
    /// The robot token.
    pub token: String,
    /// Safety tunables.
    pub safety: SafetyConfig,
    /// The address WebRTC binds (its only host candidate).
    pub rtc_ip: IpAddr,
    /// Where events go.
    pub events: EventLog,
}

/// How long connecting to one gateway may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long ICE gathering may take (host candidates only: milliseconds in practice).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Telemetry period on the `session` channel.
const TELEMETRY_PERIOD: Duration = Duration::from_millis(100);

/// A running agent.
pub struct Agent {
    options: AgentOptions,
    guard: Arc<SafetyGuard>,
    robot: SimulatedRobot,
    check: Arc<dyn TokenCheck>,
    peer: Mutex<Option<PeerHandle>>,
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
            let connected = tokio::time::timeout(
                CONNECT_TIMEOUT,
                signal::connect(gateway, &self.options.token),
            )
            .await;
            match connected {
                Ok(Ok((tx, mut rx))) => {
                    tracing::info!(%gateway, "connected to gateway");
                    self.options
                        .events
                        .now("gateway_connected", json!({ "gateway": gateway }));
                    backoff = Duration::from_millis(50);
                    loop {
                        match rx.next().await {
                            Incoming::Frame(frame) => self.on_frame(frame, &tx).await,
                            Incoming::Closed(code) => {
                                tracing::info!(%gateway, code, "gateway connection closed");
                                break;
                            }
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!(%gateway, error = %e, "gateway refused"),
                Err(_) => tracing::warn!(%gateway, "gateway did not answer in time"),
            }
            // Try the next gateway at once; pause only after a full round failed.
            if (attempt + 1) % gateways.len() == 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    async fn on_frame(self: &Arc<Self>, frame: Value, tx: &SignalSender) {
        let text = |key: &str| frame[key].as_str().unwrap_or_default().to_owned();
        match frame["type"].as_str().unwrap_or_default() {
            "session_assigned" => {
                let session_id = text("session_id");
                let effects = self.guard.assign(&session_id);
                self.carry_out(&effects);
                tx.send(&ClientFrame::Join { session_id });
            }
            "lease" => {
                let ttl = Duration::from_millis(frame["ttl_ms"].as_u64().unwrap_or(0));
                self.guard.lease(&text("session_id"), ttl);
            }
            "offer" => self.on_offer(text("sdp"), tx.clone()).await,
            "candidate" => {
                let candidate = RTCIceCandidateInit {
                    candidate: text("candidate"),
                    sdp_mid: frame["sdp_mid"].as_str().map(str::to_owned),
                    sdp_mline_index: frame["sdp_mline_index"].as_u64().map(|i| i as u16),
                    ..Default::default()
                };
                self.to_peer(None, PeerCommand::Candidate(candidate));
            }
            kind @ ("revoked" | "terminated") => {
                let (session_id, reason) = (text("session_id"), text("reason"));
                let cause = if kind == "revoked" {
                    StopCause::Revoked
                } else {
                    StopCause::Terminated
                };
                // Stop first (synchronously, under the core's lock); tell the console after.
                let effects = self.guard.end_session(&session_id, cause);
                let notice = if kind == "revoked" {
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
            "error" => tracing::warn!(
                code = %text("code"), message = %text("message"), "gateway error"
            ),
            _ => {}
        }
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

    async fn on_offer(self: &Arc<Self>, sdp: String, signal: SignalSender) {
        let Some(session_id) = self.guard.status().session_id else {
            tracing::warn!("an offer without an assigned session");
            return;
        };
        // A new offer means the console (re)connected: the old PeerConnection goes.
        self.to_peer(None, PeerCommand::Close);
        let (commands, command_rx) = mpsc::unbounded_channel();
        *self.peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(PeerHandle {
            session_id: session_id.clone(),
            commands,
        });
        let agent = self.clone();
        tokio::spawn(async move {
            if let Err(e) = agent
                .serve_peer(session_id.clone(), sdp, signal, command_rx)
                .await
            {
                tracing::warn!(%session_id, error = %e, "WebRTC session failed");
            }
        });
    }

    async fn serve_peer(
        self: Arc<Self>,
        session_id: String,
        offer: String,
        signal: SignalSender,
        mut commands: mpsc::UnboundedReceiver<PeerCommand>,
    ) -> webrtc::error::Result<()> {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let session_channel: SessionSlot = Arc::default();
        let handler = Arc::new(RobotHandler {
            agent: self.clone(),
            session_id: session_id.clone(),
            events: events_tx,
            session_channel: session_channel.clone(),
        });
        let pc = crate::peer::build(self.options.rtc_ip, handler).await?;
        let video = TestPattern::attach(&pc).await?;
        let result = negotiate(&pc, offer, &signal, &mut events).await;
        let mut streaming = None;
        if result.is_ok() {
            loop {
                tokio::select! {
                    command = commands.recv() => match command {
                        Some(PeerCommand::Candidate(c)) => {
                            if let Err(e) = pc.add_ice_candidate(c).await {
                                tracing::debug!(error = %e, "a remote candidate was refused");
                            }
                        }
                        Some(PeerCommand::Notify(message)) => {
                            let dc = session_channel.lock().unwrap_or_else(|e| e.into_inner()).clone();
                            if let Some((_, dc)) = dc {
                                let _ = dc.send_text(&message.render()).await;
                            }
                        }
                        Some(PeerCommand::Close) | None => break,
                    },
                    event = events.recv() => match event {
                        Some(PcEvent::State(RTCPeerConnectionState::Connected)) => {
                            if streaming.is_none() {
                                streaming = Some(tokio::spawn(video.clone().stream()));
                            }
                        }
                        // Close on Failed: a dead peer's channels never report closing.
                        Some(PcEvent::State(
                            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
                        )) | None => break,
                        Some(_) => {}
                    },
                }
            }
        }
        if let Some(s) = streaming {
            s.abort();
        }
        let _ = pc.close().await;
        // A closed PeerConnection never reports its channels closing: count it as closed.
        let channel = session_channel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((id, _)) = channel {
            let effects = self.guard.channel_closed(id);
            self.carry_out(&effects);
        }
        self.options
            .events
            .now("peer_closed", json!({ "session_id": session_id }));
        tracing::info!(%session_id, "PeerConnection closed");
        result
    }
}

/// Answers `offer` on `pc` and sends the answer, with its candidates, over signaling.
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    offer: String,
    signal: &SignalSender,
    events: &mut mpsc::UnboundedReceiver<PcEvent>,
) -> webrtc::error::Result<()> {
    pc.set_remote_description(RTCSessionDescription::offer(offer)?)
        .await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    // Non-trickle on this side: the answer carries its (host) candidates.
    if !crate::peer::wait_for(events, GATHER_TIMEOUT, |e| matches!(e, PcEvent::Gathered)).await {
        tracing::warn!("ICE gathering did not complete; answering with what there is");
    }
    if let Some(answer) = pc.local_description().await {
        signal.send(&ClientFrame::Answer { sdp: answer.sdp });
    }
    Ok(())
}

/// What the PeerConnection reports to its task.
enum PcEvent {
    Gathered,
    State(RTCPeerConnectionState),
}

/// The peer's `session` channel, with the id the safety core knows it by.
type SessionSlot = Arc<Mutex<Option<(u64, Arc<dyn DataChannel>)>>>;

/// Ids for `session` channels, unique in this process.
static NEXT_CHANNEL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

struct RobotHandler {
    agent: Arc<Agent>,
    session_id: String,
    events: mpsc::UnboundedSender<PcEvent>,
    session_channel: SessionSlot,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for RobotHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(PcEvent::Gathered);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(session_id = %self.session_id, %state, "peer connection state");
        let _ = self.events.send(PcEvent::State(state));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // Never block the driver: every channel gets its own task.
        let agent = self.agent.clone();
        let slot = self.session_channel.clone();
        let session_id = self.session_id.clone();
        tokio::spawn(async move {
            match dc.label().await.unwrap_or_default().as_str() {
                SESSION_CHANNEL => serve_session_channel(agent, dc, slot, session_id).await,
                CONTROL_CHANNEL => serve_control_channel(agent, dc).await,
                other => {
                    tracing::warn!(label = other, "an unknown DataChannel; closing it");
                    let _ = dc.close().await;
                }
            }
        });
    }
}

async fn serve_control_channel(agent: Arc<Agent>, dc: Arc<dyn DataChannel>) {
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnMessage(message) => {
                if let Some(command) = ControlMessage::parse(&message.data) {
                    agent.guard.control(command);
                }
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
}

async fn serve_session_channel(
    agent: Arc<Agent>,
    dc: Arc<dyn DataChannel>,
    slot: SessionSlot,
    session_id: String,
) {
    let channel = NEXT_CHANNEL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((channel, dc.clone()));
    let telemetry = tokio::spawn(send_telemetry(agent.clone(), dc.clone()));
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnMessage(message) => {
                let Ok(message) = serde_json::from_slice::<SessionMessage>(&message.data) else {
                    tracing::debug!("an unreadable session message");
                    continue;
                };
                match message {
                    SessionMessage::Auth { token } => {
                        let effects = agent.guard.authenticate(channel, agent.check.check(&token));
                        for effect in effects {
                            let reply = match effect {
                                Effect::AuthOk { session_id } => {
                                    SessionMessage::AuthOk { session_id }
                                }
                                Effect::AuthDenied { reason, .. } => SessionMessage::AuthDenied {
                                    reason: reason.as_str().into(),
                                },
                                _ => continue,
                            };
                            let _ = dc.send_text(&reply.render()).await;
                        }
                    }
                    SessionMessage::Estop => {
                        agent.guard.estop();
                    }
                    _ => {}
                }
            }
            DataChannelEvent::OnClose => break,
            _ => {}
        }
    }
    telemetry.abort();
    slot.lock()
        .unwrap_or_else(|e| e.into_inner())
        .take_if(|(id, _)| *id == channel);
    tracing::info!(%session_id, "session channel closed");
    let effects = agent.guard.channel_closed(channel);
    agent.carry_out(&effects);
}

async fn send_telemetry(agent: Arc<Agent>, dc: Arc<dyn DataChannel>) {
    let mut tick = tokio::time::interval(TELEMETRY_PERIOD);
    loop {
        tick.tick().await;
        let status = agent.guard.status();
        let pose = agent.robot.state();
        let state = SessionMessage::State {
            armed: status.armed,
            cause: status.cause.map(|c| c.as_str().to_owned()),
            x: pose.x,
            y: pose.y,
            heading: pose.heading,
        };
        if dc.send_text(&state.render()).await.is_err() {
            break;
        }
    }
}
