//! A pod's link to its node: a veth pair, the host end a port of the bridge,
//! the other end `eth0` in the pod's network namespace.
//!
//! The pair is made with one request that already puts the pod end, named
//! `eth0`, in the pod's namespace: there is never a half-made pair in the
//! node's namespace to clean up, nor a clash with a node interface called
//! `eth0`; and deleting either end (or the pod's namespace) removes both.
//! The host end's name is a hash of the pod UID, so detaching needs nothing
//! but the UID, and an attach retried by a restarted agent finds the pair
//! it made before.

use super::NetworkError;
use super::netlink::{self, Context, Netlink};
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

/// The pod's end of its veth pair, inside its namespace.
pub const POD_INTERFACE: &str = "eth0";

const LOOPBACK: &str = "lo";

/// The host end of pod `pod_uid`'s veth pair: `veth` and 11 hex digits of
/// the UID's FNV-1a hash (15 characters, Linux's limit). The hash is spelled
/// out here rather than borrowed, so the names survive an agent upgrade.
pub fn host_veth_name(pod_uid: &str) -> String {
    format!("veth{:011x}", fnv1a(pod_uid.as_bytes()) >> 20)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

/// What every pod's wiring shares: the node side and the pod CIDR's shape.
pub(crate) struct Wiring<'a> {
    pub node: &'a Netlink,
    pub bridge: &'a str,
    pub bridge_index: u32,
    pub mtu: u32,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
}

/// Wires pod `pod_uid` in the namespace at `netns_path` with `ip`; returns
/// the host end's name.
pub(crate) async fn attach(wiring: &Wiring<'_>, pod_uid: &str, netns_path: &Path, ip: Ipv4Addr) -> Result<String, NetworkError> {
    let host = host_veth_name(pod_uid);
    let netns = File::open(netns_path).with_context(|| format!("opening network namespace {} of pod {pod_uid}", netns_path.display()))?;
    let pod = Netlink::in_netns(&netns)
        .await
        .with_context(|| format!("opening a netlink connection in network namespace {} of pod {pod_uid}", netns_path.display()))?;
    ensure_pair(wiring, &pod, &netns, &host, pod_uid).await?;
    wire_host_end(wiring, &host, pod_uid).await?;
    wire_pod_end(wiring, &pod, ip, pod_uid).await?;
    Ok(host)
}

/// Deletes pod `pod_uid`'s pair, if there is one.
pub(crate) async fn detach(node: &Netlink, pod_uid: &str) -> Result<(), NetworkError> {
    let host = host_veth_name(pod_uid);
    node.delete_link(&host).await.with_context(|| format!("deleting veth {host} of pod {pod_uid}"))
}

/// Keeps a pair whose pod end is `eth0` in `pod`'s namespace; replaces one
/// whose pod end is elsewhere (an earlier sandbox of the same pod).
async fn ensure_pair(wiring: &Wiring<'_>, pod: &Netlink, netns: &File, host: &str, pod_uid: &str) -> Result<(), NetworkError> {
    if let Some(link) = wiring.node.link(host).await.with_context(|| format!("looking up veth {host} of pod {pod_uid}"))? {
        if is_peer_in(&link, pod, pod_uid).await? {
            return Ok(());
        }
        wiring
            .node
            .delete_link(host)
            .await
            .with_context(|| format!("deleting veth {host} of pod {pod_uid}, whose peer is in another namespace"))?;
    }
    let peer = LinkUnspec::new_with_name(POD_INTERFACE).mtu(wiring.mtu).setns_by_fd(netns.as_raw_fd()).build();
    let pair = LinkVeth::new(host, POD_INTERFACE).mtu(wiring.mtu).set_info_data(InfoData::Veth(InfoVeth::Peer(peer))).build();
    wiring.node.handle().link().add(pair).execute().await.with_context(|| format!("creating veth {host} for pod {pod_uid}"))
}

