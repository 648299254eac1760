//! Clearing conntrack entries the new rules would otherwise never see:
//! NAT is chosen by the first packet of a connection, and every later
//! packet that matches the entry follows it.
//!
//! - A UDP "connection" lives as long as packets keep coming: a client that
//!   keeps sending to a service whose endpoint died would be sent to the
//!   dead pod forever. So, as kube-proxy does, after each sync the UDP
//!   entries toward endpoints a service port no longer uses are deleted.
//!   (TCP needs none of this: a dead endpoint resets or times out the
//!   connection and the client opens a new one.)
//! - A service port that gets its first endpoints: entries made toward it
//!   before, while no rule translated it (a client that connected before
//!   the first sync, whose SYN went out untranslated and stays in
//!   conntrack for minutes), would capture any new connection that happens
//!   to reuse their source port. They are deleted for every protocol, for
//!   that port only (so nothing established elsewhere is touched).
//!
//! Uses the `conntrack` tool (Debian's `conntrack`); the eBPF backend
//! calls the same code, where it finds nothing to delete for traffic it
//! balanced at `connect()`.

use super::state::{Protocol, ServicePort};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use tokio::process::Command;

/// One `conntrack -D` filter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flow {
    /// UDP to the cluster IP, NATed to the endpoint.
    ToEndpoint { cluster_ip: Ipv4Addr, endpoint: Ipv4Addr },
    /// UDP to a NodePort, NATed to the endpoint.
    NodePortToEndpoint { node_port: u16, endpoint: Ipv4Addr },
    /// Anything to the cluster IP and port (made while it had no endpoint).
    ToClusterIp { cluster_ip: Ipv4Addr, port: u16, protocol: Protocol },
    /// Anything to the NodePort.
    ToNodePort { node_port: u16, protocol: Protocol },
}

impl Flow {
    fn args(&self) -> Vec<String> {
        let mut args = vec!["-D".to_string(), "-p".into()];
        match self {
            Flow::ToEndpoint { cluster_ip, endpoint } => {
                args.extend(["udp".into(), "--orig-dst".into(), cluster_ip.to_string(), "--dst-nat".into(), endpoint.to_string()])
            }
            Flow::NodePortToEndpoint { node_port, endpoint } => {
                args.extend(["udp".into(), "--orig-port-dst".into(), node_port.to_string(), "--dst-nat".into(), endpoint.to_string()])
            }
            Flow::ToClusterIp { cluster_ip, port, protocol } => args.extend([
                protocol.as_str().into(),
                "--orig-dst".into(),
                cluster_ip.to_string(),
                "--orig-port-dst".into(),
                port.to_string(),
            ]),
            Flow::ToNodePort { node_port, protocol } => {
                args.extend([protocol.as_str().into(), "--orig-port-dst".into(), node_port.to_string()])
            }
        }
        args
    }
}

/// The flows to clear when a Service's ports go from `before` to `after`.
pub fn stale_flows(before: &[ServicePort], after: &[ServicePort]) -> BTreeSet<Flow> {
    let mut flows = BTreeSet::new();
    for old in before.iter().filter(|p| p.name.protocol == Protocol::Udp) {
        let new = after.iter().find(|p| p.name == old.name);
        let still: BTreeSet<Ipv4Addr> = new.map(|p| p.reachable_endpoints().iter().map(|e| e.ip).collect()).unwrap_or_default();
        for gone in old.reachable_endpoints().iter().map(|e| e.ip).filter(|ip| !still.contains(ip)) {
            flows.insert(Flow::ToEndpoint { cluster_ip: old.cluster_ip, endpoint: gone });
            if let Some(node_port) = old.node_port {
                flows.insert(Flow::NodePortToEndpoint { node_port, endpoint: gone });
            }
        }
    }
    for new in after {
        let had = before.iter().find(|p| p.name == new.name).is_some_and(|p| !p.reachable_endpoints().is_empty());
        if !had && !new.reachable_endpoints().is_empty() {
            let protocol = new.name.protocol;
            flows.insert(Flow::ToClusterIp { cluster_ip: new.cluster_ip, port: new.port, protocol });
            if let Some(node_port) = new.node_port {
                flows.insert(Flow::ToNodePort { node_port, protocol });
            }
        }
    }
    flows
}

