//! The scheduler: binds every pending pod to a node it fits on, spreading
//! replicas and load, as Kubernetes' default scheduler does (for the filters
//! and scores listed in `filters` and `scoring`).
//!
//! Decisions are made one pod at a time against an in-memory view of every
//! node, so each sees the ones before it. A chosen pod is *assumed* on its
//! node at once and its binding is posted in the background; a failed binding
//! un-assumes it and retries it with backoff. Pods that fit nowhere get a
//! `FailedScheduling` event and an `Unschedulable` condition, and wait until
//! something changes that could make them fit (a node added or changed,
//! resources released) or, at the latest, `PARKED_RETRY` (30 s).
//!
//! # Layout
//! - this file: configuration, informer handlers, the scheduling loop, the
//!   unschedulable set, binding and the writes that report decisions.
//! - `cache`: per-node accounting (requests, pod count, host ports, spread
//!   counts) of bound and assumed pods.
//! - `filters`: which nodes a pod fits, and why not in Kubernetes' words.
//! - `scoring`: least-allocated and spreading scores; the decision.

mod cache;
mod filters;
mod scoring;

use anyhow::Context;
use cache::{Cache, NodeFacts, node_change_may_help};
use filters::Candidate;
use hawser_api::selector::map_selects;
use hawser_runtime::backoff::Backoff;
use hawser_runtime::events::{EventType, Recorder};
use hawser_runtime::objects::{is_pod_active, now, object_reference};
use hawser_runtime::{Change, Informer, Informers, ObjectKey, WorkQueue};
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The name pods without `spec.schedulerName` are scheduled by.
const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Retries of a pod that could not be placed or bound: 1 s doubling to
/// 10 s, Kubernetes' pod backoff.
const BACKOFF: Backoff = Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(10), factor: 2.0 };

/// An unschedulable pod is retried after this long even if nothing that
/// could help was seen (a missed or unrecognised change must not strand it).
const PARKED_RETRY: Duration = Duration::from_secs(30);

/// Concurrent `PodScheduled` condition writes; more wait their turn.
const MAX_STATUS_WRITES: usize = 16;

#[derive(Clone, Debug)]
pub struct Config {
    /// Pods whose `spec.schedulerName` is this are ours.
    pub scheduler_name: String,
    /// Binding requests in flight at once; decisions wait beyond that.
    pub parallel_binds: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { scheduler_name: DEFAULT_SCHEDULER_NAME.into(), parallel_binds: 64 }
    }
}

/// Starts the scheduler on the shared informers; it runs until the process
/// ends. Must be called within a tokio runtime.
pub fn start(informers: &Arc<Informers>, config: &Config) {
    let scheduler = Arc::new(Scheduler::new(informers, config));
    scheduler.watch();
    tokio::spawn(scheduler.clone().run());
    tokio::spawn(scheduler.retry_parked_periodically());
}

/// Whether `pod` waits for scheduler `scheduler_name`: not bound, naming it
/// (or naming none, for the default scheduler), not being deleted and not
/// finished.
fn is_pending_for(pod: &Pod, scheduler_name: &str) -> bool {
    let spec = pod.spec.as_ref();
    let scheduler = spec.and_then(|s| s.scheduler_name.as_deref()).filter(|n| !n.is_empty()).unwrap_or(DEFAULT_SCHEDULER_NAME);
    spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty) && scheduler == scheduler_name && is_pod_active(pod)
}

struct Scheduler {
    config: Config,
    client: kube::Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    services: Informer<Service>,
    cache: Mutex<Cache>,
    /// Pods to schedule. One worker: each decision must see the last.
    queue: Arc<WorkQueue<ObjectKey>>,
    unschedulable: Mutex<Unschedulable>,
    binds: Arc<Semaphore>,
    status_writes: Arc<Semaphore>,
    recorder: Recorder,
}

/// Pods that fit nowhere, and the retry bookkeeping of every pod.
#[derive(Default)]
struct Unschedulable {
    /// Parked pods and when they failed; they stay off the queue until a
    /// change could help them.
    parked: HashMap<ObjectKey, Instant>,
    /// Failed attempts (placement or binding) since the pod was last bound,
    /// for its backoff.
    attempts: HashMap<ObjectKey, u32>,
    /// Bumped whenever parked pods are moved back to the queue, so a decision
    /// that raced such a change knows not to park its pod (the change it
    /// missed may be the one that makes the pod fit).
    moves: u64,
}

