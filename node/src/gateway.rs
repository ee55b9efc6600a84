//! The signaling gateway: WebSocket connections, join admission (S1, S2), relay on this
//! node and across nodes, teardown when sessions end (S4), and authorization leases (S7).
//!
//! The decisions live in `tether-signaling` (frames, rooms, rate limits) and in the
//! replicated state; this module does the I/O around them.
//!
//! Long file: until its decisions move into the sans-io hub core in `tether-signaling`.

use crate::auth::{Claims, Role, Verifier};
use crate::config::NodeConfig;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tether_raft::RaftNode;
use tether_signaling::protocol::{self, ClientFrame, RelayFrame, ServerFrame};
use tether_signaling::rate::TokenBucket;
use tether_signaling::rooms::{ConnId, Location, Rooms, Side};
use tether_store::{NodeId, Session, SessionEvent, SessionState};
use tokio::sync::mpsc;

/// WebSocket close codes (see `docs/signaling.md`).
pub mod close {
    /// The first frame was not a valid `auth`.
    pub const AUTH_FAILED: u16 = 4401;
    /// No `auth` frame in time.
    pub const AUTH_TIMEOUT: u16 = 4408;
    /// The session was revoked.
    pub const REVOKED: u16 = 4001;
    /// The session was terminated by its operator.
    pub const TERMINATED: u16 = 4002;
    /// Another connection took this side of the session.
    pub const REPLACED: u16 = 4003;
    /// Too many frames too fast, repeatedly.
    pub const RATE_LIMITED: u16 = 4029;
}

/// How many frames over the rate limit a connection may send before it is cut off.
const RATE_STRIKES: u32 = 20;
/// How long a relay to another node may take.
const RELAY_TIMEOUT: Duration = Duration::from_millis(500);

/// Something for a connection's writer task.
#[derive(Debug)]
enum Outbound {
    Frame(ServerFrame),
    /// A relayed frame, when it reached this node, and the histogram (by path) that times
    /// the relay up to the socket.
    Relayed(ServerFrame, Instant, metrics::Histogram),
    Close(u16, String),
}

/// Who is on a connection.
#[derive(Debug, Clone)]
enum Identity {
    Operator(Claims),
    Robot(String),
    /// An admin subscribed to session-end notifications; joins nothing.
    Watcher,
}

impl Identity {
    fn side(&self) -> Option<Side> {
        match self {
            Self::Operator(_) => Some(Side::Operator),
            Self::Robot(_) => Some(Side::Robot),
            Self::Watcher => None,
        }
    }
}

struct Conn {
    tx: mpsc::UnboundedSender<Outbound>,
    identity: Identity,
}

#[derive(Default)]
struct HubState {
    rooms: Rooms,
    conns: HashMap<ConnId, Conn>,
    robots: HashMap<String, ConnId>,
}

/// A message between nodes' gateways, carried by `RaftNode::signal`. Encoded as JSON, not
/// with the node codec: relayed frames are JSON-tagged enums, which postcard cannot carry.
#[derive(Serialize, Deserialize, Debug)]
enum NodeSignal {
    /// `side` of `session_id` joined (or left) on the sending node.
    Presence {
        session_id: String,
        side: Side,
        joined: bool,
    },
    /// A frame for `to` of `session_id`, which the receiver holds.
    Relay {
        session_id: String,
        to: Side,
        frame: RelayFrame,
    },
}

/// The answer to a [`NodeSignal`].
#[derive(Serialize, Deserialize, Debug, Default)]
struct SignalAnswer {
    /// For presence: the sides of that session connected on the answering node.
    present: Vec<Side>,
    /// For relay: whether the frame was delivered.
    delivered: bool,
}

/// Why a join was refused.
#[derive(Debug)]
struct Denied {
    code: &'static str,
    message: String,
}

fn denied(code: &'static str, message: impl Into<String>) -> Denied {
    Denied {
        code,
        message: message.into(),
    }
}

/// A count of live things (per-connection tasks, armed per-connection timers) for the
/// leak checks: [`Live::enter`] counts one until its guard drops.
#[derive(Default)]
struct Live(Arc<AtomicI64>);

impl Live {
    fn enter(&self) -> LiveGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        LiveGuard(self.0.clone())
    }

    fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts one in a [`Live`] until dropped.
