//! Keeps `spec.replicas` pods running for every ReplicaSet and
//! ReplicationController: one implementation (Kubernetes' `ReplicaSetController`
//! also serves both kinds) over the [`Workload`] trait.
//!
//! A reconcile of one owner:
//! 1. claims its pods: owned pods whose labels still match, plus matching
//!    orphans (adopted with a controller ownerReference); owned pods that no
//!    longer match are released;
//! 2. if every earlier create/delete has been seen in the cache
//!    ([`Expectations`]), creates or deletes the difference to
//!    `spec.replicas` (creates in slow-start batches, deletes the least
//!    useful pods first);
//! 3. writes `status` (replicas, fullyLabeledReplicas, readyReplicas,
//!    availableReplicas, observedGeneration) when it changed.

use anyhow::Context;
use futures::future::join_all;
use hawser_api::selector::LabelSelector;
use hawser_runtime::events::{EventType, Recorder};
use hawser_runtime::expectations::Expectations;
use hawser_runtime::informer::Cached;
use hawser_runtime::objects::{self, Availability};
use hawser_runtime::{Action, Change, Informer, Informers, ObjectKey, WorkQueue, run_workers};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::{Value, json};
use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// At most this many pods are created or deleted per reconcile, as
/// Kubernetes' `burstReplicas`: a huge scale-up proceeds in rounds, each
/// waiting for the cache to see the last.
const BURST_REPLICAS: usize = 500;
/// The first batch of creations; each batch that fully succeeds doubles the
/// next, so a template the API rejects costs one failed create, not hundreds.
const SLOW_START_INITIAL_BATCH: usize = 1;

/// What the replica logic needs from a ReplicaSet or a ReplicationController.
pub trait Workload: Cached + Resource<Scope = k8s_openapi::NamespaceResourceScope> {
    /// The `component` of its Events, as Kubernetes names the controller.
    const COMPONENT: &'static str;
    fn desired_replicas(&self) -> i32;
    /// None when the selector is missing or invalid: such an owner controls no pods.
    fn pod_selector(&self) -> Option<LabelSelector>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    /// The status fields this controller writes, as they are now.
    fn current_status(&self) -> Option<Value>;
}

impl Workload for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn pod_selector(&self) -> Option<LabelSelector> {
        let selector = LabelSelector::from_object(&self.spec.as_ref()?.selector).ok()?;
        // An empty selector would match every pod in the namespace; the API
        // rejects it, and a controller must never act on it.
        (!selector.is_empty()).then_some(selector)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }

    fn current_status(&self) -> Option<Value> {
        serde_json::to_value(self.status.as_ref()?).ok()
    }
}

/// Starts the ReplicaSet controller.
pub fn start_replica_sets(informers: &Arc<Informers>, config: &super::Config) {
    start::<ReplicaSet>(informers, config, "replicaset");
}

/// Starts the replica controller for kind `K`.
pub fn start<K: Workload>(informers: &Arc<Informers>, config: &super::Config, name: &'static str) {
    let controller = Arc::new(ReplicaController::<K> {
        client: informers.client(),
        owners: informers.get::<K>(),
        pods: informers.get::<Pod>(),
        expectations: Expectations::default(),
        recorder: Recorder::new(informers.client(), K::COMPONENT),
    });
    let queue = WorkQueue::<ObjectKey>::new();
    controller.owners.queue_changes(&queue);
    {
        let queue = queue.clone();
        let weak = Arc::downgrade(&controller);
        controller.pods.on_change(move |change| {
            if let Some(controller) = weak.upgrade() {
                controller.pod_changed(change, &queue);
            }
        });
    }
    let workers = config.workers;
    tokio::spawn(async move {
        controller.owners.wait_synced().await;
        controller.pods.wait_synced().await;
        run_workers(name, queue, workers, move |key| {
            let controller = controller.clone();
            async move { controller.reconcile(&key).await }
        })
        .await;
    });
}

struct ReplicaController<K> {
    client: kube::Client,
    owners: Informer<K>,
    pods: Informer<Pod>,
    expectations: Expectations,
    recorder: Recorder,
}

