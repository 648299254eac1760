//! Reconcile workers over a [`WorkQueue`]: the one loop every controller and
//! the scheduler's retry path run.

use crate::queue::WorkQueue;
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

/// What a successful reconcile asks for next.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until the next change of something it watches.
    AwaitChange,
    /// Look again after this long (e.g. when a pod becomes available after
    /// `minReadySeconds`), even if nothing changes.
    RequeueAfter(Duration),
}

impl Action {
    /// The sooner of two requests.
    pub fn min(self, other: Action) -> Action {
        match (self, other) {
            (Action::RequeueAfter(a), Action::RequeueAfter(b)) => Action::RequeueAfter(a.min(b)),
            (Action::RequeueAfter(a), _) | (_, Action::RequeueAfter(a)) => Action::RequeueAfter(a),
            _ => Action::AwaitChange,
        }
    }
}

/// Runs `workers` concurrent reconcilers over `queue` forever. A failed
/// reconcile is logged with its key and retried with backoff; a success
/// resets the key's backoff.
pub async fn run_workers<T, F, Fut>(name: &'static str, queue: Arc<WorkQueue<T>>, workers: usize, reconcile: F)
where
    T: Clone + Eq + Hash + Display + Send + Sync + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Action>> + Send + 'static,
{
    let reconcile = Arc::new(reconcile);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let reconcile = reconcile.clone();
        tasks.spawn(async move {
            loop {
                let key = queue.next().await;
                let result = reconcile(key.clone()).await;
                queue.done(&key);
                match result {
                    Ok(action) => {
                        queue.forget(&key);
                        if let Action::RequeueAfter(delay) = action {
                            queue.add_after(key, delay);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(controller = name, %key, error = format!("{e:#}"), "reconcile failed; retrying with backoff");
                        queue.add_rate_limited(key);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
