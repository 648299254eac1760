//! The proxy's desired state: every port of every Service with a cluster
//! IP, and the endpoints behind it, as kube-proxy's `ServicePort` and
//! `Endpoint` see them. Built from a Service and its EndpointSlices alone
//! (no I/O), so both backends and the tests share one reading of the API.
//!
//! Which endpoints take traffic follows kube-proxy's
//! `CategorizeEndpoints`: ready endpoints; when none is ready, the serving
//! endpoints that are terminating (Kubernetes' ProxyTerminatingEndpoints),
//! so a rolling restart of the last pods keeps answering. Traffic to the
//! cluster IP uses every node's endpoints unless `internalTrafficPolicy`
//! is `Local`; traffic from outside to a NodePort uses only this node's
//! when `externalTrafficPolicy` is `Local`.

use hawser_runtime::ObjectKey;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// A Service or EndpointSlice port's protocol (unset: TCP).
    pub fn parse(text: Option<&str>) -> Option<Self> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name iptables and conntrack use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of one Service (kube-proxy's `ServicePortName`), printed
/// `namespace/name:port` as kube-proxy's rule comments do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    pub service: ObjectKey,
    /// The port's name ("" for a Service's single unnamed port).
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() { write!(f, "{}", self.service) } else { write!(f, "{}:{}", self.service, self.port) }
    }
}

/// A backend of a service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// On this node.
    pub local: bool,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// What the proxy makes of one service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `externalTrafficPolicy: Local` (NodePort traffic from outside goes
    /// to this node's endpoints only, with its source kept).
    pub external_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    pub health_check_node_port: Option<u16>,
    /// `sessionAffinity: ClientIP`: how long a client sticks to its endpoint.
    pub affinity_timeout: Option<u32>,
    /// Sorted, without duplicates.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// Endpoints for traffic that may go to any node's: ready ones, else
    /// the serving terminating ones.
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter())
    }

    /// This node's endpoints, chosen the same way.
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter().filter(|e| e.local))
    }

    /// What traffic to the cluster IP is spread over.
    pub fn internal_endpoints(&self) -> Vec<&Endpoint> {
        if self.internal_local { self.local_endpoints() } else { self.cluster_endpoints() }
    }

    /// What NodePort traffic from outside the node is spread over.
    pub fn external_endpoints(&self) -> Vec<&Endpoint> {
        if self.external_local { self.local_endpoints() } else { self.cluster_endpoints() }
    }

    /// Every endpoint some traffic may reach.
    pub fn reachable_endpoints(&self) -> BTreeSet<&Endpoint> {
        let mut all: BTreeSet<&Endpoint> = self.internal_endpoints().into_iter().collect();
        if self.node_port.is_some() {
            all.extend(self.external_endpoints());
        }
        all
    }
}

impl ServicePort {
    /// A plain ClusterIP port `namespace/service:port` with no policies,
    /// for tests to adjust.
    #[cfg(test)]
    pub(crate) fn for_test(
        service: &str,
        port_name: &str,
        protocol: Protocol,
        cluster_ip: Ipv4Addr,
        port: u16,
        endpoints: Vec<Endpoint>,
    ) -> Self {
        ServicePort {
            name: ServicePortName { service: ObjectKey::new("default", service), port: port_name.to_string(), protocol },
            cluster_ip,
            port,
            node_port: None,
            external_local: false,
            internal_local: false,
            health_check_node_port: None,
            affinity_timeout: None,
            endpoints,
        }
    }
}

fn usable<'a>(endpoints: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = endpoints.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.filter(|e| e.serving && e.terminating).collect()
}

/// The ports of `service` the proxy programs, with their endpoints from
/// `slices` (the Service's EndpointSlices). A Service without a cluster IP
/// (headless, ExternalName) has none.
pub fn service_ports<'a>(service: &Service, slices: impl IntoIterator<Item = &'a EndpointSlice>, node_name: &str) -> Vec<ServicePort> {
    let Some(spec) = &service.spec else { return Vec::new() };
    let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else { return Vec::new() };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let key = ObjectKey::of(service);
    let node_port_type = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        let configured = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
        configured.and_then(|t| u32::try_from(t).ok()).unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let slices: Vec<&EndpointSlice> = slices.into_iter().filter(|s| s.address_type == "IPv4").collect();
    let mut ports = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else { continue };
        let Ok(number) = u16::try_from(port.port) else { continue };
        let name = ServicePortName { service: key.clone(), port: port.name.clone().unwrap_or_default(), protocol };
        let mut endpoints = BTreeSet::new();
        for slice in &slices {
            // A slice's port of the same name and protocol gives the target port.
            let Some(target) =
                slice.ports.iter().flatten().find(|p| {
                    p.name.as_deref().unwrap_or_default() == name.port && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
                })
            else {
                continue;
            };
            let Some(target) = target.port.and_then(|p| u16::try_from(p).ok()) else { continue };
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.as_ref();
                // Unset conditions mean ready and serving (the API's rule).
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                let local = endpoint.node_name.as_deref() == Some(node_name);
                // One address per endpoint in IPv4 slices; the first is the one.
                if let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse::<Ipv4Addr>().ok()) {
                    endpoints.insert(Endpoint { ip, port: target, local, ready, serving, terminating });
                }
            }
        }
        ports.push(ServicePort {
            name,
            cluster_ip,
            port: number,
            node_port: port.node_port.filter(|_| node_port_type).and_then(|p| u16::try_from(p).ok()),
            external_local: node_port_type && spec.external_traffic_policy.as_deref() == Some("Local"),
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            health_check_node_port: spec
                .health_check_node_port
                .filter(|_| node_port_type && spec.external_traffic_policy.as_deref() == Some("Local"))
                .and_then(|p| u16::try_from(p).ok()),
            affinity_timeout,
            endpoints: dedup_by_address(endpoints),
        });
    }
    ports
}

