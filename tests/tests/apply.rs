//! `kubectl apply`: client-side and server-side, of each kind users start with,
//! and the promise that re-applying an unchanged file writes nothing.

use hawser_tests::TestCluster;
use hawser_tests::manifests::{DEPLOYMENT, POD, RC, SERVICE_NODEPORT};

/// (file name, manifest, kubectl kind, object name, what kubectl calls it)
const OBJECTS: &[(&str, &str, &str, &str, &str)] = &[
    ("pod.yaml", POD, "pod", "web", "pod/web"),
    ("service.yaml", SERVICE_NODEPORT, "service", "web", "service/web"),
    ("rc.yaml", RC, "replicationcontroller", "web", "replicationcontroller/web"),
    ("deployment.yaml", DEPLOYMENT, "deployment", "api", "deployment.apps/api"),
];

#[test]
fn client_side_apply_creates_each_kind_and_reapply_is_unchanged() {
    let cluster = TestCluster::start();
    for &(file, manifest, kind, name, shown) in OBJECTS {
        let path = cluster.write_manifest(file, manifest);
        let path = path.to_str().unwrap();
        let out = cluster.kubectl_ok(&["apply", "-f", path]);
        assert_eq!(out.trim(), format!("{shown} created"));
        let obj = cluster.kubectl_json(&["get", kind, name]);
        let annotation = obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap_or_else(|| panic!("{shown} lacks the last-applied annotation: {obj}"));
        assert!(annotation.contains(name), "{annotation}");
        let rv = cluster.resource_version(kind, name, "default");

        let again = cluster.kubectl_ok(&["apply", "-f", path]);
        assert_eq!(again.trim(), format!("{shown} unchanged"));
        assert_eq!(cluster.resource_version(kind, name, "default"), rv, "re-applying an unchanged {file} wrote a new resourceVersion");
    }
}

#[test]
fn server_side_apply_creates_each_kind_and_reapply_keeps_the_resource_version() {
    let cluster = TestCluster::start();
    for &(file, manifest, kind, name, shown) in OBJECTS {
        let path = cluster.write_manifest(file, manifest);
        let path = path.to_str().unwrap();
        let out = cluster.kubectl_ok(&["apply", "--server-side", "-f", path]);
        assert_eq!(out.trim(), format!("{shown} serverside-applied"));
        let obj = cluster.kubectl_json(&["get", kind, name, "--show-managed-fields"]);
        let managers: Vec<&str> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap_or_else(|| panic!("{shown} has no managedFields after server-side apply: {obj}"))
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(managers.contains(&"kubectl"), "managers {managers:?} of {shown}");
        let rv = cluster.resource_version(kind, name, "default");

        cluster.kubectl_ok(&["apply", "--server-side", "-f", path]);
        assert_eq!(
            cluster.resource_version(kind, name, "default"),
            rv,
            "server-side re-apply of an unchanged {file} wrote a new resourceVersion"
        );
    }
}

#[test]
fn client_side_apply_of_a_changed_manifest_merges_lists_by_key() {
    let cluster = TestCluster::start();
    let path = cluster.write_manifest("pod.yaml", POD);
    cluster.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    let before = cluster.resource_version("pod", "web", "default");

    // Change a label and the image (one of the few pod spec fields that may
    // change); a strategic merge patch must keep the container's ports and
    // env (a plain merge patch would replace the whole containers list).
    let changed = POD.replace("tier: frontend", "tier: edge").replace("image: nginx:1.27", "image: nginx:1.28");
    let path = cluster.write_manifest("pod-changed.yaml", &changed);
    let out = cluster.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(out.trim(), "pod/web configured");

    let pod = cluster.kubectl_json(&["get", "pod", "web"]);
    assert_eq!(pod["metadata"]["labels"]["tier"], "edge", "{pod}");
    assert_eq!(pod["metadata"]["labels"]["app"], "web", "{pod}");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.28", "{pod}");
    assert_eq!(container["env"][0]["value"], "test", "env lost in the patch: {pod}");
    assert_eq!(container["ports"][0]["containerPort"], 80, "ports lost in the patch: {pod}");
    assert_eq!(container["ports"][0]["name"], "http", "{pod}");
    assert_ne!(cluster.resource_version("pod", "web", "default"), before);
}

