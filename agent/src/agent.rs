//! `hawser agent`: the node agent's parts put together.
//!
//! In order: a client for the API server → the Node registered and its
//! Lease renewed → the node's pod CIDR (from the control plane's node IPAM)
//! → the pod network (bridge, egress rules, node-local DNS link) → the
//! service proxy and cluster DNS over one Service/EndpointSlice cache →
//! routes to the other nodes' pod CIDRs, kept in step with the Node list →
//! the pod workers over this node's pods. The agent keeps running until `shutdown`; its
//! pods do not stop with it.

use crate::dns::{self, DnsConfig};
use crate::network::{self, NodeNetwork};
use crate::node::{self, Machine, NodeConfig};
use crate::pods::{self, PodManager, spec::DnsSettings};
use crate::proxy::{self, ProxyConfig, ProxyMode};
use crate::runtime::Runtime;
use crate::runtime::docker::{DockerRuntime, ensure_image_from_binary};
use crate::runtime::process::{Cgroup, Placement, ProcessRuntime};
use crate::server::AgentServer;
use anyhow::Context;
use hawser_runtime::events::Recorder;
use hawser_runtime::{Informer, Informers, ObjectKey};
use ipnetwork::Ipv4Network;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which container runtime runs the pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// The embedded process runtime (nothing to install).
    Process,
    /// Docker through the engine socket at `socket`, sandboxes being
    /// containers of `pause_image`. When the engine lacks that image and
    /// `pause_binary` (a static `hawser-pause`) is given, the agent builds
    /// the image from it; images are never pulled.
    Docker { socket: PathBuf, pause_image: String, pause_binary: Option<PathBuf> },
}

/// Everything `hawser agent` is told.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The API server's URL (`https://HOST:PORT`).
    pub server: String,
    /// The bearer token file the agent authenticates with.
    pub token_file: PathBuf,
    /// The CA that signed the API server's certificate; None trusts any
    /// certificate (`--insecure-skip-tls-verify`).
    pub certificate_authority: Option<PathBuf>,
    pub node_name: String,
    pub node_ip: Ipv4Addr,
    pub labels: BTreeMap<String, String>,
    pub runtime: RuntimeKind,
    /// The agent's own state: IPAM, runtime state, pod volumes.
    pub data_dir: PathBuf,
    /// The cluster's pod network (masquerade boundary).
    pub cluster_cidr: Ipv4Network,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The node-local DNS address; with it the agent serves cluster DNS
    /// there and at every IPv4 `cluster_dns` address. None: no DNS server.
    pub node_local_dns: Option<Ipv4Addr>,
    /// The TTL of cluster DNS answers.
    pub dns_ttl: u32,
    /// The node's resolv.conf (kubelet's `--resolv-conf`): pods with
    /// `dnsPolicy: Default` get it, and the DNS server forwards to its
    /// nameservers.
    pub resolv_conf: PathBuf,
    pub max_pods: u32,
    /// The port the agent serves logs and exec on (kubelet's 10250).
    pub port: u16,
    /// The program started as `<exe> pod-supervisor --dir <pod dir>` (the
    /// `hawser` binary itself).
    pub supervisor_exe: PathBuf,
    /// The cgroup (at the top of each hierarchy) that holds this agent's
    /// pods; distinct per agent when several share a machine.
    pub cgroup_root: String,
    pub proxy_mode: ProxyMode,
    /// Where the eBPF proxy pins its programs and maps.
    pub bpf_pin_dir: PathBuf,
    /// The eBPF proxy's NodePort backend choice: Maglev, else random.
    pub maglev: bool,
    /// The iptables programs of the proxy and the pod network.
    pub iptables: crate::iptables::Backend,
    pub proxy_min_sync_period: std::time::Duration,
    pub proxy_sync_period: std::time::Duration,
}

/// Removes every iptables chain and rule an agent makes, the service
/// proxy's and the pod network's, and the eBPF proxy's pinned programs and
/// maps (`hawser agent --cleanup`).
pub async fn cleanup(iptables: crate::iptables::Backend, bpf_pin_dir: &Path) -> anyhow::Result<()> {
    proxy::cleanup(iptables, bpf_pin_dir).await.context("removing the service proxy's rules and programs")?;
    network::remove_rules(iptables).await.context("removing the pod network's rules")?;
    Ok(())
}

/// A client for the API server authenticated by the agent's token.
pub async fn client(config: &AgentConfig) -> anyhow::Result<kube::Client> {
    let token = node::read_token(&config.token_file)?;
    let mut kube_config = kube::Config::new(config.server.parse().with_context(|| format!("--server {:?} is not a URL", config.server))?);
    kube_config.auth_info.token = Some(token.into());
    match &config.certificate_authority {
        Some(ca) => {
            let pem = std::fs::read(ca).with_context(|| format!("reading the CA certificate {}", ca.display()))?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing the CA certificate {}", ca.display()))?;
            anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", ca.display());
            kube_config.root_cert = Some(certs.into_iter().map(|c| c.to_vec()).collect());
        }
        None => kube_config.accept_invalid_certs = true,
    }
    kube::Client::try_from(kube_config).context("building the API client")
}