/// One endpoint per address and port: the same pod can appear in two
/// slices for a moment while the controller moves it; the best-conditioned
/// entry wins.
fn dedup_by_address(endpoints: BTreeSet<Endpoint>) -> Vec<Endpoint> {
    let mut best: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for endpoint in endpoints {
        best.entry((endpoint.ip, endpoint.port))
            .and_modify(|kept| {
                if (endpoint.ready, endpoint.serving) > (kept.ready, kept.serving) {
                    *kept = endpoint.clone();
                }
            })
            .or_insert(endpoint);
    }
    best.into_values().collect()
}

/// Every service port the proxy programs, by Service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyState {
    pub services: BTreeMap<ObjectKey, Vec<ServicePort>>,
}

impl ProxyState {
    /// Sets (or, when `ports` is empty, removes) one Service's ports.
    pub fn set(&mut self, service: ObjectKey, ports: Vec<ServicePort>) {
        if ports.is_empty() {
            self.services.remove(&service);
        } else {
            self.services.insert(service, ports);
        }
    }

    pub fn ports(&self) -> impl Iterator<Item = &ServicePort> {
        self.services.values().flatten()
    }

    pub fn service(&self, key: &ObjectKey) -> &[ServicePort] {
        self.services.get(key).map(Vec::as_slice).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        serde_json::from_value(json(yaml)).unwrap()
    }

    fn slice(yaml: &str) -> EndpointSlice {
        serde_json::from_value(json(yaml)).unwrap()
    }

    /// The tests write objects as JSON.
    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    const WEB: &str = r#"{"metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000,
                 "sessionAffinity": "ClientIP",
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                           {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}}"#;

    const SLICE: &str = r#"{"metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
        "endpoints": [
          {"addresses": ["10.244.1.5"], "nodeName": "n1", "conditions": {"ready": true, "serving": true, "terminating": false}},
          {"addresses": ["10.244.2.5"], "nodeName": "n2", "conditions": {"ready": false, "serving": true, "terminating": true}},
          {"addresses": ["10.244.2.6"], "nodeName": "n2", "conditions": {"ready": false, "serving": false, "terminating": false}}]}"#;

    #[test]
    fn a_service_port_gets_its_target_port_policies_and_endpoints() {
        let ports = service_ports(&service(WEB), [&slice(SLICE)], "n1");
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.name.to_string(), "default/web:http");
        assert_eq!((http.cluster_ip, http.port, http.node_port), (Ipv4Addr::new(10, 96, 0, 20), 80, Some(30080)));
        assert!(http.external_local && !http.internal_local);
        assert_eq!(http.health_check_node_port, Some(32000));
        assert_eq!(http.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert_eq!(
            http.endpoints.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.244.1.5:8080", "10.244.2.5:8080", "10.244.2.6:8080"]
        );
        assert_eq!(ports[1].endpoints[0].port, 5353);
        assert_eq!(ports[1].name.protocol, Protocol::Udp);
    }

    #[test]
    fn ready_endpoints_win_and_serving_terminating_ones_stand_in_when_none_is_ready() {
        let ports = service_ports(&service(WEB), [&slice(SLICE)], "n2");
        let http = &ports[0];
        assert_eq!(http.cluster_endpoints().iter().map(|e| e.ip.to_string()).collect::<Vec<_>>(), ["10.244.1.5"]);
        // n2 has no ready endpoint: its serving terminating one stands in.
        assert_eq!(http.local_endpoints().iter().map(|e| e.ip.to_string()).collect::<Vec<_>>(), ["10.244.2.5"]);
        assert_eq!(http.external_endpoints(), http.local_endpoints());
        assert_eq!(http.internal_endpoints(), http.cluster_endpoints());
        assert_eq!(http.reachable_endpoints().len(), 2);
        let on_n3 = service_ports(&service(WEB), [&slice(SLICE)], "n3");
        assert!(on_n3[0].local_endpoints().is_empty());
    }

    #[test]
    fn headless_and_external_name_services_are_not_proxied_and_cluster_ips_get_no_node_port() {
        let headless =
            service(r#"{"metadata": {"name": "h", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}"#);
        assert!(service_ports(&headless, [], "n1").is_empty());
        let external = service(
            r#"{"metadata": {"name": "e", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "example.org"}}"#,
        );
        assert!(service_ports(&external, [], "n1").is_empty());
        let plain = service(
            r#"{"metadata": {"name": "p", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.9", "externalTrafficPolicy": "Local", "ports": [{"port": 80, "nodePort": 30001}]}}"#,
        );
        let ports = service_ports(&plain, [], "n1");
        assert_eq!((ports[0].node_port, ports[0].external_local, ports[0].name.to_string()), (None, false, "default/p".to_string()));
        assert!(ports[0].endpoints.is_empty());
    }

    #[test]
    fn the_same_address_in_two_slices_counts_once_with_its_best_conditions() {
        let moving = slice(
            r#"{"metadata": {"name": "web-def", "namespace": "default"}, "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.244.2.6"], "nodeName": "n2", "conditions": {"ready": true}}]}"#,
        );
        let ports = service_ports(&service(WEB), [&slice(SLICE), &moving], "n1");
        let six: Vec<&Endpoint> = ports[0].endpoints.iter().filter(|e| e.ip == Ipv4Addr::new(10, 244, 2, 6)).collect();
        assert_eq!(six.len(), 1);
        assert!(six[0].ready && six[0].serving, "{six:?}");
    }
}