impl Scheduler {
    fn new(informers: &Arc<Informers>, config: &Config) -> Self {
        let client = informers.client();
        Self {
            config: config.clone(),
            // Events name the scheduler that decided (`From` in `kubectl describe`).
            recorder: Recorder::new(client.clone(), &config.scheduler_name),
            client,
            pods: informers.get::<Pod>(),
            nodes: informers.get::<Node>(),
            services: informers.get::<Service>(),
            cache: Mutex::default(),
            queue: WorkQueue::new(),
            unschedulable: Mutex::default(),
            binds: Arc::new(Semaphore::new(config.parallel_binds.max(1))),
            status_writes: Arc::new(Semaphore::new(MAX_STATUS_WRITES)),
        }
    }

    // ---- informer handlers (cheap: update the cache, move keys) ----

    fn watch(self: &Arc<Self>) {
        let this = self.clone();
        self.nodes.on_change(move |change| this.on_node(change));
        let this = self.clone();
        self.pods.on_change(move |change| this.on_pod(change));
        // Services only feed the spreading score, read at decision time:
        // the informer just has to be running.
    }

    fn on_node(&self, change: &Change<'_, Node>) {
        let Some(new) = change.new else {
            let name = change.object().metadata.name.clone().unwrap_or_default();
            self.cache.lock().unwrap().remove_node(&name);
            return;
        };
        self.cache.lock().unwrap().set_node(NodeFacts::of(new));
        if node_change_may_help(change.old, new) {
            self.retry_unschedulable("node added or changed");
        }
    }

    fn on_pod(&self, change: &Change<'_, Pod>) {
        let key = ObjectKey::of(change.object());
        let released = match change.new {
            Some(new) => self.cache.lock().unwrap().observe_pod(new),
            None => self.cache.lock().unwrap().remove_pod(&key),
        };
        match change.new {
            Some(new) if self.is_pending(new) => {
                // Status-only updates cannot make a pod fit; spec or label
                // edits can.
                let edited = change.old.is_none_or(|old| old.spec != new.spec || old.metadata.labels != new.metadata.labels);
                self.enqueue(key, edited);
            }
            // Bound, finished, deleted or someone else's: nothing to retry.
            _ => self.forget(&key),
        }
        if released {
            self.retry_unschedulable("pod released its node");
        }
    }

    fn is_pending(&self, pod: &Pod) -> bool {
        is_pending_for(pod, &self.config.scheduler_name)
    }

    /// Queues a pending pod. A pod that already failed is parked or has a
    /// retry scheduled: it is queued again now only if it was `edited`
    /// (otherwise every status write, our own Unschedulable condition
    /// first, would defeat the parking and the backoff).
    fn enqueue(&self, key: ObjectKey, edited: bool) {
        {
            let mut u = self.unschedulable.lock().unwrap();
            let failed_before = u.parked.contains_key(&key) || u.attempts.contains_key(&key);
            if failed_before && !edited {
                return;
            }
            u.parked.remove(&key);
        }
        self.queue.add(key);
    }

    fn forget(&self, key: &ObjectKey) {
        let mut u = self.unschedulable.lock().unwrap();
        u.parked.remove(key);
        u.attempts.remove(key);
    }

    /// Moves every parked pod back to the queue, each after what is left of
    /// its backoff (so a busy cluster does not retry a hopeless pod on every
    /// change).
    fn retry_unschedulable(&self, why: &str) {
        let retries: Vec<(ObjectKey, Duration)> = {
            let mut u = self.unschedulable.lock().unwrap();
            u.moves += 1;
            let parked = std::mem::take(&mut u.parked);
            parked
                .into_iter()
                .map(|(key, since)| {
                    let backoff = BACKOFF.delay(u.attempts.get(&key).copied().unwrap_or(1));
                    (key, backoff.saturating_sub(since.elapsed()))
                })
                .collect()
        };
        if !retries.is_empty() {
            tracing::debug!(pods = retries.len(), reason = why, "retrying unschedulable pods");
        }
        for (key, delay) in retries {
            self.queue.add_after(key, delay);
        }
    }

