//! Node lifecycle (Kubernetes' node lifecycle controller and its taint
//! eviction): notices nodes whose agent went silent, says so, and moves
//! their pods away.
//!
//! - **Health**: a node is healthy while its Lease in `kube-node-lease` (or
//!   its status heartbeat) keeps changing. We time changes by our own clock
//!   when we see them, not by the timestamps inside, so clock skew between
//!   machines cannot make a node look dead or alive. Silent for longer than
//!   `node_monitor_grace_period` → every node condition becomes `Unknown`
//!   ("Kubelet stopped posting node status.") and the node's pods are marked
//!   not Ready at once, so they leave Service endpoints. A node whose agent
//!   reports it not Ready has its pods marked the same way.
//! - **Taints**: Ready=Unknown → `node.kubernetes.io/unreachable`,
//!   Ready=False → `node.kubernetes.io/not-ready`, each as NoSchedule and
//!   NoExecute; removed when the node is Ready again.
//! - **Eviction**: a pod on a node with a NoExecute taint it does not
//!   tolerate is deleted; one that tolerates it for `tolerationSeconds` is
//!   deleted when that runs out (the API server gives every new pod
//!   tolerations for the not-ready and unreachable taints, as Kubernetes'
//!   DefaultTolerationSeconds admission does). Their controllers then
//!   replace them on healthy nodes.

use anyhow::Context;
use hawser_runtime::events::{EventType, Recorder};
use hawser_runtime::{Action, Informer, Informers, ObjectKey, WorkQueue, objects, run_workers};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often node health is checked. Kubernetes checks every 5 s; 1 s keeps
/// the time from a missed deadline to Unknown short at no real cost.
const MONITOR_PERIOD: Duration = Duration::from_secs(1);
/// Conditions an agent reports and that go Unknown with it.
const NODE_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

pub fn start(informers: &Arc<Informers>, config: &super::Config) {
    let controller = Arc::new(NodeLifecycle {
        client: informers.client(),
        nodes: informers.get::<Node>(),
        leases: informers.get::<Lease>(),
        pods: informers.get::<Pod>(),
        heartbeats: Mutex::default(),
        grace: config.node_monitor_grace_period,
        recorder: Recorder::new(informers.client(), "node-controller"),
    });
    let evictions = WorkQueue::<ObjectKey>::new();
    {
        let weak = Arc::downgrade(&controller);
        controller.leases.on_change(move |change| {
            if let (Some(c), Some(lease)) = (weak.upgrade(), change.new)
                && lease.metadata.namespace.as_deref() == Some(NODE_LEASE_NAMESPACE)
            {
                let renewed = lease.spec.as_ref().and_then(|s| s.renew_time.as_ref()).map(|t| t.0.to_string());
                c.observe(lease.metadata.name.as_deref().unwrap_or_default(), "lease", renewed);
            }
        });
    }
    {
        let weak = Arc::downgrade(&controller);
        let evictions = evictions.clone();
        controller.nodes.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            if let Some(node) = change.new {
                c.observe(node.metadata.name.as_deref().unwrap_or_default(), "status", ready_heartbeat(node));
            }
            // Pods must be looked at when their node's NoExecute taints change.
            let old = change.old.map(no_execute_taints).unwrap_or_default();
            let new = change.new.map(no_execute_taints).unwrap_or_default();
            if old != new {
                let node = change.object().metadata.name.clone().unwrap_or_default();
                for pod in c.pods.list() {
                    if node_of(&pod) == Some(node.as_str()) {
                        evictions.add(ObjectKey::of(&*pod));
                    }
                }
            }
        });
    }
    {
        let evictions = evictions.clone();
        controller.pods.on_change(move |change| {
            if change.new.is_some_and(|p| node_of(p).is_some() && p.metadata.deletion_timestamp.is_none()) {
                evictions.add(ObjectKey::of(change.object()));
            }
        });
    }
    let monitor = controller.clone();
    tokio::spawn(async move {
        monitor.nodes.wait_synced().await;
        monitor.leases.wait_synced().await;
        let mut tick = tokio::time::interval(MONITOR_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            monitor.monitor_nodes().await;
        }
    });
    let workers = config.workers;
    tokio::spawn(async move {
        controller.nodes.wait_synced().await;
        controller.pods.wait_synced().await;
        run_workers("taint-eviction", evictions, workers, move |key| {
            let controller = controller.clone();
            async move { controller.evict_if_due(&key).await }
        })
        .await;
    });
}

