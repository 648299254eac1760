//! Per-node accounting: what each node offers and what the pods placed on it
//! (bound, or assumed while their binding is in flight) already take.
//!
//! The informers hold the objects; this cache holds the sums the filters and
//! scores need, kept up to date incrementally so that a scheduling decision
//! is O(nodes) with O(1) work per node rather than a walk over every pod.

use hawser_api::quantity;
use hawser_api::selector::map_selects;
use hawser_runtime::ObjectKey;
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Kubernetes' scoring defaults for containers that request nothing, so
/// that a node full of request-less pods does not look empty to the
/// least-allocated score. Filters never use them.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// The resources the scheduler accounts: CPU in millicores, memory in bytes,
/// and a pod count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_add(o.milli_cpu),
            memory: self.memory.saturating_add(o.memory),
            pods: self.pods.saturating_add(o.pods),
        }
    }

    fn minus(self, o: Resources) -> Resources {
        Resources {
            milli_cpu: self.milli_cpu.saturating_sub(o.milli_cpu),
            memory: self.memory.saturating_sub(o.memory),
            pods: self.pods.saturating_sub(o.pods),
        }
    }

    fn max(self, o: Resources) -> Resources {
        Resources { milli_cpu: self.milli_cpu.max(o.milli_cpu), memory: self.memory.max(o.memory), pods: self.pods.max(o.pods) }
    }

    /// cpu / memory / pods from a resource list (`requests`, `allocatable`).
    fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let get = |name: &str| list.and_then(|l| l.get(name));
        Resources {
            milli_cpu: get("cpu").and_then(|q| quantity::milli_value(&q.0)).unwrap_or(0),
            memory: get("memory").and_then(|q| quantity::value(&q.0)).unwrap_or(0),
            pods: get("pods").and_then(|q| quantity::value(&q.0)).unwrap_or(0),
        }
    }
}

/// A host port a pod binds on its node. `ip` is `0.0.0.0` when the pod
/// gave none and `protocol` is `TCP` when it gave none, as Kubernetes
/// defaults them for the conflict check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

pub const ANY_IP: &str = "0.0.0.0";

/// The pods a spreading score counts together: same namespace and labels
/// (so one Service selector match covers all of them) and same controller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpreadGroup {
    pub labels: Arc<BTreeMap<String, String>>,
    /// The uid of the controller owner reference.
    pub owner: Option<String>,
}

/// What a pod placed on a node takes from it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUsage {
    pub uid: String,
    pub namespace: String,
    /// What the filters check against allocatable; `pods` is always 1.
    pub requests: Resources,
    /// `requests` with missing container requests replaced by the scoring
    /// defaults.
    pub nonzero_requests: Resources,
    pub host_ports: Vec<HostPort>,
    pub group: SpreadGroup,
}

impl PodUsage {
    pub fn of(pod: &Pod) -> Self {
        let default_spec = PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let requests = pod_requests(spec, |c| Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref())));
        let nonzero_requests = pod_requests(spec, |c| {
            let list = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            let mut r = Resources::from_list(list);
            // Only a missing request is defaulted: an explicit 0 means 0.
            if list.is_none_or(|l| !l.contains_key("cpu")) {
                r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
            }
            if list.is_none_or(|l| !l.contains_key("memory")) {
                r.memory = DEFAULT_MEMORY_REQUEST;
            }
            r
        });
        let host_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|port| port > 0))
            .map(|p| HostPort {
                ip: p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| ANY_IP.to_string()),
                protocol: p.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "TCP".to_string()),
                port: p.host_port.unwrap_or_default(),
            })
            .collect();
        Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            requests: Resources { pods: 1, ..requests },
            nonzero_requests: Resources { pods: 1, ..nonzero_requests },
            host_ports,
            group: SpreadGroup {
                labels: Arc::new(pod.metadata.labels.clone().unwrap_or_default()),
                owner: hawser_runtime::objects::controller_of(&pod.metadata).map(|r| r.uid.clone()),
            },
        }
    }
}

