//! The headless operator console: creates a session, connects through signaling, offers
//! WebRTC to the robot, authenticates on the `session` channel, drives at 20 Hz, counts the
//! video frames it receives, and stops at once when the session is revoked or terminated.
//! Before its session token expires it fetches a fresh one and presents it again, on
//! signaling and on the `session` channel (the robot stops at the token's expiry).
//!
//! Long file: one connection attempt is one sequence (signal, offer, authenticate, drive,
//! watch for the end) whose steps share the attempt's state; split, it reads worse.

use crate::events::EventLog;
use crate::link::{SessionMessage, CONTROL_CHANNEL, SESSION_CHANNEL};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether_api::signal::{self, Incoming, SignalSender};
use tether_api::{Client, ClientError};
use tether_signaling::protocol::ClientFrame;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription,
};
use webrtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// How the console runs.
pub struct ConsoleOptions {
    /// A gateway's HTTP base URL.
    pub gateway: String,
    /// The operator's token (creates the session, ends it).
    pub operator_token: String,
    /// The robot to drive.
    pub robot_id: String,
    /// Drive command sent 20 times a second: forward speed, −1..1.
    pub linear: f64,
    /// Turn rate, −1..1.
    pub angular: f64,
    /// End the session and exit after this long (default: run until Ctrl-C).
    pub duration: Option<Duration>,
    /// Present this token on the `session` channel instead of the session's own
    /// (to check what the robot does with a stale or revoked one).
    pub auth_token: Option<String>,
    /// The address WebRTC binds.
    pub rtc_ip: IpAddr,
    /// Where events go.
    pub events: EventLog,
}

/// How a console run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ran its course (or was interrupted) and ended the session itself.
    Finished,
    /// The session was revoked, for this reason.
    Revoked(String),
    /// The session was terminated, for this reason.
    Terminated(String),
    /// The robot refused the session token.
    AuthDenied(String),
}

impl Outcome {
    /// The process exit code: distinct per ending.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Finished => 0,
            Outcome::Revoked(_) => 3,
            Outcome::Terminated(_) => 4,
            Outcome::AuthDenied(_) => 5,
        }
    }
}

