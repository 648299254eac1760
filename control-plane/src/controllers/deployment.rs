//! The Deployment controller: one ReplicaSet per pod template, rolled from
//! old to new by the Deployment's strategy, as Kubernetes'
//! `pkg/controller/deployment` does.
//!
//! # Flow of one sync
//! ```text
//! Deployment/ReplicaSet/Pod change ──▶ queue(Deployment key) ──▶ reconcile
//!   1. claim: adopt orphan ReplicaSets the selector matches, release owned ones it no longer matches
//!   2. plan (pure): deployment + owned ReplicaSets (+ pod counts) ──▶ Plan {RS writes, status, requeue}
//!        paused or scaling event ──▶ scale only (proportionally during a rollout)
//!        Recreate                ──▶ old RSs to 0, wait for their pods to go, then the new RS to full size
//!        RollingUpdate           ──▶ new RS up within maxSurge, else old RSs down within maxUnavailable
//!        rollout complete        ──▶ delete old RSs beyond revisionHistoryLimit
//!   3. execute: RS creates/updates/deletes (with resourceVersion), then the status subresource
//! ```
//!
//! The "new" ReplicaSet is the (oldest) owned one whose pod template equals
//! the Deployment's, ignoring the `pod-template-hash` label; it is created as
//! `<deployment>-<hash>` when there is none. Every other owned ReplicaSet is
//! "old". Revisions live in the `deployment.kubernetes.io/revision`
//! annotation: the new RS always has the highest, so `kubectl rollout undo`
//! (which copies an old RS's template back into the Deployment) makes that RS
//! current again with a fresh revision and its previous ones appended to
//! `deployment.kubernetes.io/revision-history`.
//!
//! Every decision lives in `plan` over plain objects, so it is tested
//! without an API server. One plan is one Kubernetes sync pass (e.g. a pass
//! that scales the new RS up does not also scale old ones down); all changes a
//! pass makes to one ReplicaSet go out as a single update.
//!
//! The informer caches lag behind our own writes; a sync that started before
//! the cache showed the previous sync's writes could scale an old RS down a
//! second time, so a Deployment is not synced again until its cache shows
//! every write of its last sync (`Unobserved`). For the same reason an RS
//! counts at most `spec.replicas` of its `status.availableReplicas` (pods a
//! scale-down is already removing are not available for long), which is
//! stricter than Kubernetes.
//!
//! Differences from Kubernetes: the pod-template hash is FNV-1a over a
//! canonical JSON form of the template rather than Go's `spew` dump (names
//! differ from a real cluster's, which nothing depends on); the deprecated
//! `rollbackTo` field is not supported (kubectl rolls back client-side);
//! `status.terminatingReplicas` (alpha in 1.33) is not reported.

use anyhow::{Context, anyhow};
use hawser_api::selector::LabelSelector;
use hawser_runtime::events::{EventType, Recorder};
use hawser_runtime::objects::{self, controller_of, controller_reference, is_pod_terminated, object_reference};
use hawser_runtime::{Action, Change, Informer, Informers, ObjectKey, WorkQueue, run_workers};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector as LabelSelectorObject, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The label that keeps the ReplicaSets of one Deployment apart.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Kubernetes caps `revision-history` at about 2000 characters, dropping the oldest.
const MAX_REVISION_HISTORY_CHARS: usize = 2000;
const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Kubernetes' `rand.SafeEncodeString` alphabet: no vowels (no words) and no
/// look-alikes (0/o, 1/l, 3/e).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// Give up waiting for the cache to show our own writes after this long (a
/// watch event can be lost to a relist; any newer version also ends the wait).
const UNOBSERVED_TIMEOUT: Duration = Duration::from_secs(30);
/// Safety net while waiting for the cache: the informer event normally
/// requeues the Deployment much sooner.
const UNOBSERVED_RECHECK: Duration = Duration::from_secs(1);

const AVAILABLE: &str = "Available";
const PROGRESSING: &str = "Progressing";
const REPLICA_FAILURE: &str = "ReplicaFailure";

