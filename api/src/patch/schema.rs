//! How each list of the served kinds merges: the patch merge keys and
//! strategies strategic merge patch needs, and the list types and keys
//! server-side apply needs.
//!
//! k8s-openapi's generated schemas (including the `schemars` ones) do not
//! carry `x-kubernetes-patch-merge-key`, `x-kubernetes-patch-strategy`,
//! `x-kubernetes-list-type` or `x-kubernetes-list-map-keys`, so this is one
//! hand-written table, transcribed from the `+patchMergeKey`,
//! `+patchStrategy`, `+listType`, `+listMapKey`, `+mapType` and `+structType`
//! markers in Kubernetes' `core/v1`, `apps/v1`, `coordination/v1` and
//! `meta/v1` types. Only fields whose behaviour differs from the default are
//! listed: by default a map merges key by key and a list is atomic (replaced
//! whole by strategic merge, owned as a unit by server-side apply). Kinds not
//! listed here (and fields of types not modelled) get exactly that default.

use serde_json::Value;

/// A type in the table: where in an object a value sits, which decides how
/// its fields merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// Not modelled: maps merge key by key, lists are atomic.
    Any,
    /// A struct or map replaced and owned as a whole (`+structType=atomic`,
    /// `+mapType=atomic`), e.g. label selectors and object references.
    Atomic,
    /// Any top-level object: only `metadata` is known.
    Object,
    ObjectMeta,
    Pod,
    PodTemplateSpec,
    PodSpec,
    Container,
    EnvVar,
    EnvVarSource,
    ResourceRequirements,
    Affinity,
    NodeAffinity,
    TopologySpreadConstraint,
    PodStatus,
    Service,
    ServiceSpec,
    /// Status with only `conditions` keyed by `type` (ReplicationController,
    /// ReplicaSet, Deployment, Namespace, Service).
    ConditionsStatus,
    ReplicationController,
    ReplicationControllerSpec,
    ReplicaSet,
    ReplicaSetSpec,
    Deployment,
    Node,
    NodeSpec,
    NodeStatus,
    Namespace,
    Event,
}

/// How a list merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum List {
    /// Replaced whole.
    Atomic,
    /// Scalars merged as a set (strategic `merge` on a primitive list;
    /// `+listType=set`).
    Set,
    /// Maps identified by these key fields. Strategic merge uses the first
    /// (the `patchMergeKey`); server-side apply uses all (`listMapKey`s).
    Map(&'static [&'static str]),
}

/// What the table knows about one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    /// The type of the value, or of each item when the value is a list.
    pub ty: Ty,
    /// Strategic merge patch strategy, for lists.
    pub smp: List,
    /// Server-side apply list type, for lists.
    pub ssa: List,
}

impl Field {
    pub(crate) const fn of(ty: Ty) -> Self {
        Self { ty, smp: List::Atomic, ssa: List::Atomic }
    }

    const fn keyed(ty: Ty, keys: &'static [&'static str]) -> Self {
        Self { ty, smp: List::Map(keys), ssa: List::Map(keys) }
    }

    const SET: Self = Self { ty: Ty::Any, smp: List::Set, ssa: List::Set };

    /// The field for a top-level object of `kind`.
    pub(crate) fn root(kind: &str) -> Self {
        Self::of(match kind {
            "Pod" => Ty::Pod,
            "Service" => Ty::Service,
            "ReplicationController" => Ty::ReplicationController,
            "ReplicaSet" => Ty::ReplicaSet,
            "Deployment" => Ty::Deployment,
            "Node" => Ty::Node,
            "Namespace" => Ty::Namespace,
            "Event" => Ty::Event,
            _ => Ty::Object,
        })
    }
}

const NAME: &[&str] = &["name"];
const TYPE: &[&str] = &["type"];
const IP: &[&str] = &["ip"];