/// The runtime `config` asks for.
async fn runtime(config: &AgentConfig) -> anyhow::Result<Arc<dyn Runtime>> {
    match &config.runtime {
        RuntimeKind::Process => {
            let cgroup = Cgroup::detect(&config.cgroup_root, Placement::Top).context("finding the cgroup hierarchy")?;
            let state = config.data_dir.join("runtime");
            Ok(Arc::new(ProcessRuntime::new(state, cgroup, config.supervisor_exe.clone())))
        }
        RuntimeKind::Docker { socket, pause_image, pause_binary } => {
            let state = config.data_dir.join("docker");
            let docker = DockerRuntime::connect(socket, pause_image.clone(), state).await?;
            ensure_pause_image(&docker, socket, pause_image, pause_binary.as_deref()).await?;
            Ok(Arc::new(docker))
        }
    }
}

/// Makes sure the engine has the pause image: built from `binary` when it
/// is missing and a binary is given, else a clear error naming the flags.
async fn ensure_pause_image(docker: &DockerRuntime, socket: &Path, image: &str, binary: Option<&Path>) -> anyhow::Result<()> {
    if let Some(binary) = binary {
        ensure_image_from_binary(docker.docker(), image, binary, &[])
            .await
            .with_context(|| format!("building the pause image {image} from --pause-binary {}", binary.display()))?;
        return Ok(());
    }
    match docker.docker().inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => anyhow::bail!(
            "the pause image {image} (--pause-image) is not in the Docker engine at {} and no --pause-binary was given to build it from \
             (a statically linked hawser-pause)",
            socket.display()
        ),
        Err(e) => Err(anyhow::anyhow!("looking up the pause image {image} in the Docker engine at {}: {e}", socket.display())),
    }
}

