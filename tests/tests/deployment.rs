//! Deployments roll out through ReplicaSets: a rolling update with
//! maxUnavailable=0 never drops below the replica count of ready pods (a
//! watcher checks every event), and `kubectl rollout` history, undo and
//! restart work.

use futures::StreamExt;
use hawser_tests::kwok::NodeShape;
use hawser_tests::{TestCluster, poll_until};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
spec:
  replicas: 4
  selector:
    matchLabels:
      app: roll
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app: roll
    spec:
      containers:
      - name: app
        image: {image}
"
    )
}

/// Counts ready, not-terminating pods of `app=roll` on every watch event and
/// remembers the lowest count seen while armed.
struct ReadyWatcher {
    armed: Arc<AtomicBool>,
    lowest: Arc<AtomicUsize>,
    current: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadyWatcher {
    fn start(cluster: &TestCluster) -> Self {
        let (armed, lowest, current, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(usize::MAX)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let kubeconfig = cluster.kubeconfig_path();
        let (a, l, c, s) = (armed.clone(), lowest.clone(), current.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
                let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap()).unwrap();
                let pods: Api<Pod> = Api::namespaced(client, "default");
                let mut events = watcher::watcher(pods, watcher::Config::default().labels("app=roll")).boxed();
                let ready_pods: Mutex<HashMap<String, bool>> = Mutex::default();
                while !s.load(Ordering::SeqCst) {
                    let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_millis(200), events.next()).await else { continue };
                    let mut map = ready_pods.lock().unwrap();
                    match event {
                        watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                            let ready = p.metadata.deletion_timestamp.is_none()
                                && p.status
                                    .iter()
                                    .flat_map(|s| s.conditions.iter().flatten())
                                    .any(|c| c.type_ == "Ready" && c.status == "True");
                            map.insert(p.metadata.name.unwrap_or_default(), ready);
                        }
                        watcher::Event::Delete(p) => {
                            map.remove(&p.metadata.name.unwrap_or_default());
                        }
                        _ => continue,
                    }
                    let ready = map.values().filter(|r| **r).count();
                    c.store(ready, Ordering::SeqCst);
                    if a.load(Ordering::SeqCst) {
                        l.fetch_min(ready, Ordering::SeqCst);
                    }
                }
            });
        });
        Self { armed, lowest, current, stop, thread: Some(thread) }
    }
}

impl Drop for ReadyWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn images(cluster: &TestCluster) -> Vec<String> {
    let mut images: Vec<String> = cluster
        .live_pods("app=roll")
        .iter()
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_string())
        .collect();
    images.sort();
    images
}

fn wait_for_image(cluster: &TestCluster, image: &str) {
    poll_until(TIMEOUT, &format!("4 ready pods of {image} and no others"), || {
        let pods = cluster.live_pods("app=roll");
        let all_new =
            pods.len() == 4 && pods.iter().all(|p| p["spec"]["containers"][0]["image"] == image && p["status"]["phase"] == "Running");
        all_new.then_some(())
    });
}

#[test]
fn a_rolling_update_with_max_unavailable_zero_keeps_every_replica_ready_and_undo_goes_back() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes(["n1", "n2", "n3"].map(NodeShape::new));
    let watcher = ReadyWatcher::start(&cluster);
    cluster.apply("deploy.yaml", &deployment("registry.example/app:v1"), &[]);
    cluster.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    wait_for_image(&cluster, "registry.example/app:v1");
    poll_until(TIMEOUT, "the watcher sees 4 ready pods", || (watcher.current.load(Ordering::SeqCst) == 4).then_some(()));

    watcher.armed.store(true, Ordering::SeqCst);
    cluster.apply("deploy.yaml", &deployment("registry.example/app:v2"), &[]);
    let status = cluster.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    wait_for_image(&cluster, "registry.example/app:v2");
    let lowest = watcher.lowest.load(Ordering::SeqCst);
    assert!(lowest >= 4, "ready pods dropped to {lowest} during a rollout with maxUnavailable=0");
    let rs = cluster.kubectl_json(&["get", "rs", "-l", "app=roll"]);
    let rs = rs["items"].as_array().unwrap();
    assert_eq!(rs.len(), 2, "one ReplicaSet per template");
    for r in rs {
        let hash = r["metadata"]["labels"]["pod-template-hash"].as_str().expect("RS has a pod-template-hash label");
        assert_eq!(r["metadata"]["name"], format!("roll-{hash}"));
    }

    let history = cluster.kubectl_ok(&["rollout", "history", "deployment/roll"]);
    assert!(history.lines().filter(|l| l.starts_with('1') || l.starts_with('2')).count() == 2, "two revisions:\n{history}");

    cluster.kubectl_ok(&["rollout", "undo", "deployment/roll"]);
    cluster.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    wait_for_image(&cluster, "registry.example/app:v1");
    let lowest = watcher.lowest.load(Ordering::SeqCst);
    assert!(lowest >= 4, "ready pods dropped to {lowest} during the undo");
    let deploy = cluster.kubectl_json(&["get", "deployment", "roll"]);
    assert_eq!(
        deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3",
        "undo makes revision 1 current again as revision 3"
    );
    assert_eq!(deploy["status"]["updatedReplicas"], 4);
    assert_eq!(deploy["status"]["availableReplicas"], 4);

    let before = images(&cluster);
    let names_before: Vec<String> =
        cluster.live_pods("app=roll").iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_string()).collect();
    cluster.kubectl_ok(&["rollout", "restart", "deployment/roll"]);
    cluster.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
    poll_until(TIMEOUT, "every pod replaced by the restart", || {
        let pods = cluster.live_pods("app=roll");
        (pods.len() == 4 && pods.iter().all(|p| !names_before.contains(&p["metadata"]["name"].as_str().unwrap().to_string()))).then_some(())
    });
    assert_eq!(images(&cluster), before, "a restart keeps the image");
}

#[test]
fn recreate_replaces_every_pod_and_history_is_capped() {
    let cluster = TestCluster::start();
    let _nodes = cluster.simulated_nodes([NodeShape::new("n1")]);
    let manifest = |image: &str| {
        deployment(image)
            .replace("    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n", "    type: Recreate\n")
            .replace("  replicas: 4\n", "  replicas: 4\n  revisionHistoryLimit: 1\n")
    };
    for version in ["v1", "v2", "v3"] {
        let image = format!("registry.example/app:{version}");
        cluster.apply("deploy.yaml", &manifest(&image), &[]);
        cluster.kubectl_ok(&["rollout", "status", "deployment/roll", "--timeout=60s"]);
        wait_for_image(&cluster, &image);
    }
    poll_until(TIMEOUT, "old ReplicaSets beyond revisionHistoryLimit=1 are deleted", || {
        let rs = cluster.kubectl_json(&["get", "rs", "-l", "app=roll"]);
        (rs["items"].as_array().map_or(0, Vec::len) == 2).then_some(())
    });
}