/// The field `name` of a value of type `ty`.
pub(crate) fn field(ty: Ty, name: &str) -> Field {
    use Ty::*;
    match (ty, name) {
        (Atomic, _) => Field::of(Atomic),
        (
            Object | Pod | Service | ReplicationController | ReplicaSet | Deployment | Node | Namespace | Event | PodTemplateSpec,
            "metadata",
        ) => Field::of(ObjectMeta),
        (ObjectMeta, "finalizers") => Field::SET,
        (ObjectMeta, "ownerReferences") => Field::keyed(Atomic, &["uid"]),

        (Pod | PodTemplateSpec, "spec") => Field::of(PodSpec),
        (Pod, "status") => Field::of(PodStatus),
        (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => Field::keyed(Container, NAME),
        (PodSpec, "volumes" | "schedulingGates" | "resourceClaims") => Field::keyed(Any, NAME),
        (PodSpec, "imagePullSecrets") => Field::keyed(Atomic, NAME),
        (PodSpec, "hostAliases") => Field::keyed(Any, IP),
        (PodSpec, "topologySpreadConstraints") => {
            Field { ty: TopologySpreadConstraint, smp: List::Map(&["topologyKey"]), ssa: List::Map(&["topologyKey", "whenUnsatisfiable"]) }
        }
        (PodSpec, "nodeSelector") => Field::of(Atomic),
        (PodSpec, "affinity") => Field::of(Affinity),
        (Affinity, "nodeAffinity") => Field::of(NodeAffinity),
        (NodeAffinity, "requiredDuringSchedulingIgnoredDuringExecution") => Field::of(Atomic),
        (TopologySpreadConstraint, "labelSelector") => Field::of(Atomic),
        (Container, "ports") => Field { ty: Any, smp: List::Map(&["containerPort"]), ssa: List::Map(&["containerPort", "protocol"]) },
        (Container, "env") => Field::keyed(EnvVar, NAME),
        (Container, "volumeMounts") => Field::keyed(Any, &["mountPath"]),
        (Container, "volumeDevices") => Field::keyed(Any, &["devicePath"]),
        (Container, "resources") => Field::of(ResourceRequirements),
        (ResourceRequirements, "claims") => Field { ty: Any, smp: List::Atomic, ssa: List::Map(NAME) },
        (EnvVar, "valueFrom") => Field::of(EnvVarSource),
        (EnvVarSource, "fieldRef" | "resourceFieldRef" | "configMapKeyRef" | "secretKeyRef" | "fileKeyRef") => Field::of(Atomic),
        (PodStatus, "conditions") => Field::keyed(Any, TYPE),
        (PodStatus, "podIPs") => Field::keyed(Any, IP),
        (PodStatus, "hostIPs") => Field { ty: Any, smp: List::Map(IP), ssa: List::Atomic },
        (PodStatus, "resourceClaimStatuses") => Field::keyed(Any, NAME),

        (Service, "spec") => Field::of(ServiceSpec),
        (Service | ReplicationController | ReplicaSet | Deployment | Namespace, "status") => Field::of(ConditionsStatus),
        (ServiceSpec, "ports") => Field { ty: Any, smp: List::Map(&["port"]), ssa: List::Map(&["port", "protocol"]) },
        (ServiceSpec, "selector") => Field::of(Atomic),
        (ConditionsStatus, "conditions") => Field::keyed(Any, TYPE),

        (ReplicationController, "spec") => Field::of(ReplicationControllerSpec),
        (ReplicationControllerSpec, "selector") => Field::of(Atomic),
        (ReplicaSet | Deployment, "spec") => Field::of(ReplicaSetSpec),
        (ReplicaSetSpec, "selector") => Field::of(Atomic),
        (ReplicationControllerSpec | ReplicaSetSpec, "template") => Field::of(PodTemplateSpec),

        (Node, "spec") => Field::of(NodeSpec),
        (Node, "status") => Field::of(NodeStatus),
        (NodeSpec, "podCIDRs") => Field::SET,
        (NodeStatus, "conditions" | "addresses") => Field::keyed(Any, TYPE),

        (Event, "involvedObject" | "related") => Field::of(Atomic),
        _ => Field::of(Any),
    }
}

/// The value Kubernetes defaults a missing list-map key field to, so an
/// applied `ports: [{containerPort: 80}]` identifies the live
/// `{containerPort: 80, protocol: TCP}` item.
pub(crate) fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// The object an empty Go struct of `kind` serializes to: non-pointer struct
/// fields exist (empty) and slices without `omitempty` are null even when
/// unset. Field tracking for a create
/// compares against it, so those fields are never recorded as added wholesale
/// (no `.` entry for `f:spec`), as in Kubernetes.
pub(crate) fn skeleton(kind: &str) -> Value {
    use serde_json::json;
    match kind {
        "Pod" => json!({"metadata": {}, "spec": {"containers": null}, "status": {}}),
        "Namespace" => json!({"metadata": {}, "spec": {}, "status": {}}),
        "Service" => json!({"metadata": {}, "spec": {}, "status": {"loadBalancer": {}}}),
        "ReplicationController" => json!({"metadata": {}, "spec": {}, "status": {}}),
        "ReplicaSet" => json!({"metadata": {}, "spec": {"template": {"metadata": {}, "spec": {"containers": null}}}, "status": {}}),
        "Deployment" => {
            json!({"metadata": {}, "spec": {"template": {"metadata": {}, "spec": {"containers": null}}, "strategy": {}}, "status": {}})
        }
        "Node" => json!({"metadata": {}, "spec": {}, "status": {"daemonEndpoints": {"kubeletEndpoint": {}}, "nodeInfo": {}}}),
        "Event" => json!({"metadata": {}, "involvedObject": {}, "source": {}}),
        "Lease" => json!({"metadata": {}, "spec": {}}),
        _ => json!({"metadata": {}}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_template_spec_reaches_containers_in_every_workload() {
        for kind in ["ReplicationController", "ReplicaSet", "Deployment"] {
            let spec = field(Field::root(kind).ty, "spec").ty;
            let template = field(spec, "template").ty;
            let pod_spec = field(template, "spec").ty;
            assert_eq!(field(pod_spec, "containers"), Field::keyed(Ty::Container, NAME), "{kind}");
        }
    }

    #[test]
    fn lists_without_markers_are_atomic() {
        let pod_spec = field(Ty::Pod, "spec").ty;
        assert_eq!(field(pod_spec, "tolerations").smp, List::Atomic);
        assert_eq!(field(Ty::Container, "args").ssa, List::Atomic);
        assert_eq!(field(Field::root("Endpoints").ty, "subsets").smp, List::Atomic);
    }

    /// The OpenAPI documents publish merge keys from their own table
    /// (`openapi::PATCH_STRATEGIES`, keyed by schema name); strategic merge
    /// uses this one. Both transcribe the same Kubernetes markers, so every
    /// published key of a type modelled here must be the key merges use.
    #[test]
    fn published_patch_merge_keys_agree_with_the_merge_table() {
        use crate::openapi::PATCH_STRATEGIES;
        let modelled = |schema: &str| -> Option<Ty> {
            Some(match schema.rsplit('.').next()? {
                "ObjectMeta" => Ty::ObjectMeta,
                "PodSpec" => Ty::PodSpec,
                "Container" => Ty::Container,
                "PodStatus" => Ty::PodStatus,
                "ServiceSpec" => Ty::ServiceSpec,
                "NodeSpec" => Ty::NodeSpec,
                "NodeStatus" => Ty::NodeStatus,
                "ReplicationControllerStatus" | "ReplicaSetStatus" | "DeploymentStatus" | "NamespaceStatus" | "ServiceStatus" => {
                    Ty::ConditionsStatus
                }
                _ => return None,
            })
        };
        let mut checked = 0;
        for entry in PATCH_STRATEGIES.iter().filter(|e| e.strategy.split(',').any(|s| s == "merge")) {
            let Some(ty) = modelled(entry.schema) else { continue };
            let smp = field(ty, entry.field).smp;
            match entry.merge_key {
                Some(key) => assert!(
                    matches!(smp, List::Map(keys) if keys.first() == Some(&key)),
                    "{}.{} is published with merge key {key:?} but merges as {smp:?}",
                    entry.schema,
                    entry.field
                ),
                None => assert_eq!(smp, List::Set, "{}.{} is a merged primitive list", entry.schema, entry.field),
            }
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} entries cross-checked: the type mapping above has gone stale");
    }
}
