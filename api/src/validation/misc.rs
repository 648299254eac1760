//! The smaller kinds: Namespace, ConfigMap, Secret, Node, Event, Lease and
//! Endpoints — their defaults and validation.

use std::collections::BTreeSet;

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, NamespaceSpec, NamespaceStatus, Node, Secret, Taint};

use super::meta::{self, IMMUTABLE, too_long};
use super::names::{self, NameRule};
use super::path::Path;
use super::service::non_special_ip;
use super::set_if_empty;
use crate::quantity::Quantity;
use crate::status::FieldError;

/// ConfigMaps and Secrets are capped at 1 MiB of data.
const MAX_DATA_SIZE: usize = 1024 * 1024;
const METADATA_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

// ---------------------------------------------------------------- Namespace

/// The namespace label, `status.phase: Active`, and the `kubernetes`
/// finalizer that the namespace controller removes once the namespace is
/// emptied.
///
/// Kubernetes adds the finalizer only on create. Without a create/update
/// flag here, an object with no `resourceVersion` is taken to be new (a
/// create may not carry one; an update carries the stored one), so the
/// finalizer is never put back after the controller removed it.
pub(crate) fn default_namespace(ns: &mut Namespace) {
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata.labels.get_or_insert_with(Default::default).insert(METADATA_NAME_LABEL.into(), name);
    }
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    if s(&status.phase).is_empty() {
        status.phase = Some("Active".into());
    }
    let creating = s(&ns.metadata.resource_version).is_empty() && ns.metadata.deletion_timestamp.is_none();
    if creating {
        let finalizers = ns.spec.get_or_insert_with(NamespaceSpec::default).finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == "kubernetes") {
            finalizers.push("kubernetes".into());
        }
    }
}

pub(crate) fn validate_namespace(ns: &Namespace, old: Option<&Namespace>) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    if let Some(o) = old {
        // Kubernetes checks only metadata on namespace updates.
        return meta::validate_object_meta_update(&ns.metadata, &o.metadata, &mp);
    }
    let mut errs = meta::validate_object_meta(&ns.metadata, false, NameRule::Dns1123Label, &mp);
    let fp = Path::new("spec").child("finalizers");
    for f in ns.spec.iter().flat_map(|s| s.finalizers.iter().flatten()) {
        errs.extend(names::qualified_name(f).into_iter().map(|m| FieldError::invalid(&fp, f, m)));
        if !f.contains('/') && !["kubernetes", "orphan", "foregroundDeletion"].contains(&f.as_str()) {
            errs.push(FieldError::invalid(&fp, f, "name is neither a standard finalizer name nor is it fully qualified"));
        }
    }
    errs
}

// ---------------------------------------------------------------- ConfigMap

fn data_key_errors(key: &str, p: &Path) -> Vec<FieldError> {
    names::config_map_key(key).into_iter().map(|m| FieldError::invalid(p.key(key), key, m)).collect()
}

pub(crate) fn validate_config_map(cm: &ConfigMap, old: Option<&ConfigMap>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(o) = old {
        errs.extend(meta::validate_object_meta_update(&cm.metadata, &o.metadata, &Path::new("metadata")));
        if o.immutable == Some(true) {
            if cm.immutable != Some(true) {
                errs.push(FieldError::forbidden(Path::new("immutable"), "field is immutable when `immutable` is set"));
            }
            if cm.data != o.data {
                errs.push(FieldError::forbidden(Path::new("data"), "field is immutable when `immutable` is set"));
            }
            if cm.binary_data != o.binary_data {
                errs.push(FieldError::forbidden(Path::new("binaryData"), "field is immutable when `immutable` is set"));
            }
        }
    }
    errs.extend(meta::validate_object_meta(&cm.metadata, true, NameRule::Dns1123Subdomain, &Path::new("metadata")));
    let dp = Path::new("data");
    let bp = Path::new("binaryData");
    let mut size = 0;
    for (k, v) in cm.data.iter().flatten() {
        errs.extend(data_key_errors(k, &dp));
        if cm.binary_data.as_ref().is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(dp.key(k), k, "duplicate of key present in binaryData"));
        }
        size += v.len();
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        errs.extend(data_key_errors(k, &bp));
        size += v.0.len();
    }
    if size > MAX_DATA_SIZE {
        // Kubernetes reports this against the whole object (an empty path).
        errs.push(too_long(&Path::new(""), MAX_DATA_SIZE));
    }
    errs
}

// ---------------------------------------------------------------- Secret

