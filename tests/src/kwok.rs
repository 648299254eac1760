//! Simulated nodes, as the kwok project makes them: a Node object, a Lease
//! renewed in `kube-node-lease`, and pod status written through the API for
//! every pod bound to the node. They drive the real scheduler and
//! controllers over the real API, standing in for node agents where a test
//! is about the control plane and not about running processes.
//!
//! Each node runs on its own thread with its own runtime, so tests stay
//! synchronous. [`SimulatedNode::stop`] silences a node (no more Lease
//! renewals, no pod handling), the way a crashed agent goes quiet.

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a simulated node renews its Lease (agents: 10 s; faster here so
/// failure tests are not slowed by a late first renewal).
const LEASE_RENEW: Duration = Duration::from_secs(2);
/// A pod with this annotation set to "false" starts not Ready.
pub const START_NOT_READY: &str = "hawser.test/ready";

/// What a simulated node offers.
#[derive(Clone, Debug)]
pub struct NodeShape {
    pub name: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub labels: BTreeMap<String, String>,
    /// Handle pods (status, termination); off for scheduler benchmarks,
    /// where only binding is measured.
    pub run_pods: bool,
}

impl NodeShape {
    pub fn new(name: &str) -> Self {
        Self { name: name.into(), cpu: "4".into(), memory: "8Gi".into(), pods: 110, labels: BTreeMap::new(), run_pods: true }
    }

    pub fn cpu(mut self, cpu: &str) -> Self {
        self.cpu = cpu.into();
        self
    }

    pub fn pods(mut self, pods: u32) -> Self {
        self.pods = pods;
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn without_pods(mut self) -> Self {
        self.run_pods = false;
        self
    }
}

pub struct SimulatedNode {
    pub name: String,
    alive: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SimulatedNode {
    /// Registers the node (Ready, with its Lease) and starts serving it;
    /// returns once the Node object exists.
    pub fn start(kubeconfig: &std::path::Path, shape: NodeShape) -> Self {
        let alive = Arc::new(AtomicBool::new(true));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let alive = alive.clone();
            let kubeconfig = kubeconfig.to_path_buf();
            let shape = shape.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime for a simulated node");
                rt.block_on(async move {
                    let client = client(&kubeconfig).await;
                    let result = register(&client, &shape).await;
                    let registered = result.is_ok();
                    let _ = ready_tx.send(result);
                    if registered {
                        serve(client, shape, alive).await;
                    }
                });
            })
        };
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("registering simulated node {}: {e}", shape.name),
            Err(_) => panic!("registering simulated node {} took over 30 s", shape.name),
        }
        Self { name: shape.name, alive, thread: Some(thread) }
    }

    /// The node goes silent: no more Lease renewals, pods left as they are.
    pub fn stop(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }
}

impl Drop for SimulatedNode {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.expect("load kubeconfig");
    kube::Client::try_from(config).expect("build client")
}

fn now() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap().to_string()
}

fn now_micro() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Creates the Node (Ready) and its Lease.
pub async fn register(client: &kube::Client, shape: &NodeShape) -> Result<(), kube::Error> {
    let mut labels = shape.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), shape.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    let resources = json!({"cpu": shape.cpu, "memory": shape.memory, "pods": shape.pods.to_string()});
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": shape.name, "labels": labels},
        "status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated node is posting ready status",
                            "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            "addresses": [{"type": "InternalIP", "address": "198.51.100.10"}, {"type": "Hostname", "address": shape.name}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-hawser-sim", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "simulated://0", "kernelVersion": "", "osImage": "simulated", "machineID": "",
                         "systemUUID": "", "bootID": ""}
        }
    }))
    .expect("a valid Node");
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&PostParams::default(), &node).await?;
    // Status is ignored on create, as in Kubernetes: write it through the
    // subresource (a patch: node IPAM may have written the spec meanwhile).
    nodes.patch_status(&shape.name, &PatchParams::default(), &Patch::Merge(json!({"status": node.status}))).await?;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": shape.name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": shape.name, "leaseDurationSeconds": 40, "renewTime": now_micro()}
    }))
    .unwrap();
    Api::<Lease>::namespaced(client.clone(), "kube-node-lease").create(&PostParams::default(), &lease).await?;
    Ok(())
}

async fn serve(client: kube::Client, shape: NodeShape, alive: Arc<AtomicBool>) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = async {
        while alive.load(Ordering::SeqCst) {
            tokio::time::sleep(LEASE_RENEW).await;
            if alive.load(Ordering::SeqCst) {
                let _ =
                    leases.patch(&shape.name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"renewTime": now_micro()}}))).await;
            }
        }
    };
    let pods = async {
        if shape.run_pods {
            run_pods(&client, &shape.name, &alive).await;
        }
    };
    let stopped = async {
        while alive.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        _ = async { tokio::join!(renew, pods) } => {}
        _ = stopped => {}
    }
}

/// Plays the kubelet's part for pods bound here: Running with an IP from the
/// node's pod CIDR, Ready unless annotated otherwise; a deleted pod's
/// termination is confirmed at once.
async fn run_pods(client: &kube::Client, node: &str, alive: &AtomicBool) {
    let all: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher::watcher(all, config).boxed();
    let mut next_ip = 2u32;
    while let Some(event) = events.next().await {
        if !alive.load(Ordering::SeqCst) {
            return;
        }
        let pod = match event {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
            _ => continue,
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
            continue;
        }
        if pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some() {
            continue;
        }
        let ip = pod_ip(client, node, next_ip).await;
        next_ip += 1;
        let ready = pod.metadata.annotations.as_ref().and_then(|a| a.get(START_NOT_READY)).map(String::as_str) != Some("false");
        let ready_status = if ready { "True" } else { "False" };
        let containers: Vec<_> = pod.spec.iter().flat_map(|s| s.containers.iter()).collect();
        let statuses: Vec<_> = containers
            .iter()
            .map(|c| {
                json!({"name": c.name, "image": c.image, "imageID": "", "ready": ready, "started": true, "restartCount": 0,
                       "state": {"running": {"startedAt": now()}}})
            })
            .collect();
        let status = json!({"status": {
            "phase": "Running", "hostIP": "198.51.100.10", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now(),
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
                {"type": "ContainersReady", "status": ready_status, "lastTransitionTime": now()},
                {"type": "Ready", "status": ready_status, "lastTransitionTime": now()},
            ],
            "containerStatuses": statuses,
        }});
        let _ = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await;
    }
}

/// The `n`th address of the node's pod CIDR (or of 10.255.0.0/24 before one is assigned).
async fn pod_ip(client: &kube::Client, node: &str, n: u32) -> String {
    let nodes: Api<Node> = Api::all(client.clone());
    let cidr = nodes.get(node).await.ok().and_then(|n| n.spec?.pod_cidr).unwrap_or_else(|| "10.255.0.0/24".into());
    let base: Ipv4Addr = cidr.split('/').next().and_then(|a| a.parse().ok()).unwrap_or(Ipv4Addr::new(10, 255, 0, 0));
    Ipv4Addr::from(u32::from(base) + n).to_string()
}
