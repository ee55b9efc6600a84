//! openraft's log storage and state machine on RocksDB.
//!
//! Long file: openraft's three storage traits (log, state machine, snapshot builder) over
//! one database, whose column families and keys are best read in one place.
//!
//! Column families: `log` (entries by big-endian index), `meta` (vote, last purged log id),
//! `revocations` (one key per entry: kind byte, target), `sessions` (by session id),
//! `requests` (the remembered request ids of `Command::Once`, by id), `sm_meta` (last
//! applied log id, membership) and `snapshot` (the current snapshot's meta and data). Log
//! appends are written with a synced WAL before openraft is told they are flushed (S3).
//! State machine writes (one `WriteBatch` per applied run of entries) are not synced: they
//! survive a process kill through the WAL, and after a machine crash the synced log is
//! re-applied. The in-memory [`StateView`] is rebuilt from `revocations`, `sessions` and
//! `requests` at open, so the deny check never reads disk.

// openraft's `StorageError` is large and every storage trait returns it; the helpers here
// return it too rather than boxing and unboxing at each trait boundary.
#![allow(clippy::result_large_err)]

use crate::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use tether_store::codec::{decode, encode};
use tether_store::model::{AppliedRequest, Response, Revocation, RevocationKind, Session};
use tether_store::state::{session_events, Mutation, ReplicatedState, SessionEvent, StateView};
use tether_store::{NodeId, NodeInfo};

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const CF_REVOCATIONS: &str = "revocations";
const CF_SM_META: &str = "sm_meta";
const CF_SNAPSHOT: &str = "snapshot";
const CF_SESSIONS: &str = "sessions";
const CF_REQUESTS: &str = "requests";

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

type StResult<T> = Result<T, StorageError<NodeId>>;

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused to open or read.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value did not decode.
    #[error(transparent)]
    Codec(#[from] tether_store::codec::CodecError),
}

/// Opens (or creates) the store in `dir`. With `fsync` off, log appends are not synced: for
/// benchmarks that want to see the cost, never for production.
pub fn open(dir: &Path, fsync: bool) -> Result<(LogStore, StateMachineStore), StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [
        CF_LOG,
        CF_META,
        CF_REVOCATIONS,
        CF_SM_META,
        CF_SNAPSHOT,
        CF_SESSIONS,
        CF_REQUESTS,
    ]
    .into_iter()
    .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?);

    let mut state = ReplicatedState::default();
    for item in db.iterator_cf(cf(&db, CF_REVOCATIONS), IteratorMode::Start) {
        let (_, value) = item?;
        state.insert(decode::<Revocation>(&value)?);
    }
    for item in db.iterator_cf(cf(&db, CF_SESSIONS), IteratorMode::Start) {
        let (_, value) = item?;
        state.insert_session(decode::<Session>(&value)?);
    }
    for item in db.iterator_cf(cf(&db, CF_REQUESTS), IteratorMode::Start) {
        let (_, value) = item?;
        state.insert_request(decode::<AppliedRequest>(&value)?);
    }
    let view = StateView::default();
    *view.write() = state;
    // Stored as the `Option` itself (see `persist`), so read it back as one.
    let last_applied: Option<LogId<NodeId>> =
        read_value::<Option<LogId<NodeId>>>(&db, CF_SM_META, KEY_APPLIED)?.flatten();
    let membership = read_value(&db, CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default();
    {
        let state = view.read();
        tracing::info!(
            entries = state.len(),
            sessions = state.session_count(),
            requests = state.request_count(),
            ?last_applied,
            "store opened"
        );
    }

    let log = LogStore {
        db: db.clone(),
        fsync,
    };
    let (events, _) = tokio::sync::broadcast::channel(4096);
    let sm = StateMachineStore {
        db,
        view,
        last_applied,
        membership,
        events,
    };
    Ok((log, sm))
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is created at open"))
}

fn read_value<T: serde::de::DeserializeOwned>(
    db: &DB,
    family: &str,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match db.get_cf(cf(db, family), key)? {
        Some(bytes) => Ok(Some(decode(&bytes)?)),
        None => Ok(None),
    }
}

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, &e).into()
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn revocation_key(kind: RevocationKind, target: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + target.len());
    key.push(kind as u8);
    key.extend_from_slice(target.as_bytes());
    key
}

/// Adds to `batch` the deletion of every key of a column family: the range from the empty key
/// (the smallest) to the last key present, plus that key, as a range end is exclusive and
/// no fixed key (such as `[0xFF]`) is above every other.
fn clear_family(db: &DB, batch: &mut WriteBatch, family: &str) -> Result<(), rocksdb::Error> {
    let handle = cf(db, family);
    if let Some(item) = db.iterator_cf(handle, IteratorMode::End).next() {
        let (last, _) = item?;
        if !last.is_empty() {
            batch.delete_range_cf(handle, b"".as_slice(), &last);
        }
        batch.delete_cf(handle, &last);
    }
    Ok(())
}

fn write_options(sync: bool) -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(sync);
    w
}

/// The Raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    fsync: bool,
}

