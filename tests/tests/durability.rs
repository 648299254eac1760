//! What the server acknowledged survives a crash (`kill -9`) and a clean stop,
//! and resourceVersions keep increasing across restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hawser_tests::{TestCluster, manifests};
use serde_json::{Value, json};

const CREATES: usize = 1000;
const TASKS: usize = 50;
/// SIGKILL lands once this many creates have been acknowledged, so plenty of
/// requests are still in flight or not yet sent.
const KILL_AFTER: usize = 300;

fn rv_number(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("resourceVersion is not a store revision number: {obj}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_creates_survive_kill_9_and_resource_versions_keep_increasing() {
    // The store alone: a scheduler would write each unschedulable pod's
    // status after its create and change the resourceVersion we compare.
    let mut cluster = TestCluster::start_with(&["--disable-scheduler", "--disable-controller-manager"]);
    let client = cluster.client();
    let pods_url = format!("{}/api/v1/namespaces/default/pods", cluster.url());
    let pid = libc::pid_t::try_from(cluster.pid()).unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (client, url) = (client.clone(), pods_url.clone());
        let (next, acked, killed) = (next.clone(), acked.clone(), killed.clone());
        tasks.push(tokio::spawn(async move {
            // name → resourceVersion of every create answered 201.
            let mut confirmed: HashMap<String, u64> = HashMap::new();
            let mut failures = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= CREATES {
                    break;
                }
                let name = format!("durable-{i:04}");
                let pod = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                });
                let result = client.post(&url).timeout(Duration::from_secs(10)).json(&pod).send().await;
                let resp = match result {
                    Ok(resp) => resp,
                    Err(_) if killed.load(Ordering::SeqCst) => {
                        failures += 1;
                        continue;
                    }
                    Err(e) => panic!("create {name} failed before the kill: {e}"),
                };
                let status = resp.status().as_u16();
                // A 201 whose body never arrived was not acknowledged to us.
                let Ok(body) = resp.json::<Value>().await else {
                    failures += 1;
                    continue;
                };
                match status {
                    201 => {
                        confirmed.insert(name, rv_number(&body));
                        if acked.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                            killed.store(true, Ordering::SeqCst);
                            // SAFETY: kill(2) on the server, our unreaped child.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                    _ if killed.load(Ordering::SeqCst) => failures += 1,
                    _ => panic!("create {name} answered {status} before the kill: {body}"),
                }
            }
            (confirmed, failures)
        }));
    }
    let mut confirmed = HashMap::new();
    let mut failures = 0;
    for task in tasks {
        let (c, f) = task.await.expect("create task panicked");
        confirmed.extend(c);
        failures += f;
    }
    assert!(killed.load(Ordering::SeqCst), "the kill never happened: only {} creates acknowledged", confirmed.len());
    assert!(failures > 0, "all {CREATES} creates succeeded although the server was SIGKILLed after {KILL_AFTER}");

    // Shown with --nocapture, and with the failure message if a later check fails.
    eprintln!("{} creates acknowledged, {failures} failed after the kill at {KILL_AFTER}", confirmed.len());

    // Reap the killed process and start again on the same data dir.
    tokio::task::block_in_place(|| cluster.restart());
    let client = cluster.client();
    let list: Value = client.get(&pods_url).send().await.expect("list after restart").json().await.expect("a PodList");
    let stored: HashMap<String, u64> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| (p["metadata"]["name"].as_str().unwrap().to_owned(), rv_number(p)))
        .collect();
    let mut lost: Vec<&String> = confirmed.keys().filter(|n| !stored.contains_key(*n)).collect();
    lost.sort();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged creates are gone after kill -9, e.g. {:?} (write acknowledged before fsync?)",
        lost.len(),
        confirmed.len(),
        &lost[..lost.len().min(5)]
    );
    for (name, rv) in &confirmed {
        assert_eq!(stored[name], *rv, "{name} came back with a different resourceVersion");
    }
    let mut rvs: Vec<u64> = stored.values().copied().collect();
    rvs.sort_unstable();
    rvs.dedup();
    assert_eq!(rvs.len(), stored.len(), "two pods share a resourceVersion (revision reused?)");

    let highest = *rvs.last().unwrap();
    let after: Value = client
        .post(&pods_url)
        .json(&json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "after-restart"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .send()
        .await
        .expect("create after restart")
        .json()
        .await
        .expect("the created pod");
    let rv = rv_number(&after);
    assert!(rv > highest, "create after restart got resourceVersion {rv}, not above {highest} from before the crash");
    let list_rv: u64 = list["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).expect("list resourceVersion");
    assert!(rv > list_rv, "new write {rv} not above the list revision {list_rv} seen before it");
}

#[test]
fn sigterm_stops_the_server_cleanly_and_keeps_data_and_credentials() {
    let mut cluster = TestCluster::start();
    cluster.apply("ns.yaml", &manifests::namespace("kept"), &[]);
    cluster.apply("cm.yaml", &manifests::configmap("settings"), &["-n", "kept"]);
    let rv_before = cluster.resource_version("configmap", "settings", "kept");
    let kubeconfig = std::fs::read(cluster.kubeconfig_path()).unwrap();
    let ca = std::fs::read(cluster.data_dir().join("pki/ca.crt")).expect("DATA/pki/ca.crt exists");

    let status = cluster.terminate(Duration::from_secs(15));
    assert!(status.success(), "SIGTERM should end the server with exit code 0, got {status}");
    cluster.restart();

    assert_eq!(
        std::fs::read(cluster.kubeconfig_path()).unwrap(),
        kubeconfig,
        "a restart rewrote kubeconfig.yaml: clients holding the old token or CA would break"
    );
    assert_eq!(std::fs::read(cluster.data_dir().join("pki/ca.crt")).unwrap(), ca, "a restart replaced the CA");
    let cm = cluster.kubectl_json(&["get", "configmap", "settings", "-n", "kept"]);
    assert_eq!(cm["data"]["k"], "v");
    assert_eq!(cm["metadata"]["resourceVersion"], rv_before.as_str());
}
