//! The messages between nodes' gateways: presence (a side joined or left a room here) and
//! relayed frames, with their answers and their wire form.
//!
//! The wire form is JSON, not the node codec (postcard): relayed frames are JSON-tagged
//! enums (`#[serde(tag = "type")]`), which postcard cannot carry. It is byte for byte what
//! the gateway sent before this module existed, so mixed versions interoperate; the tests
//! pin it.

use crate::protocol::RelayFrame;
use crate::rooms::Side;
use serde::{Deserialize, Serialize};

/// A message from one node's gateway to another's (carried by the node's signal RPC).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum NodeSignal {
    /// `side` of `session_id` joined (or left) on the sending node.
    Presence {
        /// The session.
        session_id: String,
        /// The side that joined or left.
        side: Side,
        /// Joined (`true`) or left.
        joined: bool,
    },
    /// `session_id` ended and the sending node tore down its members: the receiver forgets
    /// them without telling its own members (its own teardown tells them why), and no
    /// later presence recreates the room.
    Ended {
        /// The session.
        session_id: String,
    },
    /// A frame for `to` of `session_id`, which the receiver holds.
    Relay {
        /// The session.
        session_id: String,
        /// The side the frame is for.
        to: Side,
        /// The frame, unchanged.
        frame: RelayFrame,
    },
}

/// The answer to a [`NodeSignal`].
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct SignalAnswer {
    /// For presence: the sides of that session connected on the answering node.
    pub present: Vec<Side>,
    /// For relay: whether the frame was delivered.
    pub delivered: bool,
}

/// A node message that could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("bad node signaling message: {0}")]
pub struct MeshError(#[from] serde_json::Error);

/// The wire form of a node message.
pub fn encode(signal: &NodeSignal) -> Vec<u8> {
    serde_json::to_vec(signal).expect("node signals always serialize")
}

/// A node message from its wire form.
pub fn decode(payload: &[u8]) -> Result<NodeSignal, MeshError> {
    Ok(serde_json::from_slice(payload)?)
}

/// The wire form of an answer.
pub fn encode_answer(answer: &SignalAnswer) -> Vec<u8> {
    serde_json::to_vec(answer).expect("answers always serialize")
}

/// An answer from its wire form.
pub fn decode_answer(payload: &[u8]) -> Result<SignalAnswer, MeshError> {
    Ok(serde_json::from_slice(payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_is_the_gateways() {
        let presence = NodeSignal::Presence {
            session_id: "s1".into(),
            side: Side::Robot,
            joined: true,
        };
        let text = r#"{"Presence":{"session_id":"s1","side":"robot","joined":true}}"#;
        assert_eq!(String::from_utf8(encode(&presence)).unwrap(), text);
        assert_eq!(decode(text.as_bytes()).unwrap(), presence);

        let relay = NodeSignal::Relay {
            session_id: "s1".into(),
            to: Side::Operator,
            frame: RelayFrame::Candidate {
                candidate: "candidate:1".into(),
                sdp_mid: Some("0".into()),
                sdp_mline_index: None,
            },
        };
        let text = r#"{"Relay":{"session_id":"s1","to":"operator","frame":{"type":"candidate","candidate":"candidate:1","sdp_mid":"0","sdp_mline_index":null}}}"#;
        assert_eq!(String::from_utf8(encode(&relay)).unwrap(), text);
        assert_eq!(decode(text.as_bytes()).unwrap(), relay);

        let answer = SignalAnswer {
            present: vec![Side::Operator, Side::Robot],
            delivered: false,
        };
        let text = r#"{"present":["operator","robot"],"delivered":false}"#;
        assert_eq!(String::from_utf8(encode_answer(&answer)).unwrap(), text);
        assert_eq!(decode_answer(text.as_bytes()).unwrap(), answer);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"").is_err());
        assert!(decode(br#"{"Dance":{}}"#).is_err());
        assert!(
            decode(br#"{"Relay":{"session_id":"s","to":"robot","frame":{"type":"ping"}}}"#)
                .is_err()
        );
        assert!(decode_answer(b"[]").is_err());
        // Both fields are required, as they always were.
        assert!(decode_answer(br#"{"present":[]}"#).is_err());
        assert!(decode(&[0xff, 0x00])
            .unwrap_err()
            .to_string()
            .starts_with("bad node"));
    }
}