/// A pod's effective requests, as Kubernetes' `PodRequests` computes them:
/// the app containers and restartable init containers (sidecars) run
/// together; each ordinary init container runs alone next to the sidecars
/// started before it; the pod needs the larger of the two phases, plus its
/// overhead.
fn pod_requests(spec: &PodSpec, per_container: impl Fn(&Container) -> Resources) -> Resources {
    let mut requests = spec.containers.iter().map(&per_container).fold(Resources::default(), Resources::plus);
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = per_container(c);
        let during = if c.restart_policy.as_deref() == Some("Always") {
            requests = requests.plus(r);
            sidecars = sidecars.plus(r);
            sidecars
        } else {
            r.plus(sidecars)
        };
        init_peak = init_peak.max(during);
    }
    requests.max(init_peak).plus(Resources::from_list(spec.overhead.as_ref()))
}

/// The Ready condition's status; a missing condition counts as Unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    True,
    False,
    Unknown,
}

/// What the filters need to know about a Node object.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub unschedulable: bool,
    pub ready: Readiness,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
}

impl NodeFacts {
    pub fn of(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = match status.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready")) {
            Some(c) if c.status == "True" => Readiness::True,
            Some(c) if c.status == "False" => Readiness::False,
            _ => Readiness::Unknown,
        };
        // Per resource, so a node reporting only some allocatable values
        // still offers its capacity for the rest.
        let allocatable = Resources::from_list(status.and_then(|s| s.allocatable.as_ref()));
        let capacity = Resources::from_list(status.and_then(|s| s.capacity.as_ref()));
        let has = |name: &str| status.and_then(|s| s.allocatable.as_ref()).is_some_and(|a| a.contains_key(name));
        let allocatable = Resources {
            milli_cpu: if has("cpu") { allocatable.milli_cpu } else { capacity.milli_cpu },
            memory: if has("memory") { allocatable.memory } else { capacity.memory },
            pods: if has("pods") { allocatable.pods } else { capacity.pods },
        };
        let spec = node.spec.as_ref();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready,
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            allocatable,
        }
    }
}

/// Whether a node change could let a pod fit that did not before: the
/// fields filters read changed. Status heartbeats (which rewrite condition
/// timestamps every few seconds) do not count, or every heartbeat would
/// retry every unschedulable pod.
pub fn node_change_may_help(old: Option<&Node>, new: &Node) -> bool {
    old.is_none_or(|old| NodeFacts::of(old) != NodeFacts::of(new))
}

/// One node's offer and load. Pods can be accounted to a node before its
/// Node object is seen (or after it is deleted), hence the optional facts.
#[derive(Debug, Default)]
pub struct NodeInfo {
    pub facts: Option<NodeFacts>,
    /// Sum of the placed pods' requests; `pods` is their count.
    pub requested: Resources,
    pub nonzero_requested: Resources,
    /// (protocol, port) → host IP → how many placed pods bind it.
    used_ports: HashMap<(String, i32), HashMap<String, u32>>,
}

impl NodeInfo {
    /// Whether any of `wanted` clashes with a port already bound here: same
    /// protocol and port, and the same host IP or either side on 0.0.0.0.
    pub fn ports_conflict(&self, wanted: &[HostPort]) -> bool {
        wanted.iter().any(|w| {
            self.used_ports
                .get(&(w.protocol.clone(), w.port))
                .is_some_and(|ips| if w.ip == ANY_IP { !ips.is_empty() } else { ips.contains_key(&w.ip) || ips.contains_key(ANY_IP) })
        })
    }

    fn add(&mut self, usage: &PodUsage) {
        self.requested = self.requested.plus(usage.requests);
        self.nonzero_requested = self.nonzero_requested.plus(usage.nonzero_requests);
        for p in &usage.host_ports {
            *self.used_ports.entry((p.protocol.clone(), p.port)).or_default().entry(p.ip.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, usage: &PodUsage) {
        self.requested = self.requested.minus(usage.requests);
        self.nonzero_requested = self.nonzero_requested.minus(usage.nonzero_requests);
        for p in &usage.host_ports {
            let key = (p.protocol.clone(), p.port);
            if let Some(ips) = self.used_ports.get_mut(&key) {
                if let Some(n) = ips.get_mut(&p.ip) {
                    *n -= 1;
                    if *n == 0 {
                        ips.remove(&p.ip);
                    }
                }
                if ips.is_empty() {
                    self.used_ports.remove(&key);
                }
            }
        }
    }
}

/// A pod accounted to a node.
#[derive(Debug)]
struct Placed {
    usage: PodUsage,
    node: String,
    /// Chosen by this scheduler, binding not yet seen in the informer.
    assumed: bool,
}

/// Every node's accounting plus the index the spreading score reads.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    pods: HashMap<ObjectKey, Placed>,
    /// namespace → group → node → placed pods of the group on the node.
    groups: HashMap<String, HashMap<SpreadGroup, HashMap<String, u32>>>,
}

impl Cache {
    pub fn set_node(&mut self, facts: NodeFacts) {
        let name = facts.name.clone();
        self.nodes.entry(name).or_default().facts = Some(facts);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.facts = None;
            if info.requested.pods == 0 {
                self.nodes.remove(name);
            }
        }
    }