impl<K: Workload> ReplicaController<K> {
    /// Maps a pod change to the owners that must look again, and counts it
    /// against their expectations.
    fn pod_changed(&self, change: &Change<'_, Pod>, queue: &WorkQueue<ObjectKey>) {
        let kind = K::kind(&());
        for pod in change.versions() {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            match objects::controller_of(&pod.metadata) {
                Some(owner) if owner.kind == kind => queue.add(ObjectKey::new(namespace, owner.name.clone())),
                Some(_) => {}
                // An orphan: every owner that could adopt it.
                None => {
                    let labels = pod.metadata.labels.clone().unwrap_or_default();
                    for owner in self.owners.list_namespace(&namespace) {
                        if owner.pod_selector().is_some_and(|s| s.matches(&labels)) {
                            queue.add(ObjectKey::of(&*owner));
                        }
                    }
                }
            }
        }
        // Expectations count what the cache has seen of our own writes.
        let Some(owner) = objects::controller_of(&change.object().metadata).filter(|o| o.kind == kind) else { return };
        let owner_key = ObjectKey::new(change.object().metadata.namespace.clone().unwrap_or_default(), owner.name.clone());
        let uid = change.object().metadata.uid.clone().unwrap_or_default();
        match (change.old, change.new) {
            (None, Some(_)) => self.expectations.creation_observed(&owner_key),
            (Some(_), None) => self.expectations.deletion_observed(&owner_key, &uid),
            (Some(old), Some(new)) if old.metadata.deletion_timestamp.is_none() && new.metadata.deletion_timestamp.is_some() => {
                self.expectations.deletion_observed(&owner_key, &uid)
            }
            _ => {}
        }
    }

    async fn reconcile(&self, key: &ObjectKey) -> anyhow::Result<Action> {
        let Some(owner) = self.owners.get(key) else {
            self.expectations.forget(key);
            return Ok(Action::AwaitChange);
        };
        if owner.meta().deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let Some(selector) = owner.pod_selector() else {
            tracing::debug!(%key, "no valid selector; controlling no pods");
            return Ok(Action::AwaitChange);
        };
        let pods = self.claim_pods(&*owner, &selector).await?;
        let active: Vec<Arc<Pod>> = pods.into_iter().filter(|p| objects::is_pod_active(p)).collect();

        let mut result = Ok(());
        if self.expectations.satisfied(key) {
            let desired = owner.desired_replicas().max(0) as usize;
            result = match active.len().cmp(&desired) {
                Ordering::Less => self.create_pods(key, &*owner, (desired - active.len()).min(BURST_REPLICAS)).await,
                Ordering::Greater => self.delete_pods(key, &*owner, &active, (active.len() - desired).min(BURST_REPLICAS)).await,
                Ordering::Equal => Ok(()),
            };
        }
        let next = self.write_status(key, &*owner, &active).await?;
        result.map(|()| next)
    }

