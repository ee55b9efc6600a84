//! Coalesced read barriers: at most one read-index round in flight per node, and one round
//! serves every barrier that arrived before it started. A round that started before a
//! caller arrived cannot vouch for it (a write acknowledged in between could be missed), so
//! callers arriving during a round wait for the next one, which then serves all of them: a
//! join flood costs the leader one round per round trip, not one per join.

use std::future::Future;
use std::sync::Mutex;
use tokio::sync::watch;

/// What a round yields: the leader's read index, or why there is none.
pub(crate) type Outcome = Result<Option<u64>, String>;

/// The rounds of one node.
pub(crate) struct Coalescer {
    state: Mutex<State>,
    /// The last finished round: its number and what it yielded.
    finished: watch::Sender<Option<(u64, Outcome)>>,
}

#[derive(Default)]
struct State {
    /// Rounds started so far (the latest one's number).
    started: u64,
    in_flight: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            finished: watch::Sender::new(None),
        }
    }
}

impl Coalescer {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outcome of a round started after this call: another caller's, or `round` run
    /// here when none is in flight. Cancel-safe: a caller dropped mid-round hands the turn
    /// to the others.
    pub(crate) async fn read_index<F, Fut>(&self, round: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let mut finished = self.finished.subscribe();
        let arrived_after = self.state().started;
        let mut round = Some(round);
        loop {
            if let Some((number, outcome)) = &*finished.borrow_and_update() {
                if *number > arrived_after {
                    return outcome.clone();
                }
            }
            let mine = {
                let mut state = self.state();
                (!state.in_flight).then(|| {
                    state.in_flight = true;
                    state.started += 1;
                    state.started
                })
            };
            match mine {
                Some(number) => {
                    let turn = Turn {
                        coalescer: self,
                        number,
                        published: false,
                    };
                    metrics::counter!(crate::metric_names::RAFT_READ_INDEX_ROUNDS_TOTAL)
                        .increment(1);
                    let run = round.take().expect("a caller runs at most one round");
                    let outcome = run().await;
                    turn.publish(outcome.clone());
                    return outcome;
                }
                None => {
                    // The sender lives as long as `self`, which this call borrows.
                    let _ = finished.changed().await;
                }
            }
        }
    }
}

/// The round in flight; dropped unpublished (its caller cancelled), it frees the turn and
/// wakes the waiters so that one of them starts the next round.
struct Turn<'a> {
    coalescer: &'a Coalescer,
    number: u64,
    published: bool,
}

impl Turn<'_> {
    fn publish(mut self, outcome: Outcome) {
        self.coalescer.state().in_flight = false;
        self.coalescer
            .finished
            .send_replace(Some((self.number, outcome)));
        self.published = true;
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.published {
            self.coalescer.state().in_flight = false;
            self.coalescer.finished.send_modify(|_| {});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    /// A leader whose rounds block until released, counting them and numbering the answers.
    #[derive(Default)]
    struct Leader {
        rounds: AtomicU64,
        release: Notify,
    }

    impl Leader {
        async fn round(&self) -> Outcome {
            let n = self.rounds.fetch_add(1, Ordering::SeqCst) + 1;
            self.release.notified().await;
            Ok(Some(n * 100))
        }
    }

    /// Lets spawned tasks run until they block.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn callers_arriving_during_a_round_share_the_next_one() {
        let coalescer = Arc::new(Coalescer::default());
        let leader = Arc::new(Leader::default());
        let call = |c: &Arc<Coalescer>, l: &Arc<Leader>| {
            let (c, l) = (c.clone(), l.clone());
            tokio::spawn(async move { c.read_index(|| async { l.round().await }).await })
        };
        let first = call(&coalescer, &leader);
        settle().await;
        assert_eq!(leader.rounds.load(Ordering::SeqCst), 1);
        let later: Vec<_> = (0..20).map(|_| call(&coalescer, &leader)).collect();
        settle().await;
        assert_eq!(
            leader.rounds.load(Ordering::SeqCst),
            1,
            "one round in flight"
        );
        leader.release.notify_one();
        assert_eq!(first.await.unwrap(), Ok(Some(100)));
        settle().await;
        assert_eq!(
            leader.rounds.load(Ordering::SeqCst),
            2,
            "one round for all twenty"
        );
        leader.release.notify_one();
        for waiter in later {
            // Served by the round that started after they arrived, never the first.
            assert_eq!(waiter.await.unwrap(), Ok(Some(200)));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_round_fails_its_waiters_and_the_next_caller_starts_afresh() {
        let coalescer = Coalescer::default();
        assert_eq!(
            coalescer
                .read_index(|| async { Err("no quorum".into()) })
                .await,
            Err("no quorum".to_owned())
        );
        assert_eq!(
            coalescer.read_index(|| async { Ok(Some(7)) }).await,
            Ok(Some(7))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_caller_cancelled_mid_round_hands_the_turn_on() {
        let coalescer = Arc::new(Coalescer::default());
        let leader = Arc::new(Leader::default());
        let (c, l) = (coalescer.clone(), leader.clone());
        let abandoned =
            tokio::spawn(async move { c.read_index(|| async { l.round().await }).await });
        settle().await;
        let (c, l) = (coalescer.clone(), leader.clone());
        let waiter = tokio::spawn(async move { c.read_index(|| async { l.round().await }).await });
        settle().await;
        abandoned.abort();
        settle().await;
        assert_eq!(
            leader.rounds.load(Ordering::SeqCst),
            2,
            "the waiter ran its own"
        );
        leader.release.notify_one();
        assert_eq!(waiter.await.unwrap(), Ok(Some(200)));
    }
}