#[test]
fn get_pod_yaml_round_trips_through_apply() {
    let cluster = TestCluster::start();
    let path = cluster.write_manifest("pod.yaml", POD);
    cluster.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
    let before = cluster.kubectl_json(&["get", "pod", "web"]);

    let yaml = cluster.kubectl_ok(&["get", "pod", "web", "-o", "yaml"]);
    let exported = cluster.write_manifest("exported.yaml", &yaml);
    let out = cluster.kubectl_ok(&["apply", "-f", exported.to_str().unwrap()]);
    assert!(out.trim() == "pod/web configured" || out.trim() == "pod/web unchanged", "apply of the exported YAML printed {out:?}");

    let after = cluster.kubectl_json(&["get", "pod", "web"]);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"], "the pod was replaced");
    assert_eq!(after["spec"]["containers"], before["spec"]["containers"]);
    assert_eq!(after["metadata"]["labels"], before["metadata"]["labels"]);

    // The exported YAML also recreates the pod from scratch once it is gone.
    cluster.kubectl_ok(&["delete", "pod", "web"]);
    let recreated = cluster.write_manifest("recreate.yaml", &strip_server_fields(&yaml));
    cluster.kubectl_ok(&["apply", "-f", recreated.to_str().unwrap()]);
    let again = cluster.kubectl_json(&["get", "pod", "web"]);
    assert_eq!(again["spec"]["containers"], before["spec"]["containers"]);
}

/// Drops the fields a server sets (uid, resourceVersion, ...) from an exported
/// object, as a user would before re-creating it.
fn strip_server_fields(yaml: &str) -> String {
    let mut obj: serde_json::Value = serde_yaml::from_str(yaml).expect("exported YAML parses");
    let meta = obj["metadata"].as_object_mut().expect("metadata");
    for field in ["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"] {
        meta.remove(field);
    }
    obj.as_object_mut().unwrap().remove("status");
    serde_yaml::to_string(&obj).unwrap()
}

#[test]
fn kubectl_create_from_a_file_creates_once_then_reports_already_exists() {
    let cluster = TestCluster::start();
    // `create -f` posts the manifest; a second time is AlreadyExists.
    let path = cluster.write_manifest("pod.yaml", POD);
    let path = path.to_str().unwrap();
    assert_eq!(cluster.kubectl_ok(&["create", "-f", path]).trim(), "pod/web created");
    let err = cluster.kubectl_fails(&["create", "-f", path]);
    assert!(err.contains(r#"Error from server (AlreadyExists): error when creating"#), "{err}");
    assert!(err.contains(r#"pods "web" already exists"#), "{err}");
}

/// kubectl's generator commands build the object themselves and send it as
/// Kubernetes protobuf, not JSON.
#[test]
fn kubectl_create_generator_commands_create_objects_from_protobuf_bodies() {
    let cluster = TestCluster::start();
    assert_eq!(cluster.kubectl_ok(&["create", "namespace", "made"]).trim(), "namespace/made created");
    cluster.kubectl_ok(&["create", "configmap", "settings", "-n", "made", "--from-literal=k=v"]);
    cluster.kubectl_ok(&["create", "secret", "generic", "creds", "-n", "made", "--from-literal=password=s3cret"]);
    cluster.kubectl_ok(&["create", "deployment", "hello", "-n", "made", "--image=nginx:1.27", "--replicas=2", "--port=80"]);
    cluster.kubectl_ok(&["create", "deployment", "idle", "-n", "made", "--image=nginx:1.27", "--replicas=0"]);
    cluster.kubectl_ok(&["create", "service", "nodeport", "front", "-n", "made", "--tcp=80:8080", "--node-port=30555"]);

    let ns = cluster.kubectl_json(&["get", "namespace", "made"]);
    assert_eq!(ns["status"]["phase"], "Active", "{ns}");
    let cm = cluster.kubectl_json(&["get", "configmap", "settings", "-n", "made"]);
    assert_eq!(cm["data"]["k"], "v", "{cm}");
    let secret = cluster.kubectl_json(&["get", "secret", "creds", "-n", "made"]);
    assert_eq!(secret["data"]["password"], "czNjcmV0", "base64 of s3cret: {secret}");
    let dep = cluster.kubectl_json(&["get", "deployment", "hello", "-n", "made"]);
    assert_eq!(dep["spec"]["replicas"], 2, "{dep}");
    let container = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!((container["image"].as_str(), container["ports"][0]["containerPort"].as_i64()), (Some("nginx:1.27"), Some(80)), "{dep}");
    let idle = cluster.kubectl_json(&["get", "deployment", "idle", "-n", "made"]);
    assert_eq!(idle["spec"]["replicas"], 0, "an explicit zero is a value, not an omission: {idle}");
    let svc = cluster.kubectl_json(&["get", "service", "front", "-n", "made"]);
    assert_eq!((svc["spec"]["type"].as_str(), svc["spec"]["ports"][0]["nodePort"].as_i64()), (Some("NodePort"), Some(30555)), "{svc}");
}
