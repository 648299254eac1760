//! What the tests that run real pods share: the test server as a
//! ReplicationController, and reading pods back through kubectl.

use crate::nodes::Runtime;
use crate::{TestCluster, poll_until};
use serde_json::Value;
use std::time::Duration;

/// An RC of `replicas` test servers labelled app=`name`, port `http`
/// (8080), readiness probed on `/ready` every second (one failure turns it
/// unready), a short grace period.
pub fn test_server_rc(runtime: Runtime, name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
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
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {image}
        command: ["{server}"]
        ports:
        - name: http
          containerPort: 8080
        readinessProbe:
          httpGet:
            path: /ready
            port: http
          periodSeconds: 1
          failureThreshold: 1
"#,
        image = runtime.server_image(),
        server = runtime.server_command()
    )
}

/// The pods labelled app=`app`, as kubectl lists them now.
pub fn pods_of(cluster: &TestCluster, app: &str) -> Vec<Value> {
    let list = cluster.kubectl_json(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Running, Ready and not being deleted.
pub fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The pods labelled app=`app` once exactly `count` of them are ready.
pub fn ready_pods(cluster: &TestCluster, app: &str, count: usize) -> Vec<Value> {
    poll_until(Duration::from_secs(90), &format!("{count} ready pods of {app}"), || {
        let ready: Vec<Value> = pods_of(cluster, app).into_iter().filter(is_ready).collect();
        (ready.len() == count).then_some(ready)
    })
}

pub fn pod_name(pod: &Value) -> String {
    pod["metadata"]["name"].as_str().expect("a name").to_string()
}

pub fn pod_ip(pod: &Value) -> String {
    pod["status"]["podIP"].as_str().expect("a pod IP").to_string()
}

pub fn node_of(pod: &Value) -> String {
    pod["spec"]["nodeName"].as_str().expect("a node").to_string()
}
