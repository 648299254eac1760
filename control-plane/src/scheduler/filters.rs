//! Filters: which nodes a pod may run on, and, for the nodes it may not, the
//! reasons in Kubernetes' words (they end up in `FailedScheduling` events and
//! the pod's `PodScheduled` condition, where users and tools read them).

use super::cache::{Cache, NodeFacts, NodeInfo, PodUsage, Readiness};
use hawser_runtime::objects::tolerates;
use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, Pod, Taint, Toleration};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The pod being scheduled: what it would take from a node and what it asks
/// of one.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub usage: PodUsage,
    pub node_selector: BTreeMap<String, String>,
    /// `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution`.
    pub required_affinity: Option<NodeSelector>,
    pub tolerations: Vec<Toleration>,
}

impl Candidate {
    pub fn of(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        Self {
            usage: PodUsage::of(pod),
            node_selector: spec.and_then(|s| s.node_selector.clone()).unwrap_or_default(),
            required_affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone()),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
        }
    }
}

/// Why a node was filtered out. `Display` gives Kubernetes' wording.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Unschedulable,
    NotReady,
    /// The first NoSchedule/NoExecute taint the pod does not tolerate.
    UntoleratedTaint {
        key: String,
        value: String,
    },
    NodeAffinity,
    HostPorts,
    InsufficientCpu,
    InsufficientMemory,
    TooManyPods,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::UntoleratedTaint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Reason::NodeAffinity => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Reason::HostPorts => f.write_str("node(s) didn't have free ports for the requested pod ports"),
            Reason::InsufficientCpu => f.write_str("Insufficient cpu"),
            Reason::InsufficientMemory => f.write_str("Insufficient memory"),
            Reason::TooManyPods => f.write_str("Too many pods"),
        }
    }
}

/// No node fits: how many nodes there were and how many failed for each
/// reason. `Display` is the `FailedScheduling` message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: HashMap<Reason, usize>,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        // Sorted as strings, counts included, as Kubernetes sorts them (so
        // "10 ..." comes before "2 ...").
        let mut parts: Vec<String> = self.reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        parts.sort();
        write!(f, "0/{} nodes are available: {}.", self.nodes, parts.join(", "))
    }
}

/// Taints the node lifecycle controller puts on nodes in these states; the
/// state checks honour the same tolerations so a pod that tolerates the
/// taint (a DaemonSet pod, say) is not held back by the check before the
/// taint is even there.
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Why `node` cannot take `pod`; empty when it can. As in Kubernetes, the
/// filters run in its plugin order and the first that fails decides, so a
/// node counts under one filter's reasons (several for resources: one per
/// resource that does not fit).
pub fn check(pod: &Candidate, facts: &NodeFacts, node: &NodeInfo) -> Vec<Reason> {
    if facts.unschedulable && !tolerates_all(&pod.tolerations, &[no_schedule(TAINT_UNSCHEDULABLE)]) {
        return vec![Reason::Unschedulable];
    }
    let state_taint = match facts.ready {
        Readiness::True => None,
        Readiness::False => Some(TAINT_NOT_READY),
        Readiness::Unknown => Some(TAINT_UNREACHABLE),
    };
    // NoSchedule on purpose: every pod gets NoExecute tolerations for these
    // keys by default (to outlive short outages), which must not make new
    // pods land on a node that is down.
    if let Some(key) = state_taint
        && !tolerates_all(&pod.tolerations, &[no_schedule(key)])
    {
        return vec![Reason::NotReady];
    }
    if let Some(t) = first_untolerated_taint(&pod.tolerations, &facts.taints) {
        return vec![Reason::UntoleratedTaint { key: t.key.clone(), value: t.value.clone().unwrap_or_default() }];
    }
    if !matches_node_selector(pod, facts) {
        return vec![Reason::NodeAffinity];
    }
    if node.ports_conflict(&pod.usage.host_ports) {
        return vec![Reason::HostPorts];
    }
    insufficient_resources(pod, facts, node)
}

/// The nodes `pod` fits on, or why none does.
pub fn feasible_nodes<'c>(cache: &'c Cache, pod: &Candidate) -> Result<Vec<(&'c NodeFacts, &'c NodeInfo)>, FitError> {
    let mut feasible = Vec::new();
    let mut error = FitError::default();
    for (facts, info) in cache.nodes() {
        error.nodes += 1;
        let reasons = check(pod, facts, info);
        if reasons.is_empty() {
            feasible.push((facts, info));
        }
        for reason in reasons {
            *error.reasons.entry(reason).or_default() += 1;
        }
    }
    if feasible.is_empty() { Err(error) } else { Ok(feasible) }
}

