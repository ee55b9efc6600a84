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
