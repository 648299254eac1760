//! ReplicationControllers and ReplicaSets keep their replica count on
//! simulated nodes; deleting the owner cascades (or orphans) as asked.

use hawser_tests::kwok::NodeShape;
use hawser_tests::manifests::RC;
use hawser_tests::{TestCluster, poll_until};
use std::collections::BTreeSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn names(pods: &[serde_json::Value]) -> BTreeSet<String> {
    pods.iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

/// Waits until exactly `n` live pods match and all are Running; returns their names.
fn wait_for_running(cluster: &TestCluster, selector: &str, n: usize) -> BTreeSet<String> {
    poll_until(TIMEOUT, &format!("{n} running pods for {selector}"), || {
        let pods = cluster.live_pods(selector);
        (pods.len() == n && pods.iter().all(|p| p["status"]["phase"] == "Running")).then(|| names(&pods))
    })
}

#[test]
fn scaling_an_rc_removes_and_adds_the_right_pods_and_replaces_deleted_ones() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes(["n1", "n2", "n3"].map(NodeShape::new));
    cluster.apply("rc.yaml", RC, &[]);
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=6"]);
    let six = wait_for_running(&cluster, "app=web", 6);

    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=2"]);
    let two = wait_for_running(&cluster, "app=web", 2);
    assert!(two.is_subset(&six), "scaling down keeps existing pods, it does not replace them");

    // A pod that is not ready goes before ready ones when scaling down.
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=8"]);
    let eight = wait_for_running(&cluster, "app=web", 8);
    assert!(two.is_subset(&eight), "scaling up adds pods and keeps the old ones");
    let unready = eight.iter().find(|n| !two.contains(*n)).unwrap().clone();
    cluster.kubectl_ok(&[
        "patch",
        "pod",
        &unready,
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    poll_until(TIMEOUT, "the RC sees 7 ready pods", || {
        let rc = cluster.kubectl_json(&["get", "rc", "web"]);
        (rc["status"]["readyReplicas"] == 7).then_some(())
    });
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=7"]);
    let seven = wait_for_running(&cluster, "app=web", 7);
    assert!(!seven.contains(&unready), "the not-ready pod went first");

    let victim = seven.iter().next().unwrap().clone();
    cluster.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    let replaced = wait_for_running(&cluster, "app=web", 7);
    assert!(!replaced.contains(&victim), "the deleted pod is replaced by a new one");

    let rc = cluster.kubectl_json(&["get", "rc", "web"]);
    assert_eq!(rc["status"]["replicas"], 7);
    assert_eq!(rc["status"]["readyReplicas"], 7);
    assert_eq!(rc["status"]["availableReplicas"], 7);
    assert_eq!(rc["status"]["observedGeneration"], rc["metadata"]["generation"]);
    let owner = &cluster.live_pods("app=web")[0]["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["controller"].as_bool()), (Some("ReplicationController"), Some(true)));
}

#[test]
fn a_replica_set_adopts_orphans_and_kubectl_scale_works() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes([NodeShape::new("n1")]);
    let orphan = "apiVersion: v1
kind: Pod
metadata:
  name: orphan
  labels:
    app: cache
spec:
  containers:
  - name: app
    image: registry.example/cache:1
";
    cluster.apply("orphan.yaml", orphan, &[]);
    let rs = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: cache
spec:
  replicas: 3
  selector:
    matchLabels:
      app: cache
  template:
    metadata:
      labels:
        app: cache
    spec:
      containers:
      - name: app
        image: registry.example/cache:1
";
    cluster.apply("rs.yaml", rs, &[]);
    let pods = wait_for_running(&cluster, "app=cache", 3);
    assert!(pods.contains("orphan"), "the matching orphan counts as one of the 3: {pods:?}");
    let owner = cluster.kubectl_ok(&["get", "pod", "orphan", "-o", "jsonpath={.metadata.ownerReferences[0].name}"]);
    assert_eq!(owner, "cache", "the orphan was adopted");
    cluster.kubectl_ok(&["scale", "rs", "cache", "--replicas=1"]);
    wait_for_running(&cluster, "app=cache", 1);
    let out = cluster.kubectl_ok(&["get", "rs", "cache"]);
    assert!(out.lines().nth(1).is_some_and(|l| l.split_whitespace().take(4).collect::<Vec<_>>() == ["cache", "1", "1", "1"]), "{out}");
}

#[test]
fn deleting_an_rc_deletes_its_pods_in_background_or_foreground_and_cascade_orphan_keeps_them() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes([NodeShape::new("n1")]);
    cluster.apply("rc.yaml", RC, &[]);
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=3"]);
    wait_for_running(&cluster, "app=web", 3);
    cluster.kubectl_ok(&["delete", "rc", "web"]);
    poll_until(TIMEOUT, "the RC's pods are deleted with it (background propagation)", || {
        cluster.live_pods("app=web").is_empty().then_some(())
    });

    // Foreground: kubectl waits while the RC holds on until its pods are gone.
    cluster.apply("rc.yaml", RC, &[]);
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=2"]);
    wait_for_running(&cluster, "app=web", 2);
    cluster.kubectl_ok(&["delete", "rc", "web", "--cascade=foreground"]);
    assert!(cluster.live_pods("app=web").is_empty(), "foreground deletion returns only after the pods are gone");

    cluster.apply("rc.yaml", RC, &[]);
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=2"]);
    let kept = wait_for_running(&cluster, "app=web", 2);
    cluster.kubectl_ok(&["delete", "rc", "web", "--cascade=orphan"]);
    poll_until(TIMEOUT, "the RC is gone", || (!cluster.kubectl_ok(&["get", "rc", "-o", "name"]).contains("web")).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let pods = cluster.live_pods("app=web");
    assert_eq!(names(&pods), kept, "orphaned pods stay");
    assert!(pods.iter().all(|p| p["metadata"]["ownerReferences"].is_null()), "and no longer name an owner");
}
