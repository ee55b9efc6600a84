//! Runs openraft's storage conformance suite against the RocksDB store, and checks that what
//! was written survives reopening.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{Entry, EntryPayload, LogId, StorageError};
use tether_store::{Command, RevocationKind};
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
