//! Pods and pod templates: defaulting (`pkg/apis/core/v1/defaults.go` plus
//! the admission plugins every cluster runs), QoS class, and validation
//! (`pkg/apis/core/validation`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, LifecycleHandler, Pod, PodSecurityContext, PodSpec, PodStatus, PodTemplateSpec, Probe, ResourceRequirements,
    Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::meta;
use super::names::{self, NameRule};
use super::path::Path;
use super::set_if_empty;
use crate::quantity::{self, Quantity};
use crate::status::FieldError;

const MAX_INT32: i64 = i32::MAX as i64;
const NON_NEGATIVE: &str = "must be greater than or equal to 0";

// ---------------------------------------------------------------- defaults

/// `Always` for `:latest` or an untagged, undigested image; otherwise
/// `IfNotPresent` (including references Kubernetes cannot parse).
pub(crate) fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if name.is_empty() {
        return "IfNotPresent";
    }
    let components: Vec<&str> = name.split('/').collect();
    let last = components[components.len() - 1];
    let tag = last.split_once(':').map(|(_, t)| t);
    // The first component is a registry host when it looks like one; the
    // repository path after it must be lowercase or the reference is invalid.
    let first_is_domain = components.len() > 1 && (components[0].contains(['.', ':']) || components[0] == "localhost");
    let repo = if first_is_domain { &components[1..] } else { &components[..] };
    let repo_ok = repo.iter().enumerate().all(|(i, c)| {
        let c = if i == repo.len() - 1 { c.split_once(':').map_or(*c, |(n, _)| n) } else { c };
        !c.is_empty() && !c.bytes().any(|b| b.is_ascii_uppercase())
    });
    if !repo_ok {
        return "IfNotPresent";
    }
    match (tag, digest) {
        (Some("latest"), _) | (None, None) => "Always",
        _ => "IfNotPresent",
    }
}

fn round_resource_list(list: &mut Option<BTreeMap<String, K8sQuantity>>) {
    for q in list.iter_mut().flatten().map(|(_, q)| q) {
        if let Ok(parsed) = Quantity::parse(&q.0) {
            q.0 = parsed.round_up_to_milli().canonical();
        }
    }
}

fn default_http_get(h: Option<&mut k8s_openapi::api::core::v1::HTTPGetAction>) {
    if let Some(h) = h {
        set_if_empty(&mut h.path, "/");
        set_if_empty(&mut h.scheme, "HTTP");
    }
}

fn default_probe(p: &mut Option<Probe>) {
    if let Some(p) = p {
        for (field, value) in
            [(&mut p.timeout_seconds, 1), (&mut p.period_seconds, 10), (&mut p.success_threshold, 1), (&mut p.failure_threshold, 3)]
        {
            if field.unwrap_or(0) == 0 {
                *field = Some(value);
            }
        }
        default_http_get(p.http_get.as_mut());
        if let Some(g) = &mut p.grpc {
            g.service.get_or_insert_with(String::new);
        }
    }
}

fn default_lifecycle_handler(h: Option<&mut LifecycleHandler>) {
    if let Some(h) = h {
        default_http_get(h.http_get.as_mut());
    }
}

fn default_env(env: &mut Option<Vec<EnvVar>>) {
    for e in env.iter_mut().flatten() {
        if let Some(f) = e.value_from.as_mut().and_then(|v| v.field_ref.as_mut())
            && f.api_version.as_deref().unwrap_or("").is_empty()
        {
            f.api_version = Some("v1".into());
        }
    }
}

/// `SetDefaults_Container` plus the nested defaults the generated defaulter
/// applies to every container.
fn default_container(c: &mut Container) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")).into());
    }
    set_if_empty(&mut c.termination_message_path, "/dev/termination-log");
    set_if_empty(&mut c.termination_message_policy, "File");
    for port in c.ports.iter_mut().flatten() {
        set_if_empty(&mut port.protocol, "TCP");
    }
    default_env(&mut c.env);
    // Go's ResourceRequirements is a struct, not a pointer: it always reads back as `{}`.
    let res = c.resources.get_or_insert_with(Default::default);
    round_resource_list(&mut res.limits);
    round_resource_list(&mut res.requests);
    default_probe(&mut c.liveness_probe);
    default_probe(&mut c.readiness_probe);
    default_probe(&mut c.startup_probe);
    if let Some(l) = &mut c.lifecycle {
        default_lifecycle_handler(l.post_start.as_mut());
        default_lifecycle_handler(l.pre_stop.as_mut());
    }
}

fn default_volume(v: &mut Volume) {
    let mut probe = serde_json::to_value(&*v).unwrap_or_default();
    if let Some(m) = probe.as_object_mut() {
        m.remove("name");
        if m.is_empty() {
            v.empty_dir = Some(Default::default());
        }
    }
    if let Some(h) = &mut v.host_path {
        h.type_.get_or_insert_with(String::new);
    }
    if let Some(s) = &mut v.secret {
        s.default_mode.get_or_insert(0o644);
    }
    if let Some(c) = &mut v.config_map {
        c.default_mode.get_or_insert(0o644);
    }
    if let Some(d) = &mut v.downward_api {
        d.default_mode.get_or_insert(0o644);
        for f in d.items.iter_mut().flatten().filter_map(|i| i.field_ref.as_mut()) {
            set_if_empty(&mut f.api_version, "v1");
        }
    }
    if let Some(p) = &mut v.projected {
        p.default_mode.get_or_insert(0o644);
        for s in p.sources.iter_mut().flatten() {
            if let Some(d) = &mut s.downward_api {
                for f in d.items.iter_mut().flatten().filter_map(|i| i.field_ref.as_mut()) {
                    set_if_empty(&mut f.api_version, "v1");
                }
            }
            if let Some(t) = &mut s.service_account_token {
                t.expiration_seconds.get_or_insert(3600);
            }
        }
    }
    if let Some(e) = v.ephemeral.as_mut().and_then(|e| e.volume_claim_template.as_mut()) {
        e.spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        if let Some(r) = &mut e.spec.resources {
            round_resource_list(&mut r.limits);
            round_resource_list(&mut r.requests);
        }
    }
}

/// `SetDefaults_PodSpec` and the nested defaults: what every pod spec,
/// including templates in controllers, gets.
pub(crate) fn default_pod_spec(spec: &mut PodSpec) {
    set_if_empty(&mut spec.dns_policy, "ClusterFirst");
    set_if_empty(&mut spec.restart_policy, "Always");
    spec.security_context.get_or_insert_with(PodSecurityContext::default);
    spec.termination_grace_period_seconds.get_or_insert(30);
    set_if_empty(&mut spec.scheduler_name, "default-scheduler");
    for v in spec.volumes.iter_mut().flatten() {
        default_volume(v);
    }
    for c in spec.init_containers.iter_mut().flatten().chain(spec.containers.iter_mut()) {
        default_container(c);
    }
    for e in spec.ephemeral_containers.iter_mut().flatten() {
        if e.image_pull_policy.as_deref().unwrap_or("").is_empty() {
            e.image_pull_policy = Some(default_pull_policy(e.image.as_deref().unwrap_or("")).into());
        }
        set_if_empty(&mut e.termination_message_path, "/dev/termination-log");
        set_if_empty(&mut e.termination_message_policy, "File");
        default_env(&mut e.env);
    }
    round_resource_list(&mut spec.overhead);
}

pub(crate) fn default_template(t: &mut PodTemplateSpec) {
    default_pod_spec(t.spec.get_or_insert_with(Default::default));
}

const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn tolerates(tolerations: &[Toleration], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let k = t.key.as_deref().unwrap_or("");
        let e = t.effect.as_deref().unwrap_or("");
        (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
    })
}

/// Defaults for a Pod object: `SetDefaults_Pod`, the pod spec defaults, the
/// `DefaultTolerationSeconds` and `Priority` admission plugins, and the
/// status the pod strategy sets on create.
/// What Kubernetes' DefaultTolerationSeconds admission plugin adds to a new
/// pod: tolerations for the not-ready and unreachable taints, for `seconds`,
/// unless the pod has its own. The node lifecycle controller evicts the pod
/// when they run out.
pub(crate) fn add_default_tolerations(pod: &mut Pod, seconds: i64) {
    let Some(spec) = pod.spec.as_mut() else { return };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for key in [NOT_READY, UNREACHABLE] {
        if !tolerates(tolerations, key) {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(seconds),
                value: None,
            });
        }
    }
}

