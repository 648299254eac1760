//! Endpoints follow pods: ready pods in `addresses`, unready ones in
//! `notReadyAddresses`, named target ports resolved per pod, and the pods of
//! a node that stops renewing its Lease leave at once.

use hawser_tests::kwok::{NodeShape, START_NOT_READY};
use hawser_tests::{TestCluster, poll_until};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);

fn pod(name: &str, port: u16, ready: bool) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: web
  annotations:
    {START_NOT_READY}: \"{ready}\"
spec:
  containers:
  - name: app
    image: registry.example/web:1
    ports:
    - name: http
      containerPort: {port}
"
    )
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
";

/// (ready "ip:port" set, not-ready "ip:port" set) of Endpoints `name`.
fn endpoint_addresses(cluster: &TestCluster, name: &str) -> (Vec<String>, Vec<String>) {
    let out = cluster.kubectl(&["get", "endpoints", name, "-o", "json"]);
    if !out.status.success() {
        return (Vec::new(), Vec::new());
    }
    let eps: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
    for subset in eps["subsets"].as_array().into_iter().flatten() {
        let port = subset["ports"][0]["port"].as_i64().unwrap_or(0);
        for a in subset["addresses"].as_array().into_iter().flatten() {
            ready.push(format!("{}:{port}", a["ip"].as_str().unwrap()));
        }
        for a in subset["notReadyAddresses"].as_array().into_iter().flatten() {
            not_ready.push(format!("{}:{port}", a["ip"].as_str().unwrap()));
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

fn pod_ips(cluster: &TestCluster) -> BTreeMap<String, String> {
    poll_until(TIMEOUT, "pods have IPs", || {
        let pods = cluster.live_pods("app=web");
        let ips: BTreeMap<String, String> = pods
            .iter()
            .filter_map(|p| Some((p["metadata"]["name"].as_str()?.to_string(), p["status"]["podIP"].as_str()?.to_string())))
            .collect();
        (ips.len() == pods.len() && !ips.is_empty()).then_some(ips)
    })
}

fn set_ready(cluster: &TestCluster, pod: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = format!(r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{status}"}}]}}}}"#);
    cluster.kubectl_ok(&["patch", "pod", pod, "--subresource=status", "--type=strategic", "-p", &patch]);
}

#[test]
fn endpoints_follow_readiness_and_resolve_named_ports_per_pod() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes([NodeShape::new("n1")]);
    cluster.apply("a.yaml", &pod("a", 8080, true), &[]);
    cluster.apply("b.yaml", &pod("b", 9090, false), &[]);
    cluster.apply("svc.yaml", SERVICE, &[]);
    let ips = pod_ips(&cluster);
    let (a, b) = (format!("{}:8080", ips["a"]), format!("{}:9090", ips["b"]));
    poll_until(TIMEOUT, "a ready at its port 8080, b not ready at its port 9090", || {
        (endpoint_addresses(&cluster, "web") == (vec![a.clone()], vec![b.clone()])).then_some(())
    });
    let eps = cluster.kubectl_json(&["get", "endpoints", "web"]);
    let address = eps["subsets"].as_array().unwrap().iter().find_map(|s| s["addresses"].get(0)).unwrap();
    assert_eq!(address["targetRef"]["kind"], "Pod");
    assert_eq!(address["targetRef"]["name"], "a");
    assert_eq!(address["nodeName"], "n1");

    // Readiness flips move addresses, quickly.
    for (pod, ready, expected) in [("b", true, (vec![a.clone(), b.clone()], vec![])), ("a", false, (vec![b.clone()], vec![a.clone()]))] {
        let started = Instant::now();
        set_ready(&cluster, pod, ready);
        let mut expected = expected;
        expected.0.sort();
        poll_until(TIMEOUT, &format!("endpoints after pod {pod} ready={ready}"), || {
            (endpoint_addresses(&cluster, "web") == expected).then_some(())
        });
        // kubectl itself takes most of this; the controller's own latency is measured by `cargo xtask bench controllers`.
        assert!(started.elapsed() < Duration::from_secs(5), "endpoints took {:?} to follow a readiness flip", started.elapsed());
    }

    cluster.kubectl_ok(&["delete", "pod", "a", "--wait=false"]);
    poll_until(TIMEOUT, "a deleted pod leaves the endpoints", || {
        (endpoint_addresses(&cluster, "web") == (vec![b.clone()], vec![])).then_some(())
    });
    cluster.kubectl_ok(&["delete", "service", "web"]);
    poll_until(TIMEOUT, "endpoints go with their service", || {
        (!cluster.kubectl(&["get", "endpoints", "web"]).status.success()).then_some(())
    });
}