/// One reason per resource that does not fit. As in Kubernetes, a pod
/// requesting nothing only needs a pod slot, and a zero request always fits.
fn insufficient_resources(pod: &Candidate, facts: &NodeFacts, node: &NodeInfo) -> Vec<Reason> {
    let (want, have, used) = (pod.usage.requests, facts.allocatable, node.requested);
    let mut reasons = Vec::new();
    if used.pods + 1 > have.pods {
        reasons.push(Reason::TooManyPods);
    }
    if want.milli_cpu > 0 && want.milli_cpu > have.milli_cpu.saturating_sub(used.milli_cpu) {
        reasons.push(Reason::InsufficientCpu);
    }
    if want.memory > 0 && want.memory > have.memory.saturating_sub(used.memory) {
        reasons.push(Reason::InsufficientMemory);
    }
    reasons
}

fn no_schedule(key: &str) -> Taint {
    Taint { key: key.to_string(), effect: "NoSchedule".to_string(), ..Default::default() }
}

fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    first_untolerated_taint(tolerations, taints).is_none()
}

/// The first taint that repels new pods (NoSchedule, NoExecute) and that no
/// toleration matches. PreferNoSchedule only affects scoring in Kubernetes.
pub fn first_untolerated_taint<'t>(tolerations: &[Toleration], taints: &'t [Taint]) -> Option<&'t Taint> {
    taints
        .iter()
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .find(|taint| !tolerations.iter().any(|tol| tolerates(tol, taint)))
}

/// `nodeSelector` (every pair) and the required node affinity (any term).
pub fn matches_node_selector(pod: &Candidate, node: &NodeFacts) -> bool {
    pod.node_selector.iter().all(|(k, v)| node.labels.get(k) == Some(v))
        && pod.required_affinity.as_ref().is_none_or(|affinity| matches_node_selector_terms(affinity, node))
}

/// Terms are OR'ed; within a term every expression and field requirement
/// must hold. A term with no requirements matches nothing, as in Kubernetes.
pub fn matches_node_selector_terms(selector: &NodeSelector, node: &NodeFacts) -> bool {
    selector.node_selector_terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        if expressions.is_empty() && fields.is_empty() {
            return false;
        }
        expressions.iter().all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                // metadata.name is the only field Kubernetes supports here.
                let value = (r.key == "metadata.name").then_some(node.name.as_str());
                requirement_matches(r, value)
            })
    })
}

