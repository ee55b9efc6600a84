//! The remembered requests of [`Command::Once`](crate::Command::Once): which request ids
//! were applied and what they got, until the replicated cleanup forgets them.

use crate::model::{AppliedRequest, UnixMillis};
use std::collections::{BTreeMap, BTreeSet};

/// Applied request ids with their answers, indexed by expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requests {
    by_id: BTreeMap<String, AppliedRequest>,
    by_expiry: BTreeSet<(UnixMillis, String)>,
}

impl Requests {
    /// The remembered request with this id.
    pub(crate) fn get(&self, request: &str) -> Option<&AppliedRequest> {
        self.by_id.get(request)
    }

    /// Every remembered request, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &AppliedRequest> {
        self.by_id.values()
    }

    /// How many requests are remembered.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Remembers (or replaces) a request.
    pub(crate) fn insert(&mut self, applied: AppliedRequest) {
        if let Some(old) = self.by_id.get(&applied.request) {
            self.by_expiry
                .remove(&(old.expires_at, old.request.clone()));
        }
        self.by_expiry
            .insert((applied.expires_at, applied.request.clone()));
        self.by_id.insert(applied.request.clone(), applied);
    }

    /// Forgets every request whose `expires_at` is at or before `now`; returns their ids.
    pub(crate) fn drop_due(&mut self, now: UnixMillis) -> Vec<String> {
        let due: Vec<String> = self
            .by_expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, request)| request.clone())
            .collect();
        for request in &due {
            if let Some(old) = self.by_id.remove(request) {
                self.by_expiry.remove(&(old.expires_at, old.request));
            }
        }
        due
    }

    /// The earliest instant at which a request may be forgotten.
    pub(crate) fn next_expiry(&self) -> Option<UnixMillis> {
        self.by_expiry.first().map(|(at, _)| *at)
    }
}