pub(crate) fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    // Requests default to limits, for pods only (templates keep what they say).
    for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        if let Some(limits) = c.resources.as_ref().and_then(|r| r.limits.clone()) {
            let requests = c.resources.get_or_insert_with(Default::default).requests.get_or_insert_with(Default::default);
            for (k, v) in limits {
                requests.entry(k).or_insert(v);
            }
        }
    }
    spec.enable_service_links.get_or_insert(true);
    if spec.host_network == Some(true) {
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            for p in c.ports.iter_mut().flatten() {
                if p.host_port.unwrap_or(0) == 0 {
                    p.host_port = Some(p.container_port);
                }
            }
        }
    }
    default_pod_spec(spec);

    if spec.priority.is_none() {
        // The two classes every cluster has; any other name resolves to the
        // default priority because Hawser serves no PriorityClass objects.
        spec.priority = Some(match spec.priority_class_name.as_deref() {
            Some("system-node-critical") => 2_000_001_000,
            Some("system-cluster-critical") => 2_000_000_000,
            _ => 0,
        });
    }
    spec.preemption_policy.get_or_insert_with(|| "PreemptLowerPriority".into());

    let qos = qos_class(spec);
    let status = pod.status.get_or_insert_with(PodStatus::default);
    set_if_empty(&mut status.phase, "Pending");
    status.qos_class.get_or_insert_with(|| qos.into());
}

/// Kubernetes' `ComputePodQOS`, from container (and init container) cpu and
/// memory requests and limits.
pub(crate) fn qos_class(spec: &PodSpec) -> &'static str {
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        let res = c.resources.as_ref();
        for (name, q) in res.and_then(|r| r.requests.as_ref()).into_iter().flatten() {
            if let (Some(name), Ok(q)) = (qos_resource(name), Quantity::parse(&q.0))
                && q.is_positive()
            {
                let sum = requests.get(name).map_or(q, |s| s.add(&q));
                requests.insert(name, sum);
            }
        }
        let mut found = BTreeSet::new();
        for (name, q) in res.and_then(|r| r.limits.as_ref()).into_iter().flatten() {
            if let (Some(name), Ok(q)) = (qos_resource(name), Quantity::parse(&q.0))
                && q.is_positive()
            {
                found.insert(name);
                let sum = limits.get(name).map_or(q, |s| s.add(&q));
                limits.insert(name, sum);
            }
        }
        if !(found.contains("cpu") && found.contains("memory")) {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.iter().all(|(k, r)| limits.get(k) == Some(r)) && requests.len() == limits.len() {
        return "Guaranteed";
    }
    "Burstable"
}

fn qos_resource(name: &str) -> Option<&'static str> {
    match name {
        "cpu" => Some("cpu"),
        "memory" => Some("memory"),
        _ => None,
    }
}

// ---------------------------------------------------------------- validation

/// What differs between validating a Pod and a PodSpec embedded in a template.
#[derive(Clone, Copy)]
pub(crate) struct SpecContext<'a> {
    /// The pod's metadata when validating a Pod (not a template).
    pub pod_meta: Option<&'a ObjectMeta>,
}

impl SpecContext<'_> {
    fn is_pod(&self) -> bool {
        self.pod_meta.is_some()
    }
}

fn s(o: &Option<String>) -> &str {
    o.as_deref().unwrap_or("")
}

fn non_negative(v: Option<i64>, p: &Path, errs: &mut Vec<FieldError>) {
    if let Some(v) = v.filter(|v| *v < 0) {
        errs.push(FieldError::invalid(p, v, NON_NEGATIVE));
    }
}

fn not_supported(p: &Path, value: &str, supported: &[&str]) -> FieldError {
    FieldError::not_supported(p, value, supported)
}

/// Kinds of volume source, in the order Kubernetes checks them, which
/// decides which one is reported as the extra.
const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
];

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

fn file_mode(mode: Option<i32>, p: &Path, errs: &mut Vec<FieldError>) {
    if let Some(m) = mode.filter(|m| !(0..=0o777).contains(m)) {
        errs.push(FieldError::invalid(p, m, FILE_MODE_MSG));
    }
}

fn local_descending_path(v: &str, p: &Path, errs: &mut Vec<FieldError>) {
    if v.starts_with('/') {
        errs.push(FieldError::invalid(p, v, "must be a relative path"));
    }
    no_backsteps(v, p, errs);
}

fn no_backsteps(v: &str, p: &Path, errs: &mut Vec<FieldError>) {
    if v.split('/').any(|part| part == "..") {
        errs.push(FieldError::invalid(p, v, "must not contain '..'"));
    }
}

fn local_non_reserved_path(v: &str, p: &Path, errs: &mut Vec<FieldError>) {
    local_descending_path(v, p, errs);
    if v.starts_with("..") && !v.starts_with("../") {
        errs.push(FieldError::invalid(p, v, "must not start with '..'"));
    }
}

fn key_to_paths(items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>, p: &Path, errs: &mut Vec<FieldError>) {
    for (i, kp) in items.into_iter().flatten().enumerate() {
        let ip = p.index(i);
        if kp.key.is_empty() {
            errs.push(FieldError::required(ip.child("key")));
        }
        if kp.path.is_empty() {
            errs.push(FieldError::required(ip.child("path")));
        }
        local_non_reserved_path(&kp.path, &ip.child("path"), errs);
        file_mode(kp.mode, &ip.child("mode"), errs);
    }
}

