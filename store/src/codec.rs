//! The one wire and disk codec: postcard.
//!
//! The design card names bincode, but bincode is unmaintained (RUSTSEC-2025-0141) and its
//! 3.0.0 release does not compile. postcard is compact, serde-based and maintained. Every
//! byte that crosses a node boundary or lands in RocksDB goes through these two functions,
//! so swapping the codec is a change to this file alone.

use serde::{de::DeserializeOwned, Serialize};

/// A value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] postcard::Error);

/// Encodes a value into a fresh buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a value from a buffer holding exactly one encoded value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppliedRequest, Command, Response, RevocationKind};

    #[test]
    fn nested_commands_and_replayed_answers_round_trip() {
        let command = Command::Batch(vec![Command::once(
            "req",
            7,
            Command::Lift {
                operator: "op".into(),
                lifted_by: "admin".into(),
            },
        )]);
        assert_eq!(
            decode::<Command>(&encode(&command).unwrap()).unwrap(),
            command
        );
        let applied = AppliedRequest {
            request: "req".into(),
            expires_at: 9,
            response: Response::Replayed(Box::new(Response::Lifted(None))),
        };
        let back: AppliedRequest = decode(&encode(&applied).unwrap()).unwrap();
        assert_eq!(back, applied);
        let revoke = Command::Revoke {
            kind: RevocationKind::Token,
            target: "j".into(),
            reason: "r".into(),
            revoked_by: "a".into(),
            at: 1,
            expires_at: None,
        };
        assert_eq!(
            decode::<Command>(&encode(&revoke).unwrap()).unwrap(),
            revoke
        );
    }
}