/// Folds `stringData` into `data`, as Kubernetes does when decoding a
/// Secret: `stringData` wins on conflicts and is never stored.
pub(crate) fn merge_string_data(secret: &mut Secret) {
    if let Some(sd) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in sd {
            data.insert(k, ByteString(v.into_bytes()));
        }
    }
}

pub(crate) fn default_secret(secret: &mut Secret) {
    merge_string_data(secret);
    if s(&secret.type_).is_empty() {
        secret.type_ = Some("Opaque".into());
    }
}

pub(crate) fn validate_secret(secret: &Secret, old: Option<&Secret>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(o) = old {
        errs.extend(meta::validate_object_meta_update(&secret.metadata, &o.metadata, &Path::new("metadata")));
        if s(&secret.type_) != s(&o.type_) {
            errs.push(FieldError::invalid(Path::new("type"), s(&secret.type_), IMMUTABLE));
        }
        if o.immutable == Some(true) {
            if secret.immutable != Some(true) {
                errs.push(FieldError::forbidden(Path::new("immutable"), "field is immutable when `immutable` is set"));
            }
            if secret.data != o.data {
                errs.push(FieldError::forbidden(Path::new("data"), "field is immutable when `immutable` is set"));
            }
        }
    }
    errs.extend(meta::validate_object_meta(&secret.metadata, true, NameRule::Dns1123Subdomain, &Path::new("metadata")));
    let dp = Path::new("data");
    let data = secret.data.clone().unwrap_or_default();
    let mut size = 0;
    for (k, v) in &data {
        errs.extend(data_key_errors(k, &dp));
        size += v.0.len();
    }
    if size > MAX_DATA_SIZE {
        errs.push(too_long(&dp, MAX_DATA_SIZE));
    }
    let require = |key: &str, errs: &mut Vec<FieldError>| {
        if !data.contains_key(key) {
            errs.push(FieldError::required(dp.key(key)));
            false
        } else {
            true
        }
    };
    let json_ok = |key: &str| serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&data[key].0).map_err(|e| e.to_string());
    match s(&secret.type_) {
        "kubernetes.io/service-account-token" => {
            let ann = secret.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/service-account.name"));
            if ann.is_none_or(|v| v.is_empty()) {
                errs.push(FieldError::required(Path::new("metadata").child("annotations").key("kubernetes.io/service-account.name")));
            }
        }
        kind @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if kind == "kubernetes.io/dockercfg" { ".dockercfg" } else { ".dockerconfigjson" };
            if require(key, &mut errs)
                && let Err(e) = json_ok(key)
            {
                errs.push(FieldError::invalid(dp.key(key), "<secret contents redacted>", e));
            }
        }
        "kubernetes.io/basic-auth" if !data.contains_key("username") && !data.contains_key("password") => {
            errs.push(FieldError::required(dp.key("username")));
            errs.push(FieldError::required(dp.key("password")));
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            errs.push(FieldError::required(dp.key("ssh-privatekey")));
        }
        "kubernetes.io/tls" => {
            require("tls.crt", &mut errs);
            require("tls.key", &mut errs);
        }
        _ => {}
    }
    errs
}

// ---------------------------------------------------------------- Node

pub(crate) fn default_node(node: &mut Node) {
    if let Some(status) = &mut node.status {
        if status.allocatable.is_none() {
            status.allocatable = status.capacity.clone();
        }
        for list in [&mut status.capacity, &mut status.allocatable] {
            for q in list.iter_mut().flat_map(|l| l.values_mut()) {
                if let Ok(parsed) = Quantity::parse(&q.0) {
                    q.0 = parsed.round_up_to_milli().canonical();
                }
            }
        }
    }
}

fn validate_taints(taints: &[Taint], p: &Path, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    for (i, t) in taints.iter().enumerate() {
        let ip = p.index(i);
        errs.extend(names::qualified_name(&t.key).into_iter().map(|m| FieldError::invalid(ip.child("key"), &t.key, m)));
        let msgs = names::label_value(s(&t.value));
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(ip.child("value"), s(&t.value), msgs.join(";")));
        }
        match t.effect.as_str() {
            "" => errs.push(FieldError::required(ip.child("effect"))),
            "NoSchedule" | "PreferNoSchedule" | "NoExecute" => {}
            other => errs.push(FieldError::not_supported(ip.child("effect"), other, &["NoSchedule", "PreferNoSchedule", "NoExecute"])),
        }
        if !seen.insert((t.effect.clone(), t.key.clone())) {
            errs.push(FieldError {
                detail: "taints must be unique by key and effect pair".into(),
                ..FieldError::duplicate(&ip, format!("{}={}:{}", t.key, s(&t.value), t.effect))
            });
        }
    }
}

