//! The one batching queue behind the leader's group commit ([`crate::batch`]) and the
//! followers' group forwarding ([`crate::forward`]).
//!
//! Up to `max_in_flight` batches are out at once; items that arrive while every slot is
//! busy wait and go out together as the next batch. At low load an item goes out alone at
//! once, so latency does not grow. The grouping rule ([`Gather`]) is pure and tested here;
//! [`drain`] is the loop around it.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// What the queue needs to know of an item.
pub(crate) trait Batchable {
    /// Whether anyone still waits for this item at `now`; unwanted items are dropped, not
    /// sent.
    fn wanted(&self, _now: Instant) -> bool {
        true
    }

    /// Whether this item may go in the same batch as `first` (the batch's first item).
    fn fits_with(&self, _first: &Self) -> bool {
        true
    }
}

/// Forms batches: the first item, then whatever is already queued, up to `max` items, each
/// wanted and fitting with the first. An item that does not fit is held for the next batch.
#[derive(Debug)]
pub(crate) struct Gather<T> {
    max: usize,
    held: Option<T>,
}

impl<T: Batchable> Gather<T> {
    /// Batches of at most `max` items.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            held: None,
        }
    }

    /// The item held back from the last batch, which starts the next one.
    pub(crate) fn take_held(&mut self) -> Option<T> {
        self.held.take()
    }

    /// The next batch: `first`, then items from `queued` (which must not wait) until it
    /// is empty, the batch is full, or an item does not fit. May be empty when no item is
    /// wanted any more.
    pub(crate) fn batch(
        &mut self,
        first: T,
        now: Instant,
        mut queued: impl FnMut() -> Option<T>,
    ) -> Vec<T> {
        let mut batch: Vec<T> = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next {
            if item.wanted(now) {
                if batch.first().is_some_and(|first| !item.fits_with(first)) {
                    self.held = Some(item);
                    break;
                }
                batch.push(item);
            }
            next = if batch.len() < self.max {
                queued()
            } else {
                None
            };
        }
        batch
    }
}

/// Runs the queue until every sender is gone: each batch is handed to `send`, whose future
/// runs on its own task and holds one of `max_in_flight` slots until it completes.
pub(crate) async fn drain<T, F, Fut>(
    mut rx: mpsc::UnboundedReceiver<T>,
    max_in_flight: usize,
    max_batch: usize,
    send: F,
) where
    T: Batchable,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let mut gather = Gather::new(max_batch);
    loop {
        let first = match gather.take_held() {
            Some(item) => item,
            None => match rx.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued up while we waited for a slot goes out with `first`.
        let batch = gather.batch(first, Instant::now(), || rx.try_recv().ok());
        if batch.is_empty() {
            continue;
        }
        let sending = send(batch);
        tokio::spawn(async move {
            let _slot = slot;
            sending.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An item for group `group`, wanted until `until`.
    #[derive(Debug, PartialEq)]
    struct Item {
        id: u32,
        group: u32,
        until: Option<Instant>,
    }

    impl Batchable for Item {
        fn wanted(&self, now: Instant) -> bool {
            self.until.is_none_or(|u| u > now)
        }
        fn fits_with(&self, first: &Self) -> bool {
            self.group == first.group
        }
    }

    fn item(id: u32, group: u32) -> Item {
        Item {
            id,
            group,
            until: None,
        }
    }

    fn ids(batch: &[Item]) -> Vec<u32> {
        batch.iter().map(|i| i.id).collect()
    }

    #[test]
    fn a_lone_item_goes_out_alone_and_queued_items_join_it_up_to_the_limit() {
        let now = Instant::now();
        let mut g = Gather::new(3);
        let mut none = std::iter::empty();
        assert_eq!(ids(&g.batch(item(1, 0), now, || none.next())), vec![1]);
        let mut queued = (2..=6).map(|i| item(i, 0));
        assert_eq!(
            ids(&g.batch(item(1, 0), now, || queued.next())),
            vec![1, 2, 3]
        );
        // The rest stays queued for the next batch.
        assert_eq!(queued.next().map(|i| i.id), Some(4));
        assert!(g.take_held().is_none());
    }

    #[test]
    fn an_item_for_another_group_ends_the_batch_and_starts_the_next() {
        let now = Instant::now();
        let mut g = Gather::new(10);
        let mut queued = vec![item(2, 0), item(3, 7), item(4, 0)].into_iter();
        assert_eq!(ids(&g.batch(item(1, 0), now, || queued.next())), vec![1, 2]);
        let held = g.take_held().expect("held");
        assert_eq!(held.id, 3);
        assert_eq!(ids(&g.batch(held, now, || queued.next())), vec![3]);
        assert_eq!(g.take_held().map(|i| i.id), Some(4));
    }

    #[test]
    fn unwanted_items_are_dropped_even_the_first() {
        let now = Instant::now();
        let gone = |id| Item {
            id,
            group: 0,
            until: Some(now - Duration::from_millis(1)),
        };
        let mut g = Gather::new(10);
        let mut queued = vec![gone(2), item(3, 0), gone(4)].into_iter();
        assert_eq!(ids(&g.batch(gone(1), now, || queued.next())), vec![3]);
        let mut none = std::iter::empty();
        assert!(g.batch(gone(5), now, || none.next()).is_empty());
        // An unwanted item of another group does not end the batch.
        let mut queued = vec![
            Item {
                id: 7,
                group: 9,
                until: Some(now),
            },
            item(8, 0),
        ]
        .into_iter();
        assert_eq!(ids(&g.batch(item(6, 0), now, || queued.next())), vec![6, 8]);
    }

    #[tokio::test]
    async fn drain_keeps_at_most_the_slots_in_flight_and_batches_what_waits() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (sent_tx, mut sent) = mpsc::unbounded_channel::<Vec<u32>>();
        let (release_tx, release) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(drain(rx, 1, 100, move |batch: Vec<Item>| {
            let sent_tx = sent_tx.clone();
            let mut release = release.clone();
            async move {
                let _ = sent_tx.send(ids(&batch));
                let _ = release.wait_for(|r| *r).await;
            }
        }));
        tx.send(item(1, 0)).unwrap();
        assert_eq!(sent.recv().await, Some(vec![1]));
        // The one slot is busy: these wait, then go out as one batch.
        for i in 2..=5 {
            tx.send(item(i, 0)).unwrap();
        }
        release_tx.send(true).unwrap();
        assert_eq!(sent.recv().await, Some(vec![2, 3, 4, 5]));
        drop(tx);
        task.await.unwrap();
    }
}
