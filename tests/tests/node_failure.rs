//! A node that stops renewing its Lease is marked Unknown, its pods leave
//! Service endpoints at once, and after their toleration they are replaced
//! on the healthy nodes.

use hawser_tests::kwok::NodeShape;
use hawser_tests::{TestCluster, poll_until};
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(8);
const TOLERATION: Duration = Duration::from_secs(6);

#[test]
fn pods_of_a_silent_node_leave_endpoints_and_move_to_healthy_nodes() {
    let grace = format!("{}s", GRACE.as_secs());
    let toleration = TOLERATION.as_secs().to_string();
    let cluster =
        TestCluster::start_with(&["--node-monitor-grace-period", &grace, "--default-unreachable-toleration-seconds", &toleration]);
    let nodes = cluster.simulated_nodes(["n1", "n2", "n3"].map(NodeShape::new));
    cluster.apply("rc.yaml", hawser_tests::manifests::RC, &[]);
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=6"]);
    cluster.kubectl_ok(&["expose", "rc", "web", "--port=80"]);
    let on_n3 = |cluster: &TestCluster| -> Vec<String> {
        cluster
            .live_pods("app=web")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "n3")
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect()
    };
    let n3_ips = poll_until(Duration::from_secs(30), "6 ready endpoints, 2 of them on n3", || {
        let eps = cluster.kubectl_json(&["get", "endpoints", "web"]);
        let ready = eps["subsets"][0]["addresses"].as_array().map_or(0, Vec::len);
        let ips = on_n3(&cluster);
        (ready == 6 && ips.len() == 2).then_some(ips)
    });

    let stopped = Instant::now();
    nodes[2].stop();
    let unknown_at = poll_until(GRACE + Duration::from_secs(10), "n3 marked Unknown", || {
        let node = cluster.kubectl_json(&["get", "node", "n3"]);
        let ready = node["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == "Ready")?.clone();
        (ready["status"] == "Unknown").then(Instant::now)
    });
    assert!(unknown_at - stopped >= GRACE - Duration::from_secs(3), "marked Unknown before the grace period ran out");
    poll_until(Duration::from_secs(1), "n3's pods leave the endpoints within 1 s of Unknown", || {
        let eps = cluster.kubectl_json(&["get", "endpoints", "web"]);
        let ready: Vec<&str> = eps["subsets"]
            .as_array()?
            .iter()
            .flat_map(|s| s["addresses"].as_array().into_iter().flatten())
            .filter_map(|a| a["ip"].as_str())
            .collect();
        n3_ips.iter().all(|ip| !ready.contains(&ip.as_str())).then_some(())
    });
    poll_until(Duration::from_secs(3), "n3 tainted unreachable (checked every second)", || {
        let taints = cluster.kubectl_ok(&["get", "node", "n3", "-o", "jsonpath={.spec.taints[*].key}"]);
        taints.contains("node.kubernetes.io/unreachable").then_some(())
    });

    let deadline = stopped + GRACE + TOLERATION + Duration::from_secs(5);
    poll_until(deadline.saturating_duration_since(Instant::now()), "6 running pods on n1 and n2 within grace + toleration + 5 s", || {
        let pods = cluster.live_pods("app=web");
        let healthy = pods.iter().filter(|p| p["status"]["phase"] == "Running" && p["spec"]["nodeName"] != "n3").count();
        (pods.len() == 6 && healthy == 6).then_some(())
    });
}

#[test]
fn pods_of_a_node_reporting_not_ready_leave_endpoints_and_the_node_is_tainted() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes(["n1", "n2"].map(NodeShape::new));
    cluster.apply("rc.yaml", hawser_tests::manifests::RC, &[]);
    cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=4"]);
    cluster.kubectl_ok(&["expose", "rc", "web", "--port=80"]);
    let ready_count = |cluster: &TestCluster| {
        let eps = cluster.kubectl_json(&["get", "endpoints", "web"]);
        eps["subsets"].as_array().map_or(0, |s| s.iter().map(|s| s["addresses"].as_array().map_or(0, Vec::len)).sum::<usize>())
    };
    poll_until(Duration::from_secs(30), "4 ready endpoints", || (ready_count(&cluster) == 4).then_some(()));
    // The agent of n2 (here: the test, through the API) reports NotReady.
    cluster.kubectl_ok(&[
        "patch",
        "node",
        "n2",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False","reason":"KubeletNotReady","message":"container runtime is down"}]}}"#,
    ]);
    poll_until(Duration::from_secs(3), "n2's 2 pods leave the ready addresses", || (ready_count(&cluster) == 2).then_some(()));
    poll_until(Duration::from_secs(3), "n2 tainted not-ready", || {
        let taints = cluster.kubectl_ok(&["get", "node", "n2", "-o", "jsonpath={.spec.taints[*].key}"]);
        taints.contains("node.kubernetes.io/not-ready").then_some(())
    });
}