impl LogStore {
    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> StResult<Option<T>> {
        read_value(&self.db, CF_META, key)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> StResult<()> {
        let bytes = encode(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        self.db
            .put_cf_opt(cf(&self.db, CF_META), key, bytes, &write_options(true))
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_LOG),
            IteratorMode::From(&log_key(start), Direction::Forward),
        );
        for item in iter {
            let (key, value) =
                item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().expect("8-byte log key"));
            if !range.contains(&index) {
                break;
            }
            entries.push(
                decode(&value).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?,
            );
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(KEY_PURGED)?;
        let last = self
            .db
            .iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End)
            .next()
            .transpose()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?
            .map(|(_, value)| decode::<Entry<TypeConfig>>(&value).map(|e| e.log_id))
            .transpose()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StResult<()> {
        self.put_meta(KEY_VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> StResult<Option<Vote<NodeId>>> {
        self.get_meta(KEY_VOTE)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let family = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = encode(&entry)
                .map_err(|e| io_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            batch.put_cf(family, log_key(entry.log_id.index), bytes);
        }
        let result = self
            .db
            .write_opt(batch, &write_options(self.fsync))
            .map_err(std::io::Error::other);
        let failed = result.as_ref().err().map(|e| {
            io_error(
                ErrorSubject::Logs,
                ErrorVerb::Write,
                std::io::Error::other(e.to_string()),
            )
        });
        callback.log_io_completed(result);
        failed.map_or(Ok(()), Err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            log_key(log_id.index),
            log_key(u64::MAX),
        );
        self.db
            .write_opt(batch, &write_options(true))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        // Record the purge point first: a crash between the two writes leaves extra log
        // entries below it, which are harmless.
        self.put_meta(KEY_PURGED, &log_id, ErrorSubject::Logs)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOG), log_key(0), log_key(log_id.index + 1));
        self.db
            .write_opt(batch, &write_options(false))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// The contents of a snapshot: every live revocation, every retained session and every
/// remembered request.
///
/// Encoded with postcard, which is not self-describing: adding `requests` changed the
/// format, and a snapshot built before it does not decode (accepted before 1.0; nodes of
/// different versions do not share a cluster).
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    revocations: Vec<Revocation>,
    sessions: Vec<Session>,
    requests: Vec<AppliedRequest>,
}

/// The applied state: revocations in RocksDB and in memory.
pub struct StateMachineStore {
    db: Arc<DB>,
    view: StateView,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeInfo>,
    events: tokio::sync::broadcast::Sender<SessionEvent>,
}

impl StateMachineStore {
    /// A read handle on the applied state for the deny check and the API.
    pub fn view(&self) -> StateView {
        self.view.clone()
    }

    /// Session changes as they are applied (after they are written).
    pub fn events(&self) -> tokio::sync::broadcast::Sender<SessionEvent> {
        self.events.clone()
    }

    fn persist(&self, mutations: Vec<Mutation>) -> StResult<()> {
        let family = cf(&self.db, CF_REVOCATIONS);
        let meta = cf(&self.db, CF_SM_META);
        let mut batch = WriteBatch::default();
        for m in mutations {
            match m {
                Mutation::Put(entry) => batch.put_cf(
                    family,
                    revocation_key(entry.kind, &entry.target),
                    encode(&entry)
                        .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))?,
                ),
                Mutation::Delete(kind, target) => {
                    batch.delete_cf(family, revocation_key(kind, &target))
                }
                Mutation::PutSession(session) => batch.put_cf(
                    cf(&self.db, CF_SESSIONS),
                    session.id.as_bytes(),
                    must_encode(&session),
                ),
                Mutation::DeleteSession(id) => {
                    batch.delete_cf(cf(&self.db, CF_SESSIONS), id.as_bytes())
                }
                Mutation::PutRequest(applied) => batch.put_cf(
                    cf(&self.db, CF_REQUESTS),
                    applied.request.as_bytes(),
                    encode(&applied)
                        .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))?,
                ),
                Mutation::DeleteRequest(id) => {
                    batch.delete_cf(cf(&self.db, CF_REQUESTS), id.as_bytes())
                }
            }
        }
        batch.put_cf(meta, KEY_APPLIED, must_encode(&self.last_applied));
        batch.put_cf(meta, KEY_MEMBERSHIP, must_encode(&self.membership));
        self.db
            .write_opt(batch, &write_options(false))
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))
    }
}