/// One `matchExpressions` entry against a label's value (None: no such label).
fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            // Both sides must be integers; a label that is not never matches.
            let (Some(label), [bound]) = (value.and_then(|v| v.parse::<i64>().ok()), values) else { return false };
            let Ok(bound) = bound.parse::<i64>() else { return false };
            if r.operator == "Gt" { label > bound } else { label < bound }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::cache::tests::{node, pod, ready_node};
    use hawser_runtime::ObjectKey;
    use serde_json::json;

    fn candidate(spec: serde_json::Value) -> Candidate {
        Candidate::of(&pod(json!({"metadata": {"name": "p", "namespace": "default", "uid": "uid-p"}, "spec": spec})))
    }

    fn reasons(pod: &Candidate, n: &k8s_openapi::api::core::v1::Node) -> Vec<String> {
        check(pod, &NodeFacts::of(n), &NodeInfo::default()).iter().map(ToString::to_string).collect()
    }

    /// A Ready node with room for anything the tests ask, with `extra`
    /// merged in (objects merge recursively, anything else replaces).
    fn node_with(name: &str, extra: serde_json::Value) -> k8s_openapi::api::core::v1::Node {
        fn merge(into: &mut serde_json::Value, from: &serde_json::Value) {
            match (into, from) {
                (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                    for (k, v) in b {
                        merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                    }
                }
                (a, b) => *a = b.clone(),
            }
        }
        let mut n = serde_json::to_value(ready_node(name, "4", "8Gi", "110")).unwrap();
        merge(&mut n, &extra);
        node(n)
    }

    fn containers(cpu: &str, memory: &str) -> serde_json::Value {
        json!([{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}])
    }

    #[test]
    fn a_fitting_ready_node_passes_every_filter() {
        assert!(reasons(&candidate(json!({"containers": containers("1", "1Gi")})), &ready_node("n", "4", "8Gi", "110")).is_empty());
    }

    #[test]
    fn cordoned_nodes_are_unschedulable_unless_the_taint_is_tolerated() {
        let n = node_with("n", json!({"spec": {"unschedulable": true}}));
        assert_eq!(reasons(&candidate(json!({"containers": []})), &n), ["node(s) were unschedulable"]);
        let tolerant = candidate(json!({"containers": [], "tolerations": [{"key": TAINT_UNSCHEDULABLE, "operator": "Exists"}]}));
        assert!(reasons(&tolerant, &n).is_empty());
    }

    #[test]
    fn nodes_that_are_not_ready_are_skipped_unless_the_pod_tolerates_their_taint() {
        let not_ready = node_with("n", json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        let no_condition = node(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"}}}));
        // The default NoExecute tolerations every pod carries do not count.
        let default_pod = candidate(json!({"containers": [], "tolerations": [
            {"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ]}));
        assert_eq!(reasons(&default_pod, &not_ready), ["node(s) were not ready"]);
        assert_eq!(reasons(&default_pod, &no_condition), ["node(s) were not ready"]);
        let daemon = candidate(json!({"containers": [], "tolerations": [{"operator": "Exists"}]}));
        assert!(reasons(&daemon, &not_ready).is_empty());
        assert!(reasons(&daemon, &no_condition).is_empty());
    }

    #[test]
    fn untolerated_taints_are_reported_with_key_and_value() {
        let n = node_with(
            "n",
            json!({"spec": {"taints": [
                {"key": "soft", "value": "x", "effect": "PreferNoSchedule"},
                {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
            ]}}),
        );
        let plain = candidate(json!({"containers": []}));
        assert_eq!(reasons(&plain, &n), ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"]);
        let partial =
            candidate(json!({"containers": [], "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]}));
        assert_eq!(reasons(&partial, &n), ["node(s) had untolerated taint {dedicated: gpu}"]);
        let wrong_value = candidate(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists"},
            {"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}
        ]}));
        assert_eq!(reasons(&wrong_value, &n), ["node(s) had untolerated taint {dedicated: gpu}"]);
        let both = candidate(json!({"containers": [], "tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
            {"key": "dedicated", "operator": "Equal", "value": "gpu"}
        ]}));
        assert!(reasons(&both, &n).is_empty());
        let everything = candidate(json!({"containers": [], "tolerations": [{"operator": "Exists"}]}));
        assert!(reasons(&everything, &n).is_empty(), "an empty key with Exists tolerates every taint");
        let wrong_effect = candidate(json!({"containers": [], "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]}));
        assert_eq!(reasons(&wrong_effect, &n), ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"]);
    }

    #[test]
    fn node_selector_must_match_every_label() {
        let n = node_with("n", json!({"metadata": {"labels": {"disk": "ssd", "zone": "a"}}}));
        assert!(reasons(&candidate(json!({"containers": [], "nodeSelector": {"disk": "ssd"}})), &n).is_empty());
        assert_eq!(
            reasons(&candidate(json!({"containers": [], "nodeSelector": {"disk": "ssd", "zone": "b"}})), &n),
            ["node(s) didn't match Pod's node affinity/selector"]
        );
    }

    #[test]
    fn required_node_affinity_ors_terms_and_ands_expressions() {
        let facts = NodeFacts::of(&node_with("n1", json!({"metadata": {"labels": {"zone": "a", "cores": "8"}}})));
        let term = |exprs: serde_json::Value| json!({"matchExpressions": exprs});
        let matches = |terms: serde_json::Value| {
            let selector: NodeSelector = serde_json::from_value(json!({"nodeSelectorTerms": terms})).unwrap();
            matches_node_selector_terms(&selector, &facts)
        };
        assert!(matches(json!([term(json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}]))])));
        assert!(!matches(json!([term(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}]))])));
        assert!(matches(json!([term(json!([{"key": "gpu", "operator": "NotIn", "values": ["x"]}]))])), "NotIn holds without the label");
        assert!(matches(json!([term(json!([{"key": "zone", "operator": "Exists"}, {"key": "gpu", "operator": "DoesNotExist"}]))])));
        assert!(!matches(json!([term(json!([{"key": "zone", "operator": "Exists"}, {"key": "gpu", "operator": "Exists"}]))])));
        assert!(matches(json!([term(json!([{"key": "cores", "operator": "Gt", "values": ["4"]}]))])));
        assert!(!matches(json!([term(json!([{"key": "cores", "operator": "Lt", "values": ["4"]}]))])));
        assert!(!matches(json!([term(json!([{"key": "zone", "operator": "Gt", "values": ["1"]}]))])), "a non-integer label never compares");
        assert!(matches(json!([
            term(json!([{"key": "zone", "operator": "In", "values": ["b"]}])),
            term(json!([{"key": "zone", "operator": "In", "values": ["a"]}]))
        ])));
        assert!(matches(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])));
        assert!(!matches(json!([{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}])));
        assert!(!matches(json!([{}])), "an empty term matches nothing");
        assert!(!matches(json!([])));
    }

    #[test]
    fn each_insufficient_resource_is_its_own_reason() {
        let mut cache = Cache::default();
        cache.set_node(NodeFacts::of(&ready_node("n", "1", "1Gi", "1")));
        let big = candidate(json!({"containers": containers("2", "2Gi")}));
        assert_eq!(
            feasible_nodes(&cache, &big).unwrap_err().to_string(),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."
        );
        let nothing = candidate(json!({"containers": []}));
        assert!(feasible_nodes(&cache, &nothing).is_ok(), "a pod requesting nothing only needs a pod slot");
        cache.assume(ObjectKey::new("default", "other"), nothing.usage.clone(), "n");
        assert_eq!(feasible_nodes(&cache, &nothing).unwrap_err().to_string(), "0/1 nodes are available: 1 Too many pods.");
        assert_eq!(
            feasible_nodes(&cache, &big).unwrap_err().to_string(),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 1 Too many pods."
        );
    }

    #[test]
    fn zero_requests_fit_a_node_with_nothing_left() {
        let mut cache = Cache::default();
        cache.set_node(NodeFacts::of(&ready_node("n", "1", "1Gi", "10")));
        let hog = candidate(json!({"containers": containers("1", "1Gi")}));
        cache.assume(ObjectKey::new("default", "hog"), hog.usage.clone(), "n");
        let zero = candidate(json!({"containers": containers("0", "0")}));
        assert!(feasible_nodes(&cache, &zero).is_ok());
        assert!(feasible_nodes(&cache, &hog).is_err());
    }

    #[test]
    fn host_ports_in_use_filter_the_node() {
        let mut cache = Cache::default();
        cache.set_node(NodeFacts::of(&ready_node("n", "1", "1Gi", "10")));
        let web = candidate(json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}));
        cache.assume(ObjectKey::new("default", "web"), web.usage.clone(), "n");
        let err = feasible_nodes(&cache, &web).unwrap_err();
        assert_eq!(err.to_string(), "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports.");
        let udp = candidate(json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]}]}));
        assert!(feasible_nodes(&cache, &udp).is_ok());
    }

    #[test]
    fn failed_scheduling_message_counts_reasons_sorted_as_strings() {
        let mut cache = Cache::default();
        cache.set_node(NodeFacts::of(&node_with(
            "small",
            json!({"metadata": {"labels": {"disk": "hdd"}}, "status": {"allocatable": {"cpu": "500m"}}}),
        )));
        cache.set_node(NodeFacts::of(&node_with("a", json!({}))));
        cache.set_node(NodeFacts::of(&node_with("b", json!({"metadata": {"labels": {"disk": "ssd"}}}))));
        let pod = candidate(json!({"containers": containers("1", "1Gi"), "nodeSelector": {"disk": "hdd"}}));
        let err = feasible_nodes(&cache, &pod).unwrap_err();
        assert_eq!(err.to_string(), "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector.");
    }

    #[test]
    fn a_node_counts_under_its_first_failing_filter_only() {
        let mut cache = Cache::default();
        cache.set_node(NodeFacts::of(&node_with(
            "ssd",
            json!({"metadata": {"labels": {"disk": "ssd"}}, "status": {"allocatable": {"cpu": "100m"}}}),
        )));
        // Too small and unlabelled: the affinity filter runs first and decides.
        cache.set_node(NodeFacts::of(&node_with("tiny", json!({"status": {"allocatable": {"cpu": "100m"}}}))));
        cache.set_node(NodeFacts::of(&node_with(
            "cordoned",
            json!({"spec": {"unschedulable": true, "taints": [{"key": "x", "effect": "NoSchedule"}]}}),
        )));
        let pod = candidate(json!({"containers": containers("1", "1Gi"), "nodeSelector": {"disk": "ssd"}}));
        let err = feasible_nodes(&cache, &pod).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable."
        );
    }

    #[test]
    fn message_ordering_is_by_string_so_ten_sorts_before_two() {
        let err = FitError { nodes: 12, reasons: HashMap::from([(Reason::InsufficientMemory, 2), (Reason::NodeAffinity, 10)]) };
        assert_eq!(
            err.to_string(),
            "0/12 nodes are available: 10 node(s) didn't match Pod's node affinity/selector, 2 Insufficient memory."
        );
    }

    #[test]
    fn no_nodes_uses_kubernetes_wording() {
        let err = feasible_nodes(&Cache::default(), &candidate(json!({"containers": []}))).unwrap_err();
        assert_eq!(err.to_string(), "no nodes available to schedule pods");
    }
}