/// Whether the host end `link`'s peer is `eth0` in `pod`'s namespace: each
/// end names the other's index.
async fn is_peer_in(link: &rtnetlink::packet_route::link::LinkMessage, pod: &Netlink, pod_uid: &str) -> Result<bool, NetworkError> {
    let Some(eth0) = pod.link(POD_INTERFACE).await.with_context(|| format!("looking up {POD_INTERFACE} of pod {pod_uid}"))? else {
        return Ok(false);
    };
    Ok(netlink::peer_index(link) == Some(eth0.header.index) && netlink::peer_index(&eth0) == Some(link.header.index))
}

/// The host end: a port of the bridge with hairpin on (so a pod can reach
/// itself through a service), the MTU, up.
async fn wire_host_end(wiring: &Wiring<'_>, host: &str, pod_uid: &str) -> Result<(), NetworkError> {
    let context = |what: &str| format!("{what} veth {host} of pod {pod_uid}");
    let link = wiring.node.link(host).await.with_context(|| context("looking up"))?;
    let index =
        link.ok_or_else(|| NetworkError::Conflict(format!("veth {host} of pod {pod_uid} vanished while being wired")))?.header.index;
    let port = LinkUnspec::new_with_index(index).controller(wiring.bridge_index).mtu(wiring.mtu).up().build();
    wiring
        .node
        .handle()
        .link()
        .change(port)
        .execute()
        .await
        .with_context(|| format!("adding veth {host} of pod {pod_uid} to bridge {}", wiring.bridge))?;
    let hairpin = LinkBridgePort::new(index).hairpin(true).build();
    wiring.node.handle().link().set_port(hairpin).execute().await.with_context(|| context("turning hairpin on for"))
}

/// Inside the pod: `lo` and `eth0` up, the MTU, the address, the default
/// route via the gateway.
async fn wire_pod_end(wiring: &Wiring<'_>, pod: &Netlink, ip: Ipv4Addr, pod_uid: &str) -> Result<(), NetworkError> {
    let lo = link_index(pod, LOOPBACK, pod_uid).await?;
    pod.handle()
        .link()
        .change(LinkUnspec::new_with_index(lo).up().build())
        .execute()
        .await
        .with_context(|| format!("setting lo up in pod {pod_uid}"))?;
    let eth0 = link_index(pod, POD_INTERFACE, pod_uid).await?;
    let up = LinkUnspec::new_with_index(eth0).mtu(wiring.mtu).up().build();
    pod.handle().link().change(up).execute().await.with_context(|| format!("setting {POD_INTERFACE} up in pod {pod_uid}"))?;
    pod.handle()
        .address()
        .add(eth0, IpAddr::V4(ip), wiring.prefix)
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding address {ip}/{} to {POD_INTERFACE} of pod {pod_uid}", wiring.prefix))?;
    let default_route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(wiring.gateway).output_interface(eth0).build();
    pod.handle()
        .route()
        .add(default_route)
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding the default route via {} in pod {pod_uid}", wiring.gateway))
}

async fn link_index(pod: &Netlink, name: &str, pod_uid: &str) -> Result<u32, NetworkError> {
    match pod.link(name).await.with_context(|| format!("looking up {name} in pod {pod_uid}"))? {
        Some(link) => Ok(link.header.index),
        None => Err(NetworkError::Conflict(format!("{name} is missing from the network namespace of pod {pod_uid}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_distinct_and_fit_ifnamsiz() {
        let a = host_veth_name("6f1c2a4e-0b8d-4c1e-9a55-3d2f7e8b9c01");
        assert_eq!(a, host_veth_name("6f1c2a4e-0b8d-4c1e-9a55-3d2f7e8b9c01"));
        assert_ne!(a, host_veth_name("6f1c2a4e-0b8d-4c1e-9a55-3d2f7e8b9c02"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        // Pinned: a changed hash would strand every running pod's veth.
        assert_eq!(host_veth_name(""), format!("veth{:011x}", 0xcbf2_9ce4_8422_2325_u64 >> 20));
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