/// Checks that a volume has exactly one source, and the source's own fields.
fn validate_volume_source(v: &Volume, p: &Path, errs: &mut Vec<FieldError>) {
    let json = serde_json::to_value(v).unwrap_or_default();
    let present: Vec<&str> = VOLUME_SOURCES.iter().copied().filter(|k| json.get(*k).is_some()).collect();
    match present.split_first() {
        None => errs.push(FieldError { detail: "must specify a volume type".into(), ..FieldError::required(p) }),
        Some((_, extra)) => {
            for k in extra {
                errs.push(FieldError::forbidden(p.child(k), "may not specify more than 1 volume type"));
            }
        }
    }
    let first = present.first().copied();
    match first {
        Some("emptyDir") => {
            let limit = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref());
            if limit.is_some_and(|q| Quantity::parse(&q.0).is_ok_and(|q| q.is_negative())) {
                errs.push(FieldError::forbidden(
                    p.child("emptyDir").child("sizeLimit"),
                    "SizeLimit field must be a valid resource quantity",
                ));
            }
        }
        Some("hostPath") => {
            let h = v.host_path.as_ref().expect("present");
            let hp = p.child("hostPath");
            if h.path.is_empty() {
                errs.push(FieldError::required(hp.child("path")));
            } else {
                no_backsteps(&h.path, &hp.child("path"), errs);
                const TYPES: &[&str] =
                    &["", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice"];
                let t = s(&h.type_);
                if !TYPES.contains(&t) {
                    errs.push(not_supported(&hp.child("type"), t, TYPES));
                }
            }
        }
        Some("secret") => {
            let sv = v.secret.as_ref().expect("present");
            let sp = p.child("secret");
            if s(&sv.secret_name).is_empty() {
                errs.push(FieldError::required(sp.child("secretName")));
            }
            file_mode(sv.default_mode, &sp.child("defaultMode"), errs);
            key_to_paths(sv.items.as_ref(), &sp.child("items"), errs);
        }
        Some("configMap") => {
            let c = v.config_map.as_ref().expect("present");
            let cp = p.child("configMap");
            if c.name.is_empty() {
                errs.push(FieldError::required(cp.child("name")));
            }
            file_mode(c.default_mode, &cp.child("defaultMode"), errs);
            key_to_paths(c.items.as_ref(), &cp.child("items"), errs);
        }
        Some("persistentVolumeClaim") if v.persistent_volume_claim.as_ref().is_some_and(|c| c.claim_name.is_empty()) => {
            errs.push(FieldError::required(p.child("persistentVolumeClaim").child("claimName")));
        }
        Some("nfs") => {
            let n = v.nfs.as_ref().expect("present");
            let np = p.child("nfs");
            if n.server.is_empty() {
                errs.push(FieldError::required(np.child("server")));
            }
            if n.path.is_empty() {
                errs.push(FieldError::required(np.child("path")));
            }
            if !n.path.starts_with('/') {
                errs.push(FieldError::invalid(np.child("path"), &n.path, "must be an absolute path"));
            }
        }
        Some("downwardAPI") => {
            let d = v.downward_api.as_ref().expect("present");
            let dp = p.child("downwardAPI");
            file_mode(d.default_mode, &dp.child("defaultMode"), errs);
            for f in d.items.iter().flatten() {
                if f.path.is_empty() {
                    errs.push(FieldError::required(dp.child("path")));
                }
                local_non_reserved_path(&f.path, &dp.child("path"), errs);
                match (&f.field_ref, &f.resource_field_ref) {
                    (Some(_), Some(_)) => {
                        errs.push(FieldError::invalid(&dp, "resource", "fieldRef and resourceFieldRef can not be specified simultaneously"))
                    }
                    (None, None) => errs.push(FieldError {
                        detail: "one of fieldRef and resourceFieldRef is required".into(),
                        ..FieldError::required(&dp)
                    }),
                    _ => {}
                }
                file_mode(f.mode, &dp.child("mode"), errs);
            }
        }
        Some("projected") => {
            let pr = v.projected.as_ref().expect("present");
            let pp = p.child("projected");
            file_mode(pr.default_mode, &pp.child("defaultMode"), errs);
            for (i, src) in pr.sources.iter().flatten().enumerate() {
                let sp = pp.child("sources").index(i);
                let n = [
                    src.secret.is_some(),
                    src.config_map.is_some(),
                    src.downward_api.is_some(),
                    src.service_account_token.is_some(),
                    src.cluster_trust_bundle.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if n > 1 {
                    errs.push(FieldError::forbidden(&sp, "may not specify more than 1 volume type per source"));
                }
                if let Some(sec) = &src.secret {
                    if sec.name.is_empty() {
                        errs.push(FieldError::required(sp.child("secret").child("name")));
                    }
                    key_to_paths(sec.items.as_ref(), &sp.child("secret").child("items"), errs);
                }
                if let Some(cm) = &src.config_map {
                    if cm.name.is_empty() {
                        errs.push(FieldError::required(sp.child("configMap").child("name")));
                    }
                    key_to_paths(cm.items.as_ref(), &sp.child("configMap").child("items"), errs);
                }
                if let Some(t) = &src.service_account_token {
                    let tp = sp.child("serviceAccountToken");
                    if t.expiration_seconds.is_some_and(|e| e < 600) {
                        errs.push(FieldError::invalid(
                            tp.child("expirationSeconds"),
                            t.expiration_seconds.unwrap_or(0),
                            "may not specify a duration less than 10 minutes",
                        ));
                    }
                    if t.expiration_seconds.is_some_and(|e| e > 1 << 32) {
                        errs.push(FieldError::invalid(
                            tp.child("expirationSeconds"),
                            t.expiration_seconds.unwrap_or(0),
                            "may not specify a duration larger than 2^32 seconds",
                        ));
                    }
                    if t.path.is_empty() {
                        errs.push(FieldError::required(tp.child("path")));
                    }
                }
            }
        }
        Some("csi") if v.csi.as_ref().is_some_and(|c| c.driver.is_empty()) => {
            errs.push(FieldError::required(p.child("csi").child("driver")));
        }
        Some("image") if v.image.as_ref().is_some_and(|i| s(&i.reference).is_empty()) => {
            errs.push(FieldError::required(p.child("image").child("reference")));
        }
        _ => {}
    }
}

/// Validates volumes; returns the names mounts may refer to.
fn validate_volumes(volumes: &[Volume], p: &Path, errs: &mut Vec<FieldError>) -> BTreeSet<String> {
    let mut names_ok = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let ip = p.index(i);
        let np = ip.child("name");
        let mut el = Vec::new();
        validate_volume_source(v, &ip, &mut el);
        if v.name.is_empty() {
            el.push(FieldError::required(&np));
        } else {
            el.extend(names::dns1123_label(&v.name).into_iter().map(|m| FieldError::invalid(&np, &v.name, m)));
        }
        if seen.contains(&v.name) {
            el.push(FieldError::duplicate(&np, &v.name));
        }
        if el.is_empty() {
            seen.insert(v.name.clone());
            names_ok.insert(v.name.clone());
        } else {
            errs.extend(el);
        }
    }
    names_ok
}

fn validate_port_num_or_name(port: &IntOrString, p: &Path, errs: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(n) => errs.extend(names::port_num(i64::from(*n)).into_iter().map(|m| FieldError::invalid(p, n, m))),
        IntOrString::String(name) => errs.extend(names::port_name(name).into_iter().map(|m| FieldError::invalid(p, name, m))),
    }
}

fn validate_http_get(h: &k8s_openapi::api::core::v1::HTTPGetAction, p: &Path, errs: &mut Vec<FieldError>) {
    if s(&h.path).is_empty() {
        errs.push(FieldError::required(p.child("path")));
    }
    validate_port_num_or_name(&h.port, &p.child("port"), errs);
    let scheme = s(&h.scheme);
    if scheme != "HTTP" && scheme != "HTTPS" {
        errs.push(not_supported(&p.child("scheme"), scheme, &["HTTP", "HTTPS"]));
    }
    for header in h.http_headers.iter().flatten() {
        errs.extend(
            names::http_header_name(&header.name).into_iter().map(|m| FieldError::invalid(p.child("httpHeaders"), &header.name, m)),
        );
    }
}

/// The handler part of a probe or lifecycle hook: exactly one action.
struct Handler<'a> {
    exec: Option<&'a k8s_openapi::api::core::v1::ExecAction>,
    http_get: Option<&'a k8s_openapi::api::core::v1::HTTPGetAction>,
    tcp_socket: Option<&'a k8s_openapi::api::core::v1::TCPSocketAction>,
    grpc: Option<&'a k8s_openapi::api::core::v1::GRPCAction>,
    sleep: Option<&'a k8s_openapi::api::core::v1::SleepAction>,
}

