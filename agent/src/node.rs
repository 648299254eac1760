//! The agent's Node: registering it, reporting its status, and the Lease
//! heartbeat the control plane's node lifecycle controller watches.
//!
//! As the kubelet does, the Lease in `kube-node-lease` is the frequent,
//! cheap heartbeat (every 10 s); the full Node status is posted less often
//! (every minute) or when it changes. The Lease is owned by the Node, so it
//! goes when the Node is deleted.

use anyhow::Context;
use futures::StreamExt;
use ipnetwork::Ipv4Network;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Where node Leases live, as in Kubernetes.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Kubelet's Lease renew interval.
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// Kubelet's Lease duration: four renewals may be missed before it expires.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the full status is posted when nothing changed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(60);
/// Kubelet's default `--max-pods`.
pub const DEFAULT_MAX_PODS: u32 = 110;

/// What this node is called and how it is reached.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    /// The InternalIP other nodes route pod traffic to.
    pub node_ip: IpAddr,
    pub labels: BTreeMap<String, String>,
    pub max_pods: u32,
    /// `status.nodeInfo.containerRuntimeVersion`, e.g. `hawser-process://0.1.0`.
    pub runtime_version: String,
    /// The port the agent serves logs and exec on (`daemonEndpoints`).
    pub port: u16,
}

/// The facts about the machine a Node reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub architecture: String,
    pub machine_id: String,
    pub boot_id: String,
}

impl Machine {
    /// Reads this machine: CPUs online, MemTotal, kernel, OS, IDs.
    pub fn read() -> anyhow::Result<Self> {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        let memory_bytes = mem_total_bytes(&meminfo).context("no MemTotal line in /proc/meminfo")?;
        let read = |path: &str| std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default();
        Ok(Self {
            cpus,
            memory_bytes,
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image: os_image(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        })
    }
}

fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `PRETTY_NAME` from os-release, as the kubelet reports `osImage`.
fn os_image(os_release: &str) -> Option<String> {
    let line = os_release.lines().find(|l| l.starts_with("PRETTY_NAME="))?;
    Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_string())
}

/// Kubernetes names architectures as Go does.
fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

fn now() -> Value {
    json!(hawser_runtime::objects::now())
}

/// The Node's `status`: capacity and allocatable from the machine (nothing
/// is reserved for the system yet, so they are equal), addresses, Ready and
/// the pressure conditions, and nodeInfo.
pub fn node_status(config: &NodeConfig, machine: &Machine) -> Value {
    let resources = json!({
        "cpu": machine.cpus.to_string(),
        "memory": format!("{}Ki", machine.memory_bytes / 1024),
        "pods": config.max_pods.to_string(),
    });
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now(), "lastTransitionTime": now()})
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": config.node_ip.to_string()},
            {"type": "Hostname", "address": config.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.port}},
        "nodeInfo": {
            "machineID": machine.machine_id, "systemUUID": machine.machine_id, "bootID": machine.boot_id,
            "kernelVersion": machine.kernel_version, "osImage": machine.os_image,
            "containerRuntimeVersion": config.runtime_version,
            "kubeletVersion": format!("v1.33.0-hawser.{}", env!("CARGO_PKG_VERSION")), "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": machine.architecture,
        },
    })
}

/// Creates the Node, or takes over an existing one of the same name (an
/// agent restart), setting its labels and status; then makes sure its Lease
/// exists. Returns the Node as stored.
pub async fn register(client: &kube::Client, config: &NodeConfig, machine: &Machine) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = config.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), config.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("kubernetes.io/arch".into(), machine.architecture.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": config.name, "labels": labels}}))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = config.name, "registered node"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            nodes
                .patch(&config.name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": labels}})))
                .await
                .with_context(|| format!("updating the labels of existing node {}", config.name))?;
            tracing::info!(node = config.name, "node already registered; taking it over");
        }
        Err(e) => return Err(e).with_context(|| format!("registering node {}", config.name)),
    }
    // Status is not taken on create, as in Kubernetes: it has its own subresource.
    let node = nodes
        .patch_status(&config.name, &PatchParams::default(), &Patch::Strategic(json!({"status": node_status(config, machine)})))
        .await
        .with_context(|| format!("posting the status of node {}", config.name))?;
    ensure_lease(client, &node).await?;
    Ok(node)
}

