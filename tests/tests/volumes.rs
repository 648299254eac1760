//! Pod volumes and environment on a real agent: an init container fills an
//! emptyDir the app container then serves; ConfigMap and Secret keys appear
//! as files and as environment; a hostPath shows the node's directory; the
//! downward API fills env from the pod's own fields.

use hawser_tests::nodes::{OneNode, test_server_command};
use hawser_tests::poll_until;
use std::time::Duration;

#[test]
fn init_containers_volumes_and_env_reach_the_app_container() {
    let node = OneNode::start(&[]);
    let host_dir = node.dir().join("host-share");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("note"), "from the node\n").unwrap();
    let manifest = format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
stringData:
  password: s3cr3t
---
apiVersion: v1
kind: Pod
metadata:
  name: filled
  labels:
    tier: demo
spec:
  initContainers:
  - name: fill
    image: busybox
    command: ["sh", "-c", "echo hello from init > /data/greeting"]
    volumeMounts: [{{name: scratch, mountPath: /data}}]
  containers:
  - name: web
    image: hawser-test-server
    command: ["{server}"]
    env:
    - name: COLOR
      valueFrom: {{configMapKeyRef: {{name: settings, key: color}}}}
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}
    - name: MY_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: MY_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    - name: GREETING
      value: "$(COLOR) sky"
    volumeMounts:
    - {{name: scratch, mountPath: /data}}
    - {{name: config, mountPath: /etc/settings}}
    - {{name: secret, mountPath: /etc/creds, readOnly: true}}
    - {{name: share, mountPath: /mnt/share}}
    readinessProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: config, configMap: {{name: settings}}}}
  - {{name: secret, secret: {{secretName: creds}}}}
  - {{name: share, hostPath: {{path: {share}, type: Directory}}}}
"#,
        server = test_server_command(),
        share = host_dir.display()
    );
    node.apply("filled.yaml", &manifest, &[]);
    let pod = poll_until(Duration::from_secs(60), "pod filled Ready", || {
        let p = node.kubectl_json(&["get", "pod", "filled", "-o", "json"]);
        let ready = p["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        ready.then_some(p)
    });
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init:#}");
    let ip = pod["status"]["podIP"].as_str().unwrap();
    let get = |path: &str| node.host.fetch(&format!("http://{ip}:8080{path}")).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(get("/file?path=/data/greeting"), "hello from init\n", "the init container's emptyDir write");
    assert_eq!(get("/file?path=/etc/settings/color"), "blue");
    assert_eq!(get("/file?path=/etc/creds/password"), "s3cr3t");
    assert_eq!(get("/file?path=/mnt/share/note"), "from the node\n");
    assert_eq!(get("/env/COLOR"), "blue\n");
    assert_eq!(get("/env/PASSWORD"), "s3cr3t\n");
    assert_eq!(get("/env/MY_NAME"), "filled\n");
    assert_eq!(get("/env/MY_IP"), format!("{ip}\n"));
    assert_eq!(get("/env/GREETING"), "blue sky\n");
    // A ConfigMap change reaches the mounted file (refreshed within a minute).
    node.kubectl_ok(&["patch", "configmap", "settings", "-p", r#"{"data":{"color":"green"}}"#]);
    poll_until(Duration::from_secs(90), "the configMap file follows the object", || {
        (get("/file?path=/etc/settings/color") == "green").then_some(())
    });
}

#[test]
fn a_missing_config_map_holds_the_container_with_a_clear_reason_until_it_appears() {
    let node = OneNode::start(&[]);
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: waiting
spec:
  containers:
  - name: web
    image: hawser-test-server
    command: ["{server}"]
    env:
    - name: COLOR
      valueFrom: {{configMapKeyRef: {{name: later, key: color}}}}
"#,
        server = test_server_command()
    );
    node.apply("waiting.yaml", &manifest, &[]);
    let waiting = poll_until(Duration::from_secs(30), "CreateContainerConfigError", || {
        let p = node.kubectl_json(&["get", "pod", "waiting", "-o", "json"]);
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "CreateContainerConfigError").then_some(w)
    });
    assert_eq!(waiting["message"], "configmap \"later\" not found");
    let get = node.kubectl_ok(&["get", "pod", "waiting"]);
    assert!(get.contains("CreateContainerConfigError"), "{get}");
    node.kubectl_ok(&["create", "configmap", "later", "--from-literal=color=red"]);
    poll_until(Duration::from_secs(60), "the pod starts once the ConfigMap exists", || {
        let p = node.kubectl_json(&["get", "pod", "waiting", "-o", "json"]);
        (p["status"]["phase"] == "Running" && p["status"]["containerStatuses"][0]["state"]["running"].is_object()).then_some(())
    });
}
