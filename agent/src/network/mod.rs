//! Pod networking: every pod gets its own address on the node bridge, and
//! every node routes straight to the others' pods ("host-gw").
//!
//! Kubernetes asks that pods reach each other, on any node, at their own
//! addresses, without NAT. The simplest network that gives that on nodes
//! sharing a layer-2 underlay is the one `flannel`'s host-gw backend and the
//! CNI `bridge` plugin build together: a bridge per node holding the gateway
//! of the node's pod CIDR, a veth pair per pod, a route per other node
//! (its pod CIDR via its InternalIP), forwarding on, and masquerading only for
//! traffic that leaves the cluster network. No overlay, no encapsulation, no
//! MTU lost to headers.
//!
//! Everything is made through netlink (no `ip` binary), sysctls through
//! `/proc/sys`, and the iptables chains through `iptables-restore`.
//! Every operation is idempotent and converges on the desired state, so a
//! restarted agent simply runs the same calls again.
//!
//! Namespaces: [`NodeNetwork`] works in the network namespace of the thread
//! that calls [`NodeNetwork::setup`] (its netlink socket is bound there for
//! good); sysctls and `iptables-restore` act on the namespace of the thread
//! that runs them, so every method must be called from that same namespace,
//! which for the agent is simply the host's. Pod namespaces are entered only
//! by short-lived threads of our own, never by a runtime's worker.
//!
//! # Layout
//! - [`ipam`]: the node's pod addresses, allocated from its pod CIDR and
//!   kept on disk so a restarted agent never hands one out twice.
//! - `bridge`: the node bridge and its gateway address.
//! - `pod`: a pod's veth pair, `eth0` inside, its address and default route.
//! - `routes`: routes to other nodes' pod CIDRs, and the default MTU.
//! - `iptables`: masquerading of pod egress, forwarding of pod traffic, and
//!   no connection tracking for node-local DNS.
//! - [`local_dns`]: the link holding the node-local DNS addresses.
//! - `netlink`: connections into a namespace and error context.
mod bridge;
pub mod ipam;
mod iptables;
pub mod local_dns;
mod netlink;
mod pod;
mod routes;

pub use iptables::{EGRESS_CHAIN, FORWARD_CHAIN};
pub use pod::{POD_INTERFACE, host_veth_name};
pub use routes::ROUTE_PROTOCOL;

use ipam::{Ipam, IpamError};
use ipnetwork::Ipv4Network;
use netlink::{Context, Netlink};
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The node bridge's name (DESIGN.md).
pub const BRIDGE: &str = "hawser0";

/// The cluster's pod network (DESIGN.md): one /24 of it per node.
pub const CLUSTER_CIDR: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::new(10, 244, 0, 0), 16) {
    Some(cidr) => cidr,
    None => panic!("10.244.0.0/16 is a valid network"),
};

/// The MTU pods get when none is configured and the node has no default
/// route to take it from.
pub const FALLBACK_MTU: u32 = 1500;

/// Linux's limit on interface names (IFNAMSIZ less the NUL).
const MAX_IFNAME: usize = 15;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// What the node's pod network looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the IPAM keeps its allocations (`<state_dir>/ipam/...`).
    pub state_dir: PathBuf,
    /// The node bridge, [`BRIDGE`] unless a test wants another.
    pub bridge: String,
    /// This node's `spec.podCIDR`.
    pub pod_cidr: Ipv4Network,
    /// The whole pod network; traffic leaving it is masqueraded.
    pub cluster_cidr: Ipv4Network,
    /// The pods' (and bridge's) MTU; `None`: that of the interface the
    /// node's default route leaves by, else [`FALLBACK_MTU`].
    pub mtu: Option<u32>,
    /// Which iptables programs the masquerade and forward chains go through.
    pub iptables: crate::iptables::Backend,
    /// The addresses the node's DNS server answers on, held by the
    /// [`local_dns::LINK`] link and exempt from connection tracking;
    /// none: no link.
    pub local_dns: Vec<Ipv4Addr>,
}

impl Config {
    /// The defaults from DESIGN.md for a node with `pod_cidr`.
    pub fn new(state_dir: impl Into<PathBuf>, pod_cidr: Ipv4Network) -> Self {
        Self {
            state_dir: state_dir.into(),
            bridge: BRIDGE.to_string(),
            pod_cidr,
            cluster_cidr: CLUSTER_CIDR,
            mtu: None,
            iptables: Default::default(),
            local_dns: Vec::new(),
        }
    }
}

