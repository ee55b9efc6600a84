//! The robot's side of one WebRTC session: the PeerConnection's task (answer, candidates,
//! notices, video), and the `session` and `control` channels feeding the safety core. The
//! `control` channel counts only for the PeerConnection whose `session` channel
//! authenticated; WebRTC state itself never arms the robot.

use super::{Agent, PeerCommand, PeerHandle};
use crate::link::{ControlMessage, SessionMessage, CONTROL_CHANNEL, SESSION_CHANNEL};
use crate::safety::Effect;
use crate::video::TestPattern;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether_api::signal::SignalSender;
use tether_signaling::protocol::ClientFrame;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription,
};

/// How long ICE gathering may take (host candidates only: milliseconds in practice).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Telemetry period on the `session` channel.
const TELEMETRY_PERIOD: Duration = Duration::from_millis(100);

impl Agent {
    pub(super) fn on_offer(self: &Arc<Self>, sdp: String, signal: SignalSender) {
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
            peer: NEXT_PEER.fetch_add(1, Ordering::Relaxed),
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

/// The peer's `session` channel, with the id the safety core knows its PeerConnection by.
type SessionSlot = Arc<Mutex<Option<(u64, Arc<dyn DataChannel>)>>>;

/// Ids for PeerConnections, unique in this process: the safety core obeys the `control`
/// channel of the PeerConnection whose `session` channel authenticated, no other.
static NEXT_PEER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

struct RobotHandler {
    agent: Arc<Agent>,
    /// This PeerConnection's id.
    peer: u64,
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
        let peer = self.peer;
        tokio::spawn(async move {
            match dc.label().await.unwrap_or_default().as_str() {
                SESSION_CHANNEL => serve_session_channel(agent, dc, slot, session_id, peer).await,
                CONTROL_CHANNEL => serve_control_channel(agent, dc, peer).await,
                other => {
                    tracing::warn!(label = other, "an unknown DataChannel; closing it");
                    let _ = dc.close().await;
                }
            }
        });
    }
}

/// Feeds the `control` channel of PeerConnection `peer` to the core, which obeys it only
/// if that PeerConnection's `session` channel is the authenticated one.
async fn serve_control_channel(agent: Arc<Agent>, dc: Arc<dyn DataChannel>, peer: u64) {
    while let Some(event) = dc.poll().await {
        match event {
            DataChannelEvent::OnMessage(message) => {
                if let Some(command) = ControlMessage::parse(&message.data) {
                    agent.guard.control(peer, command);
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
    channel: u64,
) {
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
                    // Any channel may stop the robot; only the authenticated one re-arms it.
                    SessionMessage::Estop => {
                        agent.guard.estop();
                    }
                    SessionMessage::Rearm => {
                        agent.guard.rearm(channel);
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