    /// The owner's pods after adoption and release (Kubernetes' `ClaimPods`).
    async fn claim_pods(&self, owner: &K, selector: &LabelSelector) -> anyhow::Result<Vec<Arc<Pod>>> {
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let namespace = owner.meta().namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let mut claimed = Vec::new();
        for pod in self.pods.list_namespace(&namespace) {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let matches = selector.matches(&labels);
            match objects::controller_of(&pod.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        claimed.push(pod);
                    } else if pod.metadata.deletion_timestamp.is_none() {
                        release(&api, &pod, &uid).await?;
                    }
                }
                None if matches && pod.metadata.deletion_timestamp.is_none() && objects::is_pod_active(&pod) => {
                    adopt(&api, &pod, objects::controller_reference(owner)).await?;
                    claimed.push(pod);
                }
                _ => {}
            }
        }
        Ok(claimed)
    }

    async fn create_pods(&self, key: &ObjectKey, owner: &K, count: usize) -> anyhow::Result<()> {
        let pod = pod_from_template(owner).with_context(|| format!("{} {key} has no pod template", K::kind(&())))?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let owner_ref = objects::object_reference(owner);
        self.expectations.expect_creations(key, count);
        let mut remaining = count;
        let mut batch = SLOW_START_INITIAL_BATCH;
        while remaining > 0 {
            let n = batch.min(remaining);
            let post = PostParams::default();
            let results = join_all((0..n).map(|_| api.create(&post, &pod))).await;
            remaining -= n;
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(created) => {
                        let name = created.metadata.name.unwrap_or_default();
                        self.recorder.publish(&owner_ref, EventType::Normal, "SuccessfulCreate", &format!("Created pod: {name}"));
                    }
                    Err(e) => {
                        self.expectations.creation_observed(key);
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                // The creations never sent will never be seen either.
                for _ in 0..remaining {
                    self.expectations.creation_observed(key);
                }
                self.recorder.publish(&owner_ref, EventType::Warning, "FailedCreate", &format!("Error creating: {}", api_message(&e)));
                return Err(e).with_context(|| format!("creating pods for {key}"));
            }
            batch *= 2;
        }
        Ok(())
    }

    async fn delete_pods(&self, key: &ObjectKey, owner: &K, active: &[Arc<Pod>], count: usize) -> anyhow::Result<()> {
        let mut ranked: Vec<&Arc<Pod>> = active.iter().collect();
        ranked.sort_by(|a, b| deletion_order(a, b));
        let victims = &ranked[..count];
        let uids = victims.iter().map(|p| p.metadata.uid.clone().unwrap_or_default());
        self.expectations.expect_deletions(key, uids);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let owner_ref = objects::object_reference(owner);
        let results = join_all(victims.iter().map(|pod| {
            let api = api.clone();
            async move {
                let name = pod.metadata.name.clone().unwrap_or_default();
                (pod, api.delete(&name, &DeleteParams::default()).await)
            }
        }))
        .await;
        let mut first_error = None;
        for (pod, result) in results {
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            match result {
                Ok(_) => self.recorder.publish(&owner_ref, EventType::Normal, "SuccessfulDelete", &format!("Deleted pod: {name}")),
                // Already gone: the cache will say so too.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    self.expectations.deletion_observed(key, pod.metadata.uid.as_deref().unwrap_or_default());
                    self.recorder.publish(&owner_ref, EventType::Warning, "FailedDelete", &format!("Error deleting: {}", api_message(&e)));
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e).with_context(|| format!("deleting pods of {key}")),
            None => Ok(()),
        }
    }

    /// Writes the counts when they changed; asks to look again when a ready
    /// pod will become available after `minReadySeconds`.
    async fn write_status(&self, key: &ObjectKey, owner: &K, active: &[Arc<Pod>]) -> anyhow::Result<Action> {
        let template_labels = owner.template().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
        let mut next = Action::AwaitChange;
        let (mut ready, mut available, mut fully_labeled) = (0, 0, 0);
        for pod in active {
            let labels = pod.metadata.labels.as_ref();
            if template_labels.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
                fully_labeled += 1;
            }
            match objects::pod_availability(pod, owner.min_ready_seconds()) {
                Availability::Available => {
                    ready += 1;
                    available += 1;
                }
                Availability::ReadyFor { remaining } => {
                    ready += 1;
                    next = next.min(Action::RequeueAfter(remaining + Duration::from_millis(100)));
                }
                Availability::NotReady => {}
            }
        }
        let current = owner.current_status().unwrap_or_else(|| json!({}));
        let status = json!({
            "replicas": active.len(),
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": owner.meta().generation.unwrap_or(0),
        });
        // Absent counts read as zero, as Kubernetes omits zero values.
        let unchanged = status.as_object().unwrap().iter().all(|(k, v)| current.get(k).unwrap_or(&json!(0)) == v);
        if !unchanged {
            let api: Api<K> = Api::namespaced(self.client.clone(), &key.namespace);
            api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
                .await
                .with_context(|| format!("writing the status of {key}"))?;
        }
        Ok(next)
    }
}

/// A pod for `owner`'s template: generated name `<owner>-xxxxx`, the
/// template's labels and annotations, and the owner as controller.
fn pod_from_template<K: Workload>(owner: &K) -> Option<Pod> {
    let template = owner.template()?;
    let template_meta = template.metadata.clone().unwrap_or_default();
    Some(Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.meta().name.as_deref().unwrap_or_default())),
            namespace: owner.meta().namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            owner_references: Some(vec![objects::controller_reference(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    })
}

