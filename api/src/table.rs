//! Server-side `Table` output (`meta.k8s.io/v1`): what `kubectl get` prints.
//!
//! kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and
//! prints whatever columns the server sends, so the columns and cell values
//! here follow the Kubernetes printers (`pkg/printers/internalversion`) for
//! each kind we serve. Like the Kubernetes API server, every row carries the
//! wide (`-o wide`) cells too; kubectl hides the columns with `priority: 1`
//! unless asked for wide output.
//!
//! Objects are read as JSON rather than decoded into k8s-openapi types so a
//! field that fails to decode cannot fail the whole listing; a missing field
//! reads as Go's zero value, which is what the Kubernetes printers see.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::resources::ResourceInfo;

/// What each row's `object` carries, from the `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object: the row has only cells.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default).
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter. Absent or empty means
    /// `Metadata`, as in Kubernetes; values are case-sensitive.
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        match s {
            None | Some("") | Some("Metadata") => Ok(Self::Metadata),
            Some("None") => Ok(Self::None),
            Some("Object") => Ok(Self::Object),
            Some(other) => Err(format!("unrecognized includeObject value: {other:?}")),
        }
    }
}

/// A Table for `objects` (full JSON objects of kind `info.kind`, as stored).
///
/// `list_resource_version` and `continue_token` go to the Table's `metadata`;
/// `now` is the reference for the AGE-like columns.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    list_resource_version: Option<&str>,
    continue_token: Option<&str>,
    include: IncludeObject,
    now: Timestamp,
) -> Value {
    let printer = printer_for(info);
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            let (cells, conditions) = (printer.cells)(obj, now);
            row.insert("cells".into(), Value::Array(cells));
            if !conditions.is_empty() {
                row.insert("conditions".into(), Value::Array(conditions));
            }
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
                    row.insert(
                        "object".into(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": metadata,
                        }),
                    );
                }
                IncludeObject::Object => {
                    row.insert("object".into(), obj.clone());
                }
            }
            Value::Object(row)
        })
        .collect();

    let mut metadata = Map::new();
    if let Some(rv) = list_resource_version {
        metadata.insert("resourceVersion".into(), rv.into());
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), token.into());
    }

    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": column_definitions(printer.key),
        "rows": rows,
    })
}

/// Kubernetes' `duration.HumanDuration`: a short, approximate rendering of a
/// duration (about two significant figures), as kubectl shows ages.
pub fn human_duration(d: jiff::SignedDuration) -> String {
    // Go works in whole nanoseconds of an i64; saturate like time.Sub does.
    let nanos = i64::try_from(d.as_nanos()).unwrap_or(if d.is_negative() { i64::MIN } else { i64::MAX });
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;

    // Up to two seconds in the future counts as "now": clocks of different
    // machines disagree a little.
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{}h", hours / 24, h)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{}d", hours / 24 / 365, dy)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

// ---------------------------------------------------------------------------
// Column definitions

/// Which printer renders a kind; kinds without one get Kubernetes' default
/// table (Name, Created At).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PrinterKey {
    Pod,
    Service,
    Endpoints,
    ReplicationController,
    ReplicaSet,
    Deployment,
    Node,
    Namespace,
    Event,
    ConfigMap,
    Secret,
    Lease,
    EndpointSlice,
    Default,
}

type CellsFn = fn(&Value, Timestamp) -> (Vec<Value>, Vec<Value>);

struct Printer {
    key: PrinterKey,
    cells: CellsFn,
}

fn printer_for(info: &ResourceInfo) -> Printer {
    let (key, cells): (PrinterKey, CellsFn) = match (info.group, info.kind) {
        ("", "Pod") => (PrinterKey::Pod, pod_cells),
        ("", "Service") => (PrinterKey::Service, service_cells),
        ("", "Endpoints") => (PrinterKey::Endpoints, endpoints_cells),
        ("", "ReplicationController") => (PrinterKey::ReplicationController, replication_controller_cells),
        ("apps", "ReplicaSet") => (PrinterKey::ReplicaSet, replica_set_cells),
        ("apps", "Deployment") => (PrinterKey::Deployment, deployment_cells),
        ("", "Node") => (PrinterKey::Node, node_cells),
        ("", "Namespace") => (PrinterKey::Namespace, namespace_cells),
        ("", "Event") => (PrinterKey::Event, event_cells),
        ("", "ConfigMap") => (PrinterKey::ConfigMap, config_map_cells),
        ("", "Secret") => (PrinterKey::Secret, secret_cells),
        ("coordination.k8s.io", "Lease") => (PrinterKey::Lease, lease_cells),
        ("discovery.k8s.io", "EndpointSlice") => (PrinterKey::EndpointSlice, endpoint_slice_cells),
        _ => (PrinterKey::Default, default_cells),
    };
    Printer { key, cells }
}

/// One column: (name, type, format, priority, description source).
struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: u8,
    doc: Doc,
}