/// Condition reasons, with Kubernetes' names (`kubectl rollout status` reads
/// `ProgressDeadlineExceeded`).
mod reason {
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
    pub const PAUSED: &str = "DeploymentPaused";
    pub const RESUMED: &str = "DeploymentResumed";
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

// ---------------------------------------------------------------------------
// The controller: informers, queue, execution of plans
// ---------------------------------------------------------------------------

/// Starts the controller: registers change handlers, then runs
/// `config.workers` reconcilers once the caches have synced.
pub fn start(informers: &Arc<Informers>, config: &super::Config) {
    let deployments = informers.get::<Deployment>();
    let replica_sets = informers.get::<ReplicaSet>();
    let pods = informers.get::<Pod>();
    let queue: Arc<WorkQueue<ObjectKey>> = WorkQueue::new();

    deployments.queue_changes(&queue);

    let (q, ds) = (queue.clone(), deployments.clone());
    replica_sets.on_change(move |c| {
        for key in deployments_for_replica_set_change(&ds, c) {
            q.add(key);
        }
    });

    // Only Recreate rollouts look at pods: they wait for the old ones to go.
    let (q, ds, rss) = (queue.clone(), deployments.clone(), replica_sets.clone());
    pods.on_change(move |c| {
        let gone = c.new.is_none_or(|new| is_pod_terminated(new) && c.old.is_some_and(|old| !is_pod_terminated(old)));
        if gone && let Some(key) = recreate_deployment_of_pod(&ds, &rss, c.object()) {
            q.add(key);
        }
    });

    let controller = Arc::new(Controller {
        client: informers.client(),
        recorder: Recorder::new(informers.client(), "deployment-controller"),
        deployments,
        replica_sets,
        pods,
        unobserved: Unobserved::default(),
    });
    let workers = config.workers;
    tokio::spawn(async move {
        controller.deployments.wait_synced().await;
        controller.replica_sets.wait_synced().await;
        controller.pods.wait_synced().await;
        tracing::info!(workers, "deployment controller started");
        run_workers("deployment", queue, workers, move |key| {
            let controller = controller.clone();
            async move { controller.reconcile(key).await }
        })
        .await;
    });
}

/// The Deployments to sync for a ReplicaSet change: its controller (before
/// and after the change), or for an orphan whose labels or owner changed,
/// every Deployment in its namespace that selects it (one may adopt it).
fn deployments_for_replica_set_change(deployments: &Informer<Deployment>, c: &Change<'_, ReplicaSet>) -> Vec<ObjectKey> {
    let mut keys = Vec::new();
    for rs in c.versions() {
        if let Some(key) = controlling_deployment(deployments, rs) {
            keys.push(key);
        }
    }
    if let Some(new) = c.new
        && controller_of(&new.metadata).is_none()
        && c.old.is_none_or(|old| old.metadata.labels != new.metadata.labels || controller_of(&old.metadata).is_some())
    {
        let namespace = new.metadata.namespace.as_deref().unwrap_or_default();
        for d in deployments.list_namespace(namespace) {
            if selects_orphan(&d, new) {
                keys.push(ObjectKey::of(&*d));
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The cached Deployment a ReplicaSet's controller reference points at (same
/// name and uid: a Deployment recreated under the same name is another one).
fn controlling_deployment(deployments: &Informer<Deployment>, rs: &ReplicaSet) -> Option<ObjectKey> {
    let owner = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment")?;
    let key = ObjectKey::new(rs.metadata.namespace.clone().unwrap_or_default(), owner.name.clone());
    let d = deployments.get(&key)?;
    (d.metadata.uid.as_deref() == Some(owner.uid.as_str())).then_some(key)
}

/// Whether `d` would adopt the orphan `rs`: a non-empty selector matching its labels.
fn selects_orphan(d: &Deployment, rs: &ReplicaSet) -> bool {
    let Some(selector) = d.spec.as_ref().and_then(|s| LabelSelector::from_object(&s.selector).ok()) else { return false };
    !selector.is_empty() && selector.matches(rs.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
}

/// The Recreate Deployment owning a pod's ReplicaSet, if any.
fn recreate_deployment_of_pod(deployments: &Informer<Deployment>, replica_sets: &Informer<ReplicaSet>, pod: &Pod) -> Option<ObjectKey> {
    let owner = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")?;
    let rs = replica_sets.get(&ObjectKey::new(pod.metadata.namespace.clone().unwrap_or_default(), owner.name.clone()))?;
    if rs.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
        return None;
    }
    let key = controlling_deployment(deployments, &rs)?;
    deployments.get(&key).filter(|d| is_recreate(d)).map(|_| key)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

struct Controller {
    client: kube::Client,
    recorder: Recorder,
    deployments: Informer<Deployment>,
    replica_sets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    unobserved: Unobserved,
}

impl Controller {
    async fn reconcile(&self, key: ObjectKey) -> anyhow::Result<Action> {
        let Some(d) = self.deployments.get(&key) else {
            self.unobserved.forget(&key);
            return Ok(Action::AwaitChange);
        };
        // Deletion is the garbage collector's: its ReplicaSets go with it.
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(Action::AwaitChange);
        }
        let rs_version = |name: &str| {
            self.replica_sets
                .get(&ObjectKey::new(key.namespace.clone(), name))
                .map(|rs| rs.metadata.resource_version.clone().unwrap_or_default())
        };
        if self.unobserved.waiting(&key, d.metadata.resource_version.as_deref(), rs_version) {
            return Ok(Action::RequeueAfter(UNOBSERVED_RECHECK));
        }
        // A spec the API server should have rejected: retrying cannot help; its next change requeues it.
        let selector = match d.spec.as_ref().map(|s| LabelSelector::from_object(&s.selector)) {
            Some(Ok(selector)) => selector,
            problem => {
                let problem = match problem {
                    Some(Err(e)) => format!("invalid selector: {e}"),
                    _ => "no spec".to_string(),
                };
                tracing::warn!(deployment = %key, problem, "not syncing deployment");
                return Ok(Action::AwaitChange);
            }
        };
        if selector.is_empty() {
            return self.selecting_all(&d).await;
        }
        let owned = self.claim_replica_sets(&d, &selector).await?;
        let pods = if is_recreate(&d) { self.pods_by_replica_set(&key.namespace, &owned) } else { HashMap::new() };
        // Conditions carry whole seconds, as Kubernetes stores them.
        let plan = match plan(&d, owned, &pods, objects::now().0) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(deployment = %key, error = format!("{e:#}"), "not syncing deployment");
                return Ok(Action::AwaitChange);
            }
        };
        self.execute(&d, plan).await
    }

    /// Kubernetes refuses to act on a selector that selects every pod.
    async fn selecting_all(&self, d: &Deployment) -> anyhow::Result<Action> {
        let message = "This deployment is selecting all pods. A non-empty selector is required.";
        self.recorder.publish(&object_reference(d), EventType::Warning, "SelectingAll", message);
        let generation = d.metadata.generation.unwrap_or(0);
        if d.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0) < generation {
            let mut updated = d.clone();
            updated.status.get_or_insert_default().observed_generation = Some(generation);
            self.write_status(updated).await?;
        }
        Ok(Action::AwaitChange)
    }

    /// The ReplicaSets `d` owns after adopting matching orphans and releasing
    /// owned ones its selector no longer matches.
    async fn claim_replica_sets(&self, d: &Deployment, selector: &LabelSelector) -> anyhow::Result<Vec<ReplicaSet>> {
        let key = ObjectKey::of(d);
        let uid = d.metadata.uid.as_deref().unwrap_or_default();
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut owned = Vec::new();
        for rs in self.replica_sets.list_namespace(&key.namespace) {
            let name = rs.metadata.name.clone().unwrap_or_default();
            let mut rs = (*rs).clone();
            match claim(uid, selector, &rs) {
                Claim::Owned => owned.push(rs),
                Claim::Ignore => {}
                Claim::Adopt => {
                    rs.metadata.owner_references.get_or_insert_default().push(controller_reference(d));
                    let adopted = self.replace_replica_set(&api, &key, rs).await.with_context(|| format!("adopting replica set {name}"))?;
                    tracing::info!(deployment = %key, replica_set = name, "adopted orphan replica set");
                    owned.push(adopted);
                }
                Claim::Release => {
                    rs.metadata.owner_references.get_or_insert_default().retain(|r| r.uid != uid);
                    self.replace_replica_set(&api, &key, rs).await.with_context(|| format!("releasing replica set {name}"))?;
                    tracing::info!(deployment = %key, replica_set = name, "released replica set its selector no longer matches");
                }
            }
        }
        Ok(owned)
    }

    /// Pods not yet finished, per owning ReplicaSet uid (Recreate waits for
    /// the old ones to be gone before it starts new ones).
    fn pods_by_replica_set(&self, namespace: &str, owned: &[ReplicaSet]) -> HashMap<String, usize> {
        let uids: HashSet<&str> = owned.iter().filter_map(|rs| rs.metadata.uid.as_deref()).collect();
        let mut counts = HashMap::new();
        for pod in self.pods.list_namespace(namespace) {
            if let Some(owner) = controller_of(&pod.metadata)
                && uids.contains(owner.uid.as_str())
                && !is_pod_terminated(&pod)
            {
                *counts.entry(owner.uid.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    async fn execute(&self, d: &Deployment, plan: Plan) -> anyhow::Result<Action> {
        let key = ObjectKey::of(d);
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let reference = object_reference(d);
        for write in plan.writes {
            match write {
                Write::Create { rs, event } => {
                    let name = rs.metadata.name.clone().unwrap_or_default();
                    match api.create(&PostParams::default(), &rs).await {
                        Ok(_) => self.unobserved.created(&key, &name),
                        Err(kube::Error::Api(e)) if e.is_already_exists() => return self.name_taken(d, &api, &name).await,
                        Err(e) => {
                            self.report_create_failure(d, &name, &e).await;
                            return Err(e).with_context(|| format!("creating replica set {}/{name}", key.namespace));
                        }
                    }
                    if let Some(message) = event {
                        self.recorder.publish(&reference, EventType::Normal, "ScalingReplicaSet", &message);
                    }
                }
                Write::Update { rs, event } => {
                    let name = rs.metadata.name.clone().unwrap_or_default();
                    self.replace_replica_set(&api, &key, rs)
                        .await
                        .with_context(|| format!("updating replica set {}/{name}", key.namespace))?;
                    if let Some(message) = event {
                        self.recorder.publish(&reference, EventType::Normal, "ScalingReplicaSet", &message);
                    }
                }
                Write::Delete { name, uid, resource_version } => {
                    // Preconditions: a ReplicaSet that changed since we looked
                    // (e.g. a rollback just scaled it up) must not be deleted.
                    let params = DeleteParams {
                        preconditions: Some(Preconditions { uid: Some(uid), resource_version: Some(resource_version) }),
                        ..DeleteParams::default()
                    };
                    match api.delete(&name, &params).await {
                        Ok(_) => {
                            tracing::info!(deployment = %key, replica_set = name, "deleted old replica set beyond revisionHistoryLimit")
                        }
                        Err(kube::Error::Api(e)) if e.is_not_found() => {}
                        Err(e) => return Err(e).with_context(|| format!("deleting old replica set {}/{name}", key.namespace)),
                    }
                }
            }
        }
        if let Some(updated) = plan.deployment {
            self.write_status(updated).await?;
        }
        Ok(plan.requeue.map_or(Action::AwaitChange, Action::RequeueAfter))
    }

    /// PUT of a ReplicaSet (its resourceVersion makes a stale write a 409).
    async fn replace_replica_set(&self, api: &Api<ReplicaSet>, owner: &ObjectKey, mut rs: ReplicaSet) -> anyhow::Result<ReplicaSet> {
        let name = rs.metadata.name.clone().unwrap_or_default();
        let replaced = rs.metadata.resource_version.clone().unwrap_or_default();
        // The cache keeps managedFields as an empty list, which would reset them.
        rs.metadata.managed_fields = None;
        let updated = api.replace(&name, &PostParams::default(), &rs).await?;
        if updated.metadata.resource_version.as_deref() != Some(replaced.as_str()) {
            self.unobserved.updated(owner, Kind::ReplicaSet, &name, &replaced);
        }
        Ok(updated)
    }

    /// PUT of the status subresource; annotations (the revision) go with it,
    /// as in Kubernetes.
    async fn write_status(&self, mut d: Deployment) -> anyhow::Result<()> {
        let key = ObjectKey::of(&d);
        let replaced = d.metadata.resource_version.clone().unwrap_or_default();
        d.metadata.managed_fields = None;
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let updated = api
            .replace_status(&key.name, &PostParams::default(), &d)
            .await
            .with_context(|| format!("updating status of deployment {key}"))?;
        if updated.metadata.resource_version.as_deref() != Some(replaced.as_str()) {
            self.unobserved.updated(&key, Kind::Deployment, &key.name, &replaced);
        }
        Ok(())
    }

    /// The new ReplicaSet's name already exists. Ours with our template: the
    /// cache has not shown it yet. Anything else is a hash collision: bump
    /// `status.collisionCount` so the next sync hashes to another name.
    async fn name_taken(&self, d: &Deployment, api: &Api<ReplicaSet>, name: &str) -> anyhow::Result<Action> {
        let key = ObjectKey::of(d);
        let existing = api.get_opt(name).await.with_context(|| format!("reading replica set {}/{name}", key.namespace))?;
        if let Some(rs) = &existing
            && is_current_replica_set_of(d, rs)
        {
            self.unobserved.created(&key, name);
            return Ok(Action::RequeueAfter(UNOBSERVED_RECHECK));
        }
        let mut updated = d.clone();
        let status = updated.status.get_or_insert_default();
        let count = status.collision_count.unwrap_or(0).saturating_add(1);
        status.collision_count = Some(count);
        self.write_status(updated).await?;
        Err(anyhow!(
            "replica set {}/{name} exists with another pod template (hash collision); collisionCount is now {count}",
            key.namespace
        ))
    }

    async fn report_create_failure(&self, d: &Deployment, name: &str, e: &kube::Error) {
        let message = format!("Failed to create new replica set {name:?}: {e}");
        self.recorder.publish(&object_reference(d), EventType::Warning, reason::FAILED_RS_CREATE, &message);
        let mut updated = d.clone();
        let status = updated.status.get_or_insert_default();
        set_condition(status, new_condition(PROGRESSING, "False", reason::FAILED_RS_CREATE, message, &objects::now()));
        // The create error is the one worth returning; this is best effort.
        if let Err(e) = self.write_status(updated).await {
            tracing::debug!(deployment = %ObjectKey::of(d), error = format!("{e:#}"), "could not record the create failure");
        }
    }
}

/// What a ReplicaSet is to a Deployment (Kubernetes' `ClaimReplicaSets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Claim {
    Owned,
    /// An orphan the selector matches.
    Adopt,
    /// Owned, but the selector no longer matches its labels.
    Release,
    Ignore,
}

fn claim(deployment_uid: &str, selector: &LabelSelector, rs: &ReplicaSet) -> Claim {
    let matches = selector.matches(rs.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()));
    let deleting = rs.metadata.deletion_timestamp.is_some();
    match controller_of(&rs.metadata) {
        Some(owner) if owner.uid == deployment_uid => match (matches, deleting) {
            (true, _) => Claim::Owned,
            // Releasing a ReplicaSet that is going anyway only races its deletion.
            (false, true) => Claim::Ignore,
            (false, false) => Claim::Release,
        },
        Some(_) => Claim::Ignore,
        None if matches && !deleting => Claim::Adopt,
        None => Claim::Ignore,
    }
}

/// Whether `rs` is `d`'s for its current template (a create that hit
/// AlreadyExists found our own ReplicaSet rather than a collision).
fn is_current_replica_set_of(d: &Deployment, rs: &ReplicaSet) -> bool {
    let ours = controller_of(&rs.metadata).is_some_and(|r| Some(r.uid.as_str()) == d.metadata.uid.as_deref());
    let template = d.spec.as_ref().map(|s| &s.template);
    ours && matches!((template, rs.spec.as_ref().and_then(|s| s.template.as_ref())), (Some(a), Some(b)) if equal_ignore_hash(a, b))
}

/// Which object an awaited write was to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Deployment,
    ReplicaSet,
}

/// Our writes the informer caches have not shown yet, per Deployment.
#[derive(Default)]
struct Unobserved {
    by_deployment: Mutex<HashMap<ObjectKey, Vec<Awaited>>>,
}

struct Awaited {
    kind: Kind,
    name: String,
    /// The resourceVersion our update replaced; None for a ReplicaSet we created.
    replaced: Option<String>,
    since: Instant,
}

impl Unobserved {
    fn created(&self, owner: &ObjectKey, name: &str) {
        self.push(owner, Awaited { kind: Kind::ReplicaSet, name: name.to_string(), replaced: None, since: Instant::now() });
    }

    fn updated(&self, owner: &ObjectKey, kind: Kind, name: &str, replaced: &str) {
        let awaited = Awaited { kind, name: name.to_string(), replaced: Some(replaced.to_string()), since: Instant::now() };
        self.push(owner, awaited);
    }

    fn push(&self, owner: &ObjectKey, awaited: Awaited) {
        self.by_deployment.lock().unwrap().entry(owner.clone()).or_default().push(awaited);
    }

    /// True while the cache still shows a version some write of ours replaced
    /// (or lacks a ReplicaSet we created). `rs_version` is the cached
    /// resourceVersion of a ReplicaSet in the Deployment's namespace.
    fn waiting(&self, owner: &ObjectKey, deployment_version: Option<&str>, rs_version: impl Fn(&str) -> Option<String>) -> bool {
        let mut map = self.by_deployment.lock().unwrap();
        let Some(awaited) = map.get_mut(owner) else { return false };
        awaited.retain(|a| {
            let cached = match a.kind {
                Kind::Deployment => deployment_version.map(str::to_string),
                Kind::ReplicaSet => rs_version(&a.name),
            };
            let seen = match (&a.replaced, cached) {
                (None, cached) => cached.is_some(),
                // Gone counts as seen: nothing stale is left to act on.
                (Some(_), None) => true,
                (Some(replaced), Some(cached)) => *replaced != cached,
            };
            !seen && a.since.elapsed() < UNOBSERVED_TIMEOUT
        });
        let waiting = !awaited.is_empty();
        if !waiting {
            map.remove(owner);
        }
        waiting
    }

    fn forget(&self, owner: &ObjectKey) {
        self.by_deployment.lock().unwrap().remove(owner);
    }
}

// ---------------------------------------------------------------------------
// Pod-template hashing and equality
// ---------------------------------------------------------------------------

/// The `pod-template-hash` of a template: FNV-1a (32 bits) over its canonical
/// JSON, then the collision count (little-endian) when non-zero, written as
/// the decimal hash in Kubernetes' safe alphabet.
fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hasher = Fnv1a32::default();
    hasher.write(canonical_json(&normalized_template(template)).as_bytes());
    if let Some(count) = collision_count.filter(|c| *c != 0) {
        hasher.write(&(count as u32).to_le_bytes());
    }
    safe_encode(&hasher.0.to_string())
}

/// Go's `hash/fnv.New32a`.
struct Fnv1a32(u32);

impl Default for Fnv1a32 {
    fn default() -> Self {
        Self(0x811c_9dc5)
    }
}

impl Fnv1a32 {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// Kubernetes' `rand.SafeEncodeString`: each byte mapped into the safe alphabet.
fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char).collect()
}

/// JSON with object keys sorted, whatever serde_json's map order is.
fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// A template as JSON without null, empty-object and empty-list fields:
/// Kubernetes' semantic equality treats empty and missing maps and lists
/// alike (removing the hash label leaves `labels: {}`; clients send
/// `creationTimestamp: null`).
fn normalized_template(template: &PodTemplateSpec) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for child in m.values_mut() {
                    strip(child);
                }
                m.retain(|_, child| match child {
                    Value::Null => false,
                    Value::Object(c) => !c.is_empty(),
                    Value::Array(c) => !c.is_empty(),
                    _ => true,
                });
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    strip(&mut v);
    v
}