async fn adopt(api: &Api<Pod>, pod: &Pod, owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> anyhow::Result<()> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(owner);
    set_owner_references(api, pod, refs).await.context("adopting an orphan pod")
}

async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> anyhow::Result<()> {
    let refs: Vec<_> = pod.metadata.owner_references.iter().flatten().filter(|r| r.uid != owner_uid).cloned().collect();
    set_owner_references(api, pod, refs).await.context("releasing a pod that no longer matches")
}

/// Replaces the owner references, guarded by the pod's uid and
/// resourceVersion so a pod that changed meanwhile is looked at again.
async fn set_owner_references(
    api: &Api<Pod>,
    pod: &Pod,
    refs: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> anyhow::Result<()> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    // null removes the field: Kubernetes omits an empty list.
    let refs = if refs.is_empty() { Value::Null } else { json!(refs) };
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "uid": pod.metadata.uid,
        "resourceVersion": pod.metadata.resource_version,
    }});
    match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(()),
        // Gone: nothing to claim.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("patching pod {name}")),
    }
}

/// Which pods go first when scaling down (Kubernetes' `ActivePods` order,
/// without pod-deletion-cost): unscheduled before scheduled, Pending before
/// Unknown before Running, not ready before ready, ready for less time
/// before longer, more restarts before fewer, newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let scheduled = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        Some(_) => 3,
    };
    let ready_since = |p: &Pod| {
        p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready" && c.status == "True")?.last_transition_time.clone()
    };
    let restarts = |p: &Pod| -> i32 {
        p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|cs| cs.iter().map(|c| c.restart_count).sum()).unwrap_or(0)
    };
    scheduled(a)
        .cmp(&scheduled(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(objects::is_pod_ready(a).cmp(&objects::is_pod_ready(b)))
        // Later ready time (shorter readiness) first.
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then(restarts(b).cmp(&restarts(a)))
        .then_with(|| b.metadata.creation_timestamp.cmp(&a.metadata.creation_timestamp))
}

/// The `message` of an API error, else the error's text.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, json: Value) -> Pod {
        let mut p: Pod = serde_json::from_value(json).unwrap();
        p.metadata.name = Some(name.into());
        p
    }

    fn ready(since: &str) -> Value {
        json!([{"type": "Ready", "status": "True", "lastTransitionTime": since}])
    }

    #[test]
    fn scale_down_removes_unscheduled_then_not_ready_then_newest() {
        let old_ready = pod(
            "old-ready",
            json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"nodeName": "n1", "containers": []},
                   "status": {"phase": "Running", "conditions": ready("2026-01-01T00:01:00Z")}}),
        );
        let new_ready = pod(
            "new-ready",
            json!({"metadata": {"creationTimestamp": "2026-01-02T00:00:00Z"}, "spec": {"nodeName": "n1", "containers": []},
                   "status": {"phase": "Running", "conditions": ready("2026-01-02T00:01:00Z")}}),
        );
        let not_ready = pod(
            "not-ready",
            json!({"metadata": {"creationTimestamp": "2025-01-01T00:00:00Z"}, "spec": {"nodeName": "n2", "containers": []},
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        let unscheduled =
            pod("unscheduled", json!({"metadata": {"creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"containers": []}}));
        let mut pods = [&old_ready, &new_ready, &not_ready, &unscheduled];
        pods.sort_by(|a, b| deletion_order(a, b));
        let names: Vec<_> = pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["unscheduled", "not-ready", "new-ready", "old-ready"]);
    }

    #[test]
    fn pods_from_a_template_carry_the_owner_and_template_labels() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap();
        let pod = pod_from_template(&rs).unwrap();
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "web");
        let owner = objects::controller_of(&pod.metadata).unwrap();
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.api_version.as_str()), ("ReplicaSet", "u1", "apps/v1"));
        assert_eq!(rs.desired_replicas(), 1, "replicas default to 1");
    }

    #[test]
    fn an_empty_or_missing_selector_controls_nothing() {
        let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"selector": {}}})).unwrap();
        assert!(rs.pod_selector().is_none());
    }
}