/// Where a column's description comes from. Kubernetes takes most of them
/// from the API types' documentation (`SwaggerDoc()`), which is the same text
/// as the OpenAPI descriptions k8s-openapi carries, so we read them there.
enum Doc {
    Text(&'static str),
    /// (schema name, property)
    Field(&'static str, &'static str),
}

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

fn col(name: &'static str, ty: &'static str, doc: Doc) -> Col {
    Col { name, ty, format: "", priority: 0, doc }
}
fn wide(name: &'static str, ty: &'static str, doc: Doc) -> Col {
    Col { name, ty, format: "", priority: 1, doc }
}
fn name_col() -> Col {
    Col { name: "Name", ty: "string", format: "name", priority: 0, doc: Doc::Field(META, "name") }
}
fn age_col() -> Col {
    col("Age", "string", Doc::Field(META, "creationTimestamp"))
}

fn columns(key: PrinterKey) -> Vec<Col> {
    use Doc::{Field, Text};
    const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
    const POD_STATUS: &str = "io.k8s.api.core.v1.PodStatus";
    const SVC_SPEC: &str = "io.k8s.api.core.v1.ServiceSpec";
    const NODE_INFO: &str = "io.k8s.api.core.v1.NodeSystemInfo";
    const NODE_STATUS: &str = "io.k8s.api.core.v1.NodeStatus";
    const EVENT: &str = "io.k8s.api.core.v1.Event";
    match key {
        PrinterKey::Pod => vec![
            name_col(),
            col("Ready", "string", Text("The aggregate readiness state of this pod for accepting traffic.")),
            col("Status", "string", Text("The aggregate status of the containers in this pod.")),
            col(
                "Restarts",
                "string",
                Text(
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                ),
            ),
            age_col(),
            wide("IP", "string", Field(POD_STATUS, "podIP")),
            wide("Node", "string", Field(POD_SPEC, "nodeName")),
            wide("Nominated Node", "string", Field(POD_STATUS, "nominatedNodeName")),
            wide("Readiness Gates", "string", Field(POD_SPEC, "readinessGates")),
        ],
        PrinterKey::Service => vec![
            name_col(),
            col("Type", "string", Field(SVC_SPEC, "type")),
            col("Cluster-IP", "string", Field(SVC_SPEC, "clusterIP")),
            col("External-IP", "string", Field(SVC_SPEC, "externalIPs")),
            col("Port(s)", "string", Field(SVC_SPEC, "ports")),
            age_col(),
            wide("Selector", "string", Field(SVC_SPEC, "selector")),
        ],
        PrinterKey::Endpoints => {
            vec![name_col(), col("Endpoints", "string", Field("io.k8s.api.core.v1.Endpoints", "subsets")), age_col()]
        }
        PrinterKey::ReplicationController => {
            replicas_columns("io.k8s.api.core.v1.ReplicationControllerSpec", "io.k8s.api.core.v1.ReplicationControllerStatus")
        }
        PrinterKey::ReplicaSet => replicas_columns("io.k8s.api.apps.v1.ReplicaSetSpec", "io.k8s.api.apps.v1.ReplicaSetStatus"),
        PrinterKey::Deployment => vec![
            name_col(),
            col("Ready", "string", Text("Number of the pod with ready state")),
            col("Up-to-date", "string", Field("io.k8s.api.apps.v1.DeploymentStatus", "updatedReplicas")),
            col("Available", "string", Field("io.k8s.api.apps.v1.DeploymentStatus", "availableReplicas")),
            age_col(),
            wide("Containers", "string", Text(CONTAINERS_DOC)),
            wide("Images", "string", Text(IMAGES_DOC)),
            wide("Selector", "string", Field("io.k8s.api.apps.v1.DeploymentSpec", "selector")),
        ],
        PrinterKey::Node => vec![
            name_col(),
            col("Status", "string", Text("The status of the node")),
            col("Roles", "string", Text("The roles of the node")),
            age_col(),
            col("Version", "string", Field(NODE_INFO, "kubeletVersion")),
            wide("Internal-IP", "string", Field(NODE_STATUS, "addresses")),
            wide("External-IP", "string", Field(NODE_STATUS, "addresses")),
            wide("OS-Image", "string", Field(NODE_INFO, "osImage")),
            wide("Kernel-Version", "string", Field(NODE_INFO, "kernelVersion")),
            wide("Container-Runtime", "string", Field(NODE_INFO, "containerRuntimeVersion")),
        ],
        PrinterKey::Namespace => {
            vec![name_col(), col("Status", "string", Text("The status of the namespace")), age_col()]
        }
        PrinterKey::Event => vec![
            col("Last Seen", "string", Field(EVENT, "lastTimestamp")),
            col("Type", "string", Field(EVENT, "type")),
            col("Reason", "string", Field(EVENT, "reason")),
            col("Object", "string", Field(EVENT, "involvedObject")),
            wide("Subobject", "string", Field("io.k8s.api.core.v1.ObjectReference", "fieldPath")),
            wide("Source", "string", Field(EVENT, "source")),
            col("Message", "string", Field(EVENT, "message")),
            wide("First Seen", "string", Field(EVENT, "firstTimestamp")),
            wide("Count", "string", Field(EVENT, "count")),
            Col { name: "Name", ty: "string", format: "name", priority: 1, doc: Field(META, "name") },
        ],
        PrinterKey::ConfigMap => {
            vec![name_col(), col("Data", "string", Field("io.k8s.api.core.v1.ConfigMap", "data")), age_col()]
        }
        PrinterKey::Secret => vec![
            name_col(),
            col("Type", "string", Field("io.k8s.api.core.v1.Secret", "type")),
            col("Data", "string", Field("io.k8s.api.core.v1.Secret", "data")),
            age_col(),
        ],
        PrinterKey::Lease => {
            vec![name_col(), col("Holder", "string", Field("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity")), age_col()]
        }
        PrinterKey::EndpointSlice => {
            const SLICE: &str = "io.k8s.api.discovery.v1.EndpointSlice";
            vec![
                name_col(),
                col("AddressType", "string", Field(SLICE, "addressType")),
                col("Ports", "string", Field(SLICE, "ports")),
                col("Endpoints", "string", Field(SLICE, "endpoints")),
                age_col(),
            ]
        }
        // Kubernetes' default table convertor, for kinds without a printer.
        PrinterKey::Default => vec![name_col(), col("Created At", "date", Field(META, "creationTimestamp"))],
    }
}

fn replicas_columns(spec: &'static str, status: &'static str) -> Vec<Col> {
    use Doc::{Field, Text};
    vec![
        name_col(),
        col("Desired", "integer", Field(spec, "replicas")),
        col("Current", "integer", Field(status, "replicas")),
        col("Ready", "integer", Field(status, "readyReplicas")),
        age_col(),
        wide("Containers", "string", Text(CONTAINERS_DOC)),
        wide("Images", "string", Text(IMAGES_DOC)),
        wide("Selector", "string", Field(spec, "selector")),
    ]
}

const ALL_KEYS: &[PrinterKey] = &[
    PrinterKey::Pod,
    PrinterKey::Service,
    PrinterKey::Endpoints,
    PrinterKey::ReplicationController,
    PrinterKey::ReplicaSet,
    PrinterKey::Deployment,
    PrinterKey::Node,
    PrinterKey::Namespace,
    PrinterKey::Event,
    PrinterKey::ConfigMap,
    PrinterKey::Secret,
    PrinterKey::Lease,
    PrinterKey::EndpointSlice,
    PrinterKey::Default,
];

/// The JSON column definitions of a printer, built once: reading the
/// descriptions means generating the schemas of the whole type tree.
fn column_definitions(key: PrinterKey) -> Value {
    static DEFS: OnceLock<BTreeMap<PrinterKey, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        let schemas = type_docs();
        ALL_KEYS
            .iter()
            .map(|&key| {
                let cols: Vec<Value> = columns(key)
                    .into_iter()
                    .map(|c| {
                        let description = match c.doc {
                            Doc::Text(t) => t.to_string(),
                            Doc::Field(schema, field) => schemas
                                .get(schema)
                                .and_then(|s| s.pointer(&format!("/properties/{field}/description")))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                        };
                        json!({
                            "name": c.name,
                            "type": c.ty,
                            "format": c.format,
                            "description": description,
                            "priority": c.priority,
                        })
                    })
                    .collect();
                (key, Value::Array(cols))
            })
            .collect()
    })
    .get(&key)
    .cloned()
    .unwrap_or_else(|| json!([]))
}

