//! From a Pod object to what the runtime is asked for: the sandbox (its
//! hostname, `/etc/resolv.conf`, `/etc/hosts`, limits) and each container
//! run (argv, environment, working directory, limits, mounts), following
//! the kubelet's rules: `envFrom` then `env`, `$(VAR)` expansion, DNS
//! policies, QoS class.
//!
//! Pure functions over the pod and the ConfigMaps and Secrets it refers to
//! ([`Referenced`], fetched by the worker first), so every rule is tested
//! without an API server.

use crate::runtime::{ContainerSpec, Limits, Mount, SandboxSpec};
use hawser_api::quantity;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, ResourceRequirements, Secret};
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Why a container (or the sandbox) cannot be specified yet; the kubelet
/// reports these as `CreateContainerConfigError`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    KeyNotFound { kind: &'static str, namespace: String, name: String, key: String },
    #[error("unsupported field path {0:?}")]
    FieldPath(String),
    #[error("volume {volume:?} of volume mount {mount:?} is not in the pod's volumes")]
    NoSuchVolume { mount: String, volume: String },
    #[error("{0}")]
    Invalid(String),
}

/// The ConfigMaps and Secrets of the pod's namespace that it refers to,
/// by name (absent ones are simply not there).
#[derive(Clone, Debug, Default)]
pub struct Referenced {
    pub config_maps: HashMap<String, ConfigMap>,
    pub secrets: HashMap<String, Secret>,
}