/// A pod's network as [`NodeNetwork::attach_pod`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// The pod's address, on [`POD_INTERFACE`] inside its namespace.
    pub ip: Ipv4Addr,
    /// The pod CIDR's prefix length, which the address carries.
    pub prefix: u8,
    /// The bridge's address: the pod's default route goes via it.
    pub gateway: Ipv4Addr,
    /// The host end of the pod's veth pair, a port of the bridge.
    pub host_veth: String,
    pub mtu: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A netlink request failed (the kernel's errno is the source).
    #[error("{context}: {source}")]
    Netlink { context: String, source: io::Error },
    /// A file (namespace, sysctl), a thread or a child process failed.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{context}: {source}")]
    Ipam { context: String, source: IpamError },
    /// `iptables-save` or `iptables-restore` failed.
    #[error(transparent)]
    Iptables(#[from] crate::iptables::IptablesError),
    /// Something already on the node is in the way and is not ours to change.
    #[error("{0}")]
    Conflict(String),
    /// The caller asked for something that cannot be.
    #[error("{0}")]
    Invalid(String),
    /// Several independent steps failed (each one was still tried).
    #[error("{context}: {}", join(.errors))]
    Several { context: String, errors: Vec<NetworkError> },
}

fn join(errors: &[NetworkError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Ok if every step succeeded, else all the failures under `context`.
fn all_ok(context: &str, results: impl IntoIterator<Item = Result<(), NetworkError>>) -> Result<(), NetworkError> {
    let mut errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(NetworkError::Several { context: context.to_string(), errors }),
    }
}

/// The node's pod network, set up; the handle through which pods are wired.
pub struct NodeNetwork {
    /// Told of every pod's network namespace once it is wired (the eBPF
    /// proxy balances the sockets of this node's namespaces only).
    on_pod_netns: Option<PodNetnsHook>,
    bridge: String,
    pod_cidr: Ipv4Network,
    cluster_cidr: Ipv4Network,
    mtu: u32,
    backend: crate::iptables::Backend,
    ipam: Arc<Ipam>,
    netlink: Netlink,
}

/// What [`NodeNetwork::on_pod_netns`] calls with a pod's network namespace.
pub type PodNetnsHook = Arc<dyn Fn(&std::fs::File) -> io::Result<()> + Send + Sync>;

/// Removes the pod network's iptables chains and their jumps, leaving
/// links, addresses and routes (`hawser agent --cleanup`).
pub async fn remove_rules(backend: crate::iptables::Backend) -> Result<(), NetworkError> {
    iptables::remove(backend).await
}

impl NodeNetwork {
    /// Brings the node to the desired state, creating or correcting what is
    /// missing or wrong; idempotent:
    /// - the bridge, up, with the MTU and exactly one IPv4 address: the pod
    ///   CIDR's gateway with its prefix (so a changed pod CIDR leaves no stale
    ///   address or connected route behind);
    /// - `net.ipv4.ip_forward=1`, since pod traffic to other nodes and the
    ///   world is routed by the node;
    /// - the `HAWSER-POD-EGRESS` nat chain (MASQUERADE of pod traffic leaving
    ///   the cluster CIDR) jumped to from POSTROUTING, and the
    ///   `HAWSER-POD-FORWARD` filter chain (ACCEPT to and from the pod CIDR)
    ///   jumped to from FORWARD, so a host whose FORWARD policy is DROP (as
    ///   Docker leaves it) still forwards pod traffic, and the
    ///   `HAWSER-DNS-NOTRACK` raw chain (NOTRACK for DNS to and from the
    ///   `local_dns` addresses) jumped to from PREROUTING and OUTPUT; one
    ///   `iptables-restore --noflush` input;
    /// - the [`local_dns::LINK`] link with exactly the `local_dns`
    ///   addresses (removed when there are none).
    ///
    /// bridge-nf is left on, and turned on for this bridge whatever the
    /// global sysctl says (where `br_netfilter` is loaded): the service proxy
    /// DNATs a pod's connection to a service, and the reply from a backend on
    /// the same bridge is bridged, not routed, so only bridge-nf lets
    /// conntrack undo the DNAT (and it is what makes hairpin work).
    pub async fn setup(config: Config) -> Result<Self, NetworkError> {
        let Config { state_dir, bridge, pod_cidr, cluster_cidr, mtu, iptables: backend, local_dns } = config;
        check_bridge_name(&bridge)?;
        let (pod_cidr, cluster_cidr) = (normalized(pod_cidr), normalized(cluster_cidr));
        let ipam = blocking(|| format!("opening the pod address store for {pod_cidr}"), move || Ipam::open(&state_dir, pod_cidr)).await?;
        let netlink = Netlink::current().with_context(|| "opening a netlink connection in the node's network namespace".to_string())?;
        let mtu = match mtu {
            Some(mtu) => mtu,
            None => routes::default_route_mtu(&netlink).await?.unwrap_or(FALLBACK_MTU),
        };
        bridge::ensure(&netlink, &bridge, Ipv4Network::new(ipam.gateway(), pod_cidr.prefix()).expect("prefix of a network"), mtu).await?;
        enable_ip_forward()?;
        if local_dns.is_empty() {
            local_dns::delete(&netlink).await?;
        } else {
            local_dns::ensure(&netlink, &local_dns).await?;
        }
        iptables::ensure(backend, iptables::Inputs { pod_cidr, cluster_cidr, local_dns: &local_dns }).await?;
        Ok(Self { on_pod_netns: None, bridge, pod_cidr, cluster_cidr, mtu, backend, ipam: Arc::new(ipam), netlink })
    }

    /// Calls `hook` with each pod's network namespace as it is wired.
    pub fn on_pod_netns(mut self, hook: PodNetnsHook) -> Self {
        self.on_pod_netns = Some(hook);
        self
    }

    /// Wires the pod `pod_uid` whose network namespace is the file `netns`
    /// (`/proc/<pid>/ns/net`, a bind mount under `/run/netns`, ...): a veth
    /// pair with the host end (see [`host_veth_name`]) a port of the bridge
    /// with hairpin on, the pod end `eth0`; the MTU on both; `lo` and `eth0`
    /// up; the pod's address (held in the IPAM under its UID) with the pod
    /// CIDR's prefix; a default route via the gateway.
    ///
    /// Idempotent: a retry, even by a restarted agent, returns the same
    /// address and leaves one pair (a pair whose pod end is not in `netns`,
    /// left by an earlier sandbox of the pod, is replaced). If it fails,
    /// nothing of the pod is left: no veth and no address.
    pub async fn attach_pod(&self, pod_uid: &str, netns: &Path) -> Result<PodInterface, NetworkError> {
        if pod_uid.is_empty() {
            return Err(NetworkError::Invalid("attaching a pod: the pod UID is empty".to_string()));
        }
        let owner = pod_uid.to_string();
        let ip = self.ipam(|| format!("allocating an address for pod {pod_uid}"), move |ipam| ipam.allocate(&owner)).await?;
        match self.wire(pod_uid, netns, ip).await {
            Ok(iface) => Ok(iface),
            Err(err) => {
                if let Err(cleanup) = self.detach_pod(pod_uid).await {
                    tracing::warn!(pod_uid, error = %cleanup, "cleaning up after a failed pod network attach");
                }
                Err(err)
            }
        }
    }

    async fn wire(&self, pod_uid: &str, netns: &Path, ip: Ipv4Addr) -> Result<PodInterface, NetworkError> {
        let bridge_index = bridge::index(&self.netlink, &self.bridge).await?;
        let wiring = pod::Wiring {
            node: &self.netlink,
            bridge: &self.bridge,
            bridge_index,
            mtu: self.mtu,
            gateway: self.gateway(),
            prefix: self.pod_cidr.prefix(),
        };
        let host_veth = pod::attach(&wiring, pod_uid, netns, ip).await?;
        if let Some(hook) = &self.on_pod_netns {
            let io = |source| NetworkError::Io {
                context: format!("registering the network namespace {} of pod {pod_uid}", netns.display()),
                source,
            };
            let file = std::fs::File::open(netns).map_err(io)?;
            hook(&file).map_err(io)?;
        }
        Ok(PodInterface { ip, prefix: self.pod_cidr.prefix(), gateway: self.gateway(), host_veth, mtu: self.mtu })
    }

    /// The address `pod_uid` holds, allocating one if it holds none: what
    /// [`attach_pod`](Self::attach_pod) will wire, known before the sandbox
    /// exists (the pod's `/etc/hosts` names it).
    pub async fn reserve_address(&self, pod_uid: &str) -> Result<Ipv4Addr, NetworkError> {
        let owner = pod_uid.to_string();
        self.ipam(|| format!("allocating an address for pod {pod_uid}"), move |ipam| ipam.allocate(&owner)).await
    }

    /// The UIDs of the pods holding an address, to find leftovers of pods
    /// that went while the agent was down.
    pub async fn address_owners(&self) -> Result<Vec<String>, NetworkError> {
        let owners = self.ipam(|| "listing pod addresses".to_string(), |ipam| ipam.allocated()).await?;
        Ok(owners.into_values().collect())
    }

    /// Removes the pod's veth pair (deleting the host end removes the other)
    /// and releases its address. Idempotent, and needs nothing but the UID,
    /// so it works after the pod's namespace is gone.
    pub async fn detach_pod(&self, pod_uid: &str) -> Result<(), NetworkError> {
        pod::detach(&self.netlink, pod_uid).await?;
        let owner = pod_uid.to_string();
        self.ipam(|| format!("releasing the address of pod {pod_uid}"), move |ipam| ipam.release(&owner)).await?;
        Ok(())
    }

    /// Makes this node's routes to other nodes' pod CIDRs exactly `peers`
    /// (pod CIDR, that node's InternalIP); our own pod CIDR is skipped. The
    /// routes carry [`ROUTE_PROTOCOL`], and only routes carrying it are ever
    /// replaced or removed. Every route is tried; the failures are reported
    /// together.
    pub async fn sync_peer_routes(&self, peers: &[(Ipv4Network, Ipv4Addr)]) -> Result<(), NetworkError> {
        routes::sync(&self.netlink, self.pod_cidr, peers).await
    }

    /// Removes everything setup and attach made: every pod's veth and address
    /// (as the IPAM lists them), the bridge, the peer routes, both chains and
    /// their jumps; for `hawser agent --cleanup` and tests. ip_forward is left
    /// on: other software on the host may rely on it. Idempotent; every step
    /// is tried.
    pub async fn teardown(&self) -> Result<(), NetworkError> {
        let pods = self.ipam(|| "listing pod addresses".to_string(), |ipam| ipam.allocated()).await?;
        let mut results = Vec::new();
        for owner in pods.into_values() {
            results.push(self.detach_pod(&owner).await);
        }
        results.push(bridge::delete(&self.netlink, &self.bridge).await);
        results.push(local_dns::delete(&self.netlink).await);
        results.push(routes::sync(&self.netlink, self.pod_cidr, &[]).await);
        results.push(iptables::remove(self.backend).await);
        all_ok("tearing down the pod network", results)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam.gateway()
    }

    pub fn pod_cidr(&self) -> Ipv4Network {
        self.pod_cidr
    }

    pub fn cluster_cidr(&self) -> Ipv4Network {
        self.cluster_cidr
    }

    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Runs IPAM file work (which fsyncs) off the async threads.
    async fn ipam<T: Send + 'static>(
        &self,
        context: impl FnOnce() -> String,
        work: impl FnOnce(&Ipam) -> Result<T, IpamError> + Send + 'static,
    ) -> Result<T, NetworkError> {
        let ipam = Arc::clone(&self.ipam);
        blocking(context, move || work(&ipam)).await
    }
}

/// Runs `work` on tokio's blocking pool; its panics stay panics.
async fn blocking<T: Send + 'static>(
    context: impl FnOnce() -> String,
    work: impl FnOnce() -> Result<T, IpamError> + Send + 'static,
) -> Result<T, NetworkError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.with_context(context),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(NetworkError::Io { context: context(), source: io::Error::other(err) }),
    }
}