/// The eBPF data path when `--proxy-mode ebpf` asks for it and the kernel
/// takes it; `None` means the iptables backend. Whichever runs, what the
/// other mode left is removed, so switching modes leaves no stale rules or
/// programs behind.
async fn ebpf_datapath(config: &AgentConfig) -> Option<proxy::ebpf::DataPath> {
    let datapath = match config.proxy_mode {
        ProxyMode::Ebpf => {
            let datapath_config = proxy::ebpf::DataPathConfig { pin_dir: config.bpf_pin_dir.clone(), node_ip: config.node_ip };
            match proxy::ebpf::DataPath::load(&datapath_config) {
                Ok(datapath) => Some(datapath),
                Err(e) => {
                    tracing::warn!(error = %e, "the eBPF proxy cannot run on this node; falling back to the iptables proxy");
                    None
                }
            }
        }
        ProxyMode::Iptables => None,
    };
    let leftovers = match &datapath {
        Some(_) => proxy::iptables::cleanup(config.iptables).await.map_err(|e| e.to_string()),
        None => proxy::ebpf::datapath::remove(&config.bpf_pin_dir).map(|_| ()).map_err(|e| e.to_string()),
    };
    if let Err(e) = leftovers {
        tracing::warn!(error = %e, "removing what the other proxy mode left");
    }
    datapath
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(config: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let client = client(&config).await?;
    let runtime = runtime(&config).await?;
    let pods: Informer<Pod> =
        Informer::start_with(client.clone(), watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name)));
    // Logs and exec: bound first, so a port chosen by the kernel (0) is
    // known before the Node says where it is.
    let lookup = {
        let pods = pods.clone();
        move |namespace: &str, name: &str| pods.get(&ObjectKey::new(namespace, name)).and_then(|p| p.metadata.uid.clone())
    };
    let token = node::read_token(&config.token_file)?;
    let listen = std::net::SocketAddr::from(([0, 0, 0, 0], config.port));
    let mut registry = prometheus_client::registry::Registry::default();
    let dns_metrics = Arc::new(dns::metrics::Metrics::register(&mut registry));
    let server = AgentServer::bind(listen, vec![token], runtime.clone(), Arc::new(lookup), Arc::new(registry)).await?;
    let port = server.local_addr()?.port();
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async {
        let _ = server_stopped.await;
    }));
    let node_config = NodeConfig {
        name: config.node_name.clone(),
        node_ip: IpAddr::V4(config.node_ip),
        labels: config.labels.clone(),
        max_pods: config.max_pods,
        runtime_version: runtime.version(),
        port,
    };
    let machine = Machine::read()?;
    node::register(&client, &node_config, &machine).await?;
    let (stop_heartbeat, heartbeat_stopped) = tokio::sync::oneshot::channel::<()>();
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), node_config, machine, node::LEASE_RENEW_INTERVAL, async {
        let _ = heartbeat_stopped.await;
    }));

    tracing::info!(node = config.node_name, "waiting for the node's pod CIDR");
    let pod_cidr = node::wait_for_pod_cidr(&client, &config.node_name).await?;
    let dns_addresses = dns_addresses(&config);
    let mut net_config = network::Config::new(config.data_dir.join("network"), pod_cidr);
    net_config.cluster_cidr = config.cluster_cidr;
    net_config.iptables = config.iptables;
    net_config.local_dns = dns_addresses.clone();
    let datapath = ebpf_datapath(&config).await;
    let mut network = NodeNetwork::setup(net_config).await.context("setting up the pod network")?;
    if let Some(datapath) = &datapath {
        let scope = datapath.scope.clone();
        network = network.on_pod_netns(Arc::new(move |netns| scope.admit(Some(netns)).map(|_| ())));
    }
    let network = Arc::new(network);
    tracing::info!(%pod_cidr, gateway = %network.gateway(), "pod network ready");

    // One watch cache of Services and EndpointSlices for the proxy and DNS.
    let informers = Informers::new(client.clone());
    let (services, slices) = (informers.get::<Service>(), informers.get::<EndpointSlice>());
    let proxy = tokio::spawn(proxy::run(
        services.clone(),
        slices.clone(),
        ProxyConfig {
            iptables: config.iptables,
            node_name: config.node_name.clone(),
            cluster_cidr: config.cluster_cidr,
            maglev: config.maglev,
            min_sync_period: config.proxy_min_sync_period,
            sync_period: config.proxy_sync_period,
            locally_served: dns_addresses.iter().copied().collect(),
        },
        datapath,
    ));
    let resolv_conf = std::fs::read_to_string(&config.resolv_conf).unwrap_or_else(|e| {
        tracing::warn!(path = %config.resolv_conf.display(), error = %e, "reading the node's resolv.conf");
        String::new()
    });
    let dns = (!dns_addresses.is_empty()).then(|| {
        let dns_config = DnsConfig {
            domain: config.cluster_domain.clone(),
            ttl: config.dns_ttl,
            listen: dns_addresses.clone(),
            port: 53,
            resolv_conf: resolv_conf.clone(),
        };
        tokio::spawn(async move {
            // DNS failing (another server on port 53) leaves the rest running.
            if let Err(e) = dns::run(dns_config, services, slices, dns_metrics).await {
                tracing::error!(error = format!("{e:#}"), "cluster DNS is not served on this node");
            }
        })
    });
    keep_peer_routes(informers.get::<Node>(), network.clone(), config.node_name.clone());
    let ctx = Arc::new(pods::Context {
        client: client.clone(),
        runtime: runtime.clone(),
        network,
        recorder: Recorder::new(client.clone(), "kubelet").with_host(&config.node_name),
        node_name: config.node_name.clone(),
        node_ip: config.node_ip.to_string(),
        dns: DnsSettings {
            cluster_dns: config.cluster_dns.clone(),
            cluster_domain: config.cluster_domain.clone(),
            host_resolv_conf: resolv_conf,
        },
        volumes_root: config.data_dir.join("pods"),
    });
    let manager = tokio::spawn(PodManager::new(ctx, pods).run());
    tracing::info!(node = config.node_name, port, "agent ready");
    shutdown.await;
    // The rules stay: a restarted agent takes over from them without a gap.
    proxy.abort();
    if let Some(dns) = dns {
        dns.abort();
    }
    manager.abort();
    let _ = stop_server.send(());
    let _ = serving.await;
    let _ = stop_heartbeat.send(());
    let _ = heartbeat.await;
    tracing::info!("agent stopped; its pods keep running");
    Ok(())
}

/// The addresses the node's DNS server answers on: the node-local one and
/// the cluster DNS addresses pods are given.
fn dns_addresses(config: &AgentConfig) -> Vec<Ipv4Addr> {
    let Some(local) = config.node_local_dns else { return Vec::new() };
    let mut addresses = vec![local];
    for ip in config.cluster_dns.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    addresses
}

/// Keeps this node's routes to every other node's pod CIDR in step with the
/// Node list (host-gw: via that node's InternalIP).
fn keep_peer_routes(nodes: Informer<Node>, network: Arc<NodeNetwork>, own: String) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let notify = changed.clone();
    nodes.on_change(move |_| notify.notify_one());
    tokio::spawn(async move {
        // A pass over a cache still loading would remove the routes to
        // nodes not listed yet: a restarted agent would cut its pods off.
        nodes.wait_synced().await;
        loop {
            // A periodic pass repairs routes someone else removed.
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
            }
            let peers: Vec<(Ipv4Network, Ipv4Addr)> = nodes
                .list()
                .iter()
                .filter(|n| n.metadata.name.as_deref() != Some(own.as_str()))
                .filter_map(|n| {
                    let cidr = n.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
                    let ip = n.status.as_ref()?.addresses.as_ref()?.iter().find(|a| a.type_ == "InternalIP")?.address.parse().ok()?;
                    Some((cidr, ip))
                })
                .collect();
            if let Err(e) = network.sync_peer_routes(&peers).await {
                tracing::warn!(error = %e, "updating routes to other nodes' pods");
            }
        }
    });
}
