//! Services: defaulting (`SetDefaults_Service` plus the registry's cluster-IP
//! normalization and IP-family initialization for this IPv4 single-stack
//! cluster) and validation (`ValidateService`, `ValidateServiceUpdate`).
//!
//! Cluster IP and node port *allocation* is the API server's: validation
//! accepts an unallocated service (no `clusterIP`, no `nodePort`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ClientIPConfig, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus, SessionAffinityConfig,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta;
use super::names::{self, NameRule};
use super::path::Path;
use super::set_if_empty;
use crate::status::FieldError;

/// `DESIGN.md`: NodePort range.
pub(crate) const NODE_PORT_MIN: i32 = 30000;
pub(crate) const NODE_PORT_MAX: i32 = 32767;
const MAX_AFFINITY_TIMEOUT: i32 = 86400;
const DEFAULT_AFFINITY_TIMEOUT: i32 = 10800;

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

fn externally_accessible(spec: &ServiceSpec) -> bool {
    let t = s(&spec.type_);
    t == "LoadBalancer" || t == "NodePort" || (t == "ClusterIP" && spec.external_ips.as_ref().is_some_and(|e| !e.is_empty()))
}

fn is_headless(spec: &ServiceSpec) -> bool {
    spec.cluster_ips.as_deref() == Some(&["None".to_string()][..])
}

fn selectorless(spec: &ServiceSpec) -> bool {
    spec.selector.as_ref().is_none_or(|s| s.is_empty())
}

pub(crate) fn default_service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    if s(&spec.session_affinity).is_empty() {
        spec.session_affinity = Some("None".into());
    }
    match s(&spec.session_affinity) {
        "None" => spec.session_affinity_config = None,
        "ClientIP" => {
            let has_timeout =
                spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds).is_some();
            if !has_timeout {
                spec.session_affinity_config =
                    Some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(DEFAULT_AFFINITY_TIMEOUT) }) });
            }
        }
        _ => {}
    }
    if s(&spec.type_).is_empty() {
        spec.type_ = Some("ClusterIP".into());
    }
    for p in spec.ports.iter_mut().flatten() {
        set_if_empty(&mut p.protocol, "TCP");
        let unset = match &p.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(t)) => t.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            p.target_port = Some(IntOrString::Int(p.port));
        }
    }
    if externally_accessible(spec) && s(&spec.external_traffic_policy).is_empty() {
        spec.external_traffic_policy = Some("Cluster".into());
    }
    let t = s(&spec.type_).to_string();
    if spec.internal_traffic_policy.is_none() && matches!(t.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        spec.internal_traffic_policy = Some("Cluster".into());
    }
    if t == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }

    // The registry keeps clusterIP and clusterIPs in step.
    let ip = s(&spec.cluster_ip).to_string();
    let ips_empty = spec.cluster_ips.as_ref().is_none_or(|v| v.is_empty());
    if !ip.is_empty() && ips_empty {
        spec.cluster_ips = Some(vec![ip]);
    } else if ip.is_empty() && !ips_empty {
        spec.cluster_ip = spec.cluster_ips.as_ref().and_then(|v| v.first().cloned());
    }

    if t != "ExternalName" {
        let headless_selectorless = spec.cluster_ip.as_deref() == Some("None") && selectorless(spec);
        if spec.ip_family_policy.is_none() {
            spec.ip_family_policy = Some(if headless_selectorless { "RequireDualStack" } else { "SingleStack" }.into());
        }
        let families = spec.ip_families.get_or_insert_with(Vec::new);
        // Infer families from explicitly requested IPs. An IPv6 one cannot be
        // inferred on this IPv4-only cluster; it is left for validation to
        // reject rather than hidden behind a defaulted IPv4 family.
        let mut uninferable = false;
        for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
            if ip == "None" {
                break;
            }
            if i < families.len() {
                continue;
            }
            match names::parse_ip(ip) {
                Some(IpAddr::V4(_)) => families.push("IPv4".into()),
                _ => {
                    uninferable = true;
                    break;
                }
            }
        }
        if families.is_empty() && !uninferable {
            families.push("IPv4".into());
        }
        if headless_selectorless && spec.ip_family_policy.as_deref() != Some("SingleStack") && families.len() == 1 {
            let other = if families[0] == "IPv4" { "IPv6" } else { "IPv4" };
            families.push(other.into());
        }
    }

    let status = svc.status.get_or_insert_with(ServiceStatus::default);
    let lb = status.load_balancer.get_or_insert_with(LoadBalancerStatus::default);
    if t == "LoadBalancer" {
        for ing in lb.ingress.iter_mut().flatten() {
            if !s(&ing.ip).is_empty() && ing.ip_mode.is_none() {
                ing.ip_mode = Some("VIP".into());
            }
        }
    }
}

