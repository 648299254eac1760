//! Routes to other nodes' pods ("host-gw"): each node's pod CIDR via that
//! node's InternalIP, kept in step with the Node list.
//!
//! The routes live in the main table and carry a route protocol of their
//! own ([`ROUTE_PROTOCOL`], shown by `ip route` as `proto 72`); only routes
//! carrying it are ever listed as ours, replaced or removed, and a removal
//! names the protocol too, so the kernel itself refuses to delete a route
//! someone else made. What to change is worked out by a pure function
//! ([`plan`]) over what the kernel has, so a sync is a diff, not a flush.
//!
//! Also here: the MTU of the interface the node's default route leaves by,
//! the pods' MTU when none is configured.

use super::netlink::{self, Context, Netlink};
use super::{NetworkError, all_ok};
use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The route protocol marking peer routes as ours (unassigned in
/// `/etc/iproute2/rt_protos`; 72 is 'H').
pub const ROUTE_PROTOCOL: u8 = 72;

const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A route to a pod CIDR via a node address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PeerRoute {
    pub cidr: Ipv4Network,
    pub via: Ipv4Addr,
}

/// What a sync changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub add: Vec<PeerRoute>,
    /// Ours, but via another node address now.
    pub replace: Vec<PeerRoute>,
    pub remove: Vec<PeerRoute>,
}

/// The changes that turn `ours` (the routes we made) into `peers`, less our
/// own pod CIDR. A CIDR listed twice keeps its first gateway.
pub(crate) fn plan(own: Ipv4Network, peers: &[(Ipv4Network, Ipv4Addr)], ours: &[PeerRoute]) -> Plan {
    let mut desired = BTreeMap::new();
    for &(cidr, via) in peers {
        let cidr = Ipv4Network::new(cidr.network(), cidr.prefix()).expect("a network's own prefix is valid");
        if cidr == own {
            continue;
        }
        if let Some(first) = desired.get(&cidr) {
            if *first != via {
                tracing::warn!(%cidr, kept = %first, ignored = %via, "two nodes claim one pod CIDR");
            }
            continue;
        }
        desired.insert(cidr, via);
    }
    let current: BTreeMap<_, _> = ours.iter().map(|route| (route.cidr, route.via)).collect();
    let mut plan = Plan::default();
    for (&cidr, &via) in &desired {
        match current.get(&cidr) {
            None => plan.add.push(PeerRoute { cidr, via }),
            Some(&now) if now != via => plan.replace.push(PeerRoute { cidr, via }),
            Some(_) => {}
        }
    }
    plan.remove = ours.iter().filter(|route| !desired.contains_key(&route.cidr)).copied().collect();
    plan
}

/// Makes our routes exactly `peers` (less `own`); every change is tried.
pub(crate) async fn sync(netlink: &Netlink, own: Ipv4Network, peers: &[(Ipv4Network, Ipv4Addr)]) -> Result<(), NetworkError> {
    let ours = our_routes(netlink).await?;
    let plan = plan(own, peers, &ours);
    let mut results = Vec::new();
    for route in &plan.remove {
        results.push(remove(netlink, route).await);
    }
    for route in &plan.add {
        results.push(add(netlink, route, false).await);
    }
    for route in &plan.replace {
        results.push(add(netlink, route, true).await);
    }
    all_ok("syncing routes to other nodes' pods", results)
}

/// Our routes in the main table, as the kernel has them.
pub(crate) async fn our_routes(netlink: &Netlink) -> Result<Vec<PeerRoute>, NetworkError> {
    let routes = ipv4_routes(netlink).await?;
    Ok(routes
        .iter()
        .filter(|route| table(route) == MAIN_TABLE && route.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL))
        .filter_map(peer_route)
        .collect())
}

async fn add(netlink: &Netlink, route: &PeerRoute, replace: bool) -> Result<(), NetworkError> {
    let request = netlink.handle().route().add(message(route));
    let request = if replace { request.replace() } else { request };
    request.execute().await.with_context(|| format!("adding route to pod CIDR {} via node {}", route.cidr, route.via))
}