/// One node's signs of life: source ("lease", "status") → (the last value
/// seen, when we saw it change).
type Heartbeats = HashMap<&'static str, (Option<String>, Instant)>;

struct NodeLifecycle {
    client: kube::Client,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    pods: Informer<Pod>,
    heartbeats: Mutex<HashMap<String, Heartbeats>>,
    grace: Duration,
    recorder: Recorder,
}

impl NodeLifecycle {
    /// Records a heartbeat value; only a change counts as a sign of life.
    fn observe(&self, node: &str, source: &'static str, value: Option<String>) {
        let mut heartbeats = self.heartbeats.lock().unwrap();
        let sources = heartbeats.entry(node.to_string()).or_default();
        match sources.get(source) {
            Some((seen, _)) if *seen == value => {}
            _ => {
                sources.insert(source, (value, Instant::now()));
            }
        }
    }

    /// How long since we last saw the node show a sign of life.
    fn silence(&self, node: &str) -> Duration {
        let mut heartbeats = self.heartbeats.lock().unwrap();
        // A node we never heard from gets a full grace period from now.
        let sources = heartbeats.entry(node.to_string()).or_default();
        let latest = sources.values().map(|(_, at)| *at).max();
        match latest {
            Some(at) => at.elapsed(),
            None => {
                sources.insert("status", (None, Instant::now()));
                Duration::ZERO
            }
        }
    }

    async fn monitor_nodes(&self) {
        let names: Vec<String> = self.nodes.list().iter().filter_map(|n| n.metadata.name.clone()).collect();
        self.heartbeats.lock().unwrap().retain(|node, _| names.contains(node));
        for node in self.nodes.list() {
            let name = node.metadata.name.clone().unwrap_or_default();
            if let Err(e) = self.check_node(&node).await {
                tracing::warn!(node = name, error = format!("{e:#}"), "node health check failed; retrying");
            }
        }
        // A node that is not Ready (an agent reporting False, or Unknown)
        // serves no pod: its Ready pods are marked not ready, so they leave
        // Service endpoints. Kubernetes does this only when it marks a node
        // Unknown; the issue asks for NotReady too. One pass over the pods
        // serves every such node.
        let not_ready: HashSet<String> = self
            .nodes
            .list()
            .iter()
            .filter(|n| ready_status(n).is_some_and(|r| r != "True"))
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        if let Err(e) = self.mark_pods_not_ready(&not_ready).await {
            tracing::warn!(error = format!("{e:#}"), "marking pods of not-ready nodes failed; retrying");
        }
    }

