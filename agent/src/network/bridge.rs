//! The node bridge: every pod's host-side veth is a port of it and it holds
//! the pod CIDR's gateway address, so pods on a node reach each other at
//! layer 2 and everything else through the node's routing table.
//!
//! Its MAC address is set (from the gateway address) instead of being left
//! to the kernel: a bridge without one takes the lowest MAC of its ports and
//! changes it whenever that pod goes, leaving every other pod's ARP entry
//! for the gateway stale until it times out.

use super::NetworkError;
use super::netlink::{self, Context, Netlink};
use ipnetwork::Ipv4Network;
use rtnetlink::LinkBridge;
use rtnetlink::packet_route::link::InfoKind;
use std::net::Ipv4Addr;

/// Creates the bridge or brings an existing one to the desired state: up,
/// `mtu`, our MAC, bridge-nf on, and `gateway` (address/prefix) as its only
/// IPv4 address.
pub(crate) async fn ensure(netlink: &Netlink, name: &str, gateway: Ipv4Network, mtu: u32) -> Result<(), NetworkError> {
    let desired = LinkBridge::new(name).mtu(mtu).address(mac_for(gateway.ip()).to_vec()).nf_call_iptables(true);
    match netlink.link(name).await.with_context(|| format!("looking up bridge {name}"))? {
        Some(link) if netlink::link_kind(&link) != Some(&InfoKind::Bridge) => {
            return Err(NetworkError::Conflict(format!("link {name} exists and is not a bridge; it is not ours to replace")));
        }
        Some(link) => {
            let message = desired.index(link.header.index).build();
            netlink.handle().link().change(message).execute().await.with_context(|| format!("updating bridge {name}"))?;
        }
        None => netlink.handle().link().add(desired.build()).execute().await.with_context(|| format!("creating bridge {name}"))?,
    }
    let index = index(netlink, name).await?;
    netlink::ensure_only_addresses(netlink, &format!("bridge {name}"), index, &[gateway]).await
}

/// The bridge's interface index; an error if it is missing.
pub(crate) async fn index(netlink: &Netlink, name: &str) -> Result<u32, NetworkError> {
    match netlink.link(name).await.with_context(|| format!("looking up bridge {name}"))? {
        Some(link) => Ok(link.header.index),
        None => Err(NetworkError::Conflict(format!("bridge {name} does not exist (NodeNetwork::setup makes it)"))),
    }
}

pub(crate) async fn delete(netlink: &Netlink, name: &str) -> Result<(), NetworkError> {
    netlink.delete_link(name).await.with_context(|| format!("deleting bridge {name}"))
}

/// A locally administered unicast MAC carrying the gateway address, the
/// scheme CNI plugins use (0a:58 followed by the IPv4 address).
fn mac_for(gateway: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = gateway.octets();
    [0x0a, 0x58, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_mac_is_local_unicast_and_names_the_gateway() {
        let mac = mac_for(Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(mac, [0x0a, 0x58, 10, 244, 1, 1]);
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered, not multicast");
    }
}