    async fn retry_parked_periodically(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PARKED_RETRY / 6);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stale: Vec<ObjectKey> = {
                let mut u = self.unschedulable.lock().unwrap();
                let stale: Vec<ObjectKey> =
                    u.parked.iter().filter(|(_, since)| since.elapsed() >= PARKED_RETRY).map(|(k, _)| k.clone()).collect();
                for key in &stale {
                    u.parked.remove(key);
                }
                stale
            };
            for key in stale {
                self.queue.add(key);
            }
        }
    }

    // ---- the scheduling loop ----

    async fn run(self: Arc<Self>) {
        // Deciding on a partial view would overcommit nodes whose pods are
        // not listed yet.
        tokio::join!(self.pods.wait_synced(), self.nodes.wait_synced(), self.services.wait_synced());
        tracing::info!(scheduler = self.config.scheduler_name, nodes = self.nodes.len(), "scheduler started");
        loop {
            let key = self.queue.next().await;
            if let Err(e) = self.schedule(&key).await {
                tracing::warn!(pod = %key, error = format!("{e:#}"), "scheduling failed; retrying with backoff");
                self.retry_later(&key);
            }
            self.queue.done(&key);
        }
    }

    /// One decision: place the pod (assume it, start its binding) or park it.
    async fn schedule(self: &Arc<Self>, key: &ObjectKey) -> anyhow::Result<()> {
        // The latest version: the pod may have changed while queued.
        let Some(pod) = self.pods.get(key) else { return Ok(()) };
        if !self.is_pending(&pod) {
            return Ok(());
        }
        let moves_before = self.unschedulable.lock().unwrap().moves;
        let candidate = Candidate::of(&pod);
        let services = self.services.list_namespace(&candidate.usage.namespace);
        let selectors: Vec<&BTreeMap<String, String>> = services
            .iter()
            .filter_map(|s| s.spec.as_ref()?.selector.as_ref())
            .filter(|selector| map_selects(selector, &candidate.usage.group.labels))
            .collect();
        let decision = {
            let mut cache = self.cache.lock().unwrap();
            if cache.is_assumed(key) {
                return Ok(()); // its binding is in flight; the outcome requeues it if needed
            }
            let decision = scoring::decide(&cache, &candidate, &selectors, &mut rand::rng());
            if let Ok(node) = &decision {
                cache.assume(key.clone(), candidate.usage, node);
            }
            decision
        };
        match decision {
            Ok(node) => {
                tracing::debug!(pod = %key, node, "scheduled; binding");
                let permit = self.binds.clone().acquire_owned().await.context("the binding semaphore is closed")?;
                tokio::spawn(self.clone().bind(pod, node, permit));
            }
            Err(unfit) => {
                let message = unfit.to_string();
                tracing::debug!(pod = %key, message, "unschedulable");
                self.recorder.publish(&object_reference(&*pod), EventType::Warning, "FailedScheduling", &message);
                self.set_unschedulable_condition(&pod, &message);
                self.park(key, moves_before);
            }
        }
        Ok(())
    }

    /// Parks a pod that fits nowhere, unless parked pods were moved back
    /// since its decision began: then it is retried after its backoff.
    fn park(&self, key: &ObjectKey, moves_before: u64) {
        let delay = {
            let mut u = self.unschedulable.lock().unwrap();
            let attempts = u.attempts.entry(key.clone()).or_default();
            *attempts += 1;
            let delay = BACKOFF.delay(*attempts);
            if u.moves == moves_before {
                u.parked.insert(key.clone(), Instant::now());
                return;
            }
            delay
        };
        self.queue.add_after(key.clone(), delay);
    }

    /// Counts a failed attempt and queues the pod after its backoff.
    fn retry_later(&self, key: &ObjectKey) {
        let delay = {
            let mut u = self.unschedulable.lock().unwrap();
            let attempts = u.attempts.entry(key.clone()).or_default();
            *attempts += 1;
            BACKOFF.delay(*attempts)
        };
        self.queue.add_after(key.clone(), delay);
    }

    // ---- binding and reporting ----

    async fn bind(self: Arc<Self>, pod: Arc<Pod>, node: String, _permit: OwnedSemaphorePermit) {
        let key = ObjectKey::of(&*pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match self.post_binding(&pod, &node).await {
            Ok(()) => {
                // The assumption stays until the informer shows the binding.
                self.unschedulable.lock().unwrap().attempts.remove(&key);
                let message = format!("Successfully assigned {key} to {node}");
                self.recorder.publish(&object_reference(&*pod), EventType::Normal, "Scheduled", &message);
            }
            // Already bound (by us, on a retry whose first try got through,
            // or by someone else) or deleted: the informer has the truth.
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {
                tracing::debug!(pod = %key, node, reason = status.message, "binding not needed");
                if self.cache.lock().unwrap().forget_assumed(&key, &uid) {
                    self.retry_unschedulable("binding dropped");
                }
            }
            Err(e) => {
                let e = anyhow::Error::new(e).context(format!("binding pod {key} to node {node}"));
                tracing::warn!(pod = %key, node, error = format!("{e:#}"), "binding failed; retrying with backoff");
                self.recorder.publish(
                    &object_reference(&*pod),
                    EventType::Warning,
                    "FailedScheduling",
                    &format!("Binding rejected: {e:#}"),
                );
                if self.cache.lock().unwrap().forget_assumed(&key, &uid) {
                    self.retry_unschedulable("binding failed");
                }
                self.retry_later(&key);
            }
        }
    }

    /// POST pods/{name}/binding: the API server sets `spec.nodeName` and the
    /// `PodScheduled=True` condition.
    async fn post_binding(&self, pod: &Pod, node: &str) -> kube::Result<()> {
        let binding = Binding {
            metadata: ObjectMeta {
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.into()),
                ..Default::default()
            },
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), pod.metadata.namespace.as_deref().unwrap_or_default());
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let _status: serde_json::Value = api.create_subresource("binding", name, &PostParams::default(), &binding).await?;
        Ok(())
    }

    /// Sets `PodScheduled=False/Unschedulable` with `message`, in the
    /// background, unless the pod already says exactly that.
    fn set_unschedulable_condition(&self, pod: &Pod, message: &str) {
        let current = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        if current
            .is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable") && c.message.as_deref() == Some(message))
        {
            return;
        }
        // The transition time moves only when the status does.
        let since = current.filter(|c| c.status == "False").and_then(|c| c.last_transition_time.clone()).unwrap_or_else(now);
        let patch = serde_json::json!({
            // A precondition: a write that lands after the pod changed (was
            // bound, say) must not mark it unschedulable again.
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastTransitionTime": since
            }]}
        });
        let key = ObjectKey::of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let writes = self.status_writes.clone();
        tokio::spawn(async move {
            let Ok(_permit) = writes.acquire().await else { return };
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                Ok(_) => {}
                // Changed or gone since the decision: the next one reports.
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                Err(e) => tracing::debug!(pod = %key, error = %e, "could not set the PodScheduled condition"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn pending_means_unbound_ours_and_neither_deleting_nor_finished() {
        let ours = "default-scheduler";
        assert!(is_pending_for(&pod(json!({"spec": {"containers": []}})), ours), "no schedulerName means the default scheduler");
        assert!(is_pending_for(&pod(json!({"spec": {"containers": [], "schedulerName": ours}})), ours));
        assert!(!is_pending_for(&pod(json!({"spec": {"containers": [], "schedulerName": "other"}})), ours));
        assert!(!is_pending_for(&pod(json!({"spec": {"containers": [], "nodeName": "n1"}})), ours));
        assert!(!is_pending_for(
            &pod(json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "spec": {"containers": []}})),
            ours
        ));
        assert!(!is_pending_for(&pod(json!({"spec": {"containers": []}, "status": {"phase": "Failed"}})), ours));
        assert!(is_pending_for(&pod(json!({"spec": {"containers": [], "schedulerName": "other"}})), "other"));
    }
}