/// Deletes the entries of `flows`; failures are logged (entries time out
/// in the end).
pub async fn clear(flows: &BTreeSet<Flow>) {
    for flow in flows {
        match Command::new("conntrack").args(flow.args()).output().await {
            // conntrack exits 1 when nothing matched: nothing to clear.
            Ok(out) if out.status.success() || out.status.code() == Some(1) => {
                tracing::debug!(?flow, "cleared conntrack entries");
            }
            Ok(out) => tracing::warn!(?flow, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "clearing conntrack entries"),
            Err(e) => tracing::warn!(?flow, error = %e, "running conntrack (Debian's conntrack package)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::state::Endpoint;

    fn udp(endpoints: &[u8], node_port: Option<u16>) -> ServicePort {
        let endpoints = endpoints
            .iter()
            .map(|&last| Endpoint {
                ip: Ipv4Addr::new(10, 244, 1, last),
                port: 5353,
                local: true,
                ready: true,
                serving: true,
                terminating: false,
            })
            .collect();
        let mut port = ServicePort::for_test("dns", "", Protocol::Udp, Ipv4Addr::new(10, 96, 0, 53), 53, endpoints);
        port.node_port = node_port;
        port
    }

    #[test]
    fn a_replaced_endpoint_clears_flows_to_the_old_one_only() {
        let flows = stale_flows(&[udp(&[5, 6], Some(30053))], &[udp(&[6, 7], Some(30053))]);
        let old = Ipv4Addr::new(10, 244, 1, 5);
        assert_eq!(
            flows,
            BTreeSet::from([
                Flow::ToEndpoint { cluster_ip: Ipv4Addr::new(10, 96, 0, 53), endpoint: old },
                Flow::NodePortToEndpoint { node_port: 30053, endpoint: old },
            ])
        );
        assert_eq!(
            Flow::ToEndpoint { cluster_ip: Ipv4Addr::new(10, 96, 0, 53), endpoint: old }.args(),
            ["-D", "-p", "udp", "--orig-dst", "10.96.0.53", "--dst-nat", "10.244.1.5"]
        );
    }

    #[test]
    fn a_port_that_gets_its_first_endpoint_clears_what_was_sent_meanwhile_for_any_protocol() {
        let vip = Ipv4Addr::new(10, 96, 0, 53);
        let flows = stale_flows(&[udp(&[], None)], &[udp(&[5], Some(30053))]);
        assert_eq!(
            flows,
            BTreeSet::from([
                Flow::ToClusterIp { cluster_ip: vip, port: 53, protocol: Protocol::Udp },
                Flow::ToNodePort { node_port: 30053, protocol: Protocol::Udp }
            ])
        );
        assert!(stale_flows(&[udp(&[5], None)], &[udp(&[5], None)]).is_empty());
        let mut tcp = udp(&[5], None);
        tcp.name.protocol = Protocol::Tcp;
        assert!(stale_flows(std::slice::from_ref(&tcp), &[]).is_empty(), "a TCP endpoint going needs no clearing");
        let new_tcp = stale_flows(&[], std::slice::from_ref(&tcp));
        assert_eq!(new_tcp, BTreeSet::from([Flow::ToClusterIp { cluster_ip: vip, port: 53, protocol: Protocol::Tcp }]));
        assert_eq!(
            new_tcp.first().unwrap().args(),
            ["-D", "-p", "tcp", "--orig-dst", "10.96.0.53", "--orig-port-dst", "53"],
            "only the service's own port"
        );
    }
}