fn check_bridge_name(name: &str) -> Result<(), NetworkError> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.contains(['/', ' ']) {
        return Err(NetworkError::Invalid(format!("bridge name {name:?} is not a valid interface name (1 to {MAX_IFNAME} characters)")));
    }
    Ok(())
}

/// `10.244.1.7/24` → `10.244.1.0/24`.
fn normalized(cidr: Ipv4Network) -> Ipv4Network {
    Ipv4Network::new(cidr.network(), cidr.prefix()).expect("a network's own prefix is valid")
}

/// Sysctls under /proc/sys/net are those of the calling thread's namespace.
fn enable_ip_forward() -> Result<(), NetworkError> {
    let context = || format!("enabling IPv4 forwarding ({IP_FORWARD})");
    if fs::read_to_string(IP_FORWARD).with_context(context)?.trim() == "1" {
        return Ok(());
    }
    fs::write(IP_FORWARD, "1").with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_normalized_and_bridge_names_checked() {
        assert_eq!(normalized("10.244.1.7/24".parse().unwrap()), "10.244.1.0/24".parse().unwrap());
        assert!(check_bridge_name(BRIDGE).is_ok());
        assert!(check_bridge_name("").is_err());
        assert!(check_bridge_name("a-name-far-too-long").is_err());
    }

    /// Compiles only if the agent can hand these to a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(network: &NodeNetwork, config: Config, netns: &Path) {
        fn send<T: Send>(_: T) {}
        send(NodeNetwork::setup(config));
        send(network.attach_pod("uid", netns));
        send(network.detach_pod("uid"));
        send(network.sync_peer_routes(&[]));
        send(network.teardown());
        send::<&NodeNetwork>(network);
    }

    #[test]
    fn several_failures_are_reported_together() {
        let fail = |what: &str| Err(NetworkError::Conflict(what.to_string()));
        assert!(all_ok("x", [Ok(()), Ok(())]).is_ok());
        assert_eq!(all_ok("x", [Ok(()), fail("a")]).unwrap_err().to_string(), "a");
        assert_eq!(all_ok("tearing down", [fail("a"), Ok(()), fail("b")]).unwrap_err().to_string(), "tearing down: a; b");
    }
}