struct LiveGuard(Arc<AtomicI64>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the signaling side of a node holds, for `/metrics` and leak checks: each must
/// return to zero once every connection has closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubCounts {
    /// Authenticated connections.
    pub connections: usize,
    /// Session rooms with at least one member.
    pub rooms: usize,
    /// Members of those rooms.
    pub room_members: usize,
    /// Per-connection tasks (the connection's reader and its writer).
    pub tasks: i64,
    /// Armed per-connection timers (the auth deadline, the closing drain).
    pub timers: i64,
}

/// The node's signaling hub.
pub struct Hub {
    raft: Arc<RaftNode>,
    audit: crate::audit::AuditLog,
    config: Arc<NodeConfig>,
    verifier: Verifier,
    state: Mutex<HubState>,
    next_conn: AtomicU64,
    live: AtomicU64,
    tasks: Live,
    timers: Live,
    /// `tether_relay_seconds` by path, looked up once rather than for every relayed frame.
    relay_local: metrics::Histogram,
    relay_from_peer_node: metrics::Histogram,
}

impl Hub {
    /// A hub for this node; call [`Hub::start`] to run its background tasks.
    pub fn new(
        raft: Arc<RaftNode>,
        config: Arc<NodeConfig>,
        verifier: Verifier,
        audit: crate::audit::AuditLog,
    ) -> Arc<Self> {
        Arc::new(Self {
            raft,
            audit,
            config,
            verifier,
            state: Mutex::new(HubState::default()),
            next_conn: AtomicU64::new(1),
            live: AtomicU64::new(0),
            tasks: Live::default(),
            timers: Live::default(),
            relay_local: metrics::histogram!("tether_relay_seconds", "path" => "local"),
            relay_from_peer_node: metrics::histogram!(
                "tether_relay_seconds",
                "path" => "from_peer_node"
            ),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the node-to-node handler and starts the teardown and lease tasks.
    pub fn start(
        self: &Arc<Self>,
        stopped: tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let hub = self.clone();
        self.raft.set_signal_handler(Arc::new(move |from, payload| {
            let hub = hub.clone();
            Box::pin(async move { hub.on_node_signal(from, &payload) })
        }));
        vec![
            tokio::spawn(self.clone().teardown_loop(stopped.clone())),
            tokio::spawn(self.clone().lease_loop(stopped)),
        ]
    }

    /// What the hub holds, for metrics and leak checks.
    pub fn counts(&self) -> HubCounts {
        let st = self.state();
        HubCounts {
            connections: st.conns.len(),
            rooms: st.rooms.room_count(),
            room_members: st.rooms.member_count(),
            tasks: self.tasks.get(),
            timers: self.timers.get(),
        }
    }

    /// Whether another connection may be accepted.
    pub fn has_room_for_one_more(&self) -> bool {
        (self.live.load(Ordering::Relaxed) as usize) < self.config.sessions.max_connections
    }

    fn send(&self, conn: ConnId, frame: ServerFrame) {
        if let Some(c) = self.state().conns.get(&conn) {
            let _ = c.tx.send(Outbound::Frame(frame));
        }
    }

    /// Serves one WebSocket until it closes.
    pub async fn serve(self: Arc<Self>, socket: WebSocket) {
        let _reader = self.tasks.enter();
        let writing = self.tasks.enter();
        self.live.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("tether_signal_connections").increment(1.0);
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Outbound>();
        let writer = tokio::spawn(async move {
            let _writing = writing;
            while let Some(out) = rx.recv().await {
                let result = match out {
                    Outbound::Frame(frame) => {
                        sink.send(Message::Text(protocol::render(&frame).into()))
                            .await
                    }
                    Outbound::Relayed(frame, received, histogram) => {
                        let sent = sink
                            .send(Message::Text(protocol::render(&frame).into()))
                            .await;
                        histogram.record(received.elapsed().as_secs_f64());
                        sent
                    }
                    Outbound::Close(code, reason) => {
                        let _ = sink
                            .send(Message::Close(Some(CloseFrame {
                                code,
                                reason: reason.into(),
                            })))
                            .await;
                        break;
                    }
                };
                if result.is_err() {
                    break;
                }
            }
        });
        if let Some(conn) = self.authenticate(&mut stream, &tx).await {
            self.read_loop(conn, &mut stream, &tx).await;
            self.disconnect(conn).await;
        }
        drop(tx);
        let _ = writer.await;
        {
            let _deadline = self.timers.enter();
            drain_until_closed(&mut stream).await;
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("tether_signal_connections").decrement(1.0);
    }

    async fn authenticate(
        &self,
        stream: &mut futures::stream::SplitStream<WebSocket>,
        tx: &mpsc::UnboundedSender<Outbound>,
    ) -> Option<ConnId> {
        let fail = |code: u16, error: &str, message: String| {
            let _ = tx.send(Outbound::Frame(ServerFrame::Error {
                code: error.into(),
                message: message.clone(),
            }));
            let _ = tx.send(Outbound::Close(code, message));
            None
        };
        let timeout = Duration::from_millis(self.config.sessions.auth_timeout_ms);
        let deadline = self.timers.enter();
        let first = tokio::time::timeout(timeout, next_text(stream)).await;
        drop(deadline);
        let first = match first {
            Err(_) => {
                return fail(
                    close::AUTH_TIMEOUT,
                    "auth_timeout",
                    "no auth frame in time".into(),
                )
            }
            Ok(None) => return None,
            Ok(Some(text)) => text,
        };
        let token = match protocol::parse(&first) {
            Ok(ClientFrame::Auth { token }) => token,
            Ok(_) => {
                return fail(
                    close::AUTH_FAILED,
                    "unauthenticated",
                    "the first frame must be auth".into(),
                )
            }
            Err(e) => return fail(close::AUTH_FAILED, e.code, e.message),
        };
        let claims = match self.verifier.verify(&token) {
            Ok(claims) => claims,
            Err(e) => {
                let code = crate::http::ApiError::from(e);
                return fail(
                    close::AUTH_FAILED,
                    code.code().as_str(),
                    format!("token refused: {}", code.code()),
                );
            }
        };
        let identity = match claims.role {
            Role::Operator => Identity::Operator(claims.clone()),
            Role::Robot => Identity::Robot(claims.sub.clone()),
            Role::Admin => Identity::Watcher,
        };
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let role = match identity.side() {
            Some(Side::Operator) => "operator",
            Some(Side::Robot) => "robot",
            None => "watcher",
        };
        let _ = tx.send(Outbound::Frame(ServerFrame::AuthOk {
            role: role.into(),
            subject: claims.sub.clone(),
        }));
        let assigned = {
            let mut st = self.state();
            if let Identity::Robot(robot) = &identity {
                st.robots.insert(robot.clone(), conn);
            }
            st.conns.insert(
                conn,
                Conn {
                    tx: tx.clone(),
                    identity: identity.clone(),
                },
            );
            match &identity {
                Identity::Robot(robot) => self
                    .raft
                    .view()
                    .read()
                    .active_session_of(robot)
                    .map(|s| s.id.clone()),
                Identity::Operator(_) | Identity::Watcher => None,
            }
        };
        if let Some(session_id) = assigned {
            let _ = tx.send(Outbound::Frame(ServerFrame::SessionAssigned { session_id }));
        }
        Some(conn)
    }

    async fn read_loop(
        &self,
        conn: ConnId,
        stream: &mut futures::stream::SplitStream<WebSocket>,
        tx: &mpsc::UnboundedSender<Outbound>,
    ) {
        let s = &self.config.sessions;
        let started = Instant::now();
        let now_ms = || started.elapsed().as_millis() as u64;
        let mut bucket = TokenBucket::new(s.frame_burst, s.frames_per_second, now_ms());
        let mut strikes = 0;
        // No per-frame check for teardown: every handler looks the connection up, and a
        // torn-down one is found nowhere (its writer is gone too).
        while let Some(text) = next_text(stream).await {
            let received = Instant::now();
            if !bucket.take(now_ms()) {
                strikes += 1;
                metrics::counter!("tether_signal_rate_limited_total").increment(1);
                if strikes >= RATE_STRIKES {
                    let _ = tx.send(Outbound::Close(
                        close::RATE_LIMITED,
                        "rate limit exceeded".into(),
                    ));
                    return;
                }
                let _ = tx.send(Outbound::Frame(error_frame("rate_limited", "slow down")));
                continue;
            }
            match protocol::parse(&text) {
                Ok(frame) => self.on_frame(conn, frame, received, tx).await,
                Err(e) => {
                    let _ = tx.send(Outbound::Frame(e.to_frame()));
                }
            }
        }
    }

    async fn on_frame(
        &self,
        conn: ConnId,
        frame: ClientFrame,
        received: Instant,
        tx: &mpsc::UnboundedSender<Outbound>,
    ) {
        let reply = |f: ServerFrame| {
            let _ = tx.send(Outbound::Frame(f));
        };
        match frame {
            ClientFrame::Auth { .. } => {
                reply(error_frame("already_authenticated", "auth comes once"))
            }
            ClientFrame::Ping => reply(ServerFrame::Pong),
            ClientFrame::Join { session_id } => self.join(conn, session_id, tx).await,
            ClientFrame::Leave => {
                let left = self.state().rooms.leave(conn);
                if let Some(left) = left {
                    self.announce_left(left).await;
                }
            }
            ClientFrame::Offer { sdp } => {
                self.relay(conn, RelayFrame::Offer { sdp }, received, tx)
                    .await
            }
            ClientFrame::Answer { sdp } => {
                self.relay(conn, RelayFrame::Answer { sdp }, received, tx)
                    .await
            }
            ClientFrame::Candidate {
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => {
                self.relay(
                    conn,
                    RelayFrame::Candidate {
                        candidate,
                        sdp_mid,
                        sdp_mline_index,
                    },
                    received,
                    tx,
                )
                .await
            }
        }
    }

    /// The deny check from local applied state (S1): no I/O, no await.
    fn check_local(
        &self,
        identity: &Identity,
        session_id: &str,
    ) -> Result<Option<Session>, Denied> {
        let state = self.raft.view().read();
        let Some(session) = state.session(session_id) else {
            return Ok(None);
        };
        if let Some(r) = state.denial(
            Some(&session.id),
            Some(&session.token_id),
            Some(&session.operator),
        ) {
            return Err(denied("session_revoked", format!("revoked: {}", r.reason)));
        }
        match session.state {
            SessionState::Active => {}
            SessionState::Revoked => {
                return Err(denied("session_revoked", "the session was revoked"))
            }
            SessionState::Terminated => {
                return Err(denied("session_terminated", "the session has ended"))
            }
        }
        match identity {
            Identity::Operator(claims) => {
                if claims.sid.as_deref() != Some(session_id) || claims.sub != session.operator {
                    return Err(denied("forbidden", "this token is not for that session"));
                }
                if let Some(r) = state.denial(None, Some(&claims.jti), Some(&claims.sub)) {
                    return Err(denied("session_revoked", format!("revoked: {}", r.reason)));
                }
            }
            Identity::Robot(robot) => {
                if *robot != session.robot {
                    return Err(denied("forbidden", "that session is for another robot"));
                }
            }
            Identity::Watcher => return Err(denied("forbidden", "watchers do not join sessions")),
        }
        Ok(Some(session.clone()))
    }

    /// Admits a join only once this node is known to be current (S2).
    async fn admit(&self, identity: &Identity, session_id: &str) -> Result<Session, Denied> {
        let started = Instant::now();
        if let Err(d) = self.check_local(identity, session_id) {
            metrics::histogram!("tether_join_denial_seconds")
                .record(started.elapsed().as_secs_f64());
            return Err(d);
        }
        let timeout = Duration::from_millis(self.config.sessions.admission_timeout_ms);
        if let Err(e) = self.raft.read_barrier(timeout).await {
            return Err(denied(
                "unavailable",
                format!("cannot confirm the session with a quorum: {e}"),
            ));
        }
        match self.check_local(identity, session_id)? {
            Some(session) => Ok(session),
            None => Err(denied(
                "session_not_found",
                format!("no session {session_id}"),
            )),
        }
    }

    async fn join(&self, conn: ConnId, session_id: String, tx: &mpsc::UnboundedSender<Outbound>) {
        let Some(identity) = self.state().conns.get(&conn).map(|c| c.identity.clone()) else {
            return;
        };
        let Some(side) = identity.side() else {
            let _ = tx.send(Outbound::Frame(error_frame(
                "forbidden",
                "watchers do not join sessions",
            )));
            return;
        };
        if let Err(d) = self.admit(&identity, &session_id).await {
            metrics::counter!("tether_joins_total", "result" => "denied").increment(1);
            tracing::info!(%session_id, code = d.code, "join denied");
            self.audit.record(
                "JOIN_DENIED",
                &session_id,
                serde_json::json!({ "code": d.code, "side": side }),
            );
            let _ = tx.send(Outbound::Frame(error_frame(d.code, &d.message)));
            return;
        }
        metrics::counter!("tether_joins_total", "result" => "admitted").increment(1);
        let (joined, previous) = self.state().rooms.join(conn, &session_id, side);
        if let Some(left) = previous {
            self.announce_left(left).await;
        }
        if let Some(old) = joined.replaced {
            let st = self.state();
            if let Some(c) = st.conns.get(&old) {
                let _ = c.tx.send(Outbound::Close(
                    close::REPLACED,
                    "replaced by a newer connection".into(),
                ));
            }
        }
        // Tell the other nodes, and learn whether the peer is connected to one of them.
        let mut peer = joined.peer;
        let answers = self
            .broadcast(&NodeSignal::Presence {
                session_id: session_id.clone(),
                side,
                joined: true,
            })
            .await;
        for (node, answer) in answers {
            if peer.is_none() && answer.present.contains(&side.other()) {
                let (_, displaced) =
                    self.state()
                        .rooms
                        .remote_joined(&session_id, side.other(), node);
                debug_assert!(displaced.is_none());
                peer = Some(Location::Remote(node));
            }
        }
        let _ = tx.send(Outbound::Frame(ServerFrame::Joined {
            session_id: session_id.clone(),
            peer_present: peer.is_some(),
        }));
        if let Some(Location::Local(other)) = peer {
            self.send(other, ServerFrame::PeerJoined { session_id });
        }
    }

    async fn relay(
        &self,
        conn: ConnId,
        frame: RelayFrame,
        received: Instant,
        tx: &mpsc::UnboundedSender<Outbound>,
    ) {
        let target = self
            .state()
            .rooms
            .peer_of(conn)
            .map(|(sid, side, peer)| (sid.to_owned(), side, peer));
        match target {
            None => {
                let _ = tx.send(Outbound::Frame(error_frame(
                    "not_joined",
                    "join a session first",
                )));
            }
            Some((_, _, None)) => {
                let _ = tx.send(Outbound::Frame(error_frame(
                    "peer_not_present",
                    "the other peer is not connected",
                )));
            }
            Some((_, _, Some(Location::Local(other)))) => {
                if let Some(c) = self.state().conns.get(&other) {
                    let _ = c.tx.send(Outbound::Relayed(
                        frame.into(),
                        received,
                        self.relay_local.clone(),
                    ));
                }
            }
            Some((session_id, side, Some(Location::Remote(node)))) => {
                let message = NodeSignal::Relay {
                    session_id,
                    to: side.other(),
                    frame,
                };
                // Awaited before the next frame is read: order is kept per sender.
                let delivered = self
                    .signal(node, &message)
                    .await
                    .is_some_and(|a| a.delivered);
                if !delivered {
                    let _ = tx.send(Outbound::Frame(error_frame(
                        "relay_failed",
                        "the peer's node did not take the frame",
                    )));
                }
            }
        }
    }

    async fn signal(&self, node: NodeId, message: &NodeSignal) -> Option<SignalAnswer> {
        let payload = serde_json::to_vec(message).ok()?;
        let answer = self.raft.signal(node, payload, RELAY_TIMEOUT).await.ok()?;
        serde_json::from_slice(&answer).ok()
    }

    async fn broadcast(&self, message: &NodeSignal) -> Vec<(NodeId, SignalAnswer)> {
        let calls = self
            .raft
            .other_members()
            .into_iter()
            .map(|node| async move { self.signal(node, message).await.map(|a| (node, a)) });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn announce_left(&self, left: tether_signaling::rooms::Left) {
        match left.peer {
            Some(Location::Local(other)) => self.send(
                other,
                ServerFrame::PeerLeft {
                    session_id: left.session_id.clone(),
                },
            ),
            Some(Location::Remote(node)) => {
                let _ = self
                    .signal(
                        node,
                        &NodeSignal::Presence {
                            session_id: left.session_id.clone(),
                            side: left.side,
                            joined: false,
                        },
                    )
                    .await;
            }
            None => {}
        }
    }

    fn on_node_signal(&self, from: NodeId, payload: &[u8]) -> Vec<u8> {
        let arrived = Instant::now();
        let answer = match serde_json::from_slice::<NodeSignal>(payload) {
            Ok(NodeSignal::Presence {
                session_id,
                side,
                joined,
            }) => {
                let mut st = self.state();
                let notify = if joined {
                    let (notify, displaced) = st.rooms.remote_joined(&session_id, side, from);
                    if let Some(old) = displaced.and_then(|c| st.conns.get(&c)) {
                        let _ = old.tx.send(Outbound::Close(
                            close::REPLACED,
                            "joined on another node".into(),
                        ));
                    }
                    notify.map(|c| {
                        (
                            c,
                            ServerFrame::PeerJoined {
                                session_id: session_id.clone(),
                            },
                        )
                    })
                } else {
                    st.rooms.remote_left(&session_id, side, from).map(|c| {
                        (
                            c,
                            ServerFrame::PeerLeft {
                                session_id: session_id.clone(),
                            },
                        )
                    })
                };
                if let Some((conn, frame)) = notify {
                    if let Some(c) = st.conns.get(&conn) {
                        let _ = c.tx.send(Outbound::Frame(frame));
                    }
                }
                let present = [Side::Operator, Side::Robot]
                    .into_iter()
                    .filter(|s| st.rooms.local(&session_id, *s).is_some())
                    .collect();
                SignalAnswer {
                    present,
                    delivered: false,
                }
            }
            Ok(NodeSignal::Relay {
                session_id,
                to,
                frame,
            }) => {
                let st = self.state();
                let delivered = st
                    .rooms
                    .local(&session_id, to)
                    .and_then(|c| st.conns.get(&c))
                    .is_some_and(|c| {
                        c.tx.send(Outbound::Relayed(
                            frame.into(),
                            arrived,
                            self.relay_from_peer_node.clone(),
                        ))
                        .is_ok()
                    });
                SignalAnswer {
                    present: vec![],
                    delivered,
                }
            }
            Err(e) => {
                tracing::warn!(from, error = %e, "bad signaling message from a node");
                SignalAnswer::default()
            }
        };
        serde_json::to_vec(&answer).unwrap_or_default()
    }

    async fn disconnect(&self, conn: ConnId) {
        let left = {
            let mut st = self.state();
            if let Some(Conn {
                identity: Identity::Robot(robot),
                ..
            }) = st.conns.remove(&conn)
            {
                if st.robots.get(&robot) == Some(&conn) {
                    st.robots.remove(&robot);
                }
            }
            st.rooms.leave(conn)
        };
        if let Some(left) = left {
            self.announce_left(left).await;
        }
    }

    /// Applies session starts and ends to this node's connections (S4).
    async fn teardown_loop(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let mut events = self.raft.session_events();
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = stopped.wait_for(|s| *s) => return,
            };
            match event {
                Ok(SessionEvent::Started(session)) => {
                    self.audit.record(
                        "SESSION_STARTED",
                        &session.id,
                        serde_json::json!({ "operator": session.operator, "robot": session.robot }),
                    );
                    let robot_conn = self.state().robots.get(&session.robot).copied();
                    if let Some(conn) = robot_conn {
                        self.send(
                            conn,
                            ServerFrame::SessionAssigned {
                                session_id: session.id,
                            },
                        );
                    }
                }
                Ok(SessionEvent::Ended(session)) => self.tear_down(&session, false),
                Ok(SessionEvent::Reset)
                | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    self.tear_down_all_ended()
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Tells every connection of an ended session why, closes it and frees its room.
    /// With `quiet`, a session with no connection here is skipped without an audit record
    /// (the re-check after a snapshot or a missed event).
    fn tear_down(&self, session: &Session, quiet: bool) {
        let started = Instant::now();
        let reason = session.end_reason.clone().unwrap_or_default();
        let (frame, code) = match session.state {
            SessionState::Revoked => (
                ServerFrame::Revoked {
                    session_id: session.id.clone(),
                    reason: reason.clone(),
                },
                close::REVOKED,
            ),
            _ => (
                ServerFrame::Terminated {
                    session_id: session.id.clone(),
                    reason: reason.clone(),
                },
                close::TERMINATED,
            ),
        };
        let mut st = self.state();
        let mut targets = st.rooms.close_session(&session.id);
        // Operators holding the session's token but not (yet) joined, and the robot.
        for (id, c) in &st.conns {
            let holds = match &c.identity {
                Identity::Operator(claims) => claims.sid.as_deref() == Some(&session.id),
                Identity::Robot(robot) => *robot == session.robot,
                Identity::Watcher => false,
            };
            if holds && !targets.contains(id) {
                targets.push(*id);
            }
        }
        if quiet && targets.is_empty() {
            return;
        }
        let ended_at = session.ended_at.unwrap_or(session.created_at);
        let notice = ServerFrame::SessionTerminated {
            session_id: session.id.clone(),
            operator: session.operator.clone(),
            robot: session.robot.clone(),
            terminated_at: tether_api::time::rfc3339(ended_at),
            duration_seconds: ended_at.saturating_sub(session.created_at) / 1000,
            reason: reason.clone(),
        };
        // Watchers hear of every session; operators of sessions on the robots they own.
        let owner = self.config.sessions.owner_of(&session.robot);
        let told = |identity: &Identity| match identity {
            Identity::Watcher => true,
            Identity::Operator(claims) => owner == Some(claims.sub.as_str()),
            Identity::Robot(_) => false,
        };
        // The session's own connections first (S4). One that is also told gets the notice
        // before its close: a writer stops at the close.
        for conn in &targets {
            if let Some(c) = st.conns.get(conn) {
                if told(&c.identity) {
                    let _ = c.tx.send(Outbound::Frame(notice.clone()));
                }
                let _ = c.tx.send(Outbound::Frame(frame.clone()));
                let _ = c.tx.send(Outbound::Close(code, reason.clone()));
            }
        }
        for (id, c) in &st.conns {
            if told(&c.identity) && !targets.contains(id) {
                let _ = c.tx.send(Outbound::Frame(notice.clone()));
            }
        }
        for conn in &targets {
            st.conns.remove(conn);
        }
        st.robots.retain(|_, c| !targets.contains(c));
        drop(st);
        let event = match session.state {
            SessionState::Revoked => "SESSION_REVOKED",
            _ => "SESSION_TERMINATED",
        };
        let detail = serde_json::json!({
            "operator": session.operator,
            "robot": session.robot,
            "reason": reason,
        });
        self.audit.record(event, &session.id, detail);
        self.audit.record(
            "TEARDOWN",
            &session.id,
            serde_json::json!({ "connections": targets.len(), "micros": started.elapsed().as_micros() as u64 }),
        );
        if !targets.is_empty() {
            tracing::info!(session_id = %session.id, state = ?session.state, connections = targets.len(), micros = started.elapsed().as_micros() as u64, "session torn down");
        }
        metrics::histogram!("tether_teardown_seconds").record(started.elapsed().as_secs_f64());
    }

    fn tear_down_all_ended(&self) {
        let ended: Vec<Session> = {
            let state = self.raft.view().read();
            state
                .sessions()
                .filter(|s| s.state != SessionState::Active)
                .cloned()
                .collect()
        };
        for session in ended {
            self.tear_down(&session, true);
        }
    }

    /// Renews the lease of every robot here with an active session each quarter lease (S7),
    /// each renewal only right after this node has proved contact with the quorum. Without a
    /// quorum nothing is sent, and the robots stop when their leases run out.
    ///
    /// The robots are spread over [`lease_groups`] turns per quarter lease, each turn with
    /// its own quorum check: renewing a thousand robots at once held every relay on this
    /// node (and every client reading them) behind a burst of lease frames, for up to 30 ms.
    /// Turns keep to a fixed schedule: when a quorum check takes longer than a turn, the
    /// next check covers every group that fell due meanwhile, so each robot still gets a
    /// lease about every quarter lease.
    async fn lease_loop(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        let ttl = self.config.sessions.lease_ttl_ms;
        let groups = lease_groups(ttl);
        let quarter = Duration::from_millis(ttl / 4);
        let turn = quarter / groups as u32;
        let start = tokio::time::Instant::now();
        let mut served = 0u64;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(start + turn_time(turn, served)) => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            let due;
            (due, served) = due_groups(start.elapsed(), turn, served, groups);
            let robots: Vec<(String, ConnId)> = self
                .state()
                .robots
                .iter()
                .filter(|(_, c)| due[lease_group(**c, groups) as usize])
                .map(|(r, c)| (r.clone(), *c))
                .collect();
            if robots.is_empty() {
                continue;
            }
            if self.raft.read_barrier(quarter / 2).await.is_err() {
                metrics::counter!("tether_lease_rounds_total", "result" => "no_quorum")
                    .increment(1);
                continue;
            }
            metrics::counter!("tether_lease_rounds_total", "result" => "renewed").increment(1);
            let grants: Vec<(ConnId, String)> = {
                let state = self.raft.view().read();
                robots
                    .into_iter()
                    .filter_map(|(robot, conn)| {
                        state
                            .active_session_of(&robot)
                            .map(|s| (conn, s.id.clone()))
                    })
                    .collect()
            };
            // Still in slices, yielding between them, for nodes with very many robots.
            for slice in grants.chunks(LEASE_SLICE) {
                for (conn, session_id) in slice {
                    self.send(
                        *conn,
                        ServerFrame::Lease {
                            session_id: session_id.clone(),
                            ttl_ms: ttl,
                        },
                    );
                }
                tokio::task::yield_now().await;
            }
        }
    }
}

/// When turn `n` falls due, counted from the lease loop's start.
fn turn_time(turn: Duration, n: u64) -> Duration {
    Duration::from_nanos((turn.as_nanos() as u64).saturating_mul(n))
}

/// The lease groups due `elapsed` after the loop's start, when `served` turns have been
/// served: every turn whose time has come and that was not served yet, each group at most
/// once. Returns which groups are due and the new count of turns served.
fn due_groups(elapsed: Duration, turn: Duration, served: u64, groups: u64) -> (Vec<bool>, u64) {
    let come = (elapsed.as_nanos() / turn.as_nanos().max(1)) as u64 + 1;
    let mut due = vec![false; groups as usize];
    for t in served..come.min(served + groups) {
        due[(t % groups) as usize] = true;
    }
    (due, come.max(served))
}

/// Which turn renews connection `conn`'s lease. Fibonacci hashing: connection ids come
/// in patterns (a robot, then its operator), which a plain modulo would crowd into a few
/// turns.
fn lease_group(conn: ConnId, groups: u64) -> u64 {
    (conn.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % groups
}

/// Turns per quarter lease over which robots' renewals are spread: up to 64, each turn at
/// least 4 ms apart (a quorum check per turn, skipped when the turn has no robot). With
/// 1,000 robots a turn writes about 16 leases.
fn lease_groups(ttl_ms: u64) -> u64 {
    (ttl_ms / 4 / 4).clamp(1, 64)
}

fn error_frame(code: &str, message: &str) -> ServerFrame {
    ServerFrame::Error {
        code: code.into(),
        message: message.into(),
    }
}

/// The next text frame, skipping pings; `None` when the socket closes or sends binary.
async fn next_text(stream: &mut futures::stream::SplitStream<WebSocket>) -> Option<String> {
    loop {
        match stream.next().await? {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Binary(_)) | Ok(Message::Close(_)) | Err(_) => return None,
        }
    }
}

/// Finishes the closing handshake: reads (and drops) what the peer still sends until its
/// close frame, for at most [`CLOSE_DRAIN`]. Closing the socket with unread frames in the
/// kernel's buffer would reset the connection, and the peer would lose our close frame
/// and its code (a flooder would see 1006 instead of 4029).
async fn drain_until_closed(stream: &mut futures::stream::SplitStream<WebSocket>) {
    let drain = async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_DRAIN, drain).await;
}

/// Leases queued before the lease loop lets other tasks run: small, so that a frame to
/// relay waits behind a few lease writes at most.
const LEASE_SLICE: usize = 4;

/// How long a closing connection waits for the peer's close frame.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_turns_are_at_least_4_ms_apart_and_at_most_64_per_quarter() {
        assert_eq!(lease_groups(1_000), 62);
        assert_eq!(lease_groups(10_000), 64);
        assert_eq!(lease_groups(200), 12);
        assert_eq!(lease_groups(40), 2);
    }

    #[test]
    fn a_late_lease_turn_covers_every_group_that_fell_due_meanwhile() {
        let turn = Duration::from_millis(4);
        // On time: turn 0 at 0 ms serves group 0 alone.
        let (due, served) = due_groups(Duration::ZERO, turn, 0, 8);
        assert_eq!(
            (due, served),
            (
                vec![true, false, false, false, false, false, false, false],
                1
            )
        );
        // A quorum check took 10 ms: at 14 ms turns 1..=3 are due, one check for all three.
        let (due, served) = due_groups(Duration::from_millis(14), turn, 1, 8);
        assert_eq!(served, 4);
        assert_eq!(
            due,
            vec![false, true, true, true, false, false, false, false]
        );
        // More than a whole cycle late: every group once, and the schedule moves on.
        let (due, served) = due_groups(Duration::from_millis(100), turn, 4, 8);
        assert!(due.iter().all(|d| *d));
        assert_eq!(served, 26);
        assert_eq!(turn_time(turn, served), Duration::from_millis(104));
    }

    #[test]
    fn robots_spread_evenly_over_the_lease_turns_whatever_the_pattern_of_their_ids() {
        // Robots alone, every other id (robot then operator), every fourth.
        for step in [1u64, 2, 4] {
            let mut turns = [0usize; 64];
            for conn in (1..).step_by(step as usize).take(6_400) {
                turns[lease_group(conn, 64) as usize] += 1;
            }
            assert!(
                turns.iter().all(|&n| (70..=130).contains(&n)),
                "step {step}: {turns:?}"
            );
        }
    }
}