/// Kubernetes' `EqualIgnoreHash`: the templates differ at most in the
/// `pod-template-hash` label.
fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let without_hash = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        normalized_template(&t)
    };
    without_hash(a) == without_hash(b)
}

// ---------------------------------------------------------------------------
// Rollout parameters
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    Recreate,
    RollingUpdate,
}

/// Kubernetes' `GetScaledValueFromIntOrPercent`: an absolute number, or a
/// percentage of `total` rounded up (surge) or down (unavailable).
fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> anyhow::Result<i32> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow!("invalid value {s:?}: must be an integer or a percentage"))?;
            let scaled = percent * i64::from(total);
            let value = if round_up { (scaled + 99).div_euclid(100) } else { scaled.div_euclid(100) };
            i32::try_from(value).with_context(|| format!("{s} of {total} is out of range"))
        }
    }
}

/// Kubernetes' `ResolveFenceposts`: (maxSurge, maxUnavailable) for `desired`
/// replicas. Both resolving to 0 would stall a rollout, so maxUnavailable
/// becomes 1 (surge may be impossible under a quota; unavailability is not).
fn resolve_fenceposts(max_surge: Option<&IntOrString>, max_unavailable: Option<&IntOrString>, desired: i32) -> anyhow::Result<(i32, i32)> {
    let default = IntOrString::String("25%".into());
    let surge = scaled_value(max_surge.unwrap_or(&default), desired, true).context("maxSurge")?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&default), desired, false).context("maxUnavailable")?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// A Deployment's spec with defaults applied and the rolling-update
/// fenceposts resolved against `replicas`.
struct Params<'a> {
    name: String,
    namespace: String,
    generation: i64,
    replicas: i32,
    strategy: Strategy,
    /// 0 for Recreate.
    max_surge: i32,
    /// 0 for Recreate and for 0 replicas; never more than `replicas`.
    max_unavailable: i32,
    min_ready_seconds: i32,
    paused: bool,
    /// None: keep every old ReplicaSet.
    history_limit: Option<i32>,
    /// None: no deadline (Kubernetes' "math.MaxInt32").
    progress_deadline: Option<i32>,
    template: &'a PodTemplateSpec,
    selector: &'a LabelSelectorObject,
}

impl<'a> Params<'a> {
    fn of(d: &'a Deployment) -> anyhow::Result<Self> {
        let spec = d.spec.as_ref().context("deployment has no spec")?;
        let replicas = spec.replicas.unwrap_or(1);
        let strategy_spec = spec.strategy.as_ref();
        let strategy = match strategy_spec.and_then(|s| s.type_.as_deref()) {
            None | Some("RollingUpdate") => Strategy::RollingUpdate,
            Some("Recreate") => Strategy::Recreate,
            Some(other) => anyhow::bail!("unsupported deployment strategy type {other:?}"),
        };
        let (max_surge, max_unavailable) = match strategy {
            Strategy::Recreate => (0, 0),
            Strategy::RollingUpdate => {
                let rolling = strategy_spec.and_then(|s| s.rolling_update.as_ref());
                let (surge, unavailable) = resolve_fenceposts(
                    rolling.and_then(|r| r.max_surge.as_ref()),
                    rolling.and_then(|r| r.max_unavailable.as_ref()),
                    replicas,
                )?;
                (surge, if replicas == 0 { 0 } else { unavailable.min(replicas) })
            }
        };
        Ok(Self {
            name: d.metadata.name.clone().unwrap_or_default(),
            namespace: d.metadata.namespace.clone().unwrap_or_default(),
            generation: d.metadata.generation.unwrap_or(0),
            replicas,
            strategy,
            max_surge,
            max_unavailable,
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            paused: spec.paused.unwrap_or(false),
            history_limit: match spec.revision_history_limit {
                Some(i32::MAX) => None,
                limit => Some(limit.unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)),
            },
            progress_deadline: match spec.progress_deadline_seconds {
                Some(i32::MAX) => None,
                deadline => Some(deadline.unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS)),
            },
            template: &spec.template,
            selector: &spec.selector,
        })
    }
}

// ---------------------------------------------------------------------------
// Small facts about ReplicaSets
// ---------------------------------------------------------------------------

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// Available pods that will remain: never more than `spec.replicas`, so pods
/// an earlier scale-down is already removing (status lags spec) do not count.
/// Kubernetes reads `status.availableReplicas` as is; this is stricter, so a
/// second sync before the ReplicaSet controller catches up cannot scale down twice.
fn lasting_available(rs: &ReplicaSet) -> i32 {
    available_replicas(rs).min(spec_replicas(rs)).max(0)
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    annotation(rs, key)?.parse().ok()
}

/// The revision annotation; missing is 0, unparsable an error (Kubernetes' `Revision`).
fn revision(rs: &ReplicaSet) -> Result<i64, std::num::ParseIntError> {
    annotation(rs, REVISION).map_or(Ok(0), str::parse)
}

/// Oldest first; a ReplicaSet not created yet is the newest; names break ties.
fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let created = |rs: &ReplicaSet| rs.metadata.creation_timestamp.as_ref().map_or(Timestamp::MAX, |t| t.0);
    created(a).cmp(&created(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Kubernetes' `skipCopyAnnotation`: what a Deployment does not hand to its ReplicaSets.
fn skip_copy_annotation(key: &str) -> bool {
    matches!(key, LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | DEPRECATED_ROLLBACK_TO)
}

/// Copies the Deployment's annotations (but the skipped ones) onto the RS;
/// true when something changed. `change-cause` travels this way to `rollout history`.
fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_default();
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_copy_annotation(k) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Kubernetes' `SetNewReplicaSetAnnotations`: copies the Deployment's
/// annotations and raises the revision to `new_revision` when lower; a
/// ReplicaSet that had a revision is being rolled back to, so its old
/// revision goes into the history. True when something changed.
fn set_new_replica_set_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64) -> bool {
    let mut changed = copy_annotations(d, rs);
    let annotations = rs.metadata.annotations.get_or_insert_default();
    let old = annotations.get(REVISION).cloned().filter(|r| !r.is_empty());
    let old_revision = match old.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(r)) => r,
        // Kubernetes leaves an unparsable revision alone.
        Some(Err(_)) => return changed,
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old {
            append_revision_history(annotations, &old);
        }
    }
    changed
}

fn append_revision_history(annotations: &mut BTreeMap<String, String>, old: &str) {
    let history = annotations.get(REVISION_HISTORY).cloned().unwrap_or_default();
    if history.is_empty() {
        annotations.insert(REVISION_HISTORY.into(), old.to_string());
        return;
    }
    let entries: Vec<&str> = history.split(',').collect();
    let mut total = history.len() + old.len() + 1;
    let mut start = 0;
    while total > MAX_REVISION_HISTORY_CHARS && start < entries.len() {
        total -= entries[start].len() + 1;
        start += 1;
    }
    if total <= MAX_REVISION_HISTORY_CHARS {
        let mut kept = entries[start..].to_vec();
        kept.push(old);
        annotations.insert(REVISION_HISTORY.into(), kept.join(","));
    }
}

/// Sets `desired-replicas` and `max-replicas`; true when either changed.
fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_default();
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if annotations.get(k) != Some(&v) {
            annotations.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

// ---------------------------------------------------------------------------
// Status and conditions
// ---------------------------------------------------------------------------

fn new_condition(type_: &str, status: &str, reason: &str, message: String, now: &Time) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

fn get_condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// Kubernetes' `SetDeploymentCondition`: same status and reason is no change
/// (timestamps stay); same status keeps the transition time.
fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_);
    status.conditions.get_or_insert_default().push(condition);
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
        if conditions.is_empty() {
            status.conditions = None;
        }
    }
}

fn count(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Go's `omitempty`: a zero count is not written.
fn nonzero(n: i32) -> Option<i32> {
    (n != 0).then_some(n)
}

/// Kubernetes' `DeploymentComplete`: every replica updated and available,
/// nothing old left, and the latest spec observed.
fn deployment_complete(p: &Params<'_>, status: &DeploymentStatus) -> bool {
    count(status.updated_replicas) == p.replicas
        && count(status.replicas) == p.replicas
        && count(status.available_replicas) == p.replicas
        && status.observed_generation.unwrap_or(0) >= p.generation
}

/// Kubernetes' `DeploymentProgressing`: new pods were added or became ready
/// or available, or old ones went.
fn deployment_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old = count(old.replicas) - count(old.updated_replicas);
    let new_old = count(new.replicas) - count(new.updated_replicas);
    count(new.updated_replicas) > count(old.updated_replicas)
        || new_old < old_old
        || count(new.ready_replicas) > count(old.ready_replicas)
        || count(new.available_replicas) > count(old.available_replicas)
}

// ---------------------------------------------------------------------------
// Planning: one sync pass, pure
// ---------------------------------------------------------------------------

/// What one sync pass writes.
#[derive(Debug)]
struct Plan {
    /// In order: the new ReplicaSet's creation first.
    writes: Vec<Write>,
    /// The Deployment with its new status and revision annotation, when either changed.
    deployment: Option<Deployment>,
    requeue: Option<Duration>,
}

#[derive(Debug)]
enum Write {
    /// `event`: the ScalingReplicaSet message to record once written.
    Create {
        rs: ReplicaSet,
        event: Option<String>,
    },
    Update {
        rs: ReplicaSet,
        event: Option<String>,
    },
    Delete {
        name: String,
        uid: String,
        resource_version: String,
    },
}

/// Plans one sync of `d` over the ReplicaSets it owns. `pods_by_rs` counts
/// unfinished pods per ReplicaSet uid (only Recreate reads it); `now` stamps
/// conditions and measures the progress deadline.
fn plan(d: &Deployment, owned: Vec<ReplicaSet>, pods_by_rs: &HashMap<String, usize>, now: Timestamp) -> anyhow::Result<Plan> {
    let p = Params::of(d)?;
    let mut pass = Pass {
        d,
        status: d.status.clone().unwrap_or_default(),
        slots: owned.into_iter().map(|rs| Slot { original: Some(rs.clone()), rs }).collect(),
        p,
        new: None,
        touched: Vec::new(),
        deletes: Vec::new(),
        revision: None,
        now: Time(now),
    };
    pass.check_paused_conditions();
    // Find the new RS and bring its revision up to date in every mode.
    pass.sync_revision(false);
    let mode = if pass.p.paused || pass.is_scaling_event() {
        pass.scale();
        if pass.p.paused {
            pass.cleanup();
        }
        Mode::Scale
    } else {
        match pass.p.strategy {
            Strategy::Recreate => pass.rollout_recreate(pods_by_rs),
            Strategy::RollingUpdate => pass.rollout_rolling(),
        }
        Mode::Rollout
    };
    Ok(pass.finish(mode))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Paused or a scaling event: sizes only; the Progressing condition is left alone.
    Scale,
    Rollout,
}