/// Go's `%#v` of the `(protocol, port)` key Kubernetes reports duplicates with.
fn go_port_key(p: &ServicePort) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{:?}, AppProtocol:(*string)(nil), Port:{}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        s(&p.protocol),
        p.port
    )
}

fn go_strings(v: Option<&Vec<String>>) -> String {
    match v {
        None => "[]string(nil)".into(),
        Some(v) => format!("[]string{{{}}}", v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ")),
    }
}

/// `ValidateNonSpecialIP`: endpoints and external IPs must be routable unicast.
pub(crate) fn non_special_ip(ip: &str, p: &Path, errs: &mut Vec<FieldError>) {
    let Some(addr) = names::parse_ip(ip) else {
        errs.push(FieldError::invalid(p, ip, "must be a valid IP address"));
        return;
    };
    if addr.is_unspecified() {
        errs.push(FieldError::invalid(p, ip, format!("may not be unspecified ({ip})")));
    }
    if addr.is_loopback() {
        errs.push(FieldError::invalid(p, ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)"));
    }
    let link_local = match addr {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    if link_local {
        errs.push(FieldError::invalid(p, ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"));
    }
    let link_local_multicast = match addr {
        IpAddr::V4(a) => a.octets()[..3] == [224, 0, 0],
        IpAddr::V6(a) => (a.segments()[0] & 0xff0f) == 0xff02,
    };
    if link_local_multicast {
        errs.push(FieldError::invalid(p, ip, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"));
    }
}

fn validate_cluster_ips(spec: &ServiceSpec, errs: &mut Vec<FieldError>) {
    if s(&spec.type_) == "ExternalName" {
        return;
    }
    let sp = Path::new("spec");
    let ips_path = sp.child("clusterIPs");
    let ips = spec.cluster_ips.as_deref().unwrap_or_default();
    let ips_str = go_strings(spec.cluster_ips.as_ref());
    let ip = s(&spec.cluster_ip);
    if !ip.is_empty() {
        if ips.is_empty() {
            errs.push(FieldError::required(&ips_path));
        } else if ips[0] != ip {
            errs.push(FieldError::invalid(&ips_path, &ips_str, "first value must match `clusterIP`"));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid(&ips_path, &ips_str, "must be empty when `clusterIP` is not specified"));
    }
    let families = spec.ip_families.as_deref().unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, f) in families.iter().enumerate() {
        if f != "IPv4" && f != "IPv6" {
            errs.push(FieldError::not_supported(sp.child("ipFamilies").index(i), f, &["IPv4", "IPv6"]));
        }
        if !seen.insert(f) {
            errs.push(FieldError::duplicate(sp.child("ipFamilies").index(i), f));
        }
    }
    const POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
    let policy = spec.ip_family_policy.as_deref();
    if let Some(pol) = policy.filter(|p| !POLICIES.contains(p)) {
        errs.push(FieldError::not_supported(sp.child("ipFamilyPolicy"), pol, POLICIES));
    }
    let mut bad_ip = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                bad_ip = true;
                errs.push(FieldError::invalid(&ips_path, &ips_str, "'None' must be the first and only value"));
            }
            continue;
        }
        if names::parse_ip(ip).is_none() {
            bad_ip = true;
            errs.push(FieldError::invalid(ips_path.index(i), ip, names::IP_MSG));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(&ips_path, &ips_str, "may only hold up to 2 values"));
    }
    if bad_ip {
        return;
    }
    let parsed: Vec<IpAddr> = ips.iter().filter_map(|i| names::parse_ip(i)).collect();
    if parsed.len() > 1 && parsed[0].is_ipv4() == parsed[1].is_ipv4() {
        errs.push(FieldError::invalid(&ips_path, &ips_str, "may specify no more than one IP for each IP family"));
    }
    let headless = is_headless(spec);
    if !headless {
        for (i, (ip, fam)) in parsed.iter().zip(families).enumerate() {
            if fam == "IPv4" && ip.is_ipv6() {
                errs.push(FieldError::invalid(ips_path.index(i), ip, format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`")));
            }
            if fam == "IPv6" && !ip.is_ipv6() {
                errs.push(FieldError::invalid(ips_path.index(i), ip, format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`")));
            }
        }
    }

    // What this cluster can provide: one IPv4 service range.
    let headless_selectorless = s(&spec.cluster_ip) == "None" && selectorless(spec);
    if headless_selectorless {
        return; // may list both families even on a single-stack cluster
    }
    for (i, ip) in parsed.iter().enumerate() {
        if ip.is_ipv6() && i >= families.len() {
            errs.push(FieldError::invalid(ips_path.index(i), &ips_str, "IPv6 is not configured on this cluster"));
        }
    }
    if policy == Some("RequireDualStack") {
        errs.push(FieldError::invalid(
            sp.child("ipFamilyPolicy"),
            "RequireDualStack",
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, f) in families.iter().enumerate() {
        if f == "IPv6" {
            errs.push(FieldError::invalid(sp.child("ipFamilies").index(i), f, "not configured on this cluster"));
        }
    }
}

fn validate_service_port(port: &ServicePort, require_name: bool, names_seen: &mut BTreeSet<String>, p: &Path, errs: &mut Vec<FieldError>) {
    let name = s(&port.name);
    if require_name && name.is_empty() {
        errs.push(FieldError::required(p.child("name")));
    } else if !name.is_empty() {
        errs.extend(names::dns1123_label(name).into_iter().map(|m| FieldError::invalid(p.child("name"), name, m)));
        if !names_seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(p.child("name"), name));
        }
    }
    errs.extend(names::port_num(i64::from(port.port)).into_iter().map(|m| FieldError::invalid(p.child("port"), port.port, m)));
    match s(&port.protocol) {
        "" => errs.push(FieldError::required(p.child("protocol"))),
        "TCP" | "UDP" | "SCTP" => {}
        other => errs.push(FieldError::not_supported(p.child("protocol"), other, &["SCTP", "TCP", "UDP"])),
    }
    match port.target_port.as_ref().unwrap_or(&IntOrString::Int(0)) {
        IntOrString::Int(n) => {
            errs.extend(names::port_num(i64::from(*n)).into_iter().map(|m| FieldError::invalid(p.child("targetPort"), n, m)))
        }
        IntOrString::String(n) => errs.extend(names::port_name(n).into_iter().map(|m| FieldError::invalid(p.child("targetPort"), n, m))),
    }
    if let Some(ap) = &port.app_protocol {
        errs.extend(names::qualified_name(ap).into_iter().map(|m| FieldError::invalid(p.child("appProtocol"), ap, m)));
    }
}

pub(crate) fn validate_service(svc: &Service) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = meta::validate_object_meta(&svc.metadata, true, NameRule::Dns1035Label, &mp);
    let spec = svc.spec.clone().unwrap_or_default();
    let sp = Path::new("spec");
    let t = s(&spec.type_);
    let ports = spec.ports.as_deref().unwrap_or_default();
    let headless = is_headless(&spec);

    if ports.is_empty() && !headless && t != "ExternalName" {
        errs.push(FieldError::required(sp.child("ports")));
    }
    match t {
        "LoadBalancer" | "NodePort" if headless => {
            errs.push(FieldError::invalid(sp.child("clusterIPs").index(0), "None", format!("may not be set to 'None' for {t} services")));
        }
        "ExternalName" => {
            if spec.cluster_ips.as_ref().is_some_and(|v| !v.is_empty()) {
                errs.push(FieldError::forbidden(sp.child("clusterIPs"), "may not be set for ExternalName services"));
            }
            if spec.ip_families.as_ref().is_some_and(|v| !v.is_empty()) {
                errs.push(FieldError::forbidden(sp.child("ipFamilies"), "may not be set for ExternalName services"));
            }
            if spec.ip_family_policy.is_some() {
                errs.push(FieldError::forbidden(sp.child("ipFamilyPolicy"), "may not be set for ExternalName services"));
            }
            // The name is a CNAME, which may end in a dot.
            let cname = s(&spec.external_name);
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required(sp.child("externalName")));
            } else {
                errs.extend(names::dns1123_subdomain(cname).into_iter().map(|m| FieldError::invalid(sp.child("externalName"), cname, m)));
            }
        }
        _ => {}
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        validate_service_port(port, ports.len() > 1, &mut port_names, &sp.child("ports").index(i), &mut errs);
    }
    errs.extend(meta::validate_labels(spec.selector.as_ref(), &sp.child("selector")));

    match s(&spec.session_affinity) {
        "" => errs.push(FieldError::required(sp.child("sessionAffinity"))),
        "ClientIP" => {
            let cp = sp.child("sessionAffinityConfig");
            let detail = "when session affinity type is ClientIP";
            match spec.session_affinity_config.as_ref().map(|c| c.client_ip.as_ref().map(|ip| ip.timeout_seconds)) {
                None => errs.push(FieldError { detail: detail.into(), ..FieldError::required(&cp) }),
                Some(None) => errs.push(FieldError { detail: detail.into(), ..FieldError::required(cp.child("clientIP")) }),
                Some(Some(None)) => {
                    errs.push(FieldError { detail: detail.into(), ..FieldError::required(cp.child("clientIP").child("timeoutSeconds")) })
                }
                Some(Some(Some(t))) if t <= 0 || t > MAX_AFFINITY_TIMEOUT => errs.push(FieldError::invalid(
                    cp.child("clientIP").child("timeoutSeconds"),
                    t,
                    format!("must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}"),
                )),
                Some(Some(Some(_))) => {}
            }
        }
        "None" => {
            if spec.session_affinity_config.is_some() {
                errs.push(FieldError::forbidden(sp.child("sessionAffinityConfig"), "must not be set when session affinity is None"));
            }
        }
        other => errs.push(FieldError::not_supported(sp.child("sessionAffinity"), other, &["ClientIP", "None"])),
    }

    validate_cluster_ips(&spec, &mut errs);

    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        let ip_path = sp.child("externalIPs").index(i);
        if names::parse_ip(ip).is_none() {
            errs.push(FieldError::invalid(&ip_path, ip, names::IP_MSG));
        } else {
            non_special_ip(ip, &ip_path, &mut errs);
        }
    }

    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if t.is_empty() {
        errs.push(FieldError::required(sp.child("type")));
    } else if !TYPES.contains(&t) {
        errs.push(FieldError::not_supported(sp.child("type"), t, TYPES));
    }
    let mut node_ports = BTreeSet::new();
    let mut proto_ports = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = sp.child("ports").index(i);
        let node_port = port.node_port.unwrap_or(0);
        if t == "ClusterIP" && node_port != 0 {
            errs.push(FieldError::forbidden(pp.child("nodePort"), "may not be used when `type` is 'ClusterIP'"));
        }
        if node_port != 0 && (t == "NodePort" || t == "LoadBalancer") && !(NODE_PORT_MIN..=NODE_PORT_MAX).contains(&node_port) {
            errs.push(FieldError::invalid(
                pp.child("nodePort"),
                node_port,
                format!("provided port is not in the valid range. The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}"),
            ));
        }
        if node_port != 0 && !node_ports.insert((s(&port.protocol).to_string(), node_port)) {
            errs.push(FieldError::duplicate(pp.child("nodePort"), node_port));
        }
        if !proto_ports.insert((s(&port.protocol).to_string(), port.port)) {
            errs.push(FieldError::duplicate(&pp, go_port_key(port)));
        }
    }

    if let Some(ranges) = spec.load_balancer_source_ranges.as_ref().filter(|r| !r.is_empty()) {
        // Kubernetes spells this path with a capital L.
        let rp = sp.child("LoadBalancerSourceRanges");
        if t != "LoadBalancer" {
            errs.push(FieldError::forbidden(&rp, "may only be used when `type` is 'LoadBalancer'"));
        }
        for (i, r) in ranges.iter().enumerate() {
            let r = r.trim();
            if !names::is_valid_cidr(r) {
                errs.push(FieldError::invalid(rp.index(i), r, names::CIDR_MSG));
            }
        }
    }
    if spec.allocate_load_balancer_node_ports.is_some() && t != "LoadBalancer" {
        errs.push(FieldError::forbidden(sp.child("allocateLoadBalancerNodePorts"), "may only be used when `type` is 'LoadBalancer'"));
    }
    if t == "LoadBalancer" && spec.allocate_load_balancer_node_ports.is_none() {
        errs.push(FieldError::required(Path::new("allocateLoadBalancerNodePorts")));
    }
    if let Some(class) = &spec.load_balancer_class {
        if t == "LoadBalancer" {
            errs.extend(names::qualified_name(class).into_iter().map(|m| FieldError::invalid(sp.child("loadBalancerClass"), class, m)));
        } else {
            errs.push(FieldError::forbidden(sp.child("loadBalancerClass"), "may only be used when `type` is 'LoadBalancer'"));
        }
    }

    let etp = s(&spec.external_traffic_policy);
    if !externally_accessible(&spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(sp.child("externalTrafficPolicy"), etp, "may only be set for externally-accessible services"));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(sp.child("externalTrafficPolicy")));
    } else if etp != "Cluster" && etp != "Local" {
        errs.push(FieldError::not_supported(sp.child("externalTrafficPolicy"), etp, &["Cluster", "Local"]));
    }
    let needs_health_check = t == "LoadBalancer" && etp == "Local";
    let hcnp = spec.health_check_node_port.unwrap_or(0);
    if !needs_health_check && hcnp != 0 {
        errs.push(FieldError::invalid(
            sp.child("healthCheckNodePort"),
            hcnp,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    } else if hcnp != 0 {
        // Zero means "not yet allocated": the server assigns it like a node port.
        errs.extend(names::port_num(i64::from(hcnp)).into_iter().map(|m| FieldError::invalid(sp.child("healthCheckNodePort"), hcnp, m)));
    }

    match spec.internal_traffic_policy.as_deref() {
        None if matches!(t, "NodePort" | "LoadBalancer" | "ClusterIP") => {
            errs.push(FieldError::required(sp.child("internalTrafficPolicy")))
        }
        Some(p) if p != "Cluster" && p != "Local" => {
            errs.push(FieldError::not_supported(sp.child("internalTrafficPolicy"), p, &["Cluster", "Local"]))
        }
        _ => {}
    }
    if let Some(td) = spec.traffic_distribution.as_deref().filter(|td| *td != "PreferClose") {
        errs.push(FieldError::not_supported(sp.child("trafficDistribution"), td, &["PreferClose"]));
    }
    errs
}

pub(crate) fn validate_service_update(new: &Service, old: &Service) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    let ns = new.spec.clone().unwrap_or_default();
    let os = old.spec.clone().unwrap_or_default();
    let ips_path = Path::new("spec").child("clusterIPs");
    let new_ips = ns.cluster_ips.as_deref().unwrap_or_default();
    let old_ips = os.cluster_ips.as_deref().unwrap_or_default();
    let new_ips_str = go_strings(ns.cluster_ips.as_ref());
    let either_external = s(&ns.type_) == "ExternalName" || s(&os.type_) == "ExternalName";
    let both_headless = is_headless(&ns) && is_headless(&os);
    if !either_external && !both_headless {
        use std::cmp::Ordering::*;
        match old_ips.len().cmp(&new_ips.len()) {
            Equal => {
                for (i, (o, n)) in old_ips.iter().zip(new_ips).enumerate() {
                    if o != n {
                        errs.push(FieldError::invalid(ips_path.index(i), &new_ips_str, "may not change once set"));
                    }
                }
            }
            Greater => {
                if new_ips.is_empty() {
                    errs.push(FieldError::invalid(ips_path.index(0), &new_ips_str, "primary clusterIP can not be unset"));
                } else if new_ips[0] != old_ips[0] {
                    errs.push(FieldError::invalid(ips_path.index(0), &new_ips_str, "may not change once set"));
                }
                if new_ips.len() == 1 && ns.ip_family_policy.as_deref() != Some("SingleStack") {
                    errs.push(FieldError::invalid(
                        Path::new("spec").child("ipFamilyPolicy"),
                        s(&ns.ip_family_policy),
                        "must be set to 'SingleStack' when releasing the secondary clusterIP",
                    ));
                }
            }
            Less => {
                if !old_ips.is_empty() && new_ips[0] != old_ips[0] {
                    errs.push(FieldError::invalid(ips_path.index(0), &new_ips_str, "may not change once set"));
                }
            }
        }
    }
    if !either_external && is_headless(&ns) == is_headless(&os) && !is_headless(&ns) {
        let nf = ns.ip_families.as_deref().unwrap_or_default();
        let of = os.ip_families.as_deref().unwrap_or_default();
        if !nf.is_empty() && !of.is_empty() && nf[0] != of[0] {
            errs.push(FieldError::invalid(
                Path::new("spec").child("ipFamilies").index(0),
                go_strings(ns.ip_families.as_ref()),
                "may not change once set",
            ));
        }
    }
    if s(&ns.type_) == "LoadBalancer" && s(&os.type_) == "LoadBalancer" && ns.load_balancer_class != os.load_balancer_class {
        errs.push(FieldError::invalid(Path::new("spec").child("loadBalancerClass"), s(&ns.load_balancer_class), "may not change once set"));
    }
    let needs_hc = |sp: &ServiceSpec| s(&sp.type_) == "LoadBalancer" && s(&sp.external_traffic_policy) == "Local";
    if needs_hc(&ns) && needs_hc(&os) && ns.health_check_node_port != os.health_check_node_port {
        errs.push(FieldError::forbidden(Path::new("spec").child("healthCheckNodePort"), meta::IMMUTABLE));
    }
    errs.extend(validate_service(new));
    errs
}
