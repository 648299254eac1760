//! A work queue of keys, as client-go's: a key queued many times is worked
//! once; a key being worked is never handed to a second worker, and if it is
//! queued meanwhile it is worked again after; failures are retried with
//! per-key exponential backoff.

use crate::backoff::Backoff;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub struct WorkQueue<T> {
    state: Mutex<State<T>>,
    ready: Notify,
    backoff: Backoff,
}

struct State<T> {
    queue: VecDeque<T>,
    /// In `queue`, or being worked and queued again.
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
}

impl<T: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<T> {
    pub fn new() -> Arc<Self> {
        Self::with_backoff(Backoff::WORK_QUEUE)
    }

    pub fn with_backoff(backoff: Backoff) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            ready: Notify::new(),
            backoff,
        })
    }

    pub fn add(&self, item: T) {
        let mut s = self.state.lock().unwrap();
        if !s.dirty.insert(item.clone()) {
            return;
        }
        // A key being worked goes back on the queue when its worker is done.
        if !s.processing.contains(&item) {
            s.queue.push_back(item);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Queues `item` after `delay` (at once when zero).
    pub fn add_after(self: &Arc<Self>, item: T, delay: Duration) {
        if delay.is_zero() {
            return self.add(item);
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(queue) = queue.upgrade() {
                queue.add(item);
            }
        });
    }

    /// Queues `item` after its backoff delay, which grows with each call
    /// until [`forget`](Self::forget).
    pub fn add_rate_limited(self: &Arc<Self>, item: T) {
        let failures = {
            let mut s = self.state.lock().unwrap();
            let n = s.failures.entry(item.clone()).or_insert(0);
            *n += 1;
            *n
        };
        self.add_after(item, self.backoff.delay(failures));
    }

    /// Resets `item`'s backoff (after a success).
    pub fn forget(&self, item: &T) {
        self.state.lock().unwrap().failures.remove(item);
    }

    pub fn failures(&self, item: &T) -> u32 {
        self.state.lock().unwrap().failures.get(item).copied().unwrap_or(0)
    }

    /// The next key to work; the caller must call [`done`](Self::done) with it.
    pub async fn next(&self) -> T {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.state.lock().unwrap();
                if let Some(item) = s.queue.pop_front() {
                    s.dirty.remove(&item);
                    s.processing.insert(item.clone());
                    if !s.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    pub fn done(&self, item: &T) {
        let mut s = self.state.lock().unwrap();
        s.processing.remove(item);
        if s.dirty.contains(item) {
            s.queue.push_back(item.clone());
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Keys waiting (not counting ones being worked).
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_queued_twice_is_worked_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, "a");
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_queued_while_worked_comes_back_after_done_and_not_before() {
        let q = WorkQueue::new();
        q.add("a");
        let a = q.next().await;
        q.add("a");
        assert!(q.is_empty(), "a key being worked must not be handed to a second worker");
        q.done(&a);
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_forget_resets() {
        let q = WorkQueue::with_backoff(Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(8), factor: 2.0 });
        q.add_rate_limited("a");
        assert!(q.is_empty(), "a failed key waits for its backoff");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(q.next().await, "a");
        q.done(&"a");
        q.add_rate_limited("a");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(q.is_empty(), "the second failure waits 2 s");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(q.next().await, "a");
        assert_eq!(q.failures(&"a"), 2);
        q.forget(&"a");
        assert_eq!(q.failures(&"a"), 0);
    }
}