pub(crate) fn validate_node(node: &Node, old: Option<&Node>) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = Vec::new();
    let spec = node.spec.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    if let Some(o) = old {
        errs.extend(meta::validate_object_meta_update(&node.metadata, &o.metadata, &mp));
        let mut addresses = BTreeSet::new();
        for (i, a) in status.addresses.iter().flatten().enumerate() {
            if !addresses.insert((a.type_.clone(), a.address.clone())) {
                errs.push(FieldError::duplicate(Path::new("status").child("addresses").index(i), format!("{}/{}", a.type_, a.address)));
            }
        }
        let ospec = o.spec.clone().unwrap_or_default();
        let old_cidrs = ospec.pod_cidrs.unwrap_or_default();
        if !old_cidrs.is_empty() && spec.pod_cidrs.as_deref().unwrap_or_default() != old_cidrs.as_slice() {
            errs.push(FieldError::forbidden(
                Path::new("spec").child("podCIDRs"),
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        if !s(&ospec.provider_id).is_empty() && ospec.provider_id != spec.provider_id {
            errs.push(FieldError::forbidden(
                Path::new("spec").child("providerID"),
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
        if ospec.external_id != spec.external_id {
            errs.push(FieldError::forbidden(Path::new("spec").child("externalID"), "may not be updated"));
        }
    } else {
        errs.extend(meta::validate_object_meta(&node.metadata, false, NameRule::Dns1123Subdomain, &mp));
    }
    // Kubernetes reports taints under `metadata.taints`.
    validate_taints(spec.taints.as_deref().unwrap_or_default(), &mp.child("taints"), &mut errs);
    for (list_name, list) in [("capacity", &status.capacity), ("allocatable", &status.allocatable)] {
        for (k, q) in list.iter().flatten() {
            let qp = Path::new("status").child(list_name).child(k);
            match Quantity::parse(&q.0) {
                Ok(v) if v.is_negative() => errs.push(FieldError::invalid(&qp, v.canonical(), "must be greater than or equal to 0")),
                Ok(v) if k.contains('/') && !k.contains("kubernetes.io/") && !v.is_integer() => {
                    errs.push(FieldError::invalid(&qp, v.canonical(), "must be an integer"))
                }
                Ok(_) => {}
                Err(m) => errs.push(FieldError::invalid(&qp, &q.0, m)),
            }
        }
    }
    let cp = Path::new("spec").child("podCIDRs");
    let cidrs = spec.pod_cidrs.as_deref().unwrap_or_default();
    for (i, c) in cidrs.iter().enumerate() {
        if !names::is_valid_cidr(c) {
            errs.push(FieldError::invalid(cp.index(i), c, names::CIDR_MSG));
        }
    }
    if cidrs.len() > 1 {
        let v4 = cidrs.iter().filter(|c| !c.contains(':')).count();
        if cidrs.len() > 2 || v4 != 1 {
            errs.push(FieldError::invalid(&cp, format!("{cidrs:?}"), "may specify no more than one CIDR for each IP family"));
        }
        let mut seen = BTreeSet::new();
        for (i, c) in cidrs.iter().enumerate() {
            if !seen.insert(c) {
                errs.push(FieldError::duplicate(cp.index(i), c));
            }
        }
    }
    errs
}

// ---------------------------------------------------------------- Event

const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

/// Kubernetes' legacy event validation, which core/v1 events get; new-style
/// events (with `eventTime`) must also name who reported them and why.
pub(crate) fn validate_event(ev: &Event) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ns = s(&ev.metadata.namespace);
    let involved_ns = s(&ev.involved_object.namespace);
    let ins = Path::new("involvedObject").child("namespace");
    if ev.event_time.is_none() {
        let mismatch = if involved_ns.is_empty() { !ns.is_empty() && ns != "default" } else { ns != involved_ns };
        if mismatch {
            errs.push(FieldError::invalid(&ins, involved_ns, "does not match event.namespace"));
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid(&ins, involved_ns, "does not match event.namespace"));
        }
        let rc = s(&ev.reporting_component);
        if rc.is_empty() {
            errs.push(FieldError::required(Path::new("reportingComponent")));
        }
        errs.extend(names::qualified_name(rc).into_iter().map(|m| FieldError::invalid(Path::new("reportingComponent"), rc, m)));
        for (field, value, max) in [
            ("reportingInstance", s(&ev.reporting_instance), REPORTING_INSTANCE_MAX),
            ("action", s(&ev.action), ACTION_MAX),
            ("reason", s(&ev.reason), REASON_MAX),
        ] {
            if value.is_empty() {
                errs.push(FieldError::required(Path::new(field)));
            }
            if value.len() > max {
                errs.push(FieldError::invalid(Path::new(field), "", format!("can have at most {max} characters")));
            }
        }
        if s(&ev.message).len() > NOTE_MAX {
            errs.push(FieldError::invalid(Path::new("message"), "", format!("can have at most {NOTE_MAX} characters")));
        }
    }
    errs.extend(names::dns1123_subdomain(ns).into_iter().map(|m| FieldError::invalid(Path::new("namespace"), ns, m)));
    errs
}

// ---------------------------------------------------------------- Lease

pub(crate) fn validate_lease(lease: &Lease, old: Option<&Lease>) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = match old {
        Some(o) => meta::validate_object_meta_update(&lease.metadata, &o.metadata, &mp),
        None => Vec::new(),
    };
    errs.extend(meta::validate_object_meta(&lease.metadata, true, NameRule::Dns1123Subdomain, &mp));
    let sp = Path::new("spec");
    let spec = lease.spec.clone().unwrap_or_default();
    if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(sp.child("leaseDurationSeconds"), d, "must be greater than 0"));
    }
    if let Some(t) = spec.lease_transitions.filter(|t| *t < 0) {
        errs.push(FieldError::invalid(sp.child("leaseTransitions"), t, "must be greater than or equal to 0"));
    }
    if let Some(st) = spec.strategy.as_deref().filter(|st| !st.is_empty() && *st != "OldestEmulationVersion") {
        errs.push(FieldError::not_supported(sp.child("strategy"), st, &["OldestEmulationVersion"]));
    }
    if !s(&spec.preferred_holder).is_empty() && s(&spec.strategy).is_empty() {
        errs.push(FieldError::forbidden(sp.child("preferredHolder"), "may only be specified if `strategy` is defined"));
    }
    errs
}