struct Slot {
    /// As the cache shows it; None for the new ReplicaSet this pass creates.
    original: Option<ReplicaSet>,
    /// As this pass leaves it.
    rs: ReplicaSet,
}

/// The working state of one sync pass.
struct Pass<'a> {
    d: &'a Deployment,
    p: Params<'a>,
    /// Starts as the Deployment's status; conditions change as the pass goes.
    status: DeploymentStatus,
    slots: Vec<Slot>,
    new: Option<usize>,
    /// Slots to update, in the order they were first changed.
    touched: Vec<usize>,
    deletes: Vec<usize>,
    /// The Deployment's revision annotation as this pass leaves it.
    revision: Option<String>,
    now: Time,
}

impl Pass<'_> {
    fn rs(&self, i: usize) -> &ReplicaSet {
        &self.slots[i].rs
    }

    fn old(&self) -> Vec<usize> {
        (0..self.slots.len()).filter(|i| Some(*i) != self.new).collect()
    }

    fn active_old(&self) -> Vec<usize> {
        self.old().into_iter().filter(|i| spec_replicas(self.rs(*i)) > 0).collect()
    }

    fn sorted_by_creation(&self, mut indices: Vec<usize>) -> Vec<usize> {
        indices.sort_by(|a, b| by_creation(self.rs(*a), self.rs(*b)));
        indices
    }

    fn total_spec(&self) -> i32 {
        self.slots.iter().map(|s| spec_replicas(&s.rs)).sum()
    }

    fn has_deadline(&self) -> bool {
        self.p.progress_deadline.is_some()
    }

    fn touch(&mut self, i: usize) {
        if self.slots[i].original.is_some() && !self.touched.contains(&i) {
            self.touched.push(i);
        }
    }

    /// Kubernetes' `checkPausedConditions`: pausing and resuming restart the
    /// progress clock, so a long pause never reads as a missed deadline.
    fn check_paused_conditions(&mut self) {
        if !self.has_deadline() {
            return;
        }
        let current = get_condition(&self.status, PROGRESSING).and_then(|c| c.reason.clone());
        if current.as_deref() == Some(reason::TIMED_OUT) {
            return;
        }
        let paused_recorded = current.as_deref() == Some(reason::PAUSED);
        if self.p.paused && !paused_recorded {
            set_condition(
                &mut self.status,
                new_condition(PROGRESSING, "Unknown", reason::PAUSED, "Deployment is paused".into(), &self.now),
            );
        } else if !self.p.paused && paused_recorded {
            set_condition(
                &mut self.status,
                new_condition(PROGRESSING, "Unknown", reason::RESUMED, "Deployment is resumed".into(), &self.now),
            );
        }
    }

    /// Kubernetes' `getNewReplicaSet`: finds the ReplicaSet of the current
    /// template (the oldest if several) and brings its annotations and
    /// revision up to date, or with `create` plans a new one.
    fn sync_revision(&mut self, create: bool) {
        if self.new.is_none() {
            let template = self.p.template;
            let candidates = self.sorted_by_creation((0..self.slots.len()).collect());
            self.new = candidates
                .into_iter()
                .find(|i| self.rs(*i).spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| equal_ignore_hash(t, template)));
        }
        let max_old_revision = self.old().into_iter().filter_map(|i| revision(self.rs(i)).ok()).max().unwrap_or(0).max(0);
        let new_revision = max_old_revision + 1;
        if let Some(n) = self.new {
            let min_ready = self.p.min_ready_seconds;
            let rs = &mut self.slots[n].rs;
            let mut changed = set_new_replica_set_annotations(self.d, rs, new_revision);
            let spec = rs.spec.get_or_insert_default();
            if spec.min_ready_seconds.unwrap_or(0) != min_ready {
                spec.min_ready_seconds = Some(min_ready);
                changed = true;
            }
            self.revision = annotation(&self.slots[n].rs, REVISION).map(str::to_string);
            if changed {
                self.touch(n);
            }
            if self.has_deadline() && get_condition(&self.status, PROGRESSING).is_none() {
                let message = format!("Found new replica set {:?}", self.slots[n].rs.metadata.name.as_deref().unwrap_or_default());
                set_condition(&mut self.status, new_condition(PROGRESSING, "True", reason::FOUND_NEW_RS, message, &self.now));
            }
        } else if create {
            self.create_new(new_revision);
        }
    }

    fn create_new(&mut self, revision: i64) {
        let hash = pod_template_hash(self.p.template, self.status.collision_count);
        let mut template = self.p.template.clone();
        let labels = template.metadata.get_or_insert_default().labels.get_or_insert_default();
        labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = labels.clone();
        let mut selector = self.p.selector.clone();
        selector.match_labels.get_or_insert_default().insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{}-{hash}", self.p.name);
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.p.namespace.clone()),
                labels: Some(labels),
                owner_references: Some(vec![controller_reference(self.d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: nonzero(self.p.min_ready_seconds),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        set_new_replica_set_annotations(self.d, &mut rs, revision);
        set_replicas_annotations(&mut rs, self.p.replicas, self.p.replicas + self.p.max_surge);
        self.slots.push(Slot { original: None, rs });
        let n = self.slots.len() - 1;
        self.new = Some(n);
        let replicas = self.new_rs_new_replicas(n);
        self.slots[n].rs.spec.get_or_insert_default().replicas = Some(replicas);
        self.revision = Some(revision.to_string());
        if self.has_deadline() {
            let message = format!("Created new replica set {name:?}");
            set_condition(&mut self.status, new_condition(PROGRESSING, "True", reason::NEW_RS_CREATED, message, &self.now));
        }
    }

    /// Kubernetes' `NewRSNewReplicas`: how big the new RS may be now.
    fn new_rs_new_replicas(&self, n: usize) -> i32 {
        let current = spec_replicas(self.rs(n));
        match self.p.strategy {
            Strategy::Recreate => self.p.replicas,
            Strategy::RollingUpdate => {
                let max_total = self.p.replicas + self.p.max_surge;
                let total = self.total_spec();
                if total >= max_total { current } else { current + (max_total - total).min(self.p.replicas - current) }
            }
        }
    }

    /// Kubernetes' `scaleReplicaSetAndRecordEvent`: a no-op at the same size.
    /// True when the size changed.
    fn scale_to(&mut self, i: usize, size: i32) -> bool {
        if spec_replicas(self.rs(i)) == size {
            return false;
        }
        self.resize(i, size);
        true
    }

    /// Kubernetes' `scaleReplicaSet`: sets the size and the desired/max
    /// annotations when either is out of date.
    fn resize(&mut self, i: usize, size: i32) {
        let (desired, max) = (self.p.replicas, self.p.replicas + self.p.max_surge);
        let rs = &mut self.slots[i].rs;
        let resized = spec_replicas(rs) != size;
        rs.spec.get_or_insert_default().replicas = Some(size);
        if set_replicas_annotations(rs, desired, max) || resized {
            self.touch(i);
        }
    }

    /// Kubernetes' `isScalingEvent`: an active ReplicaSet was sized for
    /// another `spec.replicas`.
    fn is_scaling_event(&self) -> bool {
        self.slots
            .iter()
            .filter(|s| spec_replicas(&s.rs) > 0)
            .any(|s| int_annotation(&s.rs, DESIRED_REPLICAS).is_some_and(|d| d != self.p.replicas))
    }

    /// Kubernetes' `IsSaturated`: the new RS has every replica, available.
    fn is_saturated(&self) -> bool {
        self.new.is_some_and(|n| {
            let rs = self.rs(n);
            spec_replicas(rs) == self.p.replicas
                && int_annotation(rs, DESIRED_REPLICAS) == Some(self.p.replicas)
                && available_replicas(rs) == self.p.replicas
        })
    }

    /// Kubernetes' `scale`: a scaling event or a paused Deployment. One active
    /// ReplicaSet takes the whole size; otherwise a rolling Deployment spreads
    /// the change over its active ReplicaSets in proportion to their sizes
    /// (so neither a scale-up nor a scale-down hastens the rollout).
    fn scale(&mut self) {
        if let Some(i) = self.active_or_latest() {
            self.scale_to(i, self.p.replicas);
            return;
        }
        if self.is_saturated() {
            for i in self.active_old() {
                self.scale_to(i, 0);
            }
            return;
        }
        if self.p.strategy != Strategy::RollingUpdate {
            return;
        }
        let mut active: Vec<usize> = (0..self.slots.len()).filter(|i| spec_replicas(self.rs(*i)) > 0).collect();
        let current: i32 = active.iter().map(|i| spec_replicas(self.rs(*i))).sum();
        let allowed = if self.p.replicas > 0 { self.p.replicas + self.p.max_surge } else { 0 };
        let to_add = allowed - current;
        // Bigger first; at equal size, scale newer ones up and older ones down first.
        active.sort_by(|a, b| {
            let (a, b) = (self.rs(*a), self.rs(*b));
            let by_age = if to_add > 0 { by_creation(b, a) } else { by_creation(a, b) };
            spec_replicas(b).cmp(&spec_replicas(a)).then(by_age)
        });
        let mut added = 0;
        let mut sizes = Vec::with_capacity(active.len());
        for i in &active {
            let proportion = if to_add != 0 { self.proportion(*i, to_add, added) } else { 0 };
            sizes.push(spec_replicas(self.rs(*i)) + proportion);
            added += proportion;
        }
        if let Some(first) = sizes.first_mut()
            && to_add != 0
        {
            // Rounding leftovers go to the biggest.
            *first = (*first + to_add - added).max(0);
        }
        for (i, size) in active.into_iter().zip(sizes) {
            self.resize(i, size);
        }
    }

    /// Kubernetes' `FindActiveOrLatest`: the only active ReplicaSet, or with
    /// none active the new (else newest) one; None when several are active.
    fn active_or_latest(&self) -> Option<usize> {
        let mut old = self.old();
        old.sort_by(|a, b| by_creation(self.rs(*b), self.rs(*a)));
        let active: Vec<usize> = old.iter().copied().chain(self.new).filter(|i| spec_replicas(self.rs(*i)) > 0).collect();
        match active.as_slice() {
            [] => self.new.or(old.first().copied()),
            [only] => Some(*only),
            _ => None,
        }
    }

    /// Kubernetes' `GetProportion`: this ReplicaSet's share of `to_add`
    /// (negative to remove), never beyond what is left to hand out.
    fn proportion(&self, i: usize, to_add: i32, added: i32) -> i32 {
        let rs = self.rs(i);
        if spec_replicas(rs) == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 { fraction.min(allowed) } else { fraction.max(allowed) }
    }

    /// Kubernetes' `getReplicaSetFraction`: the RS's size rescaled from the
    /// Deployment size it was made for (`max-replicas`) to the current one.
    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        let size = spec_replicas(rs);
        if self.p.replicas == 0 {
            return -size;
        }
        let deployment_replicas = self.p.replicas + self.p.max_surge;
        let annotated = int_annotation(rs, MAX_REPLICAS).unwrap_or_else(|| count(self.status.replicas));
        if annotated == 0 {
            return 0;
        }
        let scaled = (f64::from(size) * f64::from(deployment_replicas) / f64::from(annotated)).round();
        scaled as i32 - size
    }

    /// Kubernetes' `rolloutRolling`: scale the new RS up if possible, else
    /// old ones down; once complete, prune history.
    fn rollout_rolling(&mut self) {
        self.sync_revision(true);
        if self.reconcile_new() || self.reconcile_old() {
            return;
        }
        if deployment_complete(&self.p, self.d.status.as_ref().unwrap_or(&DeploymentStatus::default())) {
            self.cleanup();
        }
    }

    /// Kubernetes' `reconcileNewReplicaSet`; true when it scaled.
    fn reconcile_new(&mut self) -> bool {
        let Some(n) = self.new else { return false };
        let current = spec_replicas(self.rs(n));
        if current == self.p.replicas {
            return false;
        }
        if current > self.p.replicas {
            return self.scale_to(n, self.p.replicas);
        }
        let target = self.new_rs_new_replicas(n);
        self.scale_to(n, target)
    }

    /// Kubernetes' `reconcileOldReplicaSets`: old replicas may go as far as
    /// `replicas - maxUnavailable` stay available, counting the new RS's
    /// unavailable pods against it (so a crashing new template does not eat
    /// the old pods). True when it scaled.
    fn reconcile_old(&mut self) -> bool {
        let Some(n) = self.new else { return false };
        let old = self.active_old();
        if old.iter().map(|i| spec_replicas(self.rs(*i))).sum::<i32>() == 0 {
            return false;
        }
        let min_available = self.p.replicas - self.p.max_unavailable;
        let new_unavailable = spec_replicas(self.rs(n)) - lasting_available(self.rs(n));
        let max_scaled_down = self.total_spec() - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        let cleaned = self.cleanup_unhealthy_replicas(&old, max_scaled_down);
        let scaled = self.scale_down_old_for_rolling_update(&old);
        cleaned + scaled > 0
    }

    /// Kubernetes' `cleanupUnhealthyReplicas`: unavailable old replicas go
    /// first, oldest RS first; removing them costs no availability, and left
    /// alone they could block the rollout.
    fn cleanup_unhealthy_replicas(&mut self, old: &[usize], max: i32) -> i32 {
        let mut total = 0;
        for i in self.sorted_by_creation(old.to_vec()) {
            if total >= max {
                break;
            }
            let size = spec_replicas(self.rs(i));
            let unhealthy = size - lasting_available(self.rs(i));
            if size == 0 || unhealthy <= 0 {
                continue;
            }
            let n = unhealthy.min(max - total);
            self.scale_to(i, size - n);
            total += n;
        }
        total
    }

    /// Kubernetes' `scaleDownOldReplicaSetsForRollingUpdate`: oldest first,
    /// by no more than the available pods above `replicas - maxUnavailable`.
    fn scale_down_old_for_rolling_update(&mut self, old: &[usize]) -> i32 {
        let min_available = self.p.replicas - self.p.max_unavailable;
        let available: i32 = self.slots.iter().map(|s| lasting_available(&s.rs)).sum();
        if available <= min_available {
            return 0;
        }
        let want = available - min_available;
        let mut total = 0;
        for i in self.sorted_by_creation(old.to_vec()) {
            if total >= want {
                break;
            }
            let size = spec_replicas(self.rs(i));
            if size == 0 {
                continue;
            }
            let n = size.min(want - total);
            self.scale_to(i, size - n);
            total += n;
        }
        total
    }

    /// Kubernetes' `rolloutRecreate`: every old RS to 0, then wait until no
    /// old pod is left, then the new RS at full size.
    fn rollout_recreate(&mut self, pods_by_rs: &HashMap<String, usize>) {
        let mut scaled = false;
        for i in self.active_old() {
            scaled |= self.scale_to(i, 0);
        }
        if scaled || self.old_pods_running(pods_by_rs) {
            return;
        }
        self.sync_revision(true);
        if let Some(n) = self.new {
            self.scale_to(n, self.p.replicas);
        }
        if deployment_complete(&self.p, self.d.status.as_ref().unwrap_or(&DeploymentStatus::default())) {
            self.cleanup();
        }
    }

    /// Kubernetes' `oldPodsRunning`: an old RS still reports pods, or an
    /// unfinished pod of one is still in the cache.
    fn old_pods_running(&self, pods_by_rs: &HashMap<String, usize>) -> bool {
        if self.old().iter().any(|i| status_replicas(self.rs(*i)) > 0) {
            return true;
        }
        let new_uid = self.new.and_then(|n| self.rs(n).metadata.uid.as_deref());
        pods_by_rs.iter().any(|(uid, pods)| *pods > 0 && Some(uid.as_str()) != new_uid)
    }

    /// Kubernetes' `cleanupDeployment`: keeps `revisionHistoryLimit` old
    /// ReplicaSets, deleting the lowest revisions beyond it; ones that still
    /// have pods, lag their spec, are going anyway or changed this pass stay.
    fn cleanup(&mut self) {
        let Some(limit) = self.p.history_limit else { return };
        let mut cleanable: Vec<usize> = self.old().into_iter().filter(|i| self.rs(*i).metadata.deletion_timestamp.is_none()).collect();
        let excess = cleanable.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return;
        }
        cleanable.sort_by(|a, b| {
            let (a, b) = (self.rs(*a), self.rs(*b));
            match (revision(a), revision(b)) {
                (Ok(ra), Ok(rb)) if ra != rb => ra.cmp(&rb),
                _ => by_creation(a, b),
            }
        });
        for i in cleanable.into_iter().take(excess as usize) {
            let rs = self.rs(i);
            let lagging = rs.metadata.generation.unwrap_or(0) > rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if status_replicas(rs) != 0 || spec_replicas(rs) != 0 || lagging || self.touched.contains(&i) {
                continue;
            }
            self.deletes.push(i);
        }
    }

    /// Kubernetes' `calculateStatus`: counts from the ReplicaSets and the
    /// Available condition.
    fn calculate_status(&self) -> DeploymentStatus {
        let all = || self.slots.iter().map(|s| &s.rs);
        let available: i32 = all().map(available_replicas).sum();
        // Spec, not status: a scale-up counts as unavailable until its pods are.
        let unavailable = (self.total_spec() - available).max(0);
        let mut status = DeploymentStatus {
            observed_generation: Some(self.p.generation).filter(|g| *g != 0),
            replicas: nonzero(all().map(status_replicas).sum()),
            updated_replicas: nonzero(self.new.map_or(0, |n| status_replicas(self.rs(n)))),
            ready_replicas: nonzero(all().map(ready_replicas).sum()),
            available_replicas: nonzero(available),
            unavailable_replicas: nonzero(unavailable),
            collision_count: self.status.collision_count,
            conditions: self.status.conditions.clone(),
            terminating_replicas: None,
        };
        let condition = if available >= self.p.replicas - self.p.max_unavailable {
            new_condition(AVAILABLE, "True", reason::MIN_AVAILABLE, "Deployment has minimum availability.".into(), &self.now)
        } else {
            new_condition(AVAILABLE, "False", reason::MIN_UNAVAILABLE, "Deployment does not have minimum availability.".into(), &self.now)
        };
        set_condition(&mut status, condition);
        status
    }

    /// Kubernetes' `syncRolloutStatus`: the status plus the Progressing
    /// condition (complete, progressing, or past its deadline) and
    /// ReplicaSet failures.
    fn rollout_status(&self) -> DeploymentStatus {
        let mut status = self.calculate_status();
        let Some(deadline) = self.p.progress_deadline else {
            remove_condition(&mut status, PROGRESSING);
            return self.with_replica_failures(status);
        };
        let current = get_condition(&self.status, PROGRESSING);
        let subject = match self.new {
            Some(n) => format!("ReplicaSet {:?}", self.rs(n).metadata.name.as_deref().unwrap_or_default()),
            None => format!("Deployment {:?}", self.p.name),
        };
        let already_complete = count(status.replicas) == count(status.updated_replicas)
            && current.is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        if !already_complete {
            if deployment_complete(&self.p, &status) {
                let message = format!("{subject} has successfully progressed.");
                set_condition(&mut status, new_condition(PROGRESSING, "True", reason::NEW_RS_AVAILABLE, message, &self.now));
            } else if deployment_progressing(&self.status, &status) {
                // Progress refreshes lastUpdateTime even at the same reason,
                // which set_condition would not; a True condition keeps its
                // transition time.
                let mut condition = new_condition(PROGRESSING, "True", reason::RS_UPDATED, format!("{subject} is progressing."), &self.now);
                if let Some(current) = current {
                    if current.status == "True" {
                        condition.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, PROGRESSING);
                }
                set_condition(&mut status, condition);
            } else if self.timed_out(&status, deadline) {
                let message = format!("{subject} has timed out progressing.");
                set_condition(&mut status, new_condition(PROGRESSING, "False", reason::TIMED_OUT, message, &self.now));
            }
        }
        self.with_replica_failures(status)
    }

    /// Kubernetes' `DeploymentTimedOut`: no progress reported within the deadline.
    fn timed_out(&self, status: &DeploymentStatus, deadline: i32) -> bool {
        let Some(condition) = get_condition(status, PROGRESSING) else { return false };
        match condition.reason.as_deref() {
            Some(reason::NEW_RS_AVAILABLE) => false,
            Some(reason::TIMED_OUT) => true,
            _ => condition.last_update_time.as_ref().is_some_and(|t| t.0.as_second() + i64::from(deadline) < self.now.0.as_second()),
        }
    }

    /// A ReplicaFailure condition of the new RS (else of any) becomes the Deployment's.
    fn with_replica_failures(&self, mut status: DeploymentStatus) -> DeploymentStatus {
        let failure = |rs: &ReplicaSet| {
            rs.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == REPLICA_FAILURE).map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
        };
        let found = self.new.and_then(|n| failure(self.rs(n))).or_else(|| self.slots.iter().find_map(|s| failure(&s.rs)));
        match found {
            Some(condition) => set_condition(&mut status, condition),
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        status
    }

    /// When to look again although nothing changes: at the progress deadline
    /// (Kubernetes' `requeueStuckDeployment`), and while pods wait out
    /// `minReadySeconds`.
    fn requeue(&self, status: &DeploymentStatus) -> Option<Duration> {
        if deployment_complete(&self.p, status) {
            return None;
        }
        let mut after: Option<Duration> = None;
        if let (Some(deadline), Some(current)) = (self.p.progress_deadline, get_condition(&self.status, PROGRESSING))
            && current.reason.as_deref() != Some(reason::TIMED_OUT)
            && let Some(updated) = &current.last_update_time
        {
            let remaining_ms = updated.0.as_millisecond() + i64::from(deadline) * 1000 - self.now.0.as_millisecond();
            // A second past the deadline, so the check sees it passed.
            let wait = if remaining_ms < 1000 { Duration::from_secs(1) } else { Duration::from_millis(remaining_ms as u64 + 1000) };
            after = Some(wait);
        }
        if self.p.min_ready_seconds > 0 {
            let recheck = Duration::from_secs(self.p.min_ready_seconds.clamp(1, 5) as u64);
            after = Some(after.map_or(recheck, |a| a.min(recheck)));
        }
        after
    }

    fn finish(self, mode: Mode) -> Plan {
        let status = match mode {
            Mode::Scale => self.calculate_status(),
            Mode::Rollout => self.rollout_status(),
        };
        let requeue = if mode == Mode::Rollout { self.requeue(&status) } else { None };
        let mut writes = Vec::new();
        let scaled_message = |name: &str, from: i32, to: i32| {
            let direction = if to > from { "up" } else { "down" };
            format!("Scaled {direction} replica set {name} from {from} to {to}")
        };
        if let Some(slot) = self.slots.iter().find(|s| s.original.is_none()) {
            let to = spec_replicas(&slot.rs);
            let event = (to > 0).then(|| scaled_message(slot.rs.metadata.name.as_deref().unwrap_or_default(), 0, to));
            writes.push(Write::Create { rs: slot.rs.clone(), event });
        }
        for &i in &self.touched {
            let (Some(original), rs) = (&self.slots[i].original, &self.slots[i].rs) else { continue };
            let (from, to) = (spec_replicas(original), spec_replicas(rs));
            let event = (from != to).then(|| scaled_message(rs.metadata.name.as_deref().unwrap_or_default(), from, to));
            writes.push(Write::Update { rs: rs.clone(), event });
        }
        for &i in &self.deletes {
            let meta = &self.rs(i).metadata;
            writes.push(Write::Delete {
                name: meta.name.clone().unwrap_or_default(),
                uid: meta.uid.clone().unwrap_or_default(),
                resource_version: meta.resource_version.clone().unwrap_or_default(),
            });
        }
        let mut updated = self.d.clone();
        if let Some(revision) = &self.revision {
            updated.metadata.annotations.get_or_insert_default().insert(REVISION.into(), revision.clone());
        }
        updated.status = Some(status);
        let changed = updated.status != self.d.status || updated.metadata.annotations != self.d.metadata.annotations;
        Plan { writes, deployment: changed.then_some(updated), requeue }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-03-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn at(secs_after_now: i64) -> String {
        Timestamp::from_second(now().as_second() + secs_after_now).unwrap().to_string()
    }

    fn template(image: &str) -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}})
    }

    /// A RollingUpdate Deployment `web` with `replicas`, as the API server
    /// defaults it; `extra` is merged into `spec`.
    fn deployment(replicas: i32, image: &str, extra: Value) -> Deployment {
        let mut d = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 2, "resourceVersion": "10",
                         "annotations": {"kubernetes.io/change-cause": "set image", LAST_APPLIED: "{}"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template(image),
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
            },
            "status": {"observedGeneration": 1},
        });
        for (k, v) in extra.as_object().unwrap() {
            d["spec"][k] = v.clone();
        }
        serde_json::from_value(d).unwrap()
    }

    /// A ReplicaSet of `d` for `image` at `revision`, created `age` seconds
    /// before now, with `spec` replicas of which `available` are available.
    fn replica_set(d: &Deployment, image: &str, revision: i64, age: i64, spec: i32, available: i32) -> ReplicaSet {
        let mut t = serde_json::to_value(&d.spec.as_ref().unwrap().template).unwrap();
        t["spec"]["containers"][0]["image"] = json!(image);
        let t: PodTemplateSpec = serde_json::from_value(t).unwrap();
        let hash = pod_template_hash(&t, None);
        let mut t = serde_json::to_value(t).unwrap();
        t["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
        let desired = d.spec.as_ref().unwrap().replicas.unwrap();
        serde_json::from_value(json!({
            "metadata": {
                "name": format!("web-{hash}"), "namespace": "default", "uid": format!("rs-{image}"), "resourceVersion": "5",
                "generation": 1, "creationTimestamp": at(-age),
                "labels": {"app": "web", POD_TEMPLATE_HASH: hash},
                "annotations": {REVISION: revision.to_string(), DESIRED_REPLICAS: desired.to_string()},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid", "controller": true}],
            },
            "spec": {"replicas": spec, "selector": {"matchLabels": {"app": "web", POD_TEMPLATE_HASH: hash}}, "template": t},
            "status": {"replicas": spec, "readyReplicas": available, "availableReplicas": available, "observedGeneration": 1},
        }))
        .unwrap()
    }

    fn plan_of(d: &Deployment, rss: &[ReplicaSet]) -> Plan {
        plan(d, rss.to_vec(), &HashMap::new(), now()).unwrap()
    }

    /// Every ReplicaSet's size after the plan's writes, by image.
    fn sizes(rss: &[ReplicaSet], plan: &Plan) -> BTreeMap<String, i32> {
        let image = |rs: &ReplicaSet| {
            rs.spec.as_ref().unwrap().template.as_ref().unwrap().spec.as_ref().unwrap().containers[0].image.clone().unwrap()
        };
        let mut out: BTreeMap<String, i32> = rss.iter().map(|rs| (image(rs), spec_replicas(rs))).collect();
        for w in &plan.writes {
            if let Write::Create { rs, .. } | Write::Update { rs, .. } = w {
                out.insert(image(rs), spec_replicas(rs));
            }
        }
        out
    }

    fn events(plan: &Plan) -> Vec<String> {
        plan.writes
            .iter()
            .filter_map(|w| match w {
                Write::Create { event, .. } | Write::Update { event, .. } => event.clone(),
                Write::Delete { .. } => None,
            })
            .collect()
    }

    fn condition<'a>(d: &'a Deployment, type_: &str) -> &'a DeploymentCondition {
        get_condition(d.status.as_ref().unwrap(), type_).unwrap_or_else(|| panic!("no {type_} condition"))
    }

    // --- hashing ---------------------------------------------------------

    #[test]
    fn fnv1a_matches_go_hash_fnv_reference_values() {
        let hash = |s: &str| {
            let mut h = Fnv1a32::default();
            h.write(s.as_bytes());
            h.0
        };
        assert_eq!(hash(""), 0x811c_9dc5);
        assert_eq!(hash("a"), 0xe40c_292c);
        assert_eq!(hash("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn safe_encoding_maps_digits_like_kubernetes() {
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn template_hash_is_stable_and_uses_only_the_safe_alphabet() {
        let t: PodTemplateSpec = serde_json::from_value(template("nginx:1")).unwrap();
        let hash = pod_template_hash(&t, None);
        assert_eq!(hash, pod_template_hash(&t.clone(), None));
        assert!(!hash.is_empty() && hash.len() <= 10, "{hash}");
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)), "{hash}");
        // Field order and null/empty fields do not change the hash.
        let reordered: PodTemplateSpec = serde_json::from_value(json!({
            "spec": {"containers": [{"image": "nginx:1", "name": "web"}], "volumes": []},
            "metadata": {"labels": {"app": "web"}, "creationTimestamp": null},
        }))
        .unwrap();
        assert_eq!(pod_template_hash(&reordered, None), hash);
        let other: PodTemplateSpec = serde_json::from_value(template("nginx:2")).unwrap();
        assert_ne!(pod_template_hash(&other, None), hash);
    }

    #[test]
    fn collision_count_changes_the_hash_only_when_non_zero() {
        let t: PodTemplateSpec = serde_json::from_value(template("nginx:1")).unwrap();
        assert_eq!(pod_template_hash(&t, Some(0)), pod_template_hash(&t, None));
        assert_ne!(pod_template_hash(&t, Some(1)), pod_template_hash(&t, None));
        assert_ne!(pod_template_hash(&t, Some(1)), pod_template_hash(&t, Some(2)));
    }

    #[test]
    fn template_equality_ignores_the_hash_label_and_empty_fields() {
        let a: PodTemplateSpec = serde_json::from_value(template("nginx:1")).unwrap();
        let mut labelled = template("nginx:1");
        labelled["metadata"]["labels"][POD_TEMPLATE_HASH] = json!("abc");
        labelled["metadata"]["creationTimestamp"] = Value::Null;
        assert!(equal_ignore_hash(&a, &serde_json::from_value(labelled).unwrap()));
        // A template whose only label was the hash equals one without labels.
        let bare: PodTemplateSpec = serde_json::from_value(json!({"spec": {"containers": [{"name": "web", "image": "x"}]}})).unwrap();
        let hashed = json!({"metadata": {"labels": {POD_TEMPLATE_HASH: "abc"}}, "spec": {"containers": [{"name": "web", "image": "x"}]}});
        assert!(equal_ignore_hash(&bare, &serde_json::from_value(hashed).unwrap()));
        assert!(!equal_ignore_hash(&a, &serde_json::from_value(template("nginx:2")).unwrap()));
    }

    // --- fenceposts ------------------------------------------------------

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 10).unwrap(), (3, 2));
        assert_eq!(resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 3).unwrap(), (1, 0));
        assert_eq!(resolve_fenceposts(None, None, 4).unwrap(), (1, 1), "defaults are 25%/25%");
        assert_eq!(resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 3).unwrap(), (2, 0));
        assert!(resolve_fenceposts(Some(&pct("25")), None, 4).is_err(), "a string must be a percentage");
    }

    #[test]
    fn when_both_fenceposts_resolve_to_zero_one_pod_may_be_unavailable() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(resolve_fenceposts(Some(&pct("0%")), Some(&pct("10%")), 5).unwrap(), (0, 1));
        let d = deployment(0, "v1", json!({}));
        let p = Params::of(&d).unwrap();
        assert_eq!((p.max_surge, p.max_unavailable), (0, 0), "nothing may be unavailable of zero replicas");
        let d = deployment(2, "v1", json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 5}}}));
        assert_eq!(Params::of(&d).unwrap().max_unavailable, 2, "maxUnavailable is capped at replicas");
    }

    // --- creating the new ReplicaSet ---------------------------------------

    #[test]
    fn first_sync_creates_a_hash_named_replica_set_owned_by_the_deployment() {
        let d = deployment(3, "v1", json!({"minReadySeconds": 5}));
        let plan = plan_of(&d, &[]);
        let [Write::Create { rs, event }] = plan.writes.as_slice() else { panic!("{:?}", plan.writes) };
        let hash = pod_template_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(rs.metadata.name.as_deref(), Some(format!("web-{hash}").as_str()));
        let labels = rs.metadata.labels.as_ref().unwrap();
        assert_eq!(labels.get(POD_TEMPLATE_HASH), Some(&hash));
        assert_eq!(labels.get("app").map(String::as_str), Some("web"));
        let spec = rs.spec.as_ref().unwrap();
        assert_eq!(spec.selector.match_labels.as_ref().unwrap().get(POD_TEMPLATE_HASH), Some(&hash));
        assert_eq!(spec.template.as_ref().unwrap().metadata.as_ref().unwrap().labels.as_ref().unwrap().get(POD_TEMPLATE_HASH), Some(&hash));
        assert_eq!(spec.min_ready_seconds, Some(5));
        // 3 replicas, 25% surge = 1: all 3 fit under 4, nothing old to count.
        assert_eq!(spec.replicas, Some(3));
        let owner = controller_of(&rs.metadata).unwrap();
        assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.block_owner_deletion), ("Deployment", "d-uid", Some(true)));
        let annotations = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.get(REVISION).map(String::as_str), Some("1"));
        assert_eq!(annotations.get(DESIRED_REPLICAS).map(String::as_str), Some("3"));
        assert_eq!(annotations.get(MAX_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(annotations.get("kubernetes.io/change-cause").map(String::as_str), Some("set image"));
        assert!(!annotations.contains_key(LAST_APPLIED), "kubectl's last-applied stays on the deployment");
        assert_eq!(event.as_deref(), Some(format!("Scaled up replica set web-{hash} from 0 to 3").as_str()));

        let updated = plan.deployment.expect("status and revision change");
        assert_eq!(updated.metadata.annotations.as_ref().unwrap().get(REVISION).map(String::as_str), Some("1"));
        let progressing = condition(&updated, PROGRESSING);
        assert_eq!(progressing.reason.as_deref(), Some(reason::NEW_RS_CREATED));
        assert_eq!(progressing.message.as_deref(), Some(format!("Created new replica set \"web-{hash}\"").as_str()));
        assert_eq!(updated.status.as_ref().unwrap().observed_generation, Some(2));
    }

    #[test]
    fn collision_count_gives_the_new_replica_set_another_name() {
        let mut d = deployment(1, "v1", json!({}));
        let plain = match &plan_of(&d, &[]).writes[0] {
            Write::Create { rs, .. } => rs.metadata.name.clone(),
            w => panic!("{w:?}"),
        };
        d.status.as_mut().unwrap().collision_count = Some(1);
        let bumped = match &plan_of(&d, &[]).writes[0] {
            Write::Create { rs, .. } => rs.metadata.name.clone(),
            w => panic!("{w:?}"),
        };
        assert_ne!(plain, bumped);
    }

    #[test]
    fn a_create_that_finds_its_own_replica_set_is_not_a_collision() {
        let d = deployment(3, "v1", json!({}));
        let ours = replica_set(&d, "v1", 1, 10, 3, 3);
        assert!(is_current_replica_set_of(&d, &ours));
        let other_template = replica_set(&d, "v0", 1, 10, 3, 3);
        assert!(!is_current_replica_set_of(&d, &other_template));
        let mut someone_elses = ours.clone();
        someone_elses.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        assert!(!is_current_replica_set_of(&d, &someone_elses));
    }

    // --- rolling update ------------------------------------------------------

    #[test]
    fn rolling_update_creates_the_new_replica_set_within_max_surge() {
        // Kubernetes' worked example: 10 replicas, maxSurge 3, maxUnavailable 2.
        let d = deployment(10, "v2", json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}}));
        let old = replica_set(&d, "v1", 1, 100, 10, 10);
        let plan = plan_of(&d, std::slice::from_ref(&old));
        // New RS starts at 3 (13 total); its 3 unavailable pods are counted,
        // so old may lose 13 - 8 - 3 = 2.
        assert_eq!(sizes(&[old], &plan), BTreeMap::from([("v1".into(), 8), ("v2".into(), 3)]));
        assert!(
            events(&plan).iter().any(|e| e == &format!("Scaled down replica set {} from 10 to 8", name_of(&plan, "v1"))),
            "{:?}",
            events(&plan)
        );
    }

    fn name_of(plan: &Plan, image: &str) -> String {
        plan.writes
            .iter()
            .find_map(|w| match w {
                Write::Create { rs, .. } | Write::Update { rs, .. }
                    if rs.spec.as_ref()?.template.as_ref()?.spec.as_ref()?.containers[0].image.as_deref() == Some(image) =>
                {
                    rs.metadata.name.clone()
                }
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn rolling_update_scales_the_new_replica_set_up_before_touching_old_ones() {
        let d = deployment(4, "v2", json!({}));
        // maxSurge 1: 4 old + 1 new is full, so old must shrink before new grows.
        let old = replica_set(&d, "v1", 1, 100, 3, 3);
        let new = replica_set(&d, "v2", 2, 10, 1, 1);
        let plan = plan_of(&d, &[old.clone(), new.clone()]);
        assert_eq!(sizes(&[old, new], &plan), BTreeMap::from([("v1".into(), 3), ("v2".into(), 2)]));
        assert_eq!(plan.writes.len(), 1, "a pass that scales up does not also scale down");
    }

    #[test]
    fn unhealthy_old_replicas_are_removed_first() {
        let d = deployment(4, "v2", json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}}));
        // Two old generations; the older one has 2 of its 2 pods unavailable.
        let oldest = replica_set(&d, "v0", 1, 200, 2, 0);
        let old = replica_set(&d, "v1", 2, 100, 2, 2);
        let new = replica_set(&d, "v2", 3, 10, 0, 0);
        let plan = plan_of(&d, &[oldest.clone(), old.clone(), new.clone()]);
        // 4 total - 3 min available - 0 new unavailable = 1 may go: an unhealthy one.
        assert_eq!(sizes(&[oldest, old, new], &plan), BTreeMap::from([("v0".into(), 1), ("v1".into(), 2), ("v2".into(), 0)]));
    }

    /// The ReplicaSet controller's side of a simulated rollout: pods follow
    /// `spec.replicas`, and at most one new pod per step becomes available.
    fn replica_set_controller_step(rss: &mut [ReplicaSet]) {
        for rs in rss.iter_mut() {
            let spec = spec_replicas(rs);
            let status = rs.status.get_or_insert_default();
            let available = status.available_replicas.unwrap_or(0);
            let next = if available < spec { available + 1 } else { spec };
            status.replicas = spec;
            status.available_replicas = Some(next);
            status.ready_replicas = Some(next);
        }
    }

    fn apply(rss: &mut Vec<ReplicaSet>, d: &mut Deployment, plan: Plan) {
        for w in plan.writes {
            match w {
                Write::Create { mut rs, .. } => {
                    let n = rss.len();
                    rs.metadata.uid = Some(format!("created-{n}"));
                    rs.metadata.creation_timestamp = Some(Time(Timestamp::from_second(now().as_second() + n as i64).unwrap()));
                    rss.push(rs);
                }
                Write::Update { rs, .. } => {
                    let slot = rss.iter_mut().find(|r| r.metadata.name == rs.metadata.name).unwrap();
                    slot.metadata.annotations = rs.metadata.annotations;
                    slot.spec = rs.spec;
                }
                Write::Delete { name, .. } => rss.retain(|r| r.metadata.name.as_deref() != Some(name.as_str())),
            }
        }
        if let Some(updated) = plan.deployment {
            *d = updated;
        }
    }

    #[test]
    fn max_unavailable_zero_never_plans_fewer_available_pods_than_replicas() {
        for (replicas, surge) in [(3, json!(1)), (3, json!("25%")), (5, json!(2)), (1, json!(1))] {
            let mut d = deployment(
                replicas,
                "v2",
                json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": 0}}}),
            );
            let mut rss = vec![replica_set(&d, "v1", 1, 100, replicas, replicas)];
            for step in 0..200 {
                // Plan twice before the ReplicaSet controller reacts: a sync
                // on a status that lags the spec must not scale down again.
                for _ in 0..2 {
                    let plan = plan(&d, rss.clone(), &HashMap::new(), now()).unwrap();
                    apply(&mut rss, &mut d, plan);
                    let lasting: i32 = rss.iter().map(lasting_available).sum();
                    assert!(lasting >= replicas, "step {step}: {lasting} available pods would remain of {replicas}");
                }
                replica_set_controller_step(&mut rss);
                let status = d.status.clone().unwrap_or_default();
                if status.updated_replicas == Some(replicas)
                    && status.available_replicas == Some(replicas)
                    && status.replicas == Some(replicas)
                {
                    break;
                }
            }
            let status = d.status.as_ref().unwrap();
            assert_eq!(
                (status.updated_replicas, status.replicas, status.available_replicas),
                (Some(replicas), Some(replicas), Some(replicas))
            );
            assert_eq!(condition(&d, PROGRESSING).reason.as_deref(), Some(reason::NEW_RS_AVAILABLE));
        }
    }

    #[test]
    fn a_sync_before_the_replica_set_controller_catches_up_does_not_scale_down_twice() {
        let d = deployment(3, "v2", json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}));
        // Old was just scaled 3 -> 2 but still reports 3 available; new has 2, 1 available.
        let mut old = replica_set(&d, "v1", 1, 100, 2, 3);
        old.status.as_mut().unwrap().replicas = 3;
        let new = replica_set(&d, "v2", 2, 10, 2, 1);
        let plan = plan_of(&d, &[old.clone(), new.clone()]);
        assert_eq!(sizes(&[old, new], &plan), BTreeMap::from([("v1".into(), 2), ("v2".into(), 2)]));
    }

    // --- recreate ------------------------------------------------------------

    #[test]
    fn recreate_scales_old_to_zero_and_waits_for_old_pods_before_creating_new() {
        let d = deployment(3, "v2", json!({"strategy": {"type": "Recreate"}}));
        let old = replica_set(&d, "v1", 1, 100, 3, 3);

        let scaled_down = plan_of(&d, std::slice::from_ref(&old));
        assert_eq!(sizes(std::slice::from_ref(&old), &scaled_down), BTreeMap::from([("v1".into(), 0)]));

        // Scaled down, but the RS still reports pods: wait.
        let mut draining = old.clone();
        draining.spec.as_mut().unwrap().replicas = Some(0);
        assert!(plan_of(&d, std::slice::from_ref(&draining)).writes.is_empty());

        // Status caught up, but a terminating pod is still in the cache: wait.
        draining.status.as_mut().unwrap().replicas = 0;
        draining.status.as_mut().unwrap().available_replicas = Some(0);
        let pods = HashMap::from([("rs-v1".to_string(), 1)]);
        assert!(plan(&d, vec![draining.clone()], &pods, now()).unwrap().writes.is_empty());

        // Gone: the new RS comes up at full size.
        let started = plan(&d, vec![draining.clone()], &HashMap::new(), now()).unwrap();
        let [Write::Create { rs, .. }] = started.writes.as_slice() else { panic!("{:?}", started.writes) };
        assert_eq!(spec_replicas(rs), 3);
        assert_eq!(annotation(rs, REVISION), Some("2"));
        assert_eq!(annotation(rs, MAX_REPLICAS), Some("3"), "Recreate has no surge");
    }

    // --- revisions -----------------------------------------------------------

    #[test]
    fn rollout_undo_makes_the_old_replica_set_current_with_a_new_revision_and_history() {
        // kubectl rollout undo copied v1's template back into the deployment.
        let d = deployment(3, "v1", json!({}));
        let v1 = replica_set(&d, "v1", 1, 200, 0, 0);
        let v2 = replica_set(&d, "v2", 2, 100, 3, 3);
        let plan = plan_of(&d, &[v1.clone(), v2.clone()]);
        let rs = plan
            .writes
            .iter()
            .find_map(|w| match w {
                Write::Update { rs, .. } if rs.metadata.name == v1.metadata.name => Some(rs),
                _ => None,
            })
            .expect("v1 is updated");
        assert_eq!(annotation(rs, REVISION), Some("3"));
        assert_eq!(annotation(rs, REVISION_HISTORY), Some("1"));
        assert_eq!(spec_replicas(rs), 1, "v1 starts scaling up within maxSurge");
        let updated = plan.deployment.unwrap();
        assert_eq!(updated.metadata.annotations.as_ref().unwrap().get(REVISION).map(String::as_str), Some("3"));
        assert!(!plan.writes.iter().any(|w| matches!(w, Write::Create { .. })), "undo reuses the old ReplicaSet");

        // Undoing again (to v2, now revision 2) appends to v2's history.
        let mut v2_again = v2.clone();
        v2_again.metadata.annotations.as_mut().unwrap().insert(REVISION_HISTORY.into(), "0".into());
        assert!(set_new_replica_set_annotations(&deployment(3, "v2", json!({})), &mut v2_again, 4));
        assert_eq!(annotation(&v2_again, REVISION), Some("4"));
        assert_eq!(annotation(&v2_again, REVISION_HISTORY), Some("0,2"));
    }

    #[test]
    fn a_current_replica_set_already_at_the_highest_revision_keeps_it() {
        let d = deployment(3, "v2", json!({}));
        let mut v2 = replica_set(&d, "v2", 2, 100, 3, 3);
        copy_annotations(&d, &mut v2);
        v2.metadata.annotations.as_mut().unwrap().insert(MAX_REPLICAS.into(), "4".into());
        assert!(!set_new_replica_set_annotations(&d, &mut v2, 2));
        assert_eq!(annotation(&v2, REVISION), Some("2"));
        assert_eq!(annotation(&v2, REVISION_HISTORY), None);
    }

    #[test]
    fn revision_history_drops_the_oldest_entries_past_its_length_limit() {
        let mut annotations = BTreeMap::from([(REVISION_HISTORY.to_string(), vec!["1234567"; 250].join(","))]);
        append_revision_history(&mut annotations, "99");
        let history = &annotations[REVISION_HISTORY];
        assert!(history.len() <= MAX_REVISION_HISTORY_CHARS);
        assert!(history.ends_with(",99"));
    }

    #[test]
    fn history_cleanup_keeps_revision_history_limit_old_replica_sets() {
        let mut d = deployment(2, "v9", json!({"revisionHistoryLimit": 2}));
        // The rollout is complete: cleanup only runs then.
        d.status = Some(DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..DeploymentStatus::default()
        });
        let mut rss: Vec<ReplicaSet> = (1..=5).map(|r| replica_set(&d, &format!("v{r}"), r, 100 - r, 0, 0)).collect();
        // v2 still has a pod terminating: never deleted while it has pods.
        rss[1].status.as_mut().unwrap().replicas = 1;
        rss.push(replica_set(&d, "v9", 9, 1, 2, 2));
        let plan = plan_of(&d, &rss);
        let deleted: Vec<&str> = plan
            .writes
            .iter()
            .filter_map(|w| match w {
                Write::Delete { uid, .. } => Some(uid.as_str()),
                _ => None,
            })
            .collect();
        // 5 old, keep 2: the 3 lowest revisions would go, but v2 has a pod.
        assert_eq!(deleted, vec!["rs-v1", "rs-v3"]);
        let Write::Delete { resource_version, .. } = plan.writes.iter().find(|w| matches!(w, Write::Delete { .. })).unwrap() else {
            unreachable!()
        };
        assert_eq!(resource_version, "5", "deletes are conditional on the version we looked at");
    }

    // --- scaling and pausing -------------------------------------------------

    #[test]
    fn a_paused_deployment_scales_but_does_not_roll_out() {
        let mut d = deployment(5, "v2", json!({"paused": true}));
        d.status.as_mut().unwrap().replicas = Some(3);
        let v1 = replica_set(&d, "v1", 1, 100, 3, 3);
        let plan = plan_of(&d, std::slice::from_ref(&v1));
        assert!(!plan.writes.iter().any(|w| matches!(w, Write::Create { .. })), "no new ReplicaSet while paused");
        assert_eq!(sizes(std::slice::from_ref(&v1), &plan), BTreeMap::from([("v1".into(), 5)]));
        assert_eq!(events(&plan), vec![format!("Scaled up replica set {} from 3 to 5", v1.metadata.name.as_deref().unwrap())]);
        let progressing = condition(plan.deployment.as_ref().unwrap(), PROGRESSING);
        assert_eq!((progressing.status.as_str(), progressing.reason.as_deref()), ("Unknown", Some(reason::PAUSED)));
    }

    #[test]
    fn scaling_mid_rollout_is_spread_in_proportion() {
        // Was 10 (max 13); mid-rollout with 8 old + 5 new, scaled to 20 (max 25).
        let mut d =
            deployment(20, "v2", json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 5, "maxUnavailable": 2}}}));
        d.status.as_mut().unwrap().replicas = Some(13);
        let mut old = replica_set(&d, "v1", 1, 100, 8, 8);
        let mut new = replica_set(&d, "v2", 2, 10, 5, 2);
        for rs in [&mut old, &mut new] {
            let a = rs.metadata.annotations.as_mut().unwrap();
            a.insert(DESIRED_REPLICAS.into(), "10".into());
            a.insert(MAX_REPLICAS.into(), "13".into());
        }
        let plan = plan_of(&d, &[old.clone(), new.clone()]);
        let after = sizes(&[old, new], &plan);
        assert_eq!(after.values().sum::<i32>(), 25);
        // 8 * 25/13 = 15.4 -> 15; 5 * 25/13 = 9.6 -> 10.
        assert_eq!(after, BTreeMap::from([("v1".into(), 15), ("v2".into(), 10)]));
        for w in &plan.writes {
            let Write::Update { rs, .. } = w else { panic!("{w:?}") };
            assert_eq!((annotation(rs, DESIRED_REPLICAS), annotation(rs, MAX_REPLICAS)), (Some("20"), Some("25")));
        }
    }

    // --- status ----------------------------------------------------------------

    #[test]
    fn status_counts_replicas_and_reports_minimum_availability() {
        let d = deployment(4, "v2", json!({}));
        let mut old = replica_set(&d, "v1", 1, 100, 2, 2);
        old.status.as_mut().unwrap().ready_replicas = Some(2);
        let mut new = replica_set(&d, "v2", 2, 10, 3, 1);
        new.status.as_mut().unwrap().ready_replicas = Some(2);
        let plan = plan_of(&d, &[old, new]);
        let d2 = plan.deployment.unwrap();
        let s = d2.status.as_ref().unwrap();
        assert_eq!(
            (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas, s.unavailable_replicas),
            (Some(5), Some(3), Some(4), Some(3), Some(2))
        );
        // 3 available >= 4 - 1 (25% of 4).
        let available = condition(&d2, AVAILABLE);
        assert_eq!((available.status.as_str(), available.reason.as_deref()), ("True", Some(reason::MIN_AVAILABLE)));
        assert_eq!(available.message.as_deref(), Some("Deployment has minimum availability."));

        let bad = replica_set(&d, "v2", 2, 10, 4, 2);
        let d3 = plan_of(&d, &[bad]).deployment.unwrap();
        let available = condition(&d3, AVAILABLE);
        assert_eq!((available.status.as_str(), available.reason.as_deref()), ("False", Some(reason::MIN_UNAVAILABLE)));
        assert_eq!(available.message.as_deref(), Some("Deployment does not have minimum availability."));
    }

    #[test]
    fn a_finished_rollout_reports_new_replica_set_available() {
        let mut d = deployment(3, "v2", json!({}));
        let old_condition = new_condition(PROGRESSING, "True", reason::RS_UPDATED, "x".into(), &Time(now()));
        d.status.as_mut().unwrap().conditions = Some(vec![old_condition]);
        let new = replica_set(&d, "v2", 2, 10, 3, 3);
        let name = new.metadata.name.clone().unwrap();
        let d2 = plan_of(&d, &[new]).deployment.unwrap();
        let progressing = condition(&d2, PROGRESSING);
        assert_eq!((progressing.status.as_str(), progressing.reason.as_deref()), ("True", Some(reason::NEW_RS_AVAILABLE)));
        assert_eq!(progressing.message.as_deref(), Some(format!("ReplicaSet \"{name}\" has successfully progressed.").as_str()));
        let s = d2.status.as_ref().unwrap();
        assert_eq!((s.observed_generation, s.updated_replicas, s.available_replicas), (Some(2), Some(3), Some(3)));
    }

    #[test]
    fn progress_is_reported_and_a_stalled_rollout_times_out() {
        let mut d =
            deployment(3, "v2", json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}));
        let old = replica_set(&d, "v1", 1, 1000, 3, 3);
        let new = replica_set(&d, "v2", 2, 700, 1, 0);
        let name = new.metadata.name.clone().unwrap();
        let stale: Time = serde_json::from_value(json!(at(-601))).unwrap();
        let status = d.status.as_mut().unwrap();
        status.conditions = Some(vec![DeploymentCondition {
            last_update_time: Some(stale.clone()),
            last_transition_time: Some(stale),
            ..new_condition(PROGRESSING, "True", reason::RS_UPDATED, "x".into(), &Time(now()))
        }]);
        status.replicas = Some(4);
        status.updated_replicas = Some(1);
        status.ready_replicas = Some(3);
        status.available_replicas = Some(3);

        // No change in 601 s with a 600 s deadline: timed out.
        let timed_out = plan_of(&d, &[old.clone(), new.clone()]).deployment.unwrap();
        let progressing = condition(&timed_out, PROGRESSING);
        assert_eq!((progressing.status.as_str(), progressing.reason.as_deref()), ("False", Some(reason::TIMED_OUT)));
        assert_eq!(progressing.message.as_deref(), Some(format!("ReplicaSet \"{name}\" has timed out progressing.").as_str()));

        // A newly available pod is progress: the clock restarts.
        let mut ready = new.clone();
        ready.status.as_mut().unwrap().available_replicas = Some(1);
        let plan = plan_of(&d, &[old, ready]);
        let progressing = condition(plan.deployment.as_ref().unwrap(), PROGRESSING);
        assert_eq!((progressing.status.as_str(), progressing.reason.as_deref()), ("True", Some(reason::RS_UPDATED)));
        assert_eq!(progressing.message.as_deref(), Some(format!("ReplicaSet \"{name}\" is progressing.").as_str()));
        assert_eq!(progressing.last_update_time, Some(Time(now())));
    }

    #[test]
    fn an_unchanged_status_is_not_written_and_min_ready_seconds_requeues() {
        let d = deployment(3, "v2", json!({"minReadySeconds": 10}));
        let new = replica_set(&d, "v2", 2, 10, 3, 3);
        let mut d = d;
        let mut rss = vec![new];
        // Let the RS get the deployment's annotations and the status settle.
        for _ in 0..3 {
            let plan = plan_of(&d, &rss);
            apply(&mut rss, &mut d, plan);
        }
        let settled = plan_of(&d, &rss);
        assert!(settled.writes.is_empty() && settled.deployment.is_none(), "{settled:?}");
        assert_eq!(settled.requeue, None, "a complete rollout needs no recheck");

        // Mid-rollout with minReadySeconds, availability is rechecked soon.
        let waiting = replica_set(&d, "v2", 2, 10, 3, 1);
        let plan = plan_of(&d, &[waiting]);
        assert!(plan.requeue.is_some_and(|r| r <= Duration::from_secs(5)), "{:?}", plan.requeue);
    }

    // --- ownership and queueing ------------------------------------------------

    #[test]
    fn orphans_matching_the_selector_are_adopted_and_mismatches_released() {
        let selector = LabelSelector::from_map(&BTreeMap::from([("app".to_string(), "web".to_string())]));
        let d = deployment(1, "v1", json!({}));
        let owned = replica_set(&d, "v1", 1, 10, 1, 1);
        assert_eq!(claim("d-uid", &selector, &owned), Claim::Owned);

        let mut orphan = owned.clone();
        orphan.metadata.owner_references = None;
        assert_eq!(claim("d-uid", &selector, &orphan), Claim::Adopt);
        assert!(selects_orphan(&d, &orphan));
        orphan.metadata.deletion_timestamp = Some(Time(now()));
        assert_eq!(claim("d-uid", &selector, &orphan), Claim::Ignore, "a deleted orphan is not adopted");

        let mut relabelled = owned.clone();
        relabelled.metadata.labels.as_mut().unwrap().insert("app".into(), "other".into());
        assert_eq!(claim("d-uid", &selector, &relabelled), Claim::Release);

        assert_eq!(claim("other-uid", &selector, &owned), Claim::Ignore, "another controller's ReplicaSet is left alone");
    }

    #[test]
    fn a_sync_waits_until_the_cache_shows_its_own_writes() {
        let u = Unobserved::default();
        let key = ObjectKey::new("default", "web");
        u.updated(&key, Kind::ReplicaSet, "web-a", "5");
        u.created(&key, "web-b");
        u.updated(&key, Kind::Deployment, "web", "10");
        fn cache(a: Option<&'static str>, b: Option<&'static str>) -> impl Fn(&str) -> Option<String> {
            move |name| if name == "web-a" { a.map(str::to_string) } else { b.map(str::to_string) }
        }
        assert!(u.waiting(&key, Some("10"), cache(Some("5"), None)));
        assert!(u.waiting(&key, Some("10"), cache(Some("6"), None)), "the created ReplicaSet is not cached yet");
        assert!(u.waiting(&key, Some("10"), cache(Some("6"), Some("1"))), "the status write is not cached yet");
        assert!(!u.waiting(&key, Some("11"), cache(Some("6"), Some("1"))));
        assert!(!u.waiting(&ObjectKey::new("default", "other"), None, cache(None, None)));
    }
}
