//! discovery.k8s.io/v1 EndpointSlice: its defaults, what its registry
//! strategy drops, and its validation (`pkg/apis/discovery/validation`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{EndpointHints, EndpointSlice};

use super::meta::{self, IMMUTABLE};
use super::names::{self, NameRule};
use super::path::Path;
use super::service::non_special_ip;
use super::set_if_empty;
use crate::status::FieldError;

const ADDRESS_TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MAX_ADDRESSES: usize = 100;
const MAX_PORTS: usize = 20000;
const MAX_ENDPOINTS: usize = 1000;
const MAX_ZONE_HINTS: usize = 8;

/// `SetDefaults_EndpointPort` (an unnamed port is named `""`, the protocol is
/// TCP), then what the strategy drops from a v1 write: `deprecatedTopology`
/// (kept only for v1beta1 clients, which we do not serve) and
/// `hints.forNodes` (behind the PreferSameTrafficDistribution gate, alpha
/// and off in 1.33).
pub(crate) fn default_endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        port.name.get_or_insert_with(String::new);
        set_if_empty(&mut port.protocol, "TCP");
    }
    for endpoint in &mut slice.endpoints {
        endpoint.deprecated_topology = None;
        if let Some(hints) = endpoint.hints.as_mut() {
            hints.for_nodes = None;
        }
    }
}

pub(crate) fn validate_endpoint_slice(slice: &EndpointSlice, old: Option<&EndpointSlice>) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = match old {
        Some(o) => meta::validate_object_meta_update(&slice.metadata, &o.metadata, &mp),
        None => Vec::new(),
    };
    errs.extend(meta::validate_object_meta(&slice.metadata, true, NameRule::Dns1123Subdomain, &mp));
    let address_type = slice.address_type.as_str();
    match address_type {
        "" => errs.push(FieldError::required("addressType")),
        t if !ADDRESS_TYPES.contains(&t) => errs.push(FieldError::not_supported("addressType", t, ADDRESS_TYPES)),
        _ => {}
    }
    validate_endpoints(slice, &mut errs);
    validate_ports(slice, &mut errs);
    if let Some(o) = old
        && o.address_type != slice.address_type
    {
        errs.push(FieldError::invalid("addressType", address_type, IMMUTABLE));
    }
    errs
}

fn validate_endpoints(slice: &EndpointSlice, errs: &mut Vec<FieldError>) {
    let p = Path::new("endpoints");
    if slice.endpoints.len() > MAX_ENDPOINTS {
        errs.push(FieldError::too_many(&p, slice.endpoints.len(), MAX_ENDPOINTS));
        return;
    }
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let ep = p.index(i);
        let ap = ep.child("addresses");
        match endpoint.addresses.len() {
            0 => errs.push(FieldError { detail: "must contain at least 1 address".into(), ..FieldError::required(&ap) }),
            n if n > MAX_ADDRESSES => errs.push(FieldError::too_many(&ap, n, MAX_ADDRESSES)),
            _ => {}
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            // Addresses of a type Kubernetes does not know are not checked.
            match slice.address_type.as_str() {
                "IPv4" => {
                    if !is_ipv4(address) {
                        errs.push(FieldError::invalid(ap.index(j), address, "must be a valid IPv4 address"));
                    }
                    non_special_ip(address, &ap.index(j), errs);
                }
                "IPv6" => {
                    if !is_ipv6(address) {
                        errs.push(FieldError::invalid(ap.index(j), address, "must be a valid IPv6 address"));
                    }
                    non_special_ip(address, &ap.index(j), errs);
                }
                "FQDN" => errs.extend(fully_qualified_domain_name(&ap.index(j), address)),
                _ => {}
            }
        }
        if let Some(node) = &endpoint.node_name {
            errs.extend(names::dns1123_subdomain(node).into_iter().map(|m| FieldError::invalid(ep.child("nodeName"), node, m)));
        }
        if let Some(hostname) = &endpoint.hostname {
            errs.extend(names::dns1123_label(hostname).into_iter().map(|m| FieldError::invalid(ep.child("hostname"), hostname, m)));
        }
        if let Some(hints) = &endpoint.hints {
            validate_hints(hints, &ep.child("hints"), errs);
        }
    }
}

fn validate_hints(hints: &EndpointHints, p: &Path, errs: &mut Vec<FieldError>) {
    let zp = p.child("forZones");
    let zones = hints.for_zones.as_deref().unwrap_or_default();
    if zones.len() > MAX_ZONE_HINTS {
        errs.push(FieldError::too_many(&zp, zones.len(), MAX_ZONE_HINTS));
        return;
    }
    let mut seen = BTreeSet::new();
    for (i, zone) in zones.iter().enumerate() {
        let np = zp.index(i).child("name");
        if !seen.insert(zone.name.as_str()) {
            errs.push(FieldError::duplicate(&np, &zone.name));
        }
        errs.extend(names::label_value(&zone.name).into_iter().map(|m| FieldError::invalid(&np, &zone.name, m)));
    }
}

fn validate_ports(slice: &EndpointSlice, errs: &mut Vec<FieldError>) {
    let p = Path::new("ports");
    let ports = slice.ports.as_deref().unwrap_or_default();
    if ports.len() > MAX_PORTS {
        errs.push(FieldError::too_many(&p, ports.len(), MAX_PORTS));
        return;
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = p.index(i);
        // Defaulting names every port, so a missing name reads as "".
        let name = port.name.as_deref().unwrap_or_default();
        if !name.is_empty() {
            errs.extend(names::dns1123_label(name).into_iter().map(|m| FieldError::invalid(pp.child("name"), name, m)));
        }
        if !names.insert(name) {
            errs.push(FieldError::duplicate(pp.child("name"), name));
        }
        match port.protocol.as_deref() {
            None => errs.push(FieldError::required(pp.child("protocol"))),
            Some(proto) if !PROTOCOLS.contains(&proto) => errs.push(FieldError::not_supported(pp.child("protocol"), proto, PROTOCOLS)),
            Some(_) => {}
        }
        if let Some(ap) = &port.app_protocol {
            errs.extend(names::qualified_name(ap).into_iter().map(|m| FieldError::invalid(pp.child("appProtocol"), ap, m)));
        }
    }
}

/// Go's `ip.To4() != nil`: dotted IPv4, or IPv6 that maps an IPv4 address.
fn is_ipv4(v: &str) -> bool {
    match names::parse_ip(v) {
        Some(IpAddr::V4(_)) => true,
        Some(IpAddr::V6(a)) => a.to_ipv4_mapped().is_some(),
        None => false,
    }
}

fn is_ipv6(v: &str) -> bool {
    matches!(names::parse_ip(v), Some(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none())
}

/// `IsFullyQualifiedDomainName`: a DNS subdomain (a trailing dot allowed) of
/// at least two labels; reports the first problem only, naming the part at fault.
fn fully_qualified_domain_name(p: &Path, name: &str) -> Option<FieldError> {
    if name.is_empty() {
        return Some(FieldError::required(p));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let errs = names::dns1123_subdomain(name);
    if !errs.is_empty() {
        return Some(FieldError::invalid(p, name, errs.join(",")));
    }
    if name.split('.').count() < 2 {
        return Some(FieldError::invalid(p, name, "should be a domain with at least two segments separated by dots"));
    }
    name.split('.').find_map(|label| {
        let errs = names::dns1123_label(label);
        (!errs.is_empty()).then(|| FieldError::invalid(p, label, errs.join(",")))
    })
}