// ---------------------------------------------------------------- Endpoints

pub(crate) fn default_endpoints(ep: &mut Endpoints) {
    for port in ep.subsets.iter_mut().flatten().flat_map(|s| s.ports.iter_mut().flatten()) {
        set_if_empty(&mut port.protocol, "TCP");
    }
}

pub(crate) fn validate_endpoints(ep: &Endpoints, old: Option<&Endpoints>) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = match old {
        Some(o) => meta::validate_object_meta_update(&ep.metadata, &o.metadata, &mp),
        None => Vec::new(),
    };
    errs.extend(meta::validate_object_meta(&ep.metadata, true, NameRule::Dns1123Subdomain, &mp));
    for (i, ss) in ep.subsets.iter().flatten().enumerate() {
        let sp = Path::new("subsets").index(i);
        let ready = ss.addresses.as_deref().unwrap_or_default();
        let not_ready = ss.not_ready_addresses.as_deref().unwrap_or_default();
        if ready.is_empty() && not_ready.is_empty() {
            errs.push(FieldError { detail: "must specify `addresses` or `notReadyAddresses`".into(), ..FieldError::required(&sp) });
        }
        for (list, addrs) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, a) in addrs.iter().enumerate() {
                let ap = sp.child(list).index(j);
                if names::parse_ip(&a.ip).is_none() {
                    errs.push(FieldError::invalid(ap.child("ip"), &a.ip, names::IP_MSG));
                }
                if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
                    errs.extend(names::dns1123_label(h).into_iter().map(|m| FieldError::invalid(ap.child("hostname"), h, m)));
                }
                if let Some(n) = &a.node_name {
                    errs.extend(names::dns1123_subdomain(n).into_iter().map(|m| FieldError::invalid(ap.child("nodeName"), n, m)));
                }
                non_special_ip(&a.ip, &ap.child("ip"), &mut errs);
            }
        }
        let ports = ss.ports.as_deref().unwrap_or_default();
        for (j, port) in ports.iter().enumerate() {
            let pp = sp.child("ports").index(j);
            let name = s(&port.name);
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(pp.child("name")));
            } else if !name.is_empty() {
                errs.extend(names::dns1123_label(name).into_iter().map(|m| FieldError::invalid(pp.child("name"), name, m)));
            }
            errs.extend(names::port_num(i64::from(port.port)).into_iter().map(|m| FieldError::invalid(pp.child("port"), port.port, m)));
            match s(&port.protocol) {
                "" => errs.push(FieldError::required(pp.child("protocol"))),
                "TCP" | "UDP" | "SCTP" => {}
                other => errs.push(FieldError::not_supported(pp.child("protocol"), other, &["SCTP", "TCP", "UDP"])),
            }
            if let Some(ap) = &port.app_protocol {
                errs.extend(names::qualified_name(ap).into_iter().map(|m| FieldError::invalid(pp.child("appProtocol"), ap, m)));
            }
        }
    }
    errs
}
