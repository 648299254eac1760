//! The scheduler places pods on simulated nodes (kwok-style: real Node
//! objects and Leases, pod status written through the API) and explains,
//! in Kubernetes' words, why a pod fits nowhere.

use hawser_tests::kwok::NodeShape;
use hawser_tests::{TestCluster, poll_until};
use std::collections::BTreeMap;
use std::time::Duration;

fn rc(name: &str, replicas: u32, cpu: &str) -> String {
    format!(
        "apiVersion: v1
kind: ReplicationController
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: registry.example/app:1
        resources:
          requests:
            cpu: {cpu}
"
    )
}

/// Bound pods per node for pods matching `selector`.
fn pods_per_node(cluster: &TestCluster, selector: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for pod in cluster.live_pods(selector) {
        if let Some(node) = pod["spec"]["nodeName"].as_str() {
            *counts.entry(node.to_string()).or_default() += 1;
        }
    }
    counts
}

#[test]
fn six_replicas_spread_two_per_node_over_three_nodes() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes(["n1", "n2", "n3"].map(NodeShape::new));
    cluster.apply("rc.yaml", &rc("web", 6, "100m"), &[]);
    let spread = poll_until(Duration::from_secs(30), "6 pods bound", || {
        let counts = pods_per_node(&cluster, "app=web");
        (counts.values().sum::<usize>() == 6).then_some(counts)
    });
    assert_eq!(spread, BTreeMap::from([("n1".into(), 2), ("n2".into(), 2), ("n3".into(), 2)]), "pods of one RC spread evenly");
    let describe = cluster.kubectl_ok(&["describe", "pod", "-l", "app=web"]);
    assert!(describe.contains("Successfully assigned default/web-"), "describe shows the Scheduled event:\n{describe}");
    assert!(describe.contains("default-scheduler"), "the event comes from default-scheduler:\n{describe}");
}

#[test]
fn a_node_too_small_gets_no_pods_and_describe_says_why() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes([
        NodeShape::new("big-1").cpu("1").label("disk", "ssd"),
        NodeShape::new("big-2").cpu("1"),
        NodeShape::new("small").cpu("200m"),
    ]);
    // 400m each: two fit on each 1-CPU node, none on the small one.
    cluster.apply("rc.yaml", &rc("web", 6, "400m"), &[]);
    let placed = poll_until(Duration::from_secs(30), "4 of 6 pods bound", || {
        let counts = pods_per_node(&cluster, "app=web");
        (counts.values().sum::<usize>() == 4).then_some(counts)
    });
    assert_eq!(placed, BTreeMap::from([("big-1".into(), 2), ("big-2".into(), 2)]));
    let pending: Vec<String> = cluster
        .live_pods("app=web")
        .iter()
        .filter(|p| p["spec"]["nodeName"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pending.len(), 2);
    let why = poll_until(Duration::from_secs(10), "a FailedScheduling event on the pending pod", || {
        let describe = cluster.kubectl_ok(&["describe", "pod", &pending[0]]);
        describe.contains("FailedScheduling").then_some(describe)
    });
    assert!(why.contains("0/3 nodes are available: 3 Insufficient cpu."), "describe explains the failure:\n{why}");
    let condition =
        cluster.kubectl_ok(&["get", "pod", &pending[0], "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}"]);
    assert_eq!(condition, "Unschedulable");

    // Mixed reasons are counted and sorted as Kubernetes prints them.
    let picky = "apiVersion: v1
kind: Pod
metadata:
  name: picky
spec:
  nodeSelector:
    disk: ssd
  containers:
  - name: app
    image: registry.example/app:1
    resources:
      requests:
        cpu: 400m
";
    cluster.apply("picky.yaml", picky, &[]);
    let why = poll_until(Duration::from_secs(10), "a FailedScheduling event on pod picky", || {
        let describe = cluster.kubectl_ok(&["describe", "pod", "picky"]);
        describe.contains("FailedScheduling").then_some(describe)
    });
    assert!(
        why.contains("0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."),
        "describe explains both reasons:\n{why}"
    );

    // Room appears: the pending pods are retried without any change to them.
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=4"]);
    let _more = cluster.simulated_nodes([NodeShape::new("big-3").cpu("1").label("disk", "ssd")]);
    poll_until(Duration::from_secs(30), "pod picky placed once a node with room and the label joins", || {
        let pod = cluster.kubectl_json(&["get", "pod", "picky"]);
        (pod["spec"]["nodeName"] == "big-3").then_some(())
    });
}
