//! Changing and removing things: scale, watch, delete (one, --all, a namespace).

use std::time::Duration;

use hawser_tests::manifests::{self, DEPLOYMENT, POD, RC, SERVICE_NODEPORT};
use hawser_tests::{TestCluster, poll_until, table_cells};

fn pod_named(name: &str) -> String {
    POD.replace("name: web\n  labels", &format!("name: {name}\n  labels"))
}

#[test]
fn scale_rc_updates_spec_replicas() {
    let cluster = TestCluster::start();
    cluster.apply("rc.yaml", RC, &[]);
    let out = cluster.kubectl_ok(&["scale", "rc", "web", "--replicas=3"]);
    assert_eq!(out.trim(), "replicationcontroller/web scaled");
    let rc = cluster.kubectl_json(&["get", "rc", "web"]);
    assert_eq!(rc["spec"]["replicas"], 3, "{rc}");
    assert_eq!(rc["metadata"]["generation"], 2, "a spec change bumps generation: {rc}");

    // The same through the apps/v1 scale subresource.
    cluster.apply("deployment.yaml", DEPLOYMENT, &[]);
    cluster.kubectl_ok(&["scale", "deployment", "api", "--replicas=5"]);
    let dep = cluster.kubectl_json(&["get", "deployment", "api"]);
    assert_eq!(dep["spec"]["replicas"], 5, "{dep}");
}

#[test]
fn get_pods_watch_prints_changes_made_by_another_client() {
    let cluster = TestCluster::start();
    cluster.apply("seed.yaml", &pod_named("seed"), &[]);
    let mut watch = cluster.kubectl_stream(&["get", "pods", "-w", "--output-watch-events"]);
    let wait = Duration::from_secs(20);
    let event = |kind: &'static str, name: &'static str| {
        move |line: &str| {
            let cells = table_cells(line);
            cells.len() > 2 && cells[0] == kind && cells[1] == name
        }
    };
    // The initial list arrives as ADDED; once it has been printed kubectl
    // watches from the list's resourceVersion, so later changes cannot be
    // folded into the list.
    watch.expect_line(wait, "the initial list (ADDED seed)", event("ADDED", "seed"));

    cluster.apply("watched.yaml", &pod_named("watched"), &[]);
    let added = watch.expect_line(wait, "ADDED watched", event("ADDED", "watched"));
    assert!(added.contains("Pending"), "{added}");

    cluster.kubectl_ok(&["label", "pod", "watched", "touched=yes"]);
    watch.expect_line(wait, "MODIFIED watched (after a label change)", event("MODIFIED", "watched"));

    cluster.kubectl_ok(&["delete", "pod", "watched"]);
    watch.expect_line(wait, "DELETED watched", event("DELETED", "watched"));
}

#[test]
fn delete_pod_removes_it() {
    let cluster = TestCluster::start();
    cluster.apply("pod.yaml", POD, &[]);
    cluster.apply("keep.yaml", &pod_named("keep"), &[]);
    let out = cluster.kubectl_ok(&["delete", "pod", "web"]);
    assert_eq!(out.trim(), r#"pod "web" deleted"#);
    let err = cluster.kubectl_fails(&["get", "pod", "web"]);
    assert!(err.contains("NotFound"), "{err}");
    assert_eq!(cluster.kubectl_ok(&["get", "pods", "-o", "name"]).trim(), "pod/keep");
}

#[test]
fn delete_deployments_all_removes_every_deployment_and_nothing_else() {
    let cluster = TestCluster::start();
    cluster.apply("api.yaml", DEPLOYMENT, &[]);
    let worker = DEPLOYMENT.replace("name: api", "name: worker");
    cluster.apply("worker.yaml", &worker, &[]);
    cluster.apply("rc.yaml", RC, &[]);
    assert_eq!(cluster.kubectl_ok(&["get", "deployments", "-o", "name"]).lines().count(), 2);

    let out = cluster.kubectl_ok(&["delete", "deployments", "--all"]);
    assert!(out.contains(r#"deployment.apps "api" deleted"#), "{out}");
    assert!(out.contains(r#"deployment.apps "worker" deleted"#), "{out}");
    poll_until(
        Duration::from_secs(20),
        "deployments still listed after `delete deployments --all` (deletion stuck on a finalizer?)",
        || cluster.kubectl_ok(&["get", "deployments", "-o", "name"]).trim().is_empty().then_some(()),
    );
    assert_eq!(cluster.kubectl_ok(&["get", "rc", "-o", "name"]).trim(), "replicationcontroller/web");
}

#[test]
fn delete_namespace_takes_its_objects_with_it() {
    let cluster = TestCluster::start();
    cluster.apply("ns.yaml", &manifests::namespace("team-a"), &[]);
    for (file, manifest) in [("pod.yaml", POD), ("svc.yaml", SERVICE_NODEPORT), ("rc.yaml", RC), ("deployment.yaml", DEPLOYMENT)] {
        cluster.apply(file, manifest, &["-n", "team-a"]);
    }
    cluster.apply("cm.yaml", &manifests::configmap("settings"), &["-n", "team-a"]);
    // The same names in another namespace must survive.
    cluster.apply("pod.yaml", POD, &["-n", "default"]);

    let kinds = "pods,services,replicationcontrollers,deployments,configmaps";
    let listed = cluster.kubectl_ok(&["get", kinds, "-n", "team-a", "-o", "name"]);
    assert!(listed.lines().count() >= 5, "{listed}");

    let out = cluster.kubectl_ok(&["delete", "namespace", "team-a"]);
    assert_eq!(out.trim(), r#"namespace "team-a" deleted"#);
    poll_until(Duration::from_secs(30), "namespace team-a still exists 30 s after delete (namespace finalizer never ran?)", || {
        let out = cluster.kubectl(&["get", "namespace", "team-a"]);
        (!out.status.success()).then_some(())
    });
    let left = cluster.kubectl_ok(&["get", kinds, "-n", "team-a", "-o", "name"]);
    assert_eq!(left.trim(), "", "objects outlived their namespace");
    assert_eq!(cluster.kubectl_ok(&["get", "pods", "-n", "default", "-o", "name"]).trim(), "pod/web");

    // A namespace of the same name starts empty.
    cluster.apply("ns.yaml", &manifests::namespace("team-a"), &[]);
    let fresh = cluster.kubectl_ok(&["get", kinds, "-n", "team-a", "-o", "name"]);
    assert_eq!(fresh.trim(), "", "a recreated namespace shows old objects");
}