/// The k8s-openapi schemas of every type a column description comes from,
/// keyed by their Kubernetes names.
fn type_docs() -> Map<String, Value> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery};
    let mut generator = schemars::SchemaGenerator::default();
    generator.subschema_for::<core::Pod>();
    generator.subschema_for::<core::Service>();
    generator.subschema_for::<core::Endpoints>();
    generator.subschema_for::<core::ReplicationController>();
    generator.subschema_for::<apps::ReplicaSet>();
    generator.subschema_for::<apps::Deployment>();
    generator.subschema_for::<core::Node>();
    generator.subschema_for::<core::Event>();
    generator.subschema_for::<core::ConfigMap>();
    generator.subschema_for::<core::Secret>();
    generator.subschema_for::<coordination::Lease>();
    generator.subschema_for::<discovery::EndpointSlice>();
    generator.take_definitions(false)
}

// ---------------------------------------------------------------------------
// Reading JSON objects with Go zero-value semantics

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(key))
}
fn string<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}
fn int(v: &Value, path: &[&str]) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}
fn boolean(v: &Value, path: &[&str]) -> bool {
    at(v, path).and_then(Value::as_bool).unwrap_or(false)
}
fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}
fn object<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Map<String, Value>> {
    at(v, path).and_then(Value::as_object)
}
fn name(obj: &Value) -> Value {
    string(obj, &["metadata", "name"]).into()
}

/// A timestamp field; absent, empty or unparseable reads as Go's zero time.
fn timestamp(v: &Value, path: &[&str]) -> Option<Timestamp> {
    at(v, path).and_then(Value::as_str).and_then(|s| s.parse().ok())
}

/// Kubernetes' `translateTimestampSince`.
fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        None => "<unknown>".into(),
        Some(t) => human_duration(now.duration_since(t)),
    }
}

fn age(obj: &Value, now: Timestamp) -> Value {
    since(timestamp(obj, &["metadata", "creationTimestamp"]), now).into()
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, `<none>` when empty.
fn format_labels(labels: Option<&Map<String, Value>>) -> String {
    let sorted: BTreeMap<&str, &str> = labels.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or(""))).collect();
    let s = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    if s.is_empty() { "<none>".into() } else { s }
}

