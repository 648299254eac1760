//! The node-local DNS link: an interface of its own holding the addresses
//! the agent's DNS server answers on (169.254.20.10 and the `kube-dns`
//! cluster IP, as NodeLocal DNSCache sets them up). Addresses on it are the
//! node's own, so a pod's query to either is delivered to the local server,
//! never routed across the network, whatever the service proxy does.
//!
//! NodeLocal DNSCache uses a `dummy` link; this is a bridge without ports,
//! which holds local addresses the same way, because the bridge driver is
//! there wherever pods are (the pod network needs it) while `dummy` is not
//! built into every kernel (these test machines' 6.18 lacks CONFIG_DUMMY).

use super::NetworkError;
use super::netlink::{self, Context, Netlink};
use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::link::InfoKind;
use rtnetlink::{LinkBridge, LinkUnspec};
use std::net::Ipv4Addr;

/// The link's name.
pub const LINK: &str = "hawser-dns";

/// Creates the link (up) or corrects it, with exactly `addresses` (/32).
pub(crate) async fn ensure(netlink: &Netlink, addresses: &[Ipv4Addr]) -> Result<(), NetworkError> {
    let link = match netlink.link(LINK).await.with_context(|| format!("looking up link {LINK}"))? {
        Some(link) if netlink::link_kind(&link) != Some(&InfoKind::Bridge) => {
            return Err(NetworkError::Conflict(format!("link {LINK} exists and is not a bridge; it is not ours to replace")));
        }
        Some(link) => link,
        None => {
            netlink
                .handle()
                .link()
                .add(LinkBridge::new(LINK).up().build())
                .execute()
                .await
                .with_context(|| format!("creating link {LINK}"))?;
            netlink
                .link(LINK)
                .await
                .with_context(|| format!("looking up link {LINK}"))?
                .ok_or_else(|| NetworkError::Conflict(format!("link {LINK} vanished right after it was created")))?
        }
    };
    let index = link.header.index;
    netlink
        .handle()
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("setting link {LINK} up"))?;
    let wanted: Vec<Ipv4Network> = addresses.iter().map(|ip| Ipv4Network::new(*ip, 32).expect("/32 is a valid prefix")).collect();
    netlink::ensure_only_addresses(netlink, &format!("link {LINK}"), index, &wanted).await
}

pub(crate) async fn delete(netlink: &Netlink) -> Result<(), NetworkError> {
    netlink.delete_link(LINK).await.with_context(|| format!("deleting link {LINK}"))
}