fn validate_handler(h: Handler<'_>, grace: Option<i64>, p: &Path, errs: &mut Vec<FieldError>) {
    let mut n = 0;
    let mut one = |name: &str, present: bool, errs: &mut Vec<FieldError>| -> bool {
        if !present {
            return false;
        }
        if n > 0 {
            errs.push(FieldError::forbidden(p.child(name), "may not specify more than 1 handler type"));
            return false;
        }
        n += 1;
        true
    };
    if one("exec", h.exec.is_some(), errs) && h.exec.is_some_and(|e| e.command.as_ref().is_none_or(|c| c.is_empty())) {
        errs.push(FieldError::required(p.child("exec").child("command")));
    }
    if one("httpGet", h.http_get.is_some(), errs) {
        validate_http_get(h.http_get.expect("present"), &p.child("httpGet"), errs);
    }
    if one("tcpSocket", h.tcp_socket.is_some(), errs) {
        validate_port_num_or_name(&h.tcp_socket.expect("present").port, &p.child("tcpSocket").child("port"), errs);
    }
    if one("grpc", h.grpc.is_some(), errs) {
        validate_port_num_or_name(&IntOrString::Int(h.grpc.expect("present").port), &p.child("grpc").child("port"), errs);
    }
    if one("sleep", h.sleep.is_some(), errs) {
        let secs = h.sleep.expect("present").seconds;
        if let Some(g) = grace.filter(|g| secs < 0 || secs > *g) {
            errs.push(FieldError::invalid(
                p.child("sleep"),
                secs,
                format!("must be non-negative and less than terminationGracePeriodSeconds ({g})"),
            ));
        }
    }
    if n == 0 {
        errs.push(FieldError { detail: "must specify a handler type".into(), ..FieldError::required(p) });
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

fn validate_probe(probe: Option<&Probe>, kind: ProbeKind, grace: Option<i64>, p: &Path, errs: &mut Vec<FieldError>) {
    let Some(pr) = probe else { return };
    let h = Handler {
        exec: pr.exec.as_ref(),
        http_get: pr.http_get.as_ref(),
        tcp_socket: pr.tcp_socket.as_ref(),
        grpc: pr.grpc.as_ref(),
        sleep: None,
    };
    validate_handler(h, grace, p, errs);
    for (name, v) in [
        ("initialDelaySeconds", pr.initial_delay_seconds),
        ("timeoutSeconds", pr.timeout_seconds),
        ("periodSeconds", pr.period_seconds),
        ("successThreshold", pr.success_threshold),
        ("failureThreshold", pr.failure_threshold),
    ] {
        non_negative(v.map(i64::from), &p.child(name), errs);
    }
    if let Some(t) = pr.termination_grace_period_seconds.filter(|t| *t <= 0) {
        errs.push(FieldError::invalid(p.child("terminationGracePeriodSeconds"), t, "must be greater than 0"));
    }
    match kind {
        ProbeKind::Liveness | ProbeKind::Startup => {
            if pr.success_threshold.unwrap_or(0) != 1 {
                errs.push(FieldError::invalid(p.child("successThreshold"), pr.success_threshold.unwrap_or(0), "must be 1"));
            }
        }
        ProbeKind::Readiness => {
            if let Some(t) = pr.termination_grace_period_seconds {
                errs.push(FieldError::invalid(p.child("terminationGracePeriodSeconds"), t, "must not be set for readinessProbes"));
            }
        }
    }
}

fn validate_lifecycle(c: &Container, grace: Option<i64>, p: &Path, errs: &mut Vec<FieldError>) {
    let Some(l) = &c.lifecycle else { return };
    for (name, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
        if let Some(h) = h {
            let handler = Handler {
                exec: h.exec.as_ref(),
                http_get: h.http_get.as_ref(),
                tcp_socket: h.tcp_socket.as_ref(),
                grpc: None,
                sleep: h.sleep.as_ref(),
            };
            validate_handler(handler, grace, &p.child("lifecycle").child(name), errs);
        }
    }
}

const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
const RESOURCE_FIELD_PATHS: &[&str] =
    &["limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu", "requests.ephemeral-storage", "requests.memory"];

fn validate_key_selector(name: &str, key: &str, p: &Path, errs: &mut Vec<FieldError>) {
    errs.extend(names::dns1123_subdomain(name).into_iter().map(|m| FieldError::invalid(p.child("name"), name, m)));
    if key.is_empty() {
        errs.push(FieldError::required(p.child("key")));
    } else {
        errs.extend(names::config_map_key(key).into_iter().map(|m| FieldError::invalid(p.child("key"), key, m)));
    }
}

fn validate_env(env: &[EnvVar], p: &Path, errs: &mut Vec<FieldError>) {
    for (i, e) in env.iter().enumerate() {
        let ip = p.index(i);
        if e.name.is_empty() {
            errs.push(FieldError::required(ip.child("name")));
        } else {
            errs.extend(names::env_var_name(&e.name).into_iter().map(|m| FieldError::invalid(ip.child("name"), &e.name, m)));
        }
        let Some(vf) = &e.value_from else { continue };
        let vp = ip.child("valueFrom");
        let mut n = 0;
        if let Some(f) = &vf.field_ref {
            n += 1;
            let fp = vp.child("fieldRef");
            if s(&f.api_version).is_empty() {
                errs.push(FieldError::required(fp.child("apiVersion")));
            } else if f.field_path.is_empty() {
                errs.push(FieldError::required(fp.child("fieldPath")));
            } else if let Some((path, sub)) = subscripted(&f.field_path) {
                match path {
                    "metadata.annotations" => {
                        errs.extend(names::qualified_name(&sub.to_lowercase()).into_iter().map(|m| FieldError::invalid(&fp, sub, m)))
                    }
                    "metadata.labels" => errs.extend(names::qualified_name(sub).into_iter().map(|m| FieldError::invalid(&fp, sub, m))),
                    _ => errs.push(FieldError::invalid(&fp, path, "does not support subscript")),
                }
            } else if !ENV_FIELD_PATHS.contains(&f.field_path.as_str()) {
                errs.push(not_supported(&fp.child("fieldPath"), &f.field_path, ENV_FIELD_PATHS));
            }
        }
        if let Some(r) = &vf.resource_field_ref {
            n += 1;
            let rp = vp.child("resourceFieldRef");
            if r.resource.is_empty() {
                errs.push(FieldError::required(rp.child("resource")));
            } else if !RESOURCE_FIELD_PATHS.contains(&r.resource.as_str())
                && !r.resource.starts_with("requests.hugepages-")
                && !r.resource.starts_with("limits.hugepages-")
            {
                errs.push(not_supported(&rp.child("resource"), &r.resource, RESOURCE_FIELD_PATHS));
            }
        }
        if let Some(c) = &vf.config_map_key_ref {
            n += 1;
            validate_key_selector(&c.name, &c.key, &vp.child("configMapKeyRef"), errs);
        }
        if let Some(c) = &vf.secret_key_ref {
            n += 1;
            validate_key_selector(&c.name, &c.key, &vp.child("secretKeyRef"), errs);
        }
        if n == 0 {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !s(&e.value).is_empty() {
            errs.push(FieldError::invalid(&vp, "", "may not be specified when `value` is not empty"));
        } else if n > 1 {
            errs.push(FieldError::invalid(&vp, "", "may not have more than one field specified at a time"));
        }
    }
}

/// `metadata.labels['key']` → `("metadata.labels", "key")`.
fn subscripted(path: &str) -> Option<(&str, &str)> {
    let (head, rest) = path.split_once("['")?;
    let sub = rest.strip_suffix("']")?;
    Some((head, sub))
}

fn validate_env_from(c: &Container, p: &Path, errs: &mut Vec<FieldError>) {
    for (i, e) in c.env_from.iter().flatten().enumerate() {
        let ip = p.index(i);
        if let Some(prefix) = e.prefix.as_deref().filter(|x| !x.is_empty()) {
            errs.extend(names::env_var_name(prefix).into_iter().map(|m| FieldError::invalid(ip.child("prefix"), prefix, m)));
        }
        let mut n = 0;
        for (name, r) in
            [("configMapRef", e.config_map_ref.as_ref().map(|r| &r.name)), ("secretRef", e.secret_ref.as_ref().map(|r| &r.name))]
        {
            if let Some(rn) = r {
                n += 1;
                let rp = ip.child(name).child("name");
                if rn.is_empty() {
                    errs.push(FieldError::required(&rp));
                } else {
                    errs.extend(names::name(NameRule::Dns1123Subdomain, rn, true).into_iter().map(|m| FieldError::invalid(&rp, rn, m)));
                }
            }
        }
        match n {
            0 => errs.push(FieldError::invalid(p, "", "must specify one of: `configMapRef` or `secretRef`")),
            1 => {}
            _ => errs.push(FieldError::invalid(p, "", "may not have more than one field specified at a time")),
        }
    }
}

fn validate_volume_mounts(c: &Container, volumes: &BTreeSet<String>, p: &Path, errs: &mut Vec<FieldError>) {
    let mut mount_points = BTreeSet::new();
    let devices: BTreeMap<&str, &str> = c.volume_devices.iter().flatten().map(|d| (d.name.as_str(), d.device_path.as_str())).collect();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let ip = p.index(i);
        if m.name.is_empty() {
            errs.push(FieldError::required(ip.child("name")));
        }
        if !volumes.contains(&m.name) {
            errs.push(not_found(ip.child("name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(ip.child("mountPath")));
        }
        if !mount_points.insert(m.mount_path.as_str()) {
            errs.push(FieldError::invalid(ip.child("mountPath"), &m.mount_path, "must be unique"));
        }
        if devices.contains_key(m.name.as_str()) {
            errs.push(FieldError::invalid(ip.child("name"), &m.name, "must not already exist in volumeDevices"));
        }
        if devices.values().any(|d| *d == m.mount_path) {
            errs.push(FieldError::invalid(ip.child("mountPath"), &m.mount_path, "must not already exist as a path in volumeDevices"));
        }
        let sub = s(&m.sub_path);
        if !sub.is_empty() {
            local_descending_path(sub, &p.child("subPath"), errs);
        }
        let expr = s(&m.sub_path_expr);
        if !expr.is_empty() {
            if !sub.is_empty() {
                errs.push(FieldError::invalid(ip.child("subPathExpr"), expr, "subPathExpr and subPath are mutually exclusive"));
            }
            local_descending_path(expr, &p.child("subPathExpr"), errs);
        }
        if let Some(mp) = &m.mount_propagation {
            const MODES: &[&str] = &["Bidirectional", "HostToContainer", "None"];
            if !MODES.contains(&mp.as_str()) {
                errs.push(not_supported(&p.child("mountPropagation"), mp, MODES));
            } else if mp == "Bidirectional" && c.security_context.as_ref().and_then(|sc| sc.privileged) != Some(true) {
                errs.push(FieldError::forbidden(
                    p.child("mountPropagation"),
                    "Bidirectional mount propagation is available only to privileged containers",
                ));
            }
        }
    }
}

/// Kubernetes reports a reference to something that does not exist as
/// `Not found`; our error kinds have no such variant, so it is worded as an
/// invalid value saying exactly that.
fn not_found(p: Path, value: &str) -> FieldError {
    FieldError::invalid(p, value, "not found")
}

fn validate_container_ports(c: &Container, p: &Path, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let ip = p.index(i);
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let msgs = names::port_name(name);
            if !msgs.is_empty() {
                errs.extend(msgs.into_iter().map(|m| FieldError::invalid(ip.child("name"), name, m)));
            } else if !seen.insert(name) {
                errs.push(FieldError::duplicate(ip.child("name"), name));
            }
        }
        if port.container_port == 0 {
            errs.push(FieldError::required(ip.child("containerPort")));
        } else {
            errs.extend(
                names::port_num(i64::from(port.container_port))
                    .into_iter()
                    .map(|m| FieldError::invalid(ip.child("containerPort"), port.container_port, m)),
            );
        }
        if let Some(hp) = port.host_port.filter(|h| *h != 0) {
            errs.extend(names::port_num(i64::from(hp)).into_iter().map(|m| FieldError::invalid(ip.child("hostPort"), hp, m)));
        }
        match s(&port.protocol) {
            "" => errs.push(FieldError::required(ip.child("protocol"))),
            "TCP" | "UDP" | "SCTP" => {}
            other => errs.push(not_supported(&ip.child("protocol"), other, &["SCTP", "TCP", "UDP"])),
        }
    }
}

fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_hugepages(name: &str) -> bool {
    name.starts_with("hugepages-")
}

fn overcommit_allowed(name: &str) -> bool {
    is_native_resource(name) && !is_hugepages(name)
}

const STANDARD_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

fn validate_container_resource_name(name: &str, p: &Path, errs: &mut Vec<FieldError>) {
    let msgs = names::qualified_name(name);
    if !msgs.is_empty() {
        errs.extend(msgs.into_iter().map(|m| FieldError::invalid(p, name, m)));
        return;
    }
    if !name.contains('/') {
        if !STANDARD_RESOURCES.contains(&name) && !is_hugepages(name) {
            errs.push(FieldError::invalid(p, name, "must be a standard resource type or fully qualified"));
        }
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !is_hugepages(name) {
            errs.push(FieldError::invalid(p, name, "must be a standard resource for containers"));
        }
    } else if !is_native_resource(name) && (name.starts_with("requests.") || !names::qualified_name(&format!("requests.{name}")).is_empty())
    {
        errs.push(FieldError::invalid(p, name, "doesn't follow extended resource name standard"));
    }
}

fn validate_quantity_value(name: &str, raw: &str, p: &Path, errs: &mut Vec<FieldError>) -> Option<Quantity> {
    let Ok(q) = Quantity::parse(raw) else {
        errs.push(FieldError::invalid(p, raw, quantity::FORMAT_ERROR));
        return None;
    };
    if q.is_negative() {
        errs.push(FieldError::invalid(p, q.canonical(), NON_NEGATIVE));
    }
    if !is_native_resource(name) && !q.is_integer() {
        errs.push(FieldError::invalid(p, q.canonical(), "must be an integer"));
    }
    if let Some(size) = name.strip_prefix("hugepages-")
        && let Ok(unit) = Quantity::parse(size)
        && !q.is_multiple_of(&unit)
    {
        errs.push(FieldError::invalid(p, q.canonical(), format!("{} is not positive integer multiple of {name}", q.canonical())));
    }
    Some(q)
}

/// `ValidateContainerResourceRequirements` (also used for pod overhead).
fn validate_resources(r: Option<&ResourceRequirements>, p: &Path, errs: &mut Vec<FieldError>) {
    let Some(r) = r else { return };
    let lim_path = p.child("limits");
    let req_path = p.child("requests");
    let mut limits = BTreeMap::new();
    let (mut lim_compute, mut req_compute, mut hugepages) = (false, false, false);
    for (name, q) in r.limits.iter().flatten() {
        let kp = lim_path.key(name);
        validate_container_resource_name(name, &kp, errs);
        if let Some(q) = validate_quantity_value(name, &q.0, &kp, errs) {
            limits.insert(name.as_str(), q);
        }
        hugepages |= is_hugepages(name);
        lim_compute |= name == "cpu" || name == "memory";
    }
    for (name, q) in r.requests.iter().flatten() {
        let kp = req_path.key(name);
        validate_container_resource_name(name, &kp, errs);
        let q = validate_quantity_value(name, &q.0, &kp, errs);
        match (q, limits.get(name.as_str())) {
            (Some(q), Some(limit)) => {
                if q != *limit && !overcommit_allowed(name) {
                    errs.push(FieldError::invalid(
                        &req_path,
                        q.canonical(),
                        format!("must be equal to {name} limit of {}", limit.canonical()),
                    ));
                } else if q > *limit {
                    errs.push(FieldError::invalid(
                        &req_path,
                        q.canonical(),
                        format!("must be less than or equal to {name} limit of {}", limit.canonical()),
                    ));
                }
            }
            (_, None) if !overcommit_allowed(name) => errs.push(FieldError {
                detail: "Limit must be set for non overcommitable resources".into(),
                ..FieldError::required(&lim_path)
            }),
            _ => {}
        }
        hugepages |= is_hugepages(name);
        req_compute |= name == "cpu" || name == "memory";
    }
    if hugepages && !lim_compute && !req_compute {
        errs.push(FieldError::forbidden(p, "HugePages require cpu or memory"));
    }
}

fn validate_user_id(v: Option<i64>, p: &Path, errs: &mut Vec<FieldError>) {
    if let Some(v) = v.filter(|v| !(0..=MAX_INT32).contains(v)) {
        errs.push(FieldError::invalid(p, v, names::inclusive_range_error(0, MAX_INT32)));
    }
}

fn validate_seccomp(profile: Option<&k8s_openapi::api::core::v1::SeccompProfile>, p: &Path, errs: &mut Vec<FieldError>) {
    let Some(sp) = profile else { return };
    match sp.type_.as_str() {
        "Localhost" => {
            if s(&sp.localhost_profile).is_empty() {
                errs.push(FieldError {
                    detail: "must be set when seccomp type is Localhost".into(),
                    ..FieldError::required(p.child("localhostProfile"))
                });
            }
        }
        "RuntimeDefault" | "Unconfined" => {
            if sp.localhost_profile.is_some() {
                errs.push(FieldError::invalid(
                    p.child("localhostProfile"),
                    s(&sp.localhost_profile),
                    "can only be set when seccomp type is Localhost",
                ));
            }
        }
        "" => {
            errs.push(FieldError { detail: "type is required when seccompProfile is set".into(), ..FieldError::required(p.child("type")) })
        }
        other => errs.push(not_supported(&p.child("type"), other, &["Localhost", "RuntimeDefault", "Unconfined"])),
    }
}

fn validate_security_context(c: &Container, host_users: bool, p: &Path, errs: &mut Vec<FieldError>) {
    let Some(sc) = &c.security_context else { return };
    validate_user_id(sc.run_as_user, &p.child("runAsUser"), errs);
    validate_user_id(sc.run_as_group, &p.child("runAsGroup"), errs);
    if let Some(pm) = &sc.proc_mount {
        if pm != "Default" && pm != "Unmasked" {
            errs.push(not_supported(&p.child("procMount"), pm, &["Default", "Unmasked"]));
        } else if host_users && pm == "Unmasked" {
            errs.push(FieldError::invalid(p.child("procMount"), pm, "`hostUsers` must be false to use `Unmasked`"));
        }
    }
    validate_seccomp(sc.seccomp_profile.as_ref(), &p.child("seccompProfile"), errs);
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errs.push(FieldError::invalid(p, "securityContext", "cannot set `allowPrivilegeEscalation` to false and `privileged` to true"));
        }
        if sc.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_some_and(|a| a.iter().any(|c| c == "CAP_SYS_ADMIN")) {
            errs.push(FieldError::invalid(
                p,
                "securityContext",
                "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN",
            ));
        }
    }
}

struct ContainerCtx<'a> {
    volumes: &'a BTreeSet<String>,
    restart_policy: &'a str,
    host_users: bool,
    is_pod: bool,
}

