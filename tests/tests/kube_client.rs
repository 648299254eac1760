//! A Rust client written for Kubernetes (kube-rs) works unchanged: it loads
//! our kubeconfig, lists pods and follows them with a watcher.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use hawser_tests::TestCluster;
use hawser_tests::manifests::POD;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};

async fn client_for(cluster: &TestCluster) -> Client {
    let kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path()).expect("kube-rs reads kubeconfig.yaml");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube-rs accepts kubeconfig.yaml");
    Client::try_from(config).expect("kube-rs builds a client from it")
}

fn pod(name: &str) -> Pod {
    let mut pod: Pod = serde_yaml::from_str(POD).expect("manifest parses as a Pod");
    pod.metadata.name = Some(name.to_owned());
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_and_watches_pods() {
    let cluster = TestCluster::start();
    let client = client_for(&cluster).await;
    let pods: Api<Pod> = Api::namespaced(client, "default");

    pods.create(&PostParams::default(), &pod("listed")).await.expect("create pod listed");
    let list = pods.list(&ListParams::default()).await.expect("list pods");
    let names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["listed"]);
    assert!(list.metadata.resource_version.is_some(), "a list needs metadata.resourceVersion");
    let labelled = pods.list(&ListParams::default().labels("app=web,tier=frontend")).await.expect("list by labels");
    assert_eq!(labelled.items.len(), 1);
    let none = pods.list(&ListParams::default().labels("app=db")).await.expect("list by labels");
    assert!(none.items.is_empty());

    let mut events = watcher(pods.clone(), watcher::Config::default()).boxed();
    // The watcher lists first (Init, InitApply..., InitDone), then watches.
    let init = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        loop {
            match events.try_next().await.expect("watcher error during initial list") {
                Some(watcher::Event::InitApply(p)) => seen.push(p.name_any()),
                Some(watcher::Event::InitDone) => return seen,
                Some(_) => {}
                None => panic!("watch stream ended during the initial list"),
            }
        }
    })
    .await
    .expect("watcher did not finish its initial list within 20 s");
    assert_eq!(init, ["listed"]);

    pods.create(&PostParams::default(), &pod("watched")).await.expect("create pod watched");
    let applied = next_event_for(&mut events, "watched", |e| match e {
        watcher::Event::Apply(p) => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(applied.spec.unwrap().containers[0].image.as_deref(), Some("nginx:1.27"));

    pods.delete("watched", &DeleteParams::default()).await.expect("delete pod watched");
    next_event_for(&mut events, "watched", |e| match e {
        watcher::Event::Delete(p) => Some(p.clone()),
        _ => None,
    })
    .await;
}

/// Waits (20 s at most) for the watcher event `pick` accepts for pod `name`.
async fn next_event_for(
    events: &mut futures::stream::BoxStream<'static, Result<watcher::Event<Pod>, watcher::Error>>,
    name: &str,
    pick: impl Fn(&watcher::Event<Pod>) -> Option<Pod>,
) -> Pod {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = events.try_next().await.expect("watcher error").expect("watch stream ended");
            if let Some(p) = pick(&event).filter(|p| p.name_any() == name) {
                return p;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no watch event for pod {name} within 20 s (watch not delivering?)"))
}
