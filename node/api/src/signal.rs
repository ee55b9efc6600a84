//! The one signaling client: a WebSocket to a gateway's `/v1/signal`, used by the robot
//! agent, the headless console, the tests and the benchmark harness.
//!
//! [`SignalSocket`] is the whole connection, step by step (tests send malformed frames and
//! watch close codes with it); [`connect`] authenticates and splits it into a cloneable
//! [`SignalSender`] and a [`SignalReceiver`] for long-running clients.

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tether_signaling::protocol::{ClientFrame, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Why signaling failed.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The gateway refused the token or never answered `auth`.
    #[error("gateway refused auth: {0}")]
    Refused(String),
    /// The gateway closed the socket.
    #[error("gateway closed the connection (code {0})")]
    Closed(u16),
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The close code reported when a socket dropped without a close frame.
pub const ABNORMAL_CLOSE: u16 = 1006;

/// The signaling URL of a gateway given by its HTTP base URL (`http://host:port`).
pub fn signal_url(gateway: &str) -> String {
    let base = gateway.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{base}")
    };
    format!("{base}/v1/signal")
}

/// What the gateway sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A frame, as JSON (a client may meet frame types newer than itself).
    Frame(Value),
    /// The socket closed, with this close code ([`ABNORMAL_CLOSE`] when it just dropped).
    Closed(u16),
}

impl Incoming {
    /// The frame's `type`, if this is a frame.
    pub fn frame_type(&self) -> Option<&str> {
        match self {
            Self::Frame(f) => f["type"].as_str(),
            Self::Closed(_) => None,
        }
    }

    /// The frame as a typed [`ServerFrame`], if it is one this client knows.
    pub fn typed(&self) -> Option<ServerFrame> {
        match self {
            Self::Frame(f) => serde_json::from_value(f.clone()).ok(),
            Self::Closed(_) => None,
        }
    }
}

/// One signaling WebSocket, not yet split.
pub struct SignalSocket {
    ws: Ws,
}

impl SignalSocket {
    /// Opens the WebSocket to `gateway` (an HTTP base URL or `host:port`), without auth.
    pub async fn connect(gateway: &str) -> Result<Self, SignalError> {
        // Small frames, answered at once: no Nagle delay. WSS trusts what the process was
        // told to ([`crate::tls`]).
        let connector = tokio_tungstenite::Connector::Rustls(crate::tls::client_config());
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            signal_url(gateway),
            None,
            true,
            Some(connector),
        )
        .await?;
        Ok(Self { ws })
    }

    /// Sends raw text (tests use it for malformed frames).
    pub async fn send_text(&mut self, text: String) -> Result<(), SignalError> {
        Ok(self.ws.send(Message::Text(text.into())).await?)
    }

    /// Sends a JSON value as a frame.
    pub async fn send_json(&mut self, frame: &Value) -> Result<(), SignalError> {
        self.send_text(frame.to_string()).await
    }

    /// Sends a typed frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), SignalError> {
        self.send_text(render(frame)).await
    }

    /// The next frame, or the close.
    pub async fn next(&mut self) -> Incoming {
        next_incoming(&mut self.ws).await
    }

    /// Sends `auth` and waits for the answer: the `auth_ok` frame, or why not.
    pub async fn authenticate(&mut self, token: &str) -> Result<Value, SignalError> {
        self.send(&ClientFrame::Auth {
            token: token.to_owned(),
        })
        .await?;
        match self.next().await {
            Incoming::Frame(f) if f["type"] == "auth_ok" => Ok(f),
            Incoming::Frame(f) => Err(SignalError::Refused(format!(
                "{}: {}",
                f["code"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("")
            ))),
            Incoming::Closed(code) => Err(SignalError::Closed(code)),
        }
    }

    /// Splits the socket: a writer task owns the sink, so the sender is cheap to clone.
    /// The socket closes when every sender clone is gone.
    pub fn split(self) -> (SignalSender, SignalReceiver) {
        let (mut sink, stream) = self.ws.split();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(text) = rx.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        (SignalSender { tx }, SignalReceiver { stream })
    }
}

fn render(frame: &ClientFrame) -> String {
    serde_json::to_string(frame).expect("client frames always serialize")
}

async fn next_incoming<S>(stream: &mut S) -> Incoming
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                Ok(v) => return Incoming::Frame(v),
                Err(e) => tracing::warn!(error = %e, "a gateway frame that is not JSON"),
            },
            Some(Ok(Message::Close(frame))) => {
                return Incoming::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(1005))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Incoming::Closed(ABNORMAL_CLOSE),
        }
    }
}

/// Connects to `gateway` and authenticates with `token`; fails unless `auth_ok` comes.
/// Returns the two halves of the authenticated connection.
pub async fn connect(
    gateway: &str,
    token: &str,
) -> Result<(SignalSender, SignalReceiver), SignalError> {
    let mut socket = SignalSocket::connect(gateway).await?;
    socket.authenticate(token).await?;
    Ok(socket.split())
}

/// Sends frames on a connection; cheap to clone.
#[derive(Clone)]
pub struct SignalSender {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
}

impl SignalSender {
    /// Queues a typed frame; false when the connection is gone.
    pub fn send(&self, frame: &ClientFrame) -> bool {
        self.tx.send(render(frame)).is_ok()
    }

    /// Queues a JSON frame; false when the connection is gone.
    pub fn send_json(&self, frame: &Value) -> bool {
        self.tx.send(frame.to_string()).is_ok()
    }
}

/// Receives frames on a connection.
pub struct SignalReceiver {
    stream: futures::stream::SplitStream<Ws>,
}

impl SignalReceiver {
    /// The next frame, or the close.
    pub async fn next(&mut self) -> Incoming {
        next_incoming(&mut self.stream).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_derived_from_the_gateway_address() {
        assert_eq!(
            signal_url("http://127.0.0.1:80/"),
            "ws://127.0.0.1:80/v1/signal"
        );
        assert_eq!(signal_url("https://gw"), "wss://gw/v1/signal");
        assert_eq!(signal_url("127.0.0.1:9"), "ws://127.0.0.1:9/v1/signal");
    }

    #[test]
    fn incoming_frames_are_typed_when_known() {
        let lease = Incoming::Frame(
            serde_json::json!({"type": "lease", "session_id": "s", "ttl_ms": 5, "nonce": 3}),
        );
        assert_eq!(lease.frame_type(), Some("lease"));
        assert_eq!(
            lease.typed(),
            Some(ServerFrame::Lease {
                session_id: "s".into(),
                ttl_ms: 5,
                nonce: 3
            })
        );
        assert_eq!(Incoming::Closed(4001).typed(), None);
    }
}