async fn remove(netlink: &Netlink, route: &PeerRoute) -> Result<(), NetworkError> {
    match netlink.handle().route().del(message(route)).execute().await {
        // Gone already: what we wanted.
        Err(err) if netlink::errno(&err) == Some(nix::errno::Errno::ESRCH) => Ok(()),
        result => result.with_context(|| format!("removing route to pod CIDR {} via node {}", route.cidr, route.via)),
    }
}

/// The route as we make it; as a deletion it matches only a route with our
/// protocol, this gateway and this destination.
fn message(route: &PeerRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.cidr.network(), route.cidr.prefix())
        .gateway(route.via)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build()
}

async fn ipv4_routes(netlink: &Netlink) -> Result<Vec<RouteMessage>, NetworkError> {
    let dump = RouteMessageBuilder::<Ipv4Addr>::new().build();
    netlink.handle().route().get(dump).execute().try_collect().await.with_context(|| "listing IPv4 routes".to_string())
}

fn table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|attr| match attr {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn peer_route(route: &RouteMessage) -> Option<PeerRoute> {
    let destination = route.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    let via = route.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    Some(PeerRoute { cidr: Ipv4Network::new(destination, route.header.destination_prefix_length).ok()?, via })
}

/// The MTU of the interface the main table's default route leaves by.
pub(crate) async fn default_route_mtu(netlink: &Netlink) -> Result<Option<u32>, NetworkError> {
    let routes = ipv4_routes(netlink).await?;
    let Some(index) =
        routes.iter().filter(|route| table(route) == MAIN_TABLE && route.header.destination_prefix_length == 0).find_map(output_interface)
    else {
        return Ok(None);
    };
    let link = netlink.link_by_index(index).await.with_context(|| format!("looking up the default route's interface (index {index})"))?;
    Ok(link.as_ref().and_then(netlink::mtu))
}

/// The interface a route leaves by (the first hop's, for a multipath one).
fn output_interface(route: &RouteMessage) -> Option<u32> {
    route.attributes.iter().find_map(|attr| match attr {
        RouteAttribute::Oif(index) => Some(*index),
        RouteAttribute::MultiPath(hops) => hops.first().map(|hop| hop.interface_index),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(cidr: &str, via: &str) -> PeerRoute {
        PeerRoute { cidr: cidr.parse().unwrap(), via: via.parse().unwrap() }
    }

    fn peer(cidr: &str, via: &str) -> (Ipv4Network, Ipv4Addr) {
        (cidr.parse().unwrap(), via.parse().unwrap())
    }

    #[test]
    fn a_sync_adds_replaces_and_removes_only_what_differs_and_skips_our_own_cidr() {
        let own = "10.244.1.0/24".parse().unwrap();
        let ours = [route("10.244.2.0/24", "198.51.100.2"), route("10.244.3.0/24", "198.51.100.3"), route("10.244.4.0/24", "198.51.100.4")];
        let peers = [
            peer("10.244.1.0/24", "198.51.100.1"),
            peer("10.244.2.0/24", "198.51.100.2"),
            peer("10.244.3.0/24", "198.51.100.33"),
            peer("10.244.5.7/24", "198.51.100.5"),
        ];
        assert_eq!(
            plan(own, &peers, &ours),
            Plan {
                add: vec![route("10.244.5.0/24", "198.51.100.5")],
                replace: vec![route("10.244.3.0/24", "198.51.100.33")],
                remove: vec![route("10.244.4.0/24", "198.51.100.4")],
            }
        );
    }

    #[test]
    fn an_empty_peer_list_removes_all_of_ours_and_a_repeated_cidr_keeps_its_first_gateway() {
        let own = "10.244.1.0/24".parse().unwrap();
        let ours = [route("10.244.2.0/24", "198.51.100.2")];
        assert_eq!(plan(own, &[], &ours).remove, ours.to_vec());
        let twice = [peer("10.244.2.0/24", "198.51.100.2"), peer("10.244.2.0/24", "198.51.100.9")];
        assert_eq!(plan(own, &twice, &ours), Plan::default());
    }
}