    /// The nodes with a Node object: the ones pods can be scheduled to.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeFacts, &NodeInfo)> {
        self.nodes.values().filter_map(|info| Some((info.facts.as_ref()?, info)))
    }

    #[cfg(test)]
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// Brings the accounting in line with the informer's view of `pod`:
    /// bound and not finished pods count on their node (replacing an
    /// assumption); finished pods count nowhere; an unbound pod keeps its
    /// assumption, since its binding may simply not be visible yet.
    /// Returns whether resources were released on some node.
    pub fn observe_pod(&mut self, pod: &Pod) -> bool {
        let key = ObjectKey::of(pod);
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        let holds_resources = !hawser_runtime::objects::is_pod_terminated(pod);
        match node {
            Some(node) if holds_resources => {
                let usage = PodUsage::of(pod);
                if let Some(p) = self.pods.get(&key)
                    && !p.assumed
                    && p.node == node
                    && p.usage == usage
                {
                    return false; // a status update: nothing to account
                }
                let released = self.remove(&key).is_some_and(|old| old.node != node);
                self.add(key, usage, node.to_string(), false);
                released
            }
            _ if holds_resources && self.pods.get(&key).is_some_and(|p| p.assumed) => false,
            _ => self.remove(&key).is_some(),
        }
    }

    /// Forgets a deleted pod. Returns whether it held resources on a node.
    pub fn remove_pod(&mut self, key: &ObjectKey) -> bool {
        self.remove(key).is_some()
    }

    /// Accounts `usage` to `node` before the binding is visible, so the next
    /// decision sees the node's capacity as already taken.
    pub fn assume(&mut self, key: ObjectKey, usage: PodUsage, node: &str) {
        self.remove(&key);
        self.add(key, usage, node.to_string(), true);
    }

    /// Drops an assumption after its binding failed. Returns false when the
    /// informer already replaced it with the real placement (or the pod, by
    /// uid, is another one), which then stays.
    pub fn forget_assumed(&mut self, key: &ObjectKey, uid: &str) -> bool {
        if self.pods.get(key).is_some_and(|p| p.assumed && p.usage.uid == uid) {
            self.remove(key);
            return true;
        }
        false
    }

    pub fn is_assumed(&self, key: &ObjectKey) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Per node, the placed pods in `namespace` that share `group`'s
    /// controller or carry labels one of `selectors` matches (the pod's
    /// Services). Selectors are matched once per distinct label set, not per
    /// pod.
    pub fn spread_counts(&self, namespace: &str, group: &SpreadGroup, selectors: &[&BTreeMap<String, String>]) -> HashMap<&str, u32> {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        if group.owner.is_none() && selectors.is_empty() {
            return counts;
        }
        for (g, per_node) in self.groups.get(namespace).into_iter().flatten() {
            let same_owner = group.owner.is_some() && g.owner == group.owner;
            if same_owner || selectors.iter().any(|s| map_selects(s, &g.labels)) {
                for (node, n) in per_node {
                    *counts.entry(node.as_str()).or_default() += n;
                }
            }
        }
        counts
    }

    fn add(&mut self, key: ObjectKey, usage: PodUsage, node: String, assumed: bool) {
        self.nodes.entry(node.clone()).or_default().add(&usage);
        let groups = self.groups.entry(usage.namespace.clone()).or_default();
        *groups.entry(usage.group.clone()).or_default().entry(node.clone()).or_default() += 1;
        self.pods.insert(key, Placed { usage, node, assumed });
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Placed> {
        let placed = self.pods.remove(key)?;
        if let Some(info) = self.nodes.get_mut(&placed.node) {
            info.remove(&placed.usage);
            if info.facts.is_none() && info.requested.pods == 0 {
                self.nodes.remove(&placed.node);
            }
        }
        if let Some(groups) = self.groups.get_mut(&placed.usage.namespace) {
            if let Some(per_node) = groups.get_mut(&placed.usage.group) {
                if let Some(n) = per_node.get_mut(&placed.node) {
                    *n -= 1;
                    if *n == 0 {
                        per_node.remove(&placed.node);
                    }
                }
                if per_node.is_empty() {
                    groups.remove(&placed.usage.group);
                }
            }
            if groups.is_empty() {
                self.groups.remove(&placed.usage.namespace);
            }
        }
        Some(placed)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    pub(crate) fn node(json: serde_json::Value) -> Node {
        serde_json::from_value(json).unwrap()
    }

    /// A Ready node with the given allocatable cpu, memory and pods.
    pub(crate) fn ready_node(name: &str, cpu: &str, memory: &str, pods: &str) -> Node {
        node(json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": cpu, "memory": memory, "pods": pods},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
    }

    fn bound(name: &str, node: &str, cpu: &str) -> Pod {
        pod(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        }))
    }

    #[test]
    fn pod_requests_take_the_larger_of_app_containers_and_each_init_container_plus_overhead() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}}
            ],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "i2", "resources": {"requests": {"memory": "50Mi"}}}
            ],
            "overhead": {"cpu": "10m", "memory": "1Mi"}
        }}));
        let u = PodUsage::of(&p);
        assert_eq!(u.requests, Resources { milli_cpu: 510, memory: 101 << 20, pods: 1 });
    }

    #[test]
    fn sidecar_init_containers_add_to_the_running_pod() {
        let p = pod(json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                {"name": "init", "resources": {"requests": {"cpu": "120m"}}}
            ]
        }}));
        // Running: 100m + 50m; while `init` runs: 120m + the 50m sidecar.
        assert_eq!(PodUsage::of(&p).requests.milli_cpu, 170);
    }

    #[test]
    fn scoring_requests_default_only_missing_container_requests() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"cpu": "0", "memory": "1Gi"}}}
        ]}}));
        let u = PodUsage::of(&p);
        assert_eq!(u.requests, Resources { milli_cpu: 0, memory: 1 << 30, pods: 1 });
        assert_eq!(u.nonzero_requests, Resources { milli_cpu: 100, memory: (200 << 20) + (1 << 30), pods: 1 });
    }

    #[test]
    fn allocatable_falls_back_to_capacity_per_resource() {
        let n = node(json!({"metadata": {"name": "n"}, "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "3500m"}
        }}));
        assert_eq!(NodeFacts::of(&n).allocatable, Resources { milli_cpu: 3500, memory: 8 << 30, pods: 110 });
    }

    #[test]
    fn heartbeats_do_not_count_as_helpful_node_changes() {
        let beat = |t: &str| {
            node(
                json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": t}]}}),
            )
        };
        assert!(!node_change_may_help(Some(&beat("2025-01-01T00:00:00Z")), &beat("2025-01-01T00:00:10Z")));
        let cordoned = node(json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}));
        assert!(node_change_may_help(Some(&cordoned), &beat("2025-01-01T00:00:10Z")));
        assert!(node_change_may_help(None, &cordoned));
    }

    #[test]
    fn bound_pods_count_on_their_node_until_they_finish() {
        let mut c = Cache::default();
        c.set_node(NodeFacts::of(&ready_node("n1", "1", "1Gi", "10")));
        let p = bound("a", "n1", "300m");
        assert!(!c.observe_pod(&p));
        assert!(!c.observe_pod(&p), "seeing the same pod again changes nothing");
        assert_eq!(c.node("n1").unwrap().requested, Resources { milli_cpu: 300, memory: 0, pods: 1 });
        let mut done = p.clone();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        assert!(c.observe_pod(&done), "a finished pod releases its node");
        assert_eq!(c.node("n1").unwrap().requested, Resources::default());
    }

    #[test]
    fn the_informer_replaces_an_assumption_and_keeps_it_while_the_pod_looks_unbound() {
        let mut c = Cache::default();
        c.set_node(NodeFacts::of(&ready_node("n1", "1", "1Gi", "10")));
        let unbound = pod(json!({"metadata": {"name": "a", "namespace": "default", "uid": "uid-a"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "300m"}}}]}}));
        c.assume(ObjectKey::of(&unbound), PodUsage::of(&unbound), "n1");
        c.observe_pod(&unbound);
        assert!(c.is_assumed(&ObjectKey::of(&unbound)), "a stale unbound view must not drop the assumption");
        c.observe_pod(&bound("a", "n1", "300m"));
        assert!(!c.is_assumed(&ObjectKey::of(&unbound)));
        assert!(!c.forget_assumed(&ObjectKey::of(&unbound), "uid-a"), "a confirmed binding is not forgotten");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 300);
    }

    #[test]
    fn forgetting_an_assumption_releases_its_node() {
        let mut c = Cache::default();
        c.set_node(NodeFacts::of(&ready_node("n1", "1", "1Gi", "10")));
        let p = bound("a", "", "300m");
        c.assume(ObjectKey::of(&p), PodUsage::of(&p), "n1");
        assert_eq!(c.node("n1").unwrap().requested.pods, 1);
        assert!(c.forget_assumed(&ObjectKey::of(&p), "uid-a"));
        assert_eq!(c.node("n1").unwrap().requested, Resources::default());
    }

    #[test]
    fn host_ports_conflict_on_same_protocol_and_port_when_ips_overlap() {
        let mut info = NodeInfo::default();
        let hp = |ip: &str, protocol: &str, port| HostPort { ip: ip.into(), protocol: protocol.into(), port };
        let usage = |ports| PodUsage {
            uid: String::new(),
            namespace: String::new(),
            requests: Resources::default(),
            nonzero_requests: Resources::default(),
            host_ports: ports,
            group: SpreadGroup { labels: Arc::default(), owner: None },
        };
        info.add(&usage(vec![hp("10.0.0.1", "TCP", 80)]));
        assert!(info.ports_conflict(&[hp("10.0.0.1", "TCP", 80)]));
        assert!(info.ports_conflict(&[hp(ANY_IP, "TCP", 80)]), "0.0.0.0 overlaps every address");
        assert!(!info.ports_conflict(&[hp("10.0.0.2", "TCP", 80)]));
        assert!(!info.ports_conflict(&[hp("10.0.0.1", "UDP", 80)]));
        assert!(!info.ports_conflict(&[hp("10.0.0.1", "TCP", 81)]));
        info.add(&usage(vec![hp(ANY_IP, "UDP", 53)]));
        assert!(info.ports_conflict(&[hp("10.0.0.9", "UDP", 53)]));
        info.remove(&usage(vec![hp(ANY_IP, "UDP", 53)]));
        assert!(!info.ports_conflict(&[hp("10.0.0.9", "UDP", 53)]));
    }

    #[test]
    fn spread_counts_group_by_owner_or_by_service_selector() {
        let mut c = Cache::default();
        let owned = |name: &str, node: &str, owner: &str, app: &str| {
            pod(json!({"metadata": {"name": name, "namespace": "ns", "uid": name, "labels": {"app": app},
                "ownerReferences": [{"apiVersion": "v1", "kind": "ReplicationController", "name": owner, "uid": owner, "controller": true}]},
                "spec": {"nodeName": node, "containers": []}}))
        };
        c.observe_pod(&owned("a", "n1", "rc1", "web"));
        c.observe_pod(&owned("b", "n1", "rc1", "web"));
        c.observe_pod(&owned("c", "n2", "rc2", "web"));
        c.observe_pod(&owned("d", "n2", "rc3", "db"));
        let group = SpreadGroup { labels: Arc::new(BTreeMap::from([("app".into(), "web".into())])), owner: Some("rc1".into()) };
        let by_owner = c.spread_counts("ns", &group, &[]);
        assert_eq!(by_owner, HashMap::from([("n1", 2)]));
        let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let by_service = c.spread_counts("ns", &group, &[&web]);
        assert_eq!(by_service, HashMap::from([("n1", 2), ("n2", 1)]), "a pod both owned and selected counts once");
        assert!(c.spread_counts("other", &group, &[&web]).is_empty(), "spreading is per namespace");
    }
}
