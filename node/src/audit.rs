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
    /// Opens (or creates) the ledger at `path` and starts its writer. A torn last record
    /// (the node was killed mid-write) is cut off first, with a warning.
    pub fn open(path: &Path, node: u64) -> std::io::Result<Self> {
        let (mut seq, mut prev) = (0, GENESIS.to_owned());
        if let Some(cut) = cut_torn_tail(path)? {
            tracing::warn!(path = %path.display(), bytes = cut, "audit ledger: cut off a torn last record");
        }
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
                let mut line = serde_json::to_string(&record).expect("records serialize");
                line.push('\n');
                // One write per record: a kill leaves whole records and at most one torn
                // tail, which the next start cuts off.
                if let Err(err) = file.write_all(line.as_bytes()) {
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

/// Cuts off an unparsable last line (a record torn by a kill), keeping every whole record.
/// Returns how many bytes were cut, if any. A bad record before the last is not a torn
/// write and is left for [`read`] to report.
fn cut_torn_tail(path: &Path) -> std::io::Result<Option<u64>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let last = &body[start..];
    let whole = bytes.ends_with(b"\n");
    let parses = serde_json::from_slice::<Record>(last).is_ok();
    if last.is_empty() || (whole && parses) {
        return Ok(None);
    }
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(start as u64)?;
    file.sync_all()?;
    Ok(Some((bytes.len() - start) as u64))
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

    /// A kill mid-write leaves a torn last line: the next start cuts it off and goes on
    /// (today's code refused to start).
    #[tokio::test]
    async fn a_torn_last_record_is_cut_off_at_start_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, 1).unwrap();
        for i in 0..3 {
            log.record("TEARDOWN", &format!("s{i}"), serde_json::json!({}));
        }
        while read(&path).unwrap().len() < 3 {
            tokio::task::yield_now().await;
        }
        drop(log);
        let whole = std::fs::read(&path).unwrap();
        // Every possible torn tail: a prefix of a fourth record, with or without a newline.
        let fourth = br#"{"seq":4,"at":"2026-12-02T00:00:00Z","node":1,"event":"TEARDOWN","#;
        for torn in [&fourth[..1], &fourth[..20], &fourth[..]] {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(torn);
            std::fs::write(&path, &bytes).unwrap();
            assert!(
                read(&path).is_err(),
                "the torn file does not parse as it is"
            );
            let log = AuditLog::open(&path, 1).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                whole,
                "cut back to whole records"
            );
            drop(log);
        }
        let log = AuditLog::open(&path, 1).unwrap();
        log.record("JOIN_DENIED", "s9", serde_json::json!({}));
        let records = loop {
            let r = read(&path).unwrap();
            if r.len() == 4 {
                break r;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(verify(&records), Ok(4));
    }
}