/// Why the console could not run.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The gateway's HTTP API refused or failed.
    #[error("gateway: {0}")]
    Http(String),
    /// Signaling failed.
    #[error(transparent)]
    Signal(#[from] signal::SignalError),
    /// The gateway refused a frame (`error`).
    #[error("gateway error {code}: {message}")]
    Refused { code: String, message: String },
    /// WebRTC failed.
    #[error("webrtc: {0}")]
    Rtc(#[from] webrtc::error::Error),
    /// The robot did not show up or the connection broke.
    #[error("{0}")]
    Peer(String),
}

/// The session as created.
#[derive(Debug, Clone)]
pub struct CreatedSession {
    /// Its id.
    pub session_id: String,
    /// Its token.
    pub token: String,
    /// When the token expires (ms since the epoch), if the gateway said so readably.
    pub expires_at_ms: Option<u64>,
}

impl CreatedSession {
    /// When to fetch a fresh token: once a third of the current one's lifetime is left.
    fn refresh_at(&self) -> Option<tokio::time::Instant> {
        let left = self
            .expires_at_ms?
            .saturating_sub(tether_api::time::now_ms());
        Some(tokio::time::Instant::now() + Duration::from_millis(left * 2 / 3))
    }

    /// Takes a fresh token.
    fn renew(&mut self, fresh: tether_api::types::SessionToken) {
        self.expires_at_ms = tether_api::time::parse_rfc3339(&fresh.expires_at).ok();
        self.token = fresh.token;
    }
}

/// How long to wait for the robot to join and answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(15);
/// The control rate.
const CONTROL_PERIOD: Duration = Duration::from_millis(50);

/// What the console's tasks report to its main loop.
enum Event {
    Gathered,
    State(RTCPeerConnectionState),
    SessionOpen,
    /// A token refresh came back (see [`refresh_token`]).
    Refreshed(Result<Option<tether_api::types::SessionToken>, Outcome>),
    Session(SessionMessage),
    SessionClosed,
    FirstFrame,
}

struct ConsoleHandler {
    events: mpsc::UnboundedSender<Event>,
    frames: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ConsoleHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.events.send(Event::Gathered);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.send(Event::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let frames = self.frames.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                match event {
                    // The packetizer marks the last packet of each frame.
                    TrackRemoteEvent::OnRtpPacket(packet)
                        if packet.header.marker && frames.fetch_add(1, Ordering::Relaxed) == 0 =>
                    {
                        let _ = events.send(Event::FirstFrame);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// Creates a session for `robot_id` with the operator's token.
pub async fn create_session(
    gateway: &str,
    operator_token: &str,
    robot_id: &str,
) -> Result<CreatedSession, ConsoleError> {
    let created = Client::new(gateway, operator_token)
        .create_session(robot_id)
        .await
        .map_err(|e| match e {
            ClientError::Api { body, .. } => ConsoleError::Refused {
                code: body.code,
                message: body.message,
            },
            e => ConsoleError::Http(e.to_string()),
        })?;
    Ok(CreatedSession {
        expires_at_ms: tether_api::time::parse_rfc3339(&created.expires_at).ok(),
        session_id: created.session_id,
        token: created.token,
    })
}

/// Ends the session (`DELETE /v1/sessions/{sid}`); a session already over is fine.
async fn end_session(options: &ConsoleOptions, session_id: &str) {
    let client = Client::new(&options.gateway, &options.operator_token);
    if let Err(e) = client.end_session(session_id).await {
        tracing::warn!(error = %e, "ending the session");
    }
}

/// Runs the console: `on_session` hears the session id as soon as it exists. A lost
/// connection (signaling or WebRTC) is re-established with a fresh offer, and the new
/// `session` channel authenticates again; a revoked session is not rejoined anywhere.
pub async fn run(
    options: ConsoleOptions,
    on_session: impl FnOnce(&CreatedSession),
) -> Result<Outcome, ConsoleError> {
    let mut session =
        create_session(&options.gateway, &options.operator_token, &options.robot_id).await?;
    on_session(&session);
    options.events.now(
        "session_created",
        json!({ "session_id": session.session_id }),
    );
    let frames = Arc::new(AtomicU64::new(0));
    let mut run = RunState {
        seq: 0,
        stop_at: options.duration.map(|d| tokio::time::Instant::now() + d),
    };
    let mut losses = 0;
    let outcome = loop {
        match connect_and_drive(&options, &mut session, &frames, &mut run).await {
            Ok(Attempt::Over(outcome)) => break Ok(outcome),
            Ok(Attempt::Lost { why, was_live }) => {
                // Count losses in a row: a connection that went live starts the count anew.
                losses = if was_live { 1 } else { losses + 1 };
                tracing::warn!(%why, losses, "connection lost; reconnecting");
                options.events.now(
                    "reconnecting",
                    json!({ "session_id": session.session_id, "reason": why, "attempt": losses }),
                );
                if losses > MAX_RECONNECTS {
                    break Err(ConsoleError::Peer(format!(
                        "gave up after {losses} lost connections: {why}"
                    )));
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
                // The session token may be near its end; a fresh one carries on.
                match refresh_token(&options, &session.session_id).await {
                    Ok(Some(fresh)) => session.renew(fresh),
                    Ok(None) => {}
                    Err(ended) => break Ok(ended),
                }
            }
            Err(e) => break Err(e),
        }
    };
    let frames = frames.load(Ordering::Relaxed);
    if matches!(outcome, Ok(Outcome::Finished)) {
        end_session(&options, &session.session_id).await;
    }
    let code = outcome.as_ref().map(Outcome::exit_code).unwrap_or(1);
    options.events.now(
        "exit",
        json!({ "session_id": session.session_id, "code": code, "frames": frames }),
    );
    tracing::info!(frames, "video frames received");
    outcome
}

/// Gives up after this many lost connections in a row (none of them went live).
const MAX_RECONNECTS: u32 = 20;
/// How soon to try again when a token refresh could not reach the gateway.
const REFRESH_RETRY: Duration = Duration::from_secs(1);
/// Pause between a lost connection and the next attempt.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
/// How long a fresh WebRTC connection may take to connect before it counts as lost.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What outlives a connection attempt.
struct RunState {
    /// The last command's sequence number: it runs on across reconnects, since the robot
    /// drops any it has seen.
    seq: u64,
    /// When the run ends (`duration`, reconnects included).
    stop_at: Option<tokio::time::Instant>,
}

/// How one connection attempt ended.
enum Attempt {
    /// The session is over (or the run is).
    Over(Outcome),
    /// The connection was lost (`was_live`: after WebRTC had connected); try again.
    Lost { why: String, was_live: bool },
}

impl Attempt {
    /// Lost before WebRTC connected.
    fn lost(why: impl Into<String>) -> Self {
        Attempt::Lost {
            why: why.into(),
            was_live: false,
        }
    }
}

/// `POST /v1/sessions/{sid}/refresh`: a fresh token, `Err` when the session has ended,
/// `None` when the gateway could not be asked (the old token is kept).
async fn refresh_token(
    options: &ConsoleOptions,
    session_id: &str,
) -> Result<Option<tether_api::types::SessionToken>, Outcome> {
    refresh_with(refresh_client(options), session_id).await
}

/// The client a refresh goes through: the operator's login token, a short timeout.
fn refresh_client(options: &ConsoleOptions) -> Client {
    Client::with_timeout(
        &options.gateway,
        &options.operator_token,
        Duration::from_secs(2),
    )
}

/// [`refresh_token`] with a client of its own (so that it can run in a task).
async fn refresh_with(
    client: Client,
    session_id: &str,
) -> Result<Option<tether_api::types::SessionToken>, Outcome> {
    match client.refresh_session(session_id).await {
        Ok(token) => Ok(Some(token)),
        Err(ClientError::Api { status: 409, body }) => Err(Outcome::Terminated(body.message)),
        Err(_) => Ok(None),
    }
}

/// One attempt: signaling, join, wait for the robot, then WebRTC until the end or a loss.
async fn connect_and_drive(
    options: &ConsoleOptions,
    session: &mut CreatedSession,
    frames: &Arc<AtomicU64>,
    run: &mut RunState,
) -> Result<Attempt, ConsoleError> {
    let (signal_tx, mut signal_rx) = match signal::connect(&options.gateway, &session.token).await {
        Ok(halves) => halves,
        Err(signal::SignalError::Refused(why)) => {
            return Err(signal::SignalError::Refused(why).into())
        }
        Err(e) => return Ok(Attempt::lost(e.to_string())),
    };
    signal_tx.send(&ClientFrame::Join {
        session_id: session.session_id.clone(),
    });
    // Wait until admitted and the robot is in the room.
    let deadline = tokio::time::Instant::now() + PEER_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, signal_rx.next()).await {
            Err(_) => return Ok(Attempt::lost("the robot did not join in time")),
            Ok(Incoming::Closed(code)) => {
                return Ok(Attempt::lost(format!("signaling closed ({code})")))
            }
            Ok(Incoming::Frame(f)) => f,
        };
        match frame["type"].as_str().unwrap_or_default() {
            "joined" if frame["peer_present"] == true => break,
            "peer_joined" => break,
            "error" => {
                let message = frame["message"].as_str().unwrap_or("").to_owned();
                return match frame["code"].as_str().unwrap_or("?") {
                    "session_revoked" => Ok(Attempt::Over(Outcome::Revoked(message))),
                    "session_terminated" => Ok(Attempt::Over(Outcome::Terminated(message))),
                    "unavailable" => Ok(Attempt::lost(message)),
                    code => Err(ConsoleError::Refused {
                        code: code.into(),
                        message,
                    }),
                };
            }
            kind @ ("revoked" | "terminated") => {
                return Ok(Attempt::Over(ended(kind, &frame)));
            }
            _ => {}
        }
    }
    options
        .events
        .now("connected", json!({ "session_id": session.session_id }));

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let pc = crate::peer::build(
        options.rtc_ip,
        Arc::new(ConsoleHandler {
            events: events_tx.clone(),
            frames: frames.clone(),
        }),
    )
    .await?;
    let result = drive(
        options,
        session,
        &pc,
        (&signal_tx, &mut signal_rx),
        events_tx,
        &mut events,
        run,
    )
    .await;
    let _ = pc.close().await;
    result
}

fn ended(kind: &str, frame: &Value) -> Outcome {
    let reason = frame["reason"].as_str().unwrap_or_default().to_owned();
    if kind == "revoked" {
        Outcome::Revoked(reason)
    } else {
        Outcome::Terminated(reason)
    }
}

/// Negotiates, authenticates and drives until the session ends.
async fn drive(
    options: &ConsoleOptions,
    session: &mut CreatedSession,
    pc: &Arc<dyn PeerConnection>,
    (signal_tx, signal_rx): (&SignalSender, &mut signal::SignalReceiver),
    events_tx: mpsc::UnboundedSender<Event>,
    events: &mut mpsc::UnboundedReceiver<Event>,
    run: &mut RunState,
) -> Result<Attempt, ConsoleError> {
    let control = pc
        .create_data_channel(
            CONTROL_CHANNEL,
            Some(RTCDataChannelInit {
                ordered: false,
                max_retransmits: Some(0),
                ..Default::default()
            }),
        )
        .await?;
    let session_dc = pc.create_data_channel(SESSION_CHANNEL, None).await?;
    tokio::spawn(drain(control.clone()));
    tokio::spawn(pump_session(session_dc.clone(), events_tx.clone()));
    pc.add_transceiver_from_kind(
        RtpCodecKind::Video,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            ..Default::default()
        }),
    )
    .await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    // Before the offer is even sent, the only other events are early connection states.
    if !crate::peer::wait_for(events, PEER_TIMEOUT, |e| matches!(e, Event::Gathered)).await {
        return Err(ConsoleError::Peer("ICE gathering did not complete".into()));
    }
    let offer = pc
        .local_description()
        .await
        .ok_or_else(|| ConsoleError::Peer("no local description".into()))?;
    signal_tx.send(&ClientFrame::Offer { sdp: offer.sdp });

    // The token presented to the robot: the session's own (renewed before it expires), or
    // the one the caller insists on.
    let auth_token = |session: &CreatedSession| {
        options
            .auth_token
            .clone()
            .unwrap_or_else(|| session.token.clone())
    };
    let mut refresh_at = session.refresh_at();
    let mut session_open = false;
    let mut ticker = tokio::time::interval(CONTROL_PERIOD);
    let mut authenticated = false;
    let mut connected = false;
    let connect_by = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut remote_set = false;
    let mut early_candidates: Vec<RTCIceCandidateInit> = Vec::new();
    let mut signal_open = true;
    loop {
        tokio::select! {
            incoming = signal_rx.next(), if signal_open => match incoming {
                Incoming::Frame(frame) => match frame["type"].as_str().unwrap_or_default() {
                    "answer" => {
                        let sdp = frame["sdp"].as_str().unwrap_or_default().to_owned();
                        pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                        remote_set = true;
                        for c in early_candidates.drain(..) {
                            let _ = pc.add_ice_candidate(c).await;
                        }
                    }
                    "candidate" => {
                        let c = RTCIceCandidateInit {
                            candidate: frame["candidate"].as_str().unwrap_or_default().into(),
                            sdp_mid: frame["sdp_mid"].as_str().map(str::to_owned),
                            sdp_mline_index: frame["sdp_mline_index"].as_u64().map(|i| i as u16),
                            ..Default::default()
                        };
                        if remote_set {
                            let _ = pc.add_ice_candidate(c).await;
                        } else {
                            early_candidates.push(c);
                        }
                    }
                    kind @ ("revoked" | "terminated") => {
                        options.events.now(kind, json!({
                            "session_id": session.session_id, "reason": frame["reason"], "via": "signaling"
                        }));
                        return Ok(Attempt::Over(ended(kind, &frame)));
                    }
                    "error" => tracing::warn!(%frame, "gateway error"),
                    _ => {}
                },
                // Signaling is not needed once WebRTC runs; revocations then reach us
                // through the robot, and the robot stops on its own anyway.
                Incoming::Closed(code) => {
                    tracing::warn!(code, "signaling closed");
                    signal_open = false;
                }
            },
            event = events.recv() => match event {
                Some(Event::SessionOpen) => {
                    session_open = true;
                    let auth = SessionMessage::Auth { token: auth_token(session) };
                    session_dc.send_text(&auth.render()).await?;
                }
                Some(Event::Refreshed(Ok(Some(fresh)))) => {
                    session.renew(fresh);
                    refresh_at = session.refresh_at();
                    // The gateway and the robot each hold the connection to the token's expiry.
                    if signal_open {
                        signal_tx.send(&ClientFrame::Auth { token: session.token.clone() });
                    }
                    if session_open && options.auth_token.is_none() {
                        let auth = SessionMessage::Auth { token: session.token.clone() };
                        session_dc.send_text(&auth.render()).await?;
                    }
                }
                Some(Event::Refreshed(Ok(None))) => {
                    refresh_at = Some(tokio::time::Instant::now() + REFRESH_RETRY);
                }
                Some(Event::Refreshed(Err(ended))) => return Ok(Attempt::Over(ended)),
                Some(Event::Session(SessionMessage::AuthOk { .. })) => {
                    authenticated = true;
                    options.events.now("auth_ok", json!({ "session_id": session.session_id }));
                }
                Some(Event::Session(SessionMessage::AuthDenied { reason })) => {
                    options.events.now("auth_denied", json!({
                        "session_id": session.session_id, "reason": reason
                    }));
                    return Ok(Attempt::Over(Outcome::AuthDenied(reason)));
                }
                Some(Event::Session(SessionMessage::Revoked { reason, .. })) => {
                    options.events.now("revoked", json!({
                        "session_id": session.session_id, "reason": reason, "via": "robot"
                    }));
                    return Ok(Attempt::Over(Outcome::Revoked(reason)));
                }
                Some(Event::Session(SessionMessage::Terminated { reason, .. })) => {
                    options.events.now("terminated", json!({
                        "session_id": session.session_id, "reason": reason, "via": "robot"
                    }));
                    return Ok(Attempt::Over(Outcome::Terminated(reason)));
                }
                Some(Event::Session(_)) => {}
                Some(Event::FirstFrame) => {
                    options.events.now("video_frame", json!({ "session_id": session.session_id }));
                }
                Some(Event::SessionClosed) => {
                    authenticated = false;
                    session_open = false;
                }
                Some(Event::State(RTCPeerConnectionState::Connected)) => connected = true,
                // Disconnected comes after a few seconds of silence; waiting for Failed
                // (about 30 s) would leave the operator blind that long.
                Some(Event::State(
                    state @ (RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed),
                )) => {
                    return Ok(Attempt::Lost { why: format!("WebRTC {state}"), was_live: connected });
                }
                Some(Event::State(_)) | Some(Event::Gathered) => {}
                None => return Ok(Attempt::Lost {
                    why: "the WebRTC connection went away".into(),
                    was_live: connected,
                }),
            },
            _ = ticker.tick() => {
                let now = tokio::time::Instant::now();
                if run.stop_at.is_some_and(|at| now >= at) {
                    return Ok(Attempt::Over(Outcome::Finished));
                }
                if !connected && now >= connect_by {
                    return Ok(Attempt::lost("WebRTC did not connect in time"));
                }
                if authenticated {
                    run.seq += 1;
                    let command = json!({"seq": run.seq, "linear": options.linear, "angular": options.angular});
                    let _ = control.send_text(&command.to_string()).await;
                }
            }
            _ = sleep_until_some(refresh_at), if refresh_at.is_some() => {
                // In the background: the control ticks must not wait on HTTP.
                refresh_at = None;
                let client = refresh_client(options);
                let (sid, events) = (session.session_id.clone(), events_tx.clone());
                tokio::spawn(async move {
                    let _ = events.send(Event::Refreshed(refresh_with(client, &sid).await));
                });
            }
            _ = tokio::signal::ctrl_c() => return Ok(Attempt::Over(Outcome::Finished)),
        }
    }
}

/// Sleeps until `at` (forever when `None`; the `select!` branch is disabled then anyway).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads a channel the console only writes to (unread events would back up SCTP).
async fn drain(dc: Arc<dyn DataChannel>) {
    while let Some(event) = dc.poll().await {
        if matches!(event, DataChannelEvent::OnClose) {
            break;
        }
    }
}

/// Forwards the `session` channel's events to the main loop.
async fn pump_session(dc: Arc<dyn DataChannel>, events: mpsc::UnboundedSender<Event>) {
    while let Some(event) = dc.poll().await {
        let forwarded = match event {
            DataChannelEvent::OnOpen => Event::SessionOpen,
            DataChannelEvent::OnMessage(m) => match serde_json::from_slice(&m.data) {
                Ok(message) => Event::Session(message),
                Err(_) => continue,
            },
            DataChannelEvent::OnClose => {
                let _ = events.send(Event::SessionClosed);
                break;
            }
            _ => continue,
        };
        if events.send(forwarded).is_err() {
            break;
        }
    }
}