/// `validateContainerCommon`: what regular, init and ephemeral containers share.
fn validate_container_common(c: &Container, ctx: &ContainerCtx<'_>, p: &Path, errs: &mut Vec<FieldError>) {
    let np = p.child("name");
    if c.name.is_empty() {
        errs.push(FieldError::required(&np));
    } else {
        errs.extend(names::dns1123_label(&c.name).into_iter().map(|m| FieldError::invalid(&np, &c.name, m)));
    }
    let image = s(&c.image);
    if image.is_empty() {
        errs.push(FieldError::required(p.child("image")));
    } else if ctx.is_pod && image.trim() != image {
        errs.push(FieldError::invalid(p.child("image"), image, "must not have leading or trailing whitespace"));
    }
    match s(&c.termination_message_policy) {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(p.child("terminationMessagePolicy"))),
        other => errs.push(not_supported(&p.child("terminationMessagePolicy"), other, &["File", "FallbackToLogsOnError"])),
    }
    validate_container_ports(c, &p.child("ports"), errs);
    validate_env(c.env.as_deref().unwrap_or_default(), &p.child("env"), errs);
    validate_env_from(c, &p.child("envFrom"), errs);
    validate_volume_mounts(c, ctx.volumes, &p.child("volumeMounts"), errs);
    for (i, d) in c.volume_devices.iter().flatten().enumerate() {
        let ip = p.child("volumeDevices").index(i);
        if d.name.is_empty() {
            errs.push(FieldError::required(ip.child("name")));
        } else if !ctx.volumes.contains(&d.name) {
            errs.push(not_found(ip.child("name"), &d.name));
        }
        if d.device_path.is_empty() {
            errs.push(FieldError::required(ip.child("devicePath")));
        }
    }
    match s(&c.image_pull_policy) {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(FieldError::required(p.child("imagePullPolicy"))),
        other => errs.push(not_supported(&p.child("imagePullPolicy"), other, &["Always", "IfNotPresent", "Never"])),
    }
    validate_resources(c.resources.as_ref(), &p.child("resources"), errs);
    let rp = p.child("resizePolicy");
    let mut seen = BTreeSet::new();
    for (i, rz) in c.resize_policy.iter().flatten().enumerate() {
        if !seen.insert(rz.resource_name.as_str()) {
            errs.push(FieldError::duplicate(rp.index(i), &rz.resource_name));
        }
        match rz.resource_name.as_str() {
            "cpu" | "memory" => {}
            "" => errs.push(FieldError::required(&rp)),
            other => errs.push(not_supported(&rp, other, &["cpu", "memory"])),
        }
        match rz.restart_policy.as_str() {
            "NotRequired" | "RestartContainer" => {}
            "" => errs.push(FieldError::required(&rp)),
            other => errs.push(not_supported(&rp, other, &["NotRequired", "RestartContainer"])),
        }
        if ctx.restart_policy == "Never" && rz.restart_policy != "NotRequired" {
            errs.push(FieldError::invalid(&rp, &rz.restart_policy, "must be 'NotRequired' when `restartPolicy` is 'Never'"));
        }
    }
    validate_security_context(c, ctx.host_users, &p.child("securityContext"), errs);
}

