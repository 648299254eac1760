//! EndpointSlices as Kubernetes keeps them: one endpoint per pod with its
//! ready/serving/terminating conditions (terminating pods stay while they
//! drain), named target ports resolved per pod, slices of at most 100
//! endpoints, Kubernetes' columns in `kubectl get endpointslices`, 422 for
//! invalid slices, and the `kubernetes` Service's own slice.

use hawser_tests::kwok::{NodeShape, START_NOT_READY};
use hawser_tests::{TestCluster, block_on, poll_until, table_cells};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);
const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Keeps a deleted pod terminating until the test lets it go (simulated
/// nodes confirm a pod's termination at once).
const HOLD: &str = "hawser.test/hold";

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
  finalizers:
  - {HOLD}
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
  labels:
    tier: front
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: http
";

/// The slices of Service `service`, found the way a proxy finds them: by label.
fn slices(cluster: &TestCluster, service: &str) -> Vec<Value> {
    let list = cluster.kubectl_json(&["get", "endpointslices", "-l", &format!("{SERVICE_NAME}={service}")]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// (ready, serving, terminating)
type Conditions = (bool, bool, bool);

/// Every endpoint of the Service's slices: pod name → ("address:port", conditions).
fn endpoints(cluster: &TestCluster, service: &str) -> BTreeMap<String, (String, Conditions)> {
    let mut out = BTreeMap::new();
    for slice in slices(cluster, service) {
        let port = slice["ports"][0]["port"].as_i64().unwrap_or(0);
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            let flag = |name: &str| c[name].as_bool().unwrap_or_else(|| panic!("condition {name} unset in {e}"));
            let address = format!("{}:{port}", e["addresses"][0].as_str().unwrap());
            out.insert(
                e["targetRef"]["name"].as_str().unwrap().to_string(),
                (address, (flag("ready"), flag("serving"), flag("terminating"))),
            );
        }
    }
    out
}

fn pod_ips(cluster: &TestCluster, names: &[&str]) -> BTreeMap<String, String> {
    poll_until(TIMEOUT, "pods have IPs", || {
        let ips: BTreeMap<String, String> = cluster
            .live_pods("app=web")
            .iter()
            .filter_map(|p| Some((p["metadata"]["name"].as_str()?.to_string(), p["status"]["podIP"].as_str()?.to_string())))
            .collect();
        names.iter().all(|n| ips.contains_key(*n)).then_some(ips)
    })
}

fn set_ready(cluster: &TestCluster, pod: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = format!(r#"{{"status":{{"conditions":[{{"type":"Ready","status":"{status}"}}]}}}}"#);
    cluster.kubectl_ok(&["patch", "pod", pod, "--subresource=status", "--type=strategic", "-p", &patch]);
}

fn expect_endpoints(cluster: &TestCluster, what: &str, expected: &[(&str, &str, Conditions)]) {
    let expected: BTreeMap<String, (String, Conditions)> =
        expected.iter().map(|(pod, address, c)| (pod.to_string(), (address.to_string(), *c))).collect();
    let mut last = BTreeMap::new();
    poll_until(TIMEOUT, &format!("{what}; last seen: {last:?}"), || {
        last = endpoints(cluster, "web");
        (last == expected).then_some(())
    });
}

const READY: Conditions = (true, true, false);
const NOT_READY: Conditions = (false, false, false);
const DRAINING: Conditions = (false, true, true);

#[test]
fn slices_follow_readiness_and_keep_terminating_pods_while_they_drain() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes([NodeShape::new("n1")]);
    cluster.apply("a.yaml", &pod("a", 8080, true), &[]);
    cluster.apply("b.yaml", &pod("b", 9090, false), &[]);
    cluster.apply("svc.yaml", SERVICE, &[]);
    let ips = pod_ips(&cluster, &["a", "b"]);
    let (a, b) = (format!("{}:8080", ips["a"]), format!("{}:9090", ips["b"]));
    expect_endpoints(&cluster, "a ready at 8080, b not ready at 9090", &[("a", &a, READY), ("b", &b, NOT_READY)]);

    // Pods whose named port differs sit in different slices, each labelled,
    // owned and shaped as Kubernetes makes them.
    let all = slices(&cluster, "web");
    assert_eq!(all.len(), 2, "{all:#?}");
    for slice in &all {
        let name = slice["metadata"]["name"].as_str().unwrap();
        assert!(name.starts_with("web-") && name.len() == "web-".len() + 5, "generated from web-: {name}");
        assert_eq!(slice["addressType"], "IPv4");
        let labels = &slice["metadata"]["labels"];
        assert_eq!(labels[SERVICE_NAME], "web");
        assert_eq!(labels["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
        assert_eq!(labels["tier"], "front", "the service's labels are copied");
        let owner = &slice["metadata"]["ownerReferences"][0];
        assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("Service"), Some("web")));
        assert_eq!((owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()), (Some(true), Some(true)));
        let endpoint = &slice["endpoints"][0];
        assert_eq!(endpoint["nodeName"], "n1");
        assert_eq!(endpoint["targetRef"]["kind"], "Pod");
        assert_eq!(slice["ports"][0]["name"], "http");
        assert_eq!(slice["ports"][0]["protocol"], "TCP");
    }

    set_ready(&cluster, "b", true);
    expect_endpoints(&cluster, "b turned ready", &[("a", &a, READY), ("b", &b, READY)]);
    set_ready(&cluster, "a", false);
    expect_endpoints(&cluster, "a turned unready", &[("a", &a, NOT_READY), ("b", &b, READY)]);
    set_ready(&cluster, "a", true);
    expect_endpoints(&cluster, "a ready again", &[("a", &a, READY), ("b", &b, READY)]);

    // Deleted with a grace period: held by its finalizer, the pod is
    // terminating but still serving, and stays in its slice.
    cluster.kubectl_ok(&["delete", "pod", "a", "--grace-period=30", "--wait=false"]);
    expect_endpoints(&cluster, "a terminating but serving", &[("a", &a, DRAINING), ("b", &b, READY)]);
    cluster.kubectl_ok(&["patch", "pod", "a", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    expect_endpoints(&cluster, "a gone", &[("b", &b, READY)]);

    // kubectl prints Kubernetes' columns; a's emptied slice went away.
    let table = cluster.kubectl_ok(&["get", "endpointslices", "-l", &format!("{SERVICE_NAME}=web")]);
    let mut lines = table.lines();
    assert_eq!(table_cells(lines.next().unwrap()), ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], "{table}");
    let rows: Vec<Vec<String>> = lines.map(table_cells).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert_eq!(rows[0][1..4], ["IPv4".to_string(), "9090".to_string(), ips["b"].clone()], "{table}");

    cluster.kubectl_ok(&["patch", "pod", "b", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    cluster.kubectl_ok(&["delete", "service", "web"]);
    poll_until(TIMEOUT, "slices go with their service", || slices(&cluster, "web").is_empty().then_some(()));
}

#[test]
fn two_hundred_fifty_pods_fill_three_slices_of_at_most_one_hundred() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes([NodeShape::new("n1").pods(300)]);
    let rc = "apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: 250
  selector:
    app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: registry.example/web:1
        ports:
        - name: http
          containerPort: 8080
";
    cluster.apply("svc.yaml", SERVICE, &[]);
    cluster.apply("rc.yaml", rc, &[]);
    let mut last = Vec::new();
    poll_until(Duration::from_secs(180), &format!("250 ready endpoints in 3 slices; last sizes {last:?}"), || {
        let all = slices(&cluster, "web");
        last = all.iter().map(|s| s["endpoints"].as_array().map_or(0, Vec::len)).collect::<Vec<_>>();
        last.sort_unstable();
        let ready = all
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == json!(true))
            .count();
        (ready == 250 && last == [50, 100, 100]).then_some(())
    });
    let table = cluster.kubectl_ok(&["get", "endpointslices", "-l", &format!("{SERVICE_NAME}=web")]);
    let full = table.lines().skip(1).map(table_cells).filter(|row| row[3].ends_with(" + 97 more...")).count();
    assert_eq!(full, 2, "two full slices show three addresses and 97 more:\n{table}");
}

#[test]
fn the_api_serves_endpoint_slices_refuses_invalid_ones_and_publishes_the_api_servers() {
    let cluster = TestCluster::start_with(&["--advertise-address", "198.51.100.1"]);
    let resources = cluster.kubectl_ok(&["api-resources", "--api-group=discovery.k8s.io"]);
    let row = resources.lines().skip(1).map(table_cells).next().unwrap_or_default();
    assert_eq!(row, ["endpointslices", "discovery.k8s.io/v1", "true", "EndpointSlice"], "{resources}");

    // The kubernetes Service's slice, as kube-apiserver's reconciler writes it.
    let slice = cluster.kubectl_json(&["get", "endpointslice", "kubernetes", "-n", "default"]);
    assert_eq!(slice["metadata"]["labels"], json!({SERVICE_NAME: "kubernetes"}), "{slice}");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"], json!([{"addresses": ["198.51.100.1"], "conditions": {"ready": true}}]));
    assert_eq!(slice["ports"], json!([{"name": "https", "port": cluster.port(), "protocol": "TCP"}]));

    // Invalid slices: 422 with Kubernetes' causes, through kubectl and raw.
    let bad = "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bad
addressType: IPv4
endpoints:
- addresses: []
- addresses: [\"127.0.0.1\"]
ports:
- name: Web
  port: 80
";
    let path = cluster.write_manifest("bad.yaml", bad);
    let err = cluster.kubectl_fails(&["create", "-f", path.to_str().unwrap()]);
    assert!(err.contains(r#"The EndpointSlice "bad" is invalid"#), "{err}");
    assert!(err.contains("endpoints[0].addresses: Required value: must contain at least 1 address"), "{err}");
    assert!(err.contains(r#"endpoints[1].addresses[0]: Invalid value: "127.0.0.1": may not be in the loopback range"#), "{err}");
    assert!(err.contains(r#"ports[0].name: Invalid value: "Web""#), "{err}");
    let (status, body) = block_on(async {
        let resp = cluster
            .client()
            .post(format!("{}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", cluster.url()))
            .json(&json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "typeless"},
                          "endpoints": [{"addresses": ["10.244.0.5"]}]}))
            .send()
            .await
            .expect("POST reaches the server");
        (resp.status().as_u16(), resp.json::<Value>().await.expect("a JSON Status"))
    });
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(body["details"]["causes"], json!([{"field": "addressType", "message": "Required value", "reason": "FieldValueRequired"}]));

    // A slice someone else manages, for a Service without a selector, is
    // theirs: the controller leaves it as it is.
    cluster.apply(
        "ext.yaml",
        "apiVersion: v1
kind: Service
metadata:
  name: ext
spec:
  ports:
  - port: 5432
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ext-1
  labels:
    kubernetes.io/service-name: ext
    endpointslice.kubernetes.io/managed-by: staff.example.com
addressType: IPv4
endpoints:
- addresses: [\"192.0.2.10\"]
ports:
- port: 5432
",
        &[],
    );
    let created = cluster.kubectl_json(&["get", "endpointslice", "ext-1"]);
    assert_eq!(created["ports"], json!([{"name": "", "port": 5432, "protocol": "TCP"}]), "ports are defaulted as Kubernetes does");
    // A Service with a selector in the same namespace gets its own slices
    // meanwhile; by then the controller has seen ext and its slice too.
    cluster.apply("svc.yaml", SERVICE, &[]);
    poll_until(TIMEOUT, "web gets its placeholder slice", || (slices(&cluster, "web").len() == 1).then_some(()));
    let versions: Vec<Value> = slices(&cluster, "ext").iter().map(|s| s["metadata"]["resourceVersion"].clone()).collect();
    assert_eq!(versions, [created["metadata"]["resourceVersion"].clone()], "the controller left ext's slice alone");
}