/// Creates the node's Lease (owned by the Node) if it does not exist.
async fn ensure_lease(client: &kube::Client, node: &Node) -> anyhow::Result<()> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": [{
            "apiVersion": "v1", "kind": "Node", "name": name, "uid": node.metadata.uid,
        }]},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": micro_now()},
    }))?;
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => renew_lease(&leases, &name).await,
        Err(e) => Err(e).with_context(|| format!("creating the lease of node {name}")),
    }
}

fn micro_now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

async fn renew_lease(leases: &Api<Lease>, name: &str) -> anyhow::Result<()> {
    leases
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"holderIdentity": name, "renewTime": micro_now()}})))
        .await
        .with_context(|| format!("renewing the lease of node {name}"))?;
    Ok(())
}

/// Renews the Lease every `renew_interval` and posts the status every
/// [`STATUS_INTERVAL`], until `shutdown` resolves. A failed renewal is
/// logged and retried at the next tick: the grace period allows for a few.
pub async fn heartbeat(
    client: kube::Client,
    config: NodeConfig,
    machine: Machine,
    renew_interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut renew = tokio::time::interval(renew_interval);
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = renew.tick() => {
                if let Err(e) = renew_lease(&leases, &config.name).await {
                    tracing::warn!(error = format!("{e:#}"), "lease renewal failed; retrying at the next tick");
                }
            }
            _ = status.tick() => {
                let patch = json!({"status": node_status(&config, &machine)});
                if let Err(e) = nodes.patch_status(&config.name, &PatchParams::default(), &Patch::Strategic(patch)).await {
                    tracing::warn!(error = %e, "posting node status failed; retrying at the next interval");
                }
            }
        }
    }
}

/// Waits until node IPAM has written `spec.podCIDR`, which pod networking needs.
pub async fn wait_for_pod_cidr(client: &kube::Client, name: &str) -> anyhow::Result<Ipv4Network> {
    let nodes: Api<Node> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(nodes, config).boxed();
    while let Some(event) = events.next().await {
        let node = match event {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => n,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "watching node {name} for its pod CIDR; retrying");
                continue;
            }
        };
        if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) {
            return cidr.parse().with_context(|| format!("node {name} has an invalid spec.podCIDR {cidr:?}"));
        }
    }
    anyhow::bail!("the watch on node {name} ended before a pod CIDR was assigned")
}

/// The bearer token in `path` (`--token-file`), trimmed.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path).with_context(|| format!("reading token file {}", path.display()))?;
    let token = token.trim();
    anyhow::ensure!(!token.is_empty(), "token file {} is empty", path.display());
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_facts_parse_as_the_kubelet_reports_them() {
        assert_eq!(mem_total_bytes("MemTotal:       24576000 kB\nMemFree: 1 kB\n"), Some(24_576_000 * 1024));
        assert_eq!(
            os_image("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(go_arch("x86_64"), "amd64");
        let machine = Machine::read().unwrap();
        assert!(machine.cpus >= 1 && machine.memory_bytes > 0);
    }

    #[test]
    fn status_reports_capacity_addresses_and_ready() {
        let config = NodeConfig {
            name: "n1".into(),
            node_ip: "198.51.100.2".parse().unwrap(),
            labels: BTreeMap::new(),
            max_pods: DEFAULT_MAX_PODS,
            runtime_version: "hawser-process://0.1.0".into(),
            port: 10250,
        };
        let machine = Machine {
            cpus: 2,
            memory_bytes: 8 << 30,
            kernel_version: "6.18.0".into(),
            os_image: "Debian".into(),
            architecture: "amd64".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
        };
        let status = node_status(&config, &machine);
        assert_eq!(status["capacity"], json!({"cpu": "2", "memory": "8388608Ki", "pods": "110"}));
        assert_eq!(status["allocatable"], status["capacity"]);
        assert_eq!(status["addresses"][0], json!({"type": "InternalIP", "address": "198.51.100.2"}));
        let ready = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("True"), Some("KubeletReady")));
        // The status must decode as a Kubernetes NodeStatus.
        let _: k8s_openapi::api::core::v1::NodeStatus = serde_json::from_value(status).unwrap();
    }
}