fn check_host_port_conflicts(containers: &[&Container], p: &Path, errs: &mut Vec<FieldError>) {
    let mut seen = BTreeSet::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in c.ports.iter().flatten().enumerate() {
            let Some(hp) = port.host_port.filter(|h| *h != 0) else { continue };
            let key = format!("{}/{}/{hp}", s(&port.protocol), s(&port.host_ip));
            if !seen.insert(key.clone()) {
                errs.push(FieldError::duplicate(p.index(ci).child("ports").index(pi).child("hostPort"), key));
            }
        }
    }
}

fn validate_tolerations(tolerations: &[Toleration], p: &Path, errs: &mut Vec<FieldError>) {
    for (i, t) in tolerations.iter().enumerate() {
        let ip = p.index(i);
        let key = s(&t.key);
        let op = s(&t.operator);
        let effect = s(&t.effect);
        if !key.is_empty() {
            errs.extend(names::qualified_name(key).into_iter().map(|m| FieldError::invalid(ip.child("key"), key, m)));
        }
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                ip.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if t.toleration_seconds.is_some() && effect != "NoExecute" {
            errs.push(FieldError::invalid(ip.child("effect"), effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"));
        }
        match op {
            "Equal" | "" => {
                let msgs = names::label_value(s(&t.value));
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(ip.child("operator"), s(&t.value), msgs.join(";")));
                }
            }
            "Exists" => {
                if !s(&t.value).is_empty() {
                    errs.push(FieldError::invalid(ip.child("operator"), s(&t.value), "value must be empty when `operator` is 'Exists'"));
                }
            }
            other => errs.push(not_supported(&ip.child("operator"), other, &["Equal", "Exists"])),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            errs.push(not_supported(&ip.child("effect"), effect, &["NoSchedule", "PreferNoSchedule", "NoExecute"]));
        }
    }
}

