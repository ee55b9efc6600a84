//! Runs openraft's storage conformance suite against the RocksDB store, and checks that what
//! was written survives reopening and a snapshot install.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError};
use tether_store::{Command, Response, RevocationKind, SessionEvent};
use tether_store_rocks::{LogStore, StateMachineStore, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) = tether_store_rocks::open(dir.path(), true).expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn rocksdb_store_passes_the_openraft_suite() {
    Suite::test_all(RocksBuilder).expect("storage suite");
}

#[tokio::test]
async fn applied_revocations_and_the_vote_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = tether_store_rocks::open(dir.path(), true).unwrap();
        log.save_vote(&openraft::Vote::new(3, 1)).await.unwrap();
        let entry = Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(3, 2), 7),
            payload: EntryPayload::Normal(Command::Revoke {
                kind: RevocationKind::Session,
                target: "s1".into(),
                reason: "test".into(),
                revoked_by: "admin".into(),
                at: 1,
                expires_at: None,
            }),
        };
        sm.apply([entry]).await.unwrap();
    }
    let (mut log, mut sm) = tether_store_rocks::open(dir.path(), true).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new(3, 1))
    );
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(
        applied,
        Some(LogId::new(openraft::CommittedLeaderId::new(3, 2), 7))
    );
    assert!(sm
        .view()
        .read()
        .get(RevocationKind::Session, "s1")
        .is_some());
}

fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

fn revoke_operator(operator: &str, at: u64) -> Command {
    Command::Revoke {
        kind: RevocationKind::Operator,
        target: operator.into(),
        reason: "test".into(),
        revoked_by: "admin".into(),
        at,
        expires_at: None,
    }
}

#[tokio::test]
async fn remembered_requests_survive_reopening_and_a_snapshot_install() {
    let (dir, stale_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let once = Command::once("req-1", 1_000, revoke_operator("alice", 1_000));
    let first = {
        let (_, mut sm) = tether_store_rocks::open(dir.path(), true).unwrap();
        let mut events = sm.events().subscribe();
        let first = sm.apply([entry(1, once.clone())]).await.unwrap().remove(0);
        assert!(matches!(first, Response::Revoked { created: true, .. }));
        assert!(matches!(events.try_recv(), Ok(SessionEvent::Revoked(_))));
        first
    };
    let (log, mut sm) = tether_store_rocks::open(dir.path(), true).unwrap();
    assert_eq!(
        sm.view().read().request_count(),
        1,
        "remembered across a reopen"
    );
    let mut events = sm.events().subscribe();
    let again = sm.apply([entry(2, once.clone())]).await.unwrap().remove(0);
    assert_eq!(again, Response::Replayed(Box::new(first.clone())));
    assert!(events.try_recv().is_err(), "a replay publishes no event");
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop((log, sm));

    // A lagging node with state of its own: the install replaces all of it.
    let (log, mut other) = tether_store_rocks::open(stale_dir.path(), true).unwrap();
    let stale = Command::once("stale", 1, revoke_operator("bob", 1));
    other.apply([entry(1, stale)]).await.unwrap();
    other
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .unwrap();
    let check = |sm: &StateMachineStore| {
        let view = sm.view();
        let state = view.read();
        assert_eq!(state.request_count(), 1);
        assert_eq!(state.request("req-1").unwrap().response, first);
        assert!(
            state.request("stale").is_none(),
            "the install cleared the family"
        );
        assert!(state.get(RevocationKind::Operator, "bob").is_none());
        assert!(state.get(RevocationKind::Operator, "alice").is_some());
    };
    check(&other);
    drop((log, other));
    let (_log, mut other) = tether_store_rocks::open(stale_dir.path(), true).unwrap();
    check(&other);
    let retried = other.apply([entry(3, once)]).await.unwrap().remove(0);
    assert!(
        retried.is_replay(),
        "the installed request id still deduplicates"
    );
}
