//! The resource registry: every kind the API server serves, with the names
//! discovery, routing, storage keys and kubectl's short names are built from.

/// One served resource (a kind at one group/version) and how clients address it.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` is the core (legacy) group served under `/api`.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served under `<plural>/<name>/<sub>`.
    pub subresources: &'static [Subresource],
}

/// A subresource and the kind it speaks.
#[derive(Debug, PartialEq, Eq)]
pub struct Subresource {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

const STATUS: Subresource = Subresource { name: "status", group: "", version: "", kind: "", verbs: &["get", "patch", "update"] };
const SCALE: Subresource =
    Subresource { name: "scale", group: "autoscaling", version: "v1", kind: "Scale", verbs: &["get", "patch", "update"] };
const BINDING: Subresource = Subresource { name: "binding", group: "", version: "v1", kind: "Binding", verbs: &["create"] };
const LOG: Subresource = Subresource { name: "log", group: "", version: "v1", kind: "Pod", verbs: &["get"] };

/// Verbs every served resource supports.
pub const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

macro_rules! resource {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, namespaced: $ns:expr,
     short: [$($short:expr),*], categories: [$($cat:expr),*], subresources: [$($sub:expr),*]) => {
        ResourceInfo {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$($sub),*],
        }
    };
}

/// Everything the API server serves, in discovery order.
pub static RESOURCES: &[ResourceInfo] = &[
    resource!("", "v1", "Namespace", "namespaces", "namespace", namespaced: false, short: ["ns"], categories: [], subresources: [STATUS]),
    resource!("", "v1", "Pod", "pods", "pod", namespaced: true, short: ["po"], categories: ["all"], subresources: [STATUS, BINDING, LOG]),
    resource!("", "v1", "Service", "services", "service", namespaced: true, short: ["svc"], categories: ["all"], subresources: [STATUS]),
    resource!("", "v1", "Endpoints", "endpoints", "endpoints", namespaced: true, short: ["ep"], categories: [], subresources: []),
    resource!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", namespaced: true, short: ["rc"], categories: ["all"], subresources: [STATUS, SCALE]),
    resource!("", "v1", "Node", "nodes", "node", namespaced: false, short: ["no"], categories: [], subresources: [STATUS]),
    resource!("", "v1", "Event", "events", "event", namespaced: true, short: ["ev"], categories: [], subresources: []),
    resource!("", "v1", "ConfigMap", "configmaps", "configmap", namespaced: true, short: ["cm"], categories: [], subresources: []),
    resource!("", "v1", "Secret", "secrets", "secret", namespaced: true, short: [], categories: [], subresources: []),
    resource!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", namespaced: true, short: ["rs"], categories: ["all"], subresources: [STATUS, SCALE]),
    resource!("apps", "v1", "Deployment", "deployments", "deployment", namespaced: true, short: ["deploy"], categories: ["all"], subresources: [STATUS, SCALE]),
    resource!("coordination.k8s.io", "v1", "Lease", "leases", "lease", namespaced: true, short: [], categories: [], subresources: []),
    resource!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", namespaced: true, short: [], categories: [], subresources: []),
];

/// The API groups served under `/apis`, each with its one version.
pub static GROUPS: &[(&str, &str)] = &[("apps", "v1"), ("coordination.k8s.io", "v1"), ("discovery.k8s.io", "v1")];

impl ResourceInfo {
    /// `v1` for the core group, `<group>/<version>` otherwise.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether spec and status are written separately (the main resource
    /// ignores status changes, `/status` changes nothing else), as Kubernetes
    /// does for every kind with a status subresource.
    pub fn has_status(&self) -> bool {
        self.subresource("status").is_some()
    }

    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// The store key prefix of this resource in `namespace` (all namespaces when `None`),
    /// laid out as Kubernetes lays out etcd: `/registry/<plural>/<namespace>/<name>`.
    pub fn key_prefix(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("/registry/{}/{}/", self.plural, ns),
            None => format!("/registry/{}/", self.plural),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{}", self.key_prefix(namespace), name)
    }
}

/// `v1` for the core group, `<group>/<version>` otherwise.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() { version.to_string() } else { format!("{group}/{version}") }
}

/// Finds a resource by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by its `apiVersion` and `kind`, as written in a manifest.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.api_version() == api_version && r.kind == kind)
}

/// Finds a resource by its kind alone (kinds are unique among what we serve).
pub fn by_kind(kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES.iter().find(|r| r.kind == kind)
}

/// The resources served at one group/version.
pub fn in_group_version<'a>(group: &'a str, version: &'a str) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
    RESOURCES.iter().filter(move |r| r.group == group && r.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_subresource_marks_kinds_with_separate_status() {
        assert!(lookup("", "v1", "pods").unwrap().has_status());
        assert!(!lookup("", "v1", "configmaps").unwrap().has_status());
        assert!(lookup("apps", "v1", "deployments").unwrap().subresource("scale").is_some());
    }

    #[test]
    fn keys_follow_the_kubernetes_etcd_layout() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "web"), "/registry/pods/default/web");
        let nodes = lookup("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/registry/nodes/n1");
        assert_eq!(lookup_kind("apps/v1", "Deployment").unwrap().plural, "deployments");
    }
}
