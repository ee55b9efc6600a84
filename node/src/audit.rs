//! The audit ledger: an append-only, hash-chained JSON-lines file per node.
//!
//! Each record carries the hash of the one before, so a removed, reordered or edited record
//! breaks the chain ([`verify`]). Records are queued and written by a task of their own,
//! off the join, relay and teardown paths.

use sha2::{Digest, Sha256};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One ledger record (the wire type, shared with clients).
pub use tether_api::types::AuditRecord as Record;

fn digest(record: &Record) -> String {
    let mut unhashed = record.clone();
    unhashed.hash = String::new();
    let bytes = serde_json::to_vec(&unhashed).expect("records serialize");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An event to record.
#[derive(Debug)]
pub struct Event {
    /// Event name.
    pub event: &'static str,
    /// Session id.
    pub session_id: String,
    /// Details.
    pub detail: serde_json::Value,
}

/// The sending side of a node's ledger.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::UnboundedSender<Event>,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (or creates) the ledger at `path` and starts its writer.
    pub fn open(path: &Path, node: u64) -> std::io::Result<Self> {
        let (mut seq, mut prev) = (0, GENESIS.to_owned());
        if let Some(last) = read(path)?.pop() {
            seq = last.seq;
            prev = last.hash;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::task::spawn_blocking(move || {
            while let Some(e) = rx.blocking_recv() {
                seq += 1;
                let mut record = Record {
                    seq,
                    at: tether_api::time::rfc3339(tether_api::time::now_ms()),
                    node,
                    event: e.event.into(),
                    session_id: e.session_id,
                    detail: e.detail,
                    prev: prev.clone(),
                    hash: String::new(),
                };
                record.hash = digest(&record);
                let line = serde_json::to_string(&record).expect("records serialize");
                if let Err(err) = writeln!(file, "{line}") {
                    tracing::error!(error = %err, "audit ledger write failed");
                }
                prev = record.hash;
            }
        });
        Ok(Self {
            tx,
            path: path.into(),
        })
    }

    /// Queues an event; never blocks.
    pub fn record(&self, event: &'static str, session_id: &str, detail: serde_json::Value) {
        let _ = self.tx.send(Event {
            event,
            session_id: session_id.into(),
            detail,
        });
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every record of a ledger file (none if it does not exist).
pub fn read(path: &Path) -> std::io::Result<Vec<Record>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut records = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(&line).map_err(std::io::Error::other)?);
    }
    Ok(records)
}

/// Checks the chain; `Err` names the first record that does not fit.
pub fn verify(records: &[Record]) -> Result<usize, String> {
    let mut prev = GENESIS.to_owned();
    for (i, r) in records.iter().enumerate() {
        if r.seq != i as u64 + 1 {
            return Err(format!(
                "record {} has seq {}: a record is missing or out of order",
                i + 1,
                r.seq
            ));
        }
        if r.prev != prev {
            return Err(format!("record {} does not follow its predecessor", r.seq));
        }
        if digest(r) != r.hash {
            return Err(format!("record {} was altered", r.seq));
        }
        prev = r.hash.clone();
    }
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_written_ledger_verifies_and_any_edit_breaks_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 1).unwrap();
        for i in 0..5 {
            log.record(
                "TEARDOWN",
                &format!("s{i}"),
                serde_json::json!({"micros": i}),
            );
        }
        let records = loop {
            let r = read(&path).unwrap();
            if r.len() == 5 {
                break r;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(verify(&records), Ok(5));
        let mut edited = records.clone();
        edited[2].detail = serde_json::json!({"micros": 99});
        assert!(verify(&edited)
            .unwrap_err()
            .contains("record 3 was altered"));
        let mut dropped = records.clone();
        dropped.remove(1);
        assert!(verify(&dropped).is_err());
        // Reopening continues the chain.
        drop(log);
        let log = AuditLog::open(&path, 1).unwrap();
        log.record("JOIN_DENIED", "s9", serde_json::json!({}));
        let records = loop {
            let r = read(&path).unwrap();
            if r.len() == 6 {
                break r;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(verify(&records), Ok(6));
    }
}
