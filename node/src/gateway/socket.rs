//! One signaling WebSocket: its writer task, authentication with a deadline, the read loop
//! with the frame rate limit, and the closing handshake.

use super::{Hub, Outbound};
use crate::auth::{AuthError, Claims, Role, TokenKind};
use crate::telemetry::names;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_api::time::now_ms;
use tether_signaling::codes::{CloseCode, ErrorCode};
use tether_signaling::hub::{Action, FrameStep, HubCore, Identity, Welcome};
use tether_signaling::lease::LeaseAsk;
use tether_signaling::protocol::{self, error_frame, ClientFrame, LastSession};
use tether_signaling::rate::{FrameGate, Gate};
use tether_signaling::rooms::ConnId;
use tether_store::{Session, SessionState};
use tokio::sync::mpsc;

/// How long a closing connection waits for the peer's close frame.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

impl Hub {
    /// Serves one WebSocket until it closes, holding its `slots` (the unauthenticated one
    /// only until it authenticates).
    pub async fn serve(self: Arc<Self>, socket: WebSocket, mut slots: super::SocketSlots) {
        let _reader = self.tasks.enter();
        let writing = self.tasks.enter();
        self.live.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(names::SIGNAL_CONNECTIONS).increment(1.0);
        let (sink, mut stream) = socket.split();
        let s = &self.config.sessions;
        let (frames, frames_rx) = mpsc::channel::<Outbound>(s.outbound_queue_frames);
        let (closing, closing_rx) = mpsc::unbounded_channel::<Outbound>();
        let (ended, writer_ended) = tokio::sync::watch::channel(false);
        let stall = Duration::from_millis(s.write_stall_ms);
        let writer = tokio::spawn(async move {
            let _writing = writing;
            let closed = write_until_closed(sink, frames_rx, closing_rx, stall).await;
            let _ = ended.send(true);
            closed
        });
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let lanes = super::Writer {
            frames,
            closing,
            overflowed: Default::default(),
        };
        self.shell().writers.insert(conn, lanes);
        let authenticated = self.authenticate(conn, &mut stream).await;
        if let Some(expires_at_ms) = authenticated {
            slots.unauthenticated = None;
            self.read_loop(conn, &mut stream, expires_at_ms, writer_ended)
                .await;
            self.act(Instant::now(), |core| core.disconnected(conn))
                .await;
            self.leases().forget(conn);
        }
        // The writer ends once its senders are gone (or at a close it was given).
        self.shell().writers.remove(&conn);
        let closed = writer.await.unwrap_or(Written::Stalled);
        // Only an authenticated client whose close frame went out is waited for: the
        // drain protects its close code; a socket that never authenticated gets no
        // second of this node's time, and a stalled one would not read it anyway.
        if authenticated.is_some() && closed == Written::Closed {
            let _deadline = self.timers.enter();
            drain_until_closed(&mut stream).await;
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(names::SIGNAL_CONNECTIONS).decrement(1.0);
    }

    /// Reads the `auth` frame (within the deadline) and registers the connection; on any
    /// failure the client gets an error frame and a close. When authenticated, the token's
    /// expiry (ms since the epoch), at which the connection closes unless re-authenticated.
    async fn authenticate(&self, conn: ConnId, stream: &mut SplitStream<WebSocket>) -> Option<u64> {
        let refuse = |close, code, message: String| async move {
            self.act(Instant::now(), |_| {
                HubCore::auth_refused(conn, close, code, message)
            })
            .await;
            None
        };
        let timeout = Duration::from_millis(self.config.sessions.auth_timeout_ms);
        let deadline = self.timers.enter();
        let first = tokio::time::timeout(timeout, next_text(stream)).await;
        drop(deadline);
        let first = match first {
            Err(_) => {
                return refuse(
                    CloseCode::AuthTimeout,
                    ErrorCode::AuthTimeout,
                    "no auth frame in time".into(),
                )
                .await
            }
            Ok(None) => return None,
            Ok(Some(text)) => text,
        };
        let token = match protocol::parse(&first) {
            Ok(ClientFrame::Auth { token }) => token,
            Ok(_) => {
                return refuse(
                    CloseCode::AuthFailed,
                    ErrorCode::Unauthenticated,
                    "the first frame must be auth".into(),
                )
                .await
            }
            Err(e) => return refuse(CloseCode::AuthFailed, e.error_code(), e.message).await,
        };
        let claims = match self.check_token(&token) {
            Ok(claims) => claims,
            // A session token of a revoked session: told as the session's revocation, with
            // its close code, as a join would have been.
            Err((ErrorCode::SessionRevoked, message)) => {
                return refuse(CloseCode::Revoked, ErrorCode::SessionRevoked, message).await
            }
            Err((code, message)) => return refuse(CloseCode::AuthFailed, code, message).await,
        };
        let expires_at_ms = claims.expires_at_ms();
        let identity = identity_of(claims);
        let welcome = {
            let state = self.raft.view().read();
            let mut welcome = Welcome::expiring_in(expires_at_ms.saturating_sub(now_ms()));
            if let Identity::Robot { robot_id, .. } = &identity {
                welcome.assigned_session = state.active_session_of(robot_id).map(|s| s.id.clone());
                welcome.last_session = state.latest_session_of(robot_id).map(last_session);
            }
            welcome
        };
        self.act(Instant::now(), |core| {
            core.authenticated(conn, identity, welcome)
        })
        .await;
        Some(expires_at_ms)
    }

    /// A token presented on `/v1/signal`, checked with no I/O (S1): its signature, expiry
    /// and lifetime, and the revocations of its id, its session and its subject. Every
    /// kind of token may connect (a session token to join its session, a robot token as its
    /// robot, a login token for its robots' notices, an admin token to watch).
    fn check_token(&self, token: &str) -> Result<Claims, (ErrorCode, String)> {
        let claims = self.verifier.verify(token).map_err(|e| {
            let code = match e {
                AuthError::Missing => ErrorCode::MissingToken,
                AuthError::Expired => ErrorCode::TokenExpired,
                AuthError::Invalid(_) => ErrorCode::InvalidToken,
                AuthError::Key(_) => ErrorCode::Internal,
            };
            (code, format!("token refused: {code}"))
        })?;
        if let Some(r) = crate::auth::denial(&self.raft.view().read(), &claims) {
            // For a session token, any of these revocations revoked its session.
            let code = match claims.kind() {
                Some(TokenKind::Session) => ErrorCode::SessionRevoked,
                _ => ErrorCode::CredentialRevoked,
            };
            return Err((
                code,
                format!("this token is revoked ({}): {}", r.kind.as_str(), r.reason),
            ));
        }
        Ok(claims)
    }

    /// A fresh `auth` on an authenticated connection: the new expiry when the core took it.
    /// A refused token leaves the connection as it was, with an error frame.
    async fn reauthenticate(&self, conn: ConnId, token: &str) -> Option<u64> {
        let claims = match self.check_token(token) {
            Ok(claims) => claims,
            Err((code, message)) => {
                self.act(Instant::now(), |_| {
                    vec![Action::Send(conn, error_frame(code, message))]
                })
                .await;
                return None;
            }
        };
        let expires_at_ms = claims.expires_at_ms();
        let expires_in_ms = expires_at_ms.saturating_sub(now_ms());
        let mut taken = false;
        self.act(Instant::now(), |core| {
            let (t, actions) = core.reauthenticated(conn, identity_of(claims), expires_in_ms);
            taken = t;
            actions
        })
        .await;
        taken.then_some(expires_at_ms)
    }

    /// Reads frames until the socket closes, or until the token expires (4004) without a
    /// fresh `auth` before.
    async fn read_loop(
        &self,
        conn: ConnId,
        stream: &mut SplitStream<WebSocket>,
        mut expires_at_ms: u64,
        mut writer_ended: tokio::sync::watch::Receiver<bool>,
    ) {
        let s = &self.config.sessions;
        let started = Instant::now();
        let elapsed_ms = || started.elapsed().as_millis() as u64;
        let mut gate = FrameGate::new(s.frame_burst, s.frames_per_second, elapsed_ms());
        let expiry = tokio::time::sleep_until(until(expires_at_ms));
        tokio::pin!(expiry);
        loop {
            let text = tokio::select! {
                text = next_text(stream) => match text {
                    Some(text) => text,
                    None => return,
                },
                _ = &mut expiry => {
                    metrics::counter!(names::SIGNAL_TOKEN_EXPIRED_TOTAL).increment(1);
                    self.act(Instant::now(), |core| core.token_expired(conn)).await;
                    return;
                }
                // Closed by this node (its close went out) or stalled: nothing more to read.
                _ = crate::until_set(&mut writer_ended) => return,
            };
            let received = Instant::now();
            match gate.check(elapsed_ms()) {
                Gate::Pass => {}
                Gate::Refuse(frame) => {
                    metrics::counter!(names::SIGNAL_RATE_LIMITED_TOTAL).increment(1);
                    self.act(received, |_| vec![Action::Send(conn, frame)])
                        .await;
                    continue;
                }
                Gate::Cut(code, reason) => {
                    metrics::counter!(names::SIGNAL_RATE_LIMITED_TOTAL).increment(1);
                    self.act(received, |_| vec![Action::Close(conn, code, reason)])
                        .await;
                    return;
                }
            }
            match protocol::parse(&text) {
                Ok(ClientFrame::Auth { token }) => {
                    if let Some(at) = self.reauthenticate(conn, &token).await {
                        expires_at_ms = at;
                        expiry.as_mut().reset(until(expires_at_ms));
                    }
                }
                Ok(frame) => self.on_frame(conn, frame, received).await,
                Err(e) => {
                    let frame = e.to_frame();
                    self.act(received, |_| vec![Action::Send(conn, frame)])
                        .await
                }
            }
        }
    }

    async fn on_frame(&self, conn: ConnId, frame: ClientFrame, received: Instant) {
        let (step, remote) = {
            let mut shell = self.shell();
            match shell.core.frame(conn, frame) {
                FrameStep::Done(actions) => {
                    let remote = self.perform(&shell, actions, received);
                    (None, remote)
                }
                other => (Some(other), Vec::new()),
            }
        };
        self.send_remote(remote).await;
        match step {
            None | Some(FrameStep::Done(_)) => {}
            Some(FrameStep::Admit {
                session_id,
                identity,
                side,
            }) => self.join(conn, session_id, identity, side).await,
            Some(FrameStep::Lease {
                robot_id,
                session_id,
                nonce,
            }) => self.lease_asked(LeaseAsk {
                conn,
                robot_id,
                session_id,
                nonce,
            }),
            Some(FrameStep::Forward { node, signal }) => {
                // Awaited before the next frame is read: order is kept per sender.
                let answer = self.signal(node, &signal).await;
                self.relay_outcome(node, answer.is_some()).await;
                let delivered = answer.is_some_and(|a| a.delivered);
                self.act(received, |core| core.relay_result(conn, delivered))
                    .await;
            }
        }
    }
}

/// Who the verified claims say is on a connection.
fn identity_of(claims: Claims) -> Identity {
    match claims.role {
        Role::Operator => Identity::Operator {
            subject: claims.sub,
            session_id: claims.sid,
            token_id: claims.jti,
        },
        Role::Robot => Identity::Robot {
            robot_id: claims.sub,
            token_id: claims.jti,
        },
        Role::Admin => Identity::Watcher {
            subject: claims.sub,
            token_id: claims.jti,
        },
    }
}

/// The tokio instant of a wall-clock instant (ms since the epoch), now if it has passed.
fn until(at_ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms()))
}