fn validate_dns_config(spec: &PodSpec, p: &Path, errs: &mut Vec<FieldError>) {
    let policy = s(&spec.dns_policy);
    let cfg = spec.dns_config.as_ref();
    if policy == "None" {
        match cfg {
            None => {
                errs.push(FieldError { detail: "must provide `dnsConfig` when `dnsPolicy` is None".into(), ..FieldError::required(p) });
                return;
            }
            Some(c) if c.nameservers.as_ref().is_none_or(|n| n.is_empty()) => {
                errs.push(FieldError {
                    detail: "must provide at least one DNS nameserver when `dnsPolicy` is None".into(),
                    ..FieldError::required(p.child("nameservers"))
                });
                return;
            }
            _ => {}
        }
    }
    let Some(c) = cfg else { return };
    let ns = c.nameservers.as_deref().unwrap_or_default();
    if ns.len() > 3 {
        errs.push(FieldError::invalid(p.child("nameservers"), format!("{ns:?}"), "must not have more than 3 nameservers"));
    }
    for (i, n) in ns.iter().enumerate() {
        if names::parse_ip(n).is_none() {
            errs.push(FieldError::invalid(p.child("nameservers").index(i), n, names::IP_MSG));
        }
    }
    let searches = c.searches.as_deref().unwrap_or_default();
    if searches.len() > 32 {
        errs.push(FieldError::invalid(p.child("searches"), format!("{searches:?}"), "must not have more than 32 search paths"));
    }
    if searches.join(" ").len() > 2048 {
        errs.push(FieldError::invalid(
            p.child("searches"),
            format!("{searches:?}"),
            "must not have more than 2048 characters (including spaces) in the search list",
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        if search == "." {
            continue;
        }
        // Relaxed DNS search validation (on by default since 1.32) also allows underscores.
        let trimmed = search.strip_suffix('.').unwrap_or(search);
        let underscored = trimmed.replace('_', "a");
        errs.extend(names::dns1123_subdomain(&underscored).into_iter().map(|_| {
            FieldError::invalid(
                p.child("searches").index(i),
                trimmed,
                r"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?(\.[a-z0-9_]([-a-z0-9_]*[a-z0-9_])?)*')",
            )
        }));
    }
    for (i, o) in c.options.iter().flatten().enumerate() {
        if s(&o.name).is_empty() {
            errs.push(FieldError { detail: "must not be empty".into(), ..FieldError::required(p.child("options").index(i)) });
        }
    }
}

fn validate_pod_security_context(sc: Option<&PodSecurityContext>, spec: &PodSpec, p: &Path, errs: &mut Vec<FieldError>) {
    let Some(sc) = sc else { return };
    validate_user_id(sc.fs_group, &p.child("fsGroup"), errs);
    validate_user_id(sc.run_as_user, &p.child("runAsUser"), errs);
    validate_user_id(sc.run_as_group, &p.child("runAsGroup"), errs);
    for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
        validate_user_id(Some(*g), &p.child("supplementalGroups").index(i), errs);
    }
    if spec.share_process_namespace == Some(true) && spec.host_pid == Some(true) {
        errs.push(FieldError::invalid(p.child("shareProcessNamespace"), true, "ShareProcessNamespace and HostPID cannot both be enabled"));
    }
    if let Some(policy) = &sc.fs_group_change_policy
        && policy != "OnRootMismatch"
        && policy != "Always"
    {
        errs.push(not_supported(&p.child("fsGroupChangePolicy"), policy, &["Always", "OnRootMismatch"]));
    }
    validate_seccomp(sc.seccomp_profile.as_ref(), &p.child("seccompProfile"), errs);
    let mut seen = BTreeSet::new();
    for (i, sysctl) in sc.sysctls.iter().flatten().enumerate() {
        let np = p.child("sysctls").index(i).child("name");
        if sysctl.name.is_empty() {
            errs.push(FieldError::required(&np));
        } else if !seen.insert(sysctl.name.as_str()) {
            errs.push(FieldError::duplicate(&np, &sysctl.name));
        }
    }
}

/// `ValidatePodSpec`, for a Pod or for a template's spec (`ctx`).
pub(crate) fn validate_pod_spec(spec: &PodSpec, ctx: SpecContext<'_>, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if spec.termination_grace_period_seconds.is_none() {
        errs.push(FieldError::required(p.child("terminationGracePeriodSeconds")));
    }
    let grace = spec.termination_grace_period_seconds;
    let host_users = spec.host_users.is_none_or(|h| h);
    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), &p.child("volumes"), &mut errs);
    let restart_policy = s(&spec.restart_policy);
    let cctx = ContainerCtx { volumes: &volumes, restart_policy, host_users, is_pod: ctx.is_pod() };

    // Regular containers.
    let cp = p.child("containers");
    if spec.containers.is_empty() {
        errs.push(FieldError::required(&cp));
    } else {
        let mut seen = BTreeSet::new();
        for (i, c) in spec.containers.iter().enumerate() {
            let ip = cp.index(i);
            validate_container_common(c, &cctx, &ip, &mut errs);
            if !seen.insert(c.name.as_str()) {
                errs.push(FieldError::duplicate(ip.child("name"), &c.name));
            }
            validate_lifecycle(c, grace, &ip, &mut errs);
            validate_probe(c.liveness_probe.as_ref(), ProbeKind::Liveness, grace, &ip.child("livenessProbe"), &mut errs);
            validate_probe(c.readiness_probe.as_ref(), ProbeKind::Readiness, grace, &ip.child("readinessProbe"), &mut errs);
            validate_probe(c.startup_probe.as_ref(), ProbeKind::Startup, grace, &ip.child("startupProbe"), &mut errs);
            if c.restart_policy.is_some() {
                errs.push(FieldError::forbidden(ip.child("restartPolicy"), "may not be set for non-init containers"));
            }
        }
        check_host_port_conflicts(&spec.containers.iter().collect::<Vec<_>>(), &cp, &mut errs);
    }

    // Init containers.
    let ip0 = p.child("initContainers");
    let mut all_names: BTreeSet<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let ip = ip0.index(i);
        validate_container_common(c, &cctx, &ip, &mut errs);
        let restart_always = match &c.restart_policy {
            Some(rp) if rp == "Always" => true,
            Some(rp) => {
                errs.push(not_supported(&ip.child("restartPolicy"), rp, &["Always"]));
                false
            }
            None => false,
        };
        if all_names.contains(c.name.as_str()) {
            errs.push(FieldError::duplicate(ip.child("name"), &c.name));
        } else if !c.name.is_empty() {
            all_names.insert(c.name.as_str());
        }
        check_host_port_conflicts(&[c], &ip0, &mut errs);
        if restart_always {
            validate_lifecycle(c, grace, &ip, &mut errs);
            validate_probe(c.liveness_probe.as_ref(), ProbeKind::Liveness, grace, &ip.child("livenessProbe"), &mut errs);
            validate_probe(c.readiness_probe.as_ref(), ProbeKind::Readiness, grace, &ip.child("readinessProbe"), &mut errs);
            validate_probe(c.startup_probe.as_ref(), ProbeKind::Startup, grace, &ip.child("startupProbe"), &mut errs);
        } else {
            for (name, set) in [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ] {
                if set {
                    errs.push(FieldError::forbidden(ip.child(name), "may not be set for init containers without restartPolicy=Always"));
                }
            }
        }
    }

    // Host network: a pod's host ports are its container ports.
    if spec.host_network == Some(true) {
        for (i, c) in spec.containers.iter().enumerate() {
            for (j, port) in c.ports.iter().flatten().enumerate() {
                let hp = port.host_port.unwrap_or(0);
                if (ctx.is_pod() || hp != 0) && hp != port.container_port {
                    errs.push(FieldError::invalid(
                        cp.index(i).child("ports").index(j).child("hostPort"),
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }

    match restart_policy {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldError::required(p.child("restartPolicy"))),
        other => errs.push(not_supported(&p.child("restartPolicy"), other, &["Always", "OnFailure", "Never"])),
    }
    match s(&spec.dns_policy) {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" | "None" => {}
        "" => errs.push(FieldError::required(p.child("dnsPolicy"))),
        other => errs.push(not_supported(&p.child("dnsPolicy"), other, &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"])),
    }
    errs.extend(meta::validate_labels(spec.node_selector.as_ref(), &p.child("nodeSelector")));
    validate_pod_security_context(spec.security_context.as_ref(), spec, &p.child("securityContext"), &mut errs);
    validate_dns_config(spec, &p.child("dnsConfig"), &mut errs);
    for (i, g) in spec.readiness_gates.iter().flatten().enumerate() {
        let gp = p.child("readinessGates").index(i).child("conditionType");
        errs.extend(names::qualified_name(&g.condition_type).into_iter().map(|m| FieldError::invalid(&gp, &g.condition_type, m)));
    }
    let mut gates = BTreeSet::new();
    for (i, g) in spec.scheduling_gates.iter().flatten().enumerate() {
        let gp = p.child("schedulingGates").index(i);
        errs.extend(names::qualified_name(&g.name).into_iter().map(|m| FieldError::invalid(&gp, &g.name, m)));
        if !gates.insert(g.name.as_str()) {
            errs.push(FieldError::duplicate(&gp, &g.name));
        }
    }
    for (i, c) in spec.topology_spread_constraints.iter().flatten().enumerate() {
        let tp = p.child("topologySpreadConstraints").index(i);
        if c.max_skew <= 0 {
            errs.push(FieldError::invalid(tp.child("maxSkew"), c.max_skew, "must be greater than zero"));
        }
        if c.topology_key.is_empty() {
            errs.push(FieldError { detail: "can not be empty".into(), ..FieldError::required(tp.child("topologyKey")) });
        }
        if c.when_unsatisfiable != "DoNotSchedule" && c.when_unsatisfiable != "ScheduleAnyway" {
            errs.push(not_supported(&tp.child("whenUnsatisfiable"), &c.when_unsatisfiable, &["DoNotSchedule", "ScheduleAnyway"]));
        }
        if let Some(sel) = &c.label_selector {
            errs.extend(meta::validate_label_selector(sel, &tp.child("labelSelector")));
        }
    }
    for (field, value) in [
        ("serviceAccountName", &spec.service_account_name),
        ("nodeName", &spec.node_name),
        ("priorityClassName", &spec.priority_class_name),
        ("runtimeClassName", &spec.runtime_class_name),
    ] {
        let v = s(value);
        if !v.is_empty() || (field == "runtimeClassName" && value.is_some()) {
            errs.extend(names::dns1123_subdomain(v).into_iter().map(|m| FieldError::invalid(p.child(field), v, m)));
        }
    }
    if let Some(a) = spec.active_deadline_seconds.filter(|a| !(1..=MAX_INT32).contains(a)) {
        errs.push(FieldError::invalid(p.child("activeDeadlineSeconds"), a, names::inclusive_range_error(1, MAX_INT32)));
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        let v = s(value);
        if !v.is_empty() {
            errs.extend(names::dns1123_label(v).into_iter().map(|m| FieldError::invalid(p.child(field), v, m)));
        }
    }
    validate_tolerations(spec.tolerations.as_deref().unwrap_or_default(), &p.child("tolerations"), &mut errs);
    for (i, ha) in spec.host_aliases.iter().flatten().enumerate() {
        let hp = p.child("hostAliases").index(i);
        if names::parse_ip(&ha.ip).is_none() {
            errs.push(FieldError::invalid(hp.child("ip"), &ha.ip, names::IP_MSG));
        }
        for (j, h) in ha.hostnames.iter().flatten().enumerate() {
            errs.extend(names::dns1123_subdomain(h).into_iter().map(|m| FieldError::invalid(hp.child("hostnames").index(j), h, m)));
        }
    }
    if let Some(pp) = &spec.preemption_policy {
        match pp.as_str() {
            "PreemptLowerPriority" | "Never" => {}
            "" => errs.push(FieldError::required(p.child("preemptionPolicy"))),
            other => errs.push(not_supported(&p.child("preemptionPolicy"), other, &["PreemptLowerPriority", "Never"])),
        }
    }
    if let Some(overhead) = &spec.overhead {
        let r = ResourceRequirements { limits: Some(overhead.clone()), ..Default::default() };
        validate_resources(Some(&r), &p.child("overhead"), &mut errs);
    }
    if let Some(os) = &spec.os {
        match os.name.as_str() {
            "" => errs.push(FieldError { detail: "cannot be empty".into(), ..FieldError::required(p.child("os").child("name")) }),
            "linux" | "windows" => {}
            other => errs.push(not_supported(&p.child("os"), other, &["linux", "windows"])),
        }
    }
    errs
}

/// Pod-only checks on top of the spec (`validatePodMetadataAndSpec`).
fn validate_pod_metadata_and_spec(pod: &Pod) -> Vec<FieldError> {
    let mp = Path::new("metadata");
    let mut errs = meta::validate_object_meta(&pod.metadata, true, NameRule::Dns1123Subdomain, &mp);
    let spec = pod.spec.clone().unwrap_or_default();
    if let Some(v) = pod.metadata.annotations.as_ref().and_then(|a| a.get("kubernetes.io/config.mirror"))
        && s(&spec.node_name).is_empty()
    {
        errs.push(FieldError::invalid(
            mp.child("annotations").key("kubernetes.io/config.mirror"),
            v,
            "must set spec.nodeName if mirror pod annotation is set",
        ));
    }
    if let Some(v) = pod.metadata.annotations.as_ref().and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        && v.parse::<i32>().is_err()
    {
        errs.push(FieldError::invalid(
            mp.child("annotations").key("controller.kubernetes.io/pod-deletion-cost"),
            v,
            "must be a 32bit integer",
        ));
    }
    let sp = Path::new("spec");
    errs.extend(validate_pod_spec(&spec, SpecContext { pod_meta: Some(&pod.metadata) }, &sp));
    if s(&spec.service_account_name).is_empty() {
        for (vi, v) in spec.volumes.iter().flatten().enumerate() {
            for (si, src) in v.projected.iter().flat_map(|p| p.sources.iter().flatten()).enumerate() {
                if src.service_account_token.is_some() {
                    errs.push(FieldError::forbidden(
                        sp.child("volumes").index(vi).child("projected").child("sources").index(si).child("serviceAccountToken"),
                        "must not be specified when serviceAccountName is not set",
                    ));
                }
            }
        }
    }
    errs
}

pub(crate) fn validate_pod_create(pod: &Pod) -> Vec<FieldError> {
    let mut errs = validate_pod_metadata_and_spec(pod);
    let sp = Path::new("spec");
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.push(FieldError::forbidden(sp.child("ephemeralContainers"), "cannot be set on create"));
    }
    if !s(&spec.node_name).is_empty() && spec.scheduling_gates.as_ref().is_some_and(|g| !g.is_empty()) {
        errs.push(FieldError::forbidden(sp.child("nodeName"), "cannot be set until all schedulingGates have been cleared"));
    }
    errs
}

const UPDATABLE_POD_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn validate_container_updates(new: &[Container], old: &[Container], p: &Path, errs: &mut Vec<FieldError>) -> bool {
    if new.len() != old.len() {
        errs.push(FieldError::forbidden(p, "pod updates may not add or remove containers"));
        return true;
    }
    for (i, c) in new.iter().enumerate() {
        let image = s(&c.image);
        if image.is_empty() {
            errs.push(FieldError::required(p.index(i).child("image")));
        }
        if image.trim() != image {
            errs.push(FieldError::invalid(p.index(i).child("image"), image, "must not have leading or trailing whitespace"));
        }
    }
    false
}

/// `ValidatePodUpdate`: almost all of a pod's spec is fixed once created.
pub(crate) fn validate_pod_update(new: &Pod, old: &Pod) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta_update(&new.metadata, &old.metadata, &Path::new("metadata"));
    errs.extend(validate_pod_metadata_and_spec(new));
    let sp = Path::new("spec");
    let new_spec = new.spec.clone().unwrap_or_default();
    let old_spec = old.spec.clone().unwrap_or_default();
    let empty = Vec::new();
    if validate_container_updates(&new_spec.containers, &old_spec.containers, &sp.child("containers"), &mut errs) {
        return errs;
    }
    let new_init = new_spec.init_containers.as_ref().unwrap_or(&empty);
    let old_init = old_spec.init_containers.as_ref().unwrap_or(&empty);
    if validate_container_updates(new_init, old_init, &sp.child("initContainers"), &mut errs) {
        return errs;
    }

    let adp = sp.child("activeDeadlineSeconds");
    match (new_spec.active_deadline_seconds, old_spec.active_deadline_seconds) {
        (Some(n), _) if !(0..=MAX_INT32).contains(&n) => {
            errs.push(FieldError::invalid(&adp, n, names::inclusive_range_error(0, MAX_INT32)));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(&adp, n, "must be less than or equal to previous value"));
            return errs;
        }
        (None, Some(_)) => errs.push(FieldError::invalid(&adp, "nil", "must not update from a positive integer to nil value")),
        _ => {}
    }

    // Tolerations may only be added (existing ones may change tolerationSeconds).
    let new_tol = new_spec.tolerations.as_deref().unwrap_or_default();
    for o in old_spec.tolerations.iter().flatten() {
        let found = new_tol.iter().any(|n| Toleration { toleration_seconds: n.toleration_seconds, ..o.clone() } == *n);
        if !found {
            errs.push(FieldError::forbidden(
                sp.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            break;
        }
    }
    // Scheduling gates may only be removed.
    let old_gates: BTreeSet<&str> = old_spec.scheduling_gates.iter().flatten().map(|g| g.name.as_str()).collect();
    for (i, g) in new_spec.scheduling_gates.iter().flatten().enumerate() {
        if !old_gates.contains(g.name.as_str()) {
            errs.push(FieldError::forbidden(
                sp.child("schedulingGates").index(i).child("name"),
                format!("only deletion is allowed, but found new scheduling gate '{}'", g.name),
            ));
        }
    }

    if new_spec == old_spec {
        return errs;
    }
    let mut munged = new_spec.clone();
    for (c, o) in munged.containers.iter_mut().zip(&old_spec.containers) {
        c.image = o.image.clone();
    }
    for (c, o) in munged.init_containers.iter_mut().flatten().zip(old_init) {
        c.image = o.image.clone();
    }
    munged.active_deadline_seconds = old_spec.active_deadline_seconds;
    munged.scheduling_gates = old_spec.scheduling_gates.clone();
    munged.tolerations = old_spec.tolerations.clone();
    if old_spec.termination_grace_period_seconds.is_some_and(|g| g < 0) && munged.termination_grace_period_seconds == Some(1) {
        munged.termination_grace_period_seconds = old_spec.termination_grace_period_seconds;
    }
    if old_gates.is_empty() || munged.node_selector == old_spec.node_selector {
        // Gated pods may add node selectors; nothing else is relaxed here.
    } else {
        let added_only =
            old_spec.node_selector.iter().flatten().all(|(k, v)| munged.node_selector.as_ref().and_then(|m| m.get(k)) == Some(v));
        if added_only {
            munged.node_selector = old_spec.node_selector.clone();
        } else {
            errs.push(FieldError::invalid(
                sp.child("nodeSelector"),
                meta::go_map(munged.node_selector.as_ref()),
                "only additions to spec.nodeSelector are allowed (no mutations or deletions)",
            ));
            munged.node_selector = old_spec.node_selector.clone();
        }
    }
    if munged != old_spec {
        let diff = spec_diff(&old_spec, &munged);
        errs.push(FieldError::forbidden(&sp, format!("pod updates may not change fields other than {UPDATABLE_POD_FIELDS}\n{diff}")));
    }
    errs
}

/// A readable list of what changed, in place of Go's `cmp.Diff` output.
fn spec_diff(old: &PodSpec, new: &PodSpec) -> String {
    let mut lines = Vec::new();
    let o = serde_json::to_value(old).unwrap_or_default();
    let n = serde_json::to_value(new).unwrap_or_default();
    diff_values("spec", &o, &n, &mut lines);
    lines.join("\n")
}

fn diff_values(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let (x, y) = (a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null));
                diff_values(&format!("{path}.{k}"), x, y, out);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a != b => {
            out.push(format!("- {path}: {a}"));
            out.push(format!("+ {path}: {b}"));
        }
        _ => {}
    }
}

/// `ValidatePodTemplateSpec` at `p` (e.g. `spec.template`).
pub(crate) fn validate_template(t: &PodTemplateSpec, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let m = t.metadata.clone().unwrap_or_default();
    errs.extend(meta::validate_labels(m.labels.as_ref(), &p.child("labels")));
    errs.extend(meta::validate_annotations(m.annotations.as_ref(), &p.child("annotations")));
    let spec = t.spec.clone().unwrap_or_default();
    errs.extend(validate_pod_spec(&spec, SpecContext { pod_meta: None }, &p.child("spec")));
    if spec.ephemeral_containers.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.push(FieldError::forbidden(p.child("spec").child("ephemeralContainers"), "ephemeral containers not allowed in pod template"));
    }
    errs
}