    async fn check_node(&self, node: &Node) -> anyhow::Result<()> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let ready = ready_status(node);
        if self.silence(&name) > self.grace && ready.as_deref() != Some("Unknown") {
            self.mark_unknown(node).await?;
            // The taints follow on the next check, from the new condition.
            return Ok(());
        }
        let desired = desired_taints(node);
        let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        if !same_taints(&current, &desired) {
            let api: Api<Node> = Api::all(self.client.clone());
            let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": desired}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .with_context(|| format!("updating the taints of node {name}"))?;
        }
        Ok(())
    }

    /// Every condition Unknown, then every pod on the node not Ready.
    async fn mark_unknown(&self, node: &Node) -> anyhow::Result<()> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let now = objects::now();
        let mut conditions: Vec<serde_json::Value> = Vec::new();
        for type_ in NODE_CONDITIONS {
            let existing = node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == type_));
            let mut condition = json!({
                "type": type_, "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.", "lastTransitionTime": now,
            });
            match existing {
                Some(c) => condition["lastHeartbeatTime"] = json!(c.last_heartbeat_time),
                None => {
                    condition["lastHeartbeatTime"] = json!(now);
                    condition["message"] = json!("Kubelet never posted node status.");
                }
            }
            conditions.push(condition);
        }
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(json!({"status": {"conditions": conditions}})))
            .await
            .with_context(|| format!("marking node {name} Unknown"))?;
        tracing::warn!(node = name, "node stopped renewing its lease; marked Unknown");
        self.recorder.publish(
            &objects::object_reference(node),
            EventType::Normal,
            "NodeNotReady",
            &format!("Node {name} status is now: NodeNotReady"),
        );
        self.mark_pods_not_ready(&HashSet::from([name])).await
    }

    /// Every Ready pod on one of `nodes` gets Ready=False, so it leaves Service endpoints.
    async fn mark_pods_not_ready(&self, nodes: &HashSet<String>) -> anyhow::Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        for pod in self.pods.list() {
            if node_of(&pod).is_some_and(|n| nodes.contains(n)) && objects::is_pod_ready(&pod) {
                self.mark_pod_not_ready(&pod).await?;
            }
        }
        Ok(())
    }

    async fn mark_pod_not_ready(&self, pod: &Pod) -> anyhow::Result<()> {
        let key = ObjectKey::of(pod);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": objects::now()}]}});
        match api.patch_status(&key.name, &PatchParams::default(), &Patch::Strategic(patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("marking pod {key} not ready")),
        }
    }

    /// Deletes `key` if its node has a NoExecute taint it no longer tolerates;
    /// otherwise looks again when its toleration runs out.
    async fn evict_if_due(&self, key: &ObjectKey) -> anyhow::Result<Action> {
        let Some(pod) = self.pods.get(key).filter(|p| p.metadata.deletion_timestamp.is_none()) else { return Ok(Action::AwaitChange) };
        let Some(node) = node_of(&pod).and_then(|n| self.nodes.get(&ObjectKey::new("", n))) else { return Ok(Action::AwaitChange) };
        let taints = no_execute_taints(&node);
        let Some(due) = eviction_due(&pod, &taints, Timestamp::now()) else { return Ok(Action::AwaitChange) };
        if !due.is_zero() {
            return Ok(Action::RequeueAfter(due));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(pod = %key, node = node.metadata.name.as_deref().unwrap_or_default(), "evicted from a tainted node");
                self.recorder.publish(
                    &objects::object_reference(&*pod),
                    EventType::Normal,
                    "TaintManagerEviction",
                    &format!("Marking for deletion Pod {key}"),
                );
                Ok(Action::AwaitChange)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::AwaitChange),
            Err(e) => Err(e).with_context(|| format!("evicting pod {key}")),
        }
    }
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref().filter(|n| !n.is_empty())
}

fn ready_status(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone())
}

/// The Ready condition's heartbeat: an agent that posts status renews it.
fn ready_heartbeat(node: &Node) -> Option<String> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| c.type_ == "Ready")?.last_heartbeat_time.as_ref().map(|t| t.0.to_string())
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default().into_iter().filter(|t| t.effect == "NoExecute").collect()
}