/// A `metav1.LabelSelector` rendered as `labels.Selector.String()` does:
/// requirements sorted by key, `in`/`notin` values sorted. `Err` when the
/// selector cannot be converted (an unknown operator).
fn label_selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    for (k, v) in object(selector, &["matchLabels"]).into_iter().flatten() {
        requirements.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
    }
    for expr in list(selector, &["matchExpressions"]) {
        let key = string(expr, &["key"]);
        let mut values: Vec<&str> = list(expr, &["values"]).iter().filter_map(Value::as_str).collect();
        values.sort_unstable();
        let rendered = match string(expr, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_string(), rendered));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` for an empty selector, `<error>`
/// for one that does not convert.
fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_string(selector) {
        Err(()) => "<error>".into(),
        Ok(s) if s.is_empty() => "<none>".into(),
        Ok(s) => s,
    }
}

/// Container names and images joined by commas (`layoutContainerCells`).
fn container_cells(containers: &[Value]) -> (Value, Value) {
    let names: Vec<&str> = containers.iter().map(|c| string(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| string(c, &["image"])).collect();
    (names.join(",").into(), images.join(",").into())
}

// ---------------------------------------------------------------------------
// Printers: each returns (cells, row conditions)

fn default_cells(obj: &Value, _now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    // The default convertor prints the creation time itself, not an age.
    let created = at(obj, &["metadata", "creationTimestamp"]).cloned().unwrap_or(Value::Null);
    (vec![name(obj), created], vec![])
}

fn is_restartable_init_container(container: Option<&Value>) -> bool {
    container.is_some_and(|c| string(c, &["restartPolicy"]) == "Always")
}

fn pod_cells(pod: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    let containers = list(pod, &["spec", "containers"]);
    let init_containers = list(pod, &["spec", "initContainers"]);
    let mut total_containers = containers.len();
    let mut ready_containers = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = string(pod, &["status", "phase"]);
    let mut reason = phase.to_string();
    let status_reason = string(pod, &["status", "reason"]);
    if !status_reason.is_empty() {
        reason = status_reason.to_string();
    }
    let conditions = list(pod, &["status", "conditions"]);
    if conditions.iter().any(|c| string(c, &["type"]) == "PodScheduled" && string(c, &["reason"]) == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }

    let row_conditions = match phase {
        "Succeeded" => vec![json!({
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        })],
        "Failed" => vec![json!({
            "type": "Completed",
            "status": "True",
            "reason": "Failed",
            "message": "The pod failed.",
        })],
        _ => vec![],
    };

    let init_by_name: BTreeMap<&str, &Value> = init_containers.iter().map(|c| (string(c, &["name"]), c)).collect();
    // Sidecars (init containers that keep running) count as containers.
    total_containers += init_containers.iter().filter(|c| is_restartable_init_container(Some(c))).count();

    let later = |current: Option<Timestamp>, candidate: Option<Timestamp>| match (current, candidate) {
        (Some(a), Some(b)) if b > a => Some(b),
        (None, b) => b,
        (a, _) => a,
    };

    let init_statuses = list(pod, &["status", "initContainerStatuses"]);
    let mut initializing = false;
    for (i, container) in init_statuses.iter().enumerate() {
        let restart_count = int(container, &["restartCount"]);
        restarts += restart_count;
        let finished = timestamp(container, &["lastState", "terminated", "finishedAt"]);
        if at(container, &["lastState", "terminated"]).is_some() {
            last_restart = later(last_restart, finished);
        }
        let restartable = is_restartable_init_container(init_by_name.get(string(container, &["name"])).copied());
        if restartable {
            restartable_init_restarts += restart_count;
            if at(container, &["lastState", "terminated"]).is_some() {
                last_restartable_init_restart = later(last_restartable_init_restart, finished);
            }
        }
        let terminated = at(container, &["state", "terminated"]);
        let waiting_reason = string(container, &["state", "waiting", "reason"]);
        if terminated.is_some_and(|t| int(t, &["exitCode"]) == 0) {
            continue;
        } else if restartable && boolean(container, &["started"]) {
            if boolean(container, &["ready"]) {
                ready_containers += 1;
            }
            continue;
        } else if let Some(t) = terminated {
            let r = string(t, &["reason"]);
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if int(t, &["signal"]) != 0 {
                format!("Init:Signal:{}", int(t, &["signal"]))
            } else {
                format!("Init:ExitCode:{}", int(t, &["exitCode"]))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", init_containers.len());
        }
        initializing = true;
        break;
    }

    let initialized = conditions.iter().any(|c| string(c, &["type"]) == "Initialized" && string(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        // Backwards, so the first container's reason wins, as in Kubernetes.
        for container in list(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int(container, &["restartCount"]);
            if at(container, &["lastState", "terminated"]).is_some() {
                last_restart = later(last_restart, timestamp(container, &["lastState", "terminated", "finishedAt"]));
            }
            let waiting_reason = string(container, &["state", "waiting", "reason"]);
            let terminated = at(container, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let r = string(t, &["reason"]);
                reason = if !r.is_empty() {
                    r.to_string()
                } else if int(t, &["signal"]) != 0 {
                    format!("Signal:{}", int(t, &["signal"]))
                } else {
                    format!("ExitCode:{}", int(t, &["exitCode"]))
                };
            } else if boolean(container, &["ready"]) && at(container, &["state", "running"]).is_some() {
                has_running = true;
                ready_containers += 1;
            }
        }
        // A pod with a container still running is not "Completed".
        if reason == "Completed" && has_running {
            let ready = conditions.iter().any(|c| string(c, &["type"]) == "Ready" && string(c, &["status"]) == "True");
            reason = if ready { "Running" } else { "NotReady" }.into();
        }
    }

    let deleting = at(pod, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null());
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };

    let pod_ip = list(pod, &["status", "podIPs"]).first().map(|ip| string(ip, &["ip"])).unwrap_or("");
    let or_none = |s: &str| if s.is_empty() { "<none>".to_string() } else { s.to_string() };
    let readiness_gates = list(pod, &["spec", "readinessGates"]);
    let gates = if readiness_gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = readiness_gates
            .iter()
            .filter(|gate| {
                let ty = string(gate, &["conditionType"]);
                conditions.iter().find(|c| string(c, &["type"]) == ty).is_some_and(|c| string(c, &["status"]) == "True")
            })
            .count();
        format!("{true_conditions}/{}", readiness_gates.len())
    };

    let cells = vec![
        name(pod),
        format!("{ready_containers}/{total_containers}").into(),
        reason.into(),
        restarts_cell.into(),
        age(pod, now),
        or_none(pod_ip).into(),
        or_none(string(pod, &["spec", "nodeName"])).into(),
        or_none(string(pod, &["status", "nominatedNodeName"])).into(),
        gates.into(),
    ];
    (cells, row_conditions)
}

/// Kubernetes' defaulting gives every Service a type; a stored Service
/// without one would only come from a server that skipped defaulting.
fn service_type(svc: &Value) -> &str {
    match string(svc, &["spec", "type"]) {
        "" => "ClusterIP",
        t => t,
    }
}

fn service_external_ip(svc: &Value) -> String {
    let external_ips: Vec<&str> = list(svc, &["spec", "externalIPs"]).iter().filter_map(Value::as_str).collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".into()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // The server renders the wide form: no clipping to 16 characters.
            let ingress: BTreeSet<&str> = list(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| match (string(i, &["ip"]), string(i, &["hostname"])) {
                    ("", "") => None,
                    ("", host) => Some(host),
                    (ip, _) => Some(ip),
                })
                .collect();
            let mut all: Vec<&str> = ingress.into_iter().collect();
            if all.is_empty() && external_ips.is_empty() {
                return "<pending>".into();
            }
            all.extend(external_ips);
            all.join(",")
        }
        "ExternalName" => string(svc, &["spec", "externalName"]).into(),
        _ => "<unknown>".into(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = list(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int(p, &["port"]);
            // Defaulting makes TCP explicit; see service_type.
            let protocol = match string(p, &["protocol"]) {
                "" => "TCP",
                proto => proto,
            };
            match int(p, &["nodePort"]) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    if ports.is_empty() { "<none>".into() } else { ports.join(",") }
}

fn service_cells(svc: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    let cluster_ip = list(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        // clusterIPs mirrors clusterIP once defaulted; read either.
        .or_else(|| Some(string(svc, &["spec", "clusterIP"])).filter(|ip| !ip.is_empty()))
        .unwrap_or("<none>");
    let cells = vec![
        name(svc),
        service_type(svc).into(),
        cluster_ip.into(),
        service_external_ip(svc).into(),
        service_ports(svc).into(),
        age(svc, now),
        format_labels(object(svc, &["spec", "selector"])).into(),
    ];
    (cells, vec![])
}

/// `formatEndpoints`: up to three `ip:port` pairs, then `+ N more...`.
fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 3;
    let mut shown: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0;
    for subset in subsets {
        let addresses = list(subset, &["addresses"]);
        let ports = list(subset, &["ports"]);
        if ports.is_empty() {
            // A headless service without ports lists bare addresses.
            count += addresses.len();
            for addr in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(string(addr, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for addr in addresses {
                if shown.len() == MAX {
                    more = true;
                    break;
                }
                shown.push(join_host_port(string(addr, &["ip"]), int(port, &["port"])));
            }
        }
    }
    let joined = shown.join(",");
    if more { format!("{joined} + {} more...", count - MAX) } else { joined }
}

/// `net.JoinHostPort`: IPv6 addresses get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

fn endpoints_cells(ep: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    (vec![name(ep), format_endpoints(ep).into(), age(ep, now)], vec![])
}

/// `listWithMoreString`: the first three items, then `+ N more...`;
/// `<unset>` for none.
fn list_with_more(items: impl Iterator<Item = String>) -> String {
    const MAX: usize = 3;
    let all: Vec<String> = items.collect();
    let shown = all[..all.len().min(MAX)].join(",");
    match all.len() {
        0 => "<unset>".into(),
        n if n > MAX => format!("{shown} + {} more...", n - MAX),
        _ => shown,
    }
}

/// `formatDiscoveryPorts`: each port's number, its name when it has none,
/// `*` when it has neither.
fn format_discovery_ports(slice: &Value) -> String {
    list_with_more(list(slice, &["ports"]).iter().map(|p| {
        match (at(p, &["port"]).and_then(Value::as_i64), at(p, &["name"]).and_then(Value::as_str)) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        }
    }))
}

/// `formatDiscoveryEndpoints`: every address of every endpoint, in order.
fn format_discovery_endpoints(slice: &Value) -> String {
    list_with_more(
        list(slice, &["endpoints"]).iter().flat_map(|e| list(e, &["addresses"]).iter().map(|a| a.as_str().unwrap_or("").to_string())),
    )
}

fn endpoint_slice_cells(slice: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    let cells = vec![
        name(slice),
        string(slice, &["addressType"]).into(),
        format_discovery_ports(slice).into(),
        format_discovery_endpoints(slice).into(),
        age(slice, now),
    ];
    (cells, vec![])
}

/// `spec.replicas`, which Kubernetes defaults to 1 for RCs, ReplicaSets
/// and Deployments.
fn desired_replicas(obj: &Value) -> i64 {
    at(obj, &["spec", "replicas"]).and_then(Value::as_i64).unwrap_or(1)
}

fn replication_controller_cells(rc: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    let (names, images) = container_cells(list(rc, &["spec", "template", "spec", "containers"]));
    let cells = vec![
        name(rc),
        desired_replicas(rc).into(),
        int(rc, &["status", "replicas"]).into(),
        int(rc, &["status", "readyReplicas"]).into(),
        age(rc, now),
        names,
        images,
        format_labels(object(rc, &["spec", "selector"])).into(),
    ];
    (cells, vec![])
}

fn replica_set_cells(rs: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    let (names, images) = container_cells(list(rs, &["spec", "template", "spec", "containers"]));
    let cells = vec![
        name(rs),
        desired_replicas(rs).into(),
        int(rs, &["status", "replicas"]).into(),
        int(rs, &["status", "readyReplicas"]).into(),
        age(rs, now),
        names,
        images,
        format_label_selector(at(rs, &["spec", "selector"])).into(),
    ];
    (cells, vec![])
}

fn deployment_cells(deploy: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    let (names, images) = container_cells(list(deploy, &["spec", "template", "spec", "containers"]));
    // The Deployment printer shows the selector as is: empty, not <none>.
    let selector = label_selector_string(at(deploy, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".into());
    let cells = vec![
        name(deploy),
        format!("{}/{}", int(deploy, &["status", "readyReplicas"]), desired_replicas(deploy)).into(),
        int(deploy, &["status", "updatedReplicas"]).into(),
        int(deploy, &["status", "availableReplicas"]).into(),
        age(deploy, now),
        names,
        images,
        selector.into(),
    ];
    (cells, vec![])
}

fn node_cells(node: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    // Only the Ready condition shows; the last one of that type wins.
    let ready = list(node, &["status", "conditions"]).iter().rfind(|c| string(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if string(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if boolean(node, &["spec", "unschedulable"]) {
        status.push("SchedulingDisabled");
    }

    let mut roles = BTreeSet::new();
    for (key, value) in object(node, &["metadata", "labels"]).into_iter().flatten() {
        if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        } else if key == "kubernetes.io/role" {
            let role = value.as_str().unwrap_or("");
            if !role.is_empty() {
                roles.insert(role.to_string());
            }
        }
    }
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.into_iter().collect::<Vec<_>>().join(",") };

    let address = |ty: &str| {
        list(node, &["status", "addresses"])
            .iter()
            .find(|a| string(a, &["type"]) == ty)
            .map(|a| string(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let info = |field: &str| match string(node, &["status", "nodeInfo", field]) {
        "" => "<unknown>".to_string(),
        v => v.to_string(),
    };
    let cells = vec![
        name(node),
        status.join(",").into(),
        roles.into(),
        age(node, now),
        string(node, &["status", "nodeInfo", "kubeletVersion"]).into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ];
    (cells, vec![])
}

fn namespace_cells(ns: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    (vec![name(ns), string(ns, &["status", "phase"]).into(), age(ns, now)], vec![])
}

fn event_cells(ev: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    // Events from the events.k8s.io API carry eventTime and series instead
    // of first/last timestamps and count.
    let first_seen = match timestamp(ev, &["firstTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => since(timestamp(ev, &["eventTime"]), now),
    };
    let mut last_seen = match timestamp(ev, &["lastTimestamp"]) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int(ev, &["count"]);
    if at(ev, &["series"]).is_some_and(|s| !s.is_null()) {
        last_seen = since(timestamp(ev, &["series", "lastObservedTime"]), now);
        count = int(ev, &["series", "count"]);
    } else if count == 0 {
        count = 1;
    }

    let kind = string(ev, &["involvedObject", "kind"]).to_lowercase();
    let involved_name = string(ev, &["involvedObject", "name"]);
    let target = if involved_name.is_empty() { kind } else { format!("{kind}/{involved_name}") };

    let first_non_empty = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { a.to_string() };
    let component = first_non_empty(string(ev, &["source", "component"]), string(ev, &["reportingComponent"]));
    let instance = first_non_empty(string(ev, &["source", "host"]), string(ev, &["reportingInstance"]));
    let source = if instance.is_empty() { component } else { format!("{component}, {instance}") };

    let cells = vec![
        last_seen.into(),
        string(ev, &["type"]).into(),
        string(ev, &["reason"]).into(),
        target.into(),
        string(ev, &["involvedObject", "fieldPath"]).into(),
        source.into(),
        string(ev, &["message"]).trim().into(),
        first_seen.into(),
        count.into(),
        name(ev),
    ];
    (cells, vec![])
}

fn config_map_cells(cm: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    let entries = object(cm, &["data"]).map_or(0, Map::len) + object(cm, &["binaryData"]).map_or(0, Map::len);
    (vec![name(cm), (entries as i64).into(), age(cm, now)], vec![])
}

fn secret_cells(secret: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    // Kubernetes defaults an empty type to Opaque before storing.
    let ty = match string(secret, &["type"]) {
        "" => "Opaque",
        t => t,
    };
    let entries = object(secret, &["data"]).map_or(0, Map::len) as i64;
    (vec![name(secret), ty.into(), entries.into(), age(secret, now)], vec![])
}

fn lease_cells(lease: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    (vec![name(lease), string(lease, &["spec", "holderIdentity"]).into(), age(lease, now)], vec![])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{by_kind, lookup};
    use jiff::SignedDuration;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn cells(kind: &str, obj: Value) -> Vec<Value> {
        let t = table(by_kind(kind).unwrap(), &[obj], Some("42"), None, IncludeObject::Metadata, now());
        t["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn column_names(kind: &str) -> Vec<(String, i64)> {
        let t = table(by_kind(kind).unwrap(), &[], None, None, IncludeObject::None, now());
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["priority"].as_i64().unwrap()))
            .collect()
    }

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn human_duration_matches_kubernetes_rounding() {
        assert_eq!(human_duration(secs(-5)), "<invalid>");
        assert_eq!(human_duration(SignedDuration::from_millis(-1500)), "0s");
        assert_eq!(human_duration(secs(0)), "0s");
        assert_eq!(human_duration(secs(5)), "5s");
        assert_eq!(human_duration(secs(119)), "119s");
        assert_eq!(human_duration(secs(120)), "2m");
        assert_eq!(human_duration(secs(200)), "3m20s");
        assert_eq!(human_duration(secs(10 * 60 + 59)), "10m");
        assert_eq!(human_duration(secs(179 * 60)), "179m");
        assert_eq!(human_duration(secs(3 * 3600)), "3h");
        assert_eq!(human_duration(secs(3 * 3600 + 25 * 60)), "3h25m");
        assert_eq!(human_duration(secs(47 * 3600 + 59 * 60)), "47h");
        assert_eq!(human_duration(secs(2 * 86400 + 3 * 3600)), "2d3h");
        assert_eq!(human_duration(secs(7 * 86400)), "7d");
        assert_eq!(human_duration(secs(300 * 86400)), "300d");
        assert_eq!(human_duration(secs(2 * 365 * 86400 + 10 * 86400)), "2y10d");
        assert_eq!(human_duration(secs(9 * 365 * 86400)), "9y");
    }

    #[test]
    fn include_object_parses_like_kubernetes() {
        assert_eq!(IncludeObject::parse(None), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("")), Ok(IncludeObject::Metadata));
        assert_eq!(IncludeObject::parse(Some("None")), Ok(IncludeObject::None));
        assert_eq!(IncludeObject::parse(Some("Object")), Ok(IncludeObject::Object));
        assert!(IncludeObject::parse(Some("object")).unwrap_err().contains("unrecognized includeObject"));
    }

    #[test]
    fn table_envelope_carries_list_metadata_and_partial_object_metadata() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "7",
                         "creationTimestamp": "2024-05-01T11:59:55Z"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        });
        let pods = lookup("", "v1", "pods").unwrap();
        let t = table(pods, std::slice::from_ref(&pod), Some("42"), Some("tok"), IncludeObject::Metadata, now());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({"resourceVersion": "42", "continue": "tok"}));
        let row = &t["rows"][0];
        assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(row["object"]["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(row["object"]["metadata"]["uid"], "u1");
        assert!(row["object"].get("spec").is_none());

        let full = table(pods, std::slice::from_ref(&pod), None, None, IncludeObject::Object, now());
        assert_eq!(full["rows"][0]["object"], pod);
        assert_eq!(full["metadata"], json!({}));
        let bare = table(pods, std::slice::from_ref(&pod), None, None, IncludeObject::None, now());
        assert!(bare["rows"][0].get("object").is_none());
    }

    #[test]
    fn column_definitions_follow_kubernetes_printers() {
        let t = table(by_kind("Pod").unwrap(), &[], None, None, IncludeObject::None, now());
        let first = &t["columnDefinitions"][0];
        assert_eq!(first["name"], "Name");
        assert_eq!(first["format"], "name");
        assert_eq!(first["type"], "string");
        assert_eq!(first["priority"], 0);
        // Descriptions come from the API documentation, as in Kubernetes.
        assert!(first["description"].as_str().unwrap().starts_with("Name must be unique within a namespace."));
        let ip = &t["columnDefinitions"][5];
        assert_eq!(ip["name"], "IP");
        assert!(ip["description"].as_str().unwrap().contains("IP address allocated to the pod"));

        let p = |cols: &[(&str, i64)]| cols.iter().map(|(n, p)| (n.to_string(), *p)).collect::<Vec<_>>();
        assert_eq!(
            column_names("Pod"),
            p(&[
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1)
            ])
        );
        assert_eq!(
            column_names("Service"),
            p(&[("Name", 0), ("Type", 0), ("Cluster-IP", 0), ("External-IP", 0), ("Port(s)", 0), ("Age", 0), ("Selector", 1)])
        );
        assert_eq!(
            column_names("Deployment"),
            p(&[
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ])
        );
        assert_eq!(
            column_names("Event"),
            p(&[
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ])
        );
        assert_eq!(column_names("Lease"), p(&[("Name", 0), ("Holder", 0), ("Age", 0)]));
        assert_eq!(column_names("Secret"), p(&[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)]));
    }

    #[test]
    fn every_column_of_every_served_kind_has_a_description() {
        for info in crate::resources::RESOURCES {
            let t = table(info, &[], None, None, IncludeObject::None, now());
            for c in t["columnDefinitions"].as_array().unwrap() {
                assert!(!c["description"].as_str().unwrap().is_empty(), "{} column {}", info.kind, c["name"]);
            }
        }
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        for info in crate::resources::RESOURCES {
            let obj = json!({"metadata": {"name": "x"}});
            let t = table(info, &[obj], None, None, IncludeObject::None, now());
            assert_eq!(t["rows"][0]["cells"].as_array().unwrap().len(), t["columnDefinitions"].as_array().unwrap().len(), "{}", info.kind);
        }
    }

    fn running_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-7d4b9c", "namespace": "default", "creationTimestamp": "2024-05-01T11:56:40Z"},
            "spec": {"nodeName": "node-1", "containers": [
                {"name": "app", "image": "nginx:1.25"},
                {"name": "sidecar", "image": "busybox"}
            ]},
            "status": {
                "phase": "Running",
                "podIP": "10.244.0.5",
                "podIPs": [{"ip": "10.244.0.5"}],
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "app", "ready": true, "restartCount": 3, "state": {"running": {"startedAt": "2024-05-01T11:55:00Z"}},
                     "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:55:00Z"}}},
                    {"name": "sidecar", "ready": true, "restartCount": 0, "state": {"running": {}}}
                ]
            }
        })
    }

    #[test]
    fn running_pod_shows_ready_count_restarts_with_last_restart_age_and_wide_cells() {
        assert_eq!(
            cells("Pod", running_pod()),
            vec![
                json!("web-7d4b9c"),
                json!("2/2"),
                json!("Running"),
                json!("3 (5m ago)"),
                json!("3m20s"),
                json!("10.244.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_status_shows_container_waiting_reason() {
        let mut pod = running_pod();
        pod["status"]["containerStatuses"][0]["ready"] = json!(false);
        pod["status"]["containerStatuses"][0]["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}});
        let c = cells("Pod", pod);
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
    }

    #[test]
    fn pod_status_shows_terminated_reason_or_exit_code() {
        let mut pod = running_pod();
        pod["status"]["containerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 137, "signal": 0}});
        pod["status"]["containerStatuses"][1]["ready"] = json!(false);
        assert_eq!(cells("Pod", pod.clone())[2], "ExitCode:137");
        pod["status"]["containerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        // One container still runs and the pod is Ready: not "Completed".
        assert_eq!(cells("Pod", pod.clone())[2], "Running");
        pod["status"]["conditions"] = json!([{"type": "Initialized", "status": "True"}]);
        assert_eq!(cells("Pod", pod)[2], "NotReady");
    }

    #[test]
    fn pod_being_deleted_shows_terminating() {
        let mut pod = running_pod();
        pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:59Z");
        assert_eq!(cells("Pod", pod.clone())[2], "Terminating");
        pod["status"]["phase"] = json!("Succeeded");
        pod["status"]["containerStatuses"] = json!([]);
        assert_eq!(cells("Pod", pod.clone())[2], "Succeeded");
        pod["status"]["phase"] = json!("Running");
        pod["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells("Pod", pod)[2], "Unknown");
    }

    #[test]
    fn pod_with_pending_init_containers_shows_init_progress() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "c"}]},
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "i1", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "i2", "restartCount": 2, "state": {"running": {}}}
                ],
                "containerStatuses": [{"name": "c", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]
            }
        });
        let c = cells("Pod", pod.clone());
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "Init:1/2");
        // Restarts of init containers count while initializing.
        assert_eq!(c[3], "2");

        let mut failing = pod;
        failing["status"]["initContainerStatuses"][1]["state"] = json!({"waiting": {"reason": "ImagePullBackOff"}});
        assert_eq!(cells("Pod", failing.clone())[2], "Init:ImagePullBackOff");
        failing["status"]["initContainerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(cells("Pod", failing)[2], "Init:ExitCode:2");
    }

    #[test]
    fn sidecar_init_containers_count_as_containers() {
        let pod = json!({
            "metadata": {"name": "p", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "spec": {"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "c"}]},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 1, "state": {"running": {}}}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]
            }
        });
        let c = cells("Pod", pod);
        assert_eq!(c[1], "2/2");
        assert_eq!(c[2], "Running");
        assert_eq!(c[3], "1");
    }

    #[test]
    fn succeeded_pod_row_carries_completed_condition() {
        let pod = json!({"metadata": {"name": "job"}, "spec": {"containers": [{"name": "c"}]},
                         "status": {"phase": "Succeeded"}});
        let t = table(by_kind("Pod").unwrap(), &[pod], None, None, IncludeObject::None, now());
        assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");
        assert_eq!(t["rows"][0]["conditions"][0]["reason"], "Succeeded");
        assert_eq!(t["rows"][0]["cells"][4], "<unknown>");
    }

    #[test]
    fn pod_readiness_gates_count_true_conditions() {
        let mut pod = running_pod();
        pod["spec"]["readinessGates"] = json!([{"conditionType": "lb/ready"}, {"conditionType": "other"}]);
        pod["status"]["conditions"].as_array_mut().unwrap().push(json!({"type": "lb/ready", "status": "True"}));
        assert_eq!(cells("Pod", pod)[8], "1/2");
    }

    #[test]
    fn service_ports_show_node_ports_and_protocols() {
        let svc = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-04-29T09:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.12.7", "clusterIPs": ["10.96.12.7"],
                     "selector": {"app": "web", "tier": "front"},
                     "ports": [{"port": 80, "nodePort": 31234, "protocol": "TCP"}, {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}
        });
        assert_eq!(
            cells("Service", svc),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.12.7"),
                json!("<none>"),
                json!("80:31234/TCP,53:30053/UDP"),
                json!("2d3h"),
                json!("app=web,tier=front")
            ]
        );
        let headless = json!({"metadata": {"name": "db"}, "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}});
        let c = cells("Service", headless);
        assert_eq!(c[2], "None");
        assert_eq!(c[4], "<none>");
        assert_eq!(c[6], "<none>");
        let plain = json!({"metadata": {"name": "api"}, "spec": {"ports": [{"port": 443, "protocol": "TCP"}]}});
        assert_eq!(cells("Service", plain)[4], "443/TCP");
    }

    #[test]
    fn load_balancer_service_external_ip_is_pending_until_ingress() {
        let mut svc = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.20"],
                             "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        assert_eq!(cells("Service", svc.clone())[3], "<pending>");
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}});
        assert_eq!(cells("Service", svc)[3], "203.0.113.9,lb.example.com");
        let ext = json!({"metadata": {"name": "x"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(cells("Service", ext)[3], "db.example.com");
    }

    #[test]
    fn endpoints_list_three_addresses_then_more() {
        let ep = json!({
            "metadata": {"name": "web"},
            "subsets": [{
                "addresses": [{"ip": "10.244.0.5"}, {"ip": "10.244.1.7"}, {"ip": "10.244.2.9"}, {"ip": "10.244.3.2"}],
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]
            }]
        });
        assert_eq!(cells("Endpoints", ep)[1], "10.244.0.5:80,10.244.1.7:80,10.244.2.9:80 + 5 more...");
        let one = json!({"metadata": {"name": "a"}, "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 53}]}]});
        assert_eq!(cells("Endpoints", one)[1], "[fd00::1]:53");
        assert_eq!(cells("Endpoints", json!({"metadata": {"name": "e"}}))[1], "<none>");
    }

    #[test]
    fn endpoint_slices_list_three_ports_and_addresses_then_more() {
        let names: Vec<String> = column_names("EndpointSlice").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Name", "AddressType", "Ports", "Endpoints", "Age"]);
        let slice = json!({
            "metadata": {"name": "web-abcde", "creationTimestamp": "2024-05-01T11:59:00Z"},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "metrics"}, {}, {"port": 9000}],
            "endpoints": [{"addresses": ["10.244.0.5"]}, {"addresses": ["10.244.1.7", "10.244.1.8"]}, {"addresses": ["10.244.2.9"]}]
        });
        let c = cells("EndpointSlice", slice);
        assert_eq!(c[1], "IPv4");
        assert_eq!(c[2], "8080,metrics,* + 1 more...");
        assert_eq!(c[3], "10.244.0.5,10.244.1.7,10.244.1.8 + 1 more...");
        assert_eq!(c[4], "60s");
        let two = json!({"metadata": {"name": "s"}, "addressType": "IPv4", "ports": [{"port": 80}, {"port": 443}],
                         "endpoints": [{"addresses": ["10.244.0.5"]}]});
        assert_eq!(cells("EndpointSlice", two)[2..4], [json!("80,443"), json!("10.244.0.5")]);
        let placeholder = json!({"metadata": {"name": "p"}, "addressType": "IPv4", "ports": [], "endpoints": []});
        assert_eq!(cells("EndpointSlice", placeholder)[2..4], [json!("<unset>"), json!("<unset>")]);
    }

    #[test]
    fn replica_counts_and_wide_template_cells() {
        let rs = json!({
            "metadata": {"name": "web-5d9f", "creationTimestamp": "2024-05-01T11:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                     "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]},
                     "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}, {"name": "log", "image": "fluentd"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2}
        });
        assert_eq!(
            cells("ReplicaSet", rs),
            vec![
                json!("web-5d9f"),
                json!(3),
                json!(3),
                json!(2),
                json!("60m"),
                json!("app,log"),
                json!("nginx,fluentd"),
                json!("app=web,tier in (back,front)")
            ]
        );
        let rc = json!({"metadata": {"name": "rc"}, "spec": {"replicas": 0, "selector": {"app": "x"}}});
        let c = cells("ReplicationController", rc);
        assert_eq!(c[1], 0);
        assert_eq!(c[7], "app=x");
    }

    #[test]
    fn deployment_ready_column_is_ready_over_desired() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:59:30Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            cells("Deployment", d),
            vec![json!("web"), json!("2/3"), json!(3), json!(2), json!("30s"), json!("app"), json!("nginx"), json!("app=web")]
        );
    }

    #[test]
    fn node_status_roles_and_addresses() {
        let node = json!({
            "metadata": {"name": "node-1", "creationTimestamp": "2024-04-01T12:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "198.51.100.2"}, {"type": "Hostname", "address": "node-1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0-hawser", "osImage": "Debian GNU/Linux 12", "kernelVersion": "6.1.0",
                             "containerRuntimeVersion": ""}
            }
        });
        assert_eq!(
            cells("Node", node),
            vec![
                json!("node-1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("30d"),
                json!("v1.33.0-hawser"),
                json!("198.51.100.2"),
                json!("<none>"),
                json!("Debian GNU/Linux 12"),
                json!("6.1.0"),
                json!("<unknown>")
            ]
        );
        let bare = cells("Node", json!({"metadata": {"name": "n"}}));
        assert_eq!(bare[1], "Unknown");
        assert_eq!(bare[2], "<none>");
        let not_ready =
            cells("Node", json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}));
        assert_eq!(not_ready[1], "NotReady");
    }

    #[test]
    fn event_row_shows_last_seen_object_and_message() {
        let ev = json!({
            "metadata": {"name": "web.17c1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "Successfully pulled image \"nginx\"\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T11:50:00Z", "lastTimestamp": "2024-05-01T11:59:00Z", "count": 4
        });
        assert_eq!(
            cells("Event", ev),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Successfully pulled image \"nginx\""),
                json!("10m"),
                json!(4),
                json!("web.17c1")
            ]
        );
        // New-style events: eventTime and series, reporting controller as source.
        let ev = json!({
            "metadata": {"name": "n"}, "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:00:00.000000Z", "reportingComponent": "hawser-scheduler",
            "series": {"count": 7, "lastObservedTime": "2024-05-01T11:58:00.000000Z"}
        });
        let c = cells("Event", ev);
        assert_eq!(c[0], "2m");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "hawser-scheduler");
        assert_eq!(c[7], "60m");
        assert_eq!(c[8], 7);
        let single = cells("Event", json!({"metadata": {"name": "s"}, "involvedObject": {"kind": "Pod", "name": "p"}}));
        assert_eq!(single[0], "<unknown>");
        assert_eq!(single[8], 1);
    }

    #[test]
    fn config_maps_secrets_namespaces_and_leases() {
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("ConfigMap", cm)[1], 3);
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(cells("Secret", secret)[1..3], [json!("kubernetes.io/tls"), json!(2)]);
        assert_eq!(cells("Secret", json!({"metadata": {"name": "s"}}))[1..3], [json!("Opaque"), json!(0)]);
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": "2024-05-01T11:00:00Z"}, "status": {"phase": "Active"}});
        assert_eq!(cells("Namespace", ns), vec![json!("default"), json!("Active"), json!("60m")]);
        let lease = json!({"metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1"}});
        assert_eq!(cells("Lease", lease)[1], "node-1");
    }

    #[test]
    fn label_selectors_render_like_kubernetes() {
        let sel = json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod", "dev"]},
                                              {"key": "debug", "operator": "DoesNotExist"},
                                              {"key": "app", "operator": "Exists"}]});
        assert_eq!(format_label_selector(Some(&sel)), "app,!debug,env notin (dev,prod)");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}))), "<error>");
    }
}