/// Encodes log ids, memberships and snapshot metas, which always encode.
fn must_encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode(value).expect("plain data always encodes")
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut mutations = Vec::new();
        {
            let mut state = self.view.write();
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Normal(command) => {
                        let (response, changes) = state.apply(&command);
                        mutations.extend(changes);
                        response
                    }
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        Response::None
                    }
                };
                responses.push(response);
            }
        }
        self.persist(mutations)?;
        let events: Vec<SessionEvent> = responses.iter().flat_map(session_events).collect();
        for event in events {
            // No subscriber is fine (tests, tools).
            let _ = self.events.send(event);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Capture a consistent image now; the builder may run while apply goes on.
        let payload = {
            let state = self.view.read();
            SnapshotPayload {
                revocations: state.iter().cloned().collect(),
                sessions: state.sessions().cloned().collect(),
                requests: state.requests().cloned().collect(),
            }
        };
        SnapshotBuilder {
            db: self.db.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            payload,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, NodeInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StResult<()> {
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let payload: SnapshotPayload =
            decode(&data).map_err(|e| io_error(subject(), ErrorVerb::Read, e))?;
        let mut state = ReplicatedState::default();
        let mut batch = WriteBatch::default();
        for family in [CF_REVOCATIONS, CF_SESSIONS, CF_REQUESTS] {
            clear_family(&self.db, &mut batch, family)
                .map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        }
        let family = cf(&self.db, CF_REVOCATIONS);
        for entry in payload.revocations {
            batch.put_cf(
                family,
                revocation_key(entry.kind, &entry.target),
                encode(&entry).map_err(|e| io_error(subject(), ErrorVerb::Write, e))?,
            );
            state.insert(entry);
        }
        let sessions = cf(&self.db, CF_SESSIONS);
        for session in payload.sessions {
            batch.put_cf(sessions, session.id.as_bytes(), must_encode(&session));
            state.insert_session(session);
        }
        let requests = cf(&self.db, CF_REQUESTS);
        for applied in payload.requests {
            batch.put_cf(
                requests,
                applied.request.as_bytes(),
                encode(&applied).map_err(|e| io_error(subject(), ErrorVerb::Write, e))?,
            );
            state.insert_request(applied);
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let sm_meta = cf(&self.db, CF_SM_META);
        batch.put_cf(sm_meta, KEY_APPLIED, must_encode(&self.last_applied));
        batch.put_cf(sm_meta, KEY_MEMBERSHIP, must_encode(&self.membership));
        let snap = cf(&self.db, CF_SNAPSHOT);
        batch.put_cf(snap, KEY_SNAPSHOT_META, must_encode(meta));
        batch.put_cf(snap, KEY_SNAPSHOT_DATA, &data);
        self.db
            .write_opt(batch, &write_options(true))
            .map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        *self.view.write() = state;
        let _ = self.events.send(SessionEvent::Reset);
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StResult<Option<Snapshot<TypeConfig>>> {
        let err = |e: rocksdb::Error| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        let family = cf(&self.db, CF_SNAPSHOT);
        let meta = self.db.get_cf(family, KEY_SNAPSHOT_META).map_err(err)?;
        let data = self.db.get_cf(family, KEY_SNAPSHOT_DATA).map_err(err)?;
        let (Some(meta), Some(data)) = (meta, data) else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, NodeInfo> = decode(&meta)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Writes the image captured by [`RaftStateMachine::get_snapshot_builder`].
pub struct SnapshotBuilder {
    db: Arc<DB>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, NodeInfo>,
    payload: SnapshotPayload,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StResult<Snapshot<TypeConfig>> {
        let snapshot_id = match self.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id,
                id.index,
                self.payload.revocations.len()
            ),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let subject = || ErrorSubject::Snapshot(Some(meta.signature()));
        let data = encode(&self.payload).map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        let snap = cf(&self.db, CF_SNAPSHOT);
        let mut batch = WriteBatch::default();
        batch.put_cf(snap, KEY_SNAPSHOT_META, must_encode(&meta));
        batch.put_cf(snap, KEY_SNAPSHOT_DATA, &data);
        // Synced, and it flushes the state machine's unsynced writes with it: the log below
        // this snapshot may be purged next.
        self.db
            .write_opt(batch, &write_options(true))
            .map_err(|e| io_error(subject(), ErrorVerb::Write, e))?;
        tracing::info!(last_log_id = ?meta.last_log_id, entries = self.payload.revocations.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_a_family_deletes_every_key_even_high_and_empty_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (_, sm) = open(dir.path(), false).unwrap();
        let db = &sm.db;
        let family = cf(db, CF_SESSIONS);
        let keys: [&[u8]; 6] = [
            b"",
            b"\x00",
            b"s1",
            b"\xFF",
            b"\xFF\xFF\xFF\x01",
            b"\xFF\xFF\xFF\xFF\xFF",
        ];
        for key in keys {
            db.put_cf(family, key, b"v").unwrap();
        }
        let mut batch = WriteBatch::default();
        clear_family(db, &mut batch, CF_SESSIONS).unwrap();
        db.write(batch).unwrap();
        let left: Vec<_> = db
            .iterator_cf(family, IteratorMode::Start)
            .map(|item| item.unwrap().0)
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        // An empty family clears to nothing, and a family with only the empty key too.
        let mut batch = WriteBatch::default();
        clear_family(db, &mut batch, CF_SESSIONS).unwrap();
        db.put_cf(family, b"", b"v").unwrap();
        clear_family(db, &mut batch, CF_SESSIONS).unwrap();
        db.write(batch).unwrap();
        assert!(db.iterator_cf(family, IteratorMode::Start).next().is_none());
    }
}