/// The node's taints with the not-ready/unreachable ones set from its Ready
/// condition (other taints, e.g. an admin's, are kept as they are).
fn desired_taints(node: &Node) -> Vec<Taint> {
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let mut taints: Vec<Taint> = current.iter().filter(|t| t.key != UNREACHABLE && t.key != NOT_READY).cloned().collect();
    let key = match ready_status(node).as_deref() {
        Some("Unknown") => Some(UNREACHABLE),
        Some("False") => Some(NOT_READY),
        // Ready, or never reported: an agent that has not posted status yet
        // is not tainted before its grace period says it is gone.
        _ => None,
    };
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            // Keep the original timeAdded so tolerationSeconds count from when it first happened.
            let kept = current.iter().find(|t| t.key == key && t.effect == effect).cloned();
            taints.push(kept.unwrap_or_else(|| Taint {
                key: key.into(),
                effect: effect.into(),
                value: None,
                time_added: (effect == "NoExecute").then(objects::now),
            }));
        }
    }
    taints
}

fn same_taints(a: &[Taint], b: &[Taint]) -> bool {
    let key = |t: &Taint| (t.key.clone(), t.effect.clone(), t.value.clone());
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// How long until the pod must go because of the node's NoExecute taints:
/// None when it tolerates them all forever, zero when it is due now.
pub fn eviction_due(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Duration> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut due: Option<Duration> = None;
    for taint in taints {
        let Some(toleration) = tolerations.iter().find(|t| objects::tolerates(t, taint)) else { return Some(Duration::ZERO) };
        let Some(seconds) = toleration.toleration_seconds else { continue };
        let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
        let deadline = added.as_second() + seconds.max(0);
        let remaining = Duration::from_secs((deadline - now.as_second()).max(0) as u64);
        due = Some(due.map_or(remaining, |d| d.min(remaining)));
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}})).unwrap()
    }

    fn taint(key: &str, added_secs_ago: i64, now: Timestamp) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(Timestamp::from_second(now.as_second() - added_secs_ago).unwrap())),
        }
    }

    #[test]
    fn a_toleration_counts_from_when_the_taint_was_added() {
        let now = Timestamp::now();
        let p = pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]));
        assert_eq!(eviction_due(&p, &[taint(UNREACHABLE, 10, now)], now), Some(Duration::from_secs(20)));
        assert_eq!(eviction_due(&p, &[taint(UNREACHABLE, 31, now)], now), Some(Duration::ZERO));
    }

    #[test]
    fn toleration_seconds_bound_the_stay_and_none_means_forever() {
        let now = Timestamp::now();
        let own = pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]));
        assert_eq!(eviction_due(&own, &[taint(UNREACHABLE, 0, now)], now), Some(Duration::from_secs(5)));
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_due(&forever, &[taint(UNREACHABLE, 1000, now)], now), None);
    }

    #[test]
    fn an_untolerated_no_execute_taint_evicts_at_once() {
        let now = Timestamp::now();
        let t = Taint { key: "dedicated".into(), effect: "NoExecute".into(), value: Some("db".into()), time_added: None };
        assert_eq!(eviction_due(&pod(json!([])), std::slice::from_ref(&t), now), Some(Duration::ZERO));
        let tolerant = pod(json!([{"key": "dedicated", "operator": "Equal", "value": "db"}]));
        assert_eq!(eviction_due(&tolerant, &[t], now), None);
    }

    #[test]
    fn taints_follow_the_ready_condition_and_keep_other_taints() {
        let node = |status: &str| -> Node {
            serde_json::from_value(json!({
                "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]},
                "status": {"conditions": [{"type": "Ready", "status": status}]}
            }))
            .unwrap()
        };
        let keys = |taints: Vec<Taint>| taints.into_iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>();
        assert_eq!(
            keys(desired_taints(&node("Unknown"))),
            ["dedicated:NoSchedule", "node.kubernetes.io/unreachable:NoSchedule", "node.kubernetes.io/unreachable:NoExecute"]
        );
        assert_eq!(
            keys(desired_taints(&node("False"))),
            ["dedicated:NoSchedule", "node.kubernetes.io/not-ready:NoSchedule", "node.kubernetes.io/not-ready:NoExecute"]
        );
        assert_eq!(keys(desired_taints(&node("True"))), ["dedicated:NoSchedule"]);
    }
}
