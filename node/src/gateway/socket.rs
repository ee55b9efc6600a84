//! One signaling WebSocket: its writer task, authentication with a deadline, the read loop
//! with the frame rate limit, and the closing handshake.

use super::{Hub, Outbound};
use crate::auth::{AuthError, Claims, Role};
use crate::telemetry::names;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::SplitStream;
use futures::{SinkExt, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tether_signaling::codes::{CloseCode, ErrorCode};
use tether_signaling::hub::{FrameStep, HubCore, Identity};
use tether_signaling::protocol::{self, ClientFrame};
use tether_signaling::rate::{FrameGate, Gate};
use tether_signaling::rooms::ConnId;
use tokio::sync::mpsc;

/// How long a closing connection waits for the peer's close frame.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

impl Hub {
    /// Serves one WebSocket until it closes.
    pub async fn serve(self: Arc<Self>, socket: WebSocket) {
        let _reader = self.tasks.enter();
        let writing = self.tasks.enter();
        self.live.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(names::SIGNAL_CONNECTIONS).increment(1.0);
        let (sink, mut stream) = socket.split();
        let (tx, rx) = mpsc::unbounded_channel::<Outbound>();
        let writer = tokio::spawn(async move {
            let _writing = writing;
            write_until_closed(sink, rx).await;
        });
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.shell().writers.insert(conn, tx);
        if self.authenticate(conn, &mut stream).await {
            self.read_loop(conn, &mut stream).await;
            self.act(Instant::now(), |core| core.disconnected(conn))
                .await;
        }
        // The writer ends once its sender is gone (or at a close it was given).
        self.shell().writers.remove(&conn);
        let _ = writer.await;
        {
            let _deadline = self.timers.enter();
            drain_until_closed(&mut stream).await;
        }
        self.live.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(names::SIGNAL_CONNECTIONS).decrement(1.0);
    }

    /// Reads the `auth` frame (within the deadline) and registers the connection; on any
    /// failure the client gets an error frame and a close. True when authenticated.
    async fn authenticate(&self, conn: ConnId, stream: &mut SplitStream<WebSocket>) -> bool {
        let refuse = |close, code, message: String| async move {
            self.act(Instant::now(), |_| {
                HubCore::auth_refused(conn, close, code, message)
            })
            .await;
            false
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
            Ok(None) => return false,
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
        let claims = match self.verifier.verify(&token) {
            Ok(claims) => claims,
            Err(e) => {
                let code = match e {
                    AuthError::Missing => ErrorCode::MissingToken,
                    AuthError::Expired => ErrorCode::TokenExpired,
                    AuthError::Invalid(_) => ErrorCode::InvalidToken,
                    AuthError::Key(_) => ErrorCode::Internal,
                };
                return refuse(
                    CloseCode::AuthFailed,
                    code,
                    format!("token refused: {code}"),
                )
                .await;
            }
        };
        let identity = identity_of(claims);
        let assigned = match &identity {
            Identity::Robot { robot_id } => self
                .raft
                .view()
                .read()
                .active_session_of(robot_id)
                .map(|s| s.id.clone()),
            Identity::Operator { .. } | Identity::Watcher { .. } => None,
        };
        self.act(Instant::now(), |core| {
            core.authenticated(conn, identity, assigned)
        })
        .await;
        true
    }

    async fn read_loop(&self, conn: ConnId, stream: &mut SplitStream<WebSocket>) {
        let s = &self.config.sessions;
        let started = Instant::now();
        let now_ms = || started.elapsed().as_millis() as u64;
        let mut gate = FrameGate::new(s.frame_burst, s.frames_per_second, now_ms());
        while let Some(text) = next_text(stream).await {
            let received = Instant::now();
            match gate.check(now_ms()) {
                Gate::Pass => {}
                Gate::Refuse(frame) => {
                    metrics::counter!(names::SIGNAL_RATE_LIMITED_TOTAL).increment(1);
                    self.act(received, |_| {
                        vec![tether_signaling::hub::Action::Send(conn, frame)]
                    })
                    .await;
                    continue;
                }
                Gate::Cut(code, reason) => {
                    metrics::counter!(names::SIGNAL_RATE_LIMITED_TOTAL).increment(1);
                    self.act(received, |_| {
                        vec![tether_signaling::hub::Action::Close(conn, code, reason)]
                    })
                    .await;
                    return;
                }
            }
            match protocol::parse(&text) {
                Ok(frame) => self.on_frame(conn, frame, received).await,
                Err(e) => {
                    let frame = e.to_frame();
                    self.act(received, |_| {
                        vec![tether_signaling::hub::Action::Send(conn, frame)]
                    })
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
            Some(FrameStep::Forward { node, signal }) => {
                // Awaited before the next frame is read: order is kept per sender.
                let delivered = self
                    .signal(node, &signal)
                    .await
                    .is_some_and(|a| a.delivered);
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
        },
        Role::Admin => Identity::Watcher {
            subject: claims.sub,
        },
    }
}

/// Writes what the connection is given until a close (sent, then the writer stops) or
/// until the sender is gone.
async fn write_until_closed(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
) {
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