/// The names of the ConfigMaps and Secrets the pod refers to (env, envFrom
/// and volumes), for the worker to fetch.
pub fn references(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut config_maps, mut secrets) = (Vec::new(), Vec::new());
    let Some(spec) = &pod.spec else { return (config_maps, secrets) };
    for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
        for from in c.env_from.iter().flatten() {
            config_maps.extend(from.config_map_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(from.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for var in c.env.iter().flatten() {
            let Some(from) = &var.value_from else { continue };
            config_maps.extend(from.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(from.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
    }
    for v in spec.volumes.iter().flatten() {
        config_maps.extend(v.config_map.as_ref().map(|c| c.name.clone()));
        secrets.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

/// How pods' DNS is configured on this node (kubelet's `--cluster-dns`,
/// `--cluster-domain`, and the node's own resolv.conf).
#[derive(Clone, Debug)]
pub struct DnsSettings {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The node's `/etc/resolv.conf`, for `dnsPolicy: Default` and the
    /// search list ClusterFirst appends.
    pub host_resolv_conf: String,
}

/// The pod's `/etc/resolv.conf` by its `dnsPolicy` and `dnsConfig`.
pub fn resolv_conf(pod: &Pod, dns: &DnsSettings) -> String {
    let spec = pod.spec.as_ref();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec.and_then(|s| s.dns_policy.as_deref()).unwrap_or("ClusterFirst");
    let host = parse_resolv_conf(&dns.host_resolv_conf);
    let (mut servers, mut searches, mut options) = match policy {
        "None" => (vec![], vec![], vec![]),
        // Host-network pods use the node's DNS unless they ask for ClusterFirstWithHostNet.
        "Default" => (host.0.clone(), host.1.clone(), host.2.clone()),
        "ClusterFirst" if host_network => (host.0.clone(), host.1.clone(), host.2.clone()),
        _ if dns.cluster_dns.is_empty() => (host.0.clone(), host.1.clone(), host.2.clone()),
        _ => {
            let d = &dns.cluster_domain;
            let mut searches = vec![format!("{namespace}.svc.{d}"), format!("svc.{d}"), d.clone()];
            searches.extend(host.1.iter().filter(|s| !searches.contains(s)).cloned().collect::<Vec<_>>());
            (dns.cluster_dns.clone(), searches, vec!["ndots:5".to_string()])
        }
    };
    if let Some(config) = spec.and_then(|s| s.dns_config.as_ref()) {
        servers.extend(config.nameservers.iter().flatten().cloned());
        searches.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = &option.name else { continue };
            options.retain(|o| o.split(':').next() != Some(name.as_str()));
            options.push(match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    servers.dedup();
    // glibc reads at most 3 nameservers and 6 search domains (kubelet trims the same way).
    servers.truncate(3);
    searches.dedup();
    searches.truncate(6);
    let mut out = String::new();
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// (nameservers, search domains, options) of a resolv.conf.
pub(crate) fn parse_resolv_conf(text: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut servers, mut searches, mut options) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(str::to_string)),
            Some("search" | "domain") => searches = words.map(str::to_string).collect(),
            Some("options") => options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    (servers, searches, options)
}

/// The pod's hostname: `spec.hostname`, else its name (at most 63 bytes, as
/// the kubelet truncates it).
pub fn hostname(pod: &Pod) -> String {
    let name = pod.spec.as_ref().and_then(|s| s.hostname.clone()).unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    let mut name: String = name.chars().take(63).collect();
    while name.ends_with(['-', '.']) {
        name.pop();
    }
    name
}

/// The kubelet-managed `/etc/hosts`: loopback, the pod's own address with
/// its hostname (and FQDN when it has a subdomain), then `hostAliases`.
pub fn hosts_file(pod: &Pod, pod_ip: Ipv4Addr, cluster_domain: &str) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    match pod.spec.as_ref().and_then(|s| s.subdomain.as_deref()).filter(|s| !s.is_empty()) {
        Some(sub) => out.push_str(&format!("{pod_ip}\t{host}.{sub}.{namespace}.svc.{cluster_domain}\t{host}\n")),
        None => out.push_str(&format!("{pod_ip}\t{host}\n")),
    }
    for alias in pod.spec.as_ref().and_then(|s| s.host_aliases.as_ref()).into_iter().flatten() {
        let names = alias.hostnames.clone().unwrap_or_default();
        if !names.is_empty() {
            out.push_str(&format!("# Entries added by HostAliases.\n{}\t{}\n", alias.ip, names.join("\t")));
        }
    }
    out
}

fn limits_of(resources: Option<&ResourceRequirements>) -> Limits {
    let limit = |name: &str| resources.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(name)).map(|q| q.0.clone());
    Limits {
        cpu_millis: limit("cpu").and_then(|q| quantity::milli_value(&q)).map(|m| m.max(1) as u64),
        memory_bytes: limit("memory").and_then(|q| quantity::value(&q)).map(|b| b.max(0) as u64),
    }
}

/// Pod-level limits: the sum of the app containers' when every one has a
/// limit (an unlimited container leaves the pod unlimited), and at least
/// the largest init container's.
pub fn pod_limits(pod: &Pod) -> Limits {
    let Some(spec) = &pod.spec else { return Limits::default() };
    let apps: Vec<Limits> = spec.containers.iter().map(|c| limits_of(c.resources.as_ref())).collect();
    let inits: Vec<Limits> = spec.init_containers.iter().flatten().map(|c| limits_of(c.resources.as_ref())).collect();
    let sum = |get: fn(&Limits) -> Option<u64>| -> Option<u64> {
        let total = apps.iter().map(get).sum::<Option<u64>>()?;
        let init_max = inits.iter().map(get).collect::<Option<Vec<u64>>>()?.into_iter().max().unwrap_or(0);
        Some(total.max(init_max))
    };
    Limits { cpu_millis: sum(|l| l.cpu_millis), memory_bytes: sum(|l| l.memory_bytes) }
}

/// The pod's QoS class, as the API server reports it in `status.qosClass`.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else { return "BestEffort" };
    let all: Vec<&Container> = spec.init_containers.iter().flatten().chain(&spec.containers).collect();
    let quantities = |c: &Container,
                      which: fn(
        &ResourceRequirements,
    ) -> Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
        c.resources
            .as_ref()
            .and_then(which)
            .map(|m| {
                m.iter().filter(|(k, _)| *k == "cpu" || *k == "memory").map(|(k, v)| (k.clone(), v.0.clone())).collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default()
    };
    let requests = |c: &Container| {
        // Requests default to limits when only limits are given.
        let mut r = quantities(c, |r| r.limits.as_ref());
        r.extend(quantities(c, |r| r.requests.as_ref()));
        r
    };
    if all.iter().all(|c| requests(c).is_empty()) {
        return "BestEffort";
    }
    let guaranteed = all.iter().all(|c| {
        let limits = quantities(c, |r| r.limits.as_ref());
        limits.len() == 2 && requests(c) == limits
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

/// The sandbox for `pod` at `pod_ip`.
pub fn sandbox_spec(pod: &Pod, pod_ip: Ipv4Addr, dns: &DnsSettings) -> SandboxSpec {
    SandboxSpec {
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        hostname: hostname(pod),
        resolv_conf: resolv_conf(pod, dns),
        hosts: hosts_file(pod, pod_ip, &dns.cluster_domain),
        limits: pod_limits(pod),
    }
}

/// What a container's `fieldRef` may name, as of this run.
#[derive(Clone, Debug, Default)]
pub struct PodFacts {
    pub node_name: String,
    pub host_ip: String,
    pub pod_ip: String,
}

fn field_value(pod: &Pod, facts: &PodFacts, path: &str) -> Result<String, SpecError> {
    let meta = &pod.metadata;
    let label_or_annotation = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => Some(facts.node_name.clone()),
        "spec.serviceAccountName" => pod.spec.as_ref().and_then(|s| s.service_account_name.clone()),
        "status.hostIP" | "status.hostIPs" => Some(facts.host_ip.clone()),
        "status.podIP" | "status.podIPs" => Some(facts.pod_ip.clone()),
        _ => label_or_annotation(&meta.labels, "metadata.labels['")
            .or_else(|| label_or_annotation(&meta.annotations, "metadata.annotations['")),
    };
    match value {
        Some(v) => Ok(v),
        None if path.starts_with("metadata.") || path.starts_with("spec.") || path.starts_with("status.") => Ok(String::new()),
        None => Err(SpecError::FieldPath(path.to_string())),
    }
}

fn config_map_key(refs: &Referenced, ns: &str, name: &str, key: &str, optional: bool) -> Result<Option<String>, SpecError> {
    let Some(cm) = refs.config_maps.get(name) else {
        return if optional { Ok(None) } else { Err(SpecError::ConfigMapNotFound(name.to_string())) };
    };
    match cm.data.as_ref().and_then(|d| d.get(key)) {
        Some(v) => Ok(Some(v.clone())),
        None if optional => Ok(None),
        None => Err(SpecError::KeyNotFound { kind: "configmap", namespace: ns.into(), name: name.into(), key: key.into() }),
    }
}

fn secret_key(refs: &Referenced, ns: &str, name: &str, key: &str, optional: bool) -> Result<Option<String>, SpecError> {
    let Some(secret) = refs.secrets.get(name) else {
        return if optional { Ok(None) } else { Err(SpecError::SecretNotFound(name.to_string())) };
    };
    let value = secret.data.as_ref().and_then(|d| d.get(key)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    let value = value.or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned());
    match value {
        Some(v) => Ok(Some(v)),
        None if optional => Ok(None),
        None => Err(SpecError::KeyNotFound { kind: "secret", namespace: ns.into(), name: name.into(), key: key.into() }),
    }
}

/// A container's environment in the kubelet's order: `envFrom` sources in
/// order, then `env` entries (later ones win), each `$(VAR)` in a value
/// expanded from what is defined before it.
pub fn environment(pod: &Pod, container: &Container, refs: &Referenced, facts: &PodFacts) -> Result<Vec<(String, String)>, SpecError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, key: String, value: String| match env.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key, value)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match refs.config_maps.get(&r.name) {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(SpecError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match refs.secrets.get(&r.name) {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(SpecError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    Some(field_value(pod, facts, &f.field_path)?)
                } else if let Some(r) = &from.config_map_key_ref {
                    config_map_key(refs, ns, &r.name, &r.key, r.optional == Some(true))?
                } else if let Some(r) = &from.secret_key_ref {
                    secret_key(refs, ns, &r.name, &r.key, r.optional == Some(true))?
                } else {
                    from.resource_field_ref.as_ref().map(|r| resource_field(container, &r.resource))
                }
            }
            (Some(v), None) => Some(expand(v, &env)),
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// `resourceFieldRef`: a limit (or request) in plain units; an unset limit
/// reads as the node's allocatable in the kubelet, here as 0.
fn resource_field(container: &Container, resource: &str) -> String {
    let (which, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let map = container.resources.as_ref().and_then(|r| if which == "requests" { r.requests.as_ref() } else { r.limits.as_ref() });
    let q = map.and_then(|m| m.get(name)).map(|q| q.0.clone()).unwrap_or_default();
    match name {
        // CPU is rounded up to whole cores, as the downward API does with the default divisor.
        "cpu" => quantity::milli_value(&q).map(|m| ((m + 999) / 1000).to_string()).unwrap_or_else(|| "0".into()),
        _ => quantity::value(&q).map(|v| v.to_string()).unwrap_or_else(|| "0".into()),
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined VAR is replaced, an undefined
/// one is left as written, `$$` is a literal `$`.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end + 1]),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Run `attempt` of `container`: argv is `command` + `args` with `$(VAR)`
/// expanded from the container's environment; `volumes` maps each of the
/// pod's volume names to the host directory that holds it.
pub fn container_spec(
    pod: &Pod,
    container: &Container,
    attempt: u32,
    refs: &Referenced,
    facts: &PodFacts,
    volumes: &HashMap<String, PathBuf>,
) -> Result<ContainerSpec, SpecError> {
    let env = environment(pod, container, refs, facts)?;
    let argv: Vec<String> = container.command.iter().flatten().chain(container.args.iter().flatten()).map(|a| expand(a, &env)).collect();
    let mut mounts = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let dir = volumes.get(&m.name).ok_or_else(|| SpecError::NoSuchVolume { mount: m.mount_path.clone(), volume: m.name.clone() })?;
        let sub = m.sub_path.as_deref().filter(|s| !s.is_empty());
        if let Some(sub) = sub
            && (Path::new(sub).is_absolute() || Path::new(sub).components().any(|c| c == std::path::Component::ParentDir))
        {
            return Err(SpecError::Invalid(format!("subPath {sub:?} must be a relative path without '..'")));
        }
        mounts.push(Mount {
            host_path: sub.map(|s| dir.join(s)).unwrap_or_else(|| dir.clone()),
            container_path: PathBuf::from(&m.mount_path),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    Ok(ContainerSpec {
        name: container.name.clone(),
        attempt,
        argv,
        env,
        working_dir: container.working_dir.as_ref().filter(|d| !d.is_empty()).map(PathBuf::from),
        image: container.image.clone().unwrap_or_default(),
        limits: limits_of(container.resources.as_ref()),
        mounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "labels": {"app": "web"}}, "spec": spec}),
        )
        .unwrap()
    }

    fn dns() -> DnsSettings {
        DnsSettings {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_resolv_conf: "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n".into(),
        }
    }

    #[test]
    fn cluster_first_uses_cluster_dns_and_the_kubernetes_search_list() {
        let p = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(
            resolv_conf(&p, &dns()),
            "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
        let p = pod(json!({"dnsPolicy": "Default", "containers": [{"name": "a"}]}));
        assert_eq!(resolv_conf(&p, &dns()), "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n");
        let p = pod(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.1"], "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}, "containers": [{"name": "a"}]}));
        assert_eq!(resolv_conf(&p, &dns()), "nameserver 192.0.2.1\nsearch a.example\noptions ndots:2 rotate\n");
        let p = pod(json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}, "containers": [{"name": "a"}]}));
        assert!(resolv_conf(&p, &dns()).ends_with("options ndots:1\n"), "dnsConfig overrides an option of the policy");
    }

    #[test]
    fn hosts_file_names_the_pod_and_its_fqdn_under_a_subdomain() {
        let p = pod(json!({"hostname": "db-0", "subdomain": "db", "containers": [{"name": "a"}],
            "hostAliases": [{"ip": "192.0.2.9", "hostnames": ["foo.local", "bar.local"]}]}));
        let hosts = hosts_file(&p, "10.244.1.5".parse().unwrap(), "cluster.local");
        assert!(hosts.contains("10.244.1.5\tdb-0.db.shop.svc.cluster.local\tdb-0\n"), "{hosts}");
        assert!(hosts.contains("192.0.2.9\tfoo.local\tbar.local\n"));
        assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
    }

    #[test]
    fn environment_follows_env_from_then_env_with_expansion() {
        let p = pod(json!({"containers": [{"name": "a",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "env": [
                {"name": "GREETING", "value": "hello"},
                {"name": "MESSAGE", "value": "$(GREETING) $(CFG_color) $(MISSING) $$(GREETING)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                {"name": "OPTIONAL", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": true}}},
            ],
            "command": ["echo"], "args": ["$(MESSAGE)", "$(POD)"]}]}));
        let mut refs = Referenced::default();
        refs.config_maps
            .insert("cfg".into(), serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"color": "blue"}})).unwrap());
        refs.secrets.insert(
            "creds".into(),
            serde_json::from_value(json!({"metadata": {"name": "creds"}, "data": {"password": "czNjcjN0"}})).unwrap(),
        );
        let facts = PodFacts { node_name: "n1".into(), host_ip: "198.51.100.2".into(), pod_ip: "10.244.0.7".into() };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let spec = container_spec(&p, c, 2, &refs, &facts, &HashMap::new()).unwrap();
        let get = |k: &str| spec.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CFG_color"), Some("blue"));
        assert_eq!(get("MESSAGE"), Some("hello blue $(MISSING) $(GREETING)"));
        assert_eq!((get("POD"), get("APP"), get("IP"), get("PASSWORD")), (Some("web-1"), Some("web"), Some("10.244.0.7"), Some("s3cr3t")));
        assert_eq!(get("OPTIONAL"), None);
        assert_eq!(spec.argv, ["echo", "hello blue $(MISSING) $(GREETING)", "web-1"]);
        assert_eq!(spec.attempt, 2);
        let missing = Referenced::default();
        assert_eq!(container_spec(&p, c, 0, &missing, &facts, &HashMap::new()).unwrap_err(), SpecError::ConfigMapNotFound("cfg".into()));
    }

    #[test]
    fn limits_and_qos_follow_resources() {
        let guaranteed = pod(json!({"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]}));
        assert_eq!(pod_limits(&guaranteed), Limits { cpu_millis: Some(1500), memory_bytes: Some((64 << 20) + (1 << 30)) });
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burstable = pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}, {"name": "b"}]}));
        assert_eq!(pod_limits(&burstable), Limits::default(), "an unlimited container leaves the pod unlimited");
        assert_eq!(qos_class(&burstable), "Burstable");
        assert_eq!(qos_class(&pod(json!({"containers": [{"name": "a"}]}))), "BestEffort");
    }

    #[test]
    fn mounts_come_from_volume_mounts_and_reject_escaping_sub_paths() {
        let p = pod(json!({"containers": [{"name": "a", "volumeMounts": [
            {"name": "data", "mountPath": "/data"}, {"name": "data", "mountPath": "/conf", "subPath": "conf", "readOnly": true}]}]}));
        let volumes = HashMap::from([("data".to_string(), PathBuf::from("/var/lib/hawser/pods/u1/volumes/data"))]);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let spec = container_spec(&p, c, 0, &Referenced::default(), &PodFacts::default(), &volumes).unwrap();
        assert_eq!(spec.mounts[1].host_path, PathBuf::from("/var/lib/hawser/pods/u1/volumes/data/conf"));
        assert!(spec.mounts[1].read_only);
        let bad =
            pod(json!({"containers": [{"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../../etc"}]}]}));
        let c = &bad.spec.as_ref().unwrap().containers[0];
        assert!(container_spec(&bad, c, 0, &Referenced::default(), &PodFacts::default(), &volumes).is_err());
        assert!(matches!(
            container_spec(&bad, c, 0, &Referenced::default(), &PodFacts::default(), &HashMap::new()),
            Err(SpecError::NoSuchVolume { .. })
        ));
    }
}