/// A robot's most recent session as `auth_ok` tells it.
fn last_session(session: &Session) -> LastSession {
    LastSession {
        session_id: session.id.clone(),
        state: match session.state {
            SessionState::Active => "active",
            SessionState::Revoked => "revoked",
            SessionState::Terminated => "terminated",
        }
        .into(),
        reason: session.end_reason.clone(),
    }
}

/// How a connection's writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Its close frame went out.
    Closed,
    /// Its senders were dropped (the reader ended first) or the socket failed.
    Ended,
    /// A write did not complete in time: the client stopped reading.
    Stalled,
}

/// Writes what the connection is given, the closing lane first, until a close (sent, then
/// the writer stops), until the senders are gone, or until a write stalls for `stall`.
async fn write_until_closed(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<Outbound>,
    mut closing: mpsc::UnboundedReceiver<Outbound>,
    stall: Duration,
) -> Written {
    loop {
        let out = tokio::select! {
            biased;
            Some(out) = closing.recv() => out,
            Some(out) = frames.recv() => out,
            else => return Written::Ended,
        };
        let (message, last) = match &out {
            Outbound::Frame(frame) | Outbound::Relayed(frame, ..) => {
                (Message::Text(protocol::render(frame).into()), false)
            }
            Outbound::Close(code, reason) => (
                Message::Close(Some(CloseFrame {
                    code: *code,
                    reason: reason.clone().into(),
                })),
                true,
            ),
        };
        let sent = match tokio::time::timeout(stall, sink.send(message)).await {
            Err(_) => {
                metrics::counter!(names::SIGNAL_TOO_SLOW_TOTAL).increment(1);
                return Written::Stalled;
            }
            Ok(sent) => sent,
        };
        if let Outbound::Relayed(_, received, histogram) = &out {
            histogram.record(received.elapsed().as_secs_f64());
        }
        match (sent, last) {
            (Err(_), _) => return Written::Ended,
            (Ok(()), true) => return Written::Closed,
            (Ok(()), false) => {}
        }
    }
}

/// The next text frame, skipping pings; `None` when the socket closes or sends binary.
async fn next_text(stream: &mut SplitStream<WebSocket>) -> Option<String> {
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
async fn drain_until_closed(stream: &mut SplitStream<WebSocket>) {
    let drain = async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_DRAIN, drain).await;
}
