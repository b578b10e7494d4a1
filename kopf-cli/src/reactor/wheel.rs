//! A timer wheel: many items parked until their due time, woken by one task.
//!
//! Timers spend almost all of their life waiting for the next tick. A tokio task per
//! timer keeps its whole future (~770 bytes with the sleep's state) alive in between;
//! parked in a [`Wheel`], a timer costs its own state and a heap entry, and one task
//! sleeps for all of them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the wheel does with an item that is due (from the wheel's task).
pub type Wake<T> = Arc<dyn Fn(T) + Send + Sync>;

struct State<T> {
    /// Due times; an entry is stale when its key is no longer parked with that time.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    parked: HashMap<u64, (Instant, T)>,
    driving: bool,
    closed: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
    rearm: Notify,
    wake: Wake<T>,
}

/// Parks items until their due time, then hands each to the wake function. Clones share
/// the wheel. Items parked when the wheel is [closed](Wheel::close) are dropped.
pub struct Wheel<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Wheel<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + 'static> Wheel<T> {
    /// A wheel that calls `wake` with every item that comes due.
    pub fn new(wake: impl Fn(T) + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    heap: BinaryHeap::new(),
                    parked: HashMap::new(),
                    driving: false,
                    closed: false,
                }),
                rearm: Notify::new(),
                wake: Arc::new(wake),
            }),
        }
    }

    /// Parks `item` under `key` (replacing an item parked under it) until `due`. Must be
    /// called within a tokio runtime (the wheel's task starts with the first item).
    /// Returns the item back if the wheel is closed.
    pub fn park(&self, key: u64, due: Instant, item: T) -> Result<(), T> {
        let mut state = self.inner.state.lock();
        if state.closed {
            return Err(item);
        }
        let earliest = state.heap.peek().is_none_or(|Reverse((first, _))| due < *first);
        state.heap.push(Reverse((due, key)));
        let replaced = state.parked.insert(key, (due, item));
        if !state.driving {
            state.driving = true;
            tokio::spawn(drive(self.inner.clone()));
        } else if earliest {
            self.inner.rearm.notify_one();
        }
        drop(state);
        drop(replaced);
        Ok(())
    }

    /// Takes the item parked under `key` out of the wheel, if any.
    pub fn take(&self, key: u64) -> Option<T> {
        self.inner.state.lock().parked.remove(&key).map(|(_, item)| item)
    }

    /// How many items are parked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.state.lock().parked.len()
    }

    /// Whether nothing is parked.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every parked item, stops the wheel's task and refuses new items.
    pub fn close(&self) {
        let parked = {
            let mut state = self.inner.state.lock();
            state.closed = true;
            state.heap.clear();
            std::mem::take(&mut state.parked)
        };
        self.inner.rearm.notify_one();
        drop(parked);
    }
}

/// The wheel's task: hands out what is due, then sleeps until the next due time or a
/// new earliest item.
async fn drive<T: Send + 'static>(inner: Arc<Inner<T>>) {
    loop {
        let rearmed = inner.rearm.notified();
        tokio::pin!(rearmed);
        rearmed.as_mut().enable();
        let now = Instant::now();
        let mut due = Vec::new();
        let next = {
            let mut state = inner.state.lock();
            if state.closed {
                state.driving = false;
                return;
            }
            while let Some(&Reverse((at, key))) = state.heap.peek() {
                if at > now {
                    break;
                }
                state.heap.pop();
                if state
                    .parked
                    .get(&key)
                    .is_some_and(|(parked_at, _)| *parked_at == at)
                    && let Some((_, item)) = state.parked.remove(&key)
                {
                    due.push(item);
                }
            }
            state.heap.peek().map(|Reverse((at, _))| *at)
        };
        for item in due {
            (inner.wake)(item);
        }
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = rearmed => {}
                }
            }
            None => rearmed.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    fn wheel() -> (Wheel<u32>, mpsc::UnboundedReceiver<u32>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Wheel::new(move |n| {
                let _ = tx.send(n);
            }),
            rx,
        )
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<u32>) -> Option<u32> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .ok()
            .flatten()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn items_wake_in_due_order_and_never_early() {
        let (wheel, mut rx) = wheel();
        let now = Instant::now();
        wheel.park(1, now + ms(60), 3).expect("open");
        wheel.park(2, now + ms(20), 1).expect("open");
        wheel.park(3, now + ms(40), 2).expect("open");
        for expected in [1, 2, 3] {
            assert_eq!(next(&mut rx).await, Some(expected));
        }
        assert!(Instant::now() >= now + ms(60));
        assert!(wheel.is_empty());
    }

    #[tokio::test]
    async fn an_earlier_item_rearms_the_sleeping_wheel() {
        let (wheel, mut rx) = wheel();
        let now = Instant::now();
        wheel.park(1, now + Duration::from_secs(3600), 1).expect("open");
        tokio::task::yield_now().await;
        wheel.park(2, now + ms(10), 2).expect("open");
        assert_eq!(next(&mut rx).await, Some(2));
        assert_eq!(wheel.len(), 1);
    }

    #[tokio::test]
    async fn taken_and_replaced_items_do_not_wake() {
        let (wheel, mut rx) = wheel();
        let now = Instant::now();
        wheel.park(1, now + ms(10), 1).expect("open");
        wheel.park(2, now + ms(10), 2).expect("open");
        wheel.park(2, now + ms(30), 22).expect("open");
        assert_eq!(wheel.take(1), Some(1));
        assert_eq!(wheel.take(1), None);
        assert_eq!(next(&mut rx).await, Some(22));
        assert!(Instant::now() >= now + ms(30));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn closing_drops_the_parked_items_and_refuses_more() {
        let item = Arc::new(());
        let (tx, _rx) = mpsc::unbounded_channel::<Arc<()>>();
        let arcs = Wheel::new(move |a| {
            let _ = tx.send(a);
        });
        arcs.park(1, Instant::now() + Duration::from_secs(60), item.clone())
            .expect("open");
        assert_eq!(Arc::strong_count(&item), 2);
        arcs.close();
        assert_eq!(Arc::strong_count(&item), 1);
        assert!(arcs.park(2, Instant::now(), item.clone()).is_err());
        let (numbers, _) = wheel();
        numbers.close();
        assert_eq!(numbers.park(1, Instant::now(), 5), Err(5));
    }
}
