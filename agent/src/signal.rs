//! A signaling client: one WebSocket to a gateway's `/v1/signal`, authenticated, with frames
//! as JSON values. Used by the robot agent and the headless console.

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
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

/// The HTTP base URL of a gateway (`host:port` gets `http://`).
pub fn http_url(gateway: &str) -> String {
    let base = gateway.trim_end_matches('/');
    if base.starts_with("http://") || base.starts_with("https://") {
        base.to_owned()
    } else {
        format!("http://{base}")
    }
}

/// What the gateway sent next.
#[derive(Debug)]
pub enum Incoming {
    /// A frame.
    Frame(Value),
    /// The socket closed, with this close code (1006 when it just dropped).
    Closed(u16),
}

/// Connects to `gateway` and authenticates with `token`; fails unless `auth_ok` comes.
/// Returns the two halves of the authenticated connection.
pub async fn connect(
    gateway: &str,
    token: &str,
) -> Result<(SignalSender, SignalReceiver), SignalError> {
    let (ws, _) = tokio_tungstenite::connect_async(signal_url(gateway)).await?;
    if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
        let _ = tcp.set_nodelay(true);
    }
    let (mut sink, stream) = ws.split();
    let auth = json!({"type": "auth", "token": token});
    sink.send(Message::Text(auth.to_string().into())).await?;
    let mut receiver = SignalReceiver { stream };
    match receiver.next().await {
        Incoming::Frame(f) if f["type"] == "auth_ok" => {}
        Incoming::Frame(f) => {
            return Err(SignalError::Refused(format!(
                "{}: {}",
                f["code"].as_str().unwrap_or("?"),
                f["message"].as_str().unwrap_or("")
            )))
        }
        Incoming::Closed(code) => return Err(SignalError::Closed(code)),
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = sink.close().await;
    });
    Ok((SignalSender { tx }, receiver))
}

/// Sends frames on a connection; cheap to clone. The socket closes when every clone is gone.
#[derive(Clone)]
pub struct SignalSender {
    tx: tokio::sync::mpsc::UnboundedSender<Value>,
}

impl SignalSender {
    /// Queues a frame; false when the connection is gone.
    pub fn send(&self, frame: Value) -> bool {
        self.tx.send(frame).is_ok()
    }
}

/// Receives frames on a connection.
pub struct SignalReceiver {
    stream: futures::stream::SplitStream<Ws>,
}

impl SignalReceiver {
    /// The next frame, or the close.
    pub async fn next(&mut self) -> Incoming {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(v) => return Incoming::Frame(v),
                    Err(e) => tracing::warn!(error = %e, "a gateway frame that is not JSON"),
                },
                Some(Ok(Message::Close(frame))) => {
                    return Incoming::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(1005))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Incoming::Closed(1006),
            }
        }
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
        assert_eq!(http_url("127.0.0.1:9"), "http://127.0.0.1:9");
    }
}
