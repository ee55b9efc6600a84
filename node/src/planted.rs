//! Bugs planted on purpose, to prove the chaos suite's checkers catch them. Compiled only
//! with the `planted-bugs` feature (the chaos tests build a separate `tether-planted`
//! binary with it); a release build has none of this. The bug is chosen at start by
//! `TETHER_PLANTED_BUG`.

/// A bug the node can be built to have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Joins are admitted without the read barrier (breaks S2: stale admissions, and
    /// admissions by a node cut off from the quorum).
    AdmitWithoutBarrier,
    /// Leases are granted without the read barrier (breaks S7 fail-closed).
    LeaseWithoutQuorum,
    /// Every 100th revocation is answered 200 without being committed (breaks S3).
    DropEvery100thRevocation,
}

/// The planted bug this process runs with, if any.
#[cfg(feature = "planted-bugs")]
pub fn planted() -> Option<PlantedBug> {
    static BUG: std::sync::OnceLock<Option<PlantedBug>> = std::sync::OnceLock::new();
    *BUG.get_or_init(|| {
        let bug = match std::env::var("TETHER_PLANTED_BUG").ok()?.as_str() {
            "admit-without-barrier" => PlantedBug::AdmitWithoutBarrier,
            "lease-without-quorum" => PlantedBug::LeaseWithoutQuorum,
            "drop-every-100th-revocation" => PlantedBug::DropEvery100thRevocation,
            _ => return None,
        };
        tracing::warn!(
            ?bug,
            "this node runs with a PLANTED BUG (chaos testing only)"
        );
        Some(bug)
    })
}

/// Without the feature there is never a planted bug.
#[cfg(not(feature = "planted-bugs"))]
pub fn planted() -> Option<PlantedBug> {
    None
}

/// Whether `bug` is planted in this process.
pub fn is(bug: PlantedBug) -> bool {
    planted() == Some(bug)
}
